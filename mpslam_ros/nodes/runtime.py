"""Process plumbing shared by every node: init, single-threaded spin, clean SIGINT/SIGTERM exit.

A single-threaded executor is used on purpose: MultiThreadedExecutor starves the Python worker
threads that run the (nogil, numba) solvers. Signals are handled here rather than by rclpy so the
node can still log, stop its workers and flush results before the context goes away.
"""

from __future__ import annotations

import signal
import sys
import threading
import traceback
from typing import Callable, Optional, Sequence

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.signals import SignalHandlerOptions


def run_node(make_node: Callable[[], Node], args: Optional[Sequence[str]] = None) -> int:
    """Create the node, spin it until SIGINT/SIGTERM, then shut down cleanly. Returns an exit code.

    A node with a ``finished`` attribute (a ``threading.Event``) ends the spin by setting it (the bag
    player does when the bag is over); a node with ``exit_code`` reports that code.
    """
    rclpy.init(args=list(args) if args is not None else sys.argv,
               signal_handler_options=SignalHandlerOptions.NO)
    stop = threading.Event()
    received: list[int] = []

    def on_signal(signum, _frame):
        received.append(signum)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}  # process entry points only
    node = None
    code = 0
    executor = SingleThreadedExecutor()
    try:
        node = make_node()
        executor.add_node(node)
        finished = getattr(node, "finished", None) or threading.Event()
        while not stop.is_set() and not finished.is_set() and rclpy.ok():
            try:
                executor.spin_once(timeout_sec=0.1)
            except (KeyboardInterrupt, ExternalShutdownException):
                raise
            except Exception:  # a failing callback must not take the node down: log it, keep spinning
                node.get_logger().error("callback failed:\n" + traceback.format_exc())
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            why = (signal.Signals(received[0]).name if received
                   else "finished" if getattr(node, "finished", threading.Event()).is_set() else "context shut down")
            node.get_logger().info(f"shutting down ({why})")
            close = getattr(node, "close", None)
            if close is not None:
                close()  # stop worker threads, flush what was computed
            code = int(getattr(node, "exit_code", 0) or 0)
            executor.remove_node(node)
            node.destroy_node()
        executor.shutdown()
        rclpy.try_shutdown()
        # The node is done and the process is about to exit with ``code``: a SIGINT/SIGTERM that
        # arrives now (launch signals every process at shutdown, also one that just finished on its
        # own) must not turn that exit into -2/-15, so they are ignored from here on.
        for s in previous:
            signal.signal(s, signal.SIG_IGN)
    return code
