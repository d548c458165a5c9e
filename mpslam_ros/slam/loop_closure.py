"""Loop closure: place recognition, geometric verification and background pose-graph optimisation.

``LoopClosure.add_keyframe`` stores the keyframe (:class:`~mpslam_ros.slam.keyframe_db.KeyframeDatabase`),
adds an odometry edge from the previous keyframe, queries the bag-of-words index for earlier
keyframes that look alike (:class:`~mpslam_ros.slam.place_recognition.PlaceRecognizer`) and verifies
them geometrically (:func:`~mpslam_ros.slam.verification.verify_loop`). When a loop is accepted the
pose graph (odometry + loop edges) is solved in a background worker thread with the mixed-precision
PGO solver (nogil kernels, so the caller keeps running), warm-started from the previous solution,
with a robust loss on loop edges; after the solve, loops still inconsistent with the rest of the map
are dropped and the graph re-solved, so one wrong loop cannot wreck the map.

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
from mpslam_ros.slam.keyframe_db import KeyframeDatabase, MapFileError
from mpslam_ros.slam.place_recognition import BinaryVocabulary, PlaceRecognizer, default_vocabulary
from mpslam_ros.slam.verification import LoopEdge, VerificationConfig, verify_loop

log = logging.getLogger(__name__)


@dataclass
class LoopClosureConfig:
    """Loop-closure settings (flat scalars so the ROS node can declare each as a parameter)."""

    #: Precision preset of pose-graph optimisation: fp64, fp32, fp16 or mixed.
    precision: str = "mixed"
    #: Vocabulary file (.npz); empty: the package's default vocabulary (trained at first use, cached).
    vocabulary_path: str = ""
    #: Minimum bag-of-words score (DBoW2 L1, 0..1) of a loop candidate.
    min_score: float = 0.04
    #: Minimum score relative to the query's score against the previous keyframe.
    min_relative_score: float = 0.3
    #: The most recent keyframes are never loop candidates.
    exclude_recent: int = 20
    #: Candidates verified per keyframe (best scores first).
    max_candidates: int = 5
    #: Minimum PnP inliers of an accepted loop.
    min_inliers: int = 25
    #: Minimum number of 4x4 image-grid cells covered by the inliers.
    min_spread_cells: int = 5
    #: Descriptor ratio test.
    match_ratio: float = 0.8
    #: Odometry edge standard deviations (per keyframe step): translation (m), rotation (rad).
    odometry_sigma_m: float = 0.02
    odometry_sigma_rad: float = 0.005
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


def build_pose_graph(order: List[int], loops: List[LoopEdge], odom: np.ndarray, config: LoopClosureConfig):
    """PoseGraph of odometry edges between consecutive keyframes (``odom`` in ``order``) plus the
    loop edges (robust), with the odometry information from ``config``."""
    from mpslam_ros.problems.pgo import PoseGraph

    graph = PoseGraph(fix_first=True)
    for T in odom:
        graph.add_pose(T)
    info_odom = np.diag([config.odometry_sigma_rad ** -2] * 3 + [config.odometry_sigma_m ** -2] * 3)
    # vectorised (per-edge Python calls took ~0.25 s of a 5,000-keyframe solve)
    odom = np.asarray(odom, dtype=np.float64)
    if len(odom) > 1:
        k = np.arange(1, len(odom))
        graph.add_edges(k - 1, k, np.linalg.inv(odom[:-1]) @ odom[1:], info_odom)
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
                         max_iterations=config.max_iterations)


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
                vocab = (BinaryVocabulary.load(self.config.vocabulary_path) if self.config.vocabulary_path
                         else default_vocabulary())
                self._vocabulary = vocab
            rec = PlaceRecognizer(vocab, self.config.min_score, self.config.min_relative_score,
                                  self.config.exclude_recent, self.config.max_candidates)
            for stored in self.db:  # a loaded map: index its keyframes
                if stored.has_appearance:
                    rec.add(stored.id, stored.descriptors)
            self._recognizer = rec
        return self._recognizer

    def add_keyframe(self, kf: Keyframe) -> Optional[LoopEdge]:
        """Add a keyframe; returns the loop accepted for it (the solve then runs in the background).

        Raises ``ValueError`` naming the keyframe on malformed input (the caller logs and drops it).
        """
        stored = self.db.add(kf)
        with self._lock:
            self._index[stored.id] = len(self._order)
            self._order.append(stored.id)
        accepted = None
        if stored.has_appearance:
            rec = self._get_recognizer()
            vec = rec.vocabulary.bow_vector(stored.descriptors)
            for cand_id, score in rec.query(stored.descriptors, vec):
                result = verify_loop(stored, self.db.get(cand_id), self.verification, score)
                self.verification_log.append((stored.id, cand_id, score, result.reason))
                if result.edge is not None:
                    accepted = result.edge
                    break
            rec.add(stored.id, stored.descriptors)
            del vec
        if accepted is not None:
            with self._lock:
                self._loops.append(accepted)
            self.request_solve()
        return accepted

    def add_loop(self, edge: LoopEdge) -> None:
        """Add an externally verified loop edge (e.g. from a relocalisation) and re-solve."""
        with self._lock:
            if edge.query_id not in self._index or edge.match_id not in self._index:
                raise ValueError(f"loop ({edge.query_id}, {edge.match_id}): unknown keyframe id")
            self._loops.append(edge)
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
            self._busy = True
        odom = np.array([self.db.get(i).T_world_body for i in order]).reshape(-1, 4, 4)
        return generation, order, loops, solution, odom

    def _initial_guess(self, odom: np.ndarray, solution: np.ndarray) -> np.ndarray:
        """Warm start: the previous solution, then new keyframes chained on by odometry."""
        init = odom.copy()
        m = min(len(solution), len(odom))
        if m:
            init[:m] = solution[:m]
            correction = solution[m - 1] @ np.linalg.inv(odom[m - 1])
            init[m:] = correction @ odom[m:]
        return init

    def build_graph(self, order: List[int], loops: List[LoopEdge], odom: np.ndarray):
        return build_pose_graph(order, loops, odom, self.config)

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

    def _solve_once(self) -> None:
        from mpslam_ros.problems.pgo import optimize_pose_graph

        generation, order, loops, solution, odom = self._snapshot()
        if len(order) < 2:
            with self._lock:
                self._done = max(self._done, generation)
                self._busy = False
                self._wake.notify_all()
            return
        t0 = time.perf_counter()
        init = self._initial_guess(odom, solution)
        options = self._solver_options()
        index = {kf_id: k for k, kf_id in enumerate(order)}
        rejected: List[Tuple[LoopEdge, str]] = []
        # Stage 1 (plain least squares): a correct loop closing a long drift starts with a huge residual
        # that a robust loss would simply ignore, so consistency is judged on the plain solution; the
        # loop least consistent with the rest is dropped and the graph re-solved until all agree.
        plain = dataclasses.replace(options, robust_loss=None)
        poses = init
        while True:
            graph = self.build_graph(order, loops, odom)
            poses, summary = optimize_pose_graph(graph, plain, initial=init)
            chi2 = self._loop_chi2(poses, loops, index)
            worst = int(np.argmax(chi2)) if len(chi2) else -1
            # judge consistency only on a converged solution (an unconverged one is inconsistent anyway)
            if (worst < 0 or chi2[worst] <= self.config.max_loop_chi2 or not summary.converged
                    or len(rejected) >= self.config.max_loop_drops_per_solve):
                break
            rejected.append((loops[worst], f"chi2 {chi2[worst]:.1f} after PGO"))
            loops = loops[:worst] + loops[worst + 1:]
        # Stage 2: the robust loss on the surviving loops, warm-started from stage 1.
        if options.robust_loss is not None and loops:
            poses, summary = optimize_pose_graph(graph, options, initial=poses)
        seconds = time.perf_counter() - t0
        record = SolveRecord(len(order), len(loops), seconds, int(summary.iterations),
                             float(summary.initial_cost), float(summary.final_cost), str(summary.termination))
        with self._lock:
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

    def T_map_odom(self) -> np.ndarray:
        """Correction map <- odom from the latest solve (identity before the first loop)."""
        with self._lock:
            m = len(self._solution)
            if m == 0:
                return np.eye(4)
            T_odom_last = self.db.get(self._order[m - 1]).T_world_body
            return self._solution[m - 1] @ np.linalg.inv(T_odom_last)

    def corrected_poses(self) -> Dict[int, np.ndarray]:
        """Keyframe id -> T_map_body (solved ones from PGO, newer ones through T_map_odom)."""
        with self._lock:
            correction = self.T_map_odom()
            out = {}
            for k, kf_id in enumerate(self._order):
                out[kf_id] = (self._solution[k].copy() if k < len(self._solution)
                              else correction @ self.db.get(kf_id).T_world_body)
            return out

    def loops(self) -> List[LoopEdge]:
        """Accepted loop edges (query_id, match_id, T_match_query, information, inliers...)."""
        with self._lock:
            return list(self._loops)

    def rejected_loops(self) -> List[Tuple[LoopEdge, str]]:
        """Loops verified geometrically but dropped as inconsistent by PGO, with the reason."""
        with self._lock:
            return list(self._rejected)

    def map_points(self) -> np.ndarray:
        """Landmarks in the map frame, each moved with its anchor (first observing) keyframe."""
        poses = self.corrected_poses()
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
        extra = {
            "graph_order": np.array(order, dtype=np.int64),
            "solution": solution.reshape(-1, 4, 4),
            "loop_ids": np.array([[e.query_id, e.match_id, e.inliers] for e in loops], np.int64).reshape(-1, 3),
            "loop_T": np.array([e.T_match_query for e in loops]).reshape(-1, 4, 4),
            "loop_information": np.array([e.information for e in loops]).reshape(-1, 6, 6),
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
