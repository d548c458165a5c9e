"""``mpslam bench window``: synthetic VO-sized windows, every precision mode + the Schur reference + Ceres."""

from __future__ import annotations

import argparse
import time

import numpy as np

from mpslam_ros.cli.device import add_device_argument

HELP = "sliding-window BA (50 keyframes, ~230 landmarks, ~2,750 observations): all modes and Ceres, table"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--count", type=int, default=1000, help="number of random windows (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="first window seed (default 0)")
    parser.add_argument("--stereo", action="store_true",
                        help="stereo observations (3 rows) instead of mono (no Ceres rows: COLMAP has no stereo cost)")
    parser.add_argument("--init", choices=["vo", "independent"], default="vo",
                        help="starting point: 'vo' = previous window's solution + tracked newest keyframe "
                             "(what VO solves), 'independent' = independent noise on every keyframe and "
                             "landmark (a stress test); see problems/window_synth.py (default vo)")
    parser.add_argument("--max-iterations", type=int, default=10, help="LM iterations per window (default 10)")
    parser.add_argument("--function-tolerance", type=float, default=1e-6,
                        help="convergence: a step lowering the cost by less than this fraction, every solver "
                             "incl. Ceres (default 1e-6, Ceres' default)")
    parser.add_argument("--no-ceres", action="store_true", help="skip the Ceres rows")
    parser.add_argument("--modes", default="",
                        help="comma-separated row labels to run, e.g. 'dense_schur mixed,ceres ITERATIVE_SCHUR' "
                             "(default: every row; 'cgnr fp64' always runs: the agreement column compares with it)")
    add_device_argument(parser, bench=True)


def main(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from mpslam_ros.bench.ba import (CERES_SOLVERS, ceres_available, ceres_window, modes_for, print_table,
                                     limit_blas_threads, solver_options)
    from mpslam_ros.problems.ba import solve_window, warmup
    from mpslam_ros.solvers.schur_ba import warmup as schur_warmup
    from mpslam_ros.problems.window_synth import make_window

    limit_blas_threads()
    warmup()
    schur_warmup()
    no_ceres = "--no-ceres given" if args.no_ceres else (
        "stereo windows (COLMAP's costs are mono)" if args.stereo else ceres_available())
    selected = {m.strip() for m in args.modes.split(",") if m.strip()}
    selected = selected | {"cgnr fp64"} if selected else selected
    modes = [(m, kw) for m, kw in modes_for(args.device) if not selected or m in selected]
    ceres_solvers = [ls for ls in CERES_SOLVERS if not no_ceres and (not selected or f"ceres {ls}" in selected)]
    labels = [m for m, _ in modes] + [f"ceres {ls}" for ls in ceres_solvers]
    rec = {m: dict(cost=[], time=[], cpu=[], its=[], cg=[], share=[]) for m in labels}
    optimum, n_obs = [], []
    for i in tqdm(range(args.count), desc="windows"):
        w = make_window(args.seed + i, stereo=args.stereo, init=args.init)
        n_obs.append(w.num_observations)
        # the window's minimum (untimed): fp64 Schur run far past convergence
        _, _, ref = solve_window(*w.solve_args(), options=solver_options(
            dict(linear_solver="schur"), 20, function_tolerance=1e-13))
        optimum.append(ref.final_cost)
        for mode, kw in modes:
            opts = solver_options(kw, args.max_iterations, function_tolerance=args.function_tolerance)
            t0, c0 = time.perf_counter(), time.process_time()
            _, _, s = solve_window(*w.solve_args(), options=opts)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            lin = getattr(s, "linear_solve_time_s", 0.0)
            r = rec[mode]
            r["time"].append(dt)
            r["cpu"].append(cpu)
            r["cost"].append(s.final_cost)
            r["its"].append(s.iterations)
            r["cg"].append(s.cg_iterations)
            r["share"].append(getattr(s, "jacobian_product_time_s", 0.0) / lin if lin > 0 else float("nan"))
        if not no_ceres:
            for ls in ceres_solvers:
                cost, its, dt, cpu = ceres_window(w, ls, args.max_iterations, args.function_tolerance)
                r = rec[f"ceres {ls}"]
                r["time"].append(dt)
                r["cpu"].append(cpu)
                r["cost"].append(cost)
                r["its"].append(its)
    opt = np.array(optimum)
    rows = []
    for m in labels:
        r = rec[m]
        cgnr = m.startswith(("cgnr", "iterative_schur"))
        rows.append(dict(mode=m, final_cost=float(np.median(r["cost"])), time_s=float(np.median(r["time"])),
                         cpu_s=float(np.median(r["cpu"])),
                         iterations=int(np.median(r["its"])),
                         cg_iterations=int(np.median(r["cg"])) if cgnr else None,
                         jp_share=float(np.nanmean(r["share"])) if cgnr else float("nan")))
    print_table(f"{args.count} windows ({'stereo' if args.stereo else 'mono'}, init {args.init}), median over "
                f"windows; observations median {int(np.median(n_obs))}; <= {args.max_iterations} LM iterations, "
                f"function tolerance {args.function_tolerance:g}", rows,
                ceres_ref="ceres DENSE_SCHUR" if "ceres DENSE_SCHUR" in labels else labels[0])
    if "ceres ITERATIVE_SCHUR" in labels:
        its_ref = float(np.median(rec["ceres ITERATIVE_SCHUR"]["time"]))
        its_cpu = float(np.median(rec["ceres ITERATIVE_SCHUR"]["cpu"]))
        print("median time / ceres ITERATIVE_SCHUR's (wall | CPU): " + ", ".join(
            f"{m} {np.median(rec[m]['time']) / its_ref:.2f} | {np.median(rec[m]['cpu']) / its_cpu:.2f}"
            for m in labels if not m.startswith("ceres ITERATIVE")))
    c64 = np.array(rec["cgnr fp64"]["cost"])
    print("\nshare of windows whose final cost is within 1e-6 relative of: cgnr fp64 | the window's minimum "
          "(fp64 Schur to a 1e-13 relative change, <= 20 its); 90th percentile time ms")
    print("(times: wall per window; cpu = process CPU time of the solve, less sensitive to a loaded machine)")
    for m in labels:
        c = np.array(rec[m]["cost"])
        a = np.mean(np.abs(c - c64) <= 1e-6 * c64)
        b = np.mean(np.abs(c - opt) <= 1e-6 * opt)
        print(f"  {m:22s} {a:7.1%}  {b:7.1%}  {np.percentile(rec[m]['time'], 90) * 1e3:8.1f}")
    if no_ceres:
        print(f"Ceres rows skipped: {no_ceres}")
    return 0
