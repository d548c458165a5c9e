"""Information matrices as real files have them: the nearest positive-definite policy.

Real g2o files carry information blocks that are singular (a zero row for a direction the sensor
does not observe), slightly indefinite (rounded covariances inverted by hand) or indefinite outright
(SE-Sync's ``cubicle``: rotation off-diagonals far above the diagonal). g2o uses them as they are;
GTSAM's ``noiseModel.Gaussian.Information`` runs an unchecked Eigen LLT, whose factor of an
indefinite matrix is an arbitrary partial one (``R^T R`` no longer equals the file's matrix).
A least-squares cost needs a positive-definite weight, so the policy here is explicit:

- ``"project"`` (default): a block whose smallest eigenvalue is not above ``rel_floor`` times its
  largest is replaced by its nearest symmetric positive-definite matrix in the Frobenius norm
  (Higham 1988: eigenvalues clipped from below, here at ``2 * rel_floor * lambda_max`` so the
  Cholesky factor exists, and twice the acceptance floor so a projected block written to a file and
  read again passes unchanged); blocks that pass are untouched, bit for bit. The caller counts and warns.
- ``"strict"``: such a block is an error (the reader names the file and the edge's line).

A block with no positive eigenvalue at all (zero or negative semi-definite) has no meaningful
projection (it would be ``rel_floor * 0``) and is refused under both policies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

INFO_POLICIES = ("project", "strict")
#: Eigenvalue floor relative to the block's largest: condition numbers up to 1e10 pass unchanged
#: (their Cholesky factor is accurate in fp64 and their whitened residual, cond 1e5, in fp32).
REL_FLOOR = 1e-10


@dataclass
class InformationCheck:
    """Result of :func:`make_positive_definite` on a stack of blocks."""

    information: np.ndarray  # [E, d, d], projected where needed (a copy when anything changed)
    projected: np.ndarray  # int64 indices of the blocks that were replaced
    unusable: np.ndarray  # int64 indices of blocks with no positive eigenvalue (cannot be projected)
    min_eig: np.ndarray  # [E] smallest eigenvalue of each input block
    max_eig: np.ndarray  # [E] largest


def make_positive_definite(information: np.ndarray, rel_floor: float = REL_FLOOR) -> InformationCheck:
    """Symmetrise (from the upper triangle's mirror, as files store it) and clip eigenvalues of each
    ``[E, d, d]`` block at ``2 * rel_floor * lambda_max`` where the block is not safely positive definite."""
    info = np.asarray(information, dtype=np.float64)
    sym = 0.5 * (info + np.swapaxes(info, 1, 2))
    w, V = np.linalg.eigh(sym)
    lo, hi = w[:, 0], w[:, -1]
    unusable = np.flatnonzero(hi <= 0.0)
    bad = np.flatnonzero((lo <= rel_floor * hi) & (hi > 0.0))
    out = info
    if len(bad):
        out = info.copy()
        wc = np.maximum(w[bad], 2.0 * rel_floor * hi[bad, None])
        fixed = np.einsum("eij,ej,ekj->eik", V[bad], wc, V[bad])
        out[bad] = 0.5 * (fixed + np.swapaxes(fixed, 1, 2))  # exactly symmetric
    return InformationCheck(out, bad.astype(np.int64), unusable.astype(np.int64), lo, hi)
