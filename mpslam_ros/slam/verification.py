"""Geometric verification of a loop candidate: descriptor matching + PnP RANSAC + refinement.

The candidate (old) keyframe's metric 3D landmarks (stereo/RGB-D, in its left-camera frame) are
matched by ORB descriptor to the query (new) keyframe's keypoints; PnP RANSAC gives the pose of the
query camera in the candidate camera frame, refined by robust Gauss-Newton
(:func:`mpslam_ros.frontend.pose.refine_pose`). The loop is accepted only with enough inliers, spread
over enough of the image, and — where the query keypoints have their own 3D points — a 3D
consistency check. The result is a relative body pose with a 6x6 information matrix.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

import cv2
import numpy as np

from mpslam_ros.datatypes import Keyframe
from mpslam_ros.frontend.pose import CHI2_2D, refine_pose, so3_exp
from mpslam_ros.geometry.lie import se3_adjoint


@dataclass
class VerificationConfig:
    #: Lowe ratio test on the two nearest Hamming neighbours.
    ratio: float = 0.8
    #: Largest Hamming distance (of 256 bits) for a match.
    max_hamming: int = 80
    ransac_px: float = 3.0
    ransac_iterations: int = 1000
    #: Minimum PnP inliers after refinement.
    min_inliers: int = 25
    #: The image is cut into a 4x4 grid; inliers must fall into at least this many cells.
    min_spread_cells: int = 5
    #: Where query keypoints have stereo depth: fraction of inliers whose 3D points agree.
    min_3d_agreement: float = 0.5
    #: 3D agreement tolerance: max(abs, rel * depth) metres.
    agreement_abs_m: float = 0.10
    agreement_rel: float = 0.05
    #: Pixel noise assumed for the information matrix (larger = less confident loops).
    sigma_px: float = 1.5
    #: Cap on the rotation / translation information (1/rad^2, 1/m^2), i.e. a floor of 2 mrad / 1 cm
    #: on the loop's standard deviation: the PnP Hessian only knows pixel noise, not the stereo depth
    #: noise of the candidate's landmarks, and overconfident loops bend the map (measured on
    #: loop_synth: ATE 4.7 cm with a 1 mm floor).
    max_information: Tuple[float, float] = (2.5e5, 1e4)


@dataclass
class LoopEdge:
    """An accepted loop: the pose of ``query_id``'s body in ``match_id``'s body frame."""

    query_id: int
    match_id: int
    #: T_match_body <- query_body (float64[4,4]).
    T_match_query: np.ndarray
    #: 6x6 information of the relative pose in (rotation, translation) order for a right
    #: perturbation ``T_match_query exp(delta)``: what :meth:`PoseGraph.add_edge` takes.
    information: np.ndarray
    inliers: int
    score: float = 0.0
    spread_cells: int = 0
    rmse_px: float = 0.0
    extra: dict = field(default_factory=dict)
    #: Indices of the query keypoints that are PnP inliers: points of the static scene the candidate's
    #: map holds (VO keeps these established after a relocalisation, the rest on probation).
    query_inliers: Optional[np.ndarray] = None


@dataclass
class VerificationResult:
    edge: Optional[LoopEdge]
    #: Why it was rejected ("" when accepted).
    reason: str
    matches: int = 0
    inliers: int = 0


def match_descriptors(query: np.ndarray, train: np.ndarray, ratio: float, max_hamming: int) -> np.ndarray:
    """Ratio-tested mutual nearest neighbours: int[k, 2] (query index, train index)."""
    if len(query) < 2 or len(train) < 2:
        return np.zeros((0, 2), int)
    bf = cv2.BFMatcher(cv2.NORM_HAMMING)
    knn = bf.knnMatch(np.ascontiguousarray(query), np.ascontiguousarray(train), k=2)
    pairs = []
    for m in knn:
        if len(m) == 2 and m[0].distance <= max_hamming and m[0].distance < ratio * m[1].distance:
            pairs.append((m[0].queryIdx, m[0].trainIdx))
    if not pairs:
        return np.zeros((0, 2), int)
    pairs = np.array(pairs)
    # keep one match per train feature (the first is as good as any after the ratio test)
    _, first = np.unique(pairs[:, 1], return_index=True)
    return pairs[np.sort(first)]


def _spread_cells(uv: np.ndarray, K: np.ndarray) -> int:
    w, h = 2.0 * K[0, 2], 2.0 * K[1, 2]  # the principal point sits near the image centre
    cx = np.clip((uv[:, 0] / w * 4).astype(int), 0, 3)
    cy = np.clip((uv[:, 1] / h * 4).astype(int), 0, 3)
    return int(len(np.unique(cy * 4 + cx)))


def verify_loop(query: Keyframe, candidate: Keyframe, config: Optional[VerificationConfig] = None,
                score: float = 0.0) -> VerificationResult:
    """Verify that ``query`` sees the place of ``candidate``; returns the loop edge or why not."""
    cfg = config or VerificationConfig()
    cpts = np.asarray(candidate.points_cam, np.float64)
    has3d = np.all(np.isfinite(cpts), axis=1) if len(cpts) else np.zeros(0, bool)
    if has3d.sum() < cfg.min_inliers:
        return VerificationResult(None, f"candidate has {int(has3d.sum())} 3D landmarks")
    cidx = np.where(has3d)[0]
    pairs = match_descriptors(np.asarray(query.descriptors, np.uint8),
                              np.asarray(candidate.descriptors, np.uint8)[cidx], cfg.ratio, cfg.max_hamming)
    nm = len(pairs)
    if nm < cfg.min_inliers:
        return VerificationResult(None, f"{nm} descriptor matches", nm)
    qi, ci = pairs[:, 0], cidx[pairs[:, 1]]
    X = cpts[ci]
    uv = np.asarray(query.keypoints, np.float64)[qi]
    K = np.asarray(query.K, np.float64)
    try:
        ok, rvec, tvec, inl = cv2.solvePnPRansac(
            X.reshape(-1, 1, 3), uv.reshape(-1, 1, 2), K, None, iterationsCount=cfg.ransac_iterations,
            reprojectionError=cfg.ransac_px, confidence=0.999, flags=cv2.SOLVEPNP_EPNP)
    except cv2.error as exc:
        return VerificationResult(None, f"PnP failed ({exc.msg if hasattr(exc, 'msg') else exc})", nm)
    if not ok or inl is None or len(inl) < cfg.min_inliers:
        return VerificationResult(None, f"PnP RANSAC: {0 if inl is None else len(inl)} inliers", nm)
    T = np.eye(4)  # T_query_cam <- candidate_cam
    T[:3, :3] = so3_exp(rvec.ravel())
    T[:3, 3] = tvec.ravel()
    intr = (K[0, 0], K[1, 1], K[0, 2], K[1, 2])
    no_right = np.full(len(X), np.nan)
    inliers = np.zeros(len(X), bool)
    inliers[inl.ravel()] = True
    H = np.zeros((6, 6))
    chi2 = np.zeros(0)
    for _ in range(3):  # refine on inliers, re-classify all matches, repeat
        T, _, _, H = refine_pose(T, X[inliers], uv[inliers], no_right[inliers], intr, 0.0, cfg.sigma_px)
        _, chi2, _, _ = refine_pose(T, X, uv, no_right, intr, 0.0, cfg.sigma_px, iterations=0)
        inliers = chi2 < CHI2_2D
        if inliers.sum() < cfg.min_inliers:
            return VerificationResult(None, f"{int(inliers.sum())} inliers after refinement", nm,
                                      int(inliers.sum()))
    n_in = int(inliers.sum())
    cells = _spread_cells(uv[inliers], K)
    if cells < cfg.min_spread_cells:
        return VerificationResult(None, f"inliers cover {cells} of 16 image cells", nm, n_in)
    # 3D consistency: the query's own stereo points must land where the candidate's do.
    qpts = np.asarray(query.points_cam, np.float64)[qi[inliers]]
    both = np.all(np.isfinite(qpts), axis=1)
    agreement = float("nan")
    if both.sum() >= 10:
        pred = X[inliers][both] @ T[:3, :3].T + T[:3, 3]
        err = np.linalg.norm(pred - qpts[both], axis=1)
        tol = np.maximum(cfg.agreement_abs_m, cfg.agreement_rel * qpts[both][:, 2])
        agreement = float(np.mean(err < tol))
        if agreement < cfg.min_3d_agreement:
            return VerificationResult(None, f"3D agreement {agreement:.2f} < {cfg.min_3d_agreement}", nm, n_in)
    rmse = float(np.sqrt(np.mean(chi2[inliers]))) * cfg.sigma_px
    # Body-frame relative pose. T (query_cam <- cand_cam) with left perturbation exp(d) T; its inverse
    # T_cand_query = T^-1 then has right perturbation exp(-d), with the same covariance.
    T_bl_q = np.asarray(query.T_body_left, np.float64)
    T_bl_c = np.asarray(candidate.T_body_left, np.float64)
    T_match_query = T_bl_c @ np.linalg.inv(T) @ np.linalg.inv(T_bl_q)
    # refine_pose orders the tangent (rho, phi); the pose graph (GTSAM) orders it (omega, v).
    perm = np.array([3, 4, 5, 0, 1, 2])
    H = H[np.ix_(perm, perm)]
    # right perturbation on the camera relative pose -> body: delta_body = Ad(T_bl_q) delta_cam
    Ad_inv = np.linalg.inv(se3_adjoint(T_bl_q))
    info = Ad_inv.T @ H @ Ad_inv
    info = 0.5 * (info + info.T)
    d = np.sqrt(np.maximum(np.diag(info), 1e-12))
    cap = np.array([cfg.max_information[0]] * 3 + [cfg.max_information[1]] * 3)
    s = np.minimum(1.0, np.sqrt(cap) / d)  # scale rows/cols so no diagonal exceeds the cap
    info = info * s[:, None] * s[None, :]
    edge = LoopEdge(int(query.id), int(candidate.id), T_match_query, info, n_in, score, cells, rmse,
                    {"matches": nm, "agreement_3d": agreement}, qi[inliers])
    return VerificationResult(edge, "", nm, n_in)


def epipolar_inliers(query_uv: np.ndarray, query_desc: np.ndarray, cand_uv: np.ndarray, cand_desc: np.ndarray,
                     ratio: float = 0.8, max_hamming: int = 80, ransac_px: float = 2.0) -> int:
    """Matches of two monocular views consistent with one fundamental matrix (RANSAC): the geometric
    check of place recognition where no 3D points exist (DBoW2's check; :func:`verify_loop` needs the
    candidate's metric landmarks). 0 when fewer than 8 descriptor matches."""
    pairs = match_descriptors(np.asarray(query_desc, np.uint8), np.asarray(cand_desc, np.uint8), ratio,
                              max_hamming)
    if len(pairs) < 8:
        return 0
    a = np.asarray(query_uv, np.float64)[pairs[:, 0]]
    b = np.asarray(cand_uv, np.float64)[pairs[:, 1]]
    try:
        F, mask = cv2.findFundamentalMat(a, b, cv2.FM_RANSAC, ransac_px, 0.999)
    except cv2.error:
        return 0
    if F is None or mask is None:
        return 0
    return int(mask.sum())
