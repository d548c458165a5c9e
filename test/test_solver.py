"""The Levenberg-Marquardt driver on problems with known answers, in every precision preset."""

import json

import numpy as np
import pytest

from mpslam_ros.solvers.lm import SolverOptions, robust_weights, solve
from mpslam_ros.solvers.precision import get_preset
from mpslam_ros.solvers.problem import LeastSquaresProblem, check_problem


class LinearProblem:
    """r_k = A_k x_a + B_k x_b - c_k over 2-vectors x (a linear least-squares problem)."""

    residual_dim = 3
    dim_a = 2
    dim_b = 2

    def __init__(self, n=30, K=90, seed=0, scale=1.0, fixed=(0,)):
        rng = np.random.default_rng(seed)
        self.block_a = rng.integers(0, n, K)
        self.block_b = (self.block_a + 1 + rng.integers(0, n - 1, K)) % n
        self.block_b[:2] = -1  # unary (prior-like) terms
        self.A = rng.standard_normal((K, 3, 2)) * scale
        self.B = rng.standard_normal((K, 3, 2)) * scale
        self.c = rng.standard_normal((K, 3)) * scale
        self.parameter_block_sizes = np.full(n, 2)
        self.fixed_blocks = np.zeros(n, dtype=bool)
        self.fixed_blocks[list(fixed)] = True
        self.x = np.zeros((n, 2))

    def evaluate(self, jacobians=True):
        xb = np.where(self.block_b[:, None] >= 0, self.x[np.maximum(self.block_b, 0)], 0.0)
        Bm = np.where(self.block_b[:, None, None] >= 0, self.B, 0.0)
        r = np.einsum("kij,kj->ki", self.A, self.x[self.block_a]) + np.einsum("kij,kj->ki", Bm, xb) - self.c
        return (r, self.A.copy(), Bm.copy()) if jacobians else (r, None, None)

    def retract(self, delta):
        self.x += delta.reshape(-1, 2)

    def get_state(self):
        return self.x.copy()

    def set_state(self, s):
        self.x[:] = s

    def reference(self):
        """Exact least-squares solution (numpy lstsq on the dense J over free blocks)."""
        n = len(self.x)
        J = np.zeros((len(self.c) * 3, 2 * n))
        for k, (a, b) in enumerate(zip(self.block_a, self.block_b)):
            J[3 * k:3 * k + 3, 2 * a:2 * a + 2] += self.A[k]
            if b >= 0:
                J[3 * k:3 * k + 3, 2 * b:2 * b + 2] += self.B[k]
        free = np.repeat(~self.fixed_blocks, 2)
        x = np.zeros(2 * n)
        x[free] = np.linalg.lstsq(J[:, free], self.c.ravel(), rcond=None)[0]
        r = J @ x - self.c.ravel()
        return x.reshape(n, 2), 0.5 * float(r @ r)


def test_linear_problem_satisfies_protocol():
    p = LinearProblem()
    assert isinstance(p, LeastSquaresProblem)
    check_problem(p)


@pytest.mark.parametrize("precision,tol", [("fp64", 1e-10), ("fp32", 1e-6), ("mixed", 1e-6)])
@pytest.mark.parametrize("preconditioner", ["block_jacobi", "ic0", "ict"])
def test_reaches_least_squares_optimum(precision, tol, preconditioner):
    p = LinearProblem()
    x_ref, cost_ref = p.reference()
    s = solve(p, SolverOptions(precision=precision, preconditioner=preconditioner, cg_tolerance=1e-6,
                               function_tolerance=1e-14, gradient_tolerance=1e-9, max_iterations=30))
    assert s.converged, s.termination
    assert abs(s.final_cost - cost_ref) <= tol * cost_ref
    assert np.allclose(p.x[0], 0.0)  # fixed block untouched
    assert s.cg_iterations > 0 and s.initial_cost > s.final_cost


def test_direct_cholesky_baseline_and_gauss_newton():
    p = LinearProblem(seed=1)
    _, cost_ref = p.reference()
    s = solve(p, SolverOptions(precision="fp64", linear_solver="cholesky", algorithm="gn", max_iterations=5))
    assert s.cg_iterations == 0
    assert abs(s.final_cost - cost_ref) <= 1e-10 * cost_ref
    assert s.history[0]["accepted"]  # Gauss-Newton solves a linear problem in its first step


def test_fp16_overflow_falls_back_to_fp32_and_is_reported():
    """Without scaling, fp16 storage of J entries ~1e6 overflows; mixed redoes the step in fp32."""
    p = LinearProblem(seed=2, scale=1e6)
    _, cost_ref = p.reference()
    unscaled_mixed = get_preset("mixed").with_overrides(scaling=False)
    s = solve(p, SolverOptions(precision=unscaled_mixed, cg_tolerance=1e-6, function_tolerance=1e-12))
    assert s.fp16_fallbacks > 0
    assert abs(s.final_cost - cost_ref) <= 1e-4 * cost_ref
    # with scaling (the real mixed preset) no fallback is needed at all
    p2 = LinearProblem(seed=2, scale=1e6)
    s2 = solve(p2, SolverOptions(precision="mixed", cg_tolerance=1e-6, function_tolerance=1e-12))
    assert s2.fp16_fallbacks == 0 and abs(s2.final_cost - cost_ref) <= 1e-4 * cost_ref


def test_naive_fp16_fails_where_scaling_saves_mixed():
    p = LinearProblem(seed=3, scale=1e6)
    s = solve(p, SolverOptions(precision="fp16"))
    assert s.fp16_fallbacks == 0  # the naive preset never falls back...
    assert not (s.final_cost < 0.5 * s.initial_cost)  # ...and makes no real progress (overflow -> inf/NaN)


def test_robust_losses_downweight_outliers():
    rng = np.random.default_rng(4)
    for loss in ("huber", "cauchy"):
        p = LinearProblem(n=20, K=300, seed=4)
        # make the data consistent with a known x, then corrupt a few residual blocks badly
        x_true = rng.standard_normal(p.x.shape)
        x_true[0] = 0.0
        p.x[:] = x_true
        r, _, _ = p.evaluate(False)
        p.c += r + 0.01 * rng.standard_normal(r.shape)
        p.c[10:14] += 50.0
        p.x[:] = 0.0
        solve(p, SolverOptions(precision="fp64", robust_loss=loss, robust_scale=0.1, max_iterations=100))
        err_robust = np.abs(p.x - x_true).max()
        p.x[:] = 0.0
        solve(p, SolverOptions(precision="fp64"))
        err_plain = np.abs(p.x - x_true).max()
        assert err_robust < 0.2 * err_plain, (loss, err_robust, err_plain)


def test_robust_weights_values():
    s = np.array([0.0, 0.25, 4.0])
    rho, w = robust_weights(s, "huber", 1.0)
    assert np.allclose(rho, [0.0, 0.25, 3.0]) and np.allclose(w ** 2, [1.0, 1.0, 0.5])
    rho, w = robust_weights(s, "cauchy", 1.0)
    assert np.allclose(rho, np.log1p(s)) and np.allclose(w ** 2, 1 / (1 + s))


def test_summary_report_and_json():
    p = LinearProblem(seed=5)
    s = solve(p, SolverOptions(precision="mixed"))
    d = s.to_dict()
    json.dumps(d)
    for key in ("initial_cost", "final_cost", "iterations", "cg_iterations", "time_s", "evaluation_time_s",
                "preconditioner_time_s", "linear_solve_time_s", "triangular_solve_time_s", "termination",
                "fp16_fallbacks", "preconditioner_bytes"):
        assert key in d
    text = s.report()
    assert "triangular solves" in text and "termination" in text
    assert s.time_s >= s.linear_solve_time_s >= s.triangular_solve_time_s >= 0.0


def test_stops_on_iteration_limit_and_validates_options():
    p = LinearProblem(seed=6)
    s = solve(p, SolverOptions(max_iterations=1, function_tolerance=0.0, cg_tolerance=0.5,
                               gradient_tolerance=0.0))
    assert s.iterations == 1 and "maximum iterations" in s.termination
    for bad in (dict(precision="fp8"), dict(linear_solver="qr"), dict(preconditioner="amg"),
                dict(robust_loss="tukey"), dict(algorithm="dogleg")):
        with pytest.raises(ValueError):
            solve(LinearProblem(), SolverOptions(**bad))


def test_bad_problems_are_rejected():
    p = LinearProblem()
    p.fixed_blocks[:] = True
    with pytest.raises(ValueError, match="nothing to optimise"):
        solve(p, SolverOptions())
    p = LinearProblem()
    p.block_a = p.block_a[:0]
    p.block_b = p.block_b[:0]
    with pytest.raises(ValueError, match="empty problem"):
        solve(p, SolverOptions())
    p = LinearProblem()
    p.c[3, 1] = np.nan
    s = solve(p, SolverOptions())
    assert "not finite" in s.termination and s.iterations == 0
