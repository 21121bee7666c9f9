"""The asv suite in benchmarks/ runs: ``asv run --python=same --quick``.

With ``FASTCE_ASV_SMALL=1`` (shapes about 100 times smaller and fewer
parameter combinations, see ``benchmarks/benchmarks/common.py``) so that it
takes a few minutes.
asv exits with status 2 when a benchmark fails (an exception in ``setup``
or in the timed function; skips are not failures), so this test fails when
a change breaks a benchmark. Nothing is timed or asserted about speed, and
``--dry-run`` saves no results.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "benchmarks"


@pytest.mark.slow
def test_asv_quick_run_passes(tmp_path):
    pytest.importorskip("asv")
    if not (BENCHMARKS / "asv.conf.json").is_file():
        pytest.skip("no benchmarks/ folder next to the tests (installed package only)")
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("asv needs the git checkout of fastce")
    env = dict(os.environ)
    env["HOME"] = str(tmp_path)  # asv's machine file, ~/.asv-machine.json
    env["FASTCE_ASV_SMALL"] = "1"
    asv = [sys.executable, "-m", "asv"]
    machine = subprocess.run(
        asv + ["machine", "--yes", "--machine", "fastce-ci"],
        cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert machine.returncode == 0, machine.stdout + machine.stderr
    run = subprocess.run(
        asv + ["run", "--python=same", "--quick", "--dry-run", "--show-stderr", "--machine", "fastce-ci"],
        cwd=BENCHMARKS, env=env, capture_output=True, text=True, timeout=1800,
    )  # fmt: skip
    output = run.stdout + run.stderr
    assert run.returncode == 0, f"asv run failed (exit status {run.returncode}):\n{output[-20000:]}"
    assert "benchmark failed" not in output
    # a benchmark of every suite module ran (asv shortens long names from the left)
    for name in ("CrossEntropy.time_loss_grad", "LogSumExp.time_last_axis", "FirstCall.timeraw_first_call",
                 "LogisticRegressionFit.time_fit", "LinearCrossEntropy.",
                 "NumbaFloor.timeraw_first_call_trivial_njit"):  # fmt: skip
        assert f"{name}" in output, f"{name} did not run:\n{output[-5000:]}"
