"""fastce.keras against Keras 3 itself (PyTorch backend): losses, and gradients
from torch autograd through Keras's loss, for every class and option."""

import os

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "torch")
keras = pytest.importorskip("keras")
torch = pytest.importorskip("torch")

from fastce import keras as fk  # noqa: E402

if keras.backend.backend() != "torch":  # pragma: no cover
    pytest.skip("the Keras comparisons need KERAS_BACKEND=torch", allow_module_level=True)

REDUCTIONS = ["sum_over_batch_size", "sum", "none", "mean_with_sample_weight"]
DTYPES = [np.float32, np.float64]
# (shape of y_pred, axis): classes last in 2-D and 3-D, classes in the middle
LAYOUTS = {"2d": ((7, 4), -1), "3d_last": ((3, 2, 4), -1), "3d_axis1": ((3, 4, 2), 1)}
LO32, HI32 = np.float32(1e-7), np.float32(1 - 1e-7)


@pytest.fixture(autouse=True)
def keras_float64(monkeypatch):
    """Keras on the PyTorch (and JAX) backend follows JAX's default of no 64-bit
    types in its dtype promotion (``BIT64_TO_BIT32_DTYPE``): ``ops.mean`` and
    ``ops.divide_no_nan`` compute in float32 even for float64 tensors, so its
    float64 losses are only float32-accurate. The TensorFlow backend keeps
    float64; so do we here, to get a float64 reference."""
    try:
        from keras.src.backend.common import dtypes
    except ImportError:  # pragma: no cover
        return
    if "float64" in getattr(dtypes, "BIT64_TO_BIT32_DTYPE", {}):
        monkeypatch.setitem(dtypes.BIT64_TO_BIT32_DTYPE, "float64", "float64")


def keras_reference(loss, y_true, y_pred, sample_weight=None):
    """Keras's loss and its autograd gradient with respect to y_pred (of the sum for "none")."""
    yp = torch.tensor(y_pred, requires_grad=True)
    out = loss(y_true, yp, sample_weight=sample_weight)
    (out.sum() if out.ndim else out).backward()
    grad = np.zeros_like(y_pred) if yp.grad is None else yp.grad.numpy()
    return out.detach().numpy(), grad


def assert_close(ours, ref, dtype, scale=1.0):
    ours = np.asarray(ours, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert ours.shape == ref.shape
    if dtype == np.float64:
        np.testing.assert_allclose(ours, ref, rtol=1e-10, atol=1e-12 * scale)
    else:
        # Keras computes in float32 throughout; fastce sums in float64.
        np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-6 * scale)


def compare(ours, theirs, y_true, y_pred, sample_weight=None):
    inputs = [np.array(a, copy=True) for a in (y_true, y_pred, sample_weight) if a is not None]
    loss = ours(y_true, y_pred, sample_weight=sample_weight)
    loss2, grad = ours.loss_and_grad(y_true, y_pred, sample_weight=sample_weight)
    for before, after in zip(inputs, (a for a in (y_true, y_pred, sample_weight) if a is not None)):
        np.testing.assert_array_equal(before, after)  # inputs are never modified
    ref_loss, ref_grad = keras_reference(theirs, y_true, y_pred, sample_weight)
    dtype = y_pred.dtype.type
    np.testing.assert_array_equal(loss, loss2)
    assert np.asarray(loss).dtype == dtype and grad.dtype == dtype and grad.shape == y_pred.shape
    assert_close(loss, ref_loss, dtype, scale=max(1.0, float(np.max(np.abs(ref_loss), initial=0))))
    assert_close(grad, ref_grad, dtype, scale=max(1.0, float(np.max(np.abs(ref_grad), initial=0))))
    return loss, grad


def per_sample_weight(rng, loss_shape):
    """One weight per sample: shape (N,) for 1-D losses, (N, 1) for (N, d) losses."""
    return rng.uniform(0.0, 2.0, size=(loss_shape[0],) + (1,) * (len(loss_shape) - 1))


def loss_shape_of(shape, axis):
    axis %= len(shape)
    return shape[:axis] + shape[axis + 1 :]


def binary_probabilities(rng, shape, dtype):
    p = rng.uniform(0, 1, size=shape).astype(dtype)
    edges = np.array([0.0, 1.0, 1e-7, 1 - 1e-7, 0.5e-7, 2e-7, 1 - 2e-7, 1 - 0.5e-7], dtype=dtype)
    flat = p.reshape(-1)
    flat[: edges.size] = edges
    return p


def class_probabilities(rng, shape, axis, dtype):
    """Unnormalised probabilities (row sums in (0.5, 2)) with zeros, ones and values near 1e-7."""
    p = np.moveaxis(rng.uniform(0.05, 1.0, size=shape), axis, -1)
    p /= p.sum(-1, keepdims=True) / rng.uniform(0.5, 2.0, size=p.shape[:-1] + (1,))
    rows = p.reshape(-1, p.shape[-1])
    rows[0] = 0.0
    rows[0, 0] = 1.0  # q = (1, 0, ...): clipped at both ends
    rows[1, 0] = 0.5e-7 * rows[1].sum()  # q far enough from the bounds that rounding cannot matter
    rows[2, 1] = 3e-7 * rows[2].sum()
    rows[3, :2] = [0.25, 0.75]
    rows[3, 2:] = 0.0
    return np.moveaxis(p, -1, axis).astype(dtype)


# ---------------------------------------------------------------------------
# the option matrix against Keras


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("from_logits", [False, True])
def test_binary_crossentropy_matches_keras(from_logits, label_smoothing, reduction, weighted, dtype, layout):
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(1)
    if from_logits:
        y_pred = (3 * rng.normal(size=shape)).astype(dtype)
    else:
        y_pred = binary_probabilities(rng, shape, dtype)
    y_true = (rng.uniform(size=shape) < 0.5).astype(np.float64)
    y_true.reshape(-1)[::5] = 0.3  # soft targets too
    sw = per_sample_weight(rng, loss_shape_of(shape, axis)) if weighted else None
    kw = dict(from_logits=from_logits, label_smoothing=label_smoothing, axis=axis, reduction=reduction)
    compare(
        fk.BinaryCrossentropy(**kw),
        keras.losses.BinaryCrossentropy(**kw, dtype=np.dtype(dtype).name),
        y_true, y_pred, sw,
    )  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("label_smoothing", [0.0, 0.1])
@pytest.mark.parametrize("from_logits", [False, True])
def test_categorical_crossentropy_matches_keras(from_logits, label_smoothing, reduction, weighted, dtype, layout):
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(2)
    if from_logits:
        y_pred = (3 * rng.normal(size=shape)).astype(dtype)
    else:
        y_pred = class_probabilities(rng, shape, axis, dtype)
    n_classes = shape[axis]
    labels = rng.integers(0, n_classes, size=loss_shape_of(shape, axis))
    y_true = np.moveaxis(np.eye(n_classes)[labels], -1, axis)
    soft = np.moveaxis(y_true, axis, -1).reshape(-1, n_classes)
    soft[1] = rng.dirichlet(np.ones(n_classes))  # a soft target row
    sw = per_sample_weight(rng, loss_shape_of(shape, axis)) if weighted else None
    kw = dict(from_logits=from_logits, label_smoothing=label_smoothing, axis=axis, reduction=reduction)
    compare(
        fk.CategoricalCrossentropy(**kw),
        keras.losses.CategoricalCrossentropy(**kw, dtype=np.dtype(dtype).name),
        y_true, y_pred, sw,
    )  # fmt: skip


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_class", [None, 1])
@pytest.mark.parametrize("from_logits", [False, True])
def test_sparse_categorical_crossentropy_matches_keras(from_logits, ignore_class, reduction, weighted, dtype, layout):
    shape, axis = LAYOUTS[layout]
    rng = np.random.default_rng(3)
    if from_logits:
        y_pred = (3 * rng.normal(size=shape)).astype(dtype)
    else:
        y_pred = class_probabilities(rng, shape, axis, dtype)
    loss_shape = loss_shape_of(shape, axis)
    y_true = rng.integers(0, shape[axis], size=loss_shape)
    y_true.reshape(-1)[:4] = [0, 1, 1, 2]  # hits the clipped rows of class_probabilities
    sw = None
    if weighted:
        # Keras cannot merge (N, 1) weights with the (N, d) ignore_class mask
        # in place (test_sample_weight_merged_with_mask_is_broadcast): give one per loss.
        sw = per_sample_weight(rng, loss_shape)
        if ignore_class is not None:
            sw = np.broadcast_to(sw, loss_shape).copy()
    kw = dict(from_logits=from_logits, ignore_class=ignore_class, reduction=reduction, axis=axis)
    compare(
        fk.SparseCategoricalCrossentropy(**kw),
        keras.losses.SparseCategoricalCrossentropy(**kw, dtype=np.dtype(dtype).name),
        y_true, y_pred, sw,
    )  # fmt: skip


# ---------------------------------------------------------------------------
# clipping at 1e-7 and what it does to the gradient


@pytest.mark.parametrize("dtype", DTYPES)
def test_binary_clipping_edges(dtype):
    lo, hi = dtype(1e-7), dtype(1 - 1e-7)
    p = np.array(
        [0.0, 1.0, lo, hi, np.nextafter(lo, dtype(0)), np.nextafter(lo, dtype(1)), np.nextafter(hi, dtype(0)),
         np.nextafter(hi, dtype(1)), 1.5, -0.5, 0.5],
        dtype=dtype,
    )  # fmt: skip
    for y in (np.zeros_like(p), np.ones_like(p)):
        loss, grad = compare(
            fk.BinaryCrossentropy(reduction="sum", axis=0),
            keras.losses.BinaryCrossentropy(reduction="sum", axis=0, dtype=np.dtype(dtype).name),
            y, p[:, None],
        )  # fmt: skip
        outside = (p < lo) | (p > hi)
        assert np.all(grad[outside] == 0) and np.all(grad[~outside] != 0)
    # the loss is finite and capped at -log(1e-7) per element
    assert np.isclose(fk.BinaryCrossentropy()(np.array([1.0]), np.array([0.0], dtype)), -np.log(lo), rtol=1e-6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cls", ["categorical", "sparse"])
def test_categorical_clipping_edges(dtype, cls):
    lo = float(dtype(1e-7))
    # rows with q = 0 or 1 exactly (sums that are powers of two), q at the bound, q below it
    y_pred = np.array(
        [[1.0, 0.0, 0.0], [0.0, 0.5, 0.5], [lo, 0.5, 0.5 - lo], [2.0, 2.0, 0.0], [0.3, 0.2, 0.5], [1e-9, 0.5, 0.5]],
        dtype=dtype,
    )
    labels = np.array([0, 0, 0, 2, 1, 0])
    if cls == "sparse":
        ours, theirs = fk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy
        y_true = labels
    else:
        ours, theirs = fk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy
        y_true = np.eye(3)[labels]
    loss, grad = compare(ours(reduction="none"), theirs(reduction="none", dtype=np.dtype(dtype).name), y_true, y_pred)
    np.testing.assert_allclose(loss[[1, 3]], -np.log(lo), rtol=1e-6)
    # q_y = 1 or 0 is clipped: the loss is constant there, its gradient 0
    assert np.all(grad[0] == 0) and np.all(grad[1] == 0) and np.all(grad[3] == 0)
    assert np.all(np.isfinite(grad))


def test_clipping_bounds_follow_the_dtype():
    # 1 - 1e-7 rounds to 1 - 2**-23 in float32: p = 1 with y = 0 costs -log(2**-23), not -log(1e-7)
    bce = fk.BinaryCrossentropy()
    assert bce(np.zeros(1), np.ones(1, np.float32)) == np.float32(23 * np.log(2))
    assert bce(np.zeros(1), np.ones(1, np.float64)) == -np.log1p(-(1 - 1e-7))
    assert fk.BinaryCrossentropy(dtype="float32")(np.zeros(1), np.ones(1)) == np.float32(23 * np.log(2))


# ---------------------------------------------------------------------------
# shapes, sample weights, masks, reductions


def test_reduction_aliases():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(5, 3))
    t = rng.integers(0, 3, size=5)
    base = fk.SparseCategoricalCrossentropy(from_logits=True)
    assert fk.SparseCategoricalCrossentropy(from_logits=True, reduction="mean")(t, x) == base(t, x)
    np.testing.assert_array_equal(
        fk.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(t, x),
        fk.SparseCategoricalCrossentropy(from_logits=True, reduction="none")(t, x),
    )


@pytest.mark.parametrize("reduction", ["sum_over_batch_size", "mean_with_sample_weight", "none"])
def test_sample_weight_merged_with_mask_is_broadcast(reduction):
    # Keras multiplies the (N, 1) weights by the (N, d) mask in place and fails;
    # fastce broadcasts, which is what Keras gives for weights broadcast by hand.
    rng = np.random.default_rng(5)
    x = rng.normal(size=(4, 3, 2))
    t = np.array([[0, 1], [2, 1], [1, 1], [0, 2]])
    sw = rng.uniform(0.5, 1.5, size=(4, 1))
    ours = fk.SparseCategoricalCrossentropy(from_logits=True, ignore_class=1, axis=1, reduction=reduction)
    theirs = keras.losses.SparseCategoricalCrossentropy(
        from_logits=True, ignore_class=1, axis=1, reduction=reduction, dtype="float64"
    )
    loss, grad = ours.loss_and_grad(t, x, sample_weight=sw)
    ref_loss, ref_grad = keras_reference(theirs, t, x, np.broadcast_to(sw, (4, 2)).copy())
    assert_close(loss, ref_loss, np.float64)
    assert_close(grad, ref_grad, np.float64)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_everything_ignored(reduction):
    x = np.random.default_rng(6).normal(size=(3, 4))
    t = np.full(3, 2)
    for from_logits in (True, False):
        kw = dict(from_logits=from_logits, ignore_class=2, reduction=reduction)
        p = x if from_logits else np.abs(x)
        loss, grad = compare(
            fk.SparseCategoricalCrossentropy(**kw),
            keras.losses.SparseCategoricalCrossentropy(**kw, dtype="float64"),
            t, p, np.ones(3),
        )  # fmt: skip
        assert np.all(loss == 0) and np.all(grad == 0)


def test_void_label_minus_one():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(6, 3))
    t = np.array([0, -1, 2, 1, -1, 0])
    kw = dict(from_logits=True, ignore_class=-1)
    compare(fk.SparseCategoricalCrossentropy(**kw), keras.losses.SparseCategoricalCrossentropy(**kw, dtype="float64"), t, x)


@pytest.mark.parametrize(
    "cls, y_true_shape, y_pred_shape, sw_shape",
    [
        ("binary", (6,), (6, 1), None),  # y_true gets a trailing axis
        ("binary", (6, 1), (6,), None),  # y_pred does
        ("binary", (6,), (6,), None),  # 1-D: a single mean, returned whatever the reduction
        ("binary", (6, 3), (6, 3), (6, 1)),  # weights (N, 1) for losses (N,)
        ("sparse", (6, 1), (6, 3), None),  # labels with the class axis of length 1
        ("sparse", (6,), (6, 3), (6, 1)),  # losses become (N, 1)
        ("sparse", (), (3,), None),  # one sample
        ("categorical", (3,), (3,), None),
        ("categorical", (6, 3, 2), (6, 3, 2), (3,)),  # broadcast from the right, as NumPy
    ],
)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_shapes_as_keras(cls, y_true_shape, y_pred_shape, sw_shape, reduction):
    rng = np.random.default_rng(8)
    y_pred = rng.uniform(0.01, 1.0, size=y_pred_shape)
    if cls == "sparse":
        y_true = rng.integers(0, y_pred_shape[-1], size=y_true_shape)
        ours, theirs = fk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy
    else:
        y_true = (rng.uniform(size=y_true_shape) < 0.5).astype(float)
        if cls == "binary":
            ours, theirs = fk.BinaryCrossentropy, keras.losses.BinaryCrossentropy
        else:
            ours, theirs = fk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy
    sw = None if sw_shape is None else rng.uniform(0.5, 2.0, size=sw_shape)
    compare(ours(reduction=reduction), theirs(reduction=reduction, dtype="float64"), y_true, y_pred, sw)


def test_empty_batch_as_keras():
    for reduction in REDUCTIONS:
        loss, grad = fk.SparseCategoricalCrossentropy(reduction=reduction).loss_and_grad(
            np.zeros(0, int), np.zeros((0, 3))
        )
        assert loss.shape == (0,) and grad.shape == (0, 3)
        loss = fk.CategoricalCrossentropy(reduction=reduction, axis=1)(np.zeros((0, 3, 2)), np.zeros((0, 3, 2)))
        ref = keras.losses.CategoricalCrossentropy(reduction=reduction, axis=1, dtype="float64")(
            np.zeros((0, 3, 2)), np.zeros((0, 3, 2))
        )
        np.testing.assert_array_equal(loss, ref.numpy())


@pytest.mark.parametrize("shape", [(3, 0), (1, 0), (0,)])
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_binary_empty_axis_as_keras(shape, weighted, reduction):
    """The mean over an empty axis (NaN), with logits: what Keras gives."""
    sw = np.ones(shape[0]) if weighted and len(shape) == 2 else None
    z = np.zeros(shape)
    ours = fk.BinaryCrossentropy(from_logits=True, reduction=reduction)(z, z, sample_weight=sw)
    ref = keras.losses.BinaryCrossentropy(from_logits=True, reduction=reduction, dtype="float64")(z, z, sample_weight=sw)
    np.testing.assert_array_equal(ours, ref.numpy())


# ---------------------------------------------------------------------------
# dtype, label conversion, options


def test_dtype_follows_y_pred_or_the_dtype_argument():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(5, 3))
    t = rng.integers(0, 3, size=5)
    assert fk.SparseCategoricalCrossentropy(from_logits=True)(t, x).dtype == np.float64
    assert fk.SparseCategoricalCrossentropy(from_logits=True)(t, x.astype(np.float32)).dtype == np.float32
    loss, grad = fk.SparseCategoricalCrossentropy(from_logits=True).loss_and_grad(t, x.astype(np.float16))
    assert loss.dtype == grad.dtype == np.float16
    # dtype="float32" on float64 input is what Keras does by default (floatx)
    ours = fk.SparseCategoricalCrossentropy(from_logits=True, dtype="float32")
    loss, grad = ours.loss_and_grad(t, x)
    assert loss.dtype == grad.dtype == np.float32
    ref_loss, _ = keras_reference(keras.losses.SparseCategoricalCrossentropy(from_logits=True), t, x.astype(np.float32))
    assert_close(loss, ref_loss, np.float32)
    # integer predictions are converted as NumPy would
    assert fk.BinaryCrossentropy()(np.array([1, 0]), np.array([1, 0])).dtype == np.float64


def test_labels_as_floats_and_bad_labels():
    x = np.random.default_rng(10).normal(size=(4, 3))
    ours = fk.SparseCategoricalCrossentropy(from_logits=True)
    assert ours(np.array([0.0, 1.0, 2.0, 1.0]), x) == ours(np.array([0, 1, 2, 1]), x)
    with pytest.raises(ValueError, match="integral"):
        ours(np.array([0.5, 1.0, 2.0, 1.0]), x)
    with pytest.raises(ValueError, match=r"label 3 at position \(2,\)"):
        ours(np.array([0, 1, 3, 1]), x)
    with pytest.raises(ValueError, match="label -100"):
        ours(np.array([0, -100, 2, 1]), x)
    with pytest.raises(ValueError, match="ignore_class=0"):
        fk.SparseCategoricalCrossentropy(ignore_class=0)(np.array([0, 5, 2, 1]), np.abs(x))
    with pytest.raises(ValueError, match="y_true must have the shape"):
        ours(np.array([0, 1, 2]), x)


def test_shape_and_weight_errors():
    with pytest.raises(ValueError, match="same shape"):
        fk.BinaryCrossentropy()(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="same shape"):
        fk.CategoricalCrossentropy()(np.zeros((3, 2)), np.zeros((3, 4)))
    with pytest.raises(ValueError, match="sample_weight of shape"):
        fk.BinaryCrossentropy()(np.zeros((3, 2)), np.zeros((3, 2)), sample_weight=np.ones(4))
    with pytest.raises(ValueError, match="axis=2 is out of bounds"):
        fk.CategoricalCrossentropy(axis=2)(np.zeros((3, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="0-d"):
        fk.BinaryCrossentropy()(0.5, 0.5)
    with pytest.raises(TypeError, match="y_pred"):
        fk.BinaryCrossentropy()(np.zeros(2), np.array(["a", "b"]))


@pytest.mark.parametrize(
    "cls, kwargs, error, match",
    [
        (fk.BinaryCrossentropy, {"reduction": "avg"}, ValueError, "reduction"),
        (fk.BinaryCrossentropy, {"from_logits": 1}, TypeError, "from_logits"),
        (fk.BinaryCrossentropy, {"label_smoothing": 1.5}, ValueError, "label_smoothing"),
        (fk.CategoricalCrossentropy, {"label_smoothing": "0.1"}, TypeError, "label_smoothing"),
        (fk.CategoricalCrossentropy, {"axis": 1.0}, TypeError, "axis"),
        (fk.CategoricalCrossentropy, {"axis": True}, TypeError, "axis"),
        (fk.SparseCategoricalCrossentropy, {"ignore_class": 1.5}, TypeError, "ignore_class"),
        (fk.SparseCategoricalCrossentropy, {"dtype": "float16"}, ValueError, "dtype"),
        (fk.SparseCategoricalCrossentropy, {"dtype": "nonsense"}, TypeError, "dtype"),
        (fk.SparseCategoricalCrossentropy, {"name": 3}, TypeError, "name"),
        (fk.SparseCategoricalCrossentropy, {"n_threads": 0}, ValueError, "n_threads"),
    ],
)
def test_argument_validation(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**kwargs)


@pytest.mark.parametrize(
    "ours, theirs, kwargs",
    [
        (fk.BinaryCrossentropy, keras.losses.BinaryCrossentropy, {"from_logits": True, "label_smoothing": 0.2, "axis": 1}),
        (fk.CategoricalCrossentropy, keras.losses.CategoricalCrossentropy, {"label_smoothing": 0.1, "reduction": "sum"}),
        (fk.SparseCategoricalCrossentropy, keras.losses.SparseCategoricalCrossentropy, {"ignore_class": 0, "name": "x"}),
    ],
)
def test_config_round_trip_and_keras_configs(ours, theirs, kwargs):
    loss = ours(**kwargs, n_threads=1)
    config = loss.get_config()
    assert config["n_threads"] == 1 and config["dtype"] is None
    again = type(loss).from_config(config)
    assert again.get_config() == config
    assert repr(again) == repr(loss)
    # a Keras config builds the same loss
    keras_config = theirs(**kwargs).get_config()
    rebuilt = ours.from_config(keras_config).get_config()
    assert all(rebuilt[k] == v for k, v in keras_config.items())


def test_categorical_warns_for_one_class():
    with pytest.warns(UserWarning, match="num_classes > 1"):
        fk.CategoricalCrossentropy()(np.ones((3, 1)), np.ones((3, 1)))


def test_serial_equals_parallel():
    rng = np.random.default_rng(11)
    n = 20_000  # 60,000 elements: above the parallel threshold
    x = rng.normal(size=(n, 3)).astype(np.float32)
    p = rng.uniform(0, 1, size=(n, 3)).astype(np.float32)
    t = rng.integers(0, 3, size=n)
    onehot = np.eye(3, dtype=np.float32)[t]
    sw = rng.uniform(size=n)
    cases = [
        (fk.BinaryCrossentropy, dict(label_smoothing=0.1), onehot, p),
        (fk.CategoricalCrossentropy, dict(label_smoothing=0.1), onehot, p),
        (fk.SparseCategoricalCrossentropy, dict(ignore_class=1), t, p),
    ]
    for cls, kw, y_true, y_pred in cases:
        a = cls(**kw, n_threads=1).loss_and_grad(y_true, y_pred, sample_weight=sw)
        b = cls(**kw, n_threads=2).loss_and_grad(y_true, y_pred, sample_weight=sw)
        assert a[0] == b[0]
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize("from_logits", [False, True])
@pytest.mark.parametrize("cls", ["binary", "categorical", "sparse"])
def test_no_copy_of_the_data(cls, from_logits):
    """Beyond the gradient, only arrays of one value per sample are allocated."""
    import tracemalloc

    rng = np.random.default_rng(12)
    n, c = 4000, 16
    x = rng.uniform(0.1, 1, size=(n, c))
    labels = rng.integers(0, c, size=n)
    if cls == "sparse":
        loss, y_true = fk.SparseCategoricalCrossentropy(from_logits=from_logits, ignore_class=0, n_threads=1), labels
    else:
        y_true = np.eye(c)[labels]
        klass = fk.BinaryCrossentropy if cls == "binary" else fk.CategoricalCrossentropy
        loss = klass(from_logits=from_logits, label_smoothing=0.1, n_threads=1)
    sw = rng.uniform(size=n)
    loss.loss_and_grad(y_true, x, sample_weight=sw)  # compile outside the measurement
    tracemalloc.start()
    try:
        loss.loss_and_grad(y_true, x, sample_weight=sw)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < x.nbytes + 100 * n  # the gradient + a few row-sized arrays
