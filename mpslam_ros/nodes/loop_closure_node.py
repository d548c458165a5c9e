"""loop_closure_node: place recognition + pose-graph optimisation over the keyframes from vo_node.

Subscribes to ``vo/keyframes/features`` + ``vo/keyframes/pose`` (paired by stamp, see
``mpslam_ros.nodes.msgs``) and the latched ``vo/keyframes/camera_info`` (K of the keypoints). Keyframes go to
``mpslam_ros.slam.loop_closure.LoopClosure`` from a worker thread (PGO runs in LoopClosure's own
background thread). Publishes ``loop_closure/path`` (corrected keyframe poses, map frame),
``loop_closure/map`` (PointCloud2), ``loop_closure/map_to_odom`` (TransformStamped; also on /tf
when tf2_msgs is installed), ``loop_closure/loop_markers`` and ``/diagnostics``.
Services (std_srvs/Trigger): ``~/save_map`` and ``~/load_map`` (file in parameter ``map_path``)
and ``~/reset``.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
import time
from typing import Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from geometry_msgs.msg import TransformStamped
from nav_msgs.msg import Odometry, Path
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from sensor_msgs.msg import CameraInfo, PointCloud2
from visualization_msgs.msg import MarkerArray

from mpslam_ros.datatypes import Keyframe
from mpslam_ros.nodes import msgs
from mpslam_ros.nodes.params import declare, declare_dataclass, declare_device
from mpslam_ros.nodes.runtime import run_node
from mpslam_ros.nodes.readiness import ReadyGate, kernel_stats, warm_up, worker_join_timeout
from mpslam_ros.nodes.tf import camera_extrinsic, describe, tf_broadcaster
from mpslam_ros.nodes.vo_node import KEYFRAME_QOS, LATCHED_QOS as LATCHED, BadInputLog



def loop_keyframe_ids(edge) -> tuple[int, int]:
    """The two keyframe ids of an accepted loop (attribute names as LoopClosure gives them)."""
    for a, b in (("id_a", "id_b"), ("i", "j"), ("query_id", "match_id"), ("from_id", "to_id")):
        if hasattr(edge, a) and hasattr(edge, b):
            return int(getattr(edge, a)), int(getattr(edge, b))
    if isinstance(edge, dict):
        return int(edge["id_a"]), int(edge["id_b"])
    return int(edge[0]), int(edge[1])


class LoopClosureNode(Node):
    def __init__(self) -> None:
        super().__init__("loop_closure_node")
        self.get_logger().info("loop_closure_node started")
        self.map_frame = declare(self, "map_frame", "map", "frame of the loop-corrected map")
        self.odom_frame = declare(self, "odom_frame", "odom", "odometry frame of vo_node (child of map_frame)")
        self.base_frame = declare(self, "base_frame", "base_link", "body frame of the robot")
        self.map_path = declare(self, "map_path", "", "file for ~/save_map, ~/load_map, load_map_on_start and "
                                                      "save_map_on_exit")
        load_on_start = declare(self, "load_map_on_start", False, "load the map from map_path at start-up")
        self.save_on_exit = declare(self, "save_map_on_exit", False, "save the map to map_path at shutdown")
        # launch sends SIGTERM 5 s after SIGINT: the default leaves time to save the map and exit
        self.shutdown_wait_s = declare(self, "shutdown_wait_s", 3.0,
                                       "at shutdown, seconds to wait for keyframes still queued and a pose-graph "
                                       "solve still running, so the last map published (and saved) holds them; "
                                       "the summary line says if it did not")
        self.publish_period = declare(self, "publish_period_s", 1.0,
                                      "seconds between map cloud / map_to_odom / diagnostics messages")
        self.publish_tf = declare(self, "publish_tf", True, "broadcast map -> odom on /tf (when tf2_msgs is installed)")
        self.do_warmup = declare(self, "warmup", True,
                                 "before subscribing, run place recognition, loop verification and pose-graph "
                                 "optimisation once on synthetic keyframes (compiles every kernel, loads the vocabulary)")
        # T_base_camera for the keyframes: /tf_static (as vo_node used it) or parameters, at the first keyframe
        self.extrinsic = camera_extrinsic(self, on_update=self._release_held)
        self.T_body_left: Optional[np.ndarray] = None

        from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig

        self._lc_cls = LoopClosure
        defaults = LoopClosureConfig()
        self.precision = declare(self, "precision", getattr(defaults, "precision", "mixed"),
                                 "solver precision preset of pose-graph optimisation: fp64, fp32, fp16 or mixed")
        self.device = declare_device(self, defaults.device, "pose-graph optimisation")
        overrides = declare_dataclass(self, "loop", LoopClosureConfig, skip=("precision", "device"))
        overrides["device"] = self.device
        if hasattr(defaults, "precision"):
            overrides["precision"] = self.precision
        self.config = LoopClosureConfig(**overrides)
        self.lc = LoopClosure(self.config)
        self.bad = BadInputLog(self.get_logger())
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()
        self._publishing_closed = False  # set by close() under _publish_lock: the node is about to go away
        self._K: Optional[np.ndarray] = None
        self._held_keyframes: list = []  # (features, pose) until K and the extrinsic are known
        self._poses: collections.OrderedDict = collections.OrderedDict()  # stamp -> Odometry
        self._features: collections.OrderedDict = collections.OrderedDict()  # stamp -> PointCloud2
        self._queue: collections.deque = collections.deque()
        self._wake = threading.Condition(self._lock)
        self._stop = False
        self._next_id = 0
        self._stamps: dict = {}  # keyframe id -> stamp_ns
        self._last_stamp = -1  # of this session's keyframes (a loaded map may come from another clock)
        self.keyframes_received = 0
        self.keyframes_processed = 0
        self._adding = 0  # 1 while the worker is in LoopClosure.add_keyframe (counted as pending)
        self._last_loop_count = -1
        self._withheld_since = None  # stamp since when map -> odom is withheld (current map not merged)
        self._add_times: collections.deque = collections.deque(maxlen=50)
        if load_on_start:
            self._load_map()

        self.pub_path = self.create_publisher(Path, "loop_closure/path", 5)
        self.pub_map = self.create_publisher(PointCloud2, "loop_closure/map", LATCHED)
        self.pub_map_to_odom = self.create_publisher(TransformStamped, "loop_closure/map_to_odom", 10)
        self.pub_markers = self.create_publisher(MarkerArray, "loop_closure/loop_markers", LATCHED)
        self.pub_diag = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self.tf = tf_broadcaster(self, self.publish_tf, f"{self.map_frame} -> {self.odom_frame}")
        # subscribe once the worker has warmed up (kernels, vocabulary): a player started with
        # --wait-for /vo/keyframes/camera_info then starts when loop closure can keep up
        self.warmup_s = 0.0
        self._gate = ReadyGate(self, self._subscribe)
        # steady clock: diagnostics (readiness) publish before a bag's /clock starts
        self.create_timer(max(self.publish_period, 0.05), self._publish_periodic,
                          clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._create_services()
        self._worker = threading.Thread(target=self._work, name="loop_closure_worker", daemon=True)
        self._worker.start()

    def _subscribe(self) -> None:
        self.create_subscription(PointCloud2, "vo/keyframes/features", self._on_features, KEYFRAME_QOS)
        self.create_subscription(Odometry, "vo/keyframes/pose", self._on_pose, KEYFRAME_QOS)
        self.create_subscription(CameraInfo, "vo/keyframes/camera_info", self._on_info, LATCHED)
        self.get_logger().info(f"loop_closure_node ready: precision={self.precision} device={self.device}")

    def _create_services(self) -> None:
        try:
            from std_srvs.srv import Trigger
        except ImportError:
            self.get_logger().warning("std_srvs is not installed: ~/save_map, ~/load_map and ~/reset are unavailable")
            return

        def service(action):
            def handle(_request, response):
                try:
                    response.message = action()
                    response.success = True
                except Exception as exc:  # report to the caller instead of killing the node
                    response.success, response.message = False, f"{type(exc).__name__}: {exc}"
                return response
            return handle

        self.create_service(Trigger, "~/save_map", service(self._save_map))
        self.create_service(Trigger, "~/load_map", service(self._load_map))
        self.create_service(Trigger, "~/reset", service(self._reset))

    # ------------------------------------------------------------------ inputs (executor thread)

    def _on_info(self, msg: CameraInfo) -> None:
        try:
            self._K = msgs.camera_info_to_intrinsics(msg).K
        except msgs.MessageError as exc:
            self.bad.reject("vo/keyframes/camera_info", str(exc))
            return
        self._release_held()

    def _release_held(self) -> None:
        """Pair the keyframes held until the camera model and the extrinsic are known (called on
        CameraInfo, on /tf_static, and from the periodic timer so the extrinsic's wait can time out)."""
        if self._K is None or not self._held_keyframes:
            return
        held, self._held_keyframes = self._held_keyframes, []
        for features, pose in held:
            self._pair(features, pose)

    def _on_pose(self, msg: Odometry) -> None:
        stamp = msgs.time_to_ns(msg.header.stamp)
        if stamp in self._features:
            self._pair(self._features.pop(stamp), msg)
        else:
            self._poses[stamp] = msg
            while len(self._poses) > 100:
                self._poses.popitem(last=False)

    def _on_features(self, msg: PointCloud2) -> None:
        stamp = msgs.time_to_ns(msg.header.stamp)
        self.keyframes_received += 1
        if stamp in self._poses:
            self._pair(msg, self._poses.pop(stamp))
        else:
            self._features[stamp] = msg
            while len(self._features) > 100:
                self._features.popitem(last=False)

    def _pair(self, features: PointCloud2, pose: Odometry) -> None:
        if self.T_body_left is None and self._K is not None:
            # the same wait for /tf_static as vo_node's (a first sample lost in discovery is repaired only
            # at the writer's next heartbeat, 3 s in Fast DDS): both nodes then use the same extrinsic
            camera_frame = features.header.frame_id or "camera_left"
            resolved = self.extrinsic.resolve(self.base_frame, camera_frame)
            if resolved is not None:
                self.T_body_left, source = resolved
                self.get_logger().info(f"camera extrinsic {self.base_frame} -> {camera_frame} from {source}: "
                                       f"{describe(self.T_body_left)}")
        if self._K is None or self.T_body_left is None:
            # the latched camera model may arrive after the first keyframe, /tf_static too: hold them
            self._held_keyframes.append((features, pose))
            if len(self._held_keyframes) > 50:
                self._held_keyframes.pop(0)
                what = "CameraInfo on vo/keyframes/camera_info" if self._K is None else "camera extrinsic (/tf_static)"
                self.bad.reject("vo/keyframes/features", f"no {what} received yet")
            return
        last = self._last_stamp
        try:
            stamp = msgs.time_to_ns(features.header.stamp)
            if stamp <= last:
                raise msgs.MessageError(f"time went backwards ({stamp} ns after {last} ns)")
            kf = msgs.keyframe_from_msgs(features, pose, self._next_id, self._K, self.T_body_left)
        except msgs.MessageError as exc:
            self.bad.reject("vo/keyframes/features", str(exc))
            return
        with self._wake:
            self._stamps[kf.id] = kf.stamp_ns
            self._last_stamp = kf.stamp_ns
            self._next_id += 1
            self._queue.append(kf)
            self._wake.notify()

    # ------------------------------------------------------------------ loop closure (worker thread)

    def _work(self) -> None:
        if self.do_warmup:
            self._warm_up()
        self._gate.open()
        while True:
            with self._wake:
                while not self._queue and not self._stop:
                    self._wake.wait(0.5)
                if self._stop:
                    return
                kf: Keyframe = self._queue.popleft()
                lc = self.lc
                self._adding = 1
            t0 = time.perf_counter()
            try:
                lc.add_keyframe(kf)
            except Exception as exc:
                self.bad.reject("vo/keyframes/features", f"loop closure failed on keyframe {kf.id}: "
                                                         f"{type(exc).__name__}: {exc}")
                continue
            finally:
                with self._wake:
                    self._adding = 0
                    self._wake.notify_all()
            self._add_times.append(time.perf_counter() - t0)
            self.keyframes_processed += 1
            self._publish_corrections(kf.stamp_ns)

    def _warm_up(self) -> None:
        """Place recognition, verification, a forced loop and both PGO stages once, in this node's
        precision, on synthetic keyframes decoded from keyframe messages as vo_node's are: the first
        real loop and solve then run warm (and the default vocabulary is loaded now, not then)."""
        seconds = warm_up(self.get_logger(), f"precision {self.precision}", precisions=[self.precision],
                          vo=False, loop_closure=True, lc_config=self.config, keyframe_filter=self._as_received)
        if seconds is not None:
            self.warmup_s = seconds

    def _as_received(self, kf: Keyframe) -> Keyframe:
        """A warm-up keyframe as the subscriptions would decode it (same dtypes and layouts)."""
        features, pose = msgs.keyframe_to_msgs(kf, "camera_left", self.odom_frame, self.base_frame)
        return msgs.keyframe_from_msgs(features, pose, kf.id, kf.K, kf.T_body_left)

    # ------------------------------------------------------------------ outputs

    def _publish_corrections(self, stamp_ns: int) -> None:
        with self._publish_lock:  # called by the worker (new keyframe) and the timer (PGO finished later)
            if not self._publishing_closed:  # a worker close() stopped waiting for must not publish
                self._publish_corrections_locked(stamp_ns)

    def _publish_corrections_locked(self, stamp_ns: int) -> None:
        with self._lock:
            lc, stamps = self.lc, dict(self._stamps)
        # only keyframes of the first map (or maps merged with it) are in the map frame: a map
        # after a break that no loop has merged yet is never published as if it were aligned
        maps = lc.keyframe_maps()
        corrected = {i: T for i, T in lc.corrected_poses().items() if maps.get(i, (0, False))[1]}
        ids = sorted(i for i in corrected if i in stamps)
        if ids:
            self.pub_path.publish(msgs.path([stamps[i] for i in ids], [corrected[i] for i in ids], self.map_frame))
        if lc.current_map_aligned():
            T_map_odom = np.asarray(lc.T_map_odom(), dtype=np.float64)
            tf_msg = msgs.transform_stamped(T_map_odom, stamp_ns, self.map_frame, self.odom_frame)
            self.pub_map_to_odom.publish(tf_msg)
            if self.tf is not None:
                self.tf.send(T_map_odom, stamp_ns, self.map_frame, self.odom_frame)
        elif self._withheld_since is None:
            self._withheld_since = stamp_ns
            self.get_logger().warning("the current map is not merged with the map (a break VO could not "
                                      "relocalise across): map -> odom withheld until a loop merges them")
        if lc.current_map_aligned() and self._withheld_since is not None:
            self._withheld_since = None
            self.get_logger().info("maps merged: map -> odom published again")
        loops = lc.loops()
        # markers follow the corrected poses, so they are re-sent with every correction
        edges = []
        for edge in loops:
            a, b = loop_keyframe_ids(edge)
            if a in corrected and b in corrected:
                edges.append((corrected[a][:3, 3], corrected[b][:3, 3]))
        self.pub_markers.publish(msgs.loop_markers(edges, stamp_ns, self.map_frame))
        if len(loops) != self._last_loop_count:
            self._last_loop_count = len(loops)
            if loops:
                a, b = loop_keyframe_ids(loops[-1])
                self.get_logger().info(f"loops closed: {len(loops)} (latest: keyframe {a} -> {b})")

    def _publish_periodic(self) -> None:
        self._release_held()  # keyframes held for /tf_static go once its wait has timed out
        stamp = self.get_clock().now().nanoseconds
        with self._lock:
            lc = self.lc
        with self._lock:
            latest = max(self._stamps.values(), default=None)
        if latest is not None:
            self._publish_corrections(latest)
        points = lc.map_points()
        if points is not None and len(points):
            self.pub_map.publish(msgs.points_to_pointcloud2(points, stamp, self.map_frame))
        values = self.stats()
        aligned = values["current_map_aligned"]
        message = f"{len(lc.loops())} loops, {values['maps']} map(s), {values['merges']} merge(s)"
        if not aligned:
            message += "; current map not merged: map -> odom withheld"
        extrinsic_note = self.extrinsic.diagnostics()[1]
        if extrinsic_note:
            message += "; " + extrinsic_note
        ok = aligned and not extrinsic_note
        self.pub_diag.publish(msgs.diagnostics(stamp, "loop_closure_node: loop closure", "map",
                                               DiagnosticStatus.OK if ok else DiagnosticStatus.WARN,
                                               message, values))

    def stats(self) -> dict:
        with self._lock:
            lc, queued = self.lc, len(self._queue) + self._adding
        solve = lc.solve_state()
        return {
            "keyframes_received": self.keyframes_received, "keyframes_processed": self.keyframes_processed,
            # keyframes not yet through place recognition (queued or being added) and a pose-graph solve
            # requested but not finished: the published map lacks them until both are 0
            "keyframes_queued": queued, "pose_graph_pending": solve["pending"],
            "keyframes_solved": solve["keyframes_solved"], "loops_solved": solve["loops_solved"],
            "loops": len(lc.loops()), "bad_messages": self.bad.count,
            "add_keyframe_ms": 1e3 * float(np.mean(self._add_times)) if self._add_times else 0.0,
            "precision": self.precision, "device": self.device, "ready": self._gate.ready.is_set(), "warmup_s": self.warmup_s,
            **self.extrinsic.diagnostics()[0],
            **kernel_stats(self._gate.kernel_watch, self.get_logger()),
            "current_map_aligned": lc.current_map_aligned(), **dataclasses.asdict(lc.stats),
        }

    # ------------------------------------------------------------------ map services

    def _require_path(self) -> str:
        path = self.get_parameter("map_path").value
        if not path:
            raise ValueError("parameter map_path is empty")
        return path

    def _save_map(self) -> str:
        path = self._require_path()
        with self._lock:
            lc = self.lc
        lc.wait_idle(timeout=30.0)
        lc.save(path)
        self.get_logger().info(f"map saved to {path}")
        return f"saved {len(lc.corrected_poses())} keyframes to {path}"

    def _load_map(self) -> str:
        path = self._require_path()
        loaded = self._lc_cls.load(path, config=self.config)
        with self._lock:
            old, self.lc = self.lc, loaded
            # keyframes of the loaded map keep their ids and stamps; new ones continue after them
            self._stamps = {int(r.id): int(r.stamp_ns) for r in loaded.db}
            self._next_id = max(self._stamps, default=-1) + 1
            self._last_stamp = -1
        if old is not None:
            old.close()
        self._last_loop_count = -1
        self.get_logger().info(f"map loaded from {path}")
        return f"loaded {len(loaded.corrected_poses())} keyframes from {path}"

    def _reset(self) -> str:
        fresh = self._lc_cls(self.config)
        with self._lock:
            old, self.lc = self.lc, fresh
            self._queue.clear()
            self._stamps.clear()
            self._next_id = 0
            self._last_stamp = -1
        old.close()
        self._last_loop_count = -1
        self.get_logger().info("map reset")
        return "map reset"

    def drain(self, timeout: float) -> bool:
        """Wait (at most ``timeout`` s) until every received keyframe went through loop closure and
        no pose-graph solve is pending, then publish the corrections once more. True if nothing is
        left pending. Only once warm: during the warm-up nothing was received."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while (self._queue or self._adding) and self._worker.is_alive():
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._wake.wait(min(left, 0.1))
            lc, pending_kf = self.lc, len(self._queue) + self._adding
        if not pending_kf:
            lc.wait_idle(timeout=max(0.0, deadline - time.monotonic()))
        with self._lock:
            latest = max(self._stamps.values(), default=None)
        if latest is not None:
            self._publish_corrections(latest)
        return not pending_kf and not lc.busy

    def close(self) -> None:
        # the map published last and saved must hold every keyframe received and the latest loops:
        # at the end of a bag the last keyframes and solve are often still in flight
        t0 = time.monotonic()
        drained = self.drain(self.shutdown_wait_s) if self._gate.ready.is_set() else True
        waited = time.monotonic() - t0
        with self._wake:
            self._stop = True
            self._wake.notify_all()
        self._worker.join(timeout=worker_join_timeout(self._gate.ready))
        with self._publish_lock:
            self._publishing_closed = True
        if self.save_on_exit and self.map_path:
            try:
                self._save_map()
            except Exception as exc:
                self.get_logger().error(f"could not save the map to {self.map_path}: {exc}")
        s = self.stats()
        if drained:
            final = (f"final map includes every keyframe and loop (waited {waited:.1f} s)"
                     if s["loops"] else "no loop closed: the map is the odometry")
        else:
            final = (f"final map INCOMPLETE after waiting {self.shutdown_wait_s:g} s: {s['keyframes_queued']} keyframes "
                     f"not processed, pose-graph solve {'still running' if s['pose_graph_pending'] else 'done'} "
                     f"({s['loops_solved']} of {s['loops']} loops solved)")
        log = self.get_logger().info if drained else self.get_logger().warning
        log(f"loop_closure_node summary: {s['keyframes_processed']} keyframes, "
            f"{s['loops']} loops, bad messages {s['bad_messages']}; {final}")
        self.lc.close()


def main(args=None) -> int:
    return run_node(LoopClosureNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
