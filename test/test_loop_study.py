"""The precision study machinery on a small problem: fp32 and mixed PGO agree with fp64, outputs exist."""

import argparse

import numpy as np

from mpslam_ros.bench.study_latency import circuit_poses, format_table, latency_rows
from mpslam_ros.bench.study_precision import StudyResult, pgo_study, summary_table, write_outputs


def test_pgo_study_mixed_matches_fp64_and_fixes_drift(tmp_path):
    gt = circuit_poses(300, laps=3)
    samples = pgo_study(gt, ["fp64", "fp32", "mixed"], seed=1, loop_every=5, progress=False)
    by = {p: np.array([s.ate_m for s in samples if s.precision == p]) for p in ("fp64", "fp32", "mixed")}
    assert len(by["mixed"]) >= 10  # one solve per loop event
    assert np.allclose(by["mixed"], by["fp64"], rtol=0.05, atol=1e-4)
    assert np.allclose(by["fp32"], by["fp64"], rtol=0.05, atol=1e-4)
    from mpslam_ros.slam.loop_synth import drifting_pose_graph
    from mpslam_ros.bench.study_precision import _position_rmse

    odom = drifting_pose_graph(gt, seed=1, loop_every=5).dead_reckoning()
    assert by["mixed"][-1] < 0.5 * _position_rmse(gt, odom)
    text = write_outputs(tmp_path, StudyResult(pgo=samples))
    assert "| mixed |" in text and (tmp_path / "pgo_ate_cdf.png").stat().st_size > 1000
    assert (tmp_path / "pgo_time.png").is_file() and (tmp_path / "study.json").is_file()


def test_latency_table_small():
    rows = latency_rows([300], ["mixed"], repeats=1)
    assert rows[0]["keyframes"] == 300 and rows[0]["loops"] > 0
    assert rows[0]["ate_pgo_m"] < rows[0]["ate_odom_m"]
    assert "| 300 |" in format_table(rows)


def test_study_cli_help_lists_options(capsys):
    from mpslam_ros.cli import build_parser

    parser = build_parser()
    try:
        parser.parse_args(["study", "precision", "--help"])
    except SystemExit:
        pass
    out = capsys.readouterr().out
    assert "--output" in out and "--pgo-precisions" in out
