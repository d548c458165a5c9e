"""``mpslam warmup``: compile every numba kernel the nodes run (cached on disk afterwards).

Runs each kernel module's ``warmup()`` and then the real pipeline briefly (visual odometry on a few
synthetic frames, loop closure with a forced loop and pose-graph solves) in every precision and VO
mode: see :mod:`mpslam_ros.warmup`. dev.sh runs it once, so the nodes' own start-up warm-up only
loads kernels from the disk cache.
"""

from __future__ import annotations

import argparse

from mpslam_ros.warmup import KERNEL_MODULES, MODES, PRECISIONS  # noqa: F401  (KERNEL_MODULES: earlier API)

HELP = "compile (or load from the on-disk cache) every numba kernel the nodes run, so later runs start warm"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--precision", nargs="+", choices=PRECISIONS, default=list(PRECISIONS),
                        help="precisions to warm (default: all four)")
    parser.add_argument("--mode", nargs="+", choices=MODES, default=list(MODES),
                        help="VO input modes to warm (default: stereo and rgbd)")
    parser.add_argument("--force", action="store_true",
                        help="run even if a previous warm-up of these sources completed (see mpslam_ros.warmup.warm_stamp)")
    parser.add_argument("--check", action="store_true",
                        help="only say whether the kernels are warm: exit status 0 if so, 1 if a warm-up is needed")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="print only the final summary, not a line as each stage starts and ends "
                             "(from an empty cache a stage compiles for minutes)")
    parser.add_argument("-v", "--verbose", action="store_true", help=argparse.SUPPRESS)  # the default now


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.warmup import is_warm, mark_warm, warm_pipeline

    if args.check:
        warm = is_warm(args.precision, args.mode)
        print("kernels warm" if warm else "kernels not warm: `mpslam warmup` compiles them (minutes, once)")
        return 0 if warm else 1
    if not args.force and is_warm(args.precision, args.mode):
        print("kernels already warm (a warm-up of these sources completed; --force runs it again)")
        return 0
    report = warm_pipeline(args.precision, args.mode, modules=KERNEL_MODULES,
                           log=None if args.quiet else (lambda m: print(m, flush=True)))
    print(report.summary())
    mark_warm(args.precision, args.mode)
    return 0
