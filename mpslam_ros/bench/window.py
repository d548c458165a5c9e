"""``mpslam bench window``: synthetic VO-sized windows, every precision mode + the Schur reference."""

from __future__ import annotations

import argparse
import time

import numpy as np

HELP = "sliding-window BA (50 keyframes, ~230 landmarks, ~2,750 observations): all modes, table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1000, help="number of random windows (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="first window seed (default 0)")
    parser.add_argument("--stereo", action="store_true", help="stereo observations (3 rows) instead of mono")
    parser.add_argument("--max-iterations", type=int, default=10, help="LM iterations per window (default 10)")


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mpslam_ros.bench.ba import MODES, print_table, solver_options
    from mpslam_ros.problems.ba import solve_window, warmup
    from mpslam_ros.problems.window_synth import make_window

    warmup()
    costs = {m: [] for m, _ in MODES}
    times = {m: [] for m, _ in MODES}
    its = {m: [] for m, _ in MODES}
    cgs = {m: [] for m, _ in MODES}
    share = {m: [] for m, _ in MODES}
    n_obs = []
    for i in tqdm(range(args.count), desc="windows"):
        w = make_window(args.seed + i, stereo=args.stereo)
        n_obs.append(w.num_observations)
        for mode, kw in MODES:
            opts = solver_options(kw, args.max_iterations, function_tolerance=1e-10)
            t0 = time.perf_counter()
            _, _, s = solve_window(*w.solve_args(), options=opts)
            times[mode].append(time.perf_counter() - t0)
            costs[mode].append(s.final_cost)
            its[mode].append(s.iterations)
            cgs[mode].append(s.cg_iterations)
            lin = getattr(s, "linear_solve_time_s", 0.0)
            share[mode].append(getattr(s, "jacobian_product_time_s", 0.0) / lin if lin > 0 else 0.0)
    c64 = np.array(costs["cgnr fp64"])
    rows = []
    for mode, _ in MODES:
        rows.append(dict(mode=mode, final_cost=float(np.median(costs[mode])), time_s=float(np.median(times[mode])),
                         iterations=int(np.median(its[mode])), cg_iterations=int(np.median(cgs[mode])),
                         jp_share=float(np.mean(share[mode]))))
    print_table(f"{args.count} windows ({'stereo' if args.stereo else 'mono'}), median over windows; "
                f"observations median {int(np.median(n_obs))}", rows)
    print("\nshare of windows whose final cost is within 1e-6 relative of cgnr fp64 "
          "(and of schur fp64):")
    cs = np.array(costs["schur fp64"])
    for mode, _ in MODES:
        c = np.array(costs[mode])
        a = np.mean(np.abs(c - c64) <= 1e-6 * c64)
        b = np.mean(np.abs(c - cs) <= 1e-6 * cs)
        print(f"  {mode:16s} {a:7.1%}   {b:7.1%}")
    print("Ceres columns: not implemented.")
    return 0
