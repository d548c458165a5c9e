"""``mpslam bench kernels``: time each block-sparse kernel per storage precision on real pose graphs.

For each g2o file: linearise at the chordal initial guess, scale as the solver does, build the
IC(0) and the static Cholesky (``ict``) factors (the latter also as ``ict-block``: 6x6/3x3 block
L D L^T, one index per block, fp32 inverse pivots, as the pose-graph solver stores it), then time
(median of ``--repeat`` calls, single thread) J p, J^T q, the fused one-pass J^T J p that CGNR runs on square
(pose-graph) blocks, the pair of triangular solves and the CGNR iteration with values stored in
fp64, fp32 and fp16 (uint16 + vcvtph2ps). Bytes are of the stored values only (indices are the same
for every precision and listed separately).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List

import numpy as np

from mpslam_ros.cli.device import add_device_argument, cuda_rows_wanted

HELP = "time the mixed-precision kernels (J p, J^T q, triangular solves, CGNR) per storage format"
DESCRIPTION = __doc__

DEFAULT_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "pgo"
DEFAULT_FILES = ["sphere2500.g2o", "city10000.g2o", "parking-garage.g2o"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", help=f"g2o files (default: {', '.join(DEFAULT_FILES)} in {DEFAULT_DIR})")
    parser.add_argument("--repeat", type=int, default=30,
                        help="calls per timing, median reported (default: %(default)s)")
    parser.add_argument("--synthetic-rows", default="",
                        help="also time the block triangular solves on synthetic 6x6 block factors with these "
                             "numbers of block rows (14 blocks per row, chain-like pattern), e.g. 20000,100000 "
                             "to go past the L3 cache (default: none)")
    add_device_argument(parser, bench=True)


def _median_time(fn, repeat: int) -> float:
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def bench_file(path: Path, repeat: int, cuda_rows: bool = False) -> List[dict]:
    from mpslam_ros.io.g2o import initial_guess, read_g2o
    from mpslam_ros.problems.pgo import PoseGraphProblem
    from mpslam_ros.solvers import kernels as K
    from mpslam_ros.solvers.lm import SolverOptions, SolverSummary, _build_ict, _ic0_lower, _Layout, _Preconditioner
    from mpslam_ros.solvers.precision import to_storage

    g = read_g2o(path)
    poses = initial_guess(g, "chordal" if not g.has_vertices else "file")
    prob = PoseGraphProblem(g.kind, poses, g.edge_i, g.edge_j, g.measurements, g.information)
    r, Ja, Jb = prob.evaluate(True)
    lay = _Layout(prob)
    norms = np.empty(lay.n)
    K.jtj_column_norms2(Ja, Jb, lay.col_a, lay.col_b, norms)
    Sa, Sb = np.empty(Ja.shape), np.empty(Jb.shape)
    K.scale_jacobian(Ja, Jb, lay.col_a, lay.col_b, 1.0 / np.sqrt(norms), 1.0, Sa, Sb)
    A = (lambda J: (J.T @ J).tocsr())(lay.jacobian_csr(Sa, Sb))
    factors = {}
    ict = _Preconditioner(np.dtype(np.float64))
    _build_ict(SolverOptions(), SolverSummary(), A, {"shift": 1e-8}, ict)
    factors["ict"] = (ict.L_indptr, ict.L_indices, ict.L64, ict.L_perm)
    ip, ix, data = _ic0_lower(A)
    L0 = np.empty_like(data)
    shift = 1e-4
    while True:
        d = data.copy()
        d[ip[1:] - 1] *= 1.0 + shift
        if K.ic0_factor(ip, ix, d, L0) < 0:
            break
        shift *= 10
    factors["ic0"] = (ip, ix, L0, np.zeros(0, dtype=np.int64))
    # the same complete factor as "ict", in the block-minimum-degree order and the d x d block L D L^T layout
    # the pose-graph solver uses (off-diagonal blocks in the storage format, inverse pivots in the vector format)
    blk = _Preconditioner(np.dtype(np.float64))
    _build_ict(SolverOptions(), SolverSummary(), A, {"shift": 1e-8}, blk, lay, block=True)
    rows = []
    rng = np.random.default_rng(0)
    for storage in ("fp64", "fp32", "fp16"):
        vt = np.float64 if storage == "fp64" else np.float32
        Ja_s, Jb_s = to_storage(Sa, storage), to_storage(Sb, storage)
        p = rng.standard_normal(lay.n).astype(vt)
        q = np.empty(Ja.shape[0] * Ja.shape[1], dtype=vt)
        out = np.empty(lay.n, dtype=vt)
        tmp = np.empty(lay.n, dtype=vt)
        t_jp = _median_time(lambda: K.jac_matvec(Ja_s, Jb_s, lay.col_a, lay.col_b, p, q, False), repeat)
        t_jtq = _median_time(lambda: K.jac_t_matvec(Ja_s, Jb_s, lay.col_a, lay.col_b, q, out, False), repeat)
        t_jtj = _median_time(lambda: K.jtj_matvec(Ja_s, Jb_s, lay.col_a, lay.col_b, p, q, out, False), repeat)
        base = dict(dataset=path.stem, storage=storage, n=lay.n, jp_ms=1e3 * t_jp, jtq_ms=1e3 * t_jtq,
                    jtj_ms=1e3 * t_jtj, jacobian_bytes=Ja_s.nbytes + Jb_s.nbytes)
        for name, (fip, fix, fval, perm) in factors.items():
            Ls = to_storage(fval, storage)

            def tri():
                K.lower_solve(fip, fix, Ls, p, tmp, False)
                K.upper_t_solve(fip, fix, Ls, tmp, out, False)

            t_tri = _median_time(tri, repeat)
            stats = np.zeros(6)
            x = np.empty(lay.n, dtype=vt)

            def cg():
                K.cgnr(Ja_s, Jb_s, lay.col_a, lay.col_b, p, 1e-6, K.PC_IC, Ls[:1], lay.bd_col, lay.bd_size,
                       lay.bd_off, fip, fix, Ls, perm, np.zeros(1, dtype=vt), 0, 1.0, 10, 0.0, 0.0, False, x, stats)

            t_cg = _median_time(cg, max(3, repeat // 5)) / 10.0
            rows.append(dict(base, factor=name, factor_nnz=len(fval), factor_bytes=Ls.nbytes,
                             index_bytes=fip.nbytes + fix.nbytes, tri_ms=1e3 * t_tri, cg_iter_ms=1e3 * t_cg))
        if blk.kind == K.PC_BLOCK_LDL:
            Us = to_storage(blk.L64, storage)
            Dinv = blk.L_diag64.astype(vt)

            def tri_block():
                K.block_ldl_solve(blk.L_indptr, blk.L_indices, Us, Dinv, blk.L_block, blk.L_inv_scale, p, tmp, out)

            t_tri = _median_time(tri_block, repeat)
            stats = np.zeros(6)
            x = np.empty(lay.n, dtype=vt)

            def cg_block():
                K.cgnr(Ja_s, Jb_s, lay.col_a, lay.col_b, p, 1e-6, K.PC_BLOCK_LDL, Us[:1], lay.bd_col, lay.bd_size,
                       lay.bd_off, blk.L_indptr, blk.L_indices, Us, blk.L_perm, Dinv, blk.L_block, blk.L_inv_scale,
                       10, 0.0, 0.0, False, x, stats)

            t_cg = _median_time(cg_block, max(3, repeat // 5)) / 10.0
            rows.append(dict(base, factor="ict-block", factor_nnz=len(blk.L64) + len(Dinv),
                             factor_bytes=Us.nbytes + Dinv.nbytes,
                             index_bytes=blk.L_indptr.nbytes + blk.L_indices.nbytes, tri_ms=1e3 * t_tri,
                             cg_iter_ms=1e3 * t_cg))
            if cuda_rows:
                rows.append(_cuda_row(base, lay, Ja_s, Jb_s, blk, Us, Dinv, p, repeat))
    return rows


def _cuda_row(base: dict, lay, Ja_s, Jb_s, blk, Us, Dinv, p, repeat: int) -> dict:
    """The same products, block triangular-solve pair and CG iteration on the CUDA device (factor "ict-block
    cuda"): J and the factor resident on the device, each timing synchronised; CG = 10 iterations of
    :class:`~mpslam_ros.solvers.cuda.cgnr.CudaCGNR` including its two small read-backs per iteration."""
    from types import SimpleNamespace

    from numba import cuda

    from mpslam_ros.solvers import kernels as K
    from mpslam_ros.solvers.cuda.cgnr import CudaCGNR
    from mpslam_ros.solvers.cuda.kernels import TPB, blocks_for, kernels_for

    def timed(fn, n):
        def run():
            fn()
            cuda.synchronize()
        return _median_time(run, n)

    vt = p.dtype
    kern = kernels_for(vt.name)
    cg = CudaCGNR(lay.col_a, lay.col_b, lay.n, Ja_s.shape[1], lay.bd_col, lay.bd_size, lay.bd_off)
    pc = SimpleNamespace(kind=K.PC_BLOCK_LDL, L_indptr=blk.L_indptr, L_indices=blk.L_indices, L_vals=Us, L_diag=Dinv,
                         L_block=blk.L_block, L_inv_scale=blk.L_inv_scale, L_perm=blk.L_perm)
    dJa, dJb = cg._jacobian(Ja_s, Jb_s)
    dev_pc = cg._preconditioner(pc, vt)
    w = cg._vectors(vt)
    w["p"].copy_to_device(p)
    Kn, m = Ja_s.shape[:2]
    q = cuda.device_array(Kn * m, vt)
    nq, nn, nk = blocks_for(Kn * m), blocks_for(lay.n), blocks_for(Kn)
    t_jp = timed(lambda: kern.jac_matvec[nq, TPB](dJa, dJb, cg.col_a, cg.col_b, w["p"], q), repeat)

    def jtq():
        kern.fill[nn, TPB](w["Ap"], 0)
        kern.jac_t_matvec_add[nk, TPB](dJa, dJb, cg.col_a, cg.col_b, q, w["Ap"])

    t_jtq = timed(jtq, repeat)

    def jtj():
        kern.fill[nn, TPB](w["Ap"], 0)
        kern.normal_product_add[nk, TPB](dJa, dJb, cg.col_a, cg.col_b, w["p"], w["Ap"])

    t_jtj = timed(jtj, repeat)
    t_tri = timed(lambda: cg.apply_preconditioner(kern, dev_pc, w["p"], w["z"], w["tmp"]), repeat)
    x, stats = np.empty(lay.n, vt), np.zeros(6)
    t_cg = timed(lambda: cg.solve(Ja_s, Jb_s, p, 1e-6, pc, 10, 0.0, 0.0, x, stats), max(3, repeat // 5)) / 10.0
    levels = len(dev_pc["sched"].fwd_ptr) - 1
    return dict(base, factor="ict-block cuda", factor_nnz=len(Us) + len(Dinv), factor_bytes=Us.nbytes + Dinv.nbytes,
                index_bytes=blk.L_indptr.nbytes + blk.L_indices.nbytes, jp_ms=1e3 * t_jp, jtq_ms=1e3 * t_jtq,
                jtj_ms=1e3 * t_jtj, tri_ms=1e3 * t_tri, cg_iter_ms=1e3 * t_cg, levels=levels)


def print_table(rows: List[dict]) -> None:
    ref = {(r["dataset"], r["factor"]): r for r in rows if r["storage"] == "fp32"}
    head = ["dataset", "factor", "storage", "nnz(L)", "L bytes", "J bytes", "J p ms", "J^T q ms", "J^T J p ms",
            "tri-solves ms",
            "tri vs fp32", "CG iter ms", "CG vs fp32"]
    body = []
    for r in rows:
        f = ref[(r["dataset"], r["factor"])]
        body.append([r["dataset"], r["factor"], r["storage"], r["factor_nnz"], r["factor_bytes"], r["jacobian_bytes"],
                     f"{r['jp_ms']:.3f}", f"{r['jtq_ms']:.3f}", f"{r['jtj_ms']:.3f}", f"{r['tri_ms']:.3f}",
                     f"{r['tri_ms'] / f['tri_ms']:.2f}", f"{r['cg_iter_ms']:.3f}",
                     f"{r['cg_iter_ms'] / f['cg_iter_ms']:.2f}"])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    print("  ".join(str(h).rjust(w) for h, w in zip(head, widths)))
    print("  ".join("-" * w for w in widths))
    for b in body:
        print("  ".join(str(c).rjust(w) for c, w in zip(b, widths)))


def bench_synthetic_block_solves(block_rows: int, repeat: int, per_row: int = 14, seed: int = 0) -> List[dict]:
    """Time :func:`kernels.block_ldl_solve` on a synthetic 6x6 block factor (fp32 / fp16 storage): each row
    has ``per_row`` blocks in columns up to 3,000 rows back (a long chain's fill), values ~1e-2."""
    from mpslam_ros.solvers import kernels
    from mpslam_ros.solvers.precision import to_storage

    rng = np.random.default_rng(seed)
    d = 6
    indptr = np.arange(0, block_rows * per_row + 1, per_row, dtype=np.int64)
    back = rng.integers(1, 3000, (block_rows, per_row))
    indices = np.sort(np.maximum(0, np.arange(block_rows)[:, None] - back), axis=1).ravel().astype(np.int64)
    U = rng.standard_normal(len(indices) * d * d) * 1e-2
    Dinv = np.tile(np.eye(d, dtype=np.float32).ravel(), block_rows)
    n = block_rows * d
    out = []
    for storage in ("fp32", "fp16"):
        Us = to_storage(U, storage)
        r, tmp, z = np.ones(n, np.float32), np.empty(n, np.float32), np.empty(n, np.float32)
        ms = 1e3 * _median_time(lambda: kernels.block_ldl_solve(indptr, indices, Us, Dinv, d, 1.0, r, tmp, z),
                                repeat)
        out.append(dict(block_rows=block_rows, blocks=len(indices), storage=storage, factor_mb=Us.nbytes / 1e6,
                        tri_ms=ms))
    return out


def main(args: argparse.Namespace) -> int:
    from mpslam_ros.solvers import kernels

    kernels.warmup()
    files = [Path(f) for f in args.files] or [DEFAULT_DIR / f for f in DEFAULT_FILES]
    cuda_rows = cuda_rows_wanted(args.device)
    rows: List[dict] = []
    for f in files:
        rows.extend(bench_file(f, args.repeat, cuda_rows))
    print_table(rows)
    levels = {r["dataset"]: r["levels"] for r in rows if "levels" in r}
    if levels:
        print("ict-block cuda: the CUDA kernels on the device (J, factor resident; times synchronised); level-"
              "scheduled triangular solves, one launch per level: "
              + ", ".join(f"{k} {v} levels" for k, v in levels.items()))
    sizes = [int(x) for x in args.synthetic_rows.split(",") if x.strip()]
    if sizes:
        print("\nsynthetic block factors (6x6 blocks), triangular-solve pair:")
        print(f"{'block rows':>10}  {'blocks':>9}  {'storage':>7}  {'factor MB':>9}  {'tri-solves ms':>13}  {'vs fp32':>7}")
        for nb in sizes:
            res = bench_synthetic_block_solves(nb, max(3, min(args.repeat, 200_000 // nb)))
            for r in res:
                print(f"{r['block_rows']:>10}  {r['blocks']:>9}  {r['storage']:>7}  {r['factor_mb']:>9.1f}  "
                      f"{r['tri_ms']:>13.2f}  {r['tri_ms'] / res[0]['tri_ms']:>7.2f}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    p = argparse.ArgumentParser()
    add_arguments(p)
    raise SystemExit(main(p.parse_args()))
