"""Geodesic acceleration of LM steps (mpslam_ros.solvers.geodesic) on pose graphs."""

from __future__ import annotations

import numpy as np
import pytest

from mpslam_ros.problems.graph_synth import random_pose_graph
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
from mpslam_ros.solvers.geodesic import acceleration_kept, residual_second_derivative
from mpslam_ros.solvers.lm import SolverOptions, solve


def _problem(g, poses0):
    return PoseGraphProblem(g.kind, poses0.copy(), g.edge_i, g.edge_j, g.measurements, g.information,
                            fixed=np.array([0]))


def test_second_derivative_matches_central_differences():
    """r_vv by the forward difference at h = 0.1 against a central second difference at a small step."""
    g = random_pose_graph(60, "se3", 3, odom_sigma_r=0.1, loop_prob=0.5).graph
    p = _problem(g, g.poses)
    rng = np.random.default_rng(0)
    v = np.zeros(p.poses.shape[0] * 6)
    v[6:] = 0.05 * rng.standard_normal(v.size - 6)
    r0, Ja, Jb = p.evaluate(True)
    before = p.get_state()
    Jv = np.einsum("kab,kb->ka", Ja, v.reshape(-1, 6)[g.edge_i]) + np.einsum("kab,kb->ka", Jb, v.reshape(-1, 6)[g.edge_j])
    rvv = residual_second_derivative(p, before, r0.ravel(), Jv.ravel(), v)
    np.testing.assert_array_equal(p.get_state(), before)  # the state is restored
    eps = 1e-3
    p.retract(eps * v)
    rp = p.evaluate(False)[0].ravel()
    p.set_state(before)
    p.retract(-eps * v)
    rm = p.evaluate(False)[0].ravel()
    central = (rp - 2.0 * r0.ravel() + rm) / eps ** 2
    assert np.linalg.norm(rvv - central) <= 0.2 * np.linalg.norm(central)
    assert np.linalg.norm(central) > 0


def test_large_or_nonfinite_corrections_are_dropped():
    v = np.ones(4)
    assert acceleration_kept(v, 0.5 * v, 0.75)
    assert not acceleration_kept(v, 0.8 * v, 0.75)
    assert not acceleration_kept(v, np.array([np.nan, 0, 0, 0]), 0.75)


@pytest.mark.parametrize("precision", ["fp64", "mixed"])
def test_acceleration_shortens_the_crawl_from_an_odometry_guess(precision):
    """The generated 800-pose 2-D graph from its odometry chain: plain LM crawls near the minimum (~60 LM
    iterations); accelerated steps reach the same minimum in about half as many."""
    g = random_pose_graph(800, "se2", 0, odom_sigma_r=0.3, max_loops=20, loop_prob=0.3).graph
    plain = solve(_problem(g, g.poses), pgo_options(SolverOptions(precision=precision, geodesic_acceleration=False)))
    fast = solve(_problem(g, g.poses), pgo_options(SolverOptions(precision=precision)))
    assert plain.converged and fast.converged
    assert plain.geodesic_steps == 0 and fast.geodesic_steps > 0
    assert fast.iterations <= 0.7 * plain.iterations, (fast.iterations, plain.iterations)
    assert fast.final_cost == pytest.approx(plain.final_cost, rel=1e-6)
    assert "geodesic acceleration" in fast.report()


def test_no_acceleration_with_a_robust_loss():
    g = random_pose_graph(300, "se2", 2, odom_sigma_r=0.2, loop_prob=0.3).graph
    s = solve(_problem(g, g.poses), pgo_options(SolverOptions(robust_loss="huber", robust_scale=3.0)))
    assert s.successful_iterations > 0 and s.geodesic_steps == 0 and s.geodesic_dropped == 0
