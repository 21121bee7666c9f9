"""Tests for the scipy.special-like primitives of fastce.

fastce.logsumexp, softmax, log_softmax, sigmoid and log_sigmoid are checked
against independent references only: scipy.special (installed scipy is the
reference implementation), mpmath at high precision, closed-form values and
mathematical properties (hypothesis).  See /work/notes/API_SPEC.md,
section "Primitives".
"""

import itertools as it
import math
import zlib

import mpmath
import numpy as np
import pytest
import scipy.special as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fastce
from fastce import log_sigmoid, log_softmax, logsumexp, sigmoid, softmax

# scipy (and possibly fastce) warn on inf - inf, log(0), ... ; values are what we test.
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")

EPS64 = np.finfo(np.float64).eps
EPS32 = np.finfo(np.float32).eps
EPS16 = np.finfo(np.float16).eps

FUNCS = {"logsumexp": logsumexp, "softmax": softmax, "log_softmax": log_softmax,
         "sigmoid": sigmoid, "log_sigmoid": log_sigmoid}
SCIPY = {"logsumexp": sp.logsumexp, "softmax": sp.softmax, "log_softmax": sp.log_softmax,
         "sigmoid": sp.expit, "log_sigmoid": sp.log_expit}


# --------------------------------------------------------------------------- helpers

def assert_same_type(res, ref):
    """Same container kind (ndarray vs numpy scalar), dtype and shape as the reference."""
    if isinstance(ref, np.ndarray):
        assert isinstance(res, np.ndarray), f"expected ndarray, got {type(res)}"
    else:
        assert isinstance(ref, np.generic)
        assert isinstance(res, np.generic) and not isinstance(res, np.ndarray), (
            f"expected numpy scalar {type(ref)}, got {type(res)}")
    assert res.dtype == ref.dtype, f"dtype {res.dtype} != reference {ref.dtype}"
    assert res.shape == ref.shape, f"shape {res.shape} != reference {ref.shape}"


def assert_close(res, ref, rtol, atol):
    """allclose in float64 with NaN positions and infinities required to match."""
    res = np.asarray(res, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    np.testing.assert_array_equal(np.isnan(res), np.isnan(ref), err_msg="NaN positions differ")
    np.testing.assert_allclose(res, ref, rtol=rtol, atol=atol, equal_nan=True)


def _ordered(x, dtype):
    """Map floats onto integers so that consecutive floats differ by 1."""
    x = np.asarray(x, dtype=dtype)
    if dtype == np.float64:
        i = x.view(np.int64)
        return np.where(i < 0, np.int64(-(2**63)) - i, i).astype(object)
    i = x.view(np.int32).astype(np.int64)
    return np.where(i < 0, np.int64(-(2**31)) - i, i)


def ulp_diff(a, b, dtype=np.float64):
    a = np.asarray(a, dtype=dtype)
    b = np.asarray(b, dtype=dtype)
    d = np.abs(_ordered(a, dtype) - _ordered(b, dtype))
    return np.asarray(d, dtype=np.float64)


def assert_ulp_close(res, ref, maxulp, dtype=np.float64):
    """<= maxulp apart, or both within the subnormal range (absolute error < tiny).

    scipy's expit flushes results below the normal range to 0, which is accepted
    (from either side).  NaN and infinities must match exactly.
    """
    res = np.asarray(res)
    ref = np.asarray(ref, dtype=dtype)
    assert res.dtype == dtype
    np.testing.assert_array_equal(np.isnan(res), np.isnan(ref), err_msg="NaN positions differ")
    ok = np.isnan(ref)
    fin = np.isfinite(ref) & np.isfinite(res)
    inf_eq = ~np.isfinite(ref) & ~np.isnan(ref) & (res == ref)
    tiny = np.finfo(dtype).smallest_normal
    close = np.zeros(ref.shape, bool)
    close[fin] = (ulp_diff(res[fin], ref[fin], dtype) <= maxulp) | (
        np.abs(res[fin].astype(np.float64) - ref[fin].astype(np.float64)) < tiny)
    good = ok | inf_eq | close
    if not good.all():
        bad = np.flatnonzero(~good)[:10]
        raise AssertionError(
            f"{(~good).sum()} elements more than {maxulp} ulp apart; e.g. "
            + ", ".join(f"got {res.flat[i]!r} want {ref.flat[i]!r}" for i in bad))


def make_input(rng, shape, dtype, scale=5.0):
    dtype = np.dtype(dtype)
    if dtype.kind == "f":
        x = rng.normal(scale=scale if dtype.itemsize > 2 else 3.0, size=shape)
    else:
        x = rng.integers(-20, 21, size=shape)
    return np.asarray(x).astype(dtype)


def compute_eps(out_dtype):
    """Working precision we require of fastce: float64 for float64 results,
    float32 (the spec says float16 is computed in float32) otherwise."""
    return EPS64 if np.dtype(out_dtype) == np.float64 else EPS32


RTOL = {np.dtype(np.float64): 1e-12, np.dtype(np.float32): 2e-6, np.dtype(np.float16): 2e-3}


def tolerances(kind, out_dtype, x, eps_c=None):
    """(rtol, atol) for a result of `kind` in `out_dtype` computed from input x.

    The natural error of logsumexp / log_softmax is absolute, ~eps * |x|; the one
    of softmax is relative, ~eps * (|x_i| + |lse|).
    """
    out_dtype = np.dtype(out_dtype)
    eps_c = compute_eps(out_dtype) if eps_c is None else eps_c
    xf = np.asarray(x, dtype=np.float64)
    finite = xf[np.isfinite(xf)]
    scale = 1.0 + (np.abs(finite).max() if finite.size else 0.0) + math.log(max(xf.size, 1))
    tiny = float(np.finfo(out_dtype).smallest_normal)
    rtol = RTOL[out_dtype]
    if kind == "softmax":
        return rtol + 8 * eps_c * scale, tiny
    return rtol, 4 * eps_c * scale + tiny


def check_vs_scipy(kind, x, res, args=(), same_dtype_values=True, **kw):
    """Compare res = fastce.<kind>(x, ...) with scipy: type/dtype/shape equal to
    scipy on the same input; values close to scipy on float64-upcast input (the
    accurate reference) and, more loosely, to scipy on the same input."""
    ref_same = SCIPY[kind](x, *args, **kw)
    if kind == "logsumexp" and kw.get("return_sign"):
        assert isinstance(res, tuple) and len(res) == 2
        for r, rr in zip(res, ref_same):
            assert_same_type(r, rr)
        res, ref_same = res[0], ref_same[0]
    else:
        assert_same_type(res, ref_same)
    out_dtype = ref_same.dtype
    x64 = np.asarray(x, dtype=np.float64)
    ref_hi = SCIPY[kind](x64, *args, **kw)
    if kind == "logsumexp" and kw.get("return_sign"):
        ref_hi = ref_hi[0]
    ref_hi = np.asarray(ref_hi).astype(out_dtype)
    rtol, atol = tolerances(kind, out_dtype, x)
    assert_close(res, ref_hi, rtol, atol)
    if not same_dtype_values:
        return
    # scipy on the same dtype computes in that dtype: looser
    rtol, atol = tolerances(kind, out_dtype, x, eps_c=np.finfo(out_dtype).eps)
    assert_close(res, ref_same, 2 * rtol, 2 * atol)


# ===================================================================================
# Ported from SciPy's scipy/special/tests/test_logsumexp.py (scipy 1.17).
# Copyright (c) 2001-2002 Enthought, Inc. 2003, SciPy Developers.
# Distributed under the BSD-3-Clause license (see scipy's LICENSE.txt).
# Adapted: real NumPy input only (no `xp` fixture, no complex or array-API cases);
# the assertion helpers below mimic scipy's xp_assert_close / xp_assert_equal
# (dtype and shape must match, 0-d results must be numpy scalars).
# ===================================================================================

def xp_assert_close(actual, desired, rtol=None, atol=0):
    desired = np.asarray(desired)
    if desired.ndim == 0:
        assert isinstance(actual, np.generic), f"0-d result should be a numpy scalar: {type(actual)}"
    actual = np.asarray(actual)
    assert actual.dtype == desired.dtype, f"{actual.dtype} != {desired.dtype}"
    assert actual.shape == desired.shape, f"{actual.shape} != {desired.shape}"
    if rtol is None:
        rtol = np.finfo(actual.dtype).eps ** 0.5 * 4
    np.testing.assert_allclose(actual, desired, rtol=rtol, atol=atol, equal_nan=True)


def xp_assert_equal(actual, desired):
    desired = np.asarray(desired)
    if desired.ndim == 0:
        assert isinstance(actual, np.generic), f"0-d result should be a numpy scalar: {type(actual)}"
    actual = np.asarray(actual)
    assert actual.dtype == desired.dtype, f"{actual.dtype} != {desired.dtype}"
    assert actual.shape == desired.shape, f"{actual.shape} != {desired.shape}"
    np.testing.assert_array_equal(actual, desired)


scipy_dtypes = ["float32", "float64", "int32", "int64"]


class TestLogSumExpScipy:
    def test_logsumexp(self):
        # Test with zero-size array
        a = np.asarray([])
        desired = np.asarray(-np.inf)
        xp_assert_equal(logsumexp(a), desired)

        # Test whether logsumexp() function correctly handles large inputs.
        a = np.arange(200., dtype=np.float64)
        desired = np.log(np.sum(np.exp(a)))
        xp_assert_close(logsumexp(a), desired)

        # Now test with large numbers
        b = np.asarray([1000., 1000.])
        desired = np.asarray(1000.0 + math.log(2.0))
        xp_assert_close(logsumexp(b), desired)

        n = 1000
        b = np.full((n,), 10000)
        desired = np.asarray(10000.0 + math.log(n))
        xp_assert_close(logsumexp(b), desired)

        x = np.asarray([1e-40] * 1000000)
        logx = np.log(x)
        X = np.stack([x, x])
        logX = np.stack([logx, logx])
        xp_assert_close(np.exp(logsumexp(logX)), np.sum(X))
        xp_assert_close(np.exp(logsumexp(logX, axis=0)), np.sum(X, axis=0))
        xp_assert_close(np.exp(logsumexp(logX, axis=1)), np.sum(X, axis=1))

        # Handling special values properly
        inf = np.asarray([np.inf])
        nan = np.asarray([np.nan])
        xp_assert_equal(logsumexp(inf), inf[0])
        xp_assert_equal(logsumexp(-inf), -inf[0])
        xp_assert_equal(logsumexp(nan), nan[0])
        xp_assert_equal(logsumexp(np.asarray([-np.inf, -np.inf])), -inf[0])

        # Handling an array with different magnitudes on the axes
        a = np.asarray([[1e10, 1e-10],
                        [-1e10, -np.inf]])
        ref = np.asarray([1e10, -1e10])
        xp_assert_close(logsumexp(a, axis=-1), ref)

        # Test keeping dimensions
        ref = np.expand_dims(ref, axis=-1)
        xp_assert_close(logsumexp(a, axis=-1, keepdims=True), ref)

        # Test multiple axes
        xp_assert_close(logsumexp(a, axis=(-1, -2)), np.asarray(1e10))

    def test_logsumexp_b(self):
        a = np.arange(200., dtype=np.float64)
        b = np.arange(200., 0., -1.)
        desired = np.log(np.sum(b * np.exp(a)))
        xp_assert_close(logsumexp(a, b=b), desired)

        a = np.asarray([1000, 1000])
        b = np.asarray([1.2, 1.2])
        desired = np.asarray(1000 + math.log(2 * 1.2))
        xp_assert_close(logsumexp(a, b=b), desired)

        x = np.asarray([1e-40] * 100000)
        b = np.linspace(1, 1000, 100000)
        logx = np.log(x)
        X = np.stack((x, x))
        logX = np.stack((logx, logx))
        B = np.stack((b, b))
        xp_assert_close(np.exp(logsumexp(logX, b=B)), np.sum(B * X))
        xp_assert_close(np.exp(logsumexp(logX, b=B, axis=0)), np.sum(B * X, axis=0))
        xp_assert_close(np.exp(logsumexp(logX, b=B, axis=1)), np.sum(B * X, axis=1))

    def test_logsumexp_sign(self):
        a = np.asarray([1, 1, 1])
        b = np.asarray([1, -1, -1])

        r, s = logsumexp(a, b=b, return_sign=True)
        xp_assert_close(r, np.asarray(1.))
        xp_assert_equal(s, np.asarray(-1.))

    def test_logsumexp_sign_zero(self):
        a = np.asarray([1, 1])
        b = np.asarray([1, -1])

        r, s = logsumexp(a, b=b, return_sign=True)
        assert not np.isfinite(r)
        assert not np.isnan(r)
        assert r < 0
        assert s == 0

    def test_logsumexp_sign_shape(self):
        a = np.ones((1, 2, 3, 4))
        b = np.ones_like(a)

        r, s = logsumexp(a, axis=2, b=b, return_sign=True)
        assert r.shape == s.shape == (1, 2, 4)

        r, s = logsumexp(a, axis=(1, 3), b=b, return_sign=True)
        assert r.shape == s.shape == (1, 3)

    def test_logsumexp_shape(self):
        a = np.ones((1, 2, 3, 4))
        b = np.ones_like(a)

        r = logsumexp(a, axis=2, b=b)
        assert r.shape == (1, 2, 4)

        r = logsumexp(a, axis=(1, 3), b=b)
        assert r.shape == (1, 3)

    def test_logsumexp_b_zero(self):
        a = np.asarray([1, 10000])
        b = np.asarray([1, 0])

        xp_assert_close(logsumexp(a, b=b), np.asarray(1.))

    def test_logsumexp_b_shape(self):
        a = np.zeros((4, 1, 2, 1))
        b = np.ones((3, 1, 5))

        # scipy only checks that this does not raise; also compare the value
        res = logsumexp(a, b=b)
        xp_assert_close(res, np.asarray(math.log(4 * 2 * 3 * 5)), rtol=1e-14)

    @pytest.mark.parametrize('arg', (1, [1, 2, 3]))
    def test_xp_invalid_input(self, arg):
        assert logsumexp(arg) == logsumexp(np.asarray(np.atleast_1d(arg)))

    def test_array_like(self):
        a = [1000, 1000]
        desired = np.asarray(1000.0 + math.log(2.0))
        xp_assert_close(logsumexp(a), desired)

    @pytest.mark.parametrize('dtype', scipy_dtypes)
    def test_dtypes_a(self, dtype):
        dtype = np.dtype(dtype)
        a = np.asarray([1000., 1000.], dtype=dtype)
        desired_dtype = np.float64 if dtype.kind in "iu" else dtype
        desired = np.asarray(1000.0 + math.log(2.0), dtype=desired_dtype)
        xp_assert_close(logsumexp(a), desired)

    @pytest.mark.parametrize('dtype_a', scipy_dtypes)
    @pytest.mark.parametrize('dtype_b', scipy_dtypes)
    def test_dtypes_ab(self, dtype_a, dtype_b):
        a = np.asarray([2, 1], dtype=dtype_a)
        b = np.asarray([1, -1], dtype=dtype_b)
        desired_dtype = np.result_type(a.dtype, b.dtype)
        if desired_dtype.kind in "iu":
            desired_dtype = np.float64
        desired = np.asarray(math.log(math.exp(2) - math.exp(1)), dtype=desired_dtype)
        xp_assert_close(logsumexp(a, b=b), desired)

    def test_gh18295(self):
        # gh-18295 noted loss of precision when real part of one element is much
        # larger than the rest. Check that this is resolved.
        a = np.asarray([0.0, -40.0])
        res = logsumexp(a)
        ref = np.logaddexp(a[0], a[1])
        xp_assert_close(res, ref)

    @pytest.mark.parametrize('x,y', list(it.product([-np.inf, np.inf], repeat=2)))
    def test_gh22601_infinite_elements(self, x, y):
        # Test that `logsumexp` does reasonable things in the presence of
        # real infinities.
        res = logsumexp(np.asarray([x, y]))
        ref = np.log(np.sum(np.exp(np.asarray([x, y]))))
        xp_assert_equal(res, ref)

    def test_no_writeback(self):
        """Test that logsumexp doesn't accidentally write back to its parameters."""
        a = np.asarray([5., 4.])
        b = np.asarray([3., 2.])
        logsumexp(a)
        logsumexp(a, b=b)
        xp_assert_equal(a, np.asarray([5., 4.]))
        xp_assert_equal(b, np.asarray([3., 2.]))

    def test_gh22903(self):
        # gh-22903 reported that `logsumexp` produced NaN where the weight associated
        # with the max magnitude element was negative and `return_sign=False`, even if
        # the net result should be the log of a positive number.

        # result is log of positive number
        a = np.asarray([3.06409428, 0.37251854, 3.87471931])
        b = np.asarray([1.88190708, 2.84174795, -0.85016884])
        xp_assert_close(logsumexp(a, b=b), logsumexp(a, b=b, return_sign=True)[0])
        # (added) and the value itself
        ref = math.log(sum(bi * math.exp(ai) for ai, bi in zip(a, b)))
        xp_assert_close(logsumexp(a, b=b), np.asarray(ref), rtol=1e-13)

        # result is log of negative number
        b = np.asarray([1.88190708, 2.84174795, -3.85016884])
        xp_assert_close(logsumexp(a, b=b), np.asarray(np.nan))

    @pytest.mark.parametrize("a, b, sign_ref",
                             [([np.inf], None, 1.),
                              ([np.inf], [-1.], -1.)])
    def test_gh23548(self, a, b, sign_ref):
        # gh-23548 reported that `logsumexp` with `return_sign=True` returned a sign
        # of NaN with infinite reals
        a, b = np.asarray(a), np.asarray(b) if b is not None else None
        val, sign = logsumexp(a, b=b, return_sign=True)
        assert np.isinf(val)
        xp_assert_equal(sign, np.asarray(sign_ref))


class TestSoftmaxScipy:
    def test_softmax_fixtures(self):
        xp_assert_close(softmax(np.asarray([1000., 0., 0., 0.])),
                        np.asarray([1., 0., 0., 0.]), rtol=1e-13)
        xp_assert_close(softmax(np.asarray([1., 1.])),
                        np.asarray([.5, .5]), rtol=1e-13)
        xp_assert_close(softmax(np.asarray([0., 1.])),
                        np.asarray([1., np.e]) / (1 + np.e),
                        rtol=1e-13)

        # Expected value computed using mpmath (with mpmath.mp.dps = 200) and then
        # converted to float.
        x = np.arange(4, dtype=np.float64)
        expected = np.asarray([0.03205860328008499,
                               0.08714431874203256,
                               0.23688281808991013,
                               0.6439142598879722], dtype=np.float64)

        xp_assert_close(softmax(x), expected, rtol=1e-13)

        # Translation property.  If all the values are changed by the same amount,
        # the softmax result does not change.
        xp_assert_close(softmax(x + 100), expected, rtol=1e-13)

        # When axis=None, softmax operates on the entire array, and preserves
        # the shape.
        xp_assert_close(softmax(np.reshape(x, (2, 2))),
                        np.reshape(expected, (2, 2)), rtol=1e-13)

    def test_softmax_multi_axes(self):
        xp_assert_close(softmax(np.asarray([[1000., 0.], [1000., 0.]]), axis=0),
                        np.asarray([[.5, .5], [.5, .5]]), rtol=1e-13)
        xp_assert_close(softmax(np.asarray([[1000., 0.], [1000., 0.]]), axis=1),
                        np.asarray([[1., 0.], [1., 0.]]), rtol=1e-13)

        # Expected value computed using mpmath (with mpmath.mp.dps = 200) and then
        # converted to float.
        x = np.asarray([[-25., 0., 25., 50.],
                        [1., 325., 749., 750.]])
        expected = np.asarray([[2.678636961770877e-33,
                                1.9287498479371314e-22,
                                1.3887943864771144e-11,
                                0.999999999986112],
                               [0.0,
                                1.9444526359919372e-185,
                                0.2689414213699951,
                                0.7310585786300048]])
        xp_assert_close(softmax(x, axis=1), expected, rtol=1e-13)
        xp_assert_close(softmax(x.T, axis=0), expected.T, rtol=1e-13)

        # 3-d input, with a tuple for the axis.
        x3d = np.reshape(x, (2, 2, 2))
        xp_assert_close(softmax(x3d, axis=(1, 2)),
                        np.reshape(expected, (2, 2, 2)), rtol=1e-13)

    def test_softmax_int_array(self):
        xp_assert_close(softmax(np.asarray([1000, 0, 0, 0])),
                        np.asarray([1., 0., 0., 0.]), rtol=1e-13)

    def test_softmax_scalar(self):
        xp_assert_close(softmax(1000), np.asarray(1.), rtol=1e-13)

    def test_softmax_array_like(self):
        xp_assert_close(softmax([1000, 0, 0, 0]),
                        np.asarray([1., 0., 0., 0.]), rtol=1e-13)


class TestLogSoftmaxScipy:
    def test_log_softmax_basic(self):
        xp_assert_close(log_softmax(np.asarray([1000., 1.])),
                        np.asarray([0., -999.]), rtol=1e-13)

    def test_log_softmax_int_array(self):
        xp_assert_close(log_softmax(np.asarray([1000, 1])),
                        np.asarray([0., -999.]), rtol=1e-13)

    def test_log_softmax_scalar(self):
        xp_assert_close(log_softmax(1.0), np.asarray(0.0), rtol=1e-13)

    def test_log_softmax_array_like(self):
        xp_assert_close(log_softmax([1000, 1]),
                        np.asarray([0., -999.]), rtol=1e-13)

    @staticmethod
    def data_1d():
        x = np.arange(4, dtype=np.float64)
        # Expected value computed using mpmath (with mpmath.mp.dps = 200)
        expect = [-3.4401896985611953,
                  -2.4401896985611953,
                  -1.4401896985611953,
                  -0.44018969856119533]
        return x, np.asarray(expect, dtype=np.float64)

    @staticmethod
    def data_2d():
        x = np.reshape(np.arange(8, dtype=np.float64), (2, 4))

        # Expected value computed using mpmath (with mpmath.mp.dps = 200)
        expect = [[-3.4401896985611953,
                   -2.4401896985611953,
                   -1.4401896985611953,
                   -0.44018969856119533],
                  [-3.4401896985611953,
                   -2.4401896985611953,
                   -1.4401896985611953,
                   -0.44018969856119533]]
        return x, np.asarray(expect, dtype=np.float64)

    @pytest.mark.parametrize("offset", [0, 100])
    def test_log_softmax_translation(self, offset):
        # Translation property.  If all the values are changed by the same amount,
        # the softmax result does not change.
        x, expect = self.data_1d()
        x += offset
        xp_assert_close(log_softmax(x), expect, rtol=1e-13)

    def test_log_softmax_noneaxis(self):
        # When axis=None, softmax operates on the entire array, and preserves
        # the shape.
        x, expect = self.data_1d()
        x = np.reshape(x, (2, 2))
        expect = np.reshape(expect, (2, 2))
        xp_assert_close(log_softmax(x), expect, rtol=1e-13)

    @pytest.mark.parametrize('axis_2d, expected_2d', [
        (0, np.log(0.5) * np.ones((2, 2))),
        (1, [[0., -999.], [0., -999.]]),
    ])
    def test_axes(self, axis_2d, expected_2d):
        x = np.asarray([[1000., 1.], [1000., 1.]])
        xp_assert_close(log_softmax(x, axis=axis_2d),
                        np.asarray(expected_2d, dtype=x.dtype), rtol=1e-13)

    def test_log_softmax_2d_axis1(self):
        x, expect = self.data_2d()
        xp_assert_close(log_softmax(x, axis=1), expect, rtol=1e-13)

    def test_log_softmax_2d_axis0(self):
        x, expect = self.data_2d()
        xp_assert_close(log_softmax(x.T, axis=0), expect.T, rtol=1e-13)

    def test_log_softmax_3d(self):
        # 3D input, with a tuple for the axis.
        x, expect = self.data_2d()
        x = np.reshape(x, (2, 2, 2))
        expect = np.reshape(expect, (2, 2, 2))
        xp_assert_close(log_softmax(x, axis=(1, 2)), expect, rtol=1e-13)

# ============================================================ end of SciPy port


# --------------------------------------------------------------------------- edge cases vs scipy

inf, nan = np.inf, np.nan
LSE_EDGE_CASES = [
    # (a, b, kwargs)
    ([], None, {}),
    ([], None, {"return_sign": True}),
    (np.zeros((0, 3)), None, {"axis": 0}),
    (np.zeros((0, 3)), None, {"axis": 1}),
    (np.zeros((0, 3)), None, {"axis": 0, "return_sign": True}),
    (np.zeros((0, 3)), None, {"axis": 1, "keepdims": True}),
    ([1.0, inf], [1, 0], {}),                     # b == 0 masks inf
    ([1.0, nan], [1, 0], {}),                     # ... and nan
    ([1.0, -inf], [0, 0], {}),
    ([1.0, 1.0], [0, 0], {"return_sign": True}),
    ([inf, inf], None, {}),
    ([inf, -inf], None, {}),
    ([nan, inf], None, {}),
    ([nan, -inf], None, {}),
    ([-inf, -inf], None, {"return_sign": True}),
    ([inf], [-1], {}),
    ([inf, inf], [1, -1], {"return_sign": True}),
    ([1.0, 1.0], [1, -1], {}),
    ([1.0, 1.0], [1, -2], {}),
    ([1.0, 1.0], [1, -2], {"return_sign": True}),
    ([1.0, 1.0], [nan, 1], {}),
    ([1.0, 1.0], [inf, 1], {}),
    ([[-inf, -inf], [0, 1]], None, {"axis": 1, "return_sign": True}),
    ([[-inf, -inf], [0, 1]], None, {"axis": 0}),
    ([[1.0, 2.0], [3.0, 4.0]], [[1, -1], [-1, 1]], {"axis": 1, "return_sign": True}),
    ([[1.0, 2.0], [3.0, 4.0]], [[1, -1], [-1, 1]], {"axis": 0}),
    (np.float64(3.0), None, {}),
    (np.float64(3.0), None, {"keepdims": True}),
    (np.asarray(3.0), None, {"return_sign": True}),
    (np.float32(3.0), None, {}),
    (3, None, {}),
    (np.ones((2, 3)), None, {"keepdims": True}),
    (np.ones((2, 3)), None, {"axis": (0, 1), "keepdims": True, "return_sign": True}),
    (np.ones((2, 3)), None, {"axis": (-1, 0)}),
    (np.arange(24.).reshape(2, 3, 4), None, {"axis": (0, 2), "keepdims": True}),
    (np.arange(24.).reshape(2, 3, 4), None, {"axis": -2}),
    # b broadcasting a up
    (np.zeros((4, 1, 2, 1)), np.ones((3, 1, 5)), {}),
    (np.zeros((4, 1, 2, 1)), np.ones((3, 1, 5)), {"axis": 0}),
    (np.zeros((4, 1, 2, 1)), np.ones((3, 1, 5)), {"axis": (-1, 1), "keepdims": True}),
    ([1.0, 2.0], [[1.0, 1.0], [2.0, 2.0]], {"axis": -1}),
    (np.arange(6.).reshape(2, 3), [1.0, -1.0, 2.0], {"axis": 1, "return_sign": True}),
    # dtype promotion of a and b
    (np.array([1, 2], np.float32), np.array([1, 2]), {}),
    (np.array([1, 2], np.float32), np.array([1.0, 2.0], np.float32), {}),
    (np.array([1, 2], np.float32), np.array([1.0, 2.0]), {}),
    (np.array([1, 2], np.float32), 2.0, {}),    # python scalars are weak in scipy
    (np.array([1, 2], np.float32), 2, {}),
    (np.array([1, 2], np.float32), np.float64(2.0), {}),
    (np.array([1, 2], np.float16), np.array([1.0, 1.0], np.float32), {}),
    (np.array([1, 2], np.int8), np.array([1.0, 1.0], np.float16), {}),
    (np.array([1, 2], np.int8), None, {}),
    (np.array([1, 2], np.int16), np.array([1, 3], np.int8), {}),
    (np.array([1, 2], np.float16), None, {"return_sign": True}),
    (np.array([True, False]), None, {}),
    (np.array([1, 2], np.uint8), None, {}),
]


@pytest.mark.parametrize("a, b, kw", LSE_EDGE_CASES)
def test_logsumexp_edge_cases_vs_scipy(a, b, kw):
    a_in = np.asarray(a) if isinstance(a, list) else a
    ref = sp.logsumexp(a_in, b=b, **kw)
    res = logsumexp(a_in, b=b, **kw)
    if kw.get("return_sign"):
        assert isinstance(res, tuple) and len(res) == 2
        pairs = zip(res, ref)
    else:
        pairs = [(res, ref)]
    for r, rr in pairs:
        assert_same_type(r, rr)
        eps = np.finfo(rr.dtype).eps
        assert_close(r, rr, rtol=4 * eps, atol=0)


SOFTMAX_EDGE_CASES = [
    ([inf, 1.0], None),
    ([inf, inf], None),
    ([inf, -inf], None),
    ([nan, 1.0], None),
    ([-inf, 0.0, 1.0], None),
    ([-inf, -inf], None),
    ([[-inf, -inf], [0.0, 1.0]], 1),
    ([[-inf, -inf], [0.0, 1.0]], 0),
    ([[1.0, 2.0]], (0, 1)),
    ([[1.0, 2.0]], (-1, -2)),
    (np.zeros((0, 3)), 1),
    (np.zeros((0, 3)), -1),
    (np.zeros((2, 0, 3)), (0, 2)),
    (3.0, None),
    (np.float32(3.0), None),
    (np.asarray(3.0), None),
    (3, None),
    ([1, 2], None),
    (np.array([1, 2], np.int8), None),
    (np.array([1, 2], np.int16), None),
    (np.array([1, 2], np.float16), None),
    (np.array([1, 2], np.int32), None),
]


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("x, axis", SOFTMAX_EDGE_CASES)
def test_softmax_edge_cases_vs_scipy(kind, x, axis):
    x_in = np.asarray(x) if isinstance(x, list) else x
    ref = SCIPY[kind](x_in, axis=axis)
    res = FUNCS[kind](x_in, axis=axis)
    assert_same_type(res, ref)
    eps = np.finfo(ref.dtype).eps
    assert_close(res, ref, rtol=4 * eps, atol=4 * eps)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype", ["uint8", "uint16", "uint32"])
def test_softmax_unsigned_input(kind, dtype):
    # scipy computes x - max(x) in the unsigned dtype (wraps around), so the reference
    # here is the formula on float64 values; the dtype is what np.exp gives (spec)
    x = np.array([[1, 2, 0], [7, 3, 200]], dtype=dtype)
    res = FUNCS[kind](x, axis=1)
    out_dtype = np.exp(x).dtype
    assert isinstance(res, np.ndarray) and res.dtype == out_dtype and res.shape == x.shape
    ref = SCIPY[kind](x.astype(np.float64), axis=1).astype(out_dtype)
    rtol, atol = tolerances(kind, out_dtype, x)
    assert_close(res, ref, rtol, atol)


@pytest.mark.parametrize("kind", ["softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((0, 3), 0), ((0,), None), ((0,), 0), ((2, 0), (0, 1)),
                                         ((3, 0, 2), 1)])
def test_softmax_empty_reduction_raises(kind, shape, axis):
    with pytest.raises(ValueError):
        SCIPY[kind](np.zeros(shape), axis=axis)  # scipy does too (sanity)
    with pytest.raises(ValueError):
        FUNCS[kind](np.zeros(shape), axis=axis)


def test_delegation_complex_and_longdouble():
    # spec: complex and long double input are delegated to scipy.special.logsumexp
    z = np.array([1 + 1j, 2 - 1j, -2 + 3j])
    res, ref = logsumexp(z), sp.logsumexp(z)
    assert_same_type(res, ref)
    assert_close(res.real, ref.real, 1e-14, 0)
    assert_close(res.imag, ref.imag, 1e-14, 0)
    x = np.arange(5, dtype=np.longdouble)
    res, ref = logsumexp(x), sp.logsumexp(x)
    assert_same_type(res, ref)
    assert abs(res - ref) <= 4 * np.finfo(np.longdouble).eps * abs(ref)


# --------------------------------------------------------------------------- random vs scipy

SHAPE_AXES = [
    ((), None), ((1,), None), ((7,), None), ((7,), 0), ((7,), -1),
    ((4, 5), None), ((4, 5), 0), ((4, 5), 1), ((4, 5), -2), ((4, 5), (0, 1)), ((4, 5), (1, 0)),
    ((5, 1), 0), ((5, 1), 1),
    ((3, 1, 6), 1), ((3, 1, 6), (0, 2)), ((3, 1, 6), (-1, -3)), ((3, 4, 6), -2),
    ((2, 3, 4, 5), (1, 3)), ((2, 3, 4, 5), -1), ((2, 3, 4, 5), (0, 1, 2, 3)), ((2, 3, 4, 5), None),
    ((2, 3, 4, 5), (-4, 2)),
]
DTYPES = ["float32", "float64", "int8", "int32", "int64", "float16"]


def _seed(*args):
    return zlib.crc32(repr(args).encode())


def _id(v):
    return str(v).replace(" ", "")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, axis", SHAPE_AXES, ids=_id)
@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax"])
def test_random_vs_scipy(kind, shape, axis, dtype):
    rng = np.random.default_rng(_seed(kind, shape, str(axis), dtype))
    x = make_input(rng, shape, dtype)
    check_vs_scipy(kind, x, FUNCS[kind](x, axis=axis), axis=axis)
    if kind == "logsumexp":
        check_vs_scipy(kind, x, logsumexp(x, axis=axis, keepdims=True), axis=axis, keepdims=True)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
@pytest.mark.parametrize("shape, axis", [((7,), None), ((4, 5), 1), ((4, 5), 0), ((3, 4, 6), (0, 2)),
                                         ((2, 3, 4, 5), (-1, 1))], ids=_id)
@pytest.mark.parametrize("keepdims", [False, True])
def test_random_logsumexp_positive_b_vs_scipy(shape, axis, dtype, keepdims):
    rng = np.random.default_rng(_seed(shape, str(axis), dtype, keepdims))
    a = make_input(rng, shape, dtype)
    bdtype = dtype if dtype.startswith("float") else "float64"
    b = rng.uniform(0.1, 3.0, size=shape).astype(bdtype)
    b[(0,) * len(shape)] = 0.0  # a zero weight
    res = logsumexp(a, axis=axis, b=b, keepdims=keepdims)
    ref = sp.logsumexp(a, axis=axis, b=b, keepdims=keepdims)
    assert_same_type(res, ref)
    ref_hi = sp.logsumexp(a.astype(np.float64), axis=axis, b=b.astype(np.float64),
                          keepdims=keepdims).astype(ref.dtype)
    rtol, atol = tolerances("logsumexp", ref.dtype, a)
    assert_close(res, ref_hi, rtol, atol + 4 * compute_eps(ref.dtype))
    # the same with return_sign: sign must be +1
    r, s = logsumexp(a, axis=axis, b=b, keepdims=keepdims, return_sign=True)
    assert_same_type(r, ref)
    assert_same_type(s, ref)
    np.testing.assert_array_equal(s, np.ones_like(s))
    np.testing.assert_array_equal(r, res)


@pytest.mark.parametrize("dtype", ["float32", "float64", "int64"])
@pytest.mark.parametrize("shape, axis", [((50,), None), ((30, 7), 1), ((7, 30), 0), ((6, 5, 4), (0, 2)),
                                         ((6, 5, 4), None)], ids=_id)
def test_random_logsumexp_signed_b_vs_scipy(shape, axis, dtype):
    rng = np.random.default_rng(_seed(shape, str(axis), dtype))
    a = make_input(rng, shape, dtype, scale=2.0)
    bdtype = dtype if dtype.startswith("float") else "float64"
    b = rng.uniform(-1.0, 2.0, size=shape).astype(bdtype)
    r, s = logsumexp(a, axis=axis, b=b, return_sign=True)
    rr, ss = sp.logsumexp(a, axis=axis, b=b, return_sign=True)
    assert_same_type(r, rr)
    assert_same_type(s, ss)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    r_hi, s_hi = sp.logsumexp(a64, axis=axis, b=b64, return_sign=True)
    # condition number of the signed sum: sum|terms| / |sum terms|
    cond = np.exp(sp.logsumexp(a64, axis=axis, b=np.abs(b64)) - r_hi)
    n = a.size // np.size(r_hi)
    ok = cond < 100.0
    assert np.mean(ok) > 0.5  # the test data is not mostly ill-conditioned
    eps_c = compute_eps(rr.dtype)
    rtol, atol = tolerances("logsumexp", rr.dtype, a)
    atol_el = atol + 8 * eps_c * cond * math.sqrt(n)
    np.testing.assert_array_equal(np.asarray(s)[ok], np.asarray(s_hi)[ok])
    err = np.abs(np.asarray(r, np.float64) - r_hi)
    allowed = atol_el + rtol * np.abs(r_hi)
    assert np.all(err[ok] <= allowed[ok]), (err[ok] / allowed[ok]).max()
    # without return_sign: nan exactly where the sum is negative (well-conditioned ones)
    plain = np.asarray(logsumexp(a, axis=axis, b=b))
    np.testing.assert_array_equal(np.isnan(plain)[ok], (np.asarray(s_hi) < 0)[ok])
    pos = ok & (np.asarray(s_hi) > 0)
    np.testing.assert_allclose(plain[pos], np.asarray(r, np.float64)[pos], rtol=4 * eps_c, atol=0)


@pytest.mark.parametrize("dtype_b", DTYPES + [None])
@pytest.mark.parametrize("dtype_a", DTYPES)
def test_logsumexp_ab_dtype_promotion_vs_scipy(dtype_a, dtype_b):
    a = np.asarray([2, 1, 0, 3], dtype=dtype_a)
    b = None if dtype_b is None else np.asarray([1, 2, 0, 1], dtype=dtype_b)
    res = logsumexp(a, b=b)
    ref = sp.logsumexp(a, b=b)
    assert_same_type(res, ref)
    exact = math.log(sum(bi * math.exp(ai) for ai, bi in
                         zip([2, 1, 0, 3], [1, 1, 1, 1] if b is None else [1, 2, 0, 1])))
    eps = np.finfo(ref.dtype).eps
    assert abs(float(res) - exact) <= 2 * eps * abs(exact)


# --------------------------------------------------------------------------- sigmoid / log_sigmoid

def _wide_float64():
    return np.concatenate([
        np.linspace(-800, 800, 16001), np.linspace(-1e4, 1e4, 2001), np.linspace(-40, 40, 8001),
        np.geomspace(1e-320, 1e308, 2000), -np.geomspace(1e-320, 1e308, 2000),
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 5e-324, -5e-324,
         np.finfo(np.float64).max, -np.finfo(np.float64).max],
    ])


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
def test_sigmoid_vs_scipy_float64_wide(kind):
    x = _wide_float64()
    res = FUNCS[kind](x)
    ref = SCIPY[kind](x)
    assert_same_type(res, ref)
    assert_ulp_close(res, ref, 4)


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
def test_sigmoid_float32_vs_scipy(kind):
    x = np.concatenate([np.linspace(-100, 100, 20001), np.linspace(-8, 8, 1601),
                        [0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 3e38, -3e38]]).astype(np.float32)
    res = FUNCS[kind](x)
    ref = SCIPY[kind](x)
    assert_same_type(res, ref)
    # accurate reference: float64 scipy rounded to float32
    ref_hi = SCIPY[kind](x.astype(np.float64)).astype(np.float32)
    assert_ulp_close(res, ref_hi, 2, dtype=np.float32)
    assert_ulp_close(res, ref, 4, dtype=np.float32)


def _mp_sigmoid(v):
    return float(1 / (1 + mpmath.exp(-mpmath.mpf(v))))


def _mp_log_sigmoid(v):
    return float(-mpmath.log1p(mpmath.exp(-mpmath.mpf(v))))


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
def test_sigmoid_vs_mpmath(kind):
    x = np.concatenate([np.linspace(-750, 720, 120), np.linspace(-40, 40, 121),
                        np.geomspace(1e-300, 30, 30), -np.geomspace(1e-300, 30, 30),
                        [0.5, -0.5, 1.0, -1.0, 2.0, 18.0, 19.0, 36.0, 37.0, 709.0, -709.0]])
    with mpmath.workdps(60):
        f = _mp_sigmoid if kind == "sigmoid" else _mp_log_sigmoid
        ref = np.array([f(v) for v in x])
    res = FUNCS[kind](x)
    assert_ulp_close(res, ref, 4)


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
def test_sigmoid_special_values(kind):
    x = np.array([np.inf, -np.inf, np.nan, 0.0, -0.0])
    res = FUNCS[kind](x)
    if kind == "sigmoid":
        expect = np.array([1.0, 0.0, np.nan, 0.5, 0.5])
    else:
        expect = np.array([0.0, -np.inf, np.nan, -math.log(2), -math.log(2)])
    assert_close(res, expect, rtol=EPS64, atol=0)


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
def test_sigmoid_monotone_and_range(kind):
    x = np.linspace(-800, 800, 200001)
    res = FUNCS[kind](x)
    assert np.all(np.diff(res) >= 0)
    if kind == "sigmoid":
        assert np.all((res >= 0) & (res <= 1))
    else:
        assert np.all(res <= 0)


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("dtype", ["int8", "int16", "int32", "int64", "uint8", "uint64", "bool",
                                   "float16", "float32", "float64"])
def test_sigmoid_dtypes_vs_scipy(kind, dtype):
    x = np.array([0, 1, 3, 1, 0, 1]).astype(dtype).reshape(2, 3)
    res = FUNCS[kind](x)
    ref = SCIPY[kind](x)
    assert_same_type(res, ref)
    eps = np.finfo(ref.dtype).eps
    ref_hi = SCIPY[kind](x.astype(np.float64)).astype(ref.dtype)
    assert_close(res, ref_hi, rtol=2 * eps, atol=0)


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
@pytest.mark.parametrize("x", [3, -2.5, True, np.float32(1.5), np.float64(-3.0), np.int8(4),
                               np.asarray(2.0), np.asarray(2.0, np.float32), np.float16(0.5)],
                         ids=repr)
def test_sigmoid_scalars_vs_scipy(kind, x):
    res = FUNCS[kind](x)
    ref = SCIPY[kind](x)
    assert_same_type(res, ref)
    eps = np.finfo(ref.dtype).eps
    assert_close(res, ref, rtol=2 * eps, atol=0)


@pytest.mark.parametrize("kind", ["sigmoid", "log_sigmoid"])
def test_sigmoid_list_input(kind):
    x = [[-1.0, 0.0], [2.0, 40.0]]
    res = FUNCS[kind](x)
    ref = SCIPY[kind](x)
    assert_same_type(res, ref)
    assert_ulp_close(res, ref, 4)


# --------------------------------------------------------------------------- precision vs mpmath

def _mp_lse(a, b=None):
    b = [1.0] * len(a) if b is None else b
    with mpmath.workdps(80):
        s = mpmath.fsum(mpmath.mpf(float(bi)) * mpmath.exp(mpmath.mpf(float(ai)))
                        for ai, bi in zip(a, b))
        return float(mpmath.log(abs(s))), (1.0 if s > 0 else -1.0 if s < 0 else 0.0)


LSE_HARD = [
    ([0.0, -40.0], None),                 # log1p(exp(-40)) ~ 4.25e-18
    ([0.0, -40.0, -40.0], None),
    ([0.0, -30.0, -35.0, -40.0], None),
    ([-40.0, 0.0], None),
    ([1e-10, -30.0], None),
    ([0.0, -36.7], None),
    ([0.0, -20.0], None),
    ([700.0, 664.0], None),
    ([-1000.0, -1040.0], None),
    ([1e308, 1e308], None),
    ([-1e308, -1e308], None),
    ([0.0, -40.0], [1.0, 1e-3]),
    ([0.0, 0.0], [1.0, -1.0 + 1e-10]),    # exact cancellation, result log(1e-10)
    ([5.0, 5.0, 5.0], [1.0, 1.0, -1.0]),
    ([0.0, -40.0], [1.0, -1.0]),          # log1p(-exp(-40))
    ([0.0, -1.0], [2.0, 3.0]),
    (list(np.linspace(-1, 1, 1001)), None),
    ([0.5] * 10, None),
]


@pytest.mark.parametrize("a, b", LSE_HARD, ids=lambda v: _id(v)[:40])
def test_logsumexp_vs_mpmath(a, b):
    ref, sign = _mp_lse(a, b)
    r, s = logsumexp(np.array(a), b=None if b is None else np.array(b), return_sign=True)
    assert s == sign
    assert_ulp_close(np.asarray(r), ref, 4)
    if sign > 0:
        plain = logsumexp(np.array(a), b=None if b is None else np.array(b))
        assert_ulp_close(np.asarray(plain), ref, 4)


@pytest.mark.parametrize("a", [[0.0, -20.0], [0.0, -10.0, -12.0], [3.0, -5.0, 2.0]])
def test_logsumexp_float32_vs_mpmath(a):
    a32 = np.array(a, np.float32)
    ref, _ = _mp_lse([float(v) for v in a32])
    res = logsumexp(a32)
    assert isinstance(res, np.float32)
    assert_ulp_close(np.asarray(res), np.float32(ref), 2, dtype=np.float32)


@pytest.mark.parametrize("a", [[0.0, -40.0], [0.0, -20.0], [1e-10, -30.0], [3.0, 3.0, -50.0],
                               [700.0, 664.0, 0.0], [-1000.0, -1040.0], [0.0, 1.0, 2.0, 3.0],
                               list(np.linspace(-5, 5, 11))])
def test_log_softmax_softmax_vs_mpmath(a):
    with mpmath.workdps(80):
        lse = mpmath.log(mpmath.fsum(mpmath.exp(mpmath.mpf(v)) for v in a))
        ref_log = np.array([float(mpmath.mpf(v) - lse) for v in a])
        ref_sm = np.array([float(mpmath.exp(mpmath.mpf(v) - lse)) for v in a])
    x = np.array(a)
    res_log = log_softmax(x)
    # x_i - lse = (x_i - max) - log1p(rest): two non-positive terms, no cancellation.
    # Rounding x_k - max perturbs exp(x_k - max) by eps * |x_k - max| relative, so
    # allow 4 * (1 + max|x - max|) ulp: still far stricter than scipy, which returns
    # 0 instead of -4.2e-18 for [0, -40].
    assert_ulp_close(res_log, ref_log, 4 * (1 + int(np.ptp(x))))
    # softmax: relative error <= 4 eps * (1 + |x_i - max|)
    res_sm = softmax(x)
    rel = 4 * EPS64 * (1 + np.abs(x - x.max()))
    err = np.abs(res_sm - ref_sm)
    assert np.all(err <= rel * np.abs(ref_sm) + 1e-300), err / np.abs(ref_sm)


# --------------------------------------------------------------------------- hypothesis properties

@st.composite
def array_and_axis(draw, dtype=np.float64, lo=-100.0, hi=100.0, width=64, max_dims=3):
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=max_dims, min_side=1, max_side=5))
    x = draw(hnp.arrays(dtype, shape, elements=st.floats(lo, hi, width=width)))
    ndim = len(shape)
    axis = draw(st.one_of(
        st.none(),
        st.integers(-ndim, ndim - 1),
        st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple),
    ))
    return x, axis


def _n_reduced(x, axis):
    if axis is None:
        return x.size
    axes = axis if isinstance(axis, tuple) else (axis,)
    return int(np.prod([x.shape[a] for a in axes]))


PROP = settings(max_examples=50, deadline=None)


@PROP
@given(array_and_axis(), st.floats(-100, 100))
def test_prop_logsumexp_shift_invariance(xa, c):
    x, axis = xa
    lhs = np.asarray(logsumexp(x + c, axis=axis))
    rhs = np.asarray(logsumexp(x, axis=axis)) + c
    tol = 8 * EPS64 * (1 + np.abs(x).max() + abs(c) + math.log(x.size))
    np.testing.assert_allclose(lhs, rhs, rtol=0, atol=tol)


@PROP
@given(array_and_axis())
def test_prop_softmax_is_distribution(xa):
    x, axis = xa
    p = softmax(x, axis=axis)
    assert p.shape == x.shape
    assert np.all((p >= 0) & (p <= 1))
    s = np.sum(p, axis=axis)
    np.testing.assert_allclose(s, 1.0, rtol=0, atol=4 * EPS64 * _n_reduced(x, axis))


@PROP
@given(array_and_axis())
def test_prop_exp_log_softmax_is_softmax(xa):
    x, axis = xa
    p = softmax(x, axis=axis)
    lp = log_softmax(x, axis=axis)
    rtol = 8 * EPS64 * (1 + 2 * np.abs(x).max() + math.log(x.size))
    np.testing.assert_allclose(np.exp(lp), p, rtol=rtol, atol=1e-300)


@PROP
@given(array_and_axis())
def test_prop_log_softmax_is_x_minus_lse(xa):
    x, axis = xa
    lp = log_softmax(x, axis=axis)
    ref = x - logsumexp(x, axis=axis, keepdims=True)
    atol = 8 * EPS64 * (1 + np.abs(x).max() + math.log(x.size))
    np.testing.assert_allclose(lp, ref, rtol=0, atol=atol)


@PROP
@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=8),
                  elements=st.floats(allow_nan=False, allow_infinity=True)))
def test_prop_sigmoid_symmetry(x):
    np.testing.assert_allclose(sigmoid(x) + sigmoid(-x), 1.0, rtol=0, atol=4 * EPS64)


@PROP
@given(hnp.arrays(np.float64, hnp.array_shapes(max_dims=2, max_side=8),
                  elements=st.floats(-1e300, 1e300)))
def test_prop_log_sigmoid_difference(x):
    d = log_sigmoid(x) - log_sigmoid(-x)
    err = np.abs(d - x)
    assert np.all(err <= 8 * EPS64 * (np.abs(x) + 1)), err


@PROP
@given(array_and_axis(dtype=np.float32, lo=-50.0, hi=50.0, width=32),
       st.sampled_from(["logsumexp", "softmax", "log_softmax"]))
def test_prop_float32_close_to_float64(xa, kind):
    x, axis = xa
    r32 = FUNCS[kind](x, axis=axis)
    r64 = FUNCS[kind](x.astype(np.float64), axis=axis)
    assert np.asarray(r32).dtype == np.float32
    rtol, atol = tolerances(kind, np.float32, x)
    assert_close(r32, np.asarray(r64).astype(np.float32), rtol, atol)


@PROP
@given(hnp.arrays(np.float32, hnp.array_shapes(max_dims=2, max_side=8),
                  elements=st.floats(-100, 100, width=32)),
       st.sampled_from(["sigmoid", "log_sigmoid"]))
def test_prop_sigmoid_float32_close_to_float64(x, kind):
    r32 = FUNCS[kind](x)
    r64 = FUNCS[kind](x.astype(np.float64))
    assert r32.dtype == np.float32
    assert_ulp_close(r32, r64.astype(np.float32), 2, dtype=np.float32)


# --------------------------------------------------------------------------- memory layouts

def _layouts(base):
    """(name, array) views/copies of `base` values that are not C-contiguous native."""
    out = [
        ("strided", base[::2, 1::3, ::-1]),
        ("fortran", np.asfortranarray(base)),
        ("transposed", base.transpose(2, 0, 1)),
        ("byteswapped", base.astype(base.dtype.newbyteorder("S"))),
    ]
    buf = np.zeros(base.nbytes + 1, np.uint8)
    unaligned = np.frombuffer(buf, dtype=base.dtype, count=base.size, offset=1).reshape(base.shape)
    buf[1:] = np.frombuffer(base.tobytes(), np.uint8)
    unaligned.flags.writeable = False
    assert not unaligned.flags.aligned or base.dtype.itemsize == 1
    ro = base.copy()
    ro.flags.writeable = False
    out += [("unaligned_readonly", unaligned), ("readonly", ro)]
    return out


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax", "sigmoid", "log_sigmoid"])
def test_layouts_match_contiguous(kind, dtype):
    rng = np.random.default_rng(7)
    base = rng.normal(scale=4, size=(8, 10, 6)).astype(dtype)
    base[0, 0, 0] = -np.inf
    f = FUNCS[kind]
    eps = np.finfo(dtype).eps
    for name, x in _layouts(base):
        before = x.copy()
        contig = np.ascontiguousarray(x, dtype=np.dtype(dtype))
        axes = [None] if kind.endswith("sigmoid") else [None, 0, -1, (0, 2), 1]
        for axis in axes:
            if kind.endswith("sigmoid"):
                res, ref = f(x), f(contig)
            else:
                res, ref = f(x, axis=axis), f(contig, axis=axis)
            assert np.asarray(res).dtype == np.asarray(ref).dtype, name
            assert np.shape(res) == np.shape(ref), name
            assert_close(res, ref, rtol=4 * eps, atol=4 * eps)
            if kind == "logsumexp":
                b = np.linspace(-1, 2, x.size).reshape(x.shape).astype(dtype)[::-1]  # non-contiguous
                r1, s1 = f(x, axis=axis, b=b, return_sign=True)
                r2, s2 = f(contig, axis=axis, b=np.ascontiguousarray(b), return_sign=True)
                assert_close(r1, r2, rtol=4 * eps, atol=64 * eps)
                np.testing.assert_array_equal(s1, s2)
        np.testing.assert_array_equal(x, before, err_msg=f"{name} input modified")
        assert x.dtype == before.dtype


@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax", "sigmoid", "log_sigmoid"])
def test_inputs_not_modified(kind):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(5, 7))
    x[1, 2], x[3, 3], x[4, 0] = np.inf, -np.inf, np.nan
    b = rng.uniform(-1, 1, size=(5, 7))
    x0, b0 = x.copy(), b.copy()
    f = FUNCS[kind]
    if kind == "logsumexp":
        f(x, axis=1, b=b)
        f(x, axis=0, b=b, return_sign=True)
        f(x.astype(np.float32), b=b.astype(np.float32))
        np.testing.assert_array_equal(b, b0)
    elif kind.endswith("softmax"):
        f(x, axis=1)
        f(x)
    else:
        f(x)
    f(x.T)
    np.testing.assert_array_equal(x, x0)
    lst = [[1.0, 2.0], [3.0, 4.0]]
    f(lst)
    assert lst == [[1.0, 2.0], [3.0, 4.0]]


# --------------------------------------------------------------------------- bad input

BAD_INPUTS = [
    np.array(["a", "b"]),
    np.array([b"a", b"b"]),
    np.array([1.0, "x"], dtype=object),
    np.array([object(), object()], dtype=object),
    "abc",
]


def _names_argument(name):
    # the argument name as a word, quoted or followed by typical wording
    return rf"(['`\"]{name}['`\"]|\b{name}\b\s*(must|should|has|is|:|=|\())"


@pytest.mark.parametrize("bad", BAD_INPUTS, ids=lambda v: type(v).__name__ + str(getattr(v, "dtype", "")))
@pytest.mark.parametrize("kind, argname", [("logsumexp", "a"), ("softmax", "x"), ("log_softmax", "x"),
                                           ("sigmoid", "x"), ("log_sigmoid", "x")])
def test_non_numeric_input_raises_typeerror(kind, argname, bad):
    with pytest.raises(TypeError, match=_names_argument(argname)):
        FUNCS[kind](bad)


@pytest.mark.parametrize("bad", BAD_INPUTS[:4], ids=lambda v: str(v.dtype))
def test_non_numeric_b_raises_typeerror(bad):
    with pytest.raises(TypeError, match=_names_argument("b")):
        logsumexp(np.ones(2), b=bad)


@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax"])
@pytest.mark.parametrize("shape, axis", [((2, 3), 2), ((2, 3), -3), ((2, 3), (0, 2)), ((4,), 1),
                                         ((4,), -2), ((), 1)])
def test_axis_out_of_range(kind, shape, axis):
    x = np.ones(shape)
    with pytest.raises(ValueError):
        SCIPY[kind](x, axis=axis)  # sanity: scipy raises too
    with pytest.raises(ValueError):
        FUNCS[kind](x, axis=axis)


# --------------------------------------------------------------------------- large arrays

@pytest.mark.parametrize("shape, axis", [((3, 200_001), 1), ((3, 200_001), None), ((3, 200_001), 0),
                                         ((100_000, 3), 1), ((100_000, 3), 0), ((100_000, 3), -1)],
                         ids=_id)
@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax"])
def test_large_float32_vs_scipy(kind, shape, axis):
    rng = np.random.default_rng(12345)
    x = rng.normal(scale=5.0, size=shape).astype(np.float32)
    # values only against scipy on the float64 input: scipy's float32 sums along a
    # strided 100_000-long axis are naive float32 sums (errors up to ~1e-4 relative)
    check_vs_scipy(kind, x, FUNCS[kind](x, axis=axis), axis=axis, same_dtype_values=False)


def test_large_sigmoid_float32_vs_scipy():
    rng = np.random.default_rng(5)
    x = rng.normal(scale=20.0, size=(1000, 1001)).astype(np.float32)[:, ::2]
    res = sigmoid(x)
    assert_same_type(res, sp.expit(x))
    assert_ulp_close(res, sp.expit(x.astype(np.float64)).astype(np.float32), 2, dtype=np.float32)
    res = log_sigmoid(x)
    assert_ulp_close(res, sp.log_expit(x.astype(np.float64)).astype(np.float32), 2, dtype=np.float32)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("n_classes", [1, 2, 3, 4, 5, 8, 9, 10, 16, 17, 32, 33, 48, 49, 64, 65, 128, 129])
@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax"])
def test_many_short_rows_with_non_finite_values_vs_scipy(kind, n_classes, dtype):
    # Rows of up to 512 bytes (64 float64, 128 float32 elements) go through
    # tiles of 64 rows (SIMD across rows), longer rows one at a time; rows of
    # up to 32 float32 or 16 float64 classes enter and leave full tiles by an
    # in-register transpose (from 5 classes on by square blocks of 16
    # float32 or 8 float64 classes): both sides of every limit; several
    # tiles and a partial one, rows with +-inf
    # and NaN among finite rows, and the parallel kernel (more than 32768
    # elements) as well.
    rng = np.random.default_rng(n_classes)
    for n_rows in (301, 40_000 // n_classes + 7):
        x = (3.0 * rng.standard_normal((n_rows, n_classes))).astype(dtype)
        rows = rng.choice(n_rows, size=n_rows // 5, replace=False)
        cols = rng.integers(0, n_classes, size=rows.size)
        x[rows, cols] = rng.choice([np.inf, -np.inf, np.nan], size=rows.size)
        x[rows[:5]] = -np.inf  # whole rows of -inf
        ref = getattr(sp, kind)(x.astype(np.float64), axis=-1)
        with np.errstate(all="ignore"):
            got = getattr(fastce, kind)(x, axis=-1)
        assert got.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
        # atol: SciPy's log_softmax takes log(sum) of terms around 1, with an
        # absolute error of ~1e-16 (ours keeps the max term out: log1p)
        tol = dict(rtol=1e-12, atol=1e-15) if dtype == "float64" else dict(rtol=2e-6, atol=1e-6)
        np.testing.assert_allclose(got, ref, equal_nan=True, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("kind", ["logsumexp", "softmax", "log_softmax"])
def test_few_long_rows_split_across_threads_vs_scipy(kind, dtype):
    # At most 8 rows of at least 2**18 elements are cut in segments that the
    # threads share, merged with rescaled sums: compare with SciPy, rows with
    # +-inf / NaN included, and the results must not depend on the threads.
    import numba

    rng = np.random.default_rng(7)
    x = (4.0 * rng.standard_normal((6, (1 << 18) + 12345))).astype(dtype)
    x[1, 100_000] = np.inf
    x[2, 5] = np.nan
    x[3, :] = -np.inf
    x[4, : 1 << 16] = -np.inf  # whole segments of -inf
    x[5, -3] = 50.0  # the maximum in the last, partial segment
    ref = getattr(sp, kind)(x.astype(np.float64), axis=-1)
    previous = numba.get_num_threads()
    try:
        results = []
        for threads in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(threads)
            with np.errstate(all="ignore"):
                results.append(getattr(fastce, kind)(x, axis=-1))
    finally:
        numba.set_num_threads(previous)
    np.testing.assert_array_equal(results[0], results[1])
    got = results[0]
    np.testing.assert_array_equal(np.isnan(got), np.isnan(ref))
    tol = dict(rtol=1e-12, atol=1e-15) if dtype == "float64" else dict(rtol=5e-6, atol=1e-6)
    np.testing.assert_allclose(got, ref, equal_nan=True, **tol)
    # one long row (axis=None)
    flat = x[5]
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(getattr(fastce, kind)(flat), getattr(sp, kind)(flat.astype(np.float64)), **tol)


# --------------------------------------------------------------------------- out=

OUT_KINDS = ["softmax", "log_softmax", "sigmoid", "log_sigmoid"]


def _call(kind, x, axis, **kw):
    return FUNCS[kind](x, **kw) if "sigmoid" in kind else FUNCS[kind](x, axis=axis, **kw)


def _scipy(kind, x, axis):
    return SCIPY[kind](x) if "sigmoid" in kind else SCIPY[kind](x, axis=axis)


@pytest.mark.parametrize("dtype", ["float32", "float64", "float16", "int32"])
@pytest.mark.parametrize("shape, axis", [((), None), ((7,), None), ((40, 9), -1), ((40, 9), 0), ((3, 4, 600), (1, 2)),
                                         ((5, 300), None)], ids=_id)  # fmt: skip
@pytest.mark.parametrize("kind", OUT_KINDS)
def test_out_is_written_and_returned(kind, shape, axis, dtype):
    rng = np.random.default_rng(_seed("out", kind, shape, str(axis), dtype))
    x = make_input(rng, shape, dtype)
    out_dtype = np.asarray(_scipy(kind, x, axis)).dtype
    ref = _scipy(kind, x.astype(np.float64) if x.dtype == np.float16 else x, axis)  # SciPy in float16 is the coarser
    out = np.full(np.shape(ref), np.nan, dtype=out_dtype)
    res = _call(kind, x, axis, out=out)
    assert res is out
    assert_close(out, ref, *tolerances(kind, out.dtype, x))
    # the values of the call without out, to the last bit or two: a loop may run
    # its scalar version for some placements of the arrays in memory (numerics.rst)
    np.testing.assert_allclose(out, np.asarray(_call(kind, x, axis)), rtol=4 * np.finfo(out_dtype).eps, atol=0)


@pytest.mark.parametrize("kind", OUT_KINDS)
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_out_overlapping_or_strided_vs_scipy(kind, dtype):
    """out=x (in place), out overlapping x with an offset and a strided out
    give SciPy's result on the original input, as NumPy's ufuncs do."""
    rng = np.random.default_rng(_seed("overlap", kind, dtype))
    axis = -1
    x = make_input(rng, (64, 33), dtype)
    ref = _scipy(kind, x, axis)
    rtol, atol = tolerances(kind, x.dtype, x)
    inplace = x.copy()
    assert _call(kind, inplace, axis, out=inplace) is inplace
    assert_close(inplace, ref, rtol, atol)
    buf = np.concatenate([x.ravel(), np.zeros(33, dtype=dtype)])
    shifted_in, shifted_out = buf[:-33].reshape(64, 33), buf[33:].reshape(64, 33)
    _call(kind, shifted_in, axis, out=shifted_out)
    assert_close(shifted_out, ref, rtol, atol)
    wide = np.zeros((64, 66), dtype=dtype)
    _call(kind, x, axis, out=wide[:, ::2])
    assert_close(wide[:, ::2], ref, rtol, atol)
    assert not wide[:, 1::2].any()
    fortran = np.asfortranarray(np.zeros((64, 33), dtype=dtype))
    _call(kind, x, axis, out=fortran)
    assert_close(fortran, ref, rtol, atol)


@pytest.mark.parametrize("kind", OUT_KINDS)
def test_out_bad_arguments(kind):
    x = np.ones((4, 5))
    with pytest.raises(TypeError, match="out must be a NumPy array"):
        _call(kind, x, -1, out=[[0.0] * 5] * 4)
    with pytest.raises(ValueError, match=r"out must have the shape \(4, 5\) and dtype float64"):
        _call(kind, x, -1, out=np.empty((5, 4)))
    with pytest.raises(ValueError, match="out must have the shape"):
        _call(kind, x, -1, out=np.empty((4, 5), dtype=np.float32))
    readonly = np.empty((4, 5))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="out must be writeable"):
        _call(kind, x, -1, out=readonly)
    x_before = x.copy()
    with pytest.raises(ValueError):
        _call(kind, x, -1, out=np.empty(3))
    np.testing.assert_array_equal(x, x_before)


@pytest.mark.parametrize("kind", OUT_KINDS)
def test_out_with_dask_input_raises(kind):
    da = pytest.importorskip("dask.array")
    with pytest.raises(TypeError, match="out is not supported for Dask input"):
        _call(kind, da.ones((4, 5), chunks=2), -1, out=np.empty((4, 5)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_rows_read_ahead(name, dtype):
    """Inputs of at least K.PREFETCH_MIN_BYTES in the row layout prefetch the
    next row while computing one: softmax and log_softmax equal, bit for
    bit, the same rows in calls small enough not to, and SciPy (rows with a
    NaN and with -inf included)."""
    from fastce import _kernels as K

    n_classes = 1000
    n_rows = -(-K.PREFETCH_MIN_BYTES // (n_classes * np.dtype(dtype).itemsize)) + 3
    x = (np.random.default_rng(43).normal(size=(n_rows, n_classes)) * 4).astype(dtype)
    x[5, 17] = np.nan
    x[6, :] = -np.inf
    x[-1, 3] = 30.0
    ours = getattr(fastce, name)
    whole = ours(x, axis=-1)
    parts = np.concatenate([ours(x[i : i + 500], axis=-1) for i in range(0, n_rows, 500)])
    np.testing.assert_array_equal(whole, parts)
    rtol = 2e-6 if dtype == np.float32 else 1e-13
    ref = getattr(sp, name)(x[-600:].astype(np.float64), axis=-1)
    np.testing.assert_allclose(whole[-600:], ref, rtol=rtol, atol=rtol * 1e-2)
    with np.errstate(all="ignore"):
        ref = getattr(sp, name)(x[:10], axis=-1)
    np.testing.assert_array_equal(np.isnan(whole[:10]), np.isnan(ref))
