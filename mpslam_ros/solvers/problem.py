"""The problem protocol that :func:`mpslam_ros.solvers.lm.solve` drives.

A problem is a sum of K residual blocks ``r_k`` (each ``residual_dim`` rows, already whitened by the
square-root information) over parameter blocks (poses, points). Each residual block touches at most
two parameter blocks: ``block_a[k]`` (Jacobian ``Ja[k]``, ``dim_a`` columns) and ``block_b[k]``
(``Jb[k]``, ``dim_b`` columns; ``-1`` for a unary term such as a prior). Pose graphs use
pose-pose blocks (6 and 6, or 3 and 3 in SE(2)); bundle adjustment uses camera-point blocks
(6 or 9 and 3). That one layout serves every kernel: J p, J^T q, block-Jacobi, the J^T J sparsity
for the incomplete Cholesky.

Parameter block ``i`` has ``parameter_block_sizes[i]`` tangent-space coordinates; the solver's update
vector lays the blocks out in index order (fixed blocks included, their entries are zero). The
problem applies an update in fp64 with its manifold's exponential map (:meth:`retract`).

The cost is ``0.5 * sum_k rho(|r_k|^2)`` (rho = identity unless a robust loss is set).
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Tuple, runtime_checkable

import numpy as np


@runtime_checkable
class LeastSquaresProblem(Protocol):
    """What the optimiser needs from a problem (duck-typed; see :class:`mpslam_ros.problems.pgo.PoseGraphProblem`)."""

    #: Rows per residual block (6 for an SE(3) edge, 3 for SE(2), 2 or 3 for a reprojection).
    residual_dim: int
    #: Columns of Ja and Jb.
    dim_a: int
    dim_b: int
    #: int64[K]: parameter block of Ja; int64[K]: parameter block of Jb, -1 for unary blocks.
    block_a: np.ndarray
    block_b: np.ndarray
    #: int64[n_blocks]: tangent dimension of each parameter block.
    parameter_block_sizes: np.ndarray
    #: bool[n_blocks]: blocks held constant (gauge: first pose, fixed keyframes).
    fixed_blocks: np.ndarray

    def evaluate(self, jacobians: bool = True) -> Tuple[np.ndarray, Optional[np.ndarray], Optional[np.ndarray]]:
        """Whitened residuals ``float64[K, residual_dim]`` and, if asked, ``Ja float64[K, m, dim_a]``,
        ``Jb float64[K, m, dim_b]`` (derivatives w.r.t. the retraction coordinates at zero)."""
        ...

    def retract(self, delta: np.ndarray) -> None:
        """Apply the update ``delta`` (float64, concatenated tangent vectors of all blocks) in place."""
        ...

    def get_state(self) -> Any:
        """A copy of the current estimate (restored by :meth:`set_state` when a step is rejected)."""
        ...

    def set_state(self, state: Any) -> None:
        """Copy ``state`` into the estimate (never keep it: LM restores the same state more than once)."""
        ...


def robust_mask(problem: LeastSquaresProblem) -> np.ndarray:
    """bool[K]: residual blocks the robust loss applies to (``problem.robust_blocks`` if defined, else all)."""
    mask = getattr(problem, "robust_blocks", None)
    K = len(problem.block_a)
    if mask is None:
        return np.ones(K, dtype=bool)
    return np.asarray(mask, dtype=bool)


def parameter_offsets(problem: LeastSquaresProblem) -> np.ndarray:
    """int64[n_blocks + 1]: start of each parameter block in the full update vector."""
    sizes = np.asarray(problem.parameter_block_sizes, dtype=np.int64)
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def check_problem(problem: LeastSquaresProblem) -> None:
    """Raise ValueError with a clear message when the problem's layout is inconsistent."""
    K = len(problem.block_a)
    nb = len(problem.parameter_block_sizes)
    if K == 0:
        raise ValueError("empty problem: no residual blocks")
    if len(problem.block_b) != K:
        raise ValueError(f"block_a has {K} entries but block_b has {len(problem.block_b)}")
    a = np.asarray(problem.block_a)
    b = np.asarray(problem.block_b)
    if a.min() < 0 or a.max() >= nb:
        raise ValueError(f"block_a refers to parameter blocks outside 0..{nb - 1}")
    if b.max() >= nb or b.min() < -1:
        raise ValueError(f"block_b refers to parameter blocks outside -1..{nb - 1}")
    sizes = np.asarray(problem.parameter_block_sizes)
    if np.any(sizes[a] != problem.dim_a):
        raise ValueError(f"a block referenced by block_a does not have size dim_a={problem.dim_a}")
    bb = b[b >= 0]
    if np.any(sizes[bb] != problem.dim_b):
        raise ValueError(f"a block referenced by block_b does not have size dim_b={problem.dim_b}")
    if len(problem.fixed_blocks) != nb:
        raise ValueError(f"fixed_blocks has {len(problem.fixed_blocks)} entries for {nb} parameter blocks")
