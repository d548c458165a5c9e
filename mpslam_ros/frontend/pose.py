"""Camera pose from 3D landmarks and their 2D observations: PnP RANSAC + robust refinement.

``estimate_pose`` runs OpenCV's PnP RANSAC seeded by the motion-model pose, then a motion-only
Gauss-Newton refinement in float64 on the stereo reprojection residual (u, v and, where matched,
the right u) with Huber weights, and rejects outliers by a chi-square test on the whitened
residual. The inverse Gauss-Newton Hessian gives the covariance-ish quality measure.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import cv2
import numpy as np

#: chi-square 95% quantiles for 2 (mono) and 3 (stereo) degrees of freedom.
CHI2_2D = 5.991
CHI2_3D = 7.815


@dataclass
class PoseEstimate:
    T_cw: np.ndarray  # float64[4,4] world -> camera
    inliers: np.ndarray  # bool[n]
    #: Diagonal of the pose covariance (rho, phi) in m^2 / rad^2 (pixel sigma 1); inf if singular.
    covariance_diag: np.ndarray
    rmse_px: float


def so3_exp(phi: np.ndarray) -> np.ndarray:
    R, _ = cv2.Rodrigues(np.asarray(phi, dtype=np.float64).reshape(3, 1))
    return R


def apply_left_update(T_cw: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """``T <- exp(delta) T`` with delta = (rho, phi) (first-order translation part, like BA's)."""
    D = np.eye(4)
    D[:3, :3] = so3_exp(delta[3:])
    D[:3, 3] = delta[:3]
    return D @ T_cw


def refine_pose(T_cw: np.ndarray, points_w: np.ndarray, uv: np.ndarray, ur: np.ndarray,
                intrinsics, baseline: float, sigma_px: float = 1.0, iterations: int = 6,
                huber_px: float = 2.0):
    """Motion-only Gauss-Newton with Huber weights on stereo/mono reprojection residuals.

    ``ur`` (n,) right-image u, NaN where only the left observation exists. Returns
    ``(T_cw, chi2 per point (whitened squared error), dof per point, H (6x6))``.
    """
    fx, fy, cx, cy = intrinsics
    X = np.asarray(points_w, dtype=np.float64)
    uv = np.asarray(uv, dtype=np.float64)
    ur = np.asarray(ur, dtype=np.float64)
    stereo = np.isfinite(ur) & (baseline > 0)
    T = T_cw.copy()
    H = np.zeros((6, 6))
    for it in range(iterations + 1):
        P = X @ T[:3, :3].T + T[:3, 3]
        Z = P[:, 2]
        front = Z > 1e-6
        iz = np.where(front, 1.0 / np.where(front, Z, 1.0), 0.0)
        x, y = P[:, 0] * iz, P[:, 1] * iz
        r = np.zeros((len(X), 3))
        r[:, 0] = fx * x + cx - uv[:, 0]
        r[:, 1] = fy * y + cy - uv[:, 1]
        r[:, 2] = np.where(stereo, fx * (P[:, 0] - baseline) * iz + cx - np.nan_to_num(ur), 0.0)
        r[~front] = 1e3
        chi2 = (r ** 2).sum(1) / sigma_px ** 2
        if it == iterations:
            break
        # d proj / d P_c  (3 rows: u, v, u_r) chained with d P_c / d delta = [I | -[P]x]
        Jp = np.zeros((len(X), 3, 3))
        Jp[:, 0, 0] = fx * iz
        Jp[:, 0, 2] = -fx * x * iz
        Jp[:, 1, 1] = fy * iz
        Jp[:, 1, 2] = -fy * y * iz
        Jp[:, 2, 0] = np.where(stereo, fx * iz, 0.0)
        Jp[:, 2, 2] = np.where(stereo, -fx * (P[:, 0] - baseline) * iz * iz, 0.0)
        Px = np.zeros((len(X), 3, 3))  # -[P]x
        Px[:, 0, 1], Px[:, 0, 2], Px[:, 1, 2] = P[:, 2], -P[:, 1], P[:, 0]
        Px[:, 1, 0], Px[:, 2, 0], Px[:, 2, 1] = -P[:, 2], P[:, 1], -P[:, 0]
        J = np.concatenate([Jp, Jp @ Px], axis=2)  # (n,3,6)
        J[~front] = 0.0
        err = np.sqrt(chi2) * sigma_px
        w = np.where(err <= huber_px, 1.0, huber_px / np.maximum(err, 1e-12))
        Jw = J * w[:, None, None]
        H = np.einsum("nri,nrj->ij", Jw, J)
        g = np.einsum("nri,nr->i", Jw, r)
        try:
            delta = -np.linalg.solve(H + 1e-9 * np.eye(6), g)
        except np.linalg.LinAlgError:
            break
        T = apply_left_update(T, delta)
        if np.linalg.norm(delta) < 1e-10:
            P = X @ T[:3, :3].T + T[:3, 3]
            continue
    dof = np.where(stereo, 3, 2)
    return T, chi2, dof, H


def estimate_pose(points_w: np.ndarray, uv: np.ndarray, ur: np.ndarray, intrinsics, baseline: float,
                  T_cw_prior: Optional[np.ndarray] = None, ransac_px: float = 3.0,
                  ransac_iterations: int = 100, sigma_px: float = 1.0,
                  min_inliers: int = 8) -> Optional[PoseEstimate]:
    """PnP RANSAC (seeded with ``T_cw_prior`` when given) then robust stereo refinement.

    Returns None when fewer than ``min_inliers`` points survive.
    """
    n = len(points_w)
    if n < max(4, min_inliers):
        return None
    fx, fy, cx, cy = intrinsics
    K = np.array([[fx, 0, cx], [0, fy, cy], [0, 0, 1.0]])
    obj = np.ascontiguousarray(points_w, dtype=np.float64).reshape(-1, 1, 3)
    img = np.ascontiguousarray(uv, dtype=np.float64).reshape(-1, 1, 2)
    use_guess = T_cw_prior is not None
    if use_guess:
        rvec0, _ = cv2.Rodrigues(T_cw_prior[:3, :3])
        tvec0 = T_cw_prior[:3, 3].reshape(3, 1).copy()
    else:
        rvec0, tvec0 = np.zeros((3, 1)), np.zeros((3, 1))
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            obj, img, K, None, rvec0.copy(), tvec0.copy(), useExtrinsicGuess=use_guess,
            iterationsCount=ransac_iterations, reprojectionError=ransac_px, confidence=0.99,
            flags=cv2.SOLVEPNP_ITERATIVE if use_guess else cv2.SOLVEPNP_EPNP)
    except cv2.error:
        ok = False
    inliers = np.zeros(n, bool)
    if ok and inl is not None and len(inl) >= min_inliers:
        inliers[inl.ravel()] = True
        T = np.eye(4)
        T[:3, :3] = so3_exp(rvec.ravel())
        T[:3, 3] = tvec.ravel()
    elif use_guess:
        # RANSAC failed; the prior may still be good enough for the robust refinement to converge.
        T = T_cw_prior.copy()
        inliers[:] = True
    else:
        return None
    # Refine on RANSAC inliers, then re-test all points (chi-square) and refine once more.
    T, _, _, _ = refine_pose(T, points_w[inliers], uv[inliers], ur[inliers], intrinsics, baseline,
                             sigma_px)
    for _ in range(2):
        _, chi2, dof, _ = refine_pose(T, points_w, uv, ur, intrinsics, baseline, sigma_px,
                                      iterations=0)
        inliers = chi2 < np.where(dof == 3, CHI2_3D, CHI2_2D)
        if inliers.sum() < min_inliers:
            return None
        T, chi2_in, _, H = refine_pose(T, points_w[inliers], uv[inliers], ur[inliers], intrinsics,
                                       baseline, sigma_px)
    try:
        cov = np.diag(np.linalg.inv(H)) * sigma_px ** 2
    except np.linalg.LinAlgError:
        cov = np.full(6, np.inf)
    rmse = float(np.sqrt(np.mean(chi2_in))) * sigma_px if len(chi2_in) else float("inf")
    return PoseEstimate(T, inliers, cov, rmse)
