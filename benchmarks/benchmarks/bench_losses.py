"""Fused loss + gradient: fastce against PyTorch (forward + backward) and scikit-learn's private _loss."""

import numpy as np

from . import common


class _LossGrad:
    """setup builds the data and the callable for one parameter combination and calls it once (JIT warm-up)."""

    kernel = None
    timeout = 300

    def _setup(self, x_shape, dtype, threads, peer, target):
        common.require_peer(peer)
        common.require_threads(threads)
        self.previous_torch_threads = common.set_torch_threads(threads) if peer == "torch" else None
        self.x = common.logits(x_shape, dtype, scale=3.0 if self.kernel != "cross_entropy" else 1.0)
        self.target = target
        self.fn = common.loss_grad_callable(self.kernel, peer, self.x, self.target, threads)
        self.fn()  # compile (or load from Numba's cache) outside the timing

    def teardown(self, *params):
        if getattr(self, "previous_torch_threads", None) is not None:
            common.set_torch_threads(self.previous_torch_threads)
        self.__dict__.pop("x", None)
        self.__dict__.pop("target", None)
        self.__dict__.pop("fn", None)


class CrossEntropy(_LossGrad):
    """cross_entropy(logits (N, C), class indices (N,)), mean reduction, loss and gradient."""

    kernel = "cross_entropy"
    params = [common.CE_SHAPES, list(common.DTYPES), common.THREADS, common.LOSS_PEERS]
    param_names = ["shape", "dtype", "threads", "peer"]

    def setup(self, shape, dtype, threads, peer):
        self._setup(shape, dtype, threads, peer, common.class_targets(shape[0], shape[1]))

    def time_loss_grad(self, shape, dtype, threads, peer):
        self.fn()


class BinaryCrossEntropyWithLogits(_LossGrad):
    """binary_cross_entropy_with_logits(logits (N,), targets (N,)), mean reduction, loss and gradient."""

    kernel = "binary_cross_entropy_with_logits"
    params = [common.BCE_SIZES, list(common.DTYPES), common.THREADS, common.LOSS_PEERS]
    param_names = ["size", "dtype", "threads", "peer"]

    def setup(self, size, dtype, threads, peer):
        self._setup((size,), dtype, threads, peer, common.binary_targets(size, dtype))

    def time_loss_grad(self, size, dtype, threads, peer):
        self.fn()


class CrossEntropyClasses:
    """cross_entropy loss and gradient into a reused gradient (grad_out=),
    one thread, about 4 million logits, by class count: the layouts that
    fastce chooses by row length (tiles of rows, generated kernels, in-register
    transposes, rows one at a time), without the page faults of a fresh
    gradient."""

    params = [common.CLASS_COUNTS, list(common.DTYPES)]
    param_names = ["classes", "dtype"]
    timeout = 300

    def setup(self, classes, dtype):
        import fastce

        n_rows = max(1, common.CLASS_COUNT_ELEMENTS // classes)
        x = common.logits((n_rows, classes), dtype)
        t = common.class_targets(n_rows, classes)
        g = np.empty_like(x)
        self.fn = lambda: fastce.cross_entropy(x, t, return_grad=True, grad_out=g, n_threads=1)
        self.fn()

    def teardown(self, *params):
        self.__dict__.pop("fn", None)

    def time_loss_grad_out(self, classes, dtype):
        self.fn()


class CrossEntropyOptions:
    """cross_entropy loss and gradient into a reused gradient (grad_out=),
    one thread, about 4 million logits, with the options that take their
    own paths: class-probability targets, and class-index targets with
    label smoothing; 10 classes (tiles of rows) and 1,000 (one row at a
    time)."""

    params = [[10, 1_000], list(common.DTYPES), ["probabilities", "label_smoothing"]]
    param_names = ["classes", "dtype", "option"]
    timeout = 300

    def setup(self, classes, dtype, option):
        import fastce

        n_rows = max(1, common.CLASS_COUNT_ELEMENTS // classes)
        x = common.logits((n_rows, classes), dtype)
        g = np.empty_like(x)
        if option == "probabilities":
            t = np.random.default_rng(5).random((n_rows, classes)).astype(dtype)
            t /= t.sum(axis=1, keepdims=True)
            kw = {}
        else:
            t = common.class_targets(n_rows, classes)
            kw = {"label_smoothing": 0.1}
        self.fn = lambda: fastce.cross_entropy(x, t, return_grad=True, grad_out=g, n_threads=1, **kw)
        self.fn()

    def teardown(self, *params):
        self.__dict__.pop("fn", None)

    def time_loss_grad_out(self, classes, dtype, option):
        self.fn()


class SmallBatch(_LossGrad):
    """Loss and gradient of one mini-batch (64 rows of 10 classes, or 64
    binary logits), one thread: what a call costs beyond its arithmetic
    (argument checks, conversions, dispatch), as in a training loop."""

    params = [["cross_entropy", "binary_cross_entropy_with_logits"], list(common.DTYPES), common.LOSS_PEERS]
    param_names = ["kernel", "dtype", "peer"]

    def setup(self, kernel, dtype, peer):
        self.kernel = kernel
        if kernel == "cross_entropy":
            self._setup((64, 10), dtype, 1, peer, common.class_targets(64, 10))
        else:
            self._setup((64,), dtype, 1, peer, common.binary_targets(64, dtype))

    def time_loss_grad(self, kernel, dtype, peer):
        self.fn()


# Peak memory in classes of their own (the process's peak RSS includes the
# inputs made in setup, the same for every peer of a shape and dtype). One
# thread: the peak does not depend on the thread count.


class PeakMemCrossEntropy(_LossGrad):
    kernel = "cross_entropy"
    params = [common.PEAKMEM_CE_SHAPES, list(common.DTYPES), common.LOSS_PEERS]  # 10 and 1,000 classes
    param_names = ["shape", "dtype", "peer"]

    def setup(self, shape, dtype, peer):
        self._setup(shape, dtype, 1, peer, common.class_targets(shape[0], shape[1]))

    def peakmem_loss_grad(self, shape, dtype, peer):
        self.fn()


class PeakMemBinaryCrossEntropyWithLogits(_LossGrad):
    kernel = "binary_cross_entropy_with_logits"
    params = [common.BCE_SIZES, list(common.DTYPES), common.LOSS_PEERS]
    param_names = ["size", "dtype", "peer"]

    def setup(self, size, dtype, peer):
        self._setup((size,), dtype, 1, peer, common.binary_targets(size, dtype))

    def peakmem_loss_grad(self, size, dtype, peer):
        self.fn()


# Accuracy: float32 mean loss against a float64 NumPy reference on the same values.


class Float32ErrorCrossEntropy:
    params = [common.CE_SHAPES, common.LOSS_PEERS]
    param_names = ["shape", "peer"]
    timeout = 300

    def setup(self, shape, peer):
        common.require_peer(peer)
        self.x = common.logits(shape, "float32")
        self.t = common.class_targets(shape[0], shape[1])
        self.fn = common.loss_grad_callable("cross_entropy", peer, self.x, self.t, None if peer == "fastce" else 1)
        self.ref = common.reference_mean_loss("cross_entropy", self.x, self.t)

    def track_relative_error(self, shape, peer):
        return abs(self.fn() - self.ref) / abs(self.ref)

    track_relative_error.unit = "relative error"


class Float32ErrorBinaryCrossEntropyWithLogits:
    params = [common.BCE_SIZES, common.LOSS_PEERS]
    param_names = ["size", "peer"]
    timeout = 300

    def setup(self, size, peer):
        common.require_peer(peer)
        self.x = common.logits((size,), "float32", scale=3.0)
        self.y = common.binary_targets(size, "float32")
        kernel = "binary_cross_entropy_with_logits"
        self.fn = common.loss_grad_callable(kernel, peer, self.x, self.y, None if peer == "fastce" else 1)
        self.ref = common.reference_mean_loss(kernel, self.x, self.y)

    def track_relative_error(self, size, peer):
        return abs(self.fn() - self.ref) / abs(self.ref)

    track_relative_error.unit = "relative error"
