"""OutputRecorder: subscribes to the SLAM graph's outputs in a background thread and keeps them.

Used by ``mpslam demo`` (summary, ATE, plots) and by the integration tests (every output topic
arrives with sane content). It runs its own rclpy context so it can live inside a process that
does other things (the demo's progress loop, pytest).
"""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from geometry_msgs.msg import PoseStamped, TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data
from sensor_msgs.msg import CameraInfo, PointCloud2
from visualization_msgs.msg import MarkerArray

from mpslam_ros.datatypes import Trajectory
from mpslam_ros.nodes.msgs import (diagnostic_values, path_to_arrays, pointcloud2_to_points, pose_to_matrix,
                                   time_to_ns, transform_to_matrix)
from mpslam_ros.nodes.tf import tf_message_type

#: Output topics of the graph (relative names, as the nodes publish them) -> message type.
OUTPUT_TOPICS = {
    "vo/odometry": Odometry,
    "vo/pose": PoseStamped,
    "vo/path": Path,
    "vo/landmarks": PointCloud2,
    "vo/keyframes/features": PointCloud2,
    "vo/keyframes/pose": Odometry,
    "loop_closure/path": Path,
    "loop_closure/map": PointCloud2,
    "loop_closure/map_to_odom": TransformStamped,
    "loop_closure/loop_markers": MarkerArray,
    "/diagnostics": DiagnosticArray,
}


@dataclass
class Recording:
    """What the recorder saw. Wall times are ``time.monotonic()`` seconds at arrival."""

    counts: dict = field(default_factory=lambda: defaultdict(int))
    first_arrival: dict = field(default_factory=dict)
    #: odometry: (stamp_ns, T_odom_body, arrival)
    odometry: list = field(default_factory=list)
    #: camera info arrivals (stamp_ns -> arrival), the reference for end-to-end latency
    camera_arrival: dict = field(default_factory=dict)
    vo_path: Optional[Path] = None
    corrected_path: Optional[Path] = None
    landmarks: Optional[np.ndarray] = None
    map_points: Optional[np.ndarray] = None
    map_to_odom: Optional[np.ndarray] = None
    loop_markers: Optional[MarkerArray] = None
    #: latest diagnostics per status name: {key: value}
    diagnostics: dict = field(default_factory=dict)
    keyframe_features: int = 0
    #: /tf (where tf2_msgs is installed): (parent, child) -> [(stamp_ns, T_parent_child)] in arrival order
    tf: dict = field(default_factory=lambda: defaultdict(list))


class OutputRecorder:
    """Record the SLAM outputs: ``with OutputRecorder(domain_id=7) as rec: ...; rec.data``."""

    def __init__(self, domain_id: Optional[int] = None, camera_info_topic: str = "camera/left/camera_info",
                 keep_clouds: bool = True, namespace: str = "") -> None:
        """``namespace``: the graph's (e.g. ``/robot1``): relative topic names resolve in it, as the nodes'
        do; /diagnostics stays global."""
        self.data = Recording()
        self.errors: list = []  # exceptions raised while handling a message
        self._lock = threading.Lock()
        self._keep_clouds = keep_clouds
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self.node = Node("slam_output_recorder", namespace=namespace, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        # deep queues: a starved recorder thread must not lose odometry it is asked to count
        reliable = QoSProfile(depth=2000, reliability=ReliabilityPolicy.RELIABLE)
        self._subscriptions = {}
        for topic, cls in OUTPUT_TOPICS.items():
            # best effort subscribers match both reliable and best-effort publishers
            qos = qos_profile_sensor_data if cls in (PointCloud2,) else reliable
            self._subscriptions[topic] = self.node.create_subscription(cls, topic, self._callback(topic), qos)
        self.node.create_subscription(CameraInfo, camera_info_topic, self._on_camera_info, qos_profile_sensor_data)
        tf_type = tf_message_type()
        #: whether /tf is recorded (tf2_msgs installed)
        self.records_tf = tf_type is not None
        if self.records_tf:
            self.node.create_subscription(tf_type, "/tf", self._on_tf, reliable)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._spin, name="recorder", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while not self._stop.is_set() and self._context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception as exc:  # keep recording; the error is kept for the caller to see
                self.errors.append(f"{type(exc).__name__}: {exc}")

    def _on_camera_info(self, msg: CameraInfo) -> None:
        with self._lock:
            self.data.camera_arrival.setdefault(time_to_ns(msg.header.stamp), time.monotonic())

    def _on_tf(self, msg) -> None:
        with self._lock:
            for tr in msg.transforms:
                self.data.tf[(tr.header.frame_id, tr.child_frame_id)].append(
                    (time_to_ns(tr.header.stamp), transform_to_matrix(tr)))

    def tf_transforms(self, parent: str, child: str) -> list:
        """[(stamp_ns, T_parent_child)] received on /tf, in arrival order."""
        with self._lock:
            return list(self.data.tf.get((parent, child), []))

    def _callback(self, topic: str):
        def on_message(msg) -> None:
            now = time.monotonic()
            with self._lock:
                d = self.data
                d.counts[topic] += 1
                d.first_arrival.setdefault(topic, now)
                if topic == "vo/odometry":
                    d.odometry.append((time_to_ns(msg.header.stamp), pose_to_matrix(msg.pose.pose), now))
                elif topic == "vo/path":
                    d.vo_path = msg
                elif topic == "loop_closure/path":
                    d.corrected_path = msg
                elif topic == "vo/landmarks" and self._keep_clouds:
                    d.landmarks = pointcloud2_to_points(msg)
                elif topic == "loop_closure/map" and self._keep_clouds:
                    d.map_points = pointcloud2_to_points(msg)
                elif topic == "loop_closure/map_to_odom":
                    d.map_to_odom = transform_to_matrix(msg)
                elif topic == "loop_closure/loop_markers":
                    d.loop_markers = msg
                elif topic == "vo/keyframes/features":
                    d.keyframe_features += msg.width * msg.height
                elif topic == "/diagnostics":
                    d.diagnostics.update(diagnostic_values(msg))
        return on_message

    # ------------------------------------------------------------------ results

    def count(self, topic: str) -> int:
        with self._lock:
            return self.data.counts.get(topic, 0)

    def odometry_trajectory(self) -> Trajectory:
        with self._lock:
            rows = sorted(self.data.odometry, key=lambda r: r[0])
        return Trajectory(np.array([r[0] for r in rows], dtype=np.int64),
                          np.array([r[1] for r in rows]).reshape(-1, 4, 4))

    def path_trajectory(self, corrected: bool) -> Optional[Trajectory]:
        """Latest keyframe path of VO (``corrected=False``) or of loop closure (map frame)."""
        with self._lock:
            msg = self.data.corrected_path if corrected else self.data.vo_path
        if msg is None or not msg.poses:
            return None
        stamps, poses = path_to_arrays(msg)
        return Trajectory(stamps, poses)

    def latencies(self) -> np.ndarray:
        """Seconds from each camera frame's arrival to its odometry's arrival (same stamp)."""
        with self._lock:
            cam = dict(self.data.camera_arrival)
            odo = list(self.data.odometry)
        return np.array([t - cam[s] for s, _, t in odo if s in cam], dtype=np.float64)

    def diagnostics(self, name: str) -> dict:
        """The latest values of the diagnostic status ``name`` ({} before the first one)."""
        with self._lock:
            return dict(self.data.diagnostics.get(name, {}))

    def wait_for_frames_done(self, n_frames: int, timeout: float, name: str = "vo_node: visual odometry") -> bool:
        """Wait until vo_node reports every one of ``n_frames`` frames processed or dropped and all
        its odometry has arrived here (diagnostics come once a second, so a fixed sleep can read a
        stale report)."""
        def done(r: "OutputRecorder") -> bool:
            d = r.diagnostics(name)
            return (bool(d) and int(d["frames_processed"]) + int(d["frames_dropped"]) >= n_frames
                    and r.count("vo/odometry") >= int(d["odometry_published"]))
        return self.wait_for(done, timeout)

    def matched_publishers(self, topic: str) -> int:
        """Publishers whose DDS writers are matched with this recorder's reader on ``topic``."""
        return self._subscriptions[topic].get_publisher_count()

    def wait_for_publishers(self, topics, timeout: float) -> bool:
        """Wait until every topic's reader is matched with a publisher. The ROS graph can list a
        publisher before its DDS endpoints match, and messages sent before the match are lost to
        this (volatile) reader, so a test that counts messages waits on this before data flows."""
        return self.wait_for(lambda r: all(r.matched_publishers(t) > 0 for t in topics), timeout)

    def wait_for(self, predicate, timeout: float, poll: float = 0.1) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(poll)
        return bool(predicate(self))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._executor.shutdown()
        self.node.destroy_node()
        rclpy.try_shutdown(context=self._context)

    def __enter__(self) -> "OutputRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
