"""The generated pose graphs used by issue 17's tests and benchmarks."""

from __future__ import annotations

import numpy as np
import pytest

from mpslam_ros.geometry import lie
from mpslam_ros.problems.graph_synth import graph_from_spec, random_pose_graph


@pytest.mark.parametrize("kind", ["se2", "se3"])
def test_vertices_are_the_odometry_chain_and_loops_close_on_the_ground_truth(kind):
    s = random_pose_graph(400, kind, 3, loop_prob=0.5, level_prob=0.0, odom_sigma_t=1e-12, odom_sigma_r=1e-12, loop_sigma_t=1e-12,
                          loop_sigma_r=1e-12)
    g, gt = s.graph, s.ground_truth
    assert g.num_edges > g.num_poses - 1  # loops exist
    inv = lie.se2_inverse if kind == "se2" else lie.se3_inverse
    for k in range(g.num_edges):  # noise-free: every edge is exact on the ground truth
        assert np.allclose(inv(gt[g.edge_i[k]]) @ gt[g.edge_j[k]], g.measurements[k], atol=1e-9)
    assert np.allclose(g.poses, gt, atol=1e-6)  # the chain of exact odometry is the ground truth
    assert np.all(g.edge_j[g.num_poses - 1:] - g.edge_i[g.num_poses - 1:] >= 20)  # min_gap


def test_spec_names_a_reproducible_graph_and_bad_specs_are_refused():
    a = graph_from_spec("synth:se2:300:5:odom_sigma_r=0.1:max_loops=7")
    b = random_pose_graph(300, "se2", 5, odom_sigma_r=0.1, max_loops=7)
    assert a.graph.num_edges == b.graph.num_edges <= 299 + 7
    assert np.array_equal(a.graph.measurements, b.graph.measurements) and a.name == a.graph.path
    for bad in ("se2:300:5", "synth:se2:300", "synth:se2:300:5:odom_sigma_r", "synth:se2:300:5:colour=1",
                "synth:so3:300:5"):
        with pytest.raises(ValueError):
            graph_from_spec(bad)


def test_outliers_are_wrong_loops():
    s = random_pose_graph(600, "se2", 2, loop_prob=0.5, outlier_fraction=0.5, odom_sigma_t=1e-12, odom_sigma_r=1e-12,
                          loop_sigma_t=1e-12, loop_sigma_r=1e-12)
    g, gt = s.graph, s.ground_truth
    loops = range(g.num_poses - 1, g.num_edges)
    wrong = [k for k in loops if not np.allclose(lie.se2_inverse(gt[g.edge_i[k]]) @ gt[g.edge_j[k]],
                                                g.measurements[k], atol=1e-6)]
    assert 0.2 * len(loops) < len(wrong) < 0.8 * len(loops)
