"""grad_out=: the gradient written into a caller's buffer equals the allocated one."""

import numpy as np
import pytest

import fastce

RNG = np.random.default_rng(11)
X = RNG.normal(size=(300, 7))
T = RNG.integers(0, 7, size=300)
P = RNG.uniform(0.01, 0.99, size=(300, 7))
Y = (RNG.uniform(size=(300, 7)) < 0.5).astype(float)

CALLS = {
    "cross_entropy": lambda x, **kw: fastce.cross_entropy(x, T, label_smoothing=0.1, **kw),
    "bce": lambda x, **kw: fastce.binary_cross_entropy(np.clip(np.abs(x) / 4, 0, 1), Y, **kw),
    "bce_logits": lambda x, **kw: fastce.binary_cross_entropy_with_logits(x, Y, pos_weight=np.arange(1, 8), **kw),
}


@pytest.mark.parametrize("name", CALLS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_grad_out_equals_fresh_gradient(name, dtype):
    x = X.astype(dtype)
    loss, grad = CALLS[name](x, return_grad=True)
    buf = np.full(x.shape, np.nan, dtype=dtype)
    loss2, grad2 = CALLS[name](x, return_grad=True, grad_out=buf)
    assert grad2 is buf
    assert loss2 == loss
    np.testing.assert_array_equal(buf, grad)


@pytest.mark.parametrize("name", CALLS)
def test_grad_out_checked(name):
    x = X.copy()
    with pytest.raises(ValueError, match="grad_out"):
        CALLS[name](x, return_grad=True, grad_out=np.empty((3, 3)))
    with pytest.raises(ValueError, match="grad_out"):
        CALLS[name](x, return_grad=True, grad_out=np.empty(x.shape, dtype=np.float32))
    with pytest.raises(ValueError, match="grad_out"):
        CALLS[name](x, return_grad=True, grad_out=np.empty((7, 300)).T)
    with pytest.raises(ValueError, match="grad_out"):
        CALLS[name](x, return_grad=False, grad_out=np.empty(x.shape))
    with pytest.raises(TypeError, match="grad_out"):
        CALLS[name](x, return_grad=True, grad_out=[0.0])


def test_grad_out_must_not_overlap_input():
    x = X.copy()
    before = x.copy()
    with pytest.raises(ValueError, match="overlap"):
        fastce.cross_entropy(x, T, return_grad=True, grad_out=x)
    np.testing.assert_array_equal(x, before)
