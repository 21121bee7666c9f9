"""Import time and the first call in a fresh process, with Numba's cache warm and cold.

``timeraw_*`` benchmarks return code that asv runs in a new interpreter,
one per sample: ``(statement, setup)``, only the statement is timed.
"""

import os
import shutil
import subprocess
import sys
import tempfile


class Import:
    def timeraw_import_fastce(self):
        # Lazy submodules: no Numba, no compilation.
        return "import fastce"

    def timeraw_import_fastce_losses(self):
        # Imports Numba and defines the kernels (nothing compiled yet).
        return "import fastce.losses"


_DATA = """
import numpy as np
rng = np.random.default_rng(0)
x = rng.standard_normal((100_000, 10), dtype=np.float32)
t = rng.integers(0, 10, size=100_000)
z = x.ravel().copy()
y = (rng.random(z.shape[0]) < 0.5).astype(np.float32)
import fastce
"""

_CALLS = {
    "cross_entropy": "fastce.cross_entropy(x, t, return_grad=True)",
    "binary_cross_entropy_with_logits": "fastce.binary_cross_entropy_with_logits(z, y, return_grad=True)",
    "softmax": "fastce.softmax(x, axis=-1)",
}


class FirstCall:
    """First call of a function (float32, large enough for the parallel kernel) in a fresh process.

    ``warm``: Numba's cache (NUMBA_CACHE_DIR) was filled by an earlier process,
    so the kernels are loaded; ``cold``: an empty cache folder per sample, so
    they are compiled. Importing Numba is part of the first call (``import
    fastce`` does not import it).
    """

    params = [list(_CALLS), ["warm", "cold"]]
    param_names = ["function", "cache"]
    timeout = 600
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self, function, cache):
        self.root = tempfile.mkdtemp(prefix="fastce-asv-numba-cache-")
        self.warm_dir = os.path.join(self.root, "warm")
        os.makedirs(self.warm_dir)
        if cache == "warm":
            stmt, setup = self._code(function, cache)
            subprocess.run([sys.executable, "-c", setup + "\n" + stmt], check=True)

    def teardown(self, function, cache):
        shutil.rmtree(self.root, ignore_errors=True)

    def _code(self, function, cache):
        if cache == "warm":
            cache_dir = repr(self.warm_dir)
        else:
            cache_dir = f"tempfile.mkdtemp(dir={self.root!r})"
        setup = (
            "import os, tempfile\n"
            f"os.environ['NUMBA_CACHE_DIR'] = {cache_dir}\n"
            "os.environ['FASTCE_CACHE'] = '1'\n" + _DATA
        )
        return _CALLS[function], setup

    def timeraw_first_call(self, function, cache):
        return self._code(function, cache)


_TRIVIAL_MODULE = """
import numba

@numba.njit(cache=True)
def total(x):
    s = 0.0
    for i in range(x.shape[0]):
        s += x[i]
    return s
"""


class NumbaFloor:
    """The same measurement for a trivial cached ``numba.njit`` function (a
    loop summing a vector) in its own module: what any Numba-based package
    pays on its first call in a fresh process, the reference for
    ``FirstCall.timeraw_first_call(..., 'warm')``. The statement imports
    Numba and the module and makes the first call; the cache is warm."""

    timeout = 300
    number = 1
    repeat = (1, 5, 60.0)

    def setup(self):
        self.root = tempfile.mkdtemp(prefix="fastce-asv-numba-floor-")
        with open(os.path.join(self.root, "fastce_asv_trivial.py"), "w") as fh:
            fh.write(_TRIVIAL_MODULE)
        stmt, setup = self.timeraw_first_call_trivial_njit()
        subprocess.run([sys.executable, "-c", setup + "\n" + stmt], check=True)

    def teardown(self):
        shutil.rmtree(self.root, ignore_errors=True)

    def timeraw_first_call_trivial_njit(self):
        setup = (
            "import os, sys\n"
            f"os.environ['NUMBA_CACHE_DIR'] = {os.path.join(self.root, 'cache')!r}\n"
            f"sys.path.insert(0, {self.root!r})\n"
            "import numpy as np\n"
            "x = np.ones(1000)\n"
        )
        return "import fastce_asv_trivial\nfastce_asv_trivial.total(x)", setup
