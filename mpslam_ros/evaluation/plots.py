"""PNG plots of trajectories and errors (matplotlib, Agg backend: works without a display)."""

from __future__ import annotations

import os
from typing import Mapping

import numpy as np

from mpslam_ros.datatypes import Trajectory


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_trajectories(path: "str | os.PathLike", gt: Trajectory | None, estimates: Mapping[str, Trajectory],
                      align: str = "se3", max_dt: float = 0.01, title: str = "trajectories (top view)",
                      plane: str = "auto") -> None:
    """Top view of the ground truth and each estimate, estimates aligned to the ground truth with
    ``align`` ("se3", "sim3", "none") when there is one. ``plane`` "xy", "xz", "yz" or "auto"
    (the two axes along which the ground truth spreads most: x-z for KITTI's camera frame)."""
    from mpslam_ros.evaluation.metrics import EvaluationError, ate

    ref = gt if gt is not None and len(gt) else next(iter(estimates.values()), None)
    if plane == "auto":
        spread = np.ptp(ref.positions, axis=0) if ref is not None and len(ref) else np.ones(3)
        a, b = sorted(np.argsort(spread)[1:])
    else:
        a, b = "xyz".index(plane[0]), "xyz".index(plane[1])
    plt = _plt()
    fig, ax = plt.subplots(figsize=(7, 6))
    if gt is not None and len(gt):
        ax.plot(gt.positions[:, a], gt.positions[:, b], "k--", lw=1.5, label="ground truth")
        ax.plot(gt.positions[0, a], gt.positions[0, b], "ko", ms=5)
    for name, est in estimates.items():
        pts = est.positions
        label = name
        if gt is not None and align != "none":
            try:
                res = ate(gt, est, align=align, max_dt=max_dt)
                pts = res.est_aligned.positions
                label = f"{name} (ATE {res.rmse:.3f} m)"
            except EvaluationError:
                pass
        ax.plot(pts[:, a], pts[:, b], lw=1.2, label=label)
    ax.set_xlabel(f"{'xyz'[a]} (m)")
    ax.set_ylabel(f"{'xyz'[b]} (m)")
    ax.set_aspect("equal", adjustable="datalim")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_errors(path: "str | os.PathLike", results: Mapping[str, object], title: str | None = None) -> None:
    """Error over time, one line per named result (ErrorResult of ate/rpe), with RMSE in the legend."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 4))
    t0 = min((float(r.stamps_s[0]) for r in results.values() if len(r.stamps_s)), default=0.0)
    kind = "error"
    for name, r in results.items():
        kind = getattr(r, "kind", kind)
        ax.plot(np.asarray(r.stamps_s) - t0, r.errors, lw=1.0, label=f"{name} (RMSE {r.rmse:.4f} m)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel(f"{kind.upper()} translation (m)")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="best", fontsize=8)
    ax.set_title(title or f"{kind.upper()} over time")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_error_cdf(path: "str | os.PathLike", errors: Mapping[str, np.ndarray], title: str = "cumulative error distribution",
                   xlabel: str = "error (m)") -> None:
    """Empirical CDF of each named error array."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, e in errors.items():
        e = np.sort(np.asarray(getattr(e, "errors", e), dtype=np.float64))
        if e.size:
            ax.step(e, np.arange(1, e.size + 1) / e.size, where="post", label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of poses")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
