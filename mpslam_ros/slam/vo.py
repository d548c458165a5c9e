"""Stereo / RGB-D visual odometry: KLT tracking, PnP per frame, sliding-window BA on keyframes.

Pipeline per frame (all on the rectified left camera, see :mod:`mpslam_ros.frontend.rectify`):

1. validate the frame (encoding, size, stamp order) -- a bad one is *skipped* with a logged reason;
2. KLT-track the features that have landmarks, seeded by projecting them with the constant-velocity
   prediction; PnP RANSAC + robust motion-only refinement (chi-square outlier rejection) gives the
   pose, published at frame rate with a covariance diagonal and a quality flag;
3. keyframe decision from the tracked-feature ratio, parallax, motion and elapsed time; on a keyframe:
   stereo-match (or look up depth), detect new FAST corners in empty grid cells, triangulate and
   check new landmarks (depth, disparity, row error), ORB descriptors for loop closure, then
   sliding-window BA over the last ``window_size`` keyframes with
   :func:`mpslam_ros.problems.ba.solve_window` (mixed precision by default). The oldest keyframe
   of the window is held fixed; when it slides out the next one is fixed at its current estimate,
   so the gauge never jumps.
4. tracking loss (too few inliers), or a gap in image time longer than the motion prior can bridge
   (``max_bridge_gap_s``: a stall, a blackout), starts *relocalisation*: every new frame's ORB
   features are matched against the recent keyframes of the current map (votes of nearest
   descriptors pick candidates, then the loop verification -- PnP RANSAC against the candidate's
   landmarks, inlier spread, 3D agreement -- accepts one), and tracking resumes in the same map at
   the verified pose (state ``"relocalized"``). When no frame verifies within
   ``relocalization_timeout_s`` of image time, a new map (``map_id`` + 1) starts with its first
   keyframe where the constant-velocity prior dead-reckons the robot over the time lost (at most
   2 s; ``new_map_pose``), so the published odometry goes on from where the robot most likely is,
   never a jump to a look-alike place (state ``"reinitialized"``); loop closure keeps the maps apart
   until a verified loop merges them.

Tracking states in :class:`VOResult`: ``"initializing"`` (first keyframe), ``"ok"``, ``"lost"``
(pose held at the last good one), ``"relocalizing"`` (lost, pose held, matching frames against the
map), ``"relocalized"``, ``"reinitialized"`` (new map started at the dead-reckoned pose) and
``"skipped"`` (the input was unusable -- wrong encoding or size, duplicated or out-of-order stamp --
and was dropped without touching the state). ``VOResult.reason`` says why; :attr:`VisualOdometry.stats`
counts relocalisations, new maps and the time spent relocalising.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import cv2
import numpy as np

from mpslam_ros.datatypes import FrameResult, Keyframe, StereoFrame, StereoRig
from mpslam_ros.frontend.affine_track import image_gradients, refine_affine
from mpslam_ros.frontend.features import (detect_features, image_texture,
                                          match_stereo, orb_descriptors, place_features,
                                          track_klt)
from mpslam_ros.frontend.pose import CHI2_2D, CHI2_3D, estimate_pose, refine_pose
from mpslam_ros.frontend.rectify import Rectifier
from mpslam_ros.geometry import lie
from mpslam_ros.slam.verification import VerificationConfig, verify_loop

log = logging.getLogger("mpslam_ros.vo")

try:  # the BA back end is another part of the package; VO degrades to PnP-only without it
    from mpslam_ros.problems.ba import ba_options as _ba_options, solve_window as _solve_window
except ImportError:  # pragma: no cover - depends on the checkout
    _solve_window = None
    _ba_options = None


@dataclass
class VOConfig:
    """Visual-odometry settings (defaults tuned for 640x480 - 752x480 stereo at 10-30 Hz)."""

    #: Precision preset of the window BA: "fp64", "fp32", "fp16" or "mixed".
    precision: str = "mixed"
    #: Number of keyframes in the sliding BA window.
    window_size: int = 20
    #: BA Levenberg-Marquardt iterations per keyframe.
    ba_iterations: int = 5
    #: Run window BA on each keyframe (False: PnP-only odometry).
    ba_enabled: bool = True
    #: CG preconditioner of the window BA ("block_jacobi", "ic0" or "none").
    ba_preconditioner: str = "block_jacobi"
    #: Robust loss of the window BA ("huber", "cauchy" or "none") and its scale in pixels.
    ba_robust_loss: str = "huber"
    ba_robust_scale_px: float = 2.0
    #: Features kept per keyframe (one per grid cell, cells sized to give about this many).
    max_features: int = 220
    #: Oriented multi-scale ORB features per keyframe for place recognition (0: none; loop closure
    #: then uses the tracking features' descriptors). About 5 ms per keyframe, 17 kB in the message.
    place_features: int = 500
    min_feature_distance: float = 12.0
    fast_threshold: int = 20
    klt_window: int = 21
    klt_levels: int = 3
    #: Forward-backward KLT consistency threshold (pixels).
    klt_fb_threshold: float = 1.0
    #: Refine each KLT track by affine alignment of its landmark's creation patch (half window, px).
    affine_refine: bool = True
    affine_half_window: int = 7
    #: Rectified stereo: ZNCC score, disparity range (pixels) of an accepted match.
    stereo_min_zncc: float = 0.8
    min_disparity: float = 1.0
    max_disparity_px: float = 160.0
    #: Landmark depth range (metres) accepted at triangulation.
    min_depth: float = 0.1
    max_depth: float = 40.0
    #: RGB-D: virtual baseline turning depth into a right-image u for BA (ORB-SLAM's trick).
    rgbd_virtual_baseline: float = 0.08
    #: PnP RANSAC threshold (pixels) and assumed pixel noise for chi-square tests.
    ransac_px: float = 3.0
    sigma_px: float = 1.0
    #: Fewer PnP inliers than this means tracking is lost.
    min_tracked: int = 15
    #: New landmarks are on probation for this many tracked frames: the pose is estimated from the
    #: established landmarks only, and a new one joins them after fitting that pose (chi-square) in
    #: each of these frames; one that does not is dropped. Points on people walking close by are
    #: created at a keyframe as static, and when they were most of the view PnP's largest consistent
    #: group was them plus a far wall, so the pose slid with the people (docs/robustness.md,
    #: household:60 seed 3). 0: every landmark is used at once.
    landmark_probation_frames: int = 2
    #: ... as long as at least this many established landmarks are tracked (PnP from fewer points is
    #: noisier but not dragged; with fewer, all are used).
    probation_min_established: int = 8
    #: Motion gate: a tracked pose whose camera centre is further from the constant-velocity
    #: prediction than ``motion_gate_min_m + motion_gate_accel / 2 x t^2`` (t: time since the last
    #: tracked frame) is refused: the frame is "lost" (pose and map held) and the next one tracks from
    #: the last good frame, as across a stall (after ``max_bridge_gap_s``, relocalisation). True motion
    #: deviates <= 6 mm per 20 Hz frame on the hand-held paths (1 g gives 12.5 mm); a pose that follows
    #: a person filling the view jumps 30-80 mm. Only checked once two consecutive tracked frames have
    #: measured the velocity. 0: off.
    motion_gate_accel: float = 9.81
    motion_gate_min_m: float = 0.005
    #: Minimum stereo landmarks needed to (re)initialise.
    min_init_landmarks: int = 30
    #: Keyframe when the tracked count falls below this ratio of the last keyframe's ...
    keyframe_min_tracked_ratio: float = 0.7
    #: ... or below this absolute count ...
    keyframe_min_tracked: int = 120
    #: ... or the median feature parallax since the keyframe exceeds this (pixels) ...
    keyframe_parallax_px: float = 40.0
    #: ... or the camera moved/turned this much ...
    keyframe_max_translation: float = 0.3
    keyframe_max_rotation_deg: float = 10.0
    #: ... or this much time passed.
    keyframe_max_interval_s: float = 1.0
    #: Frames darker/flatter than this intensity std are not tracked (black frames, lens cap).
    min_image_std: float = 3.0
    #: OpenCV worker threads (1 keeps the per-frame cost predictable on small machines).
    opencv_threads: int = 1
    #: After a loss, match frames against the map before starting a new one (False: new map at once).
    relocalization: bool = True
    #: Lost this long (image time) without a verified relocalisation: start a new map.
    relocalization_timeout_s: float = 1.0
    #: Gaps in image time (since the last tracked frame) longer than this are not bridged by the
    #: motion prior + KLT: the frame is relocalised instead (measured bridgeable: docs/vo.md).
    max_bridge_gap_s: float = 0.5
    #: Where a new map (started after a loss that relocalisation did not recover) puts its first
    #: keyframe: "dead_reckoned" (the constant-velocity prior carried over the time lost, as a robot
    #: that keeps driving does; the 104 m office run's 1 s blind spot: 35 mm off instead of 525 mm)
    #: or "last_good" (the pose held while lost).
    new_map_pose: str = "dead_reckoned"
    #: ... dead-reckoned over at most this long (s): a guess from the velocity alone is worse than
    #: holding the pose after ~2 v / a (2 s for a robot at 0.5 m/s that may brake or turn at 0.5 m/s^2).
    new_map_dead_reckoning_max_s: float = 2.0
    #: Recent keyframes of the current map kept for relocalisation (about 16 kB each).
    relocalization_keyframes: int = 300
    #: Candidates (most descriptor votes first) verified per relocalisation attempt; with the
    #: relocalisation gate on, as many again nearest the dead-reckoned pose are verified first.
    relocalization_candidates: int = 3
    #: Features detected on a frame being relocalised (more than tracking keeps: the viewpoint may
    #: differ a lot from the keyframes').
    relocalization_features: int = 500
    #: A candidate is verified against the landmarks of this many keyframes on each side of it (its
    #: local map), not only its own: more 3D points to match after a large viewpoint change.
    relocalization_neighbours: int = 3
    #: Relocalisation gate (look-alike places: a corridor of identical panels verifies as well as the
    #: true place). A verified relocalisation is accepted only when its position lies within
    #: ``relocalization_max_offset_m + relocalization_max_offset_m_per_s * t +
    #: relocalization_max_drift_fraction * d`` of the pose the constant-velocity prior dead-reckons over
    #: the ``t`` seconds lost, and its rotation within ``relocalization_max_offset_deg +
    #: relocalization_max_offset_deg_per_s * t + relocalization_max_drift_deg_per_m * d`` (``d``: metres VO
    #: travelled since the matched keyframe, whose pose carries the drift since then). A refused one
    #: is logged and counted; when nothing inside the gate verifies in time a new map starts (never a
    #: jump to a look-alike place). A negative ``relocalization_max_offset_m`` disables the gate
    #: (global relocalisation, as after a kidnap).
    relocalization_max_offset_m: float = 0.5
    #: Relocalisation gate: metres the robot may move (beyond the prediction) per second lost.
    relocalization_max_offset_m_per_s: float = 0.5
    #: Relocalisation gate: VO drift allowed per metre travelled since the matched keyframe.
    relocalization_max_drift_fraction: float = 0.02
    #: Relocalisation gate: rotation (deg) always allowed from the dead-reckoned pose ...
    relocalization_max_offset_deg: float = 10.0
    #: ... plus this per second lost ...
    relocalization_max_offset_deg_per_s: float = 30.0
    #: ... plus this per metre travelled since the matched keyframe (rotation drift).
    relocalization_max_drift_deg_per_m: float = 0.3
    #: Where the window BA's CG iterations run: "cpu", "cuda" (a GPU through numba-cuda; an error at the
    #: first solve when there is none) or "auto" (the GPU when present and the problem is large enough).
    #: See docs/cuda.md.
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.new_map_pose not in NEW_MAP_POSES:
            raise ValueError(f"VOConfig.new_map_pose {self.new_map_pose!r}: choose from {', '.join(NEW_MAP_POSES)}")


#: Where a new map starts (:attr:`VOConfig.new_map_pose`).
NEW_MAP_POSES = ("dead_reckoned", "last_good")


@dataclass
class VOResult(FrameResult):
    """:class:`FrameResult` plus why the state is what it is and a coarse quality flag."""

    #: Human-readable reason for a non-"ok" state ("" when ok).
    reason: str = ""
    #: "good" (many inliers), "weak" (few), "none" (no pose measurement this frame).
    quality: str = "none"
    #: PnP inliers after the chi-square test (0 when not tracked).
    num_inliers: int = 0


#: Tracking states without a pose measurement: vo_node publishes no odometry for them and
#: ``mpslam run`` leaves them out of its trajectories (they count against the tracked fraction).
NO_POSE_STATES = ("lost", "relocalizing")


@dataclass
class VOStats:
    """Counters of the events that degrade tracking (for the run report and /diagnostics)."""

    #: Times tracking was lost (or a gap was too long to bridge) and relocalisation began.
    losses: int = 0
    #: Successful relocalisations (tracking resumed in the same map).
    relocalizations: int = 0
    #: New maps started because relocalisation did not succeed in time.
    new_maps: int = 0
    #: Frames processed while relocalising, and the wall time spent on relocalisation attempts.
    frames_relocalizing: int = 0
    relocalization_s: float = 0.0
    #: Verified relocalisations refused by the gate (too far from the dead-reckoned pose: a look-alike
    #: place, see :attr:`VOConfig.relocalization_max_offset_m`).
    relocalizations_refused: int = 0
    #: Largest position offset (m) of an accepted relocalisation from the dead-reckoned pose.
    max_relocalization_offset_m: float = 0.0
    #: Longest gap in image time (s) bridged by the motion prior without relocalising.
    longest_bridged_gap_s: float = 0.0
    #: New landmarks dropped on probation (they did not fit the pose of the established ones): points
    #: on moving people and objects, or mismatches. Many per frame: something moving fills the view.
    landmarks_dropped_on_probation: int = 0
    #: Frames whose pose used the landmarks on probation too (fewer than ``probation_min_established``).
    frames_without_probation: int = 0
    #: Poses refused by the motion gate (too far from the constant-velocity prediction: tracking lost).
    poses_refused_by_motion_gate: int = 0


@dataclass
class _WindowKeyframe:
    id: int
    stamp_ns: int
    T_cw: np.ndarray
    lm_ids: np.ndarray  # int64[k]
    uv: np.ndarray  # float64[k,2]
    ur: np.ndarray  # float64[k] (NaN = mono)


class VisualOdometry:
    """Stereo / RGB-D visual odometry. ``process(frame)`` never raises on bad input."""

    def __init__(self, rig: StereoRig, config: Optional[VOConfig] = None) -> None:
        self.config = config or VOConfig()
        self.rig = rig
        cv2.setNumThreads(int(self.config.opencv_threads))
        self.rectifier = Rectifier(rig)
        self.camera = self.rectifier.camera
        self.stereo = rig.right is not None
        self.baseline = self.camera.baseline if self.stereo else self.config.rgbd_virtual_baseline
        self.T_body_cam = self.rectifier.T_body_cam
        self.T_cam_body = np.linalg.inv(self.T_body_cam)
        if self.config.ba_enabled and _solve_window is None:
            log.warning("mpslam_ros.problems.ba is not available: running PnP-only odometry")
        self._next_kf_id = 0
        self._next_lm_id = 0
        self.verification = VerificationConfig()
        self.reset()

    # ------------------------------------------------------------------ public API

    def reset(self, T_world_body: Optional[np.ndarray] = None) -> None:
        """Forget everything; the next good frame initialises at ``T_world_body`` (identity)."""
        T_wb = np.eye(4) if T_world_body is None else np.asarray(T_world_body, np.float64)
        self._T_cw = np.linalg.inv(T_wb @ self.T_body_cam)
        self._velocity = np.eye(4)  # T_cw(k) @ inv(T_cw(k-1))
        self._velocity_frames = 0  # consecutive tracked frames behind self._velocity (2: measured)
        self._refused_by_motion_gate = False
        self._steps_since_good = 1
        self._last_stamp: Optional[int] = None
        self._last_good_stamp: Optional[int] = None
        self._frame_dt_s = 0.05  # running estimate of the camera's frame interval
        self._initialized = False
        self._ever_initialized = False
        self._map_id = 0
        self._relocalizing_since: Optional[int] = None  # stamp of the first frame relocalising
        self._frames_relocalizing_now = 0
        # recent keyframes of the current map (what relocalisation matches against), oldest first
        self._reloc_db: "collections.OrderedDict[int, Keyframe]" = collections.OrderedDict()
        self._reloc_stack = None  # (descriptors, owner keyframe ids), rebuilt when the db changes
        self._reloc_offset_m = 0.0  # the accepted relocalisation's distance from the dead-reckoned pose
        self._path_m = 0.0  # metres the camera travelled by VO (tracked frames), for the drift allowance
        self._reloc_path: Dict[int, float] = {}  # keyframe id -> self._path_m when it was made
        self.stats = VOStats()
        self._clear_map()

    def _clear_map(self) -> None:
        self._landmarks: Dict[int, np.ndarray] = {}
        self._window: List[_WindowKeyframe] = []
        self._trk_pts = np.zeros((0, 2), np.float32)
        self._trk_ids = np.zeros(0, np.int64)
        self._trk_kf_uv = np.zeros((0, 2), np.float32)  # where each track was at the last keyframe
        self._prev_pyr = None
        self._last_kf_stamp = 0
        self._last_kf_T_cw = self._T_cw.copy()
        self._last_kf_tracked = 0
        # affine refinement: creation keyframe image, creation pixel and current warp per landmark
        self._anchor_images: Dict[int, np.ndarray] = {}
        self._lm_anchor: Dict[int, Tuple[int, float, float]] = {}
        self._lm_affine: Dict[int, np.ndarray] = {}
        # landmarks on probation -> tracked frames they have fitted so far (see landmark_probation_frames)
        self._probation: Dict[int, int] = {}

    @property
    def T_world_body(self) -> np.ndarray:
        return np.linalg.inv(self._T_cw) @ self.T_cam_body

    @property
    def window_keyframe_ids(self) -> List[int]:
        return [kf.id for kf in self._window]

    @property
    def map_id(self) -> int:
        """The map (segment) new keyframes belong to."""
        return self._map_id

    @property
    def state_summary(self) -> str:
        """'tracking', 'relocalizing' or 'uninitialized' (for diagnostics)."""
        if self._relocalizing_since is not None:
            return "relocalizing"
        return "tracking" if self._initialized else "uninitialized"

    def process(self, frame: StereoFrame) -> VOResult:
        """Track one frame; returns the pose and state. Logs and reports instead of raising."""
        t0 = time.perf_counter()
        timings: Dict[str, float] = {}
        try:
            result = self._process(frame, timings)
        except Exception as exc:  # never let one frame kill the pipeline
            log.exception("frame %s (stamp %s): internal error, frame dropped",
                          getattr(frame, "index", "?"), getattr(frame, "stamp_ns", "?"))
            result = self._result(frame, "lost", f"internal error: {exc!r}", timings)
        timings["total"] = time.perf_counter() - t0
        return result

    # ------------------------------------------------------------------ per frame

    def _validate(self, frame: StereoFrame) -> Optional[str]:
        cam = self.camera
        name = f"frame {frame.index} (stamp {frame.stamp_ns})"
        if not isinstance(frame.left, np.ndarray):
            return f"{name}: no left image"
        if frame.left.dtype != np.uint8 or frame.left.ndim != 2:
            return (f"{name}: left image must be mono8 uint8[h,w], got {frame.left.dtype}"
                    f"{list(frame.left.shape)}")
        if frame.left.shape != (cam.height, cam.width):
            return (f"{name}: left image is {frame.left.shape[1]}x{frame.left.shape[0]}, "
                    f"calibration says {cam.width}x{cam.height}")
        if self.stereo:
            r = frame.right
            if not isinstance(r, np.ndarray):
                return f"{name}: stereo rig but no right image"
            if r.dtype != np.uint8 or r.shape != frame.left.shape:
                return f"{name}: right image must be mono8 {list(frame.left.shape)}, got {r.dtype}{list(r.shape)}"
        else:
            d = frame.depth
            if not isinstance(d, np.ndarray):
                return f"{name}: RGB-D rig but no depth image"
            if d.shape != frame.left.shape or d.dtype.kind not in "fui":
                return f"{name}: depth must be numeric {list(frame.left.shape)}, got {d.dtype}{list(d.shape)}"
        if self._last_stamp is not None:
            if frame.stamp_ns == self._last_stamp:
                return f"{name}: duplicated timestamp"
            if frame.stamp_ns < self._last_stamp:
                return f"{name}: out of order (previous stamp {self._last_stamp})"
        return None

    def _process(self, frame: StereoFrame, timings: Dict[str, float]) -> VOResult:
        cfg = self.config
        bad = self._validate(frame)
        if bad is not None:
            log.warning("skipped %s", bad)
            return self._result(frame, "skipped", bad, timings)

        t = time.perf_counter()
        left, right, depth = self.rectifier.rectify(frame.left, frame.right, frame.depth)
        if depth is not None:
            depth = depth.astype(np.float32) * np.float32(self.rig.depth_scale)
        timings["rectify"] = time.perf_counter() - t
        dt_ns = 0 if self._last_stamp is None else frame.stamp_ns - self._last_stamp
        self._last_stamp = frame.stamp_ns

        mean, std = image_texture(left)
        if std < cfg.min_image_std:
            reason = f"frame {frame.index}: image black or featureless (mean {mean:.1f}, std {std:.2f})"
            return self._lost(frame, reason, timings)

        pyr = left  # (OpenCV's Python binding cannot take prebuilt KLT pyramids)

        if self._relocalizing_since is not None:
            return self._relocalize_or_new_map(frame, left, pyr, right, depth, timings)
        if not self._initialized:
            return self._initialize(frame, left, pyr, right, depth, timings)

        gap_s = (frame.stamp_ns - self._last_good_stamp) * 1e-9
        # frames missing in image time (a stall) count as steps of the constant-velocity prior
        self._steps_since_good = max(self._steps_since_good, int(round(gap_s / self._frame_dt_s)))
        if cfg.relocalization and gap_s > cfg.max_bridge_gap_s:
            return self._start_relocalizing(frame, left, pyr, right, depth, timings,
                                            f"frame {frame.index}: {gap_s:.2f} s since the last tracked "
                                            f"frame (> max_bridge_gap_s {cfg.max_bridge_gap_s:g})")
        self._refused_by_motion_gate = False
        est = self._track(pyr, timings)
        if est is None and self._refused_by_motion_gate:
            # hold the pose and the map: the next frame tracks from the last good one, as across a
            # stall, until max_bridge_gap_s sends it to relocalisation
            return self._lost(frame, f"frame {frame.index}: pose refused ({self._last_track_info})", timings)
        if est is None:
            reason = f"frame {frame.index}: tracking lost ({self._last_track_info})"
            if cfg.relocalization:
                return self._start_relocalizing(frame, left, pyr, right, depth, timings, reason)
            return self._reinitialize_or_lost(frame, left, pyr, right, depth, timings, reason)
        T_cw, inliers, cov = est
        self._velocity = T_cw @ np.linalg.inv(self._T_cw)
        if self._steps_since_good > 1:  # frames were dropped: per-step velocity
            self._velocity = _fractional_power(self._velocity, 1.0 / self._steps_since_good)
            self.stats.longest_bridged_gap_s = max(self.stats.longest_bridged_gap_s, gap_s)
        elif 0 < gap_s < 1.0:
            self._frame_dt_s = 0.9 * self._frame_dt_s + 0.1 * gap_s
        self._path_m += float(np.linalg.norm(_camera_centre(T_cw) - _camera_centre(self._T_cw)))
        self._T_cw = T_cw
        self._velocity_frames += 1
        self._steps_since_good = 1
        self._last_good_stamp = frame.stamp_ns
        self._prev_pyr = pyr
        n_in = int(inliers)
        state = "ok"
        kf = None
        if self._need_keyframe(frame.stamp_ns, n_in):
            kf = self._make_keyframe(frame, left, pyr, right, depth, timings)
        quality = "good" if n_in >= cfg.keyframe_min_tracked else "weak"
        res = self._result(frame, state, "", timings, keyframe=kf, cov=cov, quality=quality,
                           num_inliers=n_in)
        return res

    def _track(self, pyr, timings):
        """KLT + PnP against the landmark map. Returns (T_cw, n_inliers, cov) or None."""
        cfg = self.config
        cam = self.camera
        t = time.perf_counter()
        T_pred = self._T_cw
        for _ in range(self._steps_since_good):
            T_pred = self._velocity @ T_pred
        ids = self._trk_ids
        X = np.array([self._landmarks[i] for i in ids]) if len(ids) else np.zeros((0, 3))
        guess = self._trk_pts.copy()
        if len(ids):
            Pc = X @ T_pred[:3, :3].T + T_pred[:3, 3]
            good = Pc[:, 2] > cfg.min_depth
            proj = np.full((len(ids), 2), np.nan)
            proj[good, 0] = cam.fx * Pc[good, 0] / Pc[good, 2] + cam.cx
            proj[good, 1] = cam.fy * Pc[good, 1] / Pc[good, 2] + cam.cy
            inside = good & (proj[:, 0] >= 0) & (proj[:, 0] < cam.width) & (proj[:, 1] >= 0) & (proj[:, 1] < cam.height)
            guess[inside] = proj[inside]
        pts, ok = track_klt(self._prev_pyr, pyr, self._trk_pts, guess, cfg.klt_window, cfg.klt_levels,
                            cfg.klt_fb_threshold, (cam.width, cam.height))
        if cfg.affine_refine:
            pts, ok = self._refine_tracks(pyr, ids, pts, ok)
        timings["track"] = time.perf_counter() - t
        t = time.perf_counter()
        n_ok = int(ok.sum())
        self._last_track_info = f"{n_ok} of {len(ids)} features tracked"
        if n_ok < cfg.min_tracked:
            timings["pnp"] = time.perf_counter() - t
            return None
        # the pose from established landmarks; those on probation must fit it (or all when too few)
        on_probation = np.array([int(i) in self._probation for i in ids], bool)
        use = ok & ~on_probation
        min_inliers = min(cfg.min_tracked, cfg.probation_min_established)
        if use.sum() < cfg.probation_min_established:
            use = ok
            min_inliers = cfg.min_tracked
            self.stats.frames_without_probation += int(on_probation[ok].any())
        n_use = int(use.sum())
        est = estimate_pose(X[use], pts[use].astype(np.float64), np.full(n_use, np.nan), cam.intrinsics,
                            self.baseline, T_cw_prior=T_pred, ransac_px=cfg.ransac_px,
                            sigma_px=cfg.sigma_px, min_inliers=min_inliers)
        timings["pnp"] = time.perf_counter() - t
        if est is None:
            self._last_track_info = f"PnP failed on {n_use} tracked features"
            return None
        inlier = np.zeros(len(ids), bool)
        inlier[np.nonzero(use)[0][est.inliers]] = True
        trial = ok & ~use
        if trial.any():
            inlier[trial] = self._fits_pose(est.T_cw, X[trial], pts[trial])
        if cfg.motion_gate_accel > 0 and self._velocity_frames >= 2:
            off = float(np.linalg.norm(_camera_centre(est.T_cw) - _camera_centre(T_pred)))
            lost_s = self._steps_since_good * self._frame_dt_s
            limit = cfg.motion_gate_min_m + 0.5 * cfg.motion_gate_accel * lost_s ** 2
            if off > limit:
                self.stats.poses_refused_by_motion_gate += 1
                self._refused_by_motion_gate = True
                self._last_track_info = (f"pose {1e3 * off:.0f} mm from the constant-velocity prediction (motion "
                                         f"gate {1e3 * limit:.0f} mm; something moving fills the view?)")
                return None
        if inlier.sum() < cfg.min_tracked:
            self._last_track_info = f"{int(inlier.sum())} of {n_ok} tracked features fit the pose"
            return None
        for j in np.nonzero(on_probation)[0]:  # only for a pose that is kept
            i = int(ids[j])
            if not inlier[j]:  # did not fit, or no longer tracked
                del self._probation[i]
                self.stats.landmarks_dropped_on_probation += int(ok[j])
            elif self._probation[i] + 1 >= cfg.landmark_probation_frames:
                del self._probation[i]
            else:
                self._probation[i] += 1
        keep = np.nonzero(inlier)[0]
        self._trk_pts = pts[keep]
        self._trk_ids = ids[keep]
        self._trk_kf_uv = self._trk_kf_uv[keep]
        return est.T_cw, len(keep), est.covariance_diag

    def _fits_pose(self, T_cw: np.ndarray, X: np.ndarray, uv: np.ndarray) -> np.ndarray:
        """Whether landmarks ``X`` [n, 3] project within the inlier chi-square of ``uv`` at ``T_cw``."""
        _, chi2, _, _ = refine_pose(T_cw, X, uv.astype(np.float64), np.full(len(X), np.nan),
                                    self.camera.intrinsics, self.baseline, self.config.sigma_px, iterations=0)
        return chi2 < CHI2_2D

    def _refine_tracks(self, image, ids, pts, ok):
        """Affine-align each KLT track's creation patch to ``image``. Returns (pts, ok) with the aligned
        positions; a track that cannot be aligned (occluded, on an edge, lost) is no longer ok."""
        idx = np.nonzero(ok)[0]
        idx = idx[[int(ids[j]) in self._lm_anchor for j in idx]]
        if len(idx) == 0:
            return pts, ok
        cur = image_gradients(image)
        pts, ok = pts.copy(), ok.copy()
        anchors = np.array([self._lm_anchor[int(ids[j])] for j in idx])
        for kf in np.unique(anchors[:, 0]).astype(np.int64):
            sel = anchors[:, 0] == kf
            rows = idx[sel]
            A = np.array([self._lm_affine[int(ids[j])] for j in rows])
            uv, A_new, good = refine_affine(self._anchor_images[int(kf)], anchors[sel, 1:], cur, pts[rows], A,
                                            self.config.affine_half_window)
            pts[rows[good]] = uv[good]
            ok[rows[~good]] = False
            for j, a in zip(rows[good], A_new[good]):
                self._lm_affine[int(ids[j])] = a
        return pts, ok

    def _need_keyframe(self, stamp_ns: int, n_tracked: int) -> bool:
        cfg = self.config
        if n_tracked < cfg.keyframe_min_tracked_ratio * self._last_kf_tracked:
            return True
        if n_tracked < cfg.keyframe_min_tracked:
            return True
        if (stamp_ns - self._last_kf_stamp) * 1e-9 > cfg.keyframe_max_interval_s:
            return True
        if len(self._trk_pts):
            parallax = np.median(np.linalg.norm(self._trk_pts - self._trk_kf_uv, axis=1))
            if parallax > cfg.keyframe_parallax_px:
                return True
        rel = self._T_cw @ np.linalg.inv(self._last_kf_T_cw)
        if np.linalg.norm(rel[:3, 3]) > cfg.keyframe_max_translation:
            return True
        angle = np.degrees(lie.rotation_angle(rel[:3, :3]))
        return bool(angle > cfg.keyframe_max_rotation_deg)

    # ------------------------------------------------------------------ loss / initialisation

    def _lost(self, frame: StereoFrame, reason: str, timings) -> VOResult:
        """No pose this frame: hold the last good pose; the map is kept for the next frame."""
        log.warning("lost: %s", reason)
        if self._initialized:
            self._steps_since_good += 1
        return self._result(frame, "lost", reason, timings)

    def _reinitialize_or_lost(self, frame, left, pyr, right, depth, timings, reason) -> VOResult:
        log.warning("%s: starting map %d", reason, self._map_id + 1)
        self._new_map()
        return self._initialize(frame, left, pyr, right, depth, timings, reason)

    def _new_map(self) -> None:
        """Forget the current map: the next keyframes belong to a new one (its odometry is not
        chained to the old map's by loop closure)."""
        self._initialized = False
        self._relocalizing_since = None
        if self._ever_initialized:
            self._map_id += 1
            self.stats.new_maps += 1
        self._reloc_db.clear()
        self._reloc_path.clear()
        self._reloc_stack = None

    # ------------------------------------------------------------------ relocalisation

    def _start_relocalizing(self, frame, left, pyr, right, depth, timings, reason: str) -> VOResult:
        log.warning("%s: relocalising against %d keyframes of map %d", reason, len(self._reloc_db),
                    self._map_id)
        self.stats.losses += 1
        self._initialized = False
        self._relocalizing_since = frame.stamp_ns
        self._frames_relocalizing_now = 0  # this loss's attempts (stats count all losses')
        return self._relocalize_or_new_map(frame, left, pyr, right, depth, timings, reason)

    def _relocalize_or_new_map(self, frame, left, pyr, right, depth, timings, reason: str = "") -> VOResult:
        cfg = self.config
        t = time.perf_counter()
        self.stats.frames_relocalizing += 1
        self._frames_relocalizing_now += 1
        found = self._relocalize(frame, left, right, depth)
        timings["relocalize"] = time.perf_counter() - t
        self.stats.relocalization_s += timings["relocalize"]
        if found is not None:
            T_wb, match_id, inliers, static = found
            held = (self._T_cw, self._velocity)
            self._T_cw = np.linalg.inv(T_wb @ self.T_body_cam)
            self._velocity = np.eye(4)
            res = self._initialize(frame, left, pyr, right, depth, timings,
                                   f"frame {frame.index}: relocalised against keyframe {match_id} "
                                   f"({inliers} inliers, {self._reloc_offset_m:.2f} m from the "
                                   f"dead-reckoned pose)", state="relocalized", static=static)
            if res.tracking_state != "relocalized":  # keep dead-reckoning from the last good frame
                self._T_cw, self._velocity = held
            else:
                self._relocalizing_since = None
                self.stats.relocalizations += 1
                self.stats.max_relocalization_offset_m = max(self.stats.max_relocalization_offset_m,
                                                             self._reloc_offset_m)
                log.info("%s", res.reason)
                return res
        waited = (frame.stamp_ns - self._relocalizing_since) * 1e-9
        if waited >= cfg.relocalization_timeout_s or not self._reloc_db:
            why = (f"frame {frame.index}: not relocalised within {cfg.relocalization_timeout_s:g} s "
                   f"({self._frames_relocalizing_now} frames tried)")
            log.warning("%s: starting map %d", why, self._map_id + 1)
            self._new_map()
            return self._initialize(frame, left, pyr, right, depth, timings, why)
        why = reason or f"frame {frame.index}: relocalising ({waited:.2f} s)"
        return self._result(frame, "relocalizing", why, timings)

    def _relocalize(self, frame, left, right, depth
                    ) -> Optional[Tuple[np.ndarray, int, int, Tuple[np.ndarray, np.ndarray]]]:
        """Match this frame against the recent keyframes of the map: (T_world_body, keyframe id,
        inliers, (pixels, camera-frame points) of the inliers) of the first candidate that passes the
        loop verification, else None."""
        cfg = self.config
        if not self._reloc_db:
            return None
        pts = detect_features(left, cfg.relocalization_features, None, 0.5 * cfg.min_feature_distance,
                              cfg.fast_threshold)
        desc, has_desc = orb_descriptors(left, pts)
        if has_desc.sum() < self.verification.min_inliers:
            return None
        pts, desc = pts[has_desc], desc[has_desc]
        ur, _ = self._right_u(left, right, depth, pts, None)
        query = Keyframe(id=-1, stamp_ns=int(frame.stamp_ns), T_world_body=np.eye(4),
                         keypoints=pts.astype(np.float32), descriptors=desc,
                         landmark_ids=np.full(len(pts), -1, np.int64),
                         points_cam=self._triangulate(pts, ur), K=self.camera.K,
                         T_body_left=self.T_body_cam)
        if self._reloc_stack is None:
            kfs = list(self._reloc_db.values())
            self._reloc_stack = (np.ascontiguousarray(np.concatenate([k.descriptors for k in kfs])),
                                 np.concatenate([np.full(len(k.descriptors), k.id) for k in kfs]))
        stack, owner = self._reloc_stack
        # candidates: keyframes holding the most nearest-neighbour descriptors of this frame
        matches = cv2.BFMatcher(cv2.NORM_HAMMING).match(desc, stack)
        votes: Dict[int, int] = {}
        for m in matches:
            if m.distance <= self.verification.max_hamming:
                k = int(owner[m.trainIdx])
                votes[k] = votes.get(k, 0) + 1
        min_votes = self.verification.min_inliers // 2
        ranked = [k for k, n in sorted(votes.items(), key=lambda kv: -kv[1])[: cfg.relocalization_candidates]
                  if n >= min_votes]
        if cfg.relocalization_max_offset_m >= 0 and self._last_good_stamp is not None:
            # the keyframes nearest the dead-reckoned pose first, whatever their votes (ORB-SLAM
            # tracks its reference keyframe before relocalising globally): in a corridor of
            # look-alike panels the panels' keyframes split the nearest-descriptor votes, so the
            # true place may get too few while a wrong panel gets the most (refused by the gate)
            T_pred = self.dead_reckoned_pose(frame.stamp_ns)
            near = sorted(votes, key=lambda k: self._distance_to(k, T_pred))[: cfg.relocalization_candidates]
            ranked = near + [k for k in ranked if k not in near]
        for kf_id in ranked:
            cand = self._local_map(kf_id)
            result = verify_loop(query, cand, self.verification)
            if result.edge is None:
                continue
            T_wb = cand.T_world_body @ result.edge.T_match_query
            refused = self._outside_relocalization_gate(frame, T_wb, kf_id)
            if refused:
                self.stats.relocalizations_refused += 1
                log.warning("frame %s: relocalisation against keyframe %d (%d inliers) refused: %s",
                            frame.index, kf_id, result.edge.inliers, refused)
                continue
            inl = result.edge.query_inliers
            return T_wb, kf_id, result.edge.inliers, (pts[inl], query.points_cam[inl])
        return None

    def _distance_to(self, kf_id: int, T_cw: np.ndarray) -> float:
        """Camera-centre distance (m) of keyframe ``kf_id`` from pose ``T_cw``, plus 1 m per 30 deg of
        rotation between them (a keyframe at the same spot facing away sees something else)."""
        T_ck = np.linalg.inv(self._reloc_db[kf_id].T_world_body @ self.T_body_cam)
        return (float(np.linalg.norm(_camera_centre(T_ck) - _camera_centre(T_cw)))
                + _rotation_deg(T_ck[:3, :3] @ T_cw[:3, :3].T) / 30.0)

    def dead_reckoned_pose(self, stamp_ns: int, max_s: float = float("inf")) -> np.ndarray:
        """T_cw the constant-velocity prior predicts at ``stamp_ns`` (at most ``max_s`` after the last
        tracked frame) from the last tracked frame."""
        lost_s = max(0.0, (stamp_ns - self._last_good_stamp) * 1e-9) if self._last_good_stamp else 0.0
        lost_s = min(lost_s, max_s)
        steps = max(1, int(round(lost_s / self._frame_dt_s)))
        return np.linalg.matrix_power(self._velocity, steps) @ self._T_cw

    def _outside_relocalization_gate(self, frame: StereoFrame, T_wb: np.ndarray, kf_id: int) -> str:
        """Why a verified relocalisation ``T_wb`` against keyframe ``kf_id`` is not credible ("" when
        it is): further from the dead-reckoned pose than VO can have moved and drifted while lost."""
        cfg = self.config
        if cfg.relocalization_max_offset_m < 0 or self._last_good_stamp is None:
            return ""
        lost_s = max(0.0, (frame.stamp_ns - self._last_good_stamp) * 1e-9)
        travelled = max(0.0, self._path_m - self._reloc_path.get(kf_id, self._path_m))
        T_pred = self.dead_reckoned_pose(frame.stamp_ns)
        T_cw = np.linalg.inv(T_wb @ self.T_body_cam)
        offset = float(np.linalg.norm(_camera_centre(T_cw) - _camera_centre(T_pred)))
        angle = _rotation_deg(T_cw[:3, :3] @ T_pred[:3, :3].T)
        max_offset = (cfg.relocalization_max_offset_m + cfg.relocalization_max_offset_m_per_s * lost_s
                      + cfg.relocalization_max_drift_fraction * travelled)
        max_angle = (cfg.relocalization_max_offset_deg + cfg.relocalization_max_offset_deg_per_s * lost_s
                     + cfg.relocalization_max_drift_deg_per_m * travelled)
        if offset > max_offset or angle > max_angle:
            return (f"{offset:.2f} m / {angle:.1f} deg from the dead-reckoned pose, allowed "
                    f"{max_offset:.2f} m / {max_angle:.1f} deg after {lost_s:.2f} s lost and "
                    f"{travelled:.1f} m since the keyframe (a look-alike place?)")
        self._reloc_offset_m = offset
        return ""

    def _local_map(self, kf_id: int) -> Keyframe:
        """Keyframe ``kf_id`` with the landmarks of its neighbours in the database added (moved into
        its camera frame, one entry per landmark id), for verification against a local map."""
        ids = list(self._reloc_db.keys())
        k = ids.index(kf_id)
        r = self.config.relocalization_neighbours
        centre = self._reloc_db[kf_id]
        T_c_w = np.linalg.inv(centre.T_world_body @ self.T_body_cam)
        kps, descs, lms, pts = [], [], [], []
        seen = set()
        for j in [k] + [i for d in range(1, r + 1) for i in (k - d, k + d) if 0 <= i < len(ids)]:
            kf = self._reloc_db[ids[j]]
            new = np.array([(i < 0) or (int(i) not in seen) for i in kf.landmark_ids], bool)
            new &= np.all(np.isfinite(kf.points_cam), axis=1) | (j == k)
            seen.update(int(i) for i in kf.landmark_ids[new] if i >= 0)
            T = T_c_w @ kf.T_world_body @ self.T_body_cam  # this keyframe's camera -> centre's camera
            kps.append(kf.keypoints[new])
            descs.append(kf.descriptors[new])
            lms.append(kf.landmark_ids[new])
            pts.append(kf.points_cam[new] @ T[:3, :3].T + T[:3, 3])
        return dataclasses.replace(centre, keypoints=np.concatenate(kps), descriptors=np.concatenate(descs),
                                   landmark_ids=np.concatenate(lms), points_cam=np.concatenate(pts))

    def _triangulate(self, pts: np.ndarray, ur: np.ndarray) -> np.ndarray:
        """Camera-frame points of pixels with a right-image u (NaN rows where none or out of range)."""
        cfg = self.config
        cam = self.camera
        disp = pts[:, 0] - ur
        with np.errstate(invalid="ignore", divide="ignore"):
            Z = cam.fx * self.baseline / disp
            good = np.isfinite(Z) & (disp >= cfg.min_disparity) & (Z > cfg.min_depth) & (Z < cfg.max_depth)
        Pc = np.zeros((len(pts), 3))
        Pc[:, 2] = np.where(good, Z, np.nan)
        Pc[:, 0] = (pts[:, 0] - cam.cx) / cam.fx * Pc[:, 2]
        Pc[:, 1] = (pts[:, 1] - cam.cy) / cam.fy * Pc[:, 2]
        return Pc

    def _remember_keyframe(self, kf: Keyframe) -> None:
        """Keep a keyframe for relocalisation (bounded: the oldest is forgotten)."""
        if not self.config.relocalization or len(kf.descriptors) == 0:
            return
        # a copy: the pose is updated when the keyframe leaves the window, the caller's stays as sent
        self._reloc_db[kf.id] = dataclasses.replace(kf)
        self._reloc_path[kf.id] = self._path_m
        while len(self._reloc_db) > max(1, self.config.relocalization_keyframes):
            old_id, _ = self._reloc_db.popitem(last=False)
            self._reloc_path.pop(old_id, None)
        self._reloc_stack = None

    def _initialize(self, frame, left, pyr, right, depth, timings, reason: str = "",
                    state: Optional[str] = None,
                    static: Optional[Tuple[np.ndarray, np.ndarray]] = None) -> VOResult:
        """Start a map from one stereo/RGB-D frame at the relocalised pose (``state`` "relocalized"),
        the first pose, or for a new map after a loss where ``new_map_pose`` says. ``static``: pixels
        and camera-frame points a relocalisation verified against the map (the static scene)."""
        held = self._T_cw
        if state is None and self._ever_initialized and self.config.new_map_pose == "dead_reckoned":
            self._T_cw = self.dead_reckoned_pose(frame.stamp_ns, self.config.new_map_dead_reckoning_max_s)
        self._clear_map()
        if static is not None:
            self._seed_static_landmarks(*static)
        kf = self._make_keyframe(frame, left, pyr, right, depth, timings)
        if static is None:
            self._probation.clear()  # a new map has nothing older to check its landmarks against
        n = len(self._trk_ids)
        if n < self.config.min_init_landmarks:
            self._T_cw = held  # dead-reckon from the last tracked frame again next time
            self._clear_map()
            why = f"frame {frame.index}: cannot initialise, only {n} stereo landmarks"
            if reason:
                why = f"{reason}; {why}"
            log.warning("lost: %s", why)
            return self._result(frame, "lost", why, timings)
        self._prev_pyr = pyr
        self._initialized = True
        self._velocity_frames = 0
        self._steps_since_good = 1
        self._last_good_stamp = frame.stamp_ns
        if state is None:
            state = "reinitialized" if self._ever_initialized else "initializing"
        self._ever_initialized = True
        if state == "reinitialized":
            moved = float(np.linalg.norm(_camera_centre(self._T_cw) - _camera_centre(held)))
            where = f"the dead-reckoned pose ({moved:.2f} m from the last tracked one)" if moved else "the last good pose"
            log.info("frame %s: map %d started with %d landmarks at %s", frame.index, self._map_id, n, where)
        return self._result(frame, state, reason, timings, keyframe=kf, quality="weak",
                            num_inliers=n)

    # ------------------------------------------------------------------ keyframes

    def _seed_static_landmarks(self, uv: np.ndarray, points_cam: np.ndarray) -> None:
        """Start the relocalised map with the points the relocalisation verified against the map, as
        established landmarks; everything else in view then starts on probation like any new landmark.
        Without this a person or trolley that made VO lose track became landmarks at once, the first
        frames measured the velocity from it and VO followed it (held-out handheld:60 seed 7, realistic:
        ~78 mm per frame for 15 frames after a relocalisation, docs/robustness.md)."""
        good = np.all(np.isfinite(points_cam), axis=1)
        if self.config.landmark_probation_frames <= 0 or not good.any():
            return
        T_wc = np.linalg.inv(self._T_cw)
        ids = np.arange(self._next_lm_id, self._next_lm_id + int(good.sum()), dtype=np.int64)
        for i, P in zip(ids, np.asarray(points_cam, np.float64)[good]):
            self._landmarks[int(i)] = T_wc[:3, :3] @ P + T_wc[:3, 3]
        self._next_lm_id += len(ids)
        self._trk_pts = np.asarray(uv, np.float32)[good]
        self._trk_ids = ids

    def _make_keyframe(self, frame, left, pyr, right, depth, timings) -> Keyframe:
        cfg = self.config
        cam = self.camera
        T_cw = self._T_cw
        t = time.perf_counter()
        right_pyr = right
        # 1. right-image u (or depth) for the tracked landmarks: stereo constraints in BA
        trk_ur = np.full(len(self._trk_ids), np.nan)
        if len(self._trk_ids):
            X = np.array([self._landmarks[i] for i in self._trk_ids])
            Pc = X @ T_cw[:3, :3].T + T_cw[:3, 3]
            guess = self._trk_pts[:, 0] - cam.fx * self.baseline / np.maximum(Pc[:, 2], 1e-3)
            trk_ur, _ = self._right_u(pyr, right_pyr, depth, self._trk_pts, guess)
        timings["stereo"] = time.perf_counter() - t
        # 2. new features in empty cells
        t = time.perf_counter()
        new_pts = detect_features(left, cfg.max_features, self._trk_pts, cfg.min_feature_distance,
                                  cfg.fast_threshold)
        timings["detect"] = time.perf_counter() - t
        t = time.perf_counter()
        new_ur, _ = self._right_u(pyr, right_pyr, depth, new_pts, None)
        # 3. triangulate and check new landmarks: disparity (parallax) and depth range
        Pc = self._triangulate(new_pts, new_ur)
        good = np.isfinite(Pc[:, 2])
        T_wc = np.linalg.inv(T_cw)
        new_ids = np.full(len(new_pts), -1, np.int64)
        for j in np.nonzero(good)[0]:
            new_ids[j] = self._next_lm_id
            self._landmarks[self._next_lm_id] = T_wc[:3, :3] @ Pc[j] + T_wc[:3, 3]
            if cfg.landmark_probation_frames > 0:
                self._probation[self._next_lm_id] = 0
            if cfg.affine_refine:
                self._lm_anchor[self._next_lm_id] = (self._next_kf_id, float(new_pts[j, 0]), float(new_pts[j, 1]))
                self._lm_affine[self._next_lm_id] = np.eye(2)
            self._next_lm_id += 1
        if cfg.affine_refine and good.any():
            self._anchor_images[self._next_kf_id] = np.array(left, np.uint8)  # 0.3 MB per anchor keyframe
        timings["stereo"] += time.perf_counter() - t
        # 4. descriptors for every keyframe feature (tracked + new, with or without landmark)
        t = time.perf_counter()
        kf_pts = np.concatenate([self._trk_pts, new_pts]).astype(np.float32)
        kf_ids = np.concatenate([self._trk_ids, new_ids])
        kf_ur = np.concatenate([trk_ur, new_ur])
        desc, has_desc = orb_descriptors(left, kf_pts)
        place = place_features(left, cfg.place_features) if cfg.place_features > 0 else None
        timings["descriptors"] = time.perf_counter() - t
        # 5. the window keyframe (observations of landmarks) and the new track set
        with_lm = kf_ids >= 0
        wkf = _WindowKeyframe(self._next_kf_id, frame.stamp_ns, T_cw.copy(), kf_ids[with_lm].copy(),
                              kf_pts[with_lm].astype(np.float64), kf_ur[with_lm].copy())
        self._next_kf_id += 1
        self._window.append(wkf)
        self._trk_pts = kf_pts[with_lm].copy()
        self._trk_ids = kf_ids[with_lm].copy()
        self._trk_kf_uv = self._trk_pts.copy()
        # 6. sliding-window BA, then slide
        self._slide_window()
        t = time.perf_counter()
        if cfg.ba_enabled and _solve_window is not None and len(self._window) >= 2:
            self._bundle_adjust()
        timings["ba"] = time.perf_counter() - t
        self._slide_window()  # BA culling may leave landmarks unobserved
        self._T_cw = self._window[-1].T_cw.copy()
        self._last_kf_stamp = frame.stamp_ns
        self._last_kf_T_cw = self._T_cw.copy()
        self._last_kf_tracked = len(self._trk_ids)
        # 7. what loop closure consumes (points in this keyframe's camera frame, after BA)
        keep = has_desc
        ids_out = kf_ids[keep]
        pts_cam = np.full((len(ids_out), 3), np.nan)
        T_cw = self._T_cw
        for k, i in enumerate(ids_out):
            if i >= 0 and i in self._landmarks:
                pts_cam[k] = T_cw[:3, :3] @ self._landmarks[i] + T_cw[:3, 3]
            else:
                ids_out[k] = -1
        out = Keyframe(
            id=wkf.id, stamp_ns=int(frame.stamp_ns), T_world_body=self.T_world_body,
            keypoints=kf_pts[keep].copy(), descriptors=desc[keep], landmark_ids=ids_out,
            points_cam=pts_cam, K=cam.K, T_body_left=self.T_body_cam.copy(), map_id=self._map_id)
        if place is not None:
            out.place_descriptors = place.descriptors
            out.place_keypoints = np.column_stack([place.keypoints, place.sizes, place.angles]).astype(np.float32)
        self._remember_keyframe(out)
        return out

    def _right_u(self, pyr, right_pyr, depth, pts, guess):
        """Right-image u per point: stereo KLT along the row, or depth lookup (virtual right u)."""
        cfg = self.config
        cam = self.camera
        if len(pts) == 0:
            return np.zeros(0), np.zeros(0, bool)
        if self.stereo:
            return match_stereo(pyr, right_pyr, pts, guess, min_disparity=cfg.min_disparity,
                                max_disparity=min(cam.fx * self.baseline / cfg.min_depth,
                                                  cfg.max_disparity_px),
                                min_score=cfg.stereo_min_zncc)
        xi = np.clip(np.round(pts[:, 0]).astype(int), 0, cam.width - 1)
        yi = np.clip(np.round(pts[:, 1]).astype(int), 0, cam.height - 1)
        z = depth[yi, xi].astype(np.float64)
        ok = np.isfinite(z) & (z > cfg.min_depth) & (z < cfg.max_depth)
        ur = np.where(ok, pts[:, 0] - cam.fx * self.baseline / np.where(ok, z, 1.0), np.nan)
        return ur, ok

    def _bundle_adjust(self) -> None:
        cfg = self.config
        cam = self.camera
        win = self._window
        all_ids = np.concatenate([kf.lm_ids for kf in win])
        lm_ids = np.unique(all_ids[np.isin(all_ids, np.fromiter(self._landmarks.keys(), np.int64))])
        if len(lm_ids) == 0:
            return
        index = {int(i): k for k, i in enumerate(lm_ids)}
        obs_cam, obs_pt, obs_uv, obs_ur = [], [], [], []
        for c, kf in enumerate(win):
            for i, uv, ur in zip(kf.lm_ids, kf.uv, kf.ur):
                k = index.get(int(i))
                if k is not None:
                    obs_cam.append(c)
                    obs_pt.append(k)
                    obs_uv.append(uv)
                    obs_ur.append(ur)
        T_cw = np.stack([kf.T_cw for kf in win])
        points_w = np.array([self._landmarks[int(i)] for i in lm_ids])
        fixed = np.zeros(len(win), bool)
        fixed[0] = True  # gauge: the oldest keyframe in the window stays where it is
        # BA's tuned options (Ceres-like trust region and CG forcing term, fused CGNR), VO's budget
        options = _ba_options(
            precision=cfg.precision, max_iterations=cfg.ba_iterations,
            preconditioner=cfg.ba_preconditioner,
            robust_loss=None if cfg.ba_robust_loss in ("", "none") else cfg.ba_robust_loss,
            robust_scale=cfg.ba_robust_scale_px / cfg.sigma_px, device=cfg.device)
        T_new, P_new, _summary = _solve_window(
            T_cw, points_w, np.asarray(obs_cam, np.int64), np.asarray(obs_pt, np.int64),
            np.asarray(obs_uv, np.float64).reshape(-1, 2), np.asarray(obs_ur, np.float64),
            cam.intrinsics, self.baseline, fixed, options)
        if not (np.all(np.isfinite(T_new)) and np.all(np.isfinite(P_new))):
            log.warning("window BA returned non-finite values; keeping the previous estimate")
            return
        for c, kf in enumerate(win):
            kf.T_cw = np.asarray(T_new[c], np.float64)
        for k, i in enumerate(lm_ids):
            self._landmarks[int(i)] = np.asarray(P_new[k], np.float64)
        self._cull_observations()

    def _cull_observations(self) -> None:
        """Drop window observations that BA could not fit (chi-square), and their tracks."""
        cfg = self.config
        cam = self.camera
        bad_ids = set()
        for kf in self._window:
            if len(kf.lm_ids) == 0:
                continue
            X = np.array([self._landmarks.get(int(i), (np.nan,) * 3) for i in kf.lm_ids])
            Pc = X @ kf.T_cw[:3, :3].T + kf.T_cw[:3, 3]
            with np.errstate(invalid="ignore", divide="ignore"):
                u = cam.fx * Pc[:, 0] / Pc[:, 2] + cam.cx
                v = cam.fy * Pc[:, 1] / Pc[:, 2] + cam.cy
                ur = cam.fx * (Pc[:, 0] - self.baseline) / Pc[:, 2] + cam.cx
                e2 = (u - kf.uv[:, 0]) ** 2 + (v - kf.uv[:, 1]) ** 2
                st = np.isfinite(kf.ur)
                e2 = e2 + np.where(st, (ur - kf.ur) ** 2, 0.0)
                bad = ~(e2 / cfg.sigma_px ** 2 < np.where(st, CHI2_3D, CHI2_2D)) | ~(Pc[:, 2] > cfg.min_depth)
            if bad.any():
                if kf is self._window[-1]:
                    bad_ids.update(int(i) for i in kf.lm_ids[bad])
                kf.lm_ids, kf.uv, kf.ur = kf.lm_ids[~bad], kf.uv[~bad], kf.ur[~bad]
        if bad_ids:
            keep = ~np.isin(self._trk_ids, np.fromiter(bad_ids, np.int64))
            self._trk_pts, self._trk_ids, self._trk_kf_uv = (
                self._trk_pts[keep], self._trk_ids[keep], self._trk_kf_uv[keep])

    def _slide_window(self) -> None:
        while len(self._window) > max(1, self.config.window_size):
            old = self._window.pop(0)
            kept = self._reloc_db.get(old.id)
            if kept is not None:  # relocalise against the final (windowed BA) pose
                kept.T_world_body = np.linalg.inv(old.T_cw) @ self.T_cam_body
        alive = set(self._trk_ids.tolist())
        for kf in self._window:
            alive.update(kf.lm_ids.tolist())
        for i in [i for i in self._landmarks if i not in alive]:
            del self._landmarks[i]
            self._lm_anchor.pop(i, None)
            self._lm_affine.pop(i, None)
            self._probation.pop(i, None)
        used = {a[0] for a in self._lm_anchor.values()}
        for k in [k for k in self._anchor_images if k not in used]:
            del self._anchor_images[k]

    # ------------------------------------------------------------------ results

    def _result(self, frame: StereoFrame, state: str, reason: str, timings, keyframe=None,
                cov=None, quality: str = "none", num_inliers: int = 0) -> VOResult:
        local = np.array(list(self._landmarks.values())) if self._landmarks else np.zeros((0, 3))
        return VOResult(
            stamp_ns=int(getattr(frame, "stamp_ns", 0) or 0), T_world_body=self.T_world_body,
            tracking_state=state, num_tracked=int(len(self._trk_ids)), timings=timings,
            keyframe=keyframe, local_landmarks=local,
            covariance_diag=None if cov is None else np.asarray(cov, np.float64),
            reason=reason, quality=quality, num_inliers=num_inliers)


def _camera_centre(T_cw: np.ndarray) -> np.ndarray:
    return -T_cw[:3, :3].T @ T_cw[:3, 3]


def _rotation_deg(R: np.ndarray) -> float:
    return float(np.degrees(lie.rotation_angle(R)))


def _fractional_power(T: np.ndarray, a: float) -> np.ndarray:
    """``T^a`` for a rigid transform (rotation by axis-angle scaling, translation scaled)."""
    rvec, _ = cv2.Rodrigues(T[:3, :3])
    R, _ = cv2.Rodrigues(rvec * a)
    out = np.eye(4)
    out[:3, :3] = R
    out[:3, 3] = T[:3, 3] * a
    return out
