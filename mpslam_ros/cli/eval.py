"""``mpslam eval``: ATE and RPE of estimated trajectories against ground truth (evo-compatible)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = "ATE/RPE of trajectories (TUM, KITTI, EuRoC CSV) against ground truth, evo-compatible; PNG plots"
DESCRIPTION = (
    "Compare one or more estimated trajectories with a ground truth. Files are TUM "
    "('t x y z qx qy qz qw'), KITTI (12 numbers per line, no stamps: matched by index) or EuRoC CSV; "
    "the format is detected from the content. Poses are associated by nearest timestamp within "
    "--max-dt, the estimate aligned with Umeyama (--align), then ATE (position error) and RPE "
    "(relative translation error over --rpe-delta) are reported exactly as evo_ape/evo_rpe report them."
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("gt", help="ground-truth trajectory file")
    parser.add_argument("est", nargs="+", help="estimated trajectory file(s)")
    parser.add_argument("--align", choices=("se3", "sim3", "none"), default="se3",
                        help="alignment of the estimate before ATE: se3 (rotation+translation, default), "
                             "sim3 (also scale, for monocular), none")
    parser.add_argument("--rpe-delta", type=float, default=1,
                        help="RPE pair distance in --rpe-unit (default 1 frame)")
    parser.add_argument("--rpe-unit", choices=("frames", "m"), default="frames",
                        help="unit of --rpe-delta: frames (default) or metres of travelled path")
    parser.add_argument("--all-pairs", action="store_true",
                        help="RPE over all pairs delta apart (default: consecutive pairs, like evo)")
    parser.add_argument("--max-dt", type=float, default=0.01,
                        help="max. timestamp difference (s) for associating poses (default 0.01, like evo)")
    parser.add_argument("--format", choices=("tum", "kitti", "euroc"), default=None,
                        help="force the file format of all files (default: detect)")
    parser.add_argument("--plot", metavar="DIR", default=None,
                        help="write trajectories.png, ate_over_time.png, rpe_over_time.png, ate_cdf.png to DIR")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of tables")


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.evaluation.metrics import EvaluationError, ate, format_table, rpe
    from mpslam_ros.io.errors import DataError
    from mpslam_ros.io.trajectory_io import read_trajectory

    try:
        gt = read_trajectory(args.gt, args.format)
        ests = {}
        for p in args.est:
            name = Path(p).stem
            while name in ests:
                name += "'"
            ests[name] = read_trajectory(p, args.format)
    except (DataError, ValueError) as exc:
        print(f"mpslam eval: {exc}")
        return 2
    ate_res, rpe_res = {}, {}
    try:
        for name, est in ests.items():
            ate_res[name] = ate(gt, est, align=args.align, max_dt=args.max_dt)
            rpe_res[name] = rpe(gt, est, delta=args.rpe_delta, unit=args.rpe_unit, max_dt=args.max_dt,
                                all_pairs=args.all_pairs)
    except (EvaluationError, ValueError) as exc:
        print(f"mpslam eval: {name}: {exc}")
        return 2
    if args.json:
        print(json.dumps({name: {"ate": ate_res[name].to_dict(), "rpe": rpe_res[name].to_dict()} for name in ests},
                         indent=2))
    else:
        first = next(iter(ate_res.values()))
        print(f"ATE (m), {args.align} alignment, {first.num_matched} matched poses"
              + (f", scale {first.scale:.6f}" if args.align == "sim3" else ""))
        print(format_table(ate_res))
        print(f"\nRPE translation (m), delta {args.rpe_delta:g} {args.rpe_unit}"
              + (", all pairs" if args.all_pairs else ""))
        print(format_table(rpe_res))
        print("\nrotation (deg): " + ", ".join(
            f"{n}: ATE rmse {a.rot_rmse_deg:.4f}, RPE rmse {rpe_res[n].rot_rmse_deg:.4f}" for n, a in ate_res.items()))
    if args.plot:
        from mpslam_ros.evaluation.plots import plot_error_cdf, plot_errors, plot_trajectories

        out = Path(args.plot)
        out.mkdir(parents=True, exist_ok=True)
        plot_trajectories(out / "trajectories.png", gt, ests, align=args.align, max_dt=args.max_dt)
        plot_errors(out / "ate_over_time.png", ate_res)
        plot_errors(out / "rpe_over_time.png", rpe_res)
        plot_error_cdf(out / "ate_cdf.png", {n: r.errors for n, r in ate_res.items()}, title="ATE distribution")
        if not args.json:
            print(f"plots in {out}/")
    return 0
