"""/tf and /tf_static for the nodes, as tf2_msgs/TFMessage (what tf2_ros's broadcasters and listeners use).

``tf2_msgs`` is optional: a ROS 2 install has it; on the pip-only machines here ``./dev.sh`` builds it
(dev/build_interfaces.py). Without it the nodes log once that /tf is off, publish the same transforms on
their own topics only (vo/odometry, loop_closure/map_to_odom) and take the camera extrinsic from parameters.
"""

from __future__ import annotations

import time
from typing import Callable, Optional

import numpy as np
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

from mpslam_ros.geometry import lie
from mpslam_ros.nodes import msgs
from mpslam_ros.nodes.params import declare_camera_extrinsic, declare_extrinsic_source

#: tf2_ros's TransformBroadcaster and TransformListener profile for /tf
TF_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
#: tf2_ros's static listener profile for /tf_static (latched: a late subscriber still gets it)
TF_STATIC_QOS = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE,
                           durability=DurabilityPolicy.TRANSIENT_LOCAL)


def tf_message_type():
    """tf2_msgs.msg.TFMessage, or None where tf2_msgs is not installed."""
    try:
        from tf2_msgs.msg import TFMessage
    except ImportError:
        return None
    return TFMessage


class TfBroadcaster:
    """Publishes transforms on /tf (absolute: one tf tree per DDS domain, as tf2_ros does)."""

    def __init__(self, node: Node, message_type) -> None:
        self._type = message_type
        self._pub = node.create_publisher(message_type, "/tf", TF_QOS)

    def send(self, T_parent_child: np.ndarray, stamp_ns: int, parent: str, child: str) -> None:
        self._pub.publish(self._type(transforms=[msgs.transform_stamped(T_parent_child, stamp_ns, parent, child)]))


def tf_broadcaster(node: Node, enabled: bool, what: str) -> Optional[TfBroadcaster]:
    """A /tf broadcaster for ``what`` (e.g. "odom -> base_link"), or None (logged once) where publish_tf is
    false or tf2_msgs is missing."""
    if not enabled:
        node.get_logger().info(f"publish_tf is false: {what} not on /tf")
        return None
    message_type = tf_message_type()
    if message_type is None:
        node.get_logger().warning(f"tf2_msgs is not installed: /tf is off ({what} only on this node's own topics)")
        return None
    node.get_logger().info(f"publishing {what} on /tf")
    return TfBroadcaster(node, message_type)


class StaticTransforms:
    """The transforms received on /tf_static (each child has one parent), composed along the tree."""

    def __init__(self, node: Node, on_update: Optional[Callable[[], None]] = None) -> None:
        self._node = node
        self._parent: dict[str, tuple[str, np.ndarray]] = {}  # child -> (parent, T_parent_child)
        self._on_update = on_update
        message_type = tf_message_type()
        self.available = message_type is not None
        if self.available:
            node.create_subscription(message_type, "/tf_static", self._on_message, TF_STATIC_QOS)

    def _on_message(self, msg) -> None:
        for tr in msg.transforms:
            try:
                T = msgs.transform_to_matrix(tr)
            except msgs.MessageError as exc:
                self._node.get_logger().warning(
                    f"ignoring /tf_static {tr.header.frame_id} -> {tr.child_frame_id}: {exc}")
                continue
            self._parent[tr.child_frame_id] = (tr.header.frame_id, T)
        if self._on_update is not None:
            self._on_update()

    def _from_root(self, frame: str) -> tuple[str, np.ndarray]:
        T = np.eye(4)
        seen = {frame}
        while frame in self._parent:
            parent, T_parent_frame = self._parent[frame]
            if parent in seen:  # a cycle in bad input: treat as unconnected
                break
            seen.add(parent)
            T = T_parent_frame @ T
            frame = parent
        return frame, T

    def lookup(self, parent: str, child: str) -> Optional[np.ndarray]:
        """T_parent_child through the static tree, or None when the two frames are not connected."""
        root_p, T_root_parent = self._from_root(parent)
        root_c, T_root_child = self._from_root(child)
        if root_p != root_c:
            return None
        return np.linalg.inv(T_root_parent) @ T_root_child

    def publishers(self) -> int:
        return self._node.count_publishers("/tf_static") if self.available else 0


def camera_extrinsic(node: Node, on_update: Optional[Callable[[], None]] = None) -> "CameraExtrinsic":
    """The node's CameraExtrinsic from its ``camera_extrinsic.*`` parameters (subscribes to /tf_static)."""
    T_params = declare_camera_extrinsic(node)
    use_tf_static, wait_s = declare_extrinsic_source(node)
    return CameraExtrinsic(node, T_params, use_tf_static, wait_s, on_update)


class CameraExtrinsic:
    """Where the camera sits on the robot (T_base_camera): from /tf_static when it connects the two frames,
    else from the parameters. With a /tf_static publisher present, :meth:`resolve` waits up to ``wait_s``
    (steady time) for the transform before it falls back, since a bag's /tf_static and first CameraInfo
    arrive on separate topics in no guaranteed order. A transform that arrives only after the fallback
    and differs from the parameters is not applied (the trajectory so far is in the parameters' frame)
    but is logged as a warning and counted in :attr:`late_mismatch` for /diagnostics."""

    #: a late /tf_static transform this far (m, rad) from the parameters' counts as a mismatch
    MISMATCH_M, MISMATCH_RAD = 1e-3, 1e-3

    def __init__(self, node: Node, T_from_params: np.ndarray, use_tf_static: bool, wait_s: float,
                 on_update: Optional[Callable[[], None]] = None) -> None:
        self._node = node
        self._T_params = T_from_params
        self._wait_s = wait_s
        self._waiting_since: Optional[float] = None
        self._use = use_tf_static
        self._on_update = on_update
        self._fell_back: Optional[tuple[str, str, float]] = None  # (base, camera, when) after a timeout
        #: where the extrinsic in use came from ("" until resolved), for /diagnostics
        self.source = ""
        #: 1 once /tf_static brought, after the fallback, a transform other than the parameters'
        self.late_mismatch = 0
        self.static = StaticTransforms(node, self._on_static) if use_tf_static else None

    def _on_static(self) -> None:
        if self._on_update is not None:
            self._on_update()
        self._check_late()

    def _check_late(self) -> None:
        """Warn (once) when /tf_static has, after the fall-back, a transform other than the parameters'."""
        if self._fell_back is None or self.late_mismatch:
            return
        base, camera, when = self._fell_back
        T = self.static.lookup(base, camera)
        if T is None:
            return
        dt = np.linalg.norm(T[:3, 3] - self._T_params[:3, 3])
        dR = float(lie.rotation_angle(self._T_params[:3, :3].T @ T[:3, :3]))
        if dt > self.MISMATCH_M or dR > self.MISMATCH_RAD:
            self.late_mismatch = 1
            self._node.get_logger().warning(
                f"/tf_static brought {base} -> {camera} ({describe(T)}) {time.monotonic() - when:.1f} s after "
                f"the parameters' extrinsic was taken ({describe(self._T_params)}; {dt:.3f} m, "
                f"{np.degrees(dR):.2f} deg apart): keeping the parameters' for this run (restart the node, "
                "or raise camera_extrinsic.tf_static_wait_s, to use /tf_static)")

    def diagnostics(self) -> tuple[dict, str]:
        """(values for a node's /diagnostics, a note for its message: "" unless a late /tf_static differs;
        the node raises its level to WARN when the note is not empty)."""
        values = {"camera_extrinsic_from": self.source or "not yet",
                  "camera_extrinsic_late_mismatch": self.late_mismatch}
        note = "/tf_static extrinsic arrived late and differs from the parameters' in use" if self.late_mismatch else ""
        return values, note

    def resolve(self, base: str, camera: str, wait: bool = True) -> Optional[tuple[np.ndarray, str]]:
        """(T_base_camera, where it came from), or None while still waiting for /tf_static."""
        resolved = self._resolve(base, camera, wait)
        if resolved is not None:
            self.source = resolved[1]
            if resolved[0] is self._T_params and self.static is not None and self.static.available:
                self._fell_back = (base, camera, time.monotonic())
                self._check_late()  # a transform that came in meanwhile (wait=False callers); not
                # _on_static: on_update (the caller's calibration) may be what called resolve
        return resolved

    def _resolve(self, base: str, camera: str, wait: bool) -> Optional[tuple[np.ndarray, str]]:
        if not self._use:
            return self._T_params, "parameters camera_extrinsic.* (camera_extrinsic.from_tf_static is false)"
        if not self.static.available:
            return self._T_params, "parameters camera_extrinsic.* (tf2_msgs is not installed)"
        T = self.static.lookup(base, camera)
        if T is not None:
            return T, f"/tf_static ({base} -> {camera})"
        if self.static.publishers() == 0:
            return self._T_params, "parameters camera_extrinsic.* (nothing publishes /tf_static)"
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
        if wait and now - self._waiting_since < self._wait_s:
            return None
        return self._T_params, (f"parameters camera_extrinsic.* (/tf_static has no {base} -> {camera} after "
                                f"{now - self._waiting_since:.1f} s)")


def describe(T: np.ndarray) -> str:
    """Translation and (x, y, z, w) quaternion of a transform, for the log."""
    q = msgs.rotation_to_quaternion(T[:3, :3])
    return (f"t=[{T[0, 3]:.3f}, {T[1, 3]:.3f}, {T[2, 3]:.3f}] m, "
            f"q_xyzw=[{q[0]:.3f}, {q[1]:.3f}, {q[2]:.3f}, {q[3]:.3f}]")
