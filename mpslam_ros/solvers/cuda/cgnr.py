"""CGNR on a CUDA device: the preconditioned CG loop of :func:`mpslam_ros.solvers.kernels.cgnr` /
:func:`mpslam_ros.solvers.cgnr_ba.cgnr_ba` driven from the host, with every vector on the device.

What stays on the device, and for how long (one :class:`CudaCGNR` per LM solve):

- the residual-block column maps, the block-Jacobi column map and the CG work vectors: the whole solve;
- the stored Jacobian (fp64 / fp32 / fp16): uploaded once per LM iteration (LM rescales and casts it on the
  host each iteration) and read by every CG iteration of that iteration, its refinement sweeps and retries;
- the preconditioner: block-Jacobi per LM iteration (small), the block L D L^T factor and its level
  schedule until LM rebuilds it.

Per CG iteration the host reads back two small groups of dot products (p^T A p, then |r|^2, r^T z and the
update-size norms): the stopping test and the step lengths are host scalars, as in any host-driven CG.
Stopping test and ``stats`` are those of :func:`kernels.cgnr` (``step_rtol`` 0: that of ``cgnr_ba``); the
tick counts in ``stats[2:4]`` are 0 (kernel launches are asynchronous; no per-phase GPU timing).
"""

from __future__ import annotations

import math

import numpy as np

from mpslam_ros.solvers import kernels as K
from mpslam_ros.solvers.cuda.kernels import (
    MAX_ROWS,
    TPB,
    blocks_for,
    device_view,
    kernels_for,
    level_schedule,
    reduction_blocks,
)


#: Preconditioner kinds the device CG loop applies (scalar IC(0) / CSR ict factors stay on the CPU).
DEVICE_PRECONDITIONERS = (K.PC_NONE, K.PC_BLOCK_JACOBI, K.PC_BLOCK_LDL)


class CudaCGNR:
    """Device-resident CGNR for one problem layout (column maps of residual blocks and parameter blocks)."""

    def __init__(self, col_a: np.ndarray, col_b: np.ndarray, n: int, residual_rows: int,
                 bd_col: np.ndarray, bd_size: np.ndarray, bd_off: np.ndarray):
        from numba import cuda

        if residual_rows > MAX_ROWS:
            raise ValueError(f"CUDA CGNR: residual blocks of {residual_rows} rows (at most {MAX_ROWS})")
        self.cuda = cuda
        self.n = int(n)
        self.K = len(col_a)
        self.m = int(residual_rows)
        self.col_a = cuda.to_device(np.ascontiguousarray(col_a, dtype=np.int64))
        self.col_b = cuda.to_device(np.ascontiguousarray(col_b, dtype=np.int64))
        col_blk = np.repeat(np.arange(len(bd_col), dtype=np.int64), np.asarray(bd_size, dtype=np.int64))
        self.bd_col = cuda.to_device(np.ascontiguousarray(bd_col, dtype=np.int64))
        self.bd_size = cuda.to_device(np.ascontiguousarray(bd_size, dtype=np.int64))
        self.bd_off = cuda.to_device(np.ascontiguousarray(bd_off, dtype=np.int64))
        self.col_blk = cuda.to_device(col_blk)
        self.scalars = cuda.device_array(8, dtype=np.float64)
        self._work = {}
        self._jac = (None, None, None)  # (host Sa, host Sb, (device Sa, device Sb))
        self._pc = (None, None)  # (host preconditioner object, its device arrays)
        self._schedule = (None, None)  # ((indptr, indices) host arrays, device level schedule)
        self.uploads = {"jacobian": 0, "preconditioner": 0}

    @staticmethod
    def supports(pc_kind: int) -> bool:
        """Whether the device loop applies this preconditioner kind."""
        return pc_kind in DEVICE_PRECONDITIONERS

    # ------------------------------------------------------------------ device data

    def _vectors(self, dtype: np.dtype):
        w = self._work.get(dtype.str)
        if w is None:
            c = self.cuda
            w = {name: c.device_array(self.n, dtype=dtype) for name in ("x", "r", "z", "p", "Ap", "tmp")}
            self._work[dtype.str] = w
        return w

    def _jacobian(self, Sa: np.ndarray, Sb: np.ndarray):
        hSa, hSb, dev = self._jac
        if hSa is not Sa or hSb is not Sb:
            dev = (self.cuda.to_device(device_view(Sa)), self.cuda.to_device(device_view(Sb)))
            self._jac = (Sa, Sb, dev)  # the host arrays are kept, so their identity means "unchanged"
            self.uploads["jacobian"] += 1
        return dev

    def _preconditioner(self, pc, vec_dtype: np.dtype):
        host, dev = self._pc
        if host is pc and dev["vec"] == vec_dtype.str:
            return dev
        c = self.cuda
        dev = {"kind": int(pc.kind), "vec": vec_dtype.str}
        if pc.kind == K.PC_BLOCK_JACOBI:
            dev["vals"] = c.to_device(device_view(pc.bd_vals))
        elif pc.kind == K.PC_BLOCK_LDL:
            # the level schedule depends only on the pattern (fixed for the solve): built and uploaded once
            key, sched_dev = self._schedule
            if key is None or key[0] is not pc.L_indptr or key[1] is not pc.L_indices:
                sched = level_schedule(pc.L_indptr, pc.L_indices)
                sched_dev = {name: c.to_device(getattr(sched, name))
                             for name in ("fwd_rows", "bwd_rows", "tptr", "tpos", "trow")}
                sched_dev["indptr"] = c.to_device(np.ascontiguousarray(pc.L_indptr, dtype=np.int64))
                sched_dev["indices"] = c.to_device(np.ascontiguousarray(pc.L_indices, dtype=np.int64))
                sched_dev["sched"] = sched
                self._schedule = ((pc.L_indptr, pc.L_indices), sched_dev)
            dev.update(sched_dev)
            dev["d"] = int(pc.L_block)
            dev["inv_scale"] = float(pc.L_inv_scale)
            dev["U"] = c.to_device(device_view(pc.L_vals))
            dev["Dinv"] = c.to_device(np.ascontiguousarray(pc.L_diag, dtype=vec_dtype))
            perm = np.asarray(pc.L_perm, dtype=np.int64)
            dev["perm"] = c.to_device(perm) if len(perm) else None
        elif pc.kind != K.PC_NONE:
            raise ValueError(f"CUDA CGNR: preconditioner kind {pc.kind} is not implemented on the device")
        self._pc = (pc, dev)
        self.uploads["preconditioner"] += 1
        return dev

    # ------------------------------------------------------------------ kernels

    def apply_preconditioner(self, kern, pc_dev, r, z, tmp) -> None:
        """z = M^-1 r on the device."""
        n = self.n
        nbk = blocks_for(n)
        kind = pc_dev["kind"]
        if kind == K.PC_BLOCK_JACOBI:
            kern.block_jacobi_apply[nbk, TPB](pc_dev["vals"], self.col_blk, self.bd_col, self.bd_size,
                                                 self.bd_off, r, z)
        elif kind == K.PC_BLOCK_LDL:
            block_ldl_solve(kern, pc_dev, r, z, tmp, n)
        else:
            kern.copy[nbk, TPB](r, z)

    def solve(self, Sa: np.ndarray, Sb: np.ndarray, rhs: np.ndarray, lam: float, pc, max_iter: int, rtol: float,
              step_rtol: float, x_out: np.ndarray, stats: np.ndarray) -> int:
        """Preconditioned CG on ``(J^T J + lam I) x = rhs`` (J from ``Sa``/``Sb``, stored as given); ``x_out``
        (host, the vector dtype) receives x; ``stats`` as in :func:`kernels.cgnr`. Returns iterations."""
        vec = np.dtype(x_out.dtype)
        if pc.kind not in DEVICE_PRECONDITIONERS:
            raise ValueError(f"CUDA CGNR: preconditioner kind {pc.kind} is not implemented on the device")
        kern = kernels_for(vec.name)
        Ja, Jb = self._jacobian(Sa, Sb)
        pc_dev = self._preconditioner(pc, vec)
        w = self._vectors(vec)
        x, r, z, p, Ap, tmp = w["x"], w["r"], w["z"], w["p"], w["Ap"], w["tmp"]
        n, tpb, nbk, nred = self.n, TPB, blocks_for(self.n), reduction_blocks(self.n)
        s = self.scalars
        stats[:] = 0.0
        b = np.ascontiguousarray(rhs, dtype=vec)
        b_norm = math.sqrt(float(np.einsum("i,i->", b.astype(np.float64), b.astype(np.float64))))
        if b_norm == 0.0 or not math.isfinite(b_norm):
            x_out[:] = 0
            stats[4] = 0.0 if b_norm == 0.0 else 1.0
            return 0
        r.copy_to_device(b)
        kern.fill[nbk, tpb](x, 0)
        self.apply_preconditioner(kern, pc_dev, r, z, tmp)
        kern.copy[nbk, tpb](z, p)
        kern.fill[1, tpb](s, 0.0)
        kern.dot_add[nred, tpb](r, z, s, 0)
        rz = float(s.copy_to_host()[0])
        rel = 1.0
        bad = 0.0
        it = 0
        nK = blocks_for(self.K)
        for it in range(1, max_iter + 1):
            kern.scale_into[nbk, tpb](Ap, lam, p)
            kern.normal_product_add[nK, tpb](Ja, Jb, self.col_a, self.col_b, p, Ap)
            kern.fill[1, tpb](s, 0.0)
            kern.dot_add[nred, tpb](p, Ap, s, 0)
            pAp = float(vec.type(s.copy_to_host()[0]))
            if not (math.isfinite(pAp) and pAp > 0.0):
                if not math.isfinite(pAp):
                    bad = 1.0
                it -= 1
                break
            alpha = float(vec.type(rz / pAp))
            kern.cg_update[nbk, tpb](x, r, p, Ap, alpha)
            # everything the stopping test and the next direction need, in one read-back: the
            # preconditioner is applied before the test (wasted only on the last iteration)
            self.apply_preconditioner(kern, pc_dev, r, z, tmp)
            kern.fill[1, tpb](s, 0.0)
            kern.dot_add[nred, tpb](r, r, s, 0)
            kern.dot_add[nred, tpb](r, z, s, 1)
            if step_rtol > 0.0:
                kern.dot_add[nred, tpb](p, p, s, 2)
                kern.dot_add[nred, tpb](x, x, s, 3)
            h = s.copy_to_host()
            rel = math.sqrt(h[0]) / b_norm if h[0] >= 0.0 else float("nan")
            stats[5] = pAp
            if not math.isfinite(rel):
                bad = 1.0
                break
            if rel <= rtol:
                if step_rtol <= 0.0 or rel == 0.0:
                    break
                if it >= 2 and alpha * alpha * h[2] <= step_rtol * step_rtol * h[3]:
                    break
            rz_new = float(vec.type(h[1]))
            beta = float(vec.type(rz_new / rz))
            rz = rz_new
            kern.xpay[nbk, tpb](z, beta, p)
        x.copy_to_host(x_out)
        if not np.all(np.isfinite(x_out)):
            bad = 1.0
        stats[0] = it
        stats[1] = rel
        stats[4] = bad
        return it


def block_ldl_solve(kern, pc_dev, r, z, tmp, n: int) -> None:
    """z = P^T (L D L^T)^-1 P r with level-scheduled block triangular solves (one launch per level);
    ``r`` is left unchanged, ``tmp`` is overwritten."""
    sched, d, tpb = pc_dev["sched"], pc_dev["d"], TPB
    nbk = blocks_for(n)
    perm = pc_dev["perm"]
    if perm is not None:
        kern.gather[nbk, tpb](r, perm, z)  # z = P r
        src = z
    else:
        src = r
    # forward: tmp_I = src_I - sum_J L_IJ tmp_J (in place over src is not allowed: src may be r)
    ptr = sched.fwd_ptr
    for lv in range(len(ptr) - 1):
        count = int(ptr[lv + 1] - ptr[lv])
        kern.ldl_forward_level[blocks_for(count * d), tpb](pc_dev["fwd_rows"], int(ptr[lv]), count, pc_dev["indptr"],
                                                          pc_dev["indices"], pc_dev["U"], pc_dev["inv_scale"], d,
                                                          src, tmp)
    kern.ldl_pivots[nbk, tpb](pc_dev["Dinv"], d, tmp, z)  # z = D^-1 w (src, if it was z, is no longer needed)
    y = z
    ptr = sched.bwd_ptr
    for lv in range(len(ptr) - 1):
        count = int(ptr[lv + 1] - ptr[lv])
        kern.ldl_backward_level[blocks_for(count * d), tpb](pc_dev["bwd_rows"], int(ptr[lv]), count, pc_dev["tptr"],
                                                           pc_dev["tpos"], pc_dev["trow"], pc_dev["U"],
                                                           pc_dev["inv_scale"], d, y)
    if perm is not None:
        kern.scatter[nbk, tpb](y, perm, tmp)  # tmp = P^T y
        kern.copy[nbk, tpb](tmp, z)
