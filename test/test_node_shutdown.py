"""Shutdown while a worker is still busy: close() waits WORKER_JOIN_S for it, then the node is destroyed.
A worker that finishes its item after that must not publish on the destroyed node (on a loaded CI machine
vo_node printed ``InvalidHandle: cannot use Destroyable because destruction was requested`` from its
worker thread when loop closure was killed and the bag ended while VO was a frame behind)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("rclpy")

SLOW_WORKER = r"""
import json, sys, threading, time
import rclpy
from mpslam_ros.nodes.readiness import WORKER_JOIN_S
from mpslam_ros.nodes.vo_node import VisualOdometryNode
from mpslam_ros.slam import vo as vo_module
from mpslam_ros.warmup import warm_frames

errors, busy = [], threading.Event()
threading.excepthook = lambda args: errors.append(f"{args.exc_type.__name__}: {args.exc_value}")
real_process = vo_module.VisualOdometry.process

def slow_process(self, frame):  # a frame that takes longer than close() waits (a slow, loaded machine)
    result = real_process(self, frame)
    busy.set()
    time.sleep(WORKER_JOIN_S + 2.0)
    return result

vo_module.VisualOdometry.process = slow_process
rclpy.init(args=sys.argv)
node = VisualOdometryNode()
rig, frames = warm_frames("stereo")
with node._wake:  # what the image callbacks do once the calibration is known
    node._rig = rig
    node._pending.append((frames[0], time.monotonic()))
    node._wake.notify()
assert busy.wait(300), "VO never processed the frame"
node.close()
node.destroy_node()
node._worker.join(timeout=WORKER_JOIN_S + 10.0)
rclpy.shutdown()
print("RESULT" + json.dumps({"errors": errors, "worker_alive": node._worker.is_alive(),
                             "published": node.odometry_published}))
"""


def test_vo_worker_finishing_after_close_gave_up_publishes_nothing(ros_env):
    out = subprocess.run([sys.executable, "-c", SLOW_WORKER, "--ros-args", "-p", "warmup:=false"],
                         env=ros_env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads(next(l for l in out.stdout.splitlines() if l.startswith("RESULT"))[len("RESULT"):])
    assert result["errors"] == [], out.stderr[-3000:]
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    assert not result["worker_alive"]
    assert result["published"] == 0  # the frame close() stopped waiting for is dropped, not published
