r"""From coefficients to per-sample losses: the objective of logistic regression,
its gradient and its Hessian-vector product, on fused kernels.

The objective is scikit-learn's (``sklearn.linear_model._linear_loss``): with
sample weights :math:`s_i` (class weights folded in), :math:`S = \sum_i s_i`,
:math:`\lambda = 1 / (C S)` and the intercept :math:`b` not penalised,

.. math::
    f(W, b) = \frac{1}{S} \sum_i s_i\, \ell(y_i, W x_i + b)
              + \frac{\lambda}{2} \lVert W \rVert_F^2,

where :math:`\ell` is the cross-entropy of the softmax (``n_classes >= 3``,
:math:`W` of shape ``(n_classes, n_features)``) or the binary cross-entropy
on the logit (two classes, :math:`W` of shape ``(n_features,)``).

The flat parameter vector (float64, the optimiser's precision) is
scikit-learn's ``[coef_ | intercept_]`` raveled in C order: shape
``(n_classes, n_features + fit_intercept)`` for the multinomial model,
``(n_features + fit_intercept,)`` for the binomial model.

Ways to evaluate, the same numbers up to rounding:

single pass (dense ``X``, the default there)
    The kernels of :mod:`fastce._linear_kernels` read each row of ``X`` once
    per evaluation: the logits ``W x_i + b``, the loss and its gradient
    (the same formulas as :func:`fastce.cross_entropy` and
    :func:`fastce.binary_cross_entropy_with_logits`) and the row's
    contribution ``g_i x_i^T`` to ``X^T G`` are computed while the row is in
    cache, into per-block float64 partial sums (multinomial: rows in groups
    of four; binomial: chunks of rows, the loss across a chunk with
    vectorised exp and log1p, and on float64 X the chunk's ``X_c^T g`` by
    BLAS, see below). A Hessian product likewise. Measured on 2
    cores (float64): 200,000 x 100, 10 classes, 18 ms per evaluation against
    44 ms for ``X @ W`` + fused loss + ``X.T @ G`` below (scikit-learn's
    ``LinearModelLoss``: 51 ms); 1,000,000 x 50 binary, 16 ms against 34 ms
    (scikit-learn's: 43 ms), before the binomial chunks, which took it from
    22-35 to 16-21 ms on a busier day.
single pass with BLAS chunks (dense float64 ``X``, the default there)
    The same single pass, with the two products of each chunk of rows
    (``Z = X_c W^T`` and ``G^T X_c``) done by SciPy's BLAS ``dgemm`` on the
    chunk while it is in cache, called from the kernel's threads (one BLAS
    thread each: chunks small enough for OpenBLAS to stay on the calling
    thread), and the softmax across the chunk's rows (SIMD); Hessian
    products the same way. Measured in one sitting on 2 cores, 200,000 x 100
    with 10 classes: 19.7 ms per evaluation against 45.7 ms for the kernels
    of the single pass. The binomial model gives BLAS the gradient's product
    only: 16.5-17.3 against 18.9-20.7 ms at 1,000,000 x 50.
linear cross-entropy (dense float64 ``X``, multinomial, big products)
    The objective and gradient of the single-pass path come from
    :func:`fastce.linear_cross_entropy` (BLAS on blocks of rows, an online
    log-sum-exp, O(block) memory) when ``X`` has at least 400 columns and
    ``W`` at least 200,000 entries, or 256 columns and 800,000 entries
    (``_LCE_CROSSOVER``): there BLAS's products beat the single-pass
    kernels' (see :doc:`/linear_cross_entropy` for the measured
    crossover). Hessian products (``newton-cg``) stay on the single-pass
    kernels.
BLAS and the loss functions (sparse ``X``, or ``single_pass=False``)
    One ``X @ W`` (BLAS, or SciPy's sparse product), one call of
    :func:`fastce.cross_entropy` / :func:`fastce.binary_cross_entropy_with_logits`
    with ``return_grad=True`` and one ``X.T @ G``; the Hessian product uses
    the fused in-place kernels ``mn_hessp`` / ``bin_hessp``.

The single pass computes in float64 on ``X``'s values (float32 or float64);
the other path runs the products in ``X``'s dtype (the estimator upcasts
sparse float32 data, whose SciPy products would accumulate in float32).
Every sum over samples is accumulated in float64.
"""

import sys

import numpy as np
import scipy.sparse as sp

from . import _linear_kernels as LK
from ._config import run_kernel

__all__ = ["LinearLoss"]

# Blocks of rows of the kernels: a function of the shape only, never of the
# thread count, so that results do not depend on it.
_ROW_BLOCK_ELEMENTS = 1 << 14
_MAX_BLOCKS = 128
_MIN_BLOCK_ROWS = 256

# When the single-pass path hands the objective and gradient of a
# multinomial problem on dense float64 X to linear_cross_entropy: D features,
# K classes, K * D coefficients at least (D, K * D) of one of these pairs.
# Measured by benchmarks/compare_linear_loss_paths.py (2 threads, N=20,000;
# ms per evaluation, single pass / linear_cross_entropy): D=100: K=200 29/34,
# K=3000 399/540 (never pays); D=300: K=300 100/106, K=1000 293/299,
# K=3000 1146/963; D=400 K=500 213/200; D=500: K=400 217/184, K=500 275/228;
# D=1000: K=100 103/108, K=300 308/244, K=1000 1379/776.
_LCE_CROSSOVER = ((400, 200_000), (256, 800_000))


def _n_blocks(n, block):
    return max(1, (n + block - 1) // block)


# The BLAS chunks of the multinomial single pass: rows per chunk such that
# each dgemm has m * n * k <= 2**18 (at most LK._CHUNK rows, at least 16).
# OpenBLAS runs products that small on the calling thread whatever its thread
# setting (interface/gemm.c, GEMM_MULTITHREAD_THRESHOLD): the kernels call it
# from their own threads, where a limit set by the Python thread may not hold.
_SERIAL_GEMM_MNK = 1 << 18
_MIN_CHUNK = 16


def _chunk_rows(n_classes, n_features):
    rows = min(LK._CHUNK, _SERIAL_GEMM_MNK // max(1, n_classes * n_features))
    return rows - rows % 8 if rows >= _MIN_CHUNK else 0


# The chunks of the binomial single pass: at most 512 KiB of X, so that the
# chunk is still in the core's L2 cache when X_c^T g reads it again.
_BIN_CHUNK_BYTES = 1 << 19


def _bin_chunk_rows(n_features, itemsize):
    rows = min(LK._CHUNK, _BIN_CHUNK_BYTES // max(1, n_features * itemsize))
    return max(_MIN_CHUNK, rows - rows % 8)


_DGEMM = []


def _dgemm_address():
    """Address of SciPy's BLAS ``dgemm`` (Fortran calling convention), for the kernels."""
    if not _DGEMM:
        from numba.extending import get_cython_function_address

        _DGEMM.append(get_cython_function_address("scipy.linalg.cython_blas", "dgemm"))
    return _DGEMM[0]


class LinearLoss:
    """Objective, gradient and Hessian product of L2-penalised logistic regression.

    Parameters
    ----------
    X : ndarray or scipy.sparse matrix of shape (n_samples, n_features)
        float32 or float64; dense input C-contiguous, sparse input CSR or CSC.
    y : ndarray of shape (n_samples,)
        Class indices in ``[0, n_classes)``.
    sample_weight : ndarray of shape (n_samples,) or None
        Non-negative weights (class weights already folded in).
    n_classes : int
        2 for the binomial model (one coefficient vector), 3 or more for the
        multinomial model.
    fit_intercept : bool
    l2_reg_strength : float
        :math:`\\lambda`, usually ``1 / (C * sum(sample_weight))``; 0 for no penalty.
    n_threads : int or None, default=None
        Threads of the kernels (see :func:`fastce._config.resolve_n_threads`).
    single_pass : bool or None, default=None
        Use the single-pass kernels (dense ``X`` only). ``None``: for dense ``X``.
    linear_ce : bool or None, default=None
        On the single-pass path, evaluate the objective and gradient of the
        multinomial model with :func:`fastce.linear_cross_entropy` (dense
        float64 ``X`` only) except while :attr:`keep_hessian` is set.
        ``None``: when the shape is past the measured crossover
        (``_LCE_CROSSOVER``).
    blas_chunks : bool or None, default=None
        On the single-pass path of the multinomial model (dense float64
        ``X``, ``n_classes * n_features <= 16384``), compute with BLAS on
        chunks of rows both products of the objective and gradient, and of
        the Hessian products. ``None``: wherever possible. (The binomial
        model's single pass goes by chunks without BLAS.)

    Notes
    -----
    Buffers of the size of the logits are allocated once and reused, so the
    object is not thread-safe. Set :attr:`keep_hessian` before the
    evaluations of a Newton solver: each evaluation then keeps what the
    Hessian products at that point need (probabilities or curvatures).
    """

    def __init__(
        self, X, y, sample_weight, *, n_classes, fit_intercept, l2_reg_strength, n_threads=None, single_pass=None,
        linear_ce=None, blas_chunks=None,
    ):  # fmt: skip
        self.X = X
        self.sparse = sp.issparse(X)
        self.dtype = np.dtype(X.dtype)
        n, d = X.shape
        self.n_samples, self.n_features = n, d
        self.n_classes = int(n_classes)
        self.multinomial = self.n_classes > 2
        self.fit_intercept = bool(fit_intercept)
        self.n_dof = d + int(self.fit_intercept)
        self.l2_reg_strength = float(l2_reg_strength)
        self.n_threads = n_threads
        self.shape = (self.n_classes, self.n_dof) if self.multinomial else (self.n_dof,)
        self.size = int(np.prod(self.shape))
        self.sw_sum = float(n if sample_weight is None else np.sum(sample_weight))
        self.scale = 1.0 / self.sw_sum
        self.single_pass = (not self.sparse) if single_pass is None else bool(single_pass)
        if self.single_pass and self.sparse:
            raise ValueError("the single-pass kernels need a dense X")
        lce_ok = self.single_pass and self.multinomial and self.dtype == np.float64
        if linear_ce is None:
            linear_ce = lce_ok and any(d >= d_min and self.n_classes * d >= kd_min for d_min, kd_min in _LCE_CROSSOVER)
        elif linear_ce and not lce_ok:
            raise ValueError("linear_ce needs the single-pass path, a dense float64 X and the multinomial model")
        self.linear_ce = bool(linear_ce)
        k = self.n_classes if self.multinomial else 1
        # (the kernels pass BLAS its integers and characters in little-endian int64s)
        chunks_ok = (
            self.single_pass and self.multinomial and self.dtype == np.float64 and d > 0 and _chunk_rows(k, d) > 0
            and sys.byteorder == "little"
        )  # fmt: skip
        if blas_chunks is None:
            blas_chunks = chunks_ok
        elif blas_chunks and not chunks_ok:
            raise ValueError(
                "blas_chunks needs the single-pass path, the multinomial model, a dense float64 X with columns"
                f" and n_classes * n_features <= {_SERIAL_GEMM_MNK // _MIN_CHUNK}"
            )
        self.blas_chunks = bool(blas_chunks)
        self.keep_hessian = False
        self.n_evaluations = 0
        self.n_hessp = 0
        rows = (n, k) if self.multinomial else (n,)

        # float64 weights for the kernels of this package, as (array, step)
        self._sw64, self._sw_step = (
            (np.ones(1), 0) if sample_weight is None else (np.ascontiguousarray(sample_weight, dtype=np.float64), 1)
        )
        if self.multinomial:
            self.y = np.ascontiguousarray(y, dtype=np.intp)
        else:
            self.y = np.ascontiguousarray(y, dtype=np.float64 if self.single_pass else self.dtype)

        if self.single_pass:
            nb = max(1, min(_MAX_BLOCKS, -(-n // _MIN_BLOCK_ROWS)))
            self._lp = np.empty(nb)
            self._gp = np.empty((nb, k, d + 1) if self.multinomial else (nb, d + 1))
            # scratch per block of the multinomial kernels that go by groups of rows
            # (without the BLAS chunks): logits and gradients of a group
            if self.multinomial and not self.blas_chunks:
                self._zb = np.empty((nb, 2, LK._GROUP, k))
            # probabilities (multinomial, X's dtype) or curvatures (binomial) for the Hessian
            self._h = None
            self._h_shape, self._h_dtype = rows, (self.dtype if self.multinomial else np.float64)
            self._h_unused = np.empty((1, k) if self.multinomial else 1, dtype=self._h_dtype)
            if self.multinomial and self.blas_chunks:
                # per block: Z^T / G^T of a chunk, per-row scratch, arg max, Z; then
                # BLAS's arguments: gemm's integers, alpha and beta, gemm
                c = _chunk_rows(k, d)
                self._chunk_bufs = (
                    np.empty((nb, k, c)), np.empty((nb, 6, c)), np.empty((nb, c), dtype=np.intp), np.empty((nb, c, k)),
                    np.empty((nb, 8), dtype=np.int64), np.array([1.0, 0.0]), _dgemm_address(),
                )  # fmt: skip
            elif not self.multinomial:
                # per block: logits, gradients, losses, weights, curvatures of a chunk of rows
                self._chunk_bufs = (np.empty((nb, 5, _bin_chunk_rows(d, self.dtype.itemsize))),)
        else:
            # the loss functions' weights: float64 for cross_entropy, X's dtype for BCE
            self._sw = None
            if sample_weight is not None:
                self._sw = self._sw64 if self.multinomial else np.ascontiguousarray(sample_weight, dtype=self.dtype)
            self._a = np.empty(rows, dtype=self.dtype)  # logits, then probabilities / curvatures
            self._b = np.empty(rows, dtype=self.dtype)  # per-sample gradients, then Hessian products
            self._row_block = max(1, _ROW_BLOCK_ELEMENTS // k)
            nb = _n_blocks(n, self._row_block)
            self._row_partial = np.empty((nb, k) if self.multinomial else nb)
        self._hessian_ready = False

    # ------------------------------------------------------------------
    # parameter layout

    def zeros(self):
        """The all-zero parameter vector (flat, float64)."""
        return np.zeros(self.size)

    def split(self, w):
        """Views ``(W, b)`` of a flat parameter vector (``b`` is None without intercept)."""
        w2 = np.asarray(w).reshape(self.shape)
        d = self.n_features
        if self.multinomial:
            return w2[:, :d], (w2[:, d] if self.fit_intercept else None)
        return w2[:d], (w2[d] if self.fit_intercept else None)

    def coef_intercept(self, w, dtype=None):
        """scikit-learn's ``coef_`` and ``intercept_`` from a flat parameter vector."""
        dtype = self.dtype if dtype is None else dtype
        W, b = self.split(np.asarray(w, dtype=np.float64))
        k = self.n_classes if self.multinomial else 1
        coef = np.array(W, dtype=dtype).reshape(k, self.n_features)
        intercept = np.zeros(k, dtype=dtype) if b is None else np.array(b, dtype=dtype).reshape(k)
        return coef, intercept

    def flat(self, coef, intercept):
        """The flat parameter vector of ``coef_`` / ``intercept_`` (inverse of :meth:`coef_intercept`)."""
        w = np.zeros(self.shape)
        d = self.n_features
        coef = np.asarray(coef, dtype=np.float64)
        intercept = np.asarray(intercept, dtype=np.float64).reshape(-1)
        if self.multinomial:
            w[:, :d] = coef.reshape(self.n_classes, d)
            if self.fit_intercept:
                w[:, d] = intercept
        else:
            w[:d] = coef.reshape(d)
            if self.fit_intercept:
                w[d] = intercept[0]
        return w.reshape(-1)

    # ------------------------------------------------------------------
    # pieces

    def _run(self, par, ser, n_elements, *args):
        return run_kernel(par, ser, self.n_threads, n_elements, *args)

    def _penalty(self, W):
        if self.l2_reg_strength == 0.0:
            return 0.0
        return 0.5 * self.l2_reg_strength * float(np.sum(np.square(W)))

    def _finish_grad(self, grad, W):
        grad *= self.scale
        if self.l2_reg_strength != 0.0:
            d = self.n_features
            if self.multinomial:
                grad[:, :d] += self.l2_reg_strength * W
            else:
                grad[:d] += self.l2_reg_strength * W
        return grad.reshape(-1)

    def _linear(self, W, b, out):
        """``out = X @ W.T + b`` (multinomial) or ``X @ w + b``, in X's dtype."""
        Wx = np.ascontiguousarray(W.T if self.multinomial else W, dtype=self.dtype)
        if self.sparse:
            out[...] = self.X @ Wx
        else:
            np.matmul(self.X, Wx, out=out)
        if b is not None:
            out += b.astype(self.dtype) if self.multinomial else self.dtype.type(b)
        return out

    def _linear_t(self, G, out):
        """``out[..., :d] = (X.T @ G).T`` (float64) and the intercept column ``sum_i G_i``."""
        d = self.n_features
        prod = np.asarray(self.X.T @ G, dtype=np.float64)
        if self.multinomial:
            out[:, :d] = prod.T
            if self.fit_intercept:
                self._run(LK.col_sums_par, LK.col_sums_ser, G.size, G, self._row_partial, self._row_block)
                out[:, d] = self._row_partial.sum(axis=0)
        else:
            out[:d] = prod
            if self.fit_intercept:
                out[d] = np.sum(G, dtype=np.float64)
        return out

    def _reduce_gp(self, out):
        """Sum the per-block partials of the single-pass kernels into ``out`` (without intercept: drop it)."""
        total = self._gp.sum(axis=0)
        out[...] = total[..., : self.n_dof]
        return out

    def _ensure_h(self):
        if self._h is None:
            self._h = np.empty(self._h_shape, dtype=self._h_dtype)
        return self._h

    # ------------------------------------------------------------------
    # objective and gradient

    def _loss_blas(self, w):
        """Sum of the weighted per-sample losses (float64) and their gradient
        ``s_i dloss_i/dz_i`` (X's dtype, written into ``_b``), by one call of the
        fused loss+gradient function of :mod:`fastce.losses`. The logits stay
        in ``_a``.

        float32 logits ask for the per-sample losses and sum them in float64
        (the ``"sum"`` reduction would round the total to float32).
        """
        from .losses import binary_cross_entropy_with_logits, cross_entropy

        W, b = self.split(w)
        z = self._linear(W, b, self._a)
        reduction = "sum" if self.dtype == np.float64 else "none"
        if self.multinomial:
            loss, grad = cross_entropy(
                z, self.y, sample_weight=self._sw, reduction=reduction, return_grad=True, grad_out=self._b,
                n_threads=self.n_threads,
            )  # fmt: skip
        else:
            loss, grad = binary_cross_entropy_with_logits(
                z, self.y, weight=self._sw, reduction=reduction, return_grad=True, grad_out=self._b,
                n_threads=self.n_threads,
            )  # fmt: skip
        return float(np.sum(loss, dtype=np.float64)), grad

    def _loss_grad_single_pass(self, w, grad):
        w2 = np.ascontiguousarray(np.asarray(w, dtype=np.float64).reshape(self.shape))
        store = self.keep_hessian
        h = self._ensure_h() if store else self._h_unused
        if self.multinomial and self.blas_chunks:
            wt = np.ascontiguousarray(w2[:, : self.n_features].T)  # the left factor of the chunks' W X_c^T
            self._run(
                LK.mn_blas_loss_grad_par, LK.mn_blas_loss_grad_ser, self.X.size,
                self.X, w2, wt, self.y, self._sw64, self._sw_step, self.fit_intercept, store, h, self._gp, self._lp,
                *self._chunk_bufs,
            )  # fmt: skip
        elif self.multinomial:
            self._run(
                LK.mn_dense_loss_grad_par, LK.mn_dense_loss_grad_ser, self.X.size,
                self.X, w2, self.y, self._sw64, self._sw_step, self.fit_intercept, store, h, self._gp, self._lp,
                self._zb,
            )  # fmt: skip
        else:
            self._run(
                LK.bin_dense_loss_grad_par, LK.bin_dense_loss_grad_ser, self.X.size,
                self.X, w2, self.y, self._sw64, self._sw_step, self.fit_intercept, store, h, self._gp, self._lp,
                *self._chunk_bufs,
            )  # fmt: skip
        self._reduce_gp(grad)
        return float(self._lp.sum())

    def _loss_grad_lce(self, W, b, grad):
        from .linear_ce import linear_cross_entropy

        loss, _, gW, gb = linear_cross_entropy(
            self.X, W, self.y, b, reduction="sum", sample_weight=self._sw64 if self._sw_step else None,
            return_grad=True, n_threads=self.n_threads, _grad_X=False,
        )  # fmt: skip
        d = self.n_features
        grad[:, :d] = gW
        if self.fit_intercept:
            grad[:, d] = gb
        return float(loss)

    def loss_gradient(self, w):
        """Objective and its gradient at the flat parameter vector ``w``.

        Returns
        -------
        loss : float
        grad : ndarray of shape (size,), float64
        """
        self.n_evaluations += 1
        w = np.asarray(w, dtype=np.float64)
        W, _ = self.split(w)
        grad = np.empty(self.shape)
        if self.linear_ce and not self.keep_hessian:
            loss_sum = self._loss_grad_lce(W, self.split(w)[1], grad)
            self._hessian_ready = False
        elif self.single_pass:
            loss_sum = self._loss_grad_single_pass(w, grad)
            self._hessian_ready = self.keep_hessian
        else:
            loss_sum, g_rows = self._loss_blas(w)
            self._linear_t(g_rows, grad)
            self._hessian_ready = False
        return loss_sum * self.scale + self._penalty(W), self._finish_grad(grad, W)

    # ------------------------------------------------------------------
    # Hessian-vector product

    def prepare_hessian(self):
        """Make ready the Hessian products at the point last evaluated.

        Single pass: the evaluation kept the probabilities or curvatures if
        :attr:`keep_hessian` was set. Otherwise the logits in ``_a`` become
        the probabilities (multinomial) or the curvatures
        ``scale * s_i * p_i (1 - p_i)`` (binomial), in place.
        """
        if self.single_pass:
            if not self._hessian_ready:
                raise RuntimeError("set keep_hessian before evaluating at the point of the Hessian")
            return
        z = self._a
        if self.multinomial:
            self._run(LK.softmax_rows_par, LK.softmax_rows_ser, z.size, z, self._row_partial, self._row_block)
        else:
            self._run(
                LK.bin_curvature_par, LK.bin_curvature_ser, z.size,
                z, self._sw64, self._sw_step, 1.0, z, self._row_partial, self._row_block,
            )  # fmt: skip
        self._hessian_ready = True

    def hessp(self, v):
        """Hessian of the objective at the point prepared by :meth:`prepare_hessian`, times ``v``."""
        if not self._hessian_ready:
            raise RuntimeError("prepare_hessian() must follow the evaluation at the point of the Hessian")
        self.n_hessp += 1
        v = np.asarray(v, dtype=np.float64)
        V, vb = self.split(v)
        out = np.empty(self.shape)
        if self.single_pass:
            v2 = np.ascontiguousarray(v.reshape(self.shape))
            if self.multinomial and self.blas_chunks:
                vt = np.ascontiguousarray(v2[:, : self.n_features].T)
                self._run(
                    LK.mn_blas_hessp_par, LK.mn_blas_hessp_ser, self.X.size,
                    self.X, v2, vt, self._h, self._sw64, self._sw_step, self.fit_intercept, self._gp,
                    *self._chunk_bufs,
                )  # fmt: skip
            elif self.multinomial:
                self._run(
                    LK.mn_dense_hessp_par, LK.mn_dense_hessp_ser, self.X.size,
                    self.X, v2, self._h, self._sw64, self._sw_step, self.fit_intercept, self._gp, self._zb,
                )  # fmt: skip
            else:
                self._run(
                    LK.bin_dense_hessp_par, LK.bin_dense_hessp_ser, self.X.size,
                    self.X, v2, self._h, self.fit_intercept, self._gp, *self._chunk_bufs,
                )  # fmt: skip
            self._reduce_gp(out)
        else:
            t = self._linear(V, None, self._b)
            if self.multinomial:
                vbx = np.zeros(self.n_classes) if vb is None else np.ascontiguousarray(vb)
                self._run(
                    LK.mn_hessp_par, LK.mn_hessp_ser, t.size,
                    self._a, t, vbx, self._sw64, self._sw_step, 1.0, self._row_partial, self._row_block,
                )  # fmt: skip
            else:
                vbx = 0.0 if vb is None else float(vb)
                self._run(
                    LK.bin_hessp_par, LK.bin_hessp_ser, t.size, self._a, t, vbx, self._row_partial, self._row_block
                )
            d = self.n_features
            prod = np.asarray(self.X.T @ t, dtype=np.float64)
            if self.multinomial:
                out[:, :d] = prod.T
                if self.fit_intercept:
                    out[:, d] = self._row_partial.sum(axis=0)
            else:
                out[:d] = prod
                if self.fit_intercept:
                    out[d] = self._row_partial.sum()
        return self._finish_grad(out, V)
