"""``mpslam warmup``: compile every numba kernel once (they are cached on disk afterwards)."""

from __future__ import annotations

import argparse
import importlib
import time

HELP = "compile (or load from the on-disk cache) every numba kernel, so later runs start warm"

#: Modules whose import compiles their kernels or which expose ``warmup()``.
KERNEL_MODULES = [
    "mpslam_ros.geometry.lie",
    "mpslam_ros.solvers.kernels",
    "mpslam_ros.solvers.block_ldl",
    "mpslam_ros.problems.pgo",
    "mpslam_ros.problems.ba",
    "mpslam_ros.sim.render",
]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("-v", "--verbose", action="store_true", help="print the time per module")


def main(args: argparse.Namespace) -> int:
    for modname in KERNEL_MODULES:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name == modname:
                continue
            raise
        warm = getattr(module, "warmup", None)
        if warm is not None:
            warm()
        if args.verbose:
            print(f"{modname:32s} {time.perf_counter() - t0:7.2f} s")
    return 0
