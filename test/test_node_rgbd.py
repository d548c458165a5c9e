"""vo_node in RGB-D mode (image + 32FC1 depth, no right camera) on a synthetic bag played over DDS:
every frame is processed (none lost before the calibration arrives) and the odometry follows the
ground truth."""

from __future__ import annotations


import numpy as np
import pytest

pytest.importorskip("rclpy")

# KEEP_EVERY_FRAME: these tests check what VO computes, on a machine whose load they do not control;
# keeping up in real time (frames dropped when busy) is the demo's and the benchmarks' table
from mpslam_ros.nodes.graph import KEEP_EVERY_FRAME, READY_TIMEOUT_S, SlamGraph, extrinsic_params  # noqa: E402

DURATION_S = 6.0
ATE_BOUND_M = 0.05


def test_vo_node_rgbd_mode(tmp_path, ros_env, ros_env_in_process):
    from mpslam_ros.evaluation.metrics import ate
    from mpslam_ros.io.bags import write_bag
    from mpslam_ros.nodes.recorder import OutputRecorder
    from mpslam_ros.sim.sequences import load_or_generate

    seq = load_or_generate("household", DURATION_S, 5, with_depth=True, progress=False)
    bag = write_bag(seq, tmp_path / "rgbd.mcap")
    params = {"/**": extrinsic_params(seq.rig.T_body_left), "vo_node": {"mode": "rgbd", **KEEP_EVERY_FRAME}}
    with OutputRecorder(domain_id=int(ros_env["ROS_DOMAIN_ID"])) as rec:
        with SlamGraph(tmp_path / "logs", ros_env, params=params) as graph:
            graph.start_node("vo_node")
            assert rec.wait_for_publishers(["vo/odometry", "/diagnostics"], timeout=300), graph.log("vo_node")
            player = graph.start_player(bag, wait_for=["/camera/left/image_raw", "/camera/depth/image_raw",
                                                       "/camera/left/camera_info"])
            player.wait(timeout=READY_TIMEOUT_S + 400)  # the player waits for the warm-up first
            assert player.returncode == 0, graph.log("bag_player")
            missing = lambda: sorted(set(range(len(seq))) - set(  # noqa: E731  (frame indices without odometry)
                np.searchsorted(seq.ground_truth().stamps_ns, rec.odometry_trajectory().stamps_ns).tolist()))
            assert rec.wait_for_frames_done(len(seq), timeout=120), \
                f"{rec.diagnostics('vo_node: visual odometry')} missing {missing()}\n{graph.log('vo_node')[-2000:]}"
            assert graph.stop("vo_node") == 0
        log = graph.log("vo_node")
        diag = rec.data.diagnostics["vo_node: visual odometry"]
        odo = rec.odometry_trajectory()
    assert "mode=rgbd" in log and "baseline=0.000 m" in log and "Traceback" not in log, log[-3000:]
    # every frame (the first too: held until its CameraInfo) was processed or, VO busy, dropped and counted
    assert int(diag["frames_processed"]) + int(diag["frames_dropped"]) == len(seq), diag
    assert diag["bad_messages"] == "0" and diag["frames_missed"] == "0", diag
    # the RGB-D warm-up covered the depth path: nothing compiled or loaded after ready (issue 13)
    assert diag["ready"] == "True" and float(diag["warmup_s"]) > 0, diag
    assert diag["kernels_compiled_after_ready"] == "0" and diag["kernel_signatures_loaded_after_ready"] == "0", diag
    assert len(odo) == int(diag["odometry_published"]) >= 0.8 * len(seq), (diag, len(odo))
    assert ate(seq.ground_truth(), odo).rmse < ATE_BOUND_M
    assert rec.count("vo/keyframes/features") >= 2
