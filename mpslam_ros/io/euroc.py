"""EuRoC MAV (ASL folder layout) reader: stereo frames, radial-tangential calibration, ground truth.

Layout: ``<root>/mav0/cam0|cam1/{sensor.yaml,data.csv,data/<stamp>.png}`` and
``mav0/state_groundtruth_estimate0/data.csv`` (or ``mav0/vicon0/data.csv``). ``root`` may be the
sequence folder or ``mav0`` itself. Frames are emitted only for stamps present in both cameras.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np
import yaml

from mpslam_ros.datatypes import CameraIntrinsics, StereoFrame, StereoRig, Trajectory
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.trajectory_io import read_euroc_csv

log = logging.getLogger("mpslam_ros.io.euroc")


def _mav0(root: Path) -> Path:
    root = Path(root)
    if (root / "mav0").is_dir():
        return root / "mav0"
    if (root / "cam0").is_dir():
        return root
    raise DataError(root, "not an EuRoC ASL folder (no mav0/ or cam0/ inside)")


def read_sensor_yaml(path: Path) -> tuple[CameraIntrinsics, np.ndarray]:
    """Camera intrinsics (with radial-tangential distortion) and T_BS (body <- sensor) from sensor.yaml."""
    path = Path(path)
    if not path.is_file():
        raise DataError(path, "missing camera calibration file")
    text = path.read_text()
    if text.startswith("%YAML"):  # OpenCV-style header PyYAML does not accept
        text = text.split("\n", 1)[1]
    try:
        y = yaml.safe_load(text)
        w, h = (int(v) for v in y["resolution"])
        fx, fy, cx, cy = (float(v) for v in y["intrinsics"])
        model = y.get("distortion_model", "radial-tangential")
        if model not in ("radial-tangential", "radtan", "plumb_bob"):
            raise DataError(path, f"unsupported distortion_model {model!r} (radial-tangential only)")
        dist = np.array(y.get("distortion_coefficients", [0, 0, 0, 0]), dtype=np.float64)
        T_BS = np.array(y["T_BS"]["data"], dtype=np.float64).reshape(4, 4)
    except DataError:
        raise
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as exc:
        raise DataError(path, f"malformed camera calibration ({type(exc).__name__}: {exc})") from None
    return CameraIntrinsics(w, h, fx, fy, cx, cy, dist), T_BS


def _read_image_list(path: Path) -> dict:
    """stamp_ns -> file name, from a camera's data.csv (``#timestamp [ns],filename``)."""
    if not path.is_file():
        raise DataError(path, "missing image list")
    out = {}
    with open(path) as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = [p.strip() for p in line.split(",")]
            try:
                out[int(parts[0])] = parts[1]
            except (ValueError, IndexError):
                raise DataError(path, f"expected 'timestamp_ns,filename', got {line[:60]!r}", lineno) from None
    return out


class EurocSource:
    """A FrameSource over an EuRoC ASL folder (stereo, distorted: ``rig.rectified`` is False)."""

    def __init__(self, root: "str | os.PathLike"):
        self.root = Path(root)
        mav0 = _mav0(self.root)
        self.name = f"euroc:{self.root.resolve().name}"
        left, T_B_l = read_sensor_yaml(mav0 / "cam0" / "sensor.yaml")
        right, T_B_r = read_sensor_yaml(mav0 / "cam1" / "sensor.yaml")
        self.rig = StereoRig(left=left, right=right, T_body_left=T_B_l,
                             T_left_right=np.linalg.inv(T_B_l) @ T_B_r, rectified=False)
        self._dirs = (mav0 / "cam0" / "data", mav0 / "cam1" / "data")
        lefts = _read_image_list(mav0 / "cam0" / "data.csv")
        rights = _read_image_list(mav0 / "cam1" / "data.csv")
        self.stamps_ns = np.array(sorted(set(lefts) & set(rights)), dtype=np.int64)
        self._files = [(lefts[s], rights[s]) for s in self.stamps_ns]
        if len(self.stamps_ns) == 0:
            raise DataError(mav0, "no stereo frames (no common stamps in cam0/data.csv and cam1/data.csv)")
        self._gt_path = next((p for p in (mav0 / "state_groundtruth_estimate0" / "data.csv",
                                          mav0 / "vicon0" / "data.csv") if p.is_file()), None)
        self._gt: Optional[Trajectory] = None

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def ground_truth(self) -> Optional[Trajectory]:
        if self._gt is None and self._gt_path is not None:
            # strict: pose_at() interpolates by binary search, which needs increasing stamps
            self._gt = read_euroc_csv(self._gt_path, strict=True)
        return self._gt

    def _gt_at(self, stamp: int) -> Optional[np.ndarray]:
        """Ground truth at ``stamp``: exact when the stamps coincide, else interpolated (linear
        position, slerp rotation) between neighbours at most 0.1 s apart, else None."""
        gt = self.ground_truth()
        if gt is None:
            return None
        k = int(np.searchsorted(gt.stamps_ns, stamp))
        if k < len(gt) and gt.stamps_ns[k] == stamp:
            return gt.poses[k].copy()
        if k == 0 or k == len(gt) or gt.stamps_ns[k] - gt.stamps_ns[k - 1] > 100_000_000:
            return None
        from scipy.spatial.transform import Rotation, Slerp

        t0, t1 = gt.stamps_ns[k - 1], gt.stamps_ns[k]
        a = (stamp - t0) / (t1 - t0)
        T = np.eye(4)
        T[:3, :3] = Slerp([0.0, 1.0], Rotation.from_matrix(gt.poses[k - 1:k + 1, :3, :3]))([a]).as_matrix()[0]
        T[:3, 3] = (1 - a) * gt.poses[k - 1, :3, 3] + a * gt.poses[k, :3, 3]
        return T

    def read_frame(self, i: int) -> StereoFrame:
        """Frame ``i``; raises DataError naming the image when it cannot be read."""
        imgs = []
        for folder, name in zip(self._dirs, self._files[i]):
            path = folder / name
            img = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if img is None:
                raise DataError(path, "missing or unreadable image")
            imgs.append(img)
        stamp = int(self.stamps_ns[i])
        return StereoFrame(stamp_ns=stamp, left=imgs[0], right=imgs[1], gt_T_world_body=self._gt_at(stamp), index=i)

    def __iter__(self) -> Iterator[StereoFrame]:
        for i in range(len(self)):
            try:
                yield self.read_frame(i)
            except DataError as exc:
                log.warning("skipping frame %d: %s", i, exc)


__all__ = ["EurocSource", "read_sensor_yaml"]


def _sensor_yaml(cam: CameraIntrinsics, T_BS: np.ndarray, comment: str, rate_hz: float) -> str:
    d = list(np.asarray(cam.distortion, dtype=np.float64).ravel()[:4]) + [0.0] * max(0, 4 - len(cam.distortion))
    rows = ",\n         ".join(", ".join(f"{v:.12g}" for v in row) for row in T_BS)
    return (f"%YAML:1.0\nsensor_type: camera\ncomment: {comment}\n\nT_BS:\n  cols: 4\n  rows: 4\n"
            f"  data: [{rows}]\n\nrate_hz: {rate_hz:g}\nresolution: [{cam.width}, {cam.height}]\n"
            f"camera_model: pinhole\nintrinsics: [{cam.fx:.12g}, {cam.fy:.12g}, {cam.cx:.12g}, {cam.cy:.12g}]\n"
            f"distortion_model: radial-tangential\ndistortion_coefficients: [{', '.join(f'{v:.12g}' for v in d)}]\n")


def write_euroc(source, root: "str | os.PathLike", progress: bool = False, rate_hz: float = 20.0) -> Path:
    """Write a stereo FrameSource as an EuRoC ASL folder (PNG images, sensor.yaml, ground truth CSV)."""
    from mpslam_ros.io.trajectory_io import write_euroc_csv

    root = Path(root)
    mav0 = root / "mav0"
    rig: StereoRig = source.rig
    if rig.right is None:
        raise ValueError("write_euroc needs a stereo source (rig.right is None)")
    for cam in ("cam0", "cam1"):
        (mav0 / cam / "data").mkdir(parents=True, exist_ok=True)
    (mav0 / "cam0" / "sensor.yaml").write_text(_sensor_yaml(rig.left, rig.T_body_left, "cam0 (left)", rate_hz))
    (mav0 / "cam1" / "sensor.yaml").write_text(
        _sensor_yaml(rig.right, rig.T_body_left @ rig.T_left_right, "cam1 (right)", rate_hz))
    frames = iter(source)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(source), desc=f"writing {root.name}", unit="frame")
    stamps, gt_stamps, gt_poses = [], [], []
    for f in frames:
        name = f"{int(f.stamp_ns)}.png"
        cv2.imwrite(str(mav0 / "cam0" / "data" / name), f.left)
        cv2.imwrite(str(mav0 / "cam1" / "data" / name), f.right)
        stamps.append(int(f.stamp_ns))
        if f.gt_T_world_body is not None:
            gt_stamps.append(int(f.stamp_ns))
            gt_poses.append(f.gt_T_world_body)
    for cam in ("cam0", "cam1"):
        with open(mav0 / cam / "data.csv", "w") as fh:
            fh.write("#timestamp [ns],filename\n")
            fh.writelines(f"{s},{s}.png\n" for s in stamps)
    if gt_stamps:
        (mav0 / "state_groundtruth_estimate0").mkdir(exist_ok=True)
        write_euroc_csv(mav0 / "state_groundtruth_estimate0" / "data.csv", Trajectory(gt_stamps, np.array(gt_poses)))
    return root
