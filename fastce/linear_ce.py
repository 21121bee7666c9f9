r"""Cross-entropy of a linear layer without the logits: :func:`linear_cross_entropy`.

``linear_cross_entropy(X, W, target, bias)`` is
``cross_entropy(X @ W.T + bias, target)`` for ``X`` of shape (N, D) and
``W`` of shape (K, D), computed without ever holding the N x K logits.

Algorithm
---------
The rows of ``X`` are taken in blocks of ``R`` rows and the classes in blocks
of ``Kb`` classes. For each row block:

1. For each class block, BLAS computes the logits block
   ``Z = X[rows] @ W[classes].T`` into one preallocated ``R x Kb`` buffer and
   a Numba kernel adds the bias and updates, per row, an online
   log-sum-exp in float64 (running maximum ``M``, sum of ``exp(z - M)``
   below it, count of terms at it), the target's logit and the label
   smoothing sums. A short kernel then gives each row's loss.
2. With ``return_grad``, for each class block the logits are recomputed by
   BLAS, turned in place into the block ``G`` of the gradient with respect
   to the logits (softmax minus the smoothed, weighted target, times the
   reduction's scale), and BLAS accumulates ``grad_X[rows] += G @ W[classes]``
   and ``grad_W[classes] += G.T @ X[rows]`` (``gemm`` with ``beta = 1`` into
   the outputs, no temporary); the bias gradient gets ``G``'s column sums in
   float64.

When all K classes fit in the buffer with at least ``_MIN_ROWS`` rows
(``Kb = K``), step 1 leaves ``exp(z - M)`` in the buffer and step 2 does not
recompute the logits: three GEMMs of ``2 N K D`` flops each, as the unfused
computation. Otherwise (huge K) the logits are computed twice: four GEMMs.

Memory
------
Besides the outputs (``grad_X`` and ``grad_W`` of the shapes of ``X`` and
``W``, ``grad_bias``), one buffer of at most ``buffer_bytes`` (by default
32 MiB, up to 128 MiB for K above 65,536 in float32) and a few float64
vectors of length N or K: O(N + K + block), not O(N K).
The block sizes depend on the shape only, never on the thread count; each
row's loss is computed by one thread and the losses are summed in a fixed
order, so results do not depend on the number of threads beyond the
rounding of the BLAS products. BLAS is limited to the same thread count as
the Numba kernels for the duration of the call (``threadpoolctl``).
"""

import numpy as np

from . import _lce_kernels as LK
from ._config import blas_limit, resolve_n_threads, run_kernel
from .dask import _is_dask_collection
from ._validation import (
    as_real_array,
    check_flag,
    check_index,
    check_label_smoothing,
    check_probability_target,
    check_reduction,
    class_index_target,
    loss_input,
    row_weights,
)

__all__ = ["linear_cross_entropy"]

# The logits buffer by default (buffer_bytes=None): 32 MiB, or the
# _MIN_ROWS rows of all K classes when they need more, up to 128 MiB.
# Measured at N=8192, D=1024, K=50,000 float32, 2 threads, loss and both
# gradients (benchmarks/compare_linear_ce.py): 32 MiB 12.9 s and a peak of
# 0.092 of the unfused computation's, 64 MiB 11.2 s, 128 MiB 10.9 s and
# 0.132; the unfused computation 12.4 s, PyTorch's chunked path 13.6 s.
_BUFFER_BYTES = 32 << 20
_BUFFER_BYTES_MAX = 128 << 20
# At least this many rows per block when all classes fit in the buffer (the
# GEMMs on fewer rows lose too much speed: 125 rows 14.5 s, 64 rows 17.3 s in
# the setting above); otherwise this many rows per block and the classes
# split in blocks (four GEMMs instead of three: 15.2 s).
_MIN_ROWS = 128
_SPLIT_ROWS = 1024


def _default_buffer_bytes(k, itemsize):
    return min(max(_BUFFER_BYTES, _MIN_ROWS * k * itemsize), _BUFFER_BYTES_MAX)


def _plan(n, k, itemsize, buffer_bytes=None):
    """Rows and classes per block, from the shape (and the buffer size) only."""
    if buffer_bytes is None:
        buffer_bytes = _default_buffer_bytes(k, itemsize)
    budget = max(1, buffer_bytes // itemsize)
    if k * _MIN_ROWS <= budget:
        return max(1, min(n, budget // k)), k
    rows = max(1, min(n, _SPLIT_ROWS))
    return rows, max(1, min(k, budget // rows))


def _gemm(a, b, c, gemm, beta):
    """``c = a @ b + beta * c`` in place, by SciPy's BLAS ``gemm``.

    Every product of :func:`linear_cross_entropy` goes through this one BLAS
    library. NumPy and SciPy each bundle their own OpenBLAS; alternating
    between them (``np.matmul`` for the logits, SciPy's ``gemm`` for the
    accumulation) left each library's idle threads spinning on the cores the
    other one needed: measured at 167-row blocks of N=8192, D=1024,
    K=50,000 float32, 2 threads, 326-369 ms per block against 243 ms with
    SciPy's alone (``beta = 1`` is only available there).

    ``c`` is C-contiguous; Fortran BLAS sees it as ``c.T``, so this computes
    ``c.T = b.T @ a.T + beta * c.T``, passing each operand's memory as it is
    (a Fortran-ordered view, or the array itself with the ``trans`` flag).
    With ``beta = 0`` BLAS does not read ``c``.
    """

    def fortran(m):
        # (Fortran-ordered array, trans flag) such that op(array) == m.T
        if m.flags.f_contiguous:
            return m, 1
        return np.ascontiguousarray(m).T, 0

    if a.shape[1] == 0:  # D = 0: BLAS rejects an empty inner dimension
        if beta == 0.0:
            c[...] = 0
        return
    bb, tb = fortran(b)
    aa, ta = fortran(a)
    out = gemm(1.0, bb, aa, beta=beta, c=c.T, trans_a=tb, trans_b=ta, overwrite_c=1)
    if not np.shares_memory(out, c):  # pragma: no cover - scipy always writes an F-contiguous c in place
        c[...] = out.T


def _check_buffer_bytes(buffer_bytes):
    if buffer_bytes is None:
        return None
    if isinstance(buffer_bytes, bool) or not isinstance(buffer_bytes, (int, np.integer)) or buffer_bytes < 1:
        raise ValueError(f"buffer_bytes must be a positive int (bytes) or None, got {buffer_bytes!r}")
    return int(buffer_bytes)


def linear_cross_entropy(
    X,
    W,
    target,
    bias=None,
    weight=None,
    ignore_index=-100,
    reduction="mean",
    label_smoothing=0.0,
    *,
    sample_weight=None,
    return_grad=False,
    n_threads=None,
    buffer_bytes=None,
    _blocks=None,
    _grad_X=True,
    _partial=False,
):
    r"""Cross-entropy of the logits ``X @ W.T + bias`` without materialising them.

    The loss of :func:`fastce.cross_entropy` (PyTorch's
    :func:`torch.nn.functional.cross_entropy`) on ``X @ W.T + bias``, as
    :func:`torch.nn.functional.linear_cross_entropy`, computed by blocks of
    rows and classes with an online log-sum-exp: the memory used besides the
    inputs and the gradients is a buffer of at most `buffer_bytes` (32 MiB by
    default), not the N x K logits. The matrix products go through BLAS.

    Parameters
    ----------
    X : array_like of shape (N, D) or (D,)
        Inputs of the linear layer, floating point (float16 is computed in
        float32). A 1-D `X` is one sample. Dask arrays (for any argument)
        give lazy Dask results: see :func:`fastce.dask.linear_cross_entropy`.
    W : array_like of shape (K, D)
        Weight of the linear layer (one row per class), floating point.
    target : array_like
        Class indices, integers of shape ``(N,)`` (``()`` for 1-D `X`) in
        ``[0, K)`` or equal to `ignore_index`; or class probabilities,
        floating, of shape ``(N, K)`` (``(K,)`` for 1-D `X`).
    bias : array_like of shape (K,), default=None
        Bias of the linear layer.
    weight : array_like of shape (K,), default=None
        Weight of each class.
    ignore_index : int, default=-100
        Class-index targets equal to it add nothing to the loss, the
        gradients or the denominator of the mean. Must stay negative with
        probability targets.
    reduction : {"mean", "sum", "none"}, default="mean"
        ``"mean"`` divides the summed loss by the summed weight of the
        non-ignored targets (by the number of rows for probability targets).
    label_smoothing : float in [0, 1], default=0.0
        Mixes the target with the uniform distribution over the K classes.
    sample_weight : array_like of shape (N,), default=None
        Not in PyTorch: a weight per row, as in :func:`fastce.cross_entropy`
        (``"mean"`` divides by ``sum(s_i * weight[target_i])``).
    return_grad : bool, default=False
        Also return the gradients of the returned loss (for ``"none"``, of
        the sum of the returned losses) with respect to `X`, `W` and `bias`.
    n_threads : int, default=None
        Threads of the Numba kernels and of BLAS (see :mod:`fastce.losses`).
    buffer_bytes : int, default=None
        Not in PyTorch: the size of the logits buffer, the memory used
        besides the inputs and the gradients. None: 32 MiB, or enough for
        128 rows of all K classes when that is more, up to 128 MiB
        (``K`` up to 262,144 in float32). Smaller saves memory, larger lets
        BLAS run on larger blocks (at N=8192, D=1024, K=50,000 float32:
        32 MiB 12.9 s, 128 MiB 10.9 s); the results do not depend on it
        beyond the rounding of the BLAS products.

    Returns
    -------
    loss : scalar or ndarray
        A NumPy scalar for ``"mean"`` and ``"sum"``, an array of shape
        ``(N,)`` (``()`` for 1-D `X`) for ``"none"``; in the dtype of
        ``X @ W.T``.
    grad_X, grad_W : ndarray
        Only with `return_grad`: gradients, of the shapes of `X` and `W`.
    grad_bias : ndarray or None
        Only with `return_grad`: gradient with respect to `bias`, None when
        `bias` is None.

    See Also
    --------
    fastce.cross_entropy : The loss on given logits.
    torch.nn.functional.linear_cross_entropy : PyTorch's version.

    Notes
    -----
    With :math:`z_i = W x_i + b` and :math:`G` the gradient of the loss with
    respect to the logits (see :func:`fastce.cross_entropy`), the gradients
    are :math:`G W`, :math:`G^T X` and :math:`\sum_i G_i`. The logits of a
    block are computed in the dtype of the inputs (float32 GEMMs for float32
    input), every sum of the loss in float64. See
    :doc:`/linear_cross_entropy` for the algorithm and the measured time and
    memory against PyTorch.

    Examples
    --------
    >>> import numpy as np
    >>> from fastce import cross_entropy, linear_cross_entropy
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((6, 4))
    >>> W = rng.standard_normal((5, 4))
    >>> b = rng.standard_normal(5)
    >>> y = np.array([0, 4, 2, 1, 3, 4])
    >>> loss = linear_cross_entropy(X, W, y, b)
    >>> bool(np.isclose(loss, cross_entropy(X @ W.T + b, y)))
    True
    >>> loss, gX, gW, gb = linear_cross_entropy(X, W, y, b, return_grad=True)
    >>> gX.shape, gW.shape, gb.shape
    ((6, 4), (5, 4), (5,))
    >>> _, G = cross_entropy(X @ W.T + b, y, return_grad=True)
    >>> bool(np.allclose(gW, G.T @ X) and np.allclose(gX, G @ W))
    True
    """
    if _is_dask_collection(X, W, target, bias, weight, sample_weight):
        from . import dask

        return dask.linear_cross_entropy(
            X, W, target, bias, weight, ignore_index, reduction, label_smoothing,
            sample_weight=sample_weight, return_grad=return_grad, n_threads=n_threads, buffer_bytes=buffer_bytes,
        )  # fmt: skip
    reduction = check_reduction(reduction)
    eps = check_label_smoothing(label_smoothing)
    ignore_index = check_index(ignore_index, "ignore_index")
    return_grad = check_flag(return_grad, "return_grad")
    x, x_out = loss_input(X, "X")
    w_lin, w_out = loss_input(W, "W")
    if x.ndim not in (1, 2):
        raise ValueError(f"X must have shape (N, D) or (D,), got shape {x.shape}")
    if w_lin.ndim != 2:
        raise ValueError(f"W must have shape (K, D), got shape {w_lin.shape}")
    single = x.ndim == 1
    x2 = x.reshape(1, -1) if single else x
    n, d = x2.shape
    k = w_lin.shape[0]
    if w_lin.shape[1] != d:
        raise ValueError(f"W must have shape (K, {d}) for X of shape {x.shape} (same number of features), got {w_lin.shape}")
    if k == 0:
        raise ValueError("W must have at least one row (one class), got shape (0, D)")
    dtype = np.result_type(x2.dtype, w_lin.dtype)
    out_dtype = np.result_type(x_out, w_out)
    x2 = np.ascontiguousarray(x2, dtype=dtype)
    w_lin = np.ascontiguousarray(w_lin, dtype=dtype)
    has_bias = bias is not None
    if has_bias:
        b = as_real_array(bias, "bias")
        if b.shape != (k,):
            raise ValueError(f"bias must have shape ({k},) (one per class, the rows of W), got {b.shape}")
        b = np.ascontiguousarray(b, dtype=dtype)
    else:
        b = np.zeros(0, dtype=dtype)
    if weight is None:
        cw = np.ones(k)
    else:
        cw = as_real_array(weight, "weight")
        if cw.shape != (k,):
            raise ValueError(f"weight must have shape ({k},) (one weight per class), got {cw.shape}")
        cw = np.ascontiguousarray(cw, dtype=np.float64)
    row_shape = () if single else (n,)
    sw, sw_step = row_weights(sample_weight, row_shape)

    tgt = as_real_array(target, "target")
    prob_shape = (k,) if single else (n, k)
    prob = tgt.shape == prob_shape and tgt.dtype.kind == "f"
    if prob:
        check_probability_target(tgt, prob_shape, ignore_index)
        tp = np.ascontiguousarray(tgt, dtype=dtype).reshape(n, k)
        t = np.zeros(1, dtype=np.intp)
        denominator = n if sample_weight is None else float(sw.sum())
    else:
        from .losses import _index_target_stats

        t, _, denominator = class_index_target(
            tgt, row_shape, prob_shape, "X", x.shape, k, ignore_index,
            lambda t: _index_target_stats(t, ignore_index, k, cw, sw, sw_step, n_threads),
        )  # fmt: skip
        tp = np.zeros((1, 1), dtype=dtype)
    if reduction == "mean":
        with np.errstate(divide="ignore", invalid="ignore"):
            scale = float(np.float64(1.0) / np.float64(denominator))
    else:
        scale = 1.0
    wsum = float(cw.sum())
    keep, spread = 1.0 - eps, eps / k
    need_smooth = eps > 0.0

    buffer_bytes = _check_buffer_bytes(buffer_bytes)
    if _blocks is None:
        rows, kb = _plan(n, k, dtype.itemsize, buffer_bytes)
    else:  # for the tests: force a block layout (rows, classes)
        rows, kb = (max(1, min(n, int(_blocks[0]))), max(1, min(k, int(_blocks[1]))))
    store = kb == k
    n_threads = resolve_n_threads(n_threads)
    from scipy.linalg import blas

    gemm = blas.get_blas_funcs("gemm", dtype=dtype)

    losses = np.zeros(n)
    buf = np.empty(min(n, rows) * kb, dtype=dtype)
    M = np.empty(rows, dtype=dtype)
    S, C, P1, P2, A, B = (np.empty(rows) for _ in range(6))
    if return_grad:
        # (_grad_X=False, for fastce._linear_loss: grad_X is not computed, None is returned)
        gX = np.zeros((n, d) if _grad_X else (0, d), dtype=dtype)
        gW = np.zeros((k, d), dtype=dtype)
        gb = np.zeros(k)
    common = (t, ignore_index, tp, prob, cw)

    with blas_limit(n_threads):
        for r0 in range(0, n, rows):
            r1 = min(n, r0 + rows)
            nr = r1 - r0
            Xr = x2[r0:r1]
            M[:nr] = -np.inf
            for a in (S, C, P1, P2):
                a[:nr] = 0.0
            for k0 in range(0, k, kb):
                k1 = min(k, k0 + kb)
                Z = buf[: nr * (k1 - k0)].reshape(nr, k1 - k0)
                _gemm(Xr, w_lin[k0:k1].T, Z, gemm, 0.0)
                run_kernel(
                    LK.lce_pass1_par, LK.lce_pass1_ser, n_threads, Z.size,
                    Z, r0, k0, b, has_bias, *common, keep, spread, need_smooth, store,
                    M[:nr], S[:nr], C[:nr], P1[:nr], P2[:nr],
                )  # fmt: skip
            LK.lce_finish(
                r0, t, ignore_index, prob, sw, sw_step, cw, wsum, eps, k, scale,
                M[:nr], S[:nr], C[:nr], P1[:nr], P2[:nr], losses, A[:nr], B[:nr],
            )  # fmt: skip
            if not return_grad:
                continue
            for k0 in range(0, k, kb):
                k1 = min(k, k0 + kb)
                Z = buf[: nr * (k1 - k0)].reshape(nr, k1 - k0)
                if not store:
                    _gemm(Xr, w_lin[k0:k1].T, Z, gemm, 0.0)
                run_kernel(
                    LK.lce_pass2_par, LK.lce_pass2_ser, n_threads, Z.size,
                    Z, r0, k0, b, has_bias, *common, wsum, keep, spread, eps, k, store, scale, sw, sw_step,
                    M[:nr], S[:nr], A[:nr], B[:nr], P1[:nr],
                )  # fmt: skip
                if d and _grad_X:
                    _gemm(Z, w_lin[k0:k1], gX[r0:r1], gemm, 0.0 if k0 == 0 else 1.0)
                if d:
                    _gemm(Z.T, Xr, gW[k0:k1], gemm, 0.0 if r0 == 0 else 1.0)
                if has_bias:
                    run_kernel(LK.col_sums_par, LK.col_sums_ser, n_threads, Z.size, Z, gb[k0:k1])

    if _partial:
        # For fastce.dask (one chunk of rows, reduction "sum" or "none"): the
        # float64 losses or their sum, the chunk's share of the mean's
        # denominator, the gradients in the compute dtype (grad_bias float64).
        loss = losses.reshape(row_shape) if reduction == "none" else float(np.sum(losses))
        if not return_grad:
            return loss, float(denominator), None, None, None
        return loss, float(denominator), gX.reshape(x.shape), gW, (gb if has_bias else None)
    if reduction == "none":
        loss = losses.astype(out_dtype).reshape(row_shape)
    else:
        total = float(np.sum(losses))
        if reduction == "sum":
            loss = out_dtype.type(total)
        else:
            with np.errstate(divide="ignore", invalid="ignore"):
                loss = out_dtype.type(np.float64(total) / np.float64(denominator))
    if not return_grad:
        return loss
    gX = gX.reshape(x.shape).astype(out_dtype, copy=False) if _grad_X else None
    gW = gW.astype(out_dtype, copy=False)
    grad_bias = gb.astype(out_dtype) if has_bias else None
    return loss, gX, gW, grad_bias
