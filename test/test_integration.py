"""The node graph as real processes over DDS (entry modules, params files, one ROS_DOMAIN_ID per
test), fed by bag_player from a synthetic bag; a subscriber in the test checks every output.

- full graph: every output topic arrives with sane content, ATE of the odometry within bounds,
  and malformed messages injected meanwhile are logged with their reason and skipped;
- killing loop_closure_node mid-run leaves odometry flowing.
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")

from mpslam_ros.datatypes import Keyframe  # noqa: E402
# KEEP_EVERY_FRAME: these tests check what VO computes, on a machine whose load they do not control;
# keeping up in real time (frames dropped when busy) is the demo's and the benchmarks' table
from mpslam_ros.nodes.graph import KEEP_EVERY_FRAME, READY_TIMEOUT_S, SlamGraph, extrinsic_params  # noqa: E402

DURATION_S = 12.0
SCENE = "household"
#: ATE (m, SE(3)-aligned RMSE) the VO odometry must reach on the short synthetic bag.
ATE_BOUND_M = 0.10
#: topics whose messages the tests count: the recorder must be matched with their publishers first
OUTPUTS_COUNTED = ["vo/odometry", "vo/keyframes/features", "loop_closure/path", "/diagnostics"]


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    sequences = pytest.importorskip("mpslam_ros.sim.sequences")
    from mpslam_ros.io.bags import write_bag

    seq = sequences.load_or_generate(SCENE, DURATION_S, 3)
    bag = tmp_path_factory.mktemp("bag") / f"{SCENE}.mcap"
    write_bag(seq, bag, storage="mcap")
    return seq, bag


@pytest.fixture
def recorder(ros_env_in_process):
    from mpslam_ros.nodes.recorder import OutputRecorder

    rec = OutputRecorder(domain_id=int(ros_env_in_process["ROS_DOMAIN_ID"]))
    yield rec
    rec.close()


def _graph(tmp_path, ros_env, seq) -> SlamGraph:
    return SlamGraph(tmp_path / "logs", ros_env, params={"/**": extrinsic_params(seq.rig.T_body_left),
                                                              "vo_node": KEEP_EVERY_FRAME})


def _wait_player(graph: SlamGraph, timeout: float) -> None:
    proc = graph.procs["bag_player"]
    proc.wait(timeout=timeout)
    assert proc.returncode == 0, graph.log("bag_player")


class Injector:
    """Publishes malformed messages onto the nodes' input topics from this process."""

    def __init__(self, recorder) -> None:
        from nav_msgs.msg import Odometry
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        node = recorder.node
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.left = node.create_publisher(Image, "/camera/left/image_raw", qos)
        self.kf_features = node.create_publisher(PointCloud2, "/vo/keyframes/features", qos)
        self.kf_pose = node.create_publisher(Odometry, "/vo/keyframes/pose", qos)

    def send_bad_inputs(self, rig, stamp_ns: int) -> None:
        from mpslam_ros.nodes import msgs

        h, w = rig.left.height, rig.left.width
        # stamps ahead of the stream, so "time went backwards" is only what the last one tests
        stamp_ns += 10**12
        good = np.zeros((h, w), np.uint8)
        wrong_encoding = msgs.numpy_to_image(good, stamp_ns + 1, "cam")
        wrong_encoding.encoding = "yuv422"
        self.left.publish(wrong_encoding)
        truncated = msgs.numpy_to_image(good, stamp_ns + 2, "cam")
        truncated.data = truncated.data[: len(truncated.data) // 2]
        self.left.publish(truncated)
        self.left.publish(msgs.numpy_to_image(np.zeros((10, 12), np.uint8), stamp_ns + 3, "cam"))  # wrong size
        self.left.publish(msgs.numpy_to_image(good, 1_000, "cam"))  # time going backwards
        # a keyframe whose pose is NaN and a keyframe cloud whose size does not match its header
        kf = Keyframe(id=0, stamp_ns=stamp_ns + 5, T_world_body=np.eye(4), keypoints=np.ones((3, 2), np.float32),
                      descriptors=np.zeros((3, 32), np.uint8), landmark_ids=np.arange(3),
                      points_cam=np.ones((3, 3)))
        cloud, pose = msgs.keyframe_to_msgs(kf, "camera_left", "odom", "base_link")
        pose.pose.pose.orientation.w = float("nan")
        self.kf_pose.publish(pose)
        self.kf_features.publish(cloud)
        kf.stamp_ns += 1
        broken, pose = msgs.keyframe_to_msgs(kf, "camera_left", "odom", "base_link")
        broken.data = broken.data[:7]
        self.kf_pose.publish(pose)
        self.kf_features.publish(broken)


def test_full_graph_outputs_ate_and_survives_bad_messages(tmp_path, ros_env, synthetic, recorder):
    from mpslam_ros.evaluation.metrics import ate
    from mpslam_ros.nodes import msgs

    seq, bag = synthetic
    gt = seq.ground_truth()
    injector = Injector(recorder)
    with _graph(tmp_path, ros_env, seq) as graph:
        graph.start_node("vo_node")
        graph.start_node("loop_closure_node")
        assert recorder.wait_for_publishers(OUTPUTS_COUNTED, timeout=300), graph.log("vo_node")
        graph.start_player(bag, rate=1.0)
        # inject once both nodes are demonstrably processing (loop closure published a path); the
        # player first waits for the nodes' warm-up (READY_TIMEOUT_S: minutes from an empty cache)
        assert recorder.wait_for(lambda r: r.count("vo/odometry") >= 20 and r.count("loop_closure/path") >= 1,
                                 timeout=READY_TIMEOUT_S + 60), graph.log("vo_node") + graph.log("loop_closure_node")
        last = recorder.odometry_trajectory().stamps_ns[-1]
        injector.send_bad_inputs(seq.rig, int(last))
        _wait_player(graph, timeout=400)
        assert recorder.wait_for_frames_done(len(seq), timeout=300), \
            str(recorder.diagnostics("vo_node: visual odometry")) + graph.log("vo_node")[-2000:]
        n_kf = recorder.count("vo/keyframes/features")
        recorder.wait_for(lambda r: r.data.diagnostics.get("loop_closure_node: loop closure", {}).get(
            "keyframes_processed") == str(n_kf), timeout=30)
        time.sleep(1.5)
        assert graph.alive("vo_node") and graph.alive("loop_closure_node")
        codes = graph.stop_all()
    vo_log, lc_log = graph.log("vo_node"), graph.log("loop_closure_node")
    assert codes["vo_node"] == 0 and codes["loop_closure_node"] == 0, vo_log[-2000:] + lc_log[-2000:]
    assert "Traceback" not in vo_log + lc_log, vo_log[-3000:] + lc_log[-3000:]

    # every output topic arrived
    for topic in ("vo/odometry", "vo/pose", "vo/path", "vo/landmarks", "vo/keyframes/features",
                  "vo/keyframes/pose", "loop_closure/path", "loop_closure/map", "loop_closure/map_to_odom",
                  "loop_closure/loop_markers", "/diagnostics"):
        assert recorder.count(topic) > 0, f"nothing on {topic}"

    # odometry: one per processed frame, on the bag's stamps, in order
    odo = recorder.odometry_trajectory()
    _check_tf(recorder, odo, vo_log, lc_log)
    bag_stamps = set(gt.stamps_ns.tolist())
    vo_diag = recorder.data.diagnostics["vo_node: visual odometry"]
    # every frame arrived and was processed or (VO busy) dropped and counted; speed is the demo's table
    assert int(vo_diag["frames_processed"]) + int(vo_diag["frames_dropped"]) == len(seq), vo_diag
    assert len(odo) == int(vo_diag["odometry_published"]) >= 0.7 * len(seq), (len(odo), vo_diag)
    assert np.all(np.diff(odo.stamps_ns) > 0)
    assert set(odo.stamps_ns.tolist()) <= bag_stamps
    assert int(vo_diag["bad_messages"]) >= 4
    assert int(vo_diag["frames_missed"]) == 0  # reliable camera QoS: nothing lost on the way
    # cold start (issue 13): the nodes' warm-up left nothing to compile or load on the camera/keyframe path
    lc_diag = recorder.data.diagnostics["loop_closure_node: loop closure"]
    for d in (vo_diag, lc_diag):
        assert d["kernels_compiled_after_ready"] == "0" and d["kernel_signatures_loaded_after_ready"] == "0", d
    # ATE of the published trajectory
    result = ate(gt, odo, align="se3")
    assert result.rmse < ATE_BOUND_M, f"ATE {result.rmse:.3f} m"
    # the path matches the odometry; landmarks and map are finite 3D points near the trajectory
    stamps, poses = msgs.path_to_arrays(recorder.data.vo_path)
    assert len(stamps) >= 0.9 * len(odo) and np.all(np.isfinite(poses))
    for cloud in (recorder.data.landmarks, recorder.data.map_points):
        assert cloud is not None and len(cloud) > 10 and np.all(np.isfinite(cloud))
        assert np.median(np.linalg.norm(cloud - odo.positions.mean(axis=0), axis=1)) < 50.0
    # loop closure: corrected keyframe path on keyframe stamps, a rigid map -> odom correction
    corrected = recorder.path_trajectory(corrected=True)
    assert corrected is not None and len(corrected) >= 0.8 * recorder.count("vo/keyframes/features")
    assert set(corrected.stamps_ns.tolist()) <= set(odo.stamps_ns.tolist())
    R = recorder.data.map_to_odom[:3, :3]
    np.testing.assert_allclose(R @ R.T, np.eye(3), atol=1e-6)
    assert ate(gt, corrected, align="se3").rmse < ATE_BOUND_M

    # the malformed inputs were each reported with their reason, once
    for reason in ("unsupported image encoding 'yuv422'", "data size", "!= CameraInfo", "time went backwards"):
        assert vo_log.count(reason) == 1, (reason, vo_log[-3000:])
    assert "invalid quaternion" in lc_log and "PointCloud2 data size" in lc_log, lc_log[-3000:]


def _check_tf(recorder, odo, vo_log: str, lc_log: str) -> None:
    """/tf (where tf2_msgs is installed): odom -> base_link for every odometry message, map -> odom as on
    loop_closure/map_to_odom, and map -> odom x odom -> base_link at the latest keyframe = its corrected
    pose; the extrinsic came from the bag's /tf_static. Without tf2_msgs: the nodes said /tf is off."""
    if not recorder.records_tf:
        assert "tf2_msgs is not installed: /tf is off" in vo_log and "tf2_msgs is not installed" in lc_log
        assert "camera extrinsic base_link -> camera_left from parameters" in vo_log, vo_log[-3000:]
        return
    assert "camera extrinsic base_link -> camera_left from /tf_static" in vo_log, vo_log[-3000:]
    assert "camera extrinsic base_link -> camera_left from /tf_static" in lc_log, lc_log[-3000:]
    odom_base = recorder.tf_transforms("odom", "base_link")
    assert len(odom_base) == len(odo)
    by_stamp = dict(zip(odo.stamps_ns.tolist(), odo.poses))
    for stamp, T in odom_base:
        np.testing.assert_allclose(T, by_stamp[stamp], atol=1e-9)
    map_odom = recorder.tf_transforms("map", "odom")
    assert map_odom, "no map -> odom on /tf"
    np.testing.assert_allclose(map_odom[-1][1], recorder.data.map_to_odom, atol=1e-9)
    # the tree composes: map -> odom (stamped at the latest keyframe) x odom -> base_link of that frame
    # = the keyframe's corrected pose on loop_closure/path (both from the same loop-closure state)
    stamp, T_map_odom = map_odom[-1]
    corrected = recorder.path_trajectory(corrected=True)
    k = corrected.stamps_ns.tolist().index(stamp)
    T_map_base = T_map_odom @ by_stamp[stamp]
    np.testing.assert_allclose(T_map_base[:3, 3], corrected.poses[k][:3, 3], atol=1e-6)
    np.testing.assert_allclose(T_map_base[:3, :3], corrected.poses[k][:3, :3], atol=1e-6)
    # the bag's own /tf (ground truth world -> base_link_gt) is played too
    assert recorder.tf_transforms("world", "base_link_gt")


def test_odometry_keeps_flowing_when_loop_closure_is_killed(tmp_path, ros_env, synthetic, recorder):
    seq, bag = synthetic
    with _graph(tmp_path, ros_env, seq) as graph:
        graph.start_node("vo_node")
        lc = graph.start_node("loop_closure_node")
        assert recorder.wait_for_publishers(OUTPUTS_COUNTED, timeout=300), graph.log("vo_node")
        graph.start_player(bag, rate=1.0)
        assert recorder.wait_for(lambda r: r.count("vo/keyframes/features") >= 2, timeout=READY_TIMEOUT_S + 60), \
            graph.log("vo_node")
        assert recorder.wait_for(lambda r: r.count("loop_closure/path") >= 1, timeout=30), \
            graph.log("loop_closure_node")
        os.kill(lc.pid, signal.SIGKILL)
        lc.wait(timeout=10)
        at_kill = recorder.count("vo/odometry")
        _wait_player(graph, timeout=400)
        time.sleep(1.0)
        after = recorder.count("vo/odometry")
        assert graph.alive("vo_node")
        assert graph.stop("vo_node") == 0
    remaining = len(seq) - at_kill
    assert after - at_kill >= 0.5 * remaining, (at_kill, after, len(seq))
    assert "Traceback" not in graph.log("vo_node")
