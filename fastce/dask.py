"""Dask arrays in, lazy Dask results out, on the same fused kernels.

Every public function of fastce accepts :class:`dask.array.Array` inputs
(also mixed with NumPy targets and weights) and then returns lazy Dask
results with the semantics of its NumPy counterpart. The functions of this
module do that work; :func:`fastce.cross_entropy` and the others call them
when one of their arguments is a Dask array, so there is usually no need to
import this module. Dask itself is imported only then (``import fastce``
never imports it); install it with ``pip install "fastce[dask]"``.

How the work is split:

* **Losses** (:func:`cross_entropy`, :func:`binary_cross_entropy`,
  :func:`binary_cross_entropy_with_logits`): each chunk of rows runs the
  fused NumPy kernel once, with ``reduction="sum"``, giving the chunk's loss
  sum, its share of the mean's denominator and its gradient. The partial
  sums are added in float64 by a Dask tree reduction, and the gradient of
  ``"mean"`` is scaled blockwise by the *global* denominator (a lazy 0-d
  array), so computing the loss and the gradient together
  (``dask.compute(loss, grad)``) reads the input once. For the
  cross-entropy the rows are axis 0: the class axis (and any further axes)
  are put in one chunk, and targets and sample weights are rechunked to the
  input's row chunks.
* **linear_cross_entropy** (:func:`linear_cross_entropy`): ``X`` is chunked
  along rows (the features in one chunk), ``W``, ``bias`` and ``weight``
  are one chunk each. Each row chunk runs the NumPy function once, with
  ``reduction="sum"``, giving as above the loss sum, the denominator share
  and ``grad_X``, plus the chunk's partial ``grad_W`` and ``grad_bias``,
  which are added in float64 by a tree reduction and then scaled by the
  global denominator.
* **logsumexp, softmax, log_softmax** over axes that span several chunks:
  each chunk gives a float64 pair ``(log|s|, sign(s))`` of its partial sum
  ``s = sum(b * exp(a))``, and the pairs are merged by
  :func:`dask.array.reduction` (a tree) with the same stable formula;
  softmax and log_softmax then make one blockwise pass with the global
  result. Over axes held in one chunk, they are a blockwise map of the
  NumPy functions.
* **sigmoid, log_sigmoid**: blockwise.

Results equal the NumPy results on the same data up to the rounding of the
partial sums. Errors that depend on the values (a class index out of range,
a probability outside [0, 1]) are raised when the result is computed.

Examples
--------
>>> import dask
>>> import dask.array as da
>>> import numpy as np
>>> import fastce
>>> rng = np.random.default_rng(0)
>>> logits = rng.normal(size=(1000, 5))
>>> target = rng.integers(0, 5, size=1000)
>>> x = da.from_array(logits, chunks=300)  # 4 chunks of rows
>>> loss, grad = fastce.cross_entropy(x, target, return_grad=True)
>>> grad.chunks
((300, 300, 300, 100), (5,))
>>> with dask.config.set(scheduler="synchronous"):
...     loss_value, grad_value = dask.compute(loss, grad)
>>> expected, expected_grad = fastce.cross_entropy(logits, target, return_grad=True)
>>> bool(np.isclose(loss_value, expected, rtol=1e-13))
True
>>> bool(np.allclose(grad_value, expected_grad, rtol=1e-13, atol=0))
True
"""

import functools
import math

import numpy as np

from ._validation import (
    as_real_array,
    check_class_index_target,
    check_probability_target,
    check_flag,
    check_index,
    check_label_smoothing,
    check_reduction,
    normalize_axes,
)

__all__ = [
    "logsumexp",
    "softmax",
    "log_softmax",
    "sigmoid",
    "log_sigmoid",
    "cross_entropy",
    "binary_cross_entropy",
    "binary_cross_entropy_with_logits",
    "linear_cross_entropy",
]

_EXTRA = 'fastce\'s Dask support needs Dask: install it with pip install "fastce[dask]"'


# ---------------------------------------------------------------------------
# Detection and import (cheap, never imports Dask)


def _is_dask_collection(*args):
    """Whether any of ``args`` is a Dask collection (array, dataframe, ...).

    Looks at the module of each argument's type only, so it costs a few
    attribute lookups and never imports Dask.
    """
    for x in args:
        if x is None:
            continue
        module = type(x).__module__
        if module == "dask" or module.startswith(("dask.", "dask_")):
            return True
    return False


def _require_dask():
    """Import and return :mod:`dask.array`, or raise an ImportError naming the extra."""
    try:
        import dask.array as da
    except ImportError as exc:
        raise ImportError(f"{_EXTRA} (import failed: {exc})") from exc
    return da


# ---------------------------------------------------------------------------
# Argument conversion


def _as_dask(da, x, name, chunks=None):
    """A Dask array from a Dask array, a Dask dataframe/series or an array_like.

    NumPy input is wrapped with ``chunks`` (one chunk by default) after the
    usual checks of :func:`fastce._validation.as_real_array`.
    """
    if isinstance(x, da.Array):
        arr = x
    elif _is_dask_collection(x):
        if not hasattr(x, "to_dask_array"):
            raise TypeError(f"{name} must be a Dask array or array_like, got {type(x).__name__}")
        arr = x.to_dask_array(lengths=True)
    else:
        arr = as_real_array(x, name)
        return da.from_array(arr, chunks=chunks if chunks is not None else -1)
    if arr.dtype.kind not in "biuf":
        kind = "complex" if arr.dtype.kind == "c" else "non-numeric"
        raise TypeError(f"{name} must hold real numbers, got a Dask array of {kind} dtype {arr.dtype}")
    if any(math.isnan(d) for d in arr.shape):
        raise ValueError(
            f"{name} is a Dask array of unknown shape {arr.shape}: call its compute_chunk_sizes() method first"
        )
    return arr


def _rows_like(da, x, row_chunks):
    """``x`` as a Dask array chunked like ``row_chunks`` along axis 0 and in one chunk along the others."""
    chunks = (row_chunks,) + tuple((d,) for d in x.shape[1:])
    if isinstance(x, da.Array):
        return x.rechunk(chunks)
    return da.from_array(x, chunks=chunks)


def _loss_dtype(x, name="input"):
    """The result dtype of a loss on Dask ``x`` (as :func:`fastce._validation.loss_input`)."""
    if x.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (float16, float32 or float64), got dtype {x.dtype}")
    if x.dtype.itemsize > 8:
        raise TypeError(f"{name} must be float16, float32 or float64, got {x.dtype} (convert it to float64)")
    return np.dtype(x.dtype.newbyteorder("="))


def _check_n_threads(n_threads):
    if n_threads is not None:
        from ._config import resolve_n_threads

        resolve_n_threads(n_threads)  # validates only; each worker resolves its own count
    return n_threads


def _check_grad_out(grad_out):
    if grad_out is not None:
        raise TypeError("grad_out is not supported with Dask arrays: the gradient is returned as a lazy Dask array")


def _meta(ndim, dtype):
    return np.empty((0,) * ndim, dtype=dtype)


def _upcast16(x):
    """float16 chunks are computed in float32 (a float16 partial sum would overflow)."""
    return x.astype(np.float32) if x.dtype == np.float16 else x


# ---------------------------------------------------------------------------
# Task graph of the losses: one task per chunk returns a tuple
# (loss rows or [[loss sum, denominator]], gradient or None); the layers
# below pick from it, so the fused kernel runs once per chunk.


def _pick_loss(part, dtype_):
    return np.asarray(part[0]).astype(dtype_, copy=False)


def _pick_sums(part):
    return part[0]


def _pick_grad(part, totals, dtype_, mean):
    grad = part[1]
    if mean:
        with np.errstate(divide="ignore", invalid="ignore"):
            grad = grad * float(np.float64(1.0) / totals[1])  # a Python float keeps float32 float32
    return grad.astype(dtype_, copy=False)


def _reduced_loss(totals, dtype_, mean):
    if not mean:
        return dtype_.type(totals[0])
    with np.errstate(divide="ignore", invalid="ignore"):
        return dtype_.type(totals[0] / totals[1])


def _subset(new_axes, ind):
    return {k: v for k, v in new_axes.items() if k in ind}


def _assemble(
    da, parts, part_ind, loss_ind, grad_ind, new_axes, reduction, return_grad, out_dtype, scale_grad=True,
    with_totals=False,
):  # fmt: skip
    """The lazy results from the per-chunk tuples ``parts``.

    ``part_ind`` are the indices of ``parts`` (one element per chunk),
    ``loss_ind`` and ``grad_ind`` those of the per-element loss (for
    ``"none"``) and of the gradient; their indices not in ``part_ind`` are
    axes in one chunk, of the sizes in ``new_axes``. For ``"mean"`` the
    chunks' gradients (of their loss sums) are divided by the global
    denominator unless ``scale_grad`` is false (the chunk did it).
    With ``with_totals`` (and `return_grad`), the lazy float64
    ``[loss sum, denominator]`` (None for ``"none"``) is returned third.
    """
    totals = None
    if reduction == "none":
        loss = da.blockwise(
            _pick_loss, loss_ind, parts, part_ind, new_axes=_subset(new_axes, loss_ind),
            dtype=out_dtype, meta=_meta(len(loss_ind), out_dtype), dtype_=out_dtype,
        )  # fmt: skip
    else:
        sums = da.blockwise(
            _pick_sums, part_ind + ("_k",), parts, part_ind,
            new_axes={"_k": 2}, adjust_chunks={i: 1 for i in part_ind},
            dtype=np.float64, meta=_meta(len(part_ind) + 1, np.float64),
        )  # fmt: skip
        # Tree reduction of the float64 partial sums: [loss sum, denominator].
        totals = sums.sum(axis=tuple(range(len(part_ind))))
        loss = da.blockwise(
            _reduced_loss, (), totals, ("_k",), concatenate=True,
            dtype=out_dtype, meta=np.empty((), out_dtype), dtype_=out_dtype, mean=reduction == "mean",
        )  # fmt: skip
    if not return_grad:
        return loss
    mean = reduction == "mean" and scale_grad
    totals_args = (totals, ("_k",)) if mean else (None, None)
    grad = da.blockwise(
        _pick_grad, grad_ind, parts, part_ind, *totals_args,
        new_axes=_subset(new_axes, grad_ind), concatenate=True,
        dtype=out_dtype, meta=_meta(len(grad_ind), out_dtype), dtype_=out_dtype, mean=mean,
    )  # fmt: skip
    return (loss, grad, totals) if with_totals else (loss, grad)


# ---------------------------------------------------------------------------
# Cross-entropy


def _ce_chunk(x, t, w, sw, *, ignore_index, reduction, eps, return_grad, n_threads, probabilities):
    from .losses import cross_entropy

    x = _upcast16(x)
    red = "none" if reduction == "none" else "sum"
    out = cross_entropy(
        x, t, w, ignore_index, red, eps, sample_weight=sw, return_grad=return_grad, n_threads=n_threads
    )
    loss, grad = out if return_grad else (out, None)
    if red == "none":
        return loss, grad
    if probabilities:
        row_shape = (x.shape[0],) + x.shape[2:]
        den = math.prod(row_shape) if sw is None else np.sum(sw, dtype=np.float64)
    else:
        keep = t != ignore_index
        wt = np.ones(int(keep.sum())) if w is None else np.asarray(w, dtype=np.float64)[t[keep]]
        if sw is not None:
            wt = wt * np.asarray(sw, dtype=np.float64)[keep]
        den = np.sum(wt)
    return np.array([[np.float64(loss), np.float64(den)]]), grad


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
    """:func:`fastce.cross_entropy` on Dask arrays chunked along rows.

    Parameters
    ----------
    input : dask.array.Array or array_like of shape (C,), (N, C) or (N, C, d1, ..., dk)
        Logits. Chunks along axis 0 (rows) are kept; the other axes are
        rechunked to one chunk each. NumPy input gets the row chunks of a
        Dask `target` or `sample_weight` (else one chunk).
    target : dask.array.Array or array_like
        Class indices of shape ``(N, d1, ..., dk)`` or probabilities of
        `input`'s shape; rechunked to `input`'s row chunks.
    weight : dask.array.Array or array_like of shape (C,), default=None
        Class weights.
    ignore_index : int, default=-100
    reduction : {"mean", "sum", "none"}, default="mean"
    label_smoothing : float in [0, 1], default=0.0
    sample_weight : dask.array.Array or array_like, default=None
        Broadcastable to the target's row shape; rechunked like `target`.
    return_grad : bool, default=False
    grad_out : None
        Must be None (the gradient is a new Dask array).
    n_threads : int, default=None
        Threads of each chunk's kernel, in the process that runs it.

    Returns
    -------
    loss : dask.array.Array
        0-d for ``"mean"`` and ``"sum"`` (the mean divides by the global
        denominator), of the target's shape for ``"none"``.
    grad : dask.array.Array
        Only with `return_grad`: the gradient, chunked like `input`.

    See Also
    --------
    fastce.cross_entropy : The semantics, on NumPy arrays.
    """
    da = _require_dask()
    reduction = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    ignore_index = check_index(ignore_index, "ignore_index")
    return_grad = check_flag(return_grad, "return_grad")
    _check_grad_out(grad_out)
    n_threads = _check_n_threads(n_threads)

    row_chunks = None
    for other in (target, sample_weight):
        if isinstance(other, da.Array) and other.ndim >= 1 and not isinstance(input, da.Array):
            row_chunks = other.chunks[0]
            break
    if row_chunks is not None and np.ndim(input) >= 2 and sum(row_chunks) == np.shape(input)[0]:
        x = _as_dask(da, input, "input", chunks=(row_chunks,) + tuple((d,) for d in np.shape(input)[1:]))
    else:
        x = _as_dask(da, input, "input")
    out_dtype = _loss_dtype(x)
    if x.ndim == 0:
        raise ValueError("input must have shape (C,), (N, C) or (N, C, d1, ..., dk), got a 0-d array")
    single = x.ndim == 1
    if single:
        x = x.rechunk(-1).reshape(1, x.shape[0])
    x = x.rechunk({i: -1 for i in range(1, x.ndim)})
    shape = x.shape
    n_classes = shape[1]
    if n_classes == 0:
        raise ValueError(f"input must have at least one class along its class axis, got shape {shape}")
    row_shape = (shape[0],) + shape[2:]
    rows = x.chunks[0]

    if isinstance(target, da.Array) or _is_dask_collection(target):
        tgt = _as_dask(da, target, "target")
    else:
        tgt = as_real_array(target, "target")
    if single:
        tgt = tgt.reshape((1,) + tgt.shape)
    probabilities = tgt.shape == shape
    if probabilities:
        check_probability_target(tgt, shape, ignore_index)
    else:
        check_class_index_target(tgt, row_shape, shape, "input", shape)
    tgt = _rows_like(da, tgt, rows)

    w, w_ind = None, None
    if weight is not None:
        if isinstance(weight, da.Array) or _is_dask_collection(weight):
            w, w_ind = _as_dask(da, weight, "weight").rechunk(-1), ("c",)
        else:
            w = np.ascontiguousarray(as_real_array(weight, "weight"), dtype=np.float64)
        if w.shape != (n_classes,):
            raise ValueError(f"weight must have shape ({n_classes},) (one weight per class), got {w.shape}")

    sw, sw_ind = None, None
    if sample_weight is not None:
        if isinstance(sample_weight, da.Array) or _is_dask_collection(sample_weight):
            sw = _as_dask(da, sample_weight, "sample_weight")
            bcast = da.broadcast_to
        else:
            sw = as_real_array(sample_weight, "sample_weight")
            bcast = np.broadcast_to
        if single:
            sw = sw.reshape((1,) * (sw.ndim + 1) if sw.ndim == 0 else (1,) + sw.shape)
        try:
            if np.broadcast_shapes(sw.shape, row_shape) != row_shape:
                raise ValueError
            sw = bcast(sw, row_shape)
        except ValueError:
            shown = sw.shape[1:] if single else sw.shape
            raise ValueError(
                f"sample_weight of shape {shown} does not broadcast to the target's row shape "
                f"{() if single else row_shape}"
            ) from None
        sw = _rows_like(da, sw, rows)
        sw_ind = ("i",) + tuple(f"d{k}" for k in range(len(shape) - 2))

    extra = tuple(f"d{k}" for k in range(len(shape) - 2))
    x_ind = ("i", "c") + extra
    row_ind = ("i",) + extra
    parts = da.blockwise(
        _ce_chunk, ("i",),
        x, x_ind, tgt, x_ind if probabilities else row_ind, w, w_ind, sw, sw_ind,
        concatenate=True, dtype=object, meta=np.empty((0,), dtype=object),
        ignore_index=ignore_index, reduction=reduction, eps=eps, return_grad=return_grad,
        n_threads=n_threads, probabilities=probabilities,
    )  # fmt: skip
    new_axes = {"c": n_classes, **{k: d for k, d in zip(extra, shape[2:])}}
    out = _assemble(da, parts, ("i",), row_ind, x_ind, new_axes, reduction, return_grad, out_dtype)
    if single:
        loss, grad = out if return_grad else (out, None)
        if reduction == "none":
            loss = loss.reshape(())
        if return_grad:
            grad = grad.reshape((n_classes,))
        out = (loss, grad) if return_grad else loss
    return out


# ---------------------------------------------------------------------------
# Cross-entropy of a linear layer


def _lce_chunk(x, w_lin, t, b, w, sw, *, ignore_index, reduction, eps, return_grad, n_threads, buffer_bytes):
    from . import linear_ce

    red = "none" if reduction == "none" else "sum"
    loss, den, gx, gw, gb = linear_ce.linear_cross_entropy(
        x, w_lin, t, b, w, ignore_index, red, eps, sample_weight=sw, return_grad=return_grad,
        n_threads=n_threads, buffer_bytes=buffer_bytes, _partial=True,
    )  # fmt: skip
    if red == "sum":
        loss = np.array([[loss, den]])
    return loss, gx, gw, gb


def _pick_partial(part, index):
    """A chunk's partial gradient (2 for W, 3 for the bias) in float64, on a new axis 0."""
    return np.asarray(part[index], dtype=np.float64)[None]


def _scaled_sum(total, totals, dtype_, mean):
    if mean:
        with np.errstate(divide="ignore", invalid="ignore"):
            total = total * (np.float64(1.0) / totals[1])
    return total.astype(dtype_, copy=False)


def linear_cross_entropy(
    X,
    W,
    target,
    bias=None,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    *,
    sample_weight=None,
    return_grad=False,
    n_threads=None,
    buffer_bytes=None,
):
    """:func:`fastce.linear_cross_entropy` on Dask arrays chunked along rows.

    Each chunk of rows of `X` runs the NumPy function once (with its logits
    buffer of at most `buffer_bytes`), so no chunk ever holds its N x K logits.
    The chunks' partial gradients with respect to `W` and `bias` are added
    in float64 by a tree reduction.

    Parameters
    ----------
    X : dask.array.Array or array_like of shape (N, D) or (D,)
        Inputs of the linear layer. Chunks along the rows are kept, the
        features are rechunked to one chunk. NumPy input gets the row chunks
        of a Dask `target` or `sample_weight` (else one chunk).
    W : dask.array.Array or array_like of shape (K, D)
        Weight of the linear layer, in one chunk (sent once to each worker
        that runs a chunk).
    target : dask.array.Array or array_like
        Class indices of shape ``(N,)`` or probabilities of shape ``(N, K)``;
        rechunked to `X`'s row chunks.
    bias : dask.array.Array or array_like of shape (K,), default=None
    weight : dask.array.Array or array_like of shape (K,), default=None
        Class weights.
    ignore_index : int, default=-100
    reduction : {"mean", "sum", "none"}, default="mean"
    label_smoothing : float in [0, 1], default=0.0
    sample_weight : dask.array.Array or array_like of shape (N,), default=None
        Rechunked like `target`.
    return_grad : bool, default=False
    n_threads : int, default=None
        Threads of each chunk's kernels and BLAS, in the process that runs it.
    buffer_bytes : int, default=None
        Size of each chunk's logits buffer (None: the default of
        :func:`fastce.linear_cross_entropy`).

    Returns
    -------
    loss : dask.array.Array
        0-d for ``"mean"`` and ``"sum"`` (the mean divides by the global
        denominator), of shape ``(N,)`` chunked like `X`'s rows for ``"none"``.
    grad_X : dask.array.Array
        Only with `return_grad`: chunked like `X`.
    grad_W : dask.array.Array
        Only with `return_grad`: of `W`'s shape, one chunk.
    grad_bias : dask.array.Array or None
        Only with `return_grad`: of shape (K,), None when `bias` is None.

    See Also
    --------
    fastce.linear_cross_entropy : The semantics, on NumPy arrays.

    Examples
    --------
    >>> import dask
    >>> import dask.array as da
    >>> import numpy as np
    >>> import fastce
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((100, 8))
    >>> W = rng.standard_normal((5, 8))
    >>> y = rng.integers(0, 5, size=100)
    >>> out = fastce.linear_cross_entropy(da.from_array(X, chunks=30), W, y, return_grad=True)
    >>> loss, gX, gW, gb = out
    >>> gX.chunks, gW.shape, gb
    (((30, 30, 30, 10), (8,)), (5, 8), None)
    >>> with dask.config.set(scheduler="synchronous"):
    ...     loss, gX, gW = dask.compute(loss, gX, gW)  # each chunk's kernels run once
    >>> expected = fastce.linear_cross_entropy(X, W, y, return_grad=True)
    >>> bool(np.isclose(loss, expected[0], rtol=1e-13) and np.allclose(gW, expected[2], rtol=1e-13))
    True
    """
    from .linear_ce import _check_buffer_bytes

    da = _require_dask()
    reduction = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    ignore_index = check_index(ignore_index, "ignore_index")
    return_grad = check_flag(return_grad, "return_grad")
    n_threads = _check_n_threads(n_threads)
    buffer_bytes = _check_buffer_bytes(buffer_bytes)

    row_chunks = None
    for other in (target, sample_weight):
        if isinstance(other, da.Array) and other.ndim >= 1 and not isinstance(X, da.Array):
            row_chunks = other.chunks[0]
            break
    if row_chunks is not None and np.ndim(X) == 2 and sum(row_chunks) == np.shape(X)[0]:
        x = _as_dask(da, X, "X", chunks=(row_chunks, (np.shape(X)[1],)))
    else:
        x = _as_dask(da, X, "X")
    w_lin = _as_dask(da, W, "W").rechunk(-1)
    out_dtype = np.result_type(_loss_dtype(x, "X"), _loss_dtype(w_lin, "W"))
    if x.ndim not in (1, 2):
        raise ValueError(f"X must have shape (N, D) or (D,), got shape {x.shape}")
    if w_lin.ndim != 2:
        raise ValueError(f"W must have shape (K, D), got shape {w_lin.shape}")
    single = x.ndim == 1
    if single:
        x = x.rechunk(-1).reshape(1, x.shape[0])
    x = x.rechunk({1: -1})
    n, d = x.shape
    k = w_lin.shape[0]
    if w_lin.shape[1] != d:
        raise ValueError(
            f"W must have shape (K, {d}) for X of shape {x.shape[1:] if single else x.shape} "
            f"(same number of features), got {w_lin.shape}"
        )
    if k == 0:
        raise ValueError("W must have at least one row (one class), got shape (0, D)")
    rows = x.chunks[0]
    row_shape = () if single else (n,)

    def one_chunk(value, name):
        if value is None:
            return None, None
        arr = _as_dask(da, value, name).rechunk(-1)
        if arr.shape != (k,):
            what = "one per class, the rows of W" if name == "bias" else "one weight per class"
            raise ValueError(f"{name} must have shape ({k},) ({what}), got {arr.shape}")
        return arr, ("k",)

    b, b_ind = one_chunk(bias, "bias")
    w, w_ind = one_chunk(weight, "weight")

    if isinstance(target, da.Array) or _is_dask_collection(target):
        tgt = _as_dask(da, target, "target")
    else:
        tgt = as_real_array(target, "target")
    prob_shape = (k,) if single else (n, k)
    probabilities = tgt.shape == prob_shape and tgt.dtype.kind == "f"
    if probabilities:
        check_probability_target(tgt, prob_shape, ignore_index)
    else:
        check_class_index_target(tgt, row_shape, prob_shape, "X", x.shape[1:] if single else x.shape)
    if single:
        tgt = tgt.reshape((1,) + tgt.shape)
    tgt = _rows_like(da, tgt, rows)

    sw, sw_ind = None, None
    if sample_weight is not None:
        if isinstance(sample_weight, da.Array) or _is_dask_collection(sample_weight):
            sw = _as_dask(da, sample_weight, "sample_weight")
            bcast = da.broadcast_to
        else:
            sw = as_real_array(sample_weight, "sample_weight")
            bcast = np.broadcast_to
        try:
            if np.broadcast_shapes(sw.shape, row_shape) != row_shape:
                raise ValueError
            sw = bcast(sw, row_shape)
        except ValueError:
            raise ValueError(
                f"sample_weight of shape {sw.shape} does not broadcast to the target's row shape {row_shape}"
            ) from None
        sw = _rows_like(da, sw.reshape((1,)) if single else sw, rows)
        sw_ind = ("i",)

    parts = da.blockwise(
        _lce_chunk, ("i",),
        x, ("i", "d"), w_lin, ("k", "d"), tgt, ("i", "k") if probabilities else ("i",), b, b_ind, w, w_ind,
        sw, sw_ind,
        concatenate=True, dtype=object, meta=np.empty((0,), dtype=object),
        ignore_index=ignore_index, reduction=reduction, eps=eps, return_grad=return_grad,
        n_threads=n_threads, buffer_bytes=buffer_bytes,
    )  # fmt: skip
    out = _assemble(
        da, parts, ("i",), ("i",), ("i", "d"), {"d": d}, reduction, return_grad, out_dtype, with_totals=True
    )
    if not return_grad:
        return out.reshape(()) if single and reduction == "none" else out
    loss, grad_x, totals = out
    mean = reduction == "mean"

    def reduced(index, ind, new_axes):
        partial = da.blockwise(
            _pick_partial, ("i",) + ind, parts, ("i",), index=index,
            new_axes=new_axes, adjust_chunks={"i": 1},
            dtype=np.float64, meta=_meta(len(ind) + 1, np.float64),
        )  # fmt: skip
        total = partial.sum(axis=0, dtype=np.float64)  # a tree reduction over the chunks
        totals_args = (totals, ("_k",)) if mean else (None, None)
        return da.blockwise(
            _scaled_sum, ind, total, ind, *totals_args, concatenate=True,
            dtype=out_dtype, meta=_meta(len(ind), out_dtype), dtype_=out_dtype, mean=mean,
        )  # fmt: skip

    grad_w = reduced(2, ("k", "d"), {"k": k, "d": d})
    grad_b = reduced(3, ("k",), {"k": k}) if b is not None else None
    if single:
        if reduction == "none":
            loss = loss.reshape(())
        grad_x = grad_x.reshape((d,))
    return loss, grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------
# Binary cross-entropy


def _bce_chunk(x, t, w, pw, *, reduction, return_grad, n_threads, logits, scale):
    from .losses import binary_cross_entropy, binary_cross_entropy_with_logits

    x = _upcast16(x)
    red = "none" if reduction == "none" else "sum"
    if logits:
        out = binary_cross_entropy_with_logits(x, t, w, red, pw, return_grad=return_grad, n_threads=n_threads)
    else:
        out = binary_cross_entropy(x, t, w, red, return_grad=return_grad, n_threads=n_threads)
    loss, grad = out if return_grad else (out, None)
    if grad is not None and scale != 1.0:
        grad *= grad.dtype.type(scale)  # our own buffer: "mean" divides by the global size
    if red == "none":
        return loss, grad
    return np.array([np.float64(loss), np.float64(x.size)]).reshape((1,) * x.ndim + (2,)), grad


def _broadcast_operand(da, value, name, x):
    """A weight broadcastable to ``x``: a Dask array of ``x.ndim`` dimensions,
    of length 1 (one chunk) where it broadcasts, chunked like ``x`` elsewhere."""
    if value is None:
        return None, None
    if isinstance(value, da.Array) or _is_dask_collection(value):
        arr = _as_dask(da, value, name)
    else:
        arr = as_real_array(value, name)
    try:
        full = np.broadcast_shapes(arr.shape, x.shape)
    except ValueError:
        full = None
    if full != x.shape:
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the input's shape {x.shape}")
    arr = arr.reshape((1,) * (x.ndim - arr.ndim) + arr.shape)
    chunks = tuple((1,) if d == 1 else c for d, c in zip(arr.shape, x.chunks))
    arr = arr.rechunk(chunks) if isinstance(arr, da.Array) else da.from_array(arr, chunks=chunks)
    return arr, tuple(f"a{k}" for k in range(x.ndim))


def _bce(input, target, weight, pos_weight, reduction, return_grad, grad_out, n_threads, logits):
    """The Dask counterpart of :func:`fastce.losses._bce` (elementwise: any chunking)."""
    da = _require_dask()
    reduction = check_reduction(reduction)
    return_grad = check_flag(return_grad, "return_grad")
    _check_grad_out(grad_out)
    n_threads = _check_n_threads(n_threads)
    if not isinstance(input, da.Array) and isinstance(target, da.Array) and np.shape(input) == target.shape:
        x = _as_dask(da, input, "input", chunks=target.chunks)
    else:
        x = _as_dask(da, input, "input")
    out_dtype = _loss_dtype(x)
    if isinstance(target, da.Array) or _is_dask_collection(target):
        tgt = _as_dask(da, target, "target")
    else:
        tgt = as_real_array(target, "target")
    if tgt.shape != x.shape:
        raise ValueError(f"target must have the same shape as input {x.shape}, got {tgt.shape}")
    tgt = tgt.rechunk(x.chunks) if isinstance(tgt, da.Array) else da.from_array(tgt, chunks=x.chunks)
    w, w_ind = _broadcast_operand(da, weight, "weight", x)
    pw, pw_ind = _broadcast_operand(da, pos_weight, "pos_weight", x)
    ind = tuple(f"a{k}" for k in range(x.ndim))
    scale = 1.0
    if reduction == "mean" and return_grad:
        scale = 1.0 / x.size if x.size else math.nan
    parts = da.blockwise(
        _bce_chunk, ind, x, ind, tgt, ind, w, w_ind, pw, pw_ind,
        dtype=object, meta=_meta(x.ndim, object),
        reduction=reduction, return_grad=return_grad, n_threads=n_threads, logits=logits, scale=scale,
    )  # fmt: skip
    # The chunks scale their gradients themselves (the denominator, the size, is known).
    return _assemble(da, parts, ind, ind, ind, {}, reduction, return_grad, out_dtype, scale_grad=False)


def binary_cross_entropy(
    input, target, weight=None, reduction="mean", *, return_grad=False, grad_out=None, n_threads=None
):
    """:func:`fastce.binary_cross_entropy` on Dask arrays.

    Parameters
    ----------
    input : dask.array.Array or array_like
        Probabilities in [0, 1], in any chunking (the loss is elementwise).
    target : dask.array.Array or array_like of the same shape as `input`
        Rechunked like `input`.
    weight : dask.array.Array or array_like, default=None
        Broadcastable to `input`'s shape.
    reduction : {"mean", "sum", "none"}, default="mean"
    return_grad : bool, default=False
    grad_out : None
        Must be None.
    n_threads : int, default=None
        Threads of each chunk's kernel.

    Returns
    -------
    loss : dask.array.Array
        0-d, or of `input`'s shape for ``"none"``.
    grad : dask.array.Array
        Only with `return_grad`: chunked like `input`.

    See Also
    --------
    fastce.binary_cross_entropy : The semantics, on NumPy arrays.
    """
    return _bce(input, target, weight, None, reduction, return_grad, grad_out, n_threads, logits=False)


def binary_cross_entropy_with_logits(
    input, target, weight=None, reduction="mean", pos_weight=None, *, return_grad=False, grad_out=None, n_threads=None
):
    """:func:`fastce.binary_cross_entropy_with_logits` on Dask arrays.

    Parameters
    ----------
    input : dask.array.Array or array_like
        Logits, in any chunking (the loss is elementwise).
    target : dask.array.Array or array_like of the same shape as `input`
        Rechunked like `input`.
    weight : dask.array.Array or array_like, default=None
        Broadcastable to `input`'s shape.
    reduction : {"mean", "sum", "none"}, default="mean"
    pos_weight : dask.array.Array or array_like, default=None
        Broadcastable to `input`'s shape.
    return_grad : bool, default=False
    grad_out : None
        Must be None.
    n_threads : int, default=None
        Threads of each chunk's kernel.

    Returns
    -------
    loss : dask.array.Array
        0-d, or of `input`'s shape for ``"none"``.
    grad : dask.array.Array
        Only with `return_grad`: chunked like `input`.

    See Also
    --------
    fastce.binary_cross_entropy_with_logits : The semantics, on NumPy arrays.
    """
    return _bce(input, target, weight, pos_weight, reduction, return_grad, grad_out, n_threads, logits=True)


# ---------------------------------------------------------------------------
# logsumexp, softmax, log_softmax


def _as_dask_numeric(da, x, name):
    if isinstance(x, da.Array) or _is_dask_collection(x):
        arr = _as_dask(da, x, name)
    else:
        from ._validation import as_numeric_array

        arr = as_numeric_array(x, name)
        if arr.dtype.kind == "c":
            raise TypeError(f"{name}: complex input is not supported with Dask arrays, got dtype {arr.dtype}")
        arr = da.from_array(arr, chunks=-1)
    return arr


def _lse_pair(a, b, axis, keepdims):
    """float64 ``(log|s|, sign(s))`` of ``s = sum(b * exp(a))`` over ``axis``, stacked on a new axis 0."""
    from .special import logsumexp

    a = np.asarray(a)
    if a.dtype.kind != "f" or a.dtype.itemsize < 8:
        a = a.astype(np.float64)
    if a.size == 0:
        shape = tuple(1 if i in axis else d for i, d in enumerate(a.shape))
        if not keepdims:
            shape = tuple(d for i, d in enumerate(shape) if i not in axis)
        return np.stack([np.full(shape, -np.inf), np.zeros(shape)])  # adds nothing to the sum
    res, sgn = logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    return np.stack([np.asarray(res, dtype=np.float64), np.asarray(sgn, dtype=np.float64)])


def _lse_chunk(a, b=None, *, axes):
    return _lse_pair(a, b, axes, True)


def _lse_identity(p, axis, keepdims):
    return p


def _lse_combine(p, axis, keepdims):
    axes = tuple(i - 1 for i in axis)
    return _lse_pair(p[0], p[1], axes, keepdims)


def _lse_aggregate(p, axis, keepdims, return_sign, dtype_):
    axes = tuple(i - 1 for i in axis)
    res, sgn = _lse_pair(p[0], p[1], axes, keepdims)
    if not return_sign:
        res = np.where(sgn < 0, np.nan, res)  # SciPy: log of a negative sum is NaN
    return np.stack([res, sgn]).astype(dtype_, copy=False)


def _lse_dask(da, a, b, axes, keepdims, return_sign, out_dtype):
    """Lazy ``(res, sign)`` of logsumexp of Dask ``a`` (at least 1-d) over ``axes``, as ``out_dtype``."""
    ind = tuple(f"a{k}" for k in range(a.ndim))
    args = (a, ind) if b is None else (a, ind, b, ind)
    if all(len(a.chunks[i]) == 1 for i in axes):
        # Each block holds whole slices: a blockwise map.
        out_ind = ("_s",) + tuple(ix for i, ix in enumerate(ind) if keepdims or i not in axes)
        pairs = da.blockwise(
            _lse_whole, out_ind, *args, new_axes={"_s": 2},
            adjust_chunks={ind[i]: 1 for i in axes} if keepdims else None, concatenate=True,
            dtype=out_dtype, meta=_meta(len(out_ind), out_dtype),
            axes=axes, keepdims=keepdims, return_sign=return_sign, dtype_=out_dtype,
        )  # fmt: skip
    else:
        # One float64 (log|s|, sign) pair per block and slice, merged by a tree reduction.
        partial = da.blockwise(
            _lse_chunk, ("_s",) + ind, *args, new_axes={"_s": 2}, adjust_chunks={ind[i]: 1 for i in axes},
            dtype=np.float64, meta=_meta(a.ndim + 1, np.float64), axes=axes,
        )  # fmt: skip
        pairs = da.reduction(
            partial, _lse_identity, functools.partial(_lse_aggregate, return_sign=return_sign, dtype_=out_dtype),
            axis=tuple(i + 1 for i in axes), keepdims=keepdims, dtype=out_dtype, combine=_lse_combine,
            concatenate=True, meta=_meta(a.ndim + 1 - (0 if keepdims else len(axes)), out_dtype),
        )  # fmt: skip
    return pairs[0], pairs[1]


def _lse_whole(a, b=None, *, axes, keepdims, return_sign, dtype_):
    """logsumexp of a block holding whole slices: (res, sign) stacked on axis 0."""
    from .special import logsumexp

    if return_sign:
        res, sgn = logsumexp(a, axis=axes, b=b, keepdims=keepdims, return_sign=True)
    else:
        res = logsumexp(a, axis=axes, b=b, keepdims=keepdims)
        sgn = np.zeros_like(res)  # not returned
    return np.stack([np.asarray(res), np.asarray(sgn)]).astype(dtype_, copy=False)


def _lse_out_dtype(a, b, b_given):
    if b is None:
        dtype = a.dtype
    else:
        weak = isinstance(b_given, (bool, int, float)) and not isinstance(b_given, np.generic)
        dtype = np.result_type(a.dtype, b_given if weak else b.dtype)
    return np.dtype(np.float64) if dtype.kind in "biu" else np.dtype(dtype.type)


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """:func:`fastce.logsumexp` on Dask arrays, reduced across chunks by a tree.

    Parameters
    ----------
    a : dask.array.Array or array_like
        Real input, any chunking.
    axis : None or int or tuple of ints, default=None
    b : dask.array.Array or array_like, default=None
        Broadcast together with `a`.
    keepdims : bool, default=False
    return_sign : bool, default=False

    Returns
    -------
    res : dask.array.Array
    sgn : dask.array.Array
        Only with `return_sign`.

    See Also
    --------
    fastce.logsumexp : The semantics, on NumPy arrays.
    """
    da = _require_dask()
    keepdims = check_flag(keepdims, "keepdims")
    return_sign = check_flag(return_sign, "return_sign")
    arr = _as_dask_numeric(da, a, "a")
    bb = None if b is None else _as_dask_numeric(da, b, "b")
    out_dtype = _lse_out_dtype(arr, bb, b)
    if bb is not None:
        try:
            arr, bb = da.broadcast_arrays(arr, bb)
        except ValueError:
            raise ValueError(f"b of shape {bb.shape} does not broadcast with a of shape {arr.shape}") from None
        bb = bb.rechunk(arr.chunks)
    zero_d = arr.ndim == 0
    if zero_d:
        arr = arr.reshape(1)
        bb = None if bb is None else bb.reshape(1)
    axes = normalize_axes(axis, arr.ndim)
    if any(arr.shape[i] == 0 for i in axes):
        # An empty sum: -inf with sign -1, as SciPy (and fastce.logsumexp).
        shape = tuple(1 if i in axes else d for i, d in enumerate(arr.shape))
        if not keepdims:
            shape = tuple(d for i, d in enumerate(shape) if i not in axes)
        res = da.full(shape, -np.inf, dtype=out_dtype)
        sgn = da.full(shape, -1, dtype=out_dtype)
    else:
        res, sgn = _lse_dask(da, arr, bb, axes, keepdims, return_sign, out_dtype)
    return (res, sgn) if return_sign else res


def _softmax_whole(x, *, axes, func_name, dtype_):
    from . import special

    out = getattr(special, func_name)(x, axis=axes)
    return np.asarray(out).astype(dtype_, copy=False)


def _shift(x, m):
    with np.errstate(invalid="ignore"):  # inf - inf: NaN, as in SciPy
        return np.asarray(x, dtype=np.float64) - m


def _softmax_from_max(x, m, l, *, log, dtype_):
    """(log-)softmax of a block from the slices' maximum ``m`` and ``l = log(sum(exp(x - m)))``."""
    with np.errstate(invalid="ignore"):
        shifted = np.asarray(x, dtype=np.float64) - m
        d = shifted - l  # as the NumPy kernel: no cancellation near the maximum
        # A slice whose maximum is +inf: SciPy's softmax is NaN, its log_softmax x - inf.
        out = np.where(np.isposinf(m), shifted, d) if log else np.where(np.isposinf(m), np.nan, np.exp(d))
    return out.astype(dtype_, copy=False)


def _softmax_like(x, axis, name):
    from .special import _exp_result_dtype

    da = _require_dask()
    arr = _as_dask_numeric(da, x, "x")
    out_dtype = _exp_result_dtype(arr.dtype)
    scalar = arr.ndim == 0
    if scalar:
        arr = arr.reshape(1)
    axes = normalize_axes(axis, arr.ndim) if not scalar else (0,)
    if any(arr.shape[i] == 0 for i in axes):
        raise ValueError(f"{name} along an axis of length 0 is undefined (x has shape {arr.shape}, axis={axis})")
    ind = tuple(f"a{k}" for k in range(arr.ndim))
    if all(len(arr.chunks[i]) == 1 for i in axes):
        out = da.blockwise(
            _softmax_whole, ind, arr, ind, dtype=out_dtype, meta=_meta(arr.ndim, out_dtype),
            axes=axes, func_name=name, dtype_=out_dtype,
        )  # fmt: skip
    else:
        # Global maximum m (a tree reduction), then l = log(sum(exp(x - m))) (a tree of
        # logsumexp pairs), then one blockwise pass: x - m - l (exact near the maximum).
        m = arr.max(axis=axes, keepdims=True).astype(np.float64)
        shifted = da.blockwise(_shift, ind, arr, ind, m, ind, dtype=np.float64, meta=_meta(arr.ndim, np.float64))
        l, _ = _lse_dask(da, shifted, None, axes, True, True, np.dtype(np.float64))
        out = da.blockwise(
            _softmax_from_max, ind, arr, ind, m, ind, l, ind, dtype=out_dtype, meta=_meta(arr.ndim, out_dtype),
            log=name == "log_softmax", dtype_=out_dtype,
        )  # fmt: skip
    return out.reshape(()) if scalar else out


def softmax(x, axis=None):
    """:func:`fastce.softmax` on Dask arrays.

    Over axes in one chunk it is a blockwise map; across chunks the global
    logsumexp is reduced first (a tree), then ``exp(x - lse)`` is taken blockwise.

    Parameters
    ----------
    x : dask.array.Array or array_like
    axis : int or tuple of ints, default=None

    Returns
    -------
    s : dask.array.Array
        Chunked like `x`.

    See Also
    --------
    fastce.softmax : The semantics, on NumPy arrays.
    """
    return _softmax_like(x, axis, "softmax")


def log_softmax(x, axis=None):
    """:func:`fastce.log_softmax` on Dask arrays (see :func:`softmax`).

    Parameters
    ----------
    x : dask.array.Array or array_like
    axis : int or tuple of ints, default=None

    Returns
    -------
    s : dask.array.Array
        Chunked like `x`.

    See Also
    --------
    fastce.log_softmax : The semantics, on NumPy arrays.
    """
    return _softmax_like(x, axis, "log_softmax")


# ---------------------------------------------------------------------------
# sigmoid, log_sigmoid


def _elementwise_block(x, *, func_name, dtype_):
    from . import special

    return np.asarray(getattr(special, func_name)(x)).astype(dtype_, copy=False)


def _elementwise(x, name):
    from .special import _expit_result_dtype

    da = _require_dask()
    arr = _as_dask_numeric(da, x, "x")
    out_dtype = _expit_result_dtype(arr.dtype)
    ind = tuple(f"a{k}" for k in range(arr.ndim))
    return da.blockwise(
        _elementwise_block, ind, arr, ind,
        dtype=out_dtype, meta=_meta(arr.ndim, out_dtype), func_name=name, dtype_=out_dtype,
    )  # fmt: skip


def sigmoid(x):
    """:func:`fastce.sigmoid` on Dask arrays, blockwise.

    Parameters
    ----------
    x : dask.array.Array or array_like

    Returns
    -------
    dask.array.Array
        Chunked like `x`.

    See Also
    --------
    fastce.sigmoid : The semantics, on NumPy arrays.
    """
    return _elementwise(x, "sigmoid")


def log_sigmoid(x):
    """:func:`fastce.log_sigmoid` on Dask arrays, blockwise.

    Parameters
    ----------
    x : dask.array.Array or array_like

    Returns
    -------
    dask.array.Array
        Chunked like `x`.

    See Also
    --------
    fastce.log_sigmoid : The semantics, on NumPy arrays.
    """
    return _elementwise(x, "log_sigmoid")
