"""``mpslam ba INPUT -o OUTPUT``: solve a BAL bundle-adjustment problem and write the result."""

from __future__ import annotations

import argparse
import json
import sys

from mpslam_ros.cli.device import add_device_argument, cuda_unavailable

HELP = "bundle-adjust a BAL problem (.txt/.bz2) and write the optimised problem in BAL format"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", help="BAL problem file (.txt, .txt.bz2)")
    parser.add_argument("-o", "--output", help="where to write the optimised problem (BAL format; .bz2 compresses)")
    parser.add_argument("--precision", default="mixed", choices=["fp64", "fp32", "fp16", "mixed"],
                        help="precision preset of the CGNR solve (default: mixed); ignored with --solver schur")
    parser.add_argument("--solver", default="auto", choices=["auto", "dense_schur", "iterative_schur", "cgnr", "schur"],
                        help="auto (default): dense_schur up to 1,000 camera columns, else iterative_schur; "
                             "dense_schur: reduced camera system + fp64 dense Cholesky; iterative_schur: "
                             "matrix-free Schur-Jacobi CG on the reduced camera system (both with BA's tuned "
                             "options, problems.ba.ba_options); cgnr: full-J CGNR on the shared LM; schur: the "
                             "fp64 Schur reference")
    parser.add_argument("--max-iterations", type=int, default=50, help="LM iterations (default 50)")
    parser.add_argument("--loss", choices=["huber", "cauchy"], default=None, help="robust loss (default none)")
    parser.add_argument("--loss-scale", type=float, default=1.0, help="robust loss scale in pixels (default 1)")
    add_device_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON summary instead of the text report")
    parser.add_argument("-v", "--verbose", action="store_true", help="print one line per LM iteration")


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.io.bal import BALFormatError, read_bal, write_bal
    from mpslam_ros.problems.ba import ba_options, solve_bal
    from mpslam_ros.solvers.lm import SolverOptions

    if args.device == "cuda" and cuda_unavailable():
        print(f"error: --device cuda: {cuda_unavailable()}", file=sys.stderr)
        return 2
    if args.device == "cuda" and args.solver in ("dense_schur", "iterative_schur", "schur"):
        print(f"error: --device cuda: --solver {args.solver} runs on the CPU only (the CUDA backend has the CGNR "
              "kernels): use --solver cgnr or auto", file=sys.stderr)
        return 2
    try:
        bal = read_bal(args.input)
    except (BALFormatError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    common = dict(precision=args.precision, linear_solver=args.solver, max_iterations=args.max_iterations,
                  robust_loss=args.loss, robust_scale=args.loss_scale, verbose=args.verbose, device=args.device)
    if args.solver in ("cgnr", "schur"):
        options = SolverOptions(preconditioner="block_jacobi", **common)
    else:
        options = ba_options(**common)
    out, summary = solve_bal(bal, options)
    if args.output:
        write_bal(args.output, out)
    if args.json:
        d = summary.to_dict() if hasattr(summary, "to_dict") else dict(vars(summary))
        d.update(cameras=bal.num_cameras, points=bal.num_points, observations=bal.num_observations)
        print(json.dumps(d, indent=2, default=str))
    else:
        print(f"{args.input}: {bal.num_cameras} cameras, {bal.num_points} points, {bal.num_observations} observations")
        print(summary.report() if hasattr(summary, "report") else summary)
    return 0
