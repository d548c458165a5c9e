"""Precision study: does mixed precision match fp64/fp32 accuracy on the SLAM back end's problems?

Two parts, each many small solves along synthetic data, as a SLAM system would run them:

- **PGO (loop closure)**: along the ground-truth trajectory of a synthetic scene (keyframes every
  ``keyframe_every`` frames), odometry drifts and a loop is measured at every true revisit
  (:func:`mpslam_ros.slam.loop_synth.drifting_pose_graph`). At every loop the growing pose graph is
  solved once per precision, warm-started from that precision's previous solution with new
  keyframes chained on by odometry (exactly what :class:`~mpslam_ros.slam.loop_closure.LoopClosure`
  does), and the ATE of the solution against the ground truth is recorded.
- **VO windows (bundle adjustment)**: synthetic sliding windows
  (:func:`mpslam_ros.problems.window_synth.make_window`) of 10..50 keyframes solved by
  :func:`mpslam_ros.problems.ba.solve_window` with each precision; the camera-position error
  against ground truth is recorded.

Outputs in the output folder: ``pgo_ate_cdf.png``, ``pgo_time.png``, ``window_ate_cdf.png``,
``window_time.png``, ``study.json`` (every solve) and ``summary.md`` (the tables printed).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

HELP = "precision study: PGO at every loop (fp32 vs mixed) and VO windows (fp64, fp16, mixed)"


@dataclass
class SolveSample:
    precision: str
    num_keyframes: int
    ate_m: float
    seconds: float
    iterations: int


@dataclass
class StudyResult:
    pgo: List[SolveSample] = field(default_factory=list)
    window: List[SolveSample] = field(default_factory=list)


def _position_rmse(gt: np.ndarray, est: np.ndarray) -> float:
    """RMSE of positions after SE(3) alignment (evo's ATE)."""
    from mpslam_ros.datatypes import Trajectory
    from mpslam_ros.evaluation.metrics import ate

    stamps = np.arange(len(gt), dtype=np.int64) * 10 ** 9
    return float(ate(Trajectory(stamps, gt), Trajectory(stamps, est), align="se3").rmse)


def scene_keyframe_poses(scene: str, duration_s: float, seed: int, keyframe_every: int) -> np.ndarray:
    """Ground-truth body poses of every ``keyframe_every``-th frame of a synthetic scene (no rendering)."""
    from mpslam_ros.sim.sequences import SyntheticSequence, cached_world

    seq = SyntheticSequence(scene, duration_s, seed, world=cached_world(seed))
    return seq.poses[::keyframe_every].copy()


def pgo_study(gt_poses: np.ndarray, precisions: Sequence[str], seed: int = 0, loop_every: int = 2,
              max_iterations: int = 30, progress: bool = True) -> List[SolveSample]:
    """Solve the growing pose graph at every loop with each precision (see the module docstring)."""
    from mpslam_ros.problems.pgo import PoseGraph, optimize_pose_graph
    from mpslam_ros.slam.loop_synth import drifting_pose_graph
    from mpslam_ros.solvers.lm import SolverOptions

    graph_data = drifting_pose_graph(gt_poses, seed=seed, loop_every=loop_every)
    odom = graph_data.dead_reckoning()
    loops_by_j: Dict[int, list] = {}
    for i, j, T in graph_data.loops:
        loops_by_j.setdefault(j, []).append((i, T))
    events = sorted(loops_by_j)
    samples: List[SolveSample] = []
    solutions = {p: np.zeros((0, 4, 4)) for p in precisions}
    bar = _progress(len(events) * len(precisions), "PGO at each loop", progress)
    for j in events:
        n = j + 1
        graph = PoseGraph()
        for T in odom[:n]:
            graph.add_pose(T)
        for k in range(1, n):
            graph.add_edge(k - 1, k, graph_data.odometry[k - 1], graph_data.odom_information)
        for jj in events:
            if jj > j:
                break
            for i, T in loops_by_j[jj]:
                graph.add_edge(i, jj, T, graph_data.loop_information, robust=True)
        for p in precisions:
            prev = solutions[p]
            init = odom[:n].copy()
            m = len(prev)
            if m:
                init[:m] = prev
                init[m:] = prev[m - 1] @ np.linalg.inv(odom[m - 1]) @ odom[m:n]
            options = SolverOptions(precision=p, max_iterations=max_iterations)
            t0 = time.perf_counter()
            poses, summary = optimize_pose_graph(graph, options, initial=init)
            dt = time.perf_counter() - t0
            solutions[p] = poses
            samples.append(SolveSample(p, n, _position_rmse(gt_poses[:n], poses), dt, int(summary.iterations)))
            bar.update(1)
    bar.close()
    return samples


def window_study(precisions: Sequence[str], num_windows: int = 60, sizes: Sequence[int] = (10, 20, 30, 40, 50),
                 stereo: bool = True, progress: bool = True) -> List[SolveSample]:
    """Solve synthetic VO windows of several sizes with each precision."""
    from mpslam_ros.problems.ba import solve_window
    from mpslam_ros.problems.window_synth import make_window
    from mpslam_ros.solvers.lm import SolverOptions

    samples: List[SolveSample] = []
    bar = _progress(num_windows * len(precisions), "VO windows", progress)
    for w in range(num_windows):
        n = int(sizes[w % len(sizes)])
        win = make_window(seed=1000 + w, num_keyframes=n, num_landmarks=max(60, int(4.6 * n)), stereo=stereo)
        gt = np.linalg.inv(win.T_cw_true)  # camera -> world poses
        for p in precisions:
            t0 = time.perf_counter()
            T_cw, _, summary = solve_window(*win.solve_args(), options=SolverOptions(precision=p, max_iterations=20))
            dt = time.perf_counter() - t0
            est = np.linalg.inv(T_cw)
            err = float(np.sqrt(np.mean(np.sum((est[:, :3, 3] - gt[:, :3, 3]) ** 2, axis=1))))
            samples.append(SolveSample(p, n, err, dt, int(summary.iterations)))
            bar.update(1)
    bar.close()
    return samples


class _NoBar:
    def update(self, k: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NoBar()
    import sys

    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="solve", file=sys.stderr)


def summary_table(samples: List[SolveSample], title: str) -> str:
    """Markdown table: ATE percentiles and solve time per precision."""
    lines = [f"### {title}", "",
             "| precision | solves | ATE median (m) | ATE p90 (m) | ATE max (m) | time median (ms) | time max (ms) | iters median |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in dict.fromkeys(s.precision for s in samples):
        a = np.array([s.ate_m for s in samples if s.precision == p])
        t = np.array([s.seconds for s in samples if s.precision == p]) * 1e3
        it = np.array([s.iterations for s in samples if s.precision == p])
        lines.append(f"| {p} | {len(a)} | {np.median(a):.3e} | {np.percentile(a, 90):.3e} | {a.max():.3e} | "
                     f"{np.median(t):.1f} | {t.max():.1f} | {np.median(it):.0f} |")
    return "\n".join(lines) + "\n"


def _time_plot(path: Path, samples: List[SolveSample], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for p in dict.fromkeys(s.precision for s in samples):
        n = [s.num_keyframes for s in samples if s.precision == p]
        t = [s.seconds * 1e3 for s in samples if s.precision == p]
        ax.plot(n, t, ".", label=p, alpha=0.6)
    ax.set_xlabel("keyframes in the problem")
    ax.set_ylabel("solve time (ms)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, result: StudyResult) -> str:
    from mpslam_ros.evaluation.plots import plot_error_cdf

    out.mkdir(parents=True, exist_ok=True)
    text = ""
    for name, samples, label in (("pgo", result.pgo, "PGO at every loop"), ("window", result.window, "VO windows")):
        if not samples:
            continue
        by_p = {p: np.array([s.ate_m for s in samples if s.precision == p]) for p in dict.fromkeys(s.precision for s in samples)}
        plot_error_cdf(out / f"{name}_ate_cdf.png", by_p, title=f"{label}: cumulative ATE", xlabel="ATE (m)")
        _time_plot(out / f"{name}_time.png", samples, f"{label}: solve time vs size")
        text += summary_table(samples, label) + "\n"
    (out / "summary.md").write_text(text)
    (out / "study.json").write_text(json.dumps(
        {k: [s.__dict__ for s in getattr(result, k)] for k in ("pgo", "window")}, indent=1))
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-o", "--output", required=True, help="folder for the PNG plots, summary.md and study.json")
    parser.add_argument("--scene", default="household", help="synthetic scene whose trajectory the PGO part follows")
    parser.add_argument("--duration", type=float, default=300.0, help="trajectory length in seconds (20 frames/s)")
    parser.add_argument("--keyframe-every", type=int, default=10, help="one keyframe every N frames")
    parser.add_argument("--loop-every", type=int, default=2,
                        help="at revisits, measure a loop at most every N keyframes (sets the number of solves)")
    parser.add_argument("--pgo-precisions", default="fp32,mixed", help="comma-separated presets for the PGO part")
    parser.add_argument("--window-precisions", default="fp64,fp16,mixed", help="presets for the VO-window part")
    parser.add_argument("--windows", type=int, default=60, help="number of VO windows (sizes cycle 10..50 keyframes)")
    parser.add_argument("--skip-windows", action="store_true", help="only run the PGO part")
    parser.add_argument("--seed", type=int, default=0, help="scene / noise seed")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def main(args: argparse.Namespace) -> int:
    out = Path(args.output)
    gt = scene_keyframe_poses(args.scene, args.duration, args.seed, args.keyframe_every)
    result = StudyResult()
    result.pgo = pgo_study(gt, args.pgo_precisions.split(","), seed=args.seed, loop_every=args.loop_every,
                           progress=not args.no_progress)
    if not args.skip_windows:
        result.window = window_study(args.window_precisions.split(","), num_windows=args.windows,
                                     progress=not args.no_progress)
    print(write_outputs(out, result))
    print(f"plots and tables written to {out}/")
    return 0
