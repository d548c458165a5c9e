"""Issue 17: CGNR-LM reaches the direct solver's optimum wherever the direct solver gets there.

Every shared graph from the file's guess, the odometry chain and the chordal relaxation, and
generated graphs (``mpslam_ros.problems.graph_synth``), in fp64 / fp32 / mixed: the final cost is
within 1e-4 (relative) of fp64 LM with the sparse direct solver from the same start.

Generated graphs: the TUNING ones are those the fixes were developed on (the CG-saturation repro and
the two graphs where fp32 / mixed first ended in other local minima); the HELD_OUT ones were run only
after the fixes were in place.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

from mpslam_ros.io.g2o import initial_guess, read_g2o
from mpslam_ros.problems.graph_synth import random_pose_graph
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
from mpslam_ros.solvers.lm import SolverOptions, solve

SHARED = ["tinyGrid3D", "smallGrid3D", "intel", "M3500", "parking-garage", "sphere2500", "kitti_00", "city10000"]
TUNING = [  # (kind, poses, seed, generator keywords)
    ("se2", 800, 0, dict(odom_sigma_r=0.3, max_loops=20, loop_prob=0.3)),
    ("se2", 1500, 4, dict(odom_sigma_r=0.2, max_loops=40, loop_prob=0.3)),
]
HELD_OUT = [
    ("se2", 200, 3, dict(odom_sigma_r=0.2, loop_prob=0.5)),
    ("se3", 500, 5, dict(odom_sigma_r=0.2)),
    ("se2", 800, 6, dict(odom_sigma_r=0.1, outlier_fraction=0.1)),
    ("se3", 300, 7, dict(outlier_fraction=0.1, loop_prob=0.5)),
    ("se3", 2000, 11, dict(odom_sigma_r=0.1, max_loops=50)),
    ("se2", 20, 8, dict()),
]


def _solve(g, poses0, **kw):
    p = PoseGraphProblem(g.kind, poses0.copy(), g.edge_i, g.edge_j, g.measurements, g.information,
                         fixed=np.array([0]))
    return solve(p, pgo_options(SolverOptions(**kw)))


def _check_all_precisions(g, init):
    poses0 = initial_guess(g, init)
    ref = _solve(g, poses0, precision="fp64", linear_solver="cholesky")
    assert ref.converged, ref.termination
    floor = 1e-9 * ref.initial_cost  # graphs without loops have optimum ~0: compare absolutely there
    for precision in ("fp64", "fp32", "mixed"):
        s = _solve(g, poses0, precision=precision)
        assert s.converged, (precision, s.termination)
        assert abs(s.final_cost - ref.final_cost) <= 1e-4 * ref.final_cost + floor, (
            precision, init, s.final_cost, ref.final_cost)


@pytest.mark.parametrize("init", ["file", "odometry", "chordal"])
@pytest.mark.parametrize("name", SHARED)
def test_shared_graphs_every_start_every_precision(data_dir, name, init):
    g = read_g2o(data_dir / "pgo" / f"{name}.g2o")
    if init == "file" and not g.has_vertices:
        pytest.skip("edge-only file: no file guess")
    _check_all_precisions(g, init)


@pytest.mark.parametrize("spec", TUNING + HELD_OUT, ids=lambda s: f"{s[0]}-{s[1]}-seed{s[2]}")
@pytest.mark.parametrize("init", ["file", "chordal"])
def test_generated_graphs_every_precision(spec, init):
    kind, n, seed, kw = spec
    _check_all_precisions(random_pose_graph(n, kind, seed, **kw).graph, init)


def test_cg_does_not_saturate_on_an_odometry_quality_graph():
    """The repro of issue 17's first bullet: a generated 800-pose 2-D graph whose odometry guess drives LM's
    trust region down to ~0.05. With a factor of the undamped J^T J every CG solve hit cg_max_iterations
    (28,258 CG iterations in 100 LM iterations); the factor of J^T J + lambda I keeps CG short."""
    g = random_pose_graph(800, "se2", 1, odom_sigma_r=0.6, max_loops=20, loop_prob=0.3).graph
    # without geodesic acceleration: on this descent, which no solver finishes in 500 iterations, the
    # accelerated paths of the direct and CG solves part within a few steps, and where each stands after
    # 100 iterations says nothing about CG (accelerated: direct 45,792, fp64 CG 46,429, mixed 49,506;
    # docs/solvers.md, "Geodesic acceleration")
    ref = _solve(g, g.poses, precision="fp64", linear_solver="cholesky", geodesic_acceleration=False)
    for precision in ("fp64", "mixed"):
        s = _solve(g, g.poses, precision=precision, geodesic_acceleration=False)
        assert s.cg_iterations < 20 * s.iterations, (precision, s.cg_iterations, s.iterations)
        assert s.ic_damping_rebuilds > 0
        # both are stopped by the iteration limit in this slow non-convex descent: CG must not lag behind
        assert s.final_cost <= 1.05 * ref.final_cost
    off = _solve(g, g.poses, precision="mixed", ic_damping_ratio=0.0, direct_fallback=False)
    assert off.cg_iterations > 100 * off.iterations  # the failure the damped factor removes


def test_direct_fallback_is_counted_and_reported(data_dir, capsys):
    """CG that cannot converge (here: 2 iterations allowed) hands the step to the direct solver, says so in
    the summary, and LM still reaches the optimum."""
    g = read_g2o(data_dir / "pgo" / "intel.g2o")
    ref = _solve(g, g.poses, precision="fp64", linear_solver="cholesky")
    s = _solve(g, g.poses, precision="mixed", cg_max_iterations=2, cg_tolerance_far=None)
    assert s.direct_fallbacks > 0
    assert s.final_cost == pytest.approx(ref.final_cost, rel=1e-6)
    assert "direct-solve fallbacks" in s.report() and "solved with the fp64 sparse direct solver" in s.report()
    assert s.to_dict()["direct_fallbacks"] == s.direct_fallbacks
    none = _solve(g, g.poses, precision="mixed")
    assert none.direct_fallbacks == 0 and re.search(r"^direct-solve fallbacks +0$", none.report(), re.M)


def test_rejected_reduced_precision_step_is_retried_in_fp64():
    """The graph where the first fp32 step was rejected and fp32 LM then ended 2.9 % above fp64 LM."""
    g = random_pose_graph(1500, "se2", 4, odom_sigma_r=0.2, max_loops=40, loop_prob=0.3).graph
    ref = _solve(g, g.poses, precision="fp64", linear_solver="cholesky", max_iterations=2)
    s = _solve(g, g.poses, precision="fp32", max_iterations=2, cg_tolerance_far=None)
    assert s.precision_fallbacks >= 1 and s.history[0]["accepted"]
    assert ref.history[0]["accepted"]
    off = _solve(g, g.poses, precision="fp32", max_iterations=2, cg_tolerance_far=None, precision_fallback=False)
    assert not off.history[0]["accepted"]  # without the retry: the step LM rejects
