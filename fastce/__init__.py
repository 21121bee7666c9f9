"""fastce: exact, stable and fast cross-entropy on parallel Numba kernels.

Primitives with :mod:`scipy.special` semantics (:func:`logsumexp`,
:func:`softmax`, :func:`log_softmax`, :func:`sigmoid`, :func:`log_sigmoid`)
losses with :mod:`torch.nn.functional` semantics whose gradient comes
out of the same pass as the loss (:func:`cross_entropy`,
:func:`binary_cross_entropy`, :func:`binary_cross_entropy_with_logits`),
Keras-style loss classes (:mod:`fastce.keras`) and a scikit-learn
compatible :class:`LogisticRegression` fitted on the same kernels.

Submodules are imported on first use, so ``import fastce`` does not import
Numba or compile anything.
"""

import importlib

from ._version import __version__

_LAZY = {
    "logsumexp": "special",
    "softmax": "special",
    "log_softmax": "special",
    "sigmoid": "special",
    "log_sigmoid": "special",
    "cross_entropy": "losses",
    "binary_cross_entropy": "losses",
    "binary_cross_entropy_with_logits": "losses",
    "linear_cross_entropy": "linear_ce",
    "LogisticRegression": "linear_model",
}

__all__ = sorted(_LAZY) + ["__version__"]


_SUBMODULES = ("special", "losses", "linear_model", "keras", "dask")


def __getattr__(name):
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'fastce' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))
