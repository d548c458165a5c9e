"""Data types shared across the pipeline: calibration, frames, keyframes and per-frame results.

Conventions (used everywhere in the package):
- Poses are 4x4 float64 homogeneous matrices. ``T_a_b`` maps points from frame b into frame a
  (``p_a = T_a_b @ p_b``). ``T_world_body`` is the pose of the body in the world.
- Timestamps are integer nanoseconds (``stamp_ns``), like ROS 2 ``builtin_interfaces/Time``.
- Images are numpy arrays: mono8 ``uint8[h, w]``; depth ``float32[h, w]`` in metres (0 or NaN = none).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterator, Optional, Protocol

import numpy as np


@dataclass
class CameraIntrinsics:
    """Pinhole camera with radial-tangential (plumb-bob) distortion, as in EuRoC and ROS CameraInfo."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    #: (k1, k2, p1, p2[, k3]) radial-tangential coefficients; all zero for an undistorted camera.
    distortion: np.ndarray = field(default_factory=lambda: np.zeros(4))

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def is_distorted(self) -> bool:
        return bool(np.any(np.asarray(self.distortion) != 0.0))


@dataclass
class StereoRig:
    """Calibration of a stereo (or RGB-D, ``right=None``) camera mounted on a body.

    ``T_body_left``: pose of the left camera in the body frame (EuRoC's T_BS, base_link -> camera).
    ``T_left_right``: pose of the right camera in the left camera frame (baseline along +x).
    """

    left: CameraIntrinsics
    right: Optional[CameraIntrinsics]
    T_body_left: np.ndarray = field(default_factory=lambda: np.eye(4))
    T_left_right: np.ndarray = field(default_factory=lambda: np.eye(4))
    #: True when the images are already rectified (synthetic data): no undistortion needed.
    rectified: bool = False
    #: For RGB-D: factor converting stored depth units to metres (1.0 for float metres).
    depth_scale: float = 1.0

    @property
    def baseline(self) -> float:
        return float(np.linalg.norm(self.T_left_right[:3, 3]))


@dataclass
class StereoFrame:
    """One synchronised capture: left + right images (stereo) or left + depth (RGB-D)."""

    stamp_ns: int
    left: np.ndarray
    right: Optional[np.ndarray] = None
    depth: Optional[np.ndarray] = None
    #: Ground-truth T_world_body when the source has it (synthetic data), else None.
    gt_T_world_body: Optional[np.ndarray] = None
    index: int = -1


class FrameSource(Protocol):
    """A dataset: calibration plus a time-ordered stream of frames (EuRoC, TUM, KITTI, bag, synthetic)."""

    name: str
    rig: StereoRig

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[StereoFrame]: ...

    def ground_truth(self) -> Optional["Trajectory"]: ...


@dataclass
class Trajectory:
    """Timestamped poses (T_world_body), the common currency of readers, writers and evaluation."""

    stamps_ns: np.ndarray  # int64[n]
    poses: np.ndarray  # float64[n, 4, 4]

    def __post_init__(self) -> None:
        self.stamps_ns = np.asarray(self.stamps_ns, dtype=np.int64)
        self.poses = np.asarray(self.poses, dtype=np.float64).reshape(-1, 4, 4)
        if len(self.stamps_ns) != len(self.poses):
            raise ValueError(
                f"Trajectory: {len(self.stamps_ns)} stamps but {len(self.poses)} poses"
            )

    def __len__(self) -> int:
        return len(self.stamps_ns)

    @property
    def positions(self) -> np.ndarray:
        return self.poses[:, :3, 3]

    @property
    def stamps_s(self) -> np.ndarray:
        return self.stamps_ns.astype(np.float64) * 1e-9


@dataclass
class Keyframe:
    """What visual odometry hands to loop closure for each keyframe (and what the map stores).

    ``keypoints``: float32[n, 2] pixel coordinates in the (undistorted) left image.
    ``descriptors``: uint8[n, 32] binary (ORB/BRIEF) descriptors, one per keypoint.
    ``landmark_ids``: int64[n], -1 where the keypoint has no 3D landmark.
    ``points_cam``: float64[n, 3] landmark positions in this keyframe's left-camera frame
    (NaN where unknown): metric thanks to stereo/RGB-D, used for PnP verification.
    """

    id: int
    stamp_ns: int
    T_world_body: np.ndarray  # odometry estimate (odom frame)
    keypoints: np.ndarray
    descriptors: np.ndarray
    landmark_ids: np.ndarray
    points_cam: np.ndarray
    #: Camera intrinsics matrix (3x3) of the undistorted left image the keypoints live in.
    K: np.ndarray = field(default_factory=lambda: np.eye(3))
    T_body_left: np.ndarray = field(default_factory=lambda: np.eye(4))
    #: Map (segment) the keyframe belongs to. Odometry poses are consistent only within one map: VO
    #: starts a new map when it loses tracking and cannot relocalise, and loop closure never chains
    #: two maps by odometry (only a verified loop merges them).
    map_id: int = 0
    #: Place-recognition features (oriented multi-scale ORB, :func:`~mpslam_ros.frontend.features.place_features`):
    #: uint8[m, 32] descriptors and float32[m, 4] (u, v, size, angle) keypoints; empty when the
    #: sender has none (loop closure then recognises places by ``descriptors``).
    place_descriptors: np.ndarray = field(default_factory=lambda: np.zeros((0, 32), np.uint8))
    place_keypoints: np.ndarray = field(default_factory=lambda: np.zeros((0, 4), np.float32))


@dataclass
class FrameResult:
    """Per-frame output of visual odometry."""

    stamp_ns: int
    T_world_body: np.ndarray
    #: "ok", "initializing", "lost", "relocalizing" (lost, matching frames against the map),
    #: "relocalized" (tracking resumed in the same map at a verified pose), "reinitialized" (a new
    #: map started at the dead-reckoned pose).
    tracking_state: str
    num_tracked: int
    #: Seconds spent in each stage (e.g. "frontend", "pnp", "ba").
    timings: dict = field(default_factory=dict)
    keyframe: Optional[Keyframe] = None
    #: Local landmarks (world frame) for visualisation, float64[m, 3].
    local_landmarks: Optional[np.ndarray] = None
    #: Diagonal pose-uncertainty proxy (6,), larger is worse; None when unknown.
    covariance_diag: Optional[np.ndarray] = None
