"""fastce.linear_cross_entropy against the unfused computation (float64 NumPy
logits + fastce.cross_entropy), PyTorch autograd and finite differences."""

import numpy as np
import pytest

from fastce import cross_entropy
from fastce.linear_ce import linear_cross_entropy

RTOL = {np.float32: 2e-5, np.float64: 1e-12}
ATOL = {np.float32: 1e-6, np.float64: 1e-14}

# block layouts: automatic (all classes in one block), classes split in
# blocks that do not divide K, one class block with several row blocks
BLOCKS = [None, (4, 5), (6, 11), (3, 1)]


def _problem(rng, n=17, d=6, k=11, dtype=np.float64, scale=1.0):
    X = (scale * rng.standard_normal((n, d))).astype(dtype)
    W = rng.standard_normal((k, d)).astype(dtype)
    b = rng.standard_normal(k).astype(dtype)
    y = rng.integers(0, k, n)
    return X, W, b, y


def _reference(X, W, y, b=None, **kw):
    """The unfused computation in float64: logits, fastce.cross_entropy, chain rule."""
    X64, W64 = np.asarray(X, np.float64), np.asarray(W, np.float64)
    Z = X64 @ W64.T
    if b is not None:
        Z = Z + np.asarray(b, np.float64)
    tgt = y if np.asarray(y).dtype.kind != "f" else np.asarray(y, np.float64)
    loss, G = cross_entropy(Z, tgt, return_grad=True, **kw)
    return loss, G @ W64, G.T @ X64, (G.sum(axis=0) if b is not None else None)


def _check(got, ref, dtype):
    loss, gX, gW, gb = got
    rloss, rX, rW, rb = ref
    tol = dict(rtol=RTOL[dtype], atol=ATOL[dtype])
    np.testing.assert_allclose(loss, rloss, **tol)
    np.testing.assert_allclose(gX, rX, **tol)
    np.testing.assert_allclose(gW, rW, **tol)
    if rb is None:
        assert gb is None
    else:
        np.testing.assert_allclose(gb, rb, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize(
    "options",
    [
        {},
        {"weight": True},
        {"label_smoothing": 0.3},
        {"weight": True, "label_smoothing": 0.1, "ignore": True},
        {"reduction": "sum", "ignore": True},
        {"reduction": "none", "weight": True, "label_smoothing": 0.2},
        {"sample_weight": True, "weight": True, "ignore": True},
    ],
)
@pytest.mark.parametrize("with_bias", [True, False])
def test_matches_unfused(dtype, blocks, options, with_bias):
    rng = np.random.default_rng(0)
    X, W, b, y = _problem(rng, dtype=dtype)
    kw = {}
    if options.get("weight"):
        kw["weight"] = rng.uniform(0.2, 2.0, W.shape[0])
    if "label_smoothing" in options:
        kw["label_smoothing"] = options["label_smoothing"]
    if "reduction" in options:
        kw["reduction"] = options["reduction"]
    if options.get("sample_weight"):
        kw["sample_weight"] = rng.uniform(0.0, 3.0, X.shape[0])
    if options.get("ignore"):
        y[[1, 5, 6]] = -7
        kw["ignore_index"] = -7
    bias = b if with_bias else None
    got = linear_cross_entropy(X, W, y, bias, return_grad=True, _blocks=blocks, **kw)
    _check(got, _reference(X, W, y, bias, **kw), dtype)
    assert got[1].dtype == dtype and got[2].dtype == dtype
    assert np.asarray(got[0]).dtype == dtype
    loss_only = linear_cross_entropy(X, W, y, bias, _blocks=blocks, **kw)
    np.testing.assert_array_equal(loss_only, got[0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("blocks", BLOCKS)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_probability_targets(dtype, blocks, reduction):
    rng = np.random.default_rng(1)
    X, W, b, _ = _problem(rng, dtype=dtype)
    T = rng.dirichlet(np.ones(W.shape[0]), X.shape[0]).astype(dtype)
    T[2, :] = 0.0  # a row with zero total mass adds nothing
    T[3, [0, 4]] = 0.0
    kw = dict(weight=rng.uniform(0.2, 2.0, W.shape[0]), label_smoothing=0.15, reduction=reduction)
    got = linear_cross_entropy(X, W, T, b, return_grad=True, _blocks=blocks, **kw)
    _check(got, _reference(X, W, T, b, **kw), dtype)


torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("probabilities", [False, True])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_against_torch_autograd(probabilities, reduction):
    rng = np.random.default_rng(2)
    X, W, b, y = _problem(rng, n=23, d=7, k=13)
    cw = rng.uniform(0.2, 2.0, 13)
    if probabilities:
        target = rng.dirichlet(np.ones(13), 23)
        tt = torch.tensor(target)
    else:
        y[[0, 9]] = -100
        target, tt = y, torch.tensor(y)
    tX, tW, tb = (torch.tensor(a, requires_grad=True) for a in (X, W, b))
    tl = F.cross_entropy(tX @ tW.T + tb, tt, weight=torch.tensor(cw), reduction=reduction, label_smoothing=0.1)
    tl.sum().backward()
    loss, gX, gW, gb = linear_cross_entropy(
        X, W, target, b, weight=cw, reduction=reduction, label_smoothing=0.1, return_grad=True, _blocks=(5, 4)
    )
    np.testing.assert_allclose(loss, tl.detach().numpy(), rtol=1e-12, atol=1e-14)
    for got, ref in ((gX, tX), (gW, tW), (gb, tb)):
        np.testing.assert_allclose(got, ref.grad.numpy(), rtol=1e-12, atol=1e-14)


def test_against_torch_linear_cross_entropy():
    rng = np.random.default_rng(3)
    X, W, b, y = _problem(rng, n=40, d=9, k=30, dtype=np.float32)
    tX, tW, tb = (torch.tensor(a, requires_grad=True) for a in (X, W, b))
    tl = F.linear_cross_entropy(tX, tW, torch.tensor(y), linear_bias=tb, label_smoothing=0.05)
    tl.backward()
    loss, gX, gW, gb = linear_cross_entropy(X, W, y, b, label_smoothing=0.05, return_grad=True)
    np.testing.assert_allclose(loss, tl.item(), rtol=1e-5)
    for got, ref in ((gX, tX), (gW, tW), (gb, tb)):
        np.testing.assert_allclose(got, ref.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_finite_differences():
    rng = np.random.default_rng(4)
    X, W, b, y = _problem(rng, n=5, d=3, k=4)
    y[1] = -100
    kw = dict(weight=rng.uniform(0.5, 2.0, 4), label_smoothing=0.2, _blocks=(2, 3))
    _, gX, gW, gb = linear_cross_entropy(X, W, y, b, return_grad=True, **kw)
    h = 1e-6
    for arr, grad, name in ((X, gX, "X"), (W, gW, "W"), (b, gb, "b")):
        for idx in np.ndindex(arr.shape):
            args = {"X": X, "W": W, "b": b}
            plus, minus = arr.copy(), arr.copy()
            plus[idx] += h
            minus[idx] -= h
            fp = linear_cross_entropy(*(plus if n == name else args[n] for n in ("X", "W")), y,
                                      plus if name == "b" else b, **kw)  # fmt: skip
            fm = linear_cross_entropy(*(minus if n == name else args[n] for n in ("X", "W")), y,
                                      minus if name == "b" else b, **kw)  # fmt: skip
            np.testing.assert_allclose(grad[idx], (fp - fm) / (2 * h), rtol=1e-6, atol=1e-9)


def test_all_ignored_and_empty():
    rng = np.random.default_rng(5)
    X, W, b, y = _problem(rng, n=4)
    y[:] = -100
    tX, tW = (torch.tensor(a, requires_grad=True) for a in (X, W))
    tl = F.cross_entropy(tX @ tW.T, torch.tensor(y))
    tl.backward()
    loss, gX, gW, gb = linear_cross_entropy(X, W, y, b, return_grad=True)
    assert np.isnan(loss) and np.isnan(tl.item())
    np.testing.assert_array_equal(gX, tX.grad.numpy())
    np.testing.assert_array_equal(gW, tW.grad.numpy())
    np.testing.assert_array_equal(gb, np.zeros_like(b))
    assert linear_cross_entropy(X, W, y, reduction="sum") == 0.0
    empty = np.empty((0, X.shape[1]))
    loss, gX, gW, gb = linear_cross_entropy(empty, W, np.empty(0, dtype=int), b, return_grad=True)
    assert np.isnan(loss) and gX.shape == (0, X.shape[1])
    np.testing.assert_array_equal(gW, np.zeros_like(W))
    assert linear_cross_entropy(empty, W, np.empty(0, dtype=int), reduction="sum") == 0.0
    assert linear_cross_entropy(empty, W, np.empty(0, dtype=int), reduction="none").shape == (0,)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_single_sample(dtype):
    rng = np.random.default_rng(6)
    X, W, b, y = _problem(rng, n=1, dtype=dtype)
    loss, gX, gW, gb = linear_cross_entropy(X[0], W, y[0], b, return_grad=True)
    assert gX.shape == X[0].shape and np.ndim(loss) == 0
    _check((loss, gX[None], gW, gb), _reference(X, W, y, b), dtype)
    none = linear_cross_entropy(X[0], W, y[0], b, reduction="none")
    assert none.shape == ()
    T = rng.dirichlet(np.ones(W.shape[0])).astype(dtype)
    got = linear_cross_entropy(X[0], W, T, b, return_grad=True)
    ref = _reference(X, W, T[None], b)
    _check((got[0], got[1][None], got[2], got[3]), ref, dtype)


def test_large_logits_and_tiny_loss():
    # logits of +-1e3 do not overflow; a loss of ~1e-30 keeps its relative precision
    rng = np.random.default_rng(7)
    X, W, b, y = _problem(rng, n=9, d=4, k=6, scale=300.0)
    for blocks in BLOCKS:
        _check(linear_cross_entropy(X, W, y, b, return_grad=True, _blocks=blocks), _reference(X, W, y, b), np.float64)
    X = np.eye(3) * 70.0
    W = np.eye(3)
    y = np.arange(3)
    loss = linear_cross_entropy(X, W, y, reduction="none", _blocks=(2, 2))
    np.testing.assert_allclose(loss, np.full(3, 2 * np.exp(-70.0)), rtol=1e-14)


def test_mixed_dtypes_and_float16():
    rng = np.random.default_rng(8)
    X, W, b, y = _problem(rng)
    loss, gX, gW, gb = linear_cross_entropy(X.astype(np.float32), W, y, b.astype(np.float32), return_grad=True)
    assert gX.dtype == gW.dtype == np.float64
    np.testing.assert_allclose(loss, _reference(X.astype(np.float32), W, y, b.astype(np.float32))[0], rtol=1e-12)
    loss16, gX16, _, _ = linear_cross_entropy(X.astype(np.float16), W.astype(np.float16), y, return_grad=True)
    assert gX16.dtype == np.float16 and np.asarray(loss16).dtype == np.float16
    np.testing.assert_allclose(
        loss16, _reference(X.astype(np.float16), W.astype(np.float16), y)[0], rtol=2e-3
    )


@pytest.mark.parametrize("blocks", [None, (400, 100)])
def test_thread_count_does_not_change_results(blocks):
    # blocks of >= 2**15 logits, so that the parallel kernels run
    rng = np.random.default_rng(9)
    X, W, b, y = _problem(rng, n=700, d=20, k=250)
    y[::7] = -100
    kw = dict(weight=rng.uniform(0.5, 2.0, 250), label_smoothing=0.1, return_grad=True, _blocks=blocks)
    one = linear_cross_entropy(X, W, y, b, n_threads=1, **kw)
    two = linear_cross_entropy(X, W, y, b, n_threads=2, **kw)
    for a, c in zip(one, two):
        np.testing.assert_allclose(a, c, rtol=1e-13, atol=1e-15)
    _check(two, _reference(X, W, y, b, weight=kw["weight"], label_smoothing=0.1), np.float64)


def test_inputs_not_modified():
    rng = np.random.default_rng(10)
    X, W, b, y = _problem(rng, dtype=np.float32)
    copies = [a.copy() for a in (X, W, b, y)]
    linear_cross_entropy(X, W, y, b, return_grad=True, _blocks=(4, 5))
    linear_cross_entropy(X, W, y, b, return_grad=True)
    for a, c in zip((X, W, b, y), copies):
        np.testing.assert_array_equal(a, c)


def test_non_contiguous_inputs():
    rng = np.random.default_rng(11)
    X, W, b, y = _problem(rng)
    Xf, Wf = np.asfortranarray(X), W.T.copy().T
    _check(linear_cross_entropy(Xf, Wf, y, b[::-1][::-1], return_grad=True), _reference(X, W, y, b), np.float64)


def test_bad_input():
    rng = np.random.default_rng(12)
    X, W, b, y = _problem(rng, n=5, d=3, k=4)
    cases = [
        (dict(X=X[None]), ValueError, "X must have shape"),
        (dict(X=X.astype(int)), TypeError, "X must be a floating-point"),
        (dict(W=W[0]), ValueError, "W must have shape"),
        (dict(W=W[:, :2]), ValueError, r"W must have shape \(K, 3\)"),
        (dict(W=W[:0]), ValueError, "at least one row"),
        (dict(target=y + 10), ValueError, "target holds class index"),
        (dict(target=y.astype(float)), TypeError, "integer class indices"),
        (dict(target=y[:3]), ValueError, "target of class indices must have shape"),
        (dict(bias=b[:3]), ValueError, "bias must have shape"),
        (dict(bias="x"), TypeError, "bias must hold numbers"),
        (dict(weight=np.ones(3)), ValueError, "weight must have shape"),
        (dict(sample_weight=np.ones(4)), ValueError, "sample_weight"),
        (dict(reduction="avg"), ValueError, "reduction must be one of"),
        (dict(label_smoothing=1.5), ValueError, "label_smoothing must be in"),
        (dict(ignore_index=1.5), TypeError, "ignore_index must be an int"),
        (dict(return_grad=1), TypeError, "return_grad must be True or False"),
        (dict(n_threads=0), ValueError, "n_threads"),
        (dict(target=np.full((5, 4), 0.25), ignore_index=0), ValueError, "ignore_index=0 is not supported"),
    ]
    for change, exc, match in cases:
        args = dict(X=X, W=W, target=y, bias=b)
        args.update(change)
        with pytest.raises(exc, match=match):
            linear_cross_entropy(**args)


def test_buffer_size_changes_blocks_not_results():
    rng = np.random.default_rng(14)
    X, W, b, y = _problem(rng, n=300, d=7, k=50)
    ref = _reference(X, W, y, b)
    # 50 classes of float64: 400 bytes a row; 4000 bytes: 10 rows a block;
    # 100 bytes: the classes split in blocks too
    for buffer_bytes in (100, 4000, 10**6):
        got = linear_cross_entropy(X, W, y, b, return_grad=True, buffer_bytes=buffer_bytes)
        _check(got, ref, np.float64)
    for bad in (0, -5, 1.5, "1", True):
        with pytest.raises(ValueError, match="buffer_bytes"):
            linear_cross_entropy(X, W, y, buffer_bytes=bad)


def test_default_buffer():
    # documented: 32 MiB, or 128 rows of all K classes when that is more, up
    # to 128 MiB; all K classes in one block up to K = 262,144 in float32
    from fastce.linear_ce import _plan

    mib = 1 << 20
    for k, itemsize in ((10, 8), (50_000, 4), (100_000, 4), (262_144, 4), (300_000, 4), (10**6, 8)):
        rows, kb = _plan(10**6, k, itemsize)
        buffer = rows * kb * itemsize
        assert buffer <= max(32 * mib, min(128 * k * itemsize, 128 * mib))
        assert (kb == k and rows >= 128) == (128 * k * itemsize <= 128 * mib)
        if kb == k and 128 * k * itemsize <= 32 * mib:
            assert buffer > 32 * mib - k * itemsize  # the 32 MiB are used
    assert _plan(50, 50_000, 4) == (50, 50_000)  # never more rows than N


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dask_input_gives_lazy_results(dtype):
    # Dask X (uneven row chunks, features split: rechunked), lazy until computed,
    # against the unfused float64 reference; threaded and synchronous schedulers
    dask = pytest.importorskip("dask")
    da = pytest.importorskip("dask.array")
    rng = np.random.default_rng(13)
    X, W, b, y = _problem(rng, n=40, d=6, k=9, dtype=dtype)
    y[::6] = -100
    cw = rng.uniform(0.5, 2.0, 9)
    sw = rng.uniform(0.0, 2.0, 40)
    Xd = da.from_array(X, chunks=((15, 10, 15), (4, 2)))
    cases = [
        ({}, {}),
        ({"bias": b, "weight": cw, "label_smoothing": 0.2}, {"weight": cw, "label_smoothing": 0.2}),
        ({"bias": da.from_array(b, chunks=4), "sample_weight": da.from_array(sw, chunks=7), "reduction": "sum"},
         {"sample_weight": sw, "reduction": "sum"}),
    ]  # fmt: skip
    for scheduler in ("synchronous", "threads"):
        for kw, ref_kw in cases:
            out = linear_cross_entropy(Xd, W, y, return_grad=True, **kw)
            assert all(isinstance(o, da.Array) for o in out if o is not None)
            assert out[1].chunks == ((15, 10, 15), (6,))
            lazy = [o for o in out if o is not None]
            got = list(dask.compute(*lazy, scheduler=scheduler)) + [None] * (4 - len(lazy))
            assert all(g.dtype == dtype for g in got if g is not None)
            bias = kw.get("bias")
            ref = _reference(X, W, y, None if bias is None else b, **ref_kw)
            _check(got, ref, dtype)
    # without the gradient, reduction "none": per-row losses chunked like X's rows
    loss = linear_cross_entropy(Xd, W, y, b, reduction="none")
    assert loss.chunks == ((15, 10, 15),)
    ref = _reference(X, W, y, b, reduction="none")[0]
    np.testing.assert_allclose(loss.compute(scheduler="synchronous"), ref, rtol=RTOL[dtype], atol=ATOL[dtype])
    # a class index out of range is found when computed
    bad = y.copy()
    bad[30] = 9
    with pytest.raises(ValueError, match="target holds class index"):
        linear_cross_entropy(Xd, W, bad).compute(scheduler="synchronous")


def test_without_grad_X():
    # the private _grad_X=False (for a caller that needs only W's gradient) skips that product
    rng = np.random.default_rng(13)
    X, W, b, y = _problem(rng)
    loss, gX, gW, gb = linear_cross_entropy(X, W, y, b, return_grad=True, _grad_X=False, _blocks=(4, 5))
    assert gX is None
    ref = _reference(X, W, y, b)
    _check((loss, ref[1], gW, gb), ref, np.float64)
