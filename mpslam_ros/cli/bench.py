"""``mpslam bench KIND``: benchmarks that print comparison tables.

Each kind lives in ``mpslam_ros/bench/<kind>.py`` with ``HELP``, ``add_arguments`` and ``main``.
"""

from __future__ import annotations

import argparse
import importlib
import sys

HELP = ("benchmarks that print tables: pgo (pose graphs), window (VO windows), ba (BAL files), kernels, "
        "breaks (SLAM across stalls, blackouts and kidnaps), places (place recognition on real images), "
        "robustness (scenes x camera profiles x seeds)")

KINDS = {
    "pgo": "mpslam_ros.bench.pgo",
    "window": "mpslam_ros.bench.window",
    "ba": "mpslam_ros.bench.ba",
    "kernels": "mpslam_ros.bench.kernels",
    "breaks": "mpslam_ros.bench.breaks",
    "places": "mpslam_ros.bench.places",
    "robustness": "mpslam_ros.bench.robustness",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="kind", metavar="KIND", required=True)
    for name, modname in KINDS.items():
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:
                raise
            continue
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_bench_main=module.main)


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.io.bal import BALFormatError
    from mpslam_ros.io.errors import DataError
    from mpslam_ros.io.g2o import G2OFormatError

    try:
        return int(args._bench_main(args) or 0)
    except (G2OFormatError, BALFormatError, DataError) as exc:  # a bad input file: say which, no traceback
        print(f"error: {exc}", file=sys.stderr)
        return 2
