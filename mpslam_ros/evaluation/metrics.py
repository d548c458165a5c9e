"""Trajectory error metrics that reproduce evo (evo_ape / evo_rpe) number for number.

- :func:`associate`: evo's ``associate_trajectories`` (nearest stamp within ``max_dt``, the shorter
  trajectory matched into the longer one), done on integer nanoseconds.
- :func:`umeyama_alignment`: evo's ``umeyama_alignment`` (SE(3) or Sim(3) of positions).
- :func:`ate`: evo_ape's default metric (translation part: position distance after alignment).
- :func:`rpe`: evo_rpe's default (translation part of ``(Q_i^-1 Q_j)^-1 (P_i^-1 P_j)`` over pairs
  ``delta`` frames apart, or ``delta`` metres of estimated path), plus the rotation angle.
Statistics: rmse, mean, median, std, min, max, sse, computed like evo.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from mpslam_ros.datatypes import Trajectory
from mpslam_ros.geometry import lie

ALIGNMENTS = ("se3", "sim3", "none")
log = logging.getLogger("mpslam_ros.evaluation.metrics")


class EvaluationError(ValueError):
    """Trajectories cannot be compared (no common stamps, too few poses, degenerate alignment)."""


@dataclass
class ErrorResult:
    """Per-pose (ATE) or per-pair (RPE) errors and their statistics (metres, degrees)."""

    kind: str  # "ate" or "rpe"
    errors: np.ndarray  # translation errors
    stamps_s: np.ndarray  # stamp of each error (reference stamp; for RPE the pair's second pose)
    rot_errors_deg: np.ndarray
    alignment: str = "none"
    #: Alignment applied to the estimate: p -> scale * R p + t.
    R: np.ndarray = field(default_factory=lambda: np.eye(3))
    t: np.ndarray = field(default_factory=lambda: np.zeros(3))
    scale: float = 1.0
    num_matched: int = 0
    #: Associated + aligned estimate and matched reference (for plots).
    est_aligned: Optional[Trajectory] = None
    ref_matched: Optional[Trajectory] = None
    settings: dict = field(default_factory=dict)

    @property
    def rmse(self) -> float:
        return float(np.sqrt(np.mean(self.errors ** 2)))

    @property
    def mean(self) -> float:
        return float(np.mean(self.errors))

    @property
    def median(self) -> float:
        return float(np.median(self.errors))

    @property
    def std(self) -> float:
        return float(np.std(self.errors))

    @property
    def min(self) -> float:
        return float(np.min(self.errors))

    @property
    def max(self) -> float:
        return float(np.max(self.errors))

    @property
    def sse(self) -> float:
        return float(np.dot(self.errors, self.errors))

    @property
    def rot_rmse_deg(self) -> float:
        return float(np.sqrt(np.mean(self.rot_errors_deg ** 2)))

    def stats(self) -> dict:
        """evo's statistics dict (rmse, mean, median, std, min, max, sse)."""
        return {k: getattr(self, k) for k in ("rmse", "mean", "median", "std", "min", "max", "sse")}

    def to_dict(self) -> dict:
        return {"metric": self.kind, "alignment": self.alignment, "scale": self.scale,
                "num_matched": self.num_matched, **self.settings, **self.stats(),
                "rot_rmse_deg": self.rot_rmse_deg, "rot_max_deg": float(np.max(self.rot_errors_deg))}


def matching_indices(stamps_1: np.ndarray, stamps_2: np.ndarray, max_diff_ns: int) -> tuple[np.ndarray, np.ndarray]:
    """evo's ``matching_time_indices``: for each stamp of 1 (in its order, repeats included), the
    nearest of 2 within ``max_diff_ns`` (ties go to the earlier stamp, as in evo). When 2 goes
    back in time, evo's linear search (first minimum of |diff|) with evo's warning."""
    s1 = np.asarray(stamps_1, dtype=np.int64)
    s2 = np.asarray(stamps_2, dtype=np.int64)
    if len(s2) == 0 or len(s1) == 0:
        return np.zeros(0, int), np.zeros(0, int)
    if np.any(np.diff(s2) < 0):
        # evo's linear search fallback: argmin of |diff| (first minimum); same warning as evo
        log.warning("Timestamps aren't sorted, using slower linear matching.")
        i1, i2 = [], []
        for i, s in enumerate(s1):
            d = np.abs(s2 - s)
            j = int(np.argmin(d))
            if d[j] <= max_diff_ns:
                i1.append(i)
                i2.append(j)
        return np.array(i1, int), np.array(i2, int)
    inside = (s1 >= s2[0] - max_diff_ns) & (s1 <= s2[-1] + max_diff_ns)
    idx = np.minimum(np.searchsorted(s2, s1, side="right"), len(s2) - 1)
    diff_ub = s2[idx] - s1
    prev = np.maximum(idx - 1, 0)
    diff_lb = np.where(idx > 0, s1 - s2[prev], np.iinfo(np.int64).max)
    take_ub = (diff_ub <= max_diff_ns) & (diff_ub < diff_lb)
    take_lb = ~take_ub & (diff_lb <= max_diff_ns) & (diff_lb <= diff_ub)
    ok = inside & (take_ub | take_lb)
    best = np.where(take_ub, idx, prev)
    return np.nonzero(ok)[0], best[ok]


def associate(ref: Trajectory, est: Trajectory, max_dt: float = 0.01) -> tuple[Trajectory, Trajectory]:
    """evo's ``associate_trajectories``: (ref, est) reduced to their matched poses, same order."""
    if len(ref) == 0 or len(est) == 0:
        raise EvaluationError(f"empty trajectory ({len(ref)} reference poses, {len(est)} estimated poses)")
    max_ns = int(round(max_dt * 1e9))
    est_longer = len(est) > len(ref)
    short, long_ = (ref, est) if est_longer else (est, ref)
    i_short, i_long = matching_indices(short.stamps_ns, long_.stamps_ns, max_ns)
    if len(i_short) == 0:
        raise EvaluationError(f"no matching timestamps between reference and estimate within {max_dt} s "
                              f"(reference {_span(ref)}, estimate {_span(est)})")
    short_m = Trajectory(short.stamps_ns[i_short], short.poses[i_short])
    long_m = Trajectory(long_.stamps_ns[i_long], long_.poses[i_long])
    return (short_m, long_m) if est_longer else (long_m, short_m)


def _span(t: Trajectory) -> str:
    return f"{t.stamps_s[0]:.3f}..{t.stamps_s[-1]:.3f} s" if len(t) else "empty"


def umeyama_alignment(x: np.ndarray, y: np.ndarray, with_scale: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """R, t, c minimising ||y - (c R x + t)||^2 over columns of x, y (3 x n), as evo computes it."""
    if x.shape != y.shape:
        raise EvaluationError("data matrices must have the same shape")
    m, n = x.shape
    mean_x = x.mean(axis=1)
    mean_y = y.mean(axis=1)
    sigma_x = 1.0 / n * (np.linalg.norm(x - mean_x[:, np.newaxis]) ** 2)
    # Same summation order as evo's loop of outer products (keeps results identical to the last bit
    # in most cases; a matrix product would differ by rounding only).
    cov_xy = np.zeros((m, m))
    for i in range(n):
        cov_xy += np.outer(y[:, i] - mean_y, x[:, i] - mean_x)
    cov_xy = np.multiply(1.0 / n, cov_xy)
    u, d, v = np.linalg.svd(cov_xy)
    if np.count_nonzero(d > np.finfo(d.dtype).eps) < m - 1:
        raise EvaluationError("degenerate covariance rank: Umeyama alignment is not possible "
                              "(trajectory too short or all positions on a line)")
    s = np.eye(m)
    if np.linalg.det(u) * np.linalg.det(v) < 0.0:
        s[m - 1, m - 1] = -1
    r = u.dot(s).dot(v)
    c = 1 / sigma_x * np.trace(np.diag(d).dot(s)) if with_scale else 1.0
    t = mean_y - np.multiply(c, r.dot(mean_x))
    return r, t, float(c)


def align_trajectory(est: Trajectory, R: np.ndarray, t: np.ndarray, scale: float = 1.0) -> Trajectory:
    """Apply p -> scale R p + t (and R to the orientations) to every pose."""
    poses = est.poses.copy()
    poses[:, :3, 3] = scale * poses[:, :3, 3]
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = t
    return Trajectory(est.stamps_ns.copy(), T[None] @ poses)


def _rotation_angles_deg(R: np.ndarray) -> np.ndarray:
    return np.degrees(lie.rotation_angle(R))


def _check(traj: Trajectory, what: str) -> None:
    if len(traj) == 0:
        raise EvaluationError(f"{what} trajectory is empty")
    if not np.all(np.isfinite(traj.poses)):
        k = int(np.nonzero(~np.all(np.isfinite(traj.poses.reshape(len(traj), -1)), axis=1))[0][0])
        raise EvaluationError(f"{what} trajectory has NaN/inf in pose {k}")


def ate(gt: Trajectory, est: Trajectory, align: str = "se3", max_dt: float = 0.01,
        align_first_n: int = -1) -> ErrorResult:
    """Absolute trajectory error (evo_ape, translation part) after ``align`` ("se3", "sim3", "none")."""
    if align not in ALIGNMENTS:
        raise ValueError(f"align must be one of {ALIGNMENTS}, got {align!r}")
    _check(gt, "reference")
    _check(est, "estimated")
    ref_m, est_m = associate(gt, est, max_dt)
    R, t, c = np.eye(3), np.zeros(3), 1.0
    if align != "none":
        if len(ref_m) < 3:
            raise EvaluationError(f"only {len(ref_m)} matched poses: alignment needs at least 3")
        n = len(ref_m) if align_first_n < 0 else align_first_n
        R, t, c = umeyama_alignment(est_m.positions[:n].T, ref_m.positions[:n].T, with_scale=(align == "sim3"))
    est_a = align_trajectory(est_m, R, t, c)
    errors = np.linalg.norm(est_a.positions - ref_m.positions, axis=1)
    rot = _rotation_angles_deg(np.swapaxes(ref_m.poses[:, :3, :3], 1, 2) @ est_a.poses[:, :3, :3])
    return ErrorResult("ate", errors, ref_m.stamps_s, rot, align, R, t, c, len(ref_m), est_a, ref_m,
                       {"max_dt": max_dt})


def _pairs_by_index(n: int, delta: int, all_pairs: bool) -> list:
    if all_pairs:
        return [(i, i + delta) for i in range(n) if i + delta < n]
    ids = np.arange(0, n, delta, dtype=int)
    return [(int(i), int(j)) for i, j in zip(ids, ids[1:])]


def _pairs_by_path(positions: np.ndarray, delta: float, tol: float, all_pairs: bool) -> list:
    pairs = []
    if all_pairs:
        steps = np.linalg.norm(np.diff(positions, axis=0), axis=1)
        dist = np.concatenate([[0.0], np.cumsum(steps)])
        for i in range(dist.size - 1):
            from_here = dist[i + 1:] - dist[i]
            k = int(np.argmin(np.abs(from_here - delta)))
            if np.abs(from_here[k] - delta) > tol:
                continue
            pairs.append((i, k + i + 1))
        return pairs
    ids = [0]
    travelled = 0.0
    for i in range(1, len(positions)):
        travelled += float(np.linalg.norm(positions[i] - positions[i - 1]))
        if travelled >= delta:
            ids.append(i)
            travelled = 0.0
    return list(zip(ids, ids[1:]))


def rpe(gt: Trajectory, est: Trajectory, delta: float = 1, unit: str = "frames", max_dt: float = 0.01,
        all_pairs: bool = False, rel_delta_tol: float = 0.1, align: str = "none",
        pairs_from_reference: bool = False) -> ErrorResult:
    """Relative pose error (evo_rpe defaults: translation part, consecutive pairs ``delta`` apart).

    ``unit`` "frames" (integer delta) or "m" (pairs ``delta`` metres apart along the estimated
    path, or the reference path with ``pairs_from_reference``). ``align`` as in :func:`ate`
    (only Sim(3) changes RPE: it fixes the estimate's scale).
    """
    if unit not in ("frames", "m"):
        raise ValueError(f"unit must be 'frames' or 'm', got {unit!r}")
    _check(gt, "reference")
    _check(est, "estimated")
    ref_m, est_m = associate(gt, est, max_dt)
    R, t, c = np.eye(3), np.zeros(3), 1.0
    if align != "none":
        R, t, c = umeyama_alignment(est_m.positions.T, ref_m.positions.T, with_scale=(align == "sim3"))
        est_m = align_trajectory(est_m, R, t, c)
    if unit == "frames":
        if int(delta) != delta or delta < 1:
            raise ValueError(f"delta in frames must be a positive integer, got {delta}")
        pairs = _pairs_by_index(len(ref_m), int(delta), all_pairs)
    else:
        src = ref_m if pairs_from_reference else est_m
        pairs = _pairs_by_path(src.positions, float(delta), float(delta) * rel_delta_tol, all_pairs)
    if not pairs:
        raise EvaluationError(f"no pose pairs {delta} {unit} apart among {len(ref_m)} matched poses")
    i, j = np.array(pairs).T
    Q, P = ref_m.poses, est_m.poses
    Q_rel = np.linalg.inv(Q[i]) @ Q[j]
    P_rel = np.linalg.inv(P[i]) @ P[j]
    E = np.linalg.inv(Q_rel) @ P_rel
    errors = np.linalg.norm(E[:, :3, 3], axis=1)
    rot = _rotation_angles_deg(E[:, :3, :3])
    return ErrorResult("rpe", errors, ref_m.stamps_s[j], rot, align, R, t, c, len(ref_m), est_m, ref_m,
                       {"delta": delta, "unit": unit, "all_pairs": all_pairs, "max_dt": max_dt})


def format_table(results: dict) -> str:
    """A readable table of statistics, one row per named result."""
    cols = ("rmse", "mean", "median", "std", "min", "max")
    width = max([len(n) for n in results] + [10])
    lines = [f"{'':{width}s} " + " ".join(f"{c:>10s}" for c in cols) + f" {'pairs/poses':>12s}"]
    for name, r in results.items():
        lines.append(f"{name:{width}s} " + " ".join(f"{getattr(r, c):10.6f}" for c in cols) + f" {len(r.errors):12d}")
    return "\n".join(lines)
