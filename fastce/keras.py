r"""Keras 3's cross-entropy loss classes on NumPy arrays, loss and gradient in one pass.

:class:`BinaryCrossentropy`, :class:`CategoricalCrossentropy` and
:class:`SparseCategoricalCrossentropy` take the arguments of their
``keras.losses`` namesakes and are called the same way,
``loss(y_true, y_pred, sample_weight=None)``, with Keras 3's semantics:
probabilities clipped to ``[epsilon, 1 - epsilon]`` (``epsilon = 1e-7``,
Keras's backend fuzz factor) with the zero gradient that clipping gives
outside that range, categorical probabilities normalised by their sum
first, label smoothing, ``ignore_class``, the mean of the binary
cross-entropy over `axis`, and the reductions ``"sum_over_batch_size"``
(alias ``"mean"``), ``"sum"``, ``"none"`` (alias ``None``) and
``"mean_with_sample_weight"``, including how ``sample_weight`` and the
``ignore_class`` mask are broadcast and merged.

Each class also has :meth:`~BinaryCrossentropy.loss_and_grad`, which returns
the loss and its gradient with respect to `y_pred` from the same pass over
the data (for reduction ``"none"``, the gradient of the sum of the returned
losses). Everything runs on fastce's fused kernels: the core
:func:`fastce.cross_entropy` for logits, :mod:`fastce._keras_kernels` where
Keras's math is not PyTorch's. The only arrays the size of the data that are
made are the gradient and, when needed, C-contiguous copies of `y_pred` and
`y_true` in the compute dtype.

Differences from Keras
----------------------
dtype
    ``dtype=None`` (the default) computes in the dtype of `y_pred`: float32
    stays float32, float64 stays float64, float16 is computed in float32
    (results in float16); integers and booleans become float64, as NumPy
    would. Keras computes in ``keras.backend.floatx()`` (float32) unless told
    otherwise; pass ``dtype="float32"`` for that. Sums are accumulated in
    float64 in every case, so float32 results are more accurate than Keras's
    (they agree to about 1e-6 relative). In float64, fastce computes in
    float64 throughout, as Keras does on TensorFlow; on the PyTorch and JAX
    backends Keras computes some steps (the binary mean over `axis`, the
    division of the reductions) in float32 even for float64 tensors, so its
    float64 results there are only float32-accurate.
Class labels
    Sparse labels must be integers (or integral floats) in ``[0, C)`` or
    equal to `ignore_class`; anything else raises ValueError. (Keras on the
    PyTorch backend raises for most such labels but silently gives 0 for
    ``-100``, PyTorch's default ``ignore_index``.)
``sample_weight``
    Must broadcast to the shape of the per-sample losses (after Keras's
    squeezing or expanding of a trailing axis of length 1); Keras would
    broadcast the losses up to a larger shape. Where Keras fails to merge a
    broadcastable `sample_weight` with the ``ignore_class`` mask in place
    (e.g. weights of shape ``(N, 1)`` for losses of shape ``(N, d)``), fastce
    broadcasts them.
Non-finite input
    A ``-inf`` logit whose smoothed target probability is 0 adds nothing
    (Keras gives NaN, from ``0 * -inf``). NaN probabilities give NaN (Keras's
    binary cross-entropy on PyTorch raises instead).
Configuration
    `axis` is an int (Keras's binary mean also takes a tuple). Mixed-precision
    policies are not supported. ``get_config()`` also records `axis` of
    :class:`SparseCategoricalCrossentropy` (Keras 3.15 leaves it out),
    `dtype` and `n_threads`.

Two Keras behaviours are kept on purpose so that results match Keras's:
the label smoothing of :class:`CategoricalCrossentropy` spreads
``label_smoothing`` over the length of the *last* axis of `y_true`, also when
`axis` names another axis; and an empty batch of losses of shape ``(0,)`` is
returned as an empty array whatever the reduction.
"""

import math
import operator
import warnings

import numpy as np

from . import _keras_kernels as KK
from ._config import resolve_n_threads, run_kernel
from ._validation import as_real_array, check_flag, check_index, check_label_smoothing, loss_input
from .losses import binary_cross_entropy_with_logits, cross_entropy

__all__ = ["BinaryCrossentropy", "CategoricalCrossentropy", "SparseCategoricalCrossentropy", "EPSILON"]

#: Keras's ``backend.epsilon()``: probabilities are clipped to ``[EPSILON, 1 - EPSILON]``.
EPSILON = 1e-7

REDUCTIONS = ("sum_over_batch_size", "sum", "none", None, "mean", "mean_with_sample_weight")

# Rows per block of the kernels come from the row length only (never from the
# thread count), so results are reproducible.
_BLOCK_ELEMENTS = 1 << 16
# Passed as the label to ignore when no class is ignored: validation has made
# sure that no label equals it.
_NO_CLASS = int(np.iinfo(np.intp).min)


# ---------------------------------------------------------------------------
# argument checks


def _check_reduction(reduction):
    if not (reduction is None or isinstance(reduction, str)) or reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def _check_axis(axis):
    if isinstance(axis, (bool, np.bool_)):
        raise TypeError("axis must be an int, got bool")
    try:
        return operator.index(axis)
    except TypeError:
        raise TypeError(f"axis must be an int, got {type(axis).__name__}") from None


def _check_dtype(dtype):
    if dtype is None:
        return None
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}") from None
    if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
        raise ValueError(f"dtype must be None, 'float32' or 'float64', got {dtype!r}")
    return dt.name


def _check_name(name):
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    return name


def _check_n_threads(n_threads):
    if n_threads is not None:
        resolve_n_threads(n_threads)  # raises TypeError / ValueError naming n_threads
    return n_threads


def _class_axis(axis, ndim):
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis={axis} is out of bounds for y_pred with {ndim} dimension(s)")
    return axis % ndim


# ---------------------------------------------------------------------------
# shapes, inputs, reductions


def _same_rank(shape1, shape2, expand_rank_1=True):
    """Keras's ``squeeze_or_expand_to_same_rank`` on shapes: when the ranks
    differ by one and the longer shape ends in 1, squeeze that axis (or, if
    the other shape is 1-D, give it a trailing axis of length 1 instead)."""
    shape1, shape2 = tuple(shape1), tuple(shape2)
    r1, r2 = len(shape1), len(shape2)
    if r1 == r2 + 1 and shape1[-1] == 1:
        if r2 == 1 and expand_rank_1:
            shape2 = shape2 + (1,)
        else:
            shape1 = shape1[:-1]
    elif r2 == r1 + 1 and shape2[-1] == 1:
        if r1 == 1 and expand_rank_1:
            shape1 = shape1 + (1,)
        else:
            shape2 = shape2[:-1]
    return shape1, shape2


def _prediction(y_pred, dtype):
    """`y_pred` as a C-contiguous float32/float64 array and the dtype of the results."""
    arr = as_real_array(y_pred, "y_pred")
    if dtype is not None:
        dt = np.dtype(dtype)
        return arr.astype(dt, order="C", copy=False), dt
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return loss_input(arr, "y_pred")


def _labels(y_true, n_classes, ignore_class):
    """Class labels as a flat intp array (row order), checked against ``[0, C)``."""
    kind = y_true.dtype.kind
    if kind == "f":
        if not np.isfinite(y_true).all() or (y_true != np.trunc(y_true)).any():
            raise ValueError("y_true of floating dtype must hold integral class labels (no fraction, NaN or inf)")
        if y_true.size and np.abs(y_true).max() > 2.0**62:
            raise ValueError(f"y_true holds class label {np.abs(y_true).max()}; expected values in [0, {n_classes})")
    elif kind == "u" and y_true.size and y_true.max() > np.iinfo(np.intp).max:
        raise ValueError(f"y_true holds class label {y_true.max()}; expected values in [0, {n_classes})")
    t = np.ascontiguousarray(y_true, dtype=np.intp).reshape(-1)
    valid = None if ignore_class is None else t != ignore_class
    bad = (t < 0) | (t >= n_classes)
    if valid is not None:
        bad &= valid
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        where = tuple(int(j) for j in np.unravel_index(i, y_true.shape)) if y_true.ndim else ()
        allowed = "" if ignore_class is None else f" or ignore_class={ignore_class}"
        raise ValueError(
            f"y_true holds class label {t[i]} at position {where}; expected values in [0, {n_classes}){allowed}"
        )
    return t, valid


class _Plan:
    """Keras's ``reduce_weighted_values`` and ``apply_mask`` expressed as one
    weight per loss row and a divisor.

    Attributes: ``shape`` (of the returned losses for ``"none"``), ``weights``
    (flat float64 in row order, or None for all ones), ``divisor`` (None:
    no division), ``passthrough`` (the losses are returned unreduced) and
    ``scale`` (what the gradient is multiplied by: 1 / divisor, 0 when the
    divisor is 0 as Keras's ``divide_no_nan``).
    """

    def __init__(self, loss_shape, sample_weight, mask, reduction):
        loss_shape = tuple(loss_shape)
        sw = None
        if sample_weight is not None:
            sw = as_real_array(sample_weight, "sample_weight").astype(np.float64)
        if mask is not None:
            mask = mask.reshape(loss_shape)
            if reduction in ("mean", "sum_over_batch_size"):
                # valid entries weigh total / valid so that the division by the
                # number of entries is a division by the number of valid ones
                valid = int(np.count_nonzero(mask))
                fm = np.where(mask, mask.size / valid if valid else 0.0, 0.0)
            else:
                fm = mask.astype(np.float64)
            if sw is None:
                sw = fm
            else:
                fs, ss = _same_rank(fm.shape, sw.shape)
                try:
                    sw = sw.reshape(ss) * fm.reshape(fs)
                except ValueError:
                    raise ValueError(
                        f"sample_weight of shape {np.shape(sample_weight)} does not broadcast to the shape of the "
                        f"per-sample losses {loss_shape}"
                    ) from None
        shape = loss_shape
        if sw is not None:
            shape, ss = _same_rank(loss_shape, sw.shape)
            sw = sw.reshape(ss)
            try:
                full = np.broadcast_shapes(shape, sw.shape)
            except ValueError:
                full = None
            if full != shape:
                raise ValueError(
                    f"sample_weight of shape {np.shape(sample_weight)} does not broadcast to the shape of the "
                    f"per-sample losses {loss_shape}"
                )
        self.shape = shape
        self.passthrough = reduction in (None, "none") or shape in ((), (0,))
        if self.passthrough or reduction == "sum":
            self.divisor = None
        elif reduction == "mean_with_sample_weight" and sw is not None:
            self.divisor = float(sw.sum())
        else:
            self.divisor = float(math.prod(shape))
        if self.divisor is None:
            self.scale = 1.0
        else:
            self.scale = 1.0 / self.divisor if self.divisor != 0.0 else 0.0
        self.weights = None if sw is None else np.ascontiguousarray(np.broadcast_to(sw, shape), np.float64).reshape(-1)

    def kernel_weights(self):
        """``(sw, sw_step)`` for the kernels."""
        if self.weights is None:
            return np.ones(1), 0
        return self.weights, 1

    def folded_weights(self):
        """The row weights times the gradient scale, for :func:`fastce.cross_entropy` (None: all ones)."""
        if self.weights is None:
            return None if self.scale == 1.0 else self.scale
        return self.weights if self.scale == 1.0 else self.weights * self.scale

    def finish(self, rows, total, out_dtype):
        """The loss Keras returns, from the per-row losses (when passthrough) or their weighted sum."""
        if self.passthrough:
            loss = rows.reshape(self.shape)
            if loss.dtype != out_dtype:
                loss = loss.astype(out_dtype)
            return out_dtype.type(loss[()]) if loss.ndim == 0 else loss
        if self.divisor is None:
            return out_dtype.type(total)
        if self.divisor == 0.0:
            return out_dtype.type(0.0)
        return out_dtype.type(np.float64(total) / np.float64(self.divisor))


def _run(par, ser, n_threads, x, n_classes, plan, need_grad, *args):
    """Allocate the outputs, run the kernel ``args + (sw, sw_step, scale, ...)``, return (rows, total, grad)."""
    n_rows = x.shape[0] * x.shape[2]
    block = max(1, min(1024, _BLOCK_ELEMENTS // max(n_classes, 1)))
    partial = np.empty((n_rows + block - 1) // block)
    rows = np.empty(n_rows if plan.passthrough else 0, dtype=x.dtype)
    grad = np.empty(x.shape if need_grad else (1, 1, 1), dtype=x.dtype)
    sw, sw_step = plan.kernel_weights()
    run_kernel(
        par, ser, n_threads, x.size,
        *args, sw, sw_step, plan.scale, need_grad, rows, plan.passthrough, grad, partial, block,
    )  # fmt: skip
    return rows, float(partial.sum()), grad


def _core(loss, x3, target, plan, need_grad, out_dtype, shape, **options):
    """:func:`fastce.cross_entropy` (PyTorch's math, the core kernel) with
    Keras's row weights and divisor folded into its `sample_weight` and
    ``reduction="sum"`` (or ``"none"``)."""
    sw = plan.folded_weights()
    if isinstance(sw, np.ndarray):
        sw = sw.reshape(x3.shape[0], x3.shape[2])
    out = cross_entropy(
        x3, target, reduction="none" if plan.passthrough else "sum", sample_weight=sw,
        return_grad=need_grad, n_threads=loss.n_threads, **options,
    )  # fmt: skip
    value, grad = out if need_grad else (out, None)
    return _core_result(plan, value, grad, need_grad, out_dtype, shape)


def _core_result(plan, value, grad, need_grad, out_dtype, shape):
    """What Keras returns from a core kernel's result run with the row
    weights and divisor folded in: ``value`` the per-row losses (when
    ``plan.passthrough``) or their weighted sum, already divided."""
    if plan.passthrough:
        value = plan.finish(np.asarray(value), 0.0, out_dtype)
    elif plan.divisor == 0.0:
        value = out_dtype.type(0.0)  # Keras's divide_no_nan
    else:
        value = out_dtype.type(value)  # already divided by the divisor through the weights
    return (value, _grad_out(grad, shape, out_dtype)) if need_grad else value


def _grad_out(grad, shape, out_dtype):
    grad = grad.reshape(shape)
    return grad if grad.dtype == out_dtype else grad.astype(out_dtype)


def _bounds(dtype):
    """The clipping bounds as Keras's ``torch.clip`` applies them: rounded to the compute dtype."""
    return float(dtype.type(EPSILON)), float(dtype.type(1.0 - EPSILON))


# ---------------------------------------------------------------------------
# the loss classes


class _KerasLoss:
    """What the three losses share: reduction, name, dtype, threads, config."""

    def __init__(self, reduction, name, dtype, n_threads):
        self.reduction = _check_reduction(reduction)
        self.name = _check_name(name)
        self.dtype = _check_dtype(dtype)
        self.n_threads = _check_n_threads(n_threads)

    def __call__(self, y_true, y_pred, sample_weight=None):
        return self._compute(y_true, y_pred, sample_weight, False)

    def loss_and_grad(self, y_true, y_pred, sample_weight=None):
        """The loss and its gradient with respect to `y_pred`, from one pass over the data.

        Parameters
        ----------
        y_true, y_pred, sample_weight
            As for calling the loss.

        Returns
        -------
        loss : scalar or ndarray
            What calling the loss returns.
        grad : ndarray
            The gradient of `loss` with respect to `y_pred` (of the sum of the
            losses for reduction ``"none"``), with the shape of `y_pred` and
            the dtype of `loss`.
        """
        return self._compute(y_true, y_pred, sample_weight, True)

    def get_config(self):
        """The constructor arguments, as a dict that :meth:`from_config` accepts."""
        config = {"name": self.name, "reduction": self.reduction}
        config.update(self._options())
        config.update({"dtype": self.dtype, "n_threads": self.n_threads})
        return config

    @classmethod
    def from_config(cls, config):
        """A loss from the dict of :meth:`get_config` (or of the Keras class's ``get_config()``)."""
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    def _options(self):
        raise NotImplementedError

    def _compute(self, y_true, y_pred, sample_weight, need_grad):
        raise NotImplementedError


class _DenseTargetLoss(_KerasLoss):
    """Shared parts of the losses whose y_true has y_pred's shape."""

    def __init__(self, from_logits, label_smoothing, axis, reduction, name, dtype, n_threads):
        super().__init__(reduction, name, dtype, n_threads)
        self.from_logits = check_flag(from_logits, "from_logits")
        self.label_smoothing = check_label_smoothing(label_smoothing)
        self.axis = _check_axis(axis)

    def _options(self):
        return {"from_logits": self.from_logits, "label_smoothing": self.label_smoothing, "axis": self.axis}

    def _inputs(self, y_true, y_pred, sample_weight):
        """Validated inputs: (x, y_true as x's dtype, out_dtype, shape of y_pred,
        its class axis, the (before, classes, after) 3-D shape, the reduction plan)."""
        x, out_dtype = _prediction(y_pred, self.dtype)
        yt = as_real_array(y_true, "y_true")
        t_shape, p_shape = _same_rank(yt.shape, x.shape)
        if t_shape != p_shape:
            raise ValueError(f"y_true and y_pred must have the same shape, got {yt.shape} and {x.shape}")
        if not p_shape:
            raise ValueError("y_pred must have at least one dimension, got a 0-d array")
        ax = _class_axis(self.axis, len(p_shape))
        shape3 = (math.prod(p_shape[:ax]), p_shape[ax], math.prod(p_shape[ax + 1 :]))
        plan = _Plan(p_shape[:ax] + p_shape[ax + 1 :], sample_weight, None, self.reduction)
        return x, yt, out_dtype, p_shape, ax, shape3, plan


class BinaryCrossentropy(_DenseTargetLoss):
    r"""Binary cross-entropy averaged over `axis`, as ``keras.losses.BinaryCrossentropy``.

    Parameters
    ----------
    from_logits : bool, default=False
        Whether `y_pred` holds logits; otherwise probabilities, clipped to
        ``[1e-7, 1 - 1e-7]``.
    label_smoothing : float in [0, 1], default=0.0
        Squeezes the targets towards 0.5: ``y * (1 - label_smoothing) + 0.5 * label_smoothing``.
    axis : int, default=-1
        The axis the elementwise losses are averaged over.
    reduction : str or None, default="sum_over_batch_size"
        One of ``"sum_over_batch_size"``, ``"sum"``, ``"none"``, ``None``,
        ``"mean"``, ``"mean_with_sample_weight"``.
        How the per-sample losses (the shape of `y_pred` without `axis`) are
        reduced: ``"sum_over_batch_size"`` and ``"mean"`` divide the weighted
        sum by the number of per-sample losses, ``"mean_with_sample_weight"``
        by the sum of `sample_weight`, ``"sum"`` does not divide, ``"none"``
        and ``None`` return the weighted per-sample losses.
    name : str, default="binary_crossentropy"
        The loss's name.
    dtype : {None, "float32", "float64"}, default=None
        The compute dtype; ``None`` follows `y_pred` (see :mod:`fastce.keras`).
    n_threads : int, default=None
        Threads to use (see :mod:`fastce.losses`); results do not depend on it.

    See Also
    --------
    fastce.binary_cross_entropy_with_logits : PyTorch's elementwise loss.

    Notes
    -----
    With the smoothed target :math:`y' = (1-\varepsilon) y + \varepsilon/2`,
    a sample of :math:`L` elements along `axis` costs

    .. math::
        \ell = \frac{1}{L} \sum_{k=1}^{L}
            -\big[y'_k \log c_k + (1 - y'_k) \log(1 - c_k)\big]

    with :math:`c_k = \sigma(z_k)` for logits, computed without overflow as
    :math:`y'(s + \max(-z, 0)) + (1-y')(s + \max(z, 0))`,
    :math:`s = \log(1 + e^{-|z|})`, and gradient
    :math:`(\sigma(z_k) - y'_k)/L`. For probabilities,
    :math:`c_k = \min(\max(p_k, \epsilon), 1 - \epsilon)` with
    :math:`\epsilon = 10^{-7}` rounded to the compute dtype, and the gradient
    is PyTorch's :math:`(c_k - y'_k) / (L\, c_k (1 - c_k))` where
    :math:`\epsilon \le p_k \le 1 - \epsilon` and 0 where clipping is active.
    Each per-sample loss and its gradient are then multiplied by the sample's
    weight and divided by the reduction's divisor.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce.keras import BinaryCrossentropy
    >>> y_true = np.array([[0, 1], [0, 0]])
    >>> y_pred = np.array([[-18.6, 0.51], [2.94, -12.8]], dtype=np.float32)
    >>> bce = BinaryCrossentropy(from_logits=True)
    >>> float(bce(y_true, y_pred))
    0.8654...
    >>> float(bce(y_true, y_pred, sample_weight=[0.8, 0.2]))
    0.2436...
    >>> BinaryCrossentropy(from_logits=True, reduction="none")(y_true, y_pred)
    array([0.23515666, 1.4957592 ], dtype=float32)
    >>> loss, grad = bce.loss_and_grad(y_true, y_pred)
    >>> grad.dtype
    dtype('float32')
    >>> sigmoid = 1 / (1 + np.exp(-y_pred.astype(np.float64)))
    >>> bool(np.allclose(grad, (sigmoid - y_true) / 4, rtol=1e-6, atol=0))
    True
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="binary_crossentropy",
        dtype=None,
        *,
        n_threads=None,
    ):
        super().__init__(from_logits, label_smoothing, axis, reduction, name, dtype, n_threads)

    def _compute(self, y_true, y_pred, sample_weight, need_grad):
        x, yt, out_dtype, p_shape, ax, shape3, plan = self._inputs(y_true, y_pred, sample_weight)
        x3 = x.reshape(shape3)
        y3 = np.ascontiguousarray(yt, dtype=x.dtype).reshape(shape3)
        eps = self.label_smoothing
        # Smoothed targets, row weights along a middle axis or per-row losses
        # of several rows would be arrays of y_pred's size around the core
        # kernel: those take the loop below, and so does an empty axis (whose
        # mean is NaN there).
        one_row = shape3[0] * shape3[2] == 1
        if self.from_logits and eps == 0.0 and shape3[1] > 0 and (plan.weights is None or shape3[2] == 1) and (
            not plan.passthrough or one_row
        ):
            return self._logits_core(x3, y3, plan, need_grad, out_dtype, x.shape)
        lo, hi = _bounds(x.dtype)
        rows, total, grad = _run(
            KK.bce_par, KK.bce_ser, self.n_threads, x3, shape3[1], plan, need_grad,
            self.from_logits, x3, y3, 1.0 - eps, 0.5 * eps, lo, hi,
        )  # fmt: skip
        loss = plan.finish(rows, total, out_dtype)
        return (loss, _grad_out(grad, x.shape, out_dtype)) if need_grad else loss

    def _logits_core(self, x3, y3, plan, need_grad, out_dtype, shape):
        """``from_logits=True`` without label smoothing: PyTorch's math per
        element, so the core kernel of
        :func:`fastce.binary_cross_entropy_with_logits` (vectorised; the loop
        of :mod:`fastce._keras_kernels` for logits calls libm per element), with the
        mean over the axis, Keras's row weights and divisor folded into its
        ``weight`` (one per row, broadcast over the axis)."""
        n_rows = x3.shape[0] * x3.shape[2]
        n = x3.shape[1]
        options = dict(return_grad=need_grad, n_threads=self.n_threads)
        if plan.weights is None and not plan.passthrough and plan.divisor == n_rows:
            # Keras's default: the mean over every element
            out = binary_cross_entropy_with_logits(x3, y3, reduction="mean", **options)
        else:
            fw = plan.folded_weights()
            if isinstance(fw, np.ndarray):
                fw = fw.reshape(x3.shape[0], 1, x3.shape[2])
            w = (1.0 if fw is None else fw) / n
            out = binary_cross_entropy_with_logits(x3, y3, weight=w, reduction="sum", **options)
        value, grad = out if need_grad else (out, None)
        if plan.passthrough:  # one row: its loss is the sum
            value = np.array([value])
        return _core_result(plan, value, grad, need_grad, out_dtype, shape)


class CategoricalCrossentropy(_DenseTargetLoss):
    r"""Cross-entropy with probability (one-hot) targets, as ``keras.losses.CategoricalCrossentropy``.

    Parameters
    ----------
    from_logits : bool, default=False
        Whether `y_pred` holds logits; otherwise unnormalised probabilities:
        divided by their sum along `axis`, then clipped to ``[1e-7, 1 - 1e-7]``.
    label_smoothing : float in [0, 1], default=0.0
        Mixes the targets with the uniform distribution:
        ``y * (1 - label_smoothing) + label_smoothing / y_true.shape[-1]``
        (Keras divides by the length of the last axis, also when `axis` names
        another one).
    axis : int, default=-1
        The class axis.
    reduction : str or None, default="sum_over_batch_size"
        One of ``"sum_over_batch_size"``, ``"sum"``, ``"none"``, ``None``,
        ``"mean"``, ``"mean_with_sample_weight"``.
        As for :class:`BinaryCrossentropy`; per-sample losses have the shape
        of `y_pred` without `axis`.
    name : str, default="categorical_crossentropy"
        The loss's name.
    dtype : {None, "float32", "float64"}, default=None
        The compute dtype; ``None`` follows `y_pred` (see :mod:`fastce.keras`).
    n_threads : int, default=None
        Threads to use (see :mod:`fastce.losses`); results do not depend on it.

    See Also
    --------
    fastce.cross_entropy : Runs the ``from_logits=True`` case.
    SparseCategoricalCrossentropy : The same loss with class-index targets.

    Notes
    -----
    With the smoothed target :math:`t' = (1-\varepsilon) t + \varepsilon / D`
    (:math:`D` the length of the last axis), a sample with classes
    :math:`k = 1 \dots C` along `axis` costs, from logits :math:`x`,

    .. math::
        \ell = \sum_k t'_k \big(\operatorname{logsumexp}(x) - x_k\big),
        \qquad
        \frac{\partial \ell}{\partial x_j} = \operatorname{softmax}(x)_j \sum_k t'_k - t'_j,

    and from probabilities :math:`p`, with :math:`S = \sum_k p_k`,
    :math:`q_k = p_k / S` and :math:`c_k = \min(\max(q_k, \epsilon), 1 - \epsilon)`,

    .. math::
        \ell = -\sum_k t'_k \log c_k,
        \qquad
        \frac{\partial \ell}{\partial p_j} = \frac{1}{S}
            \Big(\sum_{k \in I} t'_k - [j \in I]\, \frac{t'_j}{c_j}\Big),

    where :math:`I` is the set of classes whose :math:`q_k` is not clipped
    (clipping stops the gradient through :math:`c_k`). :math:`\epsilon = 10^{-7}`
    and :math:`q_k` are rounded to the compute dtype before they are compared,
    as in Keras.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce.keras import CategoricalCrossentropy
    >>> y_true = np.array([[0, 1, 0], [0, 0, 1]])
    >>> y_pred = np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]], dtype=np.float32)
    >>> cce = CategoricalCrossentropy()
    >>> float(cce(y_true, y_pred))
    1.1769...
    >>> float(cce(y_true, y_pred, sample_weight=np.array([0.3, 0.7])))
    0.8135...
    >>> CategoricalCrossentropy(reduction=None)(y_true, y_pred)
    array([0.05129331, 2.3025851 ], dtype=float32)

    The gradient of the mean, ``(1 - [j = y] / p_y) / 2`` here: a clipped
    ``p = 0`` gets no gradient through its own log, but still through the
    normalisation by the sum.

    >>> loss, grad = cce.loss_and_grad(y_true, y_pred)
    >>> grad
    array([[ 0.5       , -0.02631581,  0.5       ],
           [ 0.5       ,  0.5       , -4.5       ]], dtype=float32)
    """

    def __init__(
        self,
        from_logits=False,
        label_smoothing=0.0,
        axis=-1,
        reduction="sum_over_batch_size",
        name="categorical_crossentropy",
        dtype=None,
        *,
        n_threads=None,
    ):
        super().__init__(from_logits, label_smoothing, axis, reduction, name, dtype, n_threads)

    def _compute(self, y_true, y_pred, sample_weight, need_grad):
        x, yt, out_dtype, p_shape, ax, shape3, plan = self._inputs(y_true, y_pred, sample_weight)
        n_classes = p_shape[ax]
        if n_classes == 0:
            raise ValueError(f"y_pred must have at least one class along axis {self.axis}, got shape {x.shape}")
        if p_shape[-1] == 1:
            warnings.warn(
                f"CategoricalCrossentropy expects y_pred of shape (batch_size, num_classes) with num_classes > 1, "
                f"got shape {x.shape}; consider BinaryCrossentropy for two classes",
                UserWarning,
                stacklevel=3,
            )
        x3 = x.reshape(shape3)
        eps = self.label_smoothing
        spread = eps / p_shape[-1]
        y3 = np.ascontiguousarray(yt, dtype=x.dtype).reshape(shape3)
        if self.from_logits and (eps == 0.0 or p_shape[-1] == n_classes):
            # PyTorch's math (smoothing spread over the C classes): the core kernel
            return _core(self, x3, y3, plan, need_grad, out_dtype, x.shape, label_smoothing=eps)
        lo, hi = _bounds(x.dtype)
        rows, total, grad = _run(
            KK.cce_par, KK.cce_ser, self.n_threads, x3, n_classes, plan, need_grad,
            self.from_logits, x3, y3, 1.0 - eps, spread, lo, hi, x.dtype == np.float32,
        )  # fmt: skip
        loss = plan.finish(rows, total, out_dtype)
        return (loss, _grad_out(grad, x.shape, out_dtype)) if need_grad else loss


class SparseCategoricalCrossentropy(_KerasLoss):
    r"""Cross-entropy with class-index targets, as ``keras.losses.SparseCategoricalCrossentropy``.

    Parameters
    ----------
    from_logits : bool, default=False
        Whether `y_pred` holds logits; otherwise unnormalised probabilities:
        divided by their sum along `axis`, then clipped to ``[1e-7, 1 - 1e-7]``.
    ignore_class : int, default=None
        A label whose samples add nothing to the loss or the gradient. They
        are masked as Keras masks them: for ``"sum_over_batch_size"`` and
        ``"mean"`` the divisor is the number of the other samples, for
        ``"mean_with_sample_weight"`` the sum of their sample weights.
    reduction : str or None, default="sum_over_batch_size"
        One of ``"sum_over_batch_size"``, ``"sum"``, ``"none"``, ``None``,
        ``"mean"``, ``"mean_with_sample_weight"``.
        As for :class:`BinaryCrossentropy`; per-sample losses have the shape
        of `y_pred` without `axis`.
    axis : int, default=-1
        The class axis of `y_pred`.
    name : str, default="sparse_categorical_crossentropy"
        The loss's name.
    dtype : {None, "float32", "float64"}, default=None
        The compute dtype; ``None`` follows `y_pred` (see :mod:`fastce.keras`).
    n_threads : int, default=None
        Threads to use (see :mod:`fastce.losses`); results do not depend on it.

    Notes
    -----
    `y_true` has the shape of `y_pred` without `axis` (or with `axis` of
    length 1) and holds labels in ``[0, C)`` or equal to `ignore_class`. A
    sample with label :math:`y` costs, from logits :math:`x`,

    .. math::
        \ell = \operatorname{logsumexp}(x) - x_y,
        \qquad
        \frac{\partial \ell}{\partial x_j} = \operatorname{softmax}(x)_j - [j = y],

    and from probabilities :math:`p`, with :math:`S = \sum_k p_k`,
    :math:`q_y = p_y / S` and :math:`c_y = \min(\max(q_y, \epsilon), 1 - \epsilon)`,

    .. math::
        \ell = -\log c_y,
        \qquad
        \frac{\partial \ell}{\partial p_j} = \frac{q_y - [j = y]}{c_y S}
        \ \text{ if } \epsilon \le q_y \le 1 - \epsilon, \text{ else } 0.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce.keras import SparseCategoricalCrossentropy
    >>> y_true = np.array([1, 2])
    >>> y_pred = np.array([[0.05, 0.95, 0], [0.1, 0.8, 0.1]], dtype=np.float32)
    >>> scce = SparseCategoricalCrossentropy()
    >>> float(scce(y_true, y_pred))
    1.1769...
    >>> SparseCategoricalCrossentropy(reduction="none")(y_true, y_pred)
    array([0.05129331, 2.3025851 ], dtype=float32)

    Ignoring a class: the mean is over the remaining samples.

    >>> logits = np.array([[2.0, 0.5, -1.0], [0.0, 0.0, 3.0], [1.0, 1.0, 1.0]])
    >>> loss, grad = SparseCategoricalCrossentropy(from_logits=True, ignore_class=-1).loss_and_grad(
    ...     np.array([0, 2, -1]), logits)
    >>> float(loss)  # (0.2413... + 0.0949...) / 2
    0.1681...
    >>> np.round(grad, 4)
    array([[-0.1072,  0.0876,  0.0196],
           [ 0.0226,  0.0226, -0.0453],
           [ 0.    ,  0.    ,  0.    ]])
    """

    def __init__(
        self,
        from_logits=False,
        ignore_class=None,
        reduction="sum_over_batch_size",
        axis=-1,
        name="sparse_categorical_crossentropy",
        dtype=None,
        *,
        n_threads=None,
    ):
        super().__init__(reduction, name, dtype, n_threads)
        self.from_logits = check_flag(from_logits, "from_logits")
        self.ignore_class = None if ignore_class is None else check_index(ignore_class, "ignore_class")
        self.axis = _check_axis(axis)

    def _options(self):
        return {"from_logits": self.from_logits, "ignore_class": self.ignore_class, "axis": self.axis}

    def _compute(self, y_true, y_pred, sample_weight, need_grad):
        x, out_dtype = _prediction(y_pred, self.dtype)
        yt = as_real_array(y_true, "y_true")
        t_shape, p_shape = _same_rank(yt.shape, x.shape)
        if not p_shape:
            raise ValueError("y_pred must have at least one dimension, got a 0-d array")
        ax = _class_axis(self.axis, len(p_shape))
        if len(t_shape) == len(p_shape) and t_shape[ax] == 1:
            t_shape = t_shape[:ax] + t_shape[ax + 1 :]
        loss_shape = p_shape[:ax] + p_shape[ax + 1 :]
        if t_shape != loss_shape:
            raise ValueError(
                f"y_true must have the shape of y_pred {x.shape} without axis {self.axis}, i.e. {loss_shape}, "
                f"got {yt.shape}"
            )
        n_classes = p_shape[ax]
        if n_classes == 0:
            raise ValueError(f"y_pred must have at least one class along axis {self.axis}, got shape {x.shape}")
        t, valid = _labels(yt.reshape(t_shape), n_classes, self.ignore_class)
        shape3 = (math.prod(p_shape[:ax]), n_classes, math.prod(p_shape[ax + 1 :]))
        x3 = x.reshape(shape3)
        plan = _Plan(loss_shape, sample_weight, valid, self.reduction)
        ignore = _NO_CLASS if self.ignore_class is None else self.ignore_class
        if self.from_logits:
            target = t.reshape(shape3[0], shape3[2])
            return _core(self, x3, target, plan, need_grad, out_dtype, x.shape, ignore_index=ignore)
        lo, hi = _bounds(x.dtype)
        rows, total, grad = _run(
            KK.scce_prob_par, KK.scce_prob_ser, self.n_threads, x3, n_classes, plan, need_grad,
            x3, t, ignore, lo, hi, x.dtype == np.float32,
        )  # fmt: skip
        loss = plan.finish(rows, total, out_dtype)
        return (loss, _grad_out(grad, x.shape, out_dtype)) if need_grad else loss
