"""rosbag2 writing/reading: bit-exact round trip (MCAP and sqlite3), topics, calibration, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from mpslam_ros.io import bags
from mpslam_ros.io.bags import BagSource, write_bag
from mpslam_ros.io.datasets import open_dataset
from mpslam_ros.io.errors import DataError
from mpslam_ros.sim.sequences import load_or_generate


@pytest.fixture(scope="module")
def seq():
    return load_or_generate("household", 1.5, seed=0, cache_dir=None,
                            progress=False)


@pytest.mark.parametrize("storage,name", [("mcap", "seq.mcap"), ("sqlite3", "seq_sqlite"), ("mcap", "seq_dir")])
def test_round_trip_is_bit_exact(seq, tmp_path, storage, name):
    path = write_bag(seq, tmp_path / name, storage=storage)
    src = open_dataset(str(path))
    assert isinstance(src, BagSource) and len(src) == len(seq)
    frames = list(src)
    assert len(frames) == len(seq)
    for f in frames:
        g = seq[f.index]
        assert f.stamp_ns == g.stamp_ns
        assert f.left.dtype == np.uint8 and np.array_equal(f.left, g.left) and np.array_equal(f.right, g.right)
        np.testing.assert_allclose(f.gt_T_world_body, g.gt_T_world_body, atol=1e-12)
    gt, gt0 = src.ground_truth(), seq.ground_truth()
    assert np.array_equal(gt.stamps_ns, gt0.stamps_ns)
    np.testing.assert_allclose(gt.poses, gt0.poses, atol=1e-12)
    r, r0 = src.rig, seq.rig
    assert r.rectified and not r.left.is_distorted
    assert (r.left.width, r.left.height) == (r0.left.width, r0.left.height)
    np.testing.assert_array_equal(r.left.K, r0.left.K)
    np.testing.assert_array_equal(r.right.K, r0.right.K)
    np.testing.assert_allclose(r.T_body_left, r0.T_body_left, atol=1e-12)
    np.testing.assert_allclose(r.T_left_right, r0.T_left_right, atol=1e-12)
    assert r.baseline == pytest.approx(0.1)


def test_topics_types_and_camera_info(seq, tmp_path):
    from rosbags.rosbag2 import Reader

    path = write_bag(seq, tmp_path / "t.mcap")
    ts = bags.typestore()
    with Reader(path) as reader:
        types = {c.topic: c.msgtype for c in reader.connections}
        counts = {c.topic: c.msgcount for c in reader.connections}
        infos = {}
        for conn, _, raw in reader.messages():
            if conn.topic.endswith("camera_info") and conn.topic not in infos:
                infos[conn.topic] = ts.deserialize_cdr(raw, conn.msgtype)
            if conn.topic == "/tf_static":
                static = ts.deserialize_cdr(raw, conn.msgtype)
    assert types == {
        "/camera/left/image_raw": "sensor_msgs/msg/Image", "/camera/right/image_raw": "sensor_msgs/msg/Image",
        "/camera/left/camera_info": "sensor_msgs/msg/CameraInfo",
        "/camera/right/camera_info": "sensor_msgs/msg/CameraInfo",
        "/ground_truth/pose": "geometry_msgs/msg/PoseStamped", "/tf": "tf2_msgs/msg/TFMessage",
        "/tf_static": "tf2_msgs/msg/TFMessage"}
    assert counts["/camera/left/image_raw"] == len(seq) and counts["/tf_static"] == 1
    right = infos["/camera/right/camera_info"]
    fx = seq.rig.left.fx
    assert right.distortion_model == "plumb_bob" and right.p[3] == pytest.approx(-fx * 0.1)
    assert infos["/camera/left/camera_info"].p[3] == 0.0
    np.testing.assert_allclose(right.k.reshape(3, 3), seq.rig.right.K)
    assert {t.child_frame_id for t in static.transforms} == {"camera_left", "camera_right"}


def test_topics_found_by_type_when_names_differ(seq, tmp_path, monkeypatch):
    monkeypatch.setattr(bags, "LEFT_IMAGE", "/stereo/left/image")
    monkeypatch.setattr(bags, "RIGHT_IMAGE", "/stereo/right/image")
    monkeypatch.setattr(bags, "LEFT_INFO", "/stereo/left/camera_info")
    monkeypatch.setattr(bags, "RIGHT_INFO", "/stereo/right/camera_info")
    path = write_bag(seq, tmp_path / "renamed.mcap")
    monkeypatch.undo()
    src = BagSource(path)
    assert src.left_topic == "/stereo/left/image" and src.right_topic == "/stereo/right/image"
    f = next(iter(src))
    assert np.array_equal(f.left, seq[0].left) and np.array_equal(f.right, seq[0].right)
    with pytest.raises(DataError, match="not in bag"):
        BagSource(path, left_topic="/nope")


def test_bad_messages_are_dropped_and_reading_continues(seq, tmp_path, caplog):
    """An image with an unsupported encoding is logged (topic + message index) and skipped."""
    orig = bags._Msgs.image

    def broken(self, img, stamp_ns, frame):
        msg = orig(self, img, stamp_ns, frame)
        if stamp_ns == seq.stamps_ns[3] and frame == "camera_left":
            msg.encoding = "yuv422"
        return msg

    bags._Msgs.image = broken
    try:
        path = write_bag(seq, tmp_path / "bad.mcap")
    finally:
        bags._Msgs.image = orig
    with caplog.at_level(logging.WARNING, logger="mpslam_ros.io.bags"):
        frames = list(BagSource(path))
    assert len(frames) == len(seq) - 1
    assert seq.stamps_ns[3] not in [f.stamp_ns for f in frames]
    assert "/camera/left/image_raw message 3" in caplog.text and "yuv422" in caplog.text


def test_corrupt_or_missing_bag_is_a_clear_error(tmp_path):
    junk = tmp_path / "junk.mcap"
    junk.write_bytes(b"this is not an mcap file" * 10)
    with pytest.raises(DataError, match="junk.mcap"):
        BagSource(junk)
    with pytest.raises(DataError, match="no such bag"):
        BagSource(tmp_path / "missing.mcap")


def test_depth_round_trip(tmp_path):
    seq = load_or_generate("household", 0.5, seed=0, cache_dir=None,
                           progress=False, with_depth=True)
    src = BagSource(write_bag(seq, tmp_path / "d.mcap"))
    f = next(iter(src))
    assert f.depth.dtype == np.float32 and np.array_equal(f.depth, seq[0].depth)


def test_bag_without_camera_info_is_a_missing_calibration_error(tmp_path):
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = bags.typestore()
    m = bags._Msgs(ts)
    path = tmp_path / "nocalib"
    with Writer(path, version=9, storage_plugin=StoragePlugin.SQLITE3) as w:
        conn = w.add_connection("/camera/left/image_raw", bags.IMAGE_T, typestore=ts)
        w.write(conn, 1, ts.serialize_cdr(m.image(np.zeros((4, 6), np.uint8), 1, "camera_left"), bags.IMAGE_T))
    with pytest.raises(DataError, match="missing calibration: no CameraInfo for /camera/left/image_raw"):
        BagSource(path)


def test_cli_synth_writes_a_readable_bag_and_euroc_folder(tmp_path):
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "mpslam_ros", "synth", "--duration", "0.5", "--seed", "0",
                          "-o", str(tmp_path / "s.mcap")], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "10 stereo frames" in out.stdout and "MB" in out.stdout
    src = BagSource(tmp_path / "s.mcap")
    assert len(list(src)) == 10 and src.ground_truth() is not None
    again = subprocess.run([sys.executable, "-m", "mpslam_ros", "synth", "--duration", "0.5",
                            "-o", str(tmp_path / "s.mcap")], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "exists" in again.stdout
    eu = subprocess.run([sys.executable, "-m", "mpslam_ros", "synth", "--duration", "0.5", "--format", "euroc",
                         "-o", str(tmp_path / "eu")], capture_output=True, text=True, timeout=300)
    assert eu.returncode == 0, eu.stderr
    assert len(open_dataset(str(tmp_path / "eu"))) == 10
