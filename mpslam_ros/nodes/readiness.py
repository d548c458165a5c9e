"""What both nodes do before they subscribe, and how they report it: the pipeline warm-up (nothing
compiles on the camera path afterwards) and the count of numba kernels compiled or loaded after ready.
"""

from __future__ import annotations

import threading
from typing import Callable, Optional

#: Seconds close() waits for a warm worker to finish its current item: launch sends SIGINT, then
#: SIGTERM after 5 s and SIGKILL 5 s later, so a node must be gone well within 5 s.
WORKER_JOIN_S = 3.0


def warm_up(logger, description: str, **warm_pipeline_kwargs) -> Optional[float]:
    """Run :func:`mpslam_ros.warmup.warm_pipeline` with these arguments, logging before and after.
    Returns its seconds, or None when it failed (the node then runs cold, kernels compile on first use)."""
    from mpslam_ros.warmup import warm_pipeline

    logger.info(f"warming up ({description}) before subscribing ...")
    try:
        report = warm_pipeline(**warm_pipeline_kwargs)
    except Exception as exc:  # kernels then compile on first use; the node still works
        logger.error(f"warm-up failed ({type(exc).__name__}: {exc}); continuing cold")
        return None
    logger.info(f"kernels ready: {report.summary()}")
    return report.seconds


def start_kernel_watch(logger):
    """A KernelWatch from now on (None where numba's event API is missing: diagnostics then omit it)."""
    try:
        from mpslam_ros.warmup import KernelWatch

        return KernelWatch()
    except Exception as exc:
        logger.warning(f"cannot count kernel compilations after ready: {type(exc).__name__}: {exc}")
        return None


def kernel_stats(watch, logger=None) -> dict:
    """Diagnostics values: numba kernels compiled / signatures loaded since ready (0 = warm-up complete).
    Names each newly compiled or loaded kernel once in the log (what the warm-up missed)."""
    if watch is None:
        return {}
    new = watch.new_signature_names()
    if logger is not None:
        for name in [n for n in new if n not in watch.reported] + [n for n in watch.compiled_names
                                                                   if n not in watch.reported]:
            watch.reported.add(name)
            logger.warning(f"numba kernel compiled or loaded after ready (missed by the warm-up): {name}")
    return {"kernels_compiled_after_ready": watch.compiled,
            "kernel_signatures_loaded_after_ready": sum(new.values())}


def worker_join_timeout(warm: threading.Event) -> float:
    """How long close() waits for the worker: WORKER_JOIN_S once warm; not at all during the warm-up
    (a numba compile cannot be interrupted, has computed nothing to flush, and runs in a daemon thread)."""
    return WORKER_JOIN_S if warm.is_set() else 0.0


class ReadyGate:
    """A node subscribes to its inputs only once its worker is warm. The worker calls :meth:`open`
    after its warm-up: the kernel watch starts, ``ready`` is set and a guard condition wakes the
    executor, which calls ``subscribe`` once. A guard condition, not a timer: a timer on the node's clock
    never fires under use_sim_time before /clock, and the player sends /clock only once the nodes subscribe."""

    def __init__(self, node, subscribe: Callable[[], None]) -> None:
        self._logger = node.get_logger()
        self._subscribe = subscribe
        self._subscribed = False
        self.ready = threading.Event()
        self.kernel_watch = None  # counts kernels compiled/loaded after ready (should stay 0)
        self._signal = node.create_guard_condition(self._on_signal)

    def _on_signal(self) -> None:
        if self.ready.is_set() and not self._subscribed:
            self._subscribed = True
            self._subscribe()

    def open(self) -> None:
        """Worker thread, after the warm-up."""
        self.kernel_watch = start_kernel_watch(self._logger)
        self.ready.set()
        self._signal.trigger()
