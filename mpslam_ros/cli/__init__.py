"""The ``mpslam`` command line: one entry point, one module per subcommand.

Each subcommand lives in ``mpslam_ros/cli/<name>.py`` and defines ``HELP`` (one line),
``add_arguments(parser)`` and ``main(args) -> int``. Modules are imported lazily so that
``mpslam --help`` stays fast and a subcommand's heavy imports (numba, OpenCV, rclpy) load only
when it runs.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Optional, Sequence

#: Subcommand name -> module, in the order ``mpslam --help`` lists them.
SUBCOMMANDS = {
    "demo": "mpslam_ros.cli.demo",
    "run": "mpslam_ros.cli.run",
    "pgo": "mpslam_ros.cli.pgo",
    "ba": "mpslam_ros.cli.ba",
    "synth": "mpslam_ros.cli.synth",
    "eval": "mpslam_ros.cli.eval",
    "play": "mpslam_ros.cli.play",
    "study": "mpslam_ros.cli.study",
    "bench": "mpslam_ros.cli.bench",
    "vocab": "mpslam_ros.cli.vocab",
    "warmup": "mpslam_ros.cli.warmup",
}


def _available() -> dict:
    """Import each subcommand module; those not written yet are left out of the listing."""
    found = {}
    for name, modname in SUBCOMMANDS.items():
        try:
            found[name] = importlib.import_module(modname)
        except ModuleNotFoundError as exc:
            if exc.name != modname:  # a real missing dependency inside the module: surface it
                raise
    return found


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mpslam",
        description="Mixed-precision visual SLAM: solvers, datasets, evaluation and the ROS 2 demo.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, module in _available().items():
        p = sub.add_parser(name, help=module.HELP, description=getattr(module, "DESCRIPTION", module.HELP))
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_main", None):
        parser.print_help()
        return 2
    try:
        return int(args._main(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
