"""bag_player: plays a rosbag2 (MCAP or sqlite3, read with rosbags) onto ROS 2 topics.

Messages go out as the serialized CDR bytes stored in the bag (no decode/encode round trip), paced
in real time or at a rate factor, with ``/clock`` published from bag time so nodes running with
``use_sim_time`` see the recording's clock. A synthetic or recorded bag thus drives the nodes
exactly as a robot's drivers would.

Usage: ``bag_player BAG [--rate 2] [--wait-for /camera/left/image_raw ...] [--ros-args ...]``
(the same options as ``mpslam play``).
"""

from __future__ import annotations

import argparse
import importlib
import sys
import threading
import time
from pathlib import Path
from typing import Optional, Sequence

from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock

from mpslam_ros.cli.play import add_player_arguments
from mpslam_ros.nodes.msgs import diagnostic_values, ns_to_time
from mpslam_ros.nodes.runtime import run_node


#: seconds to wait after every --wait-for topic is matched, before the first message
MATCH_SETTLE_S = 0.5
#: the /diagnostics status whose frames_pending --wait-processed waits on
VO_DIAGNOSTIC = "vo_node: visual odometry"
#: and loop_closure_node's, whose keyframes_queued + pose_graph_pending it waits on next (when it reports)
LC_DIAGNOSTIC = "loop_closure_node: loop closure"
#: ... unless it has sent none for this long (it publishes them every publish_period_s, 1 s by default)
LC_SILENT_S = 15.0
#: Topics that stay global under --in-namespace.
GLOBAL_TOPICS = ("/clock", "/tf", "/tf_static")
#: At the end of playback, at most this long for every reader to acknowledge the last messages.
DELIVERY_TIMEOUT_S = 10.0
#: How often the player looks for /tf_static readers that matched after the bag's /tf_static was sent.
STATIC_RECHECK_S = 0.2
#: Before the first frame, at most this long for the matched readers to acknowledge the bag's /tf_static
#: (a first sample lost while discovery completes is repaired at Fast DDS's next heartbeat, 3 s later).
STATIC_ACK_TIMEOUT_S = 5.0


class BagError(RuntimeError):
    """The bag cannot be opened or read; the message names the bag and the reason."""


def _message_class(msgtype: str):
    """``sensor_msgs/msg/Image`` -> the rclpy class, or None where the package is not installed."""
    pkg, _, name = msgtype.rpartition("/")
    try:
        return getattr(importlib.import_module(pkg.replace("/", ".")), name)
    except (ImportError, AttributeError):
        return None


def open_bag(path: str | Path):
    """Open a bag with rosbags' AnyReader (mcap or sqlite3); raises BagError naming the bag."""
    from rosbags.highlevel import AnyReader

    path = Path(path)
    if not path.exists():
        raise BagError(f"bag {path}: no such file or folder")
    try:
        reader = AnyReader([path])
        reader.open()
    except Exception as exc:  # rosbags raises several unrelated types for corrupt/unknown bags
        raise BagError(f"bag {path}: cannot open ({type(exc).__name__}: {exc})") from exc
    return reader


class BagPlayerNode(Node):
    def __init__(self, options: argparse.Namespace) -> None:
        super().__init__("bag_player")
        self.options = options
        self.finished = threading.Event()
        self.exit_code = 0
        self.messages_published = 0
        self._stop = threading.Event()
        self._reader = open_bag(options.bag)
        qos = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=options.qos_depth,
                         reliability=ReliabilityPolicy.RELIABLE)
        # every /tf_static message of the bag stays latched (one per static broadcaster when recorded)
        static_count = sum(c.msgcount for c in self._reader.connections if c.topic == "/tf_static")
        latched = QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=max(1, min(static_count, 100)),
                             reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        # the bag's /tf_static messages once sent, and how many readers had matched then (see _resend_static)
        self._static_lock = threading.Lock()
        self._static_msgs: list[bytes] = []
        self._static_readers = 0
        self._connections = []
        self._topic_publishers = {}
        for conn in self._reader.connections:
            if options.topics and conn.topic not in options.topics:
                continue
            cls = _message_class(conn.msgtype)
            if cls is None:
                self.get_logger().warning(f"skipping {conn.topic}: message type {conn.msgtype} is not installed")
                continue
            if conn.topic not in self._topic_publishers:
                name = (conn.topic.lstrip("/") if options.in_namespace and conn.topic not in GLOBAL_TOPICS
                        else conn.topic)
                self._topic_publishers[conn.topic] = self.create_publisher(
                    cls, name, latched if conn.topic == "/tf_static" else qos)
            self._connections.append(conn)
        if not self._connections:
            raise BagError(f"bag {options.bag}: no playable topics")
        self._clock_pub = self.create_publisher(Clock, "/clock", 10) if options.clock_hz > 0 else None
        self._vo_reports: list = []  # (arrival monotonic, frames_pending) of vo_node's diagnostics
        self._lc_reports: list = []  # (arrival monotonic, keyframes/solve pending, keyframes received)
        if options.wait_processed > 0:
            from diagnostic_msgs.msg import DiagnosticArray

            self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)
        self.get_logger().info(
            f"playing {options.bag} at rate {options.rate:g}: "
            + ", ".join(sorted(p.topic_name for p in self._topic_publishers.values())))
        if "/tf_static" in self._topic_publishers:
            self.create_timer(STATIC_RECHECK_S, self._resend_static)
        self._thread = threading.Thread(target=self._play_guarded, name="bag_player", daemon=True)
        self._thread.start()

    def _send_static_first(self) -> None:
        """Send the bag's /tf_static before the first frame and wait until every matched reader has it:
        a node then takes its camera extrinsic from the bag, not from its parameters, whatever DDS
        discovery did (the messages go out again at their own stamps; repeats are harmless)."""
        publisher = self._topic_publishers.get("/tf_static")
        if publisher is None:
            return
        static = [c for c in self._connections if c.topic == "/tf_static"]
        with self._static_lock:
            self._static_msgs = [bytes(raw) for _, _, raw in self._reader.messages(connections=static)]
            for raw in self._static_msgs:
                publisher.publish(raw)
            self._static_readers = publisher.get_subscription_count()
        t0 = time.monotonic()
        acked = publisher.wait_for_all_acked(Duration(seconds=STATIC_ACK_TIMEOUT_S))
        waited = time.monotonic() - t0
        if not acked:
            self.get_logger().warning(f"not every /tf_static reader acknowledged the bag's static transforms "
                                      f"within {STATIC_ACK_TIMEOUT_S:g} s; playing anyway")
        elif waited > 0.5:
            self.get_logger().info(f"/tf_static acknowledged by every reader after {waited:.1f} s")

    def _resend_static(self) -> None:
        """Send the bag's /tf_static again when a reader matched after it was first sent: a volatile
        reader (e.g. ``ros2 topic echo`` with default QoS) gets nothing from durability, and a late
        transient-local one sometimes does not either (eProsima/Fast-DDS#3822). A repeat is harmless:
        static transforms are keyed by child frame."""
        publisher = self._topic_publishers["/tf_static"]
        with self._static_lock:
            readers = publisher.get_subscription_count()
            if readers > self._static_readers and self._static_msgs:
                for raw in self._static_msgs:
                    publisher.publish(raw)
                self.get_logger().info(f"/tf_static sent again: {readers - self._static_readers} reader(s) "
                                       "matched after it was first sent")
            self._static_readers = readers

    # The playback runs in its own thread: executor callbacks stay free and pacing is not tied to spin.
    def _play_guarded(self) -> None:
        try:
            self._wait_for_subscribers()
            if self.options.delay > 0:
                self._stop.wait(self.options.delay)
            self._send_static_first()
            while not self._stop.is_set():
                self._play_once()
                if not self.options.loop:
                    break
            self._wait_for_delivery()
            if self.options.wait_processed > 0 and not self._stop.is_set():
                self._wait_for_processing(self.options.wait_processed)
        except Exception as exc:  # a corrupt bag mid-way: report it and end the process with an error
            self.get_logger().error(f"playback of {self.options.bag} stopped: {type(exc).__name__}: {exc}")
            self.exit_code = 1
        finally:
            self.get_logger().info(f"playback done: {self.messages_published} messages")
            self.finished.set()

    def _wait_for_delivery(self) -> None:
        """Before the process ends, wait until every matched reader has acknowledged every sample: the
        last messages can still sit in the writers' queues (under load the tail of a 614 KB depth
        stream lagged > 0.5 s and was lost when the player exited; a fixed linger is not enough)."""
        deadline = time.monotonic() + DELIVERY_TIMEOUT_S
        for topic, publisher in self._topic_publishers.items():
            left = deadline - time.monotonic()
            if self._stop.is_set() or left <= 0 or not publisher.wait_for_all_acked(Duration(seconds=left)):
                self.get_logger().warning(f"not every subscriber of {topic} acknowledged the last messages")

    def _on_diagnostics(self, msg) -> None:
        statuses = diagnostic_values(msg)
        values = statuses.get(VO_DIAGNOSTIC)
        if values is not None and "frames_pending" in values:
            self._vo_reports.append((time.monotonic(), int(values["frames_pending"])))
        values = statuses.get(LC_DIAGNOSTIC)
        if values is not None and "pose_graph_pending" in values:
            self._lc_reports.append((time.monotonic(), int(values["keyframes_queued"]) + int(values["pose_graph_pending"]),
                                     int(values["keyframes_received"])))

    def _wait_for_processing(self, timeout: float) -> None:
        """Until a vo_node report made after every frame was delivered shows nothing pending, then
        (where loop_closure_node reports) until two of its reports after that show no keyframe queued,
        no pose-graph solve pending and no new keyframe between them: the launch then ends with the
        loop closure of the last keyframes in the map, not still computing it (a cold first solve
        compiles for minutes)."""
        delivered = time.monotonic()
        deadline = delivered + timeout
        vo_done = None
        while not self._stop.is_set() and time.monotonic() < deadline:
            if vo_done is None and any(t > delivered and pending == 0 for t, pending in self._vo_reports[-3:]):
                vo_done = time.monotonic()
                self.get_logger().info(f"vo_node processed every frame ({vo_done - delivered:.1f} s "
                                       "after the last message)")
                if not self._lc_reports:
                    return
                self.get_logger().info("waiting for loop_closure_node's last keyframes and pose-graph solve ...")
            if vo_done is not None:
                after = [r for r in self._lc_reports[-2:] if r[0] > vo_done]
                if len(after) == 2 and after[0][1] == after[1][1] == 0 and after[0][2] == after[1][2]:
                    self.get_logger().info(f"loop_closure_node processed every keyframe "
                                           f"({time.monotonic() - vo_done:.1f} s after vo_node)")
                    return
                if time.monotonic() - self._lc_reports[-1][0] > LC_SILENT_S:  # gone: do not wait for it
                    self.get_logger().warning(f"loop_closure_node sent no diagnostics for {LC_SILENT_S:g} s: "
                                              "not waiting for it")
                    return
            time.sleep(0.1)
        if not self._stop.is_set():
            who = "vo_node still had frames" if vo_done is None else "loop_closure_node still had keyframes or a solve"
            self.get_logger().warning(f"{who} pending {timeout:g} s after the last message")

    def _wait_for_subscribers(self) -> None:
        timeout = self.options.wait_timeout if self.options.wait_timeout > 0 else float("inf")
        deadline = time.monotonic() + timeout
        pending = list(self.options.wait_for)
        if pending:
            self.get_logger().info(f"waiting for subscribers on {[self.resolve_topic_name(t) for t in pending]}")
        while pending and not self._stop.is_set():
            pending = [t for t in pending if self._subscriber_count(t) == 0]
            if not pending:
                # the writer side matches a moment before the reader side; a volatile reader
                # loses what is sent in between, so give the readers a moment
                self._stop.wait(MATCH_SETTLE_S)
                break
            if time.monotonic() > deadline:
                self.get_logger().warning(f"no subscriber on {pending} after {self.options.wait_timeout:g} s; "
                                          "playing anyway")
                break
            time.sleep(0.1)

    def _subscriber_count(self, topic: str) -> int:
        """Matched DDS readers for a topic this player publishes (the ROS graph can list a
        subscriber before its endpoints match, and what is sent before the match is lost);
        graph subscribers for any other topic (e.g. a node's keyframe input, a readiness sign).
        A relative TOPIC resolves in the player's namespace, as the nodes' names do."""
        name = self.resolve_topic_name(topic)
        for publisher in self._topic_publishers.values():
            if publisher.topic_name == name:
                return publisher.get_subscription_count()
        return self.count_subscribers(name)

    def _play_once(self) -> None:
        opts = self.options
        reader = self._reader
        t_begin = reader.start_time + int(opts.start * 1e9)
        t_end = reader.end_time if opts.duration is None else t_begin + int(opts.duration * 1e9)
        total = max(1, sum(c.msgcount for c in self._connections))
        progress = None
        if opts.progress:
            from tqdm import tqdm

            progress = tqdm(total=total, unit="msg", desc="play", file=sys.stderr)
        rate = max(opts.rate, 1e-6)
        clock_period_ns = int(1e9 / opts.clock_hz) if self._clock_pub is not None else None
        wall0 = time.monotonic()
        next_clock = t_begin
        try:
            for conn, stamp, raw in reader.messages(connections=self._connections, start=t_begin, stop=t_end + 1):
                if self._stop.is_set():
                    return
                # sleep until this message's moment, ticking /clock on the way
                while True:
                    now_bag = t_begin + int((time.monotonic() - wall0) * rate * 1e9)
                    if clock_period_ns is not None and now_bag >= next_clock:
                        self._clock_pub.publish(Clock(clock=ns_to_time(min(now_bag, stamp))))
                        next_clock = now_bag + clock_period_ns
                    if now_bag >= stamp:
                        break
                    wait_ns = stamp - now_bag
                    if clock_period_ns is not None:
                        wait_ns = min(wait_ns, max(next_clock - now_bag, 0))
                    if self._stop.wait(max(wait_ns / rate * 1e-9, 0.0)):
                        return
                self._topic_publishers[conn.topic].publish(bytes(raw))
                self.messages_published += 1
                if progress is not None:
                    progress.update(1)
        finally:
            if progress is not None:
                progress.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5.0)
        self._reader.close()


def parse_player_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bag_player", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_player_arguments(parser)
    return parser.parse_args(argv)


def play(options: argparse.Namespace, ros_args: Optional[Sequence[str]] = None) -> int:
    """Run the player as a node until the bag ends (or SIGINT/SIGTERM); returns the exit code."""
    try:
        open_bag(options.bag).close()  # fail early with a clear message instead of a traceback
    except BagError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return run_node(lambda: BagPlayerNode(options), ros_args)


def main(args: Optional[Sequence[str]] = None) -> int:
    from rclpy.utilities import remove_ros_args

    argv = list(args) if args is not None else sys.argv
    options = parse_player_args(remove_ros_args(argv)[1:])
    return play(options, argv)


if __name__ == "__main__":
    raise SystemExit(main())
