"""Front end on real images: EuRoC (distorted stereo, rectified here) and rendered synthetic frames
with exact depth and poses."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from mpslam_ros.datatypes import CameraIntrinsics, StereoRig
from mpslam_ros.frontend.features import (detect_features, match_stereo, orb_descriptors,
                                          track_klt)
from mpslam_ros.frontend.pose import estimate_pose
from mpslam_ros.frontend.rectify import Rectifier

def _euroc_camera(mav0: Path, name: str):
    # Only what this test needs from sensor.yaml (the dataset reader lives in mpslam_ros.io).
    y = yaml.safe_load((mav0 / name / "sensor.yaml").read_text().replace("%YAML:1.0", ""))
    fx, fy, cx, cy = y["intrinsics"]
    w, h = y["resolution"]
    cam = CameraIntrinsics(w, h, fx, fy, cx, cy, np.array(y["distortion_coefficients"]))
    return cam, np.array(y["T_BS"]["data"], dtype=float).reshape(4, 4)


@pytest.fixture(scope="module")
def euroc_pair(euroc_dir):
    mav0 = euroc_dir / "mav0"
    c0, T0 = _euroc_camera(mav0, "cam0")
    c1, T1 = _euroc_camera(mav0, "cam1")
    rig = StereoRig(c0, c1, T0, np.linalg.inv(T0) @ T1)
    first = sorted((mav0 / "cam0" / "data").glob("*.png"))[0]
    left = cv2.imread(str(first), cv2.IMREAD_GRAYSCALE)
    right = cv2.imread(str(mav0 / "cam1" / "data" / first.name), cv2.IMREAD_GRAYSCALE)
    return rig, left, right


@pytest.fixture(scope="module")
def synth():
    from mpslam_ros.sim.sequences import load_or_generate

    return load_or_generate("household", 8, seed=0, progress=False)


def test_detection_is_spread_over_the_image(euroc_pair):
    rig, left, _ = euroc_pair
    pts = detect_features(left, 200)
    assert 60 <= len(pts) <= 200
    h, w = left.shape
    # every quadrant of the image gets features (bucketing, not clustering on the checkerboard)
    quad = (pts[:, 0] > w / 2).astype(int) + 2 * (pts[:, 1] > h / 2).astype(int)
    assert np.bincount(quad, minlength=4).min() >= 5
    # features keep their distance from each other and from existing ones
    d = np.linalg.norm(pts[:, None] - pts[None], axis=2) + np.eye(len(pts)) * 1e9
    assert d.min() > 3.0
    more = detect_features(left, 400, existing=pts, min_distance=12)
    assert len(more) > 0
    assert np.linalg.norm(more[:, None] - pts[None], axis=2).min() >= 11.0


def test_euroc_rectification_aligns_rows(euroc_pair):
    rig, left, right = euroc_pair
    rect = Rectifier(rig)
    assert rect.camera.baseline == pytest.approx(0.110, abs=0.002)  # EuRoC's ~11 cm baseline
    L, R, _ = rect.rectify(left, right)
    pts = detect_features(L, 200)
    # a free 2D search (KLT) should land on the same row after rectification
    pr, ok = track_klt(L, R, pts, fb_threshold=0.5)
    dy = np.abs(pr[:, 1] - pts[:, 1])
    assert ok.sum() > 30
    assert np.median(dy[ok]) < 0.5
    # the row search (ZNCC) matches most features, with positive disparity close to KLT's
    ur, ok2 = match_stereo(L, R, pts, max_disparity=120)
    assert ok2.sum() > 0.6 * len(pts)
    both = ok & ok2 & (dy < 0.5)
    assert np.median(np.abs(ur[both] - pr[both, 0])) < 0.5
    # the rectified left camera is the physical one rotated slightly (< 2 deg)
    R_rel = np.linalg.inv(rig.T_body_left) @ rect.T_body_cam
    assert np.degrees(np.arccos((np.trace(R_rel[:3, :3]) - 1) / 2)) < 2.0


def test_stereo_depth_matches_rendered_depth(synth):
    frame = synth[30]
    depth = synth.depth(30)
    cam = synth.rig.left
    pts = detect_features(frame.left, 250)
    ur, ok = match_stereo(frame.left, frame.right, pts, max_disparity=160)
    assert ok.sum() > 0.7 * len(pts)
    z_stereo = cam.fx * synth.rig.baseline / (pts[ok, 0] - ur[ok])
    z_true = depth[np.round(pts[ok, 1]).astype(int), np.round(pts[ok, 0]).astype(int)]
    rel = np.abs(z_stereo - z_true) / z_true
    # corners sit on depth edges sometimes (the pixel's depth is the other surface): median tight
    assert np.median(rel) < 0.03
    assert np.mean(rel < 0.1) > 0.85


def test_klt_tracks_a_known_shift(synth):
    img = synth[10].left
    shifted = np.zeros_like(img)
    shifted[7:, 5:] = img[:-7, :-5]  # content moves by (+5, +7) pixels
    pts = detect_features(img, 150)
    pts = pts[(pts[:, 0] < img.shape[1] - 40) & (pts[:, 1] < img.shape[0] - 40)]
    p1, ok = track_klt(img, shifted, pts)
    assert ok.mean() > 0.9
    err = p1[ok] - pts[ok] - np.array([5.0, 7.0])
    assert np.median(np.linalg.norm(err, axis=1)) < 0.1


def test_orb_descriptors_shape_and_border(synth):
    img = synth[10].left
    pts = np.array([[100.0, 100.0], [300.5, 200.25], [3.0, 3.0], [630.0, 470.0]], np.float32)
    desc, ok = orb_descriptors(img, pts)
    assert desc.shape == (4, 32) and desc.dtype == np.uint8
    assert ok.tolist() == [True, True, False, False]
    assert not desc[2:].any() and desc[:2].any()
    # same pixel -> same descriptor; different pixels -> different descriptors
    d2, _ = orb_descriptors(img, pts[:2])
    assert np.array_equal(d2, desc[:2]) and not np.array_equal(desc[0], desc[1])


def test_pnp_rejects_outliers_and_recovers_pose():
    rng = np.random.default_rng(3)
    intr = (400.0, 400.0, 320.0, 240.0)
    T_cw = np.eye(4)
    T_cw[:3, :3] = cv2.Rodrigues(np.array([0.05, -0.1, 0.02]))[0]
    T_cw[:3, 3] = [0.2, -0.1, 0.3]
    Pc = np.column_stack([rng.uniform(-2, 2, 150), rng.uniform(-1.5, 1.5, 150), rng.uniform(2, 8, 150)])
    T_wc = np.linalg.inv(T_cw)
    Pw = Pc @ T_wc[:3, :3].T + T_wc[:3, 3]
    uv = np.column_stack([400 * Pc[:, 0] / Pc[:, 2] + 320, 400 * Pc[:, 1] / Pc[:, 2] + 240])
    uv += rng.normal(0, 0.5, uv.shape)
    outliers = rng.choice(150, 30, replace=False)
    uv[outliers] += rng.uniform(15, 60, (30, 2)) * rng.choice([-1, 1], (30, 2))
    ur = np.full(150, np.nan)
    est = estimate_pose(Pw, uv, ur, intr, 0.1, T_cw_prior=np.eye(4))
    assert est is not None
    assert not est.inliers[outliers].any()
    assert est.inliers.sum() >= 110
    assert np.linalg.norm(est.T_cw[:3, 3] - T_cw[:3, 3]) < 0.01
    assert np.all(np.isfinite(est.covariance_diag)) and np.all(est.covariance_diag > 0)
    # stereo residuals (right u) are used by the refinement: the covariance shrinks
    ur = 400 * (Pc[:, 0] - 0.1) / Pc[:, 2] + 320 + rng.normal(0, 0.5, 150)
    est2 = estimate_pose(Pw, uv, ur, intr, 0.1, T_cw_prior=np.eye(4))
    assert est2.covariance_diag[:3].sum() < est.covariance_diag[:3].sum()


def test_pnp_ransac_is_deterministic_given_its_inputs():
    """VO runs must be reproducible: OpenCV's PnP RANSAC samples with its own fixed-seed RNG, so the
    same inputs give the bit-identical pose whatever happened before (global RNG state included)."""
    rng = np.random.default_rng(5)
    intr = (400.0, 400.0, 320.0, 240.0)
    Pc = np.column_stack([rng.uniform(-2, 2, 150), rng.uniform(-1.5, 1.5, 150), rng.uniform(2, 8, 150)])
    uv = np.column_stack([400 * Pc[:, 0] / Pc[:, 2] + 320, 400 * Pc[:, 1] / Pc[:, 2] + 240])
    uv += rng.normal(0, 0.5, uv.shape)
    out = rng.choice(150, 60, replace=False)  # 40 % outliers: RANSAC's sampling matters
    uv[out] += rng.uniform(3, 60, (60, 2)) * rng.choice([-1, 1], (60, 2))
    ur = np.full(150, np.nan)
    poses = []
    for seed in (None, 1, 12345):
        if seed is not None:
            cv2.setRNGSeed(seed)
        est = estimate_pose(Pc, uv, ur, intr, 0.1, T_cw_prior=np.eye(4))
        poses.append((est.T_cw.copy(), est.inliers.copy()))
    for T, inl in poses[1:]:
        assert np.array_equal(T, poses[0][0]) and np.array_equal(inl, poses[0][1])
