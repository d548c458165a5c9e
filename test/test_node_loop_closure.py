"""loop_closure_node as a process: keyframes made by the real VO on synthetic frames arrive as the
standard messages vo_node sends; the corrected path follows, and the ~/save_map, ~/reset and
~/load_map services (std_srvs/Trigger) save, clear and restore the map."""

from __future__ import annotations

import signal
import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("std_srvs", reason="std_srvs is not installed (pip install ros-std-srvs)")

from mpslam_ros.nodes.graph import READY_TIMEOUT_S, SlamGraph, extrinsic_params  # noqa: E402

N_FRAMES = 80


def make_keyframes():
    from mpslam_ros.sim.sequences import load_or_generate
    from mpslam_ros.slam.vo import VisualOdometry, VOConfig

    seq = load_or_generate("household", 12.0, 3, progress=False)
    vo = VisualOdometry(seq.rig, VOConfig(window_size=5))
    keyframes = []
    for k, frame in enumerate(seq):
        if k >= N_FRAMES:
            break
        result = vo.process(frame)
        if result.keyframe is not None:
            keyframes.append(result.keyframe)
    return seq, keyframes


def keyframe_publishers(node):
    """The three publishers vo_node sends keyframes on (camera model latched, as vo_node does)."""
    from nav_msgs.msg import Odometry
    from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import CameraInfo, PointCloud2

    reliable = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
    latched = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    return (node.create_publisher(CameraInfo, "/vo/keyframes/camera_info", latched),
            node.create_publisher(PointCloud2, "/vo/keyframes/features", reliable),
            node.create_publisher(Odometry, "/vo/keyframes/pose", reliable))


def wait_until_subscribed(rec, graph, pub_features, pub_pose):
    """Until loop_closure_node's keyframe subscriptions match (they appear once it is warm; the recorder
    is the other subscriber) and its path reaches the recorder. From an empty numba cache on a loaded
    machine the warm-up takes minutes: wait as long as the bag player does (READY_TIMEOUT_S)."""
    assert rec.wait_for(lambda r: pub_features.get_subscription_count() >= 2
                        and pub_pose.get_subscription_count() >= 2
                        and r.matched_publishers("loop_closure/path") > 0, timeout=READY_TIMEOUT_S), \
        graph.log("loop_closure_node")
    time.sleep(0.5)  # the readers match a moment after the writers


def call(node, client, timeout=30.0):
    import time

    from std_srvs.srv import Trigger

    assert client.wait_for_service(timeout_sec=timeout), client.srv_name
    future = client.call_async(Trigger.Request())
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert future.done(), f"{client.srv_name} did not answer"
    return future.result()


def test_loop_closure_node_services_and_path(tmp_path, ros_env, ros_env_in_process):
    from std_srvs.srv import Trigger

    from mpslam_ros.datatypes import CameraIntrinsics
    from mpslam_ros.nodes import msgs
    from mpslam_ros.nodes.recorder import OutputRecorder
    from mpslam_ros.slam.loop_closure import LoopClosure

    seq, keyframes = make_keyframes()
    assert len(keyframes) >= 3
    map_path = tmp_path / "map.npz"
    params = {"/**": extrinsic_params(seq.rig.T_body_left), "loop_closure_node": {"map_path": str(map_path)}}
    with OutputRecorder(domain_id=int(ros_env["ROS_DOMAIN_ID"])) as rec, \
            SlamGraph(tmp_path / "logs", ros_env, params=params) as graph:
        node = rec.node
        pub_info, pub_features, pub_pose = keyframe_publishers(node)
        clients = {name: node.create_client(Trigger, f"/loop_closure_node/{name}")
                   for name in ("save_map", "reset", "load_map")}
        graph.start_node("loop_closure_node")
        assert clients["save_map"].wait_for_service(timeout_sec=300), graph.log("loop_closure_node")
        wait_until_subscribed(rec, graph, pub_features, pub_pose)
        K = keyframes[0].K
        cam = CameraIntrinsics(seq.rig.left.width, seq.rig.left.height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        for kf in keyframes:
            features, pose = msgs.keyframe_to_msgs(kf, "camera_left", "odom", "base_link")
            pub_features.publish(features)  # before the camera model: the node must hold it
            pub_pose.publish(pose)
        pub_info.publish(msgs.intrinsics_to_camera_info(cam, keyframes[0].stamp_ns, "camera_left"))

        def path_len(r):
            t = r.path_trajectory(corrected=True)
            return 0 if t is None else len(t)

        assert rec.wait_for(lambda r: path_len(r) == len(keyframes), timeout=120), graph.log("loop_closure_node")
        path = rec.path_trajectory(corrected=True)
        assert path.stamps_ns.tolist() == [kf.stamp_ns for kf in keyframes]
        # no loop in this short stretch: the corrected poses are the odometry poses
        np.testing.assert_allclose(path.poses, np.array([kf.T_world_body for kf in keyframes]), atol=1e-6)

        saved = call(node, clients["save_map"])
        assert saved.success, saved.message
        assert f"{len(keyframes)} keyframes" in saved.message
        assert len(LoopClosure.load(map_path).corrected_poses()) == len(keyframes)

        reset = call(node, clients["reset"])
        assert reset.success, reset.message
        map_path.rename(tmp_path / "first.npz")  # keep the full map; save the empty one in its place
        saved_empty = call(node, clients["save_map"])
        assert saved_empty.success and "saved 0 keyframes" in saved_empty.message, saved_empty.message
        (tmp_path / "first.npz").rename(map_path)

        loaded = call(node, clients["load_map"])
        assert loaded.success and f"loaded {len(keyframes)} keyframes" in loaded.message, loaded.message
        rec.data.corrected_path = None
        assert rec.wait_for(lambda r: path_len(r) == len(keyframes), timeout=30)
        assert rec.path_trajectory(corrected=True).stamps_ns.tolist() == [kf.stamp_ns for kf in keyframes]
        assert graph.stop("loop_closure_node", sig=signal.SIGTERM) == 0
    log = graph.log("loop_closure_node")
    assert "shutting down (SIGTERM)" in log and "loop_closure_node summary" in log
    assert "Traceback" not in log and "map saved" in log and "map loaded" in log and "map reset" in log, log[-3000:]


def test_shutdown_waits_for_the_last_pose_graph_solve(tmp_path, ros_env, ros_env_in_process):
    """The end of a bag: the last keyframes closed loops whose solve is still running (here made slow
    with loop.solve_delay_s, as a first solve on a cold cache is) when SIGINT arrives. The node waits
    for it (shutdown_wait_s), publishes that map, and its summary says the map is complete; without
    the wait the map ended without the last loops and nothing said so."""

    from mpslam_ros.datatypes import CameraIntrinsics
    from mpslam_ros.nodes import msgs
    from mpslam_ros.nodes.recorder import OutputRecorder
    from mpslam_ros.slam.loop_synth import IMAGE_SIZE, T_BODY_CAM, make_keyframe_sequence

    # two laps of a ring: the second lap closes loops on the first (as the node's own warm-up does)
    keyframes = make_keyframe_sequence(seed=1, laps=2, keyframes_per_lap=24, num_points=2500).keyframes
    params = {"/**": extrinsic_params(T_BODY_CAM),
              "loop_closure_node": {"shutdown_wait_s": 30.0, "loop": {"solve_delay_s": 2.0}}}
    diag = "loop_closure_node: loop closure"
    with OutputRecorder(domain_id=int(ros_env["ROS_DOMAIN_ID"])) as rec, \
            SlamGraph(tmp_path / "logs", ros_env, params=params) as graph:
        node = rec.node
        pub_info, pub_features, pub_pose = keyframe_publishers(node)
        graph.start_node("loop_closure_node")
        wait_until_subscribed(rec, graph, pub_features, pub_pose)
        K = keyframes[0].K
        cam = CameraIntrinsics(IMAGE_SIZE[0], IMAGE_SIZE[1], K[0, 0], K[1, 1], K[0, 2], K[1, 2])
        pub_info.publish(msgs.intrinsics_to_camera_info(cam, keyframes[0].stamp_ns, "camera_left"))
        for kf in keyframes:
            features, pose = msgs.keyframe_to_msgs(kf, "camera_left", "odom", "base_link")
            pub_features.publish(features)
            pub_pose.publish(pose)
        # every keyframe through place recognition, loops accepted, their solve still pending: stop now
        assert rec.wait_for(lambda r: int(r.diagnostics(diag).get("keyframes_processed", 0)) == len(keyframes)
                            and int(r.diagnostics(diag).get("loops", 0)) > 0
                            and int(r.diagnostics(diag).get("pose_graph_pending", 0)) == 1, timeout=120), \
            (rec.diagnostics(diag), graph.log("loop_closure_node")[-3000:])
        assert graph.stop("loop_closure_node", sig=signal.SIGINT, timeout=60) == 0
        time.sleep(0.5)
        path = rec.path_trajectory(corrected=True)
    log = graph.log("loop_closure_node")
    assert "final map includes every keyframe and loop" in log, log[-3000:]
    waited = float(log.split("final map includes every keyframe and loop (waited ")[1].split(" s)")[0])
    assert waited < 30.0, log[-2000:]
    assert path is not None and len(path) == len(keyframes)
