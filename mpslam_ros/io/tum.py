"""TUM RGB-D folder reader: rgb.txt + depth.txt (+ groundtruth.txt), associated by nearest stamp.

Colour images are converted to mono8; depth PNGs (uint16, 5000 units per metre) to float32 metres.
Intrinsics are TUM's published calibration for freiburg1/2/3 (recognised from the folder name),
otherwise the ROS default 525/525/319.5/239.5 (with a warning).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from mpslam_ros.datatypes import CameraIntrinsics, StereoFrame, StereoRig, Trajectory
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.trajectory_io import read_tum, seconds_text_to_ns

log = logging.getLogger("mpslam_ros.io.tum")

#: TUM RGB-D calibration: fx, fy, cx, cy, (k1, k2, p1, p2, k3) of the colour camera.
TUM_CAMERAS = {
    "freiburg1": (517.3, 516.5, 318.6, 255.3, (0.2624, -0.9531, -0.0054, 0.0026, 1.1633)),
    "freiburg2": (520.9, 521.0, 325.1, 249.7, (0.2312, -0.7849, -0.0033, -0.0001, 0.9172)),
    "freiburg3": (535.4, 539.2, 320.1, 247.6, (0.0, 0.0, 0.0, 0.0, 0.0)),
    "default": (525.0, 525.0, 319.5, 239.5, (0.0, 0.0, 0.0, 0.0, 0.0)),
}
DEPTH_FACTOR = 5000.0


def _read_list(path: Path) -> list:
    """[(stamp_ns, relative file)] from rgb.txt / depth.txt."""
    if not path.is_file():
        raise DataError(path, "missing file list")
    out = []
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.split()
            if len(parts) < 2:
                raise DataError(path, f"expected 'timestamp filename', got {line[:60]!r}", lineno)
            try:
                out.append((seconds_text_to_ns(parts[0]), parts[1]))
            except ValueError:
                raise DataError(path, f"bad timestamp {parts[0]!r}", lineno) from None
    return out


def associate_nearest(a: np.ndarray, b: np.ndarray, max_diff_ns: int) -> list:
    """Greedy one-to-one pairing of sorted stamps a and b by nearest stamp within max_diff_ns."""
    if len(b) == 0:
        return []
    idx = np.clip(np.searchsorted(b, a), 1, len(b) - 1) if len(b) > 1 else np.zeros(len(a), int)
    pairs, used = [], set()
    for i, s in enumerate(a):
        cands = [j for j in {int(idx[i]) - 1, int(idx[i])} if 0 <= j < len(b)]
        j = min(cands, key=lambda j: abs(int(b[j]) - int(s)))
        if abs(int(b[j]) - int(s)) <= max_diff_ns and j not in used:
            used.add(j)
            pairs.append((i, j))
    return pairs


class TumRgbdSource:
    """A FrameSource over a TUM RGB-D sequence folder (RGB-D: ``right`` is None, ``depth`` set)."""

    def __init__(self, root: "str | os.PathLike", max_diff_s: float = 0.02):
        self.root = Path(root)
        self.name = f"tum:{self.root.resolve().name}"
        rgb = _read_list(self.root / "rgb.txt")
        depth = _read_list(self.root / "depth.txt")
        pairs = associate_nearest(np.array([s for s, _ in rgb]), np.array([s for s, _ in depth]),
                                  int(max_diff_s * 1e9))
        if not pairs:
            raise DataError(self.root, "no rgb/depth pairs within the time tolerance")
        self._items = [(rgb[i][0], rgb[i][1], depth[j][1]) for i, j in pairs]
        self.stamps_ns = np.array([it[0] for it in self._items], dtype=np.int64)
        key = next((k for k in TUM_CAMERAS if k in self.root.resolve().name), None)
        if key is None:
            log.warning("%s: camera not recognised (freiburg1/2/3); using default intrinsics", self.root)
            key = "default"
        fx, fy, cx, cy, dist = TUM_CAMERAS[key]
        first = cv2.imread(str(self.root / self._items[0][1]), cv2.IMREAD_GRAYSCALE)
        h, w = first.shape if first is not None else (480, 640)
        T_body_left = np.eye(4)
        T_body_left[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
        self.rig = StereoRig(left=CameraIntrinsics(w, h, fx, fy, cx, cy, np.array(dist)), right=None,
                             T_body_left=T_body_left, rectified=not any(dist))
        gt_path = self.root / "groundtruth.txt"
        self._gt = read_tum(gt_path) if gt_path.is_file() else None

    def __len__(self) -> int:
        return len(self._items)

    def ground_truth(self) -> Optional[Trajectory]:
        """Ground truth of the camera (TUM's mocap frame) as given in groundtruth.txt."""
        return self._gt

    def read_frame(self, i: int) -> StereoFrame:
        stamp, rgb_name, depth_name = self._items[i]
        img = cv2.imread(str(self.root / rgb_name), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DataError(self.root / rgb_name, "missing or unreadable image")
        depth = cv2.imread(str(self.root / depth_name), cv2.IMREAD_UNCHANGED)
        if depth is None or depth.dtype != np.uint16:
            raise DataError(self.root / depth_name, "missing, unreadable or non-16-bit depth image")
        return StereoFrame(stamp_ns=int(stamp), left=img, depth=depth.astype(np.float32) / DEPTH_FACTOR, index=i)

    def __iter__(self) -> Iterator[StereoFrame]:
        for i in range(len(self)):
            try:
                yield self.read_frame(i)
            except DataError as exc:
                log.warning("skipping frame %d: %s", i, exc)
