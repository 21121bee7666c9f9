"""Dask arrays through the public functions: lazy results equal to the NumPy
results on the same data, computed on a real two-process ``dask.distributed``
cluster (and a few properties checked on the synchronous scheduler)."""

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import scipy.special

import fastce

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")
distributed = pytest.importorskip("distributed")

CHUNKINGS = {
    "uneven": (40, 30, 33),
    "single": (103,),
    "equal": (26, 26, 26, 25),
}
N, C = 103, 7


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, worker_dashboard_address=None
    )
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()


def run(client, *collections):
    """Compute on the cluster, all collections in one graph."""
    return tuple(client.compute(list(collections), sync=True))


def sync(*collections):
    return dask.compute(*collections, scheduler="synchronous")


def assert_same(got, expected, dtype):
    got, expected = np.asarray(got), np.asarray(expected)
    assert got.shape == expected.shape
    assert got.dtype == expected.dtype
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(got, expected, rtol=rtol, atol=rtol * 1e-3)


def data(dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.normal(size=(N, C)) * 3).astype(dtype)
    t = rng.integers(0, C, size=N)
    t[::7] = -100
    probs = rng.dirichlet(np.ones(C), size=N).astype(dtype)
    return rng, x, t, probs


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("chunking", list(CHUNKINGS))
def test_cross_entropy_on_cluster(client, dtype, chunking):
    rng, x, t, probs = data(dtype)
    xd = da.from_array(x, chunks=(CHUNKINGS[chunking], 3))  # the class axis is rechunked to one chunk
    w = rng.uniform(0.5, 2.0, size=C)
    sw = rng.uniform(0.0, 2.0, size=N)
    cases = [
        (t, {}),
        (t, {"weight": w}),  # NumPy target and class weights
        (da.from_array(t, chunks=50), {"weight": da.from_array(w, chunks=4), "label_smoothing": 0.2}),
        (np.where(t < 0, 3, t), {"sample_weight": da.from_array(sw, chunks=17), "ignore_index": 3}),
        (probs, {"weight": w, "label_smoothing": 0.1}),
        (da.from_array(probs, chunks=(20, C)), {"sample_weight": sw}),
    ]
    lazy, expected = [], []
    for target, kw in cases:
        tn = np.asarray(target)
        kn = {k: np.asarray(v) if isinstance(v, da.Array) else v for k, v in kw.items()}
        for reduction in ("mean", "sum", "none"):
            loss, grad = fastce.cross_entropy(xd, target, reduction=reduction, return_grad=True, **kw)
            assert isinstance(loss, da.Array) and isinstance(grad, da.Array)
            assert grad.chunks == (CHUNKINGS[chunking], (C,))
            lazy += [loss, grad]
            expected += list(fastce.cross_entropy(x, tn, reduction=reduction, return_grad=True, **kn))
        lazy.append(fastce.cross_entropy(xd, target, **kw))  # without the gradient
        expected.append(fastce.cross_entropy(x, tn, **kn))
    for got, want in zip(run(client, *lazy), expected):
        assert_same(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_spatial_and_single_row(client, dtype):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(11, 4, 3, 2)).astype(dtype)
    t = rng.integers(0, 4, size=(11, 3, 2))
    probs = rng.dirichlet(np.ones(4), size=(11, 3, 2)).transpose(0, 3, 1, 2).astype(dtype)
    xd = da.from_array(x, chunks=(4, 2, 3, 1))
    sw = rng.uniform(size=(3, 1))
    lazy, expected = [], []
    cases = [(t, {"sample_weight": sw}), (probs, {"label_smoothing": 0.3}), (t, {"weight": np.arange(1.0, 5.0)})]
    for target, kw in cases:
        for reduction in ("mean", "none"):
            lazy += fastce.cross_entropy(xd, target, reduction=reduction, return_grad=True, **kw)
            expected += fastce.cross_entropy(x, target, reduction=reduction, return_grad=True, **kw)
    row = da.from_array(x[0, :, 0, 0])
    for reduction in ("mean", "none"):
        lazy += fastce.cross_entropy(row, 2, reduction=reduction, return_grad=True)
        expected += fastce.cross_entropy(x[0, :, 0, 0], 2, reduction=reduction, return_grad=True)
    for got, want in zip(run(client, *lazy), expected):
        assert_same(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_binary_cross_entropy_on_cluster(client, dtype):
    rng = np.random.default_rng(2)
    z = (rng.normal(size=(N, C)) * 4).astype(dtype)
    y = rng.uniform(size=(N, C)).astype(dtype)
    p = scipy.special.expit(z.astype(np.float64)).astype(dtype)
    w = rng.uniform(0.5, 2, size=(N, 1))
    pw = rng.uniform(0.5, 2, size=C)
    lazy, expected = [], []
    for chunks in [((40, 30, 33), (3, 4)), (N, C)]:
        zd, pd_ = da.from_array(z, chunks=chunks), da.from_array(p, chunks=chunks)
        for reduction in ("mean", "sum", "none"):
            lazy += fastce.binary_cross_entropy_with_logits(
                zd, y, weight=da.from_array(w, chunks=50), pos_weight=pw, reduction=reduction, return_grad=True
            )
            expected += fastce.binary_cross_entropy_with_logits(
                z, y, weight=w, pos_weight=pw, reduction=reduction, return_grad=True
            )
            lazy += fastce.binary_cross_entropy(pd_, da.from_array(y, chunks=20), pw, reduction, return_grad=True)
            expected += fastce.binary_cross_entropy(p, y, pw, reduction, return_grad=True)
    for got, want in zip(run(client, *lazy), expected):
        assert_same(got, want, dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_primitives_on_cluster(client, dtype):
    rng = np.random.default_rng(3)
    a = (rng.normal(size=(9, 8)) * 20).astype(dtype)
    b = rng.normal(size=(9, 8))
    lazy, expected = [], []
    for chunks in [(4, 3), (9, 3), (4, 8), (9, 8)]:
        ad = da.from_array(a, chunks=chunks)
        for axis in (None, 0, 1, (0, 1), -1):
            for keepdims in (False, True):
                lazy.append(fastce.logsumexp(ad, axis=axis, keepdims=keepdims))
                expected.append(fastce.logsumexp(a, axis=axis, keepdims=keepdims))
                bd = da.from_array(b, chunks=5)
                lazy += fastce.logsumexp(ad, axis=axis, b=bd, keepdims=keepdims, return_sign=True)
                expected += fastce.logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
            lazy.append(fastce.logsumexp(ad, axis=axis, b=b))  # negative sums give NaN
            expected.append(fastce.logsumexp(a, axis=axis, b=b))
            lazy += [fastce.softmax(ad, axis=axis), fastce.log_softmax(ad, axis=axis)]
            expected += [fastce.softmax(a, axis=axis), fastce.log_softmax(a, axis=axis)]
        lazy += [fastce.sigmoid(ad), fastce.log_sigmoid(ad)]
        expected += [fastce.sigmoid(a), fastce.log_sigmoid(a)]
    for got, want in zip(run(client, *lazy), expected):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape and got.dtype == want.dtype
        np.testing.assert_allclose(got, want, rtol=2e-5 if dtype == np.float32 else 1e-12, atol=1e-300)


def test_parallel_kernels_in_workers(client):
    """Chunks big enough for the parallel kernels: in spawned workers, and from
    two threads at once under Dask's threaded scheduler (run first, so that the
    workers find the compiled kernel in Numba's cache)."""
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40_000, 10)).astype(np.float32)
    t = rng.integers(0, 10, size=40_000)
    ref = scipy.special.log_softmax(x.astype(np.float64), axis=1)
    want_loss = -ref[np.arange(40_000), t].mean()
    want_grad = (np.exp(ref) - np.eye(10)[t]) / 40_000
    threaded = fastce.cross_entropy(da.from_array(x, chunks=10_000), t, return_grad=True)
    on_cluster = fastce.cross_entropy(da.from_array(x, chunks=20_000), t, return_grad=True)
    for loss, grad in [dask.compute(*threaded, scheduler="threads", num_workers=2), run(client, *on_cluster)]:
        assert np.isclose(loss, want_loss, rtol=1e-5)
        np.testing.assert_allclose(grad, want_grad, rtol=1e-4, atol=1e-10)


def test_against_scipy_and_edge_values():
    a = np.array([[0.0, -np.inf, 1.0, 2.0], [np.inf, 1.0, 0.0, 3.0], [-np.inf] * 4, [1e4, -1e4, np.nan, 0.0]])
    ad = da.from_array(a, chunks=(3, 2))
    for axis in (0, 1, None):
        got = sync(fastce.logsumexp(ad, axis=axis), fastce.softmax(ad, axis=axis), fastce.log_softmax(ad, axis=axis))
        with np.errstate(all="ignore"):
            want = (
                scipy.special.logsumexp(a, axis=axis),
                scipy.special.softmax(a, axis=axis),
                scipy.special.log_softmax(a, axis=axis),
            )
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=1e-13)


def test_loss_and_grad_read_each_chunk_once(monkeypatch):
    import fastce.losses

    calls = []
    original = fastce.losses.cross_entropy

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(fastce.losses, "cross_entropy", counting)
    _, x, t, _ = data(np.float64)
    loss, grad = fastce.cross_entropy(da.from_array(x, chunks=(CHUNKINGS["uneven"], C)), t, return_grad=True)
    assert calls == []  # lazy
    got_loss, got_grad = sync(loss, grad)
    assert sorted(calls) == sorted((n, C) for n in CHUNKINGS["uneven"])
    want_loss, want_grad = original(x, t, return_grad=True)
    assert_same(got_loss, want_loss, np.float64)
    assert_same(got_grad, want_grad, np.float64)


def lce_data(dtype, seed=5):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(N, 6)).astype(dtype)
    W = rng.normal(size=(C, 6)).astype(dtype)
    b = rng.normal(size=C).astype(dtype)
    t = rng.integers(0, C, size=N)
    t[::7] = -100
    return rng, X, W, b, t


def lce_reference(X, W, t, b=None, **kw):
    """Unfused, in float64: the logits, fastce.cross_entropy and the chain rule."""
    X64, W64 = X.astype(np.float64), W.astype(np.float64)
    z = X64 @ W64.T + (0.0 if b is None else b.astype(np.float64))
    loss, g = fastce.cross_entropy(z, t, return_grad=True, **kw)
    return loss, g @ W64, g.T @ X64, None if b is None else g.sum(axis=0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_cross_entropy_on_cluster(client, dtype):
    rng, X, W, b, t = lce_data(dtype)
    w = rng.uniform(0.5, 2.0, size=C)
    sw = rng.uniform(0.0, 2.0, size=N)
    probs = rng.dirichlet(np.ones(C), size=N)
    Xd = da.from_array(X, chunks=(CHUNKINGS["uneven"], 4))  # the features are rechunked to one chunk
    cases = [
        (t, b, {}),
        (t, None, {"weight": w, "label_smoothing": 0.2}),
        (da.from_array(np.where(t < 0, 3, t), chunks=50), da.from_array(b, chunks=3),
         {"sample_weight": da.from_array(sw, chunks=17), "ignore_index": 3, "weight": da.from_array(w, chunks=4)}),
        (probs.astype(dtype), b, {"sample_weight": sw, "label_smoothing": 0.1}),
    ]  # fmt: skip
    lazy, expected = [], []
    for target, bias, kw in cases:
        tn = np.asarray(target)
        bn = None if bias is None else np.asarray(bias)
        kn = {k: np.asarray(v) if isinstance(v, da.Array) else v for k, v in kw.items()}
        for reduction in ("mean", "sum", "none"):
            out = fastce.linear_cross_entropy(Xd, W, target, bias, reduction=reduction, return_grad=True, **kw)
            assert out[1].chunks == (CHUNKINGS["uneven"], (6,))
            assert (out[3] is None) == (bias is None)
            lazy += [o for o in out if o is not None]
            ref = lce_reference(X, W, tn, bn, reduction=reduction, **kn)
            expected += [np.asarray(r).astype(dtype) for r in ref if r is not None]
        lazy.append(fastce.linear_cross_entropy(Xd, W, target, bias, **kw))  # without the gradients
        expected.append(np.asarray(lce_reference(X, W, tn, bn, **kn)[0]).astype(dtype))
    for got, want in zip(run(client, *lazy), expected):
        got, want = np.asarray(got), np.asarray(want)
        assert got.shape == want.shape and got.dtype == want.dtype
        rtol = 2e-5 if dtype == np.float32 else 1e-12
        np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * 0.1)


def test_linear_cross_entropy_reads_each_chunk_once(monkeypatch):
    import fastce.linear_ce

    calls = []
    original = fastce.linear_ce.linear_cross_entropy

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return original(*args, **kwargs)

    monkeypatch.setattr(fastce.linear_ce, "linear_cross_entropy", counting)
    _, X, W, b, t = lce_data(np.float64)
    out = fastce.linear_cross_entropy(da.from_array(X, chunks=(CHUNKINGS["uneven"], 6)), W, t, b, return_grad=True)
    assert calls == []  # lazy
    got = sync(*out)
    assert sorted(calls) == sorted((n, 6) for n in CHUNKINGS["uneven"])
    for g, w in zip(got, original(X, W, t, b, return_grad=True)):
        assert_same(g, w, np.float64)


def test_linear_cross_entropy_single_row_float16_and_errors():
    _, X, W, b, t = lce_data(np.float64)
    for reduction in ("mean", "none"):
        got = sync(*fastce.linear_cross_entropy(da.from_array(X[0]), W, 2, b, reduction=reduction, return_grad=True))
        want = lce_reference(X[:1], W, np.array([2]), b, reduction=reduction)
        assert [g.shape for g in got] == [(), (6,), (C, 6), (C,)]
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, np.reshape(w, np.shape(g)), rtol=1e-12)
    x16, w16 = X.astype(np.float16), W.astype(np.float16)
    got = sync(*fastce.linear_cross_entropy(da.from_array(x16, chunks=30), w16, t, return_grad=True))
    assert all(g.dtype == np.float16 for g in got if g is not None)
    want = lce_reference(x16, w16, t)
    for g, w in zip(got, want):
        if w is not None:
            np.testing.assert_allclose(g.astype(np.float32), w, rtol=1e-2, atol=1e-4)
    Xd = da.from_array(X, chunks=30)
    for args, kw, exc, match in [
        ((W[:, :-1], t), {}, ValueError, "W must have shape"),
        ((W, t[:-1]), {}, ValueError, "target of class indices must have shape"),
        ((W, t), {"bias": np.ones(C + 1)}, ValueError, "bias must have shape"),
        ((W, t), {"weight": da.ones(C + 1)}, ValueError, "weight must have shape"),
        ((W, t), {"sample_weight": np.ones(N + 1)}, ValueError, "sample_weight of shape"),
        ((W, t), {"buffer_bytes": 0}, ValueError, "buffer_bytes"),
        ((W.astype(int), t), {}, TypeError, "W must be a floating-point"),
    ]:
        with pytest.raises(exc, match=match):
            fastce.linear_cross_entropy(Xd, *args, **kw)


def test_float16_and_numpy_input_with_dask_target():
    _, x, t, _ = data(np.float64)
    td = da.from_array(t, chunks=30)
    loss, grad = fastce.cross_entropy(x, td, reduction="sum", return_grad=True)
    assert grad.chunks[0] == td.chunks[0]
    got = sync(loss, grad)
    want = fastce.cross_entropy(x, t, reduction="sum", return_grad=True)
    assert_same(got[0], want[0], np.float64)
    assert_same(got[1], want[1], np.float64)
    x16 = x.astype(np.float16)
    got = sync(*fastce.cross_entropy(da.from_array(x16, chunks=(30, C)), t, return_grad=True))
    want = fastce.cross_entropy(x16, t, return_grad=True)
    assert got[0].dtype == got[1].dtype == np.float16
    np.testing.assert_allclose(np.float32(got[0]), np.float32(want[0]), rtol=2e-3)
    np.testing.assert_allclose(got[1].astype(np.float32), want[1].astype(np.float32), rtol=2e-3, atol=1e-6)


def test_errors():
    _, x, t, _ = data(np.float64)
    xd = da.from_array(x, chunks=30)
    with pytest.raises(TypeError, match="grad_out"):
        fastce.cross_entropy(xd, t, return_grad=True, grad_out=np.empty_like(x))
    with pytest.raises(ValueError, match="target of class indices must have shape"):
        fastce.cross_entropy(xd, t[:-1])
    with pytest.raises(TypeError, match="input must be a floating-point"):
        fastce.cross_entropy(xd.astype(int), t)
    with pytest.raises(ValueError, match="weight must have shape"):
        fastce.cross_entropy(xd, t, weight=da.ones(C + 1))
    with pytest.raises(ValueError, match="sample_weight of shape"):
        fastce.cross_entropy(xd, t, sample_weight=np.ones(N + 1))
    with pytest.raises(ValueError, match="pos_weight of shape"):
        fastce.binary_cross_entropy_with_logits(xd, x, pos_weight=np.ones(C + 1))
    with pytest.raises(ValueError, match="compute_chunk_sizes"):
        fastce.cross_entropy(xd[xd[:, 0] > 0], t)
    with pytest.raises(TypeError, match="complex"):
        fastce.logsumexp(da.ones(3, dtype=complex))
    bad = t.copy()
    bad[50] = C
    loss = fastce.cross_entropy(xd, bad)  # values are checked when computed
    with pytest.raises(ValueError, match="target holds class index"):
        sync(loss)
    with pytest.raises(ValueError, match="probabilities in"):
        sync(fastce.binary_cross_entropy(xd, np.zeros_like(x)))


def _python(code):
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_numpy_path_does_not_import_dask():
    result = _python(
        """
        import sys
        import numpy as np
        import fastce
        # Calls that pass the Dask dispatch and fail on an argument check right
        # after it (no kernel to compile in this process).
        for call in (
            lambda: fastce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), reduction="?"),
            lambda: fastce.binary_cross_entropy(np.zeros(2), np.zeros(2), reduction="?"),
            lambda: fastce.logsumexp(np.zeros(3), keepdims="?"),
            lambda: fastce.softmax(np.zeros(3), axis=5),
            lambda: fastce.sigmoid(np.zeros(3, dtype=complex)),
        ):
            try:
                call()
            except (ValueError, TypeError):
                pass
            else:
                raise AssertionError("expected an argument error")
        assert "dask" not in sys.modules, "dask was imported"
        """
    )
    assert result.returncode == 0, result.stderr


def test_missing_dask_gives_clear_error():
    result = _python(
        """
        import sys
        import numpy as np
        import fastce.dask

        class FakeDaskArray:  # looks like a Dask collection by its module
            __module__ = "dask.array.core"

        sys.modules["dask"] = None
        sys.modules["dask.array"] = None
        try:
            fastce.cross_entropy(FakeDaskArray(), np.array([0]))
        except ImportError as exc:
            print(exc)
        """
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "fastce[dask]"' in result.stdout
