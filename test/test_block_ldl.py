"""The numba block L D L^T factor (symbolic once, numeric per build) against dense linear algebra."""

import numpy as np
import pytest

from mpslam_ros.io.g2o import initial_guess, read_g2o
from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.block_ldl import block_ldl_numeric, block_symbolic
from mpslam_ros.solvers.lm import SolverOptions, solve
from mpslam_ros.solvers.precision import to_storage


def _random_graph(rng, nb, d, loops):
    """Chain + random loops + a unary block (prior) + an edge to a fixed block (col -1)."""
    a = list(range(nb - 1))
    b = list(range(1, nb))
    while len(a) < nb - 1 + loops:
        i, j = rng.integers(0, nb, 2)
        if i != j:
            a.append(i)
            b.append(j)
    a += [0, -1, 5]  # a prior on block 0, an edge from a fixed block (-1) to block 3, a self-edge on block 5
    b += [-1, 3, 5]
    a, b = np.array(a, np.int64), np.array(b, np.int64)
    col_a, col_b = np.where(a >= 0, a * d, -1), np.where(b >= 0, b * d, -1)
    K_ = len(col_a)
    return col_a, col_b, rng.standard_normal((K_, d, d)), rng.standard_normal((K_, d, d))


def _dense(col_a, col_b, Ja, Jb, n, d):
    J = np.zeros((len(col_a) * d, n))
    for k in range(len(col_a)):
        if col_a[k] >= 0:
            J[d * k:d * k + d, col_a[k]:col_a[k] + d] += Ja[k]
        if col_b[k] >= 0:
            J[d * k:d * k + d, col_b[k]:col_b[k] + d] += Jb[k]
    return J.T @ J


def _unpack(sym, U, Dinv):
    d, nb = sym.d, sym.nb
    L = np.eye(nb * d)
    D = np.zeros((nb * d, nb * d))
    for i in range(nb):
        D[i * d:(i + 1) * d, i * d:(i + 1) * d] = np.linalg.inv(Dinv[i * d * d:(i + 1) * d * d].reshape(d, d))
        for p in range(sym.indptr[i], sym.indptr[i + 1]):
            j = sym.indices[p]
            L[i * d:(i + 1) * d, j * d:(j + 1) * d] = U[p * d * d:(p + 1) * d * d].reshape(d, d)
    return L, D


@pytest.mark.parametrize("d", [3, 6, 4])  # 6 / 3: the literal-size kernels; 4: the generic one
def test_block_factor_reproduces_the_permuted_normal_matrix(d):
    rng = np.random.default_rng(d)
    nb = 60
    col_a, col_b, Ja, Jb = _random_graph(rng, nb, d, loops=25)
    order = rng.permutation(nb)
    sym = block_symbolic(col_a, col_b, d, nb, order)
    shift = 1e-8
    U, Dinv, bad = block_ldl_numeric(sym, Ja, Jb, shift)
    assert bad == -1
    A = _dense(col_a, col_b, Ja, Jb, nb * d, d)
    A += np.diag(shift * np.diag(A))
    perm = sym.scalar_perm
    Ap = A[np.ix_(perm, perm)]
    L, D = _unpack(sym, U, Dinv)
    assert np.abs(L @ D @ L.T - Ap).max() <= 1e-11 * np.abs(Ap).max()
    # the pattern holds the fill: every nonzero of the dense factor is in it
    Ld = np.linalg.cholesky(Ap)
    blocks = np.abs(Ld).reshape(nb, d, nb, d).max(axis=(1, 3)) > 1e-12 * np.abs(Ld).max()
    pattern = np.zeros((nb, nb), bool)
    pattern[np.repeat(np.arange(nb), np.diff(sym.indptr)), sym.indices] = True
    assert not np.any(np.tril(blocks, -1) & ~pattern)
    # and the triangular solves of the preconditioner invert it, in every storage
    r = rng.standard_normal(nb * d)
    for storage in ("fp64", "fp32", "fp16"):
        vt = np.float64 if storage == "fp64" else np.float32
        scale = 2.0 ** -np.ceil(np.log2(np.abs(U).max() / 2.0**14))
        z = np.empty(nb * d, vt)
        K.block_ldl_solve(sym.indptr, sym.indices, to_storage(U * scale, storage), Dinv.astype(vt), d, 1.0 / scale,
                          r.astype(vt), np.empty(nb * d, vt), z)
        err = np.linalg.norm(Ap @ z - r) / np.linalg.norm(r)
        assert err < {"fp64": 1e-8, "fp32": 1e-2, "fp16": 0.5}[storage], (storage, err)


def test_block_factor_reports_the_row_of_a_singular_pivot():
    rng = np.random.default_rng(1)
    d, nb = 6, 10
    # a chain over blocks 0..nb-2 with a prior on block nb-2; block nb-1 is touched by no residual: singular
    col_a = np.arange(nb - 1, dtype=np.int64) * d
    col_b = np.append(col_a[:-1] + d, -1)
    Ja, Jb = rng.standard_normal((nb - 1, d, d)), rng.standard_normal((nb - 1, d, d))
    sym = block_symbolic(col_a, col_b, d, nb, np.arange(nb))
    _, _, bad = block_ldl_numeric(sym, Ja, Jb, 0.0)
    assert bad == nb - 1


def test_pose_graph_solve_with_the_numba_factor_matches_the_superlu_one(data_dir):
    g = read_g2o(data_dir / "pgo" / "smallGrid3D.g2o")
    poses0 = initial_guess(g, "chordal")
    costs = {}
    for layout in ("block", "scalar"):
        p = PoseGraphProblem(g.kind, poses0, g.edge_i, g.edge_j, g.measurements, g.information)
        # (CG path: the small-problem direct solve would skip the factor comparison this test is about)
        s = solve(p, pgo_options(SolverOptions(precision="fp64", ict_layout=layout, small_problem_direct_columns=0)))
        assert s.converged and s.ic_builds >= 1
        costs[layout] = s.final_cost
    assert costs["block"] == pytest.approx(costs["scalar"], rel=1e-9)
