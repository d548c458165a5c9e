"""Precision presets: which floating-point format each solver stage uses.

One named preset per mode, applied stage by stage by :func:`mpslam_ros.solvers.lm.solve`:

========  =====  ========  ==========  ==========  ==============  ==========  =======
preset    state  residual  J storage   CG vectors  precond. store  tri. solve  scaling
========  =====  ========  ==========  ==========  ==============  ==========  =======
fp64      fp64   fp64      fp64        fp64        fp64            fp64        yes
fp32      fp64   fp32      fp32        fp32        fp32            fp32        yes
fp16      fp64   fp16*     fp16        fp16*       fp16            fp16*       no
mixed     fp64   fp32      fp16        fp32        fp16            fp32        yes
========  =====  ========  ==========  ==========  ==============  ==========  =======

``*`` fp16 arithmetic is emulated faithfully: every value an fp16 datapath would produce
(products, accumulations, vector updates, residuals) is rounded to fp16 (round-to-nearest-even)
and computed from fp16 operands. The naive preset also skips the scaling (Jacobi column scaling,
power-of-two global scale) and the inf/NaN fallback, to show what goes wrong without them.

The state (poses, points) and its SE(3) update are always fp64. The gradient (right-hand side of the
normal equations) is computed from the residual-precision Jacobian, so a low-precision stored
Jacobian only perturbs the linear solve (an inexact Newton step), not the fixed point LM converges to.
fp16 values are stored as ``uint16`` bit patterns (numba on CPU has no float16 type) and widened
with an LLVM ``fpext half`` in the kernels (vcvtph2ps on x86).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal, Union

import numpy as np

#: Names of the precision modes.
Precision = Literal["fp64", "fp32", "fp16", "mixed"]
PRECISIONS = ("fp64", "fp32", "fp16", "mixed")

#: Storage formats ("fp16" is stored as uint16 bit patterns).
Storage = Literal["fp64", "fp32", "fp16"]

#: Largest finite fp16 value.
FP16_MAX = 65504.0


@dataclass(frozen=True)
class PrecisionPreset:
    """Format of each stage. ``*_storage`` is a :data:`Storage` name; arithmetic types are numpy dtypes."""

    name: str
    #: Residual vector (and the gradient J^T r computed from it).
    residual: Storage
    #: Jacobian values used by the CGNR matrix-vector products.
    jacobian_storage: Storage
    #: CGNR vectors, dot products and matrix-vector accumulation ("fp16" = fp32 rounded to fp16).
    cg_vectors: Storage
    #: Preconditioner values (block-Jacobi inverse blocks or incomplete-Cholesky factor).
    preconditioner_storage: Storage
    #: Arithmetic of the triangular solves / preconditioner application ("fp16" = emulated).
    triangular_arithmetic: Storage
    #: Jacobi column scaling + power-of-two global scale before any cast.
    scaling: bool = True
    #: Detect inf/NaN in a low-precision step and redo that step in fp32 (counted in the summary).
    fallback_to_fp32: bool = True

    @property
    def state(self) -> np.dtype:
        """The state and its SE(3) update are always double precision."""
        return np.dtype(np.float64)

    @property
    def emulate_half(self) -> bool:
        """True when the CG arithmetic itself is (emulated) fp16."""
        return self.cg_vectors == "fp16"

    def with_overrides(self, **changes) -> "PrecisionPreset":
        """A copy with some stages changed, e.g. ``get_preset("mixed").with_overrides(jacobian_storage="fp32")``."""
        return dataclasses.replace(self, **changes)


PRESETS = {
    "fp64": PrecisionPreset("fp64", "fp64", "fp64", "fp64", "fp64", "fp64"),
    "fp32": PrecisionPreset("fp32", "fp32", "fp32", "fp32", "fp32", "fp32"),
    "fp16": PrecisionPreset("fp16", "fp16", "fp16", "fp16", "fp16", "fp16", scaling=False, fallback_to_fp32=False),
    "mixed": PrecisionPreset("mixed", "fp32", "fp16", "fp32", "fp16", "fp32"),
}


def get_preset(name: Union[str, PrecisionPreset]) -> PrecisionPreset:
    """The preset called ``name`` (one of :data:`PRECISIONS`); a preset passes through unchanged."""
    if isinstance(name, PrecisionPreset):
        return name
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown precision {name!r}; choose one of {', '.join(PRECISIONS)}") from None


def storage_dtype(storage: Storage) -> np.dtype:
    """numpy dtype holding values of a storage format (fp16 -> uint16 bit patterns)."""
    return np.dtype({"fp64": np.float64, "fp32": np.float32, "fp16": np.uint16}[storage])


def arithmetic_dtype(storage: Storage) -> np.dtype:
    """numpy dtype doing arithmetic for a storage format (fp16 arithmetic is emulated in fp32)."""
    return np.dtype(np.float64 if storage == "fp64" else np.float32)


def to_storage(values: np.ndarray, storage: Storage) -> np.ndarray:
    """Cast ``values`` to a storage format (round-to-nearest-even; fp16 returned as uint16 bits)."""
    if storage == "fp16":
        with np.errstate(over="ignore"):  # overflow -> inf is detected downstream (fallback / failure)
            return np.ascontiguousarray(values, dtype=np.float16).view(np.uint16)
    return np.ascontiguousarray(values, dtype=storage_dtype(storage))


def from_storage(values: np.ndarray) -> np.ndarray:
    """Widen stored values to numbers (uint16 is read as fp16 bits -> float32)."""
    if values.dtype == np.uint16:
        return values.view(np.float16).astype(np.float32)
    return values


def round_to(values: np.ndarray, storage: Storage) -> np.ndarray:
    """Values rounded to a storage format, returned in its arithmetic dtype (fp16 -> float32)."""
    if storage == "fp16":
        with np.errstate(over="ignore"):
            return np.asarray(values, dtype=np.float16).astype(np.float32)
    return np.asarray(values, dtype=arithmetic_dtype(storage))


def power_of_two_scale(max_abs: float, target: float = 2.0**8) -> float:
    """A power of two s with ``max_abs * s`` in (target/2, target]: exact to apply, keeps fp16 far from 65504.

    Scaling up small values also keeps them out of fp16's subnormal range (below 6.1e-5).
    """
    if not np.isfinite(max_abs) or max_abs <= 0.0:
        return 1.0
    return float(2.0 ** np.floor(np.log2(target / max_abs)))
