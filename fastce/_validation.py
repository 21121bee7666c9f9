"""Argument checking and conversion shared by the public wrappers.

Every error names the argument and says what was expected. Nothing here
modifies its input: conversions copy when (and only when) the dtype, the byte
order or the memory layout has to change.
"""

import math
import numbers
import operator

import numpy as np

try:
    from numpy.lib.array_utils import normalize_axis_index, normalize_axis_tuple
except ImportError:  # numpy < 2
    from numpy.core.multiarray import normalize_axis_index
    from numpy.core.numeric import normalize_axis_tuple

REDUCTIONS = ("none", "mean", "sum")


def as_numeric_array(x, name):
    """``np.asarray(x)`` for a real or complex numeric array_like, else an error naming ``name``."""
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{name} must be array_like of numbers ({exc})") from None
    except Exception as exc:
        # e.g. a torch tensor that requires grad ("Can't call numpy() on
        # Tensor that requires grad"), a GPU tensor, a lazy array that
        # refuses conversion
        raise TypeError(
            f"{name} must be array_like of numbers; converting the {type(x).__module__}.{type(x).__name__} "
            f"with numpy.asarray failed: {exc}"
        ) from None
    if arr.dtype.kind not in "biufc":
        raise TypeError(f"{name} must hold numbers, got an array of dtype {arr.dtype}")
    return arr


def as_real_array(x, name):
    """Like :func:`as_numeric_array`, rejecting complex input."""
    arr = as_numeric_array(x, name)
    if arr.dtype.kind == "c":
        raise TypeError(f"{name} must be real, got complex dtype {arr.dtype}")
    return arr


def loss_input(x, name="input"):
    """Validate the floating input of a loss.

    Returns ``(array, out_dtype)``: the array C-contiguous, native byte order,
    float32 or float64 (float16 is computed in float32), and the dtype the
    results are returned in.
    """
    arr = as_real_array(x, name)
    if arr.dtype.kind != "f":
        raise TypeError(f"{name} must be a floating-point array (float16, float32 or float64), got dtype {arr.dtype}")
    if arr.dtype.itemsize > 8:
        raise TypeError(f"{name} must be float16, float32 or float64, got {arr.dtype} (convert it to float64)")
    compute = np.dtype(np.float32) if arr.dtype.itemsize <= 4 else np.dtype(np.float64)
    # astype, not ascontiguousarray: the latter turns a 0-d array into shape (1,).
    return arr.astype(compute, order="C", copy=False), np.dtype(arr.dtype.newbyteorder("="))


def check_reduction(reduction):
    if not isinstance(reduction, str) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_label_smoothing(label_smoothing):
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, numbers.Real):
        raise TypeError(f"label_smoothing must be a float in [0, 1], got {type(label_smoothing).__name__}")
    value = float(label_smoothing)
    if not (0.0 <= value <= 1.0):
        raise ValueError(f"label_smoothing must be in [0, 1], got {label_smoothing!r}")
    return value


def check_index(value, name):
    """An integer argument such as ``ignore_index``."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None


def check_flag(value, name):
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return bool(value)


def broadcast_2d(value, name, shape, rows, cols, dtype):
    """Express an operand broadcastable to ``shape`` on the 2-D view
    ``(rows, cols)`` of that shape, as a C-contiguous array of shape
    ``(1 or rows, 1 or cols)`` (broadcast along an axis = length 1 there).

    The 2-D view is ``(prod(shape[:-1]), shape[-1])`` for ndim >= 2,
    ``(1, shape[0])`` for 1-D and ``(1, 1)`` for 0-d shapes. An operand that
    varies along some but not all leading axes is materialised at full size.
    """
    arr = as_real_array(value, name)
    try:
        full = np.broadcast_shapes(arr.shape, shape)
    except ValueError:
        full = None
    if full != tuple(shape):
        raise ValueError(f"{name} of shape {arr.shape} does not broadcast to the input's shape {tuple(shape)}")
    nd = len(shape)
    arr = arr.reshape((1,) * (nd - arr.ndim) + arr.shape)
    if nd == 0:
        out = arr.reshape(1, 1)
    elif nd == 1:
        out = arr.reshape(1, -1)
    else:
        lead = arr.shape[:-1]
        if all(d == 1 for d in lead):
            out = arr.reshape(1, arr.shape[-1])
        elif lead == tuple(shape[:-1]):
            out = np.ascontiguousarray(arr, dtype=dtype).reshape(rows, arr.shape[-1])
        else:
            out = np.broadcast_to(arr, shape).reshape(rows, cols)
    return np.ascontiguousarray(out, dtype=dtype)


def normalize_axes(axis, ndim, name="axis"):
    """Axes as a tuple of non-negative ints (``None`` = all), numpy's errors for bad ones."""
    if axis is None:
        return tuple(range(ndim))
    if isinstance(axis, (int, np.integer)) and not isinstance(axis, (bool, np.bool_)):
        return (normalize_axis_index(int(axis), ndim, name),)  # what normalize_axis_tuple does per axis
    return normalize_axis_tuple(axis, ndim, name)


def to_rows(arr, axes, dtype):
    """Move ``axes`` to the end and view ``arr`` as C-contiguous 2-D (rows, reduced size).

    Returns ``(rows2d, kept_shape)`` where ``kept_shape`` is the shape of the
    axes not reduced, in their original order. Copies only when needed.
    """
    nd = arr.ndim
    k = len(axes)
    trailing = tuple(range(nd - k, nd))
    moved = np.moveaxis(arr, axes, trailing) if k and tuple(axes) != trailing else arr
    kept = moved.shape[: nd - k]
    width = math.prod(moved.shape[nd - k :])
    return np.ascontiguousarray(moved, dtype=dtype).reshape(math.prod(kept), width), kept


def from_rows(rows2d, arr_shape, axes):
    """Inverse of :func:`to_rows` for a result with the input's shape."""
    nd = len(arr_shape)
    k = len(axes)
    moved_shape = tuple(arr_shape[i] for i in range(nd) if i not in axes) + tuple(arr_shape[i] for i in axes)
    out = rows2d.reshape(moved_shape)
    if k and tuple(axes) != tuple(range(nd - k, nd)):
        out = np.moveaxis(out, tuple(range(nd - k, nd)), axes)
    return out


def check_probability_target(tgt, input_shape, ignore_index):
    """A target of the input's shape holds class probabilities: floating
    point, and no ignore_index (PyTorch's rule)."""
    if tgt.dtype.kind != "f":
        raise TypeError(
            f"target has the shape of input {input_shape}, so it holds class probabilities and must be "
            f"floating point, got dtype {tgt.dtype} (class indices have input's shape without the class axis)"
        )
    if ignore_index >= 0:
        raise ValueError(
            f"ignore_index={ignore_index} is not supported with class-probability targets; leave it negative"
        )


def check_class_index_target(tgt, row_shape, prob_shape, input_name, input_shape):
    """The dtype and shape of a class-index target (the values are checked by the kernels' pass)."""
    if tgt.dtype.kind not in "iu":
        raise TypeError(
            f"target must hold integer class indices of shape {row_shape} or class probabilities of "
            f"shape {prob_shape}; got dtype {tgt.dtype} and shape {tgt.shape}"
        )
    if tgt.shape != row_shape:
        raise ValueError(
            f"target of class indices must have shape {row_shape} for {input_name} of shape {input_shape} "
            f"(or {prob_shape} for class probabilities), got {tgt.shape}"
        )


def class_index_target(tgt, row_shape, prob_shape, input_name, input_shape, n_classes, ignore_index, stats):
    """Check a class-index target and run the kernel's pass over it.

    ``tgt`` must be integer of shape ``row_shape`` (``prob_shape`` is named
    in the errors as the shape of probability targets). ``stats(t)`` is
    :func:`fastce.losses._index_target_stats` with the weights bound; its
    first result, the first invalid position, becomes the error. Returns
    ``(t, count, denominator)`` with ``t`` the flat intp targets.
    """
    check_class_index_target(tgt, row_shape, prob_shape, input_name, input_shape)
    if tgt.dtype.kind == "u" and tgt.size and tgt.max() > np.iinfo(np.intp).max:
        raise ValueError(f"target holds class index {tgt.max()}; expected values in [0, {n_classes})")
    t = np.ascontiguousarray(tgt, dtype=np.intp).reshape(-1)
    bad, count, denominator = stats(t)
    if bad >= 0:
        where = np.unravel_index(bad, row_shape) if row_shape else ()
        raise ValueError(
            f"target holds class index {t[bad]} at position {tuple(int(i) for i in where)}; expected values "
            f"in [0, {n_classes}) or ignore_index={ignore_index}"
        )
    return t, count, denominator


def row_weights(sample_weight, row_shape):
    """``(sw, sw_step)`` for the kernels: float64 weights per row of the
    target (broadcast to ``row_shape``, flat) with step 1, or ``(ones(1), 0)``
    without weights."""
    if sample_weight is None:
        return np.ones(1), 0
    sw = as_real_array(sample_weight, "sample_weight")
    try:
        sw = np.broadcast_to(sw, row_shape)
    except ValueError:
        raise ValueError(
            f"sample_weight of shape {sw.shape} does not broadcast to the target's row shape {row_shape}"
        ) from None
    return np.ascontiguousarray(sw, dtype=np.float64).reshape(-1), 1
