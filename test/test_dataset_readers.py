"""TUM RGB-D and KITTI odometry readers on folders in their real layouts, and open_dataset routing."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from mpslam_ros.io.datasets import detect_kind, open_dataset
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.kitti import KittiSource
from mpslam_ros.io.trajectory_io import write_kitti, write_tum
from mpslam_ros.io.tum import TumRgbdSource
from mpslam_ros.sim.sequences import load_or_generate


@pytest.fixture(scope="module")
def seq():
    return load_or_generate("household", 0.5, seed=0, cache_dir=None,
                            progress=False, with_depth=True)


def _tum_folder(seq, root):
    """A TUM RGB-D folder: colour PNGs, 16-bit depth PNGs (5000 per metre) at slightly different
    stamps, rgb.txt / depth.txt / groundtruth.txt with the TUM headers."""
    (root / "rgb").mkdir(parents=True)
    (root / "depth").mkdir()
    rgb_lines, depth_lines = ["# color images", "# file: 'x.bag'", "# timestamp filename"], ["# depth maps"] * 3
    for f in seq:
        t = f.stamp_ns / 1e9
        colour = cv2.cvtColor(f.left, cv2.COLOR_GRAY2BGR)
        cv2.imwrite(str(root / "rgb" / f"{t:.6f}.png"), colour)
        d = np.round(f.depth * 5000).astype(np.uint16)
        cv2.imwrite(str(root / "depth" / f"{t + 0.004:.6f}.png"), d)
        rgb_lines.append(f"{t:.6f} rgb/{t:.6f}.png")
        depth_lines.append(f"{t + 0.004:.6f} depth/{t + 0.004:.6f}.png")
    (root / "rgb.txt").write_text("\n".join(rgb_lines) + "\n")
    (root / "depth.txt").write_text("\n".join(depth_lines) + "\n")
    write_tum(root / "groundtruth.txt", seq.ground_truth())


def test_tum_rgbd_folder(seq, tmp_path):
    root = tmp_path / "rgbd_dataset_freiburg1_xyz"
    _tum_folder(seq, root)
    assert detect_kind(str(root)) == "tum"
    src = open_dataset(str(root))
    assert isinstance(src, TumRgbdSource) and len(src) == len(seq)
    assert src.rig.right is None and src.rig.left.fx == 517.3 and src.rig.left.is_distorted
    frames = list(src)
    for f in frames:
        g = seq[f.index]
        assert f.stamp_ns == g.stamp_ns // 1000 * 1000  # microsecond stamps in the file names
        assert np.array_equal(f.left, g.left)  # grey -> BGR -> grey is lossless
        assert f.depth.dtype == np.float32
        np.testing.assert_allclose(f.depth, g.depth, atol=1.0 / 5000)
    assert len(src.ground_truth()) == len(seq)
    # a missing depth image: logged and skipped
    next(root.glob("depth/*.png")).unlink()
    assert len(list(TumRgbdSource(root))) == len(seq) - 1


def _kitti_folder(seq, root):
    seq_dir = root / "sequences" / "03"
    for cam in ("image_0", "image_1"):
        (seq_dir / cam).mkdir(parents=True)
    c = seq.rig.left
    P0 = np.array([[c.fx, 0, c.cx, 0], [0, c.fy, c.cy, 0], [0, 0, 1, 0]])
    P1 = P0.copy()
    P1[0, 3] = -c.fx * seq.rig.baseline
    lines = [f"P{k}: " + " ".join(f"{v:.12e}" for v in P.ravel()) for k, P in enumerate((P0, P1, P0, P1))]
    (seq_dir / "calib.txt").write_text("\n".join(lines) + "\n")
    for f in seq:
        cv2.imwrite(str(seq_dir / "image_0" / f"{f.index:06d}.png"), f.left)
        cv2.imwrite(str(seq_dir / "image_1" / f"{f.index:06d}.png"), f.right)
    (seq_dir / "times.txt").write_text("".join(f"{i * 0.05:.6e}\n" for i in range(len(seq))))
    (root / "poses").mkdir()
    write_kitti(root / "poses" / "03.txt", seq.ground_truth())
    return seq_dir


def test_kitti_odometry_folder(seq, tmp_path):
    seq_dir = _kitti_folder(seq, tmp_path)
    src = open_dataset(str(seq_dir))
    assert isinstance(src, KittiSource) and len(src) == len(seq)
    assert src.rig.rectified and src.rig.baseline == pytest.approx(0.1)
    np.testing.assert_allclose(src.rig.left.K, seq.rig.left.K)
    assert np.array_equal(src.stamps_ns, np.arange(len(seq)) * 50_000_000)
    for f in src:
        g = seq[f.index]
        assert np.array_equal(f.left, g.left) and np.array_equal(f.right, g.right)
        np.testing.assert_allclose(f.gt_T_world_body, g.gt_T_world_body, atol=1e-8)
    (seq_dir / "calib.txt").write_text("P0: 1 2 3\n")
    with pytest.raises(DataError, match="calib.txt: no P0"):
        KittiSource(seq_dir)


def test_open_dataset_routes_and_rejects(tmp_path, data_dir):
    assert detect_kind(str(data_dir / "euroc_micro")) == "euroc"
    assert detect_kind("household:12") == "synthetic"
    with pytest.raises(DataError, match="not a synthetic scene"):
        open_dataset("kitchen:10")
    with pytest.raises(DataError, match="unrecognised dataset folder"):
        open_dataset(str(tmp_path))
    f = tmp_path / "x.txt"
    f.write_text("hello")
    with pytest.raises(DataError, match="not a rosbag2"):
        open_dataset(str(f))
    with pytest.raises(DataError, match="bad duration"):
        open_dataset("household:abc")
