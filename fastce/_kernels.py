"""Numba kernels. No validation, no allocation of results: the wrappers in
:mod:`fastce.special` and :mod:`fastce.losses` check and convert the inputs,
allocate every output and pick the serial or the parallel variant.

Conventions
-----------
* Arrays arrive C-contiguous, float32 or float64; integer targets as intp;
  class weights as float64.
* All arithmetic is done on float64 scalars; results are stored in the dtype
  of the output arrays. Sums over rows go through per-block float64 partial
  sums (``partial``) whose block size does not depend on the thread count, so
  the serial and the parallel variant give bitwise identical results.
* Every kernel exists twice, ``*_par`` (``prange`` over blocks or rows, for
  ``parallel=True``) and ``*_ser``, sharing the same per-row/per-block helper.
  The serial twin is what runs for small inputs, for ``n_threads=1`` and when
  the threading layer cannot take a concurrent parallel call.
* All helpers live in this one module: Numba's cache is keyed on the file of
  the kernel, so editing a helper here invalidates every cached kernel.
"""

import math

import numba
import numpy as np
from numba import prange

from ._config import cache_enabled

# Fast-math flags that keep NaN and inf meaningful (no "nnan"/"ninf": -inf
# logits are masks and NaN must propagate) and keep the order of operations
# (no "reassoc": it turns (x - m) - lse into x - (m + lse) and loses the
# small terms that the max-shift and log1p were written to keep).
FASTMATH = frozenset({"nsz", "arcp", "contract"})

_cache = cache_enabled()


def _jit(parallel=False):
    """``numba.njit`` with fastce's options, caching when a cache folder is usable."""
    opts = dict(nogil=True, error_model="numpy", fastmath=set(FASTMATH), parallel=parallel)

    def decorate(fn):
        global _cache
        if _cache:
            try:
                return numba.njit(cache=True, **opts)(fn)
            except RuntimeError:
                # "cannot cache function ...: no locator available": neither the
                # package folder nor the user cache folder is writable and
                # NUMBA_CACHE_DIR is unset. Compile in memory instead.
                _cache = False
        return numba.njit(**opts)(fn)

    return decorate


# ---------------------------------------------------------------------------
# scalar and row helpers


@_jit()
def _row_max(x):
    """Largest element of a row and the index of its first occurrence.

    NaN is skipped; a row of NaN and -inf gives ``(-inf, -1)``.
    """
    m = -np.inf
    km = -1
    for k in range(x.shape[0]):
        v = x[k]
        if v > m:
            m = v
            km = k
    return m, km


@_jit()
def _row_exp_store(x, m, km, e):
    """Store exp(x - m) into ``e`` and return the sum of all terms but ``km``."""
    s = 0.0
    for k in range(x.shape[0]):
        v = math.exp(x[k] - m)
        e[k] = v
        if k != km:
            s += v
    return s


@_jit()
def _row_exp_sum(x, m, km):
    """Sum of exp(x - m) over all terms but ``km``."""
    s = 0.0
    for k in range(x.shape[0]):
        if k != km:
            s += math.exp(x[k] - m)
    return s


@_jit()
def _expit(z):
    if z >= 0.0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


@_jit()
def _log_expit(z):
    if z < 0.0:
        return z - math.log1p(math.exp(z))
    return -math.log1p(math.exp(-z))


# ---------------------------------------------------------------------------
# softmax, log_softmax, logsumexp over the last axis of a 2-D array


@_jit()
def _softmax_row(x, out):
    m, km = _row_max(x)
    if km < 0 or m == np.inf:
        # SciPy: exp(x - max) / sum is NaN everywhere once the max is not finite.
        for k in range(x.shape[0]):
            out[k] = np.nan
        return
    inv = 1.0 / (1.0 + _row_exp_store(x, m, km, out))
    for k in range(x.shape[0]):
        out[k] = out[k] * inv


@_jit()
def _log_softmax_row(x, out):
    m, km = _row_max(x)
    if km < 0 or m == np.inf:
        # SciPy shifts by 0 when the max is not finite: x - log(sum(exp(x))).
        s = 0.0
        for k in range(x.shape[0]):
            s += math.exp(x[k])
        lse = math.log(s)
        for k in range(x.shape[0]):
            out[k] = x[k] - lse
        return
    lse = math.log1p(_row_exp_sum(x, m, km))
    for k in range(x.shape[0]):
        out[k] = (x[k] - m) - lse


@_jit()
def _sign(v):
    if v > 0.0:
        return 1.0
    if v < 0.0:
        return -1.0
    if v == 0.0:
        return 0.0
    return np.nan


@_jit()
def _lse_direct(x, b, has_b, return_sign):
    """log(sum(b * exp(x))) without shifting: SciPy's answer for the edge cases."""
    s = 0.0
    for k in range(x.shape[0]):
        v = math.exp(x[k])
        s += b[k] * v if has_b else v
    if return_sign:
        return math.log(abs(s)), _sign(s)
    return (math.log(s) if s >= 0.0 else np.nan), _sign(s)


@_jit()
def _lse_row(x, b, has_b, return_sign):
    """SciPy 1.15+'s logsumexp of one row: the max term is kept out of the sum
    (log1p of the rest) for precision; non-finite results fall back to the
    direct formula, exactly as ``scipy.special.logsumexp`` does."""
    n = x.shape[0]
    m = -np.inf
    has_nan = False
    for k in range(n):
        if has_b and b[k] == 0.0:
            continue
        v = x[k]
        if v != v:
            has_nan = True
        elif v > m:
            m = v
    if not has_nan and abs(m) < np.inf:
        big = 0.0  # sum of the weights of the max terms
        s = 0.0
        for k in range(n):
            bk = b[k] if has_b else 1.0
            if bk == 0.0:
                continue
            v = x[k]
            if v == m:
                big += bk
            else:
                s += bk * math.exp(v - m)
        if s != 0.0:
            s = s / big
        sgn = _sign(s + 1.0) * _sign(big)
        if s < -1.0:
            s = -s - 2.0
        out = math.log1p(s) + math.log(abs(big)) + m
        if not return_sign and sgn < 0.0:
            out = np.nan
        if abs(out) < np.inf:
            return out, sgn
    return _lse_direct(x, b, has_b, return_sign)


@_jit(parallel=True)
def softmax_par(x, out):
    for i in prange(x.shape[0]):
        _softmax_row(x[i], out[i])


@_jit()
def softmax_ser(x, out):
    for i in range(x.shape[0]):
        _softmax_row(x[i], out[i])


@_jit(parallel=True)
def log_softmax_par(x, out):
    for i in prange(x.shape[0]):
        _log_softmax_row(x[i], out[i])


@_jit()
def log_softmax_ser(x, out):
    for i in range(x.shape[0]):
        _log_softmax_row(x[i], out[i])


@_jit(parallel=True)
def logsumexp_par(x, b, b_step, return_sign, out, sgn):
    for i in prange(x.shape[0]):
        out[i], sgn[i] = _lse_row(x[i], b[i * b_step], b_step == 1, return_sign)


@_jit()
def logsumexp_ser(x, b, b_step, return_sign, out, sgn):
    for i in range(x.shape[0]):
        out[i], sgn[i] = _lse_row(x[i], b[i * b_step], b_step == 1, return_sign)


# ---------------------------------------------------------------------------
# elementwise sigmoid / log-sigmoid on flat arrays, in blocks


@_jit()
def _sigmoid_block(j, x, out, log, block):
    stop = min(x.shape[0], (j + 1) * block)
    if log:
        for i in range(j * block, stop):
            out[i] = _log_expit(x[i])
    else:
        for i in range(j * block, stop):
            out[i] = _expit(x[i])


@_jit(parallel=True)
def sigmoid_par(x, out, log, block):
    for j in prange((x.shape[0] + block - 1) // block):
        _sigmoid_block(j, x, out, log, block)


@_jit()
def sigmoid_ser(x, out, log, block):
    for j in range((x.shape[0] + block - 1) // block):
        _sigmoid_block(j, x, out, log, block)


# ---------------------------------------------------------------------------
# cross-entropy over (N, C, S) logits: class axis in the middle, S = d1*...*dk
# (S = 1 for the usual (N, C) input). A "row" r = n * S + s is x[n, :, s].


@_jit()
def index_target_stats(t, ignore_index, n_classes, w, sw, sw_step):
    """One pass over class-index targets before the loss kernel.

    Returns ``(position of the first invalid target or -1, number of
    non-ignored targets, sum over them of class weight x sample weight in
    float64)``.
    """
    bad = -1
    count = 0
    wsum = 0.0
    for i in range(t.shape[0]):
        y = t[i]
        if y == ignore_index:
            continue
        if y < 0 or y >= n_classes:
            if bad < 0:
                bad = i
            continue
        count += 1
        wsum += w[y] * sw[i * sw_step]
    return bad, count, wsum


@_jit()
def _ce_index_row(x, y, w, wsum, eps, scale, g, need_grad):
    """Loss of one row with class-index target ``y`` (PyTorch's formula with
    label smoothing ``eps`` and class weights ``w``), and ``scale`` times its
    gradient written into ``g`` when ``need_grad``.

    loss = (1 - eps) w_y (lse - x_y) + eps / C * sum_k w_k (lse - x_k)
    grad_k = [(1 - eps) w_y + eps W / C] p_k - (1 - eps) w_y [k == y] - eps / C w_k
    """
    n = x.shape[0]
    m, km = _row_max(x)
    if need_grad:
        s = _row_exp_store(x, m, km, g)
    else:
        s = _row_exp_sum(x, m, km)
    lse_m = math.log1p(s)  # lse - m
    wy = w[y]
    coef = (1.0 - eps) * wy
    loss = coef * (m - x[y])
    if eps > 0.0:
        smooth = 0.0
        for k in range(n):
            smooth += w[k] * (m - x[k])
        loss += eps / n * smooth
        coef += eps * wsum / n
    loss += coef * lse_m
    if need_grad:
        a = scale * coef / (1.0 + s)
        if eps > 0.0:
            c = scale * eps / n
            for k in range(n):
                g[k] = a * g[k] - c * w[k]
        else:
            for k in range(n):
                g[k] = a * g[k]
        if y == km:
            # p_y - 1 = -s / (1 + s) exactly: no cancellation when p_y -> 1.
            g[y] = scale * (-(1.0 - eps) * wy * s + eps / n * (wsum - wy * (1.0 + s))) / (1.0 + s)
        else:
            g[y] -= scale * (1.0 - eps) * wy
    return loss


@_jit()
def _ce_prob_row(x, t, w, eps, scale, g, need_grad):
    """Loss of one row with class-probability target ``t`` smoothed to
    t' = (1 - eps) t + eps / C: sum_k w_k t'_k (lse - x_k); gradient
    p_k sum_j w_j t'_j - w_k t'_k. A term with w_k t'_k == 0 adds nothing,
    even where x_k = -inf (a masked class)."""
    n = x.shape[0]
    m, km = _row_max(x)
    if need_grad:
        s = _row_exp_store(x, m, km, g)
    else:
        s = _row_exp_sum(x, m, km)
    lse_m = math.log1p(s)
    keep = 1.0 - eps
    spread = eps / n
    total = 0.0  # sum_k w_k t'_k
    loss = 0.0
    for k in range(n):
        wt = w[k] * (keep * t[k] + spread)
        if wt != 0.0:
            loss += wt * (m - x[k])
            total += wt
    loss += total * lse_m
    if need_grad:
        a = scale * total / (1.0 + s)
        for k in range(n):
            g[k] = a * g[k] - scale * w[k] * (keep * t[k] + spread)
    return loss


@_jit()
def _ce_index_block(j, x, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad, block):
    n_rows = x.shape[0] * x.shape[2]
    width = x.shape[2]
    acc = 0.0
    for r in range(j * block, min(n_rows, (j + 1) * block)):
        n = r // width
        s = r - n * width
        y = t[r]
        if y == ignore_index:
            loss = 0.0
            if need_grad:
                for k in range(x.shape[1]):
                    grad[n, k, s] = 0.0
        else:
            g = grad[n, :, s] if need_grad else grad[0, :, 0]
            sr = sw[r * sw_step]
            loss = sr * _ce_index_row(x[n, :, s], y, w, wsum, eps, scale * sr, g, need_grad)
        if need_rows:
            loss_rows[r] = loss
        acc += loss
    return acc


@_jit(parallel=True)
def ce_index_par(x, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in prange(partial.shape[0]):
        partial[j] = _ce_index_block(
            j, x, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad, block
        )


@_jit()
def ce_index_ser(x, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in range(partial.shape[0]):
        partial[j] = _ce_index_block(
            j, x, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad, block
        )


@_jit()
def _ce_prob_block(j, x, t, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad, block):
    n_rows = x.shape[0] * x.shape[2]
    width = x.shape[2]
    acc = 0.0
    for r in range(j * block, min(n_rows, (j + 1) * block)):
        n = r // width
        s = r - n * width
        g = grad[n, :, s] if need_grad else grad[0, :, 0]
        sr = sw[r * sw_step]
        loss = sr * _ce_prob_row(x[n, :, s], t[n, :, s], w, eps, scale * sr, g, need_grad)
        if need_rows:
            loss_rows[r] = loss
        acc += loss
    return acc


@_jit(parallel=True)
def ce_prob_par(x, t, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in prange(partial.shape[0]):
        partial[j] = _ce_prob_block(j, x, t, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad, block)


@_jit()
def ce_prob_ser(x, t, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad, partial, block):
    for j in range(partial.shape[0]):
        partial[j] = _ce_prob_block(j, x, t, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad, block)


# ---------------------------------------------------------------------------
# binary cross-entropy, elementwise over (R, L) with broadcast weights of
# shape (1 or R, 1 or L)


@_jit()
def _bce_logits_elem(z, y, w, pw, scale, need_grad):
    """PyTorch's binary_cross_entropy_with_logits for one element, in the
    branching form that has no cancellation: with sp = log1p(exp(-|z|)),
    -log sigmoid(z) = sp + max(-z, 0) and -log sigmoid(-z) = sp + max(z, 0), so
    loss = w [pw y (sp + max(-z, 0)) + (1 - y) (sp + max(z, 0))] and
    grad = scale w [(1 - y) sigmoid(z) - pw y sigmoid(-z)]."""
    e = math.exp(-abs(z))
    sp = math.log1p(e)
    loss = w * (pw * y * (sp + max(-z, 0.0)) + (1.0 - y) * (sp + max(z, 0.0)))
    grad = 0.0
    if need_grad:
        inv = 1.0 / (1.0 + e)
        if z >= 0.0:
            sig_pos, sig_neg = inv, e * inv
        else:
            sig_pos, sig_neg = e * inv, inv
        grad = scale * w * ((1.0 - y) * sig_pos - pw * y * sig_neg)
    return loss, grad


@_jit()
def _bce_prob_elem(p, y, w, scale, need_grad):
    """PyTorch's binary_cross_entropy for one element (logs clamped at -100)
    and its backward formula w (p - y) / max(p (1 - p), 1e-12)."""
    lp = max(math.log(p), -100.0)
    l1p = max(math.log1p(-p), -100.0)
    loss = w * ((y - 1.0) * l1p - y * lp)
    grad = 0.0
    if need_grad:
        grad = scale * w * (p - y) / max((1.0 - p) * p, 1e-12)
    return loss, grad


@_jit()
def _bce_block(j, logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, bad, rows_per_block):
    n_rows, width = x.shape
    wr = 1 if w.shape[0] > 1 else 0
    wc = 1 if w.shape[1] > 1 else 0
    pr = 1 if pw.shape[0] > 1 else 0
    pc = 1 if pw.shape[1] > 1 else 0
    acc = 0.0
    n_bad = 0
    for i in range(j * rows_per_block, min(n_rows, (j + 1) * rows_per_block)):
        for k in range(width):
            v = x[i, k]
            wk = w[i * wr, k * wc]
            if logits:
                loss, gk = _bce_logits_elem(v, y[i, k], wk, pw[i * pr, k * pc], scale, need_grad)
            else:
                if not (v >= 0.0 and v <= 1.0):
                    n_bad += 1
                loss, gk = _bce_prob_elem(v, y[i, k], wk, scale, need_grad)
            if need_grad:
                grad[i, k] = gk
            if need_el:
                loss_el[i, k] = loss
            acc += loss
    bad[j] = n_bad
    return acc


@_jit(parallel=True)
def bce_par(logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, partial, bad, rows_per_block):
    for j in prange(partial.shape[0]):
        partial[j] = _bce_block(j, logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, bad, rows_per_block)


@_jit()
def bce_ser(logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, partial, bad, rows_per_block):
    for j in range(partial.shape[0]):
        partial[j] = _bce_block(j, logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, bad, rows_per_block)
