"""Cross-entropy of a linear layer, loss + gradients with respect to X and W:
fastce.linear_cross_entropy (fused, blocks of logits) against the unfused
computation (X @ W.T, fastce.cross_entropy, two products) and PyTorch's
linear_cross_entropy (reference path and chunked path).

At modest sizes so that ``asv run --quick`` stays cheap; the issue's size
(8192 x 1024, 50,000 classes) is run by ``benchmarks/compare_linear_ce.py``.
"""

import numpy as np

from . import common

if common.SMALL:
    LCE_SHAPES = [(256, 64, 1_000)]
else:
    LCE_SHAPES = [(2_048, 256, 10_000), (512, 128, 50_000)]
LCE_PEERS = ["fastce", "fastce-unfused", "torch", "torch-chunked"]


def _require(peer):
    common.require_peer("torch" if peer.startswith("torch") else "fastce")
    if peer == "fastce":
        try:
            from fastce.linear_ce import linear_cross_entropy  # noqa: F401
        except ImportError as exc:
            common.skip(f"this fastce has no linear_cross_entropy: {exc}")
    if peer == "torch-chunked":
        import torch

        if not hasattr(torch.nn, "LinearCrossEntropyOptions"):
            common.skip("this PyTorch has no LinearCrossEntropyOptions")


def _inputs(shape):
    n, d, k = shape
    rng = np.random.default_rng(0)
    X = rng.standard_normal((n, d), dtype=np.float32)
    W = rng.standard_normal((k, d), dtype=np.float32)
    W *= np.float32(1.0 / np.sqrt(d))
    return X, W, rng.integers(0, k, size=n).astype(np.intp)


def _callable(peer, X, W, y, threads):
    """Zero-argument callable: mean loss and the gradients of X and W."""
    if peer == "fastce":
        from fastce.linear_ce import linear_cross_entropy

        return lambda: linear_cross_entropy(X, W, y, return_grad=True, n_threads=threads)
    if peer == "fastce-unfused":
        import fastce

        def unfused():
            loss, G = fastce.cross_entropy(X @ W.T, y, return_grad=True, n_threads=threads)
            return loss, G @ W, G.T @ X

        return unfused
    import torch
    import torch.nn.functional as F

    tX = torch.from_numpy(X).requires_grad_(True)
    tW = torch.from_numpy(W).requires_grad_(True)
    ty = torch.from_numpy(y)
    options = torch.nn.LinearCrossEntropyOptions() if peer == "torch-chunked" else None

    def fwd_bwd():
        tX.grad = None
        tW.grad = None
        loss = F.linear_cross_entropy(tX, tW, ty, options=options)
        loss.backward()
        return loss.item()

    return fwd_bwd


class _LinearCE:
    timeout = 300

    def _setup(self, shape, threads, peer):
        _require(peer)
        common.require_threads(threads)
        self.previous_torch_threads = common.set_torch_threads(threads) if peer.startswith("torch") else None
        self.X, self.W, self.y = _inputs(shape)
        self.fn = _callable(peer, self.X, self.W, self.y, threads)
        self.fn()  # compile (or load from Numba's cache) outside the timing

    def teardown(self, *params):
        if getattr(self, "previous_torch_threads", None) is not None:
            common.set_torch_threads(self.previous_torch_threads)
        for name in ("X", "W", "y", "fn"):
            self.__dict__.pop(name, None)


class LinearCrossEntropy(_LinearCE):
    """linear_cross_entropy(X (N, D), W (K, D), y (N,)), float32, mean, loss and both gradients."""

    params = [LCE_SHAPES, common.THREADS, LCE_PEERS]
    param_names = ["shape", "threads", "peer"]

    def setup(self, shape, threads, peer):
        self._setup(shape, threads, peer)

    def time_loss_grad(self, shape, threads, peer):
        self.fn()


class PeakMemLinearCrossEntropy(_LinearCE):
    """Peak RSS of the process (inputs made in setup included, the same for every peer of a shape)."""

    params = [LCE_SHAPES, LCE_PEERS]
    param_names = ["shape", "peer"]

    def setup(self, shape, peer):
        self._setup(shape, 1, peer)

    def peakmem_loss_grad(self, shape, peer):
        self.fn()
