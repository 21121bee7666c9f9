"""Sphinx configuration for the fastce documentation.

Build with ``sphinx-build -W --keep-going -b html docs docs/_build/html``.
The build needs no network: cross-references to NumPy, SciPy, scikit-learn,
PyTorch, Python and Numba are resolved through intersphinx only when the
environment variable ``FASTCE_DOCS_INTERSPHINX=1`` is set (which needs
internet access); otherwise they are left as plain literal text, silently.
"""

import os
import sys
from pathlib import Path

# Document the source tree next to this folder, not whatever copy is installed.
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import fastce  # noqa: E402

# -- Project -----------------------------------------------------------------

project = "fastce"
author = "The fastce developers"
copyright = "The fastce developers"
release = fastce.__version__
version = release

# -- General -----------------------------------------------------------------

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinx.ext.mathjax",
    "numpydoc",
]

exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]
# Unresolved references to other projects (scipy.special.logsumexp,
# torch.nn.functional.cross_entropy, ...) must stay silent when intersphinx is
# off: keep nitpicky off.
nitpicky = False

# -- autodoc / autosummary / numpydoc ------------------------------------------

autosummary_generate = True  # writes docs/generated/*.rst (git-ignored) at build time
autodoc_typehints = "none"
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False

# -- doctest (optional builder: sphinx-build -b doctest docs docs/_build/doctest)

import doctest  # noqa: E402

doctest_default_flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE

# -- intersphinx (opt-in: the build machine is offline) ------------------------

_INTERSPHINX = {
    "python": ("https://docs.python.org/3", None),
    "numpy": ("https://numpy.org/doc/stable/", None),
    "scipy": ("https://docs.scipy.org/doc/scipy/", None),
    "sklearn": ("https://scikit-learn.org/stable/", None),
    "torch": ("https://docs.pytorch.org/docs/stable/", None),
    "numba": ("https://numba.readthedocs.io/en/stable/", None),
}
if os.environ.get("FASTCE_DOCS_INTERSPHINX", "").strip() == "1":
    intersphinx_mapping = _INTERSPHINX
else:
    intersphinx_mapping = {}

# -- HTML ----------------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"fastce {release}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
}
html_show_sourcelink = False
