"""ATE/RPE against evo: the stored evo result for KITTI 00 and evo itself on the TUM pair."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from mpslam_ros.datatypes import Trajectory
from mpslam_ros.evaluation.metrics import EvaluationError, associate, ate, rpe, umeyama_alignment
from mpslam_ros.io.trajectory_io import read_trajectory


@pytest.fixture(scope="module")
def traj(data_dir):
    return data_dir / "traj"


def test_kitti_ape_matches_stored_evo_result(traj):
    gt = read_trajectory(traj / "KITTI_00_gt.txt")
    est = read_trajectory(traj / "KITTI_00_ORB.txt")
    res = ate(gt, est, align="se3")
    with zipfile.ZipFile(traj / "KITTI_00_ORB_ape_expected.zip") as z:
        expected = json.loads(z.read("stats.json"))
        info = json.loads(z.read("info.json"))
        with z.open("error_array.npz") as fh:
            errors = np.load(fh)
    assert "SE(3) Umeyama" in info["title"]
    for key, value in expected.items():
        assert getattr(res, key) == pytest.approx(value, abs=1e-9, rel=1e-12), key
    np.testing.assert_allclose(res.errors, errors, atol=1e-9)


def _evo_pair(traj):
    pytest.importorskip("evo", reason="evo not installed: cannot compare against it")
    from evo.core import sync
    from evo.tools import file_interface

    ref = file_interface.read_tum_trajectory_file(str(traj / "freiburg1_xyz-groundtruth.txt"))
    est = file_interface.read_tum_trajectory_file(str(traj / "freiburg1_xyz-rgbdslam.txt"))
    return sync.associate_trajectories(ref, est, max_diff=0.01)


@pytest.mark.parametrize("align", ["se3", "sim3", "none"])
def test_tum_ape_equals_evo(traj, align):
    ref, est = _evo_pair(traj)
    from evo.core import metrics

    if align != "none":
        est.align(ref, correct_scale=(align == "sim3"))
    m = metrics.APE(metrics.PoseRelation.translation_part)
    m.process_data((ref, est))
    expected = m.get_all_statistics()
    res = ate(read_trajectory(traj / "freiburg1_xyz-groundtruth.txt"),
              read_trajectory(traj / "freiburg1_xyz-rgbdslam.txt"), align=align)
    assert res.num_matched == len(ref.timestamps)
    np.testing.assert_allclose(res.ref_matched.stamps_s, ref.timestamps, atol=1e-9)
    for key, value in expected.items():
        assert getattr(res, key) == pytest.approx(value, abs=1e-9), key
    np.testing.assert_allclose(res.errors, m.error, atol=1e-9)


@pytest.mark.parametrize("delta,unit,all_pairs", [(1, "frames", False), (7, "frames", False), (7, "frames", True),
                                                  (0.25, "m", False), (0.25, "m", True)])
def test_tum_rpe_equals_evo(traj, delta, unit, all_pairs):
    ref, est = _evo_pair(traj)
    from evo.core import metrics

    m = metrics.RPE(metrics.PoseRelation.translation_part, delta=delta,
                    delta_unit=metrics.Unit.frames if unit == "frames" else metrics.Unit.meters, all_pairs=all_pairs)
    m.process_data((ref, est))
    res = rpe(read_trajectory(traj / "freiburg1_xyz-groundtruth.txt"),
              read_trajectory(traj / "freiburg1_xyz-rgbdslam.txt"), delta=delta, unit=unit, all_pairs=all_pairs)
    assert len(res.errors) == len(m.error)
    np.testing.assert_allclose(res.errors, m.error, atol=1e-9)
    for key, value in m.get_all_statistics().items():
        assert getattr(res, key) == pytest.approx(value, abs=1e-9), key
    mr = metrics.RPE(metrics.PoseRelation.rotation_angle_deg, delta=delta,
                     delta_unit=metrics.Unit.frames if unit == "frames" else metrics.Unit.meters, all_pairs=all_pairs)
    mr.process_data((ref, est))
    np.testing.assert_allclose(res.rot_errors_deg, mr.error, atol=1e-6)


def test_umeyama_recovers_a_known_sim3():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50))
    a = 0.7
    R = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    y = 2.5 * R @ x + np.array([[1.0], [-2.0], [0.5]])
    r, t, c = umeyama_alignment(x, y, with_scale=True)
    np.testing.assert_allclose(r, R, atol=1e-12)
    np.testing.assert_allclose(t, [1.0, -2.0, 0.5], atol=1e-12)
    assert c == pytest.approx(2.5)


def test_association_tolerance_and_errors():
    T = np.tile(np.eye(4), (5, 1, 1))
    T[:, 0, 3] = np.arange(5)
    gt = Trajectory(np.arange(5) * 100_000_000, T)
    est = Trajectory(np.arange(5) * 100_000_000 + 8_000_000, T)  # 8 ms late
    ref_m, est_m = associate(gt, est, max_dt=0.01)
    assert len(ref_m) == 5
    with pytest.raises(EvaluationError, match="no matching timestamps"):
        associate(gt, est, max_dt=0.005)
    with pytest.raises(EvaluationError, match="empty"):
        ate(gt, Trajectory(np.zeros(0, np.int64), np.zeros((0, 4, 4))))
    bad = T.copy()
    bad[2, 0, 3] = np.nan
    with pytest.raises(EvaluationError, match="NaN/inf in pose 2"):
        ate(gt, Trajectory(gt.stamps_ns, bad))
    line = T.copy()  # collinear positions: SE(3) fine, but 2 poses are too few
    with pytest.raises(EvaluationError, match="at least 3"):
        ate(Trajectory(gt.stamps_ns[:2], line[:2]), Trajectory(gt.stamps_ns[:2], line[:2]))


def test_cli_eval_tables_json_plots_and_bad_files(traj, tmp_path):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "mpslam_ros", "eval", *map(str, args)],
                              capture_output=True, text=True, timeout=120)

    out = run(traj / "KITTI_00_gt.txt", traj / "KITTI_00_ORB.txt", "--json", "--plot", tmp_path / "plots")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)["KITTI_00_ORB"]
    assert data["ate"]["rmse"] == pytest.approx(1.3034497145650266, abs=1e-9)
    assert data["rpe"]["num_matched"] == 4541
    for name in ("trajectories.png", "ate_over_time.png", "rpe_over_time.png", "ate_cdf.png"):
        png = tmp_path / "plots" / name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    table = run(traj / "freiburg1_xyz-groundtruth.txt", traj / "freiburg1_xyz-rgbdslam.txt", "--align", "sim3")
    assert table.returncode == 0 and "sim3 alignment, 785 matched poses" in table.stdout
    (tmp_path / "empty.txt").write_text("# nothing here\n")
    bad = run(traj / "KITTI_00_gt.txt", tmp_path / "empty.txt")
    assert bad.returncode == 2 and "empty.txt" in bad.stdout and "empty trajectory" in bad.stdout
    (tmp_path / "broken.txt").write_text("1.0 0 0 0 0 0 0 1\n2.0 0 0 zero 0 0 0 1\n")
    bad = run(traj / "freiburg1_xyz-groundtruth.txt", tmp_path / "broken.txt")
    assert bad.returncode == 2 and "broken.txt:2" in bad.stdout
