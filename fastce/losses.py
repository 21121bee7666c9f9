"""Cross-entropy losses with PyTorch's semantics, loss and gradient in one pass.

The functions take the arguments of their :mod:`torch.nn.functional`
namesakes, in the same order and with the same defaults, on NumPy arrays.
Keyword-only arguments are added (and ``sample_weight`` to
:func:`cross_entropy`, see its docstring):

``return_grad`` (default ``False``)
    Also return the gradient of the returned loss with respect to `input`
    (for ``reduction="none"``, of the sum of the returned losses), computed
    in the same pass over the data as the loss.
``n_threads`` (default ``None``)
    Threads to use: ``None`` for Numba's current setting (all cores unless
    :func:`numba.set_num_threads` said otherwise), a positive count, or a
    negative count from the top as in joblib (``-1`` = all cores). Results do
    not depend on it: sums are blocked deterministically.
"""

import math

import numpy as np

from . import _kernels as K
from ._config import run_kernel
from ._validation import (
    as_real_array,
    broadcast_2d,
    check_flag,
    check_index,
    check_label_smoothing,
    check_probability_target,
    check_reduction,
    class_index_target,
    loss_input,
    row_weights,
)
from .dask import _is_dask_collection

__all__ = ["cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits"]

# Rows per block of the cross-entropy kernels is chosen from the number of
# classes only (never from the thread count), so results are reproducible.
_CE_BLOCK_ELEMENTS = 1 << 16


def _reduce(total, denominator, reduction, out_dtype):
    """The reduced loss as a NumPy scalar of the input's dtype (NaN for 0/0, as PyTorch)."""
    if reduction == "sum":
        return out_dtype.type(total)
    return out_dtype.type(_ieee_divide(total, denominator))


def _grad_scale(reduction, denominator):
    if reduction != "mean":
        return 1.0
    return _ieee_divide(1.0, denominator)


def _ieee_divide(a, b):
    """a / b as IEEE float64 division (b = 0 gives +-inf or NaN, no warning)."""
    if b != 0:
        return float(np.float64(a) / np.float64(b))
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(a) / np.float64(b))


def _grad_buffer(grad_out, input_arr, x, out_dtype, shape):
    """The array the kernel writes the gradient into: ``grad_out`` when given
    (checked), else a new one. ``input_arr`` is the caller's array (for the
    overlap check), ``x`` its float32/float64 C-contiguous version."""
    if grad_out is None:
        return np.empty(shape, dtype=x.dtype)
    if not isinstance(grad_out, np.ndarray):
        raise TypeError(f"grad_out must be a NumPy array, got {type(grad_out).__name__}")
    if grad_out.shape != x.shape or grad_out.dtype != out_dtype or out_dtype != x.dtype:
        raise ValueError(
            f"grad_out must be a float32 or float64 array of the input's shape {x.shape} and dtype {out_dtype}, "
            f"got shape {grad_out.shape} and dtype {grad_out.dtype}"
        )
    if not (grad_out.flags.c_contiguous and grad_out.flags.writeable and grad_out.dtype.isnative):
        raise ValueError("grad_out must be C-contiguous, writeable and in native byte order")
    if np.may_share_memory(grad_out, input_arr) or np.may_share_memory(grad_out, x):
        raise ValueError("grad_out must not overlap input (fastce never modifies its inputs)")
    return grad_out if grad_out.shape == shape else grad_out.reshape(shape)


def _finish(loss, grad, return_grad, out_dtype):
    if grad is not None and grad.dtype != out_dtype:
        grad = grad.astype(out_dtype)
    if isinstance(loss, np.ndarray) and loss.dtype != out_dtype:
        loss = loss.astype(out_dtype)
    return (loss, grad) if return_grad else loss


def cross_entropy(
    input,
    target,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    *,
    sample_weight=None,
    return_grad=False,
    grad_out=None,
    n_threads=None,
):
    r"""Cross-entropy between logits and class targets, as :func:`torch.nn.functional.cross_entropy`.

    Parameters
    ----------
    input : array_like of shape (C,), (N, C) or (N, C, d1, ..., dk)
        Unnormalised logits, floating point (float16 is computed in float32).
        ``-inf`` masks a class.
    target : array_like
        Either class indices, integers of shape ``()``, ``(N,)`` or
        ``(N, d1, ..., dk)`` in ``[0, C)`` or equal to `ignore_index`; or
        class probabilities, floating, with exactly the shape of `input`.
    weight : array_like of shape (C,), default=None
        Weight of each class.
    ignore_index : int, default=-100
        Class-index targets equal to it add nothing to the loss, the gradient
        or the denominator of the mean. Must stay negative with probability
        targets.
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"`` divides the summed loss by the summed weight of the
        non-ignored targets (by the number of rows for probability targets).
    label_smoothing : float in [0, 1], default=0.0
        Mixes the target with the uniform distribution over the C classes.
    sample_weight : array_like, default=None
        Not in PyTorch: a weight per row (per target position), broadcastable
        to the target's shape without the class axis. It multiplies the
        row's loss and gradient and enters the mean's denominator like a
        class weight does: ``"mean"`` becomes
        ``sum(s_i * loss_i) / sum(s_i * weight[target_i])`` (``sum(s_i)`` for
        probability targets).
    return_grad : bool, default=False
        Also return the gradient with respect to `input`, from the same pass.
    grad_out : ndarray, default=None
        With `return_grad`, write the gradient into this C-contiguous array of
        `input`'s shape and (float32 or float64) dtype instead of allocating
        one, and return it; it must not overlap `input`.
    n_threads : int, default=None
        Threads to use (see :mod:`fastce.losses`).

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar of the input's dtype for ``"mean"`` and ``"sum"``; an
        array of the target's shape (without the class axis) for ``"none"``.
    grad : ndarray
        Only with `return_grad`: same shape and dtype as `input`.

    See Also
    --------
    torch.nn.functional.cross_entropy : The reference semantics.
    log_softmax : The normalised log-probabilities.

    Notes
    -----
    With :math:`\ell = \operatorname{logsumexp}(x)`, smoothing :math:`\varepsilon`
    and class weights :math:`w` (:math:`W = \sum_k w_k`), a row with class
    index :math:`y` costs

    .. math::
        L = (1-\varepsilon)\, w_y (\ell - x_y)
            + \frac{\varepsilon}{C} \sum_k w_k (\ell - x_k),
        \qquad
        \frac{\partial L}{\partial x_k} =
            \Big((1-\varepsilon) w_y + \frac{\varepsilon W}{C}\Big) p_k
            - (1-\varepsilon) w_y [k = y] - \frac{\varepsilon}{C} w_k,

    with :math:`p = \operatorname{softmax}(x)`. A probability target
    :math:`t` is smoothed to :math:`t' = (1-\varepsilon)t + \varepsilon/C` and
    costs :math:`\sum_k w_k t'_k (\ell - x_k)`. One difference from PyTorch:
    a class whose smoothed, weighted target probability is exactly 0 adds
    nothing even if its logit is ``-inf`` (PyTorch gives NaN there).

    NaN in a row of logits gives NaN for that row's loss and gradient (and
    for the reduced loss); a row whose target class is masked with ``-inf``
    costs ``inf``. An empty batch gives NaN for ``"mean"``, 0 for ``"sum"``.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import cross_entropy
    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0]])
    >>> target = np.array([0, 2])
    >>> float(cross_entropy(logits, target))  # (0.2413... + 0.0949...) / 2
    0.1681...
    >>> loss, grad = cross_entropy(logits, target, reduction="sum", return_grad=True)
    >>> np.round(grad, 4)  # softmax(logits) - one_hot(target)
    array([[-0.2144,  0.1753,  0.0391],
           [ 0.0453,  0.0453, -0.0906]])
    """
    if _is_dask_collection(input, target, weight, sample_weight):
        from . import dask

        return dask.cross_entropy(
            input, target, weight, ignore_index, reduction, label_smoothing,
            sample_weight=sample_weight, return_grad=return_grad, grad_out=grad_out, n_threads=n_threads,
        )  # fmt: skip
    reduction = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    ignore_index = check_index(ignore_index, "ignore_index")
    return_grad = check_flag(return_grad, "return_grad")
    x, out_dtype = loss_input(input)
    if x.ndim == 0:
        raise ValueError("input must have shape (C,), (N, C) or (N, C, d1, ..., dk), got a 0-d array")
    if x.ndim == 1:
        x3 = x.reshape(1, x.shape[0], 1)
    else:
        x3 = x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))
    n_classes = x3.shape[1]
    if n_classes == 0:
        raise ValueError(f"input must have at least one class along its class axis, got shape {x.shape}")
    n_rows = x3.shape[0] * x3.shape[2]
    row_shape = () if x.ndim == 1 else (x.shape[0],) + x.shape[2:]

    tgt = as_real_array(target, "target")
    probabilities = tgt.shape == x.shape
    if weight is None:
        w = np.ones(n_classes)
    else:
        w = as_real_array(weight, "weight")
        if w.shape != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},) (one weight per class), got {w.shape}")
        w = np.ascontiguousarray(w, dtype=np.float64)

    sw, sw_step = row_weights(sample_weight, row_shape)

    if x3.shape[2] == 1 and n_classes * x3.itemsize > K.TILE_MAX_BYTES:  # row layout, see _kernels
        block = max(1, min(1024, _CE_BLOCK_ELEMENTS // n_classes))
    else:  # tiles of K.LANES rows
        block = K.LANES * max(1, min(64, _CE_BLOCK_ELEMENTS // (n_classes * K.LANES)))
    partial = np.empty((n_rows + block - 1) // block)
    loss_rows = np.empty(n_rows if reduction == "none" else 0, dtype=x.dtype)
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only used with return_grad=True")
    grad = _grad_buffer(grad_out, input, x, out_dtype, x.shape) if return_grad else np.empty((1, n_classes, 1), x.dtype)
    grad3 = grad.reshape(x3.shape) if return_grad else grad

    if probabilities:
        check_probability_target(tgt, x.shape, ignore_index)
        t3 = np.ascontiguousarray(tgt, dtype=x.dtype).reshape(x3.shape)
        denominator = n_rows if sample_weight is None else float(sw.sum())
        scale = _grad_scale(reduction, denominator)
        if x3.shape[2] == 1 and n_rows <= K.SPLIT_MAX_ROWS and n_classes >= K.SPLIT_MIN_COLS:
            partial = _ce_prob_long_rows(
                x3.reshape(n_rows, n_classes), t3.reshape(n_rows, n_classes), w, sw, sw_step, eps, scale,
                grad3.reshape(n_rows, n_classes) if return_grad else None, loss_rows, n_threads,
            )  # fmt: skip
        else:
            run_kernel(
                K.ce_prob_par, K.ce_prob_ser, n_threads, x.size,
                x3, t3, w, sw, sw_step, eps, scale, return_grad, loss_rows, reduction == "none", grad3, partial, block,
            )  # fmt: skip
    else:
        t, _, denominator = class_index_target(
            tgt, row_shape, x.shape, "input", x.shape, n_classes, ignore_index,
            lambda t: _index_target_stats(
                t, ignore_index, n_classes, w, sw, sw_step, n_threads, weight is not None or sample_weight is not None
            ),
        )  # fmt: skip
        scale = _grad_scale(reduction, denominator)
        wsum = float(n_classes) if weight is None else float(w.sum())
        if x3.shape[2] == 1 and n_rows <= K.SPLIT_MAX_ROWS and n_classes >= K.SPLIT_MIN_COLS:
            g2 = grad3.reshape(n_rows, n_classes) if return_grad else None
            partial = _ce_index_long_rows(
                x3.reshape(n_rows, n_classes), t, w, wsum, sw, sw_step, ignore_index, eps, scale, g2, loss_rows,
                n_threads,
            )  # fmt: skip
        elif (
            weight is None and eps == 0.0 and sample_weight is None and x3.shape[2] == 1
            and 2 <= n_classes <= K.CE_LANES_MAX_CLASSES[x3.dtype]
        ):  # fmt: skip
            run_kernel(
                K.ce_lanes_par, K.ce_lanes_ser, n_threads, x.size, K.ce_index_lanes(n_classes, x3.dtype.type),
                x3, t, ignore_index, scale, return_grad, loss_rows, reduction == "none", grad3, partial, block,
            )  # fmt: skip
        else:
            run_kernel(
                K.ce_index_par, K.ce_index_ser, n_threads, x.size,
                x3, t, w, wsum, sw, sw_step, ignore_index, eps, scale, return_grad, loss_rows, reduction == "none",
                grad3, partial, block,
            )  # fmt: skip

    if reduction == "none":
        loss = loss_rows.reshape(row_shape)
    else:
        loss = _reduce(partial.sum(), denominator, reduction, out_dtype)
    return _finish(loss, grad if return_grad else None, return_grad, out_dtype)


def _index_target_stats(t, ignore_index, n_classes, w, sw, sw_step, n_threads, weighted=True):
    """One pass over the flat intp class-index targets ``t`` before a loss
    kernel, on ``n_threads`` threads (blocks of ``K.TARGET_STATS_BLOCK``).

    Returns ``(position of the first invalid target or -1, number of
    non-ignored targets, sum over them of class weight x sample weight in
    float64)``; the sum goes through the same blocks for any thread count.
    ``weighted=False`` tells that every class and sample weight is 1
    (the sum is then the count); with ``True`` the weights are looked at.
    """
    n_blocks = max(1, -(-t.shape[0] // K.TARGET_STATS_BLOCK))
    bad = np.empty(n_blocks, dtype=np.int64)
    count = np.empty(n_blocks, dtype=np.int64)
    wsum = np.empty(n_blocks)
    weighted = weighted and bool(sw_step != 0 or sw[0] != 1.0 or np.any(w != 1.0))
    run_kernel(
        K.index_target_stats_par, K.index_target_stats_ser, n_threads, t.size,
        t, ignore_index, n_classes, w, sw, sw_step, weighted, bad, count, wsum,
    )  # fmt: skip
    if n_blocks == 1:
        return int(bad[0]), int(count[0]), float(wsum[0])
    invalid = bad[bad >= 0]
    return (int(invalid[0]) if invalid.size else -1), int(count.sum()), float(wsum.sum())


def _ce_index_long_rows(x2, t, w, wsum, sw, sw_step, ignore_index, eps, scale, g2, loss_rows, n_threads):
    """cross_entropy with class-index targets of a few long rows (see
    K.SPLIT_MAX_ROWS): each row is cut in segments that the threads share,
    for its maximum and sum (see :func:`fastce.special._segment_stats`), the
    label-smoothing term and the gradient; the formulas of
    ``K._ce_index_row``, which takes the rows whose maximum is not finite.
    Fills ``loss_rows`` (if not empty) and ``g2`` (if given); returns the
    row losses, whose sum is the total."""
    from .special import _segment_stats

    n, n_classes = x2.shape
    m, s, cnt, n_seg = _segment_stats(x2, n_threads)
    gaps = np.zeros(n)
    if eps > 0.0:
        per_segment = np.empty(n * n_seg)
        run_kernel(
            K.segment_weighted_gap_par, K.segment_weighted_gap_ser, n_threads, x2.size, x2, n_seg, m, w, per_segment,
        )  # fmt: skip
        gaps = per_segment.reshape(n, n_seg).sum(axis=1)
    values = np.zeros(n)
    a = np.zeros(n)
    cs = np.zeros(n)
    redo = []
    for r in range(n):
        y = int(t[r])
        if y == ignore_index:
            continue
        if not abs(float(m[r])) < math.inf:
            redo.append(r)
            continue
        sr = float(sw[r * sw_step])
        sp = s[r] + (cnt[r] - 1.0)
        wy = float(w[y])
        coef = (1.0 - eps) * wy
        full = coef + eps * wsum / n_classes
        values[r] = sr * (coef * float(m[r] - x2[r, y]) + eps / n_classes * gaps[r] + full * math.log1p(sp))
        a[r] = scale * sr * full / (1.0 + sp)
        cs[r] = scale * sr * eps / n_classes
    if g2 is not None:
        run_kernel(K.segment_ce_grad_par, K.segment_ce_grad_ser, n_threads, x2.size, x2, n_seg, m, a, cs, w, g2)
        for r in range(n):
            y = int(t[r])
            if y == ignore_index or r in redo:
                continue
            sp = s[r] + (cnt[r] - 1.0)
            at_max = x2[r, y] == m[r]
            g2[r, y] = K._target_grad(at_max, g2[r, y], sp, float(w[y]), wsum, eps, n_classes, scale * float(sw[r * sw_step]))
    for r in redo:
        e = np.empty(n_classes, dtype=x2.dtype)
        g = g2[r] if g2 is not None else e
        sr = float(sw[r * sw_step])
        values[r] = sr * K._ce_index_row(x2[r], t[r], w, wsum, eps, scale * sr, g, g2 is not None, e, 0)
    if loss_rows.shape[0]:
        loss_rows[:] = values
    return values


def _ce_prob_long_rows(x2, t2, w, sw, sw_step, eps, scale, g2, loss_rows, n_threads):
    """:func:`_ce_index_long_rows` for class-probability targets ``t2``: the
    formulas of ``K._ce_prob_row``, which takes the rows whose maximum is
    not finite."""
    from .special import _segment_stats

    n, n_classes = x2.shape
    keep, spread = 1.0 - eps, eps / n_classes
    m, s, cnt, n_seg = _segment_stats(x2, n_threads)
    part = np.empty(n * n_seg)
    total = np.empty(n * n_seg)
    run_kernel(
        K.segment_prob_terms_par, K.segment_prob_terms_ser, n_threads, x2.size,
        x2, t2, n_seg, m, w, keep, spread, part, total,
    )  # fmt: skip
    part = part.reshape(n, n_seg).sum(axis=1)
    total = total.reshape(n, n_seg).sum(axis=1)
    values = np.zeros(n)
    a = np.zeros(n)
    cs = np.zeros(n)
    redo = []
    for r in range(n):
        if not abs(float(m[r])) < math.inf:
            redo.append(r)
            continue
        sr = float(sw[r * sw_step])
        sp = s[r] + (cnt[r] - 1.0)
        values[r] = sr * (part[r] + total[r] * math.log1p(sp))
        a[r] = scale * sr * total[r] / (1.0 + sp)
        cs[r] = scale * sr
    if g2 is not None:
        run_kernel(
            K.segment_ce_prob_grad_par, K.segment_ce_prob_grad_ser, n_threads, x2.size,
            x2, t2, n_seg, m, a, cs, w, keep, spread, g2,
        )  # fmt: skip
    for r in redo:
        e = np.empty(n_classes, dtype=x2.dtype)
        g = g2[r] if g2 is not None else e
        sr = float(sw[r * sw_step])
        values[r] = sr * K._ce_prob_row(x2[r], t2[r], w, eps, scale * sr, g, g2 is not None, e)
    if loss_rows.shape[0]:
        loss_rows[:] = values
    return values


def _bce(input, target, weight, pos_weight, reduction, return_grad, grad_out, n_threads, logits):
    if _is_dask_collection(input, target, weight, pos_weight):
        from . import dask

        return dask._bce(input, target, weight, pos_weight, reduction, return_grad, grad_out, n_threads, logits)
    reduction = check_reduction(reduction)
    return_grad = check_flag(return_grad, "return_grad")
    x, out_dtype = loss_input(input)
    tgt = as_real_array(target, "target")
    if tgt.shape != x.shape:
        raise ValueError(f"target must have the same shape as input {x.shape}, got {tgt.shape}")
    shape = x.shape
    if x.ndim >= 2:
        rows, cols = math.prod(shape[:-1]), shape[-1]
    else:
        rows, cols = 1, x.size
    one = np.ones((1, 1), dtype=x.dtype)
    w2 = one if weight is None else broadcast_2d(weight, "weight", shape, rows, cols, x.dtype)
    pw2 = one if pos_weight is None else broadcast_2d(pos_weight, "pos_weight", shape, rows, cols, x.dtype)
    if all(a.shape in ((1, 1), (rows, cols)) for a in (w2, pw2)):
        # Nothing varies along one axis only: work on the flat array.
        rows, cols = 1, x.size
        w2, pw2 = w2.reshape(1, -1), pw2.reshape(1, -1)
    x2 = x.reshape(rows, cols)
    y2 = np.ascontiguousarray(tgt, dtype=x.dtype).reshape(rows, cols)

    if cols >= K.BCE_SEGMENT:
        col_segments, rows_per_segment = -(-cols // K.BCE_SEGMENT), 1
    else:
        col_segments, rows_per_segment = 1, max(1, K.BCE_SEGMENT // max(cols, 1))
    n_segments = -(-rows // rows_per_segment) * col_segments if cols else 0
    partial = np.zeros(n_segments)
    bad = np.zeros(n_segments, dtype=np.int64)
    loss_el = np.empty((rows, cols) if reduction == "none" else (1, 1), dtype=x.dtype)
    if grad_out is not None and not return_grad:
        raise ValueError("grad_out is only used with return_grad=True")
    grad = _grad_buffer(grad_out, input, x, out_dtype, (rows, cols)) if return_grad else np.empty((1, 1), x.dtype)
    scale = x.dtype.type(_grad_scale(reduction, x.size))
    run_kernel(
        K.bce_par, K.bce_ser, n_threads, x.size,
        logits, x2, y2, w2, pw2, scale, return_grad, loss_el, reduction == "none", grad, partial, bad,
        col_segments, rows_per_segment,
    )  # fmt: skip
    if not logits and bad.any():
        raise ValueError(
            f"input of binary_cross_entropy must hold probabilities in [0, 1]; {int(bad.sum())} value(s) are "
            "outside that range or NaN (use binary_cross_entropy_with_logits for logits)"
        )
    if reduction == "none":
        loss = loss_el.reshape(shape)
    else:
        loss = _reduce(partial.sum(), x.size, reduction, out_dtype)
    if return_grad:
        grad = grad_out if grad_out is not None else grad.reshape(shape)
    return _finish(loss, grad if return_grad else None, return_grad, out_dtype)


def binary_cross_entropy(
    input, target, weight=None, reduction="mean", *, return_grad=False, grad_out=None, n_threads=None
):
    r"""Binary cross-entropy on probabilities, as :func:`torch.nn.functional.binary_cross_entropy`.

    Parameters
    ----------
    input : array_like of any shape
        Probabilities in [0, 1], floating point.
    target : array_like of the same shape as `input`
        Targets, usually in [0, 1]; booleans and integers are converted.
    weight : array_like, default=None
        Rescaling weight broadcastable to `input`'s shape.
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"`` divides by the number of elements.
    return_grad : bool, default=False
        Also return the gradient with respect to `input`, from the same pass.
    grad_out : ndarray, default=None
        With `return_grad`, write the gradient into this C-contiguous array of
        `input`'s shape and (float32 or float64) dtype instead of allocating
        one, and return it; it must not overlap `input`.
    n_threads : int, default=None
        Threads to use (see :mod:`fastce.losses`).

    Returns
    -------
    loss : scalar or ndarray
        NumPy scalar of the input's dtype, or an array of `input`'s shape for
        ``"none"``.
    grad : ndarray
        Only with `return_grad`: same shape and dtype as `input`.

    Raises
    ------
    ValueError
        If an element of `input` is outside [0, 1] or NaN (PyTorch raises too).

    See Also
    --------
    binary_cross_entropy_with_logits : The stable form on logits.

    Notes
    -----
    As in PyTorch, each logarithm is clamped below at -100 so that
    ``p = 0`` or ``p = 1`` give a finite loss:

    .. math:: L = -w\,[\,y \max(\log p, -100) + (1-y) \max(\log(1-p), -100)\,]

    and the gradient is PyTorch's backward formula
    :math:`w (p - y) / \max(p(1-p), 10^{-12})`: the derivative of the loss
    wherever :math:`p(1-p) \ge 10^{-12}`, bounded near 0 and 1.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import binary_cross_entropy
    >>> p = np.array([0.9, 0.2, 0.0])
    >>> y = np.array([1.0, 0.0, 1.0])
    >>> binary_cross_entropy(p, y, reduction="none")
    array([  0.10536052,   0.22314355, 100.        ])
    """
    return _bce(input, target, weight, None, reduction, return_grad, grad_out, n_threads, logits=False)


def binary_cross_entropy_with_logits(
    input, target, weight=None, reduction="mean", pos_weight=None, *, return_grad=False, grad_out=None, n_threads=None
):
    r"""Binary cross-entropy on logits, as :func:`torch.nn.functional.binary_cross_entropy_with_logits`.

    Parameters
    ----------
    input : array_like of any shape
        Logits, floating point.
    target : array_like of the same shape as `input`
        Targets, usually in [0, 1]; booleans and integers are converted.
    weight : array_like, default=None
        Rescaling weight broadcastable to `input`'s shape.
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"`` divides by the number of elements.
    pos_weight : array_like, default=None
        Weight of the positive term, broadcastable to `input`'s shape
        (typically one per class, shape ``(C,)`` for input ``(N, C)``).
    return_grad : bool, default=False
        Also return the gradient with respect to `input`, from the same pass.
    grad_out : ndarray, default=None
        With `return_grad`, write the gradient into this C-contiguous array of
        `input`'s shape and (float32 or float64) dtype instead of allocating
        one, and return it; it must not overlap `input`.
    n_threads : int, default=None
        Threads to use (see :mod:`fastce.losses`).

    Returns
    -------
    loss : scalar or ndarray
        NumPy scalar of the input's dtype, or an array of `input`'s shape for
        ``"none"``.
    grad : ndarray
        Only with `return_grad`: same shape and dtype as `input`.

    See Also
    --------
    binary_cross_entropy : The same loss on probabilities.
    log_sigmoid : The stable log-probability.

    Notes
    -----
    The loss of PyTorch, evaluated in a form without cancellation: with
    :math:`s = \log(1 + e^{-|z|})`,

    .. math::
        L = w\,[\,p_w\, y\,(s + \max(-z, 0)) + (1-y)(s + \max(z, 0))\,],
        \qquad
        \frac{\partial L}{\partial z} = w\,[\,(1-y)\,\sigma(z) - p_w\, y\,\sigma(-z)\,]

    It never overflows, is finite for any finite logit and keeps full
    relative precision where the loss is tiny (PyTorch's
    ``(1 - y) z + ...`` form can round it to a small negative number).

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import binary_cross_entropy_with_logits
    >>> z = np.array([3.0, -800.0, 0.0])
    >>> y = np.array([1.0, 1.0, 0.0])
    >>> binary_cross_entropy_with_logits(z, y, reduction="none")
    array([4.85873516e-02, 8.00000000e+02, 6.93147181e-01])
    """
    return _bce(input, target, weight, pos_weight, reduction, return_grad, grad_out, n_threads, logits=True)
