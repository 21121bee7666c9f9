r"""LogisticRegression on Dask arrays: fit chunk by chunk on the workers, predict lazily.

:meth:`LogisticRegression.fit` with a Dask array ``X`` (chunked along the
rows; the columns are made one chunk) goes through :func:`fit_dask`:

1. global statistics, once: ``classes_`` (``da.unique`` of ``y``), the
   weighted class counts for ``class_weight="balanced"``, the total sample
   weight :math:`S` (which scales the objective and the L2 term);
2. ``X``, the encoded labels and the final sample weights are persisted:
   they stay on the workers (or in memory, with a local scheduler);
3. the solvers of :mod:`fastce.linear_model` run on the client against a
   :class:`DaskLinearLoss`: each evaluation sends the flat parameter vector
   (small) with one task per chunk; a task builds a
   :class:`fastce._linear_loss.LinearLoss` on its chunk (no penalty, sums
   instead of means) and returns the chunk's loss sum and gradient sum
   (and for ``newton-cg`` the Hessian product); the client adds them in
   chunk order, scales by :math:`1/S` and adds the penalty.

The minimiser is that of the in-memory fit on the same data; only the order
of the float64 sums differs.

``predict``, ``predict_proba``, ``predict_log_proba`` and
``decision_function`` on a Dask array are ``map_blocks`` of the in-memory
methods: lazy, one task per chunk of rows.
"""

import math

import numpy as np
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from ._linear_loss import LinearLoss
from .dask import _is_dask_collection
from .dask import _require_dask as _require_dask_array

__all__ = ["fit_dask", "predict_dask", "score_dask"]


def _require_dask():
    """``(dask, dask.array)``, or the ImportError of :func:`fastce.dask._require_dask` naming the extra."""
    da = _require_dask_array()
    import dask

    return dask, da


def _as_dask_matrix(X, da, name="X"):
    """A 2-D Dask array with known row chunks and a single column chunk."""
    if not isinstance(X, da.Array):
        raise TypeError(
            f"{name} must be a dask.array.Array when Dask input is given, got {type(X).__module__}."
            f"{type(X).__name__} (for a Dask DataFrame use .to_dask_array(lengths=True))"
        )
    if X.ndim != 2:
        raise ValueError(f"Expected a 2-D {name}, got a Dask array of shape {X.shape}")
    if any(math.isnan(c) for c in X.chunks[0]):
        X = X.compute_chunk_sizes()
    if len(X.chunks[1]) > 1:
        X = X.rechunk({1: -1})
    return X


def _as_dask_vector(v, row_chunks, da, name, dtype=None):
    """``v`` (Dask or array-like) as a 1-D Dask array chunked as ``row_chunks``."""
    n = sum(row_chunks)
    if isinstance(v, da.Array):
        if v.ndim and any(math.isnan(c) for c in v.chunks[0]):
            v = v.compute_chunk_sizes()
    elif _is_dask_collection(v):
        raise TypeError(f"{name} must be a dask.array.Array or an array-like, got {type(v).__name__}")
    else:
        v = da.from_array(np.asarray(v), chunks=-1)
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1 or v.shape[0] != n:
        raise ValueError(f"{name} must be 1-D with {n} elements (the rows of X), got shape {v.shape}")
    if dtype is not None:
        v = v.astype(dtype)
    return v.rechunk((row_chunks,))


def _encode_block(y, classes):
    return np.searchsorted(classes, y).astype(np.intp, copy=False)


def _weight_block(sw, y_enc, cw):
    return sw * cw[y_enc]


def fit_dask(est, X, y, sample_weight, C):
    """:meth:`LogisticRegression.fit` on Dask input (see the module's docstring)."""
    from .linear_model import _lbfgs, _newton_cg

    dask, da = _require_dask()
    X = _as_dask_matrix(X, da)
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    n, d = X.shape
    if n == 0 or d == 0:
        raise ValueError(
            f"Found array with {n} sample(s) and {d} feature(s) (shape={X.shape}) while a minimum of 1 is required."
        )
    rows = X.chunks[0]
    y = _as_dask_vector(y, rows, da, "y")
    classes = np.asarray(da.unique(y).compute())
    check_classification_targets(classes)
    n_classes = len(classes)
    if n_classes < 2:
        raise ValueError(
            "This solver needs samples of at least 2 classes in the data, but the data contains only one "
            f"class: {classes[0]!r}"
        )
    y_enc = y.map_blocks(_encode_block, classes, dtype=np.intp)

    sw = None
    if sample_weight is not None:
        sw = _as_dask_vector(sample_weight, rows, da, "sample_weight", dtype=np.float64)
    if est.class_weight is not None:
        if sw is None:
            sw = da.ones(n, chunks=(rows,), dtype=np.float64)
        if est.class_weight == "balanced":
            counts = da.bincount(y_enc, weights=sw, minlength=n_classes)
            counts, n_negative = dask.compute(counts, (sw < 0).sum())
            _check_negative(n_negative)
            cw = counts.sum() / (n_classes * counts)
        else:
            cw = compute_class_weight(est.class_weight, classes=classes, y=classes)
        sw = da.map_blocks(_weight_block, sw, y_enc, np.asarray(cw, dtype=np.float64), dtype=np.float64)
    if sw is None:
        sw_sum = float(n)
    else:
        sw_sum, n_negative = dask.compute(sw.sum(), (sw < 0).sum())
        _check_negative(n_negative)
        sw_sum = float(sw_sum)
        if not sw_sum > 0:
            raise ValueError("Sample weights must contain at least one non-zero number.")
    l2 = 0.0 if math.isinf(C) else 1.0 / (C * sw_sum)

    if sw is None:
        X, y_enc = dask.persist(X, y_enc)
    else:
        X, y_enc, sw = dask.persist(X, y_enc, sw)
    loss = DaskLinearLoss(
        X, y_enc, sw, sw_sum, n_classes=n_classes, fit_intercept=est.fit_intercept, l2_reg_strength=l2,
        n_threads=est.n_jobs,
    )  # fmt: skip

    est.classes_ = classes
    est.n_features_in_ = d
    est.__dict__.pop("feature_names_in_", None)
    w0 = loss.zeros()
    if est.warm_start and hasattr(est, "coef_"):
        w0 = est._warm_start_coef(loss)
    if est.solver == "newton-cg":
        loss.keep_hessian = True
    f0, g0 = loss.loss_gradient(w0)
    if not (np.isfinite(f0) and np.all(np.isfinite(g0))):
        has_nan, has_inf = dask.compute(da.isnan(X).any(), da.isinf(X).any())
        if has_nan or has_inf:
            raise ValueError(f"Input X contains {'NaN' if has_nan else 'infinity'}.")
    if est.solver == "lbfgs":
        w, n_iter = _lbfgs(loss, w0, f0, g0, est.max_iter, est.tol, est.verbose)
    else:
        w, n_iter = _newton_cg(loss, w0, f0, g0, est.max_iter, est.tol, est.verbose)
    est.coef_, est.intercept_ = loss.coef_intercept(w)
    est.n_iter_ = np.array([n_iter], dtype=np.int32)
    est._reset_sgd_state(sw_sum)
    return est


def _check_negative(n_negative):
    if n_negative:
        raise ValueError("Negative values in data passed to `sample_weight`")


# ---------------------------------------------------------------------------
# per-chunk work (module-level functions: the workers unpickle them by name)


def _chunk_loss(X, y, sw, n_classes, fit_intercept, n_threads):
    """A LinearLoss on one chunk that returns sums (no 1/S, no penalty), or None for a chunk of no weight."""
    if X.shape[0] == 0 or (sw is not None and not np.sum(sw) > 0):
        return None
    loss = LinearLoss(
        np.ascontiguousarray(X), y, sw, n_classes=n_classes, fit_intercept=fit_intercept, l2_reg_strength=0.0,
        n_threads=n_threads,
    )  # fmt: skip
    loss.scale = 1.0  # sums, not means: the client scales by the global weight
    return loss


def _chunk_loss_gradient(X, y, sw, w, n_classes, fit_intercept, n_threads):
    loss = _chunk_loss(X, y, sw, n_classes, fit_intercept, n_threads)
    if loss is None:
        return 0.0, np.zeros(w.size)
    return loss.loss_gradient(w)


def _chunk_hessp(X, y, sw, w, v, n_classes, fit_intercept, n_threads):
    """Hessian product at ``w``: the chunk's probabilities at ``w`` are recomputed (one more pass)."""
    loss = _chunk_loss(X, y, sw, n_classes, fit_intercept, n_threads)
    if loss is None:
        return np.zeros(v.size)
    loss.keep_hessian = True
    loss.loss_gradient(w)
    loss.prepare_hessian()
    return loss.hessp(v)


class DaskLinearLoss:
    """The interface of :class:`fastce._linear_loss.LinearLoss` that the solvers use, over persisted Dask chunks.

    Parameters
    ----------
    X, y, sample_weight : dask.array.Array
        Persisted; the same row chunks; ``y`` class indices; ``sample_weight``
        may be None.
    sw_sum : float
        :math:`S`, the total sample weight.
    n_classes, fit_intercept, l2_reg_strength, n_threads
        As for :class:`~fastce._linear_loss.LinearLoss` (``n_threads`` for
        the kernels on the workers).
    """

    def __init__(self, X, y, sample_weight, sw_sum, *, n_classes, fit_intercept, l2_reg_strength, n_threads=None):
        xb = X.to_delayed().ravel()
        yb = y.to_delayed().ravel()
        sb = [None] * len(xb) if sample_weight is None else list(sample_weight.to_delayed().ravel())
        self._blocks = list(zip(xb, yb, sb))
        self._layout = LinearLoss(
            np.zeros((1, X.shape[1]), dtype=X.dtype), np.zeros(1, dtype=np.intp), None, n_classes=n_classes,
            fit_intercept=fit_intercept, l2_reg_strength=l2_reg_strength,
        )  # fmt: skip
        for name in ("n_features", "n_classes", "multinomial", "fit_intercept", "n_dof", "shape", "size", "dtype"):
            setattr(self, name, getattr(self._layout, name))
        self.n_samples = X.shape[0]
        self.l2_reg_strength = float(l2_reg_strength)
        self.sw_sum = float(sw_sum)
        self.scale = 1.0 / self.sw_sum
        self.n_threads = n_threads
        self.keep_hessian = False
        self.n_evaluations = 0
        self.n_hessp = 0
        self._w_hessian = None
        self._w_last = None

    # parameter layout: that of LinearLoss
    def zeros(self):
        return self._layout.zeros()

    def split(self, w):
        return self._layout.split(w)

    def coef_intercept(self, w, dtype=None):
        return self._layout.coef_intercept(w, dtype=dtype)

    def flat(self, coef, intercept):
        return self._layout.flat(coef, intercept)

    def _map(self, func, *args):
        import dask

        kw = dict(n_classes=self.n_classes, fit_intercept=self.fit_intercept, n_threads=self.n_threads)
        tasks = [dask.delayed(func, pure=True)(xb, yb, sb, *args, **kw) for xb, yb, sb in self._blocks]
        return dask.compute(*tasks)

    def _finish(self, total, w_or_v):
        """Scale a sum of gradients (or Hessian products) by 1/S and add the penalty's term."""
        out = np.asarray(total, dtype=np.float64).reshape(self.shape) * self.scale
        if self.l2_reg_strength != 0.0:
            W, _ = self.split(w_or_v)
            d = self.n_features
            if self.multinomial:
                out[:, :d] += self.l2_reg_strength * W
            else:
                out[:d] += self.l2_reg_strength * W
        return out.reshape(-1)

    def loss_gradient(self, w):
        """Objective and gradient at ``w``: one task per chunk, summed on the client in chunk order."""
        self.n_evaluations += 1
        w = np.array(w, dtype=np.float64)
        parts = self._map(_chunk_loss_gradient, w)
        loss_sum = math.fsum(float(f) for f, _ in parts)
        grad_sum = np.zeros(self.size)
        for _, g in parts:
            grad_sum += g
        W, _ = self.split(w)
        penalty = 0.0 if self.l2_reg_strength == 0.0 else 0.5 * self.l2_reg_strength * float(np.sum(np.square(W)))
        self._w_last = w
        return loss_sum * self.scale + penalty, self._finish(grad_sum, w)

    def prepare_hessian(self):
        """The Hessian products will be at the point last evaluated."""
        if self._w_last is None:
            raise RuntimeError("prepare_hessian() must follow the evaluation at the point of the Hessian")
        self._w_hessian = self._w_last

    def hessp(self, v):
        """Hessian of the objective at the prepared point times ``v``."""
        if self._w_hessian is None:
            raise RuntimeError("prepare_hessian() must follow the evaluation at the point of the Hessian")
        self.n_hessp += 1
        v = np.array(v, dtype=np.float64)
        total = np.zeros(self.size)
        for h in self._map(_chunk_hessp, self._w_hessian, v):
            total += h
        return self._finish(total, v)


# ---------------------------------------------------------------------------
# prediction


def _block_method(block, est, method):
    return getattr(type(est), method)(est, block)


def predict_dask(est, X, method):
    """``est.<method>(X)`` on a Dask array: lazy, one task per chunk of rows."""
    _, da = _require_dask()
    check_is_fitted(est)
    X = _as_dask_matrix(X, da)
    if X.shape[1] != est.n_features_in_:
        raise ValueError(
            f"X has {X.shape[1]} features, but {type(est).__name__} is expecting {est.n_features_in_} features "
            "as input."
        )
    # the output's dtype: that of the in-memory method on one row of X's dtype
    probe = _block_method(np.zeros((1, X.shape[1]), dtype=X.dtype), est, method)
    if probe.ndim == 1:
        return X.map_blocks(_block_method, est, method, drop_axis=1, dtype=probe.dtype, meta=probe[:0])
    return X.map_blocks(
        _block_method, est, method, chunks=(X.chunks[0], (probe.shape[1],)), dtype=probe.dtype, meta=probe[:0]
    )


def score_dask(est, X, y, sample_weight=None):
    """Mean accuracy on Dask input (computed)."""
    dask, da = _require_dask()
    pred = predict_dask(est, X, "predict")
    rows = pred.chunks[0]
    y = _as_dask_vector(y, rows, da, "y")
    correct = (pred == y).astype(np.float64)
    if sample_weight is None:
        return float(correct.mean().compute())
    sw = _as_dask_vector(sample_weight, rows, da, "sample_weight", dtype=np.float64)
    num, den = dask.compute((correct * sw).sum(), sw.sum())
    return float(num / den)
