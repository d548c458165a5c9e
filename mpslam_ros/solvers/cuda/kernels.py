"""numba-cuda kernels of the CGNR solve: Jacobian products, CG vector operations, reductions, block-Jacobi and
the level-scheduled block L D L^T solves of the pose-graph preconditioner.

Same block-sparse layout and precision policy as the CPU kernels (:mod:`mpslam_ros.solvers.kernels`):
Jacobian / preconditioner values stored fp64, fp32 or fp16, widened on load, and all arithmetic in the dtype
of the CG vectors (fp32 for fp32 / mixed, fp64 for fp64). On the GPU fp16 is a real type: the CPU side's
uint16 bit patterns are handed over as ``float16`` views (the same bytes), converted by the hardware.

Each kernel family is compiled per vector dtype (:func:`kernels_for`: a ``float32`` and a ``float64`` set),
because the accumulator type must be a compile-time constant. Threads: one per residual row (J p), one
per residual block (the fused J^T J p and J^T q, accumulated with atomic adds: the order of the sums
differs from the CPU's, so results agree to rounding, not bit for bit), one per scalar column (vector
ops, block-Jacobi, pivots), and for the triangular solves one per (block row of a level, component):
rows of one level depend only on rows of earlier levels, so a solve is one launch per level.
"""

from __future__ import annotations

from functools import lru_cache
from types import SimpleNamespace

import numpy as np
from numba import config as nb_config
from numba import cuda, float32, float64, njit

#: True under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1 before numba was imported).
SIMULATOR = bool(getattr(nb_config, "ENABLE_CUDASIM", 0))


def _guard_simulated_shared_arrays() -> None:
    """Make the simulator's shared-array allocation thread-safe. numba-cuda's simulator runs a block's
    threads as Python threads, and ``FakeCUDAShared.array`` allocates a block's array on first use with an
    unguarded get-then-set: two threads can each get their own array, so a reduction loses the other
    threads' partial sums. Why: one full-suite run got a CG solve 11 % off the CPU's (docs/cuda.md); with a
    short thread switch interval 10 of 300 ``dot_add`` launches gave a wrong sum. A GPU is unaffected."""
    import sys
    import threading

    from numba.core import types
    from numba.cuda.simulator import kernelapi
    from numba.np import numpy_support

    shared = kernelapi.FakeCUDAShared
    unguarded = shared.array
    lock = threading.Lock()

    def array(self, shape, dtype, alignment=None):
        if alignment is not None or shape == 0:  # errors and dynamic shared memory: no allocation to race on
            return unguarded(self, shape, dtype, alignment)
        caller = sys._getframe(1)  # one array per call site, as the simulator's own (source file, line)
        key = (caller.f_code.co_filename, caller.f_lineno)
        with lock:
            found = self._allocations.get(key)
            if found is None:
                np_dtype = numpy_support.as_dtype(dtype) if isinstance(dtype, types.Type) else dtype
                found = self._allocations[key] = np.empty(shape, np_dtype)
        return found

    shared.array = array


if SIMULATOR:
    _guard_simulated_shared_arrays()


#: Threads per block. The simulator runs every thread as a Python thread and every syncthreads as a
#: barrier over them: tiny blocks keep its tests fast; 128 suits the GPU (not tuned: no GPU was available).
TPB = 8 if SIMULATOR else 128
#: Most rows of one residual block the fused product keeps in registers (BA 2-3, pose graphs 3 or 6).
MAX_ROWS = 8
#: Grid-stride reductions use at most this many thread blocks.
MAX_REDUCTION_BLOCKS = 2 if SIMULATOR else 256


def blocks_for(n: int) -> int:
    """Thread blocks covering ``n`` threads (at least one)."""
    return max(1, (int(n) + TPB - 1) // TPB)


def reduction_blocks(n: int) -> int:
    return min(blocks_for(n), MAX_REDUCTION_BLOCKS)


@lru_cache(maxsize=None)
def kernels_for(vector_dtype: str) -> SimpleNamespace:
    """The kernels whose arithmetic runs in ``vector_dtype`` ("float32" or "float64")."""
    vec = {"float32": float32, "float64": float64}[str(np.dtype(vector_dtype))]

    @cuda.jit
    def jac_matvec(Ja, Jb, col_a, col_b, p, out):
        """out = J p (one thread per residual row; out has K*m entries)."""
        t = cuda.grid(1)
        K, m, da = Ja.shape
        if t >= K * m:
            return
        db = Jb.shape[2]
        k = t // m
        r = t - k * m
        ca = col_a[k]
        cb = col_b[k]
        acc = vec(0)
        if ca >= 0:
            for c in range(da):
                acc += vec(Ja[k, r, c]) * p[ca + c]
        if cb >= 0:
            for c in range(db):
                acc += vec(Jb[k, r, c]) * p[cb + c]
        out[t] = acc

    @cuda.jit
    def jac_t_matvec_add(Ja, Jb, col_a, col_b, q, out):
        """out += J^T q (one thread per residual block, atomic adds; zero ``out`` first)."""
        k = cuda.grid(1)
        K, m, da = Ja.shape
        if k >= K:
            return
        db = Jb.shape[2]
        ca = col_a[k]
        cb = col_b[k]
        base = k * m
        if ca >= 0:
            for c in range(da):
                acc = vec(0)
                for r in range(m):
                    acc += vec(Ja[k, r, c]) * q[base + r]
                cuda.atomic.add(out, ca + c, acc)
        if cb >= 0:
            for c in range(db):
                acc = vec(0)
                for r in range(m):
                    acc += vec(Jb[k, r, c]) * q[base + r]
                cuda.atomic.add(out, cb + c, acc)

    @cuda.jit
    def normal_product_add(Ja, Jb, col_a, col_b, p, out):
        """out += J^T (J p), fused per residual block: q_k = Ja_k p_a + Jb_k p_b stays in registers and
        J is read once (the CPU's :func:`cgnr_ba._normal_product`); ``out`` set to lam p first."""
        k = cuda.grid(1)
        K, m, da = Ja.shape
        if k >= K:
            return
        db = Jb.shape[2]
        ca = col_a[k]
        cb = col_b[k]
        q = cuda.local.array(MAX_ROWS, vec)
        for r in range(m):
            acc = vec(0)
            if ca >= 0:
                for c in range(da):
                    acc += vec(Ja[k, r, c]) * p[ca + c]
            if cb >= 0:
                for c in range(db):
                    acc += vec(Jb[k, r, c]) * p[cb + c]
            q[r] = acc
        if ca >= 0:
            for c in range(da):
                acc = vec(0)
                for r in range(m):
                    acc += vec(Ja[k, r, c]) * q[r]
                cuda.atomic.add(out, ca + c, acc)
        if cb >= 0:
            for c in range(db):
                acc = vec(0)
                for r in range(m):
                    acc += vec(Jb[k, r, c]) * q[r]
                cuda.atomic.add(out, cb + c, acc)

    @cuda.jit
    def fill(out, value):
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = value

    @cuda.jit
    def scale_into(out, s, x):
        """out = s x."""
        i = cuda.grid(1)
        if i < out.shape[0]:
            out[i] = vec(s) * x[i]

    @cuda.jit
    def copy(src, dst):
        i = cuda.grid(1)
        if i < dst.shape[0]:
            dst[i] = src[i]

    @cuda.jit
    def cg_update(x, r, p, Ap, alpha):
        """x += alpha p;  r -= alpha Ap."""
        i = cuda.grid(1)
        if i < x.shape[0]:
            a = vec(alpha)
            x[i] += a * p[i]
            r[i] -= a * Ap[i]

    @cuda.jit
    def xpay(z, beta, p):
        """p = z + beta p."""
        i = cuda.grid(1)
        if i < p.shape[0]:
            p[i] = z[i] + vec(beta) * p[i]

    @cuda.jit
    def dot_add(a, b, out, slot):
        """out[slot] += a . b: products summed in the vector dtype per thread and per thread block (shared
        memory tree), the block sums added in fp64 (``out`` is float64)."""
        sh = cuda.shared.array(TPB, vec)
        tid = cuda.threadIdx.x
        i = cuda.grid(1)
        stride = cuda.gridsize(1)
        acc = vec(0)
        while i < a.shape[0]:
            acc += a[i] * b[i]
            i += stride
        sh[tid] = acc
        cuda.syncthreads()
        s = TPB // 2
        while s > 0:
            if tid < s:
                sh[tid] += sh[tid + s]
            cuda.syncthreads()
            s //= 2
        if tid == 0:
            cuda.atomic.add(out, slot, float64(sh[0]))

    @cuda.jit
    def block_jacobi_apply(vals, col_blk, bd_col, bd_size, bd_off, r, z):
        """z = blockdiag(vals) r (one thread per column; blocks row-major at vals[bd_off[b]:])."""
        c = cuda.grid(1)
        if c >= z.shape[0]:
            return
        b = col_blk[c]
        c0 = bd_col[b]
        s = bd_size[b]
        o = bd_off[b] + (c - c0) * s
        acc = vec(0)
        for j in range(s):
            acc += vec(vals[o + j]) * r[c0 + j]
        z[c] = acc

    @cuda.jit
    def gather(src, perm, dst):
        """dst[i] = src[perm[i]] (P v)."""
        i = cuda.grid(1)
        if i < dst.shape[0]:
            dst[i] = src[perm[i]]

    @cuda.jit
    def scatter(src, perm, dst):
        """dst[perm[i]] = src[i] (P^T v)."""
        i = cuda.grid(1)
        if i < src.shape[0]:
            dst[perm[i]] = src[i]

    @cuda.jit
    def ldl_forward_level(rows, start, count, indptr, indices, U, inv_scale, d, r, w):
        """One level of L w = r (unit block-lower L = I + U inv_scale): w_I = r_I - sum_J L_IJ w_J for the
        ``count`` block rows ``rows[start:]``; every w_J they read belongs to an earlier level."""
        t = cuda.grid(1)
        if t >= count * d:
            return
        I = rows[start + t // d]
        a = t % d
        dd = d * d
        acc = vec(0)
        for p in range(indptr[I], indptr[I + 1]):
            o = p * dd + a * d
            cb = indices[p] * d
            for b in range(d):
                acc += vec(U[o + b]) * w[cb + b]
        w[I * d + a] = r[I * d + a] - acc * vec(inv_scale)

    @cuda.jit
    def ldl_pivots(Dinv, d, w, z):
        """z_I = D_I^-1 w_I for every block (inverse pivot blocks in the vector dtype, never fp16)."""
        i = cuda.grid(1)
        if i >= z.shape[0]:
            return
        I = i // d
        a = i - I * d
        o = I * d * d + a * d
        acc = vec(0)
        for b in range(d):
            acc += Dinv[o + b] * w[I * d + b]
        z[i] = acc

    @cuda.jit
    def ldl_backward_level(rows, start, count, tptr, tpos, trow, U, inv_scale, d, z):
        """One level of L^T y = z in place: y_J = z_J - sum_I L_IJ^T y_I over the blocks of column J
        (``tpos``: their positions in U, ``trow``: their rows I, all in earlier backward levels)."""
        t = cuda.grid(1)
        if t >= count * d:
            return
        J = rows[start + t // d]
        b = t % d
        dd = d * d
        acc = vec(0)
        for s in range(tptr[J], tptr[J + 1]):
            o = tpos[s] * dd + b
            ci = trow[s] * d
            for a in range(d):
                acc += vec(U[o + a * d]) * z[ci + a]
        z[J * d + b] -= acc * vec(inv_scale)

    return SimpleNamespace(
        jac_matvec=jac_matvec, jac_t_matvec_add=jac_t_matvec_add, normal_product_add=normal_product_add,
        fill=fill, scale_into=scale_into, copy=copy, cg_update=cg_update, xpay=xpay, dot_add=dot_add,
        block_jacobi_apply=block_jacobi_apply, gather=gather, scatter=scatter,
        ldl_forward_level=ldl_forward_level, ldl_pivots=ldl_pivots,
        ldl_backward_level=ldl_backward_level)


def device_view(values: np.ndarray) -> np.ndarray:
    """Stored values as the GPU reads them: uint16 fp16 bit patterns become ``float16`` (same bytes)."""
    values = np.ascontiguousarray(values)
    return values.view(np.float16) if values.dtype == np.uint16 else values


# --------------------------------------------------------------------------- level schedules


@njit(cache=True)
def _levels(indptr, indices):
    """Forward and backward level of every block row of a strictly lower block pattern (CSR, columns < row)."""
    nb = indptr.shape[0] - 1
    fwd = np.zeros(nb, np.int64)
    bwd = np.zeros(nb, np.int64)
    for i in range(nb):
        lv = 0
        for p in range(indptr[i], indptr[i + 1]):
            lv = max(lv, fwd[indices[p]] + 1)
        fwd[i] = lv
    for i in range(nb - 1, -1, -1):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            bwd[j] = max(bwd[j], bwd[i] + 1)
    return fwd, bwd


def level_schedule(indptr: np.ndarray, indices: np.ndarray) -> SimpleNamespace:
    """Level sets of the block triangular solves of a strictly lower block pattern.

    ``fwd_rows[fwd_ptr[l]:fwd_ptr[l+1]]`` are the block rows solved in forward level l (they depend only on
    earlier levels); likewise ``bwd_*`` for the transposed solve, whose column lists are ``tptr`` / ``tpos``
    (position of each block in U) / ``trow`` (its block row).
    """
    indptr = np.asarray(indptr, dtype=np.int64)
    indices = np.asarray(indices, dtype=np.int64)
    nb = len(indptr) - 1
    fwd, bwd = _levels(indptr, indices)

    def sets(level):
        order = np.argsort(level, kind="stable").astype(np.int64)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(level, minlength=int(level.max(initial=-1)) + 1))])
        return order, ptr.astype(np.int64)

    fwd_rows, fwd_ptr = sets(fwd)
    bwd_rows, bwd_ptr = sets(bwd)
    rows_of = np.repeat(np.arange(nb, dtype=np.int64), np.diff(indptr))
    tpos = np.argsort(indices, kind="stable").astype(np.int64)
    tptr = np.concatenate([[0], np.cumsum(np.bincount(indices, minlength=nb))]).astype(np.int64)
    return SimpleNamespace(nb=nb, fwd_rows=fwd_rows, fwd_ptr=fwd_ptr, bwd_rows=bwd_rows, bwd_ptr=bwd_ptr,
                           tptr=tptr, tpos=tpos, trow=rows_of[tpos])
