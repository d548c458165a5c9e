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
#: Time step of the movers' walks when they give way to the camera (they are interpolated between).
MOVER_STEP_S = 0.01

#: First stamp of every synthetic sequence (a realistic ROS time, 2023-11-14).
START_STAMP_NS = 1_700_000_000_000_000_000


@dataclass
class SimOptions:
    """Camera (and scene) effects; the defaults are the ``clean`` profile. See
    :mod:`mpslam_ros.sim.camera_effects` for the models and :meth:`for_profile` for the presets."""

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
    # -- added with the camera-effect profiles (out of the cache key while at these defaults) --
    profile: str = "clean"  # name of the preset these options came from (a label)
    vignetting: float = 0.3  # radial fall-off at the image corners (relative)
    blur_px_per_sample: float = 0.0  # > 0: motion blur over exposure_time_s, samples as motion needs
    max_blur_samples: int = 9
    flicker: float = 0.0  # relative amplitude of light flicker (frame to frame)
    right_gain: float = 1.0  # right camera gain relative to the left (sensor mismatch)
    distortion: tuple = (0.0, 0.0, 0.0, 0.0, 0.0)  # k1, k2, p1, p2, k3 (plumb-bob) of both cameras
    light_change: float = 0.0  # relative change of each 4 m cell's light level every 20 s
    moving_objects: int = 0  # people / trolleys walking through the scene
    mover_clearance_m: float = 0.0  # > 0: movers give way, keeping this far from the camera (floor plane)
    depth_noise: float = 0.0  # RGB-D depth noise sigma per z^2 (1/m)
    textureless_walls: float = 0.0  # share of wall faces painted plain (scene effect ``textureless``)
    dark_zones: float = 0.0  # share of the 4 m light cells left dark (scene effect ``dark``)

    #: Fields added after caches existed, with the values that keep the old keys.
    _LATER = {"supersample": 1, "profile": "clean", "vignetting": 0.3, "blur_px_per_sample": 0.0,
              "max_blur_samples": 9, "flicker": 0.0, "right_gain": 1.0,
              "distortion": (0.0, 0.0, 0.0, 0.0, 0.0), "light_change": 0.0, "moving_objects": 0,
              "mover_clearance_m": 0.0, "depth_noise": 0.0, "textureless_walls": 0.0, "dark_zones": 0.0}

    @classmethod
    def for_profile(cls, profile: str, **overrides) -> "SimOptions":
        """Options of a camera-effect profile (``clean``, ``realistic``, ``harsh``), optionally with
        scene effects added by ``+`` (``realistic+textureless+dark``), then ``overrides``."""
        from mpslam_ros.sim.profiles import profile_settings

        return cls(**{"profile": profile, **profile_settings(profile), **overrides})

    @property
    def distorted(self) -> bool:
        return any(float(c) != 0.0 for c in self.distortion)

    @property
    def dynamic_scene(self) -> bool:
        """True when the faces change with time (moving objects, light changes)."""
        return self.moving_objects > 0 or self.light_change > 0

    @property
    def legacy(self) -> bool:
        """True when only the first renderer's effects are on (rendered by its exact code path)."""
        return all(_same(getattr(self, k), v) for k, v in self._LATER.items() if k not in ("supersample", "profile"))

    def key(self) -> str:
        fields = asdict(self)
        for name, default in self._LATER.items():  # added later: keeps the keys of existing caches
            if _same(fields[name], default):
                del fields[name]
        if "distortion" in fields:
            fields["distortion"] = [float(c) for c in fields["distortion"]]
        return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _same(a, b) -> bool:
    if isinstance(b, tuple):
        return tuple(float(x) for x in a) == b
    return a == b


def synthetic_rig(options: Optional[SimOptions] = None) -> StereoRig:
    """The simulated rectified stereo camera: left camera 0.5 m above base_link looking along +x
    (optical frame), right camera +baseline along the left camera's x axis."""
    o = options or SimOptions()
    dist = np.array(o.distortion, dtype=np.float64)
    intr = CameraIntrinsics(o.width, o.height, o.fx, o.fy, (o.width - 1) / 2.0, (o.height - 1) / 2.0, dist.copy())
    T_body_left = np.eye(4)
    # optical x (right) = -body y, optical y (down) = -body z, optical z (forward) = body x
    T_body_left[:3, :3] = [[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]
    T_body_left[:3, 3] = [0.0, o.baseline / 2, 0.5]
    T_left_right = np.eye(4)
    T_left_right[0, 3] = o.baseline
    right = CameraIntrinsics(o.width, o.height, o.fx, o.fy, intr.cx, intr.cy, dist.copy())
    # With lens distortion the images are raw, as from a real camera: the pipeline rectifies them.
    return StereoRig(left=intr, right=right, T_body_left=T_body_left, T_left_right=T_left_right,
                     rectified=not o.distorted)


def cache_root(cache_dir: Optional[str | os.PathLike] = None) -> Path:
    if cache_dir is not None:
        return Path(cache_dir)
    env = os.environ.get("MPSLAM_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "mpslam_ros"


def cached_world(seed: int, cache_dir: Optional[str | os.PathLike] = None, kind: str = "house"):
    """The world (``house``, ``office`` or ``warehouse``) of ``seed``, its texture (the slow part, ~1 s) cached as .npy."""
    from mpslam_ros.sim.world import WORLDS, make_texture

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
    return WORLDS[kind](seed, texture=texture)


class SyntheticSequence:
    """A rendered sequence (a FrameSource with exact ground truth).

    Frames come from the cached arrays when present, else are rendered on the fly. ``world`` and
    ``pose_at`` give the scene geometry and the continuous-time trajectory (T_world_body).
    """

    def __init__(self, scene: str, duration_s: float, seed: int, options: Optional[SimOptions] = None,
                 with_depth: bool = False, world=None):
        from mpslam_ros.sim.trajectories import SCENE_WORLDS, SCENES
        from mpslam_ros.sim.world import WORLDS, with_scene_effects

        if scene not in SCENES:
            raise ValueError(f"unknown synthetic scene {scene!r}; choose from {sorted(SCENES)}")
        if not duration_s > 0:
            raise ValueError(f"synthetic sequence duration must be positive, got {duration_s}")
        self.scene, self.duration_s, self.seed = scene, float(duration_s), int(seed)
        self.options = options or SimOptions()
        self.name = f"synthetic:{scene}:{duration_s:g}s:seed{seed}"
        self.rig = synthetic_rig(self.options)
        self.with_depth = with_depth
        self.world = with_scene_effects(world if world is not None else WORLDS[SCENE_WORLDS[scene]](seed),
                                        self.options.textureless_walls, self.options.dark_zones, seed)
        self.pose_at = SCENES[scene](self.world, self.duration_s, self.seed)
        self._movers, self._mover_faces, self._cells = [], None, None
        if self.options.moving_objects > 0:
            from mpslam_ros.sim.world import make_movers

            self._movers, self._mover_faces = make_movers(self.world, self.options.moving_objects, seed)
            if self.options.mover_clearance_m > 0:
                from mpslam_ros.sim.world import give_way_to_camera

                grid = np.arange(0.0, self.duration_s + MOVER_STEP_S, MOVER_STEP_S)
                camera_xy = (self.pose_at(grid) @ self.rig.T_body_left)[:, :2, 3]
                self._movers = [give_way_to_camera(m, self.world, grid, camera_xy, self.options.mover_clearance_m)
                                for m in self._movers]
        if self.options.light_change > 0:
            from mpslam_ros.sim.world import face_cells

            self._cells = face_cells(self.world.faces)
        self._distortion = None
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
        from mpslam_ros.sim.camera_effects import exposure_gain

        return exposure_gain(t, self.seed, self.options.exposure_variation, self.options.flicker)

    @property
    def distortion_map(self):
        """The lens model's raw <- pinhole resampling (None without distortion)."""
        if self._distortion is None and self.options.distorted:
            from mpslam_ros.sim.camera_effects import DistortionMap

            c = self.rig.left
            self._distortion = DistortionMap(c.width, c.height, c.fx, c.fy, c.cx, c.cy, self.options.distortion)
        return self._distortion

    def make_renderer(self):
        """A pinhole renderer: the camera itself, or, with distortion, the larger pinhole camera the raw
        image is resampled from (vignetting then applied in the raw image)."""
        from mpslam_ros.sim.render import Renderer

        c, o = self.rig.left, self.options
        if o.distorted:
            (w, h), (cx, cy) = self.distortion_map.pinhole_size, self.distortion_map.pinhole_principal
            return Renderer(self.world, w, h, c.fx, c.fy, cx, cy, supersample=o.supersample, vignetting=0.0)
        return Renderer(self.world, c.width, c.height, c.fx, c.fy, c.cx, c.cy, supersample=o.supersample,
                        vignetting=o.vignetting)

    def faces_at(self, t: float) -> Optional[np.ndarray]:
        """The scene's faces at time ``t`` (moving objects, light levels); None when static."""
        if not self.options.dynamic_scene:
            return None
        from mpslam_ros.sim.camera_effects import light_levels
        from mpslam_ros.sim.world import faces_at

        light = None
        if self._cells is not None:
            uniq, inv = np.unique(self._cells, axis=0, return_inverse=True)
            light = light_levels(uniq, t, self.seed, self.options.light_change)[inv.ravel()]
        return faces_at(self.world.faces, self._movers, self._mover_faces, t, light, self.world.dark_cells)

    def render_frame(self, i: int, depth: bool = False, renderer=None) -> StereoFrame:
        """Render frame ``i`` (left, right and optionally depth) from scratch (with ``renderer``,
        e.g. one per thread, else this sequence's own)."""
        renderer = renderer or self.renderer
        o = self.options
        t = float(self.times_s[i])
        if not o.legacy:
            return self._render_effects(i, t, depth, renderer)
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

    def _render_effects(self, i: int, t: float, depth: bool, renderer) -> StereoFrame:
        """Frame ``i`` through the camera-effect chain: (blurred) pinhole radiance of the scene at ``t``
        -> lens distortion -> vignetting -> exposure gain (auto exposure, flicker, per-camera gain) ->
        shot + read noise -> 8 bits. Depth (z of the left camera, raw geometry) is of the instant ``t``."""
        from mpslam_ros.sim.camera_effects import blur_sample_times, image_motion_px, vignette_map
        from mpslam_ros.sim.render import expose

        o, c = self.options, self.rig.left
        faces = self.faces_at(t)
        views = self.camera_poses(self.poses[i])
        rad, z = renderer.radiance(views[0], faces)
        z = z.copy()
        times = np.array([t])
        if o.blur_px_per_sample > 0 and o.exposure_time_s > 0:
            ends = self.camera_poses(self.pose_at(np.array([t - o.exposure_time_s / 2, t + o.exposure_time_s / 2])))[0]
            valid = z[z > 0]
            near = float(np.median(valid)) if valid.size else 2.0  # typical parallax, not the worst pixel's
            times = blur_sample_times(t, o.exposure_time_s, image_motion_px(ends[0], ends[1], c.fx, near),
                                      o.blur_px_per_sample, o.max_blur_samples)
        sub_views = self.camera_poses(self.pose_at(times)) if len(times) > 1 else None
        dmap = self.distortion_map
        vign = None
        if dmap is not None and o.vignetting > 0:
            vign = vignette_map(c.width, c.height, c.cx, c.cy, o.vignetting)
        gain = self._gain(t)
        images = []
        for cam in (0, 1):
            if sub_views is None:
                acc = rad.copy() if cam == 0 else renderer.radiance(views[1], faces)[0].copy()
            else:
                acc = np.zeros_like(rad)
                for T in sub_views[cam]:
                    acc += renderer.radiance(T, faces)[0]
                acc /= len(times)
            if dmap is not None:
                acc = dmap.distort(acc)
                if vign is not None:
                    acc *= vign
            key = (self.seed * 1_000_003 + i) * 2 + cam + 1
            images.append(expose(acc, gain * (o.right_gain if cam == 1 else 1.0), o.read_noise, o.shot_noise, key))
        depth_img = self.depth(i, renderer) if depth else None
        return StereoFrame(stamp_ns=int(self.stamps_ns[i]), left=images[0], right=images[1], depth=depth_img,
                           gt_T_world_body=self.poses[i].copy(), index=i)

    def depth(self, i: int, renderer=None) -> np.ndarray:
        """Z-depth (float32 metres) of the left camera at frame ``i`` (exact for ``clean``; with the
        profile's lens distortion and depth noise otherwise)."""
        renderer = renderer or self.renderer
        T_wl, _ = self.camera_poses(self.poses[i])
        if self.options.legacy:
            return renderer.radiance(T_wl)[1].copy()
        from mpslam_ros.sim.camera_effects import noisy_depth

        z = renderer.radiance(T_wl, self.faces_at(float(self.times_s[i])))[1].copy()
        if self.distortion_map is not None:
            z = self.distortion_map.distort(z, nearest=True)
        return noisy_depth(z, self.options.depth_noise, (self.seed * 1_000_003 + i) * 2 + 7)

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
        profile = "" if self.options.profile == "clean" else f"_{self.options.profile}"
        return f"{self.scene}_{self.duration_s:g}s_seed{self.seed}_v{SIM_VERSION}{profile}_{self.options.key()}"

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


class RGBDView:
    """A synthetic sequence as an RGB-D camera: the left image and its registered depth (with the
    profile's distortion and depth noise), rig without a right camera. A FrameSource.

    The depth is rendered when the view is made and kept in millimetres (uint16, as RGB-D drivers
    publish it), so iterating costs no rendering and runs measure the pipeline alone."""

    def __init__(self, seq: SyntheticSequence, progress: bool = False):
        import dataclasses

        self.seq = seq
        self.name = seq.name + ":rgbd"
        self.rig = dataclasses.replace(seq.rig, right=None, depth_scale=1.0)
        self._depth_mm = np.empty((len(seq), seq.rig.left.height, seq.rig.left.width), np.uint16)
        indices = range(len(seq))
        if progress:
            from tqdm import tqdm

            indices = tqdm(indices, desc=f"depth {seq.scene}", unit="frame")
        for i in indices:
            self._depth_mm[i] = np.clip(np.round(seq.depth(i) * 1000.0), 0, 65535)

    def __len__(self) -> int:
        return len(self.seq)

    def __iter__(self) -> Iterator[StereoFrame]:
        with_depth, self.seq.with_depth = self.seq.with_depth, False
        try:
            for i, f in enumerate(self.seq):
                f.right = None
                f.depth = self._depth_mm[i].astype(np.float32) * np.float32(0.001)
                yield f
        finally:
            self.seq.with_depth = with_depth

    def ground_truth(self) -> Trajectory:
        return self.seq.ground_truth()


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
    """The synthetic sequence ``scene`` (``household``, ``handheld``, ``office``, ``office_handheld`` or
    ``warehouse``: :data:`mpslam_ros.sim.trajectories.SCENES`) of ``duration_s`` seconds, rendered on
    the first call and loaded from the cache afterwards."""
    from mpslam_ros.sim.trajectories import SCENE_WORLDS

    world = cached_world(seed, cache_dir, SCENE_WORLDS[scene]) if scene in SCENE_WORLDS else None
    seq = SyntheticSequence(scene, duration_s, seed, options, with_depth=with_depth, world=world)
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
