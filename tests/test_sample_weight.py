"""cross_entropy's sample_weight (not in PyTorch): checked against PyTorch's
per-row losses, weighted and normalised by hand, and their autograd gradient."""

import numpy as np
import pytest

import fastce

torch = pytest.importorskip("torch")
F = torch.nn.functional


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("with_weight", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_index_targets(reduction, smoothing, with_weight, dtype):
    rng = np.random.default_rng(7)
    x = rng.normal(size=(40, 5, 3)).astype(dtype)
    t = rng.integers(0, 5, size=(40, 3))
    t[::7, 0] = -100
    s = rng.uniform(0, 2, size=(40, 3))
    w = rng.uniform(0.5, 2, size=5) if with_weight else None
    xt = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    wt = None if w is None else torch.tensor(w)
    rows = F.cross_entropy(xt, torch.tensor(t), weight=wt, reduction="none", label_smoothing=smoothing)
    st = torch.tensor(s)
    weighted = rows * st
    if reduction == "none":
        ref = weighted
        weighted.sum().backward()
    else:
        valid = torch.tensor(t != -100)
        cls_w = torch.ones(5, dtype=torch.float64) if wt is None else wt
        denom = (st * cls_w[torch.tensor(np.where(t == -100, 0, t))] * valid).sum()
        ref = weighted.sum() / denom if reduction == "mean" else weighted.sum()
        ref.backward()
    loss, grad = fastce.cross_entropy(
        x, t, w, reduction=reduction, label_smoothing=smoothing, sample_weight=s, return_grad=True
    )
    rtol = 1e-12 if dtype == np.float64 else 2e-5
    np.testing.assert_allclose(np.asarray(loss, dtype=np.float64), ref.detach().numpy(), rtol=rtol, atol=rtol * 1e-2)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=rtol, atol=rtol * 1e-2)
    assert grad.dtype == dtype


def test_probability_targets_mean_divides_by_sum_of_sample_weights():
    rng = np.random.default_rng(8)
    x = rng.normal(size=(30, 4))
    q = rng.dirichlet(np.ones(4), size=30)
    s = rng.uniform(0, 3, size=30)
    xt = torch.tensor(x, requires_grad=True)
    rows = F.cross_entropy(xt, torch.tensor(q), reduction="none")
    ref = (rows * torch.tensor(s)).sum() / s.sum()
    ref.backward()
    loss, grad = fastce.cross_entropy(x, q, sample_weight=s, return_grad=True)
    np.testing.assert_allclose(loss, ref.item(), rtol=1e-13)
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_unit_sample_weight_changes_nothing():
    rng = np.random.default_rng(9)
    x = rng.normal(size=(25, 6))
    t = rng.integers(0, 6, size=25)
    a = fastce.cross_entropy(x, t, label_smoothing=0.1, return_grad=True)
    b = fastce.cross_entropy(x, t, label_smoothing=0.1, sample_weight=np.ones(25), return_grad=True)
    assert a[0] == b[0]
    np.testing.assert_array_equal(a[1], b[1])


def test_sample_weight_shape_checked():
    with pytest.raises(ValueError, match="sample_weight"):
        fastce.cross_entropy(np.zeros((4, 3)), np.zeros(4, dtype=int), sample_weight=np.ones(5))
    with pytest.raises(TypeError, match="sample_weight"):
        fastce.cross_entropy(np.zeros((4, 3)), np.zeros(4, dtype=int), sample_weight=np.array(list("abcd")))
