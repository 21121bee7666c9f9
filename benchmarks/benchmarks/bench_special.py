"""logsumexp, softmax, log_softmax along the last axis: fastce against PyTorch and SciPy."""

from . import common


class _Primitive:
    kernel = None
    params = [common.PRIMITIVE_SHAPES, list(common.DTYPES), common.THREADS, common.PRIMITIVE_PEERS]
    param_names = ["shape", "dtype", "threads", "peer"]
    timeout = 300

    def setup(self, shape, dtype, threads, peer):
        common.require_peer(peer)
        common.require_threads(threads)
        if peer == "scipy" and threads != 1:
            common.skip("scipy.special runs on one thread")
        self.previous = None
        if peer == "fastce":
            self.previous = ("numba", common.set_numba_threads(threads))
        elif peer == "torch":
            self.previous = ("torch", common.set_torch_threads(threads))
        self.x = common.logits(shape, dtype)
        self.fn = common.primitive_callable(self.kernel, peer, self.x)
        self.fn()  # JIT warm-up

    def teardown(self, *params):
        previous = getattr(self, "previous", None)
        if previous is not None:
            kind, n = previous
            if kind == "numba":
                common.set_numba_threads(n)
            else:
                common.set_torch_threads(n)
        self.__dict__.pop("x", None)
        self.__dict__.pop("fn", None)


class _TimePrimitive(_Primitive):
    def time_last_axis(self, shape, dtype, threads, peer):
        self.fn()


class LogSumExp(_TimePrimitive):
    kernel = "logsumexp"


class Softmax(_TimePrimitive):
    kernel = "softmax"


class LogSoftmax(_TimePrimitive):
    kernel = "log_softmax"


class _TimePrimitiveOut:
    """fastce writing its result into one array allocated in ``setup``
    (``out=``): the kernel without the page faults of a fresh result array,
    which ``time_last_axis`` pays (as do the peers)."""

    kernel = None
    params = [common.PRIMITIVE_SHAPES, list(common.DTYPES), common.THREADS]
    param_names = ["shape", "dtype", "threads"]
    timeout = 300

    def setup(self, shape, dtype, threads):
        import fastce

        common.require_threads(threads)
        if "out" not in getattr(fastce, self.kernel).__code__.co_varnames:
            common.skip(f"this version of fastce.{self.kernel} has no out=")
        self.previous = common.set_numba_threads(threads)
        self.x = common.logits(shape, dtype)
        self.out = self.x.copy()
        self.fn = getattr(fastce, self.kernel)
        self.fn(self.x, axis=-1, out=self.out)  # JIT warm-up

    def teardown(self, *params):
        previous = getattr(self, "previous", None)
        if previous is not None:
            common.set_numba_threads(previous)
        self.__dict__.pop("x", None)
        self.__dict__.pop("out", None)

    def time_last_axis_out(self, shape, dtype, threads):
        self.fn(self.x, axis=-1, out=self.out)


class SoftmaxOut(_TimePrimitiveOut):
    kernel = "softmax"


class LogSoftmaxOut(_TimePrimitiveOut):
    kernel = "log_softmax"


class _PeakMemPrimitive(_Primitive):
    # One thread: the peak does not depend on the thread count, and scipy runs on one.
    params = [common.PRIMITIVE_SHAPES, list(common.DTYPES), common.PRIMITIVE_PEERS]
    param_names = ["shape", "dtype", "peer"]

    def setup(self, shape, dtype, peer):
        super().setup(shape, dtype, 1, peer)

    def peakmem_last_axis(self, shape, dtype, peer):
        self.fn()


class PeakMemLogSumExp(_PeakMemPrimitive):
    kernel = "logsumexp"


class PeakMemSoftmax(_PeakMemPrimitive):
    kernel = "softmax"


class PeakMemLogSoftmax(_PeakMemPrimitive):
    kernel = "log_softmax"
