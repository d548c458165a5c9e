"""Held-out agreement and timing of the BA small-problem loop (solvers/schur_ba_small.py, the default)
against the Python dense_schur loop (``small_problem_schur_columns=0``): generated BAL problems (the
bench's ``--generate 1e3,1e3,1e3,3e3,6e3 --seed 101``, 50 LM iterations, mixed and fp64) and synthetic
VO windows (``ba_options()``); each solve 7 times per path, interleaved, median wall ms. The table behind
docs/ba.md "The small-problem loop". Usage: ``flock /tmp/mpslam_bench.lock python dev/ba_small/heldout.py
[all|bal|win]``."""
import sys
import time

import numba
import numpy as np

from mpslam_ros.bench.ba import generated_problems, limit_blas_threads
from mpslam_ros.problems.ba import ba_options, solve_bal, solve_window
from mpslam_ros.problems.window_synth import make_window
from mpslam_ros.solvers.schur_ba import warmup

limit_blas_threads(1)
numba.set_num_threads(1)
warmup()
REPS = 7

def compare(label, run):
    """One table row: ``run(columns)`` solves with small_problem_schur_columns=columns (0: Python loop)."""
    res = {}
    times = {0: [], 200: []}
    for rep in range(REPS):
        for cols in (0, 200):
            t0 = time.perf_counter(); s = run(cols); times[cols].append(time.perf_counter() - t0)
            res[cols] = s
    a, b = res[0], res[200]
    rel = abs(a.final_cost - b.final_cost) / max(abs(a.final_cost), 1e-300)
    ta, tb = np.median(times[0]) * 1e3, np.median(times[200]) * 1e3
    print(f"| {label} | {b.small_problem_loop} | {a.final_cost:.10e} | {b.final_cost:.10e} | {rel:.1e} | "
          f"{a.iterations} / {b.iterations} | {ta:.2f} | {tb:.2f} | {tb / ta:.2f} |", flush=True)

print("| problem | small path | cost, Python loop | cost, small loop | rel. diff | LM it (Python / small) | ms Python (median) | ms small | small / Python |")
print("|---|---|---|---|---|---|---|---|---|")
what = sys.argv[1] if len(sys.argv) > 1 else "all"
if what in ("all", "bal"):
    probs = generated_problems("1e3,1e3,1e3,3e3,6e3", 101)
    for name, bal in probs:
        for prec in ("mixed", "fp64"):
            compare(f"{name} {bal.num_cameras} cams, {bal.num_observations} obs, {prec}",
                    lambda cols: solve_bal(bal, ba_options(max_iterations=50, precision=prec, small_problem_schur_columns=cols))[1])
if what in ("all", "win"):
    for kf, stereo in ((10, False), (20, False), (20, True), (30, True), (35, False), (50, False)):
        for seed in (7100, 7101, 7102):
            w = make_window(seed, num_keyframes=kf, stereo=stereo, init="vo")
            compare(f"window seed {seed}, {kf} kf {'stereo' if stereo else 'mono'}, {len(w.obs_cam)} obs",
                    lambda cols: solve_window(*w.solve_args(), options=ba_options(small_problem_schur_columns=cols))[2])
