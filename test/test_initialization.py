"""``--init auto`` (issue 17): the lower-cost of the file's guess and the chordal relaxation, reported."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from mpslam_ros.io.g2o import read_g2o, write_g2o
from mpslam_ros.problems.graph_synth import random_pose_graph
from mpslam_ros.problems.initialization import choose_initial_guess
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options, pose_graph_cost
from mpslam_ros.solvers.lm import SolverOptions, solve


def _final(g, poses0):
    p = PoseGraphProblem(g.kind, poses0.copy(), g.edge_i, g.edge_j, g.measurements, g.information,
                         fixed=np.array([0]))
    return solve(p, pgo_options(SolverOptions(precision="mixed"))).final_cost, p.poses.copy()


def test_auto_picks_chordal_for_an_odometry_guess_and_gets_the_better_map():
    g = random_pose_graph(800, "se2", 0, odom_sigma_r=0.3, max_loops=20, loop_prob=0.3).graph
    guess = choose_initial_guess(g, "auto")
    assert guess.method == "chordal" and set(guess.costs) == {"file", "chordal"}
    assert guess.costs["chordal"] < guess.costs["file"]
    assert "auto: lowest initial cost of file" in guess.describe()
    from_file, _ = _final(g, g.poses)
    from_auto, _ = _final(g, guess.poses)
    assert from_auto < 0.8 * from_file  # 26.5 vs 37.6: another, better local minimum


def test_auto_keeps_a_file_guess_that_is_already_optimal(data_dir, tmp_path):
    g = read_g2o(data_dir / "pgo" / "intel.g2o")
    _, opt = _final(g, g.poses)
    path = tmp_path / "intel_opt.g2o"
    write_g2o(path, g, opt)
    h = read_g2o(path)
    guess = choose_initial_guess(h, "auto")
    assert guess.method == "file" and guess.costs["file"] < guess.costs["chordal"]
    assert np.array_equal(guess.poses, h.poses)
    edge_only = read_g2o(data_dir / "pgo" / "kitti_00.g2o")
    assert choose_initial_guess(edge_only, "auto").costs.keys() == {"chordal"}
    with pytest.raises(ValueError, match="unknown initialisation"):
        choose_initial_guess(g, "best")


def test_cli_default_init_is_auto_and_reported(data_dir):
    out = subprocess.run([sys.executable, "-m", "mpslam_ros", "pgo", str(data_dir / "pgo" / "intel.g2o"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    g = read_g2o(data_dir / "pgo" / "intel.g2o")
    assert d["init"] == "chordal" and d["init_costs"]["file"] == pytest.approx(
        pose_graph_cost(g.kind, g.poses, g.edge_i, g.edge_j, g.measurements, g.information))
    assert d["init_costs"]["chordal"] < d["init_costs"]["file"]
    text = subprocess.run([sys.executable, "-m", "mpslam_ros", "pgo", str(data_dir / "pgo" / "intel.g2o")],
                          capture_output=True, text=True, timeout=300)
    assert "init chordal (auto: lowest initial cost of file 276.998, chordal 23.8684)" in text.stdout
