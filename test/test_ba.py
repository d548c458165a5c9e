"""Bundle adjustment: Jacobians vs finite differences through the retraction, recovery of a known
window from noisy data (CGNR in every precision and the fp64 Schur reference), BAL, bad input."""

import os

import numpy as np
import pytest

from mpslam_ros.io.bal import read_bal
from mpslam_ros.problems.ba import BALProblemModel, WindowProblem, solve_bal, solve_window
from mpslam_ros.problems.window_synth import make_window
from mpslam_ros.solvers.lm import SolverOptions


def _fd_check(problem, n_cols=30, h=1e-6):
    r0, Ja, Jb = problem.evaluate(True)
    na = problem.n_cams * problem.dim_a
    n = na + problem.n_points * 3
    state = problem.get_state()
    rng = np.random.default_rng(0)
    free_cams = np.nonzero(~problem.fixed_cams)[0]
    cols = list(rng.choice(free_cams, 3) * problem.dim_a + rng.integers(0, problem.dim_a, 3))
    cols += list(na + rng.choice(n - na, n_cols, replace=False))
    cols += [free_cams[0] * problem.dim_a + d for d in range(problem.dim_a)]
    for col in cols:
        d = np.zeros(n)
        d[col] = h
        problem.retract(d)
        rp = problem.evaluate(False)[0]
        problem.set_state(state)
        problem.retract(-d)
        rm = problem.evaluate(False)[0]
        problem.set_state(state)
        num = (rp - rm) / (2 * h)
        ana = np.zeros_like(r0)
        if col < na:
            c, k = divmod(col, problem.dim_a)
            m = problem.obs_cam == c
            ana[m] = Ja[m, :, k]
        else:
            j, k = divmod(col - na, 3)
            m = problem.obs_pt == j
            ana[m] = Jb[m, :, k]
        scale = max(1.0, np.abs(ana).max())
        assert np.abs(num - ana).max() <= 1e-4 * scale, f"column {col}"


@pytest.mark.parametrize("stereo", [False, True])
def test_window_jacobians_match_finite_differences(stereo):
    w = make_window(1, num_keyframes=12, num_landmarks=60, stereo=stereo)
    p = WindowProblem(*w.solve_args())
    assert p.residual_dim == (3 if stereo else 2)
    _fd_check(p)


def test_bal_jacobians_match_finite_differences(data_dir):
    _fd_check(BALProblemModel(read_bal(data_dir / "ba" / "problem-49-1800-pre.txt")), h=1e-7)


def _rms_errors(w, T, P):
    free = ~w.fixed_cams
    dt = np.linalg.norm(T[free, :3, 3] - w.T_cw_true[free, :3, 3], axis=1)
    dp = np.linalg.norm(P - w.points_true, axis=1)
    # median: far landmarks (8 m, 0.11 m baseline) keep ~0.5 m depth noise at the optimum
    return np.sqrt(np.mean(dt ** 2)), np.median(dp)


@pytest.mark.parametrize("precision", ["fp64", "fp32", "mixed"])
@pytest.mark.parametrize("stereo", [False, True])
def test_window_recovers_known_geometry(precision, stereo):
    w = make_window(5, num_keyframes=20, num_landmarks=120, stereo=stereo)
    e_t0, e_p0 = _rms_errors(w, w.T_cw_init, w.points_init)
    T, P, s = solve_window(*w.solve_args(), options=SolverOptions(
        precision=precision, preconditioner="block_jacobi", max_iterations=30))
    e_t, e_p = _rms_errors(w, T, P)
    if stereo:  # metric depth: geometry is recovered (mono windows leave landmark depth weak)
        assert e_t < 0.2 * e_t0 and e_p < 0.8 * e_p0, (e_t0, e_t, e_p0, e_p)
    # at the optimum the cost is about the pixel-noise level: 0.5 * rows * sigma^2
    rows = w.num_observations * (3 if stereo else 2)
    assert s.final_cost < 0.5 * rows * w.pixel_noise ** 2 * 1.2
    ref = solve_window(*w.solve_args(), options=SolverOptions(linear_solver="schur", max_iterations=30))[2]
    assert abs(s.final_cost - ref.final_cost) <= 1e-3 * ref.final_cost


def test_naive_fp16_fails_where_mixed_succeeds():
    w = make_window(2, num_keyframes=15, num_landmarks=80)
    opts = dict(preconditioner="block_jacobi", max_iterations=10)
    naive = solve_window(*w.solve_args(), options=SolverOptions(precision="fp16", **opts))[2]
    mixed = solve_window(*w.solve_args(), options=SolverOptions(precision="mixed", **opts))[2]
    assert mixed.final_cost < 0.01 * naive.final_cost


def test_bal_mixed_matches_schur(data_dir):
    bal = read_bal(data_dir / "ba" / "problem-49-1800-pre.txt")
    out, s = solve_bal(bal, SolverOptions(precision="mixed", preconditioner="block_jacobi", max_iterations=30))
    _, ref = solve_bal(bal, SolverOptions(linear_solver="schur", max_iterations=30))
    assert s.final_cost <= 1.01 * ref.final_cost
    assert ref.final_cost < 0.05 * ref.initial_cost
    assert out.cameras.shape == bal.cameras.shape and np.isfinite(out.points).all()


def test_dense_schur_widens_fp16_jacobian_in_a_zero_cost_valley(data_dir):
    """dubrovnik-3-7 (38 residuals, 48 parameters): fp16 rounding bent mixed's steps in the valley of exact
    solutions (197 LM iterations to zero cost, fp64 94); widened to fp32 it converges like fp64. VO windows
    never trigger the widening."""
    from mpslam_ros.problems.ba import ba_options

    bal = read_bal(data_dir / "ba" / "dubrovnik-3-7-pre.txt")
    _, s = solve_bal(bal, ba_options(linear_solver="dense_schur", precision="mixed", max_iterations=120))
    assert s.jacobian_widened_at >= 0
    assert s.converged and s.final_cost < 1e-12 * s.initial_cost
    for seed in range(3):
        _, _, sw = solve_window(*make_window(seed).solve_args(),
                                options=ba_options(linear_solver="dense_schur", precision="mixed"))
        assert sw.jacobian_widened_at == -1


def test_bad_window_input_names_the_input():
    w = make_window(0, num_keyframes=6, num_landmarks=20, track_length=(3, 6))
    args = list(w.solve_args())
    bad = args[4].copy()
    bad[3, 1] = np.nan
    with pytest.raises(ValueError, match=r"obs_uv: non-finite value at index \(3, 1\)"):
        WindowProblem(*args[:4], bad, *args[5:])
    pts = args[3].copy()
    pts[5] = 999
    with pytest.raises(ValueError, match="obs_pt index out of range.*observation 5"):
        WindowProblem(*args[:3], pts, *args[4:])


def test_vo_start_is_previous_solution_plus_tracked_keyframe():
    w = make_window(3, num_keyframes=15, num_landmarks=80, init="vo")
    ind = make_window(3, num_keyframes=15, num_landmarks=80)
    assert np.array_equal(w.obs_uv, ind.obs_uv) and np.array_equal(w.T_cw_true, ind.T_cw_true)
    # the older keyframes come from a converged solve: their relative motions are far closer to the
    # truth than the independent perturbation's
    def rel_err(T):
        rel = np.linalg.inv(T[:-2]) @ T[1:-1]
        rel_true = np.linalg.inv(w.T_cw_true[:-2]) @ w.T_cw_true[1:-1]
        return np.median(np.linalg.norm(rel[:, :3, 3] - rel_true[:, :3, 3], axis=1))
    assert rel_err(w.T_cw_init) < 0.2 * rel_err(ind.T_cw_init)
    assert np.array_equal(w.T_cw_init[w.fixed_cams], w.T_cw_true[w.fixed_cams])
    with pytest.raises(ValueError, match="init must be"):
        make_window(0, init="far")


@pytest.mark.parametrize("seed", [0, 1])
def test_ba_options_mixed_converges_to_fp64_minimum(seed):
    from mpslam_ros.problems.ba import ba_options

    w = make_window(seed, init="vo")
    ref = solve_window(*w.solve_args(), options=SolverOptions(linear_solver="schur", max_iterations=30,
                                                              function_tolerance=1e-14))[2]
    for precision in ("fp64", "mixed"):
        s = solve_window(*w.solve_args(), options=ba_options(precision=precision))[2]
        assert s.converged and s.iterations <= 10, s.termination
        assert abs(s.final_cost - ref.final_cost) <= 1e-6 * ref.final_cost, (precision, s.final_cost, ref.final_cost)


def test_ceres_solves_the_same_window():
    pytest.importorskip("pycolmap")
    from mpslam_ros.bench.ba import ceres_window

    w = make_window(4, num_keyframes=15, num_landmarks=80, init="vo")
    ref = solve_window(*w.solve_args(), options=SolverOptions(linear_solver="schur", max_iterations=30,
                                                              function_tolerance=1e-14))[2]
    for ls in ("DENSE_SCHUR", "ITERATIVE_SCHUR"):
        cost, its, dt, _ = ceres_window(w, ls, 30, 1e-12)
        assert abs(cost - ref.final_cost) <= 1e-6 * ref.final_cost, (ls, cost, ref.final_cost)
        assert its >= 1 and dt > 0


def test_ceres_bal_matches_schur(data_dir):
    pytest.importorskip("pycolmap")
    from mpslam_ros.bench.ba import ceres_bal

    bal = read_bal(data_dir / "ba" / "problem-49-1800-pre.txt")
    _, ref = solve_bal(bal, SolverOptions(linear_solver="schur", max_iterations=30))
    cost, its, _, _ = ceres_bal(bal, "DENSE_SCHUR", 30, 1e-10)
    # COLMAP's cost zeroes points behind a camera (the BAL cost does not): Ceres' solution is a few %
    # above the BAL minimum under the BAL cost, and never below it
    assert ref.final_cost * (1 - 1e-9) <= cost <= 1.05 * ref.final_cost, (cost, ref.final_cost)
    assert cost < 0.02 * ref.initial_cost and its >= 1


def test_bench_runs_blas_single_threaded():
    import sys

    from mpslam_ros.bench.ba import limit_blas_threads

    if not sys.platform.startswith("linux"):
        pytest.skip("reads /proc/self/maps")
    try:
        assert limit_blas_threads() >= 1  # numpy's and scipy's OpenBLAS
    finally:
        # the setting is process-wide: give later tests OpenBLAS' default back (one thread per core);
        # test_fp64_gradient_takes_fp32_and_mixed_to_the_fp64_optimum[1] depended on it (fresh-clone CI, 6 Dec)
        limit_blas_threads(os.cpu_count() or 1)


@pytest.mark.parametrize("seed", [0, 1])
def test_fp64_gradient_takes_fp32_and_mixed_to_the_fp64_optimum(seed):
    """Iterative refinement: with the fp64 gradient as CG right-hand side, fp32 and mixed LM converge
    (tiny step) onto the fp64 optimum; with the residual-precision J^T r they stall near it."""
    from mpslam_ros.problems.ba import ba_options

    w = make_window(seed, init="vo")
    T_ref, P_ref, ref = solve_window(*w.solve_args(), options=SolverOptions(
        linear_solver="schur", max_iterations=50, function_tolerance=1e-16, parameter_tolerance=1e-14))
    # (CGNR: the Schur solvers always take the fp64 gradient, there is no J^T r variant to compare)
    tight = dict(linear_solver="cgnr", max_iterations=40, function_tolerance=1e-16, parameter_tolerance=1e-13,
                 cg_tolerance=0.01)
    for precision in ("fp32", "mixed"):
        T, P, s = solve_window(*w.solve_args(), options=ba_options(precision=precision, fp64_gradient=True, **tight))
        assert s.converged, (precision, s.termination)
        assert abs(s.final_cost - ref.final_cost) <= 1e-12 * ref.final_cost
        assert np.abs(P - P_ref).max() < 1e-5 and np.abs(T[:, :3, 3] - T_ref[:, :3, 3]).max() < 1e-5
        off = solve_window(*w.solve_args(), options=ba_options(precision=precision, fp64_gradient=False, **tight))[2]
        assert not off.converged and off.iterations == 40  # stalls on its rounded gradient


def test_bench_ba_prints_goal_summary_and_fp16_table(capsys):
    """``mpslam bench ba --generate`` solves a generated problem with the selected rows side by side, labels
    the seed (0: tuning), and prints the goal summary (default row within 1 % of the best cost) and the
    fp16-vs-fp32 table with per-product and per-solve columns."""
    from mpslam_ros.cli import main as mpslam

    rows = "dense_schur fp32,dense_schur mixed,iterative_schur fp32,iterative_schur mixed,ceres SPARSE_SCHUR"
    assert mpslam(["bench", "ba", "--generate", "1e3", "--seed", "0", "--modes", rows, "--products",
                   "--max-iterations", "20"]) == 0
    out = capsys.readouterr().out
    name = "generated-1e+03-seed0 (tuning)"
    header = next(line for line in out.splitlines() if line.startswith(name + ":"))
    assert "20 cameras" in header
    goal = next(line for line in out.splitlines() if line.startswith(name) and "(default)" in line)
    assert "dense_schur mixed" in goal  # 20 cameras x 9 columns: auto picks dense
    cost_ratio = float(goal.split("(default)")[1].split()[0])
    assert 1.0 <= cost_ratio <= 1.01, goal
    fp16 = out.split("fp16 vs fp32 Jacobian storage")[1]
    line = next(line for line in fp16.splitlines() if line.startswith(name))
    assert line.count("|") == 2 and "(" in line  # per-product | iterative per-solve (with iterations) | dense
    assert "cgnr" not in out.split(name + ":")[1].split("t/ref")[0]  # only the rows asked for
