"""Geodesic acceleration of a Levenberg-Marquardt step (Transtrum & Sethna 2012, "Improvements to the
Levenberg-Marquardt algorithm for nonlinear least-squares minimization", arXiv:1201.5885; GSL's
``gsl_multifit_nlinear_trs_lmaccel``).

LM's step ``v`` solves the damped normal equations ``(J^T J + lambda D) v = -J^T r``. The acceleration
``a`` solves the same system for the residuals' second derivative along ``v``,
``(J^T J + lambda D) a = -J^T r_vv`` with ``r_vv ~ (2 / h) ((r(x + h v) - r(x)) / h - J v)`` (one extra
residual evaluation, no Jacobian), and the step becomes ``v + a / 2``: the second-order term of a path
that follows the curved valley of the cost instead of its tangent. It is kept only while
``|a| <= ratio * |v|`` (both in the scaled coordinates of the solve): a larger correction means the
quadratic model of the path is not trustworthy, and the plain step is taken.

Why (pose graphs): a long chain's softest modes bend it, and a bend is a curve in pose space. LM with plain
steps crawls along that valley near the minimum, with good gain ratios and ~1e-4 relative decrease per step
(generated 100,000-pose SE(3) graph: 46 LM iterations, GTSAM 18; 21 accelerated). From the odometry guesses
of generated 800- and 1,500-pose 2-D graphs: 63 and 47 LM iterations, 33 and 28 accelerated, to the same
minimum in every precision. LM applies it only near the minimum (after a step that lowered the cost by
less than ``far_phase_decrease``): far from it, the accelerated fp32 path left fp64's and ended in another
local minimum (800-pose graph: 40.59 against 37.57). docs/solvers.md, "Geodesic acceleration".
"""

from __future__ import annotations

import numpy as np

#: Finite-difference step along ``v`` (fraction of the step), Transtrum & Sethna's choice.
SECOND_DERIVATIVE_STEP = 0.1


def residual_second_derivative(problem, state, r: np.ndarray, Jv: np.ndarray, step_full: np.ndarray,
                               h: float = SECOND_DERIVATIVE_STEP) -> np.ndarray:
    """``r_vv`` (flat, fp64): the whitened residuals' second directional derivative along the full-state
    step ``step_full`` by a forward difference of ``r(x + h v)`` against ``r(x) + h J v``. ``state``: the
    problem's current state (``get_state()``, which LM holds anyway to undo a rejected step), restored on
    return; ``r`` and ``Jv``: the residuals and ``J v`` there (flat)."""
    problem.retract(h * step_full)
    r_h, _, _ = problem.evaluate(jacobians=False)
    problem.set_state(state)
    return (2.0 / h) * ((np.asarray(r_h, dtype=np.float64).ravel() - r) / h - Jv)


def acceleration_kept(y_step: np.ndarray, y_accel: np.ndarray, max_ratio: float) -> bool:
    """True when the acceleration is small enough against the step (scaled coordinates) and finite."""
    n_step = float(np.dot(y_step, y_step))
    n_accel = float(np.dot(y_accel, y_accel))
    return bool(np.isfinite(n_accel)) and n_accel <= max_ratio * max_ratio * n_step
