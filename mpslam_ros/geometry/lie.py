"""Lie groups SO(3), SE(3), SE(2): exp/log, composition, inverse, adjoint and Jacobians (fp64, numba).

Conventions (GTSAM's, so that costs match ``gtsam.NonlinearFactorGraph.error``):

- SE(3) tangent vectors are ``xi = (omega, v)``: rotation first, then translation part;
  ``exp(xi) = [[Exp(omega), V(omega) v], [0, 1]]``; ``log`` is its exact inverse (not ``(omega, t)``).
- SE(2) tangent vectors are ``xi = (v_x, v_y, theta)``; poses are 3x3 matrices.
- Perturbations are on the right: ``T <- T exp(delta)``. The right Jacobian ``Jr(xi)`` satisfies
  ``exp(xi + d) ~ exp(xi) exp(Jr(xi) d)`` and ``log(exp(xi) exp(d)) ~ xi + Jr(xi)^-1 d``.
- ``adjoint(T)`` satisfies ``T exp(d) T^-1 = exp(adjoint(T) d)``.

Every function is ``@njit(nogil=True, cache=True)`` and works on numpy arrays from Python too.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Below this rotation angle, series expansions replace the closed forms (avoid 0/0).
SMALL_ANGLE = 1e-5

_jit = njit(nogil=True, cache=True, error_model="numpy")


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _mm(A, B):
    """Small dense matrix product with plain loops (BLAS call overhead dominates at 3x3 / 6x6)."""
    n, k = A.shape
    m = B.shape[1]
    C = np.zeros((n, m))
    for i in range(n):
        for l in range(k):
            a = A[i, l]
            for j in range(m):
                C[i, j] += a * B[l, j]
    return C


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _mv(A, x):
    n, k = A.shape
    y = np.zeros(n)
    for i in range(n):
        s = 0.0
        for l in range(k):
            s += A[i, l] * x[l]
        y[i] = s
    return y


# --------------------------------------------------------------------------- SO(3)


@_jit
def so3_hat(w):
    """3-vector -> skew-symmetric matrix ``[w]x``."""
    W = np.zeros((3, 3))
    W[0, 1] = -w[2]
    W[0, 2] = w[1]
    W[1, 0] = w[2]
    W[1, 2] = -w[0]
    W[2, 0] = -w[1]
    W[2, 1] = w[0]
    return W


@_jit
def so3_exp(w):
    """Rodrigues' formula."""
    theta2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
    theta = np.sqrt(theta2)
    W = so3_hat(w)
    if theta < SMALL_ANGLE:
        a = 1.0 - theta2 / 6.0
        b = 0.5 - theta2 / 24.0
    else:
        a = np.sin(theta) / theta
        b = (1.0 - np.cos(theta)) / theta2
    return np.eye(3) + a * W + b * _mm(W, W)


def rotation_angle(R: np.ndarray) -> np.ndarray:
    """Rotation angle (rad, 0..pi) of rotation matrices ``R`` [..., 3, 3] (a 0-d array for one matrix),
    from the trace: the one formula every "how far apart are two orientations" check uses."""
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    return np.arccos(cos)


@_jit
def so3_log(R):
    """Rotation matrix -> rotation vector (angle in [0, pi]); accurate near 0 and near pi."""
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    c = min(max(0.5 * (tr - 1.0), -1.0), 1.0)
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    s = 0.5 * np.sqrt(v[0] * v[0] + v[1] * v[1] + v[2] * v[2])  # sin(theta)
    theta = np.arctan2(s, c)
    if theta < SMALL_ANGLE:
        return 0.5 * (1.0 + theta * theta / 6.0) * v
    if theta < np.pi - 1e-3:
        return (0.5 * theta / s) * v
    # near pi: axis from the symmetric part R + R^T = 2 cos I + 2 (1 - cos) a a^T
    B = 0.5 * (R + R.T) - c * np.eye(3)
    i = 0
    if B[1, 1] > B[i, i]:
        i = 1
    if B[2, 2] > B[i, i]:
        i = 2
    axis = B[:, i] / np.sqrt(max(B[i, i], 1e-300))
    axis = axis / np.sqrt(axis[0] ** 2 + axis[1] ** 2 + axis[2] ** 2)
    if axis[0] * v[0] + axis[1] * v[1] + axis[2] * v[2] < 0.0:
        axis = -axis
    return theta * axis


@_jit
def so3_left_jacobian(w):
    theta2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
    theta = np.sqrt(theta2)
    W = so3_hat(w)
    if theta < SMALL_ANGLE:
        a = 0.5 - theta2 / 24.0
        b = 1.0 / 6.0 - theta2 / 120.0
    else:
        a = (1.0 - np.cos(theta)) / theta2
        b = (theta - np.sin(theta)) / (theta2 * theta)
    return np.eye(3) + a * W + b * _mm(W, W)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _so3_jl_inv_coeff(theta2):
    """b in Jl^-1(w) = I - W/2 + b W^2, with a series below SMALL_ANGLE."""
    theta = np.sqrt(theta2)
    if theta < SMALL_ANGLE:
        return 1.0 / 12.0 + theta2 / 720.0
    return 1.0 / theta2 - (1.0 + np.cos(theta)) / (2.0 * theta * np.sin(theta))


@_jit
def so3_left_jacobian_inv(w):
    W = so3_hat(w)
    b = _so3_jl_inv_coeff(w[0] * w[0] + w[1] * w[1] + w[2] * w[2])
    return np.eye(3) - 0.5 * W + b * _mm(W, W)


@_jit
def so3_right_jacobian(w):
    return so3_left_jacobian(-w)


@_jit
def so3_right_jacobian_inv(w):
    return so3_left_jacobian_inv(-w)


@_jit
def quat_to_rot(qx, qy, qz, qw):
    """Unit quaternion (normalised here) -> rotation matrix."""
    n = np.sqrt(qx * qx + qy * qy + qz * qz + qw * qw)
    x, y, z, w = qx / n, qy / n, qz / n, qw / n
    R = np.empty((3, 3))
    R[0, 0] = 1 - 2 * (y * y + z * z)
    R[0, 1] = 2 * (x * y - z * w)
    R[0, 2] = 2 * (x * z + y * w)
    R[1, 0] = 2 * (x * y + z * w)
    R[1, 1] = 1 - 2 * (x * x + z * z)
    R[1, 2] = 2 * (y * z - x * w)
    R[2, 0] = 2 * (x * z - y * w)
    R[2, 1] = 2 * (y * z + x * w)
    R[2, 2] = 1 - 2 * (x * x + y * y)
    return R


@_jit
def rot_to_quat(R):
    """Rotation matrix -> (qx, qy, qz, qw) with qw >= 0 (Shepperd's method)."""
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    q = np.empty(4)
    if tr > 0.0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q[3] = 0.25 * s
        q[0] = (R[2, 1] - R[1, 2]) / s
        q[1] = (R[0, 2] - R[2, 0]) / s
        q[2] = (R[1, 0] - R[0, 1]) / s
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q[3] = (R[2, 1] - R[1, 2]) / s
        q[0] = 0.25 * s
        q[1] = (R[0, 1] + R[1, 0]) / s
        q[2] = (R[0, 2] + R[2, 0]) / s
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q[3] = (R[0, 2] - R[2, 0]) / s
        q[0] = (R[0, 1] + R[1, 0]) / s
        q[1] = 0.25 * s
        q[2] = (R[1, 2] + R[2, 1]) / s
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q[3] = (R[1, 0] - R[0, 1]) / s
        q[0] = (R[0, 2] + R[2, 0]) / s
        q[1] = (R[1, 2] + R[2, 1]) / s
        q[2] = 0.25 * s
    if q[3] < 0.0:
        q = -q
    return q


# --------------------------------------------------------------------------- SE(3)


@_jit
def se3_exp(xi):
    """xi = (omega, v) -> 4x4 pose."""
    w = xi[:3]
    T = np.eye(4)
    T[:3, :3] = so3_exp(w)
    T[:3, 3] = _mv(so3_left_jacobian(w), xi[3:])
    return T


@_jit
def se3_log(T):
    """4x4 pose -> xi = (omega, v) with exp(xi) = T."""
    w = so3_log(T[:3, :3])
    xi = np.empty(6)
    xi[:3] = w
    xi[3:] = _mv(so3_left_jacobian_inv(w), T[:3, 3])
    return xi


@_jit
def se3_inverse(T):
    Ti = np.eye(4)
    Ti[:3, :3] = T[:3, :3].T
    Ti[:3, 3] = -_mv(T[:3, :3].T, T[:3, 3])
    return Ti


@_jit
def se3_compose(A, B):
    """A @ B for 4x4 poses (kept as a named operation for symmetry with SE(2))."""
    return _mm(A, B)


@_jit
def se3_adjoint(T):
    """6x6 adjoint in (omega, v) order: [[R, 0], [[t]x R, R]]."""
    R = T[:3, :3]
    Ad = np.zeros((6, 6))
    Ad[:3, :3] = R
    Ad[3:, 3:] = R
    Ad[3:, :3] = _mm(so3_hat(T[:3, 3]), R)
    return Ad


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _se3_q_coeffs(theta2):
    """Coefficients (a, b, c) of Barfoot's Q (eq. 7.86), with series below SMALL_ANGLE."""
    theta = np.sqrt(theta2)
    if theta < SMALL_ANGLE:
        return 1.0 / 6.0 - theta2 / 120.0, 1.0 / 24.0 - theta2 / 720.0, 1.0 / 120.0 - theta2 / 2520.0
    s = np.sin(theta)
    co = np.cos(theta)
    return ((theta - s) / (theta2 * theta), (theta2 + 2.0 * co - 2.0) / (2.0 * theta2 * theta2),
            (2.0 * theta - 3.0 * s + theta * co) / (2.0 * theta2 * theta2 * theta))


@_jit
def _se3_q(w, v):
    """The coupling block Q(v, omega) of the SE(3) left Jacobian (Barfoot, eq. 7.86)."""
    theta2 = w[0] * w[0] + w[1] * w[1] + w[2] * w[2]
    W = so3_hat(w)
    V = so3_hat(v)
    WV = _mm(W, V)
    VW = _mm(V, W)
    WVW = _mm(WV, W)
    a, b, c = _se3_q_coeffs(theta2)
    return 0.5 * V + a * (WV + VW + WVW) + b * (_mm(W, WV) + _mm(VW, W) - 3.0 * WVW) + c * (_mm(WVW, W) + _mm(W, WVW))


@_jit
def se3_left_jacobian(xi):
    w = xi[:3]
    J = np.zeros((6, 6))
    Jl = so3_left_jacobian(w)
    J[:3, :3] = Jl
    J[3:, 3:] = Jl
    J[3:, :3] = _se3_q(w, xi[3:])
    return J


@_jit
def se3_left_jacobian_inv(xi):
    # one implementation of the formula (Jl^-1(xi) = Jr^-1(-xi)): the allocation-free one below
    J = np.empty((6, 6))
    se3_right_jacobian_inv_into(-xi, J, np.empty((12, 3, 3)))
    return J


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _mm3_into(A, B, C):
    """C = A B for 3x3 (no allocation: the per-edge Jacobian kernels call this thousands of times)."""
    for i in range(3):
        for j in range(3):
            C[i, j] = A[i, 0] * B[0, j] + A[i, 1] * B[1, j] + A[i, 2] * B[2, j]


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _hat_into(w0, w1, w2, W):
    W[0, 0] = 0.0
    W[0, 1] = -w2
    W[0, 2] = w1
    W[1, 0] = w2
    W[1, 1] = 0.0
    W[1, 2] = -w0
    W[2, 0] = -w1
    W[2, 1] = w0
    W[2, 2] = 0.0


@njit(nogil=True, cache=True, error_model="numpy")
def se3_right_jacobian_inv_into(xi, J, work):
    """Jr^-1(xi) = Jl^-1(-xi) written into ``J`` (6x6) with ``work`` (>= 12 x 3 x 3) as scratch:
    ``[[A, 0], [-A Q A, A]]`` with ``A = Jl^-1`` of SO(3) and Barfoot's Q (eq. 7.86), computed without
    the ~40 small temporaries of composing matrix expressions (4x faster per pose-graph edge, where
    the Jacobian dominated linearisation). :func:`se3_left_jacobian_inv` / :func:`se3_right_jacobian_inv`
    call it too."""
    w0, w1, w2, v0, v1, v2 = -xi[0], -xi[1], -xi[2], -xi[3], -xi[4], -xi[5]
    W, V, WV, VW, WVW, Q = work[0], work[1], work[2], work[3], work[4], work[5]
    WW, A, B, C, D, Jli = work[6], work[7], work[8], work[9], work[10], work[11]
    theta2 = w0 * w0 + w1 * w1 + w2 * w2
    _hat_into(w0, w1, w2, W)
    _hat_into(v0, v1, v2, V)
    _mm3_into(W, V, WV)
    _mm3_into(V, W, VW)
    _mm3_into(WV, W, WVW)
    _mm3_into(W, W, WW)
    a, b, c = _se3_q_coeffs(theta2)
    bj = _so3_jl_inv_coeff(theta2)
    _mm3_into(W, WV, A)  # W W V
    _mm3_into(VW, W, B)  # V W W
    _mm3_into(WVW, W, C)  # W V W W
    _mm3_into(W, WVW, D)  # W W V W
    for i in range(3):
        for j in range(3):
            Q[i, j] = (0.5 * V[i, j] + a * (WV[i, j] + VW[i, j] + WVW[i, j])
                       + b * (A[i, j] + B[i, j] - 3.0 * WVW[i, j]) + c * (C[i, j] + D[i, j]))
            Jli[i, j] = (1.0 if i == j else 0.0) - 0.5 * W[i, j] + bj * WW[i, j]
    _mm3_into(Jli, Q, A)
    _mm3_into(A, Jli, B)  # Jl^-1 Q Jl^-1
    for i in range(3):
        for j in range(3):
            J[i, j] = Jli[i, j]
            J[3 + i, 3 + j] = Jli[i, j]
            J[i, 3 + j] = 0.0
            J[3 + i, j] = -B[i, j]


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def se3_relative_into(Z, A, B, T, E):
    """``T = A^-1 B`` and ``E = Z T`` (4x4 poses) written in place: a pose-graph edge's relative pose and
    error pose without the temporaries of composing :func:`se3_inverse` / :func:`se3_compose` (the
    per-edge allocations were most of the SE(3) edge evaluation time)."""
    for i in range(3):
        for j in range(3):
            T[i, j] = A[0, i] * B[0, j] + A[1, i] * B[1, j] + A[2, i] * B[2, j]
        T[i, 3] = (A[0, i] * (B[0, 3] - A[0, 3]) + A[1, i] * (B[1, 3] - A[1, 3])
                   + A[2, i] * (B[2, 3] - A[2, 3]))
    for i in range(3):
        for j in range(4):
            E[i, j] = Z[i, 0] * T[0, j] + Z[i, 1] * T[1, j] + Z[i, 2] * T[2, j]
        E[i, 3] += Z[i, 3]
    for j in range(3):
        T[3, j] = 0.0
        E[3, j] = 0.0
    T[3, 3] = 1.0
    E[3, 3] = 1.0


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def se3_log_into(T, xi):
    """:func:`se3_log` written into ``xi`` without temporaries (same formulas; the rotation near pi goes
    through :func:`so3_log`)."""
    tr = T[0, 0] + T[1, 1] + T[2, 2]
    c = min(max(0.5 * (tr - 1.0), -1.0), 1.0)
    v0, v1, v2 = T[2, 1] - T[1, 2], T[0, 2] - T[2, 0], T[1, 0] - T[0, 1]
    s = 0.5 * np.sqrt(v0 * v0 + v1 * v1 + v2 * v2)
    theta = np.arctan2(s, c)
    if theta < SMALL_ANGLE:
        f = 0.5 * (1.0 + theta * theta / 6.0)
        w0, w1, w2 = f * v0, f * v1, f * v2
    elif theta < np.pi - 1e-3:
        f = 0.5 * theta / s
        w0, w1, w2 = f * v0, f * v1, f * v2
    else:
        w = so3_log(T[:3, :3])
        w0, w1, w2 = w[0], w[1], w[2]
    # v = Jl^-1(w) t with Jl^-1 = I - W/2 + b W^2, W^2 t = w (w.t) - |w|^2 t
    b = _so3_jl_inv_coeff(w0 * w0 + w1 * w1 + w2 * w2)
    t0, t1, t2 = T[0, 3], T[1, 3], T[2, 3]
    wt = w0 * t0 + w1 * t1 + w2 * t2
    ww = w0 * w0 + w1 * w1 + w2 * w2
    xi[0], xi[1], xi[2] = w0, w1, w2
    xi[3] = t0 - 0.5 * (w1 * t2 - w2 * t1) + b * (w0 * wt - ww * t0)
    xi[4] = t1 - 0.5 * (w2 * t0 - w0 * t2) + b * (w1 * wt - ww * t1)
    xi[5] = t2 - 0.5 * (w0 * t1 - w1 * t0) + b * (w2 * wt - ww * t2)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def se3_retract_into(T, d, o, work):
    """``T <- T exp(d[o:o+6])`` in place (``work``: a 4x4 scratch), without temporaries."""
    w0, w1, w2 = d[o], d[o + 1], d[o + 2]
    u0, u1, u2 = d[o + 3], d[o + 4], d[o + 5]
    theta2 = w0 * w0 + w1 * w1 + w2 * w2
    theta = np.sqrt(theta2)
    if theta < SMALL_ANGLE:
        a = 1.0 - theta2 / 6.0
        b = 0.5 - theta2 / 24.0
        ja = 0.5 - theta2 / 24.0
        jb = 1.0 / 6.0 - theta2 / 120.0
    else:
        st, ct = np.sin(theta), np.cos(theta)
        a = st / theta
        b = (1.0 - ct) / theta2
        ja = b
        jb = (theta - st) / (theta2 * theta)
    # exp(d) = [[I + a W + b W^2, (I + ja W + jb W^2) u], [0, 1]]; W^2 x = w (w.x) - theta2 x
    E = work
    for j in range(3):
        x0, x1, x2 = (1.0 if j == 0 else 0.0), (1.0 if j == 1 else 0.0), (1.0 if j == 2 else 0.0)
        wx = w0 * x0 + w1 * x1 + w2 * x2
        E[0, j] = x0 + a * (w1 * x2 - w2 * x1) + b * (w0 * wx - theta2 * x0)
        E[1, j] = x1 + a * (w2 * x0 - w0 * x2) + b * (w1 * wx - theta2 * x1)
        E[2, j] = x2 + a * (w0 * x1 - w1 * x0) + b * (w2 * wx - theta2 * x2)
    wu = w0 * u0 + w1 * u1 + w2 * u2
    E[0, 3] = u0 + ja * (w1 * u2 - w2 * u1) + jb * (w0 * wu - theta2 * u0)
    E[1, 3] = u1 + ja * (w2 * u0 - w0 * u2) + jb * (w1 * wu - theta2 * u1)
    E[2, 3] = u2 + ja * (w0 * u1 - w1 * u0) + jb * (w2 * wu - theta2 * u2)
    for i in range(3):
        r0, r1, r2, r3 = T[i, 0], T[i, 1], T[i, 2], T[i, 3]
        for j in range(3):
            T[i, j] = r0 * E[0, j] + r1 * E[1, j] + r2 * E[2, j]
        T[i, 3] = r0 * E[0, 3] + r1 * E[1, 3] + r2 * E[2, 3] + r3


@_jit
def se3_right_jacobian(xi):
    return se3_left_jacobian(-xi)


@_jit
def se3_right_jacobian_inv(xi):
    return se3_left_jacobian_inv(-xi)


# --------------------------------------------------------------------------- SE(2)


@_jit
def se2_from_xytheta(x, y, theta):
    c = np.cos(theta)
    s = np.sin(theta)
    T = np.eye(3)
    T[0, 0] = c
    T[0, 1] = -s
    T[1, 0] = s
    T[1, 1] = c
    T[0, 2] = x
    T[1, 2] = y
    return T


@_jit
def se2_to_xytheta(T):
    return np.array([T[0, 2], T[1, 2], np.arctan2(T[1, 0], T[0, 0])])


@_jit
def _se2_v_coeffs(theta):
    """(sin(theta)/theta, (1 - cos(theta))/theta) with series near 0."""
    if abs(theta) < SMALL_ANGLE:
        t2 = theta * theta
        return 1.0 - t2 / 6.0, theta * (0.5 - t2 / 24.0)
    return np.sin(theta) / theta, (1.0 - np.cos(theta)) / theta


@_jit
def se2_exp(xi):
    """xi = (v_x, v_y, theta) -> 3x3 pose."""
    th = xi[2]
    a, b = _se2_v_coeffs(th)
    T = se2_from_xytheta(0.0, 0.0, th)
    T[0, 2] = a * xi[0] - b * xi[1]
    T[1, 2] = b * xi[0] + a * xi[1]
    return T


@_jit
def se2_log(T):
    th = np.arctan2(T[1, 0], T[0, 0])
    a, b = _se2_v_coeffs(th)
    det = a * a + b * b
    x, y = T[0, 2], T[1, 2]
    return np.array([(a * x + b * y) / det, (-b * x + a * y) / det, th])


@_jit
def se2_inverse(T):
    Ti = np.eye(3)
    Ti[:2, :2] = T[:2, :2].T
    Ti[:2, 2] = -_mv(T[:2, :2].T, T[:2, 2])
    return Ti


@_jit
def se2_adjoint(T):
    """3x3 adjoint in (v_x, v_y, theta) order: [[R, (t_y, -t_x)], [0, 1]]."""
    Ad = np.zeros((3, 3))
    Ad[:2, :2] = T[:2, :2]
    Ad[0, 2] = T[1, 2]
    Ad[1, 2] = -T[0, 2]
    Ad[2, 2] = 1.0
    return Ad


@_jit
def se2_right_jacobian(xi):
    """d exp(xi + d) = exp(xi) exp(Jr d) (GTSAM's Pose2::ExpmapDerivative)."""
    v1, v2, th = xi[0], xi[1], xi[2]
    J = np.eye(3)
    if abs(th) < SMALL_ANGLE:
        J[0, 1] = th / 2.0
        J[1, 0] = -th / 2.0
        J[0, 2] = -v2 / 2.0 + th * v1 / 6.0
        J[1, 2] = v1 / 2.0 + th * v2 / 6.0
        J[0, 0] = 1.0 - th * th / 6.0
        J[1, 1] = 1.0 - th * th / 6.0
        return J
    s, c = np.sin(th), np.cos(th)
    J[0, 0] = s / th
    J[0, 1] = (1.0 - c) / th
    J[1, 0] = -(1.0 - c) / th
    J[1, 1] = s / th
    J[0, 2] = (th * v1 - v2 + v2 * c - v1 * s) / (th * th)
    J[1, 2] = (v1 + th * v2 - v1 * c - v2 * s) / (th * th)
    return J


@_jit
def se2_right_jacobian_inv(xi):
    J = se2_right_jacobian(xi)
    # [[A, b], [0, 1]]^-1 = [[A^-1, -A^-1 b], [0, 1]]
    a, b_, c, d = J[0, 0], J[0, 1], J[1, 0], J[1, 1]
    det = a * d - b_ * c
    Ji = np.eye(3)
    Ji[0, 0] = d / det
    Ji[0, 1] = -b_ / det
    Ji[1, 0] = -c / det
    Ji[1, 1] = a / det
    Ji[0, 2] = -(Ji[0, 0] * J[0, 2] + Ji[0, 1] * J[1, 2])
    Ji[1, 2] = -(Ji[1, 0] * J[0, 2] + Ji[1, 1] * J[1, 2])
    return Ji


def warmup() -> None:
    """Compile (or load from cache) every function once."""
    w = np.array([0.1, -0.2, 0.3])
    xi = np.array([0.1, -0.2, 0.3, 1.0, 2.0, 3.0])
    T = se3_exp(xi)
    se3_log(T), se3_inverse(T), se3_compose(T, T), se3_adjoint(T)
    se3_left_jacobian(xi), se3_left_jacobian_inv(xi), se3_right_jacobian(xi), se3_right_jacobian_inv(xi)
    so3_right_jacobian(w), so3_right_jacobian_inv(w), so3_log(so3_exp(w))
    rot_to_quat(T[:3, :3]), quat_to_rot(0.0, 0.0, 0.0, 1.0)
    x2 = np.array([0.5, -0.3, 0.7])
    T2 = se2_exp(x2)
    se2_log(T2), se2_inverse(T2), se2_adjoint(T2), se2_right_jacobian_inv(x2), se2_to_xytheta(T2)
    se2_from_xytheta(1.0, 2.0, 0.3)
