"""``mpslam bench pgo`` with an extra mode ``mixed-fp32``: the mixed preset with the factor kept in fp32 after
its fp16 widening (``fp32_factor_max_cg_iterations=0``, i.e. before issue 17's fp64 widening), side by side
with fp64, mixed and GTSAM in one process (the A/B behind docs/solvers.md's fourth-pass tables).

    flock /tmp/mpslam_bench.lock python dev/pgo/widening_ab.py synth:se3:10000:3:loop_prob=0.3 --repeat 3
"""
import argparse
import json
from pathlib import Path

from mpslam_ros.bench import pgo as bench
from mpslam_ros.problems import pgo

_run_ours = bench.run_ours


def run_ours(graph, poses0, mode, preconditioner, device="cpu"):
    if mode != "mixed-fp32":
        return _run_ours(graph, poses0, mode, preconditioner, device)
    return _run_ours(graph, poses0, "mixed", preconditioner, device, fp32_factor_max_cg_iterations=0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--modes", default="fp64,mixed,mixed-fp32")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json")
    args = ap.parse_args()
    bench.run_ours = run_ours
    pgo.warmup()
    rows = []
    for f in args.files:
        rows.extend(bench.bench_file(f if f.startswith("synth:") else Path(f), args.modes.split(","), "chordal",
                                     "ict", args.repeat, True))
    bench.print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
