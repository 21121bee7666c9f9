"""``python -m fastce bench``: fastce against its peers and this machine's floors, in one run.

For each kernel (cross-entropy loss+gradient at three shapes, binary
cross-entropy with logits loss+gradient, ``logsumexp``/``softmax``/
``log_softmax`` along the last axis), for float32 and float64 and each thread
count asked for, it times fastce and every installed peer on the same data
(best of k after a warm-up call, so compile time is not counted):

* PyTorch: ``torch.nn.functional`` forward + backward for the losses,
  ``torch.logsumexp``/``softmax``/``log_softmax`` for the primitives, with
  ``torch.set_num_threads(n)``;
* scikit-learn: the private ``sklearn._loss.loss.HalfMultinomialLoss`` /
  ``HalfBinomialLoss`` ``.loss_gradient(..., n_threads=n)`` for the losses
  (same loss, per-sample, gradient not divided by N);
* SciPy: ``scipy.special.logsumexp``/``softmax``/``log_softmax`` (one thread).

It measures the floors of this machine in the same run:

* memory floor = bytes that must move (inputs read once, outputs written
  once) / the copy bandwidth on the same number of threads (bytes read +
  bytes written per second): the faster of a Numba ``prange`` copy and a
  copy whose every 64-byte line is one non-temporal ("streaming") store,
  which writes without first reading the line into the cache (about 1.8x
  the plain copy on the Intel host of docs/benchmarks; fastce's kernels use
  plain stores). Both copies and a write-only fill are reported;
* exp floor = number of exp/log evaluations / the throughput of a vectorised
  ``exp`` on the same number of threads, on data that stays in the caches:
  the kernels' own vectorised exp (``fastce._kernels.fexp_nonpos``, for
  the arguments <= 0 that every kernel has) run over cache-sized blocks in
  one ``prange`` region; if it fails to agree with NumPy, NumPy's ``np.exp``
  run on one slice per thread from Python threads (NumPy's exp is
  single-threaded). A log is counted as one evaluation.

Both floors are measured before and after the kernels and the better of the
two is kept. Fast calls are repeated for a minimum time and the best run is
kept: on a shared machine, a 2-thread parallel region waits for whichever
thread the scheduler delayed, so only the best of many runs approaches what
the machine can do.

The floor of a kernel is the larger of the two; the table reports the time,
the achieved GB/s (bytes that must move / time), the ratio to the floor, the
speed-up of fastce over each peer, and the accuracy of the result: relative
error of the mean loss (losses) or normwise relative error
``max|out - ref| / max|ref|`` (primitives) against a float64 NumPy reference
computed on the same input values.

Programmatic use: :func:`benchmark` returns a dict (what ``--json`` writes),
:func:`format_table` renders it, :func:`plot` draws the throughput sweep.
The command line is :func:`add_arguments` + :func:`run` (or :func:`main`).
"""

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import time

import numpy as np

__all__ = ["DESCRIPTION", "HELP", "SIZES", "KERNELS", "PEERS", "add_arguments", "run", "main", "benchmark",
           "measure_floors", "format_table", "print_table", "plot", "reference_error"]  # fmt: skip

DESCRIPTION = ("Time fastce against PyTorch, scikit-learn and SciPy, and against this machine's memory and exp "
               "floors, in one run.")
HELP = "time fastce against its peers and this machine's floors"

KERNELS = ("cross_entropy", "binary_cross_entropy_with_logits", "logsumexp", "softmax", "log_softmax")
_LOSSES = ("cross_entropy", "binary_cross_entropy_with_logits")
_REUSABLE_OUT = ("softmax", "log_softmax")  # primitives timed also with out= (reused result array)
PEERS = ("torch", "sklearn", "scipy")

# Which peers do the same work as each fastce kernel.
_KERNEL_PEERS = {
    "cross_entropy": ("torch", "sklearn"),
    "binary_cross_entropy_with_logits": ("torch", "sklearn"),
    "logsumexp": ("torch", "scipy"),
    "softmax": ("torch", "scipy"),
    "log_softmax": ("torch", "scipy"),
}

_LABELS = {
    "cross_entropy": "cross_entropy loss+grad",
    "binary_cross_entropy_with_logits": "bce_with_logits loss+grad",
    "logsumexp": "logsumexp(axis=-1)",
    "softmax": "softmax(axis=-1)",
    "log_softmax": "log_softmax(axis=-1)",
}

# Problem sizes. "full" is what the issue tracks; "quick" is about 10x
# smaller; "tiny" is for the tests (seconds, no meaningful timing).
SIZES = {
    "full": {
        "cross_entropy": [(1_000_000, 10), (100_000, 1_000), (4_096, 50_000)],
        "binary_cross_entropy_with_logits": [(10_000_000,)],
        "primitives": [(1_000_000, 10), (100_000, 1_000)],
        "sweep_classes": 1_000,
        "sweep_rows": [100, 1_000, 10_000, 100_000],
        "floor_elements": 1 << 25,  # 256 MiB of float64 per array
        "repeat": 5,
        "min_time": 0.2,  # fast calls are repeated for at least this many seconds
        "floor_min_time": 0.5,
    },
    "quick": {
        "cross_entropy": [(100_000, 10), (10_000, 1_000), (256, 50_000)],
        "binary_cross_entropy_with_logits": [(1_000_000,)],
        "primitives": [(100_000, 10), (10_000, 1_000)],
        "sweep_classes": 1_000,
        "sweep_rows": [10, 100, 1_000, 10_000],
        "floor_elements": 1 << 23,  # 64 MiB, still well beyond the caches
        "repeat": 3,
        "min_time": 0.05,
        "floor_min_time": 0.25,
    },
    "tiny": {
        "cross_entropy": [(2_000, 10), (200, 100), (4, 5_000)],
        "binary_cross_entropy_with_logits": [(20_000,)],
        "primitives": [(2_000, 10), (200, 100)],
        "sweep_classes": 100,
        "sweep_rows": [10, 100],
        "floor_elements": 1 << 18,
        "repeat": 2,
        "min_time": 0.0,
        "floor_min_time": 0.02,
    },
}

_DTYPES = {"float32": np.float32, "float64": np.float64}


# ---------------------------------------------------------------------------
# environment


def synthetic_problem(n_samples, n_features, n_classes, seed=0):
    """Seeded classification data: standard normal features, labels drawn from a
    logistic (two classes) or softmax model with random coefficients (Gumbel noise)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n_samples, n_features))
    if n_classes == 2:
        w = rng.standard_normal(n_features) * (2.0 / np.sqrt(n_features))
        y = (X @ w + rng.logistic(size=n_samples) > 0).astype(np.int64)
    else:
        W = rng.standard_normal((n_features, n_classes)) * (2.0 / np.sqrt(n_features))
        y = np.argmax(X @ W + rng.gumbel(size=(n_samples, n_classes)), axis=1)
    return X, y


def logistic_objective(model, X, y):
    """scikit-learn's objective (mean log loss + ||W||^2 / (2 C n)) of a fitted
    LogisticRegression on (X, y), in float64, by one formula for every model."""
    from fastce._linear_loss import LinearLoss

    classes, y_enc = np.unique(y, return_inverse=True)
    loss = LinearLoss(
        np.ascontiguousarray(X, dtype=np.float64), y_enc, None, n_classes=len(classes), fit_intercept=True,
        l2_reg_strength=1.0 / (model.C * X.shape[0]),
    )  # fmt: skip
    return loss.loss_gradient(loss.flat(model.coef_, model.intercept_))[0]


def _import_peer(name):
    """Import what a peer needs; raises ImportError when it is not installed."""
    if name == "torch":
        import torch
        import torch.nn.functional  # noqa: F401

        return torch
    if name == "sklearn":
        import sklearn
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss  # noqa: F401

        return sklearn
    if name == "scipy":
        import scipy
        import scipy.special  # noqa: F401

        return scipy
    raise ValueError(f"unknown peer {name!r}")


def available_peers(wanted=PEERS):
    """``{peer: version}`` for the peers in ``wanted`` that can be imported."""
    found = {}
    for name in wanted:
        try:
            module = _import_peer(name)
        except ImportError:
            continue
        found[name] = getattr(module, "__version__", "?")
    return found


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _machine_info(peers):
    import numba

    import fastce
    from fastce._config import ensure_threading_layer

    return {
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "numba_threads": numba.config.NUMBA_NUM_THREADS,
        "threading_layer": ensure_threading_layer(),
        "python": platform.python_version(),
        "fastce": fastce.__version__,
        "numpy": np.__version__,
        "numba": numba.__version__,
        "peers": dict(peers),
    }


@contextlib.contextmanager
def _numba_threads(n):
    """Numba's thread count for the calling thread, restored afterwards."""
    import numba

    from fastce._config import ensure_threading_layer

    ensure_threading_layer()  # fastce picks the layer before anything launches the pool
    previous = numba.get_num_threads()
    numba.set_num_threads(n)
    try:
        yield
    finally:
        numba.set_num_threads(previous)


@contextlib.contextmanager
def _torch_threads(n):
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------
# timing


def best_of(fn, repeat, warmup=1, budget=None, min_time=0.0, max_runs=1000):
    """Best wall time of at least ``repeat`` calls of ``fn()`` after ``warmup`` calls.

    Returns ``(best_seconds, median_seconds, runs, last_result)``. Short
    calls are repeated until the timed runs add up to ``min_time`` seconds
    (at most ``max_runs`` runs), so that the best of them is not one caught
    by a neighbour on a shared machine. With a ``budget`` in seconds,
    stops repeating (after at least two timed runs) once the timed runs have
    used it up.
    """
    result = None
    for _ in range(warmup):
        result = fn()
    times = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        total = 0.0
        while len(times) < max(1, repeat) or (total < min_time and len(times) < max_runs):
            t0 = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t0)
            total += times[-1]
            if budget is not None and len(times) >= 2 and total > budget:
                break
    finally:
        if was_enabled:
            gc.enable()
    return min(times), float(np.median(times)), len(times), result


# ---------------------------------------------------------------------------
# hardware floors

_floor_kernel_cache = {}


def _floor_kernels():
    """Numba ``prange`` copy and fill, compiled on first use."""
    if not _floor_kernel_cache:
        import numba

        @numba.njit(parallel=True, nogil=True)
        def copy(src, dst):
            for i in numba.prange(src.shape[0]):
                dst[i] = src[i]

        @numba.njit(parallel=True, nogil=True)
        def fill(dst, value):
            for i in numba.prange(dst.shape[0]):
                dst[i] = value

        # from the module itself, not the package's attribute (which tests replace)
        from ._kernels import _store_fence, _stream_line

        @numba.njit(parallel=True, nogil=True)
        def stream_copy(src, dst, n_blocks):
            # dst 64-byte aligned; blocks of whole lines (8 float64), each
            # line one non-temporal store, a fence at the end of each block
            n = src.shape[0]
            size = (-(-n // n_blocks) + 7) // 8 * 8
            for b in numba.prange(n_blocks):
                k = b * size
                stop = min(n, k + size)
                while k + 8 <= stop:
                    _stream_line(dst, k, src, k)
                    k += 8
                for q in range(k, stop):
                    dst[q] = src[q]
                _store_fence()

        _floor_kernel_cache.update(copy=copy, fill=fill, stream_copy=stream_copy)
    return _floor_kernel_cache["copy"], _floor_kernel_cache["fill"], _floor_kernel_cache["stream_copy"]


def _aligned_empty(n, dtype, align=64):
    """An uninitialised 1-D array of ``n`` elements starting on an ``align``-byte boundary."""
    itemsize = np.dtype(dtype).itemsize
    raw = np.empty(n + align // itemsize, dtype=dtype)
    start = (-raw.ctypes.data % align) // itemsize
    return raw[start : start + n]


def _agrees_with_np_exp(run, dtype):
    """Whether ``run(x, out, 1)`` fills ``out`` with exp(x) to about 3 ulp (float32) / 1e-12 (float64), for x <= 0."""
    tol = 1e-5 if np.dtype(dtype) == np.float32 else 1e-12
    x = np.linspace(-80.0, 0.0, 4097).astype(dtype)
    out = np.empty_like(x)
    run(x, out, 1)
    ref = np.exp(x.astype(np.float64))
    return out.dtype == x.dtype and bool(np.all(np.abs(out.astype(np.float64) - ref) <= tol * ref + 1e-300))


_exp_impl_cache = {}
_EXP_BLOCK = 1 << 13  # elements per block: 32/64 KiB in + out, stays in L1/L2 across the passes


def _vectorised_exp(dtype):
    """``(description, run(x, out, passes))``: the kernels' vectorised exp on
    Numba's threads, or ``None`` if it does not agree with ``np.exp``.

    The exp is ``fastce._kernels.fexp_nonpos``, the one every kernel calls
    (their arguments are x - max or -|z|, never positive), in one ``prange``
    region over cache-sized blocks, each block passed over ``passes`` times
    (``out = exp(out - 1)`` after the first pass, so that no pass can be
    optimised away and the arguments stay <= 0): one parallel region per
    call, no memory traffic, no thread wake-up per pass. ``run`` evaluates
    ``passes * x.size`` exponentials.
    """
    key = np.dtype(dtype).name
    if key not in _exp_impl_cache:
        from fastce import _kernels as K

        found = None
        try:
            run = _blocked_passes(K.fexp_nonpos, dtype)
            if _agrees_with_np_exp(run, dtype):
                found = ("fastce._kernels.fexp_nonpos in one Numba prange region over in-cache blocks", run)
        except Exception:  # does not compile or run here: the floor falls back to np.exp
            pass
        _exp_impl_cache[key] = found
    return _exp_impl_cache[key]


def _jit_only_stub(fn):
    """Whether ``fn`` is a stub such as ``fexp_nonpos`` that only Numba-compiled code can call (an ``overload``)."""
    try:
        fn(np.float64(0.0))
    except NotImplementedError:
        return True
    except Exception:
        return False
    return False


def _blocked_passes(helper, dtype):
    """``run(x, out, passes)``: ``passes`` exp passes over each cache-sized
    block, blocks spread over the threads. ``helper`` is a Numba-callable
    scalar exp (a compiled function or an overloaded stub such as
    ``fexp_nonpos``; a plain Python function is compiled with ``numba.njit``)."""
    import numba
    from numba.core.dispatcher import Dispatcher

    from fastce._kernels import FASTMATH as flags
    from fastce._kernels import _wide_vectors as wide  # the kernels' loops ask for 512-bit vectors: so does the floor's

    if not isinstance(helper, Dispatcher) and not _jit_only_stub(helper):
        helper = numba.njit(fastmath=set(flags), error_model="numpy")(helper)

    @numba.njit(nogil=True, error_model="numpy", fastmath=set(flags))
    def exp_block(xs, os, c, passes):
        wide()
        for i in range(xs.shape[0]):
            os[i] = helper(xs[i])
        for _ in range(passes - 1):
            for i in range(os.shape[0]):
                os[i] = helper(os[i] - c)

    @numba.njit(parallel=True, nogil=True, error_model="numpy", fastmath=set(flags))
    def exp_blocks(x, out, one, passes, block):
        c = one[0]
        n_blocks = (x.shape[0] + block - 1) // block
        for b in numba.prange(n_blocks):
            lo = b * block
            hi = min(lo + block, x.shape[0])
            exp_block(x[lo:hi], out[lo:hi], c, passes)

    one = np.ones(1, dtype=dtype)

    def run(x, out, passes):
        exp_blocks(x, out, one, passes, _EXP_BLOCK)

    return run


def _numpy_exp_best(x, out, threads, repeat, passes=1, min_time=0.0):
    """Best time of ``passes`` np.exp passes over ``x``, one slice per Python thread (NumPy releases the GIL)."""
    bounds = np.linspace(0, x.shape[0], threads + 1).astype(int)
    slices = [slice(bounds[i], bounds[i + 1]) for i in range(threads)]

    def passes_over(s):
        for _ in range(passes):
            np.exp(x[s], out=out[s])

    if threads == 1:
        return best_of(lambda: passes_over(slices[0]), repeat, min_time=min_time)[0]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(threads) as pool:

        def run():
            for f in [pool.submit(passes_over, s) for s in slices]:
                f.result()

        return best_of(run, repeat, min_time=min_time)[0]


def measure_floors(threads, dtypes=("float32", "float64"), n_elements=1 << 25, repeat=5, min_time=0.25):
    """Measure copy/write bandwidth and exp throughput on ``threads`` threads.

    Returns a dict with ``copy_bytes_per_s`` (bytes read + written per
    second by a copy of ``n_elements`` float64, far beyond the caches for
    the default: the faster of ``plain_copy_bytes_per_s``, a ``prange``
    copy, and ``stream_copy_bytes_per_s``, one non-temporal store per
    64-byte line), ``write_bytes_per_s`` (a ``prange`` fill), and
    per dtype ``exp_per_s`` and ``exp_method``. The exp throughput is that
    of fastce's own vectorised exp (see :func:`_vectorised_exp`) on data
    that stays in the caches, so that it measures the exp and not memory
    bandwidth (a vectorised exp on 2 threads outruns DRAM); without one, of
    NumPy's ``np.exp`` on one slice per Python thread. Each measurement is
    the best of at least ``repeat`` runs adding up to ``min_time`` seconds.
    """
    copy, fill, stream_copy = _floor_kernels()
    src = np.random.default_rng(0).random(n_elements)
    dst = _aligned_empty(n_elements, np.float64)
    with _numba_threads(threads):
        t_copy = best_of(lambda: copy(src, dst), repeat, min_time=min_time)[0]
        t_stream = best_of(lambda: stream_copy(src, dst, 64), repeat, min_time=min_time)[0]
        t_fill = best_of(lambda: fill(dst, 1.5), repeat, min_time=min_time)[0]
    del src, dst
    plain = 2 * 8 * n_elements / t_copy
    streaming = 2 * 8 * n_elements / t_stream
    floors = {
        "threads": threads,
        "copy_bytes_per_s": max(plain, streaming),
        "plain_copy_bytes_per_s": plain,
        "stream_copy_bytes_per_s": streaming,
        "write_bytes_per_s": 8 * n_elements / t_fill,
        "exp_per_s": {},
        "exp_method": {},
    }
    rng = np.random.default_rng(1)
    for dname in dtypes:
        dtype = _DTYPES[dname]
        impl = _vectorised_exp(dtype)
        if impl is not None:
            n_exp, passes = 1 << 16, 64  # 4M exps per call in one parallel region, blocks in cache
            x = rng.uniform(-20.0, 0.0, n_exp).astype(dtype)
            out = np.empty_like(x)
            method, run = impl
            with _numba_threads(threads):
                t = best_of(lambda: run(x, out, passes), repeat, min_time=min_time)[0]
        else:
            n_exp, passes = 1 << 20, 4  # NumPy: an L3-sized array, a few passes per Python thread
            x = rng.uniform(-20.0, 0.0, n_exp).astype(dtype)
            out = np.empty_like(x)
            t = _numpy_exp_best(x, out, threads, repeat, passes, min_time)
            method = f"np.exp on {threads} slice(s) in {threads} Python thread(s)"
        floors["exp_per_s"][dname] = passes * n_exp / t
        floors["exp_method"][dname] = method
    return floors


# ---------------------------------------------------------------------------
# work: data, bytes, exp counts


def _work(kernel, shape, dtype):
    """``(bytes that must move, exp/log evaluations)`` for one call."""
    size = math.prod(shape)
    item = np.dtype(dtype).itemsize
    if kernel == "cross_entropy":
        n, k = shape
        # read logits, read int64 targets, write the gradient; one exp per
        # logit and one log per row.
        return 2 * size * item + 8 * n, size + n
    if kernel == "binary_cross_entropy_with_logits":
        # read logits and targets, write the gradient; exp(-|z|) and log1p.
        return 3 * size * item, 2 * size
    n, k = shape
    if kernel == "logsumexp":
        return size * item + n * item, size + n
    if kernel == "softmax":
        return 2 * size * item, size
    if kernel == "log_softmax":
        return 2 * size * item, size + n
    raise ValueError(kernel)


def make_data(kernel, shape, dtype, seed=0):
    """Random input for ``kernel``: drawn in float32 so both dtypes see the same values."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    if kernel == "binary_cross_entropy_with_logits":
        x *= 3.0
    if dtype != np.float32:
        x = x.astype(dtype)
    data = {"x": x}
    if kernel == "cross_entropy":
        data["t"] = rng.integers(0, shape[1], size=shape[0]).astype(np.intp)
    elif kernel == "binary_cross_entropy_with_logits":
        data["y"] = rng.integers(0, 2, size=shape).astype(dtype)
    return data


def _implementation(kernel, peer, data, threads):
    """A zero-argument callable doing one call of ``kernel`` with ``peer`` on ``data``.

    Returns ``(enter, fn)``: a context manager factory that sets the peer's
    thread count, and the callable. ``fn()`` returns the mean loss (losses;
    the gradient is computed and discarded) or the output array (primitives).
    """
    x = data["x"]
    if peer == "fastce, out":
        # the losses writing their gradient (grad_out=), softmax and
        # log_softmax their result (out=), into one preallocated array, as a
        # training loop would (no fresh pages for the kernel to fault in)
        import fastce

        grad = np.empty_like(x)
        if kernel in _REUSABLE_OUT:
            fn = getattr(fastce, kernel)
            return (lambda: _numba_threads(threads)), lambda: fn(x, axis=-1, out=grad)
        if kernel == "cross_entropy":
            t = data["t"]
            return contextlib.nullcontext, lambda: fastce.cross_entropy(
                x, t, return_grad=True, n_threads=threads, grad_out=grad)[0]  # fmt: skip
        y = data["y"]
        return contextlib.nullcontext, lambda: fastce.binary_cross_entropy_with_logits(
            x, y, return_grad=True, n_threads=threads, grad_out=grad)[0]  # fmt: skip
    if peer == "fastce":
        import fastce

        if kernel == "cross_entropy":
            t = data["t"]
            return contextlib.nullcontext, lambda: fastce.cross_entropy(x, t, return_grad=True, n_threads=threads)[0]
        if kernel == "binary_cross_entropy_with_logits":
            y = data["y"]
            return contextlib.nullcontext, lambda: fastce.binary_cross_entropy_with_logits(
                x, y, return_grad=True, n_threads=threads)[0]  # fmt: skip
        fn = getattr(fastce, kernel)
        return (lambda: _numba_threads(threads)), lambda: fn(x, axis=-1)
    if peer == "torch":
        import torch
        import torch.nn.functional as F

        enter = lambda: _torch_threads(threads)  # noqa: E731
        xt = torch.from_numpy(x)
        if kernel in ("cross_entropy", "binary_cross_entropy_with_logits"):
            leaf = xt.requires_grad_(True)
            if kernel == "cross_entropy":
                other = torch.from_numpy(data["t"])
                loss_fn = F.cross_entropy
            else:
                other = torch.from_numpy(data["y"])
                loss_fn = F.binary_cross_entropy_with_logits

            def fwd_bwd():
                leaf.grad = None
                loss = loss_fn(leaf, other)
                loss.backward()
                return loss.item()

            return enter, fwd_bwd
        op = {"logsumexp": torch.logsumexp, "softmax": torch.softmax, "log_softmax": torch.log_softmax}[kernel]

        def primitive():
            with torch.no_grad():
                return op(xt, -1).numpy()

        return enter, primitive
    if peer == "sklearn":
        from sklearn._loss.loss import HalfBinomialLoss, HalfMultinomialLoss

        if kernel == "cross_entropy":
            loss_obj = HalfMultinomialLoss(n_classes=x.shape[1])
            y = data["t"].astype(x.dtype)
        elif kernel == "binary_cross_entropy_with_logits":
            loss_obj = HalfBinomialLoss()
            y = data["y"]
        else:
            raise ValueError(f"sklearn has no {kernel}")
        return contextlib.nullcontext, lambda: loss_obj.loss_gradient(y, x, n_threads=threads)[0].mean()
    if peer == "scipy":
        import scipy.special

        fn = getattr(scipy.special, kernel)
        return contextlib.nullcontext, lambda: fn(x, axis=-1)
    raise ValueError(f"unknown peer {peer!r}")


# ---------------------------------------------------------------------------
# float64 NumPy reference


def _ref_rows(x64):
    m = x64.max(axis=1, keepdims=True)
    return m + np.log(np.exp(x64 - m).sum(axis=1, keepdims=True))


def reference_error(kernel, data, result, chunk_elements=1 << 22):
    """Error of ``result`` against a float64 NumPy computation on the same input values.

    Losses: ``|mean_loss - ref| / |ref|``. Primitives: ``max|out - ref| / max|ref|``.
    Works through the rows in chunks so that no full float64 copy is made.
    """
    x = data["x"]
    rows = x.shape[0]
    step = max(1, chunk_elements // max(1, math.prod(x.shape[1:])))
    if kernel in ("cross_entropy", "binary_cross_entropy_with_logits"):
        total = []
        for i in range(0, rows, step):
            x64 = x[i : i + step].astype(np.float64)
            if kernel == "cross_entropy":
                t = data["t"][i : i + step]
                total.append((_ref_rows(x64)[:, 0] - x64[np.arange(len(t)), t]).sum())
            else:
                y64 = data["y"][i : i + step].astype(np.float64)
                total.append((np.maximum(x64, 0.0) - x64 * y64 + np.log1p(np.exp(-np.abs(x64)))).sum())
        ref = math.fsum(total) / rows
        return abs(float(result) - ref) / abs(ref)
    out = np.asarray(result)
    err = 0.0
    scale = 0.0
    for i in range(0, rows, step):
        x64 = x[i : i + step].astype(np.float64)
        lse = _ref_rows(x64)
        if kernel == "logsumexp":
            ref = lse[:, 0]
        elif kernel == "softmax":
            ref = np.exp(x64 - lse)
        else:
            ref = x64 - lse
        err = max(err, float(np.max(np.abs(out[i : i + step].astype(np.float64) - ref))))
        scale = max(scale, float(np.max(np.abs(ref))))
    return err / scale if scale else err


# ---------------------------------------------------------------------------
# the run


def _fmt_shape(shape):
    return "×".join(f"{d:,}" for d in shape)


class _Progress:
    """rich.progress when available and wanted, else one line per step on stderr (or nothing)."""

    def __init__(self, total, enabled, use_rich=True):
        self.enabled = enabled
        self.rich = None
        self.count = 0
        self.total = total
        if enabled and use_rich:
            try:
                from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
            except ImportError:
                pass
            else:
                self.rich = Progress(TextColumn("[progress.description]{task.description:<60}"), BarColumn(),
                                     MofNCompleteColumn(), TimeElapsedColumn(), transient=True)  # fmt: skip
        self.task = None

    def __enter__(self):
        if self.rich is not None:
            self.rich.__enter__()
            self.task = self.rich.add_task("bench", total=self.total)
        return self

    def __exit__(self, *exc):
        if self.rich is not None:
            self.rich.__exit__(*exc)

    def step(self, description):
        self.count += 1
        if not self.enabled:
            return
        if self.rich is not None:
            self.rich.update(self.task, description=description)
        else:
            print(f"[{self.count}/{self.total}] {description}", file=sys.stderr, flush=True)

    def advance(self):
        if self.rich is not None:
            self.rich.advance(self.task)


def _workloads(spec, kernels):
    out = []
    for kernel in kernels:
        key = kernel if kernel in spec else "primitives"
        out.extend((kernel, tuple(shape)) for shape in spec[key])
    return out


def benchmark(size="quick", threads=None, dtypes=("float32", "float64"), kernels=KERNELS, peers=PEERS,
              repeat=None, sweep=False, progress=False, use_rich=True, budget=10.0, sizes=None):  # fmt: skip
    """Run the benchmark and return its results as a JSON-serialisable dict.

    Parameters
    ----------
    size : {"full", "quick", "tiny"}
        Problem sizes from :data:`SIZES`.
    threads : list of int, default=None
        Thread counts; ``None`` is ``[numba.config.NUMBA_NUM_THREADS]``.
    dtypes : sequence of {"float32", "float64"}
    kernels : sequence of names from :data:`KERNELS`
    peers : sequence of names from :data:`PEERS`
        Peers to try; those that cannot be imported are skipped (and listed
        under ``"missing_peers"``).
    repeat : int, default=None
        Timed calls per measurement, at least (the best is kept; fast calls
        are repeated for ``SIZES[size]["min_time"]`` seconds); default from the size.
    sweep : bool
        Also time cross_entropy over ``SIZES[size]["sweep_rows"]`` rows (for :func:`plot`).
    progress : bool
        Show progress (rich.progress if installed, else lines on stderr).
    budget : float
        Seconds after which a measurement stops repeating (at least 2 runs).
    sizes : dict, default=None
        Overrides of entries of ``SIZES[size]`` (e.g. ``{"cross_entropy": [(64, 8)]}``).
    """
    import numba

    spec = dict(SIZES[size])
    if sizes:
        spec.update(sizes)
    if threads is None:
        threads = [numba.config.NUMBA_NUM_THREADS]
    threads = [max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)) for n in threads]
    threads = list(dict.fromkeys(threads))
    dtypes = [np.dtype(d).name for d in dtypes]
    kernels = list(kernels)
    repeat = spec["repeat"] if repeat is None else repeat
    found = available_peers([p for p in PEERS if p in set(peers)])
    missing = [p for p in PEERS if p in set(peers) and p not in found]
    info = _machine_info(found)

    work = _workloads(spec, kernels)
    sweep_shapes = [(n, spec["sweep_classes"]) for n in spec["sweep_rows"]] if sweep else []
    sweep_peers = ["fastce"] + [p for p in _KERNEL_PEERS["cross_entropy"] if p in found]

    n_steps = 2 * len(threads)  # floors, before and after
    for kernel, shape in work:
        reused = kernel in _LOSSES or kernel in _REUSABLE_OUT
        n_steps += len(dtypes) * len(threads) * (1 + reused + sum(p in found for p in _KERNEL_PEERS[kernel]))
    n_steps += len(sweep_shapes) * len(sweep_peers)

    results = {
        "size": size,
        "repeat": repeat,
        "machine": info,
        "missing_peers": missing,
        "floors": {},
        "rows": [],
        "sweep": [],
    }
    with _Progress(n_steps, progress, use_rich) as bar:
        for n in threads:
            bar.step(f"floors: copy/write bandwidth, exp throughput, {n} thread(s)")
            results["floors"][str(n)] = measure_floors(n, dtypes, spec["floor_elements"], max(repeat, 3),
                                                       spec["floor_min_time"])  # fmt: skip
            bar.advance()
        # Row floors are filled in at the end, from the better of two floor
        # measurements (before and after the kernels): on a shared machine a
        # single one can be caught by a neighbour's burst.
        for kernel, shape in work:
            for dname in dtypes:
                dtype = _DTYPES[dname]
                data = make_data(kernel, shape, dtype)
                nbytes, n_exp = _work(kernel, shape, dtype)
                for n in threads:
                    row = {
                        "kernel": kernel,
                        "label": _LABELS[kernel],
                        "shape": list(shape),
                        "dtype": dname,
                        "threads": n,
                        "bytes": nbytes,
                        "exp_evaluations": n_exp,
                        "impl": {},
                    }
                    for peer in ("fastce",) + _KERNEL_PEERS[kernel]:
                        if peer != "fastce" and peer not in found:
                            continue
                        bar.step(f"{_LABELS[kernel]} {_fmt_shape(shape)} {dname} {n}t: {peer}")
                        enter, fn = _implementation(kernel, peer, data, n)
                        with enter():
                            best, median, runs, out = best_of(fn, repeat, budget=budget, min_time=spec["min_time"])
                        row["impl"][peer] = {
                            "time_s": best,
                            "median_s": median,
                            "runs": runs,
                            "gb_per_s": nbytes / best / 1e9,
                            "rel_error": reference_error(kernel, data, out),
                            "threads_used": 1 if peer == "scipy" else n,
                        }
                        del out
                        bar.advance()
                    if kernel in _LOSSES or kernel in _REUSABLE_OUT:
                        bar.step(f"{_LABELS[kernel]} {_fmt_shape(shape)} {dname} {n}t: fastce, out")
                        enter, fn = _implementation(kernel, "fastce, out", data, n)
                        with enter():
                            best = best_of(fn, repeat, budget=budget, min_time=spec["min_time"])[0]
                        row["reused"] = {"time_s": best, "gb_per_s": nbytes / best / 1e9}
                        bar.advance()
                    fast = row["impl"]["fastce"]
                    row["time_s"] = fast["time_s"]
                    row["gb_per_s"] = fast["gb_per_s"]
                    row["rel_error"] = fast["rel_error"]
                    row["speedup"] = {p: v["time_s"] / fast["time_s"] for p, v in row["impl"].items() if p != "fastce"}
                    results["rows"].append(row)
                del data  # arrays are freed by reference counting: no gc.collect() (slow after torch)
        if sweep_shapes:
            dname, n = dtypes[0], max(threads)
            for shape in sweep_shapes:
                data = make_data("cross_entropy", shape, _DTYPES[dname])
                nbytes, _ = _work("cross_entropy", shape, _DTYPES[dname])
                for peer in sweep_peers:
                    bar.step(f"sweep cross_entropy {_fmt_shape(shape)} {dname} {n}t: {peer}")
                    enter, fn = _implementation("cross_entropy", peer, data, n)
                    with enter():
                        best = best_of(fn, repeat, budget=budget, min_time=spec["min_time"])[0]
                    results["sweep"].append({
                        "peer": peer, "shape": list(shape), "dtype": dname, "threads": n,
                        "bytes": nbytes, "time_s": best, "gb_per_s": nbytes / best / 1e9,
                    })  # fmt: skip
                    bar.advance()
                del data
        for n in threads:
            bar.step(f"floors again: copy/write bandwidth, exp throughput, {n} thread(s)")
            again = measure_floors(n, dtypes, spec["floor_elements"], max(repeat, 3), spec["floor_min_time"])
            results["floors"][str(n)] = _best_floors(results["floors"][str(n)], again)
            bar.advance()
    for row in results["rows"]:
        floors = results["floors"][str(row["threads"])]
        row["memory_floor_s"] = row["bytes"] / floors["copy_bytes_per_s"]
        row["exp_floor_s"] = row["exp_evaluations"] / floors["exp_per_s"][row["dtype"]]
        row["floor_s"] = max(row["memory_floor_s"], row["exp_floor_s"])
        row["bound"] = "memory" if row["memory_floor_s"] >= row["exp_floor_s"] else "exp"
        row["ratio_to_floor"] = row["time_s"] / row["floor_s"]
        if "reused" in row:
            row["reused"]["ratio_to_floor"] = row["reused"]["time_s"] / row["floor_s"]
            row["reused"]["speedup"] = {p: v["time_s"] / row["reused"]["time_s"] for p, v in row["impl"].items()
                                        if p != "fastce"}  # fmt: skip
    return results


def _best_floors(a, b):
    """The higher of two measurements of each rate (the machine can do at least that)."""
    out = dict(a)
    for key in ("copy_bytes_per_s", "plain_copy_bytes_per_s", "stream_copy_bytes_per_s", "write_bytes_per_s"):
        out[key] = max(a[key], b[key])
    out["exp_per_s"] = {d: max(a["exp_per_s"][d], b["exp_per_s"][d]) for d in a["exp_per_s"]}
    return out


# ---------------------------------------------------------------------------
# output


def _ms(seconds):
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 10 else f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def _table_columns(results):
    peers = [p for p in PEERS if any(p in row["impl"] for row in results["rows"])]
    header = ["kernel", "shape", "dtype", "thr", "fastce ms", "GB/s", "floor ms", "bound", "x floor",
              "out ms", "out x floor", "rel err vs f64"]  # fmt: skip
    header += [f"vs {p}" for p in peers]
    body = []
    for row in results["rows"]:
        reused = row.get("reused")
        cells = [row["label"], _fmt_shape(row["shape"]), row["dtype"], str(row["threads"]), _ms(row["time_s"]),
                 f"{row['gb_per_s']:.1f}", _ms(row["floor_s"]), row["bound"], f"{row['ratio_to_floor']:.2f}",
                 _ms(reused["time_s"]) if reused else "", f"{reused['ratio_to_floor']:.2f}" if reused else "",
                 f"{row['rel_error']:.1e}"]  # fmt: skip
        for p in peers:
            if p in row["impl"]:
                cells.append(f"{row['speedup'][p]:.2f}x ({_ms(row['impl'][p]['time_s'])} ms)")
            elif p in _KERNEL_PEERS[row["kernel"]]:
                cells.append("n/a")
            else:
                cells.append("")
        body.append(cells)
    return header, body


def _preamble(results):
    m = results["machine"]
    lines = [
        f"fastce {m['fastce']} bench ({results['size']} sizes, best of {results['repeat']}) on {m['cpu']}, "
        f"{m['cpu_count']} CPUs; numba {m['numba']} ({m['threading_layer']} layer), numpy {m['numpy']}",
        "peers: " + (", ".join(f"{k} {v}" for k, v in m["peers"].items()) or "none")
        + (f"; not installed: {', '.join(results['missing_peers'])}" if results["missing_peers"] else ""),
    ]
    for n, f in results["floors"].items():
        exps = ", ".join(f"{d} {v / 1e9:.2f}e9/s" for d, v in f["exp_per_s"].items())
        method = "; ".join(dict.fromkeys(f["exp_method"].values()))
        lines.append(f"floors, {n} thread(s): copy {f['copy_bytes_per_s'] / 1e9:.1f} GB/s (read+write; plain stores "
                     f"{f['plain_copy_bytes_per_s'] / 1e9:.1f}, streaming stores {f['stream_copy_bytes_per_s'] / 1e9:.1f}), "
                     f"write {f['write_bytes_per_s'] / 1e9:.1f} GB/s; exp {exps} ({method})")  # fmt: skip
    beaten = [r for r in results["rows"] if r.get("ratio_to_floor", 1.0) < 0.9]
    if beaten:
        lines.append(f"warning: {len(beaten)} row(s) ran faster than their measured floor: the floors were measured "
                     "while the machine was busy (other processes on the cores); rerun on a quiet machine")  # fmt: skip
    lines.append("floor = max(bytes that must move / copy bandwidth, exp+log evaluations / exp throughput); "
                 "'out': the losses' gradient (grad_out=) or the result of softmax/log_softmax (out=) "
                 "written into one reused array (a fresh one costs the kernel page faults; the copy floor writes "
                 "into an existing array); "
                 "'vs peer' = peer time / fastce time (>1: fastce faster); rel err: mean loss (losses) or "
                 "max|out-ref|/max|ref| (primitives) vs float64 NumPy on the same values; "
                 "scipy runs on 1 thread")  # fmt: skip
    return lines


def format_table(results):
    """The results as plain text: a few lines about the machine and floors, then the table."""
    header, body = _table_columns(results)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(header)]
    left = {0, 1, 2, 7}

    def line(cells):
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = _preamble(results) + ["", line(header), "  ".join("-" * w for w in widths)]
    out += [line(r) for r in body]
    return "\n".join(out)


def print_table(results, use_rich=True, file=None):
    """Print the table with rich when installed (and ``use_rich``), else as plain text."""
    file = sys.stdout if file is None else file
    if use_rich:
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            use_rich = False
    if not use_rich:
        print(format_table(results), file=file)
        return
    header, body = _table_columns(results)
    # The table is never squeezed below its natural width (rich would cut
    # every cell to "…" on an 80-column terminal): a narrow terminal wraps
    # the lines instead.
    needed = 4 + sum(3 + max(len(h), *(len(r[i]) for r in body)) if body else 3 + len(h) for i, h in enumerate(header))
    width = Console(file=file).width if file.isatty() else 0
    console = Console(file=file, width=max(width, needed))
    for text in _preamble(results):
        console.print(text, highlight=False, soft_wrap=True)
    table = Table(show_lines=False)
    for i, h in enumerate(header):
        table.add_column(h, justify="left" if i in {0, 1, 2, 7} else "right", no_wrap=True)
    for r in body:
        table.add_row(*r)
    console.print(table)


def plot(results, path):
    """PNG of achieved GB/s against logits size for cross_entropy, fastce and peers (needs ``sweep=True``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not results["sweep"]:
        raise ValueError("the results hold no size sweep: run benchmark(..., sweep=True)")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for peer in dict.fromkeys(s["peer"] for s in results["sweep"]):
        pts = [s for s in results["sweep"] if s["peer"] == peer]
        ax.plot([s["bytes"] for s in pts], [s["gb_per_s"] for s in pts], marker="o", label=peer)
    first = results["sweep"][0]
    floors = results["floors"].get(str(first["threads"]))
    if floors:
        ax.axhline(floors["copy_bytes_per_s"] / 1e9, color="grey", linestyle="--",
                   label=f"copy bandwidth ({first['threads']} threads)")  # fmt: skip
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("bytes that must move (logits read + gradient written + targets)")
    ax.set_ylabel("GB/s")
    ax.set_title(f"cross_entropy loss+grad, N×{first['shape'][1]:,} {first['dtype']}, {first['threads']} threads")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------
# command line


def add_arguments(parser):
    """Add the options of ``python -m fastce bench`` to an :class:`argparse.ArgumentParser`."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--quick", action="store_const", const="quick", dest="size",
                       help="about 10x smaller problems, best of 3 (a minute or two)")  # fmt: skip
    group.add_argument("--tiny", action="store_const", const="tiny", dest="size",
                       help="toy problems that only check the machinery (tests)")  # fmt: skip
    group.add_argument("--size", choices=sorted(SIZES), dest="size", help="problem sizes (default: full)")
    parser.set_defaults(size="full")
    parser.add_argument("--threads", type=int, nargs="+", metavar="N",
                        help="thread counts to measure (default: all of Numba's threads)")  # fmt: skip
    parser.add_argument("--dtype", nargs="+", choices=sorted(_DTYPES), default=["float32", "float64"],
                        help="dtypes (default: float32 float64)")  # fmt: skip
    parser.add_argument("--kernels", nargs="+", choices=KERNELS, default=list(KERNELS), metavar="KERNEL",
                        help=f"kernels to run (default: all of {', '.join(KERNELS)})")  # fmt: skip
    parser.add_argument("--peers", nargs="*", choices=PEERS, default=list(PEERS), metavar="PEER",
                        help="peers to compare with if installed (default: torch sklearn scipy; "
                             "none: --peers alone)")  # fmt: skip
    parser.add_argument("--repeat", type=int, metavar="K", help="timed calls per measurement at least (best kept)")
    parser.add_argument("--plot", metavar="PATH", help="write a PNG of GB/s vs size for cross_entropy (matplotlib)")
    parser.add_argument("--json", metavar="PATH", help="write the results as JSON")
    parser.add_argument("--plain", action="store_true", help="plain-text table and progress even if rich is installed")
    parser.add_argument("--no-progress", action="store_true", help="no progress display")
    return parser


def run(args):
    """Run ``python -m fastce bench`` for parsed ``args``; returns the exit status."""
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("--plot needs matplotlib: pip install matplotlib", file=sys.stderr)
            return 2
    results = benchmark(
        size=args.size,
        threads=args.threads,
        dtypes=args.dtype,
        kernels=args.kernels,
        peers=args.peers,
        repeat=args.repeat,
        sweep=bool(args.plot),
        progress=not args.no_progress,
        use_rich=not args.plain,
    )
    print_table(results, use_rich=not args.plain)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
        print(f"results written to {args.json}")
    if args.plot:
        plot(results, args.plot)
        print(f"plot written to {args.plot}")
    return 0


def main(argv=None):
    """Stand-alone entry point: ``python -m fastce._bench [options]``."""
    parser = argparse.ArgumentParser(prog="python -m fastce bench", description=DESCRIPTION)
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
