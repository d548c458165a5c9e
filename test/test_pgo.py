"""Pose-graph optimisation on the shared g2o graphs (against GTSAM) and the PoseGraph API."""

import json
import threading

import numpy as np
import pytest

import argparse

from mpslam_ros.cli import pgo as pgo_cli
from mpslam_ros.geometry import lie
from mpslam_ros.io.g2o import initial_guess, read_g2o
from mpslam_ros.problems.pgo import PoseGraph, PoseGraphProblem, optimize_pose_graph, pgo_options, pose_graph_cost
from mpslam_ros.solvers.lm import SolverOptions, solve


def _problem(g, poses):
    return PoseGraphProblem(g.kind, poses, g.edge_i, g.edge_j, g.measurements, g.information)


@pytest.mark.parametrize("name", ["smallGrid3D", "intel"])
def test_cost_equals_gtsam_graph_error(data_dir, name):
    gtsam = pytest.importorskip("gtsam")
    from mpslam_ros.bench.pgo import gtsam_graph

    g = read_g2o(data_dir / "pgo" / f"{name}.g2o")
    fg, values = gtsam_graph(g, g.poses)  # the prior on pose 0 has zero error at these values
    assert np.isclose(_problem(g, g.poses).cost(), fg.error(values), rtol=1e-9)


def test_jacobians_match_finite_differences(data_dir):
    for name in ("tinyGrid3D", "intel"):
        g = read_g2o(data_dir / "pgo" / f"{name}.g2o")
        p = _problem(g, g.poses[:] if name == "tinyGrid3D" else g.poses)
        k = 3
        r0, Ja, Jb = p.evaluate(True)
        d = p.dim_a
        exp = lie.se3_exp if g.kind == "se3" else lie.se2_exp
        for which, J in ((p.edge_i[k], Ja[k]), (p.edge_j[k], Jb[k])):
            num = np.zeros((d, d))
            for c in range(d):
                delta = np.zeros(d)
                delta[c] = 1e-6
                for sign in (1, -1):
                    q = _problem(g, p.poses)
                    q.poses[which] = q.poses[which] @ exp(sign * delta)
                    num[:, c] += sign * q.evaluate(False)[0][k] / 2e-6
            assert np.allclose(num, J, atol=1e-5 * max(1.0, np.abs(J).max()))


@pytest.mark.parametrize("name", ["smallGrid3D", "intel"])
def test_fp64_and_mixed_match_gtsam_optimum(data_dir, name):
    gtsam = pytest.importorskip("gtsam")
    from mpslam_ros.bench.pgo import run_gtsam

    g = read_g2o(data_dir / "pgo" / f"{name}.g2o")
    poses0 = initial_guess(g, "chordal")
    ref = pose_graph_cost(g.kind, run_gtsam(g, poses0)["poses"], g.edge_i, g.edge_j, g.measurements, g.information)
    for precision in ("fp64", "mixed"):
        p = _problem(g, poses0)
        s = solve(p, pgo_options(SolverOptions(precision=precision)))
        assert s.converged, s.termination
        assert s.final_cost <= ref * (1 + 1e-4), (precision, s.final_cost, ref)
        assert np.isclose(s.final_cost, p.cost(), rtol=1e-12)


def test_naive_fp16_shows_its_failure(data_dir):
    """smallGrid3D: fp16 CG arithmetic without scaling stalls well above the fp64 optimum."""
    g = read_g2o(data_dir / "pgo" / "smallGrid3D.g2o")
    poses0 = initial_guess(g, "chordal")
    costs = {}
    for precision in ("fp64", "fp16"):
        costs[precision] = solve(_problem(g, poses0), pgo_options(SolverOptions(precision=precision))).final_cost
    assert costs["fp16"] > 1.01 * costs["fp64"]


def _loop_graph(n=60, seed=0, noise=0.01):
    """A noisy square-ish trajectory with odometry edges and a few loop closures, plus its ground truth."""
    rng = np.random.default_rng(seed)
    gt = [np.eye(4)]
    for i in range(n - 1):
        turn = np.pi / 2 if (i + 1) % 15 == 0 else 0.0
        gt.append(gt[-1] @ lie.se3_exp(np.array([0, 0, turn, 1.0, 0, 0])))
    gt = np.stack(gt)
    graph = PoseGraph()
    odo = [np.eye(4)]
    info = np.diag([1 / 0.01 ** 2] * 3 + [1 / 0.05 ** 2] * 3)
    for i in range(n):
        graph.add_pose(odo[-1])
        if i + 1 < n:
            Z = lie.se3_inverse(gt[i]) @ gt[i + 1] @ lie.se3_exp(noise * rng.standard_normal(6))
            odo.append(odo[-1] @ Z)
    for i in range(n - 1):
        graph.add_edge(i, i + 1, lie.se3_inverse(odo[i]) @ odo[i + 1], info)
    loops = [(0, 59), (5, 55), (14, 46), (20, 40)]
    for i, j in loops:
        graph.add_edge(i, j, lie.se3_inverse(gt[i]) @ gt[j] @ lie.se3_exp(noise * rng.standard_normal(6)), info,
                       robust=True)
    return graph, gt


def _trans_err(poses, gt):
    return float(np.abs(poses[:, :3, 3] - gt[:, :3, 3]).max())


def test_pose_graph_api_loops_warm_start_and_threads():
    graph, gt = _loop_graph()
    assert graph.num_poses == 60 and graph.num_edges == 63
    before = _trans_err(graph.poses, gt)
    poses, s = optimize_pose_graph(graph, SolverOptions(precision="mixed"))
    assert poses.shape == (60, 4, 4) and poses.dtype == np.float64
    assert s.converged and _trans_err(poses, gt) < 0.3 * before
    assert np.allclose(poses[0], graph.poses[0])  # first pose fixed (gauge)
    # warm start from the optimum: converges immediately
    poses2, s2 = optimize_pose_graph(graph, SolverOptions(precision="mixed"), initial=poses)
    assert s2.iterations <= 2 and s2.final_cost <= s.final_cost * (1 + 1e-9)
    # two solves in background threads give the same answer as in the foreground
    results = {}

    def work(key):
        results[key] = optimize_pose_graph(graph, SolverOptions(precision="mixed"))[0]

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert all(np.allclose(results[k], poses, atol=1e-9) for k in range(2))


def test_robust_loss_rejects_a_false_loop_closure():
    graph, gt = _loop_graph(seed=1)
    info = np.diag([1 / 0.01 ** 2] * 3 + [1 / 0.05 ** 2] * 3)
    graph.add_edge(10, 50, lie.se3_exp(np.array([0.5, 0, 0, 3.0, 2.0, 0])), info, robust=True)  # wrong loop
    plain, _ = optimize_pose_graph(graph, SolverOptions(precision="fp64"))
    robust, _ = optimize_pose_graph(graph, SolverOptions(precision="fp64", robust_loss="cauchy", robust_scale=3.0))
    assert _trans_err(robust, gt) < 0.5 * _trans_err(plain, gt)


def test_pose_graph_bad_inputs():
    g = PoseGraph()
    g.add_pose(np.eye(4))
    g.add_pose(np.eye(4))
    with pytest.raises(ValueError, match="edge 0"):
        g.add_edge(0, 5, np.eye(4), np.eye(6))
    bad = np.eye(4)
    bad[0, 3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        g.add_edge(0, 1, bad, np.eye(6))
    with pytest.raises(ValueError, match="positive definite"):
        g.add_edge(0, 1, np.eye(4), -np.eye(6))
    with pytest.raises(ValueError, match="pose 2"):
        g.add_pose(np.full((4, 4), np.nan))
    with pytest.raises(ValueError, match="empty pose graph"):
        optimize_pose_graph(g)


def cli_main(argv):
    """Run ``mpslam pgo`` through its own parser (independent of the other subcommands' imports)."""
    assert argv[0] == "pgo"
    parser = argparse.ArgumentParser(prog="mpslam pgo")
    pgo_cli.add_arguments(parser)
    return pgo_cli.main(parser.parse_args(argv[1:]))


def test_cli_pgo_json_and_output(data_dir, tmp_path, capsys):
    out = tmp_path / "opt.g2o"
    rc = cli_main(["pgo", str(data_dir / "pgo" / "intel.g2o"), "-o", str(out), "--precision", "mixed",
                   "--init", "chordal", "--json"])
    assert rc == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("poses", "edges", "initial_cost", "final_cost", "iterations", "cg_iterations", "time_s",
                "evaluation_time_s", "preconditioner_time_s", "linear_solve_time_s", "triangular_solve_time_s",
                "termination"):
        assert key in d
    assert d["poses"] == 1728 and d["final_cost"] < d["initial_cost"]
    g = read_g2o(out)
    assert np.isclose(pose_graph_cost(g.kind, g.poses, g.edge_i, g.edge_j, g.measurements, g.information),
                      d["final_cost"], rtol=1e-9)


def test_cli_pgo_reports_malformed_file(tmp_path, capsys):
    bad = tmp_path / "bad.g2o"
    bad.write_text("VERTEX_SE2 0 0 0 0\nVERTEX_SE2 1 1 0 0\nEDGE_SE2 0 1 1 0 x 1 0 0 1 0 1\n")
    assert cli_main(["pgo", str(bad)]) == 2
    assert "bad.g2o:3:" in capsys.readouterr().err


def test_cli_bench_reports_a_bad_input_file(tmp_path, capsys):
    """``mpslam bench kernels|pgo`` name the bad file and exit 2, no traceback."""
    from mpslam_ros.cli import main as mpslam

    bad = tmp_path / "bad.g2o"
    bad.write_text("VERTEX_SE2 0 0 0 0\nEDGE_SE2 0 1 1 0\n")
    assert mpslam(["bench", "kernels", str(tmp_path / "missing.g2o")]) == 2
    assert "missing.g2o: cannot read" in capsys.readouterr().err
    assert mpslam(["bench", "pgo", "--no-gtsam", str(bad)]) == 2
    assert "bad.g2o:2" in capsys.readouterr().err


def test_prior_fixes_the_gauge_like_a_fixed_pose():
    graph, gt = _loop_graph(seed=2)
    fixed_poses, _ = optimize_pose_graph(graph, SolverOptions(precision="fp64"))
    free = PoseGraph(fix_first=False)
    for T in graph.poses:
        free.add_pose(T)
    p = graph.problem()
    for i, j, Zi, R in zip(p.edge_i, p.edge_j, p.Zinv, p.sqrt_info):
        free.add_edge(int(i), int(j), lie.se3_inverse(Zi), R.T @ R)
    with pytest.raises(ValueError, match="gauge is free"):
        optimize_pose_graph(free)
    free.add_prior(0, graph.poses[0], np.eye(6) * 1e8)
    prior_poses, s = optimize_pose_graph(free, SolverOptions(precision="mixed"))
    assert s.converged
    assert np.allclose(prior_poses[:, :3, 3], fixed_poses[:, :3, 3], atol=1e-4)
    # the prior's Jacobian matches finite differences
    q = free.problem(prior_poses)
    q.poses[0] = q.poses[0] @ lie.se3_exp(np.full(6, 1e-3))
    k = free.num_edges - 1
    _, Ja, Jb = q.evaluate(True)
    assert np.all(Jb[k] == 0.0)
    num = np.zeros((6, 6))
    for c in range(6):
        for sign in (1, -1):
            d = np.zeros(6)
            d[c] = sign * 1e-6
            r = free.problem(q.poses)
            r.poses[0] = r.poses[0] @ lie.se3_exp(d)
            num[:, c] += sign * r.evaluate(False)[0][k] / 2e-6
    assert np.allclose(num, Ja[k], rtol=1e-5, atol=1e-3)


def test_slow_fp16_factor_is_widened_and_reported():
    """On a generated SE(3) chain with loops the fresh fp16 factor needs many CG iterations: mixed widens it
    to fp32 (reported in the summary) and reaches the same optimum as with the fp16 factor kept."""
    from mpslam_ros.problems.graph_synth import graph_from_spec
    from mpslam_ros.problems.initialization import choose_initial_guess

    g = graph_from_spec("synth:se3:1000:3:loop_prob=0.3").graph
    poses0 = choose_initial_guess(g, "chordal").poses
    runs = {}
    for limit in (12, 0):
        p = _problem(g, poses0)
        runs[limit] = solve(p, pgo_options(SolverOptions(precision="mixed", fp16_factor_max_cg_iterations=limit)))
    assert runs[12].factor_widened_at >= 0 and "widened to fp32" in runs[12].report()
    assert runs[0].factor_widened_at == -1 and "not widened" in runs[0].report()
    assert runs[12].cg_iterations < runs[0].cg_iterations
    assert abs(runs[12].final_cost - runs[0].final_cost) <= 1e-6 * runs[0].final_cost


def test_slow_fp32_factor_is_widened_to_fp64_without_shift_and_reaches_fp64_cost():
    """On a generated 3,000-pose SE(3) graph mixed's fp32-widened factor (1e-8 shift) still needs many CG
    iterations: it is widened again, to fp64 mode's factor (no shift, fp64 CG), which the summary reports;
    that takes fewer CG iterations than keeping the fp32 factor and ends at the direct fp64 LM's cost."""
    from mpslam_ros.problems.graph_synth import graph_from_spec
    from mpslam_ros.problems.initialization import choose_initial_guess

    g = graph_from_spec("synth:se3:3000:1:loop_prob=0.3").graph
    poses0 = choose_initial_guess(g, "chordal").poses
    direct = solve(_problem(g, poses0), pgo_options(SolverOptions(precision="fp64", linear_solver="cholesky")))
    runs = {limit: solve(_problem(g, poses0), pgo_options(SolverOptions(precision="mixed",
                                                                        fp32_factor_max_cg_iterations=limit)))
            for limit in (12, 0)}
    widened, kept = runs[12], runs[0]
    assert 0 <= widened.factor_widened_at < widened.factor_widened_to_fp64_at
    assert "to fp64 with no shift" in widened.report() and widened.ic_shift == 0.0
    assert kept.factor_widened_at >= 0 and kept.factor_widened_to_fp64_at == -1 and kept.ic_shift > 0.0
    assert "to fp64" not in kept.report()
    assert widened.cg_iterations < kept.cg_iterations
    assert abs(widened.final_cost - direct.final_cost) <= 1e-6 * direct.final_cost


def test_allocation_free_se3_edge_kernels_match_the_lie_functions():
    rng = np.random.default_rng(5)
    for scale in (1e-9, 1e-3, 0.7, 3.14):  # small-angle series, general, near pi
        xi = rng.standard_normal(6)
        xi[:3] *= scale / np.linalg.norm(xi[:3])
        A, B, Z = (lie.se3_exp(rng.standard_normal(6)) for _ in range(3))
        T, E, e = np.empty((4, 4)), np.empty((4, 4)), np.empty(6)
        lie.se3_relative_into(Z, A, B, T, E)
        assert np.allclose(T, lie.se3_inverse(A) @ B, atol=1e-13) and np.allclose(E, Z @ T, atol=1e-13)
        X = lie.se3_exp(xi)
        lie.se3_log_into(X, e)
        assert np.allclose(e, lie.se3_log(X), atol=1e-12)
        P = A.copy()
        lie.se3_retract_into(P, np.concatenate([np.zeros(6), xi]), 6, np.empty((4, 4)))
        assert np.allclose(P, A @ lie.se3_exp(xi), atol=1e-13)


@pytest.mark.parametrize("name", ["tinyGrid3D", "smallGrid3D"])
def test_small_graphs_solve_steps_directly_and_reach_the_same_optimum(data_dir, name):
    """Graphs of at most ``small_problem_direct_columns`` free columns skip CG (tinyGrid3D: the dense step,
    smallGrid3D: the fp64 block factor); the summary says so, and the optimum is the CG path's and the
    direct LM's."""
    g = read_g2o(data_dir / "pgo" / f"{name}.g2o")
    poses0 = initial_guess(g, "chordal")
    ref = solve(_problem(g, poses0), pgo_options(SolverOptions(precision="fp64", linear_solver="cholesky")))
    for precision in ("mixed", "fp32"):
        direct = solve(_problem(g, poses0), pgo_options(SolverOptions(precision=precision)))
        cg = solve(_problem(g, poses0), pgo_options(SolverOptions(precision=precision, small_problem_direct_columns=0)))
        assert direct.small_problem_direct and direct.cg_iterations == 0 and "no CG" in direct.report()
        assert not cg.small_problem_direct and cg.cg_iterations > 0
        for s in (direct, cg):
            assert s.converged, s.termination
            assert abs(s.final_cost - ref.final_cost) <= 1e-8 * ref.final_cost
