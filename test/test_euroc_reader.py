"""EuRoC reader on the real euroc_micro data: calibration, ground truth, undistortion, bad input."""

from __future__ import annotations

import shutil

import cv2
import numpy as np
import pytest

from mpslam_ros.io.datasets import open_dataset
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.euroc import EurocSource, write_euroc


@pytest.fixture(scope="module")
def euroc(data_dir):
    return open_dataset(str(data_dir / "euroc_micro"))


def test_loads_frames_calibration_and_ground_truth(euroc):
    assert isinstance(euroc, EurocSource) and len(euroc) == 95
    left = euroc.rig.left
    assert (left.width, left.height) == (752, 480)
    assert (left.fx, left.fy, left.cx, left.cy) == (458.654, 457.296, 367.215, 248.375)
    np.testing.assert_array_equal(left.distortion, [-0.28340811, 0.07395907, 0.00019359, 1.76187114e-05])
    assert not euroc.rig.rectified
    assert euroc.rig.T_body_left[0, 3] == pytest.approx(-0.0216401454975)
    assert euroc.rig.baseline == pytest.approx(0.110, abs=0.002)  # EuRoC's ~11 cm stereo baseline
    gt = euroc.ground_truth()
    assert gt.stamps_ns[0] == 1403715273262142976
    np.testing.assert_allclose(gt.poses[0, :3, 3], [0.878895, 2.1834, 0.948427])
    frames = list(euroc)
    assert len(frames) == 95 and frames[0].left.shape == (480, 752) and frames[0].left.dtype == np.uint8
    assert all(f.gt_T_world_body is not None for f in frames)
    assert np.all(np.diff([f.stamp_ns for f in frames]) > 0)


def _vertical_errors(rig, left_img, right_img, use_distortion=True):
    """Rectify the pair with the calibration, match features; |dy| of the matches and their positions."""
    T_rl = np.linalg.inv(rig.T_left_right)  # left -> right, OpenCV's (R, T)
    D1 = rig.left.distortion if use_distortion else np.zeros(4)
    D2 = rig.right.distortion if use_distortion else np.zeros(4)
    size = (rig.left.width, rig.left.height)
    R1, R2, P1, P2, *_ = cv2.stereoRectify(rig.left.K, D1, rig.right.K, D2, size, T_rl[:3, :3].copy(), T_rl[:3, 3].reshape(3, 1).copy(),
                                           alpha=0)
    maps = [cv2.initUndistortRectifyMap(K, D, R, P, size, cv2.CV_32FC1)
            for K, D, R, P in ((rig.left.K, D1, R1, P1), (rig.right.K, D2, R2, P2))]
    rect = [cv2.remap(img, *m, cv2.INTER_LINEAR) for img, m in zip((left_img, right_img), maps)]
    # Sub-pixel correspondences: corners in the left image tracked into the right one (KLT).
    p1 = cv2.goodFeaturesToTrack(rect[0], 800, 0.01, 10)
    p2, st, _ = cv2.calcOpticalFlowPyrLK(rect[0], rect[1], p1, None, winSize=(21, 21), maxLevel=4)
    back, st_b, _ = cv2.calcOpticalFlowPyrLK(rect[1], rect[0], p2, None, winSize=(21, 21), maxLevel=4)
    ok = (st.ravel() == 1) & (st_b.ravel() == 1) & (np.linalg.norm((back - p1).reshape(-1, 2), axis=1) < 0.3)
    p1, p2 = p1.reshape(-1, 2)[ok], p2.reshape(-1, 2)[ok]
    dy = np.abs(p1[:, 1] - p2[:, 1])
    disparity = p1[:, 0] - p2[:, 0]
    keep = (dy < 8) & (disparity > -1) & (disparity < 120)  # drop gross mismatches
    return dy[keep], p1[keep]


def test_undistortion_and_rectification_on_real_images(euroc):
    """With the calibration from sensor.yaml, matched features in the rectified pair lie on the
    same row (sub-pixel); ignoring the distortion leaves row errors of pixels at the borders."""
    f = euroc.read_frame(10)
    dy, pts = _vertical_errors(euroc.rig, f.left, f.right)
    assert len(dy) > 80
    assert np.median(dy) < 0.3 and np.percentile(dy, 90) < 1.0
    dy_raw, pts_raw = _vertical_errors(euroc.rig, f.left, f.right, use_distortion=False)
    centre = np.array([376, 240])
    border = np.linalg.norm(pts_raw - centre, axis=1) > 250
    assert np.median(dy_raw[border]) > 2 * max(np.median(dy), 0.2)


def test_bad_folders_name_the_file_and_line(data_dir, tmp_path):
    src = data_dir / "euroc_micro" / "mav0"
    mav0 = tmp_path / "seq" / "mav0"
    for cam in ("cam0", "cam1"):
        (mav0 / cam / "data").mkdir(parents=True)
        shutil.copy(src / cam / "sensor.yaml", mav0 / cam / "sensor.yaml")
        lines = (src / cam / "data.csv").read_text().splitlines()[:4]
        for line in lines[1:]:
            name = line.split(",")[1]
            (mav0 / cam / "data" / name).symlink_to(src / cam / "data" / name)
        (mav0 / cam / "data.csv").write_text("\n".join(lines) + "\n")
    assert len(EurocSource(tmp_path / "seq")) == 3
    # a missing image: reading the frame names it; iterating logs and skips it
    first = (src / "cam0" / "data.csv").read_text().splitlines()[1].split(",")[1]
    (mav0 / "cam0" / "data" / first).unlink()
    s = EurocSource(tmp_path / "seq")
    with pytest.raises(DataError, match=first):
        s.read_frame(0)
    assert len(list(s)) == 2
    # a malformed list line
    with open(mav0 / "cam1" / "data.csv", "a") as fh:
        fh.write("12x34,foo.png\n")
    with pytest.raises(DataError, match=r"cam1/data.csv:5"):
        EurocSource(tmp_path / "seq")
    # missing calibration
    (mav0 / "cam1" / "sensor.yaml").unlink()
    with pytest.raises(DataError, match=r"cam1/sensor.yaml: missing camera calibration"):
        EurocSource(tmp_path / "seq")
    with pytest.raises(DataError, match="not an EuRoC"):
        EurocSource(tmp_path)


def test_euroc_writer_round_trip(tmp_path):
    from mpslam_ros.sim.sequences import load_or_generate

    seq = load_or_generate("household", 0.5, seed=0, cache_dir=None,
                           progress=False)
    write_euroc(seq, tmp_path / "synth")
    back = open_dataset(str(tmp_path / "synth"))
    assert isinstance(back, EurocSource) and len(back) == len(seq)
    np.testing.assert_allclose(back.rig.left.K, seq.rig.left.K)
    np.testing.assert_allclose(back.rig.T_left_right, seq.rig.T_left_right, atol=1e-12)
    for f in back:
        g = seq[f.index]
        assert f.stamp_ns == g.stamp_ns and np.array_equal(f.left, g.left) and np.array_equal(f.right, g.right)
        np.testing.assert_allclose(f.gt_T_world_body, g.gt_T_world_body, atol=1e-8)
