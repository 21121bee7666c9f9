"""Tests of the fastce losses (cross_entropy, binary_cross_entropy,
binary_cross_entropy_with_logits) against independent references:
PyTorch (when installed), the float64 formulas in reference.py, central
finite differences, and mathematical properties (hypothesis).
"""

import itertools
import os
import sys

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import fastce

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402

REDUCTIONS = ["none", "mean", "sum"]
DTYPES = [np.float32, np.float64]


# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def _tol(dtype):
    return (1e-10, 1e-13) if np.dtype(dtype) == np.float64 else (1e-5, 1e-6)


def assert_close(actual, desired, dtype, rtol=None, atol_rel=None, unit=0.0):
    """allclose with an absolute tolerance relative to the magnitude of ``desired``
    (or to ``unit``, the natural scale of the quantity, if that is larger)."""
    actual = np.asarray(actual, dtype=np.float64)
    desired = np.asarray(desired, dtype=np.float64)
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    r, a = _tol(dtype)
    rtol = r if rtol is None else rtol
    a = a if atol_rel is None else atol_rel
    finite = desired[np.isfinite(desired)]
    scale = np.max(np.abs(finite)) if finite.size else 0.0
    scale = max(scale, unit)
    scale = scale if scale > 0 else 1.0  # all-zero reference: plain absolute tolerance
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=a * scale)


def check_output_types(loss, grad, x, reduction, none_shape):
    dt = np.asarray(x).dtype
    if reduction == "none":
        assert np.shape(loss) == none_shape
        assert loss.dtype == dt
    else:
        assert isinstance(loss, np.generic), type(loss)
        assert loss.dtype == dt
    assert isinstance(grad, np.ndarray)
    assert grad.shape == np.shape(x)
    assert grad.dtype == dt


def torch_run(torch, fname, x, target, **kw):
    """Loss and autograd gradient (of loss.sum()) from torch.nn.functional."""
    fn = getattr(torch.nn.functional, fname)
    xt = torch.tensor(np.asarray(x), requires_grad=True)
    kw = {k: (torch.tensor(v) if isinstance(v, np.ndarray) else v) for k, v in kw.items()}
    loss = fn(xt, torch.tensor(np.asarray(target)), **kw)
    loss.sum().backward()
    return loss.detach().numpy(), xt.grad.numpy()


def class_axis(shape):
    return 0 if len(shape) == 1 else 1


def make_ce(shape, dtype, weighted=False, ignore_index=-100, prob=False, seed=0):
    rng = np.random.default_rng(seed)
    x = (2.0 * rng.standard_normal(shape)).astype(dtype)
    c = shape[class_axis(shape)]
    w = rng.uniform(0.2, 2.0, c).astype(dtype) if weighted else None
    if prob:
        t = rng.random(shape)
        t[t < 0.15] = 0.0
        t = t / np.maximum(t.sum(axis=class_axis(shape), keepdims=True), 1e-3)
        t = t.astype(dtype)
    else:
        tshape = shape[:1] + shape[2:] if len(shape) > 1 else ()
        t = np.asarray(rng.integers(0, c, size=tshape), dtype=np.int64)
        if ignore_index >= 0 and t.ndim > 0:
            t.flat[0] = ignore_index  # make sure the ignored class is hit
            t.flat[-1] = (ignore_index + 1) % c  # ... but not by every target
    return x, t, w


def none_shape(shape):
    return shape[:1] + shape[2:] if len(shape) > 1 else ()


# ----------------------------------------------------------------------------
# PyTorch parity: cross_entropy
# ----------------------------------------------------------------------------
CE_SHAPES = [(5,), (6, 5), (4, 5, 3), (3, 5, 2, 2)]
CE_CASES = [
    c for c in itertools.product(CE_SHAPES, DTYPES, REDUCTIONS, [False, True],
                                 [-100, 1], [0.0, 0.1, 1.0], [False, True])
    if not (c[6] and c[4] >= 0)  # probability targets forbid ignore_index >= 0
]


@pytest.mark.parametrize("shape,dtype,reduction,weighted,ignore_index,ls,prob", CE_CASES)
def test_cross_entropy_torch_parity(torch, shape, dtype, reduction, weighted,
                                    ignore_index, ls, prob):
    x, t, w = make_ce(shape, dtype, weighted, ignore_index, prob)
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=ls)
    loss, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
    tl, tg = torch_run(torch, "cross_entropy", x, t, **kw)
    check_output_types(loss, grad, x, reduction, none_shape(shape))
    assert_close(loss, tl, dtype)
    assert_close(grad, tg, dtype)
    # the float64 formulas agree too (they are the oracle when torch is absent)
    rl, rg = R.cross_entropy(x, t, w, ignore_index, reduction, ls)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)


@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 32, 33, 48, 49, 64, 65, 128, 129])
def test_cross_entropy_tiles_and_rows(n_classes, dtype, prob):
    # Rows of up to 512 bytes (64 float64, 128 float32 elements) go through
    # tiles of 64 rows, longer ones row by row; rows of up to 32 float32 or
    # 16 float64 classes enter and leave full tiles by an in-register
    # transpose (from 5 classes on by square blocks of 16 float32 or 8
    # float64 classes), others element by element: both sides of every
    # limit, with several tiles and a partial one, weights, label smoothing
    # and an ignored class, against the float64 formulas; serial and
    # parallel kernels.
    for n_rows in (301, 40_000 // n_classes + 7):
        ignore = -100 if prob else 3
        x, t, w = make_ce((n_rows, n_classes), dtype, True, ignore, prob, seed=n_classes)
        kw = dict(weight=w, ignore_index=ignore, label_smoothing=0.1)
        for reduction in ("none", "mean"):
            loss, grad = fastce.cross_entropy(x, t, return_grad=True, reduction=reduction, **kw)
            rl, rg = R.cross_entropy(x, t, w, ignore, reduction, 0.1)
            assert_close(loss, rl, dtype)
            assert_close(grad, rg, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n_classes", [2, 3, 7, 10, "max"])
def test_cross_entropy_lanes_kernels(n_classes, dtype):
    # Class-index targets without class weights, label smoothing or sample
    # weights, 2 to CE_LANES_MAX_CLASSES classes: kernels generated per class
    # count (fastce._kernels.ce_index_lanes). Against the float64 formulas, with
    # ignored rows, ties at the maximum, targets at the maximum and masked
    # (-inf) logits; rows with a NaN or a +inf logit as the general tile
    # kernel (taken with weight=ones) gives them; a partial tile, serial and
    # parallel kernels, loss alone and with its gradient.
    from fastce import _kernels as K

    if n_classes == "max":
        n_classes = K.CE_LANES_MAX_CLASSES[np.dtype(dtype)]
    assert 2 <= n_classes <= K.CE_LANES_MAX_CLASSES[np.dtype(dtype)]
    rng = np.random.default_rng(n_classes)
    for n_rows in (301, 40_000 // n_classes + 7):
        x = (3.0 * rng.standard_normal((n_rows, n_classes))).astype(dtype)
        t = rng.integers(0, n_classes, n_rows)
        x[1::5, -1] = x[1::5].max(axis=1)  # a tie at the maximum
        t[2::7] = np.argmax(x[2::7], axis=1)  # the target holds the maximum
        x[3::11, 1:] = -np.inf  # only class 0 is left
        t[3::11] = 0
        t[::17] = -100  # ignored
        for reduction in REDUCTIONS:
            loss, grad = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True)
            rl, rg = R.cross_entropy(x, t, None, -100, reduction, 0.0)
            assert_close(loss, rl, dtype)
            assert_close(grad, rg, dtype)
            assert_close(fastce.cross_entropy(x, t, reduction=reduction), rl, dtype)
        # an ignore_index that is also a class, and one beyond int32 (the
        # tile functions take the targets as int32, -1 for ignored)
        for ignore_index in (1, 2**40):
            tk = np.where(t == -100, ignore_index, t)
            for reduction in ("mean", "none"):
                loss, grad = fastce.cross_entropy(x, tk, ignore_index=ignore_index, reduction=reduction, return_grad=True)
                rl, rg = R.cross_entropy(x, tk, None, ignore_index, reduction, 0.0)
                assert_close(loss, rl, dtype)
                assert_close(grad, rg, dtype)
        # read-only logits and targets, and unaligned targets, give the same
        xr, tr = x.copy(), t.copy()
        xr.setflags(write=False)
        tr.setflags(write=False)
        tu = np.frombuffer(bytearray(t.nbytes + 1), dtype=np.uint8)[1:].view(np.int64)
        tu[:] = t
        want = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
        for xi, ti in ((xr, tr), (x, tu)):
            for a, b in zip(fastce.cross_entropy(xi, ti, reduction="none", return_grad=True), want):
                np.testing.assert_array_equal(a, b)
        x[5, 1] = np.nan
        x[9, 0] = np.nan  # the row maximum's first candidate
        x[17, 0] = np.nan  # in an ignored row: loss and gradient 0
        x[6, 0] = np.inf
        x[7, :] = np.inf
        x[8, :] = -np.inf
        t[8] = 8 % n_classes
        got = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
        general = fastce.cross_entropy(x, t, reduction="none", return_grad=True, weight=np.ones(n_classes))
        for a, b in zip(got, general):
            np.testing.assert_allclose(a, b, rtol=4 * np.finfo(dtype).eps, atol=0, equal_nan=True)
        assert np.isnan(got[0][[5, 9]]).all() and np.isnan(got[1][[5, 9]]).all()
        assert got[0][17] == 0 and not got[1][17].any()


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore_index", [-100, 1])
def test_cross_entropy_target_pass_across_blocks(ignore_index, weighted):
    # The pass over class-index targets runs in blocks of 65,536 targets
    # (without weights a branch-free loop that only counts): the error names
    # the first invalid target wherever the blocks split, ignore_index is
    # never invalid, and the mean divides by the number of non-ignored rows.
    rng = np.random.default_rng(5)
    n = 3 * 65536 + 5
    x = rng.standard_normal((n, 3))
    t = rng.integers(0, 3, n)
    t[::7] = ignore_index
    w = np.ones(3) if weighted else None
    for pos, bad in [(0, 99), (65535, -1), (65536, 3), (70001, -7), (n - 1, 3)]:
        tb = t.copy()
        tb[pos] = bad
        if pos + 100_000 < n:
            tb[pos + 100_000] = 5  # a later invalid target, in another block
        with pytest.raises(ValueError, match=rf"class index {bad} at position \({pos},\)"):
            fastce.cross_entropy(x, tb, weight=w, ignore_index=ignore_index)
    for reduction in ("mean", "sum"):
        got = fastce.cross_entropy(x, t, weight=w, ignore_index=ignore_index, reduction=reduction)
        np.testing.assert_allclose(got, R.cross_entropy(x, t, None, ignore_index, reduction, 0.0)[0], rtol=1e-12)


@pytest.mark.parametrize("ignore_index", [-100, 1])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_all_ignored(torch, reduction, ls, weighted, ignore_index):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 3, 2))
    t = np.full((4, 2), ignore_index)
    w = rng.uniform(0.5, 2, 3) if weighted else None
    kw = dict(weight=w, ignore_index=ignore_index, reduction=reduction, label_smoothing=ls)
    loss, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
    tl, tg = torch_run(torch, "cross_entropy", x, t, **kw)
    if reduction == "mean":
        assert np.isnan(loss)
    else:
        assert np.all(np.asarray(loss) == 0)
    assert_close(loss, tl, np.float64)
    assert_close(grad, tg, np.float64)


@pytest.mark.parametrize("shape", [(0, 4), (0, 4, 3), (2, 4, 0)])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_empty_batch(torch, shape, prob, ls, reduction, dtype):
    x, t, _ = make_ce(shape, dtype, prob=prob)
    kw = dict(reduction=reduction, label_smoothing=ls)
    loss, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
    tl, tg = torch_run(torch, "cross_entropy", x, t, **kw)
    check_output_types(loss, grad, x, reduction, none_shape(shape))
    if reduction == "mean":
        assert np.isnan(loss)
    elif reduction == "sum":
        assert loss == 0
    assert_close(loss, tl, dtype)
    assert_close(grad, tg, dtype)


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("fname", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_bce_empty(torch, fname, reduction, shape):
    x = np.full(shape, 0.5)
    kw = dict(reduction=reduction)
    if fname == "binary_cross_entropy_with_logits" and len(shape) == 2:
        kw["pos_weight"] = np.ones(shape[1])
    loss, grad = getattr(fastce, fname)(x, x.copy(), return_grad=True, **kw)
    tl, tg = torch_run(torch, fname, x, x.copy(), **kw)
    check_output_types(loss, grad, x, reduction, shape)
    if reduction == "mean":
        assert np.isnan(loss)
    elif reduction == "sum":
        assert loss == 0
    assert_close(loss, tl, np.float64)
    assert_close(grad, tg, np.float64)


@pytest.mark.parametrize("shape", [(1,), (5, 1), (3, 1, 2)])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_single_class(torch, shape, prob, ls, reduction):
    x, t, w = make_ce(shape, np.float64, weighted=True, prob=prob, seed=3)
    kw = dict(weight=w, reduction=reduction, label_smoothing=ls)
    loss, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
    tl, tg = torch_run(torch, "cross_entropy", x, t, **kw)
    assert_close(loss, tl, np.float64)
    assert_close(grad, tg, np.float64)
    if not prob:  # log_softmax of a single class is 0: loss and grad vanish
        assert np.all(np.abs(loss) <= 1e-15)
        assert np.all(np.abs(grad) <= 1e-15)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_negative_ignore_index(torch, reduction):
    x, t, w = make_ce((6, 4, 2), np.float64, weighted=True, seed=5)
    t[0, 0] = t[3, 1] = -1
    kw = dict(weight=w, ignore_index=-1, reduction=reduction, label_smoothing=0.1)
    loss, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
    tl, tg = torch_run(torch, "cross_entropy", x, t, **kw)
    assert_close(loss, tl, np.float64)
    assert_close(grad, tg, np.float64)


@pytest.mark.parametrize("tdtype", [np.int8, np.uint8, np.int16, np.int32, np.uint32,
                                    np.int64, np.uint64, "list"])
def test_cross_entropy_target_integer_dtypes(tdtype):
    x, t, w = make_ce((7, 4), np.float64, weighted=True, seed=6)
    tt = t.tolist() if tdtype == "list" else t.astype(tdtype)
    loss, grad = fastce.cross_entropy(x, tt, w, return_grad=True)
    rl, rg = R.cross_entropy(x, t, w)
    assert_close(loss, rl, np.float64)
    assert_close(grad, rg, np.float64)


def test_cross_entropy_float16():
    x, t, w = make_ce((9, 4, 3), np.float16, weighted=True, seed=7)
    for reduction in REDUCTIONS:
        loss, grad = fastce.cross_entropy(x, t, w, reduction=reduction,
                                          label_smoothing=0.1, return_grad=True)
        check_output_types(loss, grad, x, reduction, (9, 3))
        rl, rg = R.cross_entropy(x.astype(np.float64), t, w.astype(np.float64),
                                 reduction=reduction, label_smoothing=0.1)
        assert_close(loss, rl, np.float16, rtol=2e-3, atol_rel=2e-3)
        assert_close(grad, rg, np.float16, rtol=2e-3, atol_rel=2e-3)


# ----------------------------------------------------------------------------
# PyTorch parity: binary cross entropies
# ----------------------------------------------------------------------------
BCE_SHAPES = [(7,), (5, 4), (3, 4, 2)]


def make_bce(shape, dtype, wmode, soft, seed=0, logits=False):
    rng = np.random.default_rng(seed)
    if logits:
        x = (3.0 * rng.standard_normal(shape)).astype(dtype)
    else:
        x = rng.uniform(0.01, 0.99, shape).astype(dtype)
    y = rng.random(shape) if soft else (rng.random(shape) < 0.5).astype(float)
    y = y.astype(dtype)
    w = {None: None,
         "full": rng.uniform(0.1, 2, shape),
         "last": rng.uniform(0.1, 2, shape[-1:]),
         "col": rng.uniform(0.1, 2, shape[-2:-1] + (1,))}[wmode]
    w = None if w is None else w.astype(dtype)
    return x, y, w


@pytest.mark.parametrize("shape,dtype,reduction,wmode,soft", list(itertools.product(
    BCE_SHAPES, DTYPES, REDUCTIONS, [None, "full", "last", "col"], [False, True])))
def test_binary_cross_entropy_torch_parity(torch, shape, dtype, reduction, wmode, soft):
    x, y, w = make_bce(shape, dtype, wmode, soft)
    loss, grad = fastce.binary_cross_entropy(x, y, w, reduction=reduction, return_grad=True)
    tl, tg = torch_run(torch, "binary_cross_entropy", x, y, weight=w, reduction=reduction)
    check_output_types(loss, grad, x, reduction, shape)
    assert_close(loss, tl, dtype)
    assert_close(grad, tg, dtype)
    rl, rg = R.binary_cross_entropy(x, y, w, reduction)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)


@pytest.mark.parametrize("shape,dtype,reduction,wmode,soft,pw", list(itertools.product(
    BCE_SHAPES, DTYPES, REDUCTIONS, [None, "full", "last", "col"], [False, True],
    [None, "last", "full"])))
def test_bce_with_logits_torch_parity(torch, shape, dtype, reduction, wmode, soft, pw):
    x, y, w = make_bce(shape, dtype, wmode, soft, logits=True)
    pos_weight = {None: None,
                  "last": np.linspace(0.3, 3.0, shape[-1]),
                  "full": np.linspace(0.0, 3.0, int(np.prod(shape))).reshape(shape)}[pw]
    pos_weight = None if pos_weight is None else pos_weight.astype(dtype)
    loss, grad = fastce.binary_cross_entropy_with_logits(
        x, y, w, reduction=reduction, pos_weight=pos_weight, return_grad=True)
    tl, tg = torch_run(torch, "binary_cross_entropy_with_logits", x, y, weight=w,
                       reduction=reduction, pos_weight=pos_weight)
    check_output_types(loss, grad, x, reduction, shape)
    assert_close(loss, tl, dtype)
    assert_close(grad, tg, dtype)
    rl, rg = R.binary_cross_entropy_with_logits(x, y, w, reduction, pos_weight)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_cross_entropy_clamped_log(torch, reduction, dtype):
    # p exactly 0 or 1: log clamped at -100, gradient denominator clamped at ~1e-12
    x = np.array([0.0, 1.0, 0.0, 1.0, 0.5, 1e-30], dtype=dtype)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0], dtype=dtype)
    loss, grad = fastce.binary_cross_entropy(x, y, reduction=reduction, return_grad=True)
    tl, tg = torch_run(torch, "binary_cross_entropy", x, y, reduction=reduction)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert_close(loss, tl, dtype)
    # torch uses float32(1e-12) as clamp, the spec 1e-12: agree to ~4e-9 relative
    assert_close(grad, tg, dtype, rtol=1e-5 if dtype == np.float32 else 1e-8)
    rl, _ = R.binary_cross_entropy(x, y, reduction=reduction)
    assert_close(loss, rl, dtype)


@pytest.mark.parametrize("tdtype", [bool, np.int8, np.int64, np.float32, np.float64])
@pytest.mark.parametrize("fname", ["binary_cross_entropy", "binary_cross_entropy_with_logits"])
def test_bce_target_dtypes(fname, tdtype):
    rng = np.random.default_rng(8)
    x = rng.uniform(0.05, 0.95, (6, 3)) if fname == "binary_cross_entropy" \
        else rng.standard_normal((6, 3))
    y = rng.random((6, 3)) < 0.5
    loss, grad = getattr(fastce, fname)(x, y.astype(tdtype), reduction="none", return_grad=True)
    rl, rg = getattr(R, fname)(x, y.astype(np.float64), reduction="none")
    assert_close(loss, rl, np.float64)
    assert_close(grad, rg, np.float64)


# ----------------------------------------------------------------------------
# Gradients vs central finite differences (float64) and reference formulas
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(4,), (3, 4), (2, 4, 3)])
@pytest.mark.parametrize("prob", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ls", [0.0, 0.3])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cross_entropy_grad_finite_differences(shape, prob, weighted, ls, reduction):
    ii = -100 if prob else 2
    x, t, w = make_ce(shape, np.float64, weighted, ii, prob, seed=11)
    kw = dict(weight=w, ignore_index=ii, reduction=reduction, label_smoothing=ls)
    _, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
    fd = R.finite_difference_grad(lambda z: fastce.cross_entropy(z, t, **kw), x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    _, rg = R.cross_entropy(x, t, w, ii, reduction, ls)
    assert_close(grad, rg, np.float64)


@pytest.mark.parametrize("wmode", [None, "full", "last"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_cross_entropy_grad_finite_differences(wmode, reduction):
    x, y, w = make_bce((3, 4), np.float64, wmode, soft=True, seed=12)
    _, grad = fastce.binary_cross_entropy(x, y, w, reduction=reduction, return_grad=True)
    fd = R.finite_difference_grad(
        lambda z: fastce.binary_cross_entropy(z, y, w, reduction=reduction), x, h=1e-7)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("pw", [False, True])
@pytest.mark.parametrize("wmode", [None, "full", "last"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_with_logits_grad_finite_differences(pw, wmode, reduction):
    x, y, w = make_bce((3, 4), np.float64, wmode, soft=True, seed=13, logits=True)
    pos_weight = np.array([0.5, 1.0, 2.0, 4.0]) if pw else None
    kw = dict(weight=w, reduction=reduction, pos_weight=pos_weight)
    _, grad = fastce.binary_cross_entropy_with_logits(x, y, return_grad=True, **kw)
    fd = R.finite_difference_grad(
        lambda z: fastce.binary_cross_entropy_with_logits(z, y, **kw), x)
    np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-8)
    _, rg = R.binary_cross_entropy_with_logits(x, y, w, reduction, pos_weight)
    assert_close(grad, rg, np.float64)


# ----------------------------------------------------------------------------
# Property tests (hypothesis)
# ----------------------------------------------------------------------------
PROP = settings(max_examples=50, deadline=None)
finite64 = st.floats(-60, 60, allow_nan=False, allow_infinity=False)
unit64 = st.floats(0, 1, allow_nan=False, allow_infinity=False)


@st.composite
def logits_and_index_targets(draw, max_c=6, elements=finite64):
    n = draw(st.integers(1, 12))
    c = draw(st.integers(1, max_c))
    x = draw(hnp.arrays(np.float64, (n, c), elements=elements))
    t = draw(hnp.arrays(np.int64, (n,), elements=st.integers(0, c - 1)))
    return x, t


@PROP
@given(z=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=5), elements=finite64),
       data=st.data())
def test_prop_bce_with_logits_symmetry(z, data):
    y = data.draw(hnp.arrays(np.float64, z.shape, elements=unit64))
    l1, g1 = fastce.binary_cross_entropy_with_logits(z, y, reduction="none", return_grad=True)
    l2, g2 = fastce.binary_cross_entropy_with_logits(-z, 1.0 - y, reduction="none",
                                                     return_grad=True)
    scale = 1.0 + np.abs(z)
    np.testing.assert_array_less(np.abs(l1 - l2), 1e-13 * scale + 1e-12 * np.abs(l1) + 1e-300)
    np.testing.assert_array_less(np.abs(g1 + g2), 1e-14 + 1e-12 * np.abs(g1))


@PROP
@given(xt=logits_and_index_targets(max_c=2, elements=finite64), data=st.data())
def test_prop_two_class_ce_equals_bce_with_logits(xt, data):
    x, _ = xt
    if x.shape[1] != 2:
        x = np.concatenate([x, x[:, :1] * 0.5], axis=1)[:, :2]
    y = data.draw(hnp.arrays(np.int64, (x.shape[0],), elements=st.integers(0, 1)))
    d = x[:, 1] - x[:, 0]
    for reduction in REDUCTIONS:
        lc, gc = fastce.cross_entropy(x, y, reduction=reduction, return_grad=True)
        lb, gb = fastce.binary_cross_entropy_with_logits(d, y.astype(np.float64),
                                                         reduction=reduction, return_grad=True)
        np.testing.assert_allclose(lc, lb, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(gc[:, 1], gb, rtol=1e-10, atol=1e-13)
        np.testing.assert_allclose(gc[:, 0], -gb, rtol=1e-10, atol=1e-13)
    # soft labels: probability targets (1 - q, q) == BCE-with-logits with target q
    q = data.draw(hnp.arrays(np.float64, (x.shape[0],), elements=unit64))
    lc, gc = fastce.cross_entropy(x, np.stack([1 - q, q], axis=1), reduction="none",
                                  return_grad=True)
    lb, gb = fastce.binary_cross_entropy_with_logits(d, q, reduction="none", return_grad=True)
    np.testing.assert_allclose(lc, lb, rtol=1e-10, atol=1e-11 * (1 + np.abs(d).max()))
    np.testing.assert_allclose(gc[:, 1], gb, rtol=1e-10, atol=1e-12)


@PROP
@given(xt=logits_and_index_targets(), data=st.data())
def test_prop_cross_entropy_shift_invariance(xt, data):
    x, t = xt
    shift = data.draw(hnp.arrays(np.float64, (x.shape[0], 1), elements=finite64))
    ls = data.draw(st.sampled_from([0.0, 0.2]))
    l1, g1 = fastce.cross_entropy(x, t, reduction="none", label_smoothing=ls, return_grad=True)
    l2, g2 = fastce.cross_entropy(x + shift, t, reduction="none", label_smoothing=ls,
                                  return_grad=True)
    np.testing.assert_allclose(l1, l2, rtol=1e-12, atol=1e-11)
    np.testing.assert_allclose(g1, g2, rtol=1e-10, atol=1e-11)


@PROP
@given(xt=logits_and_index_targets(elements=st.floats(-30, 30)), data=st.data())
def test_prop_float32_close_to_float64(xt, data):
    x, t = xt
    x32 = x.astype(np.float32)
    x64 = x32.astype(np.float64)  # same values, upcast
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    l32, g32 = fastce.cross_entropy(x32, t, reduction=reduction, return_grad=True)
    l64, g64 = fastce.cross_entropy(x64, t, reduction=reduction, return_grad=True)
    assert np.asarray(l32).dtype == np.float32 and g32.dtype == np.float32
    # gradient entries are O(1) (O(1/N) for the mean): float32 rounding of a softmax
    # probability near 1 costs ~6e-8 absolute, as in torch
    unit = 1.0 / x.shape[0] if reduction == "mean" else 1.0
    np.testing.assert_allclose(l32, l64, rtol=1e-5, atol=1e-6 * unit)
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6 * unit)
    y = (t % 2).astype(np.float32)
    l32, g32 = fastce.binary_cross_entropy_with_logits(x32[:, 0], y, reduction=reduction,
                                                       return_grad=True)
    l64, g64 = fastce.binary_cross_entropy_with_logits(x64[:, 0], y.astype(np.float64),
                                                       reduction=reduction, return_grad=True)
    np.testing.assert_allclose(l32, l64, rtol=1e-5, atol=1e-6 * unit)
    np.testing.assert_allclose(g32, g64, rtol=1e-5, atol=1e-6 * unit)


@PROP
@given(xt=logits_and_index_targets(), data=st.data())
def test_prop_losses_nonnegative(xt, data):
    x, t = xt
    ls = data.draw(st.sampled_from([0.0, 0.1, 1.0]))
    w = data.draw(hnp.arrays(np.float64, (x.shape[1],), elements=st.floats(0, 5)))
    assert np.all(fastce.cross_entropy(x, t, w, reduction="none", label_smoothing=ls) >= 0)
    q = data.draw(hnp.arrays(np.float64, x.shape, elements=st.floats(0, 1)))
    q = q / np.where(q.sum(axis=1, keepdims=True) > 0, q.sum(axis=1, keepdims=True), 1.0)
    assert np.all(fastce.cross_entropy(x, q, w, reduction="none", label_smoothing=ls) >= 0)
    y = data.draw(hnp.arrays(np.float64, x.shape, elements=unit64))
    p = data.draw(hnp.arrays(np.float64, x.shape, elements=unit64))
    assert np.all(fastce.binary_cross_entropy(p, y, reduction="none") >= 0)
    assert np.all(fastce.binary_cross_entropy_with_logits(
        x, y, reduction="none", pos_weight=w) >= 0)


def test_bce_with_logits_zero_pos_weight_nonnegative():
    # pos_weight = 0 leaves (1 - y) * softplus(z) >= 0, tiny for very negative z;
    # a cancellation in the torch-style formula must not make it negative
    rng = np.random.default_rng(60)
    z = -rng.uniform(30, 60, 2000)
    y = rng.random(2000)
    loss = fastce.binary_cross_entropy_with_logits(z, y, reduction="none",
                                                   pos_weight=np.zeros(1))
    ref, _ = R.binary_cross_entropy_with_logits(z, y, reduction="none", pos_weight=np.zeros(1))
    assert np.all(loss >= 0)
    np.testing.assert_allclose(loss, ref, rtol=0, atol=1e-14)


@PROP
@given(xt=logits_and_index_targets(max_c=8), data=st.data())
def test_prop_cross_entropy_grad_rows_sum_to_zero(xt, data):
    x, t = xt
    reduction = data.draw(st.sampled_from(REDUCTIONS))
    _, g = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True)
    np.testing.assert_allclose(g.sum(axis=1), 0.0, atol=1e-14 * x.shape[1])
    # and each row is softmax - onehot (up to the mean's 1/N)
    _, rg = R.cross_entropy(x, t, reduction=reduction)
    assert_close(g, rg, np.float64, unit=1.0 / x.shape[0] if reduction == "mean" else 1.0)


# ----------------------------------------------------------------------------
# Edge cases
# ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype,big", [(np.float64, 1e4), (np.float32, 80.0)])
@pytest.mark.parametrize("ls", [0.0, 0.1])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_extreme_logits(dtype, big, ls, reduction):
    rng = np.random.default_rng(20)
    x = (rng.choice([-big, big], size=(16, 4)) + rng.standard_normal((16, 4))).astype(dtype)
    t = rng.integers(0, 4, 16)
    loss, grad = fastce.cross_entropy(x, t, reduction=reduction, label_smoothing=ls,
                                      return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    rl, rg = R.cross_entropy(x.astype(np.float64), t, reduction=reduction, label_smoothing=ls)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)

    z = x.ravel()
    y = rng.random(z.size).astype(dtype)
    pw = np.full(z.size, 2.5, dtype=dtype)
    loss, grad = fastce.binary_cross_entropy_with_logits(z, y, reduction=reduction,
                                                         pos_weight=pw, return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    rl, rg = R.binary_cross_entropy_with_logits(z.astype(np.float64), y, reduction=reduction,
                                                pos_weight=pw)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_cross_entropy_neg_inf_masked_logits(dtype, reduction):
    rng = np.random.default_rng(21)
    x = rng.standard_normal((6, 5)).astype(dtype)
    t = np.array([0, 1, 2, 3, 4, 0])
    x[0, 1:] = -np.inf  # only the target class is finite
    x[1, [0, 2]] = -np.inf
    x[3, 4] = -np.inf
    x[5, 2:] = -np.inf
    loss, grad = fastce.cross_entropy(x, t, reduction=reduction, return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    assert np.all(grad[np.isneginf(x)] == 0)
    rl, rg = R.cross_entropy(x, t, reduction=reduction)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)
    # probability targets with zero probability on the masked classes (spec deviation
    # from torch: 0 * -inf contributes 0)
    q = rng.random(x.shape) * np.isfinite(x)
    q /= q.sum(axis=1, keepdims=True)
    q = q.astype(dtype)
    loss, grad = fastce.cross_entropy(x, q, reduction=reduction, return_grad=True)
    assert np.all(np.isfinite(loss)) and np.all(np.isfinite(grad))
    rl, rg = R.cross_entropy(x, q, reduction=reduction)
    assert_close(loss, rl, dtype)
    assert_close(grad, rg, dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_nan_logit_propagates_to_its_row(torch, dtype):
    x, t, w = make_ce((5, 4, 2), dtype, weighted=True, seed=22)
    x[2, 1, 0] = np.nan
    for reduction in REDUCTIONS:
        kw = dict(weight=w, reduction=reduction, label_smoothing=0.1)
        loss, grad = fastce.cross_entropy(x, t, return_grad=True, **kw)
        tl, tg = torch_run(torch, "cross_entropy", x, t, **kw)
        assert_close(loss, tl, dtype)
        assert_close(grad, tg, dtype)
        if reduction == "none":
            assert np.isnan(loss[2, 0]) and np.isnan(grad[2, :, 0]).all()
            assert np.isfinite(np.delete(loss.ravel(), 4)).all()
        else:
            assert np.isnan(loss)
    z = x.reshape(-1)[:12].copy()
    y = np.linspace(0, 1, 12).astype(dtype)
    z[5] = np.nan
    loss, grad = fastce.binary_cross_entropy_with_logits(z, y, reduction="none",
                                                         return_grad=True)
    tl, tg = torch_run(torch, "binary_cross_entropy_with_logits", z, y, reduction="none")
    assert np.isnan(loss[5]) and np.isnan(grad[5])
    assert_close(loss, tl, dtype)
    assert_close(grad, tg, dtype)


def _layout_variants(a):
    """Same values as ``a`` in other memory layouts."""
    big = np.zeros((2 * a.shape[0],) + a.shape[1:] + (3,), dtype=a.dtype)
    big[::2, ..., 1] = a
    yield "slice", big[::2, ..., 1]
    yield "fortran", np.asfortranarray(a)
    t = np.ascontiguousarray(np.moveaxis(a, 0, -1))
    yield "transposed", np.moveaxis(t, -1, 0)
    yield "byteswapped", a.astype(a.dtype.newbyteorder(">" if a.dtype.byteorder != ">"
                                                       else "<"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_layouts_give_same_result(dtype):
    x, t, w = make_ce((8, 5, 3), dtype, weighted=True, seed=23)
    _, q, _ = make_ce((8, 5, 3), dtype, prob=True, seed=24)
    tol = dict(rtol=1e-13, atol_rel=1e-15) if dtype == np.float64 else \
        dict(rtol=1e-6, atol_rel=1e-7)
    for reduction in REDUCTIONS:
        kw = dict(reduction=reduction, label_smoothing=0.1, return_grad=True)
        base = fastce.cross_entropy(x, t, w, **kw)
        base_q = fastce.cross_entropy(x, q, w, **kw)
        for name, xv in _layout_variants(x):
            for tname, tv in _layout_variants(t):
                got = fastce.cross_entropy(xv, tv, w, **kw)
                for a, b in zip(got, base):
                    assert_close(a, b, dtype, **tol)
            for _, wv in _layout_variants(w):
                got = fastce.cross_entropy(xv, t, wv, **kw)
                for a, b in zip(got, base):
                    assert_close(a, b, dtype, **tol)
            for _, qv in _layout_variants(q):
                got = fastce.cross_entropy(xv, qv, w, **kw)
                for a, b in zip(got, base_q):
                    assert_close(a, b, dtype, **tol)

        z = x[:, 0, :]
        p = 1.0 / (1.0 + np.exp(-z))
        y = q[:, 0, :]
        pw = w[:3]
        base_l = fastce.binary_cross_entropy_with_logits(z, y, y, pos_weight=pw,
                                                         reduction=reduction, return_grad=True)
        base_b = fastce.binary_cross_entropy(p, y, y, reduction=reduction, return_grad=True)
        for (_, zv), (_, pv), (_, yv), (_, pwv) in zip(_layout_variants(z), _layout_variants(p),
                                                      _layout_variants(y), _layout_variants(pw)):
            got = fastce.binary_cross_entropy_with_logits(zv, yv, yv, pos_weight=pwv,
                                                          reduction=reduction, return_grad=True)
            for a, b in zip(got, base_l):
                assert_close(a, b, dtype, **tol)
            got = fastce.binary_cross_entropy(pv, yv, yv, reduction=reduction, return_grad=True)
            for a, b in zip(got, base_b):
                assert_close(a, b, dtype, **tol)


def test_inputs_not_modified():
    x, t, w = make_ce((6, 4, 2), np.float64, weighted=True, seed=25)
    _, q, _ = make_ce((6, 4, 2), np.float64, prob=True, seed=26)
    x[0, 0, 0] = -np.inf
    args = [x, t, w, q]
    copies = [a.copy() for a in args]
    for reduction in REDUCTIONS:
        fastce.cross_entropy(x, t, w, reduction=reduction, label_smoothing=0.2, return_grad=True)
        fastce.cross_entropy(x, q, w, reduction=reduction, label_smoothing=0.2, return_grad=True)
    xs = x[:, 1, :]
    xs = np.where(np.isfinite(xs), xs, 0.0)
    p = 1.0 / (1.0 + np.exp(-xs))
    y = q[:, 1, :]
    pw = w[:2]
    more = [xs, p, y, pw]
    more_copies = [a.copy() for a in more]
    for reduction in REDUCTIONS:
        fastce.binary_cross_entropy(p, y, y, reduction=reduction, return_grad=True)
        fastce.binary_cross_entropy_with_logits(xs, y, y, reduction=reduction, pos_weight=pw,
                                                return_grad=True)
    for a, b in zip(args + more, copies + more_copies):
        np.testing.assert_array_equal(a, b)
    # read-only inputs are accepted (nothing is written to them)
    for a in args + more:
        a.setflags(write=False)
    fastce.cross_entropy(x, t, w, return_grad=True)
    fastce.binary_cross_entropy_with_logits(xs, y, y, pos_weight=pw, return_grad=True)
    fastce.binary_cross_entropy(p, y, y, return_grad=True)


# ----------------------------------------------------------------------------
# serial == parallel (bitwise)
# ----------------------------------------------------------------------------
def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_serial_equals_parallel(dtype, reduction):
    n, c = 50_000, 7
    x, t, w = make_ce((n, c), dtype, weighted=True, seed=30)
    _, q, _ = make_ce((n, c), dtype, prob=True, seed=31)
    z = x[:, :3].copy()
    y = q[:, :3].copy()
    p = (1.0 / (1.0 + np.exp(-z.astype(np.float64)))).astype(dtype)
    calls = [
        lambda k: fastce.cross_entropy(x, t, w, reduction=reduction, label_smoothing=0.1,
                                       return_grad=True, n_threads=k),
        lambda k: fastce.cross_entropy(x, q, reduction=reduction, return_grad=True, n_threads=k),
        lambda k: fastce.binary_cross_entropy_with_logits(
            z, y, reduction=reduction, pos_weight=w[:3], return_grad=True, n_threads=k),
        lambda k: fastce.binary_cross_entropy(p, y, reduction=reduction, return_grad=True,
                                              n_threads=k),
    ]
    for call in calls:
        serial = call(1)
        for k in (2, -1, None):
            par = call(k)
            _bits_equal(par[0], serial[0])
            _bits_equal(par[1], serial[1])


# ----------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------
_X = np.zeros((4, 3))
_T = np.array([0, 1, 2, 0])
_P = np.full((4, 3), 0.5)
_Y = np.ones((4, 3))
ce = fastce.cross_entropy
bce = fastce.binary_cross_entropy
bcel = fastce.binary_cross_entropy_with_logits
W = r"(?<!pos_)\bweight\b"
# the spec allows ValueError or TypeError except where it names TypeError
VE = (ValueError, TypeError)

BAD = [
    # cross_entropy
    ("ce target out of range", lambda: ce(_X, np.array([0, 1, 3, 0])), VE, "target"),
    ("ce target negative", lambda: ce(_X, np.array([0, -1, 2, 0])), VE, "target"),
    ("ce target too large (C,)", lambda: ce(_X[0], np.array(3)), VE, "target"),
    ("ce target shape", lambda: ce(_X, np.array([0, 1, 2])), VE, "target"),
    ("ce target shape nd", lambda: ce(np.zeros((4, 3, 2)), _T), VE, "target"),
    ("ce int target with input shape", lambda: ce(_X, np.zeros((4, 3), int)), VE,
     "target"),
    ("ce prob target shape", lambda: ce(_X, np.full((4, 2), 0.5)), VE, "target"),
    ("ce weight shape", lambda: ce(_X, _T, weight=np.ones(4)), VE, W),
    ("ce weight 2d", lambda: ce(_X, _T, weight=np.ones((1, 3))), VE, W),
    ("ce reduction", lambda: ce(_X, _T, reduction="avg"), VE, "reduction"),
    ("ce ls < 0", lambda: ce(_X, _T, label_smoothing=-0.1), VE, "label_smoothing"),
    ("ce ls > 1", lambda: ce(_X, _T, label_smoothing=1.1), VE, "label_smoothing"),
    ("ce prob target ignore_index", lambda: ce(_X, _P, ignore_index=0), VE,
     "ignore_index"),
    ("ce int input", lambda: ce(np.zeros((4, 3), int), _T), TypeError, "input"),
    ("ce str input", lambda: ce(np.full((4, 3), "a"), _T), TypeError, "input"),
    ("ce str target", lambda: ce(_X, np.array(list("abca"))), (TypeError, ValueError), "target"),
    ("ce str weight", lambda: ce(_X, _T, weight=np.array(list("abc"))), (TypeError, ValueError),
     W),
    ("ce 0-d input", lambda: ce(np.float64(1.0), np.array(0)), VE, "input"),
    ("ce n_threads 0", lambda: ce(_X, _T, n_threads=0), (ValueError, TypeError), "n_threads"),
    ("ce n_threads float", lambda: ce(_X, _T, n_threads=1.5), (ValueError, TypeError),
     "n_threads"),
    ("ce n_threads str", lambda: ce(_X, _T, n_threads="2"), (ValueError, TypeError), "n_threads"),
    # binary_cross_entropy
    ("bce target shape", lambda: bce(_P, np.ones(3)), VE, "target"),
    ("bce target shape 2", lambda: bce(_P, np.ones((3, 4))), VE, "target"),
    ("bce weight shape", lambda: bce(_P, _Y, weight=np.ones(4)), VE, W),
    ("bce input > 1", lambda: bce(np.full((4, 3), 1.5), _Y), VE, "input"),
    ("bce input < 0", lambda: bce(np.full((4, 3), -0.1), _Y), VE, "input"),
    ("bce input nan", lambda: bce(np.full((4, 3), np.nan), _Y), VE, "input"),
    ("bce reduction", lambda: bce(_P, _Y, reduction="Mean"), VE, "reduction"),
    ("bce int input", lambda: bce(np.zeros((4, 3), int), _Y), TypeError, "input"),
    ("bce str target", lambda: bce(_P, np.full((4, 3), "x")), (TypeError, ValueError), "target"),
    ("bce n_threads", lambda: bce(_P, _Y, n_threads=0), (ValueError, TypeError), "n_threads"),
    # binary_cross_entropy_with_logits
    ("bcel target shape", lambda: bcel(_X, np.ones(3)), VE, "target"),
    ("bcel weight shape", lambda: bcel(_X, _Y, weight=np.ones(4)), VE, W),
    ("bcel pos_weight shape", lambda: bcel(_X, _Y, pos_weight=np.ones(4)), VE,
     r"\bpos_weight\b"),
    ("bcel reduction", lambda: bcel(_X, _Y, reduction=None), (ValueError, TypeError),
     "reduction"),
    ("bcel int input", lambda: bcel(np.zeros((4, 3), np.int32), _Y), TypeError, "input"),
    ("bcel str pos_weight", lambda: bcel(_X, _Y, pos_weight=np.array(list("abc"))),
     (TypeError, ValueError), r"\bpos_weight\b"),
    ("bcel n_threads", lambda: bcel(_X, _Y, n_threads=-0.5), (ValueError, TypeError),
     "n_threads"),
]


def test_array_like_that_refuses_conversion_is_a_type_error():
    # np.asarray raises RuntimeError for a torch tensor that requires grad
    torch = pytest.importorskip("torch")
    leaf = torch.zeros((4, 3), dtype=torch.float64, requires_grad=True)
    with pytest.raises(TypeError, match=r"\binput\b.*requires grad"):
        fastce.cross_entropy(leaf, _T)
    with pytest.raises(TypeError, match=r"\btarget\b"):
        fastce.binary_cross_entropy_with_logits(_X, torch.zeros((4, 3), dtype=torch.float64, requires_grad=True))


@pytest.mark.parametrize("name,call,exc,pattern", BAD, ids=[b[0] for b in BAD])
def test_bad_input_raises(name, call, exc, pattern):
    with pytest.raises(exc, match=pattern):
        call()


def test_valid_negative_n_threads_accepted():
    x, t, _ = make_ce((10, 3), np.float64, seed=40)
    ref = R.cross_entropy(x, t)[0]
    for k in (-1, -2):
        assert_close(fastce.cross_entropy(x, t, n_threads=k), ref, np.float64)


# ----------------------------------------------------------------------------
# float32 accuracy on large inputs
# ----------------------------------------------------------------------------
@pytest.mark.slow
def test_float32_accuracy_bce_with_logits_1e7():
    n = 10**7
    rng = np.random.default_rng(50)
    z = (4.0 * rng.standard_normal(n, dtype=np.float32)).astype(np.float32)
    y = (rng.random(n, dtype=np.float32) < 0.3).astype(np.float32)
    for reduction in ("mean", "sum"):
        loss = fastce.binary_cross_entropy_with_logits(z, y, reduction=reduction)
        assert loss.dtype == np.float32
        total = 0.0
        for s in range(0, n, 10**6):
            total += R.binary_cross_entropy_with_logits(z[s:s + 10**6], y[s:s + 10**6],
                                                        reduction="sum")[0]
        ref = total / n if reduction == "mean" else total
        assert abs(float(loss) - ref) <= 1e-6 * abs(ref)


@pytest.mark.slow
def test_float32_accuracy_cross_entropy_1e7():
    n, c = 10**7, 3
    rng = np.random.default_rng(51)
    x = rng.standard_normal((n, c), dtype=np.float32)
    x *= 3
    t = rng.integers(0, c, n).astype(np.int32)
    loss = fastce.cross_entropy(x, t)
    assert loss.dtype == np.float32
    total = 0.0
    for s in range(0, n, 10**6):
        xs = x[s:s + 10**6].astype(np.float64)
        logp = R.log_softmax_rows(xs)
        total -= logp[np.arange(xs.shape[0]), t[s:s + 10**6]].sum()
    ref = total / n
    assert abs(float(loss) - ref) <= 1e-6 * abs(ref)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [
    dict(),
    dict(weight=True, label_smoothing=0.2),
    dict(ignore_index=1, reduction="sum"),
    dict(sample_weight=True, reduction="none", label_smoothing=0.05),
])
def test_cross_entropy_few_long_rows_split_across_threads(dtype, options):
    # At most 8 rows of 2**18 or more classes: each row is cut in segments
    # that the threads share. Against the float64 reference, with a row whose
    # maximum is +inf, masked (-inf) logits and a target at the maximum;
    # results must not depend on the thread count.
    import numba

    rng = np.random.default_rng(91)
    n, c = 4, (1 << 18) + 77
    x = (3.0 * rng.standard_normal((n, c))).astype(dtype)
    t = rng.integers(0, c, size=n)
    t[1] = 1 if options.get("ignore_index") == 1 else t[1]
    x[2, rng.integers(0, c, size=1000)] = -np.inf
    x[0, t[0]] = 40.0  # the target holds the maximum
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = rng.uniform(0.5, 2.0, size=c)
    sample_weight = rng.uniform(0.5, 2.0, size=n) if kw.pop("sample_weight", False) else None
    reduction = kw.get("reduction", "mean")
    results = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(fastce.cross_entropy(x, t, sample_weight=sample_weight, return_grad=True, **kw))
    finally:
        numba.set_num_threads(previous)
    _bits_equal(results[0][0], results[1][0])
    _bits_equal(results[0][1], results[1][1])
    loss, grad = results[0]
    if sample_weight is None:
        ref_loss, ref_grad = R.cross_entropy(x.astype(np.float64), t, **kw)
    else:  # per-row losses and gradients scaled by the row weights ("none")
        ref_loss, ref_grad = R.cross_entropy(x.astype(np.float64), t, **kw)
        ref_loss = ref_loss * sample_weight
        ref_grad = ref_grad * sample_weight[:, None]
    assert_close(loss, ref_loss, dtype)
    assert_close(grad, ref_grad, dtype)
    # a row whose maximum is +inf goes through the row kernel: NaN as there
    x[3, 5] = np.inf
    loss_inf, grad_inf = fastce.cross_entropy(x, t, reduction="none", return_grad=True)
    ref_inf, ref_grad_inf = fastce.cross_entropy(np.concatenate([x, x[:5]]), np.concatenate([t, t[:5]]),
                                                 reduction="none", return_grad=True)  # 9 rows: not split
    np.testing.assert_array_equal(np.isnan(loss_inf), np.isnan(ref_inf[:4]))
    np.testing.assert_array_equal(np.isnan(grad_inf), np.isnan(ref_grad_inf[:4]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("options", [dict(), dict(weight=True, label_smoothing=0.2, reduction="sum"),
                                     dict(sample_weight=True, reduction="none")])
def test_cross_entropy_probability_targets_few_long_rows(dtype, options):
    # The segment path with class-probability targets, against the float64
    # reference; thread count independence; a row with a +inf logit goes
    # through the row kernel, as in the unsplit path.
    import numba

    rng = np.random.default_rng(92)
    n, c = 3, (1 << 18) + 5
    x = (3.0 * rng.standard_normal((n, c))).astype(dtype)
    q = rng.random((n, c)) ** 4
    q[1, rng.integers(0, c, size=500)] = 0.0
    q = (q / q.sum(axis=1, keepdims=True)).astype(dtype)
    x[1, q[1] == 0.0] = -np.inf  # masked classes with zero target mass
    kw = dict(options)
    if kw.pop("weight", False):
        kw["weight"] = rng.uniform(0.5, 2.0, size=c)
    sample_weight = rng.uniform(0.5, 2.0, size=n) if kw.pop("sample_weight", False) else None
    results = []
    previous = numba.get_num_threads()
    try:
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            results.append(fastce.cross_entropy(x, q, sample_weight=sample_weight, return_grad=True, **kw))
    finally:
        numba.set_num_threads(previous)
    _bits_equal(results[0][0], results[1][0])
    _bits_equal(results[0][1], results[1][1])
    ref_loss, ref_grad = R.cross_entropy(x.astype(np.float64), q.astype(np.float64), **kw)
    if sample_weight is not None:  # "none": per-row losses and gradients scaled by the row weights
        ref_loss, ref_grad = ref_loss * sample_weight, ref_grad * sample_weight[:, None]
    assert_close(results[0][0], ref_loss, dtype)
    assert_close(results[0][1], ref_grad, dtype)
    x[2, 7] = np.inf
    split = fastce.cross_entropy(x, q, reduction="none", return_grad=True)
    rows = fastce.cross_entropy(np.concatenate([x] * 3), np.concatenate([q] * 3), reduction="none", return_grad=True)
    np.testing.assert_array_equal(np.isnan(split[0]), np.isnan(rows[0][:n]))
    np.testing.assert_array_equal(np.isnan(split[1]), np.isnan(rows[1][:n]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_rows_read_ahead(dtype):
    """Inputs of at least K.PREFETCH_MIN_BYTES in the row layout prefetch the
    next row while computing one: the same results, bit for bit, as the
    same rows in calls small enough not to (and against the float64
    reference), with ignored rows, label smoothing and class weights, up to
    the last row."""
    from fastce import _kernels as K

    n_classes = 1000
    n_rows = -(-K.PREFETCH_MIN_BYTES // (n_classes * np.dtype(dtype).itemsize)) + 3
    rng = np.random.default_rng(41)
    x = (rng.normal(size=(n_rows, n_classes)) * 4).astype(dtype)
    t = rng.integers(0, n_classes, n_rows)
    t[::7] = -100
    t[-1] = 3
    w = rng.uniform(0.5, 2.0, n_classes)
    kw = dict(weight=w, label_smoothing=0.1, reduction="none", return_grad=True)
    loss, grad = fastce.cross_entropy(x, t, **kw)
    # small calls: the same per-row losses; the gradient scaled by the same 1 (reduction "none")
    parts = [fastce.cross_entropy(x[i : i + 500], t[i : i + 500], **kw) for i in range(0, n_rows, 500)]
    np.testing.assert_array_equal(loss, np.concatenate([p[0] for p in parts]))
    np.testing.assert_array_equal(grad, np.concatenate([p[1] for p in parts]))
    ref_loss, ref_grad = R.cross_entropy(x[-600:].astype(np.float64), t[-600:], weight=w, label_smoothing=0.1, reduction="none")
    rtol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(loss[-600:], ref_loss, rtol=rtol, atol=rtol)
    np.testing.assert_allclose(grad[-600:], ref_grad, rtol=rtol, atol=rtol * 1e-3)
