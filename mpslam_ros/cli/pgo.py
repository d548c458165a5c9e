"""``mpslam pgo INPUT.g2o -o OUTPUT.g2o``: optimise a g2o pose graph and print the solver summary."""

from __future__ import annotations

import argparse
import json
import sys

from mpslam_ros.cli.device import add_device_argument, cuda_unavailable
from typing import Optional

import numpy as np

HELP = "optimise a g2o pose graph (SE3 or SE2) with the mixed-precision Levenberg-Marquardt solver"
DESCRIPTION = (
    "Optimise a g2o pose graph (VERTEX_SE3:QUAT/EDGE_SE3:QUAT or VERTEX_SE2/EDGE_SE2) and write the "
    "result in the same format. Costs are 0.5 * sum e^T Omega e with e the SE(3)/SE(2) log of the edge "
    "error (GTSAM's convention)."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="g2o file to optimise")
    parser.add_argument("-o", "--output", help="write the optimised graph here (same g2o format)")
    parser.add_argument("--precision", default="mixed", choices=["fp64", "fp32", "fp16", "mixed"],
                        help="precision preset: fp64 reference, fp32, naive fp16 (no scaling, every "
                             "operation rounded to fp16), or mixed (Cholesky factor stored in fp16, fp32 "
                             "Jacobian/CG/residuals, fp64 state) (default: %(default)s)")
    parser.add_argument("--init", default="auto", choices=["auto", "file", "odometry", "chordal"],
                        help="initial guess: the file's VERTEX lines, the odometry chain, a chordal relaxation, "
                             "or auto: whichever of file and chordal has the lower cost (default: %(default)s)")
    parser.add_argument("--linear-solver", default="cgnr", choices=["cgnr", "cholesky"],
                        help="matrix-free CGNR or the fp64 sparse direct baseline (default: %(default)s)")
    parser.add_argument("--preconditioner", default="ict", choices=["none", "block_jacobi", "ic0", "ict"],
                        help="CGNR preconditioner: block-Jacobi, static IC(0), or static threshold-dropped "
                             "Cholesky in minimum-degree order (default: %(default)s)")
    parser.add_argument("--max-iterations", type=int, default=100, help="LM iterations (default: %(default)s)")
    parser.add_argument("--robust", default=None, choices=["huber", "cauchy"],
                        help="robust loss on every edge (default: none)")
    parser.add_argument("--robust-scale", type=float, default=1.0,
                        help="robust loss scale in whitened units (default: %(default)s)")
    parser.add_argument("--strict-information", action="store_true",
                        help="refuse information matrices that are not positive definite (default: project "
                             "them to the nearest positive-definite matrix, counted and warned)")
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the text summary")
    parser.add_argument("-v", "--verbose", action="store_true", help="print one line per LM iteration")


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.io.g2o import G2OFormatError, read_g2o, write_g2o
    from mpslam_ros.problems.initialization import choose_initial_guess
    from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
    from mpslam_ros.solvers.lm import SolverOptions, solve

    if args.device == "cuda" and cuda_unavailable():
        print(f"error: --device cuda: {cuda_unavailable()}", file=sys.stderr)
        return 2
    try:
        graph = read_g2o(args.input, info_policy="strict" if args.strict_information else "project")
    except G2OFormatError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        guess = choose_initial_guess(graph, args.init)
        poses0, init = guess.poses, guess.method
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    fixed = graph.fixed if len(graph.fixed) else np.array([0])
    problem = PoseGraphProblem(graph.kind, poses0, graph.edge_i, graph.edge_j, graph.measurements,
                               graph.information, fixed=fixed)
    options = SolverOptions(precision=args.precision, linear_solver=args.linear_solver,
                            preconditioner=args.preconditioner, max_iterations=args.max_iterations,
                            robust_loss=args.robust, robust_scale=args.robust_scale,
                            verbose=args.verbose and not args.json, device=args.device)
    summary = solve(problem, pgo_options(options))
    if args.output:
        write_g2o(args.output, graph, problem.poses)
    if args.json:
        out = dict(input=args.input, output=args.output, kind=graph.kind, init=init, poses=graph.num_poses,
                   edges=graph.num_edges, projected_information=len(graph.projected_edges),
                   init_costs=guess.costs)
        out.update(summary.to_dict())
        print(json.dumps(out))
    else:
        print(f"{args.input}: {graph.kind.upper()} graph, {graph.num_poses} poses, {graph.num_edges} edges, "
              f"init {guess.describe()}")
        if len(graph.projected_edges):
            print(f"information: {len(graph.projected_edges)} non-positive-definite matrices projected to the "
                  f"nearest positive-definite one (first at line {graph.edge_lines[graph.projected_edges[0]]}; "
                  f"--strict-information refuses them)")
        print(summary.report())
        if args.output:
            print(f"wrote {args.output}")
    return 0 if _finite(summary.final_cost) else 1


def _finite(x: Optional[float]) -> bool:
    return x is not None and bool(np.isfinite(x))
