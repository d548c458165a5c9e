"""Start the SLAM node graph (vo_node, loop_closure_node, bag_player) as separate processes.

What the launch files do on a ROS 2 install, done with subprocesses so that it also works where
`launch` is not installed: used by ``mpslam demo`` and the integration tests. Each process gets the
packaged parameters file plus an override file, and logs to ``<workdir>/<name>.log``.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import yaml

CAMERA_TOPICS = ["/camera/left/image_raw", "/camera/right/image_raw", "/camera/left/camera_info",
                 "/camera/right/camera_info"]
#: Subscribed (only) by loop_closure_node, once it is warm (kernels compiled, vocabulary loaded).
KEYFRAME_TOPIC = "/vo/keyframes/camera_info"
#: Seconds the player waits for the nodes to be ready. Both subscribe only after their pipeline
#: warm-up (mpslam_ros.warmup), which takes ~10 s from a complete disk cache but minutes where
#: nothing was compiled yet (no `mpslam warmup`; ~8 min on a loaded 2-core machine): playing before
#: would lose the first frames, so wait long.
READY_TIMEOUT_S = 900


def default_params_file() -> Path:
    """config/slam.yaml of the source tree, else of the installed package share."""
    here = Path(__file__).resolve().parents[2] / "config" / "slam.yaml"
    if here.is_file():
        return here
    try:
        from ament_index_python.packages import get_package_share_directory

        return Path(get_package_share_directory("mpslam_ros")) / "config" / "slam.yaml"
    except Exception:
        return Path(sys.prefix) / "share" / "mpslam_ros" / "config" / "slam.yaml"


#: the variables every process of one graph (nodes, player, an in-process recorder) must share
DDS_ENV_KEYS = ("ROS_DOMAIN_ID", "ROS_AUTOMATIC_DISCOVERY_RANGE", "FASTDDS_BUILTIN_TRANSPORTS")


def ros_environment(domain_id: Optional[int] = None, base: Optional[dict] = None) -> dict:
    """Environment for the graph's processes: own ROS_DOMAIN_ID, discovery kept on this host.

    Fast DDS's default transports send messages over ~0.5 MB (a 640x480 16-bit depth image) as
    fragmented UDP, which loses samples under load; LARGE_DATA (shared memory + TCP) carries them
    whole. A value already in the environment is kept.
    """
    env = dict(os.environ if base is None else base)
    if domain_id is None:
        domain_id = int(env.get("ROS_DOMAIN_ID") or random.randint(1, 100))
    env.update(ROS_DOMAIN_ID=str(domain_id), ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST", PYTHONUNBUFFERED="1",
               RCUTILS_LOGGING_BUFFERED_STREAM="0")
    env.setdefault("FASTDDS_BUILTIN_TRANSPORTS", "LARGE_DATA")
    return env


#: vo_node parameters that queue every frame instead of dropping frames while VO is busy (offline
#: processing of a bag, tests of what VO computes); live cameras want the default bounded queue
KEEP_EVERY_FRAME = {"max_pending_frames": 100000}


def extrinsic_params(T_body_left) -> dict:
    """``camera_extrinsic.*`` parameter values for a 4x4 T_body_left."""
    from mpslam_ros.nodes.msgs import rotation_to_quaternion

    return {"camera_extrinsic": {"translation": [float(v) for v in T_body_left[:3, 3]],
                                 "rotation_xyzw": [float(v) for v in rotation_to_quaternion(T_body_left[:3, :3])]}}


class SlamGraph:
    """The node processes of one run. ``params`` holds per-node overrides:
    ``{"/**": {...}, "vo_node": {...}, "loop_closure_node": {...}}`` (YAML ros__parameters content)."""

    def __init__(self, workdir: str | Path, env: dict, params: Optional[dict] = None,
                 params_file: Optional[str | Path] = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.env = env
        self.params_files = [str(params_file or default_params_file())]
        if params:
            override = self.workdir / "params_override.yaml"
            override.write_text(yaml.safe_dump({k: {"ros__parameters": v} for k, v in params.items()}))
            self.params_files.append(str(override))
        self.procs: dict[str, subprocess.Popen] = {}
        self._logs: dict = {}

    def start(self, name: str, module: str, args: Sequence[str] = (), ros_args: Sequence[str] = ()) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "w")
        self._logs[name] = log
        cmd = [sys.executable, "-m", module, *args, "--ros-args", *ros_args]
        proc = subprocess.Popen(cmd, env=self.env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs[name] = proc
        return proc

    def start_node(self, name: str, extra_ros_args: Sequence[str] = ()) -> subprocess.Popen:
        ros_args = []
        for f in self.params_files:
            ros_args += ["--params-file", f]
        return self.start(name, f"mpslam_ros.nodes.{name}", ros_args=[*ros_args, *extra_ros_args])

    def start_player(self, bag: str | Path, rate: float = 1.0, wait_for: Optional[Sequence[str]] = None,
                     extra: Sequence[str] = ()) -> subprocess.Popen:
        """Play ``bag`` once every started node is ready: by default once each subscribes to its input
        (cameras; keyframes if loop closure), which the nodes do only after their warm-up."""
        if wait_for is None:
            wait_for = CAMERA_TOPICS + ([KEYFRAME_TOPIC] if "loop_closure_node" in self.procs else [])
        args = [str(bag), "--rate", str(rate), "--wait-for", *wait_for, "--wait-timeout", str(READY_TIMEOUT_S), *extra]
        return self.start("bag_player", "mpslam_ros.nodes.bag_player", args=args)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.log(name):
                return True
            if self.procs[name].poll() is not None:
                return needle in self.log(name)
            time.sleep(0.2)
        return False

    def alive(self, name: str) -> bool:
        return name in self.procs and self.procs[name].poll() is None

    def stop(self, name: str, sig: int = signal.SIGINT, timeout: float = 20.0) -> Optional[int]:
        proc = self.procs.get(name)
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._logs[name].close()
        return proc.returncode

    def stop_all(self) -> dict:
        # player first (no new input), then VO, then loop closure (it may still be optimising)
        order = [n for n in ("bag_player", "vo_node", "loop_closure_node") if n in self.procs]
        order += [n for n in self.procs if n not in order]
        return {name: self.stop(name) for name in order}

    def __enter__(self) -> "SlamGraph":
        return self

    def __exit__(self, *exc) -> None:
        self.stop_all()
