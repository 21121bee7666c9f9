"""Numerically stable primitives with :mod:`scipy.special` semantics.

:func:`logsumexp`, :func:`softmax`, :func:`log_softmax`, :func:`sigmoid`
(``scipy.special.expit``) and :func:`log_sigmoid` (``scipy.special.log_expit``)
take the same arguments and return the same shapes, dtypes and special values
as SciPy for real input, computed by parallel Numba kernels with float64
arithmetic inside.
"""

import functools

import numpy as np

from . import _kernels as K
from ._config import run_kernel
from ._validation import as_numeric_array, check_flag, from_rows, normalize_axes, to_rows
from .dask import _is_dask_collection

__all__ = ["logsumexp", "softmax", "log_softmax", "sigmoid", "log_sigmoid"]

_ELEMENTWISE_BLOCK = 1 << 14


def _kernel_dtype(dtype):
    """float32 for float16/float32, float64 for float64; None when Numba's
    kernels cannot represent the dtype (long double, complex)."""
    if dtype.kind != "f" or dtype.itemsize > 8:
        return None
    return np.dtype(np.float32) if dtype.itemsize <= 4 else np.dtype(np.float64)


@functools.lru_cache(maxsize=None)
def _exp_result_dtype(dtype):
    # What numpy's exp (loops e, f, d, g) turns this dtype into, as in SciPy's
    # softmax, which exponentiates its input as given.
    return np.exp(np.empty(0, dtype=dtype)).dtype


@functools.lru_cache(maxsize=None)
def _expit_result_dtype(dtype):
    # What the ufuncs scipy.special.expit / log_expit return (loops d->d,
    # f->f, g->g): float32 stays float32, long double stays long double,
    # every other real dtype (bool, integers, float16) gives float64.
    if dtype.kind == "f" and dtype.itemsize in (4, np.dtype(np.longdouble).itemsize):
        return np.dtype(dtype.type)
    return np.dtype(np.float64)


def _check_out(out, shape, dtype, name):
    """The caller's ``out`` for a result of ``shape`` and ``dtype``: checked."""
    if not isinstance(out, np.ndarray):
        raise TypeError(f"out must be a NumPy array, got {type(out).__name__}")
    if out.shape != shape or out.dtype != dtype:
        raise ValueError(
            f"out must have the shape {shape} and dtype {dtype} of the result of {name}, "
            f"got shape {out.shape} and dtype {out.dtype}"
        )
    if not out.flags.writeable:
        raise ValueError("out must be writeable")
    return out


def _direct_out(out, compute, *inputs):
    """Whether the kernel can write into ``out`` itself: C-contiguous, native,
    of the kernel's dtype and sharing no memory with the inputs (else the
    result is computed into a new array and copied into ``out``, as NumPy's
    ufuncs do when ``out`` overlaps an input)."""
    return (
        out.flags.c_contiguous and out.dtype == compute and out.dtype.isnative
        and not any(np.may_share_memory(out, a) for a in inputs)
    )  # fmt: skip


def logsumexp(a, axis=None, b=None, keepdims=False, return_sign=False):
    """Compute the log of the sum of exponentials of input elements.

    Same signature and results as :func:`scipy.special.logsumexp` for real
    input: the maximum term is taken out of the sum (``log1p`` of the rest)
    for precision and the sums are accumulated in float64.

    Parameters
    ----------
    a : array_like
        Input array. Integer input is promoted to float64; float32 stays
        float32.
    axis : None or int or tuple of ints, default=None
        Axis or axes over which the sum is taken; ``None`` sums all elements.
    b : array_like, default=None
        Scaling factors for ``exp(a)``, broadcast together with `a`. They may
        be negative (subtraction); where ``b == 0`` the element of `a` is
        ignored, even if it is infinite or NaN.
    keepdims : bool, default=False
        Keep the reduced axes as dimensions of size one.
    return_sign : bool, default=False
        Also return the sign of the sum. Without it, a negative sum gives NaN.

    Returns
    -------
    res : ndarray or scalar
        ``log(sum(b * exp(a)))`` along `axis` (``log(abs(...))`` with
        `return_sign`). A 0-d result is returned as a NumPy scalar.
    sgn : ndarray or scalar
        Only with `return_sign`: the sign (+1, 0, -1) of the sum, or NaN.

    See Also
    --------
    scipy.special.logsumexp : The reference semantics.
    softmax : The gradient of logsumexp.

    Notes
    -----
    Edge cases follow SciPy: a row of ``-inf`` gives ``-inf`` (sign 0), an
    empty reduction gives ``-inf`` (sign -1), ``+inf`` gives ``inf`` and NaN
    propagates. Complex and long double input are handed to
    :func:`scipy.special.logsumexp` unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import logsumexp
    >>> float(logsumexp(np.arange(10)))
    9.45862974442671
    >>> logsumexp([[0.0, -np.inf], [1000.0, 1000.0]], axis=1)
    array([   0.        , 1000.69314718])
    >>> logsumexp([1, 2], b=[1, -1], return_sign=True)
    (np.float64(1.5413248546129181), np.float64(-1.0))
    """
    if _is_dask_collection(a, b):
        from . import dask

        return dask.logsumexp(a, axis, b, keepdims, return_sign)
    arr = as_numeric_array(a, "a")
    bb = None if b is None else as_numeric_array(b, "b")
    keepdims = check_flag(keepdims, "keepdims")
    return_sign = check_flag(return_sign, "return_sign")
    if bb is None:
        dtype = arr.dtype
    else:
        # A Python scalar b is "weak" (NEP 50): float32 a with b=2.0 stays float32.
        weak = isinstance(b, (bool, int, float)) and not isinstance(b, np.generic)
        dtype = np.result_type(arr.dtype, b if weak else bb.dtype)
    dtype = np.dtype(np.float64) if dtype.kind in "biu" else np.dtype(dtype.type)  # native byte order
    compute = _kernel_dtype(dtype)
    if compute is None:
        from scipy.special import logsumexp as scipy_logsumexp

        return scipy_logsumexp(arr, axis=axis, b=bb, keepdims=keepdims, return_sign=return_sign)
    if bb is not None:
        try:
            arr, bb = np.broadcast_arrays(arr, bb)
        except ValueError:
            raise ValueError(f"b of shape {bb.shape} does not broadcast with a of shape {arr.shape}") from None
        bb = np.atleast_1d(bb)
    arr = np.atleast_1d(arr)
    axes = normalize_axes(axis, arr.ndim)
    reduced_shape = tuple(1 if i in axes else d for i, d in enumerate(arr.shape))
    if arr.size == 0:
        out = np.full(reduced_shape, -np.inf, dtype=dtype)
        sgn = np.sign(out)
    else:
        x2, kept = to_rows(arr, axes, compute)
        b2 = to_rows(bb, axes, compute)[0] if bb is not None else np.zeros((1, 1), dtype=compute)
        out = np.empty(x2.shape[0], dtype=compute)
        sgn = np.empty(x2.shape[0], dtype=compute)
        if bb is None and _split_rows(x2):
            m, s, c, _ = _segment_stats(x2)
            with np.errstate(all="ignore"):
                out[:] = np.log1p(s / c) + np.log(c) + m  # as K._lse_row, in float64
            sgn[:] = 1.0
            e = np.empty(x2.shape[1], dtype=compute)
            for i in np.flatnonzero(~np.isfinite(out)):
                out[i], sgn[i] = K._lse_row(x2[i], x2[i], False, return_sign, e)
        else:
            if bb is None and x2.shape[1] * x2.itemsize <= K.TILE_MAX_BYTES:  # whole tiles of K.LANES rows
                block = K.LANES * max(1, min(64, (1 << 14) // (x2.shape[1] * K.LANES)))
            else:
                block = max(1, min(4096, (1 << 14) // x2.shape[1]))
            run_kernel(
                K.logsumexp_par, K.logsumexp_ser, None, x2.size,
                x2, b2, int(bb is not None), return_sign, out, sgn, block,
            )  # fmt: skip
        out = out.astype(dtype, copy=False).reshape(reduced_shape)
        sgn = sgn.astype(dtype, copy=False).reshape(reduced_shape)
    if not keepdims:
        out = out.reshape(tuple(d for i, d in enumerate(reduced_shape) if i not in axes))
        sgn = sgn.reshape(out.shape)
    if out.ndim == 0:
        out, sgn = out[()], sgn[()]
    return (out, sgn) if return_sign else out


def _split_rows(x2):
    """Few long rows: split each in segments that the threads share (the
    choice depends on the shape only, so results do not depend on threads)."""
    return x2.shape[0] <= K.SPLIT_MAX_ROWS and x2.shape[1] >= K.SPLIT_MIN_COLS


def _segment_stats(x2, n_threads=None):
    """Per row of ``x2``: its maximum (in x2's dtype), the float64 sum of
    exp(x - max) off the maximum and the count of the maximum, from the
    segments; and the number of segments per row."""
    n_rows, n_cols = x2.shape
    n_seg = (n_cols + K.SEGMENT - 1) // K.SEGMENT
    M = np.empty(n_rows * n_seg, dtype=x2.dtype)
    S = np.empty(n_rows * n_seg)
    Cn = np.empty(n_rows * n_seg)
    run_kernel(K.segment_stats_par, K.segment_stats_ser, n_threads, x2.size, x2, n_seg, M, S, Cn)
    m = np.empty(n_rows, dtype=x2.dtype)
    s = np.empty(n_rows)
    c = np.empty(n_rows)
    K.merge_segments(n_seg, M, S, Cn, m, s, c)
    return m, s, c, n_seg


def _softmax_like(x, axis, name, out=None):
    if _is_dask_collection(x):
        if out is not None:
            raise TypeError(f"out is not supported for Dask input of {name} (it returns a lazy Dask array)")
        from . import dask

        return dask._softmax_like(x, axis, name)
    arr = as_numeric_array(x, "x")
    out_dtype = _exp_result_dtype(arr.dtype)
    if out is not None:
        _check_out(out, arr.shape, out_dtype, name)
    compute = _kernel_dtype(out_dtype)
    if compute is None:
        import scipy.special

        res = getattr(scipy.special, name)(arr, axis=axis)
        if out is None:
            return res
        np.copyto(out, res)
        return out
    scalar = arr.ndim == 0
    axes = normalize_axes(axis, arr.ndim)
    if scalar:
        arr = arr.reshape(1)
        axes = (0,)
    if any(arr.shape[i] == 0 for i in axes):
        raise ValueError(f"{name} along an axis of length 0 is undefined (x has shape {arr.shape}, axis={axis})")
    x2, kept = to_rows(arr, axes, compute)
    trailing = tuple(axes) == tuple(range(arr.ndim - len(axes), arr.ndim))
    direct = out is not None and trailing and _direct_out(out, compute, arr, x2)
    out2 = out.reshape(x2.shape) if direct else np.empty_like(x2)
    if _split_rows(x2):
        log = name == "log_softmax"
        m, s, c, n_seg = _segment_stats(x2)
        with np.errstate(all="ignore"):
            a = np.log1p(s + (c - 1.0)) if log else 1.0 / (s + c)  # as K._log_softmax_row / K._softmax_row
        run_kernel(K.segment_apply_par, K.segment_apply_ser, None, x2.size, x2, n_seg, m, a, log, out2)
        for i in np.flatnonzero(~np.isfinite(m)):
            (K._log_softmax_row if log else K._softmax_row)(x2[i], out2[i], 0)
    else:
        # rows per prange block, from the shape only: tiles of K.LANES short
        # rows, or one row at a time for rows of many elements
        if x2.shape[1] * x2.itemsize <= K.TILE_MAX_BYTES:
            block = K.LANES * max(1, min(64, (1 << 14) // (x2.shape[1] * K.LANES)))
        else:
            block = 1
        run_kernel(K.softmax_rows_par, K.softmax_rows_ser, None, x2.size, x2, out2, name == "log_softmax", block)
    if direct:
        return out
    res = from_rows(out2, arr.shape, axes)
    if out is not None:
        np.copyto(out, res.reshape(out.shape))
        return out
    res = np.ascontiguousarray(res, dtype=out_dtype)
    return res.reshape(())[()] if scalar else res


def softmax(x, axis=None, *, out=None):
    r"""Compute the softmax function.

    ``exp(x) / sum(exp(x))`` along `axis`, with the maximum subtracted first
    so that nothing overflows; same semantics as :func:`scipy.special.softmax`.

    Parameters
    ----------
    x : array_like
        Input array.
    axis : int or tuple of ints, default=None
        Axis to compute values along. ``None`` uses the entire array.
    out : ndarray, optional
        Array to write the result into (an extension: SciPy's ``softmax``
        has no `out`), of the result's shape and dtype. A C-contiguous
        `out` that shares no memory with `x` is written by the kernel
        directly, with `axis` the last axis (or ``None``); otherwise the result
        is computed into a new array and copied into `out`, so ``out=x``
        works (as with NumPy's ufuncs). Reusing one `out` across calls saves
        the page faults of a fresh result array, which on large inputs cost
        about as much as the computation itself (see :doc:`/benchmarks`).

    Returns
    -------
    s : ndarray
        Same shape as `x`; sums to 1 along `axis`. The dtype is what NumPy's
        ``exp`` gives for ``x.dtype`` (float32 stays float32, int64 gives
        float64). `out` itself when given.

    See Also
    --------
    scipy.special.softmax : The reference semantics.
    log_softmax : Its logarithm, computed without loss of precision.

    Notes
    -----
    .. math:: \sigma(x)_j = \frac{e^{x_j - m}}{\sum_k e^{x_k - m}}, \quad m = \max_k x_k

    A slice whose maximum is ``+inf`` or whose elements are all ``-inf``
    gives NaN, as in SciPy; NaN propagates along its slice.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import softmax
    >>> softmax(np.array([[1.0, 2.0, 3.0], [1000.0, 1000.0, -np.inf]]), axis=1)
    array([[0.09003057, 0.24472847, 0.66524096],
           [0.5       , 0.5       , 0.        ]])
    >>> buf = np.empty(3)
    >>> softmax(np.array([0.0, 0.0, np.log(2.0)]), out=buf) is buf
    True
    >>> buf
    array([0.25, 0.25, 0.5 ])
    """
    return _softmax_like(x, axis, "softmax", out)


def log_softmax(x, axis=None, *, out=None):
    r"""Compute the logarithm of the softmax function.

    ``x - logsumexp(x, axis, keepdims=True)``, accurate where ``softmax``
    would underflow; same semantics as :func:`scipy.special.log_softmax`.

    Parameters
    ----------
    x : array_like
        Input array.
    axis : int or tuple of ints, default=None
        Axis to compute values along. ``None`` uses the entire array.
    out : ndarray, optional
        Array to write the result into, as for :func:`softmax`.

    Returns
    -------
    s : ndarray or scalar
        Same shape as `x`; ``exp(s)`` sums to 1 along `axis`. `out` itself
        when given.

    See Also
    --------
    scipy.special.log_softmax : The reference semantics.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import log_softmax
    >>> log_softmax(np.array([1000.0, 1.0]))
    array([   0., -999.])
    """
    return _softmax_like(x, axis, "log_softmax", out)


def _elementwise(x, log, name, out=None):
    if _is_dask_collection(x):
        if out is not None:
            raise TypeError(f"out is not supported for Dask input of {name} (it returns a lazy Dask array)")
        from . import dask

        return dask._elementwise(x, name)
    arr = as_numeric_array(x, "x")
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} is defined for real input, got complex dtype {arr.dtype}")
    out_dtype = _expit_result_dtype(arr.dtype)
    if out is not None:
        _check_out(out, arr.shape, out_dtype, name)
    if _kernel_dtype(out_dtype) != out_dtype:
        import scipy.special

        return (scipy.special.log_expit if log else scipy.special.expit)(arr, out=out)
    flat = np.ascontiguousarray(arr, dtype=out_dtype).reshape(-1)
    direct = out is not None and _direct_out(out, out_dtype, arr, flat)
    res = out if direct else np.empty(arr.shape, dtype=out_dtype)
    run_kernel(K.sigmoid_par, K.sigmoid_ser, None, flat.size, flat, res.reshape(-1), log, _ELEMENTWISE_BLOCK)
    if out is not None:
        if not direct:
            np.copyto(out, res)
        return out
    return res[()] if res.ndim == 0 else res


def sigmoid(x, *, out=None):
    r"""Logistic sigmoid ``1 / (1 + exp(-x))``, elementwise (:func:`scipy.special.expit`).

    Parameters
    ----------
    x : array_like
        Real input.
    out : ndarray, optional
        Array to write the result into, of the result's shape and dtype (as
        the `out` of the ufunc ``expit``). Written by the kernel directly
        when C-contiguous and sharing no memory with `x`; otherwise through
        a new array, so ``out=x`` works.

    Returns
    -------
    ndarray or scalar
        Same shape as `x`, in the dtype ``scipy.special.expit`` returns
        (float32 for float32, float64 for every other real dtype but long
        double, which SciPy itself computes). `out` itself when given.

    Notes
    -----
    Evaluated as ``1 / (1 + exp(-x))`` for ``x >= 0`` and
    ``exp(x) / (1 + exp(x))`` for ``x < 0``, so it never overflows and keeps
    full relative precision for very negative ``x`` (where SciPy returns 0
    below about -709, this returns the subnormal result).

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import sigmoid
    >>> sigmoid(np.array([-1000.0, 0.0, 2.0]))
    array([0.        , 0.5       , 0.88079708])
    """
    return _elementwise(x, False, "sigmoid", out)


def log_sigmoid(x, *, out=None):
    r"""Logarithm of the logistic sigmoid, elementwise (:func:`scipy.special.log_expit`).

    Parameters
    ----------
    x : array_like
        Real input.
    out : ndarray, optional
        Array to write the result into, as for :func:`sigmoid`.

    Returns
    -------
    ndarray or scalar
        Same shape as `x`, in the dtype ``scipy.special.log_expit`` returns.
        `out` itself when given.

    Notes
    -----
    ``x - log1p(exp(x))`` for ``x < 0`` and ``-log1p(exp(-x))`` otherwise:
    accurate for large ``|x|`` in both directions.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import log_sigmoid
    >>> log_sigmoid(np.array([-1000.0, 0.0, 40.0]))
    array([-1.00000000e+03, -6.93147181e-01, -4.24835426e-18])
    """
    return _elementwise(x, True, "log_sigmoid", out)
