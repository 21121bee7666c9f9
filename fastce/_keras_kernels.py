"""Numba kernels of :mod:`fastce.keras`: Keras 3's cross-entropies where they
differ from PyTorch's (probability inputs clipped at ``epsilon``, the mean of
the binary cross-entropy over an axis, label smoothing spread over the last
axis). Where the math is PyTorch's, :mod:`fastce.keras` calls the core
kernels through :func:`fastce.cross_entropy` instead.

Conventions are those of :mod:`fastce._kernels`:

* No validation, no allocation of results: :mod:`fastce.keras` checks and
  converts the inputs, allocates every output and picks the variant.
* Inputs are C-contiguous float32 or float64 viewed as ``(A, C, B)`` with the
  reduced axis (classes, or the axis BCE averages over) in the middle: a
  "row" ``r = a * B + b`` is ``x[a, :, b]``, and row-sized arrays (labels,
  row weights, per-row losses) are flat in that order.
* Arithmetic on float64 scalars; sums over rows go through per-block float64
  partial sums whose block size does not depend on the thread count, so the
  serial and the parallel twin give bitwise identical results.
* Row weights ``sw`` are float64 with stride ``sw_step`` (0: one weight for
  all rows). A row's loss is multiplied by its weight; its gradient by
  ``scale`` times its weight (``scale`` is 1 or 1 / the reduction's divisor).
* The binary cross-entropy on probabilities takes the vectorisable ``flog``
  and ``flog1p`` of :mod:`fastce._kernels`. Numba's cache is keyed on the
  file of a kernel, not on the files of the helpers it inlines, so every
  kernel here is compiled with ``_jit(follows=True)``, which keys its cache
  on :mod:`fastce._kernels`'s contents too.
"""

import functools
import math

import numpy as np
from numba import prange

from . import _kernels
from ._kernels import flog, flog1p

_jit = functools.partial(_kernels._jit, follows=True)

# ---------------------------------------------------------------------------
# scalar helpers


@_jit()
def _clip(q, lo, hi):
    """``torch.clip(q, lo, hi)``: NaN passes through."""
    if q < lo:
        return lo
    if q > hi:
        return hi
    return q


@_jit()
def _inside(q, lo, hi):
    """1.0 where ``torch.clip``'s backward lets the gradient through (``lo <= q <= hi``), else 0.0."""
    return 1.0 if (q >= lo and q <= hi) else 0.0


@_jit()
def _normalised(v, s, round32):
    """Keras's ``y_pred / sum(y_pred)`` for one element, rounded to float32
    when the loss runs in float32 (so that it is compared with the clipping
    bounds in the same precision as Keras does)."""
    q = v / s
    if round32:
        q = np.float64(np.float32(q))
    return q


@_jit()
def _row_sum(x, a, b):
    s = 0.0
    for k in range(x.shape[1]):
        s += x[a, k, b]
    return s


# ---------------------------------------------------------------------------
# binary cross-entropy, averaged over the middle axis


@_jit()
def _bce_logits_elem(z, y, need_grad):
    """torch's binary_cross_entropy_with_logits in the branching form that
    never overflows: with sp = log1p(exp(-|z|)),
    loss = y (sp + max(-z, 0)) + (1 - y) (sp + max(z, 0)),
    grad = (1 - y) sigmoid(z) - y sigmoid(-z)."""
    e = math.exp(-abs(z))
    sp = math.log1p(e)
    loss = y * (sp + max(-z, 0.0)) + (1.0 - y) * (sp + max(z, 0.0))
    grad = 0.0
    if need_grad:
        inv = 1.0 / (1.0 + e)
        if z >= 0.0:
            sig_pos, sig_neg = inv, e * inv
        else:
            sig_pos, sig_neg = e * inv, inv
        grad = (1.0 - y) * sig_pos - y * sig_neg
    return loss, grad


@_jit()
def _bce_prob_elem(p, y, lo, hi, need_grad):
    """Keras: c = clip(p, lo, hi), then torch's binary_cross_entropy
    -(y max(log c, -100) + (1 - y) max(log(1 - c), -100)); its backward
    (c - y) / max(c (1 - c), 1e-12), let through by clip only where lo <= p <= hi."""
    c = _clip(p, lo, hi)
    # a term whose target weight is 0 is skipped (one log instead of two for
    # hard labels); NaN in p still propagates through the other term
    loss = 0.0
    if y != 0.0:
        loss -= y * max(math.log(c), -100.0)
    if y != 1.0:
        loss -= (1.0 - y) * max(math.log1p(-c), -100.0)
    grad = 0.0
    if need_grad:
        grad = _inside(p, lo, hi) * (c - y) / max((1.0 - c) * c, 1e-12)
    return loss, grad


# Elements per chunk of the vectorised loop of the binary cross-entropy on
# probabilities: its losses go to a buffer of this size, then to a float64 sum.
BCE_CHUNK = 1024


@_jit()
def _bce_prob_chunk(xf, yf, k0, m, keep, half, lo, hi, gs, need_grad, gf, buf):
    """:func:`_bce_prob_elem` on the ``m`` elements from ``k0`` of the flat
    inputs: losses into ``buf``, gradients times ``gs`` into ``gf``. Its
    formulas are written out here without branches (the skipped terms are
    selects) and with flog / flog1p instead of libm's, so that LLVM
    vectorises the loop: calling a branch-free _bce_prob_elem from it left
    the loop scalar (40,000 x 100 float32, one thread: 86 ms against 24)."""
    _kernels._wide_vectors()
    for i in range(m):
        p = np.float64(xf[k0 + i])
        yk = keep * np.float64(yf[k0 + i]) + half
        c = _clip(p, lo, hi)
        log_c = max(flog(c), -100.0)
        log_1c = max(flog1p(-c), -100.0)
        buf[i] = -(yk * log_c if yk != 0.0 else 0.0) - ((1.0 - yk) * log_1c if yk != 1.0 else 0.0)
        if need_grad:
            gf[k0 + i] = gs * (_inside(p, lo, hi) * (c - yk) / max((1.0 - c) * c, 1e-12))


@_jit()
def _bce_prob_rows(j, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block):
    """:func:`_bce_block` on probabilities for rows of contiguous elements
    (x of shape (A, C, 1)), by chunks of BCE_CHUNK elements."""
    n_rows = x.shape[0]
    n = x.shape[1]
    inv_n = 1.0 / n
    xf = x.reshape(x.size)
    yf = y.reshape(y.size)
    gf = grad.reshape(grad.size)
    buf = np.empty(min(n, BCE_CHUNK))
    acc = 0.0
    for r in range(j * block, min(n_rows, (j + 1) * block)):
        sr = sw[r * sw_step]
        gs = scale * sr * inv_n
        total = 0.0
        for k0 in range(r * n, (r + 1) * n, BCE_CHUNK):
            m = min(BCE_CHUNK, (r + 1) * n - k0)
            _bce_prob_chunk(xf, yf, k0, m, keep, half, lo, hi, gs, need_grad, gf, buf)
            total += _kernels._sum(buf[:m])
        loss = sr * (total * inv_n)
        if need_rows:
            loss_rows[r] = loss
        acc += loss
    return acc


@_jit()
def _bce_block(j, logits, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block):
    if not logits and x.shape[2] == 1:
        return _bce_prob_rows(j, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block)
    n_rows = x.shape[0] * x.shape[2]
    width = x.shape[2]
    n = x.shape[1]
    inv_n = 1.0 / n
    acc = 0.0
    for r in range(j * block, min(n_rows, (j + 1) * block)):
        a = r // width
        b = r - a * width
        sr = sw[r * sw_step]
        gs = scale * sr * inv_n
        total = 0.0
        for k in range(n):
            yk = keep * y[a, k, b] + half
            if logits:
                loss, gk = _bce_logits_elem(x[a, k, b], yk, need_grad)
            else:
                loss, gk = _bce_prob_elem(x[a, k, b], yk, lo, hi, need_grad)
            total += loss
            if need_grad:
                grad[a, k, b] = gs * gk
        loss = sr * (total * inv_n)
        if need_rows:
            loss_rows[r] = loss
        acc += loss
    return acc


@_jit(parallel=True)
def bce_par(logits, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in prange(partial.shape[0]):
        partial[j] = _bce_block(
            np.int64(j), logits, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block
        )


@_jit()
def bce_ser(logits, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in range(partial.shape[0]):
        partial[j] = _bce_block(
            j, logits, x, y, keep, half, lo, hi, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block
        )


# ---------------------------------------------------------------------------
# categorical cross-entropy with probability targets t' = keep * t + spread


@_jit()
def _cce_prob_row(x, t, a, b, keep, spread, lo, hi, round32, gs, grad, need_grad):
    """Keras on probabilities: q = y_pred / sum(y_pred), c = clip(q, lo, hi),
    loss = -sum_k t'_k log c_k. With S the row sum, i_k = [lo <= q_k <= hi]
    and A = sum_k i_k t'_k q_k / c_k = sum_k i_k t'_k (c_k = q_k where unclipped),
    the gradient is grad_j = (A - i_j t'_j / c_j) / S. Pass 1 sums the row,
    pass 2 the loss and A (storing -i_j t'_j / c_j in ``grad``), pass 3
    finishes the gradient."""
    n = x.shape[1]
    s = _row_sum(x, a, b)
    loss = 0.0
    big_a = 0.0
    for k in range(n):
        q = _normalised(x[a, k, b], s, round32)
        c = _clip(q, lo, hi)
        tk = keep * t[a, k, b] + spread
        if tk != 0.0:  # one log per row for one-hot targets without smoothing
            loss -= tk * math.log(c)
        if need_grad:
            ik = _inside(q, lo, hi)
            big_a += ik * tk
            grad[a, k, b] = -ik * tk / c
    if need_grad:
        g = gs / s
        for k in range(n):
            grad[a, k, b] = g * (big_a + grad[a, k, b])
    return loss


@_jit()
def _row_max(x, a, b):
    """Largest element of a row and the index of its first occurrence (NaN skipped)."""
    m = -np.inf
    km = -1
    for k in range(x.shape[1]):
        v = x[a, k, b]
        if v > m:
            m = v
            km = k
    return m, km


@_jit()
def _cce_logits_row(x, t, a, b, keep, spread, gs, grad, need_grad):
    """Softmax cross-entropy with probability targets t'_k = keep t_k + spread:
    loss = sum_k t'_k (lse - x_k), grad_k = p_k sum_j t'_j - t'_k. As in the
    core kernel, a term with t'_k == 0 adds nothing, even where x_k = -inf.
    Only used when Keras's spread is not label_smoothing / C (see
    :mod:`fastce.keras`); otherwise the core kernel runs."""
    n = x.shape[1]
    m, km = _row_max(x, a, b)
    s = 0.0
    for k in range(n):
        if k != km:
            v = math.exp(x[a, k, b] - m)
            s += v
            if need_grad:
                grad[a, k, b] = v
        elif need_grad:
            grad[a, k, b] = 1.0
    lse_m = math.log1p(s)
    total = 0.0
    loss = 0.0
    for k in range(n):
        tk = keep * t[a, k, b] + spread
        if tk != 0.0:
            loss += tk * (m - x[a, k, b])
            total += tk
    loss += total * lse_m
    if need_grad:
        c = gs * total / (1.0 + s)
        for k in range(n):
            grad[a, k, b] = c * grad[a, k, b] - gs * (keep * t[a, k, b] + spread)
    return loss


@_jit()
def _cce_block(j, logits, x, t, keep, spread, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block):
    n_rows = x.shape[0] * x.shape[2]
    width = x.shape[2]
    acc = 0.0
    for r in range(j * block, min(n_rows, (j + 1) * block)):
        a = r // width
        b = r - a * width
        sr = sw[r * sw_step]
        if logits:
            loss = _cce_logits_row(x, t, a, b, keep, spread, scale * sr, grad, need_grad)
        else:
            loss = _cce_prob_row(x, t, a, b, keep, spread, lo, hi, round32, scale * sr, grad, need_grad)
        loss *= sr
        if need_rows:
            loss_rows[r] = loss
        acc += loss
    return acc


@_jit(parallel=True)
def cce_par(logits, x, t, keep, spread, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in prange(partial.shape[0]):
        partial[j] = _cce_block(
            np.int64(j), logits, x, t, keep, spread, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows,
            grad, block,
        )  # fmt: skip


@_jit()
def cce_ser(logits, x, t, keep, spread, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in range(partial.shape[0]):
        partial[j] = _cce_block(
            j, logits, x, t, keep, spread, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows,
            grad, block,
        )  # fmt: skip


# ---------------------------------------------------------------------------
# sparse categorical cross-entropy on probabilities, class-index targets


@_jit()
def _scce_prob_row(x, y, a, b, lo, hi, round32, gs, grad, need_grad):
    """Keras on probabilities: loss = -log c_y with c = clip(y_pred / S, lo, hi);
    grad_j = i_y (q_y - [j == y]) / (c_y S), zero when q_y is clipped."""
    n = x.shape[1]
    s = _row_sum(x, a, b)
    q = _normalised(x[a, y, b], s, round32)
    c = _clip(q, lo, hi)
    if need_grad:
        g = gs * _inside(q, lo, hi) / (c * s)
        for k in range(n):
            grad[a, k, b] = g * q
        grad[a, y, b] = g * (q - 1.0)
    return -math.log(c)


@_jit()
def _scce_block(j, x, t, ignore, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block):
    n_rows = x.shape[0] * x.shape[2]
    width = x.shape[2]
    acc = 0.0
    for r in range(j * block, min(n_rows, (j + 1) * block)):
        a = r // width
        b = r - a * width
        y = t[r]
        if y == ignore:
            loss = 0.0
            if need_grad:
                for k in range(x.shape[1]):
                    grad[a, k, b] = 0.0
        else:
            sr = sw[r * sw_step]
            loss = sr * _scce_prob_row(x, y, a, b, lo, hi, round32, scale * sr, grad, need_grad)
        if need_rows:
            loss_rows[r] = loss
        acc += loss
    return acc


@_jit(parallel=True)
def scce_prob_par(x, t, ignore, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in prange(partial.shape[0]):
        partial[j] = _scce_block(
            np.int64(j), x, t, ignore, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block
        )


@_jit()
def scce_prob_ser(x, t, ignore, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in range(partial.shape[0]):
        partial[j] = _scce_block(
            j, x, t, ignore, lo, hi, round32, sw, sw_step, scale, need_grad, loss_rows, need_rows, grad, block
        )
