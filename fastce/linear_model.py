"""Logistic regression with scikit-learn's API on fastce's fused kernels."""

import math
import numbers
import time
import warnings

import numpy as np
import scipy.sparse as sp
from scipy import optimize
from sklearn.base import BaseEstimator, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model._base import LinearClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.class_weight import compute_class_weight
from sklearn.utils.multiclass import _check_partial_fit_first_call, check_classification_targets
from sklearn.utils.validation import _check_sample_weight, assert_all_finite, check_is_fitted, validate_data

from ._config import blas_limit, resolve_n_threads, run_kernel
from .dask import _is_dask_collection
from ._linear_loss import LinearLoss

__all__ = ["LogisticRegression"]

_CONVERGENCE_ADVICE = (
    "Scaling the features may help, see:\n    https://scikit-learn.org/stable/modules/preprocessing.html"
)


class LogisticRegression(LinearClassifierMixin, BaseEstimator):
    r"""Logistic regression (binomial or multinomial) on fastce's fused kernels.

    A drop-in for :class:`sklearn.linear_model.LogisticRegression` with the
    solvers ``"lbfgs"`` and ``"newton-cg"``: same parameters and defaults,
    same objective (for the same ``C``, class and sample weights the
    minimiser is the same), same attributes. The objective, its gradient and
    its Hessian-vector products are computed by parallel Numba kernels that
    fuse the loss with its gradient, and ``n_jobs`` sets the threads they use.

    Parameters
    ----------
    penalty : {"l2", None}, default="l2"
        ``"l2"``: add :math:`\frac{1}{2C}\lVert W\rVert^2` (scaled as below);
        ``None``: no penalty, `C` is ignored.
    C : float, default=1.0
        Inverse of the regularisation strength, positive (``np.inf`` means no
        penalty).
    fit_intercept : bool, default=True
        Whether to fit an intercept (never penalised).
    solver : {"lbfgs", "newton-cg"}, default="lbfgs"
        ``"lbfgs"``: SciPy's L-BFGS-B with scikit-learn's options.
        ``"newton-cg"``: truncated Newton, conjugate gradients on the exact
        Hessian-vector product (a fused kernel, one ``X @ V`` and one
        ``X.T @ R`` per product) and a backtracking line search.
    tol : float, default=1e-4
        Stop when the largest absolute component of the gradient is at most
        `tol` (for ``"lbfgs"`` also when the objective stops decreasing
        relatively by more than ``64 * eps``, as scikit-learn).
    max_iter : int, default=100
        Maximum number of solver iterations.
    class_weight : dict, "balanced" or None, default=None
        Weights of the classes, multiplied into the sample weights;
        ``"balanced"`` uses ``n_samples / (n_classes * weighted class counts)``.
    warm_start : bool, default=False
        Start from the previous solution (``coef_``, ``intercept_``).
    n_jobs : int, default=None
        Threads of the kernels and of BLAS during :meth:`fit`: ``None`` keeps
        the current settings (all cores), ``-1`` all cores, ``k`` at most `k`.
        The fitted model does not depend on it beyond rounding of the BLAS
        products.
    verbose : int, default=0
        Print the objective and the gradient's norm at every iteration.
    learning_rate : float, default=0.03
        :meth:`partial_fit` only: the (constant) step size of Adam.
    batch_size : int, default=256
        :meth:`partial_fit` only: rows per Adam step; each call splits its
        batch into mini-batches of this many rows (the last one may be
        smaller).
    averaging_window : int, default=100
        :meth:`partial_fit` only: ``coef_`` is the average of the Adam
        iterates, uniform over the first `averaging_window` steps, then
        exponential with this time constant (in steps). 1: the last iterate.
    epoch_size : float, default=None
        :meth:`partial_fit` only: :math:`S` of the penalty
        :math:`\frac{1}{2CS}\lVert W\rVert^2`, the number of samples (or
        their total weight, with sample or class weights) of one pass over
        the data. ``None``: the weight seen by :meth:`fit` and
        :meth:`partial_fit` so far, i.e. the penalty of :meth:`fit` on the
        concatenation of all the batches seen (with repetitions).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
        Class labels, sorted.
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
        Coefficients; one row for two classes (of ``classes_[1]``). Same
        dtype as the training data (float32 stays float32).
    intercept_ : ndarray of shape (1,) or (n_classes,)
        Intercepts (zeros when ``fit_intercept=False``).
    n_iter_ : ndarray of shape (1,)
        Number of solver iterations (after :meth:`partial_fit`: its number
        of Adam steps).
    n_features_in_ : int
        Number of features seen during :meth:`fit`.
    feature_names_in_ : ndarray of shape (``n_features_in_``,)
        Names of the features, when `X` has string column names (pandas).
    t_ : int
        Number of Adam steps of :meth:`partial_fit` since the last
        :meth:`fit` (0 after :meth:`fit`).
    sw_seen_ : float
        Sample weight seen by :meth:`fit` and :meth:`partial_fit` since the
        last :meth:`fit` (the number of samples when unweighted).
    adam_m_, adam_v_ : ndarray of shape (n_params,)
        :meth:`partial_fit`: Adam's first and second moments of the flat
        parameter vector (``[coef_ | intercept_]`` raveled, float64).
    sgd_w_ : ndarray of shape (n_params,)
        :meth:`partial_fit`: the last Adam iterate (flat, float64);
        ``coef_`` and ``intercept_`` are the averaged iterate.

    See Also
    --------
    sklearn.linear_model.LogisticRegression : The reference estimator.
    fastce.cross_entropy : The fused loss kernel of the multinomial model.

    Notes
    -----
    With sample weights :math:`s_i` (times the weight of the sample's class),
    :math:`S = \sum_i s_i` and :math:`\ell` the cross-entropy of the softmax
    (three or more classes) or the binary cross-entropy on the logit (two
    classes), the minimised objective is scikit-learn's:

    .. math::
        \frac{1}{S} \sum_i s_i\, \ell(y_i, x_i W + b)
        + \frac{1}{2\, C\, S} \lVert W \rVert_F^2 .

    For three or more classes the model has one coefficient vector per class
    (over-parameterised; the penalty makes the minimiser unique), as
    scikit-learn >= 1.5.

    :meth:`partial_fit` minimises the same objective by mini-batch Adam
    on batches that come one at a time (see :mod:`fastce._sgd`): the
    gradient of each mini-batch of weight :math:`S_B` is that of
    :math:`\frac{1}{S_B}\sum_{i\in B} s_i \ell_i + \frac{1}{2CS}\lVert W\rVert^2`
    with :math:`S` = `epoch_size`, an unbiased estimate of the gradient of
    the objective above. It starts from ``coef_`` when the estimator is
    fitted (after :meth:`fit` too), with fresh optimiser state after
    :meth:`fit`. ``class_weight="balanced"`` needs the whole data and is not
    supported by :meth:`partial_fit`.

    Differences from scikit-learn: only the ``"lbfgs"`` and ``"newton-cg"``
    solvers and the ``"l2"``/``None`` penalties; negative sample weights are
    rejected (scikit-learn's ``ValueError`` for them) because they can make
    the objective unbounded; ``n_jobs`` is honoured.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from fastce import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = LogisticRegression(max_iter=1000).fit(X, y)
    >>> clf.predict(X[:2])
    array([0, 0])
    >>> clf.predict_proba(X[:2]).round(3)
    array([[0.982, 0.018, 0.   ],
           [0.971, 0.029, 0.   ]])
    >>> round(clf.score(X, y), 3)
    0.973

    The same model as scikit-learn's (at a tight tolerance, up to rounding):

    >>> from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    >>> sk = SkLogisticRegression(tol=1e-10, max_iter=10_000).fit(X, y)
    >>> ours = LogisticRegression(tol=1e-10, max_iter=10_000).fit(X, y)
    >>> bool(abs(ours.coef_ - sk.coef_).max() < 1e-4 * abs(sk.coef_).max())
    True

    Data in batches, one Adam step per ``batch_size`` rows of each batch:

    >>> stream = LogisticRegression(batch_size=10)
    >>> for batch in np.array_split(np.random.default_rng(0).permutation(len(y)), 5):
    ...     _ = stream.partial_fit(X[batch], y[batch], classes=[0, 1, 2])
    >>> stream.coef_.shape, stream.t_
    ((3, 4), 15)
    """

    _parameter_constraints: dict = {
        "penalty": [StrOptions({"l2"}), None],
        "C": [Interval(numbers.Real, 0, None, closed="right")],
        "fit_intercept": ["boolean"],
        "solver": [StrOptions({"lbfgs", "newton-cg"})],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 0, None, closed="left")],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "warm_start": ["boolean"],
        "n_jobs": [None, numbers.Integral],
        "verbose": ["verbose"],
        "learning_rate": [Interval(numbers.Real, 0, None, closed="neither")],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "averaging_window": [Interval(numbers.Integral, 1, None, closed="left")],
        "epoch_size": [Interval(numbers.Real, 0, None, closed="neither"), None],
    }

    def __init__(
        self,
        penalty="l2",
        *,
        C=1.0,
        fit_intercept=True,
        solver="lbfgs",
        tol=1e-4,
        max_iter=100,
        class_weight=None,
        warm_start=False,
        n_jobs=None,
        verbose=0,
        learning_rate=0.03,
        batch_size=256,
        averaging_window=100,
        epoch_size=None,
    ):
        self.penalty = penalty
        self.C = C
        self.fit_intercept = fit_intercept
        self.solver = solver
        self.tol = tol
        self.max_iter = max_iter
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.n_jobs = n_jobs
        self.verbose = verbose
        self.learning_rate = learning_rate
        self.batch_size = batch_size
        self.averaging_window = averaging_window
        self.epoch_size = epoch_size

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y, sample_weight=None):
        """Fit the model.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Training data; float32 is kept, other dtypes become float64;
            sparse CSR and CSC are used as they are. A Dask array (chunked
            along the rows) is fitted chunk by chunk where its chunks are
            (see :mod:`fastce._dask_linear`).
        y : array-like or dask.array.Array of shape (n_samples,)
            Class labels (any type).
        sample_weight : array-like or dask.array.Array of shape (n_samples,), default=None
            Non-negative weight of each sample.

        Returns
        -------
        self : LogisticRegression
            The fitted estimator.
        """
        C = self._check_C_and_n_jobs()
        if _is_dask_collection(X, y, sample_weight):
            from ._dask_linear import fit_dask

            return fit_dask(self, X, y, sample_weight, C)
        # X is checked for NaN and inf by the first evaluation of the objective
        # (see _first_evaluation): that saves a pass over X.
        X, y = validate_data(
            self, X, y, accept_sparse=["csr", "csc"], dtype=[np.float64, np.float32], order="C",
            accept_large_sparse=True, ensure_all_finite=False,
        )  # fmt: skip
        self.classes_, y_enc = _encode_labels(y, self.n_jobs)
        n_classes = len(self.classes_)
        if n_classes < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data contains only one "
                f"class: {self.classes_[0]!r}"
            )

        if sample_weight is not None or self.class_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=X.dtype, copy=True, ensure_non_negative=True
            )
            if self.class_weight is not None:
                cw = compute_class_weight(
                    self.class_weight, classes=self.classes_, y=y, sample_weight=sample_weight
                )
                sample_weight *= cw.astype(X.dtype)[y_enc]
            if not np.any(sample_weight > 0):
                raise ValueError("Sample weights must contain at least one non-zero number.")
        sw_sum = float(X.shape[0] if sample_weight is None else np.sum(sample_weight))
        l2 = 0.0 if math.isinf(C) else 1.0 / (C * sw_sum)

        dtype = X.dtype
        if sp.issparse(X):
            # SciPy's sparse products accumulate in the matrix's dtype: float32
            # data is upcast once (the data array only) so that the gradient
            # is accurate; coef_ comes back in float32 all the same.
            X = X.astype(np.float64) if dtype == np.float32 else X
        elif not X.flags.c_contiguous:
            X = np.ascontiguousarray(X)

        loss = LinearLoss(
            X, y_enc, sample_weight, n_classes=n_classes, fit_intercept=self.fit_intercept,
            l2_reg_strength=l2, n_threads=self.n_jobs,
        )  # fmt: skip
        w0 = loss.zeros()
        if self.warm_start and hasattr(self, "coef_"):
            w0 = self._warm_start_coef(loss)

        # BLAS does the products only on the dense path without the single-pass
        # kernels; elsewhere it sees vectors of n_dof elements, where its idle
        # threads only compete with the kernels' threads.
        if loss.single_pass or loss.sparse:
            blas_threads = 1
        else:
            blas_threads = None if self.n_jobs is None else resolve_n_threads(self.n_jobs)
        with blas_limit(blas_threads):
            if self.solver == "newton-cg":
                loss.keep_hessian = True
            f0, g0 = self._first_evaluation(loss, X, w0)
            if self.solver == "lbfgs":
                w, n_iter = _lbfgs(loss, w0, f0, g0, self.max_iter, self.tol, self.verbose)
            else:
                w, n_iter = _newton_cg(loss, w0, f0, g0, self.max_iter, self.tol, self.verbose)

        self.coef_, self.intercept_ = loss.coef_intercept(w, dtype=dtype)
        self.n_iter_ = np.array([n_iter], dtype=np.int32)
        self._reset_sgd_state(sw_sum)
        return self

    def _check_C_and_n_jobs(self):
        """The C of the objective (``math.inf`` without penalty); rejects ``n_jobs=0``."""
        if self.n_jobs == 0:
            raise ValueError("n_jobs == 0 has no meaning; use None, a positive int or -1 for all cores")
        if self.penalty is None:
            if self.C != 1.0:
                warnings.warn("Setting penalty=None will ignore the C parameter", UserWarning)
            return math.inf
        return float(self.C)

    def _reset_sgd_state(self, sw_sum):
        """After :meth:`fit`: no Adam state, the weight seen is that of the fit."""
        for name in ("adam_m_", "adam_v_", "sgd_w_"):
            self.__dict__.pop(name, None)
        self.t_ = 0
        self.sw_seen_ = float(sw_sum)

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None, sample_weight=None):
        """One pass of mini-batch Adam over a batch of data.

        For data that does not fit in memory or comes in batches: call it
        on each batch in turn, for as many passes over the data as needed.
        The model minimises the objective of :meth:`fit` (see Notes); it is
        the average of the Adam iterates (see `averaging_window`).

        Parameters
        ----------
        X : {array-like, sparse matrix} of shape (n_samples, n_features)
            A batch of training data (float32 is kept, other dtypes become
            float64). Contiguous rows (for instance a slice of a
            :class:`numpy.memmap`) are used without a copy.
        y : array-like of shape (n_samples,)
            Class labels, all in `classes`.
        classes : array-like of shape (n_classes,), default=None
            All the classes of the data; needed on the first call (unless
            the estimator was fitted by :meth:`fit`), and if given later, the
            same as ``classes_``.
        sample_weight : array-like of shape (n_samples,), default=None
            Non-negative weight of each sample.

        Returns
        -------
        self : LogisticRegression
            The updated estimator.
        """
        from ._sgd import SGDState, adam_pass

        C = self._check_C_and_n_jobs()
        if self.class_weight == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: it needs the class counts of the "
                "whole data. Pass a dict of class weights, e.g. compute_class_weight('balanced', ...) on the "
                "labels."
            )
        first_call = _check_partial_fit_first_call(self, classes)
        if len(self.classes_) < 2:
            classes_ = self.classes_
            del self.classes_
            raise ValueError(f"classes must hold at least 2 classes, got {classes_!r}")
        X, y = validate_data(
            self, X, y, accept_sparse=["csr"], dtype=[np.float64, np.float32], order="C",
            accept_large_sparse=True, ensure_all_finite=False, reset=first_call,
        )  # fmt: skip
        y_enc = np.searchsorted(self.classes_, y).astype(np.intp, copy=False)
        bad = (y_enc >= len(self.classes_)) | (self.classes_[np.minimum(y_enc, len(self.classes_) - 1)] != y)
        if np.any(bad):
            raise ValueError(f"y contains labels not in classes {self.classes_!r}: {np.unique(y[bad])!r}")
        n_classes = len(self.classes_)
        if sample_weight is not None or self.class_weight is not None:
            sample_weight = _check_sample_weight(
                sample_weight, X, dtype=np.float64, copy=True, ensure_non_negative=True
            )
            if self.class_weight is not None:
                cw = compute_class_weight(self.class_weight, classes=self.classes_, y=self.classes_)
                sample_weight *= cw[y_enc]
        dtype = X.dtype
        if sp.issparse(X) and dtype == np.float32:
            X = X.astype(np.float64)  # as in fit: SciPy's products accumulate in the matrix's dtype

        size = (n_classes if n_classes > 2 else 1) * (X.shape[1] + int(self.fit_intercept))
        if getattr(self, "sgd_w_", None) is not None and self.sgd_w_.shape == (size,):
            state = SGDState(self.sgd_w_, None, self.adam_m_, self.adam_v_, self.t_, self.sw_seen_)
        else:
            sw_seen = getattr(self, "sw_seen_", 0.0)
            state = SGDState(np.zeros(size), None, np.zeros(size), np.zeros(size), 0, sw_seen)
            if hasattr(self, "coef_"):  # fitted by fit: continue from its solution
                state.w = _flat_coef(self.coef_, self.intercept_, n_classes, X.shape[1], self.fit_intercept, size)
        prev = (
            _flat_coef(self.coef_, self.intercept_, n_classes, X.shape[1], self.fit_intercept, size)
            if hasattr(self, "coef_")
            else state.w.copy()
        )
        state.w_avg = prev.astype(np.float64, copy=True)
        blas_threads = 1 if self.n_jobs is None else resolve_n_threads(self.n_jobs)
        with blas_limit(blas_threads):
            n_steps = adam_pass(
                X, y_enc, sample_weight, state, n_classes=n_classes, fit_intercept=self.fit_intercept, C=C,
                epoch_size=self.epoch_size, batch_size=self.batch_size, learning_rate=self.learning_rate,
                averaging_window=self.averaging_window, n_threads=self.n_jobs, estimator_name=type(self).__name__,
            )  # fmt: skip
        self.sgd_w_, self.adam_m_, self.adam_v_ = state.w, state.m, state.v
        self.t_, self.sw_seen_ = state.t, state.sw_seen
        k = n_classes if n_classes > 2 else 1
        w2 = state.w_avg.reshape(k, -1)
        d = X.shape[1]
        self.coef_ = np.array(w2[:, :d], dtype=dtype)
        self.intercept_ = np.array(w2[:, d], dtype=dtype) if self.fit_intercept else np.zeros(k, dtype=dtype)
        self.n_iter_ = np.array([n_steps], dtype=np.int32)
        return self

    def _first_evaluation(self, loss, X, w0):
        """Objective and gradient at the starting point, and the check of X for NaN and inf.

        Any NaN or infinite element of X makes the gradient non-finite (its
        product with the row's gradient, zero or not, is NaN or infinite), so
        only then is X scanned, for scikit-learn's error message.
        """
        f0, g0 = loss.loss_gradient(w0)
        if not (np.isfinite(f0) and np.all(np.isfinite(g0))):
            assert_all_finite(X, input_name="X", estimator_name=type(self).__name__)
        return f0, g0

    def _warm_start_coef(self, loss):
        coef = np.asarray(self.coef_)
        expected = (loss.n_classes if loss.multinomial else 1, loss.n_features)
        if coef.shape != expected:
            raise ValueError(
                f"Initialization coef is of shape {coef.shape}, expected shape {expected} (warm_start=True "
                "with data of another shape or number of classes)"
            )
        return loss.flat(coef, self.intercept_)

    def score(self, X, y, sample_weight=None):
        """Mean accuracy of :meth:`predict` on ``(X, y)``, as scikit-learn's classifiers.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Samples.
        y : array-like or dask.array.Array of shape (n_samples,)
            True labels.
        sample_weight : array-like or dask.array.Array of shape (n_samples,), default=None
            Weights of the samples.

        Returns
        -------
        score : float
            Fraction of correctly classified samples (weighted); computed
            for Dask input.
        """
        if _is_dask_collection(X, y, sample_weight):
            from ._dask_linear import score_dask

            return score_dask(self, X, y, sample_weight)
        return super().score(X, y, sample_weight=sample_weight)

    def decision_function(self, X):
        """Confidence scores: the logits ``X @ coef_.T + intercept_``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        scores : ndarray of shape (n_samples,) or (n_samples, n_classes)
            The logit of ``classes_[1]`` for two classes, one column per
            class otherwise. A lazy Dask array (one task per chunk of rows)
            for a Dask `X`.
        """
        if _is_dask_collection(X):
            from ._dask_linear import predict_dask

            return predict_dask(self, X, "decision_function")
        return super().decision_function(X)

    def predict(self, X):
        """Class of the largest decision function.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        y_pred : ndarray of shape (n_samples,)
            Labels from ``classes_``; a lazy Dask array for a Dask `X`.
        """
        if _is_dask_collection(X):
            from ._dask_linear import predict_dask

            return predict_dask(self, X, "predict")
        return super().predict(X)

    def predict_proba(self, X):
        """Probability of each class.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        proba : ndarray of shape (n_samples, n_classes)
            Probabilities in the order of ``classes_``: ``[sigmoid(-z),
            sigmoid(z)]`` of the decision function for two classes, its
            softmax otherwise. A lazy Dask array for a Dask `X`.
        """
        from .special import sigmoid, softmax

        if _is_dask_collection(X):
            from ._dask_linear import predict_dask

            return predict_dask(self, X, "predict_proba")
        check_is_fitted(self)
        z = self.decision_function(X)
        if z.ndim == 1:
            return np.stack([sigmoid(-z), sigmoid(z)], axis=1)
        return softmax(z, axis=1)

    def predict_log_proba(self, X):
        """Logarithm of the probability of each class, without rounding through ``log(proba)``.

        Parameters
        ----------
        X : {array-like, sparse matrix, dask.array.Array} of shape (n_samples, n_features)
            Samples.

        Returns
        -------
        log_proba : ndarray of shape (n_samples, n_classes)
            ``[log_sigmoid(-z), log_sigmoid(z)]`` for two classes, the
            ``log_softmax`` of the decision function otherwise. A lazy Dask
            array for a Dask `X`.
        """
        from .special import log_sigmoid, log_softmax

        if _is_dask_collection(X):
            from ._dask_linear import predict_dask

            return predict_dask(self, X, "predict_log_proba")
        check_is_fitted(self)
        z = self.decision_function(X)
        if z.ndim == 1:
            return np.stack([log_sigmoid(-z), log_sigmoid(z)], axis=1)
        return log_softmax(z, axis=1)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags


def _flat_coef(coef, intercept, n_classes, n_features, fit_intercept, size):
    """The flat float64 parameter vector ``[coef_ | intercept_]`` (rows raveled)."""
    k = n_classes if n_classes > 2 else 1
    coef = np.asarray(coef, dtype=np.float64)
    if coef.shape != (k, n_features):
        raise ValueError(f"coef_ is of shape {coef.shape}, expected {(k, n_features)}")
    w = np.zeros((k, n_features + int(fit_intercept)))
    w[:, :n_features] = coef
    if fit_intercept:
        w[:, n_features] = np.asarray(intercept, dtype=np.float64).reshape(k)
    return w.reshape(size)


_LABEL_BLOCK = 1 << 16
# integer dtypes whose values fit in int64 (the kernels' arithmetic)
_FAST_LABEL_DTYPES = frozenset(np.dtype(t) for t in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32))


def _encode_labels(y, n_threads=None):
    """``classes_`` (sorted) and the index of each label in it, as intp.

    Integer labels of a compact range (the usual case) are encoded by three
    parallel passes (range, presence, table lookup) instead of a sort;
    anything else goes through scikit-learn's target check and ``np.unique``.
    A 1-D integer array is always a valid classification target.
    """
    if y.dtype in _FAST_LABEL_DTYPES and y.size and y.dtype.isnative:
        from . import _linear_kernels as LK

        y = np.ascontiguousarray(y)
        n_blocks = -(-y.size // _LABEL_BLOCK)
        ranges = np.empty((n_blocks, 2), dtype=np.int64)
        run_kernel(LK.label_range_par, LK.label_range_ser, n_threads, y.size, y, ranges, _LABEL_BLOCK)
        lo, hi = int(ranges[:, 0].min()), int(ranges[:, 1].max())
        span = hi - lo + 1
        if span <= max(1 << 16, 2 * y.size):
            partial = np.empty(n_blocks)
            seen = np.zeros(span, dtype=np.uint8)
            run_kernel(LK.label_mark_par, LK.label_mark_ser, n_threads, y.size, y, lo, seen, partial, _LABEL_BLOCK)
            present = np.flatnonzero(seen)
            table = np.zeros(span, dtype=np.intp)
            table[present] = np.arange(present.size)
            y_enc = np.empty(y.size, dtype=np.intp)
            run_kernel(
                LK.label_encode_par, LK.label_encode_ser, n_threads, y.size, y, lo, table, y_enc, partial, _LABEL_BLOCK
            )
            return (present + lo).astype(y.dtype), y_enc
    check_classification_targets(y)
    classes, y_enc = np.unique(y, return_inverse=True)
    return classes, y_enc.reshape(-1).astype(np.intp, copy=False)


# ---------------------------------------------------------------------------
# solvers


def _lbfgs(loss, w0, f0, g0, max_iter, tol, verbose):
    """SciPy's L-BFGS-B with the options of scikit-learn's ``lbfgs`` solver.

    ``f0, g0``: objective and gradient at ``w0``, already computed.
    """
    first = [np.array(w0, dtype=np.float64), f0, g0]

    def fun(w):
        if first and np.array_equal(w, first[0]):
            _, f, g = first
            first.clear()
            return f, g.copy()
        first.clear()
        return loss.loss_gradient(w)

    callback = None
    if verbose:
        t0 = time.perf_counter()
        state = {"it": 0}

        def callback(intermediate_result):
            state["it"] += 1
            g = intermediate_result.jac if hasattr(intermediate_result, "jac") else None
            gmax = float(np.max(np.abs(g))) if g is not None else float("nan")
            print(
                f"lbfgs iter {state['it']:4d}  objective {intermediate_result.fun:.10g}  max|grad| {gmax:.3e}  "
                f"evaluations {loss.n_evaluations}  {time.perf_counter() - t0:.2f} s"
            )

    result = optimize.minimize(
        fun,
        w0,
        method="L-BFGS-B",
        jac=True,
        callback=callback,
        options={"maxiter": max_iter, "maxls": 50, "gtol": tol, "ftol": 64 * np.finfo(float).eps},
    )
    n_iter = min(result.nit, max_iter)
    if result.status != 0:
        message = f"lbfgs failed to converge after {n_iter} iteration(s) (status={result.status}):\n{result.message}\n"
        if n_iter == max_iter:
            message += f"\nIncrease the number of iterations to improve the convergence (max_iter={max_iter})."
        warnings.warn(message + "\n" + _CONVERGENCE_ADVICE, ConvergenceWarning, stacklevel=3)
    return result.x, n_iter


def _cg(hessp, grad, maxiter, tol):
    """Approximately solve ``H x = -grad`` by conjugate gradients (scikit-learn's ``_cg``).

    Stops when the residual's L1 norm is at most `tol`, after `maxiter`
    products, or on (near-)zero or negative curvature.
    """
    eps = 16 * np.finfo(np.float64).eps
    x = np.zeros_like(grad)
    r = grad.copy()
    p = -r
    rr = r @ r
    p_norm2 = rr
    for i in range(maxiter + 1):
        if np.sum(np.abs(r)) <= tol:
            break
        hp = hessp(p)
        curv = p @ hp
        if 0 <= curv <= eps * p_norm2:
            break
        if curv < 0:
            if i == 0:
                x += rr / curv * p
            break
        alpha = rr / curv
        x += alpha * p
        r += alpha * hp
        rr_new = r @ r
        beta = rr_new / rr
        p = -r + beta * p
        p_norm2 = rr_new + beta**2 * p_norm2
        rr = rr_new
    return x


def _line_search(loss, w, f, g, p, max_steps=40, c1=1e-4):
    """Backtracking (Armijo) line search from ``w`` along ``p``.

    Each trial is one fused objective+gradient evaluation, so an accepted step
    costs nothing more. Like scikit-learn's, it also accepts the full step
    when the objective changes by less than its rounding error while the L1
    norm of the gradient decreases (the end game of a tight ``tol``).

    Returns ``(status, w, f, g)`` with status 1 (sufficient decrease), 2 (a
    step within rounding of the objective) or 0 (failure: ``w`` unchanged);
    ``loss`` has then last been evaluated at the returned ``w``.
    """
    slope = float(g @ p)
    if not slope < 0:
        p = -g
        slope = -float(g @ g)
    tiny = 16 * np.finfo(np.float64).eps * abs(f)
    g1_norm = np.sum(np.abs(g))
    alpha = 1.0
    for _ in range(max_steps):
        w_new = w + alpha * p
        f_new, g_new = loss.loss_gradient(w_new)
        if f_new <= f + c1 * alpha * slope:
            return 1, w_new, f_new, g_new
        if alpha == 1.0 and abs(f_new - f) <= tiny and np.sum(np.abs(g_new)) < g1_norm:
            return 2, w_new, f_new, g_new
        if not np.isfinite(f_new):
            alpha *= 0.1
            continue
        # minimiser of the quadratic through f, slope and f_new, kept in [0.1, 0.5] * alpha
        denom = 2.0 * (f_new - f - slope * alpha)
        step = -slope * alpha * alpha / denom if denom > 0 else 0.5 * alpha
        alpha = min(max(step, 0.1 * alpha), 0.5 * alpha)
    loss.loss_gradient(w)  # the caller may want the Hessian at w
    return 0, w, f, g


def _newton_cg(loss, w0, f0, g0, max_iter, tol, verbose, max_inner=200):
    """Truncated Newton: scikit-learn's ``newton-cg`` algorithm on fused evaluations.

    Each iteration: Hessian products by conjugate gradients up to the relative
    residual ``min(0.5, sqrt(|g|_1))`` (superlinear convergence), then a
    backtracking line search whose accepted trial already carries the next
    gradient.
    """
    t0 = time.perf_counter()
    w = np.array(w0, dtype=np.float64)
    f, g = f0, g0  # loss.keep_hessian was set before they were computed
    k = 0
    converged = False
    stalled = 0  # consecutive steps that changed the objective by rounding only
    while True:
        gmax = float(np.max(np.abs(g))) if g.size else 0.0
        if verbose:
            print(
                f"newton-cg iter {k:4d}  objective {f:.10g}  max|grad| {gmax:.3e}  evaluations "
                f"{loss.n_evaluations}  hessian products {loss.n_hessp}  {time.perf_counter() - t0:.2f} s"
            )
        if gmax <= tol:
            converged = True
            break
        if k >= max_iter:
            break
        loss.prepare_hessian()
        g1 = float(np.sum(np.abs(g)))
        step = _cg(loss.hessp, g, max_inner, min(0.5, math.sqrt(g1)) * g1)
        status, w, f, g = _line_search(loss, w, f, g, step)
        if status == 0:
            warnings.warn(
                f"newton-cg: the line search could not decrease the objective after {k} iteration(s) "
                f"(max|grad| {gmax:.3e} > tol={tol}): the objective is at its rounding precision",
                ConvergenceWarning,
                stacklevel=3,
            )
            break
        k += 1
        stalled = stalled + 1 if status == 2 else 0
        if stalled >= 3:
            gmax = float(np.max(np.abs(g)))
            converged = gmax <= tol
            if not converged:
                warnings.warn(
                    f"newton-cg stopped after {k} iteration(s): the objective no longer changes beyond its "
                    f"rounding error (max|grad| {gmax:.3e} > tol={tol})",
                    ConvergenceWarning,
                    stacklevel=3,
                )
            break
    if not converged and k >= max_iter:
        warnings.warn(
            f"newton-cg failed to converge after {k} iteration(s) at objective {f} (max|grad| {gmax:.3e} > "
            f"tol={tol}).\nIncrease the number of iterations (max_iter={max_iter}). {_CONVERGENCE_ADVICE}",
            ConvergenceWarning,
            stacklevel=3,
        )
    return w, k
