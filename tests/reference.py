"""Slow, obvious float64 NumPy oracles for the fastce losses.

Everything here is written from the textbook / torch formulas, in float64,
without any attempt at speed or cleverness.  Each function returns
``(loss, grad)`` where ``loss`` is the reduced loss (or the per-element
losses for ``reduction="none"``) and ``grad`` is the gradient of the returned
loss (of its sum for ``"none"``) with respect to ``input``.

Conventions follow torch.nn.functional (see /work/notes/API_SPEC.md).
"""

import numpy as np


def _reduce(per_elem, grad, reduction, denom):
    if reduction == "none":
        return per_elem, grad
    total = per_elem.sum()
    if reduction == "sum":
        return total, grad
    if reduction == "mean":
        with np.errstate(invalid="ignore", divide="ignore"):
            loss = total / denom
        # torch: all-ignored mean -> nan loss but zero gradient
        scale = 1.0 / denom if denom != 0 else 0.0
        return loss, grad * scale
    raise ValueError(reduction)


def _to_rows(x):
    """(C,) -> (1, C); (N, C, d1..dk) -> (N*d1*..*dk, C).  Returns rows and inverse."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x[None, :], lambda r: r.reshape(x.shape)
    moved = np.moveaxis(x, 1, -1)
    rows = moved.reshape(-1, x.shape[1])
    return rows, lambda r: np.moveaxis(r.reshape(moved.shape), -1, 1)


def log_softmax_rows(z):
    """Row-wise log-softmax of a 2-D float64 array; -inf entries act as masks."""
    m = np.max(z, axis=1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    with np.errstate(invalid="ignore", over="ignore"):
        return z - m - np.log(np.sum(np.exp(z - m), axis=1, keepdims=True))


def cross_entropy(input, target, weight=None, ignore_index=-100,
                  reduction="mean", label_smoothing=0.0):
    x, back = _to_rows(input)
    n, c = x.shape
    w = np.ones(c) if weight is None else np.asarray(weight, dtype=np.float64)
    eps = float(label_smoothing)
    logp = log_softmax_rows(x)
    p = np.exp(logp)
    target = np.asarray(target)

    if target.shape == np.shape(input) and np.issubdtype(target.dtype, np.floating):
        # probability targets: q' = (1 - eps) q + eps / C ; loss = -sum_c w_c q'_c logp_c
        q, _ = _to_rows(target)
        q = q * (1.0 - eps) + eps / c
        wq = w[None, :] * q
        with np.errstate(invalid="ignore"):
            terms = np.where(wq == 0, 0.0, wq * logp)  # 0 * -inf -> 0 (spec deviation)
        per_row = -terms.sum(axis=1)
        grad = p * wq.sum(axis=1, keepdims=True) - wq
        denom = n
    else:
        t = target.reshape(-1).astype(np.int64)
        keep = t != ignore_index
        tt = np.where(keep, t, 0)
        onehot = np.zeros((n, c))
        onehot[np.arange(n), tt] = 1.0
        wt = w[tt] * keep
        nll = -wt * logp[np.arange(n), tt]
        with np.errstate(invalid="ignore"):
            smooth = np.where(keep, -(w[None, :] * logp).sum(axis=1), 0.0)
        g_nll = wt[:, None] * (p - onehot)
        g_smooth = keep[:, None] * (p * w.sum() - w[None, :])
        if eps == 0.0:  # no smoothing term at all (it may be inf with -inf logits)
            per_row, grad = nll, g_nll
        else:
            per_row = (1.0 - eps) * nll + eps / c * smooth
            grad = (1.0 - eps) * g_nll + eps / c * g_smooth
        denom = wt.sum()

    per_elem = per_row.reshape(np.shape(input)[:1] + np.shape(input)[2:]) \
        if np.ndim(input) > 1 else per_row.reshape(())
    return _reduce(per_elem, back(grad), reduction, denom)


def binary_cross_entropy(input, target, weight=None, reduction="mean"):
    p = np.asarray(input, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = np.ones_like(p) if weight is None else np.broadcast_to(
        np.asarray(weight, dtype=np.float64), p.shape)
    with np.errstate(divide="ignore"):
        logp = np.maximum(np.log(p), -100.0)
        log1mp = np.maximum(np.log(1.0 - p), -100.0)
    per_elem = -w * (y * logp + (1.0 - y) * log1mp)
    grad = w * (p - y) / np.maximum(p * (1.0 - p), 1e-12)  # torch backward formula
    return _reduce(per_elem, grad, reduction, p.size)


def log_sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    return np.minimum(z, 0.0) - np.log1p(np.exp(-np.abs(z)))


def sigmoid(z):
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def binary_cross_entropy_with_logits(input, target, weight=None, reduction="mean",
                                     pos_weight=None):
    z = np.asarray(input, dtype=np.float64)
    y = np.asarray(target, dtype=np.float64)
    w = 1.0 if weight is None else np.asarray(weight, dtype=np.float64)
    pw = 1.0 if pos_weight is None else np.asarray(pos_weight, dtype=np.float64)
    # loss = -w [pw y log s(z) + (1 - y) log(1 - s(z))],  log(1 - s(z)) = log s(-z)
    per_elem = -w * (pw * y * log_sigmoid(z) + (1.0 - y) * log_sigmoid(-z))
    grad = w * ((pw * y + 1.0 - y) * sigmoid(z) - pw * y)
    per_elem = np.broadcast_to(per_elem, z.shape).copy()
    grad = np.broadcast_to(grad, z.shape).copy()
    return _reduce(per_elem, grad, reduction, z.size)


def finite_difference_grad(f, x, h=1e-6):
    """Central finite differences of the scalar function ``f`` at float64 array ``x``."""
    x = np.array(x, dtype=np.float64)
    g = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        fp = float(np.sum(f(x.copy())))
        x[i] = old - h
        fm = float(np.sum(f(x.copy())))
        x[i] = old
        g[i] = (fp - fm) / (2.0 * h)
    return g
