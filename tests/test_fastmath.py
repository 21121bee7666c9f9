"""fastce's vectorisable exp, log and log1p against NumPy over the whole float range."""

import numba
import numpy as np
import pytest

from fastce import _kernels as K


@numba.njit
def _apply(kind, x, out):
    for i in range(x.shape[0]):
        if kind == 0:
            out[i] = K.fexp(x[i])
        elif kind == 1:
            out[i] = K.flog(x[i])
        elif kind == 2:
            out[i] = K.flog1p(x[i])
        else:
            out[i] = K.flog1p_unit(x[i])


def _ulp_error(got, ref, dtype):
    got = got.astype(np.float64)
    ref = ref.astype(np.float64)
    spacing = np.spacing(np.abs(ref).astype(dtype)).astype(np.float64)
    return np.abs(got - ref) / spacing


def _reference(kind, x):
    x64 = x.astype(np.float64)
    with np.errstate(all="ignore"):
        return (np.exp, np.log, np.log1p, np.log1p)[kind](x64)


def _check(kind, x, max_ulp):
    out = np.empty_like(x)
    _apply(kind, x, out)
    with np.errstate(over="ignore"):
        ref = _reference(kind, x).astype(x.dtype)  # correctly rounded to the dtype (for float32)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    special = ~np.isfinite(ref) | (ref == 0)
    np.testing.assert_array_equal(out[special], ref[special])
    normal = ~special & (np.abs(ref) >= np.finfo(x.dtype).tiny)
    err = _ulp_error(out[normal], _reference(kind, x)[normal], x.dtype)
    assert err.max() <= max_ulp, (x[normal][err.argmax()], err.max())
    tiny = ~special & ~normal  # subnormal results: absolute error of a couple of subnormal steps
    step = np.finfo(x.dtype).smallest_subnormal
    assert np.all(np.abs(out[tiny].astype(np.float64) - ref[tiny].astype(np.float64)) <= 2 * float(step))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_whole_range(dtype):
    info = np.finfo(dtype)
    hi = float(np.log(info.max)) + 1
    lo = float(np.log(info.smallest_subnormal)) - 2
    rng = np.random.default_rng(0)
    x = np.concatenate([
        np.linspace(lo, hi, 200_001),
        np.linspace(lo - 20, lo, 20_001),  # across the clamp of the argument (-110 / -760): results 0
        rng.uniform(-1, 1, 100_000),
        rng.uniform(-1e-6, 1e-6, 1000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, hi + 100, lo - 100, float(np.log(info.max))],
    ]).astype(dtype)
    _check(0, x, 2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log_whole_range(dtype):
    info = np.finfo(dtype)
    rng = np.random.default_rng(1)
    x = np.concatenate([
        np.exp(rng.uniform(np.log(float(info.smallest_subnormal)), np.log(float(info.max)), 200_000)),
        rng.uniform(0.5, 2.0, 100_000),
        [0.0, -0.0, -1.0, np.inf, -np.inf, np.nan, float(info.max), float(info.tiny), float(info.smallest_subnormal), 1.0],
    ]).astype(dtype)
    _check(1, x, 2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p(dtype):
    rng = np.random.default_rng(2)
    x = np.concatenate([
        rng.uniform(-1, 1, 100_000),
        np.exp(rng.uniform(-700 if dtype == np.float64 else -85, 80, 100_000)),
        -np.exp(rng.uniform(-80, 0, 10_000)),
        [0.0, -1.0, np.inf, np.nan, 1e-30, -1e-30],
    ]).astype(dtype)
    _check(2, x, 4.0)


@numba.njit
def _apply_unit_recip(x, out_log, out_recip):
    for i in range(x.shape[0]):
        out_log[i], out_recip[i] = K.flog1p_unit_recip(x[i])


def _unit_inputs(dtype):
    """[0, 1]: float32 through its bit patterns by a stride (subnormals, both
    sides of the branch at sqrt(2) - 1, and 1 included), float64 sampled."""
    if dtype == np.float32:
        one = int(np.float32(1.0).view(np.uint32))
        x = np.arange(0, one + 1, 37, dtype=np.uint32).view(np.float32)
    else:
        rng = np.random.default_rng(3)
        x = np.concatenate([rng.uniform(0, 1, 300_000), np.exp(rng.uniform(-745, 0, 100_000))])
    branch = np.float64(np.sqrt(2.0) - 1.0).astype(dtype)
    edges = [0.0, 1.0, float(branch), float(np.nextafter(branch, dtype(0))), float(np.nextafter(branch, dtype(1))),
             float(np.finfo(dtype).smallest_subnormal), float(np.finfo(dtype).tiny), np.nan]  # fmt: skip
    return np.concatenate([x, np.array(edges, dtype=dtype)])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_unit_interval(dtype):
    """flog1p_unit: log1p on [0, 1], the softplus term of the sigmoid losses."""
    _check(3, _unit_inputs(dtype), 2.0)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_log1p_unit_recip(dtype):
    """flog1p_unit_recip: (log1p(v), 1 / (1 + v)) on [0, 1] with one division."""
    x = _unit_inputs(dtype)
    out_log, out_recip = np.empty_like(x), np.empty_like(x)
    _apply_unit_recip(x, out_log, out_recip)
    finite = ~np.isnan(x)
    assert np.isnan(out_log[~finite]).all() and np.isnan(out_recip[~finite]).all()
    x64 = x[finite].astype(np.float64)
    assert _ulp_error(out_log[finite], np.log1p(x64), x.dtype)[x64 > 0].max() <= 4.0  # as flog1p
    assert np.all(out_log[finite][x64 == 0] == 0)
    assert _ulp_error(out_recip[finite], 1.0 / (1.0 + x64), x.dtype).max() <= 3.0


def test_kernels_ask_for_wide_vectors():
    """The loops of the kernels carry LLVM's "prefer-vector-width"="512"
    (K._wide_vectors): the attribute reaches the compiled module, and a
    kernel without the call does not get it (so the check can fail)."""
    x = np.linspace(-3.0, 3.0, 64)
    out = np.empty_like(x)
    # compiled here, not loaded from Numba's cache (which keeps no LLVM IR)
    wide = numba.njit(fastmath=set(K.FASTMATH), error_model="numpy")(K.exp_array.py_func)
    wide(x, out)
    np.testing.assert_allclose(out, np.exp(x), rtol=1e-15)
    assert K._WIDE_VECTORS in wide.inspect_llvm(wide.signatures[0])

    @numba.njit
    def plain(x, out):
        for i in range(x.shape[0]):
            out[i] = K.fexp(x[i])

    plain(x, out)
    assert K._WIDE_VECTORS not in plain.inspect_llvm(plain.signatures[0])


@numba.njit
def _row_maxima(x, lengths, out):
    for i in range(lengths.shape[0]):
        out[i] = K._row_max(x[i, : lengths[i]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_row_max_against_nanmax(dtype):
    """K._row_max (hand-written vector code: four accumulators, one vector
    at a time, a masked last vector, lanes combined by halving) equals
    np.nanmax on every length around its vector boundaries, with NaN
    skipped wherever it lies, all NaN giving NaN, and +-inf."""
    rng = np.random.default_rng(7)
    lengths = np.array([n for n in range(1, 200) for _ in range(6)] + [1000, 1023, 1024, 1025, 4099] * 6)
    x = rng.normal(scale=10.0, size=(lengths.size, lengths.max())).astype(dtype)
    for i, n in enumerate(lengths):
        case = i % 6
        if case == 1:
            x[i, rng.integers(0, n)] = np.nan
        elif case == 2:
            x[i, :n] = np.nan
        elif case == 3:
            x[i, rng.integers(0, n)] = np.inf
        elif case == 4:
            x[i, :n] = -np.inf
        elif case == 5:
            x[i, :n][rng.random(n) < 0.5] = np.nan
            x[i, n - 1] = np.nan  # in the masked last vector
    out = np.empty(lengths.size, dtype=dtype)
    _row_maxima(x, lengths, out)
    ref = np.array([np.nan if np.isnan(r[:n]).all() else np.nanmax(r[:n]) for r, n in zip(x, lengths)], dtype=dtype)
    np.testing.assert_array_equal(out, ref)


@numba.njit(fastmath=set(K.FASTMATH), error_model="numpy")
def _exp_both(x, general, nonpos):
    K._wide_vectors()  # vectorised, as in the kernels
    for i in range(x.shape[0]):
        general[i] = K.fexp(x[i])
    for i in range(x.shape[0]):
        nonpos[i] = K.fexp_nonpos(x[i])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_exp_nonpos_is_exp_below_zero(dtype):
    """fexp_nonpos (one built power of two times a constant) equals fexp
    bit for bit on x <= 0: float32 through its negative bit patterns by a
    stride, float64 sampled (both with the subnormal results, -0, -inf and
    NaN); test_exp_whole_range checks fexp itself against NumPy."""
    if dtype == np.float32:
        x = np.arange(0x80000000, 0xFF800001, 61, dtype=np.uint64).astype(np.uint32).view(np.float32)
    else:
        rng = np.random.default_rng(5)
        x = np.concatenate([-rng.uniform(0, 800, 1_000_000), -np.exp(rng.uniform(-745, 7, 300_000))])
    x = np.concatenate([x, np.array([0.0, -0.0, -np.inf, np.nan, -87.3, -103.9, -745.1, -708.4], dtype=dtype)])
    x = x.astype(dtype)
    general, nonpos = np.empty_like(x), np.empty_like(x)
    _exp_both(x, general, nonpos)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(nonpos.view(bits), general.view(bits))


@numba.njit
def _scale(g, a):
    K._scale_row(g, a)


def _round_to_float32(p):
    """The float32 nearest to the Fraction ``p`` (ties to even), and the
    distance from ``p`` to the nearest float32 midpoint relative to ``p``."""
    from fractions import Fraction

    if p == 0:
        return np.float32(0.0), np.inf
    c = np.float32(float(p))  # within one ulp (float64 first: may round twice)
    cands = [np.nextafter(c, np.float32(-np.inf)), c, np.nextafter(c, np.float32(np.inf))]
    best = min(cands, key=lambda q: (abs(Fraction(float(q)) - p), int(np.float32(q).view(np.uint32)) & 1))
    lo, hi = sorted(cands, key=float)[0::2]
    mids = [(Fraction(float(lo)) + Fraction(float(c))) / 2, (Fraction(float(c)) + Fraction(float(hi))) / 2]
    return best, min(abs(p - m) for m in mids) / abs(p)


def test_scale_row_rounds_once():
    # float32 rows times a float64 factor: each product of at least 2**-100
    # the exact one rounded once to float32, except next to a rounding
    # midpoint, smaller ones within one ulp (see _scale_row); float64 rows
    # and factors out of the split's range as a * g exactly.
    from fractions import Fraction

    rng = np.random.default_rng(5)
    g = (rng.random(4000) ** 8).astype(np.float32)
    g[:3] = [0.0, 1.0, np.nan]
    for a in (1e-5 / 1.37, 0.1234567891234, 3.3e-7, 1.0, 2.0**-99 * 1.1):
        got = g.copy()
        _scale(got, a)
        for v, r in zip(g[3:], got[3:]):
            p = Fraction(a) * Fraction(float(v))
            want, to_mid = _round_to_float32(p)
            if abs(p) >= Fraction(2) ** -100:
                assert r == want or to_mid < 2.0**-46, (a, v, r, want)
            else:  # lo * v may round among the subnormals: within one ulp
                assert abs(float(r) - float(want)) <= np.spacing(want), (a, v, r, want)
        assert got[0] == 0.0 and got[1] == np.float32(a) and np.isnan(got[2])
    for a in (2.0**-120, 2.0**110, np.inf, np.nan, -3.5):
        got = g.copy()
        _scale(got, a)
        with np.errstate(all="ignore"):
            np.testing.assert_array_equal(got, (a * g.astype(np.float64)).astype(np.float32))
    g64 = g.astype(np.float64)
    got = g64.copy()
    _scale(got, 0.1234567891234)
    np.testing.assert_array_equal(got, 0.1234567891234 * g64)
