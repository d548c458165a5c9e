"""Trajectory files: TUM / KITTI / EuRoC CSV reading, writing, format detection, bad lines."""

from __future__ import annotations

import numpy as np
import pytest

from mpslam_ros.datatypes import Trajectory
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.trajectory_io import (detect_format, matrix_to_quat, quat_to_matrix, read_trajectory,
                                         seconds_text_to_ns, write_euroc_csv, write_kitti, write_tum)
from mpslam_ros.sim.trajectories import rotation_zyx


def _random_traj(n=30, seed=0):
    rng = np.random.default_rng(seed)
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = rotation_zyx(rng.uniform(-3, 3, n), rng.uniform(-1.5, 1.5, n), rng.uniform(-3, 3, n))
    T[:, :3, 3] = rng.normal(scale=5, size=(n, 3))
    return Trajectory(1_700_000_000_000_000_000 + np.arange(n) * 33_333_333, T)


def test_exact_timestamp_parsing():
    assert seconds_text_to_ns("1305031102.160407") == 1305031102160407000
    assert seconds_text_to_ns("1305031102.1604071239") == 1305031102160407123
    assert seconds_text_to_ns("17") == 17_000_000_000
    assert seconds_text_to_ns("1.5e3") == 1_500_000_000_000


def test_quaternion_round_trip_including_near_pi_rotations():
    R = rotation_zyx(np.array([0.0, 3.14159, -3.1, 1.0]), np.array([0.0, 0.0, 1.5, -0.3]),
                     np.array([0.0, 0.0, 3.14, 2.0]))
    np.testing.assert_allclose(quat_to_matrix(matrix_to_quat(R)), R, atol=1e-12)


@pytest.mark.parametrize("writer,fmt", [(write_tum, "tum"), (write_kitti, "kitti"), (write_euroc_csv, "euroc")])
def test_write_read_round_trip(tmp_path, writer, fmt):
    traj = _random_traj()
    path = tmp_path / f"t.{'csv' if fmt == 'euroc' else 'txt'}"
    writer(path, traj)
    assert detect_format(path) == fmt
    back = read_trajectory(path)
    if fmt == "kitti":  # no stamps in KITTI files: pose i gets i seconds
        assert np.array_equal(back.stamps_ns, np.arange(len(traj)) * 1_000_000_000)
    else:
        assert np.array_equal(back.stamps_ns, traj.stamps_ns)
    np.testing.assert_allclose(back.poses, traj.poses, atol=1e-7)


def test_shared_files_load(data_dir):
    gt = read_trajectory(data_dir / "traj" / "freiburg1_xyz-groundtruth.txt")
    assert len(gt) == 3000 and gt.stamps_ns[0] == 1305031098665900000  # first pose line of the file
    assert len(read_trajectory(data_dir / "traj" / "KITTI_00_gt.txt")) == 4541
    euroc = read_trajectory(data_dir / "euroc_micro" / "mav0" / "state_groundtruth_estimate0" / "data.csv")
    assert euroc.stamps_ns[0] == 1403715273262142976
    # EuRoC quaternion order is w, x, y, z
    q = matrix_to_quat(euroc.poses[0, :3, :3])[0]
    np.testing.assert_allclose(np.abs(q), np.abs([-0.824237, -0.106942, -0.551702, 0.069433]), atol=1e-5)


@pytest.mark.parametrize("content,message", [
    ("", "empty trajectory"),
    ("# only a comment\n", "empty trajectory"),
    ("1.0 0 0 0 0 0 0 1\n2.0 0 0 0 0 0 1\n", ":2: expected 8 numbers, got 7"),
    ("1.0 0 0 0 0 0 0 1\n2.0 0 nan 0 0 0 0 1\n", ":2: NaN or infinite"),
    ("1 2 3 4 5\n", ":1: unknown trajectory format: 5 columns"),
])
def test_bad_files_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.txt"
    path.write_text(content)
    with pytest.raises(DataError, match=message) as err:
        read_trajectory(path)
    assert "bad.txt" in str(err.value)


def test_repeated_stamps_kept_like_evo_or_refused_when_strict(tmp_path):
    path = tmp_path / "dup.txt"
    path.write_text("1.0 0 0 0 0 0 0 1\n# c\n1.0 1 0 0 0 0 0 1\n0.5 2 0 0 0 0 0 1\n")
    traj = read_trajectory(path)
    assert list(traj.stamps_ns) == [1_000_000_000, 1_000_000_000, 500_000_000]
    assert list(traj.positions[:, 0]) == [0.0, 1.0, 2.0]  # file order, nothing dropped
    with pytest.raises(DataError, match=r"dup.txt:3: timestamps not strictly increasing: the stamp of pose 1 repeats"):
        read_trajectory(path, strict=True)


def test_missing_file():
    with pytest.raises(DataError, match="no such file"):
        read_trajectory("/nonexistent/traj.txt")
