"""Conversions between ROS 2 standard messages and the package's numpy / datatypes world.

Every decoder checks what it is given and raises :class:`MessageError` with the reason, so a node
can log the reason once and drop the message. Only standard message packages are used
(sensor_msgs, geometry_msgs, nav_msgs, visualization_msgs, diagnostic_msgs): custom .msg packages
cannot be built from the registries this project installs from.

Keyframe transport (VO -> loop closure), two messages with the same ``header.stamp``:
  * ``sensor_msgs/PointCloud2`` (frame = left camera optical frame), one point per feature with
    fields ``x y z`` (float64, the landmark in the camera frame, NaN when unknown), ``u v``
    (float32 pixel), ``landmark_id`` (int32, -1 = none) and ``descriptor`` (uint8 x 32); then the
    keyframe's place features as more points with ``kind`` = 1 (``x y z`` NaN, ``size``/``angle`` the
    ORB scale and orientation): ~500 x 81 bytes, far below the ~0.5 MB where DDS needs LARGE_DATA;
  * ``nav_msgs/Odometry`` (frame = odom, child = base_link): the keyframe's odometry pose.
The camera model of the keypoints' image (K, no distortion) goes once, latched, as a CameraInfo on
``vo/keyframes/camera_info``. The receiver numbers keyframes in arrival order and takes the camera
extrinsic from its parameters, so no field is overloaded with a meaning it does not have.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Optional, Sequence

import numpy as np
from builtin_interfaces.msg import Time
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, Pose, PoseStamped, Quaternion, TransformStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
from std_msgs.msg import Header
from visualization_msgs.msg import Marker, MarkerArray

from mpslam_ros.datatypes import CameraIntrinsics, Keyframe, StereoFrame, StereoRig


class MessageError(ValueError):
    """A message that cannot be used; ``str(err)`` is the reason to log."""


# --------------------------------------------------------------------------- time


def ns_to_time(stamp_ns: int) -> Time:
    stamp_ns = int(stamp_ns)
    return Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000)


def time_to_ns(stamp: Time) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def make_header(stamp_ns: int, frame_id: str) -> Header:
    return Header(stamp=ns_to_time(stamp_ns), frame_id=frame_id)


# --------------------------------------------------------------------------- images

#: encoding -> (numpy dtype, channels)
_ENCODINGS = {
    "mono8": (np.uint8, 1),
    "8UC1": (np.uint8, 1),
    "rgb8": (np.uint8, 3),
    "bgr8": (np.uint8, 3),
    "rgba8": (np.uint8, 4),
    "bgra8": (np.uint8, 4),
    "mono16": (np.uint16, 1),
    "16UC1": (np.uint16, 1),
    "32FC1": (np.float32, 1),
}


def image_to_numpy(msg: Image) -> np.ndarray:
    """Decode an Image into an array ``[h, w]`` or ``[h, w, c]`` (a view on the message data)."""
    if msg.encoding not in _ENCODINGS:
        raise MessageError(f"unsupported image encoding {msg.encoding!r} (supported: {', '.join(_ENCODINGS)})")
    dtype, channels = _ENCODINGS[msg.encoding]
    dtype = np.dtype(dtype)
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    if h <= 0 or w <= 0:
        raise MessageError(f"empty image ({w}x{h})")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise MessageError(f"step {step} < width*pixel size {row_bytes} for {msg.encoding} {w}x{h}")
    data = msg.data
    if len(data) != step * h:
        raise MessageError(f"data size {len(data)} != step*height {step * h} ({msg.encoding} {w}x{h})")
    buf = np.frombuffer(data, dtype=np.uint8).reshape(h, step)[:, :row_bytes]
    if dtype.itemsize > 1:
        order = ">" if msg.is_bigendian else "<"
        buf = np.ascontiguousarray(buf).view(dtype.newbyteorder(order)).astype(dtype, copy=False)
    arr = buf.reshape(h, w, channels)
    return arr[:, :, 0] if channels == 1 else arr


def image_to_mono8(msg: Image) -> np.ndarray:
    """Grey ``uint8[h, w]`` image for the frontend; colour images are converted (rgb/bgr aware)."""
    arr = image_to_numpy(msg)
    if arr.dtype != np.uint8:
        raise MessageError(f"expected an 8-bit intensity image, got encoding {msg.encoding!r}")
    if arr.ndim == 2:
        return arr
    rgb_first = msg.encoding.startswith("rgb")
    r, g, b = (arr[..., 0], arr[..., 1], arr[..., 2]) if rgb_first else (arr[..., 2], arr[..., 1], arr[..., 0])
    grey = 0.299 * r.astype(np.float32) + 0.587 * g + 0.114 * b  # ITU-R BT.601, as OpenCV
    return np.clip(grey + 0.5, 0, 255).astype(np.uint8)


def image_to_depth(msg: Image, depth_scale: float = 0.001) -> np.ndarray:
    """Depth in metres ``float32[h, w]`` (NaN = none); 16-bit images are scaled by ``depth_scale``."""
    arr = image_to_numpy(msg)
    if arr.ndim != 2:
        raise MessageError(f"depth image must have one channel, got encoding {msg.encoding!r}")
    if arr.dtype == np.uint16:
        depth = arr.astype(np.float32) * np.float32(depth_scale)
        depth[arr == 0] = np.nan
        return depth
    if arr.dtype == np.float32:
        depth = arr.astype(np.float32, copy=True)
        depth[~(depth > 0)] = np.nan
        return depth
    raise MessageError(f"depth image must be 16UC1/mono16 or 32FC1, got {msg.encoding!r}")


def numpy_to_image(arr: np.ndarray, stamp_ns: int, frame_id: str, encoding: Optional[str] = None) -> Image:
    """Encode an array as an Image; the encoding defaults from dtype/shape (mono8, rgb8, 16UC1, 32FC1)."""
    arr = np.ascontiguousarray(arr)
    if encoding is None:
        encoding = {
            (np.dtype(np.uint8), 2): "mono8",
            (np.dtype(np.uint8), 3): "rgb8",
            (np.dtype(np.uint16), 2): "16UC1",
            (np.dtype(np.float32), 2): "32FC1",
        }.get((arr.dtype, arr.ndim))
        if encoding is None:
            raise MessageError(f"no image encoding for dtype {arr.dtype} with shape {arr.shape}")
    dtype, channels = _ENCODINGS[encoding]
    if arr.dtype != np.dtype(dtype) or (arr.shape[2] if arr.ndim == 3 else 1) != channels:
        raise MessageError(f"array {arr.dtype}{list(arr.shape)} does not match encoding {encoding!r}")
    msg = Image(header=make_header(stamp_ns, frame_id), height=arr.shape[0], width=arr.shape[1],
                encoding=encoding, is_bigendian=0, step=arr.shape[1] * channels * arr.dtype.itemsize)
    msg.data = arr.tobytes()
    return msg



def frame_as_received(frame: StereoFrame, depth_scale: float) -> StereoFrame:
    """``frame`` encoded to Image messages and decoded as vo_node's image callbacks do (same dtypes, layouts,
    flags): what warm-ups and rare-path checks feed VO so it meets the arrays a camera's frames have."""
    frame.left = image_to_mono8(numpy_to_image(frame.left, frame.stamp_ns, "camera_left"))
    if frame.right is not None:
        frame.right = image_to_mono8(numpy_to_image(frame.right, frame.stamp_ns, "camera_right"))
    if frame.depth is not None:
        frame.depth = image_to_depth(numpy_to_image(frame.depth, frame.stamp_ns, "camera_left"), depth_scale)
    return frame


# --------------------------------------------------------------------------- calibration


def camera_info_to_intrinsics(msg: CameraInfo) -> CameraIntrinsics:
    k = np.asarray(msg.k, dtype=np.float64)
    if msg.width <= 0 or msg.height <= 0:
        raise MessageError(f"CameraInfo has no image size ({msg.width}x{msg.height})")
    if not np.all(np.isfinite(k)) or k[0] <= 0 or k[4] <= 0:
        raise MessageError(f"CameraInfo K is not a valid camera matrix: {k.tolist()}")
    model = msg.distortion_model or "plumb_bob"
    dist = np.asarray(msg.d, dtype=np.float64)
    if dist.size and model not in ("plumb_bob", "rational_polynomial"):
        raise MessageError(f"unsupported distortion model {model!r}")
    if dist.size == 0:
        dist = np.zeros(4)
    return CameraIntrinsics(width=int(msg.width), height=int(msg.height), fx=float(k[0]), fy=float(k[4]),
                            cx=float(k[2]), cy=float(k[5]), distortion=dist[:5].copy())


def camera_infos_to_rig(left: CameraInfo, right: Optional[CameraInfo], T_body_left: np.ndarray,
                        depth_scale: float = 1.0) -> StereoRig:
    """Stereo rig from the two CameraInfos (ROS convention: right ``P[0,3] = -fx' * baseline``).

    The images count as rectified when neither camera has distortion and the right P carries the
    baseline; RGB-D rigs pass ``right=None``.
    """
    left_cam = camera_info_to_intrinsics(left)
    if right is None:
        return StereoRig(left=left_cam, right=None, T_body_left=np.asarray(T_body_left, float),
                         rectified=not left_cam.is_distorted, depth_scale=depth_scale)
    right_cam = camera_info_to_intrinsics(right)
    p = np.asarray(right.p, dtype=np.float64).reshape(3, 4)
    if p[0, 0] <= 0 or p[0, 3] >= 0:
        raise MessageError(f"right CameraInfo P has no stereo baseline (P[0,3]={p[0, 3]}, expected < 0)")
    # R_i rotates camera i into the common rectified frame, where the right camera sits at +x baseline
    R_l = np.asarray(left.r, dtype=np.float64).reshape(3, 3)
    R_r = np.asarray(right.r, dtype=np.float64).reshape(3, 3)
    if not np.any(R_l) or not np.any(R_r):  # unset R: already rectified
        R_l = R_r = np.eye(3)
    T_left_right = np.eye(4)
    T_left_right[:3, :3] = R_l.T @ R_r
    T_left_right[:3, 3] = R_l.T @ np.array([-p[0, 3] / p[0, 0], 0.0, 0.0])
    rectified = not (left_cam.is_distorted or right_cam.is_distorted)
    return StereoRig(left=left_cam, right=right_cam, T_body_left=np.asarray(T_body_left, float),
                     T_left_right=T_left_right, rectified=rectified)


def intrinsics_to_camera_info(cam: CameraIntrinsics, stamp_ns: int, frame_id: str, baseline: float = 0.0) -> CameraInfo:
    """CameraInfo of a (rectified) camera; ``baseline`` > 0 makes it the right camera of a pair."""
    msg = CameraInfo(header=make_header(stamp_ns, frame_id), width=cam.width, height=cam.height,
                     distortion_model="plumb_bob")
    msg.d = [float(x) for x in np.asarray(cam.distortion, float)]
    msg.k = [cam.fx, 0.0, cam.cx, 0.0, cam.fy, cam.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [cam.fx, 0.0, cam.cx, -cam.fx * baseline, 0.0, cam.fy, cam.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# --------------------------------------------------------------------------- poses


def rotation_to_quaternion(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (x, y, z, w) of a rotation matrix, w >= 0 (Shepperd's method)."""
    R = np.asarray(R, dtype=np.float64)
    tr = R[0, 0] + R[1, 1] + R[2, 2]
    if tr > 0:
        s = 2.0 * np.sqrt(tr + 1.0)
        q = np.array([(R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s, 0.25 * s])
    elif R[0, 0] > R[1, 1] and R[0, 0] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = np.array([0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s, (R[2, 1] - R[1, 2]) / s])
    elif R[1, 1] > R[2, 2]:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = np.array([(R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s, (R[0, 2] - R[2, 0]) / s])
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = np.array([(R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s, (R[1, 0] - R[0, 1]) / s])
    q /= np.linalg.norm(q)
    return -q if q[3] < 0 else q


def quaternion_to_rotation(q: Sequence[float]) -> np.ndarray:
    """Rotation matrix of a quaternion (x, y, z, w); it is normalised first."""
    x, y, z, w = np.asarray(q, dtype=np.float64)
    n = x * x + y * y + z * z + w * w
    if not np.isfinite(n) or n < 1e-12:
        raise MessageError(f"invalid quaternion {[x, y, z, w]}")
    s = 2.0 / n
    return np.array([
        [1 - s * (y * y + z * z), s * (x * y - z * w), s * (x * z + y * w)],
        [s * (x * y + z * w), 1 - s * (x * x + z * z), s * (y * z - x * w)],
        [s * (x * z - y * w), s * (y * z + x * w), 1 - s * (x * x + y * y)],
    ])


def matrix_to_pose(T: np.ndarray) -> Pose:
    T = np.asarray(T, dtype=np.float64)
    qx, qy, qz, qw = rotation_to_quaternion(T[:3, :3])
    t = T[:3, 3]
    return Pose(position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
                orientation=Quaternion(x=float(qx), y=float(qy), z=float(qz), w=float(qw)))


def pose_to_matrix(pose: Pose) -> np.ndarray:
    p, o = pose.position, pose.orientation
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation((o.x, o.y, o.z, o.w))
    T[:3, 3] = (p.x, p.y, p.z)
    if not np.all(np.isfinite(T)):
        raise MessageError("pose contains NaN/inf")
    return T


def transform_from_params(translation: Sequence[float], quaternion_xyzw: Sequence[float]) -> np.ndarray:
    """4x4 transform from a translation and an (x, y, z, w) quaternion, as given in parameters."""
    if len(translation) != 3 or len(quaternion_xyzw) != 4:
        raise ValueError(f"extrinsic needs 3 translation and 4 quaternion values, got "
                         f"{list(translation)} and {list(quaternion_xyzw)}")
    T = np.eye(4)
    T[:3, :3] = quaternion_to_rotation(quaternion_xyzw)
    T[:3, 3] = translation
    return T


def pose_stamped(T: np.ndarray, stamp_ns: int, frame_id: str) -> PoseStamped:
    return PoseStamped(header=make_header(stamp_ns, frame_id), pose=matrix_to_pose(T))


def transform_stamped(T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str) -> TransformStamped:
    msg = TransformStamped(header=make_header(stamp_ns, parent), child_frame_id=child)
    pose = matrix_to_pose(T_parent_child)
    tr = msg.transform.translation
    tr.x, tr.y, tr.z = pose.position.x, pose.position.y, pose.position.z
    msg.transform.rotation = pose.orientation
    return msg


def transform_to_matrix(msg: TransformStamped) -> np.ndarray:
    t, q = msg.transform.translation, msg.transform.rotation
    return pose_to_matrix(Pose(position=Point(x=t.x, y=t.y, z=t.z), orientation=q))


def odometry(T_odom_body: np.ndarray, stamp_ns: int, odom_frame: str, body_frame: str,
             covariance_diag: Optional[np.ndarray] = None) -> Odometry:
    """Odometry message; ``covariance_diag`` (6,) fills the pose covariance diagonal (-1 = unknown)."""
    msg = Odometry(header=make_header(stamp_ns, odom_frame), child_frame_id=body_frame)
    msg.pose.pose = matrix_to_pose(T_odom_body)
    cov = np.zeros(36)
    if covariance_diag is not None and np.all(np.isfinite(covariance_diag)):
        cov[::7] = np.asarray(covariance_diag, dtype=np.float64)[:6]
    else:
        cov[0] = -1.0  # REP-145 style "unknown"
    msg.pose.covariance = cov.tolist()
    return msg


def path(stamps_ns: Sequence[int], poses: Iterable[np.ndarray], frame_id: str) -> Path:
    stamps_ns = list(stamps_ns)
    msg = Path(header=make_header(stamps_ns[-1] if stamps_ns else 0, frame_id))
    msg.poses = [pose_stamped(T, s, frame_id) for s, T in zip(stamps_ns, poses)]
    return msg


def path_to_arrays(msg: Path) -> tuple[np.ndarray, np.ndarray]:
    """(stamps_ns int64[n], poses float64[n,4,4]) of a Path."""
    stamps = np.array([time_to_ns(p.header.stamp) for p in msg.poses], dtype=np.int64)
    poses = np.array([pose_to_matrix(p.pose) for p in msg.poses]).reshape(-1, 4, 4)
    return stamps, poses


# --------------------------------------------------------------------------- point clouds

_POINTFIELD_DTYPES = {
    PointField.INT8: np.int8, PointField.UINT8: np.uint8, PointField.INT16: np.int16,
    PointField.UINT16: np.uint16, PointField.INT32: np.int32, PointField.UINT32: np.uint32,
    PointField.FLOAT32: np.float32, PointField.FLOAT64: np.float64,
}
_NUMPY_TO_POINTFIELD = {np.dtype(v): k for k, v in _POINTFIELD_DTYPES.items()}


def structured_to_pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """PointCloud2 from a 1-D numpy structured array (one field per column; sub-arrays -> count)."""
    points = np.ascontiguousarray(points)
    fields = []
    for name in points.dtype.names:
        dt, offset = points.dtype.fields[name][:2]
        base, count = (dt.base, int(np.prod(dt.shape))) if dt.shape else (dt, 1)
        fields.append(PointField(name=name, offset=offset, datatype=_NUMPY_TO_POINTFIELD[np.dtype(base)], count=count))
    msg = PointCloud2(header=make_header(stamp_ns, frame_id), height=1, width=len(points), fields=fields,
                      is_bigendian=False, point_step=points.dtype.itemsize,
                      row_step=points.dtype.itemsize * len(points), is_dense=False)
    msg.data = points.tobytes()
    return msg


def pointcloud2_to_structured(msg: PointCloud2) -> np.ndarray:
    """Decode a PointCloud2 into a 1-D structured array (checks sizes and field layout)."""
    if msg.is_bigendian:
        raise MessageError("big-endian PointCloud2 is not supported")
    names, formats, offsets = [], [], []
    for f in msg.fields:
        if f.datatype not in _POINTFIELD_DTYPES:
            raise MessageError(f"PointCloud2 field {f.name!r} has unknown datatype {f.datatype}")
        base = np.dtype(_POINTFIELD_DTYPES[f.datatype])
        names.append(f.name)
        formats.append((base, (f.count,)) if f.count > 1 else base)
        offsets.append(f.offset)
    n = int(msg.width) * int(msg.height)
    dtype = np.dtype({"names": names, "formats": formats, "offsets": offsets, "itemsize": int(msg.point_step)})
    if len(msg.data) != n * msg.point_step or msg.row_step * msg.height != len(msg.data):
        raise MessageError(f"PointCloud2 data size {len(msg.data)} != {n} points x {msg.point_step} bytes")
    return np.frombuffer(msg.data, dtype=dtype, count=n) if n else np.zeros(0, dtype=dtype)


def points_to_pointcloud2(points: np.ndarray, stamp_ns: int, frame_id: str) -> PointCloud2:
    """xyz float32 cloud (for RViz) from float[m, 3]; non-finite points are dropped."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 3)
    pts = pts[np.all(np.isfinite(pts), axis=1)]
    arr = np.zeros(len(pts), dtype=[("x", np.float32), ("y", np.float32), ("z", np.float32)])
    arr["x"], arr["y"], arr["z"] = pts[:, 0], pts[:, 1], pts[:, 2]
    msg = structured_to_pointcloud2(arr, stamp_ns, frame_id)
    msg.is_dense = True
    return msg


def pointcloud2_to_points(msg: PointCloud2) -> np.ndarray:
    arr = pointcloud2_to_structured(msg)
    for axis in "xyz":
        if axis not in arr.dtype.names:
            raise MessageError(f"PointCloud2 has no {axis!r} field")
    return np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float64)


# --------------------------------------------------------------------------- keyframes

KEYFRAME_DTYPE = np.dtype([("x", np.float64), ("y", np.float64), ("z", np.float64), ("u", np.float32),
                           ("v", np.float32), ("landmark_id", np.int32), ("descriptor", np.uint8, (32,)),
                           ("map_id", np.int32), ("size", np.float32), ("angle", np.float32), ("kind", np.uint8)])
#: ``kind`` of a keyframe cloud point: a tracking feature (landmark, PnP verification) or a place
#: feature (oriented multi-scale ORB for place recognition: u, v, size, angle, descriptor; no 3D).
KIND_TRACKING, KIND_PLACE = 0, 1
#: Fields a keyframe cloud must have (``map_id``, the keyframe's map, is optional: older senders
#: have one map, 0).
KEYFRAME_REQUIRED = ("x", "y", "z", "u", "v", "landmark_id", "descriptor")


def keyframe_to_msgs(kf: Keyframe, camera_frame: str, odom_frame: str, body_frame: str) -> tuple[PointCloud2, Odometry]:
    """The two messages carrying a keyframe (features cloud + odometry pose, same stamp)."""
    n = len(kf.keypoints)
    if not (len(kf.descriptors) == len(kf.landmark_ids) == len(kf.points_cam) == n):
        raise MessageError(f"keyframe {kf.id}: inconsistent feature arrays")
    ids = np.asarray(kf.landmark_ids, dtype=np.int64)
    if n and (ids.max() > np.iinfo(np.int32).max or ids.min() < -1):
        raise MessageError(f"keyframe {kf.id}: landmark ids outside int32 range")
    pd = np.asarray(getattr(kf, "place_descriptors", np.zeros((0, 32))), dtype=np.uint8).reshape(-1, 32)
    pk = np.asarray(getattr(kf, "place_keypoints", np.zeros((0, 4))), dtype=np.float32).reshape(-1, 4)
    if len(pk) != len(pd):
        raise MessageError(f"keyframe {kf.id}: {len(pd)} place descriptors but {len(pk)} place keypoints")
    arr = np.zeros(n + len(pd), dtype=KEYFRAME_DTYPE)
    place = arr[n:]  # a view: the place features follow the tracking features
    place["x"] = place["y"] = place["z"] = np.nan
    place["u"], place["v"], place["size"], place["angle"] = pk[:, 0], pk[:, 1], pk[:, 2], pk[:, 3]
    place["landmark_id"] = -1
    place["descriptor"] = pd
    place["kind"] = KIND_PLACE
    arr["map_id"] = int(getattr(kf, "map_id", 0))
    pc = np.asarray(kf.points_cam, dtype=np.float64).reshape(n, 3)
    trk = arr[:n]
    trk["x"], trk["y"], trk["z"] = pc[:, 0], pc[:, 1], pc[:, 2]
    kp = np.asarray(kf.keypoints, dtype=np.float32).reshape(n, 2)
    trk["u"], trk["v"] = kp[:, 0], kp[:, 1]
    trk["landmark_id"] = ids
    trk["descriptor"] = np.asarray(kf.descriptors, dtype=np.uint8).reshape(n, 32)
    # map_id is per point: a PointCloud2 has no per-cloud field
    return (structured_to_pointcloud2(arr, kf.stamp_ns, camera_frame),
            odometry(kf.T_world_body, kf.stamp_ns, odom_frame, body_frame))


def keyframe_from_msgs(features: PointCloud2, pose: Odometry, kf_id: int, K: np.ndarray,
                       T_body_left: np.ndarray) -> Keyframe:
    """Rebuild a Keyframe; the receiver gives the id (arrival order), K and the camera extrinsic."""
    stamp = time_to_ns(features.header.stamp)
    if time_to_ns(pose.header.stamp) != stamp:
        raise MessageError("keyframe features and pose have different stamps")
    arr = pointcloud2_to_structured(features)
    missing = set(KEYFRAME_REQUIRED) - set(arr.dtype.names or ())
    if missing:
        raise MessageError(f"keyframe cloud lacks fields {sorted(missing)}")
    if arr.dtype["descriptor"].shape != (32,):
        raise MessageError(f"keyframe descriptor field must be uint8 x 32, got {arr.dtype['descriptor']}")
    place = np.zeros(0, dtype=arr.dtype)
    if "kind" in arr.dtype.names:  # older senders have tracking features only
        is_place = arr["kind"] == KIND_PLACE
        place, arr = arr[is_place], arr[~is_place]
    has_shape = place.dtype.names is not None and "size" in place.dtype.names and "angle" in place.dtype.names
    place_kp = (np.stack([place["u"], place["v"], place["size"], place["angle"]], axis=1) if has_shape
                else np.zeros((0, 4)))
    return Keyframe(
        place_descriptors=np.ascontiguousarray(place["descriptor"], dtype=np.uint8).reshape(-1, 32),
        place_keypoints=np.asarray(place_kp, np.float32).reshape(-1, 4),
        id=int(kf_id), stamp_ns=stamp, T_world_body=pose_to_matrix(pose.pose.pose),
        keypoints=np.stack([arr["u"], arr["v"]], axis=1).astype(np.float32),
        descriptors=np.ascontiguousarray(arr["descriptor"], dtype=np.uint8),
        landmark_ids=arr["landmark_id"].astype(np.int64),
        points_cam=np.stack([arr["x"], arr["y"], arr["z"]], axis=1).astype(np.float64),
        K=np.asarray(K, dtype=np.float64).reshape(3, 3), T_body_left=np.asarray(T_body_left, np.float64),
        map_id=int(arr["map_id"][0]) if "map_id" in arr.dtype.names and len(arr) else 0,
    )


# --------------------------------------------------------------------------- diagnostics, markers


def diagnostics(stamp_ns: int, name: str, hardware_id: str, level: int | bytes, message: str,
                values: Mapping[str, object]) -> DiagnosticArray:
    """One DiagnosticStatus (level: DiagnosticStatus.OK/WARN/ERROR/STALE) with key/value pairs."""
    level = level if isinstance(level, bytes) else bytes([level])  # DiagnosticStatus.OK etc. are bytes
    status = DiagnosticStatus(level=level, name=name, message=message, hardware_id=hardware_id)
    status.values = [KeyValue(key=str(k), value=(f"{v:.6g}" if isinstance(v, float) else str(v)))
                     for k, v in values.items()]
    return DiagnosticArray(header=make_header(stamp_ns, ""), status=[status])


def diagnostic_values(msg: DiagnosticArray) -> dict:
    """{status name: {key: value}} of a DiagnosticArray (values stay strings)."""
    return {s.name: {kv.key: kv.value for kv in s.values} for s in msg.status}


def loop_markers(edges: Sequence[tuple[np.ndarray, np.ndarray]], stamp_ns: int, frame_id: str,
                 namespace: str = "loops") -> MarkerArray:
    """A LINE_LIST between each loop's two keyframe positions, plus a sphere at each end."""
    lines = Marker(header=make_header(stamp_ns, frame_id), ns=namespace, id=0, type=Marker.LINE_LIST,
                   action=Marker.ADD)
    lines.pose.orientation.w = 1.0
    lines.scale.x = 0.02
    lines.color.r, lines.color.g, lines.color.b, lines.color.a = 1.0, 0.2, 0.2, 1.0
    ends = Marker(header=make_header(stamp_ns, frame_id), ns=namespace, id=1, type=Marker.SPHERE_LIST,
                  action=Marker.ADD)
    ends.pose.orientation.w = 1.0
    ends.scale.x = ends.scale.y = ends.scale.z = 0.06
    ends.color.r, ends.color.g, ends.color.b, ends.color.a = 1.0, 0.6, 0.0, 1.0
    for a, b in edges:
        for p in (a, b):
            pt = Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))
            lines.points.append(pt)
            ends.points.append(pt)
    return MarkerArray(markers=[lines, ends])
