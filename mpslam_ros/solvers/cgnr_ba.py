"""Bundle-adjustment CGNR: the block-Jacobi preconditioned CG loop of :func:`mpslam_ros.solvers.kernels.cgnr`
with the two Jacobian products fused into one pass over the observations.

Per observation k the loop computes ``q_k = Ja_k p_a + Jb_k p_b`` (m values, kept in registers) and
immediately accumulates ``Ja_k^T q_k`` and ``Jb_k^T q_k``: J is read once per CG iteration instead of
twice, and the K*m vector ``q`` is never written. Same storage formats (fp64 / fp32 / fp16 bits in
uint16, widened with ``fpext half``), same arithmetic dtype (that of the CG vectors), same stopping
test and ``stats`` as the shared kernel; it handles the block-Jacobi (or no) preconditioner and
plain (not fp16-emulated) arithmetic, which is what BA uses; :mod:`mpslam_ros.solvers.lm` calls the
shared kernel for everything else (``SolverOptions.cgnr_kernel``).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from mpslam_ros.solvers.kernels import cg_finish, cg_next_direction, cg_update, cycle_counter, vdot, widen, zero_of


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _normal_product(Ja, Jb, col_a, col_b, p, out, lam):
    """out = (J^T J + lam I) p, one pass over the observations."""
    K, m, da = Ja.shape
    db = Jb.shape[2]
    for i in range(out.shape[0]):
        out[i] = lam * p[i]
    q0 = zero_of(out)
    q1 = zero_of(out)
    q2 = zero_of(out)
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        q0 = zero_of(out)
        q1 = zero_of(out)
        q2 = zero_of(out)
        if ca >= 0:
            for c in range(da):
                pc = p[ca + c]
                q0 += widen(Ja[k, 0, c]) * pc
                q1 += widen(Ja[k, 1, c]) * pc
                if m == 3:
                    q2 += widen(Ja[k, 2, c]) * pc
        if cb >= 0:
            for c in range(db):
                pc = p[cb + c]
                q0 += widen(Jb[k, 0, c]) * pc
                q1 += widen(Jb[k, 1, c]) * pc
                if m == 3:
                    q2 += widen(Jb[k, 2, c]) * pc
        if ca >= 0:
            for c in range(da):
                acc = widen(Ja[k, 0, c]) * q0 + widen(Ja[k, 1, c]) * q1
                if m == 3:
                    acc += widen(Ja[k, 2, c]) * q2
                out[ca + c] += acc
        if cb >= 0:
            for c in range(db):
                acc = widen(Jb[k, 0, c]) * q0 + widen(Jb[k, 1, c]) * q1
                if m == 3:
                    acc += widen(Jb[k, 2, c]) * q2
                out[cb + c] += acc


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _block_jacobi(pc_kind, vals, blk_col, blk_size, blk_off, r, z):
    if pc_kind != 1:
        for i in range(r.shape[0]):
            z[i] = r[i]
        return
    for b in range(blk_col.shape[0]):
        c0 = blk_col[b]
        s = blk_size[b]
        o = blk_off[b]
        for i in range(s):
            acc = zero_of(z)
            for j in range(s):
                acc += widen(vals[o + i * s + j]) * r[c0 + j]
            z[c0 + i] = acc


@njit(nogil=True, cache=True, error_model="numpy")
def cgnr_ba(Ja, Jb, col_a, col_b, rhs, lam, pc_kind, bd_vals, bd_col, bd_size, bd_off, max_iter, rtol, x, stats):
    """Preconditioned CG on ``(J^T J + lam I) x = rhs`` for residual blocks of 2 or 3 rows.

    ``pc_kind``: 1 block-Jacobi (``bd_*`` as in :func:`kernels.block_diag_apply`), else none.
    ``x`` (output) and ``rhs`` share the CG vector dtype. ``stats`` as in :func:`kernels.cgnr`:
    iterations, final relative residual, ticks in the preconditioner, ticks in the fused J^T J
    products, 1.0 if a non-finite value appeared, p^T A p of the last direction. Returns iterations.
    """
    n = rhs.shape[0]
    r = rhs.copy()
    z = np.empty_like(rhs)
    Ap = np.empty_like(rhs)
    x[:] = 0
    t_pc = 0
    t_mv = 0
    bad = 0.0
    acc = 0.0
    for i in range(n):
        acc += float(rhs[i]) * float(rhs[i])
    b_norm = np.sqrt(acc)
    stats[:] = 0.0
    if b_norm == 0.0 or not np.isfinite(b_norm):
        stats[4] = 0.0 if b_norm == 0.0 else 1.0
        return 0
    t0 = cycle_counter()
    _block_jacobi(pc_kind, bd_vals, bd_col, bd_size, bd_off, r, z)
    t_pc += cycle_counter() - t0
    p = z.copy()
    rz = vdot(r, z)
    rel = 1.0
    it = 0
    for it in range(1, max_iter + 1):
        t0 = cycle_counter()
        _normal_product(Ja, Jb, col_a, col_b, p, Ap, lam)
        t_mv += cycle_counter() - t0
        pAp = vdot(p, Ap)
        if not (np.isfinite(pAp) and pAp > 0.0):
            if not np.isfinite(pAp):
                bad = 1.0
            it -= 1
            break
        alpha = rz / pAp
        rr = cg_update(x, r, p, Ap, alpha)
        rel = np.sqrt(rr) / b_norm
        stats[5] = pAp
        if not np.isfinite(rel):
            bad = 1.0
            break
        if rel <= rtol:
            break
        t0 = cycle_counter()
        _block_jacobi(pc_kind, bd_vals, bd_col, bd_size, bd_off, r, z)
        t_pc += cycle_counter() - t0
        rz = cg_next_direction(r, z, p, rz)
    return cg_finish(x, stats, it, rel, t_pc, t_mv, bad)
