"""The ``python -m fastce bench`` logic (fastce._bench) on toy sizes.

Only properties are checked (every kernel row is there, floors are positive,
the accuracy column is measured against a float64 reference); never timings.
"""

import argparse
import json
import math
import os
import sys
import types

import numpy as np
import pytest
import scipy.special as sp

import fastce
from fastce import _bench

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference as R  # noqa: E402


@pytest.fixture(scope="module")
def results():
    return _bench.benchmark(size="tiny", repeat=1, progress=False)


def _expected_rows(size="tiny", dtypes=("float32", "float64")):
    spec = _bench.SIZES[size]
    rows = set()
    for kernel in _bench.KERNELS:
        shapes = spec[kernel] if kernel in spec else spec["primitives"]
        rows |= {(kernel, tuple(s), d) for s in shapes for d in dtypes}
    return rows


def test_every_kernel_row_is_in_the_results_and_the_table(results):
    got = {(r["kernel"], tuple(r["shape"]), r["dtype"]) for r in results["rows"]}
    assert got == _expected_rows()
    table = _bench.format_table(results)
    lines = table.splitlines()
    for kernel, shape, dtype in _expected_rows():
        label, shape_text = _bench._LABELS[kernel], _bench._fmt_shape(shape)
        assert any(label in line and shape_text in line and dtype in line for line in lines), (kernel, shape, dtype)
    for peer in results["machine"]["peers"]:
        assert f"vs {peer}" in table


def test_floors_are_positive_and_consistent(results):
    for n, floors in results["floors"].items():
        assert int(n) >= 1
        assert floors["copy_bytes_per_s"] > 0 and math.isfinite(floors["copy_bytes_per_s"])
        assert floors["write_bytes_per_s"] > 0 and math.isfinite(floors["write_bytes_per_s"])
        # the memory floor takes the faster of the plain and the streaming copy
        assert floors["copy_bytes_per_s"] == max(floors["plain_copy_bytes_per_s"], floors["stream_copy_bytes_per_s"])
        assert set(floors["exp_per_s"]) == {"float32", "float64"}
        assert all(v > 0 and math.isfinite(v) for v in floors["exp_per_s"].values())
    for row in results["rows"]:
        floors = results["floors"][str(row["threads"])]
        assert row["memory_floor_s"] == pytest.approx(row["bytes"] / floors["copy_bytes_per_s"])
        assert row["exp_floor_s"] == pytest.approx(row["exp_evaluations"] / floors["exp_per_s"][row["dtype"]])
        assert row["floor_s"] == max(row["memory_floor_s"], row["exp_floor_s"]) > 0
        assert row["time_s"] > 0 and row["ratio_to_floor"] == pytest.approx(row["time_s"] / row["floor_s"])
        assert row["gb_per_s"] == pytest.approx(row["bytes"] / row["time_s"] / 1e9)
        for peer, speedup in row["speedup"].items():
            assert speedup == pytest.approx(row["impl"][peer]["time_s"] / row["time_s"])
        # the losses (grad_out=), softmax and log_softmax (out=) are also timed writing into a reused array
        reusable = ("cross_entropy", "binary_cross_entropy_with_logits", "softmax", "log_softmax")
        assert ("reused" in row) == (row["kernel"] in reusable)
        if "reused" in row:
            reused = row["reused"]
            assert reused["time_s"] > 0 and reused["ratio_to_floor"] == pytest.approx(reused["time_s"] / row["floor_s"])
            for peer, speedup in reused["speedup"].items():
                assert speedup == pytest.approx(row["impl"][peer]["time_s"] / reused["time_s"])


def _independent_error(kernel, data, dtype):
    """fastce's result on the bench data, against float64 references not taken from fastce._bench."""
    x = data["x"]
    x64 = x.astype(np.float64)
    if kernel == "cross_entropy":
        got = float(fastce.cross_entropy(x, data["t"], return_grad=True)[0])
        ref = float(R.cross_entropy(x64, data["t"])[0])
        return abs(got - ref) / abs(ref)
    if kernel == "binary_cross_entropy_with_logits":
        got = float(fastce.binary_cross_entropy_with_logits(x, data["y"], return_grad=True)[0])
        ref = float(R.binary_cross_entropy_with_logits(x64, data["y"])[0])
        return abs(got - ref) / abs(ref)
    got = getattr(fastce, kernel)(x, axis=-1)
    assert got.dtype == dtype
    ref = getattr(sp, kernel)(x64, axis=-1)
    return float(np.max(np.abs(got.astype(np.float64) - ref)) / np.max(np.abs(ref)))


def test_accuracy_column_is_against_a_float64_reference(results):
    for row in results["rows"]:
        dtype = np.dtype(row["dtype"])
        data = _bench.make_data(row["kernel"], tuple(row["shape"]), dtype.type)
        expected = _independent_error(row["kernel"], data, dtype)
        # Same float64 reference up to float64 rounding: the column is fastce's
        # error, not a float32-vs-float32 difference.
        assert row["rel_error"] == pytest.approx(expected, rel=1e-3, abs=1e-14), row["kernel"]
        if dtype == np.float32:
            assert 0 <= row["rel_error"] < 1e-5
        else:
            assert row["rel_error"] < 1e-12
    # float32 rounding shows: a float32 reference would give (mostly) exact zeros.
    f32 = [r["rel_error"] for r in results["rows"] if r["dtype"] == "float32"]
    assert sum(e > 0 for e in f32) > len(f32) // 2


def test_reference_error_matches_scipy_in_float64():
    for kernel in ("logsumexp", "softmax", "log_softmax"):
        data = _bench.make_data(kernel, (50, 7), np.float32)
        out = getattr(sp, kernel)(data["x"], axis=-1)
        ref = getattr(sp, kernel)(data["x"].astype(np.float64), axis=-1)
        expected = np.max(np.abs(out - ref)) / np.max(np.abs(ref))
        assert _bench.reference_error(kernel, data, out, chunk_elements=64) == pytest.approx(expected, rel=1e-6)


def test_missing_peers_are_skipped(monkeypatch):
    real = _bench._import_peer

    def only_scipy(name):
        if name in ("torch", "sklearn"):
            raise ImportError(f"no {name} here")
        return real(name)

    monkeypatch.setattr(_bench, "_import_peer", only_scipy)
    res = _bench.benchmark(size="tiny", repeat=1, dtypes=["float32"], kernels=["cross_entropy", "softmax"])
    assert res["missing_peers"] == ["torch", "sklearn"]
    assert set(res["machine"]["peers"]) == {"scipy"}
    for row in res["rows"]:
        assert set(row["impl"]) == ({"fastce", "scipy"} if row["kernel"] == "softmax" else {"fastce"})
    table = _bench.format_table(res)
    assert "not installed: torch, sklearn" in table
    assert "vs scipy" in table and "vs torch" not in table


def test_sizes_override_and_threads():
    res = _bench.benchmark(size="tiny", repeat=1, threads=[1], dtypes=["float64"], kernels=["cross_entropy"],
                           peers=[], sizes={"cross_entropy": [(3, 4)], "floor_elements": 1 << 16})  # fmt: skip
    assert [(tuple(r["shape"]), r["threads"], list(r["impl"])) for r in res["rows"]] == [((3, 4), 1, ["fastce"])]
    assert list(res["floors"]) == ["1"]


def test_exp_floor_uses_the_kernels_exp():
    floors = _bench.measure_floors(1, ["float32", "float64"], n_elements=1 << 16, repeat=1, min_time=0.0)
    for dtype in ("float32", "float64"):
        assert floors["exp_method"][dtype].startswith("fastce._kernels.fexp_nonpos in one Numba prange region")
        assert floors["exp_per_s"][dtype] > 0


def test_exp_floor_checks_the_exp_and_falls_back_to_numpy(monkeypatch):
    def floors_with(fexp_nonpos, dtypes):
        monkeypatch.setattr(fastce, "_kernels", types.SimpleNamespace(fexp_nonpos=fexp_nonpos))
        monkeypatch.setattr(_bench, "_exp_impl_cache", {})
        return _bench.measure_floors(1, dtypes, n_elements=1 << 16, repeat=1, min_time=0.0)

    floors = floors_with(lambda x: math.exp(x), ["float64"])  # a plain Python exp: compiled with numba.njit
    assert floors["exp_method"]["float64"].startswith("fastce._kernels.fexp_nonpos in one Numba prange region")
    floors = floors_with(lambda x: x, ["float32"])  # wrong: rejected
    assert floors["exp_method"]["float32"].startswith("np.exp")
    assert floors["exp_per_s"]["float32"] > 0


def test_command_line_end_to_end(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    _bench.add_arguments(sub.add_parser("bench"))
    args = parser.parse_args(["bench", "--quick", "--threads", "1", "2", "--dtype", "float32"])
    assert (args.size, args.threads, args.dtype) == ("quick", [1, 2], ["float32"])
    assert parser.parse_args(["bench"]).size == "full"

    out_json = tmp_path / "bench.json"
    argv = ["--tiny", "--plain", "--no-progress", "--kernels", "cross_entropy", "--dtype", "float32",
            "--repeat", "1", "--json", str(out_json)]  # fmt: skip
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        png = None
    else:
        png = tmp_path / "bench.png"
        argv += ["--plot", str(png)]
    assert _bench.main(argv) == 0
    printed = capsys.readouterr().out
    assert "cross_entropy loss+grad" in printed and "floors, " in printed
    saved = json.loads(out_json.read_text())
    assert {tuple(r["shape"]) for r in saved["rows"]} == {tuple(s) for s in _bench.SIZES["tiny"]["cross_entropy"]}
    if png is not None:
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert {s["peer"] for s in saved["sweep"]} >= {"fastce"}


@pytest.mark.parametrize("n", [0, 5, 8, 63, 64, 1000, 8 * 64 * 3, 8 * 64 * 3 + 5, 12_345])
def test_streaming_floor_copy_copies(n):
    """The streaming copy of the memory floor (whole 64-byte lines by
    non-temporal stores, the rest plainly) copies every element, for sizes
    around its blocks and lines, into an aligned destination."""
    _, _, stream_copy = _bench._floor_kernels()
    src = np.random.default_rng(n).random(n)
    dst = _bench._aligned_empty(n, np.float64)
    assert (n == 0 or dst.ctypes.data % 64 == 0) and dst.shape == (n,)
    dst[:] = np.nan
    stream_copy(src, dst, 64)
    np.testing.assert_array_equal(dst, src)
