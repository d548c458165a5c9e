"""Random pose graphs for testing solvers beyond the few public files (issue 17).

:func:`random_pose_graph` walks a robot through a Manhattan world (unit steps, 90-degree turns; in 3-D
also level changes, like parking-garage), records noisy odometry and noisy loop closures to earlier
poses within ``loop_radius`` and returns a :class:`~mpslam_ros.io.g2o.G2OGraph` whose vertices are
the odometry chain: an "odometry-quality" start, like the MIT / Killian-court / intel files, whose
rotation drift is what makes the first linearisations far from the optimum. ``outlier_fraction``
replaces that share of loops by random wrong ones. Everything is a function of ``seed``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from mpslam_ros.geometry import lie
from mpslam_ros.io.g2o import G2OGraph


@dataclass
class SynthGraph:
    """A generated graph plus its ground truth (for tests that need the true poses)."""

    graph: G2OGraph
    ground_truth: np.ndarray
    name: str


def _walk(n: int, kind: str, rng: np.random.Generator, turn_prob: float, level_prob: float) -> np.ndarray:
    """Ground-truth poses of a Manhattan walk (unit steps; 3-D: occasional level changes)."""
    d = 3 if kind == "se2" else 4
    poses = np.zeros((n, d, d))
    poses[0] = np.eye(d)
    for k in range(1, n):
        if kind == "se2":
            turn = rng.choice([-np.pi / 2, np.pi / 2]) if rng.random() < turn_prob else 0.0
            step = lie.se2_from_xytheta(1.0, 0.0, turn)
        else:
            step = np.eye(4)
            if rng.random() < turn_prob:
                a = rng.choice([-np.pi / 2, np.pi / 2])
                step[:3, :3] = [[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]]
            step[0, 3] = 1.0
            if rng.random() < level_prob:
                step[2, 3] = rng.choice([-1.0, 1.0])
        poses[k] = poses[k - 1] @ step
    return poses


def _noise(kind: str, rng: np.random.Generator, sigma_t: float, sigma_r: float) -> np.ndarray:
    if kind == "se2":
        return lie.se2_exp(np.array([rng.normal(0, sigma_t), rng.normal(0, sigma_t), rng.normal(0, sigma_r)]))
    return lie.se3_exp(np.concatenate([rng.normal(0, sigma_r, 3), rng.normal(0, sigma_t, 3)]))


def _info(kind: str, sigma_t: float, sigma_r: float) -> np.ndarray:
    if kind == "se2":
        return np.diag([sigma_t ** -2, sigma_t ** -2, sigma_r ** -2])
    return np.diag([sigma_r ** -2] * 3 + [sigma_t ** -2] * 3)  # GTSAM order: rotation first


def random_pose_graph(n: int, kind: str = "se2", seed: int = 0, turn_prob: float = 0.2, level_prob: float = 0.02,
                      odom_sigma_t: float = 0.05, odom_sigma_r: float = 0.02, loop_sigma_t: float = 0.05,
                      loop_sigma_r: float = 0.02, loop_radius: float = 0.5, loop_prob: float = 0.1,
                      min_gap: int = 20, outlier_fraction: float = 0.0, max_loops: Optional[int] = None) -> SynthGraph:
    """A random Manhattan-world pose graph (see the module doc); vertices are the odometry chain."""
    if kind not in ("se2", "se3"):
        raise ValueError(f"kind must be 'se2' or 'se3', got {kind!r}")
    if n < 2:
        raise ValueError(f"a pose graph needs at least 2 poses, got {n}")
    rng = np.random.default_rng(seed)
    gt = _walk(n, kind, rng, turn_prob, level_prob)
    inv = lie.se2_inverse if kind == "se2" else lie.se3_inverse
    ei, ej, Z, info = [], [], [], []
    odo_info = _info(kind, odom_sigma_t, odom_sigma_r)
    for k in range(n - 1):
        ei.append(k)
        ej.append(k + 1)
        Z.append(inv(gt[k]) @ gt[k + 1] @ _noise(kind, rng, odom_sigma_t, odom_sigma_r))
        info.append(odo_info)
    pos = gt[:, : gt.shape[1] - 1, -1]
    loop_info = _info(kind, loop_sigma_t, loop_sigma_r)
    loops = 0
    from scipy.spatial import cKDTree

    tree = cKDTree(pos)  # neighbours by k-d tree: the all-pairs distances were O(n^2) (100,000 poses)
    for j in range(min_gap, n):
        if max_loops is not None and loops >= max_loops:
            break
        cand = np.array(sorted(tree.query_ball_point(pos[j], loop_radius)), dtype=np.int64)
        near = cand[cand <= j - min_gap]
        # (query_ball_point includes the radius itself; the strict "< loop_radius" of the unit-step grid)
        near = near[np.linalg.norm(pos[near] - pos[j], axis=1) < loop_radius] if len(near) else near
        if len(near) == 0 or rng.random() >= loop_prob:
            continue
        i = int(rng.choice(near))
        if outlier_fraction > 0 and rng.random() < outlier_fraction:
            i = int(rng.integers(0, j - 1))  # a wrong place: the measured pose is that of the true match
            target = inv(gt[int(rng.choice(near))]) @ gt[j]
        else:
            target = inv(gt[i]) @ gt[j]
        ei.append(i)
        ej.append(j)
        Z.append(target @ _noise(kind, rng, loop_sigma_t, loop_sigma_r))
        info.append(loop_info)
        loops += 1
    Z = np.stack(Z)
    ei, ej = np.array(ei, dtype=np.int64), np.array(ej, dtype=np.int64)
    odo = np.zeros_like(gt)
    odo[0] = gt[0]
    for k in range(n - 1):
        odo[k + 1] = odo[k] @ Z[k]
    name = f"synth_{kind}_n{n}_s{seed}" + (f"_out{outlier_fraction:g}" if outlier_fraction else "")
    graph = G2OGraph(kind=kind, ids=np.arange(n, dtype=np.int64), poses=odo, edge_i=ei, edge_j=ej,
                     measurements=Z, information=np.stack(info), has_vertices=True, path=name,
                     edge_lines=np.arange(len(ei), dtype=np.int64) + n + 1)
    return SynthGraph(graph, gt, name)


def graph_from_spec(spec: str) -> SynthGraph:
    """``"synth:KIND:POSES:SEED[:key=value...]"`` (keywords of :func:`random_pose_graph`), e.g.
    ``synth:se2:800:1:odom_sigma_r=0.6:max_loops=20:loop_prob=0.3``: how benchmarks name generated graphs."""
    parts = spec.split(":")
    if len(parts) < 4 or parts[0] != "synth":
        raise ValueError(f"{spec!r}: expected synth:KIND:POSES:SEED[:key=value...]")
    kw = {}
    for item in parts[4:]:
        key, _, value = item.partition("=")
        if not value:
            raise ValueError(f"{spec!r}: {item!r} is not key=value")
        kw[key] = int(value) if key == "max_loops" else float(value)
    try:
        out = random_pose_graph(int(parts[2]), parts[1], int(parts[3]), **kw)
    except TypeError as exc:
        raise ValueError(f"{spec!r}: {exc}") from None
    out.name = spec
    out.graph.path = spec
    return out
