"""Threading layer, concurrency, thread counts and Numba's cache.

Subprocesses are used where a failure would otherwise kill the test process
(Numba's workqueue layer aborts on concurrent use) or where the environment
must be set before Numba is imported.
"""

import os
import shutil
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numba
import numpy as np
import pytest

import fastce
from fastce import _config

ROOT = Path(fastce.__file__).resolve().parent.parent


def _run(code, env_update=None, cwd=None, timeout=600):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "FASTCE_"))}
    env.update(env_update or {})
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _workload(seed):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(40_000, 7)).astype(np.float32)
    t = rng.integers(0, 7, size=40_000)
    p = rng.uniform(0.01, 0.99, size=x.shape).astype(np.float32)
    return x, t, p


def _calls(x, t, p):
    return [
        fastce.cross_entropy(x, t, label_smoothing=0.1, return_grad=True),
        fastce.binary_cross_entropy_with_logits(x, p, return_grad=True),
        fastce.binary_cross_entropy(p, (p > 0.5), return_grad=True),
        fastce.log_softmax(x, axis=1),
        fastce.logsumexp(x, axis=1),
        fastce.sigmoid(x),
    ]


def _same(a, b):
    if isinstance(a, tuple):
        return all(_same(u, v) for u, v in zip(a, b))
    return np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True)


def test_eight_threads_many_calls_equal_serial():
    """8 Python threads x 15 calls each of every kernel on parallel-sized
    inputs: no abort, and every result equal to a single-threaded run."""
    data = [_workload(seed) for seed in range(4)]
    expected = []
    for x, t, p in data:
        prev = numba.get_num_threads()
        numba.set_num_threads(1)
        try:
            expected.append(_calls(x, t, p))
        finally:
            numba.set_num_threads(prev)
    errors = []

    def worker(k):
        try:
            for i in range(15):
                j = (k + i) % len(data)
                got = _calls(*data[j])
                for g, e in zip(got, expected[j]):
                    if not _same(g, e):
                        errors.append((k, i, j))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []


CONCURRENT_SCRIPT = """
import threading, numpy as np, numba, fastce
from fastce._config import ensure_threading_layer
rng = np.random.default_rng(0)
x = rng.normal(size=(60_000, 5))
t = rng.integers(0, 5, size=60_000)
ref = fastce.cross_entropy(x, t, return_grad=True, n_threads=1)
bad = []
def work():
    for _ in range(20):
        loss, grad = fastce.cross_entropy(x, t, return_grad=True)
        if loss != ref[0] or not np.array_equal(grad, ref[1]):
            bad.append(1)
ths = [threading.Thread(target=work) for _ in range(8)]
[th.start() for th in ths]
[th.join() for th in ths]
print(ensure_threading_layer(), len(bad))
"""


@pytest.mark.parametrize("layer", [None, "workqueue", "omp"])
def test_concurrent_calls_do_not_abort(layer):
    """The default choice, the fallback (workqueue + lock) and OpenMP survive
    8 threads calling at once, with results equal to the serial ones."""
    if layer == "omp":
        pytest.importorskip("numba.np.ufunc.omppool", reason="OpenMP layer not built")
    env = {} if layer is None else {"NUMBA_THREADING_LAYER": layer}
    proc = _run(CONCURRENT_SCRIPT, env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    name, n_bad = proc.stdout.split()
    assert n_bad == "0"
    if layer is not None:
        assert name == layer
    else:
        assert name in {"omp", "tbb", "workqueue"}


def test_n_threads_results_identical():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(70_001, 6))
    t = rng.integers(0, 6, size=70_001)
    a = fastce.cross_entropy(x, t, return_grad=True, n_threads=1)
    b = fastce.cross_entropy(x, t, return_grad=True, n_threads=2)
    c = fastce.cross_entropy(x, t, return_grad=True, n_threads=-1)
    assert a[0] == b[0] == c[0]
    assert np.array_equal(a[1], b[1]) and np.array_equal(a[1], c[1])


def test_n_threads_does_not_leak_into_caller():
    before = numba.get_num_threads()
    x = np.zeros((50_000, 2))
    fastce.cross_entropy(x, np.zeros(50_000, dtype=int), n_threads=1)
    assert numba.get_num_threads() == before


@pytest.mark.parametrize("bad", [0, 1.5, "2", True])
def test_n_threads_rejected(bad):
    with pytest.raises((TypeError, ValueError), match="n_threads"):
        fastce.cross_entropy(np.zeros((3, 2)), np.zeros(3, dtype=int), n_threads=bad)


def test_resolve_n_threads_counts_from_the_top():
    total = _config.max_threads()
    assert _config.resolve_n_threads(-1) == total
    assert _config.resolve_n_threads(10**6) == total
    assert _config.resolve_n_threads(-(10**6)) == 1


def test_cache_is_used_by_a_second_process(tmp_path):
    """A second process loads the compiled kernels from the cache instead of
    compiling them (Numba's dispatcher statistics say so): kernels of the
    module, among them the drivers that call the generated tile functions
    through their address, and a tile function generated per class count
    (ce_index_lanes), which Numba must locate by the module's file."""
    code = """
    import numpy as np, fastce
    from fastce import _kernels as K
    x = np.zeros((3, 4), dtype=np.float32)
    t = np.zeros(3, dtype=np.intp)
    fastce.cross_entropy(x, t, return_grad=True)  # generated for 4 classes
    fastce.cross_entropy(x, t, weight=np.ones(4), return_grad=True)  # the general kernel
    for kernel in (K._ce_lanes_tile(4), K.ce_lanes_ser, K.ce_index_ser):
        s = kernel.stats
        print(sum(s.cache_hits.values()), sum(s.cache_misses.values()))
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    first = _run(code, env)
    assert first.returncode == 0, first.stderr[-2000:]
    second = _run(code, env)
    assert second.returncode == 0, second.stderr[-2000:]
    for line1, line2 in zip(first.stdout.splitlines(), second.stdout.splitlines(), strict=True):
        hits1, misses1 = map(int, line1.split())
        hits2, misses2 = map(int, line2.split())
        assert misses1 >= 1 and hits1 == 0
        assert hits2 >= 1 and misses2 == 0


def test_cache_follows_the_helpers_a_kernel_inlines(tmp_path):
    """Numba's cache checks only the file that defines a function. The Keras
    kernels inline flog / flog1p of fastce._kernels (_jit(follows=True)): an
    edit of _kernels.py alone must make them compile again, not load the
    code cached before it; without an edit they load from the cache."""
    site = tmp_path / "site"
    shutil.copytree(ROOT / "fastce", site / "fastce", ignore=shutil.ignore_patterns("__pycache__"))
    code = """
    import numpy as np, fastce.keras as fk
    from fastce import _keras_kernels as KK
    p = np.full((3, 5), 0.25, dtype=np.float32)
    fk.BinaryCrossentropy(n_threads=1).loss_and_grad(np.ones_like(p), p)
    s = KK.bce_ser.stats
    print(sum(s.cache_hits.values()), sum(s.cache_misses.values()))
    """
    env = {"NUMBA_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(site), "PYTHONDONTWRITEBYTECODE": "1"}

    def hits_and_misses():
        proc = _run(code, env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return tuple(map(int, proc.stdout.split()))

    assert hits_and_misses() == (0, 1)  # compiled
    assert hits_and_misses() == (1, 0)  # loaded from the cache
    kernels = site / "fastce" / "_kernels.py"
    kernels.write_text(kernels.read_text() + "\n# an edit\n")
    assert hits_and_misses() == (0, 1)  # compiled again


def test_tiles_compiled_without_avx512(tmp_path):
    """Compiled for a CPU without AVX-512 (NUMBA_CPU_NAME=haswell and the
    host's features without avx512*), the tiles keep the direct transposes
    and their limits of 48 bytes (masked stores are slow there) and the
    generated float64 cross_entropy kernels stop at 8 classes: softmax and
    cross_entropy with its gradient on both sides of those limits, and in
    the row layout (whose hand-written row maximum then runs on 256-bit
    halves), against SciPy and the float64 formulas."""
    import llvmlite.binding as ll

    features = ",".join(("-" if k.startswith("avx512") else ("+" if v else "-")) + k for k, v in ll.get_host_cpu_features().items())
    code = """
    import numpy as np, scipy.special as sp, fastce
    from fastce import _kernels as K
    assert (K._AVX512, K._SHUFFLE_MAX_F32, K._SHUFFLE_MAX_F64) == (False, 12, 6)
    assert K.CE_LANES_MAX_CLASSES[np.dtype(np.float64)] == 8
    rng = np.random.default_rng(0)
    for dtype, counts in ((np.float32, (5, 12, 13, 203)), (np.float64, (5, 6, 7, 8, 9, 101))):
        for c in counts:
            x = rng.normal(size=(64 * 3 + 5, c)).astype(dtype)
            t = rng.integers(0, c, x.shape[0])
            p = sp.softmax(x.astype(np.float64), axis=-1)
            np.testing.assert_allclose(fastce.softmax(x, axis=-1), p, rtol=1e-5 if dtype == np.float32 else 1e-13)
            loss, grad = fastce.cross_entropy(x, t, return_grad=True)
            onehot = np.eye(c)[t]
            want = -np.mean(np.log(p[np.arange(t.size), t]))
            np.testing.assert_allclose(loss, want, rtol=1e-5 if dtype == np.float32 else 1e-13)
            np.testing.assert_allclose(grad, (p - onehot) / t.size, rtol=1e-4 if dtype == np.float32 else 1e-12, atol=1e-12)
    print("ok")
    """
    env = {"NUMBA_CPU_NAME": "haswell", "NUMBA_CPU_FEATURES": features, "NUMBA_CACHE_DIR": str(tmp_path / "cache")}
    proc = _run(code, env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["ok"]


def test_works_where_no_cache_folder_is_writable(tmp_path):
    """With the package folder and the home cache unusable and no
    NUMBA_CACHE_DIR, Numba's cache=True would raise at import; fastce must
    import and compute, compiling in memory."""
    pkg = tmp_path / "site" / "fastce"
    shutil.copytree(ROOT / "fastce", pkg, ignore=shutil.ignore_patterns("__pycache__"))
    # A regular file where Numba wants its __pycache__ folder, and a HOME that
    # is a file: no cache folder can be created (this works even as root,
    # where chmod would not stop writes).
    (pkg / "__pycache__").write_text("not a folder")
    blocker = tmp_path / "home-is-a-file"
    blocker.write_text("")
    code = """
    import numpy as np, fastce
    from fastce import _kernels as K
    loss = fastce.cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))
    print(K._cache, repr(float(loss)))
    """
    env = {
        "PYTHONPATH": str(tmp_path / "site"),
        "HOME": str(blocker),
        "XDG_CACHE_HOME": str(blocker / "cache"),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    proc = _run(code, env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cached, loss = proc.stdout.split()
    assert cached == "False"
    assert float(loss) == pytest.approx(np.log(2.0), rel=1e-15)


def test_cache_can_be_disabled():
    proc = _run(
        "from fastce import _kernels as K; import fastce; print(K._cache, fastce.__file__)",
        {"FASTCE_CACHE": "0"},
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[0] == "False"


def test_import_is_lazy():
    """``import fastce`` must not import Numba (nor compile anything)."""
    proc = _run("import sys, fastce; print('numba' in sys.modules)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "False"



FORK_SCRIPT = """
import os, numpy as np, fastce
x = np.random.default_rng(0).normal(size=(100_000, 5))
t = np.random.default_rng(1).integers(0, 5, size=100_000)
parent = fastce.cross_entropy(x, t, return_grad=True)  # starts the thread pool
pid = os.fork()
if pid == 0:
    loss, grad = fastce.cross_entropy(x, t, return_grad=True)
    os._exit(0 if loss == parent[0] and np.array_equal(grad, parent[1]) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_after_parallel_use_runs_serially_in_the_child():
    """GNU OpenMP kills a forked child on its first parallel region; fastce's
    child must run the serial kernels and get the parent's result."""
    proc = _run(FORK_SCRIPT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "0", proc.stderr[-2000:]


def test_concurrent_fits_equal_the_serial_fit():
    """4 Python threads fitting at once (multinomial on float64: BLAS called
    from inside the kernels' threads) get the serial fit's coefficients."""
    from fastce import LogisticRegression

    rng = np.random.default_rng(7)
    X = rng.normal(size=(40_000, 20))  # blocks of 312 rows: BLAS chunks of 256 and 56
    y = rng.integers(0, 4, size=40_000)
    ref = LogisticRegression(n_jobs=1).fit(X, y)
    results, errors = [], []

    def work():
        try:
            for _ in range(3):
                results.append(LogisticRegression().fit(X, y).coef_)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(repr(exc))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert len(results) == 12
    for coef in results:
        np.testing.assert_array_equal(coef, ref.coef_)
