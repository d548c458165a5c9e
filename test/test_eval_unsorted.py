"""``mpslam eval`` equals evo on trajectory files whose stamps repeat or go back (issue 17).

The files are built from the shared TUM fr1_xyz pair: an estimate with one duplicated stamp (a VO
that published twice for one image, second pose perturbed), and a ground truth with swapped and
duplicated lines (not strictly increasing). evo reads both as they are; so must we, with the same
association, hence the same ATE / RPE.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys

import numpy as np
import pytest

from mpslam_ros.evaluation.metrics import ate, rpe
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.trajectory_io import read_trajectory

evo = pytest.importorskip("evo", reason="evo not installed: cannot compare against it")


def _pose_lines(path):
    lines = path.read_text().splitlines()
    return [ln for ln in lines if ln.strip() and not ln.startswith("#")]


@pytest.fixture(scope="module")
def messy_files(data_dir, tmp_path_factory):
    """(gt, est) paths: est with a duplicated stamp, gt with back-going and repeated stamps."""
    out = tmp_path_factory.mktemp("messy")
    est = _pose_lines(data_dir / "traj" / "freiburg1_xyz-rgbdslam.txt")
    k = 100
    f = est[k].split()
    f[1] = f"{float(f[1]) + 0.02:.6f}"  # same stamp, a different pose: which one is used matters
    est.insert(k + 1, " ".join(f))
    (out / "est_dup.txt").write_text("\n".join(est) + "\n")
    gt = _pose_lines(data_dir / "traj" / "freiburg1_xyz-groundtruth.txt")
    gt[500], gt[501] = gt[501], gt[500]  # one step back in time
    gt[1500], gt[1503] = gt[1503], gt[1500]
    gt.insert(2000, gt[2000])  # a repeated stamp with the same pose
    g = gt[2500].split()
    g[2] = f"{float(g[2]) - 0.01:.4f}"
    gt.insert(2501, " ".join(g))  # a repeated stamp with another pose
    (out / "gt_unsorted.txt").write_text("# timestamp tx ty tz qx qy qz qw\n" + "\n".join(gt) + "\n")
    return out / "gt_unsorted.txt", out / "est_dup.txt"


def _evo_stats(gt_path, est_path, kind, align="se3", delta=1, unit="frames", all_pairs=False):
    from evo.core import metrics, sync
    from evo.tools import file_interface

    ref = file_interface.read_tum_trajectory_file(str(gt_path))
    est = file_interface.read_tum_trajectory_file(str(est_path))
    ref, est = sync.associate_trajectories(ref, est, max_diff=0.01)
    if kind == "ape":
        if align != "none":
            est.align(ref, correct_scale=(align == "sim3"))
        m = metrics.APE(metrics.PoseRelation.translation_part)
    else:
        m = metrics.RPE(metrics.PoseRelation.translation_part, delta=delta,
                        delta_unit=metrics.Unit.frames if unit == "frames" else metrics.Unit.meters,
                        all_pairs=all_pairs)
    m.process_data((ref, est))
    return m, len(ref.timestamps)


def test_files_really_are_messy_and_readers_keep_every_line(messy_files, caplog):
    gt_path, est_path = messy_files
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.io.trajectory_io"):
        gt = read_trajectory(gt_path)
        est = read_trajectory(est_path)
    d_gt, d_est = np.diff(gt.stamps_ns), np.diff(est.stamps_ns)
    assert np.count_nonzero(d_gt < 0) == 3 and np.count_nonzero(d_gt == 0) == 2
    assert np.count_nonzero(d_est == 0) == 1 and np.all(d_est >= 0)
    assert len(gt) == 3002 and len(est) == len(_pose_lines(est_path))
    msgs = [r.getMessage() for r in caplog.records]
    assert any("gt_unsorted.txt:503" in m and "2 repeated, 3 going back" in m for m in msgs), msgs
    assert any("est_dup.txt" in m and "1 repeated, 0 going back" in m for m in msgs), msgs
    with pytest.raises(DataError, match=r"gt_unsorted.txt:503: timestamps not strictly increasing"):
        read_trajectory(gt_path, strict=True)


@pytest.mark.parametrize("align", ["se3", "sim3", "none"])
def test_ate_equals_evo_on_unsorted_and_duplicated_stamps(messy_files, align, caplog):
    gt_path, est_path = messy_files
    m, n = _evo_stats(gt_path, est_path, "ape", align=align)
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.evaluation.metrics"):
        res = ate(read_trajectory(gt_path), read_trajectory(est_path), align=align)
    # the ground truth (the longer one) goes back in time: evo's linear matching and its warning
    assert any("Timestamps aren't sorted" in r.getMessage() for r in caplog.records)
    assert res.num_matched == n
    np.testing.assert_allclose(res.errors, m.error, atol=1e-6)
    for key, value in m.get_all_statistics().items():
        assert getattr(res, key) == pytest.approx(value, abs=1e-6), key


@pytest.mark.parametrize("delta,unit,all_pairs", [(1, "frames", False), (5, "frames", True), (0.2, "m", False)])
def test_rpe_equals_evo_on_unsorted_and_duplicated_stamps(messy_files, delta, unit, all_pairs):
    gt_path, est_path = messy_files
    m, _ = _evo_stats(gt_path, est_path, "rpe", delta=delta, unit=unit, all_pairs=all_pairs)
    res = rpe(read_trajectory(gt_path), read_trajectory(est_path), delta=delta, unit=unit, all_pairs=all_pairs)
    assert len(res.errors) == len(m.error)
    np.testing.assert_allclose(res.errors, m.error, atol=1e-6)


def test_estimate_longer_and_unsorted(messy_files, tmp_path):
    """Roles swapped: the estimate is the longer, unsorted trajectory (evo's linear search on it)."""
    gt_path, est_path = messy_files
    gt_lines = _pose_lines(gt_path)
    short_gt = tmp_path / "gt_short.txt"
    short_gt.write_text("\n".join(sorted(gt_lines[::7], key=lambda ln: float(ln.split()[0]))) + "\n")
    # est (~800 poses) is now longer than the ground truth (~430): put two of its lines out of order
    est_lines = _pose_lines(est_path)
    est_lines[300], est_lines[302] = est_lines[302], est_lines[300]
    est_unsorted = tmp_path / "est_unsorted.txt"
    est_unsorted.write_text("\n".join(est_lines) + "\n")
    m, n = _evo_stats(short_gt, est_unsorted, "ape", align="se3")
    res = ate(read_trajectory(short_gt), read_trajectory(est_unsorted), align="se3")
    assert res.num_matched == n
    for key, value in m.get_all_statistics().items():
        assert getattr(res, key) == pytest.approx(value, abs=1e-6), key


def test_cli_eval_equals_evo_on_messy_files(messy_files):
    gt_path, est_path = messy_files
    out = subprocess.run([sys.executable, "-m", "mpslam_ros", "eval", str(gt_path), str(est_path), "--json"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "timestamps not strictly increasing" in out.stderr
    assert "Timestamps aren't sorted, using slower linear matching." in out.stderr
    data = json.loads(out.stdout)["est_dup"]
    m_ape, n = _evo_stats(gt_path, est_path, "ape", align="se3")
    m_rpe, _ = _evo_stats(gt_path, est_path, "rpe")
    assert data["ate"]["num_matched"] == n
    for key, value in m_ape.get_all_statistics().items():
        assert data["ate"][key] == pytest.approx(value, abs=1e-6), key
    for key, value in m_rpe.get_all_statistics().items():
        assert data["rpe"][key] == pytest.approx(value, abs=1e-6), key


def test_reader_variants_evo_accepts(tmp_path, data_dir):
    """A UTF-8 byte-order mark (evo skips it) and EuRoC stamps written as floats (evo parses floats)."""
    from evo.tools import file_interface

    src = _pose_lines(data_dir / "traj" / "freiburg1_xyz-groundtruth.txt")[:50]
    bom = tmp_path / "bom.txt"
    bom.write_bytes(b"\xef\xbb\xbf" + ("\n".join(src) + "\n").encode())
    ours = read_trajectory(bom)
    theirs = file_interface.read_tum_trajectory_file(str(bom))
    np.testing.assert_allclose(ours.stamps_s, theirs.timestamps, atol=1e-9)
    np.testing.assert_allclose(ours.positions, theirs.positions_xyz, atol=1e-12)
    euroc = tmp_path / "float_stamps.csv"
    euroc.write_text("#timestamp,x,y,z,qw,qx,qy,qz\n"
                     "1403715273262142976.0,1,2,3,1,0,0,0\n1.403715273272143e18,1,2,3.5,1,0,0,0\n")
    tr = read_trajectory(euroc)
    ev = file_interface.read_euroc_csv_trajectory(str(euroc))
    np.testing.assert_allclose(tr.stamps_s, ev.timestamps, rtol=1e-15)
    np.testing.assert_allclose(tr.positions, ev.positions_xyz)
