"""The BA CG loop with fused J^T J products (solvers/cgnr_ba.py) against the shared kernel and numpy,
in every storage precision, mono (2-row) and stereo (3-row) windows; and its use through SolverOptions."""

import numpy as np
import pytest

from mpslam_ros.problems.ba import WindowProblem, ba_options, solve_window
from mpslam_ros.problems.window_synth import make_window
from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers import lm
from mpslam_ros.solvers.cgnr_ba import cgnr_ba
from mpslam_ros.solvers.precision import to_storage


def _system(stereo):
    w = make_window(2, num_keyframes=12, num_landmarks=60, stereo=stereo)
    p = WindowProblem(*w.solve_args())
    r, Ja, Jb = p.evaluate(True)
    L = lm._Layout(p)
    norms = np.empty(L.n)
    K.jtj_column_norms2(Ja, Jb, L.col_a, L.col_b, norms)
    Sa, Sb = np.empty(Ja.shape), np.empty(Jb.shape)
    K.scale_jacobian(Ja, Jb, L.col_a, L.col_b, 1.0 / np.sqrt(norms), 4.0, Sa, Sb)  # a power-of-two scale, as lm does
    rhs = np.empty(L.n)
    K.jac_t_matvec(Sa, Sb, L.col_a, L.col_b, r.ravel(), rhs, False)
    lam = 1e-3
    bd = np.empty(L.bd_total)
    K.jtj_block_diagonal(Sa, Sb, L.col_a, L.col_b, L.off_a, L.off_b, bd)
    inv = np.empty_like(bd)
    for b in range(len(L.bd_col)):
        s, o = L.bd_size[b], L.bd_off[b]
        inv[o:o + s * s] = np.linalg.inv(bd[o:o + s * s].reshape(s, s) + lam * np.eye(s)).ravel()
    J = L.jacobian_csr(Sa, Sb).toarray()
    return L, Sa, Sb, -rhs, lam, inv, J


@pytest.mark.parametrize("stereo", [False, True])
@pytest.mark.parametrize("storage", ["fp64", "fp32", "fp16"])
def test_cgnr_ba_matches_shared_kernel_and_numpy(stereo, storage):
    L, Sa, Sb, rhs, lam, inv, J = _system(stereo)
    vdt = np.float64 if storage == "fp64" else np.float32
    A, B = to_storage(Sa, storage), to_storage(Sb, storage)
    bd = to_storage(inv, "fp64" if storage == "fp64" else "fp32")
    rv = rhs.astype(vdt)
    x_ba, st_ba = np.empty(L.n, vdt), np.zeros(6)
    its_ba = cgnr_ba(A, B, L.col_a, L.col_b, rv, lam, K.PC_BLOCK_JACOBI, bd, L.bd_col, L.bd_size, L.bd_off,
                     500, 1e-5, x_ba, st_ba)
    # the residual of the system J as stored defines, in fp64
    def as64(a):
        return a.view(np.float16).astype(np.float64) if storage == "fp16" else a.astype(np.float64)
    Jst = L.jacobian_csr(as64(A), as64(B)).toarray()
    res = (Jst.T @ Jst + lam * np.eye(L.n)) @ x_ba.astype(np.float64) - rhs
    assert st_ba[4] == 0.0 and st_ba[1] <= 1e-5 and its_ba == int(st_ba[0])
    assert np.linalg.norm(res) <= (2e-5 if storage == "fp64" else 1e-3) * np.linalg.norm(rhs)
    # same iteration count as the shared kernel (same algorithm), up to fp32 rounding
    x_sh, st_sh = np.empty(L.n, vdt), np.zeros(6)
    its_sh = K.cgnr(A, B, L.col_a, L.col_b, rv, lam, K.PC_BLOCK_JACOBI, bd, L.bd_col, L.bd_size, L.bd_off,
                    np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1, bd.dtype), np.zeros(0, np.int64),
                    np.zeros(1, vdt), 0, 1.0, 500, 1e-5, 0.0, False, x_sh, st_sh)
    assert abs(its_sh - its_ba) <= (0 if storage == "fp64" else 0.25 * its_sh)
    if storage == "fp64":
        assert np.allclose(x_ba, x_sh, rtol=1e-8, atol=1e-10 * np.abs(x_sh).max())


def test_cgnr_ba_zero_rhs_and_no_preconditioner():
    L, Sa, Sb, rhs, lam, inv, J = _system(False)
    x, st = np.ones(L.n), np.zeros(6)
    assert cgnr_ba(Sa, Sb, L.col_a, L.col_b, np.zeros(L.n), lam, K.PC_BLOCK_JACOBI, inv, L.bd_col, L.bd_size,
                   L.bd_off, 50, 1e-3, x, st) == 0
    assert not x.any() and st[4] == 0.0
    its = cgnr_ba(Sa, Sb, L.col_a, L.col_b, rhs, lam, K.PC_NONE, inv, L.bd_col, L.bd_size, L.bd_off, 2000, 1e-6, x, st)
    assert its > 0 and st[1] <= 1e-6
    assert np.allclose((J.T @ J + lam * np.eye(L.n)) @ x, rhs, atol=1e-5 * np.abs(rhs).max())


def test_ba_options_use_the_fused_kernel_and_give_the_shared_kernels_answer():
    w = make_window(7, num_keyframes=20, num_landmarks=120, init="vo")
    fused = solve_window(*w.solve_args(), options=ba_options(precision="fp64"))[2]
    shared = solve_window(*w.solve_args(), options=ba_options(precision="fp64", cgnr_kernel=None))[2]
    assert fused.converged and shared.converged
    assert abs(fused.final_cost - shared.final_cost) <= 1e-9 * shared.final_cost
    assert fused.cg_iterations == shared.cg_iterations
