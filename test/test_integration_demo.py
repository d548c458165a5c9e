"""`mpslam demo` end to end on a short synthetic bag: nodes + player as processes over DDS, a summary
table with the ATE with and without loop closure, summary.json, TUM trajectories and PNG plots."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")


def test_mpslam_demo_runs_the_graph_and_reports_ate(tmp_path, ros_env):
    out = tmp_path / "demo"
    proc = subprocess.run(
        [sys.executable, "-m", "mpslam_ros", "demo", "--duration", "12", "--seed", "3", "--out", str(out),
         "--domain-id", ros_env["ROS_DOMAIN_ID"]],  # default cache: the sequence of test_integration
        env=ros_env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for line in ("frames processed by VO", "dropped (VO busy)", "latency camera -> odometry", "loops closed",
                 "ATE VO, all frames", "ATE with loop closure, keyframes"):
        assert line in proc.stdout, proc.stdout
    summary = json.loads((out / "summary.json").read_text())
    assert summary["bag_frames"] == 240
    assert summary["frames_processed"] + summary["frames_dropped_vo_busy"] >= 235
    # No kernel compiles after the nodes report ready (a compile stall is what dropped frames on a cold
    # start). Whether VO keeps up with 20 Hz depends on the machine: measured by the demo's own table
    # (docs/ros.md), not asserted here; the floor only catches a VO that stopped processing.
    missed = [line for log in sorted((out / "logs").glob("*.log")) for line in log.read_text().splitlines()
              if "missed by the warm-up" in line]  # each late kernel is named once in its node's log
    assert summary["kernels_after_ready"] == {"vo_node": 0, "loop_closure_node": 0}, missed
    assert summary["frames_processed"] >= 0.25 * summary["bag_frames"]
    assert summary["keyframes"] >= 5
    # a few mm on this sequence: a bag rendered by an older renderer gave 27 mm on the 40 s one
    assert 0 < summary["ate_vo_m"] < 0.02
    assert 0 < summary["ate_loop_closure_keyframes_m"] < 0.1
    assert summary["latency_mean_ms"] > 0
    # cold start (issue 13): both nodes warmed up before the player started, nothing compiled after ready
    assert summary["first_frame_latency_ms"] is not None and summary["first_frame_latency_ms"] > 0
    assert summary["vo_warmup_s"] > 0 and summary["loop_closure_warmup_s"] > 0, summary
    assert summary["kernels_after_ready"] == {"vo_node": 0, "loop_closure_node": 0}, summary["kernels_after_ready"]
    assert all(code == 0 for code in summary["exit_codes"].values()), summary["exit_codes"]
    for name in ("trajectory.png", "errors.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from mpslam_ros.sim.sequences import cache_root, load_or_generate

    seq = load_or_generate("household", 12, 3, progress=False)
    assert (cache_root() / f"{seq.cache_key()}.mcap").is_file()  # the bag is keyed by the renderer version
    tum = (out / "vo_odometry.tum").read_text().splitlines()
    assert len([line for line in tum if line and not line.startswith("#")]) == summary["odometry_messages"]
