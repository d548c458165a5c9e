"""Loop closure: place recognition, geometric verification and background pose-graph optimisation.

``LoopClosure.add_keyframe`` stores the keyframe (:class:`~mpslam_ros.slam.keyframe_db.KeyframeDatabase`),
adds an odometry edge from the previous keyframe, queries the bag-of-words index for earlier
keyframes that look alike (:class:`~mpslam_ros.slam.place_recognition.PlaceRecognizer`) and verifies
them geometrically (:func:`~mpslam_ros.slam.verification.verify_loop`). When a loop is accepted the
pose graph (odometry + loop edges) is solved in a background worker thread with the mixed-precision
PGO solver (nogil kernels, so the caller keeps running), warm-started from the previous solution,
with a robust loss on loop edges; after the solve, loops still inconsistent with the rest of the map
are dropped and the graph re-solved, so one wrong loop cannot wreck the map.

Several maps (ORB-SLAM3's Atlas, VINS-Fusion's sequences): every keyframe carries the ``map_id`` VO
gave it. Odometry is trusted only within a map, so consecutive keyframes are chained by an odometry
edge only when they belong to the same map; a break (VO lost tracking and could not relocalise)
leaves the maps as separate components of the pose graph, each with its own gauge, solved on its
own. A loop between two maps is held as a *merge candidate* until ``merge_min_loops`` loops between
the same two maps agree on their relative placement (pairwise consistency, as Kimera-RPGO's PCM);
then the maps merge: the newer one is moved onto the older by the loops and one pose graph is solved.
Until then the corrected outputs say which map each keyframe belongs to
(:meth:`LoopClosure.keyframe_maps`, :meth:`LoopClosure.current_map_aligned`), and a map not merged
with the first one is never reported as aligned with it.

Never worse: after a solve, a loop that leaves any odometry edge beyond its noise
(``max_odometry_chi2``) is dropped, newest first (the graph before it was consistent), and counted.

Outputs (what the ROS node publishes): :meth:`corrected_poses` (T_map_body per keyframe),
:meth:`T_map_odom`, :meth:`loops`, :meth:`map_points`. All methods are thread-safe.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Deque, Dict, List, Optional, Tuple, Union

import numpy as np

from mpslam_ros.datatypes import Keyframe
from mpslam_ros.geometry import lie
from mpslam_ros.slam.keyframe_db import KeyframeDatabase, MapFileError
from mpslam_ros.slam.place_recognition import BinaryVocabulary, PlaceRecognizer, default_vocabulary
from mpslam_ros.slam.verification import LoopEdge, VerificationConfig, verify_loop

log = logging.getLogger(__name__)


@dataclass
class LoopClosureConfig:
    """Loop-closure settings (flat scalars so the ROS node can declare each as a parameter)."""

    #: Precision preset of pose-graph optimisation: fp64, fp32, fp16 or mixed.
    precision: str = "mixed"
    #: Place-recognition vocabulary: "" (default) an online vocabulary grown from the keyframes
    #: themselves (no training set, works wherever the robot is; docs/places.md), "rendered" the
    #: package's vocabulary trained on its rendered house (the pre-0.x default), or a file written by
    #: ``mpslam vocab train``.
    vocabulary_path: str = ""
    #: Online vocabulary: a descriptor within this many bits (of 256) of a word is that word
    #: (ORB-SLAM's TH_LOW); leaves of its search tree split beyond ``vocabulary_leaf_size`` words.
    vocabulary_match_distance: int = 50
    vocabulary_leaf_size: int = 64
    #: Candidates at most this many keyframes apart form one island (DBoW2); the island's summed
    #: score ranks it and its best keyframe is verified. 0: rank single keyframes. Only used
    #: without re-ranking (``rerank_candidates`` = 0).
    island_gap: int = 2
    #: The best this many bag-of-words candidates are re-ranked by direct matching of their place
    #: descriptors (ratio test) before islands and verification: quantisation to words loses what
    #: tells two look-alike places apart (docs/places.md). A fixed number keeps the per-keyframe cost
    #: flat as the map grows; re-ranked candidates are verified by match share, without islands.
    #: 0: bag-of-words scores (and islands) only.
    rerank_candidates: int = 10
    #: Minimum bag-of-words score (DBoW2 L1, 0..1) of a loop candidate.
    min_score: float = 0.04
    #: Minimum score relative to the query's score against the previous keyframe.
    min_relative_score: float = 0.3
    #: The most recent keyframes are never loop candidates.
    exclude_recent: int = 20
    #: Nor is any keyframe of the query's map since the first sighting of the oldest VO landmark the
    #: query still tracks (ORB-SLAM excludes the query's covisible keyframes): VO already ties those
    #: to the query, so a "loop" to them measures nothing new and only adds its noise. RGB-D runs
    #: without a revisit accepted such loops 0.5 m apart, 7-15 mm off, and the map got worse
    #: (docs/robustness.md). False: only ``exclude_recent``.
    exclude_covisible: bool = True
    #: Candidates verified per keyframe (best scores first).
    max_candidates: int = 5
    #: Minimum PnP inliers of an accepted loop. Household loops with 25-31 inliers were 9-31 mm off
    #: (their PnP information claims ~1.5 cm), those with >= 45 inliers 1-2 mm: the weak ones bent a
    #: 2.75 mm VO trajectory to 3-4.5 mm, so they are not kept (docs/loop_closure.md).
    min_inliers: int = 40
    #: Minimum number of 4x4 image-grid cells covered by the inliers.
    min_spread_cells: int = 5
    #: Descriptor ratio test.
    match_ratio: float = 0.8
    #: Odometry edge noise: a per-step floor (``odometry_sigma_m``, ``odometry_sigma_rad``) plus a
    #: random walk in the distance of the step (``odometry_walk_m``: m per sqrt(m) travelled,
    #: ``odometry_walk_rad``: rad per sqrt(m)) and in its rotation (``odometry_walk_rad_per_rad``:
    #: rad per sqrt(rad) turned), i.e. variance = floor^2 + walk^2 x step. Measured against ground
    #: truth on tuning runs (household:15 seeds 1-2 and handheld:15 seed 2, realistic, stereo and RGB-D;
    #: household:60 seed 3): VO's keyframe steps are off by 0.1-0.2 mrad and 0.4-0.6 mm, and the error
    #: grows like a random walk (2.3-3.2 mm and 0.8-1.9 mrad over 1 m); the defaults are ~1.5x that.
    #: The previous fixed 2 cm / 5 mrad per step was 30-40x VO's real error, so every loop edge
    #: (floored at 1 cm / 2 mrad, really 1-8 mm off) pulled the map onto its own noise: 34 true loops
    #: left household:60 seed 3 at 3.04 mm ATE, 2.65 mm with these (docs/loop_closure.md).
    odometry_sigma_m: float = 0.0005
    odometry_sigma_rad: float = 0.0002
    odometry_walk_m: float = 0.004
    odometry_walk_rad: float = 0.0015
    odometry_walk_rad_per_rad: float = 0.002
    #: The odometry noise above describes this package's VO; a noisier odometry (harsh images, another
    #: VO) is detected from the loops: once at least ``odometry_noise_min_loops`` loops agree with each
    #: other (the chi2 checks passed), the variance factor of the solved graph (sum of whitened squared
    #: errors / 6 per loop, its redundancy) is estimated, and when it exceeds
    #: ``odometry_noise_max_factor`` the odometry variances are multiplied by it (at most
    #: ``odometry_noise_max_scale``) and the graph re-solved: a variance-component estimate with the
    #: loop edges' (floored) information taken as right.
    odometry_noise_min_loops: int = 10
    odometry_noise_max_factor: float = 2.0
    odometry_noise_max_scale: float = 1000.0
    #: Robust loss on loop edges ("cauchy", "huber" or "none") and its scale (whitened units).
    robust_loss: str = "cauchy"
    robust_scale: float = 3.0
    #: After a converged solve, loops with whitened error above this (chi2 of 6 dof) are dropped.
    max_loop_chi2: float = 100.0
    #: At most this many loops are dropped (one re-solve each) per background solve: bounds latency.
    max_loop_drops_per_solve: int = 3
    #: LM iterations per background solve.
    max_iterations: int = 30
    #: Features kept per keyframe and keyframes keeping their appearance (memory bound).
    max_features: int = 1000
    max_appearance_keyframes: int = 20000
    #: Solve the pose graph in a background thread (False: inline, for studies and debugging).
    background: bool = True
    #: After a converged solve, any odometry edge with whitened error above this (chi2 of 6 dof)
    #: means the newest loop bent the map: it is dropped and the graph re-solved.
    max_odometry_chi2: float = 50.0
    #: A loop within a map is kept only once a loop from one of the next ``loop_confirm_keyframes``
    #: keyframes to a place within ``loop_confirm_distance`` keyframes of its match agrees with it
    #: (ORB-SLAM's consistent groups): an isolated, slightly wrong loop bent the household map by
    #: 2 mm (docs/loop_closure.md). 1 keeps every verified loop at once.
    loop_min_consistent: int = 2
    loop_confirm_keyframes: int = 3
    loop_confirm_distance: int = 10
    #: A loop within a map may correct the current estimate of its query keyframe by at most
    #: ``max_loop_correction_m + max_drift_fraction * d`` (translation) and
    #: ``max_loop_correction_deg + max_drift_deg_per_m * d + max_drift_rotation_fraction * r``
    #: (rotation), d and r = metres and degrees VO travelled between the two keyframes. VO drifts
    #: ~0.2-1 % of distance here (docs/robustness.md), real stereo VO 1-2 %: a loop claiming more is a
    #: look-alike place, not drift. In a corridor of identical 4 m panels every loop one panel off
    #: agrees with its neighbours and passed the confirmation above: 176 false loops moved the office
    #: map by 4.9 m (docs/robustness.md). A negative ``max_drift_fraction`` disables the test.
    max_drift_fraction: float = 0.03
    max_loop_correction_m: float = 0.3
    max_drift_deg_per_m: float = 0.3
    max_drift_rotation_fraction: float = 0.05
    max_loop_correction_deg: float = 5.0
    #: Loops between two maps that must agree before the maps merge (1: merge on the first loop).
    merge_min_loops: int = 2
    #: Two loops between the same maps agree when the map-to-map transforms they imply differ by
    #: less than this (translation, rotation).
    merge_max_translation_m: float = 0.15
    merge_max_rotation_deg: float = 3.0
    #: Seconds each pose-graph solve waits before it starts (0: none). Only for tests of what must
    #: wait for loop closure (the end of ``mpslam run``, node shutdown, the end of a bag): a solve as
    #: slow as a first one on an empty numba cache (it compiles the PGO kernels: minutes on a busy
    #: 2-core machine), without emptying the cache.
    solve_delay_s: float = 0.0
    #: Where pose-graph optimisation's CG iterations run: "cpu", "cuda" (a GPU through numba-cuda; an error at the
    #: first solve when there is none) or "auto" (the GPU when present and the problem is large enough).
    #: See docs/cuda.md.
    device: str = "cpu"


@dataclass
class LoopClosureStats:
    """Counters for the run report and /diagnostics."""

    #: Maps seen (1 + breaks VO could not relocalise across) and merges of two maps by loops.
    maps: int = 0
    merges: int = 0
    #: Loops between two maps held until another loop agrees with them.
    merge_candidates: int = 0
    #: Loops within a map held until a loop from a neighbouring keyframe confirms them, and those
    #: never confirmed (superseded: the query moved on without a confirming loop).
    loops_held: int = 0
    loops_unconfirmed: int = 0
    #: Loops dropped as inconsistent with the rest of the graph (loop chi2 or odometry chi2).
    rejected_loops: int = 0
    #: Verified loops refused before the graph because they claim more correction than VO can
    #: have drifted since the matched keyframe (look-alike places: max_drift_fraction).
    loops_implausible: int = 0


@dataclass
class SolveRecord:
    """One background pose-graph solve."""

    num_keyframes: int
    num_loops: int
    seconds: float
    iterations: int
    initial_cost: float
    final_cost: float
    termination: str


def make_vocabulary(config: LoopClosureConfig):
    """The vocabulary ``config.vocabulary_path`` names (see :class:`LoopClosureConfig`)."""
    from mpslam_ros.slam.online_vocabulary import OnlineBinaryVocabulary

    if not config.vocabulary_path:
        return OnlineBinaryVocabulary(config.vocabulary_match_distance, config.vocabulary_leaf_size)
    if config.vocabulary_path == "rendered":
        return default_vocabulary()
    return BinaryVocabulary.load(config.vocabulary_path)


def loop_frame_transform(edge: LoopEdge, P_match: np.ndarray, P_query: np.ndarray) -> np.ndarray:
    """The transform taking the query keyframe's frame onto the match keyframe's frame that the loop
    implies, given each keyframe's pose in its own frame (identity when the frames already agree)."""
    return P_match @ edge.T_match_query @ np.linalg.inv(P_query)


def odometry_information(config: LoopClosureConfig, steps: np.ndarray, scale: float = 1.0) -> np.ndarray:
    """Information [E, 6, 6] (rotation, translation order) of odometry edges measuring the relative
    motions ``steps`` [E, 4, 4]: floor plus a random walk in the step's length and rotation
    (:class:`LoopClosureConfig`), so that a keyframe made after 2 cm and one after 30 cm are
    trusted as VO deserves. ``scale`` multiplies the variances (the estimated odometry noise factor)."""
    steps = np.asarray(steps, dtype=np.float64).reshape(-1, 4, 4)
    length = np.linalg.norm(steps[:, :3, 3], axis=1)
    angle = lie.rotation_angle(steps[:, :3, :3])
    var_r = config.odometry_sigma_rad ** 2 + config.odometry_walk_rad ** 2 * length \
        + config.odometry_walk_rad_per_rad ** 2 * angle
    var_t = config.odometry_sigma_m ** 2 + config.odometry_walk_m ** 2 * length
    var_r, var_t = var_r * scale, var_t * scale
    info = np.zeros((len(steps), 6, 6))
    idx = np.arange(3)
    info[:, idx, idx] = (1.0 / var_r)[:, None]
    info[:, idx + 3, idx + 3] = (1.0 / var_t)[:, None]
    return info


def odometry_pairs(map_ids: Optional[np.ndarray], n: int) -> np.ndarray:
    """Indices k (1..n-1) whose keyframe is chained to keyframe k-1 by odometry (same map)."""
    k = np.arange(1, n)
    if map_ids is None:
        return k
    m = np.asarray(map_ids)
    return k[m[1:] == m[:-1]]


def build_pose_graph(order: List[int], loops: List[LoopEdge], odom: np.ndarray, config: LoopClosureConfig,
                     map_ids: Optional[np.ndarray] = None, odometry_scale: float = 1.0):
    """PoseGraph of odometry edges between consecutive keyframes (``odom`` in ``order``) of the same
    map (``map_ids``; None: all one map) plus the loop edges (robust), with the odometry
    information from ``config`` (variances times ``odometry_scale``)."""
    from mpslam_ros.problems.pgo import PoseGraph

    graph = PoseGraph(fix_first=True)
    for T in odom:
        graph.add_pose(T)
    # vectorised (per-edge Python calls took ~0.25 s of a 5,000-keyframe solve)
    odom = np.asarray(odom, dtype=np.float64)
    if len(odom) > 1:
        k = odometry_pairs(map_ids, len(odom))
        if len(k):
            steps = np.linalg.inv(odom[k - 1]) @ odom[k]
            graph.add_edges(k - 1, k, steps, odometry_information(config, steps, odometry_scale))
    index = {kf_id: k for k, kf_id in enumerate(order)}
    if loops:
        graph.add_edges([index[e.match_id] for e in loops], [index[e.query_id] for e in loops],
                        np.stack([e.T_match_query for e in loops]), np.stack([e.information for e in loops]),
                        robust=True)
    return graph


def pgo_solver_options(config: LoopClosureConfig):
    """The SolverOptions of loop-closure PGO (precision preset, robust loss, iterations)."""
    from mpslam_ros.solvers.lm import SolverOptions

    loss = None if config.robust_loss in ("", "none") else config.robust_loss
    return SolverOptions(precision=config.precision, robust_loss=loss, robust_scale=config.robust_scale,
                         max_iterations=config.max_iterations, device=config.device)


class LoopClosure:
    """Loop detection + pose graph over keyframes. See the module docstring."""

    def __init__(self, config: Optional[LoopClosureConfig] = None,
                 vocabulary: Optional[BinaryVocabulary] = None) -> None:
        self.config = config or LoopClosureConfig()
        self.db = KeyframeDatabase(self.config.max_features, self.config.max_appearance_keyframes)
        self.verification = VerificationConfig(ratio=self.config.match_ratio,
                                               min_inliers=self.config.min_inliers,
                                               min_spread_cells=self.config.min_spread_cells)
        self._vocabulary = vocabulary
        self._recognizer: Optional[PlaceRecognizer] = None
        self._lock = threading.RLock()
        self._order: List[int] = []  # keyframe ids in graph (insertion) order
        self._index: Dict[int, int] = {}  # keyframe id -> graph index
        self._loops: List[LoopEdge] = []
        self._rejected: List[Tuple[LoopEdge, str]] = []
        #: Latest PGO solution (T_map_body) for the first len(_solution) keyframes.
        self._solution = np.zeros((0, 4, 4))
        # maps: internal map id per keyframe (graph order); VO's map ids are renumbered so that a
        # restarted VO (ids from 0 again) or a loaded map never collides with the maps held
        self._map_ids: List[int] = []
        #: VO landmark id -> graph indices (first, last) of its current track (exclude_covisible)
        self._landmark_tracks: Dict[int, Tuple[int, int]] = {}
        #: metres travelled (VO odometry) from the first keyframe to each keyframe, filled lazily
        self._travelled: List[float] = []
        self._source_map: Optional[int] = None
        self._next_map = 0
        self._merged: Dict[int, int] = {}  # union-find parent of merged maps
        #: frame (component root map) each solved keyframe's solution is expressed in
        self._solution_frame = np.zeros(0, np.int64)
        #: odometry variance factor estimated from agreeing loops (odometry_noise_*), kept between solves
        self._odometry_scale = 1.0
        self._merge_candidates: List[LoopEdge] = []
        self._unconfirmed: List[LoopEdge] = []  # loops within a map awaiting confirmation
        self.stats = LoopClosureStats()
        self.solves: List[SolveRecord] = []
        #: Recent verifications (query, candidate, score, reason; "" = accepted), bounded in memory.
        self.verification_log: Deque[Tuple[int, int, float, str]] = collections.deque(maxlen=10000)
        # background worker
        self._wake = threading.Condition(self._lock)
        self._requested = 0  # solve requests (generation counter)
        self._done = 0
        self._busy = False
        self._stop = False
        self._worker: Optional[threading.Thread] = None
        if self.config.background:
            self._worker = threading.Thread(target=self._run_worker, name="loop_closure_pgo", daemon=True)
            self._worker.start()

    # ------------------------------------------------------------------ input

    def _get_recognizer(self) -> PlaceRecognizer:
        if self._recognizer is None:
            vocab = self._vocabulary
            if vocab is None:
                vocab = make_vocabulary(self.config)
                self._vocabulary = vocab
            rec = PlaceRecognizer(vocab, self.config.min_score, self.config.min_relative_score,
                                  self.config.exclude_recent, self.config.max_candidates,
                                  island_gap=self.config.island_gap,
                                  rerank=self.config.rerank_candidates)
            for stored in self.db:  # a loaded map: index its keyframes (an online vocabulary regrows)
                if stored.has_appearance:
                    rec.add(stored.id, stored.recognition_descriptors)
            self._recognizer = rec
        return self._recognizer

    def add_keyframe(self, kf: Keyframe) -> Optional[LoopEdge]:
        """Add a keyframe; returns the loop accepted for it (the solve then runs in the background).

        Raises ``ValueError`` naming the keyframe on malformed input (the caller logs and drops it).
        """
        stored = self.db.add(kf)
        with self._lock:
            source_map = int(getattr(kf, "map_id", 0))
            if self._source_map is None or source_map != self._source_map or not self._map_ids:
                # VO started a new map (or this is the first keyframe): never chained by odometry
                self._source_map = source_map
                if self._map_ids:
                    log.warning("loop closure: keyframe %d starts map %d (VO map %d): kept apart from "
                                "the other maps until a verified loop merges them", stored.id,
                                self._next_map, source_map)
                self._next_map += 1
                self.stats.maps += 1
            map_id = self._next_map - 1
            self._index[stored.id] = len(self._order)
            self._order.append(stored.id)
            self._map_ids.append(map_id)
            # candidates: anything but the recent keyframes of this keyframe's own map
            recent = [i for i, m in zip(self._order[-self.config.exclude_recent - 1:],
                                        self._map_ids[-self.config.exclude_recent - 1:]) if m == map_id]
            if self.config.exclude_covisible:
                recent = sorted(set(recent) | set(self._covisible(stored, map_id)))
        accepted = None
        if stored.has_appearance:
            rec = self._get_recognizer()
            place = stored.recognition_descriptors
            for cand_id, score in rec.query(place, exclude=recent):
                result = verify_loop(stored, self.db.get(cand_id), self.verification, score)
                self.verification_log.append((stored.id, cand_id, score, result.reason))
                if result.edge is not None:
                    accepted = result.edge
                    break
            if stored.id not in rec:  # (a recogniser built just now indexed the whole database)
                rec.add(stored.id, place)
        if accepted is not None and self._accept_loop(accepted):
            self.request_solve()
        return accepted

    def _covisible(self, stored, map_id: int) -> List[int]:
        """Keyframes of map ``map_id`` that VO tied to ``stored`` (just appended to the graph) by
        continuous tracks: from the first keyframe of the oldest track among the landmarks ``stored``
        observes, through ``stored``. A landmark seen again after a gap of more than two keyframes
        (VO re-finding an old landmark, a revisit with persistent landmark ids) starts a new track:
        a revisit is never its own covisible keyframe. Landmark ids are VO's: one map only."""
        k = len(self._order) - 1
        first = k
        for lm in np.asarray(stored.landmark_ids).tolist():
            if lm < 0:
                continue
            span = self._landmark_tracks.get(lm)
            if span is None or span[1] < k - 2 or self._map_ids[span[1]] != map_id:
                self._landmark_tracks[lm] = (k, k)
                continue
            self._landmark_tracks[lm] = (span[0], k)
            first = min(first, span[0])
        return [self._order[i] for i in range(first, k) if self._map_ids[i] == map_id]

    # ------------------------------------------------------------------ maps

    def _root(self, map_id: int) -> int:
        while self._merged.get(map_id, map_id) != map_id:
            map_id = self._merged[map_id]
        return map_id

    def _accept_loop(self, edge: LoopEdge, confirmed: bool = False) -> bool:
        """Keep a verified loop: within a map (or merged maps) once confirmed by a neighbouring loop
        (or at once when ``confirmed``); between two maps only when ``merge_min_loops`` loops agree,
        then the maps merge. True when the graph changed (the PGO checks apply either way)."""
        with self._lock:
            a = self._root(self._map_ids[self._index[edge.match_id]])
            b = self._root(self._map_ids[self._index[edge.query_id]])
            if a == b:
                if not self._plausible_correction(edge):
                    return False
                if confirmed:
                    self._loops.append(edge)
                    return True
                return self._confirm_loop(edge)
            agreeing = [e for e in self._merge_candidates if self._joins(e, a, b) and self._agree(e, edge)]
            keep = self._keep_if_agreed(edge, self._merge_candidates, agreeing, self.config.merge_min_loops)
            if keep is None:
                self.stats.merge_candidates += 1
                log.info("loop closure: loop %d -> %d joins maps %d and %d: held until %d loops agree",
                         edge.query_id, edge.match_id, a, b, self.config.merge_min_loops)
                return False
            old, new = min(a, b), max(a, b)
            self._merged[new] = old
            self.stats.merges += 1
        log.warning("loop closure: maps %d and %d merged by %d agreeing loops (latest %d -> %d)", old, new,
                    len(keep) + 1, edge.query_id, edge.match_id)
        return True

    def _travel_between(self, i: int, j: int, across_breaks: bool = False) -> Optional[Tuple[float, float]]:
        """Metres and degrees VO travelled between graph indices ``i`` < ``j``; None when a map break
        lies between them (VO's odometry does not connect the two) unless ``across_breaks``."""
        if not across_breaks and any(m != self._map_ids[i] for m in self._map_ids[i:j + 1]):
            return None
        while len(self._travelled) <= j:
            k = len(self._travelled)
            step = (0.0, 0.0)
            if k > 0:
                A = self.db.get(self._order[k - 1]).T_world_body
                B = self.db.get(self._order[k]).T_world_body
                R = A[:3, :3].T @ B[:3, :3]
                step = (float(np.linalg.norm(B[:3, 3] - A[:3, 3])),
                        float(np.degrees(lie.rotation_angle(R))))
            last = self._travelled[-1] if k else (0.0, 0.0)
            self._travelled.append((last[0] + step[0], last[1] + step[1]))
        return (self._travelled[j][0] - self._travelled[i][0], self._travelled[j][1] - self._travelled[i][1])

    def _plausible_correction(self, edge: LoopEdge) -> bool:
        """False (counted, logged) when the loop would move its query keyframe further than VO can
        have drifted since the matched keyframe (:attr:`LoopClosureConfig.max_drift_fraction`)."""
        cfg = self.config
        if cfg.max_drift_fraction < 0:
            return True
        i, j = sorted((self._index[edge.match_id], self._index[edge.query_id]))
        travel = self._travel_between(i, j)
        if travel is None:
            if self._root(self._map_ids[i]) != self._root(self._map_ids[j]):
                return True  # maps not merged yet: a merge candidate, the merge agreement test applies
            # merged maps share one frame since the merge: the drift allowance still holds, over the
            # odometry counted across the break (VO starts a new map at its dead-reckoned pose; a step
            # that jumps, as after a kidnap, only widens the allowance)
            travel = self._travel_between(i, j, across_breaks=True)
        d, r = travel
        implied = self._current_pose(edge.match_id) @ edge.T_match_query
        D = np.linalg.inv(self._current_pose(edge.query_id)) @ implied
        shift = float(np.linalg.norm(D[:3, 3]))
        angle = float(np.degrees(lie.rotation_angle(D[:3, :3])))
        max_shift = cfg.max_loop_correction_m + cfg.max_drift_fraction * d
        max_angle = (cfg.max_loop_correction_deg + cfg.max_drift_deg_per_m * d
                     + cfg.max_drift_rotation_fraction * r)
        if shift <= max_shift and angle <= max_angle:
            return True
        self.stats.loops_implausible += 1
        why = (f"correction {shift:.2f} m / {angle:.1f} deg after {d:.1f} m / {r:.0f} deg travelled "
               f"(at most {max_shift:.2f} m / {max_angle:.1f} deg)")
        self._rejected.append((edge, why))
        log.warning("loop closure: loop %d -> %d refused: %s (a look-alike place?)", edge.query_id, edge.match_id, why)
        return False

    def _confirm_loop(self, edge: LoopEdge) -> bool:
        """A loop within one (merged) map: kept when ``loop_min_consistent`` loops from neighbouring
        keyframes to neighbouring places agree (the new one included)."""
        need = max(1, self.config.loop_min_consistent)
        q, m = self._index[edge.query_id], self._index[edge.match_id]
        # forget held loops the queries have moved past without confirmation
        horizon = q - self.config.loop_confirm_keyframes
        stale = [e for e in self._unconfirmed if self._index[e.query_id] < horizon]
        self.stats.loops_unconfirmed += len(stale)
        self._unconfirmed = [e for e in self._unconfirmed if self._index[e.query_id] >= horizon]
        def confirms(e: LoopEdge) -> bool:
            return (horizon <= self._index[e.query_id] != q
                    and abs(self._index[e.match_id] - m) <= self.config.loop_confirm_distance
                    and self._agree(e, edge))

        if need > 1 and any(confirms(e) for e in self._loops[-self.config.loop_confirm_keyframes * 2:]):
            self._loops.append(edge)  # continues a group of loops already kept
            return True
        if self._keep_if_agreed(edge, self._unconfirmed, [e for e in self._unconfirmed if confirms(e)], need) is None:
            self.stats.loops_held += 1
            return False
        return True

    def _keep_if_agreed(self, edge: LoopEdge, held: List[LoopEdge], agreeing: List[LoopEdge],
                        need: int) -> Optional[List[LoopEdge]]:
        """With ``need`` loops agreeing (``edge`` included), keep ``edge`` and enough of ``agreeing``
        (taken out of ``held``) and return those; else hold ``edge`` and return None."""
        need = max(1, need)
        if len(agreeing) + 1 < need:
            held.append(edge)
            return None
        keep = agreeing[: need - 1]
        held[:] = [e for e in held if not any(e is k for k in keep)]
        self._loops.extend(keep + [edge])
        return keep

    def _joins(self, edge: LoopEdge, a: int, b: int) -> bool:
        ends = {self._root(self._map_ids[self._index[edge.match_id]]),
                self._root(self._map_ids[self._index[edge.query_id]])}
        return ends == {a, b}

    def _map_transform(self, edge: LoopEdge, poses: Dict[int, np.ndarray], ref_map: int) -> np.ndarray:
        """The transform from the other map's frame into ``ref_map``'s frame that ``edge`` implies."""
        T = loop_frame_transform(edge, poses[edge.match_id], poses[edge.query_id])
        return T if self._root(self._map_ids[self._index[edge.match_id]]) == ref_map else np.linalg.inv(T)

    def _agree(self, e1: LoopEdge, e2: LoopEdge) -> bool:
        """Pairwise consistency of two loops between the same two maps (PCM's test)."""
        ids = {e1.match_id, e1.query_id, e2.match_id, e2.query_id}
        poses = {i: self._current_pose(i) for i in ids}
        # (within one map, the transform is the correction the loop implies there: near loops agree)
        ref = self._root(self._map_ids[self._index[e1.match_id]])
        D = np.linalg.inv(self._map_transform(e1, poses, ref)) @ self._map_transform(e2, poses, ref)
        angle = np.degrees(lie.rotation_angle(D[:3, :3]))
        return bool(np.linalg.norm(D[:3, 3]) <= self.config.merge_max_translation_m
                    and angle <= self.config.merge_max_rotation_deg)

    def _current_pose(self, kf_id: int) -> np.ndarray:
        """Best current estimate of a keyframe in its map's frame: the solution, else chained by
        odometry from the last solved keyframe of the same map, else the odometry pose."""
        k = self._index[kf_id]
        if k < len(self._solution):
            return self._solution[k]
        m = self._map_ids[k]
        odom_k = self.db.get(kf_id).T_world_body
        j = len(self._solution) - 1
        if j >= 0 and self._map_ids[j] == m and all(x == m for x in self._map_ids[j:k]):
            return self._solution[j] @ np.linalg.inv(self.db.get(self._order[j]).T_world_body) @ odom_k
        return odom_k

    def add_loop(self, edge: LoopEdge) -> None:
        """Add an externally verified loop edge (e.g. from a relocalisation) and re-solve. Within a
        map it needs no confirming loop; between maps it is a merge candidate like any other."""
        with self._lock:
            if edge.query_id not in self._index or edge.match_id not in self._index:
                raise ValueError(f"loop ({edge.query_id}, {edge.match_id}): unknown keyframe id")
        if self._accept_loop(edge, confirmed=True):
            self.request_solve()

    # ------------------------------------------------------------------ pose graph

    def request_solve(self) -> None:
        """Ask for a pose-graph solve of everything added so far (runs inline without a worker)."""
        with self._lock:
            self._requested += 1
            self._wake.notify_all()
        if self._worker is None:
            self._solve_once()

    def _run_worker(self) -> None:
        while True:
            with self._lock:
                while self._done >= self._requested and not self._stop:
                    self._wake.wait()
                if self._stop:
                    return
            try:
                self._solve_once()
            except Exception:  # keep the worker alive: a failed solve keeps the previous map
                log.exception("loop closure: pose-graph solve failed; keeping the previous solution")
                with self._lock:
                    self._done = self._requested
                    self._busy = False
                    self._wake.notify_all()

    def _snapshot(self):
        with self._lock:
            generation = self._requested
            order = list(self._order)
            loops = list(self._loops)
            solution = self._solution.copy()
            frames = self._solution_frame.copy()
            maps = np.array(self._map_ids[: len(order)], np.int64)
            roots = np.array([self._root(int(m)) for m in maps], np.int64)
            self._busy = True
        odom = np.array([self.db.get(i).T_world_body for i in order]).reshape(-1, 4, 4)
        return generation, order, loops, solution, odom, maps, roots, frames

    def _initial_guess(self, odom: np.ndarray, solution: np.ndarray, maps: Optional[np.ndarray] = None,
                       frames: Optional[np.ndarray] = None):
        """Warm start: the previous solution, then new keyframes chained on by odometry from the last
        keyframe of their map. Returns (poses, frame of each pose: the map whose frame it is in)."""
        n = len(odom)
        maps = np.zeros(n, np.int64) if maps is None else maps
        init = odom.copy()
        frame = maps.copy()
        m = min(len(solution), n)
        if m:
            init[:m] = solution[:m]
            if frames is not None and len(frames) >= m:
                frame[:m] = frames[:m]
        for k in range(m, n):
            if k > 0 and maps[k] == maps[k - 1]:  # same map: chain by odometry
                init[k] = init[k - 1] @ np.linalg.inv(odom[k - 1]) @ odom[k]
                frame[k] = frame[k - 1]
        return init, frame

    def _align_frames(self, init: np.ndarray, frame: np.ndarray, idx: np.ndarray, loops: List[LoopEdge],
                      index: Dict[int, int]) -> None:
        """Move the keyframes of a just-merged map (still in its own frame) onto the frame of the
        component's oldest keyframe through the merge loops (in place)."""
        members = set(idx.tolist())
        aligned = {int(frame[idx[0]])}
        pending = set(int(f) for f in frame[idx]) - aligned
        while pending:
            progress = False
            for e in loops:
                m, q = index[e.match_id], index[e.query_id]
                if m not in members or q not in members:
                    continue
                fm, fq = int(frame[m]), int(frame[q])
                if fm in aligned and fq in pending:
                    T, move = loop_frame_transform(e, init[m], init[q]), fq
                elif fq in aligned and fm in pending:
                    T, move = np.linalg.inv(loop_frame_transform(e, init[m], init[q])), fm
                else:
                    continue
                sel = idx[frame[idx] == move]
                init[sel] = T @ init[sel]
                frame[sel] = frame[idx[0]]
                aligned.add(move)
                pending.discard(move)
                progress = True
            if not progress:  # no loop reaches the rest (cannot happen for a merged component)
                break

    def build_graph(self, order: List[int], loops: List[LoopEdge], odom: np.ndarray,
                    map_ids: Optional[np.ndarray] = None, odometry_scale: float = 1.0):
        return build_pose_graph(order, loops, odom, self.config, map_ids, odometry_scale)

    def _solver_options(self):
        return pgo_solver_options(self.config)

    def _loop_chi2(self, poses: np.ndarray, loops: List[LoopEdge], index: Dict[int, int]) -> np.ndarray:
        from mpslam_ros.geometry.lie import se3_log

        out = np.zeros(len(loops))
        for k, e in enumerate(loops):
            Ti, Tj = poses[index[e.match_id]], poses[index[e.query_id]]
            err = se3_log(np.linalg.inv(e.T_match_query) @ np.linalg.inv(Ti) @ Tj)
            out[k] = float(err @ e.information @ err)
        return out

    def _odometry_chi2(self, poses: np.ndarray, odom: np.ndarray, maps: np.ndarray,
                       scale: float = 1.0) -> np.ndarray:
        from mpslam_ros.geometry.lie import se3_log

        k = odometry_pairs(maps, len(odom))
        if len(k) == 0:
            return np.zeros(0)
        meas = np.linalg.inv(odom[k - 1]) @ odom[k]
        info = odometry_information(self.config, meas, scale)
        est = np.linalg.inv(poses[k - 1]) @ poses[k]
        err = np.array([se3_log(np.linalg.inv(a) @ b) for a, b in zip(meas, est)])
        return np.einsum("ni,nij,nj->n", err, info, err)

    def _solve_component(self, idx: np.ndarray, order: List[int], loops: List[LoopEdge], odom: np.ndarray,
                         maps: np.ndarray, init: np.ndarray, rejected: List[Tuple[LoopEdge, str]]):
        """Solve one connected component (keyframes ``idx`` of the whole graph, its oldest fixed)."""
        from mpslam_ros.problems.pgo import optimize_pose_graph

        sub_order = [order[i] for i in idx]
        members = set(sub_order)
        loops = [e for e in loops if e.query_id in members and e.match_id in members]
        sub_odom, sub_maps, sub_init = odom[idx], maps[idx], init[idx]
        index = {kf_id: k for k, kf_id in enumerate(sub_order)}
        options = self._solver_options()
        # Stage 1 (plain least squares): a correct loop closing a long drift starts with a huge residual
        # that a robust loss would simply ignore, so consistency is judged on the plain solution; the
        # loop least consistent with the rest is dropped and the graph re-solved until all agree, and
        # a solution that stretches odometry beyond its noise drops the newest loop (never worse).
        # Once the loops agree, an odometry noisier than configured shows as a variance factor > 1
        # (odometry_noise_*): the odometry variances are scaled by it and the graph re-solved.
        plain = dataclasses.replace(options, robust_loss=None)
        cfg = self.config
        scale = self._odometry_scale
        while True:
            graph = self.build_graph(sub_order, loops, sub_odom, sub_maps, scale)
            poses, summary = optimize_pose_graph(graph, plain, initial=sub_init)
            if not loops or not summary.converged or len(rejected) >= self.config.max_loop_drops_per_solve:
                break
            chi2 = self._loop_chi2(poses, loops, index)
            worst = int(np.argmax(chi2))
            odo = self._odometry_chi2(poses, sub_odom, sub_maps, scale)
            odo_max = float(odo.max()) if len(odo) else 0.0
            if odo_max > self.config.max_odometry_chi2:
                # the graph was consistent before the newest loop (loops are in insertion order);
                # a confident wrong loop also raises the chi2 of the right ones, so this test first
                rejected.append((loops[-1], f"odometry chi2 {odo_max:.1f} after PGO"))
                loops = loops[:-1]
            elif chi2[worst] > self.config.max_loop_chi2:
                rejected.append((loops[worst], f"chi2 {chi2[worst]:.1f} after PGO"))
                loops = loops[:worst] + loops[worst + 1:]
            else:
                factor = float(chi2.sum() + odo.sum()) / (6.0 * len(loops))
                if (len(loops) < cfg.odometry_noise_min_loops or factor <= cfg.odometry_noise_max_factor
                        or scale >= cfg.odometry_noise_max_scale):
                    break
                scale = min(scale * factor, cfg.odometry_noise_max_scale)
                sub_init = poses
                log.info("loop closure: odometry noisier than configured (variance factor %.1f over %d loops): "
                         "odometry variances x%.1f", factor, len(loops), scale)
        self._odometry_scale = max(self._odometry_scale, scale)
        # Stage 2: the robust loss on the surviving loops, warm-started from stage 1.
        if options.robust_loss is not None and loops:
            poses, summary = optimize_pose_graph(graph, options, initial=poses)
        return poses, summary, len(loops)

    def _solve_once(self) -> None:
        generation, order, loops, solution, odom, maps, roots, frames = self._snapshot()
        if self.config.solve_delay_s > 0:  # interruptible by close()
            with self._lock:
                if self._wake.wait_for(lambda: self._stop, timeout=self.config.solve_delay_s):
                    self._busy = False
                    self._wake.notify_all()
                    return
        if len(order) < 2:
            with self._lock:
                self._done = max(self._done, generation)
                self._busy = False
                self._wake.notify_all()
            return
        t0 = time.perf_counter()
        init, frame = self._initial_guess(odom, solution, maps, frames)
        index = {kf_id: k for k, kf_id in enumerate(order)}
        rejected: List[Tuple[LoopEdge, str]] = []
        poses = init.copy()
        iterations, cost0, cost, n_loops, terminations = 0, 0.0, 0.0, 0, []
        for root in np.unique(roots):
            idx = np.nonzero(roots == root)[0]
            self._align_frames(init, frame, idx, loops, index)
            frame[idx] = frame[idx[0]]
            if len(idx) < 2:
                poses[idx] = init[idx]
                continue
            sub, summary, kept = self._solve_component(idx, order, loops, odom, maps, init, rejected)
            poses[idx] = sub
            iterations += int(summary.iterations)
            cost0 += float(summary.initial_cost)
            cost += float(summary.final_cost)
            n_loops += kept
            terminations.append(str(summary.termination))
        seconds = time.perf_counter() - t0
        record = SolveRecord(len(order), n_loops, seconds, iterations, cost0, cost,
                             ", ".join(sorted(set(terminations))))
        with self._lock:
            self._solution_frame = frame
            self.stats.rejected_loops += len(rejected)
            drop = {id(e) for e, _ in rejected}
            self._loops = [e for e in self._loops if id(e) not in drop]
            self._rejected.extend(rejected)
            self._solution = poses
            self.solves.append(record)
            self._done = max(self._done, generation)
            self._busy = False
            self._wake.notify_all()
        for e, why in rejected:
            log.warning("loop closure: dropped loop %d -> %d (%s)", e.query_id, e.match_id, why)

    # ------------------------------------------------------------------ outputs

    def wait_idle(self, timeout: Optional[float] = None) -> bool:
        """Block until every requested solve has finished; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            while self._done < self._requested or self._busy:
                if self._worker is None or self._stop:
                    break
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.wait(left)
            return True

    @property
    def busy(self) -> bool:
        with self._lock:
            return self._busy or self._done < self._requested

    def solve_state(self) -> Dict[str, int]:
        """What the latest finished solve covers, for run summaries and /diagnostics: keyframes in
        the graph and in the latest solution, accepted loops and loops in that solution, and whether
        a requested solve has not finished yet (``pending``: 1 while it runs or waits)."""
        with self._lock:
            last = self.solves[-1] if self.solves else None
            return {"keyframes": len(self._order), "keyframes_solved": len(self._solution),
                    "loops": len(self._loops), "loops_solved": last.num_loops if last else 0,
                    "solves": len(self.solves),
                    "pending": int(self._busy or (self._done < self._requested and self._worker is not None
                                                  and not self._stop))}

    def T_map_odom(self) -> np.ndarray:
        """Correction map <- odom of the current (latest) map from the latest solve (identity before
        the first loop). In the frame of the first map only when :meth:`current_map_aligned`."""
        with self._lock:
            if not self._order:
                return np.eye(4)
            last = self._order[-1]
            return self._current_pose(last) @ np.linalg.inv(self.db.get(last).T_world_body)

    def current_map_aligned(self) -> bool:
        """Whether the map VO is tracking in is the first map or merged with it (so that poses and
        map -> odom are in one frame); False after a break until a loop merges the maps."""
        with self._lock:
            if not self._map_ids:
                return True
            return self._root(self._map_ids[-1]) == self._root(self._map_ids[0])

    def keyframe_maps(self) -> Dict[int, Tuple[int, bool]]:
        """Keyframe id -> (map id, aligned with the first map). Maps are numbered in order of
        appearance; a map merged with another keeps its id but shares the other's frame."""
        with self._lock:
            if not self._map_ids:
                return {}
            first = self._root(self._map_ids[0])
            return {kf_id: (m, self._root(m) == first) for kf_id, m in zip(self._order, self._map_ids)}

    def corrected_poses(self) -> Dict[int, np.ndarray]:
        """Keyframe id -> T_map_body (solved ones from PGO, newer ones chained by odometry from their
        map's last solved keyframe). A keyframe of a map not merged with the first one is in its own
        map's frame (see :meth:`keyframe_maps`)."""
        with self._lock:
            return {kf_id: self._current_pose(kf_id).copy() for kf_id in self._order}

    def loops(self) -> List[LoopEdge]:
        """Accepted loop edges (query_id, match_id, T_match_query, information, inliers...)."""
        with self._lock:
            return list(self._loops)

    def rejected_loops(self) -> List[Tuple[LoopEdge, str]]:
        """Loops verified geometrically but dropped as inconsistent by PGO, with the reason."""
        with self._lock:
            return list(self._rejected)

    def map_points(self) -> np.ndarray:
        """Landmarks in the map frame, each moved with its anchor (first observing) keyframe; only
        keyframes of the first map or of maps merged with it (the others are in their own frames)."""
        maps = self.keyframe_maps()
        poses = {i: T for i, T in self.corrected_poses().items() if maps[i][1]}
        seen = set()
        chunks = []
        for stored in self.db:
            if not stored.has_appearance or stored.id not in poses:
                continue
            pts = stored.points_cam.astype(np.float64)
            ok = np.all(np.isfinite(pts), axis=1)
            lm = stored.landmark_ids
            new = ok & np.array([(i < 0) or (i not in seen) for i in lm], dtype=bool)
            seen.update(int(i) for i in lm[new] if i >= 0)
            if new.any():
                T = poses[stored.id] @ stored.T_body_left
                chunks.append(pts[new] @ T[:3, :3].T + T[:3, 3])
        return np.concatenate(chunks) if chunks else np.zeros((0, 3))

    def solve_latencies(self) -> List[Tuple[int, float]]:
        """(keyframes, seconds) of every background solve so far."""
        with self._lock:
            return [(s.num_keyframes, s.seconds) for s in self.solves]

    @property
    def bytes_per_keyframe(self) -> float:
        return self.db.bytes_per_keyframe

    # ------------------------------------------------------------------ persistence

    def save(self, path: Union[str, Path]) -> None:
        """Write the map (keyframes, loops, corrected poses, config) to one ``.npz`` file."""
        self.wait_idle()
        with self._lock:
            order = list(self._order)
            loops = list(self._loops)
            solution = self._solution.copy()
            frames = self._solution_frame.copy()
        extra = {
            "solution_frame": frames,
            "graph_order": np.array(order, dtype=np.int64),
            "solution": solution.reshape(-1, 4, 4),
            "loop_ids": np.array([[e.query_id, e.match_id, e.inliers] for e in loops], np.int64).reshape(-1, 3),
            "loop_T": np.array([e.T_match_query for e in loops]).reshape(-1, 4, 4),
            "loop_information": np.array([e.information for e in loops]).reshape(-1, 6, 6),
            "map_ids": np.array(self._map_ids, np.int64),
            "map_roots": np.array([self._root(m) for m in self._map_ids], np.int64),
        }
        meta = {"config": dataclasses.asdict(self.config)}
        self.db.save(path, extra, meta)

    @classmethod
    def load(cls, path: Union[str, Path], config: Optional[LoopClosureConfig] = None,
             vocabulary: Optional[BinaryVocabulary] = None) -> "LoopClosure":
        """Read a map written by :meth:`save`; raises :class:`MapFileError` naming the file if corrupt."""
        db, extra, meta = KeyframeDatabase.load(path)
        for key in ("graph_order", "solution", "loop_ids", "loop_T", "loop_information"):
            if key not in extra:
                raise MapFileError(f"{path}: not a loop-closure map (missing '{key}')")
        if config is None:
            fields = {f.name for f in dataclasses.fields(LoopClosureConfig)}
            saved = {k: v for k, v in meta.get("config", {}).items() if k in fields}
            config = LoopClosureConfig(**saved)
        lc = cls(config, vocabulary)
        order = [int(i) for i in extra["graph_order"]]
        if sorted(order) != sorted(db.ids()):
            raise MapFileError(f"{path}: graph order does not match the stored keyframes")
        n_loops = len(extra["loop_ids"])
        if extra["loop_T"].shape != (n_loops, 4, 4) or extra["loop_information"].shape != (n_loops, 6, 6):
            raise MapFileError(f"{path}: loop arrays have inconsistent shapes")
        if len(extra["solution"]) > len(order) or extra["solution"].shape[1:] != (4, 4):
            raise MapFileError(f"{path}: solution has shape {extra['solution'].shape} for {len(order)} keyframes")
        lc.db = db
        lc._order = order
        lc._index = {kf_id: k for k, kf_id in enumerate(order)}
        for (q, m, inl), T, info in zip(extra["loop_ids"], extra["loop_T"], extra["loop_information"]):
            if int(q) not in lc._index or int(m) not in lc._index:
                raise MapFileError(f"{path}: loop ({int(q)}, {int(m)}) names an unknown keyframe")
            lc._loops.append(LoopEdge(int(q), int(m), T.copy(), info.copy(), int(inl)))
        lc._solution = extra["solution"].astype(np.float64)
        # maps (files written before maps existed hold one map)
        maps = extra.get("map_ids", np.zeros(len(order), np.int64))
        roots = extra.get("map_roots", maps)
        if maps.shape != (len(order),) or roots.shape != (len(order),):
            raise MapFileError(f"{path}: map ids have shape {maps.shape} for {len(order)} keyframes")
        lc._map_ids = [int(m) for m in maps]
        lc._merged = {int(m): int(r) for m, r in zip(maps, roots) if m != r}
        lc._next_map = int(maps.max()) + 1 if len(maps) else 0
        lc.stats.maps = len(set(lc._map_ids))
        frames = extra.get("solution_frame", np.zeros(0, np.int64))
        lc._solution_frame = (frames.astype(np.int64) if len(frames) == len(lc._solution)
                              else np.array([lc._root(m) for m in lc._map_ids[: len(lc._solution)]], np.int64))
        return lc

    def close(self) -> None:
        """Stop the background worker (an ongoing solve finishes its current call first)."""
        with self._lock:
            self._stop = True
            self._wake.notify_all()
        if self._worker is not None and self._worker is not threading.current_thread():
            self._worker.join(timeout=10.0)
        self._worker = None

    def __enter__(self) -> "LoopClosure":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
