"""The ``--device`` option shared by ``mpslam ba``, ``mpslam pgo`` and ``mpslam bench {window,ba,pgo,kernels}``
(not a subcommand: a helper of those that have the option)."""

from __future__ import annotations

import argparse
from typing import Optional

from mpslam_ros.solvers.cuda import DEVICES


def add_device_argument(parser: argparse.ArgumentParser, bench: bool = False) -> None:
    if bench:
        parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                            help="cuda: also run the CGNR rows with the CG iterations on a CUDA GPU (numba-cuda), "
                                 "beside the CPU rows; on a machine without one a 'no CUDA device' line says why and "
                                 "only the CPU rows run (under NUMBA_ENABLE_CUDASIM=1 the rows run on numba's "
                                 "simulator: correct, but the times mean nothing) (default: %(default)s)")
    else:
        parser.add_argument("--device", choices=list(DEVICES), default="cpu",
                            help="where the CG iterations run: cpu; cuda (a CUDA GPU through numba-cuda: an error "
                                 "when there is none); auto (the GPU when present and the problem is large enough, "
                                 "else the CPU; the summary's 'device' row says which ran) (default: %(default)s)")


def cuda_unavailable() -> Optional[str]:
    """None when ``device="cuda"`` solves can run here (a GPU, or the simulator), else the reason."""
    from mpslam_ros.solvers.cuda import cuda_status

    kind, why = cuda_status()
    return None if kind is not None else why


def cuda_rows_wanted(device: str) -> bool:
    """For benchmarks: whether to add CUDA rows; prints the 'no CUDA device' line when they cannot run."""
    if device != "cuda":
        return False
    why = cuda_unavailable()
    if why is not None:
        print((why if why.startswith("no CUDA device") else f"no CUDA device ({why})") + "; the cuda rows are skipped")
        return False
    from mpslam_ros.solvers.cuda import cuda_status

    kind, note = cuda_status()
    print(f"cuda rows run on: {note}")
    return True
