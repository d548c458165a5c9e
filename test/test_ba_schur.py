"""Schur-complement BA (solvers/schur_ba.py): dense and matrix-free reduced camera system, every precision,
reach the same minimum as the fp64 full-J CGNR; the robust loss and the auto choice work."""

from __future__ import annotations

import numpy as np
import pytest

from mpslam_ros.problems.ba import ba_options, solve_bal, solve_window
from mpslam_ros.problems.bal_synth import make_bal
from mpslam_ros.problems.window_synth import make_window


@pytest.mark.parametrize("solver", ["dense_schur", "iterative_schur"])
@pytest.mark.parametrize("precision", ["fp64", "mixed"])
def test_window_schur_reaches_the_fp64_cgnr_minimum(solver, precision):
    w = make_window(7, init="vo")
    _, _, ref = solve_window(*w.solve_args(), options=ba_options(linear_solver="cgnr", precision="fp64",
                                                                 function_tolerance=1e-10))
    T, P, s = solve_window(*w.solve_args(), options=ba_options(linear_solver=solver, precision=precision))
    assert s.converged, s.termination
    assert s.initial_cost > 1.01 * s.final_cost
    assert abs(s.final_cost - ref.final_cost) <= 1e-6 * ref.final_cost
    assert np.allclose(T[w.fixed_cams], w.T_cw_init[w.fixed_cams])  # the gauge stays put
    assert s.linear_solver == solver and (s.cg_iterations > 0) == (solver == "iterative_schur")


def test_generated_bal_auto_and_robust_loss():
    bal = make_bal(3, num_cameras=30, num_points=600)
    assert bal.num_observations > 1000
    _, ref = solve_bal(bal, ba_options(linear_solver="cgnr", precision="fp64", max_iterations=50))
    _, s = solve_bal(bal, ba_options(linear_solver="auto", max_iterations=50))
    assert s.linear_solver == "dense_schur"
    assert abs(s.final_cost - ref.final_cost) <= 1e-4 * ref.final_cost
    _, sh = solve_bal(bal, ba_options(linear_solver="iterative_schur", robust_loss="huber", robust_scale=1.0,
                                      max_iterations=50))
    assert sh.converged and sh.final_cost < sh.initial_cost
