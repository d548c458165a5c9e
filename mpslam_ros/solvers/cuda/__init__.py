"""CUDA backend of the CGNR solver (numba-cuda): device selection and availability.

``SolverOptions.device`` picks where the CG iterations of a solve run: ``"cpu"`` (the numba CPU kernels),
``"cuda"`` (:mod:`mpslam_ros.solvers.cuda.cgnr` on a GPU, or on numba's CUDA simulator when
``NUMBA_ENABLE_CUDASIM=1`` was set before numba was imported: correctness only, very slow) or ``"auto"``
(a real GPU, only when one is present and the problem is large enough to pay for the transfers; the
simulator is never chosen by "auto"). Nothing here imports ``numba.cuda`` until a CUDA device is asked
for, so the CPU path pays nothing for the backend.
"""

from __future__ import annotations

import os
from typing import Optional, Tuple

DEVICES = ("cpu", "cuda", "auto")

#: "auto" uses the GPU from this many stored Jacobian values (K residual blocks x rows x columns) up.
#: A guess, not a measurement: no GPU was available when the backend was written (docs/cuda.md).
AUTO_MIN_JACOBIAN_VALUES = 200_000

_STATUS: list = []


def simulator_requested() -> bool:
    """NUMBA_ENABLE_CUDASIM is set (it must be, before numba is first imported, to take effect)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") not in ("", "0")


def cuda_status() -> Tuple[Optional[str], str]:
    """``("gpu" | "simulator" | None, explanation)``: what a ``device="cuda"`` solve would run on.

    Imports ``numba.cuda`` on first call (cached). ``None`` comes with the reason, e.g. numba-cuda missing
    or no CUDA driver / GPU.
    """
    if _STATUS:
        return _STATUS[0]
    try:
        from numba import config as nb_config
        from numba import cuda
    except Exception as exc:  # noqa: BLE001 - any import failure means "no CUDA"
        result = (None, f"numba.cuda cannot be imported ({exc}); install the extra: pip install 'mpslam_ros[cuda]'")
    else:
        if getattr(nb_config, "ENABLE_CUDASIM", 0):
            result = ("simulator", "numba CUDA simulator (NUMBA_ENABLE_CUDASIM=1): correct results, no GPU speed")
        else:
            try:
                ok = bool(cuda.is_available())
            except Exception as exc:  # noqa: BLE001
                ok, why = False, str(exc)
            else:
                why = "numba.cuda.is_available() is False (no CUDA driver or no GPU)"
            if ok:
                try:
                    name = cuda.get_current_device().name
                    name = name.decode() if isinstance(name, bytes) else str(name)
                except Exception:  # noqa: BLE001
                    name = "CUDA GPU"
                result = ("gpu", name)
            else:
                result = (None, f"no CUDA device: {why}, and the simulator is off (NUMBA_ENABLE_CUDASIM unset)")
    _STATUS.append(result)
    return result


def resolve_device(requested: str, jacobian_values: int) -> Tuple[str, str]:
    """``(device, note)`` for a solve: ``device`` is "cpu" or "cuda"; ``note`` says why (shown in the summary).

    ``requested="cuda"`` with no usable GPU or simulator raises ``RuntimeError`` naming the problem.
    """
    if requested not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {requested!r}")
    if requested == "cpu":
        return "cpu", ""
    kind, why = cuda_status()
    if requested == "cuda":
        if kind is None:
            raise RuntimeError(f"device='cuda' asked for, but {why}")
        return "cuda", why
    if kind != "gpu":
        return "cpu", f"auto: {why}" if kind is None else "auto: the simulator is never chosen automatically"
    if jacobian_values < AUTO_MIN_JACOBIAN_VALUES:
        return "cpu", f"auto: {jacobian_values} Jacobian values < {AUTO_MIN_JACOBIAN_VALUES} (too small for the GPU)"
    return "cuda", why
