"""LogisticRegression on Dask arrays against the in-memory fit on the same data.

* fit chunk by chunk (synchronous scheduler, and a real ``dask.distributed``
  LocalCluster of two worker processes): binary and multinomial, lbfgs and
  newton-cg, sample weights (Dask or NumPy), class weights (dict and
  "balanced", whose counts are global): the coefficients of the in-memory
  ``fastce.LogisticRegression`` fit on the computed data, at a tight
  tolerance, within 1e-6 relative;
* predict, predict_proba, predict_log_proba, decision_function on a Dask
  array are lazy Dask arrays (one task per chunk) equal to the in-memory
  results;
* bad input: the errors of the in-memory fit.
"""

import numpy as np
import pytest
from numpy.testing import assert_allclose, assert_array_equal
from sklearn.datasets import make_classification

from fastce import LogisticRegression

dask = pytest.importorskip("dask")
da = pytest.importorskip("dask.array")

TIGHT = dict(tol=1e-10, max_iter=1000)


def problem(n_classes, n=6000, d=8, seed=0):
    X, y = make_classification(
        n, d, n_informative=5, n_classes=n_classes, n_clusters_per_class=1, random_state=seed
    )
    sw = np.random.default_rng(seed).uniform(0.0, 3.0, n)
    return X, y, sw


def assert_same_model(est, ref):
    scale = np.abs(ref.coef_).max()
    assert_allclose(est.coef_, ref.coef_, rtol=1e-6, atol=1e-6 * scale)
    assert_allclose(est.intercept_, ref.intercept_, rtol=1e-6, atol=1e-6 * scale)
    assert_array_equal(est.classes_, ref.classes_)
    assert est.coef_.dtype == ref.coef_.dtype
    assert est.n_features_in_ == ref.n_features_in_


def assert_same_predictions(est, ref, Xd, X):
    for method in ("predict", "predict_proba", "predict_log_proba", "decision_function"):
        lazy = getattr(est, method)(Xd)
        assert isinstance(lazy, da.Array), method
        assert lazy.chunks[0] == Xd.chunks[0], method
        got = lazy.compute()
        expected = getattr(ref, method)(X)
        assert got.shape == expected.shape and got.dtype == expected.dtype, method
        if method == "predict":
            # the models agree to 1e-6: a sample within that of a tie may differ
            assert np.mean(got == expected) > 0.999
        else:
            assert_allclose(got, expected, rtol=1e-5, atol=1e-6, err_msg=method)


# ---------------------------------------------------------------------------
# synchronous scheduler


@pytest.mark.parametrize(
    "n_classes, solver, weights",
    [
        (2, "lbfgs", "dask"),
        (2, "newton-cg", None),
        (3, "lbfgs", "numpy"),
        (4, "newton-cg", "dask"),
    ],
)
def test_fit_synchronous(n_classes, solver, weights):
    X, y, sw = problem(n_classes)
    sw = None if weights is None else sw
    # row chunks of unequal size, two column chunks (made one), y in other chunks
    Xd = da.from_array(X, chunks=(1700, 4))
    yd = da.from_array(y, chunks=2500)
    swd = da.from_array(sw, chunks=1000) if weights == "dask" else sw
    ref = LogisticRegression(solver=solver, **TIGHT).fit(X, y, sample_weight=sw)
    with dask.config.set(scheduler="synchronous"):
        est = LogisticRegression(solver=solver, **TIGHT).fit(Xd, yd, sample_weight=swd)
        assert_same_model(est, ref)
        assert_same_predictions(est, ref, Xd, X)
        assert est.score(Xd, yd) == pytest.approx(ref.score(X, y))
        assert est.score(Xd, yd, sample_weight=swd if weights else None) == pytest.approx(
            ref.score(X, y, sample_weight=sw)
        )


@pytest.mark.parametrize("class_weight", ["balanced", {0: 2.0, 2: 0.5}])
def test_class_weight_uses_global_counts(class_weight):
    X, y, sw = problem(3, seed=1)
    # sort by label: each chunk holds (almost) one class, so per-chunk counts would be wrong
    order = np.argsort(y, kind="stable")
    X, y, sw = X[order], y[order], sw[order]
    ref = LogisticRegression(class_weight=class_weight, **TIGHT).fit(X, y, sample_weight=sw)
    with dask.config.set(scheduler="synchronous"):
        est = LogisticRegression(class_weight=class_weight, **TIGHT).fit(
            da.from_array(X, chunks=(1000, -1)), y, sample_weight=da.from_array(sw, chunks=1000)
        )
    assert_same_model(est, ref)


def test_labels_float32_no_intercept_no_penalty_warm_start():
    X, y, _ = problem(3, n=3000, seed=2)
    X = X.astype(np.float32)
    labels = np.array(["b", "a", "c"])[y]
    Xd = da.from_array(X, chunks=(700, -1))
    with dask.config.set(scheduler="synchronous"):
        for params in (dict(fit_intercept=False), dict(penalty=None), dict(C=0.01, solver="newton-cg")):
            ref = LogisticRegression(**params, **TIGHT).fit(X, labels)
            est = LogisticRegression(**params, **TIGHT).fit(Xd, da.from_array(labels, chunks=700))
            assert_same_model(est, ref)
            assert_array_equal(est.predict(Xd).compute(), ref.predict(X))
        # warm start from the solution: converged at once
        est.set_params(warm_start=True).fit(Xd, labels)
        assert est.n_iter_[0] <= 1
        assert_same_model(est, ref)


def test_zero_weight_chunk_and_unknown_chunk_sizes():
    X, y, sw = problem(2, n=3000, seed=3)
    sw[1000:2000] = 0.0
    ref = LogisticRegression(**TIGHT).fit(X, y, sample_weight=sw)
    Xd = da.from_array(X, chunks=(1000, -1))
    Xd = Xd[da.from_array(np.ones(len(y), dtype=bool), chunks=1000)]  # chunk sizes now unknown
    with dask.config.set(scheduler="synchronous"):
        est = LogisticRegression(**TIGHT).fit(Xd, y, sample_weight=sw)
    assert_same_model(est, ref)


def test_bad_input():
    X, y, sw = problem(2, n=1000)
    Xd = da.from_array(X, chunks=(300, -1))
    with dask.config.set(scheduler="synchronous"):
        with pytest.raises(ValueError, match="y must be 1-D with 1000 elements"):
            LogisticRegression().fit(Xd, y[:-1])
        with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
            LogisticRegression().fit(Xd, y, sample_weight=-sw)
        with pytest.raises(ValueError, match="Negative values in data passed to `sample_weight`"):
            LogisticRegression(class_weight="balanced").fit(Xd, y, sample_weight=-sw)
        with pytest.raises(ValueError, match="at least one non-zero"):
            LogisticRegression().fit(Xd, y, sample_weight=0 * sw)
        with pytest.raises(ValueError, match="only one class"):
            LogisticRegression().fit(Xd, np.zeros(1000))
        with pytest.raises(ValueError, match="Unknown label type"):
            LogisticRegression().fit(Xd, np.linspace(0, 1, 1000))
        Xnan = X.copy()
        Xnan[500, 3] = np.nan
        with pytest.raises(ValueError, match="Input X contains NaN"):
            LogisticRegression().fit(da.from_array(Xnan, chunks=(300, -1)), y)
        with pytest.raises(ValueError, match="Expected a 2-D X"):
            LogisticRegression().fit(Xd[:, 0], y)
        with pytest.raises(TypeError, match="X must be a dask.array.Array"):
            LogisticRegression().fit(X, da.from_array(y))
        est = LogisticRegression().fit(Xd, y)
        with pytest.raises(ValueError, match="X has 3 features, but LogisticRegression is expecting 8"):
            est.predict(Xd[:, :3])
    with pytest.raises(Exception, match="not fitted"):
        LogisticRegression().predict(Xd)


# ---------------------------------------------------------------------------
# a real cluster: two worker processes


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    )
    c = distributed.Client(cluster)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


def get_task_stream(client):
    from distributed import get_task_stream

    return get_task_stream(client)


@pytest.mark.parametrize(
    "n_classes, solver, class_weight",
    [(2, "lbfgs", None), (3, "newton-cg", "balanced"), (4, "lbfgs", {1: 3.0})],
)
def test_fit_on_cluster(client, n_classes, solver, class_weight):
    X, y, sw = problem(n_classes, n=8000, seed=n_classes)
    Xd = da.from_array(X, chunks=(2000, -1))
    swd = da.from_array(sw, chunks=2000)
    ref = LogisticRegression(solver=solver, class_weight=class_weight, **TIGHT).fit(X, y, sample_weight=sw)
    est = LogisticRegression(solver=solver, class_weight=class_weight, n_jobs=1, **TIGHT)
    with get_task_stream(client) as stream:
        est.fit(Xd, da.from_array(y, chunks=2000), sample_weight=swd)
    assert_same_model(est, ref)
    assert_same_predictions(est, ref, Xd, X)
    # the evaluations ran as tasks on both workers, one per chunk
    evaluations = [t for t in stream.data if str(t["key"]).startswith("_chunk_loss_gradient")]
    assert len(evaluations) % 4 == 0 and len(evaluations) >= 4 * est.n_iter_[0]
    assert {t["worker"] for t in evaluations} == set(client.scheduler_info()["workers"])
