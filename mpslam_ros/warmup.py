"""Cold start: compile every numba kernel the nodes run *before* they report ready.

numba compiles a kernel per argument-type signature (dtypes, ndim, layout, read-only flag) on its
first call, and loads it from the on-disk cache (``__pycache__`` beside the sources) on the first
call of a new process. Calling each kernel by hand with made-up arrays misses signatures: the
kernels of the first keyframe (stereo matching, triangulation, affine track refinement), of the
first bundle adjustment in a given precision, of the first loop and of the first pose-graph solve
were compiled on the camera path (issue 13: a 6.6 s gap after frame 0, 161 of 800 frames dropped).
So the warm-up here runs the *real* pipeline briefly, in every precision asked for:

- :func:`warm_vo`: a few rendered synthetic stereo (or RGB-D) frames through
  :class:`~mpslam_ros.slam.vo.VisualOdometry` with a keyframe on every frame and a small window, so
  the first keyframe, KLT + PnP tracking, the affine refinement, window bundle adjustment and the
  window slide all run;
- :func:`warm_loop_closure`: synthetic keyframes (two laps of a ring) through
  :class:`~mpslam_ros.slam.loop_closure.LoopClosure`: place recognition, loop verification, a forced
  loop and the two-stage (plain, then robust) pose-graph optimisation;
- plus each kernel module's own ``warmup()`` (:data:`KERNEL_MODULES`) for kernels outside that path.

``mpslam warmup`` (run by dev.sh) calls :func:`warm_pipeline` for every precision so the disk cache
is complete; each node calls it for its configured precision (and mode) before subscribing, so the
kernels are in memory when the first image arrives. :class:`KernelWatch` counts what compiles or
loads afterwards (the nodes publish it in /diagnostics, the tests assert it stays 0).
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from mpslam_ros.datatypes import Keyframe, StereoFrame

PRECISIONS = ("fp64", "fp32", "fp16", "mixed")
MODES = ("stereo", "rgbd")

#: Modules whose ``warmup()`` compiles kernels the pipeline run below may not reach (other problem
#: kinds, presets, the renderer of ``mpslam synth``); importing a module with no ``warmup`` is harmless.
KERNEL_MODULES = [
    "mpslam_ros.geometry.lie",
    "mpslam_ros.solvers.kernels",
    "mpslam_ros.solvers.block_ldl",
    "mpslam_ros.problems.pgo",
    "mpslam_ros.problems.ba",
    "mpslam_ros.sim.render",
]
#: The subset each node needs in memory (the renderer is needed by the VO warm-up sequence itself).
VO_KERNEL_MODULES = ["mpslam_ros.geometry.lie", "mpslam_ros.solvers.kernels", "mpslam_ros.problems.ba"]
LC_KERNEL_MODULES = ["mpslam_ros.geometry.lie", "mpslam_ros.solvers.kernels", "mpslam_ros.problems.pgo"]

#: Warm-up frames: 320x240 renders 4x faster than the demo's 640x480 and compiles the same
#: signatures (numba specialises on dtype/ndim/layout, not on sizes).
WARM_IMAGE_SIZE = (320, 240)
WARM_FRAMES = 10
#: A window this small slides after a few keyframes (the slide and the fixed-gauge path run too).
WARM_WINDOW = 3


def warm_modules(modules: Iterable[str], precisions: Optional[Sequence[str]] = None) -> None:
    """Import each module and call its ``warmup()`` if it has one (compile or load from the cache).

    ``precisions``: passed to the warm-ups that take a ``precisions`` argument, so a node compiles
    the kernel signatures of its own preset only (from an empty cache the other three presets' cost
    minutes it never gets back); None: every preset.
    """
    import inspect

    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:  # an optional part of the package that is not there
                continue
            raise
        warm = getattr(module, "warmup", None)
        if warm is None:
            continue
        if precisions is not None and "precisions" in inspect.signature(warm).parameters:
            warm(precisions=tuple(precisions))
        else:
            warm()


# ---------------------------------------------------------------------------- visual odometry

_frames_lock = threading.Lock()
_frames_cache: Dict[str, tuple] = {}


def warm_frames(mode: str = "stereo", num_frames: int = WARM_FRAMES) -> tuple:
    """``(StereoRig, [StereoFrame])``: the first frames of the synthetic household sequence at
    :data:`WARM_IMAGE_SIZE` (stereo, or left + depth for ``mode="rgbd"``).

    Rendered once (``mpslam warmup`` does it) and kept in the data cache ($MPSLAM_CACHE) as .npz: a
    node starting up then loads 2 MB instead of building the world and rendering (~7 s on a busy
    2-core machine), and needs no renderer kernels.
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    key = f"{mode}:{num_frames}"
    with _frames_lock:
        if key not in _frames_cache:
            _frames_cache[key] = _load_or_render_frames(mode, num_frames)
        return _frames_cache[key]


def _load_or_render_frames(mode: str, num_frames: int) -> tuple:
    import os

    from mpslam_ros.sim.sequences import (FRAME_RATE_HZ, SIM_VERSION, SimOptions, SyntheticSequence, cache_root,
                                          synthetic_rig)

    w, h = WARM_IMAGE_SIZE
    options = SimOptions(width=w, height=h, fx=190.0, fy=190.0)
    rig = synthetic_rig(options)
    if mode == "rgbd":
        rig = dataclasses.replace(rig, right=None, depth_scale=1.0)
    path = cache_root() / f"warmup_frames_{mode}_{num_frames}_v{SIM_VERSION}_{options.key()}.npz"
    try:
        with np.load(path) as z:
            stamps, left, other = z["stamps"], z["left"], z["other"]
        if len(stamps) != num_frames:
            raise ValueError("stale warm-up frames")
    except (OSError, ValueError, KeyError):
        from mpslam_ros.sim.sequences import cached_world

        seq = SyntheticSequence("household", (num_frames + 1) / FRAME_RATE_HZ, 0, options=options,
                                world=cached_world(0))
        rendered = [seq.render_frame(i, depth=(mode == "rgbd")) for i in range(num_frames)]
        stamps = np.array([f.stamp_ns for f in rendered], np.int64)
        left = np.stack([f.left for f in rendered])
        other = np.stack([f.depth if mode == "rgbd" else f.right for f in rendered])
        try:  # a read-only or full cache only costs the next start-up a render
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(tmp, stamps=stamps, left=left, other=other)
            os.replace(tmp, path)
        except OSError:
            pass
    frames = []
    for i in range(num_frames):
        f = StereoFrame(stamp_ns=int(stamps[i]), left=np.array(left[i]), index=i)
        if mode == "rgbd":
            f.depth = np.array(other[i])
        else:
            f.right = np.array(other[i])
        frames.append(f)
    return rig, frames


def warm_vo(config=None, mode: str = "stereo",
            frame_filter: Optional[Callable[[StereoFrame], StereoFrame]] = None) -> List[str]:
    """Run :class:`VisualOdometry` (``config``'s precision and settings) on :func:`warm_frames`, with
    a keyframe on every frame and a :data:`WARM_WINDOW`-keyframe window. Returns the tracking states;
    raises RuntimeError if no bundle adjustment ran (a configuration under which the warm frames do
    not track would leave the BA kernels cold: say so rather than report ready as if warm).

    ``frame_filter`` lets a node pass the frames through its own message decoding first, so the
    arrays reach the kernels with exactly the layout and flags the node's images have.
    """
    from mpslam_ros.slam.vo import VisualOdometry, VOConfig

    config = config or VOConfig()
    # keyframe on every frame (any elapsed time), window slides early: BA runs from the 2nd frame on
    cfg = dataclasses.replace(config, keyframe_max_interval_s=0.0,
                              window_size=max(2, min(int(config.window_size), WARM_WINDOW)))
    rig, frames = warm_frames(mode)
    vo = VisualOdometry(rig, cfg)
    states, bundle_adjustments = [], 0
    for frame in frames:
        f = dataclasses.replace(frame)  # VO may keep references; the cached frames stay untouched
        if frame_filter is not None:
            f = frame_filter(f)
        result = vo.process(f)
        states.append(result.tracking_state)
        # a keyframe while tracking ("ok") joins a window that already holds one: BA runs on it
        bundle_adjustments += result.tracking_state == "ok" and result.keyframe is not None
    if cfg.ba_enabled and not bundle_adjustments:
        raise RuntimeError(f"VO warm-up ran no bundle adjustment (tracking states {states})")
    if cfg.ba_enabled:  # a window whose fp16-stored Jacobian gets widened (rare, data dependent)
        from mpslam_ros.solvers.schur_ba import warm_jacobian_widening

        warm_jacobian_widening([cfg.precision])
    return states


# ---------------------------------------------------------------------------- loop closure

def warm_keyframes() -> List[Keyframe]:
    """Keyframes of two laps around a ring (loop_synth): the second lap revisits the first."""
    from mpslam_ros.slam.loop_synth import make_keyframe_sequence

    return make_keyframe_sequence(seed=0, laps=2, keyframes_per_lap=24, num_points=2500).keyframes


def warm_loop_closure(config=None, keyframe_filter: Optional[Callable[[Keyframe], Keyframe]] = None) -> int:
    """Run :class:`LoopClosure` (``config``'s precision and settings) on :func:`warm_keyframes` with
    the solves inline, then force one more loop and solve. Returns the number of loops.

    ``keyframe_filter``: as ``frame_filter`` of :func:`warm_vo`, for the node's keyframe decoding.
    """
    from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig
    from mpslam_ros.slam.verification import LoopEdge

    config = config or LoopClosureConfig()
    # inline solves (same kernels as the background thread, but finished when this returns)
    cfg = dataclasses.replace(config, background=False, exclude_recent=min(int(config.exclude_recent), 10),
                              solve_delay_s=0.0)
    lc = LoopClosure(cfg)
    try:
        keyframes = warm_keyframes()
        for kf in keyframes:
            lc.add_keyframe(keyframe_filter(kf) if keyframe_filter is not None else kf)
        # a forced loop, so the pose-graph path runs even if detection accepted none
        first, last = keyframes[0], keyframes[-1]
        rel = np.linalg.inv(first.T_world_body) @ last.T_world_body
        lc.add_loop(LoopEdge(query_id=last.id, match_id=first.id, T_match_query=rel,
                             information=np.diag([1e4] * 3 + [1e2] * 3), inliers=100))
        lc.wait_idle(timeout=60.0)
        lc.corrected_poses(), lc.T_map_odom(), lc.map_points()
        return len(lc.loops())
    finally:
        lc.close()


# ---------------------------------------------------------------------------- both

@dataclass
class WarmupReport:
    """What :func:`warm_pipeline` did: seconds per stage and numba activity during it."""

    seconds: float = 0.0
    stages: Dict[str, float] = field(default_factory=dict)
    #: kernels numba had to compile (disk-cache misses) during the warm-up
    compiled: int = 0
    #: kernel signatures that became callable during the warm-up (compiled or loaded from the cache)
    loaded: int = 0

    def summary(self) -> str:
        stages = ", ".join(f"{k} {v:.1f} s" for k, v in self.stages.items())
        return (f"warm-up {self.seconds:.1f} s ({stages}); {self.compiled} kernels compiled, "
                f"{self.loaded} signatures loaded")


def warm_pipeline(precisions: Sequence[str] = ("mixed",), modes: Sequence[str] = ("stereo",), vo: bool = True,
                  loop_closure: bool = True, vo_config=None, lc_config=None,
                  frame_filter: Optional[Callable[[StereoFrame], StereoFrame]] = None,
                  keyframe_filter: Optional[Callable[[Keyframe], Keyframe]] = None,
                  modules: Optional[Sequence[str]] = None,
                  log: Optional[Callable[[str], None]] = None) -> WarmupReport:
    """Compile (or load) every kernel VO and/or loop closure run, for each precision (and VO mode).

    ``vo_config`` / ``lc_config``: the nodes' configurations (their precision is replaced by each of
    ``precisions``); ``modules``: kernel modules whose ``warmup()`` runs first (default: those of the
    stages asked for). Raises what the pipeline raises (a node logs it and goes on cold).
    """
    for p in precisions:
        if p not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {p!r}")
    report = WarmupReport()
    watch = KernelWatch()
    t_all = time.perf_counter()

    def stage(name: str, fn: Callable[[], object]) -> None:
        t = time.perf_counter()
        if log is not None:  # before too: on an empty cache one stage compiles for minutes
            log(f"warm-up [{t - t_all:5.0f} s]: {name} ...")
        fn()
        report.stages[name] = report.stages.get(name, 0.0) + time.perf_counter() - t
        if log is not None:
            log(f"warm-up [{time.perf_counter() - t_all:5.0f} s]: {name} done in {report.stages[name]:.1f} s")

    if modules is None:
        modules = list(dict.fromkeys((VO_KERNEL_MODULES if vo else []) + (LC_KERNEL_MODULES if loop_closure else [])))
    for name in modules:  # one line per module: on an empty cache each compiles for minutes
        stage(f"kernels {name.removeprefix('mpslam_ros.')}", lambda name=name: warm_modules([name], precisions))
    if vo:
        from mpslam_ros.slam.vo import VOConfig

        base = vo_config or VOConfig()
        for mode in modes:
            stage(f"frames {mode}", lambda: warm_frames(mode))
            for p in precisions:
                stage(f"vo {mode} {p}", lambda: warm_vo(dataclasses.replace(base, precision=p), mode, frame_filter))
    if loop_closure:
        from mpslam_ros.slam.loop_closure import LoopClosureConfig
        from mpslam_ros.slam.place_recognition import default_vocabulary

        base_lc = lc_config or LoopClosureConfig()
        if getattr(base_lc, "vocabulary_path", "") == "rendered":  # (the default, online, needs none)
            stage("vocabulary", default_vocabulary)  # trained at first use, then cached on disk
        for p in precisions:
            stage(f"loop closure {p}", lambda: warm_loop_closure(dataclasses.replace(base_lc, precision=p),
                                                                 keyframe_filter))
    report.seconds = time.perf_counter() - t_all
    report.compiled = watch.compiled
    report.loaded = watch.new_signatures()
    watch.close()
    return report


# ---------------------------------------------------------------------------- "already warm" stamp

def warm_stamp(precisions: Sequence[str], modes: Sequence[str]) -> Path:
    """Path of the file that marks a complete :func:`warm_pipeline` for these sources.

    dev.sh runs ``mpslam warmup`` before every ``demo``/``test``; re-running the pipeline each time
    costs ~10-20 s even from a complete cache, so a finished warm-up leaves this stamp. It lives in
    the package's ``__pycache__`` (deleting the numba cache deletes it) and its name hashes every
    source file's size and mtime (numba's own invalidation key), the numba/Python versions, the
    precisions/modes and the data cache folder (which holds the warm-up frames and vocabulary).
    """
    import hashlib
    import sys
    from pathlib import Path

    import numba

    from mpslam_ros.sim.sequences import cache_root

    root = Path(__file__).resolve().parent
    h = hashlib.sha1()
    for path in sorted(root.rglob("*.py")):
        st = path.stat()
        h.update(f"{path.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    h.update(f"{numba.__version__}:{sys.version}:{sorted(precisions)}:{sorted(modes)}:{cache_root()}".encode())
    return root / "__pycache__" / f"warmup_{h.hexdigest()[:16]}.done"


def is_warm(precisions: Sequence[str], modes: Sequence[str]) -> bool:
    """True when :func:`warm_stamp` exists for these precisions and modes, or for all of them (a complete
    warm-up, e.g. dev.sh's, covers any subset), and the data cache still holds the warm-up frames."""
    import os

    from mpslam_ros.sim.sequences import cache_root

    frames = [p for p in cache_root().glob("warmup_frames_*.npz")] if cache_root().is_dir() else []
    stamped = os.path.exists(warm_stamp(precisions, modes)) or os.path.exists(warm_stamp(PRECISIONS, MODES))
    return stamped and len(frames) >= len(set(modes))


def mark_warm(precisions: Sequence[str], modes: Sequence[str]) -> None:
    """Leave the stamp (a read-only install just re-runs the warm-up next time)."""
    path = warm_stamp(precisions, modes)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for old in path.parent.glob("warmup_*.done"):
            old.unlink()
        path.write_text("mpslam warmup completed\n")
    except OSError:
        pass


# ---------------------------------------------------------------------------- counting

def _dispatchers() -> Dict[str, object]:
    """Every numba dispatcher defined in an imported mpslam_ros module, by qualified name."""
    import sys

    from numba.core.dispatcher import Dispatcher

    found = {}
    for modname, module in list(sys.modules.items()):
        if not modname.startswith("mpslam_ros") or module is None:
            continue
        for name, obj in list(vars(module).items()):
            if isinstance(obj, Dispatcher) and getattr(obj, "__module__", modname) == modname:
                found[f"{modname}.{name}"] = obj
    return found


def kernel_signatures() -> Dict[str, int]:
    """Compiled signatures in memory per mpslam_ros kernel (compiled here or loaded from the cache)."""
    return {name: len(d.overloads) for name, d in _dispatchers().items()}


class KernelWatch:
    """Counts numba work from now on: ``compiled`` (compilations, i.e. disk-cache misses, with the
    kernel names in ``compiled_names``) and :meth:`new_signatures` (signatures that became callable
    in mpslam_ros kernels, cache loads included: either one stalls the caller)."""

    def __init__(self) -> None:
        from numba.core import event

        self.compiled = 0
        self.compiled_names: List[str] = []
        #: names already reported (so a late kernel is logged once)
        self.reported: set = set()
        self._baseline = kernel_signatures()
        watch = self

        class _Listener(event.Listener):
            def on_start(self, ev) -> None:
                pass

            def on_end(self, ev) -> None:
                watch.compiled += 1
                d = ev.data.get("dispatcher") if isinstance(ev.data, dict) else None
                name = getattr(getattr(d, "py_func", None), "__qualname__", None) or str(d)
                watch.compiled_names.append(f"{getattr(d, '__module__', '?')}.{name}{tuple(ev.data.get('args', ()))}")

        self._listener = _Listener()
        self._event = event
        event.register("numba:compile", self._listener)

    def new_signature_names(self) -> Dict[str, int]:
        now = kernel_signatures()
        return {k: n - self._baseline.get(k, 0) for k, n in now.items() if n > self._baseline.get(k, 0)}

    def new_signatures(self) -> int:
        return sum(self.new_signature_names().values())

    def reset(self) -> None:
        """Count from now on."""
        self.compiled = 0
        self.compiled_names = []
        self._baseline = kernel_signatures()

    def close(self) -> None:
        try:
            self._event.unregister("numba:compile", self._listener)
        except (ValueError, KeyError):
            pass

    def __enter__(self) -> "KernelWatch":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
