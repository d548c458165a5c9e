"""Choosing a pose graph's initial guess (issue 17): the file's vertices, the odometry chain or the chordal
relaxation, with ``"auto"`` picking the one with the lowest cost.

Why a choice: LM only finds the minimum of the basin it starts in. Files whose vertices are the raw odometry
(intel, MIT, Killian court; the generated graphs of :mod:`mpslam_ros.problems.graph_synth`) start LM far
from the optimum, where it crawls for tens of iterations and can end in a worse local minimum (a generated
800-pose 2-D graph: 37.57 from its file guess, 26.55 from chordal; a 1,500-pose one 152.8 and 42.36). The chordal relaxation (rotations by
linear least squares, projected to SO(n), then translations; :func:`mpslam_ros.io.g2o.chordal_initialization`)
costs two sparse linear solves. ``"auto"`` evaluates the cost of each candidate (one residual evaluation
each) and keeps the cheapest: a cheap check, not a guarantee (a lower starting cost is not always a lower
final one), reported to the user in :class:`InitialGuess`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mpslam_ros.io.g2o import G2OGraph, initial_guess
from mpslam_ros.problems.pgo import pose_graph_cost

INIT_METHODS = ("auto", "file", "odometry", "chordal")


@dataclass
class InitialGuess:
    """The chosen guess, its name, and the cost of every candidate that was evaluated."""

    poses: np.ndarray
    method: str
    costs: dict = field(default_factory=dict)  # candidate -> cost (GTSAM convention)

    def describe(self) -> str:
        if len(self.costs) <= 1:
            return self.method
        others = ", ".join(f"{k} {v:.6g}" for k, v in self.costs.items())
        return f"{self.method} (auto: lowest initial cost of {others})"


def choose_initial_guess(graph: G2OGraph, method: str = "auto") -> InitialGuess:
    """The initial poses for ``method``; "auto": the lowest-cost of the file's vertices (when the file has
    them) and the chordal relaxation (odometry is not a candidate: where the file has vertices they are at
    least as good as a raw chain, and where it has none the chordal guess already beats the chain)."""
    if method not in INIT_METHODS:
        raise ValueError(f"unknown initialisation {method!r}; choose from {', '.join(INIT_METHODS)}")
    if method != "auto":
        return InitialGuess(initial_guess(graph, method), method)
    candidates = (["file"] if graph.has_vertices else []) + ["chordal"]
    poses, costs = {}, {}
    for name in candidates:
        poses[name] = initial_guess(graph, name)
        costs[name] = pose_graph_cost(graph.kind, poses[name], graph.edge_i, graph.edge_j, graph.measurements,
                                      graph.information)
    best = min(candidates, key=lambda k: (not np.isfinite(costs[k]), costs[k]))
    return InitialGuess(poses[best], best, costs)
