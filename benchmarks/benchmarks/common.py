"""Data, peers and thread settings shared by the asv suites.

Kept self-contained (no import of ``fastce._bench``) so that the suites also
run against older commits of fastce. Nothing heavy is imported at module
level: asv imports every benchmark module in its forkserver before forking
one process per benchmark and parameter combination, and neither Numba's
OpenMP pool nor PyTorch should be started before that fork.
"""

import math
import os

import numpy as np

DTYPES = {"float32": np.float32, "float64": np.float64}

# FASTCE_ASV_SMALL=1 runs every benchmark and every peer at shapes about
# 100 times smaller, with fewer parameter combinations (one thread count,
# one cross-entropy shape per kernel layout: tiles and rows), so that the
# whole suite runs in a few minutes. The test suite runs
# ``asv run --python=same --quick`` that way (tests/test_asv.py) so that a
# broken benchmark fails CI; results at these sizes are not for tracking.
# asv starts a process per parameter combination (about 2 s each with the
# imports): the full grid took tests/test_asv.py 8 minutes.
SMALL = os.environ.get("FASTCE_ASV_SMALL", "") not in ("", "0")

# The shapes tracked by issue 4, and for cross_entropy 100 classes as well
# (rows that go through tiles since 39b3b2f; they ran largely scalar before).
if SMALL:
    CE_SHAPES = [(10_000, 10), (1_000, 1_000)]
    PEAKMEM_CE_SHAPES = CE_SHAPES
    BCE_SIZES = [100_000]
    PRIMITIVE_SHAPES = [(10_000, 10), (1_000, 1_000)]
    THREADS = [1]  # scipy.special's benchmarks run on one thread only
    CLASS_COUNT_ELEMENTS = 1 << 16
else:
    CE_SHAPES = [(1_000_000, 10), (200_000, 100), (100_000, 1_000), (4_096, 50_000)]
    PEAKMEM_CE_SHAPES = [(1_000_000, 10), (100_000, 1_000)]
    BCE_SIZES = [10_000_000]
    PRIMITIVE_SHAPES = [(1_000_000, 10), (100_000, 1_000)]
    THREADS = [1, 2]
    CLASS_COUNT_ELEMENTS = 1 << 22
# cross_entropy by class count: each side of the limits of the tile kernels
# (the generated kernels up to 13-14 classes, the square-block transposes
# from 5 classes, the transposes up to 16 float64 / 32 float32 classes,
# tiles up to 512-byte rows)
CLASS_COUNTS = [3, 10, 14, 16, 32, 64, 200]
LOSS_PEERS = ["fastce", "torch", "sklearn"]
PRIMITIVE_PEERS = ["fastce", "torch", "scipy"]


def skip(reason):
    """asv skips a parameter combination whose setup raises NotImplementedError."""
    raise NotImplementedError(reason)


def require_peer(peer):
    """Import what ``peer`` needs, or skip."""
    try:
        if peer == "fastce":
            import fastce  # noqa: F401
        elif peer == "torch":
            import torch  # noqa: F401
            import torch.nn.functional  # noqa: F401
        elif peer == "sklearn":
            from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss  # noqa: F401
        elif peer == "scipy":
            import scipy.special  # noqa: F401
        else:
            skip(f"unknown peer {peer}")
    except ImportError as exc:
        skip(f"{peer} is not installed: {exc}")


def require_threads(threads):
    import numba

    if threads > numba.config.NUMBA_NUM_THREADS:
        skip(f"{threads} threads asked, this machine has {numba.config.NUMBA_NUM_THREADS}")


def set_numba_threads(threads):
    """Numba's thread count for the primitives (which have no n_threads argument).

    fastce chooses the threading layer first (before the pool is launched),
    where the installed version has that hook.
    """
    import numba

    try:
        from fastce._config import ensure_threading_layer
    except ImportError:
        pass
    else:
        ensure_threading_layer()
    previous = numba.get_num_threads()
    numba.set_num_threads(threads)
    return previous


def set_torch_threads(threads):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    return previous


def logits(shape, dtype, seed=0, scale=1.0):
    """Standard normal logits drawn in float32 (both dtypes see the same values, no float64 temporary)."""
    x = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    if scale != 1.0:
        x *= np.float32(scale)
    return x if DTYPES[dtype] is np.float32 else x.astype(DTYPES[dtype])


def class_targets(n_rows, n_classes, seed=1):
    return np.random.default_rng(seed).integers(0, n_classes, size=n_rows).astype(np.intp)


def binary_targets(n, dtype, seed=1):
    return np.random.default_rng(seed).integers(0, 2, size=n).astype(DTYPES[dtype])


def loss_grad_callable(kernel, peer, x, target, threads):
    """A zero-argument callable computing loss and gradient; returns the mean loss as a float.

    ``kernel`` is "cross_entropy" (integer targets) or
    "binary_cross_entropy_with_logits" (targets like ``x``).
    """
    if peer == "fastce":
        import fastce

        fn = getattr(fastce, kernel)
        return lambda: float(fn(x, target, return_grad=True, n_threads=threads)[0])
    if peer == "torch":
        import torch
        import torch.nn.functional as F

        leaf = torch.from_numpy(x).requires_grad_(True)
        tt = torch.from_numpy(target)
        loss_fn = getattr(F, kernel)

        def fwd_bwd():
            leaf.grad = None
            loss = loss_fn(leaf, tt)
            loss.backward()
            return loss.item()

        return fwd_bwd
    if peer == "sklearn":
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss

        if kernel == "cross_entropy":
            loss_obj, y = HalfMultinomialLoss(n_classes=x.shape[1]), target.astype(x.dtype)
        else:
            loss_obj, y = HalfBinomialLoss(), target
        return lambda: float(loss_obj.loss_gradient(y, x, n_threads=threads)[0].mean())
    skip(f"{peer} has no {kernel}")


def primitive_callable(kernel, peer, x):
    """A zero-argument callable computing ``kernel`` (logsumexp, softmax, log_softmax) along the last axis."""
    if peer == "fastce":
        import fastce

        fn = getattr(fastce, kernel)
        return lambda: fn(x, axis=-1)
    if peer == "torch":
        import torch

        op = {"logsumexp": torch.logsumexp, "softmax": torch.softmax, "log_softmax": torch.log_softmax}[kernel]
        xt = torch.from_numpy(x)

        def call():
            with torch.no_grad():
                return op(xt, -1)

        return call
    if peer == "scipy":
        import scipy.special

        fn = getattr(scipy.special, kernel)
        return lambda: fn(x, axis=-1)
    skip(f"{peer} has no {kernel}")


def reference_mean_loss(kernel, x, target, chunk_elements=1 << 22):
    """Mean loss in float64 NumPy on the values of ``x``, through the rows in chunks."""
    rows = x.shape[0]
    step = max(1, chunk_elements // max(1, math.prod(x.shape[1:])))
    parts = []
    for i in range(0, rows, step):
        x64 = x[i : i + step].astype(np.float64)
        if kernel == "cross_entropy":
            t = target[i : i + step]
            m = x64.max(axis=1)
            lse = m + np.log(np.exp(x64 - m[:, None]).sum(axis=1))
            parts.append((lse - x64[np.arange(len(t)), t]).sum())
        else:
            y = target[i : i + step].astype(np.float64)
            parts.append((np.maximum(x64, 0.0) - x64 * y + np.log1p(np.exp(-np.abs(x64)))).sum())
    return math.fsum(parts) / rows
