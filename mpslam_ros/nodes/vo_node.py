"""vo_node: stereo (or RGB-D) visual odometry as a ROS 2 node.

Subscribes to ``camera/left/image_raw`` + ``camera/right/image_raw`` (or ``camera/depth/image_raw``
in RGB-D mode) and their ``camera_info``, pairs the images by stamp, runs
``mpslam_ros.slam.vo.VisualOdometry`` in a worker thread and publishes ``vo/odometry``
(odom -> base_link), ``vo/pose``, ``vo/path``, ``vo/landmarks``, keyframes for loop closure
(``vo/keyframes/features`` + ``vo/keyframes/pose``, and the keypoints' camera model on the latched
``vo/keyframes/camera_info``; see ``mpslam_ros.nodes.msgs``) and
``/diagnostics``. If frames arrive faster than VO runs, the oldest waiting frame is dropped and
counted (never queued without bound: odometry must stay current).
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import PoseStamped
from nav_msgs.msg import Odometry, Path
from rclpy.clock import Clock, ClockType
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import CameraInfo, Image, PointCloud2

from mpslam_ros.datatypes import CameraIntrinsics, FrameResult, StereoFrame, StereoRig
from mpslam_ros.nodes import msgs
from mpslam_ros.nodes.params import declare, declare_dataclass, declare_device
from mpslam_ros.nodes.readiness import ReadyGate, kernel_stats, warm_up, worker_join_timeout
from mpslam_ros.nodes.runtime import run_node
from mpslam_ros.nodes.tf import camera_extrinsic, describe, tf_broadcaster

KEYFRAME_QOS = QoSProfile(depth=200, reliability=ReliabilityPolicy.RELIABLE)
LATCHED_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)


class BadInputLog:
    """Counts rejected messages and logs each distinct (topic, reason) once."""

    def __init__(self, logger) -> None:
        self._logger = logger
        self._seen: set = set()
        self.count = 0

    def reject(self, topic: str, reason: str) -> None:
        self.count += 1
        if (topic, reason) not in self._seen:
            self._seen.add((topic, reason))
            self._logger.warning(f"dropping message on {topic}: {reason} (logged once; counted in diagnostics)")


class VisualOdometryNode(Node):
    def __init__(self) -> None:
        super().__init__("vo_node")
        self.get_logger().info("vo_node started")
        self.mode = declare(self, "mode", "stereo", "'stereo' (left + right images) or 'rgbd' (image + depth)")
        if self.mode not in ("stereo", "rgbd"):
            raise ValueError(f"parameter mode must be 'stereo' or 'rgbd', got {self.mode!r}")
        self.sync_tolerance_ns = int(1e9 * declare(
            self, "sync_tolerance_s", 0.002, "max stamp difference (s) between the two images of a pair"))
        self.sync_queue_ns = int(1e9 * declare(
            self, "sync_queue_s", 2.0,
            "an image waits this long (image time) for its partner; covers one camera topic arriving later "
            "than the other (large depth images lagged the colour images by > 0.5 s under load here)"))
        self.odom_frame = declare(self, "odom_frame", "odom", "frame of the odometry (parent of base_frame)")
        self.base_frame = declare(self, "base_frame", "base_link", "body frame of the robot")
        self.depth_scale = declare(self, "depth_scale", 0.001, "metres per unit of 16-bit depth images (RGB-D)")
        image_qos = declare(self, "image_qos", "reliable",
                            "QoS of the camera subscriptions: 'reliable' (matches reliable publishers such as "
                            "bag_player; no transport loss of large images) or 'sensor_data' (best effort: "
                            "needed for drivers that publish best effort)")
        image_queue_depth = declare(self, "image_queue_depth", 30,
                                    "DDS queue depth of each camera subscription: deep enough that a briefly "
                                    "busy executor loses nothing (the VO's own queue, max_pending_frames, "
                                    "decides what is dropped, and counts it)")
        self.calibration_wait_ns = int(1e9 * declare(
            self, "calibration_wait_s", 5.0,
            "images that arrive before the first CameraInfo are held for up to this span of image time, "
            "then dropped and counted (drivers and players often deliver CameraInfo after the first images)"))
        self.max_pending = declare(self, "max_pending_frames", 10,
                                   "frames waiting for VO (absorbs keyframe bundle-adjustment spikes); when full the oldest is dropped and counted")
        self.path_period = declare(self, "path_publish_period_s", 1.0, "seconds between vo/path messages")
        self.landmarks_every = declare(self, "landmarks_every_n_frames", 5,
                                       "publish vo/landmarks every N processed frames")
        self.publish_tf = declare(self, "publish_tf", True,
                                  "broadcast odom -> base_link on /tf (when tf2_msgs is installed)")
        self.do_warmup = declare(self, "warmup", True,
                                 "compile the numba kernels (in the worker) before subscribing to images")
        # T_base_camera: /tf_static or parameters, decided once the CameraInfos are in (_calibrate)
        self.extrinsic = camera_extrinsic(self, on_update=self._calibrate)
        self._camera_frame = "camera_left"  # the left CameraInfo's frame_id once known

        from mpslam_ros.slam.vo import NO_POSE_STATES, VOConfig

        self._no_pose_states = NO_POSE_STATES

        vo_defaults = VOConfig()
        self.precision = declare(self, "precision", vo_defaults.precision,
                                 "solver precision preset of the local bundle adjustment: fp64, fp32, fp16 or mixed")
        self.window_size = declare(self, "window_size", vo_defaults.window_size,
                                   "keyframes in the sliding bundle-adjustment window")
        self.device = declare_device(self, vo_defaults.device, "the local bundle adjustment")
        overrides = declare_dataclass(self, "vo", VOConfig, skip=("precision", "window_size", "device"))
        self.vo_config = VOConfig(precision=self.precision, window_size=self.window_size, device=self.device,
                                  **overrides)
        self.bad = BadInputLog(self.get_logger())
        self._lock = threading.Lock()
        self._infos: dict = {}
        self._rig: Optional[StereoRig] = None
        # per-topic buffers of decoded images waiting for their partner: stamp -> array
        self._left: collections.OrderedDict = collections.OrderedDict()
        self._other: collections.OrderedDict = collections.OrderedDict()
        self._last_stamp = {"left": -1, "other": -1}
        self._last_paired = -1
        self._early: list = []  # (which, stamp, image) received before the calibration
        self._pending: collections.deque = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._busy = False  # the worker is on a frame (frames_pending counts it)
        self._abandon = False  # set when close() stops waiting: the worker then publishes nothing more
        # held while a result is published; close() sets _abandon under it, so a worker still busy on a
        # frame when close() gives up waiting cannot publish on a node that is being destroyed
        self._publish_lock = threading.Lock()
        self.frames_received = 0
        self.frames_processed = 0
        self.frames_dropped = 0
        self.frames_missed = 0
        self.images_unpaired = 0  # images dropped because their partner (right / depth image) never came
        self.odometry_published = 0
        self._periods: collections.deque = collections.deque(maxlen=20)
        self.tracking_state = "waiting"
        self.num_tracked = 0
        self._timings: collections.deque = collections.deque(maxlen=100)
        self._latency: collections.deque = collections.deque(maxlen=100)
        self._processed_times: collections.deque = collections.deque(maxlen=100)
        self._path_stamps: list = []
        self._path_poses: list = []

        self.pub_odom = self.create_publisher(Odometry, "vo/odometry", 200)
        self.pub_pose = self.create_publisher(PoseStamped, "vo/pose", 200)
        self.pub_path = self.create_publisher(Path, "vo/path", 5)
        self.pub_landmarks = self.create_publisher(PointCloud2, "vo/landmarks", 5)
        self.pub_kf_features = self.create_publisher(PointCloud2, "vo/keyframes/features", KEYFRAME_QOS)
        self.pub_kf_pose = self.create_publisher(Odometry, "vo/keyframes/pose", KEYFRAME_QOS)
        self.pub_kf_info = self.create_publisher(CameraInfo, "vo/keyframes/camera_info", LATCHED_QOS)
        self._kf_K: Optional[np.ndarray] = None
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf = tf_broadcaster(self, self.publish_tf, f"{self.odom_frame} -> {self.base_frame}")

        self.image_qos = QoSProfile(depth=max(1, image_queue_depth), reliability=(
            ReliabilityPolicy.BEST_EFFORT if image_qos == "sensor_data" else ReliabilityPolicy.RELIABLE))
        other = "camera/right/image_raw" if self.mode == "stereo" else "camera/depth/image_raw"
        self.topics = {"left": "camera/left/image_raw", "other": other}
        self._info_topics = ["camera/left/camera_info"] + (
            ["camera/right/camera_info"] if self.mode == "stereo" else [])
        # diagnostics on the steady clock: readiness shows on /diagnostics before a bag's /clock starts
        self.create_timer(1.0, self._publish_diagnostics, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self.create_timer(max(self.path_period, 0.05), self._publish_path)
        # Subscribing waits for the worker's kernel warm-up, so a player started with
        # --wait-for <camera topics> sends the first frame only once VO can take it.
        self.warmup_s = 0.0
        self._gate = ReadyGate(self, self._subscribe)
        self._worker = threading.Thread(target=self._work, name="vo_worker", daemon=True)
        self._worker.start()

    def _subscribe(self) -> None:
        self.create_subscription(Image, self.topics["left"], lambda m: self._on_image("left", m), self.image_qos)
        self.create_subscription(Image, self.topics["other"], lambda m: self._on_image("other", m), self.image_qos)
        for topic in self._info_topics:
            self.create_subscription(CameraInfo, topic, lambda m, t=topic: self._on_info(t, m), self.image_qos)
        self.get_logger().info(
            f"vo_node ready: mode={self.mode} precision={self.precision} device={self.device} window={self.window_size}, "
            f"listening on {self.resolve_topic_name(self.topics['left'])} + "
            f"{self.resolve_topic_name(self.topics['other'])}")

    # ------------------------------------------------------------------ inputs (executor thread)

    def _on_info(self, topic: str, msg: CameraInfo) -> None:
        try:
            msgs.camera_info_to_intrinsics(msg)
        except msgs.MessageError as exc:
            self.bad.reject(topic, str(exc))
            return
        if topic not in self._infos:
            self._infos[topic] = msg
            self._calibrate()

    def _calibrate(self) -> None:
        """Build the rig once every CameraInfo is in and the extrinsic is known (/tf_static or parameters;
        called again on each /tf_static message and image while it waits), then replay the held images."""
        if self._rig is not None or len(self._infos) < len(self._info_topics):
            return
        left = self._infos["camera/left/camera_info"]
        camera_frame = left.header.frame_id or "camera_left"
        resolved = self.extrinsic.resolve(self.base_frame, camera_frame)
        if resolved is None:
            return  # waiting for /tf_static: images are held meanwhile (calibration_wait_s)
        T_body_left, source = resolved
        try:
            rig = msgs.camera_infos_to_rig(left, self._infos.get("camera/right/camera_info"), T_body_left,
                                           depth_scale=1.0)
        except msgs.MessageError as exc:
            self.bad.reject("camera/left/camera_info", f"calibration unusable: {exc}")
            self._infos.clear()
            return
        with self._lock:
            self._rig = rig
            self._camera_frame = camera_frame
        self.get_logger().info(
            f"calibration: {rig.left.width}x{rig.left.height} fx={rig.left.fx:.1f} "
            f"baseline={rig.baseline:.3f} m rectified={rig.rectified}; camera extrinsic "
            f"{self.base_frame} -> {camera_frame} from {source}: {describe(T_body_left)}")
        early, self._early = self._early, []
        for which, stamp, arr in early:
            if stamp > self._last_stamp[which]:
                self._accept(which, stamp, arr)

    def _on_image(self, which: str, msg: Image) -> None:
        topic = self.topics[which]
        stamp = msgs.time_to_ns(msg.header.stamp)
        if which == "left":
            self.frames_received += 1
        if stamp <= self._last_stamp[which]:
            self.bad.reject(topic, f"time went backwards ({stamp} ns after {self._last_stamp[which]} ns)")
            return
        try:
            if which == "left" or self.mode == "stereo":
                arr = msgs.image_to_mono8(msg)
            else:
                arr = msgs.image_to_depth(msg, self.depth_scale)
        except msgs.MessageError as exc:
            self.bad.reject(topic, str(exc))
            return
        if self._rig is None:
            self._calibrate()  # (no-op unless it waits for /tf_static)
        if self._rig is None:
            # hold the images of the last calibration_wait_s until the CameraInfo arrives
            self._early.append((which, stamp, arr))
            while stamp - self._early[0][1] > self.calibration_wait_ns:
                early_which = self._early.pop(0)[0]
                self.bad.reject(self.topics[early_which], "no CameraInfo received yet on " + " / ".join(
                    t for t in self._info_topics if t not in self._infos))
            return
        self._accept(which, stamp, arr)

    def _accept(self, which: str, stamp: int, arr: np.ndarray) -> None:
        """Size check against the calibration, then pairing by stamp."""
        topic = self.topics[which]
        size = (self._rig.left.height, self._rig.left.width)
        if arr.shape != size:
            self.bad.reject(topic, f"image size {arr.shape[1]}x{arr.shape[0]} != CameraInfo "
                                   f"{size[1]}x{size[0]}")
            return
        if which == "left":
            self._count_missed(stamp)  # only accepted frames: a bogus future stamp must not count as a gap
        self._last_stamp[which] = stamp
        mine, theirs = (self._left, self._other) if which == "left" else (self._other, self._left)
        # the partner with the closest stamp within tolerance
        match = min(theirs, key=lambda s: abs(s - stamp), default=None)
        if match is not None and abs(match - stamp) <= self.sync_tolerance_ns:
            partner = theirs.pop(match)
            for s in [s for s in theirs if s < match]:  # older unpaired images will never pair now
                del theirs[s]
                self.images_unpaired += 1
            left, other = (arr, partner) if which == "left" else (partner, arr)
            left_stamp = stamp if which == "left" else match
            self._enqueue(left_stamp, left, other)
        else:
            mine[stamp] = arr
            while stamp - next(iter(mine)) > self.sync_queue_ns:
                mine.popitem(last=False)
                self.images_unpaired += 1

    def _count_missed(self, stamp: int) -> None:
        """Frames lost before reaching the node (transport, queue overflow) show up as stamp gaps."""
        last = self._last_stamp["left"]
        if last > 0 and stamp > last:
            gap = stamp - last
            if len(self._periods) >= 5:
                period = float(np.median(self._periods))
                if gap > 1.5 * period:
                    self.frames_missed += int(round(gap / period)) - 1
            self._periods.append(gap)

    def _enqueue(self, stamp: int, left: np.ndarray, other: np.ndarray) -> None:
        if stamp <= self._last_paired:
            self.bad.reject(self.topics["left"], "stereo pair older than the last one processed")
            return
        self._last_paired = stamp
        frame = StereoFrame(stamp_ns=stamp, left=left)
        if self.mode == "stereo":
            frame.right = other
        else:
            frame.depth = other
        with self._wake:
            self._pending.append((frame, time.monotonic()))
            while len(self._pending) > max(1, self.max_pending):
                self._pending.popleft()
                self.frames_dropped += 1
            self._wake.notify()

    # ------------------------------------------------------------------ VO (worker thread)

    def _work(self) -> None:
        if self.do_warmup:
            self._warm_up()
        self._gate.open()
        vo = None
        while True:
            with self._wake:
                self._busy = False
                while not self._pending and not self._stop:
                    self._wake.wait(0.5)
                # on shutdown, frames already received are still processed (close() waits up to
                # WORKER_JOIN_S): the end of a bag triggers the shutdown while VO is a frame or two behind
                if self._abandon or (self._stop and not self._pending):
                    return
                frame, arrived = self._pending.popleft()
                self._busy = True
                rig = self._rig
            try:
                if vo is None:
                    from mpslam_ros.slam.vo import VisualOdometry

                    vo = VisualOdometry(rig, self.vo_config)
                    self._vo = vo
            except Exception as exc:  # e.g. a calibration VO cannot use: keep running, report it
                self.bad.reject("camera/left/camera_info", f"cannot set up VO with this calibration: "
                                                            f"{type(exc).__name__}: {exc}")
                continue
            try:
                result = vo.process(frame)
            except Exception as exc:  # VO promises not to raise; if it does, keep the node alive
                self.bad.reject(self.topics["left"], f"VO failed on frame {frame.stamp_ns}: {type(exc).__name__}: {exc}")
                continue
            with self._publish_lock:
                if self._abandon:
                    return
                self._publish_result(result, arrived)

    def _warm_up(self) -> None:
        """Run the real pipeline (first keyframe, tracking, BA, window slide) on a few synthetic frames in
        this node's precision and mode, decoded from Image messages as the camera's are: every kernel
        the camera path runs is then in memory (issue 13: 6.6 s of frames lost to compilation)."""
        seconds = warm_up(self.get_logger(), f"precision {self.precision}, mode {self.mode}",
                          precisions=[self.precision], modes=[self.mode], vo=True, loop_closure=False,
                          vo_config=self.vo_config, frame_filter=self._as_received)
        if seconds is not None:
            self.warmup_s = seconds

    def _as_received(self, frame: StereoFrame) -> StereoFrame:
        """A warm-up frame as the image callbacks would hand it over (same dtypes, layout, flags)."""
        return msgs.frame_as_received(frame, self.depth_scale)

    def _publish_result(self, result: FrameResult, arrived: float) -> None:
        stamp = result.stamp_ns
        self.tracking_state, self.num_tracked = result.tracking_state, result.num_tracked
        self.frames_processed += 1
        self._timings.append(dict(result.timings))
        now = time.monotonic()
        self._latency.append(now - arrived)
        self._processed_times.append(now)
        T = np.asarray(result.T_world_body, dtype=np.float64)
        # no pose measurement while lost or relocalising: publish nothing rather than the held pose
        if result.tracking_state not in self._no_pose_states and np.all(np.isfinite(T)):
            self.pub_odom.publish(msgs.odometry(T, stamp, self.odom_frame, self.base_frame, result.covariance_diag))
            self.odometry_published += 1
            self.pub_pose.publish(msgs.pose_stamped(T, stamp, self.odom_frame))
            if self.tf is not None:
                self.tf.send(T, stamp, self.odom_frame, self.base_frame)
            with self._lock:
                self._path_stamps.append(stamp)
                self._path_poses.append(T)
        if result.local_landmarks is not None and self.frames_processed % max(1, self.landmarks_every) == 0:
            self.pub_landmarks.publish(msgs.points_to_pointcloud2(result.local_landmarks, stamp, self.odom_frame))
        if result.keyframe is not None:
            try:
                features, pose = msgs.keyframe_to_msgs(result.keyframe, self._camera_frame, self.odom_frame,
                                                       self.base_frame)
            except msgs.MessageError as exc:
                self.bad.reject("vo/keyframes/features", str(exc))
                return
            K = np.asarray(result.keyframe.K, dtype=np.float64)
            if self._kf_K is None or not np.array_equal(K, self._kf_K):
                # the camera model of the image the keypoints live in (rectified/undistorted: no D)
                self._kf_K = K
                cam = CameraIntrinsics(self._rig.left.width, self._rig.left.height, K[0, 0], K[1, 1], K[0, 2], K[1, 2])
                self.pub_kf_info.publish(msgs.intrinsics_to_camera_info(cam, stamp, self._camera_frame))
            self.pub_kf_pose.publish(pose)
            self.pub_kf_features.publish(features)

    # ------------------------------------------------------------------ periodic outputs

    def _publish_path(self) -> None:
        with self._lock:
            if not self._path_stamps:
                return
            stamps, poses = list(self._path_stamps), list(self._path_poses)
        self.pub_path.publish(msgs.path(stamps, poses, self.odom_frame))

    def stats(self) -> dict:
        times = list(self._processed_times)
        rate = (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0
        values = {
            "tracking_state": self.tracking_state, "num_tracked": self.num_tracked,
            "frames_received": self.frames_received, "frames_processed": self.frames_processed,
            "frames_dropped": self.frames_dropped, "frames_missed": self.frames_missed,
            "frames_pending": len(self._pending) + int(self._busy),
            "images_unpaired": self.images_unpaired,
            "odometry_published": self.odometry_published,
            "bad_messages": self.bad.count,
            "rate_hz": rate, "latency_ms": 1e3 * float(np.mean(self._latency)) if self._latency else 0.0,
            "precision": self.precision, "device": self.device, "window_size": self.window_size,
            "ready": self._gate.ready.is_set(), "warmup_s": self.warmup_s,
            **self.extrinsic.diagnostics()[0],
        }
        values.update(kernel_stats(self._gate.kernel_watch, self.get_logger()))
        vo = getattr(self, "_vo", None)
        if vo is not None:  # losses, relocalisations, new maps, time spent relocalising
            values["map_id"] = vo.map_id
            values.update({f"vo_{k}": v for k, v in dataclasses.asdict(vo.stats).items()})
        stages = collections.defaultdict(list)
        for t in list(self._timings):
            for k, v in t.items():
                stages[k].append(v)
        for k, v in stages.items():
            values[f"time_{k}_ms"] = 1e3 * float(np.mean(v))
        return values

    def _publish_diagnostics(self) -> None:
        values = self.stats()
        state = values["tracking_state"]
        level = DiagnosticStatus.OK if state in ("ok", "initializing", "relocalized", "reinitialized", "waiting") \
            else DiagnosticStatus.WARN
        message = f"tracking {state}"
        if "map_id" in values:
            message += (f" (map {values['map_id']}; relocalised {values['vo_relocalizations']}x, "
                        f"refused as look-alike {values['vo_relocalizations_refused']}x, "
                        f"new maps {values['vo_new_maps']}, poses refused by the motion gate "
                        f"{values['vo_poses_refused_by_motion_gate']}x)")
            if values["vo_new_maps"] and level == DiagnosticStatus.OK:
                level = DiagnosticStatus.WARN  # a break VO could not relocalise across stays visible
        extrinsic_note = self.extrinsic.diagnostics()[1]
        if extrinsic_note:
            message += "; " + extrinsic_note
            if level == DiagnosticStatus.OK:
                level = DiagnosticStatus.WARN
        stamp = self.get_clock().now().nanoseconds
        self.pub_diag.publish(msgs.diagnostics(stamp, "vo_node: visual odometry", "camera", level,
                                               message, values))

    def close(self) -> None:
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._worker.join(timeout=worker_join_timeout(self._gate.ready))
        with self._publish_lock, self._wake:
            self._abandon = True
        # the last odometry reaches every reliable subscriber before the process goes away
        self.pub_odom.wait_for_all_acked(Duration(seconds=1.0))
        s = self.stats()
        self.get_logger().info(
            f"vo_node summary: received {s['frames_received']} frames, processed {s['frames_processed']}, "
            f"dropped {s['frames_dropped']} (VO busy), missed {s['frames_missed']} (stamp gaps), "
            f"unpaired images {s['images_unpaired']}, not processed at exit {len(self._pending)}, "
            f"bad messages {s['bad_messages']}")


#: Kernel modules of visual odometry (kept for callers of the earlier API; see mpslam_ros.warmup).
VO_KERNEL_MODULES = ["mpslam_ros.geometry.lie", "mpslam_ros.solvers.kernels", "mpslam_ros.problems.ba"]


def warm_kernels(modules) -> None:
    """Import each module and call its ``warmup()`` (see :func:`mpslam_ros.warmup.warm_modules`)."""
    from mpslam_ros.warmup import warm_modules

    warm_modules(modules)


def main(args=None) -> int:
    return run_node(VisualOdometryNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
