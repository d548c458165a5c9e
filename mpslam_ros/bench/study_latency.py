"""Pose-graph solve latency vs graph size, as the loop-closure back end runs it.

For each size n: a robot drives laps around a 50 m circuit with keyframes every ~0.3 m (so
n = 5,000 keyframes is ~1.5 km), odometry drifts, and loops are measured every 10 keyframes at
revisits (:func:`mpslam_ros.slam.loop_synth.drifting_pose_graph`). Two solves are timed per precision:

- **cold**: from dead reckoning (the first loop after a long drift: the worst case);
- **warm**: the graph's last 1% keyframes and their loops are new, the rest starts from the previous
  solution (what :class:`~mpslam_ros.slam.loop_closure.LoopClosure` does at every later loop).

Each time is LoopClosure's whole background solve: plain least squares, the loop consistency
check (re-solving if a loop is dropped), then the robust (Cauchy) solve warm-started from it.
"""

from __future__ import annotations

import argparse
import time
from typing import List, Sequence

import numpy as np

HELP = "PGO latency vs number of keyframes (cold and warm-started solves) as a table"


def circuit_poses(n: int, laps: int = 3, spacing_m: float = 0.3) -> np.ndarray:
    """Ground-truth poses along a rounded-rectangle circuit driven ``laps`` times with slight z wobble."""
    length = n * spacing_m / laps
    s = np.arange(n) * spacing_m
    a = 2 * np.pi * (s % length) / length
    rx, ry = length / (2 * np.pi) * 1.3, length / (2 * np.pi) * 0.7  # an ellipse of that perimeter-ish
    x, y = rx * np.cos(a), ry * np.sin(a)
    yaw = np.arctan2(ry * np.cos(a), -rx * np.sin(a))
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, 0, 0], T[:, 0, 1], T[:, 1, 0], T[:, 1, 1] = np.cos(yaw), -np.sin(yaw), np.sin(yaw), np.cos(yaw)
    T[:, 0, 3], T[:, 1, 3], T[:, 2, 3] = x, y, 0.05 * np.sin(s / 3.0)
    return T


def latency_rows(sizes: Sequence[int], precisions: Sequence[str], repeats: int = 3) -> List[dict]:
    """Time LoopClosure's own solve (plain LS + loop consistency check + robust LS) per size and precision."""
    from mpslam_ros.datatypes import Keyframe, Trajectory
    from mpslam_ros.evaluation.metrics import ate
    from mpslam_ros.slam.loop_closure import LoopClosure, LoopClosureConfig
    from mpslam_ros.slam.loop_synth import drifting_pose_graph
    from mpslam_ros.slam.verification import LoopEdge

    rows = []
    for n in sizes:
        gt = circuit_poses(n)
        data = drifting_pose_graph(gt, seed=n, min_gap=50, loop_every=10, loop_radius_m=1.0)
        odom = data.dead_reckoning()
        stamps = np.arange(n, dtype=np.int64)
        m = n - max(1, n // 100)  # warm start: the newest 1% of keyframes (and their loops) are new
        for p in precisions:
            lc = LoopClosure(LoopClosureConfig(precision=p, background=False))
            empty = dict(keypoints=np.zeros((0, 2), np.float32), descriptors=np.zeros((0, 32), np.uint8),
                         landmark_ids=np.zeros(0, np.int64), points_cam=np.zeros((0, 3)))
            for i in range(n):
                lc.add_keyframe(Keyframe(id=i, stamp_ns=i, T_world_body=odom[i], **empty))
            loops = [LoopEdge(j, i, T, data.loop_information, 100) for i, j, T in data.loops]
            old_loops = [e for e in loops if e.query_id < m]

            def timed(solution, with_loops):
                lc._loops = list(with_loops)
                lc._solution = solution
                lc._order = list(range(n if len(with_loops) == len(loops) else m))
                lc._solve_once()
                return lc.solves[-1], lc._solution

            timed(np.zeros((0, 4, 4)), loops)  # compile / warm caches
            cold = [timed(np.zeros((0, 4, 4)), loops) for _ in range(repeats)]
            _, prev = timed(np.zeros((0, 4, 4)), old_loops)
            warm = [timed(prev, loops) for _ in range(repeats)]
            best_cold = min(cold, key=lambda r: r[0].seconds)[0]
            best_warm, poses = min(warm, key=lambda r: r[0].seconds)
            rows.append({"keyframes": n, "loops": len(loops), "precision": p, "cold_s": best_cold.seconds,
                         "cold_iterations": best_cold.iterations, "warm_s": best_warm.seconds,
                         "warm_iterations": best_warm.iterations,
                         "ate_odom_m": float(ate(Trajectory(stamps, gt), Trajectory(stamps, odom)).rmse),
                         "ate_pgo_m": float(ate(Trajectory(stamps, gt), Trajectory(stamps, poses)).rmse)})
    return rows


def format_table(rows: List[dict]) -> str:
    lines = ["| keyframes | loops | precision | cold solve (s) | iters (robust stage) | warm solve (s) | iters (robust stage) | ATE odometry (m) | ATE after PGO (m) |",
             "|---:|---:|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['keyframes']} | {r['loops']} | {r['precision']} | {r['cold_s']:.3f} | {r['cold_iterations']} | "
                     f"{r['warm_s']:.3f} | {r['warm_iterations']} | {r['ate_odom_m']:.3f} | {r['ate_pgo_m']:.4f} |")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--sizes", default="500,1000,2000,5000,10000", help="comma-separated numbers of keyframes")
    parser.add_argument("--precisions", default="mixed,fp32,fp64", help="comma-separated presets")
    parser.add_argument("--repeats", type=int, default=3, help="timed solves per case (the minimum is reported)")


def main(args: argparse.Namespace) -> int:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = latency_rows(sizes, args.precisions.split(","), args.repeats)
    print(format_table(rows))
    return 0
