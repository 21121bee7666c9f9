"""LogisticRegression.partial_fit: mini-batch Adam on the objective of fit.

* streaming a dataset from a numpy.memmap on disk in batches for a few
  epochs ends within 1% of the objective of ``fit`` on the whole data (the
  objective evaluated by an independent float64 formula), with a peak of
  traced memory of a few batches, not the dataset;
* binary (one coefficient vector), sample and class weights, sparse batches
  equal dense ones, float32;
* the API: ``classes`` on the first call, consistency, unknown labels,
  ``class_weight="balanced"`` refused, fit resets the optimiser state and
  partial_fit continues from fit's solution, parameters validated.
"""

import functools
import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.testing import assert_allclose, assert_array_equal
from scipy.special import logsumexp
from sklearn.datasets import make_classification

from fastce import LogisticRegression


def objective(X, y, coef, intercept, C, sample_weight=None):
    """The objective of fit, float64, from scipy.special (independent of fastce's kernels)."""
    X = np.asarray(X, dtype=np.float64)
    coef = np.asarray(coef, dtype=np.float64)
    sw = np.ones(len(y)) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    Z = X @ coef.T + np.asarray(intercept, dtype=np.float64)
    if coef.shape[0] == 1:
        z = Z[:, 0]
        per_sample = np.logaddexp(0.0, z) - y * z
    else:
        per_sample = logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]
    S = sw.sum()
    return float(sw @ per_sample / S + np.sum(coef**2) / (2 * C * S))


@functools.lru_cache(maxsize=None)
def data(n_classes, n=50_000, d=20):
    informative = min(10, max(2, d // 2))
    X, y = make_classification(
        n, d, n_informative=informative, n_redundant=min(2, d - informative), n_classes=n_classes,
        n_clusters_per_class=1, random_state=n_classes,
    )  # fmt: skip
    return X, y


def stream(clf, X, y, batch, epochs, **kw):
    for _ in range(epochs):
        for start in range(0, len(y), batch):
            clf.partial_fit(X[start : start + batch], y[start : start + batch], **kw)
    return clf


@pytest.mark.parametrize("n_classes", [5, 2])
def test_memmap_stream_reaches_full_batch_objective(tmp_path, n_classes):
    X, y = data(n_classes)
    n, d = X.shape
    path = tmp_path / "X.f64"
    X.tofile(path)
    Xm = np.memmap(path, dtype=np.float64, mode="r", shape=(n, d))
    C = 1.0
    full = LogisticRegression(C=C, solver="newton-cg", tol=1e-8).fit(X, y)
    f_full = objective(X, y, full.coef_, full.intercept_, C)

    batch = 5_000
    clf = LogisticRegression(C=C, epoch_size=n)
    classes = np.arange(n_classes)
    clf.partial_fit(Xm[:batch], y[:batch], classes=classes)  # compile and allocate the state outside the trace
    tracemalloc.start()
    try:
        stream(clf, Xm, y, batch, epochs=3)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    f_stream = objective(X, y, clf.coef_, clf.intercept_, C)
    assert f_full <= f_stream * (1 + 1e-9)  # the full fit is the minimiser
    assert f_stream <= 1.01 * f_full
    assert clf.coef_.shape == (1 if n_classes == 2 else n_classes, d)
    # the whole dataset is 8 MB, a batch 0.8 MB: the batches are used as
    # views of the memmap (a copy of each batch peaks at about 0.93 MB; the
    # views at about 0.13 MB: the optimiser's buffers)
    assert peak < batch * d * 8 / 2, peak
    steps_per_batch = -(-batch // clf.batch_size)
    assert clf.t_ == steps_per_batch * (1 + 3 * n // batch)


def test_weights_reach_weighted_objective():
    X, y = data(3, n=20_000, d=10)
    rng = np.random.default_rng(0)
    sw = rng.uniform(0.0, 2.0, len(y))
    cw = {0: 1.0, 1: 2.0, 2: 0.5}
    full = LogisticRegression(solver="newton-cg", tol=1e-8, class_weight=cw).fit(X, y, sample_weight=sw)
    sw_total = sw * np.array([cw[c] for c in y])
    f_full = objective(X, y, full.coef_, full.intercept_, 1.0, sw_total)
    clf = LogisticRegression(class_weight=cw, epoch_size=sw_total.sum())
    for _ in range(4):
        for start in range(0, len(y), 2000):
            sl = slice(start, start + 2000)
            clf.partial_fit(X[sl], y[sl], classes=[0, 1, 2], sample_weight=sw[sl])
    f_stream = objective(X, y, clf.coef_, clf.intercept_, 1.0, sw_total)
    assert f_full <= f_stream * (1 + 1e-9)
    assert f_stream <= 1.01 * f_full
    assert_allclose(clf.sw_seen_, 4 * sw_total.sum())


def test_zero_weight_is_no_data():
    X, y = data(3, n=3000, d=5)
    sw = np.ones(len(y))
    sw[1000:2000] = 0.0
    keep = sw > 0
    a = LogisticRegression(batch_size=1000).partial_fit(X, y, classes=[0, 1, 2], sample_weight=sw)
    b = LogisticRegression(batch_size=1000).partial_fit(X[keep], y[keep], classes=[0, 1, 2])
    assert a.t_ == b.t_ == 2
    assert_allclose(a.coef_, b.coef_, rtol=1e-12)


def test_sparse_and_float32_batches():
    X, y = data(3, n=4000, d=8)
    dense = LogisticRegression(batch_size=500).partial_fit(X, y, classes=[0, 1, 2])
    sparse = LogisticRegression(batch_size=500).partial_fit(sp.csr_matrix(X), y, classes=[0, 1, 2])
    assert_allclose(sparse.coef_, dense.coef_, rtol=1e-9, atol=1e-12)
    assert_allclose(sparse.intercept_, dense.intercept_, rtol=1e-9, atol=1e-12)
    single = LogisticRegression(batch_size=500).partial_fit(X.astype(np.float32), y, classes=[0, 1, 2])
    assert single.coef_.dtype == np.float32
    assert_allclose(single.coef_, dense.coef_, rtol=1e-3, atol=1e-4)


def test_input_not_modified_and_labels():
    X, y = data(3, n=2000, d=5)
    labels = np.array(["a", "b", "c"])[y]
    X0, labels0 = X.copy(), labels.copy()
    sw = np.ones(len(y))
    clf = LogisticRegression().partial_fit(X, labels, classes=["c", "a", "b"], sample_weight=sw)
    assert_array_equal(X, X0)
    assert_array_equal(labels, labels0)
    assert_array_equal(sw, 1.0)
    assert_array_equal(clf.classes_, ["a", "b", "c"])
    assert set(clf.predict(X)) <= {"a", "b", "c"}
    assert np.mean(clf.predict(X) == labels) > 0.7


def test_classes_rules():
    X, y = data(3, n=1000, d=5)
    with pytest.raises(ValueError, match="classes must be passed on the first call"):
        LogisticRegression().partial_fit(X, y)
    clf = LogisticRegression().partial_fit(X, y, classes=[0, 1, 2])
    clf.partial_fit(X, y)  # later calls may omit them
    clf.partial_fit(X, y, classes=[2, 1, 0])
    with pytest.raises(ValueError, match="is not the same as on last call"):
        clf.partial_fit(X, y, classes=[0, 1, 2, 3])
    with pytest.raises(ValueError, match="labels not in classes"):
        clf.partial_fit(X, np.where(y == 2, 7, y))
    with pytest.raises(ValueError, match="at least 2 classes"):
        LogisticRegression().partial_fit(X, np.zeros(len(y)), classes=[0])
    with pytest.raises(ValueError, match="X has 4 features"):
        clf.partial_fit(X[:, :4], y)
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        LogisticRegression(class_weight="balanced").partial_fit(X, y, classes=[0, 1, 2])


def test_fit_resets_state_and_partial_fit_continues_from_fit():
    X, y = data(3, n=3000, d=5)
    clf = LogisticRegression(batch_size=1000).partial_fit(X, y, classes=[0, 1, 2])
    assert clf.t_ == 3 and clf.adam_m_.shape == (3 * 6,)
    clf.fit(X, y)
    assert clf.t_ == 0 and clf.sw_seen_ == len(y)
    assert not hasattr(clf, "adam_m_") and not hasattr(clf, "sgd_w_")
    coef = clf.coef_.copy()
    clf.set_params(learning_rate=1e-9).partial_fit(X[:1000], y[:1000])
    assert clf.t_ == 1
    assert_allclose(clf.coef_, coef, atol=1e-8)  # one tiny step away from fit's solution
    assert not np.array_equal(clf.coef_, coef)


def test_penalty_scale_default_is_weight_seen():
    """Without epoch_size the penalty is 1/(C * weight seen): with C tiny the
    model is driven to zero, and the same C with a 10x larger epoch_size
    does so less."""
    X, y = data(2, n=4000, d=5)
    small = LogisticRegression(C=1e-4, learning_rate=0.05).partial_fit(X, y, classes=[0, 1])
    large = LogisticRegression(C=1e-4, learning_rate=0.05, epoch_size=40 * len(y)).partial_fit(X, y, classes=[0, 1])
    assert np.abs(small.coef_).max() < np.abs(large.coef_).max()
    assert small.sw_seen_ == large.sw_seen_ == len(y)


@pytest.mark.parametrize(
    "params",
    [
        dict(learning_rate=0),
        dict(learning_rate=-1.0),
        dict(batch_size=0),
        dict(averaging_window=0),
        dict(epoch_size=0),
    ],
)
def test_invalid_parameters(params):
    X, y = data(2, n=100, d=3)
    with pytest.raises(ValueError, match=next(iter(params))):
        LogisticRegression(**params).partial_fit(X, y, classes=[0, 1])


def test_get_params_lists_the_optimiser():
    params = LogisticRegression().get_params()
    assert params["learning_rate"] == 0.03
    assert params["batch_size"] == 256
    assert params["averaging_window"] == 100
    assert params["epoch_size"] is None


def test_nan_in_batch():
    X, y = data(2, n=600, d=3)
    X = X.copy()
    X[300, 1] = np.nan
    with pytest.raises(ValueError, match="Input X contains NaN"):
        LogisticRegression().partial_fit(X, y, classes=[0, 1])
