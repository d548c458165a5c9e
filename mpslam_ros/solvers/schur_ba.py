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
from typing import Optional, Sequence

import numpy as np
from scipy.linalg import lapack
from numba import njit

from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.kernels import narrow, widen, zero_of
from mpslam_ros.solvers.lm import (SolverOptions, SolverSummary, converged_after_step, evaluate_weighted,
                                  grown_trust_region, initial_cost_failed, shrunk_trust_region,
                                  trust_region_collapsed)
from mpslam_ros.solvers.problem import robust_mask
from mpslam_ros.solvers.precision import arithmetic_dtype, get_preset, power_of_two_scale

SCHUR_SOLVERS = ("dense_schur", "iterative_schur")
#: ``linear_solver="auto"`` picks dense_schur up to this many free camera columns, else iterative_schur.
#: Measured (docs/ba.md): dense wins on VO windows (288 columns) and problem-49 (441), iterative on a
#: generated 250-camera problem (2,250 columns: dense 1.0 s vs 0.55 s CPU).
DENSE_SCHUR_MAX_COLUMNS = 1000
#: dense_schur stores and factors S as a band (LAPACK dpbtrf) when its lower bandwidth + 1 is at most this
#: fraction of its columns: ~n kd^2 flops against n^3 / 3 dense, and band routines run at a lower rate
BAND_MAX_FRACTION = 0.4
#: dense_schur widens an fp16-stored Jacobian to fp32 for the rest of the solve when a step that still
#: predicts a large decrease (more than FP16_MODEL_LARGE_STEP of the cost) gets a predicted decrease from
#: the stored (fp16) normal equations that differs from the fp64 Jacobian's by more than this fraction.
#: Why: on dubrovnik-3-7 (38 residuals, 48 parameters: a valley of zero-cost solutions) fp16 rounding of
#: the near-null directions bent every step, and mixed needed 197 LM iterations to reach zero cost where
#: fp32/fp64 needed 94. Measured separation (docs/ba.md): steps with predicted decrease > 1e-2 of the
#: cost disagree by <= 3.1e-4 on 100 VO windows and problem-49, by 2e-3..0.1 on dubrovnik-3-7; steps
#: closer to convergence disagree more everywhere (fp16 noise against a tiny decrease) and are harmless
#: there, as LM's right-hand side is the fp64 gradient. dense_schur's time does not depend on the storage
#: (the stored blocks are read once per linearisation to build S).
FP16_MODEL_MAX_DISAGREEMENT = 1e-2
FP16_MODEL_LARGE_STEP = 1e-2


def choose_schur_solver(problem) -> str:
    """``"dense_schur"`` for a reduced camera system of at most :data:`DENSE_SCHUR_MAX_COLUMNS` free
    columns, else ``"iterative_schur"`` (the explicit S grows as columns^2, its factor as columns^3)."""
    fixed = np.asarray(problem.fixed_blocks[: problem.n_cams], dtype=bool)
    n_c = int((~fixed).sum()) * int(problem.dim_a)
    return "dense_schur" if n_c <= DENSE_SCHUR_MAX_COLUMNS else "iterative_schur"


def point_major_order(obs_pt: np.ndarray) -> np.ndarray:
    """Permutation sorting observations by point (stable: camera order kept within a track)."""
    return np.argsort(np.asarray(obs_pt), kind="stable")


# --------------------------------------------------------------------------------------------- kernels


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _obs_gradient(Ja, Jb, res, k, ca, cb, col_scale, grad, mx, m, dc):
    for r in range(m):
        rv = res[k, r]
        if ca >= 0:
            for c in range(dc):
                v = Ja[k, r, c]
                grad[ca + c] += v * rv
                mx = max(mx, abs(v * col_scale[ca + c]))
        for c in range(3):
            v = Jb[k, r, c]
            grad[cb + c] += v * rv
            mx = max(mx, abs(v * col_scale[cb + c]))
    return mx


@njit(nogil=True, cache=True, error_model="numpy")
def gradient_and_scaled_max(Ja, Jb, res, cam_col, pt_col, col_scale, grad):
    """grad = J^T r over the free columns (fp64, unscaled); returns max |J diag(col_scale)| over the free
    columns (for the power-of-two scale). One pass over the fp64 Jacobian."""
    m = Ja.shape[1]
    dc = Ja.shape[2]
    grad[:] = 0.0
    mx = 0.0
    for k in range(Ja.shape[0]):
        ca = cam_col[k]
        cb = pt_col[k]
        if m == 2 and dc == 6:
            mx = _obs_gradient(Ja, Jb, res, k, ca, cb, col_scale, grad, mx, 2, 6)
        elif m == 2 and dc == 9:
            mx = _obs_gradient(Ja, Jb, res, k, ca, cb, col_scale, grad, mx, 2, 9)
        elif m == 3 and dc == 6:
            mx = _obs_gradient(Ja, Jb, res, k, ca, cb, col_scale, grad, mx, 3, 6)
        else:
            mx = _obs_gradient(Ja, Jb, res, k, ca, cb, col_scale, grad, mx, m, dc)
    return mx


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _store_obs(Ja, Jb, k, ca, cb, col_scale, g, Sa, Sb, a, b, m, dc):
    # store g * J diag(col_scale) in the storage format and keep the stored values, widened, in a / b
    for r in range(m):
        for c in range(dc):
            v = narrow(Sa, g * Ja[k, r, c] * col_scale[ca + c]) if ca >= 0 else narrow(Sa, 0.0)
            Sa[k, r, c] = v
            a[r, c] = np.float64(widen(v))
        for c in range(3):
            v = narrow(Sb, g * Jb[k, r, c] * col_scale[cb + c])
            Sb[k, r, c] = v
            b[r, c] = np.float64(widen(v))


@njit(nogil=True, cache=True, error_model="numpy")
def store_scaled_jacobian(Ja, Jb, cam_col, pt_col, pt_start, col_scale, g, Sa, Sb, Yt, U, BtB):
    """Sa, Sb = g * J diag(col_scale) in their storage format (fp16 bits for uint16; fixed columns 0), and
    per linearisation (independent of LM's lambda) fp64 sums of the *stored* blocks' products (the
    products' precision): Yt[k] = B_k^T A_k (3 x dc, the W blocks transposed), U[c] = sum A_k^T A_k per
    free camera block, BtB[j] = sum B_k^T B_k per point. One pass, each stored value widened once."""
    m = Ja.shape[1]
    dc = Ja.shape[2]
    U[:] = 0.0
    BtB[:] = 0.0
    a = np.empty((m, dc))
    b = np.empty((m, 3))
    for j in range(pt_start.shape[0] - 1):
        for k in range(pt_start[j], pt_start[j + 1]):
            ca = cam_col[k]
            cb = pt_col[k]
            cblk = ca // dc if ca >= 0 else -1
            if m == 2 and dc == 6:
                _store_obs(Ja, Jb, k, ca, cb, col_scale, g, Sa, Sb, a, b, 2, 6)
                _obs_sums(a, b, k, Yt, U, cblk, BtB, j, 2, 6)
            elif m == 2 and dc == 9:
                _store_obs(Ja, Jb, k, ca, cb, col_scale, g, Sa, Sb, a, b, 2, 9)
                _obs_sums(a, b, k, Yt, U, cblk, BtB, j, 2, 9)
            elif m == 3 and dc == 6:
                _store_obs(Ja, Jb, k, ca, cb, col_scale, g, Sa, Sb, a, b, 3, 6)
                _obs_sums(a, b, k, Yt, U, cblk, BtB, j, 3, 6)
            else:
                _store_obs(Ja, Jb, k, ca, cb, col_scale, g, Sa, Sb, a, b, m, dc)
                _obs_sums(a, b, k, Yt, U, cblk, BtB, j, m, dc)
    _mirror_sums(U, BtB)


@njit(nogil=True, cache=True, error_model="numpy")
def model_decrease(Ja, Jb, res, cam_col, pt_col, delta):
    """-(r^T J d + 0.5 |J d|^2) in fp64: the cost decrease LM's linear model predicts for the step d."""
    m = Ja.shape[1]
    dc = Ja.shape[2]
    acc = 0.0
    for k in range(Ja.shape[0]):
        ca = cam_col[k]
        cb = pt_col[k]
        for r in range(m):
            jd = Jb[k, r, 0] * delta[cb] + Jb[k, r, 1] * delta[cb + 1] + Jb[k, r, 2] * delta[cb + 2]
            if ca >= 0:
                for c in range(dc):
                    jd += Ja[k, r, c] * delta[ca + c]
            acc += res[k, r] * jd + 0.5 * jd * jd
    return -acc


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _obs_sums(a, b, k, Yt, U, cb, BtB, j, m, dc):
    # a (m x dc), b (m x 3): one observation's stored blocks widened to fp64; loops over block columns
    # are contiguous (vectorised once m, dc are constants)
    for i in range(3):
        for c in range(dc):
            acc = 0.0
            for r in range(m):
                acc += b[r, i] * a[r, c]
            Yt[k, i, c] = acc
    for r in range(m):
        b0 = b[r, 0]
        b1 = b[r, 1]
        b2 = b[r, 2]
        BtB[j, 0, 0] += b0 * b0
        BtB[j, 0, 1] += b0 * b1
        BtB[j, 0, 2] += b0 * b2
        BtB[j, 1, 1] += b1 * b1
        BtB[j, 1, 2] += b1 * b2
        BtB[j, 2, 2] += b2 * b2
    if cb >= 0:
        for c1 in range(dc):
            for c2 in range(c1 + 1):
                acc = 0.0
                for r in range(m):
                    acc += a[r, c1] * a[r, c2]
                U[cb, c1, c2] += acc


@njit(nogil=True, cache=True, error_model="numpy")
def _mirror_sums(U, BtB):
    dc = U.shape[1]
    for cb in range(U.shape[0]):
        for c1 in range(dc):
            for c2 in range(c1):
                U[cb, c2, c1] = U[cb, c1, c2]
    for j in range(BtB.shape[0]):
        BtB[j, 1, 0] = BtB[j, 0, 1]
        BtB[j, 2, 0] = BtB[j, 0, 2]
        BtB[j, 2, 1] = BtB[j, 1, 2]


@njit(nogil=True, cache=True, error_model="numpy")
def point_inverses(BtB, lam, Vinv):
    """Vinv[j] = (BtB[j] + lam I)^-1 (fp64 closed form; the output may be fp32)."""
    for j in range(BtB.shape[0]):
        v00 = BtB[j, 0, 0] + lam
        v01 = BtB[j, 0, 1]
        v02 = BtB[j, 0, 2]
        v11 = BtB[j, 1, 1] + lam
        v12 = BtB[j, 1, 2]
        v22 = BtB[j, 2, 2] + lam
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
def _inv_sqrt_factor(Vinv, j, L):
    """L (lower 3x3) with L L^T = Vinv[j] (Cholesky; a non-positive pivot gives a zero column)."""
    a00 = Vinv[j, 0, 0]
    l00 = np.sqrt(a00) if a00 > 0.0 else 0.0
    i00 = 1.0 / l00 if l00 > 0.0 else 0.0
    l10 = Vinv[j, 1, 0] * i00
    l20 = Vinv[j, 2, 0] * i00
    a11 = Vinv[j, 1, 1] - l10 * l10
    l11 = np.sqrt(a11) if a11 > 0.0 else 0.0
    i11 = 1.0 / l11 if l11 > 0.0 else 0.0
    l21 = (Vinv[j, 2, 1] - l20 * l10) * i11
    a22 = Vinv[j, 2, 2] - l20 * l20 - l21 * l21
    l22 = np.sqrt(a22) if a22 > 0.0 else 0.0
    L[0, 0] = l00
    L[1, 0] = l10
    L[1, 1] = l11
    L[2, 0] = l20
    L[2, 1] = l21
    L[2, 2] = l22


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _point_dense_update(Yt, cam_col, s, e, L, G, Z, band, dc):
    # G[i] = L^T Yt[k] (3 x dc): W V^-1 W^T restricted to this point = sum_i G_k[i]^T G_l[i]
    for k in range(s, e):
        if cam_col[k] < 0:
            continue
        i = k - s
        for a in range(dc):
            y0 = Yt[k, 0, a]
            y1 = Yt[k, 1, a]
            y2 = Yt[k, 2, a]
            G[i, 0, a] = L[0, 0] * y0 + L[1, 0] * y1 + L[2, 0] * y2
            G[i, 1, a] = L[1, 1] * y1 + L[2, 1] * y2
            G[i, 2, a] = L[2, 2] * y2
    # entry (row c+a, column d+b) of the lower triangle (c >= d) lives at Z[d+b, c+a - band*(d+b)]:
    # contiguous in the row index, so the innermost loop runs over a
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
            for b in range(dc):
                g0 = G[il, 0, b]
                g1 = G[il, 1, b]
                g2 = G[il, 2, b]
                col = d + b
                o = c - band * col
                for a in range(b if c == d else 0, dc):
                    Z[col, o + a] -= G[i, 0, a] * g0 + G[i, 1, a] * g1 + G[i, 2, a] * g2


@njit(nogil=True, cache=True, error_model="numpy")
def camera_bandwidth(cam_col, pt_start, dc):
    """Lower bandwidth (in columns) of the reduced camera system: cameras that share a point couple, so
    entry (i, j) of S is structurally zero beyond the widest span of free camera columns of one track."""
    kd = dc - 1
    for j in range(pt_start.shape[0] - 1):
        lo = -1
        hi = -1
        for k in range(pt_start[j], pt_start[j + 1]):
            c = cam_col[k]
            if c < 0:
                continue
            lo = c if lo < 0 or c < lo else lo
            hi = c if c > hi else hi
        if lo >= 0:
            kd = max(kd, hi - lo + dc - 1)
    return kd


@njit(nogil=True, cache=True, error_model="numpy")
def reduced_camera_matrix(Yt, U, cam_col, pt_start, Vinv, lam, Z, band):
    """The lower triangle of S = U + lam I - W V^-1 W^T (fp64) from :func:`store_scaled_jacobian`'s sums, in
    LAPACK's column-major layout seen from C: ``band=0``: ``Z`` (n_c x n_c) holds S[i, j] (i >= j) at
    Z[j, i] (``Z.T`` is the Fortran array for dpotrf); ``band=1``: ``Z`` (n_c x kd+1) holds it at
    Z[j, i - j] (``Z.T`` is dpbtrf's lower band storage). Per point, ``V^-1 = L L^T`` and ``G_k = L^T W_k^T``,
    so its term is ``sum_kl G_k^T G_l`` over pairs of its observations."""
    dc = Yt.shape[2]
    Z[:] = 0.0
    for cb in range(U.shape[0]):
        for b in range(dc):
            col = cb * dc + b
            o = cb * dc - band * col
            for a in range(b, dc):
                Z[col, o + a] = U[cb, a, b]
            Z[col, col - band * col] += lam
    maxt = 1
    for j in range(pt_start.shape[0] - 1):
        maxt = max(maxt, pt_start[j + 1] - pt_start[j])
    G = np.zeros((maxt, 3, dc))
    L = np.zeros((3, 3))
    for j in range(pt_start.shape[0] - 1):
        _inv_sqrt_factor(Vinv, j, L)
        if dc == 6:
            _point_dense_update(Yt, cam_col, pt_start[j], pt_start[j + 1], L, G, Z, band, 6)
        elif dc == 9:
            _point_dense_update(Yt, cam_col, pt_start[j], pt_start[j + 1], L, G, Z, band, 9)
        else:
            _point_dense_update(Yt, cam_col, pt_start[j], pt_start[j + 1], L, G, Z, band, dc)


@njit(nogil=True, cache=True, error_model="numpy")
def schur_diagonal_blocks(Yt, U, cam_col, pt_start, Vinv, lam, out):
    """out[c] (fp64, dc x dc) = diagonal block of S for free camera block c: U_c + lam I - sum W V^-1 W^T
    (the Schur-Jacobi preconditioner's blocks, before inversion)."""
    dc = Yt.shape[2]
    out[:] = U
    Z = np.empty((3, dc))
    for j in range(pt_start.shape[0] - 1):
        for k in range(pt_start[j], pt_start[j + 1]):
            c = cam_col[k]
            if c < 0:
                continue
            cb = c // dc
            for i in range(3):
                for a in range(dc):
                    Z[i, a] = Vinv[j, i, 0] * Yt[k, 0, a] + Vinv[j, i, 1] * Yt[k, 1, a] + Vinv[j, i, 2] * Yt[k, 2, a]
            for a in range(dc):
                y0 = Yt[k, 0, a]
                y1 = Yt[k, 1, a]
                y2 = Yt[k, 2, a]
                for b in range(dc):
                    out[cb, a, b] -= y0 * Z[0, b] + y1 * Z[1, b] + y2 * Z[2, b]
    for cb in range(out.shape[0]):
        for a in range(dc):
            out[cb, a, a] += lam


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
def reduce_rhs(Yt, cam_col, pt_start, Vinv, b_c, b_p, out):
    """out = b_c - W V^-1 b_p (fp64; ``b_p`` per point, 3 values each; W^T blocks ``Yt``)."""
    dc = Yt.shape[2]
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
            for a in range(dc):
                out[c + a] -= Yt[k, 0, a] * v0 + Yt[k, 1, a] * v1 + Yt[k, 2, a] * v2


@njit(nogil=True, cache=True, error_model="numpy")
def back_substitute(Yt, cam_col, pt_start, Vinv, b_p, x_c, x_p):
    """x_p[j] = V_j^-1 (b_p[j] - sum_k W_k^T x_c) (fp64)."""
    dc = Yt.shape[2]
    for j in range(pt_start.shape[0] - 1):
        t0 = b_p[3 * j]
        t1 = b_p[3 * j + 1]
        t2 = b_p[3 * j + 2]
        for k in range(pt_start[j], pt_start[j + 1]):
            c = cam_col[k]
            if c < 0:
                continue
            for a in range(dc):
                xa = x_c[c + a]
                t0 -= Yt[k, 0, a] * xa
                t1 -= Yt[k, 1, a] * xa
                t2 -= Yt[k, 2, a] * xa
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
    rz = K.vdot(r, z)
    rel = 1.0
    it = 0
    for it in range(1, max_iter + 1):
        t0 = K.cycle_counter()
        schur_product(A, B, cam_col, pt_start, Vinv, lam, p, Ap, q)
        t_mv += K.cycle_counter() - t0
        pAp = K.vdot(p, Ap)
        if not (np.isfinite(pAp) and pAp > 0.0):
            if not np.isfinite(pAp):
                bad = 1.0
            it -= 1
            break
        alpha = rz / pAp
        rr = K.cg_update(x, r, p, Ap, alpha)
        rel = np.sqrt(rr) / b_norm
        if not np.isfinite(rel):
            bad = 1.0
            break
        if rel <= rtol:
            break
        t0 = K.cycle_counter()
        _apply_block_inverse(Minv, r, z)
        t_pc += K.cycle_counter() - t0
        rz = K.cg_next_direction(r, z, p, rz)
    return K.cg_finish(x, stats, it, rel, t_pc, t_mv, bad)


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


def _jacobian_stores(lay: _SchurLayout, storage: str) -> tuple:
    """(Sa, Sb): room for the scaled Jacobian's camera and point blocks in ``storage`` (fp16 as uint16 bits)."""
    dtype = np.uint16 if storage == "fp16" else arithmetic_dtype(storage)
    n_obs = len(lay.cam_col)
    return np.empty((n_obs, lay.m, lay.dc), dtype=dtype), np.empty((n_obs, lay.m, 3), dtype=dtype)


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
    from mpslam_ros.solvers.schur_ba_small import small_schur_applies, solve_small_dense_schur

    if small_schur_applies(problem, options, linear_solver):
        return solve_small_dense_schur(problem, options)
    t_start = time.perf_counter()
    summary = SolverSummary(precision=preset.name, linear_solver=linear_solver,
                            preconditioner="schur_jacobi" if linear_solver == "iterative_schur" else "-")
    lay = _SchurLayout(problem)
    storage = preset.jacobian_storage
    vec = arithmetic_dtype(preset.cg_vectors)
    tps = K.ticks_per_second()

    mask = robust_mask(problem)

    def evaluate():
        return evaluate_weighted(problem, True, options, mask, summary)

    cost, r, Ja, Jb = evaluate()
    if initial_cost_failed(summary, cost, t_start):
        return summary
    radius = options.initial_trust_region_radius
    decrease_factor = 2.0
    col_scale = None
    n_sqrt = math.sqrt(lay.n)
    step_full = np.zeros(lay.n_full)
    Vinv = np.empty((lay.n_pts, 3, 3), dtype=vec)
    Vinv64 = np.empty((lay.n_pts, 3, 3))
    blocks = np.empty((lay.n_free_cams, lay.dc, lay.dc))
    Yt = np.empty((len(lay.cam_col), 3, lay.dc))
    U = np.empty((lay.n_free_cams, lay.dc, lay.dc))
    BtB = np.empty((lay.n_pts, 3, 3))
    grad = np.empty(lay.n)
    b_c = np.empty(lay.n_c)
    y = np.empty(lay.n)
    Sa, Sb = _jacobian_stores(lay, storage)
    summary.jacobian_bytes = K.bytes_of(Sa, Sb)
    if linear_solver == "dense_schur":
        # S in LAPACK band storage where the cameras' coupling is banded (a VO window: tracks span runs
        # of consecutive keyframes), which factors in ~n kd^2 instead of n^3 / 3 flops; dense otherwise
        kd = int(camera_bandwidth(lay.cam_col, lay.pt_start, lay.dc)) if lay.n_c else 0
        band = 1 if kd + 1 <= BAND_MAX_FRACTION * lay.n_c else 0
        Z = np.empty((lay.n_c, kd + 1 if band else lay.n_c))
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
            g = power_of_two_scale(gradient_and_scaled_max(Ja, Jb, r, lay.cam_col, lay.pt_col, col_scale, grad))
            # fp64 gradient of the scaled system: g^2 diag(col_scale) J^T r
            grad_max = float(np.abs(grad).max())
            grad *= col_scale * (g * g)
            store_scaled_jacobian(Ja, Jb, lay.cam_col, lay.pt_col, lay.pt_start, col_scale, g, Sa, Sb, Yt, U, BtB)
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
        point_inverses(BtB, lam_s, Vinv64)
        reduce_rhs(Yt, lay.cam_col, lay.pt_start, Vinv64, b[:lay.n_c], b[lay.n_c:], b_c)
        ok = True
        cg_its = 0
        if lay.n_c == 0:
            x_c = np.zeros(0)
        elif linear_solver == "dense_schur":
            t1 = time.perf_counter()
            reduced_camera_matrix(Yt, U, lay.cam_col, lay.pt_start, Vinv64, lam_s, Z, band)
            summary.jacobian_product_time_s += time.perf_counter() - t1
            # LAPACK's lower Cholesky (fp64) on Z.T, a Fortran-ordered view: factored in place, no copy
            if band:
                factor, info = lapack.dpbtrf(Z.T, lower=1, overwrite_ab=1)
                x_c, info_s = lapack.dpbtrs(factor, b_c, lower=1) if info == 0 else (b_c, 1)
            else:
                factor, info = lapack.dpotrf(Z.T, lower=1, clean=0, overwrite_a=1)
                x_c, info_s = lapack.dpotrs(factor, b_c, lower=1) if info == 0 else (b_c, 1)
            ok = info == 0 and info_s == 0
        else:
            Vinv[:] = Vinv64
            t1 = time.perf_counter()
            schur_diagonal_blocks(Yt, U, lay.cam_col, lay.pt_start, Vinv64, lam_s, blocks)
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
        y[:lay.n_c] = x_c
        back_substitute(Yt, lay.cam_col, lay.pt_start, Vinv64, b[lay.n_c:], x_c, y[lay.n_c:])
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
            pred = model_decrease(Ja, Jb, r, lay.cam_col, lay.pt_col, delta)
            if storage == "fp16" and linear_solver == "dense_schur" and pred > FP16_MODEL_LARGE_STEP * cost:
                # the stored system's own prediction (exact solve: |J y|^2 = b.y - lam |y|^2 in scaled units)
                pred_stored = 0.5 * (float(b @ y) + lam_s * float(y @ y)) / (g * g)
                if abs(pred_stored - pred) > FP16_MODEL_MAX_DISAGREEMENT * pred:
                    storage = "fp32"
                    Sa, Sb = _jacobian_stores(lay, storage)
                    linearised = True  # re-store (fp32) and rebuild the sums, also if this step is rejected
                    summary.jacobian_widened_at = summary.iterations
                    summary.jacobian_bytes = K.bytes_of(Sa, Sb)
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
            radius = grown_trust_region(radius, rho_gain, options)
            decrease_factor = 2.0
            summary.update_time_s += time.perf_counter() - t0
            if converged_after_step(summary, cost, rel_change, pred_rel, options):
                break
        else:
            summary.update_time_s += time.perf_counter() - t0
            radius, decrease_factor = shrunk_trust_region(radius, decrease_factor)
            if trust_region_collapsed(summary, radius, options):
                break
    else:
        summary.termination = f"maximum iterations ({options.max_iterations}) reached"
    summary.final_cost = cost
    summary.time_s = time.perf_counter() - t_start
    return summary


#: (linear solver, small_problem_schur_columns) pairs :func:`warmup` runs: each Schur solver's Python loop
#: (0: small path off), and dense_schur's small-problem loop (the tiny warm-up problems are under any limit)
_WARMUP_PATHS = (("dense_schur", 0), ("iterative_schur", 0), ("dense_schur", 10**9))


def warmup(precisions=("fp64", "fp32", "mixed")) -> None:
    """Compile (or load) both Schur solvers' kernels for mono and stereo windows (6-parameter cameras,
    2 and 3 rows) and BAL problems (9 parameters) in ``precisions`` on tiny problems, dense_schur both as
    the Python loop and as the small-problem loop (:mod:`mpslam_ros.solvers.schur_ba_small`). The VO's own
    path (dense, its precision) is compiled by :func:`mpslam_ros.warmup.warm_pipeline`'s VO run; the
    benches call this so no row times a compilation."""
    from mpslam_ros.io.bal import BALProblem
    from mpslam_ros.problems.ba import BALProblemModel, WindowProblem, ba_options
    from mpslam_ros.problems.window_synth import make_window

    K.ticks_per_second()
    for stereo in (False, True):
        w = make_window(0, num_keyframes=6, num_landmarks=20, track_length=(3, 6), stereo=stereo)
        for precision in precisions:
            for solver, small in _WARMUP_PATHS:
                p = WindowProblem(*w.solve_args())
                p.sort_observations_by_point()
                solve_schur_ba(p, ba_options(precision=precision, max_iterations=2, small_problem_schur_columns=small),
                               solver)
    rng = np.random.default_rng(0)
    cams = np.concatenate([rng.normal(0, 0.01, (3, 3)), rng.normal(0, 0.1, (3, 3)) + [0, 0, -5.0],
                           np.tile([500.0, 0.0, 0.0], (3, 1))], axis=1)
    bal = BALProblem(cams, rng.normal(0, 0.5, (4, 3)), np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3),
                     rng.normal(0, 10.0, (12, 2)))
    for precision in precisions:
        for solver, small in _WARMUP_PATHS:
            p = BALProblemModel(bal)
            p.sort_observations_by_point()
            solve_schur_ba(p, ba_options(precision=precision, max_iterations=2, small_problem_schur_columns=small),
                           solver)
    warm_jacobian_widening(precisions)


#: A stereo window whose fp16-stored Jacobian dense_schur widens to fp32 partway through a mixed solve (10 deg
#: rotation noise on the start: a relocalised window's kind of start). ``make_window`` keywords.
WIDENING_WINDOW = dict(seed=2, num_keyframes=5, num_landmarks=40, track_length=(2, 5), stereo=True,
                       rotation_noise_deg=10.0)


def warm_jacobian_widening(precisions: Sequence[str]) -> None:
    """Run dense_schur's fp16 -> fp32 Jacobian widening (``FP16_MODEL_MAX_DISAGREEMENT``) once for the
    presets that store the Jacobian in fp16, by solving :data:`WIDENING_WINDOW`: a regular solve does not
    reach it, so a warm-up's window solves left its kernel signature (fp32 storage) cold. Why: on a loaded CI
    machine a relocalised VO window widened and vo_node loaded that kernel on the camera path after ready.
    Raises RuntimeError when the window no longer widens (the warm-up would silently stop covering it)."""
    from mpslam_ros.problems.ba import WindowProblem, ba_options
    from mpslam_ros.problems.window_synth import make_window

    for precision in precisions:
        options = ba_options(precision=precision, small_problem_schur_columns=0)  # the Python loop widens
        preset = get_preset(options.precision)
        if preset.emulate_half or preset.jacobian_storage != "fp16":
            continue  # naive fp16 is CGNR-only; fp32 / fp64 storage never widens
        problem = WindowProblem(*make_window(**WIDENING_WINDOW).solve_args())
        problem.sort_observations_by_point()
        if solve_schur_ba(problem, options, "dense_schur").jacobian_widened_at < 0:
            raise RuntimeError(f"schur_ba.WIDENING_WINDOW no longer widens its Jacobian in {precision}")
