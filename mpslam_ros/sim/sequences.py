"""Synthetic stereo / RGB-D sequences: the built-in default data, deterministic from a seed and cached.

``load_or_generate("household", 60, seed=0)`` renders 1200 stereo pairs (640x480 mono8, 20 Hz,
baseline 0.1 m) of the textured house along the robot trajectory the first time, stores them under
``$MPSLAM_CACHE`` (default ``~/.cache/mpslam_ros/``) as raw uint8 ``.npy`` files (memory-mapped
on reading: fast to iterate, ~0.6 MB per stereo pair) and loads them afterwards. Depth (RGB-D) is
exact z-depth rendered on demand from the same geometry (``with_depth=True``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator, Optional

import numpy as np

from mpslam_ros.datatypes import CameraIntrinsics, StereoFrame, StereoRig, Trajectory

#: Bump when rendering, world or trajectories change: old caches are then ignored.
#: 2: mip levels registered to texel centres (v1's pyramid shifted the texture with the level).
SIM_VERSION = 2
FRAME_RATE_HZ = 20.0
#: First stamp of every synthetic sequence (a realistic ROS time, 2023-11-14).
START_STAMP_NS = 1_700_000_000_000_000_000


@dataclass
class SimOptions:
    """Camera effects. Defaults: realistic noise, no motion blur, constant exposure."""

    width: int = 640
    height: int = 480
    fx: float = 380.0
    fy: float = 380.0
    baseline: float = 0.1
    read_noise: float = 1.5  # grey levels, Gaussian-like
    shot_noise: float = 0.02  # variance per grey level of signal
    motion_blur_samples: int = 0  # extra sub-exposure renders averaged per image (0 = off)
    exposure_time_s: float = 0.01  # time span the blur samples cover
    exposure_variation: float = 0.0  # relative amplitude of slow auto-exposure gain changes
    supersample: int = 1  # s x s samples per pixel (anti-aliased edges, s^2 the render time)

    def key(self) -> str:
        fields = asdict(self)
        if fields["supersample"] == 1:  # added later: keeps the keys of existing caches
            del fields["supersample"]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def synthetic_rig(options: Optional[SimOptions] = None) -> StereoRig:
    """The simulated rectified stereo camera: left camera 0.5 m above base_link looking along +x
    (optical frame), right camera +baseline along the left camera's x axis."""
    o = options or SimOptions()
    intr = CameraIntrinsics(o.width, o.height, o.fx, o.fy, (o.width - 1) / 2.0, (o.height - 1) / 2.0)
    T_body_left = np.eye(4)
    # optical x (right) = -body y, optical y (down) = -body z, optical z (forward) = body x
    T_body_left[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    T_body_left[:3, 3] = [0.0, o.baseline / 2, 0.5]
    T_left_right = np.eye(4)
    T_left_right[0, 3] = o.baseline
    right = CameraIntrinsics(o.width, o.height, o.fx, o.fy, intr.cx, intr.cy)
    return StereoRig(left=intr, right=right, T_body_left=T_body_left, T_left_right=T_left_right,
                     rectified=True)


def cache_root(cache_dir: Optional[str | os.PathLike] = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MPSLAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mpslam_ros"


def cached_world(seed: int, cache_dir: Optional[str | os.PathLike] = None):
    """The house world of ``seed``, its texture (the slow part, ~1 s) cached as .npy."""
    from mpslam_ros.sim.world import build_house, make_texture

    path = cache_root(cache_dir) / f"texture_seed{seed}_v{SIM_VERSION}.npy"
    texture = None
    if path.is_file():
        try:
            texture = np.load(path)
        except (OSError, ValueError):
            texture = None
    if texture is None:
        texture = make_texture(seed)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
        np.save(tmp, texture)
        os.replace(tmp, path)
    return build_house(seed, texture=texture)


class SyntheticSequence:
    """A rendered sequence (a FrameSource with exact ground truth).

    Frames come from the cached arrays when present, else are rendered on the fly. ``world`` and
    ``pose_at`` give the scene geometry and the continuous-time trajectory (T_world_body).
    """

    def __init__(self, scene: str, duration_s: float, seed: int, options: Optional[SimOptions] = None,
                 with_depth: bool = False, world=None):
        from mpslam_ros.sim.trajectories import SCENES
        from mpslam_ros.sim.world import build_house

        if scene not in SCENES:
            raise ValueError(f"unknown synthetic scene {scene!r}; choose from {sorted(SCENES)}")
        if not duration_s > 0:
            raise ValueError(f"synthetic sequence duration must be positive, got {duration_s}")
        self.scene, self.duration_s, self.seed = scene, float(duration_s), int(seed)
        self.options = options or SimOptions()
        self.name = f"synthetic:{scene}:{duration_s:g}s:seed{seed}"
        self.rig = synthetic_rig(self.options)
        self.with_depth = with_depth
        self.world = world if world is not None else build_house(seed)
        self.pose_at = SCENES[scene](self.world, self.duration_s, self.seed)
        n = int(round(self.duration_s * FRAME_RATE_HZ))
        self.times_s = np.arange(n) / FRAME_RATE_HZ
        self.stamps_ns = START_STAMP_NS + np.round(self.times_s * 1e9).astype(np.int64)
        self.poses = self.pose_at(self.times_s)
        self._left: Optional[np.ndarray] = None
        self._right: Optional[np.ndarray] = None
        self._renderer = None

    def __len__(self) -> int:
        return len(self.stamps_ns)

    def ground_truth(self) -> Trajectory:
        return Trajectory(self.stamps_ns.copy(), self.poses.copy())

    @property
    def renderer(self):
        if self._renderer is None:
            self._renderer = self.make_renderer()
        return self._renderer

    def camera_poses(self, T_world_body: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T_world_left and T_world_right for body poses (..., 4, 4)."""
        T_wl = T_world_body @ self.rig.T_body_left
        return T_wl, T_wl @ self.rig.T_left_right

    def _gain(self, t: float) -> float:
        a = self.options.exposure_variation
        if a <= 0:
            return 1.0
        ph = (self.seed * 0.618) % 1.0 * 2 * np.pi
        return float(1.0 + a * (0.7 * np.sin(2 * np.pi * 0.05 * t + ph) + 0.3 * np.sin(2 * np.pi * 0.17 * t)))

    def make_renderer(self):
        from mpslam_ros.sim.render import Renderer

        c = self.rig.left
        return Renderer(self.world, c.width, c.height, c.fx, c.fy, c.cx, c.cy, supersample=self.options.supersample)

    def render_frame(self, i: int, depth: bool = False, renderer=None) -> StereoFrame:
        """Render frame ``i`` (left, right and optionally depth) from scratch (with ``renderer``,
        e.g. one per thread, else this sequence's own)."""
        renderer = renderer or self.renderer
        o = self.options
        t = float(self.times_s[i])
        depth_img = np.empty((o.height, o.width), np.float32) if depth else None
        views = self.camera_poses(self.poses[i])  # (T_world_left, T_world_right)
        blur_views = (None, None)
        if o.motion_blur_samples > 0:  # earlier poses within the exposure, averaged in
            sub_t = t - o.exposure_time_s * np.linspace(0, 1, o.motion_blur_samples + 1)[1:]
            blur_views = tuple(list(v) for v in self.camera_poses(self.pose_at(sub_t)))
        images = []
        for cam in (0, 1):
            key = (self.seed * 1_000_003 + i) * 2 + cam + 1
            images.append(renderer.render(views[cam], noise_key=key, gain=self._gain(t), read_sigma=o.read_noise,
                                          shot_k=o.shot_noise, blur_poses=blur_views[cam],
                                          depth_out=depth_img if cam == 0 else None))
        return StereoFrame(stamp_ns=int(self.stamps_ns[i]), left=images[0], right=images[1], depth=depth_img,
                           gt_T_world_body=self.poses[i].copy(), index=i)

    def depth(self, i: int) -> np.ndarray:
        """Exact z-depth (float32 metres) of the left camera at frame ``i``."""
        T_wl, _ = self.camera_poses(self.poses[i])
        return self.renderer.radiance(T_wl)[1].copy()

    def frame(self, i: int) -> StereoFrame:
        if self._left is None:
            return self.render_frame(i, depth=self.with_depth)
        # Copies: the cache is a read-only memory map, and consumers may edit their images.
        return StereoFrame(stamp_ns=int(self.stamps_ns[i]), left=np.array(self._left[i]),
                           right=np.array(self._right[i]),
                           depth=self.depth(i) if self.with_depth else None,
                           gt_T_world_body=self.poses[i].copy(), index=i)

    def __iter__(self) -> Iterator[StereoFrame]:
        for i in range(len(self)):
            yield self.frame(i)

    def __getitem__(self, i: int) -> StereoFrame:
        if not -len(self) <= i < len(self):
            raise IndexError(f"{self.name}: frame {i} out of range (0..{len(self) - 1})")
        return self.frame(i % len(self))

    # -- cache ---------------------------------------------------------------------------------
    def cache_key(self) -> str:
        return f"{self.scene}_{self.duration_s:g}s_seed{self.seed}_v{SIM_VERSION}_{self.options.key()}"

    def attach_cache(self, folder: Path) -> None:
        self._left = np.load(folder / "left.npy", mmap_mode="r")
        self._right = np.load(folder / "right.npy", mmap_mode="r")
        if self._left.shape[0] != len(self) or self._right.shape != self._left.shape:
            raise ValueError(f"synthetic cache {folder} does not match {self.name}; delete it")

    def render_all(self, folder: Path, progress: bool = True) -> None:
        """Render every frame into ``folder/left.npy`` and ``right.npy`` (uint8[n, h, w])."""
        from numpy.lib.format import open_memmap

        o = self.options
        shape = (len(self), o.height, o.width)
        left = open_memmap(folder / "left.npy", mode="w+", dtype=np.uint8, shape=shape)
        right = open_memmap(folder / "right.npy", mode="w+", dtype=np.uint8, shape=shape)
        # One frame per worker thread, each kernel single-threaded: no per-row barriers, so
        # throughput holds up on a machine shared with other jobs (2x faster than row-parallel
        # kernels at load ~3 on 2 cores).
        import threading

        import numba

        workers = max(1, min(numba.config.NUMBA_NUM_THREADS, len(self)))
        bar = None
        if progress:
            from tqdm import tqdm

            bar = tqdm(total=len(self), desc=f"rendering {self.scene} ({self.duration_s:g} s)", unit="frame")
        lock = threading.Lock()
        errors: list = []

        def work(indices):
            try:
                numba.set_num_threads(1)
                renderer = self.make_renderer()
                for i in indices:
                    f = self.render_frame(i, renderer=renderer)
                    left[i] = f.left
                    right[i] = f.right
                    if bar is not None:
                        with lock:
                            bar.update(1)
            except BaseException as exc:  # re-raised in the calling thread
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(range(k, len(self), workers),), daemon=True)
                   for k in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if bar is not None:
            bar.close()
        if errors:
            raise errors[0]
        left.flush()
        right.flush()
        del left, right
        meta = {"scene": self.scene, "duration_s": self.duration_s, "seed": self.seed,
                "version": SIM_VERSION, "options": asdict(o), "frames": len(self)}
        (folder / "meta.json").write_text(json.dumps(meta, indent=1))
        np.save(folder / "poses.npy", self.poses)
        np.save(folder / "stamps_ns.npy", self.stamps_ns)


def _lock_file(fh) -> None:
    try:
        import fcntl
    except ImportError:  # not POSIX: no cross-process lock, the atomic rename still protects
        return
    fcntl.flock(fh, fcntl.LOCK_EX)


def _generate_into(seq: SyntheticSequence, root: Path, folder: Path, progress: bool) -> None:
    """Render into a temporary folder next to ``folder`` and rename it into place (atomic)."""
    tmp = Path(tempfile.mkdtemp(prefix=seq.cache_key() + ".tmp", dir=root))
    try:
        t0 = time.perf_counter()
        seq.render_all(tmp, progress=progress)
        if progress:
            print(f"rendered {len(seq)} stereo frames in {time.perf_counter() - t0:.1f} s -> {folder}")
        try:
            tmp.rename(folder)
        except OSError:
            pass  # another generator (without the lock) won the race: its result is identical
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def load_or_generate(scene: str, duration_s: float, seed: int = 0, cache_dir: Optional[str | os.PathLike] = None,
                     options: Optional[SimOptions] = None, with_depth: bool = False,
                     progress: bool = True) -> SyntheticSequence:
    """The synthetic sequence ``scene`` (``household`` or ``handheld``) of ``duration_s`` seconds,
    rendered on the first call and loaded from the cache afterwards."""
    seq = SyntheticSequence(scene, duration_s, seed, options, with_depth=with_depth,
                            world=cached_world(seed, cache_dir))
    root = cache_root(cache_dir)
    folder = root / seq.cache_key()
    if not (folder / "meta.json").is_file():
        root.mkdir(parents=True, exist_ok=True)
        # One generator per cache entry across processes: others wait, then load its result.
        with open(root / f".{seq.cache_key()}.lock", "w") as lock:
            _lock_file(lock)
            if not (folder / "meta.json").is_file():
                _generate_into(seq, root, folder, progress)
    seq.attach_cache(folder)
    return seq
