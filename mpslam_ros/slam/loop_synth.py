"""Synthetic inputs for loop closure: keyframes with ORB-like descriptors, and drifting pose graphs.

- :func:`make_keyframe_sequence`: a robot drives ``laps`` times around a ring of textured walls;
  every world point has its own random 256-bit descriptor, observed with bit flips, pixel noise and
  stereo depth noise. The odometry drifts (random walk plus a yaw bias), so without loop closure the
  second lap is off by decimetres. Perceptual aliasing can be switched on: a second, differently
  shaped ring whose points reuse the descriptors of the first (a place that looks the same but
  is not), to test that no false loop gets through.
- :func:`drifting_pose_graph`: odometry + loop measurements along any ground-truth trajectory (the
  precision study's input), with the loops at true revisits.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from mpslam_ros.datatypes import Keyframe
from mpslam_ros.geometry import lie
from mpslam_ros.geometry.lie import se3_exp

#: Optical camera frame (z forward, x right, y down) in the body frame (x forward, y left, z up).
T_BODY_CAM = np.array([[0.0, 0.0, 1.0, 0.0], [-1.0, 0.0, 0.0, 0.0], [0.0, -1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
K_SYNTH = np.array([[450.0, 0.0, 376.0], [0.0, 450.0, 240.0], [0.0, 0.0, 1.0]])
IMAGE_SIZE = (752, 480)


@dataclass
class KeyframeSequence:
    keyframes: List[Keyframe]  # odometry (drifting) poses in T_world_body
    gt_poses: np.ndarray  # float64[n,4,4] true T_world_body
    lap_length: int  # keyframes per lap: keyframe k and k + lap_length see the same place


def _ring_world(rng: np.random.Generator, radius: float, n: int, height: float = 2.0) -> np.ndarray:
    ang = rng.uniform(0, 2 * np.pi, n)
    r = radius + rng.uniform(-0.3, 0.3, n)
    return np.column_stack([r * np.cos(ang), r * np.sin(ang), rng.uniform(-height / 2, height / 2, n)])


def _noisy_descriptors(rng: np.random.Generator, desc: np.ndarray, flip_prob: float) -> np.ndarray:
    bits = np.unpackbits(desc, axis=1)
    flips = rng.random(bits.shape) < flip_prob
    return np.packbits(bits ^ flips, axis=1)


def make_keyframe_sequence(seed: int = 0, laps: int = 2, keyframes_per_lap: int = 80,
                           ring_radius: float = 6.0, path_radius: float = 3.0, num_points: int = 6000,
                           pixel_sigma: float = 0.5, disparity_sigma: float = 0.3, baseline: float = 0.11,
                           flip_prob: float = 0.04, odom_sigma_m: float = 0.004, odom_sigma_rad: float = 0.002,
                           yaw_bias_rad: float = 0.002, aliased_ring: bool = False,
                           max_features: int = 500) -> KeyframeSequence:
    """Keyframes of a robot circling ``laps`` times (camera looking outward at a ring of points).

    With ``aliased_ring`` the robot first circles a *different* ring (radius x1.6, shifted 40 m)
    whose points reuse the main ring's descriptors, then the main ring: the appearance repeats but
    the geometry does not, so every appearance match between the two is a false loop.
    """
    rng = np.random.default_rng(seed)
    world = _ring_world(rng, ring_radius, num_points)
    desc = rng.integers(0, 256, (num_points, 32), dtype=np.uint8)
    worlds = [(world, desc, np.zeros(3), path_radius)]
    if aliased_ring:
        # same descriptors, warped geometry: the look-alike scene 40 m away
        alias = world * np.array([1.6, 1.6, 1.0]) + np.array([40.0, 0.0, 0.0])
        worlds.insert(0, (alias, desc, np.array([40.0, 0.0, 0.0]), path_radius * 1.6))
    gt, visits = [], []
    for wi, (pts, d, centre, pr) in enumerate(worlds):
        n_laps = 1 if (aliased_ring and wi == 0) else laps
        for k in range(n_laps * keyframes_per_lap):
            a = 2 * np.pi * k / keyframes_per_lap
            T = np.eye(4)
            yaw = a + 0.35  # looking outward-ish, slightly ahead
            T[:3, :3] = np.array([[np.cos(yaw), -np.sin(yaw), 0], [np.sin(yaw), np.cos(yaw), 0], [0, 0, 1]])
            T[:3, 3] = centre + np.array([pr * np.cos(a), pr * np.sin(a), 0.0])
            gt.append(T)
            visits.append(wi)
    gt = np.array(gt)
    # drifting odometry: relative motions with noise and a yaw bias
    odom = [gt[0].copy()]
    for k in range(1, len(gt)):
        rel = np.linalg.inv(gt[k - 1]) @ gt[k]
        xi = np.concatenate([rng.normal(0, odom_sigma_rad, 3) + np.array([0, 0, yaw_bias_rad]),
                             rng.normal(0, odom_sigma_m, 3)])
        odom.append(odom[-1] @ rel @ se3_exp(xi))
    fx, cx, cy = K_SYNTH[0, 0], K_SYNTH[0, 2], K_SYNTH[1, 2]
    w, h = IMAGE_SIZE
    keyframes = []
    for k, T in enumerate(gt):
        pts, d, _, _ = worlds[visits[k]]
        T_cam_world = np.linalg.inv(T @ T_BODY_CAM)
        P = pts @ T_cam_world[:3, :3].T + T_cam_world[:3, 3]
        z = P[:, 2]
        front = z > 0.3
        u = fx * P[:, 0] / np.where(front, z, 1) + cx
        v = fx * P[:, 1] / np.where(front, z, 1) + cy
        vis = np.where(front & (u > 5) & (u < w - 5) & (v > 5) & (v < h - 5) & (z < 20))[0]
        vis = rng.permutation(vis)[:max_features]
        uv = np.column_stack([u[vis], v[vis]]) + rng.normal(0, pixel_sigma, (len(vis), 2))
        disparity = fx * baseline / z[vis] + rng.normal(0, disparity_sigma, len(vis))
        zn = fx * baseline / np.maximum(disparity, 1e-3)
        pc = np.column_stack([(uv[:, 0] - cx) * zn / fx, (uv[:, 1] - cy) * zn / fx, zn])
        pc[disparity < 1.0] = np.nan  # too far for stereo
        keyframes.append(Keyframe(
            id=k, stamp_ns=int(1e9 * k), T_world_body=odom[k], keypoints=uv.astype(np.float32),
            descriptors=_noisy_descriptors(rng, d[vis], flip_prob),
            landmark_ids=(vis + 100000 * visits[k]).astype(np.int64), points_cam=pc, K=K_SYNTH.copy(),
            T_body_left=T_BODY_CAM.copy()))
    return KeyframeSequence(keyframes, gt, keyframes_per_lap)


def random_descriptors(seed: int, n: int) -> np.ndarray:
    """Training descriptors drawn like the synthetic world's (for a vocabulary in tests)."""
    return np.random.default_rng(seed).integers(0, 256, (n, 32), dtype=np.uint8)


@dataclass
class DriftingPoseGraph:
    """Measurements along a trajectory: odometry between consecutive poses and loops at revisits."""

    gt_poses: np.ndarray  # [n,4,4]
    odometry: np.ndarray  # [n-1,4,4] T_{k-1}^-1 T_k measured
    odom_information: np.ndarray  # 6x6 (rotation, translation)
    loops: List[Tuple[int, int, np.ndarray]]  # (i older, j newer, T_i^-1 T_j measured)
    loop_information: np.ndarray

    def dead_reckoning(self, upto: Optional[int] = None) -> np.ndarray:
        n = len(self.gt_poses) if upto is None else upto
        out = [self.gt_poses[0].copy()]
        for k in range(1, n):
            out.append(out[-1] @ self.odometry[k - 1])
        return np.array(out)


def drifting_pose_graph(gt_poses: np.ndarray, seed: int = 0, odom_sigma_m: float = 0.01,
                        odom_sigma_rad: float = 0.002, yaw_bias_rad: float = 0.0005,
                        loop_sigma_m: float = 0.01, loop_sigma_rad: float = 0.002, loop_radius_m: float = 0.5,
                        loop_max_angle_rad: float = 0.5, min_gap: int = 30, loop_every: int = 1) -> DriftingPoseGraph:
    """Noisy odometry along ``gt_poses`` and a loop for each pose within ``loop_radius_m`` (and a
    similar heading) of a pose at least ``min_gap`` earlier (the closest such pose; one per
    ``loop_every`` poses)."""
    rng = np.random.default_rng(seed)
    n = len(gt_poses)
    odo = []
    for k in range(1, n):
        rel = np.linalg.inv(gt_poses[k - 1]) @ gt_poses[k]
        xi = np.concatenate([rng.normal(0, odom_sigma_rad, 3) + np.array([0, 0, yaw_bias_rad]),
                             rng.normal(0, odom_sigma_m, 3)])
        odo.append(rel @ se3_exp(xi))
    pos = gt_poses[:, :3, 3]
    fwd = gt_poses[:, :3, 0]
    loops = []
    last = -loop_every
    for j in range(min_gap, n):
        if j - last < loop_every:
            continue
        d = np.linalg.norm(pos[: j - min_gap + 1] - pos[j], axis=1)
        cosang = fwd[: j - min_gap + 1] @ fwd[j]
        ok = (d < loop_radius_m) & (cosang > np.cos(loop_max_angle_rad))
        if ok.any():
            i = int(np.argmin(np.where(ok, d, np.inf)))
            rel = np.linalg.inv(gt_poses[i]) @ gt_poses[j]
            xi = np.concatenate([rng.normal(0, loop_sigma_rad, 3), rng.normal(0, loop_sigma_m, 3)])
            loops.append((i, j, rel @ se3_exp(xi)))
            last = j
    info = lambda sr, st: np.diag([sr ** -2] * 3 + [st ** -2] * 3)
    return DriftingPoseGraph(gt_poses, np.array(odo), info(odom_sigma_rad, odom_sigma_m), loops,
                             info(loop_sigma_rad, loop_sigma_m))


@dataclass
class DetectionStats:
    """Loop detection quality against ground truth (see :func:`loop_detection_stats`)."""

    accepted: int
    true_positives: int
    false_positives: int
    revisits: int  # keyframes with a true earlier revisit
    detected_revisits: int  # of those, keyframes with an accepted loop

    @property
    def precision(self) -> float:
        return self.true_positives / self.accepted if self.accepted else 1.0

    @property
    def recall(self) -> float:
        return self.detected_revisits / self.revisits if self.revisits else 1.0


def loop_detection_stats(loops, gt_poses: np.ndarray, min_gap: int, max_distance_m: float = 1.0,
                         max_angle_rad: float = 0.5, max_error_m: float = 0.25,
                         max_error_rad: float = 0.05) -> DetectionStats:
    """Precision of accepted loops and recall over true revisits.

    A loop is true when its relative pose agrees with the ground truth within ``max_error_m`` /
    ``max_error_rad`` (a loop claiming the right place but the wrong pose is false). Keyframe j is a
    revisit when a keyframe at least ``min_gap`` earlier is within ``max_distance_m`` and
    ``max_angle_rad`` of it (a loop the scene allows).
    """
    pos = gt_poses[:, :3, 3]
    fwd = gt_poses[:, :3, 0]

    def near(i, j):
        return (np.linalg.norm(pos[i] - pos[j]) < max_distance_m) and (fwd[i] @ fwd[j] > np.cos(max_angle_rad))

    def correct(e):
        T_gt = np.linalg.inv(gt_poses[e.match_id]) @ gt_poses[e.query_id]
        err = np.linalg.inv(T_gt) @ e.T_match_query
        angle = lie.rotation_angle(err[:3, :3])
        return np.linalg.norm(err[:3, 3]) < max_error_m and angle < max_error_rad

    tp = sum(bool(correct(e)) for e in loops)
    with_loop = {e.query_id for e in loops if correct(e)}
    revisits = 0
    for j in range(min_gap, len(gt_poses)):
        d = np.linalg.norm(pos[: j - min_gap + 1] - pos[j], axis=1)
        c = fwd[: j - min_gap + 1] @ fwd[j]
        if np.any((d < max_distance_m) & (c > np.cos(max_angle_rad))):
            revisits += 1
    detected = len([j for j in with_loop if j >= min_gap])
    return DetectionStats(len(loops), int(tp), len(loops) - int(tp), revisits, detected)
