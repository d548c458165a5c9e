"""The small-problem BA loop (solvers/schur_ba_small.py): dense_schur's LM loop in one numba call takes the
same steps as the Python loop (same costs, iterations, termination, fp16 widening), the threshold picks
the path, and the summary says which ran."""

from __future__ import annotations

import numpy as np
import pytest

from mpslam_ros.io.bal import read_bal
from mpslam_ros.problems.ba import BALProblemModel, WindowProblem, ba_options, solve_bal, solve_window
from mpslam_ros.problems.bal_synth import make_bal
from mpslam_ros.problems.window_synth import make_window
from mpslam_ros.solvers.schur_ba_small import small_schur_applies

PYTHON_LOOP = dict(small_problem_schur_columns=0)


def _same_run(a, b, rtol: float) -> None:
    """a (Python loop) and b (small loop) took the same LM steps."""
    assert not a.small_problem_loop and b.small_problem_loop
    assert b.linear_solver == a.linear_solver == "dense_schur"
    assert abs(b.final_cost - a.final_cost) <= rtol * a.final_cost
    assert b.initial_cost == pytest.approx(a.initial_cost, rel=1e-12)
    assert (b.iterations, b.successful_iterations) == (a.iterations, a.successful_iterations)
    assert [h["accepted"] for h in b.history] == [h["accepted"] for h in a.history]
    assert b.termination.split(" ")[:2] == a.termination.split(" ")[:2] and b.converged == a.converged
    assert b.jacobian_widened_at == a.jacobian_widened_at and b.jacobian_bytes == a.jacobian_bytes
    assert len(b.history) == b.iterations and b.history[-1]["cost"] == b.final_cost
    assert b.time_s > 0 and b.evaluation_time_s > 0 and b.linear_solve_time_s > 0


@pytest.mark.parametrize("precision", ["fp64", "mixed"])
def test_small_loop_matches_python_loop_on_a_generated_bal(precision):
    bal = make_bal(11, num_cameras=8, num_points=120)
    out_a, a = solve_bal(bal, ba_options(precision=precision, max_iterations=50, **PYTHON_LOOP))
    out_b, b = solve_bal(bal, ba_options(precision=precision, max_iterations=50))
    _same_run(a, b, 1e-10)
    assert b.converged and b.final_cost < 0.5 * b.initial_cost
    assert np.allclose(out_b.points, out_a.points, rtol=1e-6, atol=1e-8)
    assert np.allclose(out_b.cameras, out_a.cameras, rtol=1e-6, atol=1e-8)
    assert ("small problem" in b.report()) and ("small problem" not in a.report())


def test_small_loop_matches_python_loop_on_dubrovnik(data_dir):
    """38 residuals for 48 parameters: the valley of exact solutions amplifies last-bit differences (LAPACK's
    blocked triangular solve vs the loop's), so fp64 agrees to ~1e-10 at the 50-iteration cap and mixed
    (fp16-rounded J) to ~1e-4; to convergence both reach zero cost with the fp16 widening at the same step."""
    bal = read_bal(data_dir / "ba" / "dubrovnik-3-7-pre.txt")
    out_a, a = solve_bal(bal, ba_options(precision="fp64", max_iterations=50, **PYTHON_LOOP))
    out_b, b = solve_bal(bal, ba_options(precision="fp64", max_iterations=50))
    _same_run(a, b, 1e-8)
    assert b.termination == "maximum iterations (50) reached"
    assert np.allclose(out_b.points, out_a.points, rtol=1e-5, atol=1e-6)
    _, a = solve_bal(bal, ba_options(precision="mixed", max_iterations=50, **PYTHON_LOOP))
    _, b = solve_bal(bal, ba_options(precision="mixed", max_iterations=50))
    _same_run(a, b, 1e-3)
    assert b.jacobian_widened_at >= 0
    _, a = solve_bal(bal, ba_options(precision="mixed", max_iterations=150, **PYTHON_LOOP))
    _, b = solve_bal(bal, ba_options(precision="mixed", max_iterations=150))
    for s in (a, b):
        assert s.converged and s.final_cost < 1e-12 * s.initial_cost, s.termination
    assert abs(a.iterations - b.iterations) <= 5


def test_small_loop_matches_python_loop_on_a_window():
    w = make_window(21, num_keyframes=12, num_landmarks=80, stereo=True, init="vo")
    T_a, P_a, a = solve_window(*w.solve_args(), options=ba_options(**PYTHON_LOOP))
    T_b, P_b, b = solve_window(*w.solve_args(), options=ba_options())
    _same_run(a, b, 1e-10)
    assert np.allclose(T_b, T_a, atol=1e-9) and np.allclose(P_b, P_a, atol=1e-8)
    assert np.array_equal(T_b[w.fixed_cams], w.T_cw_init[w.fixed_cams])  # the gauge stays put


def test_threshold_selects_the_path():
    bal = make_bal(12, num_cameras=5, num_points=60)
    p = BALProblemModel(bal)
    cols = 5 * 9
    assert small_schur_applies(p, ba_options(small_problem_schur_columns=cols), "dense_schur")
    assert not small_schur_applies(p, ba_options(small_problem_schur_columns=cols - 1), "dense_schur")
    assert not small_schur_applies(p, ba_options(), "iterative_schur")
    assert not small_schur_applies(p, ba_options(robust_loss="huber"), "dense_schur")
    assert solve_bal(bal, ba_options(small_problem_schur_columns=cols))[1].small_problem_loop
    assert not solve_bal(bal, ba_options(small_problem_schur_columns=cols - 1))[1].small_problem_loop
    assert not solve_bal(bal, ba_options(robust_loss="huber"))[1].small_problem_loop
    # the bench's 50-keyframe windows (48 free, 288 columns) and the VO's (robust loss) keep the Python loop
    w = make_window(0)
    assert not small_schur_applies(WindowProblem(*w.solve_args()), ba_options(), "dense_schur")
    assert not solve_window(*w.solve_args(), options=ba_options())[2].small_problem_loop
    small = make_window(0, num_keyframes=10, num_landmarks=40)
    assert solve_window(*small.solve_args(), options=ba_options())[2].small_problem_loop
    assert not solve_window(*small.solve_args(), options=ba_options(robust_loss="huber"))[2].small_problem_loop


def test_small_loop_stopping_rules():
    bal = make_bal(13, num_cameras=4, num_points=40)
    _, s = solve_bal(bal, ba_options(max_iterations=2))
    assert s.small_problem_loop and s.iterations == 2 and s.termination == "maximum iterations (2) reached"
    assert not s.converged
    _, s = solve_bal(bal, ba_options(max_iterations=100, gradient_tolerance=1e300))
    assert s.iterations == 0 and s.converged and s.termination.startswith("converged: gradient max-norm")
    _, s = solve_bal(bal, ba_options(max_iterations=100))
    assert s.converged and s.termination.startswith("converged: relative cost change")
    bad = make_bal(13, num_cameras=4, num_points=40)
    bad.obs_uv[0, 0] = np.inf
    _, s = solve_bal(bad, ba_options())
    assert s.small_problem_loop and s.iterations == 0 and s.termination.startswith("failure: initial cost")
