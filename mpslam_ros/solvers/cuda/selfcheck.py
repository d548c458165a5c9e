"""Check every CUDA kernel against its CPU counterpart, in every storage precision, plus whole solves.

``python -m mpslam_ros.solvers.cuda.selfcheck [--json PATH]`` runs on the GPU when one is present, else on
numba's CUDA simulator when ``NUMBA_ENABLE_CUDASIM=1`` is set in the environment (it must be set before
numba is imported, hence a separate process; the test suite runs this module in a subprocess:
``test/test_cuda_kernels.py``). Inputs are small and generated (seeded), so the simulator finishes in
seconds. Each row: kernel, storage format of the stored operand (J, preconditioner), CG vector dtype,
the largest difference to the CPU result relative to the CPU result's largest entry, the tolerance, and
whether it passed. The CPU side is the numba CPU kernel fed the same stored values (fp16 as uint16 bits).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import List

import numpy as np

from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.precision import power_of_two_scale, to_storage

#: (storage of J / preconditioner, CG vector dtype): the presets' combinations (fp64, fp32, mixed).
COMBOS = (("fp64", np.float64), ("fp32", np.float32), ("fp16", np.float32))
#: Kernel-level tolerance, relative to the reference's largest entry: the device sums in another order
#: (atomics, tree reductions), so results agree to a few units of the vector dtype's rounding.
KERNEL_TOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-5}
#: Whole CG solves (10 iterations): rounding differences grow through the recurrences.
CG_TOL = {np.dtype(np.float64): 1e-9, np.dtype(np.float32): 2e-3}
#: Whole LM solves: relative difference of the final costs.
SOLVE_TOL = 1e-6


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    scale = max(float(np.abs(ref).max(initial=0.0)), 1e-300)
    return float(np.abs(a - ref).max(initial=0.0)) / scale


def _row(rows, kernel, storage, vec, err, tol, **extra):
    rows.append(dict(kernel=kernel, storage=storage, vector=vec if isinstance(vec, str) else np.dtype(vec).name, rel_err=err, tol=tol,
                     ok=bool(np.isfinite(err) and err <= tol), **extra))


def jacobian_case(shape: str, seed: int = 0):
    """Random residual blocks: "ba" (2 rows, 6 + 3 columns, some fixed cameras), "pgo3" / "pgo6" (square
    blocks of a pose graph with a fixed pose). Returns (Ja, Jb, col_a, col_b, n, bd_col, bd_size, bd_off)."""
    rng = np.random.default_rng(seed)
    if shape == "ba":
        n_cam, n_pt, K_obs, m, da, db = 5, 14, 45, 2, 6, 3
        cam = rng.integers(0, n_cam, K_obs)
        pt = rng.integers(0, n_pt, K_obs)
        free_cam = np.arange(n_cam) >= 1  # camera 0 fixed
        cam_col = np.where(free_cam, (np.cumsum(free_cam) - 1) * 6, -1)
        n_free_cam = int(free_cam.sum())
        col_a = cam_col[cam].astype(np.int64)
        col_b = (n_free_cam * 6 + pt * 3).astype(np.int64)
        n = n_free_cam * 6 + n_pt * 3
        sizes = np.array([6] * n_free_cam + [3] * n_pt)
    else:
        d = 6 if shape == "pgo6" else 3
        nb_all, m, da, db = 13, d, d, d
        ei = np.concatenate([np.arange(nb_all - 1), rng.integers(0, nb_all, 8)])
        ej = np.concatenate([np.arange(1, nb_all), rng.integers(0, nb_all, 8)])
        keep = ei != ej
        ei, ej = ei[keep], ej[keep]
        col = np.where(np.arange(nb_all) >= 1, (np.arange(nb_all) - 1) * d, -1)  # pose 0 fixed
        col_a, col_b = col[ei].astype(np.int64), col[ej].astype(np.int64)
        K_obs = len(ei)
        n = (nb_all - 1) * d
        sizes = np.full(nb_all - 1, d)
    Ja = rng.standard_normal((K_obs, m, da))
    Jb = rng.standard_normal((K_obs, m, db))
    bd_col = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    bd_off = np.concatenate([[0], np.cumsum(sizes**2)[:-1]]).astype(np.int64)
    return Ja, Jb, col_a, col_b, n, bd_col, sizes.astype(np.int64), bd_off


def _launch(n):
    from mpslam_ros.solvers.cuda.kernels import TPB, blocks_for

    return blocks_for(n), TPB


def check_kernels(rows: List[dict]) -> None:
    from numba import cuda

    from mpslam_ros.solvers.cuda.kernels import device_view, kernels_for, reduction_blocks

    rng = np.random.default_rng(1)
    for shape in ("ba", "pgo3", "pgo6"):
        Ja64, Jb64, col_a, col_b, n, bd_col, bd_size, bd_off = jacobian_case(shape)
        Kn, m = Ja64.shape[:2]
        for storage, vt in COMBOS:
            vt = np.dtype(vt)
            kern = kernels_for(vt.name)
            tol = KERNEL_TOL[vt]
            Sa, Sb = to_storage(Ja64, storage), to_storage(Jb64, storage)
            dSa, dSb = cuda.to_device(device_view(Sa)), cuda.to_device(device_view(Sb))
            dca, dcb = cuda.to_device(col_a), cuda.to_device(col_b)
            p = rng.standard_normal(n).astype(vt)
            q = rng.standard_normal(Kn * m).astype(vt)
            dp, dq = cuda.to_device(p), cuda.to_device(q)
            # J p
            ref = np.empty(Kn * m, vt)
            K.jac_matvec(Sa, Sb, col_a, col_b, p, ref, False)
            out = cuda.device_array(Kn * m, vt)
            kern.jac_matvec[_launch(Kn * m)](dSa, dSb, dca, dcb, dp, out)
            _row(rows, f"jac_matvec[{shape}]", storage, vt, _rel(out.copy_to_host(), ref), tol)
            # J^T q
            ref = np.empty(n, vt)
            K.jac_t_matvec(Sa, Sb, col_a, col_b, q, ref, False)
            out = cuda.device_array(n, vt)
            kern.fill[_launch(n)](out, 0)
            kern.jac_t_matvec_add[_launch(Kn)](dSa, dSb, dca, dcb, dq, out)
            _row(rows, f"jac_t_matvec[{shape}]", storage, vt, _rel(out.copy_to_host(), ref), tol)
            # fused (J^T J + lam I) p
            lam = 0.37
            ref = np.empty(n, vt)
            K.jtj_matvec(Sa, Sb, col_a, col_b, p, np.empty(Kn * m, vt), ref, False)
            ref = ref + vt.type(lam) * p
            out = cuda.device_array(n, vt)
            kern.scale_into[_launch(n)](out, lam, dp)
            kern.normal_product_add[_launch(Kn)](dSa, dSb, dca, dcb, dp, out)
            _row(rows, f"normal_product[{shape}]", storage, vt, _rel(out.copy_to_host(), ref), tol)
            # block-Jacobi application (random blocks stored in the preconditioner format)
            vals = to_storage(rng.standard_normal(int((bd_size**2).sum())), storage)
            r = rng.standard_normal(n).astype(vt)
            ref = np.empty(n, vt)
            K.block_diag_apply(vals, bd_col, bd_size, bd_off, r, ref, False)
            col_blk = np.repeat(np.arange(len(bd_col)), bd_size).astype(np.int64)
            out = cuda.device_array(n, vt)
            kern.block_jacobi_apply[_launch(n)](cuda.to_device(device_view(vals)), cuda.to_device(col_blk),
                                                cuda.to_device(bd_col), cuda.to_device(bd_size),
                                                cuda.to_device(bd_off), cuda.to_device(r), out)
            _row(rows, f"block_jacobi[{shape}]", storage, vt, _rel(out.copy_to_host(), ref), tol)
        if shape != "ba":
            continue
        # CG vector operations and reductions (no stored operand: vector dtype only)
        for vt in (np.dtype(np.float64), np.dtype(np.float32)):
            kern = kernels_for(vt.name)
            tol = KERNEL_TOL[vt]
            big = 1000  # several thread blocks and a grid-stride loop
            a, b = rng.standard_normal(big).astype(vt), rng.standard_normal(big).astype(vt)
            s = cuda.to_device(np.zeros(4))
            kern.dot_add[reduction_blocks(big), _launch(big)[1]](cuda.to_device(a), cuda.to_device(b), s, 2)
            ref = float(np.dot(a.astype(np.float64), b.astype(np.float64)))
            err = abs(s.copy_to_host()[2] - ref) / float(np.abs(a).dot(np.abs(b)))
            _row(rows, "dot (reduction)", "-", vt, err, tol)
            x, r, p, Ap = (rng.standard_normal(big).astype(vt) for _ in range(4))
            alpha, beta = 0.3, -1.7
            dx, dr, dpp, dAp = (cuda.to_device(v) for v in (x, r, p, Ap))
            kern.cg_update[_launch(big)](dx, dr, dpp, dAp, alpha)
            _row(rows, "cg_update x", "-", vt, _rel(dx.copy_to_host(), x + vt.type(alpha) * p), tol)
            _row(rows, "cg_update r", "-", vt, _rel(dr.copy_to_host(), r - vt.type(alpha) * Ap), tol)
            kern.xpay[_launch(big)](dr, beta, dpp)
            _row(rows, "xpay", "-", vt, _rel(dpp.copy_to_host(), (r - vt.type(alpha) * Ap) + vt.type(beta) * p), tol)


def block_factor_case(shape: str, storage: str, vt: np.dtype, seed: int = 2):
    """A complete block L D L^T of P (J^T J + I) P^T for the pose-graph-shaped J (random block order), built by
    the CPU factorisation LM uses; returns (preconditioner-like object, dense fp64 matrix, Ja, Jb, ...)."""
    from types import SimpleNamespace

    from mpslam_ros.solvers.block_ldl import block_ldl_numeric, block_symbolic

    Ja, Jb, col_a, col_b, n, bd_col, bd_size, bd_off = jacobian_case(shape, seed)
    d = int(bd_size[0])
    nb = len(bd_size)
    order = np.random.default_rng(seed).permutation(nb).astype(np.int64)
    sym = block_symbolic(col_a, col_b, d, nb, order)
    U, Dinv, bad = block_ldl_numeric(sym, Ja, Jb, 0.0, 1.0)
    assert bad < 0
    scale = power_of_two_scale(float(np.abs(U).max(initial=0.0)), 2.0**14)
    pc = SimpleNamespace(kind=K.PC_BLOCK_LDL, L_indptr=sym.indptr, L_indices=sym.indices,
                         L_vals=to_storage(U * scale, storage), L_diag=Dinv.astype(vt), L_block=d,
                         L_inv_scale=1.0 / scale, L_perm=sym.scalar_perm,
                         bd_vals=np.zeros(1), bd_col=bd_col, bd_size=bd_size, bd_off=bd_off)
    return pc, (Ja, Jb, col_a, col_b, n)


def cpu_block_ldl_apply(pc, r: np.ndarray) -> np.ndarray:
    """z = P^T (L D L^T)^-1 P r with the CPU kernel (what :func:`kernels.cgnr` does for PC_BLOCK_LDL)."""
    z = r[pc.L_perm].copy()
    tmp = np.empty_like(z)
    K.block_ldl_solve(pc.L_indptr, pc.L_indices, pc.L_vals, pc.L_diag, pc.L_block, pc.L_inv_scale, z, tmp, z)
    out = np.empty_like(z)
    out[pc.L_perm] = z
    return out


def check_block_ldl(rows: List[dict]) -> None:
    from numba import cuda

    from mpslam_ros.solvers.cuda.cgnr import CudaCGNR
    from mpslam_ros.solvers.cuda.kernels import kernels_for

    rng = np.random.default_rng(3)
    for shape in ("pgo3", "pgo6"):
        for storage, vt in COMBOS:
            vt = np.dtype(vt)
            pc, (Ja, Jb, col_a, col_b, n) = block_factor_case(shape, storage, vt)
            r = rng.standard_normal(n).astype(vt)
            ref = cpu_block_ldl_apply(pc, r)
            cg = CudaCGNR(col_a, col_b, n, Ja.shape[1], pc.bd_col, pc.bd_size, pc.bd_off)
            dev = cg._preconditioner(pc, vt)
            w = cg._vectors(vt)
            w["r"].copy_to_device(r)
            cg.apply_preconditioner(kernels_for(vt.name), dev, w["r"], w["z"], w["tmp"])
            levels = (len(dev["sched"].fwd_ptr) - 1, len(dev["sched"].bwd_ptr) - 1)
            _row(rows, f"block_ldl_solve[{shape}]", storage, vt, _rel(w["z"].copy_to_host(), ref), KERNEL_TOL[vt],
                 levels=f"{levels[0]} fwd / {levels[1]} bwd levels, {len(pc.L_indices)} blocks")
            if storage == "fp64":  # and it is the solve it claims to be: (J^T J + I) z = r
                A = (_dense_jtj(Ja, Jb, col_a, col_b, n) + np.eye(n))
                err = _rel(A @ w["z"].copy_to_host(), r)
                _row(rows, f"block_ldl_solve[{shape}] residual", storage, vt, err, 1e-10)


def _dense_jtj(Ja, Jb, col_a, col_b, n):
    J = np.zeros((Ja.shape[0] * Ja.shape[1], n))
    for k in range(Ja.shape[0]):
        rows = slice(k * Ja.shape[1], (k + 1) * Ja.shape[1])
        if col_a[k] >= 0:
            J[rows, col_a[k]:col_a[k] + Ja.shape[2]] += Ja[k]
        if col_b[k] >= 0:
            J[rows, col_b[k]:col_b[k] + Jb.shape[2]] += Jb[k]
    return J.T @ J


def check_cg(rows: List[dict]) -> None:
    """Whole CG solves (10 iterations, no early stop) on the device vs the CPU loops, same stored inputs."""
    from types import SimpleNamespace

    from mpslam_ros.solvers.cgnr_ba import cgnr_ba
    from mpslam_ros.solvers.cuda.cgnr import CudaCGNR

    rng = np.random.default_rng(4)
    for storage, vt in COMBOS:
        vt = np.dtype(vt)
        # BA: block-Jacobi, the fused cgnr_ba loop on the CPU
        Ja, Jb, col_a, col_b, n, bd_col, bd_size, bd_off = jacobian_case("ba")
        Sa, Sb = to_storage(Ja, storage), to_storage(Jb, storage)
        bd = np.empty(int((bd_size**2).sum()))
        blk_a = np.searchsorted(bd_col, col_a)
        blk_b = np.searchsorted(bd_col, col_b)
        K.jtj_block_diagonal(Ja, Jb, col_a, col_b, bd_off[blk_a], bd_off[blk_b], bd)
        lam = 0.5
        inv = np.concatenate([np.linalg.inv(bd[o:o + s * s].reshape(s, s) + lam * np.eye(s)).ravel()
                              for o, s in zip(bd_off, bd_size)])
        pc = SimpleNamespace(kind=K.PC_BLOCK_JACOBI, bd_vals=to_storage(inv, storage), bd_col=bd_col,
                             bd_size=bd_size, bd_off=bd_off)
        rhs = rng.standard_normal(n).astype(vt)
        x_cpu, st_cpu = np.empty(n, vt), np.zeros(6)
        it_cpu = cgnr_ba(Sa, Sb, col_a, col_b, rhs, lam, K.PC_BLOCK_JACOBI, pc.bd_vals, bd_col, bd_size, bd_off, 10,
                         0.0, x_cpu, st_cpu)
        cg = CudaCGNR(col_a, col_b, n, Ja.shape[1], bd_col, bd_size, bd_off)
        x_gpu, st_gpu = np.empty(n, vt), np.zeros(6)
        it_gpu = cg.solve(Sa, Sb, rhs, lam, pc, 10, 0.0, 0.0, x_gpu, st_gpu)
        _row(rows, "cgnr block-Jacobi (vs cgnr_ba)", storage, vt, _rel(x_gpu, x_cpu), CG_TOL[vt],
             iterations=f"{it_gpu} / {it_cpu}")
        # PGO: block L D L^T preconditioner with the update-size test, the shared kernels.cgnr on the CPU
        pc, (Ja, Jb, col_a, col_b, n) = block_factor_case("pgo6", storage, vt)
        Sa, Sb = to_storage(Ja, storage), to_storage(Jb, storage)
        rhs = rng.standard_normal(n).astype(vt)
        x_cpu, st_cpu = np.empty(n, vt), np.zeros(6)
        lam = 0.8  # factor of J^T J + I: a slightly different damping, so CG needs several iterations
        it_cpu = K.cgnr(Sa, Sb, col_a, col_b, rhs, lam, K.PC_BLOCK_LDL, np.zeros(1, Sa.dtype), pc.bd_col,
                        pc.bd_size, pc.bd_off, pc.L_indptr, pc.L_indices, pc.L_vals, pc.L_perm, pc.L_diag, pc.L_block,
                        pc.L_inv_scale, 10, 1e-12, 0.0, False, x_cpu, st_cpu)
        cg = CudaCGNR(col_a, col_b, n, Ja.shape[1], pc.bd_col, pc.bd_size, pc.bd_off)
        x_gpu, st_gpu = np.empty(n, vt), np.zeros(6)
        it_gpu = cg.solve(Sa, Sb, rhs, lam, pc, 10, 1e-12, 0.0, x_gpu, st_gpu)
        _row(rows, "cgnr block LDL (vs kernels.cgnr)", storage, vt, _rel(x_gpu, x_cpu), CG_TOL[vt],
             iterations=f"{it_gpu} / {it_cpu}")


def check_solves(rows: List[dict], precisions=("fp64", "fp32", "mixed")) -> None:
    """Whole LM solves with device="cuda" vs device="cpu" from the same start: same final cost."""
    from mpslam_ros.problems.ba import ba_options, solve_window
    from mpslam_ros.problems.graph_synth import random_pose_graph
    from mpslam_ros.problems.pgo import PoseGraphProblem, pgo_options
    from mpslam_ros.problems.window_synth import make_window
    from mpslam_ros.solvers.lm import SolverOptions, solve

    w = make_window(5, num_keyframes=5, num_landmarks=16, track_length=(3, 5), stereo=True)
    for precision in precisions:
        out = {}
        for device in ("cpu", "cuda"):
            _, _, s = solve_window(*w.solve_args(), options=ba_options(precision=precision, device=device,
                                                                       max_iterations=6))
            out[device] = s
        c, g = out["cpu"], out["cuda"]
        err = abs(g.final_cost - c.final_cost) / max(abs(c.final_cost), 1e-300)
        _row(rows, "BA window solve (final cost)", precision, "-", err, SOLVE_TOL, device=g.device,
             costs=f"{c.initial_cost:.6g} -> cpu {c.final_cost:.9g} / cuda {g.final_cost:.9g}",
             iterations=f"LM {g.iterations}/{c.iterations}, CG {g.cg_iterations}/{c.cg_iterations}")
    graph = random_pose_graph(14, "se3", 3, odom_sigma_r=0.05, loop_prob=0.5, min_gap=4).graph
    for precision in precisions:
        out = {}
        for device in ("cpu", "cuda"):
            prob = PoseGraphProblem(graph.kind, graph.poses.copy(), graph.edge_i, graph.edge_j, graph.measurements,
                                    graph.information, fixed=np.array([0]))
            out[device] = solve(prob, pgo_options(SolverOptions(precision=precision, device=device,
                                                                max_iterations=8)))
        c, g = out["cpu"], out["cuda"]
        err = abs(g.final_cost - c.final_cost) / max(abs(c.final_cost), 1e-300)
        _row(rows, "PGO solve, block LDL (final cost)", precision, "-", err, SOLVE_TOL, device=g.device,
             costs=f"{c.initial_cost:.6g} -> cpu {c.final_cost:.9g} / cuda {g.final_cost:.9g}",
             iterations=f"LM {g.iterations}/{c.iterations}, CG {g.cg_iterations}/{c.cg_iterations}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mpslam_ros.solvers.cuda.selfcheck", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", metavar="PATH", help="also write the rows (and the device) as JSON to PATH")
    parser.add_argument("--solve-precisions", default="fp64,fp32,mixed",
                        help="precision presets of the whole BA / PGO solves (default: %(default)s; the simulator "
                             "takes ~20-40 s per preset)")
    parser.add_argument("--only", choices=["kernels", "block_ldl", "cg", "solves"], action="append",
                        help="run only these groups (repeatable; default: all)")
    args = parser.parse_args(argv)
    from mpslam_ros.solvers.cuda import cuda_status

    kind, why = cuda_status()
    result = dict(device=kind, note=why, rows=[])
    if kind is None:
        print(f"skipped: {why}")
        if args.json:
            with open(args.json, "w") as f:
                json.dump(result, f)
        return 0
    print(f"device: {kind} ({why})")
    if kind == "simulator":
        # the simulator's scheduler polls its threads while holding the GIL: a short switch interval lets
        # them run (a dot product launch: 0.33 s -> 0.07 s on this machine)
        sys.setswitchinterval(1e-4)
    groups = dict(kernels=check_kernels, block_ldl=check_block_ldl, cg=check_cg, solves=check_solves)
    for name in args.only or list(groups):
        t0 = time.perf_counter()
        if name == "solves":
            check_solves(result["rows"], tuple(p for p in args.solve_precisions.split(",") if p))
        else:
            groups[name](result["rows"])
        result.setdefault("seconds", {})[name] = round(time.perf_counter() - t0, 1)
    for r in result["rows"]:
        extra = "  ".join(str(r[k]) for k in r if k not in ("kernel", "storage", "vector", "rel_err", "tol", "ok"))
        print(f"{'ok  ' if r['ok'] else 'FAIL'} {r['kernel']:<36} {r['storage']:<5} {r['vector']:<8} "
              f"rel err {r['rel_err']:.2e} (tol {r['tol']:.0e})  {extra}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)
    return 0 if all(r["ok"] for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
