"""KITTI odometry sequence reader: ``sequences/NN/{image_0,image_1,calib.txt,times.txt}``.

Images are rectified (``rig.rectified``); the baseline comes from P1 (``-P1[0,3] / fx``). KITTI's
poses are of the left camera, so base_link is taken to be the left camera here
(``T_body_left`` = identity). Ground truth is read from ``poses/NN.txt`` next to ``sequences/``
when present, else from ``poses.txt`` inside the sequence folder.
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
from mpslam_ros.io.trajectory_io import read_kitti, seconds_text_to_ns

log = logging.getLogger("mpslam_ros.io.kitti")


def read_calib(path: Path) -> dict:
    """{'P0': 3x4, 'P1': 3x4, ...} from calib.txt."""
    if not path.is_file():
        raise DataError(path, "missing calibration file")
    out = {}
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            if ":" not in line:
                continue
            key, vals = line.split(":", 1)
            try:
                arr = np.array([float(v) for v in vals.split()])
            except ValueError:
                raise DataError(path, f"not a number in {key}", lineno) from None
            if arr.size == 12:
                out[key.strip()] = arr.reshape(3, 4)
    for k in ("P0", "P1"):
        if k not in out:
            raise DataError(path, f"no {k} projection matrix")
    return out


class KittiSource:
    """A FrameSource over one KITTI odometry sequence folder (grey stereo: image_0 / image_1)."""

    def __init__(self, root: "str | os.PathLike"):
        self.root = Path(root)
        self.name = f"kitti:{self.root.resolve().name}"
        calib = read_calib(self.root / "calib.txt")
        P0, P1 = calib["P0"], calib["P1"]
        self._left_dir, self._right_dir = self.root / "image_0", self.root / "image_1"
        files = sorted(p.name for p in self._left_dir.glob("*.png")) if self._left_dir.is_dir() else []
        if not files:
            raise DataError(self._left_dir, "no images")
        self._files = files
        times = self.root / "times.txt"
        if times.is_file():
            with open(times) as fh:
                stamps = [seconds_text_to_ns(t) for t in fh.read().split()]
            if len(stamps) < len(files):
                raise DataError(times, f"{len(stamps)} times for {len(files)} images")
            self.stamps_ns = np.array(stamps[: len(files)], dtype=np.int64)
        else:
            self.stamps_ns = np.arange(len(files), dtype=np.int64) * 100_000_000  # 10 Hz
        first = cv2.imread(str(self._left_dir / files[0]), cv2.IMREAD_GRAYSCALE)
        if first is None:
            raise DataError(self._left_dir / files[0], "unreadable image")
        h, w = first.shape
        left = CameraIntrinsics(w, h, P0[0, 0], P0[1, 1], P0[0, 2], P0[1, 2])
        right = CameraIntrinsics(w, h, P1[0, 0], P1[1, 1], P1[0, 2], P1[1, 2])
        T_left_right = np.eye(4)
        T_left_right[0, 3] = -(P1[0, 3] - P0[0, 3]) / P1[0, 0]
        self.rig = StereoRig(left=left, right=right, T_left_right=T_left_right, rectified=True)
        seq = self.root.resolve().name
        gt_path = next((p for p in (self.root.parent.parent / "poses" / f"{seq}.txt", self.root / "poses.txt")
                        if p.is_file()), None)
        self._gt: Optional[Trajectory] = None
        if gt_path is not None:
            gt = read_kitti(gt_path)
            n = min(len(gt), len(self.stamps_ns))
            self._gt = Trajectory(self.stamps_ns[:n], gt.poses[:n])

    def __len__(self) -> int:
        return len(self._files)

    def ground_truth(self) -> Optional[Trajectory]:
        return self._gt

    def read_frame(self, i: int) -> StereoFrame:
        imgs = []
        for folder in (self._left_dir, self._right_dir):
            img = cv2.imread(str(folder / self._files[i]), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DataError(folder / self._files[i], "missing or unreadable image")
            imgs.append(img)
        gt = self._gt.poses[i].copy() if self._gt is not None and i < len(self._gt) else None
        return StereoFrame(stamp_ns=int(self.stamps_ns[i]), left=imgs[0], right=imgs[1], gt_T_world_body=gt, index=i)

    def __iter__(self) -> Iterator[StereoFrame]:
        for i in range(len(self)):
            try:
                yield self.read_frame(i)
            except DataError as exc:
                log.warning("skipping frame %d: %s", i, exc)
