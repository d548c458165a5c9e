"""Pose-graph optimisation (SE(3) and SE(2)) on the shared mixed-precision optimiser.

Edge error (GTSAM's ``BetweenFactor``): ``e = log(Z_ij^-1 T_i^-1 T_j)``; cost ``0.5 * sum e^T Omega e``.
The whitened residual is ``r = R e`` with ``R^T R = Omega`` (upper Cholesky factor), and with right
perturbations ``T <- T exp(d)``::

    d e / d d_j = Jr^-1(e)
    d e / d d_i = -Jr^-1(e) Ad(T_j^-1 T_i)

Residuals and Jacobians of all edges are computed in one nogil numba loop (fp64).

API for the rest of the package: :class:`PoseGraph` (SE(3), incremental) and
:func:`optimize_pose_graph`; the g2o command line uses :class:`PoseGraphProblem` directly.
"""

from __future__ import annotations

import dataclasses
from typing import Optional, Sequence, Tuple

import numpy as np
from numba import njit

from mpslam_ros.geometry import lie
from mpslam_ros.solvers.lm import SolverOptions, SolverSummary, solve
from mpslam_ros.solvers.precision import get_preset


@njit(nogil=True, cache=True, error_model="numpy")
def _se3_edges(poses, ei, ej, Zinv, sqrt_info, r, Ja, Jb, jac):
    Jri = np.empty((6, 6))
    RJ = np.empty((6, 6))
    work = np.empty((12, 3, 3))
    Trel = np.empty((4, 4))
    E = np.empty((4, 4))
    e = np.empty(6)
    for k in range(ei.shape[0]):
        Ti = poses[ei[k]]
        prior = ej[k] < 0
        if prior:
            Tij = Ti
            for a in range(4):
                for b in range(4):
                    E[a, b] = (Zinv[k, a, 0] * Ti[0, b] + Zinv[k, a, 1] * Ti[1, b] + Zinv[k, a, 2] * Ti[2, b]
                               + Zinv[k, a, 3] * Ti[3, b])
        else:
            lie.se3_relative_into(Zinv[k], Ti, poses[ej[k]], Trel, E)
            Tij = Trel
        lie.se3_log_into(E, e)
        R = sqrt_info[k]
        for a in range(6):
            s = 0.0
            for b in range(a, 6):  # R is upper triangular
                s += R[a, b] * e[b]
            r[k, a] = s
        if jac:
            lie.se3_right_jacobian_inv_into(e, Jri, work)
            for a in range(6):  # RJ = R Jr^-1(e), R upper triangular
                for b in range(6):
                    s = 0.0
                    for c in range(a, 6):
                        s += R[a, c] * Jri[c, b]
                    RJ[a, b] = s
            if prior:  # e = log(Z^-1 T_i): d e / d d_i = Jr^-1(e)
                for a in range(6):
                    for b in range(6):
                        Ja[k, a, b] = RJ[a, b]
                        Jb[k, a, b] = 0.0
                continue
            # Ja = -RJ Ad(T_ij^-1), Ad(T^-1) = [[R^T, 0], [-R^T [t]x, R^T]] (R, t of T_ij; [R^T t]x = R^T [t]x R):
            # with u = RJ[a, 3:] R^T, row a of RJ Ad is (RJ[a, :3] R^T - u [t]x, u)
            t0, t1, t2 = Tij[0, 3], Tij[1, 3], Tij[2, 3]
            for a in range(6):
                u0 = RJ[a, 3] * Tij[0, 0] + RJ[a, 4] * Tij[0, 1] + RJ[a, 5] * Tij[0, 2]
                u1 = RJ[a, 3] * Tij[1, 0] + RJ[a, 4] * Tij[1, 1] + RJ[a, 5] * Tij[1, 2]
                u2 = RJ[a, 3] * Tij[2, 0] + RJ[a, 4] * Tij[2, 1] + RJ[a, 5] * Tij[2, 2]
                for b in range(3):
                    Ja[k, a, b] = -(RJ[a, 0] * Tij[b, 0] + RJ[a, 1] * Tij[b, 1] + RJ[a, 2] * Tij[b, 2])
                Ja[k, a, 0] += u1 * t2 - u2 * t1
                Ja[k, a, 1] += u2 * t0 - u0 * t2
                Ja[k, a, 2] += u0 * t1 - u1 * t0
                Ja[k, a, 3] = -u0
                Ja[k, a, 4] = -u1
                Ja[k, a, 5] = -u2
                for b in range(6):
                    Jb[k, a, b] = RJ[a, b]


@njit(nogil=True, cache=True, error_model="numpy")
def _se2_edges(poses, ei, ej, Zinv, sqrt_info, r, Ja, Jb, jac):
    for k in range(ei.shape[0]):
        Ti = poses[ei[k]]
        prior = ej[k] < 0
        Tij = Ti if prior else lie._mm(lie.se2_inverse(Ti), poses[ej[k]])
        e = lie.se2_log(lie._mm(Zinv[k], Tij))
        R = sqrt_info[k]
        for a in range(3):
            s = 0.0
            for b in range(a, 3):
                s += R[a, b] * e[b]
            r[k, a] = s
        if jac:
            RJ = lie._mm(R, lie.se2_right_jacobian_inv(e))
            if prior:
                for a in range(3):
                    for b in range(3):
                        Ja[k, a, b] = RJ[a, b]
                        Jb[k, a, b] = 0.0
                continue
            M = lie._mm(RJ, lie.se2_adjoint(lie.se2_inverse(Tij)))
            for a in range(3):
                for b in range(3):
                    Jb[k, a, b] = RJ[a, b]
                    Ja[k, a, b] = -M[a, b]


@njit(nogil=True, cache=True, error_model="numpy")
def _retract(poses, delta, dim, se3):
    if se3:
        work = np.empty((4, 4))
        for i in range(poses.shape[0]):
            o = i * 6
            if (delta[o] != 0.0 or delta[o + 1] != 0.0 or delta[o + 2] != 0.0 or delta[o + 3] != 0.0
                    or delta[o + 4] != 0.0 or delta[o + 5] != 0.0):
                lie.se3_retract_into(poses[i], delta, o, work)
        return
    for i in range(poses.shape[0]):
        d = delta[i * dim:(i + 1) * dim]
        nz = False
        for a in range(dim):
            if d[a] != 0.0:
                nz = True
        if nz:
            if se3:
                poses[i] = lie.se3_compose(poses[i], lie.se3_exp(d.copy()))
            else:
                poses[i] = lie._mm(poses[i], lie.se2_exp(d.copy()))


#: Pose-graph defaults for the SolverOptions fields left at None (see :func:`pgo_options`).
PGO_DEFAULTS = dict(cg_step_tolerance=0.05, ic_stale_cg_budget=True, ict_layout="block", fp64_gradient=True,
                    step_refinement=2, cg_tolerance_far=1e-6, precision_fallback=True, direct_fallback=True,
                    fp16_factor_max_cg_iterations=12,
                    fp32_factor_max_cg_iterations=12, ic_rebuild_cg_iterations=10, small_problem_direct_columns=1000,
                    geodesic_acceleration=True)


def pgo_options(options: Optional[SolverOptions] = None) -> SolverOptions:
    """Options for pose graphs: as given, with the pose-graph defaults filled in and the "mixed" preset's
    Jacobian kept in fp32.

    Issue 3's PGO policy puts fp16 only in the (static) Cholesky factor; the shared "mixed" preset also
    stores J in fp16 (the BA policy). Measured on parking-garage (condition number ~1e8): with an fp16 J
    in the CG products LM needs 50 iterations and stops 1.8e-4 above the optimum; with fp32 J it
    matches fp64 in 6 iterations.

    Fields left at None get :data:`PGO_DEFAULTS`: the factor in 6x6 (3x3) blocks with fp32 pivots
    (``ict_layout="block"``), CG stopped only once its updates are small (``cg_step_tolerance``: a
    5,000-pose chain with an fp16 factor otherwise took 1-iteration CG steps 8x too long and 29 LM
    iterations), and a factor from an older linearisation refreshed as soon as CG has spent one
    build's time on it (``ic_stale_cg_budget``), and the CG right-hand side from LM's fp64 gradient
    (``fp64_gradient``: iterative refinement, so fp32 / mixed LM follow fp64 LM's path and reach its
    optimum; with the residual-precision gradient, fp32 LM from the odometry guess of a generated
    800-pose 2-D graph (``random_pose_graph(800, "se2", 0, odom_sigma_r=0.3)``) took another branch
    and converged to a local minimum 8 % above fp64 LM's), plus issue 17's robustness settings (see
    :class:`~mpslam_ros.solvers.lm.SolverOptions` for the measurements behind each): CG tolerance 1e-6
    while LM is far from a minimum (``cg_tolerance_far``), step refinement against the fp64 system, an
    fp64 retry of rejected fp32 / mixed steps (``precision_fallback``) and a direct solve when CG cannot
    converge (``direct_fallback``); and the speed settings of issue 17's second pass: a stale factor
    rebuilt after 10 CG iterations (``ic_rebuild_cg_iterations``) and an fp16 factor widened to fp32 when
    even a fresh one needs more than 12 CG iterations (``fp16_factor_max_cg_iterations``); and issue 17's
    third pass: graphs of at most 1,000 free columns (166 SE(3) / 333 SE(2) poses) skip CG and solve
    each step directly with the fp64 block factor (``small_problem_direct_columns``: the fixed per-step
    overhead of the mixed-precision path dominates there; tinyGrid3D 2.2-2.8x GTSAM's time with CG, 1.3-1.6x
    direct; on 1,000-pose SE(2) graphs the exact steps took 10 LM iterations instead of 5, so the
    threshold stays low); and no diagonal shift in a factor stored in fp64 (``ic_shift`` 0; the factor is
    of the damped matrix, positive definite for lambda > 0): on a generated 30,000-pose SE(3) graph (seed 2)
    fp64's shift of 1e-8 sat far above LM's lambda (~1e-12) and cost most of its CG iterations. Factors
    stored in fp32 / fp16 keep 1e-8 (about fp32's rounding): the fp32 preset with no shift took another
    path to a minimum 3 % higher on a generated 1,500-pose 2-D graph from its odometry guess. Issue 17's
    fourth pass: mixed's fp32-widened factor, when a fresh one still needs more than 12 CG iterations, is
    widened on to fp64 mode's (fp64, no shift, fp64 CG; ``fp32_factor_max_cg_iterations``): on the generated
    30,000-pose SE(3) graphs, seeds 1-3, mixed's CG iterations fell from 389-795 to 119-134 (fp64: 93-119).
    """
    options = options or SolverOptions()
    fill = {k: v for k, v in PGO_DEFAULTS.items() if getattr(options, k) is None}
    if fill:
        options = dataclasses.replace(options, **fill)
    preset = get_preset(options.precision)
    if options.ic_shift is None and preset.preconditioner_storage == "fp64":
        options = dataclasses.replace(options, ic_shift=0.0)
    if preset.name == "mixed" and preset.jacobian_storage == "fp16":
        options = dataclasses.replace(options, precision=preset.with_overrides(jacobian_storage="fp32"))
    return options


def _rigid_inverse(T: np.ndarray) -> np.ndarray:
    """Inverses of a stack of homogeneous rigid transforms [E, k+1, k+1] (SE(3) or SE(2)), vectorised."""
    k = T.shape[-1] - 1
    out = np.zeros_like(T)
    Rt = np.swapaxes(T[:, :k, :k], 1, 2)
    out[:, :k, :k] = Rt
    out[:, :k, k] = -np.einsum("eab,eb->ea", Rt, T[:, :k, k])
    out[:, k, k] = 1.0
    return np.ascontiguousarray(out)


def sqrt_information(information: np.ndarray, where: str = "edge") -> np.ndarray:
    """Upper-triangular R with R^T R = information, for a stack of matrices [E, d, d]."""
    try:
        L = np.linalg.cholesky(information)
    except np.linalg.LinAlgError:
        raise ValueError(f"{where}: information matrix is not positive definite") from None
    return np.ascontiguousarray(np.swapaxes(L, -1, -2))


class PoseGraphProblem:
    """A pose graph as a :class:`~mpslam_ros.solvers.problem.LeastSquaresProblem` (state = ``poses``)."""

    def __init__(self, kind: str, poses: np.ndarray, edge_i: np.ndarray, edge_j: np.ndarray,
                 measurements: np.ndarray, information: np.ndarray, fixed: Optional[np.ndarray] = None,
                 robust_blocks: Optional[np.ndarray] = None):
        if kind not in ("se3", "se2"):
            raise ValueError(f"kind must be 'se3' or 'se2', got {kind!r}")
        self.kind = kind
        d = 6 if kind == "se3" else 3
        self.poses = np.ascontiguousarray(poses, dtype=np.float64).copy()
        n = len(self.poses)
        self.edge_i = np.ascontiguousarray(edge_i, dtype=np.int64)
        self.edge_j = np.ascontiguousarray(edge_j, dtype=np.int64)
        E = len(self.edge_i)
        if E == 0:
            raise ValueError("empty pose graph: no edges")
        if n == 0:
            raise ValueError("empty pose graph: no poses")
        if self.edge_i.min() < 0 or self.edge_j.min() < -1 or max(self.edge_i.max(), self.edge_j.max()) >= n:
            raise ValueError(f"an edge refers to a pose outside 0..{n - 1} (edge_j = -1 marks a prior)")
        if not np.all(np.isfinite(self.poses)):
            bad = int(np.flatnonzero(~np.isfinite(self.poses).reshape(n, -1).all(1))[0])
            raise ValueError(f"pose {bad} contains NaN or inf")
        measurements = np.asarray(measurements, dtype=np.float64)
        if not np.all(np.isfinite(measurements)):
            bad = int(np.flatnonzero(~np.isfinite(measurements).reshape(E, -1).all(1))[0])
            raise ValueError(f"edge {bad} measurement contains NaN or inf")
        self.Zinv = _rigid_inverse(measurements)
        self.sqrt_info = sqrt_information(np.asarray(information, dtype=np.float64))
        self.residual_dim = self.dim_a = self.dim_b = d
        self.block_a = self.edge_i
        self.block_b = self.edge_j
        self.parameter_block_sizes = np.full(n, d, dtype=np.int64)
        self.fixed_blocks = np.zeros(n, dtype=bool)
        if fixed is None:
            self.fixed_blocks[0] = True  # gauge: first pose
        else:
            self.fixed_blocks[np.asarray(fixed, dtype=np.int64)] = True
        self.robust_blocks = None if robust_blocks is None else np.asarray(robust_blocks, dtype=bool)
        self._r = np.empty((E, d))
        self._Ja = np.empty((E, d, d))
        self._Jb = np.empty((E, d, d))

    def evaluate(self, jacobians: bool = True):
        kernel = _se3_edges if self.kind == "se3" else _se2_edges
        r = np.empty_like(self._r)
        Ja = np.empty_like(self._Ja) if jacobians else self._Ja
        Jb = np.empty_like(self._Jb) if jacobians else self._Jb
        kernel(self.poses, self.edge_i, self.edge_j, self.Zinv, self.sqrt_info, r, Ja, Jb, jacobians)
        return (r, Ja, Jb) if jacobians else (r, None, None)

    def retract(self, delta: np.ndarray) -> None:
        _retract(self.poses, np.ascontiguousarray(delta, dtype=np.float64), self.dim_a, self.kind == "se3")

    def get_state(self) -> np.ndarray:
        return self.poses.copy()

    def set_state(self, state: np.ndarray) -> None:
        self.poses[:] = state

    def cost(self) -> float:
        """0.5 * sum e^T Omega e over all edges (no robust loss): GTSAM's ``graph.error`` convention."""
        r, _, _ = self.evaluate(jacobians=False)
        return 0.5 * float(np.einsum("km,km->", r, r))


def pose_graph_cost(kind: str, poses: np.ndarray, edge_i, edge_j, measurements, information) -> float:
    """GTSAM-convention cost of ``poses`` (the same function scores every solver in the benchmark)."""
    return PoseGraphProblem(kind, poses, edge_i, edge_j, measurements, information).cost()


class PoseGraph:
    """An SE(3) pose graph built incrementally (keyframes + odometry and loop-closure edges).

    Edge ``(i, j, T_ij, information)`` measures ``T_i^-1 T_j`` with a 6x6 information matrix in
    (rotation, translation) order. Pose 0 is fixed (gauge) unless ``fix_first=False``; other
    poses are fixed with :meth:`fix`, or softly anchored with :meth:`add_prior`. Loop edges can be marked ``robust=True`` to get the robust
    loss of :class:`SolverOptions` (``robust_loss="huber"`` or ``"cauchy"``).
    """

    def __init__(self, fix_first: bool = True):
        self.fix_first = fix_first
        self._poses: list = []
        self._edge_i: list = []
        self._edge_j: list = []
        self._meas: list = []
        self._info: list = []
        self._robust: list = []
        self._fixed: set = set()

    def add_pose(self, T_world_pose: np.ndarray) -> int:
        T = np.asarray(T_world_pose, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"pose {len(self._poses)}: expected a finite 4x4 matrix, got shape {T.shape}")
        self._poses.append(T.copy())
        return len(self._poses) - 1

    def add_edge(self, i: int, j: int, T_ij: np.ndarray, information: np.ndarray, robust: bool = False) -> int:
        n = len(self._poses)
        k = len(self._edge_i)
        if not (0 <= i < n and 0 <= j < n) or i == j:
            raise ValueError(f"edge {k}: ({i}, {j}) must join two different existing poses (0..{n - 1})")
        T_ij = np.asarray(T_ij, dtype=np.float64)
        info = np.asarray(information, dtype=np.float64)
        if T_ij.shape != (4, 4) or not np.all(np.isfinite(T_ij)):
            raise ValueError(f"edge {k}: measurement must be a finite 4x4 matrix")
        if info.shape != (6, 6) or not np.all(np.isfinite(info)):
            raise ValueError(f"edge {k}: information must be a finite 6x6 matrix")
        sqrt_information(info[None], where=f"edge {k} ({i}, {j})")
        self._edge_i.append(i)
        self._edge_j.append(j)
        self._meas.append(T_ij.copy())
        self._info.append(0.5 * (info + info.T))
        self._robust.append(bool(robust))
        return k

    def add_edges(self, i: np.ndarray, j: np.ndarray, T_ij: np.ndarray, information: np.ndarray,
                  robust: bool = False) -> np.ndarray:
        """Many edges at once (same checks as :meth:`add_edge`, vectorised): ``i, j`` int[E], ``T_ij`` [E, 4, 4],
        ``information`` [E, 6, 6] or one 6x6 for all. Returns the new edge indices."""
        i = np.asarray(i, dtype=np.int64).ravel()
        j = np.asarray(j, dtype=np.int64).ravel()
        E = len(i)
        T_ij = np.asarray(T_ij, dtype=np.float64).reshape(-1, 4, 4) if E else np.zeros((0, 4, 4))
        info = np.asarray(information, dtype=np.float64)
        if info.shape == (6, 6):
            info = np.broadcast_to(info, (E, 6, 6))
        n = len(self._poses)
        k0 = len(self._edge_i)
        if len(j) != E or len(T_ij) != E or info.shape != (E, 6, 6):
            raise ValueError(f"edges {k0}..: i, j, T_ij and information must have matching lengths")
        bad = (i < 0) | (i >= n) | (j < 0) | (j >= n) | (i == j)
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            raise ValueError(f"edge {k0 + k}: ({i[k]}, {j[k]}) must join two different existing poses (0..{n - 1})")
        finite = np.isfinite(T_ij).all(axis=(1, 2)) & np.isfinite(info).all(axis=(1, 2))
        if not finite.all():
            k = int(np.flatnonzero(~finite)[0])
            raise ValueError(f"edge {k0 + k}: measurement and information must be finite")
        info = 0.5 * (info + np.swapaxes(info, 1, 2))
        sqrt_information(info, where=f"edges {k0}..{k0 + E - 1}")
        self._edge_i.extend(i.tolist())
        self._edge_j.extend(j.tolist())
        self._meas.extend(T_ij.copy())
        self._info.extend(info)
        self._robust.extend([bool(robust)] * E)
        return np.arange(k0, k0 + E)

    def add_prior(self, i: int, T_world_pose: np.ndarray, information: np.ndarray) -> int:
        """A prior ``log(T^-1 T_i)`` on pose i (GTSAM's PriorFactor); with ``fix_first=False`` it fixes the gauge."""
        n = len(self._poses)
        k = len(self._edge_i)
        if not 0 <= i < n:
            raise ValueError(f"prior {k}: pose {i} does not exist (0..{n - 1})")
        T = np.asarray(T_world_pose, dtype=np.float64)
        info = np.asarray(information, dtype=np.float64)
        if T.shape != (4, 4) or not np.all(np.isfinite(T)):
            raise ValueError(f"prior {k}: pose must be a finite 4x4 matrix")
        if info.shape != (6, 6) or not np.all(np.isfinite(info)):
            raise ValueError(f"prior {k}: information must be a finite 6x6 matrix")
        sqrt_information(info[None], where=f"prior {k} on pose {i}")
        self._edge_i.append(i)
        self._edge_j.append(-1)
        self._meas.append(T.copy())
        self._info.append(0.5 * (info + info.T))
        self._robust.append(False)
        return k

    def fix(self, i: int) -> None:
        self._fixed.add(int(i))

    @property
    def num_poses(self) -> int:
        return len(self._poses)

    @property
    def num_edges(self) -> int:
        return len(self._edge_i)

    @property
    def poses(self) -> np.ndarray:
        return np.array(self._poses).reshape(-1, 4, 4)

    def problem(self, initial: Optional[np.ndarray] = None) -> PoseGraphProblem:
        fixed = sorted(self._fixed | ({0} if self.fix_first and self._poses else set()))
        if not fixed and not any(j < 0 for j in self._edge_j):
            raise ValueError("pose graph has no fixed pose and no prior: the gauge is free (fix one pose)")
        poses = self.poses if initial is None else np.asarray(initial, dtype=np.float64)
        if len(poses) != self.num_poses:
            raise ValueError(f"initial has {len(poses)} poses, graph has {self.num_poses}")
        return PoseGraphProblem("se3", poses, np.array(self._edge_i), np.array(self._edge_j),
                                np.array(self._meas).reshape(-1, 4, 4), np.array(self._info).reshape(-1, 6, 6),
                                fixed=np.array(fixed), robust_blocks=np.array(self._robust))


def optimize_pose_graph(graph: PoseGraph, options: Optional[SolverOptions] = None,
                        initial: Optional[np.ndarray] = None) -> Tuple[np.ndarray, SolverSummary]:
    """Optimise ``graph`` from ``initial`` (default: its stored poses; pass last result to warm-start).

    Returns ``(poses float64[n,4,4], summary)``; the graph itself is not modified. Safe to call from a
    worker thread: the heavy loops are nogil numba kernels.
    """
    problem = graph.problem(initial)
    summary = solve(problem, pgo_options(options))
    return problem.poses.copy(), summary


def warmup(precisions: Sequence[str] = ("fp64", "fp32", "mixed", "fp16")) -> None:
    """Compile (or load from cache) the edge kernels and solve a small graph once per preset in
    ``precisions``."""
    rng = np.random.default_rng(0)
    for kind, d in (("se3", 6), ("se2", 3)):
        n = 6
        exp = lie.se3_exp if kind == "se3" else lie.se2_exp
        poses = np.stack([exp(0.1 * rng.standard_normal(d)) for _ in range(n)])
        ei = np.array([0, 1, 2, 3, 4, 0])
        ej = np.array([1, 2, 3, 4, 5, 5])
        inv = lie.se3_inverse if kind == "se3" else lie.se2_inverse
        Z = np.stack([inv(poses[a]) @ poses[b] @ exp(0.01 * rng.standard_normal(d)) for a, b in zip(ei, ej)])
        info = np.tile(np.eye(d), (len(ei), 1, 1))
        for precision in precisions:
            # the small-problem direct path (this graph's size) and the CG path of larger graphs
            for small_columns in (None, 0):
                prob = PoseGraphProblem(kind, poses, ei, ej, Z, info)
                solve(prob, pgo_options(SolverOptions(precision=precision, max_iterations=2,
                                                      small_problem_direct_columns=small_columns)))
    # CG dtypes of rare pose-graph paths no small solve reaches: a rejected step recomputed in fp64
    # (precision_fallback: fp32, mixed), mixed's factor widened to fp32 then fp64. Generated SE(3) graphs of
    # 800-3,000 poses took them after loop_closure_node's warm-up (a cache load, and a compile).
    from mpslam_ros.solvers import kernels as K

    rare = {"fp32": ["fp64 vectors, fp64 factor"], "mixed": ["fp64 vectors, fp64 factor", "fp64 vectors, fp32 factor"]}
    for name in sorted({name for p in precisions for name in rare.get(p, ())}):
        K.warm_cg(name)
