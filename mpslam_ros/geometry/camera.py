"""Camera models for bundle adjustment: projection and analytic Jacobians.

Three models, each as a numba scalar kernel (used inside the BA residual/Jacobian loops) plus a
vectorised numpy-facing wrapper (tests, tools):

- pinhole with radial-tangential (plumb-bob) distortion, EuRoC's / ROS CameraInfo's model:
  ``x = X/Z, y = Y/Z``, ``r2 = x^2 + y^2``, ``rad = 1 + k1 r2 + k2 r2^2 + k3 r2^3``,
  ``xd = x rad + 2 p1 x y + p2 (r2 + 2 x^2)``, ``yd = y rad + p1 (r2 + 2 y^2) + 2 p2 x y``,
  ``u = fx xd + cx``, ``v = fy yd + cy``;
- rectified stereo (undistorted pinhole + baseline b along +x of the left camera):
  ``(u_l, v, u_r) = (fx X/Z + cx, fy Y/Z + cy, fx (X - b)/Z + cx)``;
- the BAL camera (Bundle Adjustment in the Large): ``P = R(w) X + t``, ``p = -P_xy / P_z``,
  ``p' = f (1 + k1 |p|^2 + k2 |p|^4) p`` (no principal point).

Jacobians are with respect to the point in the camera frame (``d proj / d P_c``); chain them with
:func:`pose_jacobian_left` for a left-multiplied SE(3) update ``T_cw <- exp(delta) T_cw`` of the
pose (``delta = (rho, phi)``, translation first), for which ``d P_c / d delta = [I | -[P_c]x]``.
"""

from __future__ import annotations

import numpy as np
from numba import njit

#: Points closer than this (metres along the optical axis) are treated as behind the camera.
MIN_DEPTH = 1e-6


@njit(nogil=True, cache=True)
def project_radtan(P, fx, fy, cx, cy, k1, k2, p1, p2, k3, uv, J):
    """Project camera-frame point ``P`` (3,) into ``uv`` (2,) and write ``J = d uv / d P`` (2x3).

    Returns False (outputs untouched) when the point is not in front of the camera.
    """
    Z = P[2]
    if not Z > MIN_DEPTH:
        return False
    iz = 1.0 / Z
    x = P[0] * iz
    y = P[1] * iz
    r2 = x * x + y * y
    rad = 1.0 + r2 * (k1 + r2 * (k2 + r2 * k3))
    drad = k1 + r2 * (2.0 * k2 + 3.0 * k3 * r2)  # d rad / d r2
    xd = x * rad + 2.0 * p1 * x * y + p2 * (r2 + 2.0 * x * x)
    yd = y * rad + p1 * (r2 + 2.0 * y * y) + 2.0 * p2 * x * y
    uv[0] = fx * xd + cx
    uv[1] = fy * yd + cy
    # d(xd, yd) / d(x, y)
    a00 = rad + 2.0 * x * x * drad + 2.0 * p1 * y + 6.0 * p2 * x
    a01 = 2.0 * x * y * drad + 2.0 * p1 * x + 2.0 * p2 * y
    a10 = 2.0 * x * y * drad + 2.0 * p1 * x + 2.0 * p2 * y
    a11 = rad + 2.0 * y * y * drad + 6.0 * p1 * y + 2.0 * p2 * x
    # d(x, y) / d(X, Y, Z) = [[1/Z, 0, -x/Z], [0, 1/Z, -y/Z]]
    J[0, 0] = fx * a00 * iz
    J[0, 1] = fx * a01 * iz
    J[0, 2] = -fx * (a00 * x + a01 * y) * iz
    J[1, 0] = fy * a10 * iz
    J[1, 1] = fy * a11 * iz
    J[1, 2] = -fy * (a10 * x + a11 * y) * iz
    return True


@njit(nogil=True, cache=True)
def project_stereo(P, fx, fy, cx, cy, baseline, uvr, J):
    """Rectified stereo: ``uvr = (u_l, v, u_r)`` and ``J = d uvr / d P`` (3x3). False if behind."""
    Z = P[2]
    if not Z > MIN_DEPTH:
        return False
    iz = 1.0 / Z
    x = P[0] * iz
    y = P[1] * iz
    xr = (P[0] - baseline) * iz
    uvr[0] = fx * x + cx
    uvr[1] = fy * y + cy
    uvr[2] = fx * xr + cx
    J[0, 0] = fx * iz
    J[0, 1] = 0.0
    J[0, 2] = -fx * x * iz
    J[1, 0] = 0.0
    J[1, 1] = fy * iz
    J[1, 2] = -fy * y * iz
    J[2, 0] = fx * iz
    J[2, 1] = 0.0
    J[2, 2] = -fx * xr * iz
    return True


@njit(nogil=True, cache=True)
def project_bal(P, f, k1, k2, uv, J_P, J_intr):
    """BAL camera on camera-frame point ``P``: ``uv`` (2,), ``J_P = d uv / d P`` (2x3) and
    ``J_intr = d uv / d (f, k1, k2)`` (2x3). False when ``P_z`` is ~0 (BAL cameras look down -z,
    so valid points have ``P_z < 0``; both signs are accepted like the reference implementation)."""
    Z = P[2]
    if abs(Z) < MIN_DEPTH:
        return False
    iz = -1.0 / Z
    x = P[0] * iz
    y = P[1] * iz
    r2 = x * x + y * y
    rad = 1.0 + r2 * (k1 + k2 * r2)
    drad = k1 + 2.0 * k2 * r2
    uv[0] = f * rad * x
    uv[1] = f * rad * y
    # d(f rad p) / dp = f (rad I + 2 drad p p^T);  dp/dP = iz [[1, 0, x], [0, 1, y]]  (iz = -1/Z)
    a00 = f * (rad + 2.0 * drad * x * x)
    a01 = f * (2.0 * drad * x * y)
    a11 = f * (rad + 2.0 * drad * y * y)
    J_P[0, 0] = a00 * iz
    J_P[0, 1] = a01 * iz
    J_P[0, 2] = (a00 * x + a01 * y) * iz
    J_P[1, 0] = a01 * iz
    J_P[1, 1] = a11 * iz
    J_P[1, 2] = (a01 * x + a11 * y) * iz
    J_intr[0, 0] = rad * x
    J_intr[0, 1] = f * r2 * x
    J_intr[0, 2] = f * r2 * r2 * x
    J_intr[1, 0] = rad * y
    J_intr[1, 1] = f * r2 * y
    J_intr[1, 2] = f * r2 * r2 * y
    return True


@njit(nogil=True, cache=True)
def pose_jacobian_left(Jproj, P, nrows, out):
    """``out[:nrows, :6] = Jproj @ [I | -[P]x]``: the Jacobian of a projection with respect to a
    left-multiplied SE(3) (or, with the first three columns dropped, SO(3)) update of the pose
    that produced camera-frame point ``P``."""
    for r in range(nrows):
        a = Jproj[r, 0]
        b = Jproj[r, 1]
        c = Jproj[r, 2]
        out[r, 0] = a
        out[r, 1] = b
        out[r, 2] = c
        # row @ -[P]x = P x row
        out[r, 3] = P[1] * c - P[2] * b
        out[r, 4] = P[2] * a - P[0] * c
        out[r, 5] = P[0] * b - P[1] * a


# ---------------------------------------------------------------------------------------------
# Vectorised wrappers (numpy in, numpy out)


def _as_points(points: np.ndarray) -> np.ndarray:
    pts = np.ascontiguousarray(points, dtype=np.float64).reshape(-1, 3)
    return pts


@njit(nogil=True, cache=True)
def _radtan_many(pts, params, uv, J, ok):
    fx, fy, cx, cy, k1, k2, p1, p2, k3 = params
    for i in range(pts.shape[0]):
        ok[i] = project_radtan(pts[i], fx, fy, cx, cy, k1, k2, p1, p2, k3, uv[i], J[i])


@njit(nogil=True, cache=True)
def _stereo_many(pts, params, uvr, J, ok):
    fx, fy, cx, cy, b = params
    for i in range(pts.shape[0]):
        ok[i] = project_stereo(pts[i], fx, fy, cx, cy, b, uvr[i], J[i])


@njit(nogil=True, cache=True)
def _bal_many(pts, cams, uv, J_P, J_intr, ok):
    for i in range(pts.shape[0]):
        ok[i] = project_bal(pts[i], cams[i, 0], cams[i, 1], cams[i, 2], uv[i], J_P[i], J_intr[i])


def radtan_params(fx: float, fy: float, cx: float, cy: float, distortion=()) -> np.ndarray:
    """Pack intrinsics into the (fx, fy, cx, cy, k1, k2, p1, p2, k3) vector the kernels take."""
    d = np.zeros(5)
    dist = np.asarray(distortion, dtype=np.float64).ravel()
    d[: len(dist)] = dist[:5]
    return np.array([fx, fy, cx, cy, *d])


def project_points_radtan(points_cam: np.ndarray, params: np.ndarray):
    """Project camera-frame points (n,3) with packed radtan ``params`` (see :func:`radtan_params`).

    Returns ``(uv (n,2), J (n,2,3), valid (n,))``; invalid (behind-camera) rows are NaN.
    """
    pts = _as_points(points_cam)
    n = len(pts)
    uv = np.full((n, 2), np.nan)
    J = np.full((n, 2, 3), np.nan)
    ok = np.zeros(n, dtype=np.bool_)
    _radtan_many(pts, np.asarray(params, dtype=np.float64), uv, J, ok)
    return uv, J, ok


def project_points_stereo(points_cam: np.ndarray, fx: float, fy: float, cx: float, cy: float,
                          baseline: float):
    """Rectified stereo projection of camera-frame points: ``(uvr (n,3), J (n,3,3), valid)``."""
    pts = _as_points(points_cam)
    n = len(pts)
    uvr = np.full((n, 3), np.nan)
    J = np.full((n, 3, 3), np.nan)
    ok = np.zeros(n, dtype=np.bool_)
    _stereo_many(pts, np.array([fx, fy, cx, cy, baseline], dtype=np.float64), uvr, J, ok)
    return uvr, J, ok


def project_points_bal(points_cam: np.ndarray, f_k1_k2: np.ndarray):
    """BAL projection of camera-frame points with per-point ``(f, k1, k2)`` rows (n,3) or one row.

    Returns ``(uv (n,2), J_P (n,2,3), J_intr (n,2,3), valid)``.
    """
    pts = _as_points(points_cam)
    n = len(pts)
    cams = np.broadcast_to(np.asarray(f_k1_k2, dtype=np.float64).reshape(-1, 3), (n, 3))
    uv = np.full((n, 2), np.nan)
    J_P = np.full((n, 2, 3), np.nan)
    J_intr = np.full((n, 2, 3), np.nan)
    ok = np.zeros(n, dtype=np.bool_)
    _bal_many(pts, np.ascontiguousarray(cams), uv, J_P, J_intr, ok)
    return uv, J_P, J_intr, ok


def rodrigues_to_matrix(w: np.ndarray) -> np.ndarray:
    """Rotation vectors (..., 3) -> rotation matrices (..., 3, 3) (Rodrigues' formula, BAL's rotation)."""
    w = np.asarray(w, dtype=np.float64)
    shape = w.shape[:-1]
    w = w.reshape(-1, 3)
    theta = np.linalg.norm(w, axis=1)
    small = theta < 1e-12
    safe = np.where(small, 1.0, theta)
    k = w / safe[:, None]
    K = np.zeros((len(w), 3, 3))
    K[:, 0, 1], K[:, 0, 2], K[:, 1, 2] = -k[:, 2], k[:, 1], -k[:, 0]
    K[:, 1, 0], K[:, 2, 0], K[:, 2, 1] = k[:, 2], -k[:, 1], k[:, 0]
    s = np.sin(theta)[:, None, None]
    c = (1.0 - np.cos(theta))[:, None, None]
    R = np.eye(3) + s * K + c * (K @ K)
    # First-order series for tiny angles: R = I + [w]x
    if np.any(small):
        W = np.zeros((small.sum(), 3, 3))
        ws = w[small]
        W[:, 0, 1], W[:, 0, 2], W[:, 1, 2] = -ws[:, 2], ws[:, 1], -ws[:, 0]
        W[:, 1, 0], W[:, 2, 0], W[:, 2, 1] = ws[:, 2], -ws[:, 1], ws[:, 0]
        R[small] = np.eye(3) + W
    return R.reshape(shape + (3, 3))


def matrix_to_rodrigues(R: np.ndarray) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> rotation vectors (..., 3), stable near 0 and pi."""
    R = np.asarray(R, dtype=np.float64)
    shape = R.shape[:-2]
    R = R.reshape(-1, 3, 3)
    out = np.zeros((len(R), 3))
    tr = np.clip((np.trace(R, axis1=1, axis2=2) - 1.0) * 0.5, -1.0, 1.0)
    theta = np.arccos(tr)
    v = np.stack([R[:, 2, 1] - R[:, 1, 2], R[:, 0, 2] - R[:, 2, 0], R[:, 1, 0] - R[:, 0, 1]], axis=1)
    s = np.sin(theta)
    regular = s > 1e-6
    out[regular] = v[regular] * (theta[regular] / (2.0 * s[regular]))[:, None]
    small = (~regular) & (theta < 1.0)
    out[small] = 0.5 * v[small]
    near_pi = (~regular) & ~small
    for i in np.nonzero(near_pi)[0]:
        # axis from the largest diagonal of (R + I)/2 = k k^T
        B = 0.5 * (R[i] + np.eye(3))
        j = int(np.argmax(np.diag(B)))
        k = B[:, j] / np.sqrt(max(B[j, j], 1e-300))
        out[i] = k * theta[i]
    return out.reshape(shape + (3,))
