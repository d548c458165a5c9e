"""``mpslam bench pgo``: every precision mode against GTSAM's Levenberg-Marquardt, side by side.

For each g2o file: build the initial guess once (``--init``), solve it with each precision preset and
with GTSAM's default LM (sparse Cholesky, its default ordering) from that same guess, in the same
process, and score every final estimate with the same function
(:func:`mpslam_ros.problems.pgo.pose_graph_cost`, GTSAM's ``0.5 * sum e^T Omega e`` convention).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import List, Optional

import numpy as np

from mpslam_ros.cli.device import add_device_argument, cuda_rows_wanted
from mpslam_ros.io.g2o import G2OGraph, read_g2o
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options, pose_graph_cost
from mpslam_ros.solvers.lm import SolverOptions, solve
from mpslam_ros.solvers.precision import PRECISIONS

HELP = "pose-graph optimisation: each precision mode vs GTSAM LM on g2o files (table)"
DESCRIPTION = __doc__

DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pgo"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*",
                        help=f"g2o files, or generated graphs named synth:KIND:POSES:SEED[:key=value...] "
                             f"(mpslam_ros.problems.graph_synth; e.g. synth:se2:1000:0) (default: every *.g2o in "
                             f"{DEFAULT_DIR})")
    parser.add_argument("--modes", default=",".join(PRECISIONS),
                        help="comma-separated precision modes to run (default: %(default)s)")
    parser.add_argument("--init", default="chordal", choices=["auto", "file", "odometry", "chordal"],
                        help="initial guess for every solver; 'file' falls back to chordal for edge-only files; "
                             "'auto' the lower-cost of file and chordal (default: %(default)s)")
    parser.add_argument("--preconditioner", default="ict", choices=["none", "block_jacobi", "ic0", "ict"],
                        help="CGNR preconditioner for our solver (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="run each solver this many times and report the median run (default: %(default)s)")
    parser.add_argument("--no-gtsam", action="store_true", help="skip the GTSAM reference")
    parser.add_argument("--gtsam-defaults", action="store_true",
                        help="GTSAM with its own stopping rule (relative and absolute error tolerance 1e-5) "
                             "instead of ours (relative cost decrease 1e-6; GTSAM's absolute 1e-5 kept)")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON to PATH")
    add_device_argument(parser, bench=True)


def gtsam_graph(graph: G2OGraph, poses: np.ndarray):
    """GTSAM factor graph (BetweenFactors + a tight prior fixing pose 0) and Values for ``poses``."""
    import gtsam

    fg = gtsam.NonlinearFactorGraph()
    values = gtsam.Values()
    if graph.kind == "se3":
        between, pose, prior, dim = gtsam.BetweenFactorPose3, gtsam.Pose3, gtsam.PriorFactorPose3, 6
        to_pose = pose
        insert = values.insert
    else:
        between, pose, prior, dim = gtsam.BetweenFactorPose2, gtsam.Pose2, gtsam.PriorFactorPose2, 3

        def to_pose(T):
            return gtsam.Pose2(T[0, 2], T[1, 2], float(np.arctan2(T[1, 0], T[0, 0])))
        insert = values.insert
    for i, j, Z, info in zip(graph.edge_i, graph.edge_j, graph.measurements, graph.information):
        fg.add(between(int(i), int(j), to_pose(Z), gtsam.noiseModel.Gaussian.Information(info)))
    fg.add(prior(0, to_pose(poses[0]), gtsam.noiseModel.Isotropic.Sigma(dim, 1e-6)))
    for k, T in enumerate(poses):
        insert(k, to_pose(T))
    return fg, values


def gtsam_poses(graph: G2OGraph, values) -> np.ndarray:
    n = graph.num_poses
    if graph.kind == "se3":
        return np.stack([values.atPose3(k).matrix() for k in range(n)])
    return np.stack([values.atPose2(k).matrix() for k in range(n)])


def run_gtsam(graph: G2OGraph, poses0: np.ndarray, same_stopping_rule: bool = True) -> dict:
    """GTSAM's LM (sparse Cholesky, COLAMD ordering). ``same_stopping_rule``: stop, like ours, when a step
    lowers the error by less than ``SolverOptions().function_tolerance`` (1e-6) relative (GTSAM's default
    relative tolerance is 1e-5: it stops earlier, at a higher cost; generated 10,000-pose SE(3) graph:
    6 iterations at 472.8897 instead of 8 at 472.8886). GTSAM's absolute tolerance (1e-5) stays: without
    it GTSAM iterates on trees whose optimum is 0 (cost 1e-17 -> 1e-21), where ours stops on its gradient."""
    import gtsam

    fg, values = gtsam_graph(graph, poses0)
    params = gtsam.LevenbergMarquardtParams()
    if same_stopping_rule:
        params.setRelativeErrorTol(SolverOptions().function_tolerance)
    t0 = time.perf_counter()
    opt = gtsam.LevenbergMarquardtOptimizer(fg, values, params)
    result = opt.optimize()
    elapsed = time.perf_counter() - t0
    poses = gtsam_poses(graph, result)
    return dict(time_s=elapsed, iterations=int(opt.iterations()), poses=poses, gtsam_error=float(fg.error(result)))


def load_graph(source) -> G2OGraph:
    """A g2o file (path) or a generated graph (``synth:...`` spec, :mod:`mpslam_ros.problems.graph_synth`)."""
    if str(source).startswith("synth:"):
        from mpslam_ros.problems.graph_synth import graph_from_spec

        return graph_from_spec(str(source)).graph
    return read_g2o(source)


def run_ours(graph: G2OGraph, poses0: np.ndarray, mode: str, preconditioner: str = "ict", device: str = "cpu",
             **options) -> dict:
    """One solve from ``poses0`` with the pose-graph options; ``options``: more SolverOptions fields."""
    problem = PoseGraphProblem(graph.kind, poses0, graph.edge_i, graph.edge_j, graph.measurements,
                               graph.information, fixed=np.array([0]))
    summary = solve(problem, pgo_options(SolverOptions(precision=mode, preconditioner=preconditioner, device=device,
                                                       **options)))
    return dict(time_s=summary.time_s, iterations=summary.iterations, poses=problem.poses.copy(),
                summary=summary)


def _median_run(runs: List[dict]) -> dict:
    """The run with the median time (the upper one of an even count): on a shared machine the fastest
    run flatters whichever solver happened to meet a quiet moment."""
    return sorted(runs, key=lambda r: r["time_s"])[len(runs) // 2]


def _fmt_row(cells, widths):
    return "  ".join(str(c).rjust(w) if i else str(c).ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))


def bench_file(path: Path, modes: List[str], init: str, preconditioner: str, repeat: int,
               with_gtsam: bool, devices=("cpu",), gtsam_defaults: bool = False) -> List[dict]:
    """Rows of one graph: each mode on each device (mode label "MODE cuda" for device rows), then GTSAM."""
    graph = load_graph(path)
    if init == "file" and not graph.has_vertices:
        init = "chordal"
    from mpslam_ros.problems.initialization import choose_initial_guess

    guess = choose_initial_guess(graph, init)
    poses0, init = guess.poses, guess.method

    def score(poses):
        return pose_graph_cost(graph.kind, poses, graph.edge_i, graph.edge_j, graph.measurements, graph.information)

    rows = []
    base = dict(dataset=path.stem if not str(path).startswith("synth:") else str(path), poses=graph.num_poses, edges=graph.num_edges, init=init,
                initial_cost=score(poses0))
    ref = None
    if with_gtsam:
        runs = [run_gtsam(graph, poses0, not gtsam_defaults) for _ in range(repeat)]
        ref = _median_run(runs)
        ref["cost"] = score(ref["poses"])
    for mode, device in [(m, d) for d in devices for m in modes if d == "cpu" or m != "fp16"]:
        runs = [run_ours(graph, poses0, mode, preconditioner, device) for _ in range(repeat)]
        best = _median_run(runs)
        s = best["summary"]
        cost = score(best["poses"])
        rows.append(dict(base, mode=mode if device == "cpu" else f"{mode} {device}", device=s.device, final_cost=cost,
                         iterations=s.iterations, cg_iterations=s.cg_iterations,
                         time_s=s.time_s, time_per_iteration_s=s.time_s / max(s.iterations, 1),
                         triangular_solve_time_s=s.triangular_solve_time_s,
                         linear_solve_time_s=s.linear_solve_time_s,
                         preconditioner_bytes=s.preconditioner_bytes, jacobian_bytes=s.jacobian_bytes,
                         fp16_fallbacks=s.fp16_fallbacks, factor_widened_at=s.factor_widened_at,
                         factor_widened_to_fp64_at=s.factor_widened_to_fp64_at,
                         linear_path=_linear_path(s), termination=s.termination,
                         cost_ratio=cost / ref["cost"] if ref else float("nan"),
                         time_ratio=s.time_s / ref["time_s"] if ref else float("nan")))
    if ref:
        rows.append(dict(base, mode="gtsam", device="cpu", final_cost=ref["cost"], iterations=ref["iterations"],
                         cg_iterations=0,
                         time_s=ref["time_s"], time_per_iteration_s=ref["time_s"] / max(ref["iterations"], 1),
                         triangular_solve_time_s=0.0, linear_solve_time_s=float("nan"),
                         preconditioner_bytes=0, jacobian_bytes=0, fp16_fallbacks=0, factor_widened_at=-1,
                         factor_widened_to_fp64_at=-1,
                         linear_path="cholesky", termination="gtsam",
                         cost_ratio=1.0, time_ratio=1.0))
    return rows


def _linear_path(s) -> str:
    """How the steps were solved: "direct" (small problem: fp64 factor, no CG), "cg", "cg w" (the fp16
    factor was widened to fp32) or "cg w64" (and then to fp64 with no shift)."""
    if s.small_problem_direct:
        return "direct"
    if s.factor_widened_to_fp64_at >= 0:
        return "cg w64"
    return "cg w" if s.factor_widened_at >= 0 else "cg"


def print_table(rows: List[dict]) -> None:
    head = ["dataset", "poses", "edges", "mode", "final cost", "cost/GTSAM", "time s", "time/GTSAM", "iters",
            "s/iter", "CG iters", "steps by", "tri-solve s", "precond bytes", "J bytes", "fallbacks"]
    body = []
    for r in rows:
        body.append([r["dataset"], r["poses"], r["edges"], r["mode"], f"{r['final_cost']:.6e}",
                     f"{r['cost_ratio']:.6f}", f"{r['time_s']:.3f}", f"{r['time_ratio']:.2f}", r["iterations"],
                     f"{r['time_per_iteration_s']:.4f}", r["cg_iterations"], r["linear_path"],
                     f"{r['triangular_solve_time_s']:.3f}",
                     r["preconditioner_bytes"], r["jacobian_bytes"], r["fp16_fallbacks"]])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    print(_fmt_row(head, widths))
    print("  ".join("-" * w for w in widths))
    last = None
    for r, b in zip(rows, body):
        if last is not None and r["dataset"] != last:
            print()
        last = r["dataset"]
        print(_fmt_row(b, widths))


def main(args: argparse.Namespace) -> int:
    files = [f if f.startswith("synth:") else Path(f) for f in args.files] or sorted(DEFAULT_DIR.glob("*.g2o"))
    if not files:
        print(f"no g2o files given and none found in {DEFAULT_DIR}")
        return 2
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    for m in modes:
        if m not in PRECISIONS:
            print(f"unknown mode {m!r}; choose from {', '.join(PRECISIONS)}")
            return 2
    from mpslam_ros.problems import pgo

    devices = ("cpu", "cuda") if cuda_rows_wanted(args.device) else ("cpu",)
    pgo.warmup()  # compile outside the timed region
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        def tqdm(x, **kw):
            return x
    rows: List[dict] = []
    for f in tqdm(files, desc="pose graphs", unit="graph"):
        rows.extend(bench_file(f, modes, args.init, args.preconditioner, args.repeat, not args.no_gtsam, devices,
                               args.gtsam_defaults))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0
