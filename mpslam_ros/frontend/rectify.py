"""Undistortion / stereo rectification from a :class:`~mpslam_ros.datatypes.StereoRig`.

Everything downstream of the front end works on a *rectified pinhole* camera: the left image
undistorted (and, for stereo, rotated so that epipolar lines are image rows), intrinsics
``(fx, fy, cx, cy)`` shared by both rectified images and the baseline along +x. The rectified left
camera is rotated with respect to the physical left camera, so :attr:`Rectifier.T_body_cam` gives
its pose in the body frame (what poses must be chained with to get body poses).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

import cv2
import numpy as np

from mpslam_ros.datatypes import StereoRig


@dataclass
class RectifiedCamera:
    """The pinhole camera the front end and BA see (both images, after rectification)."""

    width: int
    height: int
    fx: float
    fy: float
    cx: float
    cy: float
    #: Stereo baseline in metres along +x of the rectified left camera; 0 for RGB-D.
    baseline: float

    @property
    def K(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @property
    def intrinsics(self) -> Tuple[float, float, float, float]:
        return (self.fx, self.fy, self.cx, self.cy)


class Rectifier:
    """Builds the remap tables once from the calibration and applies them to each frame.

    Stereo with distortion or a rotated right camera: ``cv2.stereoRectify`` (alpha=0, so only valid
    pixels remain). Already-rectified rigs (synthetic data) pass images through untouched. RGB-D:
    the colour image is undistorted; depth (registered to it) is remapped with nearest-neighbour
    so no depth is invented by interpolation across edges.
    """

    def __init__(self, rig: StereoRig) -> None:
        self.rig = rig
        left = rig.left
        size = (int(left.width), int(left.height))
        self._maps_left: Optional[Tuple[np.ndarray, np.ndarray]] = None
        self._maps_right: Optional[Tuple[np.ndarray, np.ndarray]] = None
        R_left_rect = np.eye(3)  # rotation: rectified-left frame -> physical left frame
        if rig.right is None:  # RGB-D
            baseline = 0.0
            if left.is_distorted and not rig.rectified:
                K_new = left.K.copy()
                self._maps_left = cv2.initUndistortRectifyMap(
                    left.K, _dist(left.distortion), None, K_new, size, cv2.CV_16SC2)
                fx, fy, cx, cy = K_new[0, 0], K_new[1, 1], K_new[0, 2], K_new[1, 2]
            else:
                fx, fy, cx, cy = left.fx, left.fy, left.cx, left.cy
        elif rig.rectified:
            baseline = rig.baseline
            fx, fy, cx, cy = left.fx, left.fy, left.cx, left.cy
        else:
            right = rig.right
            T_right_left = np.linalg.inv(rig.T_left_right)
            R1, R2, P1, P2, _Q, _roi1, _roi2 = cv2.stereoRectify(
                left.K, _dist(left.distortion), right.K, _dist(right.distortion), size,
                T_right_left[:3, :3].copy(), T_right_left[:3, 3].reshape(3, 1).copy(), flags=cv2.CALIB_ZERO_DISPARITY, alpha=0)
            self._maps_left = cv2.initUndistortRectifyMap(
                left.K, _dist(left.distortion), R1, P1, size, cv2.CV_16SC2)
            self._maps_right = cv2.initUndistortRectifyMap(
                right.K, _dist(right.distortion), R2, P2, size, cv2.CV_16SC2)
            fx, fy, cx, cy = P1[0, 0], P1[1, 1], P1[0, 2], P1[1, 2]
            baseline = float(-P2[0, 3] / P2[0, 0])
            R_left_rect = R1.T  # R1 maps physical-left points into the rectified frame
        self.camera = RectifiedCamera(size[0], size[1], float(fx), float(fy), float(cx), float(cy),
                                      float(baseline))
        T_left_rect = np.eye(4)
        T_left_rect[:3, :3] = R_left_rect
        #: Pose of the rectified left camera in the body frame.
        self.T_body_cam = np.asarray(rig.T_body_left, dtype=np.float64) @ T_left_rect

    @property
    def passthrough(self) -> bool:
        return self._maps_left is None

    def rectify(self, left: np.ndarray, right: Optional[np.ndarray] = None,
                depth: Optional[np.ndarray] = None):
        """Return ``(left, right, depth)`` in the rectified camera (``None`` stays ``None``)."""
        if self._maps_left is not None:
            left = cv2.remap(left, *self._maps_left, cv2.INTER_LINEAR)
            if depth is not None:
                depth = cv2.remap(depth, *self._maps_left, cv2.INTER_NEAREST)
        if right is not None and self._maps_right is not None:
            right = cv2.remap(right, *self._maps_right, cv2.INTER_LINEAR)
        return left, right, depth


def _dist(d) -> np.ndarray:
    return np.asarray(d, dtype=np.float64).ravel()
