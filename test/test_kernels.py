"""Each numba kernel against a numpy reference, in every storage precision (fp64, fp32, fp16-as-uint16)."""

import numpy as np
import pytest
import scipy.sparse as sp

from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.precision import from_storage, get_preset, power_of_two_scale, to_storage

STORAGES = ["fp64", "fp32", "fp16"]
VEC = {"fp64": np.float64, "fp32": np.float32, "fp16": np.float32}
#: relative tolerance of each storage against the fp64 reference of the *stored* values
RTOL = {"fp64": 1e-12, "fp32": 1e-5, "fp16": 1e-5}


def _block_problem(seed=0, Kn=40, m=6, da=6, db=3, n_a=5, n_b=12):
    """Random camera-point style layout with a fixed block and a few unary terms."""
    rng = np.random.default_rng(seed)
    blk_a = rng.integers(0, n_a, Kn)
    blk_b = rng.integers(0, n_b, Kn)
    blk_b[:3] = -1  # unary terms
    col_start_a = np.arange(n_a) * da
    col_start_a[0] = -1  # block 0 fixed (gauge)
    col_start_b = (n_a - 1) * da + np.arange(n_b) * db
    col_a = np.where(col_start_a[blk_a] >= 0, col_start_a[blk_a] - da, -1).astype(np.int64)
    col_b = np.where(blk_b >= 0, col_start_b[np.maximum(blk_b, 0)], -1).astype(np.int64)
    n = (n_a - 1) * da + n_b * db
    Ja = rng.standard_normal((Kn, m, da))
    Jb = rng.standard_normal((Kn, m, db))
    return Ja, Jb, col_a, col_b, n


def _dense(Ja, Jb, col_a, col_b, n):
    Kn, m, da = Ja.shape
    db = Jb.shape[2]
    J = np.zeros((Kn * m, n))
    for k in range(Kn):
        if col_a[k] >= 0:
            J[k * m:(k + 1) * m, col_a[k]:col_a[k] + da] += Ja[k]
        if col_b[k] >= 0:
            J[k * m:(k + 1) * m, col_b[k]:col_b[k] + db] += Jb[k]
    return J


def test_fp16_storage_halves_memory_and_rounds_like_numpy():
    x = np.random.default_rng(1).standard_normal(1000) * 100
    s16, s32 = to_storage(x, "fp16"), to_storage(x, "fp32")
    assert s16.dtype == np.uint16 and s16.nbytes * 2 == s32.nbytes and s32.nbytes * 2 == x.nbytes
    assert np.array_equal(from_storage(s16), x.astype(np.float16).astype(np.float32))


def test_round_half_intrinsic_matches_numpy_float16():
    x = np.random.default_rng(2).standard_normal(4096).astype(np.float32) * np.float32(300.0)
    x = np.concatenate([x, np.float32([65504.0, 65520.0, 1e-8, -7e-5, 0.0])])
    out = np.empty_like(x)
    _round_vec(x, out)
    with np.errstate(over="ignore"):
        ref = x.astype(np.float16).astype(np.float32)
    assert np.array_equal(out, ref)  # includes overflow to inf (65520) and subnormals


from numba import njit  # noqa: E402


@njit(cache=True)
def _round_vec(x, out):
    for i in range(x.shape[0]):
        out[i] = K.round_half(x[i])


@pytest.mark.parametrize("storage", STORAGES)
def test_jacobian_products_match_numpy(storage):
    Ja, Jb, col_a, col_b, n = _block_problem()
    Sa, Sb = to_storage(Ja, storage), to_storage(Jb, storage)
    Jd = _dense(from_storage(Sa).astype(np.float64), from_storage(Sb).astype(np.float64), col_a, col_b, n)
    vt = VEC[storage]
    p = np.random.default_rng(3).standard_normal(n).astype(vt)
    q = np.empty(Ja.shape[0] * Ja.shape[1], dtype=vt)
    K.jac_matvec(Sa, Sb, col_a, col_b, p, q, False)
    ref = Jd @ p.astype(np.float64)
    assert np.allclose(q, ref, rtol=RTOL[storage], atol=RTOL[storage] * np.abs(ref).max())
    out = np.empty(n, dtype=vt)
    K.jac_t_matvec(Sa, Sb, col_a, col_b, q, out, False)
    ref_t = Jd.T @ q.astype(np.float64)
    assert np.allclose(out, ref_t, rtol=RTOL[storage], atol=RTOL[storage] * np.abs(ref_t).max())
    assert Sa.nbytes == Ja.size * {"fp64": 8, "fp32": 4, "fp16": 2}[storage]


@pytest.mark.parametrize("d", [6, 3])
@pytest.mark.parametrize("storage", STORAGES)
def test_fused_normal_product_of_square_blocks_matches_numpy(storage, d):
    """Pose-graph shaped J (square d x d blocks, a fixed block, unary terms): the one-pass vector kernel
    gives J p and J^T J p of the stored values, as the two separate products do."""
    Ja, Jb, col_a, col_b, n = _block_problem(seed=20, Kn=60, m=d, da=d, db=d, n_a=7, n_b=9)
    Sa, Sb = to_storage(Ja, storage), to_storage(Jb, storage)
    Jd = _dense(from_storage(Sa).astype(np.float64), from_storage(Sb).astype(np.float64), col_a, col_b, n)
    vt = VEC[storage]
    p = np.random.default_rng(21).standard_normal(n).astype(vt)
    q = np.empty(Ja.shape[0] * d, dtype=vt)
    out = np.full(n, np.nan, dtype=vt)  # must be overwritten, not accumulated into
    K.jtj_matvec(Sa, Sb, col_a, col_b, p, q, out, False)
    ref_q = Jd @ p.astype(np.float64)
    ref = Jd.T @ ref_q
    assert np.allclose(q, ref_q, rtol=RTOL[storage], atol=RTOL[storage] * np.abs(ref_q).max())
    assert np.allclose(out, ref, rtol=RTOL[storage], atol=RTOL[storage] * np.abs(ref).max())
    q2, out2 = np.empty_like(q), np.empty_like(out)
    K.jac_matvec(Sa, Sb, col_a, col_b, p, q2, False)
    K.jac_t_matvec(Sa, Sb, col_a, col_b, q2, out2, False)
    assert np.allclose(out, out2, rtol=RTOL[storage], atol=RTOL[storage] * np.abs(ref).max())


def test_half_emulation_rounds_every_operation():
    """With half=True the product differs from the fp32 one exactly by fp16 rounding effects."""
    Ja, Jb, col_a, col_b, n = _block_problem(seed=4)
    Sa, Sb = to_storage(Ja, "fp16"), to_storage(Jb, "fp16")
    p = np.random.default_rng(5).standard_normal(n).astype(np.float16).astype(np.float32)
    q32 = np.empty(Ja.shape[0] * Ja.shape[1], dtype=np.float32)
    q16 = np.empty_like(q32)
    K.jac_matvec(Sa, Sb, col_a, col_b, p, q32, False)
    K.jac_matvec(Sa, Sb, col_a, col_b, p, q16, True)
    assert np.array_equal(q16, q16.astype(np.float16).astype(np.float32))  # every output is an fp16 value
    assert not np.array_equal(q16, q32)
    assert np.allclose(q16, q32, rtol=2e-2, atol=2e-2)


def test_column_norms_and_block_diagonal():
    Ja, Jb, col_a, col_b, n = _block_problem(seed=6, da=3, db=3)
    Jd = _dense(Ja, Jb, col_a, col_b, n)
    norms = np.empty(n)
    K.jtj_column_norms2(Ja, Jb, col_a, col_b, norms)
    assert np.allclose(norms, (Jd ** 2).sum(0))
    nblk = n // 3
    off = np.arange(nblk) * 9
    out = np.empty(nblk * 9)
    K.jtj_block_diagonal(Ja, Jb, col_a, col_b, off[np.maximum(col_a, 0) // 3], off[np.maximum(col_b, 0) // 3], out)
    A = Jd.T @ Jd
    for b in range(nblk):
        assert np.allclose(out[b * 9:(b + 1) * 9].reshape(3, 3), A[3 * b:3 * b + 3, 3 * b:3 * b + 3])


def _spd_lower(n=60, seed=8):
    rng = np.random.default_rng(seed)
    B = sp.random(n, n, density=0.05, random_state=seed) + sp.identity(n)
    A = (B @ B.T + sp.identity(n)).tocsr()
    L = sp.tril(A, format="csr")
    L.sort_indices()
    return A.toarray(), L, rng


def test_ic0_equals_cholesky_when_there_is_no_fill():
    """On a tridiagonal SPD matrix IC(0) has no dropped fill, so it is the exact Cholesky factor."""
    n = 50
    A = sp.diags([-np.ones(n - 1), 4 * np.ones(n), -np.ones(n - 1)], [-1, 0, 1], format="csr")
    L = sp.tril(A, format="csr")
    out = np.empty(L.nnz)
    assert K.ic0_factor(L.indptr.astype(np.int64), L.indices.astype(np.int64), L.data, out) == -1
    Lf = sp.csr_matrix((out, L.indices, L.indptr), shape=(n, n)).toarray()
    assert np.allclose(Lf, np.linalg.cholesky(A.toarray()), atol=1e-12)


def test_ic0_reports_breakdown_row():
    A = sp.csr_matrix(np.array([[1.0, 0, 0], [2.0, 1.0, 0], [0, 0, 1.0]]))  # lower of an indefinite matrix
    out = np.empty(A.nnz)
    assert K.ic0_factor(A.indptr.astype(np.int64), A.indices.astype(np.int64), A.data, out) == 1


@pytest.mark.parametrize("storage", STORAGES)
def test_triangular_solves_match_numpy(storage):
    Ad, L, rng = _spd_lower()
    out = np.empty(L.nnz)
    ip, ix = L.indptr.astype(np.int64), L.indices.astype(np.int64)
    K.ic0_factor(ip, ix, L.data, out)
    Ls = to_storage(out, storage)
    Lref = sp.csr_matrix((from_storage(Ls).astype(np.float64), L.indices, L.indptr), shape=L.shape).toarray()
    vt = VEC[storage]
    b = rng.standard_normal(L.shape[0]).astype(vt)
    y = np.empty_like(b)
    K.lower_solve(ip, ix, Ls, b, y, False)
    assert np.allclose(y, np.linalg.solve(Lref, b.astype(np.float64)), rtol=RTOL[storage] * 10, atol=1e-5)
    x = np.empty_like(b)
    K.upper_t_solve(ip, ix, Ls, b, x, False)
    assert np.allclose(x, np.linalg.solve(Lref.T, b.astype(np.float64)), rtol=RTOL[storage] * 10, atol=1e-5)
    z = np.empty_like(b)
    K.csr_matvec(ip, ix, Ls, b, z, False)
    assert np.allclose(z, Lref @ b.astype(np.float64), rtol=RTOL[storage] * 10, atol=1e-5)


@pytest.mark.parametrize("storage", STORAGES)
def test_block_diag_apply(storage):
    rng = np.random.default_rng(9)
    sizes = np.array([6, 6, 3, 3, 3], dtype=np.int64)
    cols = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    offs = np.concatenate([[0], np.cumsum(sizes ** 2)[:-1]]).astype(np.int64)
    vals = rng.standard_normal(int((sizes ** 2).sum()))
    vs = to_storage(vals, storage)
    x = rng.standard_normal(int(sizes.sum())).astype(VEC[storage])
    out = np.empty_like(x)
    K.block_diag_apply(vs, cols, sizes, offs, x, out, False)
    ref = np.concatenate([from_storage(vs)[o:o + s * s].astype(np.float64).reshape(s, s) @ x[c:c + s]
                          for c, s, o in zip(cols, sizes, offs)])
    assert np.allclose(out, ref, rtol=RTOL[storage] * 10, atol=1e-5)


@pytest.mark.parametrize("pc_kind", [K.PC_NONE, K.PC_BLOCK_JACOBI, K.PC_IC])
@pytest.mark.parametrize("storage", STORAGES)
def test_cgnr_solves_damped_normal_equations(pc_kind, storage):
    Ja, Jb, col_a, col_b, n = _block_problem(seed=10, Kn=120, da=3, db=3, n_a=6, n_b=20)
    Jd = _dense(Ja, Jb, col_a, col_b, n)
    lam = 1e-2
    A = Jd.T @ Jd + lam * np.eye(n)
    rhs64 = np.random.default_rng(11).standard_normal(n)
    vt = VEC[storage]
    Sa, Sb = to_storage(Ja, storage), to_storage(Jb, storage)
    # preconditioners: exact inverse diagonal 3x3 blocks / exact Cholesky (as IC with full pattern)
    nb = n // 3
    cols = (np.arange(nb) * 3).astype(np.int64)
    sizes = np.full(nb, 3, dtype=np.int64)
    offs = (np.arange(nb) * 9).astype(np.int64)
    bd = np.concatenate([np.linalg.inv(A[c:c + 3, c:c + 3]).ravel() for c in cols])
    Lfull = sp.csr_matrix(np.tril(np.linalg.cholesky(A)))
    Lfull.sort_indices()
    x = np.empty(n, dtype=vt)
    stats = np.zeros(6)
    its = K.cgnr(Sa, Sb, col_a, col_b, rhs64.astype(vt), lam, pc_kind, to_storage(bd, storage), cols, sizes, offs,
                 Lfull.indptr.astype(np.int64), Lfull.indices.astype(np.int64), to_storage(Lfull.data, storage),
                 np.zeros(0, dtype=np.int64), np.zeros(1, dtype=vt), 0, 1.0, 500, 1e-5, 0.0, False, x, stats)
    Aref = (lambda J: J.T @ J)(_dense(from_storage(Sa).astype(np.float64), from_storage(Sb).astype(np.float64),
                                      col_a, col_b, n)) + lam * np.eye(n)
    ref = np.linalg.solve(Aref, rhs64.astype(vt).astype(np.float64))
    tol = 1e-4 if storage == "fp64" else 2e-3
    assert stats[4] == 0.0 and its == stats[0] and its > 0
    assert np.linalg.norm(x - ref) <= tol * np.linalg.norm(ref)
    if pc_kind == K.PC_IC and storage == "fp64":
        assert its <= 2  # exact factor: one or two iterations


def _block_spd(nb=40, d=6, seed=12):
    """A random SPD matrix with a sparse d x d block pattern (a chain plus a few long-range blocks)."""
    rng = np.random.default_rng(seed)
    n = nb * d
    A = np.zeros((n, n))
    pairs = [(i, i + 1) for i in range(nb - 1)] + [(int(a), int(b)) for a, b in rng.integers(0, nb, (15, 2)) if a != b]
    for a, b in pairs:
        Jk = rng.standard_normal((d, 2 * d))
        idx = np.r_[a * d:(a + 1) * d, b * d:(b + 1) * d]
        A[np.ix_(idx, idx)] += Jk.T @ Jk
    return A + 1e-3 * np.eye(n), n


@pytest.mark.parametrize("storage", STORAGES)
def test_block_ldl_solve_inverts_the_factored_matrix(storage):
    """C C^T = L D L^T split into blocks: the block solve equals solving with C C^T (up to storage rounding)."""
    d = 6
    A, n = _block_spd(d=d)
    C = sp.csr_matrix(np.linalg.cholesky(A))  # complete factor: its pattern is block aligned
    indptr, indices, U64, Dinv64, inv_scale = K.block_ldl_from_cholesky(C, d)
    assert 2.0**13 < np.abs(U64).max() <= 2.0**14 and np.log2(inv_scale) == np.round(np.log2(inv_scale))
    assert indptr[-1] == len(indices) and np.all(indices < np.repeat(np.arange(n // d), np.diff(indptr)))
    vt = VEC[storage]
    Us = to_storage(U64, storage)
    Dinv = Dinv64.astype(vt)
    # reference built from the stored (rounded) blocks
    L = np.eye(n)
    rows = np.repeat(np.arange(n // d), np.diff(indptr))
    Ublk = from_storage(Us).astype(np.float64).reshape(-1, d, d) * inv_scale
    for I, J, blk in zip(rows, indices, Ublk):
        L[I * d:(I + 1) * d, J * d:(J + 1) * d] = blk
    D = np.zeros((n, n))
    for I in range(n // d):
        D[I * d:(I + 1) * d, I * d:(I + 1) * d] = np.linalg.inv(Dinv64.reshape(-1, d, d)[I])
    r = np.random.default_rng(13).standard_normal(n).astype(vt)
    z = np.empty_like(r)
    K.block_ldl_solve(indptr, indices, Us, Dinv, d, inv_scale, r, np.empty_like(r), z)
    ref = np.linalg.solve(L @ D @ L.T, r.astype(np.float64))
    assert np.linalg.norm(z - ref) <= RTOL[storage] * 100 * np.linalg.norm(ref)
    if storage == "fp64":  # and L D L^T is the factored matrix itself
        assert np.allclose(L @ D @ L.T, A, rtol=1e-10, atol=1e-10 * np.abs(A).max())


@pytest.mark.parametrize("storage", STORAGES)
def test_cgnr_with_block_ldl_preconditioner(storage):
    """PC_BLOCK_LDL in CGNR (with a permutation): exact factor -> converges in a couple of iterations."""
    d = 3  # square blocks, as in an SE(2) pose graph: CG runs the fused J^T J p kernel
    Ja, Jb, col_a, col_b, n = _block_problem(seed=14, Kn=150, m=d, da=d, db=d, n_a=8, n_b=22)
    lam = 1e-2
    A = (lambda J: J.T @ J)(_dense(Ja, Jb, col_a, col_b, n)) + lam * np.eye(n)
    nb = n // d
    bperm = np.random.default_rng(15).permutation(nb)
    perm = (bperm[:, None] * d + np.arange(d)).ravel().astype(np.int64)  # block-aligned order
    C = sp.csr_matrix(np.linalg.cholesky(A[np.ix_(perm, perm)]))
    indptr, indices, U64, Dinv64, inv_scale = K.block_ldl_from_cholesky(C, d)
    vt = VEC[storage]
    rhs64 = np.random.default_rng(16).standard_normal(n)
    x = np.empty(n, dtype=vt)
    stats = np.zeros(6)
    Sa, Sb = to_storage(Ja, storage), to_storage(Jb, storage)
    empty_i = np.zeros(1, dtype=np.int64)
    its = K.cgnr(Sa, Sb, col_a, col_b, rhs64.astype(vt), lam, K.PC_BLOCK_LDL, to_storage(np.zeros(1), storage),
                 empty_i, empty_i, empty_i, indptr, indices, to_storage(U64, storage), perm, Dinv64.astype(vt), d,
                 inv_scale, 200, 1e-6, 0.0, False, x, stats)
    Aref = (lambda J: J.T @ J)(_dense(from_storage(Sa).astype(np.float64), from_storage(Sb).astype(np.float64),
                                      col_a, col_b, n)) + lam * np.eye(n)
    ref = np.linalg.solve(Aref, rhs64.astype(vt).astype(np.float64))
    assert stats[4] == 0.0 and its > 0
    assert np.linalg.norm(x - ref) <= (1e-5 if storage == "fp64" else 2e-3) * np.linalg.norm(ref)
    if storage == "fp64":
        assert its <= 2


def test_cgnr_step_tolerance_requires_small_updates():
    """With step_rtol the residual test alone no longer stops CG: at least 2 iterations, and the
    answer is closer to the solution along the badly preconditioned directions."""
    Ja, Jb, col_a, col_b, n = _block_problem(seed=17, Kn=150, da=3, db=3, n_a=8, n_b=22)
    lam = 1e-3
    A = (lambda J: J.T @ J)(_dense(Ja, Jb, col_a, col_b, n)) + lam * np.eye(n)
    rhs = np.random.default_rng(18).standard_normal(n)
    ref = np.linalg.solve(A, rhs)
    # a deliberately perturbed (5 %) exact factor: a good but imperfect preconditioner
    Cp = np.linalg.cholesky(A) * (1.0 + 0.05 * np.random.default_rng(19).standard_normal((n, n)))
    Lp = sp.csr_matrix(np.tril(Cp))
    Lp.sort_indices()
    empty_i = np.zeros(1, dtype=np.int64)
    errs, iters = {}, {}
    for step_rtol in (0.0, 1e-3):
        x = np.empty(n)
        stats = np.zeros(6)
        iters[step_rtol] = K.cgnr(Ja, Jb, col_a, col_b, rhs, lam, K.PC_IC, np.zeros(1), empty_i, empty_i, empty_i,
                                  Lp.indptr.astype(np.int64), Lp.indices.astype(np.int64), Lp.data,
                                  np.zeros(0, dtype=np.int64), np.zeros(1), 0, 1.0, 100, 0.3, step_rtol, False, x,
                                  stats)
        errs[step_rtol] = np.linalg.norm(x - ref) / np.linalg.norm(ref)
    assert iters[1e-3] >= 2 and iters[1e-3] > iters[0.0]
    assert errs[1e-3] < 1e-2 < errs[0.0]


def test_power_of_two_scale_is_exact_and_bounded():
    for m in (1e-9, 0.3, 1.0, 7e4, 3e9):
        s = power_of_two_scale(m)
        assert np.log2(s) == np.round(np.log2(s))
        assert 128.0 < m * s <= 256.0


def test_presets_follow_the_policy():
    assert get_preset("mixed").preconditioner_storage == "fp16"
    assert get_preset("mixed").cg_vectors == "fp32" and get_preset("mixed").residual == "fp32"
    assert get_preset("fp16").emulate_half and not get_preset("fp16").scaling
    assert all(get_preset(p).state == np.float64 for p in ("fp64", "fp32", "fp16", "mixed"))
    with pytest.raises(ValueError, match="unknown precision"):
        get_preset("bf16")
