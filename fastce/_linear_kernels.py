"""Numba kernels of the linear models (:mod:`fastce._linear_loss`): what the
loss kernels of :mod:`fastce._kernels` do not cover.

* single pass over a dense, C-ordered ``X`` for the objective+gradient and
  for the Hessian-vector product, multinomial and binomial: each row of ``X``
  is read once per call, for its logits ``W x_i + b`` and, still in cache,
  for its contribution to ``X^T G`` (two BLAS products with a handful of
  columns read ``X`` from memory twice and run far below BLAS's peak);
* for the BLAS/sparse path: the fused multinomial Hessian-vector product in
  place on one ``(n_samples, n_classes)`` buffer, the binomial curvature and
  Hessian product, the in-place softmax of the logits, float64 column sums;
* integer labels to class indices without a sort.

Conventions are those of :mod:`fastce._kernels`: no validation, no allocation
of results, float64 arithmetic on scalars, per-block float64 partial sums with
a block size that does not depend on the thread count (serial and parallel
twins give bitwise identical results), ``*_par``/``*_ser`` twins dispatched by
:func:`fastce._config.run_kernel`. The kernels inline helpers of
:mod:`fastce._kernels` (its vectorisable exp and log1p); they are compiled
with ``_jit(follows=True)``, which keys their cache on that file's contents
too (Numba's own key is the kernel's file only).
"""

import functools
import math

import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from . import _kernels
from ._kernels import _bits_to_float, _float_to_bits, fexp_nonpos, flog1p_unit_recip

_jit = functools.partial(_kernels._jit, follows=True)

# Sums over a row may be re-associated so that LLVM vectorises them; only the
# small reduction helpers get this (``_jit(reduce=True)``; LLVM keeps
# per-instruction flags when it inlines them into kernels compiled with
# the package's fast-math flags).

# ---------------------------------------------------------------------------
# Vectorisable float64 math: fastce._kernels' fexp_nonpos and flog1p_unit_recip
# (these kernels are compiled with _jit(follows=True), whose cache is keyed
# on _kernels.py's contents too), and a log1p for a >= 0.


def vlog1p_pos(a):
    """log(1 + a) for a float64 a >= 0 (inf and NaN propagate), vectorisable
    (Numba-compiled code only)."""
    raise NotImplementedError("vlog1p_pos is only callable from Numba-compiled code")


def _log1p_pos64(a):
    # a <= 1: the series of flog1p_unit_recip. a > 1: 1 + a = 2**e (1 + v) with
    # v in [0, 1); rounding 1 + a costs at most half an ulp of a log >= ln 2.
    big = a > 1.0
    bits = _float_to_bits(a + 1.0)
    f = _bits_to_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FF0000000000000)  # [1, 2)
    lg, _ = flog1p_unit_recip(f - 1.0 if big else a)
    e = np.float64((bits >> 52) - 1023) if big else 0.0
    res = e * 0.6931471803691238 + (lg + e * 1.9082149292705877e-10)  # ln 2 in two parts
    return a if a == np.inf else res


_kernels._overload_by_float(vlog1p_pos, None, _log1p_pos64)


@_jit()
def vlog1p_pos_array(x, out):
    """out = vlog1p_pos(x) elementwise (for the tests)."""
    for i in range(x.shape[0]):
        out[i] = vlog1p_pos(x[i])


# ---------------------------------------------------------------------------
# scalar helpers


@_jit()
def _sigmoid_pair(z):
    """(sigmoid(z), sigmoid(-z), log1p(exp(-|z|))) without overflow or cancellation.

    Selects, not branches: the sign of z is unpredictable across rows.
    """
    e = math.exp(-abs(z))
    inv = 1.0 / (1.0 + e)
    pos = z >= 0.0
    sig_pos = inv if pos else e * inv
    sig_neg = e * inv if pos else inv
    return sig_pos, sig_neg, math.log1p(e)


# ---------------------------------------------------------------------------
# column sums of an (n, K) array in float64, per block of rows


@_jit()
def _col_sums_block(j, a, partial, block):
    n, k_max = a.shape
    out = partial[j]
    for k in range(k_max):
        out[k] = 0.0
    for i in range(j * block, min(n, (j + 1) * block)):
        row = a[i]
        for k in range(k_max):
            out[k] += row[k]


@_jit(parallel=True)
def col_sums_par(a, partial, block):
    for j in prange(partial.shape[0]):
        _col_sums_block(np.int64(j), a, partial, block)


@_jit()
def col_sums_ser(a, partial, block):
    for j in range(partial.shape[0]):
        _col_sums_block(j, a, partial, block)


# ---------------------------------------------------------------------------
# multinomial Hessian-vector product
#
# For one sample with probabilities p, weight s, and t = x.V + v_b (the
# direction V applied to the sample), the Hessian of s * CE(softmax) applied
# to V gives the row r = s p * (t - <p, t>) (then X.T @ r, sum_i r for the
# intercept). T holds t on entry and r on exit.


@_jit()
def _mn_hessp_block(j, proba, t, vb, sw, sw_step, scale, partial, block):
    n, n_classes = proba.shape
    acc = partial[j]
    for k in range(n_classes):
        acc[k] = 0.0
    for i in range(j * block, min(n, (j + 1) * block)):
        p = proba[i]
        ti = t[i]
        dot = 0.0
        for k in range(n_classes):
            dot += p[k] * (ti[k] + vb[k])
        s = scale * sw[i * sw_step]
        for k in range(n_classes):
            r = s * p[k] * ((ti[k] + vb[k]) - dot)
            ti[k] = r
            acc[k] += r


@_jit(parallel=True)
def mn_hessp_par(proba, t, vb, sw, sw_step, scale, partial, block):
    for j in prange(partial.shape[0]):
        _mn_hessp_block(np.int64(j), proba, t, vb, sw, sw_step, scale, partial, block)


@_jit()
def mn_hessp_ser(proba, t, vb, sw, sw_step, scale, partial, block):
    for j in range(partial.shape[0]):
        _mn_hessp_block(j, proba, t, vb, sw, sw_step, scale, partial, block)


# ---------------------------------------------------------------------------
# binomial curvature h_i = scale s_i sigmoid(z_i) sigmoid(-z_i), and the
# Hessian product r_i = h_i (t_i + v_b), in place, with sum_i r_i


@_jit()
def _bin_curvature_block(j, z, sw, sw_step, scale, h, block):
    for i in range(j * block, min(z.shape[0], (j + 1) * block)):
        sig_pos, sig_neg, _ = _sigmoid_pair(z[i])
        h[i] = scale * sw[i * sw_step] * sig_pos * sig_neg


@_jit(parallel=True)
def bin_curvature_par(z, sw, sw_step, scale, h, partial, block):
    for j in prange(partial.shape[0]):
        _bin_curvature_block(np.int64(j), z, sw, sw_step, scale, h, block)


@_jit()
def bin_curvature_ser(z, sw, sw_step, scale, h, partial, block):
    for j in range(partial.shape[0]):
        _bin_curvature_block(j, z, sw, sw_step, scale, h, block)


@_jit()
def _bin_hessp_block(j, h, t, vb, partial, block):
    acc = 0.0
    for i in range(j * block, min(t.shape[0], (j + 1) * block)):
        r = h[i] * (t[i] + vb)
        t[i] = r
        acc += r
    partial[j] = acc


@_jit(parallel=True)
def bin_hessp_par(h, t, vb, partial, block):
    for j in prange(partial.shape[0]):
        _bin_hessp_block(np.int64(j), h, t, vb, partial, block)


@_jit()
def bin_hessp_ser(h, t, vb, partial, block):
    for j in range(partial.shape[0]):
        _bin_hessp_block(j, h, t, vb, partial, block)


# ---------------------------------------------------------------------------
# softmax of each row of an (n, K) array, in place (the multinomial model's
# probabilities, kept for the Hessian products of one Newton iteration)


@_jit()
def _softmax_rows_block(j, z, block):
    n, n_classes = z.shape
    for i in range(j * block, min(n, (j + 1) * block)):
        row = z[i]
        m = -np.inf
        for k in range(n_classes):
            v = row[k]
            if v > m:
                m = v
        s = 0.0
        for k in range(n_classes):
            e = math.exp(row[k] - m)
            row[k] = e
            s += e
        inv = 1.0 / s
        for k in range(n_classes):
            row[k] = row[k] * inv


@_jit(parallel=True)
def softmax_rows_par(z, partial, block):
    for j in prange(partial.shape[0]):
        _softmax_rows_block(np.int64(j), z, block)


@_jit()
def softmax_rows_ser(z, partial, block):
    for j in range(partial.shape[0]):
        _softmax_rows_block(j, z, block)


# ---------------------------------------------------------------------------
# Single pass over a dense, C-ordered X (n, d): each row is read once for the
# logits (W x + b) and, still in cache, for its contribution g x^T to the
# gradient, accumulated into per-block float64 partials ``gp``. Rows go in
# groups of four so that each coefficient loaded serves four rows and each
# accumulator loaded and stored takes four rows' terms; the last group of a
# block is padded with its last row, masked out. Coefficients arrive float64
# as w2 = [W | b] of shape (K, d + fit_intercept) (multinomial) or [w, b] of
# shape (d + fit_intercept,) (binomial).

_GROUP = 4


@_jit()
def _block_rows(j, n, n_blocks):
    """Rows [lo, hi) of block j when n rows are cut into n_blocks near-equal blocks."""
    return (j * n) // n_blocks, ((j + 1) * n) // n_blocks


@_jit(reduce=True)
def _dot4(X, i0, i1, i2, i3, w2, k, d):
    """(X[i] . w2[k, :d] for i in i0..i3) in float64, vectorised. Indices, not
    row views: a view costs an atomic reference count update in the loop."""
    s0 = 0.0
    s1 = 0.0
    s2 = 0.0
    s3 = 0.0
    for j in range(d):
        wj = w2[k, j]
        s0 += X[i0, j] * wj
        s1 += X[i1, j] * wj
        s2 += X[i2, j] * wj
        s3 += X[i3, j] * wj
    return s0, s1, s2, s3


@_jit()
def _axpy4(a0, a1, a2, a3, X, i0, i1, i2, i3, out, k, d):
    """out[k, :d] += a0 X[i0] + a1 X[i1] + a2 X[i2] + a3 X[i3] (float64 accumulators)."""
    for j in range(d):
        out[k, j] += (a0 * X[i0, j] + a1 * X[i1, j]) + (a2 * X[i2, j] + a3 * X[i3, j])


@_jit()
def _zero(a):
    flat = a.reshape(-1)
    for c in range(flat.shape[0]):
        flat[c] = 0.0


@_jit()
def _mn_row_proba(z, r, p):
    """softmax(z[r]) into p[r]; returns (max, arg max, sum of the other exp(z_k - max)).

    As in fastce.cross_entropy, the maximal term is kept out of the sum so
    that the loss can use log1p and p_y - 1 can be formed without cancellation.
    """
    n_classes = z.shape[1]
    m = -np.inf
    km = 0
    for k in range(n_classes):
        if z[r, k] > m:
            m = z[r, k]
            km = k
    for k in range(n_classes):
        p[r, k] = fexp_nonpos(z[r, k] - m)
    acc = 0.0
    for k in range(n_classes):
        acc += 0.0 if k == km else p[r, k]
    inv = 1.0 / (1.0 + acc)
    for k in range(n_classes):
        p[r, k] = p[r, k] * inv
    return m, km, acc


@_jit()
def _mn_logits4(X, i0, i1, i2, i3, w2, d, fit_intercept, z):
    """z[r, k] = w_k . x_r + b_k for the four rows."""
    for k in range(w2.shape[0]):
        b = w2[k, d] if fit_intercept else 0.0
        z0, z1, z2, z3 = _dot4(X, i0, i1, i2, i3, w2, k, d)
        z[0, k] = z0 + b
        z[1, k] = z1 + b
        z[2, k] = z2 + b
        z[3, k] = z3 + b


@_jit()
def _mn_accumulate4(X, i0, i1, i2, i3, g, d, fit_intercept, gj):
    """gj[k, :d] += sum_r g[r, k] x_r (and the intercept column), for all
    classes but the last: each row of g sums to zero, so the last class's row
    is minus the sum of the others (see _mn_last_class)."""
    for k in range(gj.shape[0] - 1):
        a0 = g[0, k]
        a1 = g[1, k]
        a2 = g[2, k]
        a3 = g[3, k]
        _axpy4(a0, a1, a2, a3, X, i0, i1, i2, i3, gj, k, d)
        if fit_intercept:
            gj[k, d] += (a0 + a1) + (a2 + a3)


@_jit()
def _mn_last_class(gj):
    """gj[K-1] = -sum_{k<K-1} gj[k]: the per-row gradients (and Hessian
    products) of the softmax sum to zero over the classes."""
    last = gj.shape[0] - 1
    for c in range(gj.shape[1]):
        t = 0.0
        for k in range(last):
            t += gj[k, c]
        gj[last, c] = -t


@_jit()
def _mn_dense_loss_grad_block(j, X, w2, y, sw, sw_step, fit_intercept, store, proba, gp, zb, n_blocks):
    n, d = X.shape
    n_classes = w2.shape[0]
    lo, hi = _block_rows(j, n, n_blocks)
    gj = gp[j]
    _zero(gj)
    z = zb[j, 0]
    g = zb[j, 1]
    loss = 0.0
    for i0 in range(lo, hi, _GROUP):
        last = min(i0 + _GROUP, hi) - 1
        _mn_logits4(X, i0, min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last), w2, d, fit_intercept, z)
        for r in range(_GROUP):
            i = i0 + r
            if i > last:
                for k in range(n_classes):
                    g[r, k] = 0.0
                continue
            s = sw[i * sw_step]
            yi = y[i]
            m, km, acc = _mn_row_proba(z, r, g)
            loss += s * ((m - z[r, yi]) + math.log1p(acc))
            if store:
                for k in range(n_classes):
                    proba[i, k] = g[r, k]
            for k in range(n_classes):
                g[r, k] = s * g[r, k]
            if yi == km:
                g[r, yi] = -s * acc / (1.0 + acc)  # p_y - 1 without cancellation
            else:
                g[r, yi] -= s
        _mn_accumulate4(X, i0, min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last), g, d, fit_intercept, gj)
    _mn_last_class(gj)
    return loss


@_jit(parallel=True)
def mn_dense_loss_grad_par(X, w2, y, sw, sw_step, fit_intercept, store, proba, gp, lp, zb):
    for j in prange(lp.shape[0]):
        lp[j] = _mn_dense_loss_grad_block(np.int64(j), X, w2, y, sw, sw_step, fit_intercept, store, proba, gp, zb, lp.shape[0])


@_jit()
def mn_dense_loss_grad_ser(X, w2, y, sw, sw_step, fit_intercept, store, proba, gp, lp, zb):
    for j in range(lp.shape[0]):
        lp[j] = _mn_dense_loss_grad_block(j, X, w2, y, sw, sw_step, fit_intercept, store, proba, gp, zb, lp.shape[0])


# ---------------------------------------------------------------------------
# The single pass of the multinomial objective and gradient on float64 X with
# BLAS doing the products: rows in chunks of _CHUNK; each chunk's logits
# Z = X_c W^T and its contribution G^T X_c to the gradient are two calls of
# the BLAS dgemm (one thread each, in the thread of the block) on the chunk
# while it is in cache; between them the softmax, loss and gradient run across
# the chunk's rows, class by class, in the (K, chunk) buffer that holds Z^T
# and then G^T (SIMD across rows). Measured 2x faster than the kernels above
# at 200,000 x 100 with 10 classes; see fastce._linear_loss, which sizes the
# chunks (at most _CHUNK rows).


@intrinsic
def _call_gemm(typingctx, fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc):
    """Call the Fortran-convention ``?gemm`` at address ``fn``; every argument
    is an address (all of them passed by reference, as Fortran does).
    Addresses, not a ctypes function: a kernel that holds one cannot be cached."""
    args = (fn, transa, transb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
    if not all(isinstance(t, types.Integer) for t in args):
        return None

    def codegen(context, builder, signature, llargs):
        ptr = ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [ptr] * 13)
        callee = builder.inttoptr(llargs[0], fnty.as_pointer())
        builder.call(callee, [builder.inttoptr(v, ptr) for v in llargs[1:]])
        return context.get_dummy_value()

    return types.void(*args), codegen


_CHUNK = 256


@_jit()
def _gemm(gemm, consts, iv, trans_a, trans_b, m, n, k, a, lda, b, ldb, beta_one, c, ldc):
    """c (m x n, column-major, ldc) = op(a) op(b) (+ c if beta_one) by the BLAS
    ``?gemm`` at address ``gemm``: a, b, c are addresses; op is the
    transpose when trans_* is set. ``consts`` holds [1.0, 0.0] (alpha and
    beta) and ``iv`` is int64 scratch of 8 for what goes by reference: the
    six integers and the characters 'N' and 'T'. Little-endian, an int64
    serves both BLAS integer widths (an LP64 BLAS reads its low 4 bytes, an
    ILP64 one all 8), and one holding a character code is that character
    followed by zero bytes."""
    iv[0] = m
    iv[1] = n
    iv[2] = k
    iv[3] = lda
    iv[4] = ldb
    iv[5] = ldc
    iv[6] = 0x4E  # 'N'
    iv[7] = 0x54  # 'T'
    q = iv.itemsize
    ip = iv.ctypes.data
    cp = consts.ctypes.data
    _call_gemm(
        gemm, ip + (7 if trans_a else 6) * q, ip + (7 if trans_b else 6) * q, ip, ip + q, ip + 2 * q, cp, a,
        ip + 3 * q, b, ip + 4 * q, cp + (0 if beta_one else 8), c, ip + 5 * q,
    )  # fmt: skip


@_jit()
def _touch_rows(X, r0, r1):
    """Load one value per cache line of rows [r0, r1) of X: independent loads,
    so the memory system fetches the chunk in parallel before BLAS reads it
    (BLAS's packing of a chunk that is not in cache stalls on each line)."""
    d = X.shape[1]
    t = 0.0
    for r in range(r0, r1):
        for q in range(0, d, 8):
            t += X[r, q]
    return t


@_jit(reduce=True)
def _row_sum(a, k, m):
    """sum(a[k, :m]) in float64 (re-associated: vectorised)."""
    t = 0.0
    for r in range(m):
        t += a[k, r]
    return t


@_jit()
def _chunk_forward(X, c0, m, wt, w2, fit_intercept, zr, z, gemm, consts, iv):
    """z[:, :m] = (X_c W^T + b)^T for the chunk X_c = X[c0:c0 + m] (w2 = [W | b],
    wt = W^T, C-contiguous (d, K)): one load per cache line of the chunk
    (_touch_rows), dgemm into zr, then zr^T + b into z. Returns the sum of
    those loads, for the caller to keep.

    The product is taken as Z^T = W X_c^T into the rows of zr: both operands
    as they lie in memory ("NN"), which OpenBLAS does in 11.7 us against 25.6
    us for the same product with X_c transposed ("TN", Z into the rows of z)
    at 256 x 100 x 10 (in cache, one core); the transpose of zr costs ~2 us.
    """
    d = X.shape[1]
    n_classes = wt.shape[1]
    touched = _touch_rows(X, c0, c0 + m)
    # zr^T (K x m, column-major with ld K: zr as a C array (m, K)) = W X_c^T
    _gemm(
        gemm, consts, iv, False, False, n_classes, m, d, wt.ctypes.data, n_classes, X.ctypes.data + c0 * d * 8, d,
        False, zr.ctypes.data, n_classes,
    )  # fmt: skip
    for k in range(n_classes):
        b = w2[k, d] if fit_intercept else 0.0
        for r in range(m):
            z[k, r] = zr[r, k] + b
    return touched


@_jit()
def _chunk_backward(X, c0, m, g, fit_intercept, gj, gemm, consts, iv):
    """gj[:K-1, :d] += G[:, :K-1]^T X_c and gj[:K-1, d] += the column sums of
    G (with the intercept), G = g[:, :m]^T: all classes but the last (see
    _mn_last_class)."""
    d = X.shape[1]
    n_classes = g.shape[0]
    if fit_intercept:
        for k in range(n_classes - 1):
            gj[k, d] += _row_sum(g, k, m)
    # gj^T[:d, :K-1] (column-major, ld d + 1) += X_c^T G[:, :K-1]
    _gemm(
        gemm, consts, iv, False, False, d, n_classes - 1, m, X.ctypes.data + c0 * d * 8, d, g.ctypes.data,
        g.shape[1], True, gj.ctypes.data, d + 1,
    )  # fmt: skip


@_jit()
def _mn_blas_loss_grad_block(j, X, w2, wt, y, sw, sw_step, fit_intercept, store, proba, gp, zb, sb, ib, zrb, iv, consts, gemm, n_blocks):
    n = X.shape[0]
    n_classes = w2.shape[0]
    lo, hi = _block_rows(j, n, n_blocks)
    gj = gp[j]
    _zero(gj)
    zr = zrb[j]  # (chunk, K): Z
    z = zb[j]  # (K, chunk): Z^T, then exp(z - max), then G^T
    chunk = z.shape[1]
    sbj = sb[j]
    mx = sbj[0]
    acc = sbj[1]
    sv = sbj[2]
    zy = sbj[3]
    lv = sbj[4]
    km = ib[j]
    ivj = iv[j]
    loss = 0.0
    touched = 0.0
    for c0 in range(lo, hi, chunk):
        m = min(c0 + chunk, hi) - c0
        touched += _chunk_forward(X, c0, m, wt, w2, fit_intercept, zr, z, gemm, consts, ivj)
        for r in range(m):
            mx[r] = -np.inf
            km[r] = 0
            acc[r] = 0.0
            sv[r] = sw[(c0 + r) * sw_step]
        for k in range(n_classes):
            for r in range(m):
                v = z[k, r]
                big = v > mx[r]
                mx[r] = v if big else mx[r]
                km[r] = k if big else km[r]
        for r in range(m):
            zy[r] = z[y[c0 + r], r]
        # as in fastce.cross_entropy: the largest term stays out of the sum, so
        # that the loss can use log1p and p_y - 1 keeps its digits
        for k in range(n_classes):
            for r in range(m):
                e = fexp_nonpos(z[k, r] - mx[r])
                z[k, r] = e
                acc[r] += 0.0 if k == km[r] else e
        for r in range(m):
            lv[r] = sv[r] * ((mx[r] - zy[r]) + vlog1p_pos(acc[r]))
            zy[r] = 1.0 / (1.0 + acc[r])
        loss += _row_sum(sbj, 4, m)
        for k in range(n_classes):
            for r in range(m):
                z[k, r] = z[k, r] * zy[r]  # the probability
        if store:
            for r in range(m):
                for k in range(n_classes):
                    proba[c0 + r, k] = z[k, r]
        for k in range(n_classes):
            for r in range(m):
                z[k, r] = sv[r] * z[k, r]
        for r in range(m):
            yi = y[c0 + r]
            s = sv[r]
            if yi == km[r]:
                z[yi, r] = -s * acc[r] * zy[r]  # p_y - 1 without cancellation
            else:
                z[yi, r] -= s
        _chunk_backward(X, c0, m, z, fit_intercept, gj, gemm, consts, ivj)
    _mn_last_class(gj)
    sb[j, 5, 0] = touched  # keeps the loads of _touch_rows
    return loss


@_jit(parallel=True)
def mn_blas_loss_grad_par(X, w2, wt, y, sw, sw_step, fit_intercept, store, proba, gp, lp, zb, sb, ib, zrb, iv, consts, gemm):
    for j in prange(lp.shape[0]):
        lp[j] = _mn_blas_loss_grad_block(
            np.int64(j), X, w2, wt, y, sw, sw_step, fit_intercept, store, proba, gp, zb, sb, ib, zrb, iv, consts, gemm,
            lp.shape[0],
        )


@_jit()
def mn_blas_loss_grad_ser(X, w2, wt, y, sw, sw_step, fit_intercept, store, proba, gp, lp, zb, sb, ib, zrb, iv, consts, gemm):
    for j in range(lp.shape[0]):
        lp[j] = _mn_blas_loss_grad_block(
            j, X, w2, wt, y, sw, sw_step, fit_intercept, store, proba, gp, zb, sb, ib, zrb, iv, consts, gemm, lp.shape[0]
        )


@_jit()
def _mn_blas_hessp_block(j, X, v2, vt, proba, sw, sw_step, fit_intercept, gp, zb, sb, zrb, iv, consts, gemm, n_blocks):
    """The Hessian product of _mn_dense_hessp_block by BLAS chunks, as
    _mn_blas_loss_grad_block: T = X_c V^T (+ v_b), R = s p * (T - <p, T>)
    across the chunk's rows, X_c^T R."""
    n = X.shape[0]
    n_classes = v2.shape[0]
    lo, hi = _block_rows(j, n, n_blocks)
    gj = gp[j]
    _zero(gj)
    zr = zrb[j]  # (chunk, K): T
    ivj = iv[j]
    t = zb[j]  # (K, chunk): T^T, then R^T
    chunk = t.shape[1]
    dot = sb[j, 0]
    sv = sb[j, 1]
    touched = 0.0
    for c0 in range(lo, hi, chunk):
        m = min(c0 + chunk, hi) - c0
        touched += _chunk_forward(X, c0, m, vt, v2, fit_intercept, zr, t, gemm, consts, ivj)
        for r in range(m):
            dot[r] = 0.0
            sv[r] = sw[(c0 + r) * sw_step]
        for k in range(n_classes):
            for r in range(m):
                dot[r] += proba[c0 + r, k] * t[k, r]
        for k in range(n_classes):
            for r in range(m):
                t[k, r] = sv[r] * proba[c0 + r, k] * (t[k, r] - dot[r])
        _chunk_backward(X, c0, m, t, fit_intercept, gj, gemm, consts, ivj)
    _mn_last_class(gj)
    sb[j, 5, 0] = touched  # keeps the loads of _touch_rows


@_jit(parallel=True)
def mn_blas_hessp_par(X, v2, vt, proba, sw, sw_step, fit_intercept, gp, zb, sb, ib, zrb, iv, consts, gemm):
    for j in prange(gp.shape[0]):
        _mn_blas_hessp_block(
            np.int64(j), X, v2, vt, proba, sw, sw_step, fit_intercept, gp, zb, sb, zrb, iv, consts, gemm, gp.shape[0]
        )


@_jit()
def mn_blas_hessp_ser(X, v2, vt, proba, sw, sw_step, fit_intercept, gp, zb, sb, ib, zrb, iv, consts, gemm):
    for j in range(gp.shape[0]):
        _mn_blas_hessp_block(j, X, v2, vt, proba, sw, sw_step, fit_intercept, gp, zb, sb, zrb, iv, consts, gemm, gp.shape[0])


@_jit()
def _mn_dense_hessp_block(j, X, v2, proba, sw, sw_step, fit_intercept, gp, zb, n_blocks):
    """Rows r_i = s_i p_i * (t_i - <p_i, t_i>), t_i = V x_i + v_b, accumulated as X^T R."""
    n, d = X.shape
    n_classes = v2.shape[0]
    lo, hi = _block_rows(j, n, n_blocks)
    gj = gp[j]
    _zero(gj)
    t = zb[j, 0]
    for i0 in range(lo, hi, _GROUP):
        last = min(i0 + _GROUP, hi) - 1
        _mn_logits4(X, i0, min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last), v2, d, fit_intercept, t)
        for r in range(_GROUP):
            i = i0 + r
            if i > last:
                for k in range(n_classes):
                    t[r, k] = 0.0
                continue
            dot = 0.0
            for k in range(n_classes):
                dot += proba[i, k] * t[r, k]
            s = sw[i * sw_step]
            for k in range(n_classes):
                t[r, k] = s * proba[i, k] * (t[r, k] - dot)
        _mn_accumulate4(X, i0, min(i0 + 1, last), min(i0 + 2, last), min(i0 + 3, last), t, d, fit_intercept, gj)
    _mn_last_class(gj)


@_jit(parallel=True)
def mn_dense_hessp_par(X, v2, proba, sw, sw_step, fit_intercept, gp, zb):
    for j in prange(gp.shape[0]):
        _mn_dense_hessp_block(np.int64(j), X, v2, proba, sw, sw_step, fit_intercept, gp, zb, gp.shape[0])


@_jit()
def mn_dense_hessp_ser(X, v2, proba, sw, sw_step, fit_intercept, gp, zb):
    for j in range(gp.shape[0]):
        _mn_dense_hessp_block(j, X, v2, proba, sw, sw_step, fit_intercept, gp, zb, gp.shape[0])


# X_c^T v for a chunk of rows in cache, the columns in panels of 64: for
# each panel, one pass over the chunk's rows with the panel's sums in (up
# to) eight vector registers (a vector FMA per 8 columns and row; the last
# vector's loads masked). Per row of 50 columns, one core, in cache: 3.7 ns, against
# 6.0-6.2 ns for OpenBLAS's dgemm (which packs X_c first), 7.1 ns for its
# dgemv and 11.6 ns for Numba's loop (d partial sums loaded and stored per
# row); 1.5 against 2.4 ns at 20 columns, 105 against 123 ns at 1,000.
_PANEL = 64


@intrinsic
def _xt_panel(typingctx, X, r0, m, c0, v, out):
    """out[c0 : c0 + nc] += sum over r < m of v[r] * X[r0 + r, c0 : c0 + nc],
    nc = min(64, d - c0) > 0: X C-contiguous (n, d), float64 or float32
    (widened); v and out contiguous float64. The lanes past nc are masked:
    nothing is read past a row's last column or written past out[c0 + nc]."""
    if not (
        isinstance(X, types.Array) and X.ndim == 2 and X.layout == "C" and X.dtype in (types.float32, types.float64)
        and all(
            isinstance(t, types.Array) and t.ndim == 1 and t.layout == "C" and t.dtype == types.float64
            for t in (v, out)
        )
        and all(isinstance(t, types.Integer) for t in (r0, m, c0))
    ):  # fmt: skip
        return None
    sig = types.void(X, r0, m, c0, v, out)

    def codegen(context, builder, signature, args):
        x_v, r0_v, m_v, c0_v, v_v, out_v = args
        i64 = ir.IntType(64)
        i32 = ir.IntType(32)
        f64 = ir.DoubleType()
        xf = context.get_value_type(signature.args[0].dtype)
        v8 = ir.VectorType(f64, 8)
        x8 = ir.VectorType(xf, 8)
        m8 = ir.VectorType(ir.IntType(1), 8)
        mod = builder.module
        sfx = "f64" if xf == f64 else "f32"
        mload_x = cgutils.get_or_insert_function(
            mod, ir.FunctionType(x8, [x8.as_pointer(), i32, m8, x8]), f"llvm.masked.load.v8{sfx}.p0"
        )
        mload = cgutils.get_or_insert_function(
            mod, ir.FunctionType(v8, [v8.as_pointer(), i32, m8, v8]), "llvm.masked.load.v8f64.p0"
        )
        mstore = cgutils.get_or_insert_function(
            mod, ir.FunctionType(ir.VoidType(), [v8, v8.as_pointer(), i32, m8]), "llvm.masked.store.v8f64.p0"
        )
        fma = cgutils.get_or_insert_function(mod, ir.FunctionType(v8, [v8, v8, v8]), "llvm.fma.v8f64")
        xa = context.make_array(signature.args[0])(context, builder, x_v)
        va = context.make_array(signature.args[4])(context, builder, v_v)
        oa = context.make_array(signature.args[5])(context, builder, out_v)
        d = cgutils.unpack_tuple(builder, xa.shape)[1]
        r0_v = context.cast(builder, r0_v, signature.args[1], types.intp)
        m_v = context.cast(builder, m_v, signature.args[2], types.intp)
        c0_v = context.cast(builder, c0_v, signature.args[3], types.intp)
        nc = builder.sub(d, c0_v)
        nc = builder.select(builder.icmp_signed("<", nc, ir.Constant(i64, _PANEL)), nc, ir.Constant(i64, _PANEL))
        nblk = builder.udiv(builder.add(nc, ir.Constant(i64, 7)), ir.Constant(i64, 8))

        def splat(value):  # the vector of 8 copies of a scalar
            vec = ir.Constant(ir.VectorType(value.type, 8), ir.Undefined)
            vec = builder.insert_element(vec, value, ir.Constant(i32, 0))
            return builder.shuffle_vector(vec, vec, ir.Constant(ir.VectorType(i32, 8), [0] * 8))

        # lanes of the last vector: q < nc - 8 (nblk - 1)
        tail = builder.sub(nc, builder.mul(builder.sub(nblk, ir.Constant(i64, 1)), ir.Constant(i64, 8)))
        tmask = builder.icmp_signed("<", ir.Constant(ir.VectorType(i64, 8), list(range(8))), splat(tail))
        full = ir.Constant(m8, [1] * 8)
        zero8 = ir.Constant(v8, [0.0] * 8)
        zerox = ir.Constant(x8, [0.0] * 8)
        x0 = builder.gep(xa.data, [builder.add(builder.mul(r0_v, d), c0_v)])
        o0 = builder.gep(oa.data, [c0_v])
        end = builder.append_basic_block("xt_end")
        switch = builder.switch(nblk, end)
        for nb in range(1, _PANEL // 8 + 1):  # one loop per count of vectors
            case = builder.append_basic_block(f"xt_{nb}")
            switch.add_case(ir.Constant(i64, nb), case)
            loop = builder.append_basic_block(f"xt_{nb}_loop")
            done = builder.append_basic_block(f"xt_{nb}_done")
            masks = [full] * (nb - 1) + [tmask]
            builder.position_at_end(case)
            builder.cbranch(builder.icmp_signed(">", m_v, ir.Constant(i64, 0)), loop, done)
            builder.position_at_end(loop)
            r = builder.phi(i64)
            accs = [builder.phi(v8) for _ in range(nb)]
            vb = splat(builder.load(builder.gep(va.data, [r])))
            row = builder.gep(x0, [builder.mul(r, d)])
            new = []
            for k in range(nb):
                p = builder.bitcast(builder.gep(row, [ir.Constant(i64, 8 * k)]), x8.as_pointer())
                xv = builder.call(mload_x, [p, ir.Constant(i32, 8 if xf == f64 else 4), masks[k], zerox])
                if xf != f64:
                    xv = builder.fpext(xv, v8)
                new.append(builder.call(fma, [vb, xv, accs[k]]))
            r1 = builder.add(r, ir.Constant(i64, 1))
            builder.cbranch(builder.icmp_signed("<", r1, m_v), loop, done)
            r.add_incoming(ir.Constant(i64, 0), case)
            r.add_incoming(r1, loop)
            for k in range(nb):
                accs[k].add_incoming(zero8, case)
                accs[k].add_incoming(new[k], loop)
            builder.position_at_end(done)
            sums = []
            for k in range(nb):
                s = builder.phi(v8)
                s.add_incoming(zero8, case)
                s.add_incoming(new[k], loop)
                sums.append(s)
            for k in range(nb):
                p = builder.bitcast(builder.gep(o0, [ir.Constant(i64, 8 * k)]), v8.as_pointer())
                old = builder.call(mload, [p, ir.Constant(i32, 8), masks[k], zero8])
                builder.call(mstore, [builder.fadd(old, sums[k]), p, ir.Constant(i32, 8), masks[k]])
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return sig, codegen


@_jit()
def _xt_dot(X, r0, m, v, out):
    """out[:d] += X[r0 : r0 + m]^T v[:m] (d = X.shape[1]), by panels of _PANEL columns."""
    d = X.shape[1]
    for c0 in range(0, d, _PANEL):
        _xt_panel(X, r0, m, c0, v, out)


@_jit(reduce=True)
def _dot1(X, i, w, d):
    """X[i] . w[:d] in float64, vectorised."""
    s = 0.0
    for c in range(d):
        s += X[i, c] * w[c]
    return s


@_jit()
def _bin_dense_loss_grad_block(j, X, w, y, sw, sw_step, fit_intercept, store, curv, gp, bb, n_blocks):
    """Rows in chunks of ``bb.shape[2]``: the chunk's logits, then its
    losses, gradients and curvatures across rows (SIMD: vectorisable exp and
    log1p), then its contribution X_c^T g to the gradient by _xt_dot, the
    rows still in cache. At 1,000,000 x 50 (2 threads, best of 10 calls,
    alternating processes): 13.6-16.1 ms against 15.8-17.2 ms with
    OpenBLAS's dgemm for X_c^T g (float64), 11.8-12.7 ms against 14.8-17.4
    ms with a Numba loop (float32)."""
    n, d = X.shape
    lo, hi = _block_rows(j, n, n_blocks)
    gj = gp[j]
    _zero(gj)
    b = w[d] if fit_intercept else 0.0
    bj = bb[j]
    zc = bj[0]
    gc = bj[1]
    lc = bj[2]
    sc = bj[3]
    hc = bj[4]
    loss = 0.0
    gb = 0.0
    chunk = bb.shape[2]
    for c0 in range(lo, hi, chunk):
        m = min(c0 + chunk, hi) - c0
        for r in range(m):
            zc[r] = _dot1(X, c0 + r, w, d) + b
            sc[r] = sw[(c0 + r) * sw_step]
        for r in range(m):
            # loss s [y (sp + max(-z, 0)) + (1 - y) (sp + max(z, 0))], sp = log1p(exp(-|z|)),
            # gradient s [(1 - y) sigmoid(z) - y sigmoid(-z)] (PyTorch's formula, the same
            # as fastce.binary_cross_entropy_with_logits), with selects only
            z = zc[r]
            s = sc[r]
            yv = y[c0 + r]
            e = fexp_nonpos(-abs(z))
            sp, inv = flog1p_unit_recip(e)  # log1p(exp(-|z|)), 1 / (1 + exp(-|z|))
            pos = z >= 0.0
            sig_pos = inv if pos else e * inv
            sig_neg = e * inv if pos else inv
            z_pos = z if z > 0.0 else 0.0  # max(z, 0); max(-z, 0) = z_pos - z exactly
            lc[r] = s * (sp + (yv * (z_pos - z) + (1.0 - yv) * z_pos))
            gc[r] = s * ((1.0 - yv) * sig_pos - yv * sig_neg)
            hc[r] = s * sig_pos * sig_neg
        if store:
            for r in range(m):
                curv[c0 + r] = hc[r]
        loss += _row_sum(bj, 2, m)
        gb += _row_sum(bj, 1, m)
        _xt_dot(X, c0, m, gc, gj)
    if fit_intercept:
        gj[d] = gb
    return loss


@_jit(parallel=True)
def bin_dense_loss_grad_par(X, w, y, sw, sw_step, fit_intercept, store, curv, gp, lp, bb):
    for j in prange(lp.shape[0]):
        lp[j] = _bin_dense_loss_grad_block(np.int64(j), X, w, y, sw, sw_step, fit_intercept, store, curv, gp, bb, lp.shape[0])


@_jit()
def bin_dense_loss_grad_ser(X, w, y, sw, sw_step, fit_intercept, store, curv, gp, lp, bb):
    for j in range(lp.shape[0]):
        lp[j] = _bin_dense_loss_grad_block(j, X, w, y, sw, sw_step, fit_intercept, store, curv, gp, bb, lp.shape[0])


@_jit()
def _bin_dense_hessp_block(j, X, v, curv, fit_intercept, gp, bb, n_blocks):
    """Rows in the chunks of _bin_dense_loss_grad_block: a_i = h_i (x_i . v + v_b)
    across the chunk's rows, then X_c^T a by _xt_dot, the rows still in cache."""
    n, d = X.shape
    lo, hi = _block_rows(j, n, n_blocks)
    gj = gp[j]
    _zero(gj)
    vb = v[d] if fit_intercept else 0.0
    bj = bb[j]
    a = bj[0]
    chunk = bb.shape[2]
    gb = 0.0
    for c0 in range(lo, hi, chunk):
        m = min(c0 + chunk, hi) - c0
        for r in range(m):
            a[r] = curv[c0 + r] * (_dot1(X, c0 + r, v, d) + vb)
        gb += _row_sum(bj, 0, m)
        _xt_dot(X, c0, m, a, gj)
    if fit_intercept:
        gj[d] = gb


@_jit(parallel=True)
def bin_dense_hessp_par(X, v, curv, fit_intercept, gp, bb):
    for j in prange(gp.shape[0]):
        _bin_dense_hessp_block(np.int64(j), X, v, curv, fit_intercept, gp, bb, gp.shape[0])


@_jit()
def bin_dense_hessp_ser(X, v, curv, fit_intercept, gp, bb):
    for j in range(gp.shape[0]):
        _bin_dense_hessp_block(j, X, v, curv, fit_intercept, gp, bb, gp.shape[0])


# ---------------------------------------------------------------------------
# integer class labels -> indices into the sorted distinct labels, in three
# parallel passes over y (range, presence, lookup) instead of a sort


@_jit()
def _label_range_block(j, y, out, block):
    lo = np.int64(y[j * block])
    hi = lo
    for i in range(j * block, min(y.shape[0], (j + 1) * block)):
        v = np.int64(y[i])
        if v < lo:
            lo = v
        if v > hi:
            hi = v
    out[j, 0] = lo
    out[j, 1] = hi


@_jit(parallel=True)
def label_range_par(y, out, block):
    for j in prange(out.shape[0]):
        _label_range_block(np.int64(j), y, out, block)


@_jit()
def label_range_ser(y, out, block):
    for j in range(out.shape[0]):
        _label_range_block(j, y, out, block)


@_jit()
def _label_mark_block(j, y, lo, seen, block):
    for i in range(j * block, min(y.shape[0], (j + 1) * block)):
        seen[np.int64(y[i]) - lo] = 1  # every writer writes 1: order does not matter


@_jit(parallel=True)
def label_mark_par(y, lo, seen, partial, block):
    for j in prange(partial.shape[0]):
        _label_mark_block(np.int64(j), y, lo, seen, block)


@_jit()
def label_mark_ser(y, lo, seen, partial, block):
    for j in range(partial.shape[0]):
        _label_mark_block(j, y, lo, seen, block)


@_jit()
def _label_encode_block(j, y, lo, table, out, block):
    for i in range(j * block, min(y.shape[0], (j + 1) * block)):
        out[i] = table[np.int64(y[i]) - lo]


@_jit(parallel=True)
def label_encode_par(y, lo, table, out, partial, block):
    for j in prange(partial.shape[0]):
        _label_encode_block(np.int64(j), y, lo, table, out, block)


@_jit()
def label_encode_ser(y, lo, table, out, partial, block):
    for j in range(partial.shape[0]):
        _label_encode_block(j, y, lo, table, out, block)
