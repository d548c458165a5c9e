"""dubrovnik-3-7 in one process: the BA small-problem loop (default) vs the Python dense_schur loop
(``small_problem_schur_columns=0``) vs Ceres SPARSE_SCHUR, interleaved, 8 repeats, median wall ms of the
last 7 (the bench's options: mixed, 50 iterations, function tolerance 1e-6, one thread). Usage:
``flock /tmp/mpslam_bench.lock python dev/ba_small/dubrovnik_before_after.py``."""
import time

import numba
import numpy as np

from mpslam_ros.bench.ba import DEFAULT_DIR, ceres_bal, limit_blas_threads, solver_options
from mpslam_ros.io.bal import read_bal
from mpslam_ros.problems.ba import solve_bal
from mpslam_ros.solvers.schur_ba import warmup

limit_blas_threads(1)
numba.set_num_threads(1)
warmup()
bal = read_bal(DEFAULT_DIR / "dubrovnik-3-7-pre.txt")  # ../shared/data/ba beside the repository
rows = {"dense_schur mixed, small loop (default)": {}, "dense_schur mixed, Python loop (before)": dict(small_problem_schur_columns=0)}
T = {k: [] for k in list(rows) + ["ceres SPARSE_SCHUR"]}
C = {}
for rep in range(8):
    for k, extra in rows.items():
        t0 = time.perf_counter(); _, s = solve_bal(bal, solver_options({"precision": "mixed"}, 50, function_tolerance=1e-6, **extra))
        T[k].append(time.perf_counter() - t0); C[k] = (s.final_cost, s.iterations)
    cost, its, dt, cpu = ceres_bal(bal, "SPARSE_SCHUR", 50, 1e-6, 1)
    T["ceres SPARSE_SCHUR"].append(dt); C["ceres SPARSE_SCHUR"] = (cost, its)
sp = np.median(T["ceres SPARSE_SCHUR"][1:])
for k, v in T.items():
    m = np.median(v[1:])
    print(f"| {k} | {C[k][0]:.6e} | {C[k][1]} | {m*1e3:.2f} | {m/sp:.2f} |")
