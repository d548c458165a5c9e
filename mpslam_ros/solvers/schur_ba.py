"""Bundle adjustment on the reduced camera system (Schur complement), as Ceres' DENSE_SCHUR and
ITERATIVE_SCHUR do, with the Jacobian products in the mixed-precision policy.

Normal equations of the (column-scaled) damped problem, cameras ``c`` and points ``p``::

    [U + lam I   W        ] [x_c]   [b_c]        S = U + lam I - W V^-1 W^T      (reduced camera system)
    [W^T         V + lam I] [x_p] = [b_p]        S x_c = b_c - W V^-1 b_p,  x_p = V^-1 (b_p - W^T x_c)

``V`` is block-diagonal (one 3x3 block per point): the points are eliminated exactly, block by block.
Observations are stored point-major (the problem is built with its observations sorted by point,
:func:`point_major_order`), so one point's blocks are contiguous and everything below is a pass over
points. Two ways to solve for ``x_c``:

- ``"iterative_schur"``: preconditioned CG on ``S`` applied matrix-free (``S p`` per point: ``q_k =
  A_k p_c``, ``t = sum B_k^T q_k``, ``u = V^-1 t``, ``out_c += A_k^T (q_k - B_k u)``; no explicit S),
  Schur-Jacobi preconditioner (the exact dc x dc diagonal blocks of S, inverted). Ceres' ITERATIVE_SCHUR.
- ``"dense_schur"``: S assembled explicitly from the same stored blocks (per point, the pairs of its
  observations) and factored by a dense fp64 Cholesky. Ceres' DENSE_SCHUR.

Precision (docs/solvers.md): fp64 state, update, gradient (the right-hand side is LM's fp64 gradient:
the fixed point is the fp64 optimum whatever the product precision); Jacobian blocks stored in the
preset's ``jacobian_storage`` (fp16 as uint16 bits, widened with ``fpext half``); CG vectors and
product arithmetic in the preset's ``cg_vectors`` format (fp32 for mixed); the 3x3 point blocks are
accumulated and inverted in fp64 and stored in the vector format; the dense factor is fp64.

The LM loop is that of :func:`mpslam_ros.solvers.lm.solve` (same Jacobi column scaling and damping
``lam I`` in the scaled system, same trust-region update, same stopping rules and SolverSummary),
written out here so a window solve carries no per-iteration machinery it does not use.
"""

from __future__ import annotations

import math
import time
from typing import Optional

import numpy as np
import scipy.linalg as sla
from numba import njit

from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.kernels import widen, zero_of
from mpslam_ros.solvers.lm import SolverOptions, SolverSummary
from mpslam_ros.solvers.precision import arithmetic_dtype, get_preset, power_of_two_scale, to_storage

SCHUR_SOLVERS = ("dense_schur", "iterative_schur")


def point_major_order(obs_pt: np.ndarray) -> np.ndarray:
    """Permutation sorting observations by point (stable: camera order kept within a track)."""
    return np.argsort(np.asarray(obs_pt), kind="stable")


# --------------------------------------------------------------------------------------------- kernels


@njit(nogil=True, cache=True, error_model="numpy")
def point_inverses(B, pt_start, lam, Vinv):
    """Vinv[j] = (sum_k B_k^T B_k + lam I)^-1 over point j's observations (fp64 sums and inverse)."""
    m = B.shape[1]
    for j in range(pt_start.shape[0] - 1):
        v00 = v01 = v02 = v11 = v12 = v22 = 0.0
        for k in range(pt_start[j], pt_start[j + 1]):
            for r in range(m):
                b0 = np.float64(widen(B[k, r, 0]))
                b1 = np.float64(widen(B[k, r, 1]))
                b2 = np.float64(widen(B[k, r, 2]))
                v00 += b0 * b0
                v01 += b0 * b1
                v02 += b0 * b2
                v11 += b1 * b1
                v12 += b1 * b2
                v22 += b2 * b2
        v00 += lam
        v11 += lam
        v22 += lam
        c00 = v11 * v22 - v12 * v12
        c01 = v02 * v12 - v01 * v22
        c02 = v01 * v12 - v02 * v11
        c11 = v00 * v22 - v02 * v02
        c12 = v01 * v02 - v00 * v12
        c22 = v00 * v11 - v01 * v01
        det = v00 * c00 + v01 * c01 + v02 * c02
        tr = v00 + v11 + v22
        floor = 1e-30 * tr * tr * tr
        if not det > floor:  # unobservable point (lam = 0): pseudo-regularise instead of inf
            det = floor if floor > 0.0 else 1e-300
        inv = 1.0 / det
        Vinv[j, 0, 0] = c00 * inv
        Vinv[j, 0, 1] = c01 * inv
        Vinv[j, 0, 2] = c02 * inv
        Vinv[j, 1, 0] = c01 * inv
        Vinv[j, 1, 1] = c11 * inv
        Vinv[j, 1, 2] = c12 * inv
        Vinv[j, 2, 0] = c02 * inv
        Vinv[j, 2, 1] = c12 * inv
        Vinv[j, 2, 2] = c22 * inv


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _point_schur_product(A, B, cam_col, s, e, Vj, p, out, q, m, dc):
    """out += (U_j - W_j V_j^-1 W_j^T) p for one point's observations s..e (m, dc constant after inlining)."""
    t0 = zero_of(out)
    t1 = zero_of(out)
    t2 = zero_of(out)
    for k in range(s, e):
        c = cam_col[k]
        if c < 0:
            continue
        for r in range(m):
            acc = zero_of(out)
            for d in range(dc):
                acc += widen(A[k, r, d]) * p[c + d]
            q[k - s, r] = acc
            t0 += widen(B[k, r, 0]) * acc
            t1 += widen(B[k, r, 1]) * acc
            t2 += widen(B[k, r, 2]) * acc
    u0 = Vj[0, 0] * t0 + Vj[0, 1] * t1 + Vj[0, 2] * t2
    u1 = Vj[1, 0] * t0 + Vj[1, 1] * t1 + Vj[1, 2] * t2
    u2 = Vj[2, 0] * t0 + Vj[2, 1] * t1 + Vj[2, 2] * t2
    for k in range(s, e):
        c = cam_col[k]
        if c < 0:
            continue
        for r in range(m):
            q[k - s, r] -= widen(B[k, r, 0]) * u0 + widen(B[k, r, 1]) * u1 + widen(B[k, r, 2]) * u2
        for d in range(dc):
            acc = zero_of(out)
            for r in range(m):
                acc += widen(A[k, r, d]) * q[k - s, r]
            out[c + d] += acc


@njit(nogil=True, cache=True, error_model="numpy")
def schur_product(A, B, cam_col, pt_start, Vinv, lam, p, out, q):
    """out = S p = (U + lam I - W V^-1 W^T) p without forming S (one pass over the stored blocks).

    ``q``: scratch (longest track, m) in the vector dtype. Arithmetic in ``out``'s dtype."""
    m = A.shape[1]
    dc = A.shape[2]
    for i in range(out.shape[0]):
        out[i] = lam * p[i]
    for j in range(pt_start.shape[0] - 1):
        s = pt_start[j]
        e = pt_start[j + 1]
        # constant m, dc in the common cases so LLVM unrolls the block loops
        if m == 2 and dc == 6:
            _point_schur_product(A, B, cam_col, s, e, Vinv[j], p, out, q, 2, 6)
        elif m == 2 and dc == 9:
            _point_schur_product(A, B, cam_col, s, e, Vinv[j], p, out, q, 2, 9)
        elif m == 3 and dc == 6:
            _point_schur_product(A, B, cam_col, s, e, Vinv[j], p, out, q, 3, 6)
        else:
            _point_schur_product(A, B, cam_col, s, e, Vinv[j], p, out, q, m, dc)


@njit(nogil=True, cache=True, error_model="numpy")
def schur_diagonal_blocks(A, B, cam_col, pt_start, Vinv, lam, n_cam_cols, out):
    """out[c] (fp64, dc x dc) = diagonal block of S for free camera block c: U_c + lam I - sum W V^-1 W^T."""
    m = A.shape[1]
    dc = A.shape[2]
    out[:] = 0.0
    Y = np.empty((dc, 3))
    for j in range(pt_start.shape[0] - 1):
        for k in range(pt_start[j], pt_start[j + 1]):
            c = cam_col[k]
            if c < 0:
                continue
            cb = c // dc
            for a in range(dc):
                for b in range(3):
                    acc = 0.0
                    for r in range(m):
                        acc += np.float64(widen(A[k, r, a])) * np.float64(widen(B[k, r, b]))
                    Y[a, b] = acc
            for a in range(dc):
                z0 = Y[a, 0] * Vinv[j, 0, 0] + Y[a, 1] * Vinv[j, 1, 0] + Y[a, 2] * Vinv[j, 2, 0]
                z1 = Y[a, 0] * Vinv[j, 0, 1] + Y[a, 1] * Vinv[j, 1, 1] + Y[a, 2] * Vinv[j, 2, 1]
                z2 = Y[a, 0] * Vinv[j, 0, 2] + Y[a, 1] * Vinv[j, 1, 2] + Y[a, 2] * Vinv[j, 2, 2]
                for b in range(dc):
                    acc = 0.0
                    for r in range(m):
                        acc += np.float64(widen(A[k, r, a])) * np.float64(widen(A[k, r, b]))
                    out[cb, a, b] += acc - (z0 * Y[b, 0] + z1 * Y[b, 1] + z2 * Y[b, 2])
    for cb in range(out.shape[0]):
        for a in range(dc):
            out[cb, a, a] += lam


@njit(nogil=True, cache=True, error_model="numpy")
def dense_schur_matrix(A, B, cam_col, pt_start, Vinv, lam, S):
    """S (n_c x n_c, in S's dtype) = U + lam I - W V^-1 W^T assembled from the stored blocks, per point."""
    m = A.shape[1]
    dc = A.shape[2]
    S[:] = 0
    maxt = 0
    for j in range(pt_start.shape[0] - 1):
        maxt = max(maxt, pt_start[j + 1] - pt_start[j])
    Y = np.zeros((maxt, dc, 3), dtype=S.dtype)
    Z = np.zeros((maxt, dc, 3), dtype=S.dtype)
    for j in range(pt_start.shape[0] - 1):
        s = pt_start[j]
        e = pt_start[j + 1]
        for k in range(s, e):
            c = cam_col[k]
            if c < 0:
                continue
            i = k - s
            for a in range(dc):
                for b in range(3):
                    acc = zero_of(S)
                    for r in range(m):
                        acc += widen(A[k, r, a]) * widen(B[k, r, b])
                    Y[i, a, b] = acc
                for b in range(3):
                    Z[i, a, b] = Y[i, a, 0] * Vinv[j, 0, b] + Y[i, a, 1] * Vinv[j, 1, b] + Y[i, a, 2] * Vinv[j, 2, b]
            # U_c (lower triangle of the block; mirrored below)
            for a in range(dc):
                for b in range(a + 1):
                    acc = zero_of(S)
                    for r in range(m):
                        acc += widen(A[k, r, a]) * widen(A[k, r, b])
                    S[c + a, c + b] += acc
        for k in range(s, e):
            c = cam_col[k]
            if c < 0:
                continue
            i = k - s
            for l in range(s, e):
                d = cam_col[l]
                if d < 0 or d > c:
                    continue
                il = l - s
                for a in range(dc):
                    for b in range(dc):
                        if d == c and b > a:
                            break
                        S[c + a, d + b] -= Z[i, a, 0] * Y[il, b, 0] + Z[i, a, 1] * Y[il, b, 1] + Z[i, a, 2] * Y[il, b, 2]
    n = S.shape[0]
    for a in range(n):
        S[a, a] += lam
        for b in range(a):
            S[b, a] = S[a, b]


@njit(nogil=True, cache=True, error_model="numpy")
def reduce_rhs(A, B, cam_col, pt_start, Vinv, b_c, b_p, out):
    """out = b_c - W V^-1 b_p (fp64 arithmetic; ``b_p`` per point, 3 values each)."""
    m = A.shape[1]
    dc = A.shape[2]
    out[:] = b_c
    for j in range(pt_start.shape[0] - 1):
        g0 = b_p[3 * j]
        g1 = b_p[3 * j + 1]
        g2 = b_p[3 * j + 2]
        v0 = Vinv[j, 0, 0] * g0 + Vinv[j, 0, 1] * g1 + Vinv[j, 0, 2] * g2
        v1 = Vinv[j, 1, 0] * g0 + Vinv[j, 1, 1] * g1 + Vinv[j, 1, 2] * g2
        v2 = Vinv[j, 2, 0] * g0 + Vinv[j, 2, 1] * g1 + Vinv[j, 2, 2] * g2
        for k in range(pt_start[j], pt_start[j + 1]):
            c = cam_col[k]
            if c < 0:
                continue
            for r in range(m):
                w = (np.float64(widen(B[k, r, 0])) * v0 + np.float64(widen(B[k, r, 1])) * v1
                     + np.float64(widen(B[k, r, 2])) * v2)
                for d in range(dc):
                    out[c + d] -= np.float64(widen(A[k, r, d])) * w


@njit(nogil=True, cache=True, error_model="numpy")
def back_substitute(A, B, cam_col, pt_start, Vinv, b_p, x_c, x_p):
    """x_p[j] = V_j^-1 (b_p[j] - sum_k B_k^T A_k x_c) (fp64 arithmetic)."""
    m = A.shape[1]
    dc = A.shape[2]
    for j in range(pt_start.shape[0] - 1):
        t0 = b_p[3 * j]
        t1 = b_p[3 * j + 1]
        t2 = b_p[3 * j + 2]
        for k in range(pt_start[j], pt_start[j + 1]):
            c = cam_col[k]
            if c < 0:
                continue
            for r in range(m):
                acc = 0.0
                for d in range(dc):
                    acc += np.float64(widen(A[k, r, d])) * x_c[c + d]
                t0 -= np.float64(widen(B[k, r, 0])) * acc
                t1 -= np.float64(widen(B[k, r, 1])) * acc
                t2 -= np.float64(widen(B[k, r, 2])) * acc
        x_p[3 * j] = Vinv[j, 0, 0] * t0 + Vinv[j, 0, 1] * t1 + Vinv[j, 0, 2] * t2
        x_p[3 * j + 1] = Vinv[j, 1, 0] * t0 + Vinv[j, 1, 1] * t1 + Vinv[j, 1, 2] * t2
        x_p[3 * j + 2] = Vinv[j, 2, 0] * t0 + Vinv[j, 2, 1] * t1 + Vinv[j, 2, 2] * t2


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _apply_block_inverse(Minv, r, z):
    nb, dc = Minv.shape[0], Minv.shape[1]
    for b in range(nb):
        o = b * dc
        for a in range(dc):
            acc = zero_of(z)
            for c in range(dc):
                acc += Minv[b, a, c] * r[o + c]
            z[o + a] = acc


@njit(nogil=True, cache=True, error_model="numpy")
def schur_pcg(A, B, cam_col, pt_start, Vinv, lam, Minv, rhs, max_iter, rtol, x, stats):
    """Schur-Jacobi preconditioned CG on ``S x = rhs`` (S applied by :func:`schur_product`).

    Vectors and arithmetic in ``rhs``'s dtype. ``stats``: iterations, final relative residual, ticks in
    the preconditioner, ticks in the S products, 1.0 if a non-finite value appeared. Returns iterations."""
    n = rhs.shape[0]
    m = A.shape[1]
    maxt = 1
    for j in range(pt_start.shape[0] - 1):
        maxt = max(maxt, pt_start[j + 1] - pt_start[j])
    q = np.empty((maxt, m), dtype=rhs.dtype)
    r = rhs.copy()
    z = np.empty_like(rhs)
    Ap = np.empty_like(rhs)
    x[:] = 0
    stats[:] = 0.0
    acc = 0.0
    for i in range(n):
        acc += float(rhs[i]) * float(rhs[i])
    b_norm = np.sqrt(acc)
    if b_norm == 0.0 or not np.isfinite(b_norm):
        stats[4] = 0.0 if b_norm == 0.0 else 1.0
        return 0
    t_pc = 0
    t_mv = 0
    bad = 0.0
    t0 = K.cycle_counter()
    _apply_block_inverse(Minv, r, z)
    t_pc += K.cycle_counter() - t0
    p = z.copy()
    rz = zero_of(rhs)
    for i in range(n):
        rz += r[i] * z[i]
    rel = 1.0
    it = 0
    for it in range(1, max_iter + 1):
        t0 = K.cycle_counter()
        schur_product(A, B, cam_col, pt_start, Vinv, lam, p, Ap, q)
        t_mv += K.cycle_counter() - t0
        pAp = zero_of(rhs)
        for i in range(n):
            pAp += p[i] * Ap[i]
        if not (np.isfinite(pAp) and pAp > 0.0):
            if not np.isfinite(pAp):
                bad = 1.0
            it -= 1
            break
        alpha = rz / pAp
        rr = 0.0
        for i in range(n):
            x[i] += alpha * p[i]
            r[i] -= alpha * Ap[i]
            rr += float(r[i]) * float(r[i])
        rel = np.sqrt(rr) / b_norm
        if not np.isfinite(rel):
            bad = 1.0
            break
        if rel <= rtol:
            break
        t0 = K.cycle_counter()
        _apply_block_inverse(Minv, r, z)
        t_pc += K.cycle_counter() - t0
        rz_new = zero_of(rhs)
        for i in range(n):
            rz_new += r[i] * z[i]
        beta = rz_new / rz
        rz = rz_new
        for i in range(n):
            p[i] = z[i] + beta * p[i]
    for i in range(n):
        if not np.isfinite(x[i]):
            bad = 1.0
            break
    stats[0] = it
    stats[1] = rel
    stats[2] = t_pc
    stats[3] = t_mv
    stats[4] = bad
    return it


# --------------------------------------------------------------------------------------------- driver


class _SchurLayout:
    """Free columns of a point-major camera-point problem: [free cameras | points]."""

    def __init__(self, problem) -> None:
        n_cams, n_pts = int(problem.n_cams), int(problem.n_points)
        fixed = np.asarray(problem.fixed_blocks, dtype=bool)
        if np.any(fixed[n_cams:]):
            raise ValueError("schur solvers: fixed points are not supported")
        obs_pt = np.asarray(problem.obs_pt, dtype=np.int64)
        if np.any(np.diff(obs_pt) < 0):
            raise ValueError("schur solvers: observations must be sorted by point (point_major_order)")
        self.dc = int(problem.dim_a)
        self.m = int(problem.residual_dim)
        cam_fixed = fixed[:n_cams]
        cam_index = np.cumsum(~cam_fixed) - 1
        self.n_free_cams = int((~cam_fixed).sum())
        self.n_c = self.n_free_cams * self.dc
        self.n = self.n_c + 3 * n_pts
        cam_of = np.asarray(problem.obs_cam, dtype=np.int64)
        self.cam_col = np.where(cam_fixed[cam_of], -1, cam_index[cam_of] * self.dc).astype(np.int64)
        self.pt_col = (self.n_c + 3 * obs_pt).astype(np.int64)
        self.pt_start = np.searchsorted(obs_pt, np.arange(n_pts + 1)).astype(np.int64)
        if np.any(np.diff(self.pt_start) == 0):
            raise ValueError("schur solvers: a point has no observation")
        self.n_pts = n_pts
        # free column -> position in the problem's full update vector
        cam_cols = (np.flatnonzero(~cam_fixed)[:, None] * self.dc + np.arange(self.dc)[None, :]).ravel()
        self.free_to_full = np.concatenate([cam_cols, n_cams * self.dc + np.arange(3 * n_pts)]).astype(np.int64)
        self.n_full = n_cams * self.dc + 3 * n_pts


def solve_schur_ba(problem, options: Optional[SolverOptions] = None, linear_solver: str = "iterative_schur"
                   ) -> SolverSummary:
    """LM on a point-major camera-point problem with the Schur linear solver ``linear_solver``
    (``"dense_schur"`` | ``"iterative_schur"``), in ``options.precision``; state updated in place."""
    if linear_solver not in SCHUR_SOLVERS:
        raise ValueError(f"linear_solver must be one of {SCHUR_SOLVERS}, got {linear_solver!r}")
    options = options or SolverOptions()
    preset = get_preset(options.precision)
    if preset.emulate_half:
        raise ValueError("schur solvers: emulated fp16 arithmetic (the naive fp16 preset) is CGNR-only")
    t_start = time.perf_counter()
    summary = SolverSummary(precision=preset.name, linear_solver=linear_solver,
                            preconditioner="schur_jacobi" if linear_solver == "iterative_schur" else "-")
    lay = _SchurLayout(problem)
    storage = preset.jacobian_storage
    vec = arithmetic_dtype(preset.cg_vectors)
    tps = K.ticks_per_second()

    def evaluate():
        t0 = time.perf_counter()
        r, Ja, Jb = problem.evaluate(jacobians=True)
        cost = 0.5 * float(np.einsum("km,km->", r, r))
        summary.evaluation_time_s += time.perf_counter() - t0
        return cost, r, Ja, Jb

    cost, r, Ja, Jb = evaluate()
    summary.initial_cost = summary.final_cost = cost
    if not math.isfinite(cost):
        summary.termination = "failure: initial cost is not finite (check the input data)"
        summary.time_s = time.perf_counter() - t_start
        return summary
    radius = options.initial_trust_region_radius
    decrease_factor = 2.0
    col_scale = None
    n_sqrt = math.sqrt(lay.n)
    step_full = np.zeros(lay.n_full)
    Vinv = np.empty((lay.n_pts, 3, 3), dtype=vec)
    Vinv64 = np.empty((lay.n_pts, 3, 3))
    blocks = np.empty((lay.n_free_cams, lay.dc, lay.dc))
    linearised = True
    for it in range(options.max_iterations):
        if options.max_time_s and time.perf_counter() - t_start > options.max_time_s:
            summary.termination = "time limit reached"
            break
        if linearised:
            t0 = time.perf_counter()
            if col_scale is None:
                colnorm = np.empty(lay.n)
                K.jtj_column_norms2(Ja, Jb, lay.cam_col, lay.pt_col, colnorm)
                col_scale = 1.0 / np.sqrt(np.maximum(colnorm, 1e-12 * max(colnorm.max(), 1e-300)))
            S64a = np.empty(Ja.shape)
            S64b = np.empty(Jb.shape)
            K.scale_jacobian(Ja, Jb, lay.cam_col, lay.pt_col, col_scale, 1.0, S64a, S64b)
            g = power_of_two_scale(max(np.abs(S64a).max(initial=0.0), np.abs(S64b).max(initial=0.0)))
            if g != 1.0:
                S64a *= g
                S64b *= g
            grad = np.empty(lay.n)
            K.jac_t_matvec(S64a, S64b, lay.cam_col, lay.pt_col, (r * g).ravel(), grad, False)
            grad_max = float(np.abs(grad / (col_scale * g * g)).max())
            if storage == "fp64":
                Sa, Sb = S64a, S64b
            else:
                Sa, Sb = to_storage(S64a, storage), to_storage(S64b, storage)
            summary.jacobian_bytes = K.bytes_of(Sa, Sb)
            summary.scaling_time_s += time.perf_counter() - t0
            if grad_max <= options.gradient_tolerance:
                summary.termination = (f"converged: gradient max-norm {grad_max:.3e} <= "
                                       f"{options.gradient_tolerance:g}")
                summary.converged = True
                break
            linearised = False
        lam_s = (1.0 / radius) * g * g
        # ---- linear solve: eliminate the points, solve the reduced camera system, back-substitute
        t0 = time.perf_counter()
        b = -grad
        point_inverses(Sb, lay.pt_start, lam_s, Vinv64)
        Vinv[:] = Vinv64
        b_c = np.empty(lay.n_c)
        reduce_rhs(Sa, Sb, lay.cam_col, lay.pt_start, Vinv64, b[:lay.n_c], b[lay.n_c:], b_c)
        ok = True
        cg_its = 0
        if lay.n_c == 0:
            x_c = np.zeros(0)
        elif linear_solver == "dense_schur":
            S = np.empty((lay.n_c, lay.n_c), dtype=vec)
            t1 = time.perf_counter()
            dense_schur_matrix(Sa, Sb, lay.cam_col, lay.pt_start, Vinv, lam_s, S)
            summary.jacobian_product_time_s += time.perf_counter() - t1
            try:
                x_c = sla.cho_solve(sla.cho_factor(S.astype(np.float64, copy=False), lower=True, check_finite=False),
                                    b_c, check_finite=False)
            except (np.linalg.LinAlgError, ValueError):
                x_c = np.full(lay.n_c, np.nan)
            ok = bool(np.all(np.isfinite(x_c)))
        else:
            t1 = time.perf_counter()
            schur_diagonal_blocks(Sa, Sb, lay.cam_col, lay.pt_start, Vinv64, lam_s, lay.n_free_cams, blocks)
            Minv = np.linalg.inv(blocks).astype(vec)
            summary.preconditioner_time_s += time.perf_counter() - t1
            x = np.empty(lay.n_c, dtype=vec)
            stats = np.zeros(5)
            cg_its = int(schur_pcg(Sa, Sb, lay.cam_col, lay.pt_start, Vinv, lam_s, Minv, b_c.astype(vec),
                                   options.cg_max_iterations, options.cg_tolerance, x, stats))
            summary.triangular_solve_time_s += stats[2] / tps
            summary.jacobian_product_time_s += stats[3] / tps
            ok = stats[4] == 0.0
            x_c = x.astype(np.float64)
        y = np.empty(lay.n)
        y[:lay.n_c] = x_c
        back_substitute(Sa, Sb, lay.cam_col, lay.pt_start, Vinv64, b[lay.n_c:], x_c, y[lay.n_c:])
        summary.linear_solve_time_s += time.perf_counter() - t0
        summary.iterations += 1
        summary.cg_iterations += cg_its
        # ---- step, gain ratio, trust region (as lm.solve)
        t0 = time.perf_counter()
        accepted = False
        rho_gain = step_norm = float("nan")
        new_cost = float("nan")
        if ok and np.all(np.isfinite(y)):
            delta = y * col_scale
            step_norm = math.sqrt(float(np.einsum("i,i->", delta, delta)))
            Jd = np.empty(r.size)
            K.jac_matvec(Ja, Jb, lay.cam_col, lay.pt_col, delta, Jd, False)
            rr = r.ravel()
            pred = -(float(np.einsum("i,i->", rr, Jd)) + 0.5 * float(np.einsum("i,i->", Jd, Jd)))
            if step_norm <= options.parameter_tolerance * (n_sqrt + options.parameter_tolerance):
                summary.termination = f"converged: step norm {step_norm:.3e} below parameter tolerance"
                summary.converged = True
                summary.update_time_s += time.perf_counter() - t0
                break
            saved = problem.get_state()
            step_full[lay.free_to_full] = delta
            problem.retract(step_full)
            summary.update_time_s += time.perf_counter() - t0
            new_cost, r_new, Ja_new, Jb_new = evaluate()
            t0 = time.perf_counter()
            rho_gain = (cost - new_cost) / pred if pred > 0 else -1.0
            accepted = math.isfinite(new_cost) and new_cost < cost and rho_gain > options.min_relative_decrease
            if not accepted:
                problem.set_state(saved)
        summary.history.append(dict(iteration=it, cost=new_cost if accepted else cost, gain_ratio=rho_gain,
                                    gradient_max_norm=grad_max, step_norm=step_norm, trust_region_radius=radius,
                                    cg_iterations=cg_its, accepted=bool(accepted)))
        if accepted:
            rel_change = (cost - new_cost) / max(cost, 1e-300)
            pred_rel = pred / max(cost, 1e-300)
            cost, r, Ja, Jb = new_cost, r_new, Ja_new, Jb_new
            linearised = True
            summary.successful_iterations += 1
            radius = min(radius / max(1.0 / 3.0, 1.0 - (2.0 * rho_gain - 1.0) ** 3), options.max_trust_region_radius)
            decrease_factor = 2.0
            summary.update_time_s += time.perf_counter() - t0
            if cost == 0.0:
                summary.termination = "converged: zero cost"
                summary.converged = True
                break
            if (rel_change <= options.function_tolerance
                    and pred_rel <= options.function_tolerance * options.model_agreement_factor):
                summary.termination = (f"converged: relative cost change {rel_change:.3e} "
                                       f"<= {options.function_tolerance:g}")
                summary.converged = True
                break
        else:
            summary.update_time_s += time.perf_counter() - t0
            radius /= decrease_factor
            decrease_factor *= 2.0
            if radius < options.min_trust_region_radius:
                summary.termination = "failure: trust region collapsed (no step decreases the cost)"
                break
    else:
        summary.termination = f"maximum iterations ({options.max_iterations}) reached"
    summary.final_cost = cost
    summary.time_s = time.perf_counter() - t_start
    return summary
