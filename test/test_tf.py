"""mpslam_ros.nodes.tf over DDS: the camera extrinsic from a latched /tf_static chain published by
another node, the fall-back to parameters (with the reason), and bad transforms ignored."""

from __future__ import annotations

import time

import numpy as np
import pytest

pytest.importorskip("rclpy")
pytest.importorskip("tf2_msgs", reason="tf2_msgs is not installed (./dev.sh builds it)")


def _transform(parent: str, child: str, T: np.ndarray):
    from mpslam_ros.nodes import msgs

    return msgs.transform_stamped(T, 1_000_000_000, parent, child)


def test_extrinsic_from_a_tf_static_chain_else_parameters(ros_env_in_process):
    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.node import Node
    from tf2_msgs.msg import TFMessage

    from mpslam_ros.nodes import msgs
    from mpslam_ros.nodes.tf import TF_STATIC_QOS, CameraExtrinsic

    context = Context()
    rclpy.init(context=context, domain_id=int(ros_env_in_process["ROS_DOMAIN_ID"]))
    try:
        robot = Node("robot_state", context=context)
        consumer = Node("consumer", context=context)
        executor = SingleThreadedExecutor(context=context)
        executor.add_node(robot)
        executor.add_node(consumer)
        T_params = msgs.transform_from_params([9.0, 9.0, 9.0], [0.0, 0.0, 0.0, 1.0])
        extrinsic = CameraExtrinsic(consumer, T_params, use_tf_static=True, wait_s=0.5)

        T, source = extrinsic.resolve("base_link", "camera_left")
        assert T is T_params and "nothing publishes /tf_static" in source
        # vo_node's on_update (its calibration) calls resolve: a fall-back must not call it back
        calibrations = []
        reentrant = CameraExtrinsic(consumer, T_params, use_tf_static=True, wait_s=0.5,
                                    on_update=lambda: calibrations.append(reentrant.resolve("base_link", "camera_left")))
        assert reentrant.resolve("base_link", "camera_left")[0] is T_params and calibrations == []

        # base_link -> camera_link -> camera_left (optical), plus a transform with a zero quaternion
        T_base_link = msgs.transform_from_params([0.2, 0.0, 0.5], [0.0, 0.0, 0.3826834, 0.9238795])
        T_link_optical = msgs.transform_from_params([0.0, 0.05, 0.0], [-0.5, 0.5, -0.5, 0.5])
        pub = robot.create_publisher(TFMessage, "/tf_static", TF_STATIC_QOS)
        bad = _transform("base_link", "broken", np.eye(4))
        bad.transform.rotation.w = 0.0
        pub.publish(TFMessage(transforms=[_transform("base_link", "camera_link", T_base_link),
                                          _transform("camera_link", "camera_left", T_link_optical), bad]))
        deadline = time.monotonic() + 20.0
        while extrinsic.static.lookup("base_link", "camera_left") is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)

        T, source = extrinsic.resolve("base_link", "camera_left")
        assert source == "/tf_static (base_link -> camera_left)"
        np.testing.assert_allclose(T, T_base_link @ T_link_optical, atol=1e-12)
        np.testing.assert_allclose(extrinsic.static.lookup("camera_left", "base_link"), np.linalg.inv(T), atol=1e-12)
        assert extrinsic.static.lookup("base_link", "broken") is None  # the zero quaternion was dropped
        # the first resolve fell back to the parameters; the transform that came later differs: warned
        assert extrinsic.late_mismatch == 1 and extrinsic.source == "/tf_static (base_link -> camera_left)"
        fresh = CameraExtrinsic(consumer, T_params, use_tf_static=True, wait_s=20.0)  # latched: gets it
        deadline = time.monotonic() + 20.0
        while fresh.resolve("base_link", "camera_left") is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.1)
        assert fresh.source == "/tf_static (base_link -> camera_left)" and fresh.late_mismatch == 0
        values, note = extrinsic.diagnostics()  # what both nodes put in /diagnostics
        assert values["camera_extrinsic_late_mismatch"] == 1 and "arrived late" in note
        assert fresh.diagnostics() == ({"camera_extrinsic_from": fresh.source, "camera_extrinsic_late_mismatch": 0}, "")

        # a frame the tree lacks while /tf_static has a publisher: wait, then the parameters (said why)
        assert extrinsic.resolve("base_link", "camera_right") is None
        time.sleep(0.6)
        T, source = extrinsic.resolve("base_link", "camera_right")
        assert T is T_params and "/tf_static has no base_link -> camera_right after" in source
        assert extrinsic.resolve("base_link", "camera_right", wait=False)[0] is T_params

        off = CameraExtrinsic(consumer, T_params, use_tf_static=False, wait_s=0.5)
        assert off.resolve("base_link", "camera_left")[1].endswith("(camera_extrinsic.from_tf_static is false)")
        executor.shutdown()
    finally:
        rclpy.try_shutdown(context=context)
