"""Bundle adjustment of small problems: the whole dense_schur LM loop in one numba call.

:func:`mpslam_ros.solvers.schur_ba.solve_schur_ba` drives LM from Python: about ten numba kernels, a
LAPACK call and some numpy per iteration, ~0.1 ms of interpreter time per LM iteration whatever the size.
On a problem of a few cameras the arithmetic of one iteration is microseconds, so that overhead is the
solve (dubrovnik-3-7, 3 cameras, 7 points: 50 iterations, ~5 ms against Ceres SPARSE_SCHUR's ~3 ms).
:func:`small_dense_schur_lm` runs the same loop in one ``@njit`` call: evaluation (the problems' own
kernels, :func:`~mpslam_ros.problems.ba._eval_bal` / ``_eval_window``), the Jacobi column scaling and
power-of-two scale, the stored (preset-format) Jacobian and its sums, the point elimination, the reduced
camera system and its dense fp64 Cholesky (LAPACK through numba), back-substitution, the model decrease,
retraction, gain ratio, trust-region update and the stopping tests, with the same kernels and the same
scalar rules (:func:`~mpslam_ros.solvers.lm.grown_radius`, :func:`~mpslam_ros.solvers.lm.function_converged`,
:func:`~mpslam_ros.solvers.lm.shrunk_trust_region`) as the Python loop, so both take the same steps.

Precision is that of dense_schur: fp64 state, update, gradient and factor; the Jacobian blocks stored in
the preset's ``jacobian_storage`` (fp16 for mixed) before the sums that build S, widened to fp32 by the
same rule (:data:`~mpslam_ros.solvers.schur_ba.FP16_MODEL_MAX_DISAGREEMENT`).

Used when :func:`small_schur_applies`: dense_schur, no robust loss, a BAL or window problem with at most
``SolverOptions.small_problem_schur_columns`` free camera columns (``SolverSummary.small_problem_loop``).
The reduced camera system is always factored dense here (no band storage: at <= a few hundred columns the
dense factor is a fraction of a millisecond).
"""

from __future__ import annotations

import math
import time

import numpy as np
from numba import njit

from mpslam_ros.problems.ba import BALProblemModel, WindowProblem, _eval_bal, _eval_window, _retract_cameras
from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.lm import (CONVERGED_ZERO_COST, SolverOptions, SolverSummary, function_converged,
                                  grown_radius, shrunk_trust_region)
from mpslam_ros.solvers.precision import arithmetic_dtype, get_preset, power_of_two_scale
from mpslam_ros.solvers.schur_ba import (FP16_MODEL_LARGE_STEP, FP16_MODEL_MAX_DISAGREEMENT, _SchurLayout,
                                        back_substitute, gradient_and_scaled_max, model_decrease,
                                        point_inverses, reduce_rhs, reduced_camera_matrix,
                                        store_scaled_jacobian)

#: Default of ``SolverOptions.small_problem_schur_columns`` for bundle adjustment
#: (:func:`~mpslam_ros.problems.ba.ba_options`): free camera columns (cameras x 9 for BAL, x 6 for windows)
#: up to which the LM loop runs in one numba call. Why 200: the per-iteration Python overhead it removes
#: (~0.1 ms) is the whole cost of a 3-camera problem and still ~5-10 % of a 20-camera one (generated 1e3:
#: ~1.5 ms per iteration), while the dense fp64 factor it always uses (no band storage) costs n^3 / 3 flops:
#: ~2.7 Mflop at 200 columns, a fraction of a millisecond. The bench's VO windows (48 free keyframes, 288
#: columns, banded S) stay on the Python loop; the VO's own windows use a robust loss, which this path
#: does not implement, and stay there too.
SMALL_PROBLEM_SCHUR_COLUMNS = 200

# termination codes of small_dense_schur_lm
TERM_MAX_ITERATIONS = 0
TERM_GRADIENT = 1
TERM_STEP = 2
TERM_ZERO_COST = 3
TERM_COST_CHANGE = 4
TERM_COLLAPSED = 5
TERM_TIME = 6
TERM_BAD_INITIAL = 7

# the Python loop's scalar rules, compiled as they are (one definition each)
_power_of_two_scale = njit(nogil=True, cache=True)(power_of_two_scale)
_grown_radius = njit(nogil=True, cache=True)(grown_radius)
_shrunk_trust_region = njit(nogil=True, cache=True)(shrunk_trust_region)
_function_converged = njit(nogil=True, cache=True)(function_converged)

#: columns of the history array written by small_dense_schur_lm (one row per LM iteration)
HISTORY_COLUMNS = ("iteration", "cost", "gain_ratio", "gradient_max_norm", "step_norm", "trust_region_radius",
                   "cg_iterations", "accepted")


@njit(nogil=True, cache=True, error_model="numpy")
def _evaluate(kind, R, t, intr, pts, obs_cam, obs_pt, obs_uv, obs_ur, cam_model, res, Ja, Jb):
    """Residuals and Jacobians of a BAL (kind 0) or window (kind 1) problem; returns 0.5 |r|^2."""
    if kind == 0:
        _eval_bal(R, t, intr, pts, obs_cam, obs_pt, obs_uv, True, res, Ja, Jb)
    else:
        _eval_window(R, t, pts, obs_cam, obs_pt, obs_uv, obs_ur, cam_model[0], cam_model[1], cam_model[2],
                     cam_model[3], cam_model[4], True, res, Ja, Jb)
    acc = 0.0
    for k in range(res.shape[0]):
        s = 0.0
        for r in range(res.shape[1]):
            s += res[k, r] * res[k, r]
        acc += s
    return 0.5 * acc


@njit(nogil=True, cache=True, error_model="numpy")
def _retract(R, t, intr, pts, fixed_cams, delta, dc):
    """The problems' ``retract`` (:meth:`~mpslam_ros.problems.ba._CameraPointProblem.retract`) on the full
    update vector: cameras on the left, BAL intrinsics and points additively."""
    _retract_cameras(R, t, delta, dc, fixed_cams)
    if dc > 6:
        for c in range(R.shape[0]):
            if not fixed_cams[c]:
                for e in range(dc - 6):
                    intr[c, e] += delta[c * dc + 6 + e]
    o = R.shape[0] * dc
    for j in range(pts.shape[0]):
        for a in range(3):
            pts[j, a] += delta[o + 3 * j + a]


@njit(nogil=True, cache=True, error_model="numpy")
def _dense_cholesky_solve(Z, rhs, S, out):
    """out = S^-1 rhs with S from :func:`reduced_camera_matrix`'s dense lower triangle (S[i, j] = Z[j, i],
    i >= j), fp64 LAPACK Cholesky; ``S``: n x n workspace. False when S is not positive definite."""
    n = rhs.shape[0]
    for i in range(n):
        for j in range(i + 1):
            S[i, j] = Z[j, i]
            S[j, i] = Z[j, i]
    try:
        L = np.linalg.cholesky(S)
    except Exception:  # not positive definite, or not finite
        return False
    K.cholesky_lower_solve(L, rhs, out)
    return True


@njit(nogil=True, cache=True, error_model="numpy")
def small_dense_schur_lm(kind, R, t, intr, pts, obs_cam, obs_pt, obs_uv, obs_ur, cam_model, fixed_cams,
                         cam_col, pt_col, pt_start, free_to_full, n_free_cams, Sa, Sb, Sa_wide, Sb_wide,
                         check_fp16_model, max_iterations, tolerances, history, out_i, out_f):
    """LM with the dense Schur solver on a point-major BAL (``kind`` 0) or window (1) problem, state
    (R, t, intr, pts) updated in place: the loop of :func:`~mpslam_ros.solvers.schur_ba.solve_schur_ba`
    (dense_schur) step for step.

    ``Sa, Sb``: the stored-Jacobian scratch in the preset's format; ``Sa_wide, Sb_wide`` (fp32) replace
    them after the fp16 model check fires (``check_fp16_model``). ``tolerances``: function, gradient,
    parameter tolerance, min relative decrease, initial / max / min trust-region radius, good-step radius
    growth (0: off), model agreement factor, time limit in cycle-counter ticks (0: none). Writes
    ``history`` rows (:data:`HISTORY_COLUMNS`), ``out_i`` = (iterations, successful iterations,
    termination code, iteration of the fp16 widening or -1, history rows) and ``out_f`` = (initial cost,
    final cost, value quoted by the termination, ticks in evaluation, scaling, linear solve, building S,
    update)."""
    t_start = K.cycle_counter()
    ftol, gtol, ptol, min_rel = tolerances[0], tolerances[1], tolerances[2], tolerances[3]
    radius, max_radius, min_radius = tolerances[4], tolerances[5], tolerances[6]
    good_growth, agreement, max_ticks = tolerances[7], tolerances[8], tolerances[9]
    n_obs = obs_cam.shape[0]
    m = Sa.shape[1]
    dc = Sa.shape[2]
    n_pts = pts.shape[0]
    n_c = n_free_cams * dc
    n = n_c + 3 * n_pts
    n_full = R.shape[0] * dc + 3 * n_pts
    res = np.empty((n_obs, m))
    Ja = np.empty((n_obs, m, dc))
    Jb = np.empty((n_obs, m, 3))
    res_new = np.empty((n_obs, m))
    Ja_new = np.empty((n_obs, m, dc))
    Jb_new = np.empty((n_obs, m, 3))
    t_eval = 0
    t_scale = 0
    t_lin = 0
    t_build = 0
    t_update = 0
    cost = _evaluate(kind, R, t, intr, pts, obs_cam, obs_pt, obs_uv, obs_ur, cam_model, res, Ja, Jb)
    t_eval += K.cycle_counter() - t_start
    out_f[0] = cost
    out_f[1] = cost
    out_i[:] = 0
    out_i[3] = -1
    if not np.isfinite(cost):
        out_i[2] = TERM_BAD_INITIAL
        out_f[3] = t_eval
        return
    colnorm = np.empty(n)
    col_scale = np.empty(n)
    grad = np.empty(n)
    b = np.empty(n)
    b_c = np.empty(n_c)
    x_c = np.zeros(n_c)
    y = np.empty(n)
    delta = np.empty(n)
    step_full = np.zeros(n_full)
    Vinv64 = np.empty((n_pts, 3, 3))
    Yt = np.empty((n_obs, 3, dc))
    U = np.empty((n_free_cams, dc, dc))
    BtB = np.empty((n_pts, 3, 3))
    Z = np.empty((n_c, n_c))
    S = np.empty((n_c, n_c))
    R_saved = np.empty_like(R)
    t_saved = np.empty_like(t)
    intr_saved = np.empty_like(intr)
    pts_saved = np.empty_like(pts)
    decrease_factor = 2.0
    g = 1.0
    grad_max = 0.0
    have_scale = False
    linearised = True
    wide = False
    term = TERM_MAX_ITERATIONS
    term_value = 0.0
    iterations = 0
    successful = 0
    n_hist = 0
    sqrt_n = math.sqrt(n)
    for it in range(max_iterations):
        if max_ticks > 0 and K.cycle_counter() - t_start > max_ticks:
            term = TERM_TIME
            break
        if linearised:
            t0 = K.cycle_counter()
            if not have_scale:
                K.jtj_column_norms2(Ja, Jb, cam_col, pt_col, colnorm)
                floor = 1e-12 * max(colnorm.max(), 1e-300)
                for i in range(n):
                    col_scale[i] = 1.0 / np.sqrt(max(colnorm[i], floor))
                have_scale = True
            g = _power_of_two_scale(gradient_and_scaled_max(Ja, Jb, res, cam_col, pt_col, col_scale, grad))
            grad_max = 0.0
            for i in range(n):
                grad_max = max(grad_max, abs(grad[i]))
                grad[i] *= col_scale[i] * (g * g)
            if wide:
                store_scaled_jacobian(Ja, Jb, cam_col, pt_col, pt_start, col_scale, g, Sa_wide, Sb_wide, Yt, U, BtB)
            else:
                store_scaled_jacobian(Ja, Jb, cam_col, pt_col, pt_start, col_scale, g, Sa, Sb, Yt, U, BtB)
            t_scale += K.cycle_counter() - t0
            if grad_max <= gtol:
                term = TERM_GRADIENT
                term_value = grad_max
                break
            linearised = False
        lam_s = (1.0 / radius) * g * g
        # ---- linear solve: eliminate the points, solve the reduced camera system, back-substitute
        t0 = K.cycle_counter()
        for i in range(n):
            b[i] = -grad[i]
        point_inverses(BtB, lam_s, Vinv64)
        reduce_rhs(Yt, cam_col, pt_start, Vinv64, b[:n_c], b[n_c:], b_c)
        ok = True
        if n_c > 0:
            t1 = K.cycle_counter()
            reduced_camera_matrix(Yt, U, cam_col, pt_start, Vinv64, lam_s, Z, 0)
            t_build += K.cycle_counter() - t1
            ok = _dense_cholesky_solve(Z, b_c, S, x_c)
        y[:n_c] = x_c
        back_substitute(Yt, cam_col, pt_start, Vinv64, b[n_c:], x_c, y[n_c:])
        t_lin += K.cycle_counter() - t0
        iterations += 1
        # ---- step, gain ratio, trust region
        t0 = K.cycle_counter()
        accepted = False
        rho_gain = np.nan
        step_norm = np.nan
        new_cost = np.nan
        pred = np.nan
        if ok and np.all(np.isfinite(y)):
            ss = 0.0
            for i in range(n):
                delta[i] = y[i] * col_scale[i]
                ss += delta[i] * delta[i]
            step_norm = math.sqrt(ss)
            pred = model_decrease(Ja, Jb, res, cam_col, pt_col, delta)
            if check_fp16_model and not wide and pred > FP16_MODEL_LARGE_STEP * cost:
                # the stored system's own prediction (exact solve: |J y|^2 = b.y - lam |y|^2 in scaled units)
                by = 0.0
                yy = 0.0
                for i in range(n):
                    by += b[i] * y[i]
                    yy += y[i] * y[i]
                pred_stored = 0.5 * (by + lam_s * yy) / (g * g)
                if abs(pred_stored - pred) > FP16_MODEL_MAX_DISAGREEMENT * pred:
                    wide = True
                    linearised = True  # re-store (fp32) and rebuild the sums, also if this step is rejected
                    out_i[3] = iterations
            if step_norm <= ptol * (sqrt_n + ptol):
                term = TERM_STEP
                term_value = step_norm
                t_update += K.cycle_counter() - t0
                break
            R_saved[:] = R
            t_saved[:] = t
            intr_saved[:] = intr
            pts_saved[:] = pts
            for i in range(n):
                step_full[free_to_full[i]] = delta[i]
            _retract(R, t, intr, pts, fixed_cams, step_full, dc)
            t1 = K.cycle_counter()
            t_update += t1 - t0
            new_cost = _evaluate(kind, R, t, intr, pts, obs_cam, obs_pt, obs_uv, obs_ur, cam_model,
                                 res_new, Ja_new, Jb_new)
            t0 = K.cycle_counter()
            t_eval += t0 - t1
            rho_gain = (cost - new_cost) / pred if pred > 0 else -1.0
            accepted = np.isfinite(new_cost) and new_cost < cost and rho_gain > min_rel
            if not accepted:
                R[:] = R_saved
                t[:] = t_saved
                intr[:] = intr_saved
                pts[:] = pts_saved
        history[it, 0] = it
        history[it, 1] = new_cost if accepted else cost
        history[it, 2] = rho_gain
        history[it, 3] = grad_max
        history[it, 4] = step_norm
        history[it, 5] = radius
        history[it, 6] = 0.0
        history[it, 7] = 1.0 if accepted else 0.0
        n_hist = it + 1
        if accepted:
            rel_change = (cost - new_cost) / max(cost, 1e-300)
            pred_rel = pred / max(cost, 1e-300)
            cost = new_cost
            res, res_new = res_new, res
            Ja, Ja_new = Ja_new, Ja
            Jb, Jb_new = Jb_new, Jb
            linearised = True
            successful += 1
            radius = _grown_radius(radius, rho_gain, good_growth, max_radius)
            decrease_factor = 2.0
            t_update += K.cycle_counter() - t0
            why = _function_converged(cost, rel_change, pred_rel, ftol, agreement)
            if why != 0:
                term = TERM_ZERO_COST if why == CONVERGED_ZERO_COST else TERM_COST_CHANGE
                term_value = rel_change
                break
        else:
            t_update += K.cycle_counter() - t0
            radius, decrease_factor = _shrunk_trust_region(radius, decrease_factor)
            if radius < min_radius:
                term = TERM_COLLAPSED
                break
    out_i[0] = iterations
    out_i[1] = successful
    out_i[2] = term
    out_i[4] = n_hist
    out_f[1] = cost
    out_f[2] = term_value
    out_f[3] = t_eval
    out_f[4] = t_scale
    out_f[5] = t_lin
    out_f[6] = t_build
    out_f[7] = t_update


def small_schur_applies(problem, options: SolverOptions, linear_solver: str) -> bool:
    """True when :func:`solve_small_dense_schur` runs this solve: dense_schur, no robust loss, a BAL or
    window problem with at most ``options.small_problem_schur_columns`` free camera columns."""
    limit = getattr(options, "small_problem_schur_columns", None)
    if not limit or linear_solver != "dense_schur" or options.robust_loss is not None:
        return False
    if not isinstance(problem, (BALProblemModel, WindowProblem)):
        return False
    n_free = int(np.count_nonzero(~np.asarray(problem.fixed_blocks[: problem.n_cams], dtype=bool)))
    return n_free * int(problem.dim_a) <= limit


_TERMINATION = {
    TERM_GRADIENT: lambda v, o: f"converged: gradient max-norm {v:.3e} <= {o.gradient_tolerance:g}",
    TERM_STEP: lambda v, o: f"converged: step norm {v:.3e} below parameter tolerance",
    TERM_ZERO_COST: lambda v, o: "converged: zero cost",
    TERM_COST_CHANGE: lambda v, o: f"converged: relative cost change {v:.3e} <= {o.function_tolerance:g}",
    TERM_COLLAPSED: lambda v, o: "failure: trust region collapsed (no step decreases the cost)",
    TERM_TIME: lambda v, o: "time limit reached",
    TERM_BAD_INITIAL: lambda v, o: "failure: initial cost is not finite (check the input data)",
    TERM_MAX_ITERATIONS: lambda v, o: f"maximum iterations ({o.max_iterations}) reached",
}


def solve_small_dense_schur(problem, options: SolverOptions) -> SolverSummary:
    """dense_schur LM on a small point-major BAL / window problem in one numba call (state updated in
    place); the summary has ``small_problem_loop=True`` and otherwise the fields dense_schur fills."""
    t_start = time.perf_counter()
    preset = get_preset(options.precision)
    if preset.emulate_half:
        raise ValueError("schur solvers: emulated fp16 arithmetic (the naive fp16 preset) is CGNR-only")
    summary = SolverSummary(precision=preset.name, linear_solver="dense_schur", preconditioner="-",
                            small_problem_loop=True)
    lay = _SchurLayout(problem)
    n_obs = len(lay.cam_col)
    storage = preset.jacobian_storage
    fp16 = storage == "fp16"
    Sa = np.empty((n_obs, lay.m, lay.dc), dtype=np.uint16 if fp16 else arithmetic_dtype(storage))
    Sb = np.empty((n_obs, lay.m, 3), dtype=Sa.dtype)
    n_wide = n_obs if fp16 else 0
    Sa_wide = np.empty((n_wide, lay.m, lay.dc), dtype=np.float32)
    Sb_wide = np.empty((n_wide, lay.m, 3), dtype=np.float32)
    if isinstance(problem, BALProblemModel):
        kind, intr, obs_ur, cam_model = 0, problem.intrinsics_free, np.empty(0), np.zeros(5)
    else:
        kind, intr, obs_ur = 1, np.empty((problem.n_cams, 0)), problem.obs_ur
        cam_model = np.array([*problem.intrinsics, problem.baseline], dtype=np.float64)
    tps = K.ticks_per_second()
    max_ticks = options.max_time_s * tps if options.max_time_s else 0.0
    tolerances = np.array([options.function_tolerance, options.gradient_tolerance, options.parameter_tolerance,
                           options.min_relative_decrease, options.initial_trust_region_radius,
                           options.max_trust_region_radius, options.min_trust_region_radius,
                           float(options.good_step_radius_growth or 0.0), options.model_agreement_factor,
                           max_ticks])
    history = np.empty((max(options.max_iterations, 0), len(HISTORY_COLUMNS)))
    out_i = np.zeros(5, dtype=np.int64)
    out_f = np.zeros(8)
    small_dense_schur_lm(kind, problem.R, problem.t, intr, problem.points, problem.obs_cam, problem.obs_pt,
                         problem.obs_uv, obs_ur, cam_model, problem.fixed_cams, lay.cam_col, lay.pt_col,
                         lay.pt_start, lay.free_to_full, lay.n_free_cams, Sa, Sb, Sa_wide, Sb_wide, fp16,
                         int(options.max_iterations), tolerances, history, out_i, out_f)
    iterations, successful, term, widened_at, n_hist = (int(v) for v in out_i)
    summary.initial_cost, summary.final_cost = float(out_f[0]), float(out_f[1])
    summary.iterations, summary.successful_iterations = iterations, successful
    summary.termination = _TERMINATION[term](float(out_f[2]), options)
    summary.converged = term in (TERM_GRADIENT, TERM_STEP, TERM_ZERO_COST, TERM_COST_CHANGE)
    summary.jacobian_widened_at = widened_at
    summary.jacobian_bytes = K.bytes_of(Sa_wide, Sb_wide) if widened_at >= 0 else K.bytes_of(Sa, Sb)
    (summary.evaluation_time_s, summary.scaling_time_s, summary.linear_solve_time_s,
     summary.jacobian_product_time_s, summary.update_time_s) = (float(v) / tps for v in out_f[3:8])
    rows = history[:n_hist].tolist()
    summary.history = [dict(iteration=int(r[0]), cost=r[1], gain_ratio=r[2], gradient_max_norm=r[3], step_norm=r[4],
                            trust_region_radius=r[5], cg_iterations=0, accepted=r[7] != 0.0) for r in rows]
    summary.time_s = time.perf_counter() - t_start
    return summary
