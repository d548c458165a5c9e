"""Geometric verification on real images: two EuRoC stereo frames 4.7 s apart seen as a loop.

Keyframes are built here directly from the euroc_micro images (rectification, FAST + ORB, stereo
matching and triangulation with the package's front-end helpers), then verified against each
other; the relative body pose must match the ground truth (body poses + T_BS).
"""


import numpy as np
import pytest

from mpslam_ros.datatypes import Keyframe
from mpslam_ros.geometry.lie import se3_log
from mpslam_ros.slam.verification import VerificationConfig, match_descriptors, verify_loop



def stereo_keyframe(source, rectifier, index: int, kf_id: int) -> Keyframe:
    from mpslam_ros.frontend.features import detect_features, match_stereo, orb_descriptors

    frame = source.read_frame(index)
    left, right, _ = rectifier.rectify(frame.left, frame.right)
    cam = rectifier.camera
    pts = detect_features(left, 800)
    desc, ok = orb_descriptors(left, pts)
    pts, desc = pts[ok], desc[ok]
    ur, matched = match_stereo(left, right, pts)
    disparity = pts[:, 0] - ur
    z = cam.fx * cam.baseline / np.where(matched, disparity, np.nan)
    z[(z > 15.0) | (z < 0.2)] = np.nan
    xyz = np.column_stack([(pts[:, 0] - cam.cx) * z / cam.fx, (pts[:, 1] - cam.cy) * z / cam.fy, z])
    return Keyframe(id=kf_id, stamp_ns=frame.stamp_ns, T_world_body=frame.gt_T_world_body, keypoints=pts,
                    descriptors=desc, landmark_ids=np.where(np.isfinite(z), np.arange(len(z)), -1),
                    points_cam=xyz, K=cam.K, T_body_left=rectifier.T_body_cam)


@pytest.fixture(scope="module")
def euroc_pair(euroc_dir):
    from mpslam_ros.frontend.rectify import Rectifier
    from mpslam_ros.io.euroc import EurocSource

    source = EurocSource(euroc_dir)
    rect = Rectifier(source.rig)
    first, last = 0, len(source) - 1
    return stereo_keyframe(source, rect, first, 0), stereo_keyframe(source, rect, last, 1)


def test_euroc_frames_far_apart_verify_as_loop_with_ground_truth_pose(euroc_pair):
    old, new = euroc_pair
    assert np.isfinite(old.points_cam).all(axis=1).sum() > 100  # real stereo depth
    result = verify_loop(new, old)
    assert result.edge is not None, result.reason
    edge = result.edge
    assert (edge.query_id, edge.match_id) == (1, 0)
    assert edge.inliers >= 100
    T_gt = np.linalg.inv(old.T_world_body) @ new.T_world_body  # ground-truth old_body <- new_body
    err = se3_log(np.linalg.inv(T_gt) @ edge.T_match_query)
    assert np.degrees(np.linalg.norm(err[:3])) < 0.5
    assert np.linalg.norm((np.linalg.inv(T_gt) @ edge.T_match_query)[:3, 3]) < 0.02  # metres
    # the information matrix is symmetric positive definite, (rotation, translation) ordered
    info = edge.information
    assert np.allclose(info, info.T) and np.all(np.linalg.eigvalsh(info) > 0)


def test_different_places_do_not_verify(euroc_pair):
    old, new = euroc_pair
    # the same image content with the 3D points of the other frame shuffled: matches exist but no
    # consistent pose does, so the loop must be rejected
    rng = np.random.default_rng(0)
    shuffled = Keyframe(**{**old.__dict__, "points_cam": old.points_cam[rng.permutation(len(old.points_cam))]})
    result = verify_loop(new, shuffled)
    assert result.edge is None and result.reason


def test_too_few_inliers_is_rejected_with_a_reason(euroc_pair):
    old, new = euroc_pair
    result = verify_loop(new, old, VerificationConfig(min_inliers=100000))
    assert result.edge is None
    assert "landmarks" in result.reason or "matches" in result.reason


def test_match_descriptors_are_one_to_one(euroc_pair):
    old, new = euroc_pair
    pairs = match_descriptors(new.descriptors, old.descriptors, 0.8, 80)
    assert len(pairs) > 50
    assert len(np.unique(pairs[:, 0])) == len(pairs) and len(np.unique(pairs[:, 1])) == len(pairs)
