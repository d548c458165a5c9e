"""numba kernels over block-sparse Jacobians with fp64 / fp32 / fp16(uint16)-stored values.

Layout (see :mod:`mpslam_ros.solvers.problem`): residual block k has ``m`` rows and touches at most
two parameter blocks; ``Ja[k]`` (m x da) multiplies the columns starting at ``col_a[k]`` and
``Jb[k]`` (m x db) those starting at ``col_b[k]`` (``-1``: fixed or absent block, skipped).

Every kernel is generic in the stored dtype: values are widened with :func:`widen` (uint16 holds fp16
bits, converted with an LLVM ``fpext half`` -> vcvtph2ps) and the arithmetic runs in the dtype of
the vectors (fp32 or fp64). With ``half=True`` the arithmetic emulates an fp16 datapath: every
product, sum and stored vector entry is rounded to fp16 (used only by the naive fp16 preset).

The whole preconditioned CGNR loop (:func:`cgnr`) is one nogil function, so a solve costs one
Python call and can run in a background thread in parallel with the GIL-holding ROS executor.
"""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Sequence

import numpy as np
from llvmlite import ir
from numba import literally, njit, types
from numba.core import cgutils
from numba.extending import intrinsic

# --------------------------------------------------------------------------- LLVM intrinsics


@intrinsic
def widen(typingctx, v):
    """Stored value -> arithmetic value: uint16 (fp16 bits) -> float32; floats pass through."""
    if isinstance(v, types.Integer) and v.bitwidth == 16:

        def codegen(context, builder, sig, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

        return types.float32(v), codegen
    if isinstance(v, types.Float):

        def codegen(context, builder, sig, args):
            return args[0]

        return v(v), codegen
    return None


@intrinsic
def round_half(typingctx, v):
    """Round a float to the nearest fp16 value (ties to even), returned in the same float type."""
    if isinstance(v, types.Float):
        llty = ir.FloatType() if v.bitwidth == 32 else ir.DoubleType()

        def codegen(context, builder, sig, args):
            x = args[0]
            if v.bitwidth == 64:  # no double->half libcall on CPU: go through float (only fp32 values use this)
                x = builder.fptrunc(x, ir.FloatType())
            return builder.fpext(builder.fptrunc(x, ir.HalfType()), llty)

        return v(v), codegen
    return None


@intrinsic
def half_bits(typingctx, v):
    """float32 -> fp16 bit pattern (uint16), rounding to nearest even."""
    if isinstance(v, types.Float):

        def codegen(context, builder, sig, args):
            x = args[0]
            if v.bitwidth == 64:
                x = builder.fptrunc(x, ir.FloatType())
            return builder.bitcast(builder.fptrunc(x, ir.HalfType()), ir.IntType(16))

        return types.uint16(v), codegen
    return None


@intrinsic
def narrow(typingctx, arr, v):
    """A float -> ``arr``'s stored element type: fp16 bits for uint16 (round to nearest even, as
    :func:`half_bits`), else a float cast. One store for every storage format."""
    if not (isinstance(arr, types.Array) and isinstance(v, types.Float)):
        return None
    dt = arr.dtype
    if isinstance(dt, types.Integer) and dt.bitwidth == 16:

        def codegen(context, builder, sig, args):
            x = args[1]
            if v.bitwidth == 64:
                x = builder.fptrunc(x, ir.FloatType())
            return builder.bitcast(builder.fptrunc(x, ir.HalfType()), ir.IntType(16))

        return types.uint16(arr, v), codegen
    if isinstance(dt, types.Float):

        def codegen(context, builder, sig, args):
            return context.cast(builder, args[1], v, dt)

        return dt(arr, v), codegen
    return None


@intrinsic
def zero_of(typingctx, arr):
    """A zero of ``arr``'s element type (keeps accumulators in the vector precision)."""
    if isinstance(arr, types.Array):

        def codegen(context, builder, sig, args):
            return context.get_constant(arr.dtype, 0)

        return arr.dtype(arr), codegen
    return None


@intrinsic
def cycle_counter(typingctx):
    """The CPU time-stamp counter (``llvm.readcyclecounter``); see :func:`ticks_per_second`."""

    def codegen(context, builder, sig, args):
        fnty = ir.FunctionType(ir.IntType(64), [])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.readcyclecounter")
        return builder.call(fn, [])

    return types.int64(), codegen


# d x d block products written as LLVM vector code. Scalar numba code over fp16-stored blocks compiled
# to one scalar vcvtph2ps per value plus lane extractions, and fp16 solves were 1.4x slower than fp32;
# whole-block vector loads convert 8-16 values per instruction (measured on sphere2500's 36k-block
# factor: fp16 1.35 -> 0.41 ms, fp32 0.94 -> 0.37 ms, fp64 1.03 -> 0.49 ms per pair of solves).


def _ll_elem(context, dtype):
    return context.get_data_type(dtype)


def _ll_vector_ptr(context, builder, aryty, ary, offset, n):
    """Pointer to ``ary[offset:offset+n]`` as an LLVM ``<n x elem>`` vector."""
    data = context.make_array(aryty)(context, builder, ary).data
    return builder.bitcast(builder.gep(data, [offset]), ir.PointerType(ir.VectorType(_ll_elem(context, aryty.dtype), n)))


def _ll_load_widened(context, builder, aryty, ary, offset, n, to):
    """``ary[offset:offset+n]`` as ``<n x to>``: uint16 holds fp16 bits (fpext half, vcvtph2ps), floats are
    converted to the arithmetic type."""
    ptr = _ll_vector_ptr(context, builder, aryty, ary, offset, n)
    v = builder.load(ptr, align=aryty.dtype.bitwidth // 8)
    if isinstance(aryty.dtype, types.Integer):
        v = builder.fpext(builder.bitcast(v, ir.VectorType(ir.HalfType(), n)), ir.VectorType(ir.FloatType(), n))
        src = ir.FloatType()
    else:
        src = _ll_elem(context, aryty.dtype)
    if src != to:
        v = builder.fpext(v, ir.VectorType(to, n)) if isinstance(to, ir.DoubleType) else builder.fptrunc(
            v, ir.VectorType(to, n))
    return v


def _ll_lanes(idx):
    return ir.Constant(ir.VectorType(ir.IntType(32), len(idx)), [ir.Constant(ir.IntType(32), i) for i in idx])


def _ll_splat(builder, x, n):
    """``<n x T>`` with every lane ``x``."""
    undef = ir.Constant(ir.VectorType(x.type, n), None)
    return builder.shuffle_vector(builder.insert_element(undef, x, ir.Constant(ir.IntType(32), 0)), undef,
                                  _ll_lanes([0] * n))


@intrinsic
def block_tile_fma(typingctx, U, o, x, xo, acc, d):
    """``acc[k] += B[k] * x[xo + k % d]`` for k < d*d, B = ``U[o:o+d*d]`` (a row-major d x d block, widened;
    ``d`` a literal): row a of ``acc`` sums to (B x)_a. Summing lanes once per block row, not per block,
    keeps the product free of horizontal adds."""
    if not (_c_array(U) and _c_array(x) and _c_array(acc) and isinstance(d, types.IntegerLiteral)):
        return None
    n = d.literal_value
    nn = n * n

    def codegen(context, builder, sig, args):
        Ut, _, xt, _, at, _ = sig.args
        vt = _ll_elem(context, at.dtype)
        B = _ll_load_widened(context, builder, Ut, args[0], args[1], nn, vt)
        xv = _ll_load_widened(context, builder, xt, args[2], args[3], n, vt)
        tile = builder.shuffle_vector(xv, xv, _ll_lanes([k % n for k in range(nn)]))
        ap = _ll_vector_ptr(context, builder, at, args[4], context.get_constant(types.intp, 0), nn)
        align = at.dtype.bitwidth // 8
        builder.store(builder.fadd(builder.load(ap, align=align), builder.fmul(B, tile)), ap, align=align)
        return context.get_dummy_value()

    return types.none(U, o, x, xo, acc, d), codegen


@intrinsic
def block_t_axpy(typingctx, U, o, x, xo, y, yo, scale, d):
    """``y[yo:yo+d] -= scale * B^T x[xo:xo+d]``, B = ``U[o:o+d*d]`` (a row-major d x d block, widened; ``d`` a
    literal): a sum of B's rows weighted by x's entries, no horizontal adds. ``x`` may be ``y``."""
    if not (_c_array(U) and _c_array(x) and _c_array(y) and isinstance(d, types.IntegerLiteral)):
        return None
    n = d.literal_value
    nn = n * n

    def codegen(context, builder, sig, args):
        Ut, _, xt, _, yt, _, st, _ = sig.args
        vt = _ll_elem(context, yt.dtype)
        B = _ll_load_widened(context, builder, Ut, args[0], args[1], nn, vt)
        xv = _ll_load_widened(context, builder, xt, args[2], args[3], n, vt)
        acc = None
        for a in range(n):
            row = builder.shuffle_vector(B, B, _ll_lanes(list(range(a * n, a * n + n))))
            term = builder.fmul(row, builder.shuffle_vector(xv, xv, _ll_lanes([a] * n)))
            acc = term if acc is None else builder.fadd(acc, term)
        scv = _ll_splat(builder, context.cast(builder, args[6], st, yt.dtype), n)
        yp = _ll_vector_ptr(context, builder, yt, args[4], args[5], n)
        align = yt.dtype.bitwidth // 8
        builder.store(builder.fsub(builder.load(yp, align=align), builder.fmul(acc, scv)), yp, align=align)
        return context.get_dummy_value()

    return types.none(U, o, x, xo, y, yo, scale, d), codegen


@intrinsic
def block_gemm_acc(typingctx, A, ao, B, bo, C, co, alpha, d):
    """``C[co:] += alpha * A[ao:] @ B[bo:]`` for row-major d x d float blocks (``d`` a literal): each row of C
    gets ``sum_c A[r, c] * B[c, :]``, a broadcast scalar times a contiguous row, so no shuffles. The block
    factor's inner products (``block_ldl``) are written in this form."""
    if not (_c_array(A) and _c_array(B) and _c_array(C) and isinstance(d, types.IntegerLiteral)
            and isinstance(C.dtype, types.Float) and A.dtype == C.dtype and B.dtype == C.dtype):
        return None
    n = d.literal_value

    def codegen(context, builder, sig, args):
        At, _, Bt, _, Ct, _, st, _ = sig.args
        align = Ct.dtype.bitwidth // 8

        def row(aryty, ary, off, r):
            return _ll_vector_ptr(context, builder, aryty, ary, builder.add(off, ir.Constant(off.type, r * n)), n)

        b_rows = [builder.load(row(Bt, args[2], args[3], c), align=align) for c in range(n)]
        a_data = context.make_array(At)(context, builder, args[0]).data
        alpha_v = _ll_splat(builder, context.cast(builder, args[6], st, Ct.dtype), n)
        for r in range(n):
            acc = None
            for c in range(n):
                a_rc = builder.load(builder.gep(a_data, [builder.add(args[1], ir.Constant(args[1].type, r * n + c))]),
                                    align=align)
                term = builder.fmul(_ll_splat(builder, a_rc, n), b_rows[c])
                acc = term if acc is None else builder.fadd(acc, term)
            cp = row(Ct, args[4], args[5], r)
            builder.store(builder.fadd(builder.load(cp, align=align), builder.fmul(alpha_v, acc)), cp, align=align)
        return context.get_dummy_value()

    return types.none(A, ao, B, bo, C, co, alpha, d), codegen


def _c_array(t) -> bool:
    """A C-contiguous array: the block intrinsics address it by flat offset from its data pointer."""
    return isinstance(t, types.Array) and t.layout == "C"


@njit(nogil=True, cache=True, error_model="numpy")
def read_ticks() -> int:
    return cycle_counter()


_TICKS_PER_SECOND = [0.0]


def ticks_per_second() -> float:
    """Rate of :func:`cycle_counter` (calibrated once against perf_counter; constant_tsc CPUs)."""
    if _TICKS_PER_SECOND[0] == 0.0:
        read_ticks()
        t0, c0 = time.perf_counter(), read_ticks()
        time.sleep(0.02)
        t1, c1 = time.perf_counter(), read_ticks()
        _TICKS_PER_SECOND[0] = max((c1 - c0) / (t1 - t0), 1.0)
    return _TICKS_PER_SECOND[0]


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _mac(acc, a, b, half):
    """acc + a*b, rounded like an fp16 datapath when ``half``."""
    if half:
        return round_half(acc + round_half(a * b))
    return acc + a * b


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _rnd(x, half):
    if half:
        return round_half(x)
    return x


# --------------------------------------------------------------------------- Jacobian products


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def jac_matvec(Ja, Jb, col_a, col_b, p, out, half):
    """out = J p  (out: length K*m, in the dtype of p)."""
    K, m, da = Ja.shape
    db = Jb.shape[2]
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        for r in range(m):
            acc = zero_of(out)
            if ca >= 0:
                for c in range(da):
                    acc = _mac(acc, widen(Ja[k, r, c]), p[ca + c], half)
            if cb >= 0:
                for c in range(db):
                    acc = _mac(acc, widen(Jb[k, r, c]), p[cb + c], half)
            out[k * m + r] = acc


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def jac_t_matvec(Ja, Jb, col_a, col_b, q, out, half):
    """out = J^T q  (out zeroed first; length = number of free columns)."""
    K, m, da = Ja.shape
    db = Jb.shape[2]
    out[:] = 0
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        base = k * m
        if ca >= 0:
            for c in range(da):
                acc = zero_of(out)
                for r in range(m):
                    acc = _mac(acc, widen(Ja[k, r, c]), q[base + r], half)
                out[ca + c] = _rnd(out[ca + c] + acc, half)
        if cb >= 0:
            for c in range(db):
                acc = zero_of(out)
                for r in range(m):
                    acc = _mac(acc, widen(Jb[k, r, c]), q[base + r], half)
                out[cb + c] = _rnd(out[cb + c] + acc, half)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def jtj_matvec(Ja, Jb, col_a, col_b, p, q, out, half):
    """out = J^T (J p); ``q`` (length K*m) receives J p. Square 6x6 / 3x3 blocks (pose graphs) take the
    fused vector kernel, other shapes and the fp16-emulating datapath the two separate products."""
    m = Ja.shape[1]
    if not half and m == 6 and Ja.shape[2] == 6 and Jb.shape[2] == 6:
        _jtj_matvec_square(Ja, Jb, col_a, col_b, p, q, out, 6)
    elif not half and m == 3 and Ja.shape[2] == 3 and Jb.shape[2] == 3:
        _jtj_matvec_square(Ja, Jb, col_a, col_b, p, q, out, 3)
    else:
        jac_matvec(Ja, Jb, col_a, col_b, p, q, half)
        jac_t_matvec(Ja, Jb, col_a, col_b, q, out, half)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _tile_row_sum(acc, r, d):
    """Row r of a :func:`block_tile_fma` accumulator: (B x)_r."""
    s = zero_of(acc)
    for c in range(d):
        s += acc[r * d + c]
    return s


@njit(nogil=True, cache=True, error_model="numpy")
def _jtj_matvec_square(Ja, Jb, col_a, col_b, p, q, out, d):
    """out = J^T (J p) in one pass over J, for square d x d Jacobian blocks (``d`` a literal: one
    specialisation per size, vector block products).

    Reading each block once instead of once per product, with whole-block vector loads (fp16 ones
    converted 8-16 values per instruction), is what lets fp16-stored Jacobians keep up with fp32 ones.
    """
    literally(d)
    dd = d * d
    K = Ja.shape[0]
    out[:] = 0
    acc = np.empty(dd, dtype=out.dtype)
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        for t in range(dd):
            acc[t] = 0
        if ca >= 0:
            block_tile_fma(Ja, k * dd, p, ca, acc, d)
        if cb >= 0:
            block_tile_fma(Jb, k * dd, p, cb, acc, d)
        base = k * d
        for r in range(d):
            q[base + r] = _tile_row_sum(acc, r, d)
        if ca >= 0:
            block_t_axpy(Ja, k * dd, q, base, out, ca, -1.0, d)
        if cb >= 0:
            block_t_axpy(Jb, k * dd, q, base, out, cb, -1.0, d)


@njit(nogil=True, cache=True, error_model="numpy")
def jtj_column_norms2(Ja, Jb, col_a, col_b, out):
    """out[c] = squared norm of column c of J (= diagonal of J^T J), accumulated in fp64."""
    K, m, da = Ja.shape
    db = Jb.shape[2]
    out[:] = 0.0
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        for r in range(m):
            if ca >= 0:
                for c in range(da):
                    v = Ja[k, r, c]
                    out[ca + c] += v * v
            if cb >= 0:
                for c in range(db):
                    v = Jb[k, r, c]
                    out[cb + c] += v * v


@njit(nogil=True, cache=True, inline="always")
def add_block_product(A, B, k, out, o):
    """``out[o:] += A[k]^T B[k]`` (row-major, A.shape[2] x B.shape[2]), accumulated in fp64: the J^T J block
    of residual block k (used by the block-Jacobi diagonal and the block factor's assembly)."""
    m, da = A.shape[1], A.shape[2]
    db = B.shape[2]
    for r in range(da):
        for c in range(db):
            acc = 0.0
            for t in range(m):
                acc += A[k, t, r] * B[k, t, c]
            out[o + r * db + c] += acc


@njit(nogil=True, cache=True, error_model="numpy")
def jtj_block_diagonal(Ja, Jb, col_a, col_b, off_a, off_b, out):
    """Diagonal blocks of J^T J: block of term k's a-block at out[off_a[k]:] (da x da row-major), same for b."""
    out[:] = 0.0
    for k in range(Ja.shape[0]):
        if col_a[k] >= 0:
            add_block_product(Ja, Ja, k, out, off_a[k])
        if col_b[k] >= 0:
            add_block_product(Jb, Jb, k, out, off_b[k])


@njit(nogil=True, cache=True, error_model="numpy")
def scale_jacobian(Ja, Jb, col_a, col_b, col_scale, global_scale, Sa, Sb):
    """Sa = global_scale * Ja * diag(col_scale) (in Sa's float dtype); likewise Sb. Fixed columns -> 0."""
    K, m, da = Ja.shape
    db = Jb.shape[2]
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        for r in range(m):
            for c in range(da):
                Sa[k, r, c] = Ja[k, r, c] * (col_scale[ca + c] * global_scale) if ca >= 0 else 0.0
            for c in range(db):
                Sb[k, r, c] = Jb[k, r, c] * (col_scale[cb + c] * global_scale) if cb >= 0 else 0.0


@njit(nogil=True, cache=True, error_model="numpy")
def dense_damped_normal_solve(Ja, Jb, col_a, col_b, lam, rhs, A, out):
    """out = (J^T J + lam I)^-1 rhs by a dense fp64 Cholesky factor, assembled, factored and solved in one
    call (``A``: n x n workspace, overwritten). For problems of a few dozen columns, where each separate
    kernel call or numpy operation costs more than the arithmetic. Returns False on a non-positive pivot."""
    n = rhs.shape[0]
    K, m, da = Ja.shape
    db = Jb.shape[2]
    A[:, :] = 0.0
    for k in range(K):
        ca = col_a[k]
        cb = col_b[k]
        for t in range(m):
            if ca >= 0:
                for r in range(da):
                    v = Ja[k, t, r]
                    for c in range(r + 1):
                        A[ca + r, ca + c] += v * Ja[k, t, c]
            if cb >= 0:
                for r in range(db):
                    v = Jb[k, t, r]
                    for c in range(r + 1):
                        A[cb + r, cb + c] += v * Jb[k, t, c]
                    if ca >= 0:  # the off-diagonal block, into the lower triangle
                        for c in range(da):
                            if cb + r > ca + c:
                                A[cb + r, ca + c] += v * Ja[k, t, c]
                            else:
                                A[ca + c, cb + r] += v * Ja[k, t, c]
    for i in range(n):
        A[i, i] += lam
    # in-place lower Cholesky
    for j in range(n):
        d = A[j, j]
        for p in range(j):
            d -= A[j, p] * A[j, p]
        if not d > 0.0:
            return False
        d = np.sqrt(d)
        A[j, j] = d
        for i in range(j + 1, n):
            s = A[i, j]
            for p in range(j):
                s -= A[i, p] * A[j, p]
            A[i, j] = s / d
    cholesky_lower_solve(A, rhs, out)
    return True


@njit(nogil=True, cache=True, error_model="numpy")
def cholesky_lower_solve(L, rhs, out):
    """out = (L L^T)^-1 rhs by the two triangular solves, with L the lower triangle of ``L`` (the upper
    one is not read). One copy for the dense direct solves of pose graphs and of small BA problems."""
    n = rhs.shape[0]
    for i in range(n):  # L z = rhs
        s = rhs[i]
        for p in range(i):
            s -= L[i, p] * out[p]
        out[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):  # L^T x = z
        s = out[i]
        for p in range(i + 1, n):
            s -= L[p, i] * out[p]
        out[i] = s / L[i, i]


# --------------------------------------------------------------------------- preconditioners


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def block_diag_apply(vals, blk_col, blk_size, blk_off, x, out, half):
    """out = blockdiag(vals) x, blocks dense row-major at vals[blk_off[i]:], covering columns blk_col[i]..+size."""
    for b in range(blk_col.shape[0]):
        c0 = blk_col[b]
        s = blk_size[b]
        o = blk_off[b]
        for i in range(s):
            acc = zero_of(out)
            for j in range(s):
                acc = _mac(acc, widen(vals[o + i * s + j]), x[c0 + j], half)
            out[c0 + i] = acc


@njit(nogil=True, cache=True, error_model="numpy")
def ic0_factor(indptr, indices, data, out):
    """Incomplete Cholesky IC(0) of a symmetric matrix given by its lower triangle in CSR.

    Rows must have sorted column indices with the diagonal last. Writes L (same pattern) to
    ``out`` (fp64) and returns the row of the first non-positive pivot, or -1 on success.
    """
    n = indptr.shape[0] - 1
    for i in range(n):
        row_start = indptr[i]
        for p in range(row_start, indptr[i + 1]):
            j = indices[p]
            s = data[p]
            pi = row_start
            pj = indptr[j]
            ej = indptr[j + 1] - 1  # diagonal of row j
            while pi < p and pj < ej:
                ci = indices[pi]
                cj = indices[pj]
                if ci == cj:
                    s -= out[pi] * out[pj]
                    pi += 1
                    pj += 1
                elif ci < cj:
                    pi += 1
                else:
                    pj += 1
            if j < i:
                out[p] = s / out[ej]
            else:
                if not s > 0.0:
                    return i
                out[p] = np.sqrt(s)
    return -1


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def lower_solve(indptr, indices, L, b, out, half):
    """Solve L out = b (L lower CSR, diagonal last in each row; values widened from storage)."""
    n = indptr.shape[0] - 1
    if half:
        for i in range(n):
            s = b[i]
            end = indptr[i + 1] - 1
            for p in range(indptr[i], end):
                s = _rnd(s - _rnd(widen(L[p]) * out[indices[p]], half), half)
            out[i] = _rnd(s / widen(L[end]), half)
        return
    for i in range(n):
        # four partial sums break the add-latency chain, so the loop is bound by loads (where
        # fp16 storage can pay) rather than by one serial dependency
        s0 = zero_of(out)
        s1 = zero_of(out)
        s2 = zero_of(out)
        s3 = zero_of(out)
        p = indptr[i]
        end = indptr[i + 1] - 1
        while p + 4 <= end:
            s0 += widen(L[p]) * out[indices[p]]
            s1 += widen(L[p + 1]) * out[indices[p + 1]]
            s2 += widen(L[p + 2]) * out[indices[p + 2]]
            s3 += widen(L[p + 3]) * out[indices[p + 3]]
            p += 4
        while p < end:
            s0 += widen(L[p]) * out[indices[p]]
            p += 1
        out[i] = (b[i] - ((s0 + s1) + (s2 + s3))) / widen(L[end])


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def upper_t_solve(indptr, indices, L, b, out, half):
    """Solve L^T out = b with the same lower CSR storage as :func:`lower_solve` (column-oriented sweep)."""
    n = indptr.shape[0] - 1
    for i in range(n):
        out[i] = b[i]
    for i in range(n - 1, -1, -1):
        end = indptr[i + 1] - 1
        xi = _rnd(out[i] / widen(L[end]), half)
        out[i] = xi
        for p in range(indptr[i], end):
            j = indices[p]
            out[j] = _rnd(out[j] - _rnd(widen(L[p]) * xi, half), half)


@njit(nogil=True, cache=True, error_model="numpy")
def csr_matvec(indptr, indices, vals, x, out, half):
    """out = A x for a CSR matrix with stored values (used by tests and benchmarks)."""
    n = indptr.shape[0] - 1
    for i in range(n):
        acc = zero_of(out)
        for p in range(indptr[i], indptr[i + 1]):
            acc = _mac(acc, widen(vals[p]), x[indices[p]], half)
        out[i] = acc


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def block_ldl_solve(indptr, indices, U, Dinv, d, inv_scale, r, tmp, z):
    """z = (L D L^T)^-1 r for a block factor: L = I + (strictly lower d x d blocks U) * inv_scale, D block diagonal.

    ``U`` holds the off-diagonal blocks of block row I at ``U[p*d*d:]`` (p in indptr[I]..indptr[I+1],
    row-major, block column ``indices[p]``), stored fp16/fp32/fp64 and multiplied by a power of two
    (``inv_scale`` undoes it exactly) so small entries stay out of fp16's subnormal range. ``Dinv``
    holds the inverse diagonal blocks (symmetric, row-major, in the vector precision): the pivots, the
    most sensitive part of the factor, are never rounded to fp16. One index per d x d block instead of
    one per entry, so the triangular solves stream mostly values and fp16 halves most of the traffic.
    """
    # one compiled specialisation per block size, each with the size's vector block products
    if d == 6:
        _block_ldl_solve_vec(indptr, indices, U, Dinv, 6, inv_scale, r, tmp, z)
    elif d == 3:
        _block_ldl_solve_vec(indptr, indices, U, Dinv, 3, inv_scale, r, tmp, z)
    else:
        _block_ldl_solve(indptr, indices, U, Dinv, d, inv_scale, r, tmp, z)


@njit(nogil=True, cache=True, error_model="numpy")
def _block_ldl_solve_vec(indptr, indices, U, Dinv, d, inv_scale, r, tmp, z):
    """Block sizes with vector block products: ``d`` is compiled as a literal (one specialisation per size)."""
    literally(d)
    nb = indptr.shape[0] - 1
    dd = d * d
    acc = np.empty(dd, dtype=tmp.dtype)
    # forward: w_I = r_I - sum_J L_IJ w_J (w in tmp); then z_I = D_I^-1 w_I at once (saves a sweep)
    for I in range(nb):
        base = I * d
        for k in range(dd):
            acc[k] = 0
        for p in range(indptr[I], indptr[I + 1]):
            block_tile_fma(U, p * dd, tmp, indices[p] * d, acc, d)
        for a in range(d):
            tmp[base + a] = r[base + a] - _tile_row_sum(acc, a, d) * inv_scale
        _apply_pivot(Dinv, I * dd, tmp, z, base, d)
    # backward: L^T y = z, rows from the last; y_I is final once every later row has been applied
    for I in range(nb - 1, -1, -1):
        base = I * d
        for p in range(indptr[I], indptr[I + 1]):
            block_t_axpy(U, p * dd, z, base, z, indices[p] * d, inv_scale, d)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _apply_pivot(Dinv, o, w, z, base, d):
    """z_I = D_I^-1 w_I (the inverse pivot block at ``Dinv[o:]``, kept in the vector precision)."""
    for a in range(d):
        s = zero_of(z)
        for b in range(d):
            s += Dinv[o + a * d + b] * w[base + b]
        z[base + a] = s


@njit(nogil=True, cache=True, error_model="numpy")
def _block_ldl_solve(indptr, indices, U, Dinv, d, inv_scale, r, tmp, z):
    """Any block size (scalar loops); sizes 6 and 3 have vector versions."""
    nb = indptr.shape[0] - 1
    dd = d * d
    for I in range(nb):
        base = I * d
        for a in range(d):
            tmp[base + a] = 0
        for p in range(indptr[I], indptr[I + 1]):
            cb = indices[p] * d
            o = p * dd
            for a in range(d):
                acc = zero_of(tmp)
                for b in range(d):
                    acc += widen(U[o + a * d + b]) * tmp[cb + b]
                tmp[base + a] += acc
        for a in range(d):
            tmp[base + a] = r[base + a] - tmp[base + a] * inv_scale
        _apply_pivot(Dinv, I * dd, tmp, z, base, d)
    for I in range(nb - 1, -1, -1):
        base = I * d
        for p in range(indptr[I], indptr[I + 1]):
            cb = indices[p] * d
            o = p * dd
            for b in range(d):
                acc = zero_of(z)
                for a in range(d):
                    acc += widen(U[o + a * d + b]) * z[base + a]
                z[cb + b] -= acc * inv_scale


def block_ldl_from_cholesky(C, d: int, scale_target: float = 2.0**14):
    """Split a lower Cholesky factor ``C`` (scipy CSR, block-aligned d x d pattern) into the arrays of
    :func:`block_ldl_solve`: ``C C^T = L D L^T`` with ``L_IJ = C_IJ C_JJ^-1`` and ``D_I = C_II C_II^T``.

    Returns fp64 ``(indptr, indices, U, Dinv, inv_scale)`` (cast them to the storage formats); ``U`` is
    multiplied by a power of two so its largest entry is at most ``scale_target``: far below fp16's 65504,
    and small entries stay out of fp16's subnormal range.
    """
    from mpslam_ros.solvers.precision import power_of_two_scale

    n = C.shape[0]
    nb = n // d
    Cb = C.tobsr(blocksize=(d, d))
    Cb.sort_indices()
    rows = np.repeat(np.arange(nb), np.diff(Cb.indptr))
    on_diag = rows == Cb.indices
    if int(on_diag.sum()) != nb:
        raise ValueError("block factor: a diagonal block is missing")
    C_diag = np.empty((nb, d, d))
    C_diag[rows[on_diag]] = Cb.data[on_diag]
    C_diag_inv = np.linalg.inv(C_diag)
    off = ~on_diag
    cols = Cb.indices[off].astype(np.int64)
    U = Cb.data[off] @ C_diag_inv[cols]
    Dinv = np.einsum("kba,kbc->kac", C_diag_inv, C_diag_inv)  # (C C^T)^-1 = C^-T C^-1
    scale = power_of_two_scale(float(np.abs(U).max(initial=0.0)), scale_target)
    indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[off], minlength=nb))]).astype(np.int64)
    return indptr, cols, np.ascontiguousarray((U * scale).ravel()), np.ascontiguousarray(Dinv.ravel()), 1.0 / scale


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _dot(a, b, half):
    acc = zero_of(a)
    for i in range(a.shape[0]):
        acc = _mac(acc, a[i], b[i], half)
    return acc


#: Preconditioner kinds understood by :func:`cgnr` (PC_BLOCK_LDL: :func:`block_ldl_solve`).
PC_NONE, PC_BLOCK_JACOBI, PC_IC, PC_BLOCK_LDL = 0, 1, 2, 3


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _apply_preconditioner(kind, bd_vals, bd_col, bd_size, bd_off, L_indptr, L_indices, L_vals, L_perm, L_diag,
                          L_block, L_inv_scale, r, tmp, z, half):
    if kind == 3:  # block L D L^T of P A P^T: z = P^T (L D L^T)^-1 P r
        for i in range(r.shape[0]):
            z[i] = r[L_perm[i]]
        block_ldl_solve(L_indptr, L_indices, L_vals, L_diag, L_block, L_inv_scale, z, tmp, z)  # in place is safe
        for i in range(r.shape[0]):
            tmp[L_perm[i]] = z[i]
        for i in range(r.shape[0]):
            z[i] = tmp[i]
    elif kind == 1:
        block_diag_apply(bd_vals, bd_col, bd_size, bd_off, r, z, half)
    elif kind == 2:
        if L_perm.shape[0] > 0:  # factor of P A P^T: z = P^T L^-T L^-1 P r
            for i in range(r.shape[0]):
                z[i] = r[L_perm[i]]
            lower_solve(L_indptr, L_indices, L_vals, z, tmp, half)
            upper_t_solve(L_indptr, L_indices, L_vals, tmp, z, half)
            for i in range(r.shape[0]):
                tmp[L_perm[i]] = z[i]
            for i in range(r.shape[0]):
                z[i] = tmp[i]
        else:
            lower_solve(L_indptr, L_indices, L_vals, r, tmp, half)
            upper_t_solve(L_indptr, L_indices, L_vals, tmp, z, half)
    else:
        for i in range(r.shape[0]):
            z[i] = r[i]


@njit(nogil=True, cache=True, error_model="numpy")
def cgnr(Ja, Jb, col_a, col_b, rhs, lam, pc_kind, bd_vals, bd_col, bd_size, bd_off,
         L_indptr, L_indices, L_vals, L_perm, L_diag, L_block, L_inv_scale, max_iter, rtol, step_rtol, half, x, stats):
    """Preconditioned CG on the normal equations (J^T J + lam I) x = rhs, matrix-free (CGNR).

    J^T J is never formed: each iteration does q = J p and J^T q. Stops when
    ``|r| <= rtol |rhs|`` (inexact Newton) and, when ``step_rtol > 0``, the last update is small,
    ``|alpha p| <= step_rtol |x|`` (at least 2 iterations): on ill-conditioned graphs a preconditioner that
    is inaccurate in the near-null (long-chain) modes gives ``|r|`` below 1e-2 after one iteration while
    ``x`` is still off by several times its norm along those modes (measured on a 5,000-pose graph with
    an fp16 factor: 8x; the update-size test stops once the error is ~1 %). Also stops after
    ``max_iter`` iterations or on a non-finite value.
    ``x`` (output, zeroed here) and ``rhs`` share the CG vector dtype. ``stats`` (float64[6]) gets:
    iterations, final relative residual, ticks in the preconditioner / triangular solves, ticks in
    J products, 1.0 if a non-finite value appeared, p^T A p of the last direction.
    ``L_perm`` (int64, empty for none): the factor is of ``P A P^T`` with ``(P v)[i] = v[L_perm[i]]``.
    PC_BLOCK_LDL uses ``L_indptr/L_indices/L_vals`` as block rows and ``L_diag``, ``L_block`` (d),
    ``L_inv_scale`` as in :func:`block_ldl_solve`; the other kinds ignore these three.
    Returns the number of iterations.
    """
    # Two inlined copies with ``half`` a compile-time constant, so the fp16-emulation branches vanish
    # from the fast path's inner loops.
    if half:
        return _cgnr(Ja, Jb, col_a, col_b, rhs, lam, pc_kind, bd_vals, bd_col, bd_size, bd_off,
                     L_indptr, L_indices, L_vals, L_perm, L_diag, L_block, L_inv_scale, max_iter, rtol, step_rtol,
                     True, x, stats)
    return _cgnr(Ja, Jb, col_a, col_b, rhs, lam, pc_kind, bd_vals, bd_col, bd_size, bd_off,
                 L_indptr, L_indices, L_vals, L_perm, L_diag, L_block, L_inv_scale, max_iter, rtol, step_rtol,
                 False, x, stats)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def _cgnr(Ja, Jb, col_a, col_b, rhs, lam, pc_kind, bd_vals, bd_col, bd_size, bd_off,
          L_indptr, L_indices, L_vals, L_perm, L_diag, L_block, L_inv_scale, max_iter, rtol, step_rtol, half, x, stats):
    """Body of :func:`cgnr`."""
    n = rhs.shape[0]
    K, m, _ = Ja.shape
    r = rhs.copy()
    z = np.empty_like(rhs)
    tmp = np.empty_like(rhs)
    Ap = np.empty_like(rhs)
    q = np.empty(K * m, dtype=rhs.dtype)
    x[:] = 0
    t_pc = 0
    t_mv = 0
    bad = 0.0
    b_norm = np.sqrt(_dot(rhs, rhs, False))
    it = 0
    rel = 0.0
    if b_norm == 0.0 or not np.isfinite(b_norm):
        stats[0] = 0.0
        stats[1] = 0.0
        stats[4] = 0.0 if b_norm == 0.0 else 1.0
        return 0
    t0 = cycle_counter()
    _apply_preconditioner(pc_kind, bd_vals, bd_col, bd_size, bd_off, L_indptr, L_indices, L_vals, L_perm,
                              L_diag, L_block, L_inv_scale,
                          r, tmp, z, half)
    t_pc += cycle_counter() - t0
    p = z.copy()
    rz = _dot(r, z, half)
    rel = 1.0
    for it in range(1, max_iter + 1):
        t0 = cycle_counter()
        jtj_matvec(Ja, Jb, col_a, col_b, p, q, Ap, half)
        t_mv += cycle_counter() - t0
        for i in range(n):
            Ap[i] = _rnd(Ap[i] + _rnd(lam * p[i], half), half)
        pAp = _dot(p, Ap, half)
        if not (np.isfinite(pAp) and pAp > 0.0):
            if not np.isfinite(pAp):
                bad = 1.0
            it -= 1
            break
        alpha = _rnd(rz / pAp, half)
        for i in range(n):
            x[i] = _rnd(x[i] + _rnd(alpha * p[i], half), half)
            r[i] = _rnd(r[i] - _rnd(alpha * Ap[i], half), half)
        r_norm = np.sqrt(_dot(r, r, False))
        rel = r_norm / b_norm
        stats[5] = pAp
        if not np.isfinite(rel):
            bad = 1.0
            break
        if rel <= rtol:
            if step_rtol <= 0.0 or rel == 0.0:
                break
            if it >= 2 and alpha * alpha * _dot(p, p, False) <= step_rtol * step_rtol * _dot(x, x, False):
                break
        t0 = cycle_counter()
        _apply_preconditioner(pc_kind, bd_vals, bd_col, bd_size, bd_off, L_indptr, L_indices, L_vals, L_perm,
                              L_diag, L_block, L_inv_scale,
                          r, tmp, z, half)
        t_pc += cycle_counter() - t0
        rz_new = _dot(r, z, half)
        beta = _rnd(rz_new / rz, half)
        rz = rz_new
        for i in range(n):
            p[i] = _rnd(z[i] + _rnd(beta * p[i], half), half)
    return cg_finish(x, stats, it, rel, t_pc, t_mv, bad)


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def vdot(a, b):
    """a . b accumulated in a's dtype (the CG vectors' precision)."""
    acc = zero_of(a)
    for i in range(a.shape[0]):
        acc += a[i] * b[i]
    return acc


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def cg_update(x, r, p, Ap, alpha):
    """One CG update, x += alpha p and r -= alpha Ap; returns |r|^2 accumulated in fp64."""
    rr = 0.0
    for i in range(x.shape[0]):
        x[i] += alpha * p[i]
        r[i] -= alpha * Ap[i]
        rr += float(r[i]) * float(r[i])
    return rr


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def cg_next_direction(r, z, p, rz):
    """p = z + beta p with beta = (r . z) / rz (the preconditioned residual z = M^-1 r); returns r . z."""
    rz_new = zero_of(r)
    for i in range(r.shape[0]):
        rz_new += r[i] * z[i]
    beta = rz_new / rz
    for i in range(r.shape[0]):
        p[i] = z[i] + beta * p[i]
    return rz_new


@njit(nogil=True, cache=True, inline="always", error_model="numpy")
def cg_finish(x, stats, it, rel, t_pc, t_mv, bad):
    """Fill a CG loop's ``stats``: iterations, final relative residual, ticks in the preconditioner, ticks
    in the products, 1.0 if the loop or the solution ``x`` met a non-finite value. Returns ``it``."""
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            bad = 1.0
            break
    stats[0] = it
    stats[1] = rel
    stats[2] = t_pc
    stats[3] = t_mv
    stats[4] = bad
    return it


def bytes_of(*arrays: np.ndarray) -> int:
    """Memory of stored operands in bytes (values and index arrays passed)."""
    return int(sum(a.nbytes for a in arrays))


#: (jacobian storage, vector dtype, block-diagonal storage, factor storage, half) CG runs with, by name:
#: the four presets; mixed with an fp32-stored Jacobian (PGO's override); and two pose-graph paths,
#: fp64 vectors with an fp64 / fp32 incomplete-Cholesky factor (the block-diagonal array then an unused fp32
#: placeholder): a rejected reduced-precision step recomputed in fp64 (``SolverOptions.precision_fallback``)
#: and mixed's factor widened on to fp64 (``fp32_factor_max_cg_iterations``), warmed by
#: :func:`mpslam_ros.problems.pgo.warmup`.
CG_DTYPES = {
    "fp64": (np.float64, np.float64, np.float64, np.float64, False),
    "fp32": (np.float32, np.float32, np.float32, np.float32, False),
    "mixed": (np.uint16, np.float32, np.uint16, np.uint16, False),
    "fp16": (np.uint16, np.float32, np.uint16, np.uint16, True),
    "mixed, fp32 Jacobian": (np.float32, np.float32, np.uint16, np.uint16, False),
    "fp64 vectors, fp64 factor": (np.float64, np.float64, np.float32, np.float64, False),
    "fp64 vectors, fp32 factor": (np.float64, np.float64, np.float32, np.float32, False),
}
#: The combinations each preset's own solves reach (mixed also fp32's: its fallback when an fp16 solve
#: fails, and its fp16 factor widened to fp32).
PRESET_CG_DTYPES = {"fp64": ["fp64"], "fp32": ["fp32"], "mixed": ["fp32", "mixed", "mixed, fp32 Jacobian"],
                    "fp16": ["fp16"]}


def _tiny_case() -> SimpleNamespace:
    """Three 6x6 residual blocks over 18 columns in three 6-column blocks: just enough to call each kernel."""
    n = 18
    return SimpleNamespace(K=3, m=6, d=6, n=n, col_a=np.array([0, 6, -1], dtype=np.int64),
                           col_b=np.array([6, 12, 0], dtype=np.int64), indptr=np.arange(n + 1, dtype=np.int64),
                           indices=np.arange(n, dtype=np.int64), bd_col=np.array([0, 6, 12], dtype=np.int64),
                           bd_size=np.full(3, 6, dtype=np.int64), bd_off=np.array([0, 36, 72], dtype=np.int64),
                           J64=np.random.default_rng(0).standard_normal((3, 6, 6)))


def warmup(precisions: Sequence[str] = ("fp64", "fp32", "mixed", "fp16")) -> None:
    """Compile (or load from cache) the kernels for the dtype combinations the presets in
    ``precisions`` use."""
    ticks_per_second()
    c = _tiny_case()
    ic0_factor(c.indptr, c.indices, np.ones(c.n), np.empty(c.n))
    jtj_column_norms2(c.J64, c.J64, c.col_a, c.col_b, np.empty(c.n))
    jtj_block_diagonal(c.J64, c.J64, c.col_a, c.col_b, c.bd_off[[0, 1, 0]], c.bd_off[[1, 2, 0]], np.empty(108))
    dense_damped_normal_solve(c.J64, c.J64, c.col_a, c.col_b, 1.0, np.ones(c.n), np.empty((c.n, c.n)), np.empty(c.n))
    for name in sorted({name for p in precisions for name in PRESET_CG_DTYPES.get(p, ())}):
        warm_cg(name)


def warm_cg(name: str) -> None:
    """Compile (or load) CG and the Jacobian products for the dtype combination ``CG_DTYPES[name]``, with
    every preconditioner kind."""
    jt, vt, bt, pt, half = CG_DTYPES[name]
    c = _tiny_case()

    def stored(a, dt):
        return a.astype(np.float16).view(np.uint16) if dt == np.uint16 else a.astype(dt)

    J = stored(c.J64, jt)
    scale_jacobian(c.J64, c.J64, c.col_a, c.col_b, np.ones(c.n), 1.0, np.empty(c.J64.shape, vt),
                   np.empty(c.J64.shape, vt))
    bdv = stored(np.tile(np.eye(6).ravel(), 3), bt)
    Lv = stored(np.ones(c.n), pt)
    rhs = np.ones(c.n, dtype=vt)
    x = np.empty(c.n, dtype=vt)
    Ldiag = np.zeros(1, dtype=vt)  # what lm passes for every kind but block L D L^T
    reverse = c.indices[::-1].copy()
    for kind, perm in ((PC_NONE, c.indices[:0]), (PC_BLOCK_JACOBI, c.indices[:0]), (PC_IC, c.indices[:0]),
                       (PC_IC, reverse)):
        for step_rtol in (0.0, 0.05):
            cgnr(J, J, c.col_a, c.col_b, rhs, 1e-3, kind, bdv, c.bd_col, c.bd_size, c.bd_off, c.indptr, c.indices,
                 Lv, perm, Ldiag, 6, 1.0, 5, 1e-6, step_rtol, half, x, np.zeros(6))
    if not half:  # block L D L^T (one 6x6 block below the diagonal)
        # its diagonal blocks: fp64 with an fp64 factor, else fp32 (lm's BlockLDL.cast)
        ldl_diag = np.tile(np.eye(6).ravel(), 3).astype(np.float64 if pt == np.float64 else np.float32)
        blk_indptr = np.array([0, 0, 1, 1], dtype=np.int64)
        blk_indices = np.array([0], dtype=np.int64)
        cgnr(J, J, c.col_a, c.col_b, rhs, 1e-3, PC_BLOCK_LDL, bdv, c.bd_col, c.bd_size, c.bd_off, blk_indptr,
             blk_indices, stored(0.1 * np.ones(36), pt), reverse, ldl_diag, 6, 0.5, 5, 1e-6, 0.05, half, x,
             np.zeros(6))
    q = np.empty(c.K * c.m, dtype=vt)
    jac_matvec(J, J, c.col_a, c.col_b, rhs, q, half)
    jac_t_matvec(J, J, c.col_a, c.col_b, q, x, half)
