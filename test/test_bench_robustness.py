"""bench robustness: loops judged against ground truth, one real row, the table."""

from __future__ import annotations

import numpy as np

from mpslam_ros.bench.robustness import format_table, meets_targets, run_one
from mpslam_ros.datatypes import Trajectory
from mpslam_ros.evaluation.loops import loop_errors
from mpslam_ros.sim.trajectories import _poses


def test_loop_errors_tell_true_from_look_alike_loops():
    t = np.arange(5) * 50_000_000
    P = _poses(np.column_stack([np.arange(5.0) * 4.0, np.zeros(5), np.zeros(5)]), np.zeros(5), np.zeros(5), np.zeros(5))
    gt = Trajectory(t, P)
    stamps = {10: int(t[0]), 11: int(t[1]), 12: int(t[2])}
    right = np.linalg.inv(P[0]) @ P[2]  # keyframe 12 seen from keyframe 10: 8 m ahead
    wrong = np.linalg.inv(P[0]) @ P[1]  # a look-alike panel 4 m off: geometrically fine, wrong place
    res = loop_errors([(12, 10, right), (12, 10, wrong), (12, 99, right)], stamps, gt)
    assert res[0]["true"] and res[0]["trans_err_m"] < 1e-9
    assert not res[1]["true"] and abs(res[1]["trans_err_m"] - 4.0) < 1e-9
    assert not res[2]["true"] and np.isnan(res[2]["trans_err_m"])  # unknown keyframe: never counted true


def test_one_row_of_the_robustness_table():
    row = run_one("household:1.5", "realistic", 3, "rgbd", "mixed", loop_closure=False)
    # the whole row in the message: this failed once in a fresh-clone suite run and passed in every
    # rerun (cold and warm caches, loaded machine), so a failure must say which number was off
    shown = {k: v for k, v in row.items() if k != "loop_errors"}
    assert row["frames"] == 30 and row["tracked_percent"] == 100.0, shown
    assert 0 < row["vo_ate_m"] < 0.02 and row["loops"] == 0 and row["false_loops"] == 0, shown
    text = format_table([row])
    assert "household:1.5" in text and "realistic" in text and "rgbd" in text
    assert "drift>1%" in meets_targets(row)  # 0.6 m of path: no 1 m segment, drift unmeasured (NaN) = not met
