"""Process-wide settings: Numba cache, threading layer, thread counts.

Everything here is read once, on first use, never at ``import fastce`` time
(importing Numba and resolving the threading layer is deferred until a kernel
is actually needed).

Environment variables
---------------------
FASTCE_CACHE
    ``"0"`` disables Numba's on-disk cache for fastce's kernels (default on).
NUMBA_CACHE_DIR
    Numba's own variable: where cached machine code goes. Set it when neither
    the package folder nor the home folder is writable.
NUMBA_THREADING_LAYER
    Numba's own variable. When unset, fastce asks Numba for a layer that is
    safe for concurrent calls (``"threadsafe"``: OpenMP or TBB) and falls back
    to ``"workqueue"`` with a lock (see :func:`parallel_guard`).
"""

import contextlib
import operator
import os
import threading

__all__ = ["cache_enabled", "ensure_threading_layer", "resolve_n_threads", "parallel_guard", "run_kernel"]


def cache_enabled():
    """Whether kernels are compiled with ``cache=True`` (env ``FASTCE_CACHE``)."""
    return os.environ.get("FASTCE_CACHE", "1").strip().lower() not in {"0", "false", "no", "off"}


_layer_lock = threading.Lock()
_layer = None  # the name of the threading layer once launched
_workqueue_lock = threading.Lock()
# Set in a child process forked after the thread pool was started: GNU
# OpenMP kills such a child on its first parallel region ("fork() called from
# a process already using GNU OpenMP"), so the child runs the serial kernels.
_forked_child = False


def _after_fork_in_child():
    global _forked_child
    _forked_child = True


def ensure_threading_layer():
    """Launch Numba's thread pool once, on a layer that tolerates concurrent calls.

    Returns the name of the layer in use (``"omp"``, ``"tbb"`` or ``"workqueue"``).
    """
    global _layer
    if _layer is not None:
        return _layer
    with _layer_lock:
        if _layer is not None:
            return _layer
        import numba
        from numba.np.ufunc import parallel

        user_choice = "NUMBA_THREADING_LAYER" in os.environ
        if not user_choice and numba.config.THREADING_LAYER == "default":
            numba.config.THREADING_LAYER = "threadsafe"
        try:
            parallel._launch_threads()
        except (ValueError, ImportError, OSError):
            if user_choice:
                raise
            # Neither OpenMP nor TBB could be loaded: use the workqueue layer,
            # which is made safe by parallel_guard().
            numba.config.THREADING_LAYER = "workqueue"
            parallel._launch_threads()
        _layer = numba.threading_layer()
        if hasattr(os, "register_at_fork"):
            os.register_at_fork(after_in_child=_after_fork_in_child)
        return _layer


def max_threads():
    """Largest thread count Numba can use in this process."""
    import numba

    return numba.config.NUMBA_NUM_THREADS


def resolve_n_threads(n_threads):
    """Turn the public ``n_threads`` argument into a count in [1, max_threads()].

    ``None`` means the current Numba setting of the calling thread (all cores
    by default, or what :func:`numba.set_num_threads` set); a negative value
    counts back from all cores as in joblib (``-1`` = all, ``-2`` = all but one).
    """
    import numba

    if n_threads is None:
        return numba.get_num_threads()
    if isinstance(n_threads, bool):
        raise TypeError("n_threads must be None or an int, got bool")
    try:
        n = operator.index(n_threads)
    except TypeError:
        raise TypeError(f"n_threads must be None or an int, got {type(n_threads).__name__}") from None
    if n == 0:
        raise ValueError("n_threads must be a positive int, a negative int (-1 = all cores) or None, got 0")
    total = max_threads()
    if n < 0:
        n = max(1, total + 1 + n)
    return min(n, total)


@contextlib.contextmanager
def parallel_guard(n_threads):
    """Decide whether this call may run the parallel kernel, and with how many threads.

    Yields ``True`` when the caller should run the parallel variant (with the
    thread count set for the duration), ``False`` for the serial variant
    (always in a process forked after the thread pool started).
    With the ``workqueue`` layer only one parallel region may run at a time in
    the process; a call that finds it busy runs serially instead of aborting.
    """
    if n_threads <= 1 or _forked_child:
        yield False
        return
    import numba

    layer = ensure_threading_layer()
    lock = _workqueue_lock if layer == "workqueue" else None
    if lock is not None and not lock.acquire(blocking=False):
        yield False
        return
    previous = numba.get_num_threads()
    try:
        numba.set_num_threads(n_threads)
        yield True
    finally:
        numba.set_num_threads(previous)
        if lock is not None:
            lock.release()


# Below this many elements a call runs the serial kernel: waking the thread
# pool costs more than it saves.
PARALLEL_MIN_ELEMENTS = 1 << 15


def run_kernel(parallel_kernel, serial_kernel, n_threads, n_elements, *args):
    """Run the parallel or the serial twin of a kernel on ``args``.

    ``n_threads`` is the public argument (validated here); ``n_elements`` the
    size of the work, so that small calls stay serial.
    """
    if n_elements < PARALLEL_MIN_ELEMENTS:
        # serial whatever the thread count: only check the argument (asking
        # Numba for its thread count costs microseconds a small call notices)
        if n_threads is not None:
            resolve_n_threads(n_threads)
        return serial_kernel(*args)
    n = resolve_n_threads(n_threads)
    with parallel_guard(n) as parallel:
        return (parallel_kernel if parallel else serial_kernel)(*args)


_BLAS_CONTROLLER = None


def blas_limit(n_threads):
    """A context limiting the BLAS libraries to ``n_threads`` threads (no-op for ``None``).

    So that BLAS and the Numba kernels of the same call do not oversubscribe
    the cores (threadpoolctl, which scikit-learn brings).
    """
    global _BLAS_CONTROLLER
    if n_threads is None:
        return contextlib.nullcontext()
    if _BLAS_CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROLLER = ThreadpoolController()  # finding the libraries costs a few ms: once
    return _BLAS_CONTROLLER.limit(limits=n_threads, user_api="blas")
