"""The Sphinx documentation in docs/: it builds without a warning, and the
``>>>`` examples of its pages run and print what they show."""

import doctest
import os
import subprocess
import sys
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parent.parent / "docs"
PAGES = sorted(DOCS.glob("*.rst"))


def test_docs_build_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    pytest.importorskip("pydata_sphinx_theme")
    env = dict(os.environ)
    env.pop("FASTCE_DOCS_INTERSPHINX", None)  # intersphinx needs the network
    result = subprocess.run(
        [
            sys.executable, "-m", "sphinx",
            "-W", "--keep-going", "-q", "-E",
            "-b", "html",
            "-d", str(tmp_path / "doctrees"),
            str(DOCS), str(tmp_path / "html"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, f"sphinx-build failed:\n{result.stdout}\n{result.stderr}"
    assert (tmp_path / "html" / "index.html").is_file()
    # api.rst must list every public name (autosummary gives each a page)
    import fastce

    missing = [
        name for name in fastce.__all__
        if name != "__version__" and not (tmp_path / "html" / "generated" / f"fastce.{name}.html").is_file()
    ]  # fmt: skip
    assert not missing, f"public names missing from docs/api.rst: {missing}"


def test_docs_examples():
    assert PAGES, f"no .rst pages in {DOCS}"
    failures = {}
    attempted = 0
    for page in PAGES:
        result = doctest.testfile(
            str(page),
            module_relative=False,
            optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE,
            verbose=False,
            report=True,
        )
        attempted += result.attempted
        if result.failed:
            failures[page.name] = result.failed
    assert not failures, f"failing doc examples (details above): {failures}"
    assert attempted > 0
