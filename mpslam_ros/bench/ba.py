"""``mpslam bench ba [FILES...]``: every precision mode + the fp64 Schur reference on BAL files."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

HELP = "BA on BAL files: fp64/fp32/fp16/mixed CGNR vs the fp64 Schur reference (table)"
DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "ba"

#: (row label, SolverOptions keyword arguments)
MODES = [
    ("schur fp64", dict(linear_solver="schur")),
    ("cgnr fp64", dict(precision="fp64")),
    ("cgnr fp32", dict(precision="fp32")),
    ("cgnr fp16 naive", dict(precision="fp16")),
    ("cgnr mixed", dict(precision="mixed")),
]


def solver_options(mode_kw: dict, max_iterations: int, **extra):
    from mpslam_ros.solvers.lm import SolverOptions

    kw = dict(preconditioner="block_jacobi", max_iterations=max_iterations)
    kw.update(mode_kw)
    kw.update(extra)
    return SolverOptions(**kw)


def print_table(title: str, rows: list) -> None:
    """rows: dicts with mode, final_cost, time_s, iterations, cg_iterations, jp_share."""
    best = min(r["final_cost"] for r in rows if np.isfinite(r["final_cost"]))
    ref = next((r["time_s"] for r in rows if r["mode"].startswith("schur")), float("nan"))
    print(f"\n{title}")
    print(f"{'mode':16s} {'final cost':>14s} {'cost/best':>10s} {'time ms':>9s} {'t/schur':>8s} "
          f"{'LM it':>6s} {'CG it':>7s} {'J-prod share':>12s}")
    for r in rows:
        print(f"{r['mode']:16s} {r['final_cost']:14.6e} {r['final_cost'] / best:10.6f} {r['time_s'] * 1e3:9.1f} "
              f"{r['time_s'] / ref:8.2f} {r['iterations']:6d} {r['cg_iterations']:7d} {r['jp_share']:12.0%}")


def row_from(mode: str, s, dt: float) -> dict:
    lin = getattr(s, "linear_solve_time_s", 0.0)
    jp = getattr(s, "jacobian_product_time_s", 0.0)
    return dict(mode=mode, final_cost=s.final_cost, time_s=dt, iterations=s.iterations,
                cg_iterations=s.cg_iterations, jp_share=(jp / lin) if lin > 0 else 0.0)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help=f"BAL files (default: every file in {DEFAULT_DIR})")
    parser.add_argument("--max-iterations", type=int, default=50, help="LM iterations per solve (default 50)")


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.io.bal import read_bal
    from mpslam_ros.problems.ba import solve_bal, warmup

    files = [Path(f) for f in args.files] or sorted(DEFAULT_DIR.glob("*.txt*"))
    warmup()
    for f in files:
        bal = read_bal(f)
        rows = []
        for mode, kw in MODES:
            t0 = time.perf_counter()
            _, s = solve_bal(bal, solver_options(kw, args.max_iterations))
            rows.append(row_from(mode, s, time.perf_counter() - t0))
        print_table(f"{f.name}: {bal.num_cameras} cameras, {bal.num_points} points, "
                    f"{bal.num_observations} observations", rows)
    print("\nJ-prod share = time share of the CGNR linear solve spent in J p / J^T q products "
          "(a time share, not a flop count). Ceres columns: not implemented.")
    return 0
