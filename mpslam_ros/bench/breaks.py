"""``mpslam bench breaks``: the SLAM pipeline across stalls, blackouts and kidnaps.

Runs :func:`mpslam_ros.cli.run.run_pipeline` (VO + loop closure) over a synthetic scene, once without
a break and once per break (:mod:`mpslam_ros.sim.breaks`), for each seed, and prints per run: the
VO's ATE, the final ATE after loop closure, their ratio to the same seed's run without a break,
frames with a pose, relocalisations, new maps, merges and rejected loops. The checks of issue 13:
the final ATE is never above the VO's, and after a break the final ATE stays within 1.5x the
unbroken run's (or below 1 cm). Results are also written as JSON lines (``--out``).
"""

from __future__ import annotations

import argparse
import logging
from typing import List, Optional

HELP = "VO + loop closure across stalls, blackouts and kidnaps: ATE before/after loop closure per break"
DESCRIPTION = __doc__

DEFAULT_BREAKS = ["stall@10+0.5", "stall@20+2", "stall@12+6", "blackout@8+1", "blackout@22+4",
                  "kidnap@15+8", "kidnap@5+10"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scene", default="household:40", help="synthetic scene[:seconds] (default household:40)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated sequence seeds (default 0,1,2)")
    parser.add_argument("--breaks", default=",".join(DEFAULT_BREAKS),
                        help="comma-separated breaks KIND@START+LENGTH in seconds (default: "
                             + ", ".join(DEFAULT_BREAKS) + ")")
    parser.add_argument("--precision", choices=["fp64", "fp32", "fp16", "mixed"], default="mixed",
                        help="precision of window BA and PGO (default mixed)")
    parser.add_argument("--out", default=None, help="also append each run's results to this JSON-lines file")


def run_one(scene: str, seed: int, spec: str, precision: str) -> dict:
    """One pipeline run (``spec`` = '' for none); the numbers the table shows."""
    from mpslam_ros.cli.run import evaluate, run_pipeline
    from mpslam_ros.io.datasets import open_dataset
    from mpslam_ros.sim.breaks import BrokenSource, StreamBreak
    from mpslam_ros.slam.vo import VOConfig

    source = open_dataset(scene, seed=seed, progress=False)
    if spec:
        source = BrokenSource(source, [StreamBreak.parse(b) for b in spec.split("&")])
    run = run_pipeline(source, VOConfig(precision=precision), progress=False)
    vo, final = evaluate(run, run.poses_vo), evaluate(run)
    lc = run.extra.get("loop_closure_events", {})
    return {"scene": scene, "seed": seed, "break": spec or "none",
            "vo_ate_m": vo["ate_rmse_m"], "final_ate_m": final["ate_rmse_m"],
            "frames_with_pose_percent": vo["frames_with_pose_percent"], "loops": run.loops,
            "relocalizations": run.extra["vo_events"]["relocalizations"],
            "new_maps": run.extra["vo_events"]["new_maps"], "merges": lc.get("merges", 0),
            "rejected_loops": lc.get("rejected_loops", 0),
            "unaligned_keyframes": run.extra.get("keyframes_not_aligned_with_first_map", 0),
            "frames_per_s": len(run.states) / max(run.wall_s, 1e-9)}


def meets_checks(row: dict, unbroken_final_ate_m: Optional[float]) -> bool:
    """Issue 13's checks: final ATE <= VO ATE; after a break, <= 1.5x the unbroken run's or < 1 cm."""
    if row["final_ate_m"] > row["vo_ate_m"] * (1 + 1e-9):
        return False
    if row["break"] == "none" or row["final_ate_m"] < 0.01:
        return True
    return unbroken_final_ate_m is not None and row["final_ate_m"] <= 1.5 * unbroken_final_ate_m


def unbroken_final_ates(rows: List[dict]) -> dict:
    return {r["seed"]: r["final_ate_m"] for r in rows if r["break"] == "none"}


def format_table(rows: List[dict]) -> str:
    base = unbroken_final_ates(rows)
    head = (f"{'seed':>4s} {'break':16s} {'VO ATE mm':>10s} {'final mm':>9s} {'final/VO':>8s} "
            f"{'/no break':>9s} {'pose %':>7s} {'reloc':>5s} {'maps+':>5s} {'merges':>6s} {'rej':>4s} {'ok':>3s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        ref = base.get(r["seed"])
        ratio = r["final_ate_m"] / ref if ref else float("nan")
        ok = meets_checks(r, ref)
        lines.append(f"{r['seed']:4d} {r['break']:16s} {1e3 * r['vo_ate_m']:10.2f} {1e3 * r['final_ate_m']:9.2f} "
                     f"{r['final_ate_m'] / r['vo_ate_m']:8.3f} {ratio:9.2f} {r['frames_with_pose_percent']:7.1f} "
                     f"{r['relocalizations']:5d} {r['new_maps']:5d} {r['merges']:6d} {r['rejected_loops']:4d} "
                     f"{'yes' if ok else 'NO':>3s}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.bench.runs import run_jobs

    logging.basicConfig(level=logging.ERROR)
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    breaks = [""] + [b.strip() for b in args.breaks.split(",") if b.strip()]
    jobs = [(args.scene, seed, spec, args.precision) for seed in seeds for spec in breaks]
    rows = run_jobs(jobs, run_one, "breaks", args.out, labels=("scene", "seed", "brk"))
    print(format_table(rows))
    base = unbroken_final_ates(rows)
    failed = sum(1 for r in rows if not meets_checks(r, base.get(r["seed"])))
    print(f"\n{len(rows)} runs, {failed} not meeting the checks (final <= VO; after a break <= 1.5x the "
          f"unbroken run or < 1 cm)")
    return 0
