"""Message conversions: round trips through real (serialized) ROS messages, and clear errors for
malformed ones."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("rclpy")

from rclpy.serialization import deserialize_message, serialize_message  # noqa: E402
from sensor_msgs.msg import CameraInfo, Image, PointCloud2  # noqa: E402
from nav_msgs.msg import Odometry  # noqa: E402

from mpslam_ros.datatypes import CameraIntrinsics, Keyframe  # noqa: E402
from mpslam_ros.nodes import msgs  # noqa: E402


def roundtrip(msg):
    return deserialize_message(serialize_message(msg), type(msg))


def random_pose(rng) -> np.ndarray:
    q = rng.normal(size=4)
    T = np.eye(4)
    T[:3, :3] = msgs.quaternion_to_rotation(q)
    T[:3, 3] = rng.normal(size=3) * 5
    return T


@pytest.mark.parametrize("shape,dtype,encoding", [((7, 9), np.uint8, "mono8"), ((7, 9, 3), np.uint8, "rgb8"),
                                                  ((7, 9), np.uint16, "16UC1"), ((7, 9), np.float32, "32FC1")])
def test_image_roundtrip(shape, dtype, encoding):
    rng = np.random.default_rng(1)
    arr = (rng.random(shape) * 200).astype(dtype)
    msg = roundtrip(msgs.numpy_to_image(arr, 1_234_567_890_123, "cam", encoding))
    assert msg.encoding == encoding and msgs.time_to_ns(msg.header.stamp) == 1_234_567_890_123
    np.testing.assert_array_equal(msgs.image_to_numpy(msg), arr)


def test_image_with_row_padding_and_big_endian():
    arr = np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000
    padded = np.zeros((3, 10), dtype=np.uint8)  # 8 bytes of pixels + 2 bytes padding per row
    padded[:, :8] = np.frombuffer(arr.astype(">u2").tobytes(), np.uint8).reshape(3, 8)
    msg = Image(height=3, width=4, encoding="16UC1", is_bigendian=1, step=10)
    msg.data = padded.tobytes()
    np.testing.assert_array_equal(msgs.image_to_numpy(msg), arr)


def test_colour_to_mono_matches_opencv():
    cv2 = pytest.importorskip("cv2")
    rng = np.random.default_rng(2)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    grey = msgs.image_to_mono8(msgs.numpy_to_image(rgb, 0, "c", "rgb8"))
    assert np.abs(grey.astype(int) - cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY).astype(int)).max() <= 1
    bgr = msgs.numpy_to_image(np.ascontiguousarray(rgb[..., ::-1]), 0, "c", "bgr8")
    np.testing.assert_array_equal(msgs.image_to_mono8(bgr), grey)


def test_depth_16bit_scaled_and_zero_is_nan():
    depth = np.array([[0, 1000], [2500, 65535]], dtype=np.uint16)
    out = msgs.image_to_depth(msgs.numpy_to_image(depth, 0, "d"), depth_scale=0.001)
    assert np.isnan(out[0, 0]) and out[0, 1] == pytest.approx(1.0) and out[1, 0] == pytest.approx(2.5)


@pytest.mark.parametrize("mutate,reason", [
    (lambda m: setattr(m, "encoding", "yuv422"), "unsupported image encoding 'yuv422'"),
    (lambda m: setattr(m, "data", bytes(10)), "data size 10 != step*height"),
    (lambda m: setattr(m, "step", 3), "step 3 < width*pixel size 9"),
    (lambda m: setattr(m, "height", 0), "empty image"),
])
def test_malformed_images_raise_with_reason(mutate, reason):
    msg = msgs.numpy_to_image(np.zeros((7, 9), np.uint8), 0, "cam")
    mutate(msg)
    with pytest.raises(msgs.MessageError, match=reason.replace("*", r"\*").replace("(", r"\(")):
        msgs.image_to_numpy(msg)


def test_mono8_required_for_frontend():
    with pytest.raises(msgs.MessageError, match="8-bit intensity"):
        msgs.image_to_mono8(msgs.numpy_to_image(np.zeros((2, 2), np.float32), 0, "c"))


def test_stereo_camera_info_to_rig():
    cam = CameraIntrinsics(640, 480, 400.0, 401.0, 320.5, 240.5)
    left = roundtrip(msgs.intrinsics_to_camera_info(cam, 5, "left"))
    right = roundtrip(msgs.intrinsics_to_camera_info(cam, 5, "right", baseline=0.11))
    T_body_left = random_pose(np.random.default_rng(3))
    rig = msgs.camera_infos_to_rig(left, right, T_body_left)
    assert rig.left.fx == 400.0 and rig.left.fy == 401.0 and rig.left.cx == 320.5 and rig.right.width == 640
    assert rig.baseline == pytest.approx(0.11) and rig.rectified
    np.testing.assert_allclose(rig.T_body_left, T_body_left)
    with pytest.raises(msgs.MessageError, match="no stereo baseline"):
        msgs.camera_infos_to_rig(left, left, T_body_left)
    bad = CameraInfo(width=640, height=480)
    with pytest.raises(msgs.MessageError, match="not a valid camera matrix"):
        msgs.camera_info_to_intrinsics(bad)


def test_pose_conversions_roundtrip():
    rng = np.random.default_rng(4)
    for _ in range(50):
        T = random_pose(rng)
        np.testing.assert_allclose(msgs.pose_to_matrix(roundtrip(msgs.pose_stamped(T, 1, "odom")).pose), T, atol=1e-12)
        np.testing.assert_allclose(msgs.transform_to_matrix(msgs.transform_stamped(T, 1, "map", "odom")), T, atol=1e-12)
    # 180-degree rotations exercise the non-trace branches of the quaternion extraction
    for R in (np.diag([1.0, -1, -1]), np.diag([-1.0, 1, -1]), np.diag([-1.0, -1, 1])):
        np.testing.assert_allclose(msgs.quaternion_to_rotation(msgs.rotation_to_quaternion(R)), R, atol=1e-12)


def test_odometry_and_path():
    rng = np.random.default_rng(5)
    poses = [random_pose(rng) for _ in range(4)]
    odo = roundtrip(msgs.odometry(poses[0], 10, "odom", "base_link", covariance_diag=np.arange(1, 7.0)))
    assert odo.child_frame_id == "base_link" and odo.header.frame_id == "odom"
    assert list(np.asarray(odo.pose.covariance)[::7]) == [1, 2, 3, 4, 5, 6]
    stamps, out = msgs.path_to_arrays(roundtrip(msgs.path([1, 2, 3, 4], poses, "odom")))
    assert stamps.tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(out, np.array(poses), atol=1e-12)


def test_pointcloud_drops_nonfinite_points():
    pts = np.array([[1.0, 2, 3], [np.nan, 0, 0], [4, 5, 6]])
    cloud = roundtrip(msgs.points_to_pointcloud2(pts, 3, "map"))
    assert cloud.width == 2 and cloud.is_dense
    np.testing.assert_allclose(msgs.pointcloud2_to_points(cloud), pts[[0, 2]])
    cloud.data = bytes(5)
    with pytest.raises(msgs.MessageError, match="data size 5"):
        msgs.pointcloud2_to_points(cloud)


def test_keyframe_roundtrip_through_standard_messages():
    rng = np.random.default_rng(6)
    n = 120
    pts = rng.normal(size=(n, 3)) + [0, 0, 5]
    pts[::7] = np.nan
    kf = Keyframe(id=3, stamp_ns=1_600_000_000_123_456_789, T_world_body=random_pose(rng),
                  keypoints=(rng.random((n, 2)) * 600).astype(np.float32),
                  descriptors=rng.integers(0, 256, (n, 32), dtype=np.uint8),
                  landmark_ids=np.where(np.isnan(pts[:, 0]), -1, np.arange(n) + 10**6).astype(np.int64),
                  points_cam=pts, K=np.array([[400.0, 0, 320], [0, 400, 240], [0, 0, 1]]),
                  place_descriptors=rng.integers(0, 256, (500, 32), dtype=np.uint8),
                  place_keypoints=(rng.random((500, 4)) * 600).astype(np.float32))
    cloud, pose = msgs.keyframe_to_msgs(kf, "camera_left", "odom", "base_link")
    assert len(serialize_message(cloud)) < 100_000  # 120 + 500 features: far below LARGE_DATA sizes
    cloud, pose = roundtrip(cloud), roundtrip(pose)
    assert isinstance(cloud, PointCloud2) and isinstance(pose, Odometry)
    back = msgs.keyframe_from_msgs(cloud, pose, kf_id=7, K=kf.K, T_body_left=kf.T_body_left)
    assert back.id == 7 and back.stamp_ns == kf.stamp_ns
    np.testing.assert_allclose(back.T_world_body, kf.T_world_body, atol=1e-12)
    np.testing.assert_array_equal(back.keypoints, kf.keypoints)
    np.testing.assert_array_equal(back.descriptors, kf.descriptors)
    np.testing.assert_array_equal(back.landmark_ids, kf.landmark_ids)
    np.testing.assert_array_equal(back.points_cam, kf.points_cam)  # float64 fields: bit exact, NaN kept
    np.testing.assert_array_equal(back.place_descriptors, kf.place_descriptors)
    np.testing.assert_array_equal(back.place_keypoints, kf.place_keypoints)
    pose.header.stamp.nanosec += 1
    with pytest.raises(msgs.MessageError, match="different stamps"):
        msgs.keyframe_from_msgs(cloud, pose, 7, kf.K, kf.T_body_left)


def test_diagnostics_and_markers():
    arr = roundtrip(msgs.diagnostics(1, "vo_node: tracking", "cam", 1, "lost", {"frames": 3, "fps": 19.54321}))
    assert msgs.diagnostic_values(arr) == {"vo_node: tracking": {"frames": "3", "fps": "19.5432"}}
    assert arr.status[0].level == b"\x01"
    markers = roundtrip(msgs.loop_markers([(np.zeros(3), np.ones(3))], 1, "map"))
    assert len(markers.markers[0].points) == 2 and markers.markers[0].header.frame_id == "map"
