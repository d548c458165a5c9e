"""Bundle adjustment on the shared mixed-precision optimiser: VO sliding windows and BAL problems.

Two problems implement the solver protocol (:mod:`mpslam_ros.solvers.problem`) with camera-point
residual blocks (block ``a`` = camera, block ``b`` = landmark), so the same LM + CGNR + kernels that
run pose graphs run BA:

- :class:`WindowProblem`: keyframe poses ``T_cw`` (SE(3)) and landmarks (XYZ) seen by an
  undistorted pinhole (2 rows) or a rectified stereo pair (3 rows: ``u_l, v, u_r``);
- :class:`BALProblemModel`: the BAL camera (rotation, translation, f, k1, k2; 9 parameters) and
  landmarks, for the public benchmark files.

Residual = predicted - observed, in pixels (Ceres' convention; the sign does not change the cost
``0.5 * sum rho(|r|^2)``). Poses are updated on the left, ``R <- Exp(phi) R, t <- Exp(phi) t + rho``
(delta = (rho, phi)): a retraction of SE(3) with the same first-order action as the exponential map,
``d P_c / d delta = [I | -[P_c]x]``, cheaper to apply, and exact in fp64.

Gauge: the caller fixes keyframes (``fixed_cams``; the window's oldest by default) rather than adding
a marginalisation prior. A prior would carry the dropped keyframes' information but makes a dense
pose-pose block over the whole window, which the matrix-free CGNR (per-observation 2x6 + 2x3
Jacobian blocks) cannot store in its block layout; the VO window is re-anchored at every keyframe
and the fixed oldest keyframe holds the information already absorbed by earlier windows.

Points that project behind a camera (depth < 1e-6) get a constant residual of INVALID_RESIDUAL px
per row and a zero Jacobian instead of a NaN: a constant keeps the gradient clean, and being large it
stops LM from accepting a step that "removes" observations by pushing points behind the cameras
(with a zero residual such a step would look like a cost decrease).
"""

from __future__ import annotations

import time
from typing import Optional, Sequence, Tuple

import numpy as np
from numba import njit

from mpslam_ros.geometry.camera import project_bal, project_radtan, project_stereo, pose_jacobian_left


#: Residual (pixels, per row) of an observation whose point is behind the camera.
INVALID_RESIDUAL = 1.0e4

# ---------------------------------------------------------------------------------------------
# numba kernels: residuals + Jacobians, and the fp64 retraction


@njit(nogil=True, cache=True)
def _eval_window(R, t, pts, obs_cam, obs_pt, obs_uv, obs_ur, fx, fy, cx, cy, baseline,
                 want_jac, res, Ja, Jb):
    K = obs_cam.shape[0]
    rows = res.shape[1]
    P = np.empty(3)
    proj = np.empty(3)
    Jp = np.zeros((3, 3))
    Jpose = np.empty((3, 6))
    for k in range(K):
        c = obs_cam[k]
        j = obs_pt[k]
        for a in range(3):
            P[a] = R[c, a, 0] * pts[j, 0] + R[c, a, 1] * pts[j, 1] + R[c, a, 2] * pts[j, 2] + t[c, a]
        stereo = rows == 3 and not np.isnan(obs_ur[k])
        if stereo:
            ok = project_stereo(P, fx, fy, cx, cy, baseline, proj, Jp)
            nr = 3
        else:
            ok = project_radtan(P, fx, fy, cx, cy, 0.0, 0.0, 0.0, 0.0, 0.0, proj, Jp)
            nr = 2
        for r in range(rows):
            res[k, r] = 0.0 if ok else INVALID_RESIDUAL
        if ok:
            res[k, 0] = proj[0] - obs_uv[k, 0]
            res[k, 1] = proj[1] - obs_uv[k, 1]
            if stereo:
                res[k, 2] = proj[2] - obs_ur[k]
        if want_jac:
            for r in range(rows):
                for d in range(6):
                    Ja[k, r, d] = 0.0
                for d in range(3):
                    Jb[k, r, d] = 0.0
            if ok:
                pose_jacobian_left(Jp, P, nr, Jpose)
                for r in range(nr):
                    for d in range(6):
                        Ja[k, r, d] = Jpose[r, d]
                    for d in range(3):  # d P_c / d P_w = R
                        Jb[k, r, d] = Jp[r, 0] * R[c, 0, d] + Jp[r, 1] * R[c, 1, d] + Jp[r, 2] * R[c, 2, d]


@njit(nogil=True, cache=True)
def _eval_bal(R, t, intr, pts, obs_cam, obs_pt, obs_uv, want_jac, res, Ja, Jb):
    K = obs_cam.shape[0]
    P = np.empty(3)
    uv = np.empty(2)
    JP = np.empty((2, 3))
    Ji = np.empty((2, 3))
    Jpose = np.empty((2, 6))
    for k in range(K):
        c = obs_cam[k]
        j = obs_pt[k]
        for a in range(3):
            P[a] = R[c, a, 0] * pts[j, 0] + R[c, a, 1] * pts[j, 1] + R[c, a, 2] * pts[j, 2] + t[c, a]
        ok = project_bal(P, intr[c, 0], intr[c, 1], intr[c, 2], uv, JP, Ji)
        res[k, 0] = uv[0] - obs_uv[k, 0] if ok else INVALID_RESIDUAL
        res[k, 1] = uv[1] - obs_uv[k, 1] if ok else INVALID_RESIDUAL
        if want_jac:
            if ok:
                pose_jacobian_left(JP, P, 2, Jpose)
            for r in range(2):
                for d in range(6):
                    Ja[k, r, d] = Jpose[r, d] if ok else 0.0
                for d in range(3):
                    Ja[k, r, 6 + d] = Ji[r, d] if ok else 0.0
                    Jb[k, r, d] = (JP[r, 0] * R[c, 0, d] + JP[r, 1] * R[c, 1, d] + JP[r, 2] * R[c, 2, d]) if ok else 0.0


@njit(nogil=True, cache=True)
def _so3_exp(w, out):
    """Rodrigues: out = Exp(w) (3x3), series for tiny angles."""
    th2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
    if th2 < 1e-16:
        a = 1.0 - th2 / 6.0
        b = 0.5 - th2 / 24.0
    else:
        th = np.sqrt(th2)
        a = np.sin(th) / th
        b = (1.0 - np.cos(th)) / th2
    x, y, z = w[0], w[1], w[2]
    out[0, 0] = 1.0 - b * (y * y + z * z)
    out[0, 1] = -a * z + b * x * y
    out[0, 2] = a * y + b * x * z
    out[1, 0] = a * z + b * x * y
    out[1, 1] = 1.0 - b * (x * x + z * z)
    out[1, 2] = -a * x + b * y * z
    out[2, 0] = -a * y + b * x * z
    out[2, 1] = a * x + b * y * z
    out[2, 2] = 1.0 - b * (x * x + y * y)


@njit(nogil=True, cache=True)
def _retract_cameras(R, t, delta, dim, fixed):
    """``R <- Exp(phi) R``, ``t <- Exp(phi) t + rho`` per camera (delta block = (rho, phi, extra...))."""
    E = np.empty((3, 3))
    w = np.empty(3)
    tmp = np.empty((3, 3))
    for c in range(R.shape[0]):
        if fixed[c]:
            continue
        o = c * dim
        w[0], w[1], w[2] = delta[o + 3], delta[o + 4], delta[o + 5]
        _so3_exp(w, E)
        for a in range(3):
            for b in range(3):
                tmp[a, b] = E[a, 0] * R[c, 0, b] + E[a, 1] * R[c, 1, b] + E[a, 2] * R[c, 2, b]
        t0, t1, t2 = t[c, 0], t[c, 1], t[c, 2]
        for a in range(3):
            t[c, a] = E[a, 0] * t0 + E[a, 1] * t1 + E[a, 2] * t2 + delta[o + a]
            for b in range(3):
                R[c, a, b] = tmp[a, b]


# ---------------------------------------------------------------------------------------------
# Problems (the solver protocol)


class _CameraPointProblem:
    """Shared layout of the BA problems: blocks 0..n-1 cameras, n..n+m-1 points."""

    dim_b = 3

    def _init_layout(self, n_cams: int, obs_cam: np.ndarray, obs_pt: np.ndarray, fixed_cams) -> None:
        self.n_cams = n_cams
        self.n_points = len(self.points)
        self.obs_cam = np.ascontiguousarray(obs_cam, dtype=np.int64)
        self.obs_pt = np.ascontiguousarray(obs_pt, dtype=np.int64)
        self.block_a = self.obs_cam
        self.block_b = self.obs_pt + n_cams
        self.parameter_block_sizes = np.concatenate(
            [np.full(n_cams, self.dim_a, dtype=np.int64), np.full(self.n_points, 3, dtype=np.int64)])
        fixed = np.zeros(n_cams + self.n_points, dtype=bool)
        if fixed_cams is not None:
            fixed[:n_cams] = np.asarray(fixed_cams, dtype=bool)
        self.fixed_blocks = fixed
        self.fixed_cams = np.ascontiguousarray(fixed[:n_cams])

    @property
    def num_observations(self) -> int:
        return len(self.obs_cam)

    def sort_observations_by_point(self) -> None:
        """Reorder the observations point-major (the layout of :mod:`mpslam_ros.solvers.schur_ba`);
        the cost and the state do not change, only the order of residual blocks."""
        from mpslam_ros.solvers.schur_ba import point_major_order

        order = point_major_order(self.obs_pt)
        if np.all(order == np.arange(len(order))):
            return
        for name in ("obs_cam", "obs_pt", "obs_uv", "obs_ur"):
            if hasattr(self, name):
                setattr(self, name, np.ascontiguousarray(getattr(self, name)[order]))
        self.block_a = self.obs_cam
        self.block_b = self.obs_pt + self.n_cams

    def _alloc(self, jacobians: bool):
        K, m = len(self.obs_cam), self.residual_dim
        res = np.empty((K, m))
        if not jacobians:
            return res, np.empty((0, m, self.dim_a)), np.empty((0, m, 3))
        return res, np.empty((K, m, self.dim_a)), np.empty((K, m, 3))

    def cost(self) -> float:
        """0.5 * |r|^2 (no robust loss) at the current state."""
        r, _, _ = self.evaluate(jacobians=False)
        return 0.5 * float(np.sum(r * r))

    def retract(self, delta: np.ndarray) -> None:
        delta = np.ascontiguousarray(delta, dtype=np.float64)
        nc = self.n_cams * self.dim_a
        _retract_cameras(self.R, self.t, delta[:nc], self.dim_a, self.fixed_cams)
        if self.dim_a > 6:
            extra = delta[:nc].reshape(self.n_cams, self.dim_a)[:, 6:]
            self.intrinsics_free[~self.fixed_cams] += extra[~self.fixed_cams]
        self.points += delta[nc:].reshape(self.n_points, 3)

    def get_state(self):
        return (self.R.copy(), self.t.copy(), self.points.copy(), self._extra_state())

    def set_state(self, state) -> None:
        R, t, pts, extra = state
        self.R[:] = R
        self.t[:] = t
        self.points[:] = pts
        self._set_extra_state(extra)

    def _extra_state(self):
        return None

    def _set_extra_state(self, extra) -> None:
        pass


def _check_finite(name: str, a: np.ndarray) -> None:
    bad = ~np.isfinite(a)
    if np.any(bad):
        idx = np.argwhere(bad)[0]
        raise ValueError(f"{name}: non-finite value at index {tuple(int(i) for i in idx)}")


class WindowProblem(_CameraPointProblem):
    """A VO sliding window: SE(3) keyframe poses (world->camera) + XYZ landmarks, undistorted
    pinhole (mono rows) or rectified stereo (``obs_ur`` finite -> a third row ``u_r``)."""

    dim_a = 6

    def __init__(self, T_cw: np.ndarray, points_w: np.ndarray, obs_cam, obs_pt, obs_uv, obs_ur,
                 intrinsics: Sequence[float], baseline: float, fixed_cams=None) -> None:
        T_cw = np.asarray(T_cw, dtype=np.float64).reshape(-1, 4, 4)
        self.R = np.ascontiguousarray(T_cw[:, :3, :3])
        self.t = np.ascontiguousarray(T_cw[:, :3, 3])
        self.points = np.array(points_w, dtype=np.float64).reshape(-1, 3)
        n = len(T_cw)
        obs_cam = np.asarray(obs_cam).ravel()
        obs_pt = np.asarray(obs_pt).ravel()
        K = len(obs_cam)
        self.obs_uv = np.ascontiguousarray(obs_uv, dtype=np.float64).reshape(-1, 2)
        self.obs_ur = (np.full(K, np.nan) if obs_ur is None
                       else np.ascontiguousarray(obs_ur, dtype=np.float64).ravel())
        if K == 0:
            raise ValueError("solve_window: no observations")
        if len(obs_pt) != K or len(self.obs_uv) != K or len(self.obs_ur) != K:
            raise ValueError(f"solve_window: obs_cam has {K} entries but obs_pt {len(obs_pt)}, "
                             f"obs_uv {len(self.obs_uv)}, obs_ur {len(self.obs_ur)}")
        if obs_cam.min() < 0 or obs_cam.max() >= n:
            raise ValueError(f"solve_window: obs_cam index out of range [0, {n}) "
                             f"(observation {int(np.argmax((obs_cam < 0) | (obs_cam >= n)))})")
        if obs_pt.min() < 0 or obs_pt.max() >= len(self.points):
            bad = int(np.argmax((obs_pt < 0) | (obs_pt >= len(self.points))))
            raise ValueError(f"solve_window: obs_pt index out of range [0, {len(self.points)}) (observation {bad})")
        _check_finite("solve_window T_cw", T_cw)
        _check_finite("solve_window points_w", self.points)
        _check_finite("solve_window obs_uv", self.obs_uv)
        fx, fy, cx, cy = (float(v) for v in intrinsics)
        self.intrinsics = (fx, fy, cx, cy)
        self.baseline = float(baseline)
        self.residual_dim = 3 if np.any(np.isfinite(self.obs_ur)) else 2
        if fixed_cams is None:  # default gauge: the oldest keyframe
            fixed_cams = np.zeros(n, dtype=bool)
            fixed_cams[0] = True
        self._init_layout(n, obs_cam, obs_pt, fixed_cams)

    def evaluate(self, jacobians: bool = True):
        res, Ja, Jb = self._alloc(jacobians)
        fx, fy, cx, cy = self.intrinsics
        _eval_window(self.R, self.t, self.points, self.obs_cam, self.obs_pt, self.obs_uv, self.obs_ur,
                     fx, fy, cx, cy, self.baseline, jacobians, res, Ja, Jb)
        return (res, Ja, Jb) if jacobians else (res, None, None)

    def poses(self) -> np.ndarray:
        """float64[n,4,4] current T_cw."""
        T = np.zeros((self.n_cams, 4, 4))
        T[:, :3, :3] = self.R
        T[:, :3, 3] = self.t
        T[:, 3, 3] = 1.0
        return T


class BALProblemModel(_CameraPointProblem):
    """A BAL problem as a solver problem: 9-parameter cameras (pose update + f, k1, k2) and points.

    BAL stores rotations as Rodrigues vectors; the state here is the rotation matrix (updated on
    the left in fp64), converted back by :meth:`to_bal`. ``fixed_cams`` defaults to none: BAL
    problems are solved with their gauge freedom left to the LM damping, as Ceres does.
    """

    dim_a = 9
    residual_dim = 2

    def __init__(self, bal, fixed_cams=None) -> None:
        from mpslam_ros.geometry.camera import rodrigues_to_matrix

        self.R = np.ascontiguousarray(rodrigues_to_matrix(bal.cameras[:, :3]))
        self.t = np.ascontiguousarray(bal.cameras[:, 3:6], dtype=np.float64)
        self.intrinsics_free = np.ascontiguousarray(bal.cameras[:, 6:9], dtype=np.float64)
        self.points = np.array(bal.points, dtype=np.float64)
        self.obs_uv = np.ascontiguousarray(bal.obs_uv, dtype=np.float64)
        if len(bal.obs_cam) == 0:
            raise ValueError("BAL problem has no observations")
        self._init_layout(len(bal.cameras), bal.obs_cam, bal.obs_pt, fixed_cams)

    def evaluate(self, jacobians: bool = True):
        res, Ja, Jb = self._alloc(jacobians)
        _eval_bal(self.R, self.t, self.intrinsics_free, self.points, self.obs_cam, self.obs_pt,
                  self.obs_uv, jacobians, res, Ja, Jb)
        return (res, Ja, Jb) if jacobians else (res, None, None)

    def _extra_state(self):
        return self.intrinsics_free.copy()

    def _set_extra_state(self, extra) -> None:
        self.intrinsics_free[:] = extra

    def to_bal(self, template):
        """A :class:`~mpslam_ros.io.bal.BALProblem` with the current estimate and ``template``'s observations."""
        from mpslam_ros.geometry.camera import matrix_to_rodrigues
        from mpslam_ros.io.bal import BALProblem

        cams = np.concatenate([matrix_to_rodrigues(self.R), self.t, self.intrinsics_free], axis=1)
        return BALProblem(cams, self.points.copy(), template.obs_cam.copy(), template.obs_pt.copy(),
                          template.obs_uv.copy())


# ---------------------------------------------------------------------------------------------
# Entry points


def _default_options(options):
    return options if options is not None else ba_options()


def ba_options(**overrides):
    """:class:`~mpslam_ros.solvers.lm.SolverOptions` tuned for bundle adjustment (keyword overrides win).

    - block-Jacobi preconditioner (6x6 / 9x9 camera and 3x3 point blocks of the damped J^T J);
    - ``cg_tolerance=0.1``: the inexact-Newton forcing term Ceres uses (eta = 0.1). Measured on VO
      windows it reaches a given accuracy in about half the CG iterations of 1e-2: early LM steps
      need no accurate solve, and the relative test tightens by itself as the gradient shrinks;
    - ``function_tolerance=1e-6`` (Ceres' default): LM converges linearly at rate << 1/2 here, so the
      cost left above the minimum after a step that lowered it by < 1e-6 relative is well below 1e-6;
    - ``max_iterations=10`` (a VO window's budget);
    - ``initial_trust_region_radius=1e4`` (Ceres' default; the shared default 1e8 suits pose graphs):
      with lambda = 1e-8 the 3x3 blocks of landmarks seen from a short baseline are so ill-conditioned
      that their fp32 inverses break the preconditioner, and fp32/mixed CG ran into its 300-iteration
      cap on the first step of ~15% of VO windows (fp64: 2 iterations);
    - ``linear_solver="auto"``: the reduced camera system (:mod:`mpslam_ros.solvers.schur_ba`), dense
      Cholesky up to 1,000 camera columns (VO windows, problem-49), matrix-free Schur-Jacobi CG above;
      measured faster than full-J CGNR on every size tried (docs/ba.md). ``"cgnr"`` keeps the seed's
      full-J CGNR (then the options below apply);
    - ``cgnr_kernel``: :func:`mpslam_ros.solvers.cgnr_ba.cgnr_ba`, the CG loop with fused J^T J
      products (one pass over the Jacobian per iteration; ~30% less time per CG iteration);
    - ``small_problem_schur_columns``: dense_schur on at most this many free camera columns (no robust
      loss) runs its whole LM loop in one numba call (:mod:`mpslam_ros.solvers.schur_ba_small`), same steps;
    - ``fp64_gradient=True``: the CG right-hand side is LM's fp64 gradient rounded once (mixed-precision
      iterative refinement), not J^T r in the residual precision: free (LM computes the fp64 gradient
      anyway) and the fixed point of fp32 / mixed is the fp64 optimum. With the fp32 J^T r, fp32 and
      mixed stalled ~1e-5 m from it and ran into any iteration cap on synthetic windows; with the fp64
      gradient they converge onto it (test_fp64_gradient_takes_fp32_and_mixed_to_the_fp64_optimum).
    """
    from mpslam_ros.solvers.cgnr_ba import cgnr_ba
    from mpslam_ros.solvers.lm import SolverOptions

    from mpslam_ros.solvers.schur_ba_small import SMALL_PROBLEM_SCHUR_COLUMNS

    kw = dict(linear_solver="auto", preconditioner="block_jacobi", cg_tolerance=0.1, function_tolerance=1e-6, max_iterations=10,
              initial_trust_region_radius=1e4, cgnr_kernel=cgnr_ba, fp64_gradient=True,
              small_problem_schur_columns=SMALL_PROBLEM_SCHUR_COLUMNS)
    kw.update(overrides)
    return SolverOptions(**kw)


def _solve(problem, options):
    """Run the configured linear solver: ``"schur"`` -> the fp64 Schur reference; ``"dense_schur"`` /
    ``"iterative_schur"`` -> :mod:`mpslam_ros.solvers.schur_ba` (observations reordered point-major);
    ``"auto"`` -> one of those two by the reduced system's size
    (:func:`~mpslam_ros.solvers.schur_ba.choose_schur_solver`), or CGNR for the naive fp16 preset
    (emulated fp16 arithmetic exists only in the CGNR kernels); anything else -> the shared LM + CGNR."""
    import dataclasses

    from mpslam_ros.solvers.precision import get_preset
    from mpslam_ros.solvers.schur_ba import SCHUR_SOLVERS, choose_schur_solver, solve_schur_ba

    if getattr(options, "linear_solver", None) == "schur":
        from mpslam_ros.solvers.schur import solve_schur

        return solve_schur(problem, options)
    on_cuda = getattr(options, "device", "cpu") == "cuda"
    if options.linear_solver == "auto":
        # CGNR also where the CG must run on the GPU: the CUDA backend (solvers/cuda) has CGNR kernels only
        options = dataclasses.replace(options, linear_solver="cgnr" if get_preset(options.precision).emulate_half
                                      or on_cuda else choose_schur_solver(problem))
    if options.linear_solver in SCHUR_SOLVERS:
        if on_cuda:
            raise ValueError(f"linear_solver={options.linear_solver!r} runs on the CPU only; device='cuda' needs "
                             "linear_solver='cgnr' or 'auto'")
        problem.sort_observations_by_point()
        summary = solve_schur_ba(problem, options, options.linear_solver)
        if getattr(options, "device", "cpu") == "auto":
            summary.device_note = (f"auto: {options.linear_solver} runs on the CPU (the CUDA backend has the "
                                   "CGNR kernels only)")
        return summary
    from mpslam_ros.solvers.lm import solve

    if isinstance(options.precision, str) and options.precision == "mixed":
        # BA's mixed mode per the brief: fp16-stored Jacobian in the J p / J^T q products, everything
        # else fp32. The shared preset also stores the preconditioner in fp16 (PGO's IC factor); for
        # the BA block-Jacobi that stalled CGNR at its iteration cap (measured: 3000 CG iterations
        # per window and 1e-2 cost error vs ~800 and 1e-7 with fp32 blocks).
        options = dataclasses.replace(
            options, precision=get_preset("mixed").with_overrides(preconditioner_storage="fp32"))
    return solve(problem, options)


def solve_window(T_cw: np.ndarray, points_w: np.ndarray, obs_cam: np.ndarray, obs_pt: np.ndarray,
                 obs_uv: np.ndarray, obs_ur: Optional[np.ndarray], intrinsics: Sequence[float],
                 baseline: float, fixed_cams: Optional[np.ndarray] = None, options=None
                 ) -> Tuple[np.ndarray, np.ndarray, object]:
    """Bundle-adjust one VO window; returns ``(T_cw_new float64[n,4,4], points_w_new float64[m,3], summary)``.

    ``obs_ur`` holds the right-image u of rectified stereo observations (NaN for mono ones);
    ``fixed_cams`` (bool[n]) fixes the gauge (default: the oldest keyframe). ``options`` is a
    :class:`~mpslam_ros.solvers.lm.SolverOptions` (default :func:`ba_options`: block-Jacobi CGNR, mixed);
    ``options.linear_solver = "schur"`` runs the fp64 Schur-complement reference instead of CGNR.
    Raises ValueError naming the input for inconsistent sizes, out-of-range indices or NaN/inf.
    """
    problem = WindowProblem(T_cw, points_w, obs_cam, obs_pt, obs_uv, obs_ur, intrinsics, baseline, fixed_cams)
    summary = _solve(problem, _default_options(options))
    return problem.poses(), problem.points.copy(), summary


def solve_bal(bal, options=None):
    """Bundle-adjust a :class:`~mpslam_ros.io.bal.BALProblem`; returns ``(optimised BALProblem, summary)``."""
    problem = BALProblemModel(bal)
    summary = _solve(problem, _default_options(options))
    return problem.to_bal(bal), summary


def warmup() -> None:
    """Compile (or load from cache) the BA kernels on a tiny problem."""
    from mpslam_ros.problems.window_synth import make_window

    w = make_window(0, num_keyframes=6, num_landmarks=20, track_length=(3, 6), stereo=True)
    p = WindowProblem(*w.solve_args())
    p.evaluate(True)
    p.retract(np.zeros(6 * p.n_cams + 3 * p.n_points))
    from mpslam_ros.io.bal import BALProblem

    bal = BALProblem(np.array([[0.01, 0.02, 0.03, 0.1, 0.2, -5.0, 500.0, 1e-7, 1e-13]]),
                     np.array([[0.1, 0.2, 0.3]]), np.array([0]), np.array([0]), np.array([[1.0, 2.0]]))
    b = BALProblemModel(bal)
    b.evaluate(True)
    b.retract(np.zeros(12))
