"""``mpslam study KIND``: studies that reproduce the project's claims with plots and tables.

``precision``: PGO at every loop along a synthetic trajectory (fp32 vs mixed) and VO windows
(fp64, fp16, mixed): cumulative ATE histograms and solve time vs problem size (PNG) plus a table.
``latency``: pose-graph solve latency vs graph size (the loop-closure back end), as a table.
"""

from __future__ import annotations

import argparse
import importlib

HELP = "studies with plots and tables: precision (fp32/fp16/mixed vs fp64), latency (PGO vs graph size)"

KINDS = {
    "precision": "mpslam_ros.bench.study_precision",
    "latency": "mpslam_ros.bench.study_latency",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="study", metavar="KIND", required=True)
    for name, modname in KINDS.items():
        module = importlib.import_module(modname)
        p = sub.add_parser(name, help=module.HELP, description=(module.__doc__ or module.HELP),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        module.add_arguments(p)
        p.set_defaults(_study_main=module.main)


def main(args: argparse.Namespace) -> int:
    return int(args._study_main(args) or 0)
