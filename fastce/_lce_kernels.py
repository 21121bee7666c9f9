"""Numba kernels of :func:`fastce.linear_cross_entropy`: the per-block work
between the BLAS products.

The wrapper (:mod:`fastce.linear_ce`) computes a block of logits
``Z = X[r0:r1] @ W[k0:k1].T`` into a preallocated buffer with BLAS; these
kernels then, row by row (``prange`` over the rows of the block):

* :func:`lce_pass1_par` adds the bias in place and updates each row's online
  log-sum-exp state ``(M, S, C)`` -- running maximum, float64 sum of
  ``exp(z - M)`` over the terms below the maximum, count of terms equal to
  it -- and picks what the loss needs (the target logit and the weighted
  logit sum of label smoothing, or the two sums of a probability target).
  With ``store`` (all classes in one block) it leaves ``exp(z - M)`` in the
  buffer, so that the gradient pass does not recompute the logits;
* :func:`lce_finish` turns the state into each row's loss and the
  coefficients of its gradient;
* :func:`lce_pass2_par` turns a block of logits (or of stored exps) in place
  into the block of the gradient with respect to the logits,
  ``scale * s_i * (T_i p_ik - w_k t'_ik)``, which the wrapper multiplies
  into the gradients of ``X`` and ``W`` with BLAS;
* :func:`col_sums_par` accumulates its column sums (the bias gradient) in
  float64.

Conventions are those of :mod:`fastce._kernels`: no validation, no
allocation of results, float64 accumulators; every row is computed by one
thread from start to end, so results do not depend on the thread count.
The numerics are those of :func:`fastce.cross_entropy`: one maximum term is
kept out of the sum, ``lse = M + log1p(S + C - 1)``, and the target's
gradient entry is computed without cancellation when the target holds the
maximum. The kernels inline the vectorisable exp and the row maximum of
:mod:`fastce._kernels`; they are compiled with ``_jit(follows=True)``, which
keys their cache on that file's contents too, so that an edit there
reaches them (this module used to carry a copy of the exp for that reason).
"""

import functools
import math

import numpy as np
from numba import prange

from . import _kernels
from ._kernels import _maxnum, _row_max, _wide_vectors, fexp_nonpos

_jit = functools.partial(_kernels._jit, follows=True)

# Rows handed to one parallel task (each gets one scratch row).
ROWS_PER_TASK = 4

# ---------------------------------------------------------------------------
# Row helpers. reduce=True only on pure reductions (see fastce._kernels).


@_jit(reduce=True)
def _dot(w, z):
    """float64 sum of w_k z_k."""
    _wide_vectors()
    s = 0.0
    for k in range(z.shape[0]):
        s += w[k] * np.float64(z[k])
    return s


@_jit(reduce=True)
def _prob_sums(w, t, z, keep, spread):
    """``(sum_k w_k t'_k, sum_k w_k t'_k z_k)`` with t' = keep t + spread, float64;
    a term with w_k t'_k == 0 adds nothing to the second sum whatever z_k."""
    _wide_vectors()
    a = 0.0
    b = 0.0
    for k in range(z.shape[0]):
        wt = w[k] * (keep * t[k] + spread)
        a += wt
        b += 0.0 if wt == 0.0 else wt * np.float64(z[k])
    return a, b


@_jit()
def _exp_into(z, m, e):
    _wide_vectors()
    for k in range(z.shape[0]):
        e[k] = fexp_nonpos(z[k] - m)


@_jit()
def _exp_inplace(z, m):
    # not _exp_into(z, m, z): LLVM's overlap check then picks its scalar loop
    _wide_vectors()
    for k in range(z.shape[0]):
        z[k] = fexp_nonpos(z[k] - m)


@_jit(reduce=True)
def _sum_off_max(e, one):
    """``(sum of the e_k != 1, number of e_k == 1)`` in float64, for
    e = exp(z - m): the terms of the maximum are counted, not summed, so that
    small terms are not lost next to them. (A term just below the maximum
    whose exp rounds to 1 is counted too: the same value either way.)
    ``one`` is 1 in e's dtype: a comparison with a float64 1.0 stays scalar."""
    _wide_vectors()
    s = 0.0
    c = 0.0
    for k in range(e.shape[0]):
        v = e[k]
        eq = v == one
        # a product with the mask, not a select of v or 0: that one stays scalar
        s += np.float64(v) * (0.0 if eq else 1.0)
        c += 1.0 if eq else 0.0
    return s, c


@_jit()
def _add_bias(z, b):
    _wide_vectors()
    for k in range(z.shape[0]):
        z[k] = z[k] + b[k]


@_jit()
def _pass1_row(z, i, r, k0, bias, has_bias, t, tp, prob, w, keep, spread, need_smooth, store, e, one, M, S, C, P1, P2):
    """Online update of row ``i`` of the block (row ``r`` of X) with the
    logits ``z`` of classes [k0, k0 + len(z))."""
    kb = z.shape[0]
    if has_bias:
        _add_bias(z, bias[k0 : k0 + kb])
    wb = w[k0 : k0 + kb]
    if prob:
        a, b = _prob_sums(wb, tp[r, k0 : k0 + kb], z, keep, spread)
        P1[i] += a
        P2[i] += b
    else:
        y = t[r] - k0
        if y >= 0 and y < kb:
            P1[i] = z[y]
        if need_smooth:
            P2[i] += _dot(wb, z)
    m_old = M[i]
    m = _maxnum(m_old, _row_max(z))
    if m > m_old and m_old > -np.inf:
        S[i] = (S[i] + C[i]) * math.exp(m_old - m)
        C[i] = 0.0
    M[i] = m
    if store:
        _exp_inplace(z, m)
        s, c = _sum_off_max(z, one)
    else:
        ex = e[:kb]
        _exp_into(z, m, ex)
        s, c = _sum_off_max(ex, one)
    S[i] += s
    C[i] += c


@_jit()
def _pass1_rows(j, Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, keep, spread, need_smooth, store, M, S, C, P1, P2):
    _wide_vectors()
    nr = Z.shape[0]
    e = np.empty(0 if store else Z.shape[1], dtype=Z.dtype)
    one = np.ones(1, dtype=Z.dtype)[0]
    for i in range(j * ROWS_PER_TASK, min(nr, (j + 1) * ROWS_PER_TASK)):
        if prob or t[r0 + i] != ignore_index:
            _pass1_row(Z[i], i, r0 + i, k0, bias, has_bias, t, tp, prob, w, keep, spread, need_smooth, store, e, one, M, S, C, P1, P2)


@_jit(parallel=True)
def lce_pass1_par(Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, keep, spread, need_smooth, store, M, S, C, P1, P2):
    """Online log-sum-exp update of the rows of the logits block ``Z`` (rows
    r0.. of X, classes k0..); the bias is added to ``Z`` in place and, with
    ``store``, ``Z`` becomes exp(Z - M)."""
    _wide_vectors()
    for j in prange((Z.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _pass1_rows(np.int64(j), Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, keep, spread, need_smooth, store, M, S, C, P1, P2)


@_jit()
def lce_pass1_ser(Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, keep, spread, need_smooth, store, M, S, C, P1, P2):
    _wide_vectors()
    for j in range((Z.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _pass1_rows(np.int64(j), Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, keep, spread, need_smooth, store, M, S, C, P1, P2)


@_jit()
def lce_finish(r0, t, ignore_index, prob, sw, sw_step, w, wsum, eps, n_classes, scale, M, S, C, P1, P2, loss, A, B):
    """Losses of the rows of a block into ``loss[r0:]`` (float64, times the
    sample weight) and their gradient coefficients: ``A[i]`` multiplies
    exp(z - M), ``B[i]`` the class weight (times t'_k for probability
    targets); ``S[i]`` becomes S + C - 1 (the sum of all terms but one
    maximum) for the target's gradient entry.

    Index target y: loss = (1-eps) w_y (M - z_y) + eps/K sum_k w_k (M - z_k) + T log1p(S + C - 1)
    with T = (1-eps) w_y + eps W / K; probability target: loss = T (M + log1p(...)) - sum_k w_k t'_k z_k
    with T = sum_k w_k t'_k.
    """
    _wide_vectors()
    nr = M.shape[0]
    for i in range(nr):
        r = r0 + i
        s_r = sw[r * sw_step]
        if not prob and t[r] == ignore_index:
            loss[r] = 0.0
            A[i] = 0.0
            B[i] = 0.0
            continue
        sp = S[i] + (C[i] - 1.0)
        lse_m = math.log1p(sp)
        m = np.float64(M[i])
        if prob:
            total = P1[i]
            value = total * (m + lse_m) - P2[i]
            B[i] = scale * s_r
        else:
            wy = w[t[r]]
            coef = (1.0 - eps) * wy
            total = coef + eps * wsum / n_classes
            value = coef * (m - P1[i]) + total * lse_m
            if eps > 0.0:
                value += eps / n_classes * (wsum * m - P2[i])
            B[i] = scale * s_r * eps / n_classes
        loss[r] = s_r * value
        A[i] = scale * s_r * total / (1.0 + sp)
        S[i] = sp


@_jit()
def _pass2_row(z, i, r, k0, bias, has_bias, t, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale_r, M, S, A, B, P1):
    _wide_vectors()
    kb = z.shape[0]
    if not stored:
        if has_bias:
            _add_bias(z, bias[k0 : k0 + kb])
        _exp_inplace(z, M[i])
    a = A[i]
    b = B[i]
    wb = w[k0 : k0 + kb]
    if prob:
        tr = tp[r, k0 : k0 + kb]
        for k in range(kb):
            z[k] = a * z[k] - b * (wb[k] * (keep * tr[k] + spread))
    else:
        for k in range(kb):
            z[k] = a * z[k] - b * wb[k]
        y = t[r] - k0
        if y >= 0 and y < kb:
            wy = w[t[r]]
            sp = S[i]
            if P1[i] == M[i]:
                # p_y - 1 = -sp / (1 + sp) exactly where the target holds the maximum
                z[y] = scale_r * (-(1.0 - eps) * wy * sp + eps / n_classes * (wsum - wy * (1.0 + sp))) / (1.0 + sp)
            else:
                z[y] = z[y] - scale_r * (1.0 - eps) * wy


@_jit()
def _pass2_rows(j, Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale, sw, sw_step, M, S, A, B, P1):
    _wide_vectors()
    nr = Z.shape[0]
    for i in range(j * ROWS_PER_TASK, min(nr, (j + 1) * ROWS_PER_TASK)):
        r = r0 + i
        if not prob and t[r] == ignore_index:
            Z[i, :] = 0.0
        else:
            scale_r = scale * sw[r * sw_step]
            _pass2_row(Z[i], i, r, k0, bias, has_bias, t, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale_r, M, S, A, B, P1)


@_jit(parallel=True)
def lce_pass2_par(Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale, sw, sw_step, M, S, A, B, P1):
    """The logits block ``Z`` (or, with ``stored``, its exp(Z - M)) becomes the
    block of the gradient with respect to the logits, in place."""
    _wide_vectors()
    for j in prange((Z.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _pass2_rows(np.int64(j), Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale, sw, sw_step, M, S, A, B, P1)


@_jit()
def lce_pass2_ser(Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale, sw, sw_step, M, S, A, B, P1):
    _wide_vectors()
    for j in range((Z.shape[0] + ROWS_PER_TASK - 1) // ROWS_PER_TASK):
        _pass2_rows(np.int64(j), Z, r0, k0, bias, has_bias, t, ignore_index, tp, prob, w, wsum, keep, spread, eps, n_classes, stored, scale, sw, sw_step, M, S, A, B, P1)


# Columns per parallel task of the column sums.
COLS_PER_TASK = 512


@_jit()
def _col_sums_span(j, G, out):
    _wide_vectors()
    c0 = j * COLS_PER_TASK
    c1 = min(G.shape[1], c0 + COLS_PER_TASK)
    acc = np.zeros(c1 - c0)
    for i in range(G.shape[0]):
        g = G[i, c0:c1]
        for k in range(c1 - c0):
            acc[k] += g[k]
    o = out[c0:c1]
    for k in range(c1 - c0):
        o[k] += acc[k]


@_jit(parallel=True)
def col_sums_par(G, out):
    """``out += G.sum(axis=0)`` accumulated in float64, rows in order."""
    _wide_vectors()
    for j in prange((G.shape[1] + COLS_PER_TASK - 1) // COLS_PER_TASK):
        _col_sums_span(np.int64(j), G, out)


@_jit()
def col_sums_ser(G, out):
    _wide_vectors()
    for j in range((G.shape[1] + COLS_PER_TASK - 1) // COLS_PER_TASK):
        _col_sums_span(np.int64(j), G, out)
