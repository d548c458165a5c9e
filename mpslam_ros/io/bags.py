"""rosbag2 files (MCAP or sqlite3) with the topics a stereo camera driver publishes, via rosbags.

Written per frame (header stamp = frame stamp):
``/camera/left/image_raw``, ``/camera/right/image_raw`` (sensor_msgs/Image, mono8),
``/camera/left/camera_info``, ``/camera/right/camera_info`` (sensor_msgs/CameraInfo: K, D plumb_bob,
R, P with right ``P[0,3] = -fx * baseline``), ``/camera/depth/image_raw`` (32FC1 metres, RGB-D only),
``/ground_truth/pose`` (geometry_msgs/PoseStamped of base_link in ``world``) and ``/tf``
(world -> ``base_link_gt``, the same ground truth; a separate child so it never fights the
odom -> base_link of the VO node). ``/tf_static`` (once, at the first stamp) holds the extrinsics
base_link -> camera_left (optical frame) -> camera_right.

``BagSource`` reads such bags back (topics found by name, else by message type) as a FrameSource.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Iterator, Optional

import cv2
import numpy as np

from mpslam_ros.datatypes import CameraIntrinsics, StereoFrame, StereoRig, Trajectory
from mpslam_ros.io.errors import DataError
from mpslam_ros.io.trajectory_io import matrix_to_quat, quat_to_matrix

log = logging.getLogger("mpslam_ros.io.bags")

LEFT_IMAGE = "/camera/left/image_raw"
RIGHT_IMAGE = "/camera/right/image_raw"
LEFT_INFO = "/camera/left/camera_info"
RIGHT_INFO = "/camera/right/camera_info"
DEPTH_IMAGE = "/camera/depth/image_raw"
GT_POSE = "/ground_truth/pose"
TF = "/tf"
TF_STATIC = "/tf_static"
WORLD_FRAME, BASE_FRAME, GT_FRAME = "world", "base_link", "base_link_gt"
LEFT_FRAME, RIGHT_FRAME = "camera_left", "camera_right"

IMAGE_T = "sensor_msgs/msg/Image"
INFO_T = "sensor_msgs/msg/CameraInfo"
POSE_T = "geometry_msgs/msg/PoseStamped"
TF_T = "tf2_msgs/msg/TFMessage"


def typestore():
    """The rosbags type store of the newest ROS 2 distribution it knows (Kilted or later)."""
    from rosbags.typesys import Stores, get_typestore

    for name in ("ROS2_KILTED", "ROS2_JAZZY", "LATEST"):
        if hasattr(Stores, name):
            return get_typestore(getattr(Stores, name))
    raise RuntimeError("rosbags has no ROS 2 type store")


class _Msgs:
    """Builders of the message objects of one type store."""

    def __init__(self, ts):
        self.ts = ts
        t = ts.types
        self.Time, self.Header = t["builtin_interfaces/msg/Time"], t["std_msgs/msg/Header"]
        self.Image, self.CameraInfo = t[IMAGE_T], t[INFO_T]
        self.ROI = t["sensor_msgs/msg/RegionOfInterest"]
        self.PoseStamped, self.Pose = t[POSE_T], t["geometry_msgs/msg/Pose"]
        self.Point, self.Quaternion = t["geometry_msgs/msg/Point"], t["geometry_msgs/msg/Quaternion"]
        self.TransformStamped, self.Transform = t["geometry_msgs/msg/TransformStamped"], t["geometry_msgs/msg/Transform"]
        self.Vector3, self.TFMessage = t["geometry_msgs/msg/Vector3"], t[TF_T]

    def header(self, stamp_ns: int, frame: str):
        sec, nsec = divmod(int(stamp_ns), 1_000_000_000)
        return self.Header(stamp=self.Time(sec=sec, nanosec=nsec), frame_id=frame)

    def image(self, img: np.ndarray, stamp_ns: int, frame: str):
        if img.dtype == np.uint8 and img.ndim == 2:
            enc, step = "mono8", img.shape[1]
        elif img.dtype == np.float32 and img.ndim == 2:
            enc, step = "32FC1", img.shape[1] * 4
        else:
            raise ValueError(f"cannot write image of dtype {img.dtype} and shape {img.shape}")
        data = np.ascontiguousarray(img).view(np.uint8).reshape(-1)
        return self.Image(header=self.header(stamp_ns, frame), height=img.shape[0], width=img.shape[1],
                          encoding=enc, is_bigendian=0, step=step, data=data)

    def camera_info(self, cam: CameraIntrinsics, stamp_ns: int, frame: str, Tx: float = 0.0):
        d = np.zeros(5)
        dist = np.asarray(cam.distortion, dtype=np.float64).ravel()
        d[: len(dist)] = dist[:5]
        k = np.array([cam.fx, 0, cam.cx, 0, cam.fy, cam.cy, 0, 0, 1], dtype=np.float64)
        p = np.array([cam.fx, 0, cam.cx, Tx, 0, cam.fy, cam.cy, 0, 0, 0, 1, 0], dtype=np.float64)
        return self.CameraInfo(header=self.header(stamp_ns, frame), height=cam.height, width=cam.width,
                               distortion_model="plumb_bob", d=d, k=k, r=np.eye(3).ravel(), p=p,
                               binning_x=0, binning_y=0,
                               roi=self.ROI(x_offset=0, y_offset=0, height=0, width=0, do_rectify=False))

    def pose(self, T: np.ndarray, stamp_ns: int, frame: str):
        q = matrix_to_quat(T[:3, :3])[0]
        return self.PoseStamped(header=self.header(stamp_ns, frame), pose=self.Pose(
            position=self.Point(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
            orientation=self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3]))))

    def transform(self, T: np.ndarray, stamp_ns: int, parent: str, child: str):
        q = matrix_to_quat(T[:3, :3])[0]
        return self.TransformStamped(header=self.header(stamp_ns, parent), child_frame_id=child,
                                     transform=self.Transform(
                                         translation=self.Vector3(x=float(T[0, 3]), y=float(T[1, 3]), z=float(T[2, 3])),
                                         rotation=self.Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]),
                                                                  w=float(q[3]))))


def _pose_from_msg(position, orientation) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = quat_to_matrix([orientation.x, orientation.y, orientation.z, orientation.w])[0]
    T[:3, 3] = [position.x, position.y, position.z]
    return T


def write_bag(source, path: "str | os.PathLike", storage: str = "mcap", progress: bool = False,
              max_frames: Optional[int] = None) -> Path:
    """Write a FrameSource (synthetic sequence, EuRoC folder, ...) as a rosbag2.

    ``path`` ending in ``.mcap`` gives a single MCAP file; any other path is a bag folder
    (``storage`` "mcap" or "sqlite3" inside, with metadata.yaml). Returns the path written.
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    path = Path(path)
    if storage not in ("mcap", "sqlite3"):
        raise ValueError(f"storage must be 'mcap' or 'sqlite3', got {storage!r}")
    single_file = path.suffix == ".mcap"
    if single_file and storage != "mcap":
        raise ValueError(f"{path}: a .mcap path needs storage='mcap'")
    if path.exists():
        raise FileExistsError(f"{path} exists; remove it first")
    bag_dir = path.with_name(path.name + ".tmpbag") if single_file else path
    if bag_dir.exists():
        shutil.rmtree(bag_dir)
    ts = typestore()
    m = _Msgs(ts)
    rig: StereoRig = source.rig
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    frames = iter(source)
    if progress:
        from tqdm import tqdm

        frames = tqdm(frames, total=len(source), desc=f"writing {path.name}", unit="frame")
    with Writer(bag_dir, version=9, storage_plugin=plugin) as writer:
        conns = {}

        def put(topic, msgtype, msg, stamp):
            if topic not in conns:
                conns[topic] = writer.add_connection(topic, msgtype, typestore=ts)
            writer.write(conns[topic], int(stamp), ts.serialize_cdr(msg, msgtype))

        for k, frame in enumerate(frames):
            if max_frames is not None and k >= max_frames:
                break
            s = int(frame.stamp_ns)
            if k == 0:
                static = [m.transform(rig.T_body_left, s, BASE_FRAME, LEFT_FRAME)]
                if rig.right is not None:
                    static.append(m.transform(rig.T_left_right, s, LEFT_FRAME, RIGHT_FRAME))
                put(TF_STATIC, TF_T, m.TFMessage(transforms=static), s)
            put(LEFT_IMAGE, IMAGE_T, m.image(frame.left, s, LEFT_FRAME), s)
            put(LEFT_INFO, INFO_T, m.camera_info(rig.left, s, LEFT_FRAME), s)
            if frame.right is not None and rig.right is not None:
                put(RIGHT_IMAGE, IMAGE_T, m.image(frame.right, s, RIGHT_FRAME), s)
                put(RIGHT_INFO, INFO_T, m.camera_info(rig.right, s, RIGHT_FRAME, -rig.right.fx * rig.baseline), s)
            if frame.depth is not None:
                depth = np.asarray(frame.depth, np.float32) * np.float32(rig.depth_scale)
                put(DEPTH_IMAGE, IMAGE_T, m.image(depth, s, LEFT_FRAME), s)
            if frame.gt_T_world_body is not None:
                put(GT_POSE, POSE_T, m.pose(frame.gt_T_world_body, s, WORLD_FRAME), s)
                put(TF, TF_T, m.TFMessage(transforms=[m.transform(frame.gt_T_world_body, s, WORLD_FRAME, GT_FRAME)]), s)
    if single_file:
        inner = bag_dir / (bag_dir.name + ".mcap")
        os.replace(inner, path)
        shutil.rmtree(bag_dir)
    return path


def image_to_numpy(msg, where: str) -> np.ndarray:
    """sensor_msgs/Image -> mono8 uint8 (colour converted to grey) or float32 metres (depth)."""
    enc = msg.encoding.lower()
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    channels = {"mono8": 1, "8uc1": 1, "rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4,
                "mono16": 2, "16uc1": 2, "32fc1": 4}
    if enc not in channels:
        raise DataError(where, f"unsupported image encoding {msg.encoding!r} "
                               "(mono8, rgb8, bgr8, rgba8, bgra8, mono16/16UC1 depth, 32FC1 depth)")
    bpp = channels[enc]
    if h <= 0 or w <= 0 or step < w * bpp or data.size < h * step:
        raise DataError(where, f"image data size {data.size} does not match {w}x{h}, step {step}, {msg.encoding}")
    rows = data[: h * step].reshape(h, step)[:, : w * bpp]
    if enc in ("mono8", "8uc1"):
        return np.ascontiguousarray(rows)
    if enc in ("rgb8", "bgr8", "rgba8", "bgra8"):
        img = rows.reshape(h, w, bpp)
        code = {"rgb8": cv2.COLOR_RGB2GRAY, "bgr8": cv2.COLOR_BGR2GRAY,
                "rgba8": cv2.COLOR_RGBA2GRAY, "bgra8": cv2.COLOR_BGRA2GRAY}[enc]
        return cv2.cvtColor(np.ascontiguousarray(img), code)
    order = ">" if msg.is_bigendian else "<"
    if enc == "32fc1":
        return np.ascontiguousarray(rows).view(order + "f4").reshape(h, w).astype(np.float32)
    return np.ascontiguousarray(rows).view(order + "u2").reshape(h, w).astype(np.float32) * np.float32(0.001)


def _camera_from_info(msg, where: str) -> tuple[CameraIntrinsics, np.ndarray]:
    k = np.asarray(msg.k, dtype=np.float64)
    p = np.asarray(msg.p, dtype=np.float64).reshape(3, 4)
    if msg.width <= 0 or msg.height <= 0 or not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        raise DataError(where, f"invalid CameraInfo (size {msg.width}x{msg.height}, K {k.tolist()})")
    dist = np.asarray(msg.d, dtype=np.float64)
    cam = CameraIntrinsics(int(msg.width), int(msg.height), float(k[0]), float(k[4]), float(k[2]), float(k[5]),
                           dist[:5].copy() if dist.size else np.zeros(4))
    return cam, p


class BagSource:
    """A FrameSource over a rosbag2 (.mcap file, or a bag folder with mcap or sqlite3 storage).

    Topics default to the camera-driver names; when a bag has other names, the image topics are
    found by type (``sensor_msgs/msg/Image``, the one with "left" / "right" / "depth" in its name).
    Calibration comes from the first CameraInfo messages, the extrinsics from ``/tf_static``
    (base_link -> left camera; else a camera looking along base x), ground truth from PoseStamped.
    """

    def __init__(self, path: "str | os.PathLike", left_topic: Optional[str] = None,
                 right_topic: Optional[str] = None, depth_topic: Optional[str] = None,
                 gt_topic: Optional[str] = GT_POSE, max_stamp_diff_ns: int = 1_000_000):
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise DataError(self.path, "no such bag")
        self.name = f"bag:{self.path.name}"
        self._ts = typestore()
        self.max_stamp_diff_ns = int(max_stamp_diff_ns)
        try:
            with Reader(self.path) as reader:
                self._conns = {c.topic: c for c in reader.connections}
        except Exception as exc:  # rosbags raises several types for unreadable/corrupt bags
            raise DataError(self.path, f"cannot open rosbag2 ({type(exc).__name__}: {exc})") from None
        images = sorted(t for t, c in self._conns.items() if c.msgtype == IMAGE_T)

        def pick(explicit, default, word):
            if explicit is not None:
                if explicit not in self._conns:
                    raise DataError(self.path, f"topic {explicit!r} not in bag (topics: {sorted(self._conns)})")
                return explicit
            if default in self._conns:
                return default
            return next((t for t in images if word in t and "depth" not in t) if word != "depth"
                        else (t for t in images if word in t), None)

        self.left_topic = pick(left_topic, LEFT_IMAGE, "left")
        if self.left_topic is None:
            self.left_topic = next((t for t in images if "depth" not in t), None)
        if self.left_topic is None:
            raise DataError(self.path, f"no image topic in bag (topics: {sorted(self._conns)})")
        self.right_topic = pick(right_topic, RIGHT_IMAGE, "right")
        self.depth_topic = pick(depth_topic, DEPTH_IMAGE, "depth")
        self.gt_topic = gt_topic if gt_topic in self._conns else next(
            (t for t, c in self._conns.items() if c.msgtype == POSE_T), None)
        self._gt: Optional[Trajectory] = None
        self.rig = self._read_calibration()

    def _info_topic(self, image_topic: Optional[str]) -> Optional[str]:
        if image_topic is None:
            return None
        base = image_topic.rsplit("/", 1)[0] + "/camera_info"
        return base if base in self._conns else None

    def _messages(self, topics):
        from rosbags.rosbag2 import Reader

        topics = [t for t in topics if t is not None]
        if not topics:  # rosbags reads every topic when given no connections
            return
        with Reader(self.path) as reader:
            conns = [c for c in reader.connections if c.topic in topics]
            for conn, t, raw in reader.messages(connections=conns):
                yield conn, t, raw

    def _decode(self, conn, raw, where):
        try:
            return self._ts.deserialize_cdr(raw, conn.msgtype)
        except Exception as exc:
            raise DataError(where, f"cannot decode {conn.msgtype} ({type(exc).__name__}: {exc})") from None

    def _read_calibration(self) -> StereoRig:
        wanted = {self._info_topic(self.left_topic), self._info_topic(self.right_topic)} - {None}
        infos, T_body_left, T_left_right = {}, None, None
        topics = list(wanted) + ([TF_STATIC] if TF_STATIC in self._conns else [])
        for conn, _, raw in self._messages(topics):
            where = f"{self.path} topic {conn.topic}"
            if conn.topic == TF_STATIC:
                for tr in self._decode(conn, raw, where).transforms:
                    T = _pose_from_msg(tr.transform.translation, tr.transform.rotation)
                    if tr.child_frame_id == LEFT_FRAME or tr.child_frame_id.endswith("left_optical_frame"):
                        T_body_left = T
                    elif tr.child_frame_id == RIGHT_FRAME:
                        T_left_right = T
            elif conn.topic not in infos:
                infos[conn.topic] = _camera_from_info(self._decode(conn, raw, where), where)
            if len(infos) == len(wanted) and (T_body_left is not None or TF_STATIC not in self._conns):
                break
        left_info = self._info_topic(self.left_topic)
        if left_info not in infos:
            raise DataError(self.path, f"missing calibration: no CameraInfo for {self.left_topic}")
        left, _ = infos[left_info]
        if T_body_left is None:
            T_body_left = np.eye(4)
            T_body_left[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
        right_info = self._info_topic(self.right_topic)
        right = None
        if right_info in infos:
            right, p = infos[right_info]
            if T_left_right is None:
                T_left_right = np.eye(4)
                T_left_right[0, 3] = -p[0, 3] / p[0, 0]
        rectified = not left.is_distorted and (right is None or not right.is_distorted)
        return StereoRig(left=left, right=right if self.right_topic else None, T_body_left=T_body_left,
                         T_left_right=T_left_right if T_left_right is not None else np.eye(4),
                         rectified=rectified)

    def __len__(self) -> int:
        return int(self._conns[self.left_topic].msgcount)

    def ground_truth(self) -> Optional[Trajectory]:
        if self._gt is None and self.gt_topic is not None:
            stamps, poses = [], []
            for conn, _, raw in self._messages([self.gt_topic]):
                msg = self._decode(conn, raw, f"{self.path} topic {conn.topic}")
                stamps.append(msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec)
                poses.append(_pose_from_msg(msg.pose.position, msg.pose.orientation))
            if stamps:
                order = np.argsort(stamps, kind="stable")
                self._gt = Trajectory(np.array(stamps)[order], np.array(poses)[order])
        return self._gt

    def __iter__(self) -> Iterator[StereoFrame]:
        """Frames in bag order; left/right/depth paired by header stamp (within max_stamp_diff_ns).

        Undecodable messages and unpaired images are logged and dropped."""
        topics = [self.left_topic, self.right_topic, self.depth_topic]
        truth = self.ground_truth()
        gt = dict(zip(truth.stamps_ns.tolist(), truth.poses)) if truth is not None else {}
        pending: dict = {}  # stamp -> {"left": img, "right": img, "depth": img}
        need = ["left"] + (["right"] if self.rig.right is not None and self.right_topic else []) + \
            (["depth"] if self.depth_topic else [])
        role = {self.left_topic: "left", self.right_topic: "right", self.depth_topic: "depth"}
        counts = {t: 0 for t in topics}
        index = 0
        for conn, _, raw in self._messages(topics):
            where = f"{self.path} topic {conn.topic} message {counts[conn.topic]}"
            counts[conn.topic] += 1
            try:
                msg = self._decode(conn, raw, where)
                stamp = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                img = image_to_numpy(msg, where)
            except DataError as exc:
                log.warning("dropping message: %s", exc)
                continue
            key = next((s for s in pending if abs(s - stamp) <= self.max_stamp_diff_ns), stamp)
            entry = pending.setdefault(key, {})
            entry[role[conn.topic]] = img
            if all(r in entry for r in need):
                del pending[key]
                # Anything older than this frame can no longer be completed: drop it.
                for old in [s for s in pending if s < key]:
                    log.warning("%s: dropping unpaired image(s) at stamp %d", self.path, old)
                    del pending[old]
                pose = gt.get(int(key))
                yield StereoFrame(stamp_ns=int(key), left=entry["left"], right=entry.get("right"),
                                  depth=entry.get("depth"), index=index,
                                  gt_T_world_body=None if pose is None else pose.copy())
                index += 1
