"""fp64 Schur-complement reference solver for bundle adjustment (the classical way).

Levenberg-Marquardt (Ceres-style trust region on ``lambda * diag(J^T J)``) whose linear step
eliminates the landmarks: with ``H = J^T J + lambda D = [[U, W], [W^T, V]]`` (cameras, points),
``V`` is block-diagonal 3x3 and cheap to invert, the reduced camera system
``S = U - W V^-1 W^T`` is factored by a dense Cholesky, and the points are back-substituted.
Everything is fp64; the benchmark compares the mixed-precision CGNR against it.

Drives any camera-point problem of the solver protocol (block ``a`` = camera, ``b`` = point);
its own LM loop so the reference does not share code paths with the solver it checks.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.linalg as sla
import scipy.sparse as sp

from mpslam_ros.solvers.lm import SolverOptions, SolverSummary, robust_weights
from mpslam_ros.solvers.problem import parameter_offsets


def _jacobian_matrix(problem, Ja, Jb, offsets):
    """Sparse CSR J (K*m rows, all parameter columns) from the per-block Jacobians."""
    K, m, da = Ja.shape
    db = Jb.shape[2]
    rows = np.arange(K * m).reshape(K, m)
    ca = offsets[problem.block_a][:, None] + np.arange(da)[None, :]
    cb = offsets[problem.block_b][:, None] + np.arange(db)[None, :]
    r_idx = np.concatenate([np.repeat(rows[:, :, None], da, 2).ravel(), np.repeat(rows[:, :, None], db, 2).ravel()])
    c_idx = np.concatenate([np.broadcast_to(ca[:, None, :], (K, m, da)).ravel(),
                            np.broadcast_to(cb[:, None, :], (K, m, db)).ravel()])
    vals = np.concatenate([Ja.ravel(), Jb.ravel()])
    return sp.csr_matrix((vals, (r_idx, c_idx)), shape=(K * m, int(offsets[-1])))


def solve_schur(problem, options: SolverOptions | None = None) -> SolverSummary:
    """Solve ``problem`` with LM + Schur complement + dense Cholesky, all in fp64."""
    options = options or SolverOptions()
    t_start = time.perf_counter()
    summary = SolverSummary(precision="fp64", linear_solver="schur", preconditioner="none")
    offsets = parameter_offsets(problem)
    n_cam_cols = int(offsets[problem.n_cams])
    free = np.ones(int(offsets[-1]), dtype=bool)
    for i in np.nonzero(problem.fixed_blocks)[0]:
        free[offsets[i]:offsets[i + 1]] = False
    cam_free = free[:n_cam_cols]
    pt_free = free[n_cam_cols:]

    def cost_of(res):
        rho, sw = robust_weights(np.sum(res * res, axis=1), options.robust_loss, options.robust_scale)
        return 0.5 * float(np.sum(rho)), sw

    t0 = time.perf_counter()
    res, Ja, Jb = problem.evaluate(True)
    summary.evaluation_time_s += time.perf_counter() - t0
    cost, sw = cost_of(res)
    summary.initial_cost = cost
    lam = 1.0 / options.initial_trust_region_radius
    lam = max(lam, 1e-8)
    nu = 2.0
    termination = "maximum iterations"
    for it in range(options.max_iterations):
        summary.iterations = it + 1
        t0 = time.perf_counter()
        J = _jacobian_matrix(problem, Ja * sw[:, None, None], Jb * sw[:, None, None], offsets)
        r = (res * sw[:, None]).ravel()
        g = -(J.T @ r)
        H = (J.T @ J).tocsr()
        diag = np.clip(H.diagonal(), 1e-6, 1e32)
        Hc = H[:n_cam_cols][:, :n_cam_cols][cam_free][:, cam_free].toarray()
        Hcp = H[:n_cam_cols][:, n_cam_cols:][cam_free].tocsr()
        Hpp = H[n_cam_cols:][:, n_cam_cols:]
        gc, gp = g[:n_cam_cols][cam_free], g[n_cam_cols:]
        if np.max(np.abs(g[free])) <= options.gradient_tolerance:
            termination = "converged: gradient"
            break
        # V blocks (3x3 per point)
        n_pts = len(gp) // 3
        V = np.zeros((n_pts, 3, 3))
        Hpp = Hpp.tocoo()
        V[Hpp.row // 3, Hpp.row % 3, Hpp.col % 3] = Hpp.data
        dc_lam = diag[:n_cam_cols][cam_free]
        dp_lam = diag[n_cam_cols:].reshape(n_pts, 3)
        summary.linear_solve_time_s += time.perf_counter() - t0
        while True:
            t0 = time.perf_counter()
            Vl = V + lam * dp_lam[:, :, None] * np.eye(3)[None]
            Vinv = np.linalg.inv(Vl)
            Vinv_sp = sp.bsr_matrix((Vinv, np.arange(n_pts), np.arange(n_pts + 1)), shape=(3 * n_pts, 3 * n_pts)).tocsr()
            WVinv = Hcp @ Vinv_sp
            S = Hc + np.diag(lam * dc_lam) - (WVinv @ Hcp.T).toarray()
            rhs = gc - WVinv @ gp
            try:
                dx_c = sla.cho_solve(sla.cho_factor(S, lower=True, check_finite=False), rhs, check_finite=False)
            except np.linalg.LinAlgError:
                dx_c = np.linalg.lstsq(S, rhs, rcond=None)[0]
            dx_p = np.einsum("kij,kj->ki", Vinv, (gp - Hcp.T @ dx_c).reshape(n_pts, 3)).ravel()
            delta = np.zeros(int(offsets[-1]))
            delta[:n_cam_cols][cam_free] = dx_c
            delta[n_cam_cols:] = dx_p
            delta[~free] = 0.0
            summary.linear_solve_time_s += time.perf_counter() - t0
            model_decrease = float(delta @ g - 0.5 * np.sum((J @ delta) ** 2))
            state = problem.get_state()
            t0 = time.perf_counter()
            problem.retract(delta)
            new_res, _, _ = problem.evaluate(False)
            summary.evaluation_time_s += time.perf_counter() - t0
            new_cost, _ = cost_of(new_res)
            rho = (cost - new_cost) / model_decrease if model_decrease > 0 else -1.0
            if np.isfinite(new_cost) and rho > options.min_relative_decrease:
                break
            problem.set_state(state)
            lam *= nu
            nu *= 2.0
            if lam > 1e32:
                termination = "converged: step rejected at maximum damping"
                break
        if lam > 1e32:
            break
        summary.successful_iterations += 1
        rel = (cost - new_cost) / max(cost, 1e-300)
        step_small = np.linalg.norm(delta) <= options.parameter_tolerance * (np.sqrt(len(delta)) + options.parameter_tolerance)
        lam *= max(1.0 / 3.0, 1.0 - (2.0 * rho - 1.0) ** 3)
        nu = 2.0
        cost = new_cost
        t0 = time.perf_counter()
        res, Ja, Jb = problem.evaluate(True)
        summary.evaluation_time_s += time.perf_counter() - t0
        cost, sw = cost_of(res)
        if rel <= options.function_tolerance:
            termination = f"converged: relative cost change {rel:.3e} <= {options.function_tolerance:g}"
            break
        if step_small:
            termination = "converged: step norm below parameter tolerance"
            break
    summary.final_cost = cost
    summary.termination = termination
    summary.converged = termination.startswith("converged")
    summary.time_s = time.perf_counter() - t_start
    return summary
