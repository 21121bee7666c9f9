"""Numba kernels. No validation, no allocation of results: the wrappers in
:mod:`fastce.special` and :mod:`fastce.losses` check and convert the inputs,
allocate every output and pick the serial or the parallel variant.

Conventions
-----------
* Arrays arrive C-contiguous, float32 or float64; integer targets as intp;
  class weights as float64.
* All arithmetic is done on float64 scalars; results are stored in the dtype
  of the output arrays. Sums over rows go through per-block float64 partial
  sums (``partial``) whose block size does not depend on the thread count, so
  the serial and the parallel variant give bitwise identical results.
* Every kernel exists twice, ``*_par`` (``prange`` over blocks or rows, for
  ``parallel=True``) and ``*_ser``, sharing the same per-row/per-block helper.
  The serial twin is what runs for small inputs, for ``n_threads=1`` and when
  the threading layer cannot take a concurrent parallel call.
* Every kernel function with a loop starts with ``_wide_vectors()``, which
  lets LLVM use 512-bit vectors in it (see there).
* All helpers live in this one module: Numba's cache is keyed on the file of
  the kernel, so editing a helper here invalidates every cached kernel.
  Kernels of other modules that inline helpers of this one are compiled with
  ``_jit(follows=True)``, which keys their cache on this file's contents as
  well (see :func:`_jit`).
"""

import functools
import hashlib
import math
import os
import threading

import numba
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ._config import cache_enabled

# Fast-math flags that keep NaN and inf meaningful (no "nnan"/"ninf": -inf
# logits are masks and NaN must propagate) and keep the order of operations
# (no "reassoc": it turns (x - m) - lse into x - (m + lse) and loses the
# small terms that the max-shift and log1p were written to keep).
FASTMATH = frozenset({"nsz", "arcp", "contract"})
# Reductions (sums and maxima over a row) additionally allow re-association so
# that LLVM vectorises them. Only functions whose float arithmetic is nothing
# but the reduction itself get it (they call no math helper): elementwise
# results are written to a buffer first and summed by such a function.
FASTMATH_REDUCE = FASTMATH | {"reassoc"}

_cache = cache_enabled()


def _source_digest():
    """A digest of this file's contents (its version string if unreadable)."""
    try:
        with open(__file__, "rb") as f:
            return hashlib.blake2b(f.read(), digest_size=6).hexdigest()
    except OSError:  # pragma: no cover - a package without its sources
        from ._version import __version__

        return __version__.replace(".", "_").replace("+", "_")


# Numba's cache checks only the stamp (time and size) of the file that
# defines a function, not those of the functions it inlines from other
# files. A kernel of another module that inlines a helper of this one (fexp,
# flog, ...) would keep its cached code when the helper changes. For those,
# _jit(follows=True) puts this digest into the function's __qualname__,
# which names its cache files: a change here makes them new files.
SOURCE_DIGEST = _source_digest()


def _jit(parallel=False, reduce=False, follows=False):
    """``numba.njit`` with fastce's options, caching when a cache folder is usable.

    ``reduce=True`` adds re-association (see ``FASTMATH_REDUCE``).
    ``follows=True`` (kernels of other modules that inline helpers of this
    one) keys the function's cache on this file's contents too
    (``SOURCE_DIGEST``).
    """
    flags = FASTMATH_REDUCE if reduce else FASTMATH
    opts = dict(nogil=True, error_model="numpy", fastmath=set(flags), parallel=parallel)

    def decorate(fn):
        global _cache
        if follows:
            fn.__qualname__ = f"{fn.__qualname__}__k{SOURCE_DIGEST}"
        if _cache:
            try:
                return numba.njit(cache=True, **opts)(fn)
            except RuntimeError:
                # "cannot cache function ...: no locator available": neither the
                # package folder nor the user cache folder is writable and
                # NUMBA_CACHE_DIR is unset. Compile in memory instead.
                _cache = False
        return numba.njit(**opts)(fn)

    return decorate


def _target_has_avx512():
    """Whether Numba compiles for a CPU with AVX-512F (``NUMBA_CPU_FEATURES``
    when set, else the host's features as Numba reads them)."""
    from numba.core import codegen

    features = numba.config.CPU_FEATURES
    if features is None:
        features = codegen.get_host_cpu_features()
    return "+avx512f" in features.split(",")


# Compiling for AVX-512 (see _pow2_typing and the transposes below).
_AVX512 = _target_has_avx512()


# ---------------------------------------------------------------------------
# Vectorisable exp and log.
#
# np.exp / math.exp inside a Numba loop become scalar libm calls (no SVML on
# these machines): ~10x slower than a polynomial LLVM can vectorise. These
# versions use Cody-Waite range reduction and a polynomial, and multiply by
# 2**n with llvm.ldexp on AVX-512 (vscalefpd) or by writing n into the
# exponent field of a float (a bitcast) elsewhere. They are
# within 1-2 ulp of the correctly rounded result over the whole range,
# subnormal results included, and keep NaN and +-inf semantics; tests check
# them against NumPy over the full float range.


@intrinsic
def _bits_to_float(typingctx, x):
    """Reinterpret an int64 (int32) as the float64 (float32) with those bits."""
    if x == types.int64:
        sig, llty = types.float64(types.int64), ir.DoubleType()
    elif x == types.int32:
        sig, llty = types.float32(types.int32), ir.FloatType()
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llty)

    return sig, codegen


@intrinsic
def _float_to_bits(typingctx, x):
    """Reinterpret a float64 (float32) as the int64 (int32) with those bits."""
    if x == types.float64:
        sig, llty = types.int64(types.float64), ir.IntType(64)
    elif x == types.float32:
        sig, llty = types.int32(types.float32), ir.IntType(32)
    else:
        return None

    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], llty)

    return sig, codegen


@intrinsic
def _maxnum(typingctx, a, b):
    """``llvm.maxnum``: the larger of two floats, the other one if either is
    NaN. Unlike a compare-and-select, LLVM vectorises it as a reduction."""
    if a != b or a not in (types.float32, types.float64):
        return None
    sig = a(a, b)

    def codegen(context, builder, signature, args):
        llty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.maxnum", [llty], ir.FunctionType(llty, [llty, llty]))
        return builder.call(fn, args)

    return sig, codegen


@intrinsic
def _fma(typingctx, a, b, c):
    """``llvm.fma``: a * b + c rounded once (one instruction on x86-64 CPUs
    with FMA; LLVM vectorises it)."""
    if not (a == b == c and a in (types.float32, types.float64)):
        return None
    sig = a(a, b, c)

    def codegen(context, builder, signature, args):
        llty = args[0].type
        fn = builder.module.declare_intrinsic("llvm.fma", [llty], ir.FunctionType(llty, [llty, llty, llty]))
        return builder.call(fn, args)

    return sig, codegen


# LLVM's x86 tuning for the AVX-512 cores (Skylake-X onwards, Zen 4) prefers
# 256-bit vectors ("prefer-vector-width"), for fear of the frequency drop of
# the first AVX-512 cores. The arithmetic-bound loops ask for 512-bit vectors
# (their function's "prefer-vector-width"="512"; machines without AVX-512
# ignore it): the binary cross-entropy loop went from 1.72 to 1.15 ns per
# float32 element and from 3.75 to 2.33 ns per float64 element (one core,
# in cache, Intel host, 2026-12-04). The attribute belongs to the function
# whose loop LLVM vectorises, so each such function calls this at its top.
# llvmlite's builder only knows enum attributes, hence the set.add around
# its check.
_WIDE_VECTORS = '"prefer-vector-width"="512"'


@intrinsic
def _wide_vectors(typingctx):
    """Let LLVM vectorise the calling function with 512-bit vectors."""

    def codegen(context, builder, signature, args):
        try:
            set.add(builder.function.attributes, _WIDE_VECTORS)
        except TypeError:  # an llvmlite whose attributes are no longer a set: LLVM's default width
            pass
        return context.get_dummy_value()

    return types.void(), codegen


# The shifters of _exp_parts: x / ln2 + 1.5 * 2**52 (2**23) rounds to an
# integer n, which the sum's low mantissa bits then hold (the sum's bits
# minus the shifter's; _pow2_typing reads it there). The float32 one is a
# float32 global: as _F32(a float64 global) the float32 exp ran 0.21 -> 0.23
# ns (measured; the cause not looked into).
_SHIFTER64 = 1.5 * 2.0**52
_SHIFTER32 = np.float32(1.5 * 2.0**23)


def _pow2_typing(nonpos, name):
    """Typing and code of an intrinsic ``(p, k)``: p * 2**n for a float p,
    rounded once, where k = n + 1.5 * 2**52 (2**23 for float32) as computed
    by :func:`_exp_parts`, of p's type: n is read off k's bits as an integer
    (k's bits minus the shifter's), so that no float-to-integer conversion
    is needed (one vector instruction less per exponential than converting
    n) and a NaN k gives an integer too (a NaN converted to an integer is
    poison in LLVM), where p is NaN and so is the product.

    When compiling for AVX-512 (``_AVX512``): ``llvm.ldexp``, which LLVM
    lowers to one vscalefpd / vscalefps per vector (with the conversion of
    n from int32): float64 exps 0.68 -> 0.63 ns, float32 0.30 ->
    0.27 (vectorised alone, one core, x <= 0, same polynomials,
    2026-12-05). Elsewhere ldexp would become a call into the C library, so
    2**n is built in the exponent field in integers of the float's width
    (int32 for float32, so that a vector of 16 float32 lanes stays one
    vector; Numba's own integer arithmetic is int64), with ``nonpos`` as
    follows; both give the same bits.

    ``nonpos=False`` (any n): as two factors 2**(n >> 1) and
    2**(n - (n >> 1)), so that subnormal results and 2**128 / 2**1024 work.
    ``nonpos=True`` (p in [0.5, 2], n <= 0 down to the exps' clamps): as
    p * 2**(n + K) * 2**-K with K = 64 (float32) or 512 (float64); the built
    factor is a normal number and its product exact, so the result is
    p * 2**n rounded once, as with the two factors, in fewer instructions.
    """

    def typing(typingctx, p, n):
        if p != n or p not in (types.float32, types.float64):
            return None

        def codegen(context, builder, signature, args):
            pv, kv = args
            wide = pv.type == ir.DoubleType()
            it = ir.IntType(64 if wide else 32)
            shifter_bits = int(np.float64(_SHIFTER64).view(np.int64) if wide else _SHIFTER32.view(np.int32))
            ni = builder.sub(builder.bitcast(kv, it), ir.Constant(it, shifter_bits))
            if _AVX512:
                i32 = ir.IntType(32)
                suffix = "f64" if wide else "f32"
                fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(pv.type, [pv.type, i32]), f"llvm.ldexp.{suffix}.i32")
                return builder.call(fn, [pv, builder.trunc(ni, i32) if wide else ni])
            bias, shift, k = (1023, 52, 512) if wide else (127, 23, 64)
            if nonpos:
                f1 = builder.shl(builder.add(ni, ir.Constant(it, bias + k)), ir.Constant(it, shift))
                return builder.fmul(builder.fmul(pv, builder.bitcast(f1, pv.type)), ir.Constant(pv.type, 2.0**-k))
            half = builder.ashr(ni, ir.Constant(it, 1))
            f1 = builder.shl(builder.add(half, ir.Constant(it, bias)), ir.Constant(it, shift))
            f2 = builder.shl(builder.add(builder.sub(ni, half), ir.Constant(it, bias)), ir.Constant(it, shift))
            return builder.fmul(builder.fmul(pv, builder.bitcast(f1, pv.type)), builder.bitcast(f2, pv.type))

        return p(p, n), codegen

    typing.__name__ = typing.__qualname__ = name
    return typing


_times_pow2 = intrinsic(_pow2_typing(False, "_times_pow2"))
_times_pow2_low = intrinsic(_pow2_typing(True, "_times_pow2_low"))


def fexp(x):
    """exp(x) for a float32 or float64 scalar, vectorisable (Numba only)."""
    raise NotImplementedError("fexp is only callable from Numba-compiled code")


def fexp_nonpos(x):
    """exp(x) for a float32 or float64 scalar x <= 0 (or -inf, or NaN),
    vectorisable (Numba only); bitwise equal to :func:`fexp` there, and
    wrong for x > 0."""
    raise NotImplementedError("fexp_nonpos is only callable from Numba-compiled code")


def flog(x):
    """log(x) for a float32 or float64 scalar, vectorisable (Numba only)."""
    raise NotImplementedError("flog is only callable from Numba-compiled code")


def _exp_parts(xc):
    """``(p, k)`` with exp(xc) = p * 2**n for a clamped argument xc, and k =
    n + 1.5 * 2**52 (2**23 for float32) whose bits hold n, for
    :func:`_times_pow2` (Numba only): the body shared by :func:`fexp` and
    :func:`fexp_nonpos`. A NaN xc gives a NaN p."""
    raise NotImplementedError


def _exp_parts64(xc):
    # exp(x) = 2**n * exp(r), n = round(x / ln2) by adding and subtracting
    # 1.5 * 2**52 (exact for |x / ln2| < 2**51; no "reassoc" may fold it),
    # r = x - n ln2 in [-ln2/2, ln2/2], ln2 in two parts
    # (the high part has trailing zeros, so n * hi is exact); exp(r) =
    # 1 + r q(r) with q of degree 10, fitted to the relative error of exp on
    # that interval (1.7e-17; the Taylor series needs degree 13 for it).
    k = xc * 1.4426950408889634 + _SHIFTER64
    n = k - _SHIFTER64
    r = xc - n * 0.6931471803691238
    r = r - n * 1.9082149292705877e-10
    p = 2.4968646932926366e-08
    p = p * r + 2.763113913421698e-07
    p = p * r + 2.755770707226833e-06
    p = p * r + 2.4801490306092563e-05
    p = p * r + 0.00019841269331448246
    p = p * r + 0.0013888888946719448
    p = p * r + 0.008333333333612256
    p = p * r + 0.04166666666651616
    p = p * r + 0.16666666666666055
    p = p * r + 0.5000000000000012
    p = p * r + 1.0
    p = p * r + 1.0
    return p, k


_F32 = np.float32


def _exp_parts32(xc):
    # The same scheme in float32 arithmetic: exp(r) = 1 + r q(r), q of degree
    # 5 fitted like _exp_parts64's (0.84 ulp on the interval with fused
    # multiply-adds), in 6 multiply-adds against 8 operations for Cephes'
    # r**2 P(r) + r + 1.
    k = xc * _F32(1.44269504) + _SHIFTER32
    n = k - _SHIFTER32
    r = xc - n * _F32(0.693359375)
    r = r - n * _F32(-2.12194440e-4)
    p = _F32(0.001385929062962532)
    p = p * r + _F32(0.008374763652682304)
    p = p * r + _F32(0.04166772589087486)
    p = p * r + _F32(0.1666642129421234)
    p = p * r + _F32(0.4999999403953552)
    p = p * r + _F32(1.0)
    p = p * r + _F32(1.0)
    return p, k


# The clamps are selects that keep a NaN (x < c is false for it), so a NaN
# runs through to a NaN p and the product, with no select on x != x at the
# end; with 2**n taken from k's bits (_pow2_typing), two vector instructions
# less per exponential: ns per exp (vectorised alone, one core, general / x
# <= 0, 2026-12-05) float32 0.245 / 0.235 -> 0.226 / 0.218, float64 0.60-0.63
# / 0.56-0.60 -> 0.56-0.57 / 0.54-0.55.


def _exp64(x):
    # The clamp needs no select after it: below -760 the two factors of 2**n
    # round the result to 0, and exp(709.8) already overflows to inf.
    xc = -760.0 if x < -760.0 else x
    p, k = _exp_parts(709.8 if xc > 709.8 else xc)
    return _times_pow2(p, k)


def _exp32(x):
    # 0 below -110, inf from 88.8 on, as in _exp64
    xc = _F32(-110.0) if x < _F32(-110.0) else x
    p, k = _exp_parts(_F32(88.8) if xc > _F32(88.8) else xc)
    return _times_pow2(p, k)


def _exp_nonpos64(x):
    # for x <= 0: no upper clamp, and 2**n built as one factor times a
    # constant (_times_pow2_low)
    p, k = _exp_parts(-760.0 if x < -760.0 else x)
    return _times_pow2_low(p, k)


def _exp_nonpos32(x):
    p, k = _exp_parts(_F32(-110.0) if x < _F32(-110.0) else x)
    return _times_pow2_low(p, k)


def _log_series(z, fe):
    """fe ln 2 + 2 atanh(z) for |z| <= 0.172 (Numba only): the end of flog
    and flog1p_unit."""
    raise NotImplementedError


def _log_series64(z, fe):
    # atanh(z) = z (1 + w p(w)), w = z**2 <= 0.0295, with p of degree 6
    # fitted to the error of w p(w) there (1.3e-18; the series 1/3 + w/5 +
    # ... needs degree 9, to z**21, for it); ln 2 in two parts (fe * hi exact)
    w = z * z
    p = 0.0739871755475051
    p = p * w + 0.07656944021169777
    p = p * w + 0.0909178569209866
    p = p * w + 0.11111099209596192
    p = p * w + 0.14285714372069444
    p = p * w + 0.19999999999702536
    p = p * w + 0.3333333333333368
    z2 = z + z
    return fe * 0.6931471803691238 + (z2 + (z2 * w * p + fe * 1.9082149292705877e-10))


def _log_series32(z, fe):
    # p of degree 2 fitted likewise (1.2e-9; the series needs degree 4)
    w = z * z
    p = _F32(0.14938047528266907)
    p = p * w + _F32(0.1998867243528366)
    p = p * w + _F32(0.3333338797092438)
    z2 = z + z
    return fe * _F32(0.693359375) + (z2 + (z2 * w * p + fe * _F32(-2.12194440e-4)))


def _log64(x):
    # x = 2**e * f with f in [sqrt(1/2), sqrt(2)); log f = 2 atanh(z),
    # z = (f - 1) / (f + 1), |z| < 0.172: _log_series.
    tiny = x < 2.2250738585072014e-308
    xs = x * 18014398509481984.0 if tiny else x  # 2**54 lifts subnormals
    bits = _float_to_bits(xs)
    e = ((bits >> 52) & 0x7FF) - 1022
    f = _bits_to_float((bits & 0x000FFFFFFFFFFFFF) | 0x3FE0000000000000)  # [0.5, 1)
    low = f < 0.7071067811865476
    f = f + f if low else f
    e = e - 1 if low else e
    e = e - 54 if tiny else e
    res = _log_series((f - 1.0) / (f + 1.0), np.float64(e))
    res = -np.inf if x == 0.0 else res
    res = np.nan if x < 0.0 else res
    res = np.inf if x == np.inf else res
    return x if x != x else res


def _log32(x):
    tiny = x < _F32(1.17549435e-38)
    xs = x * _F32(16777216.0) if tiny else x  # 2**24
    bits = np.int64(_float_to_bits(xs))
    e = ((bits >> 23) & 0xFF) - 126
    f = _bits_to_float(np.int32((bits & 0x7FFFFF) | 0x3F000000))
    low = f < _F32(0.70710678)
    f = f + f if low else f
    e = e - 1 if low else e
    e = e - 24 if tiny else e
    res = _log_series((f - _F32(1.0)) / (f + _F32(1.0)), _F32(e))
    res = _F32(-np.inf) if x == _F32(0.0) else res
    res = _F32(np.nan) if x < _F32(0.0) else res
    res = _F32(np.inf) if x == _F32(np.inf) else res
    return x if x != x else res


_FAST_OPTS = dict(fastmath=set(FASTMATH), error_model="numpy")
# The scalar math is inlined at Numba IR level (LLVM would leave the larger
# composites as calls whose status check stops vectorisation); it then takes
# the fast-math flags of its caller, so no caller may have "reassoc".


def _overload_by_float(stub, impl32, impl64, of=lambda t: t):
    """Register the Numba implementation of ``stub``: ``impl32`` when its
    first argument is float32, ``impl64`` when float64 (``of`` maps the
    argument's Numba type to the float type: ``lambda t: t.dtype`` for an
    array). The typing function takes the stub's signature (``wraps``), as
    Numba checks it against the implementation's."""

    @functools.wraps(stub)
    def typing(*args):
        t = of(args[0])
        if t == types.float32:
            return impl32
        if t == types.float64:
            return impl64
        return None

    overload(stub, jit_options=_FAST_OPTS)(typing)


_overload_by_float(_exp_parts, _exp_parts32, _exp_parts64)
_overload_by_float(fexp, _exp32, _exp64)
_overload_by_float(fexp_nonpos, _exp_nonpos32, _exp_nonpos64)
_overload_by_float(_log_series, _log_series32, _log_series64)
_overload_by_float(flog, _log32, _log64)


def flog1p(v):
    """log(1 + v) for v >= -1, vectorisable (Numba only)."""
    raise NotImplementedError("flog1p is only callable from Numba-compiled code")


def _log1p64(v):
    # Kahan's trick: log(u) * v / (u - 1) with u = 1 + v rounded.
    u = v + 1.0
    r = flog(u) * (v / (u - 1.0))
    r = v if u == 1.0 else r
    return u if u == np.inf else r


def _log1p32(v):
    u = v + _F32(1.0)
    r = flog(u) * (v / (u - _F32(1.0)))
    r = v if u == _F32(1.0) else r
    return u if u == _F32(np.inf) else r


_overload_by_float(flog1p, _log1p32, _log1p64)


def flog1p_unit(v):
    """log(1 + v) for v in [0, 1] (NaN propagates), vectorisable (Numba only).

    The softplus term log1p(exp(-|z|)) of the sigmoid losses, at half the
    cost of :func:`flog1p`: no exponent split and one division instead of
    two. Within 2 ulp over [0, 1] (the tests step through float32's values
    there, one bit pattern in 37).
    """
    raise NotImplementedError("flog1p_unit is only callable from Numba-compiled code")


def flog1p_unit_recip(v):
    """(log(1 + v), 1 / (1 + v)) for v in [0, 1] with one division between
    them (Numba only): with v = exp(-|z|), the softplus term and the sigmoid
    of the logit losses. Within 4 ulp (as :func:`flog1p`) and 3 ulp."""
    raise NotImplementedError("flog1p_unit_recip is only callable from Numba-compiled code")


# log(1 + v) = 2 atanh(z) with z = v / (2 + v) for v <= sqrt(2) - 1 and, above,
# log 2 + 2 atanh(z) with z = (v - 1) / (v + 3) (that is, 1 + v = 2 f with f
# in [sqrt(1/2), 1]); |z| <= 0.172 either way: the series of flog.
_SQRT2_M1 = 0.41421356237309503


def _log1p_unit64(v):
    big = v > _SQRT2_M1
    return _log_series((v - 1.0 if big else v) / (v + 3.0 if big else v + 2.0), 1.0 if big else 0.0)


def _log1p_unit32(v):
    big = v > _F32(_SQRT2_M1)
    z = (v - _F32(1.0) if big else v) / (v + _F32(3.0) if big else v + _F32(2.0))
    return _log_series(z, _F32(1.0) if big else _F32(0.0))


def _log1p_unit_recip64(v):
    big = v > _SQRT2_M1
    den = v + 3.0 if big else v + 2.0
    u = v + 1.0
    q = 1.0 / (u * den)
    return _log_series((v - 1.0 if big else v) * (q * u), 1.0 if big else 0.0), q * den


def _log1p_unit_recip32(v):
    big = v > _F32(_SQRT2_M1)
    den = v + _F32(3.0) if big else v + _F32(2.0)
    u = v + _F32(1.0)
    q = _F32(1.0) / (u * den)
    return _log_series((v - _F32(1.0) if big else v) * (q * u), _F32(1.0) if big else _F32(0.0)), q * den


_overload_by_float(flog1p_unit, _log1p_unit32, _log1p_unit64)
_overload_by_float(flog1p_unit_recip, _log1p_unit_recip32, _log1p_unit_recip64)


@_jit()
def exp_array(x, out):
    """``out[:] = exp(x)`` with the vectorisable exp (for the tests)."""
    _wide_vectors()
    for i in range(x.shape[0]):
        out[i] = fexp(x[i])

# ---------------------------------------------------------------------------
# Row helpers. Functions marked reduce=True do nothing but sums/maxima over a
# row plus calls; the arithmetic whose rounding matters lives in the helpers
# they call (compiled without re-association).


@intrinsic
def _span_max(typingctx, x, lo, hi):
    """``llvm.maxnum`` over x[lo:hi] of the flat view of a C-contiguous array
    (lo < hi, unchecked): NaN is skipped, all NaN gives NaN.

    Written in LLVM IR because LLVM's own vectorisation of a ``_maxnum``
    loop ends each call badly: the 16 float32 lanes of its vector are
    combined one by one, each step a compare on the NaN-flag chain
    (``maxnum`` without the ``nnan`` flag), and the last 1-63 elements run
    as a scalar loop of the same chain. A row of 1,000 float32 spent 140 of
    its 200 ns there (Intel host, one core, in cache, 2026-12-04). Here: four
    vector accumulators of 64 bytes, one vector at a time for the rest, the
    last partial vector as one masked load that fills its unused lanes with
    NaN (which ``maxnum`` skips), and the lanes combined by halving."""
    if not (
        isinstance(x, types.Array) and x.layout == "C" and x.dtype in (types.float32, types.float64)
        and isinstance(lo, types.Integer) and isinstance(hi, types.Integer)
    ):  # fmt: skip
        return None
    sig = x.dtype(x, types.intp, types.intp)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        lo, hi = args[1], args[2]
        fty = context.get_value_type(signature.args[0].dtype)
        align = signature.args[0].dtype.bitwidth // 8
        vl = 64 // align
        vt = ir.VectorType(fty, vl)
        intp = lo.type
        nan = ir.Constant(vt, [float("nan")] * vl)
        suffix = "f32" if align == 4 else "f64"

        def maxnum(t):
            return cgutils.get_or_insert_function(builder.module, ir.FunctionType(t, [t, t]), f"llvm.maxnum.v{t.count}{suffix}")

        fmax = maxnum(vt)
        accs = [cgutils.alloca_once_value(builder, nan) for _ in range(4)]
        base = builder.gep(arr.data, [lo])
        n = builder.sub(hi, lo)

        def load(i):
            return builder.load(builder.bitcast(builder.gep(base, [i]), vt.as_pointer()), align=align)

        def update(acc, v):
            builder.store(builder.call(fmax, [builder.load(acc), v]), acc)

        c4 = ir.Constant(intp, 4 * vl)
        n4 = builder.mul(builder.udiv(n, c4), c4)
        with cgutils.for_range_slice(builder, ir.Constant(intp, 0), n4, c4, intp) as (i, _):
            for u, acc in enumerate(accs):
                update(acc, load(builder.add(i, ir.Constant(intp, u * vl))))
        c1 = ir.Constant(intp, vl)
        n1 = builder.mul(builder.udiv(n, c1), c1)
        with cgutils.for_range_slice(builder, n4, n1, c1, intp) as (i, _):
            update(accs[0], load(i))
        rest = builder.sub(n, n1)
        with builder.if_then(builder.icmp_signed(">", rest, ir.Constant(intp, 0))):
            lanes = ir.Constant(ir.VectorType(intp, vl), list(range(vl)))
            limit = builder.insert_element(ir.Constant(ir.VectorType(intp, vl), ir.Undefined), rest, ir.Constant(ir.IntType(32), 0))
            limit = builder.shuffle_vector(limit, limit, ir.Constant(ir.VectorType(ir.IntType(32), vl), [0] * vl))
            mask = builder.icmp_signed("<", lanes, limit)
            ptr = builder.bitcast(builder.gep(base, [n1]), vt.as_pointer())
            update(accs[1], _masked_load(builder, ptr, vt, mask, align, fill=nan))
        vals = [builder.load(acc) for acc in accs]
        v = builder.call(fmax, [builder.call(fmax, vals[:2]), builder.call(fmax, vals[2:])])
        width = vl
        while width > 1:
            width //= 2
            ht = ir.VectorType(fty, width)
            hmax = maxnum(ht)
            i32v = ir.VectorType(ir.IntType(32), width)
            low = builder.shuffle_vector(v, v, ir.Constant(i32v, list(range(width))))
            high = builder.shuffle_vector(v, v, ir.Constant(i32v, list(range(width, 2 * width))))
            v = builder.call(hmax, [low, high])
        return builder.extract_element(v, ir.Constant(ir.IntType(32), 0))

    return sig, codegen


@_jit()
def _row_max(x):
    """Largest element of a non-empty row; NaN is skipped (all NaN gives NaN)."""
    return _span_max(x, 0, x.shape[0])


@_jit()
def _row_exp(x, m, e):
    """e[k] = exp(x_k - m)."""
    _wide_vectors()
    for k in range(x.shape[0]):
        e[k] = fexp_nonpos(x[k] - m)


# A float32 row times a float64 factor a, each product rounded once to
# float32: as a float64 product that is two vector conversions per 8
# elements each way around one multiply (vcvtps2pd and vcvtpd2ps, two
# micro-ops each on the Intel host). Instead a is split into float32 parts,
# a = hi + lo + O(2**-48 a), and each element is hi * v + (lo * v) with one
# fused multiply-add: within 2**-47 of the exact product before the one
# rounding, so it differs from the float64 product rounded to float32
# (which rounds twice) only next to a rounding midpoint (7 elements in 10**6
# of [0, 1)**8 for three factors, each by one ulp). Products below 2**-100,
# where lo * v may round among the subnormals, are within one ulp. 1,000
# float32 elements in cache, one core: 0.112 -> 0.045 ns per element
# (2026-12-05). Factors whose float32 parts would overflow or be subnormal
# take the float64 product.
_SPLIT_MIN = 2.0**-100
_SPLIT_MAX = 2.0**100


@_jit()
def _scale_row(g, a):
    """g[k] = a * g[k] for a float64 ``a``, rounded once (to within the
    midpoint cases above) in the row's dtype."""
    _wide_vectors()
    if g.itemsize == 4 and _SPLIT_MIN < abs(a) < _SPLIT_MAX:
        hi = g.dtype.type(a)
        lo = g.dtype.type(a - np.float64(hi))
        for k in range(g.shape[0]):
            v = g[k]
            g[k] = _fma(hi, v, lo * v)
    else:
        for k in range(g.shape[0]):
            g[k] = a * g[k]


@_jit(reduce=True)
def _row_sum_off_max(e, x, m):
    """``(s, c)``: s = sum of e_k over the terms with x_k != m (float64), c = how
    many terms equal m.

    With e = exp(x - m) and m the row maximum, the row's log-sum-exp is
    m + log1p(s + c - 1): one maximum term is kept out of the sum, so small
    terms are not lost next to it."""
    _wide_vectors()
    s = 0.0
    c = 0.0
    for k in range(x.shape[0]):
        eq = x[k] == m
        s += 0.0 if eq else np.float64(e[k])
        c += 1.0 if eq else 0.0
    return s, c


@_jit()
def _row_exp_sum(x, m, e, ahead):
    """exp(x - m) into ``e`` and its :func:`_row_sum_off_max`.

    ``ahead``: 0, or the address of the next row (as many bytes as x), which
    is then read into the cache as the exponentials go (see
    PREFETCH_ROW_MAX_BYTES): before each chunk of 512 elements, the lines of
    the same elements there. An address rather than an array: Numba counts
    the references of every array passed down, and that cost each row of the
    inputs that fit in the caches."""
    if ahead == 0:
        _row_exp(x, m, e)
    else:
        n = x.shape[0]
        for k0 in range(0, n, 512):
            k1 = min(n, k0 + 512)
            for a in range(ahead + k0 * x.itemsize, ahead + k1 * x.itemsize, 64):
                _prefetch_address(a)
            _row_exp(x[k0:k1], m, e[k0:k1])
    return _row_sum_off_max(e, x, m)


@_jit()
def _rows_ahead(x2):
    """``(address of row 0, bytes per row)`` of the C-contiguous 2-D ``x2``
    when its row layout reads the next row ahead (rows of at most
    PREFETCH_ROW_MAX_BYTES in inputs of at least PREFETCH_MIN_BYTES), else
    ``(0, 0)``; see :func:`_next_row`."""
    row_bytes = x2.shape[1] * x2.itemsize
    if row_bytes <= PREFETCH_ROW_MAX_BYTES and x2.size * x2.itemsize >= PREFETCH_MIN_BYTES:
        return _address(x2, 0), row_bytes
    return 0, 0


@_jit()
def _next_row(start, row_bytes, r, n_rows):
    """The ``ahead`` argument of :func:`_row_exp_sum` for row ``r`` of
    ``n_rows``, from :func:`_rows_ahead`: the address of row r + 1, or 0."""
    return start + (r + 1) * row_bytes if start != 0 and r + 1 < n_rows else 0


@_jit(reduce=True)
def _sum(a):
    """float64 sum of a vector (vectorised, fixed order for a given length)."""
    _wide_vectors()
    s = 0.0
    for k in range(a.shape[0]):
        s += np.float64(a[k])
    return s


@_jit(reduce=True)
def _row_weighted_gap(w, x, m):
    """sum_k w_k (m - x_k) in float64 (the label-smoothing term), vectorised
    (fixed order for a given length)."""
    _wide_vectors()
    s = 0.0
    for k in range(x.shape[0]):
        s += w[k] * np.float64(m - x[k])
    return s


@_jit(reduce=True)
def _row_prob_terms(w, t, x, m, keep, spread):
    """``(sum_k w_k t'_k (m - x_k), sum_k w_k t'_k)`` with t' = keep t + spread,
    in float64, in one vectorised pass (fixed order for a given length); a
    term with w_k t'_k == 0 adds nothing even where x_k = -inf."""
    _wide_vectors()
    part = 0.0
    total = 0.0
    for k in range(x.shape[0]):
        wt = w[k] * (keep * t[k] + spread)
        part += 0.0 if wt == 0.0 else wt * np.float64(m - x[k])
        total += wt
    return part, total


# ---------------------------------------------------------------------------
# softmax, log_softmax, logsumexp over the last axis of a 2-D array


@_jit()
def _softmax_row(x, out, ahead):
    """softmax of the row ``x`` into ``out``; ``ahead`` as for :func:`_row_exp_sum`."""
    _wide_vectors()
    m = _row_max(x)
    if not abs(m) < np.inf:
        # SciPy: exp(x - max) / sum is NaN everywhere once the max is not finite.
        for k in range(x.shape[0]):
            out[k] = np.nan
        return
    s, c = _row_exp_sum(x, m, out, ahead)
    _scale_row(out, 1.0 / (s + c))


@_jit()
def _log_softmax_row(x, out, ahead):
    """log_softmax of the row ``x`` into ``out``; ``ahead`` as for :func:`_row_exp_sum`."""
    _wide_vectors()
    m = _row_max(x)
    if not abs(m) < np.inf:
        # SciPy shifts by 0 when the max is not finite: x - log(sum(exp(x))).
        s = 0.0
        for k in range(x.shape[0]):
            s += math.exp(x[k])
        lse = math.log(s)
        for k in range(x.shape[0]):
            out[k] = x[k] - lse
        return
    s, c = _row_exp_sum(x, m, out, ahead)  # out as scratch
    lse = math.log1p(s + (c - 1.0))
    for k in range(x.shape[0]):
        out[k] = np.float64(x[k] - m) - lse


@_jit()
def _sign(v):
    if v > 0.0:
        return 1.0
    if v < 0.0:
        return -1.0
    if v == 0.0:
        return 0.0
    return np.nan


@_jit()
def _lse_direct(x, b, has_b, return_sign):
    """log(sum(b * exp(x))) without shifting: SciPy's answer for the edge cases."""
    _wide_vectors()
    s = 0.0
    for k in range(x.shape[0]):
        v = math.exp(x[k])
        s += b[k] * v if has_b else v
    if return_sign:
        return math.log(abs(s)), _sign(s)
    return (math.log(s) if s >= 0.0 else np.nan), _sign(s)


@_jit()
def _lse_row_b(x, b, return_sign):
    """SciPy 1.15+'s logsumexp of one row with weights ``b``: the max term is
    kept out of the sum (log1p of the rest) for precision; non-finite results
    fall back to the direct formula, exactly as ``scipy.special.logsumexp``."""
    _wide_vectors()
    n = x.shape[0]
    m = -np.inf
    has_nan = False
    for k in range(n):
        if b[k] == 0.0:
            continue
        v = x[k]
        if v != v:
            has_nan = True
        elif v > m:
            m = v
    if not has_nan and abs(m) < np.inf:
        big = 0.0  # sum of the weights of the max terms
        s = 0.0
        for k in range(n):
            bk = b[k]
            if bk == 0.0:
                continue
            v = x[k]
            if v == m:
                big += bk
            else:
                s += bk * math.exp(v - m)
        if s != 0.0:
            s = s / big
        sgn = _sign(s + 1.0) * _sign(big)
        if s < -1.0:
            s = -s - 2.0
        out = math.log1p(s) + math.log(abs(big)) + m
        if not return_sign and sgn < 0.0:
            out = np.nan
        if abs(out) < np.inf:
            return out, sgn
    return _lse_direct(x, b, True, return_sign)


@_jit()
def _lse_row(x, b, has_b, return_sign, e):
    """logsumexp of the row ``x`` (weights ``b`` when ``has_b``; ``e`` is
    scratch). It does not read the next row ahead (see
    PREFETCH_ROW_MAX_BYTES)."""
    if has_b:
        return _lse_row_b(x, b, return_sign)
    m = _row_max(x)
    if abs(m) < np.inf:
        s, c = _row_exp_sum(x, m, e, 0)
        # SciPy: log1p(s / c) + log(c) + max, with c the number of max terms.
        out = math.log1p(s / c) + math.log(c) + m
        if abs(out) < np.inf:
            return out, 1.0
    return _lse_direct(x, b, False, return_sign)


# Rows of at most TILE_MAX_BYTES bytes go through tiles of LANES rows (SIMD
# across rows, see the cross-entropy kernels below); longer rows row by row.


@_jit()
def _softmax_rows_block(j, x, out, log, block):
    """softmax (``log``: log_softmax) of rows [j * block, (j + 1) * block)."""
    _wide_vectors()
    if x.shape[1] * x.itemsize <= TILE_MAX_BYTES:
        _softmax_tiles(j, x, out, log, block)
        return
    start, row_bytes = _rows_ahead(x)
    for i in range(j * block, min(x.shape[0], (j + 1) * block)):
        ahead = _next_row(start, row_bytes, i, x.shape[0])
        if log:
            _log_softmax_row(x[i], out[i], ahead)
        else:
            _softmax_row(x[i], out[i], ahead)


@_jit(parallel=True)
def softmax_rows_par(x, out, log, block):
    _wide_vectors()
    for j in prange((x.shape[0] + block - 1) // block):
        _softmax_rows_block(np.int64(j), x, out, log, block)


@_jit()
def softmax_rows_ser(x, out, log, block):
    _wide_vectors()
    for j in range((x.shape[0] + block - 1) // block):
        _softmax_rows_block(np.int64(j), x, out, log, block)


@_jit()
def _lse_block(j, x, b, b_step, return_sign, out, sgn, block):
    _wide_vectors()
    if b_step == 0 and x.shape[1] * x.itemsize <= TILE_MAX_BYTES:
        _lse_tiles(j, x, return_sign, out, sgn, block)
        return
    e = np.empty(x.shape[1], dtype=x.dtype)
    for i in range(j * block, min(x.shape[0], (j + 1) * block)):
        out[i], sgn[i] = _lse_row(x[i], b[i * b_step], b_step == 1, return_sign, e)


@_jit(parallel=True)
def logsumexp_par(x, b, b_step, return_sign, out, sgn, block):
    _wide_vectors()
    for j in prange((x.shape[0] + block - 1) // block):
        _lse_block(np.int64(j), x, b, b_step, return_sign, out, sgn, block)


@_jit()
def logsumexp_ser(x, b, b_step, return_sign, out, sgn, block):
    _wide_vectors()
    for j in range((x.shape[0] + block - 1) // block):
        _lse_block(np.int64(j), x, b, b_step, return_sign, out, sgn, block)


# ---------------------------------------------------------------------------
# Few long rows: each row is cut in segments of SEGMENT elements that the
# threads share. A segment gives (max, sum of exp(x - max) off its maximum,
# count of its maximum); merge_segments combines a row's segments in a fixed
# order into the row's (max, sum off max, count), as _row_max and
# _row_sum_off_max give for a whole row. The segments depend on the shape
# only, so the results do not depend on the thread count.

SEGMENT = 1 << 15
SPLIT_MIN_COLS = 1 << 18  # rows at least this long ...
SPLIT_MAX_ROWS = 8  # ... in arrays of at most this many rows are split


@_jit()
def _segment_stats(j, x, n_seg, M, S, Cn):
    r = j // n_seg
    s0 = (j - r * n_seg) * SEGMENT
    xs = x[r, s0 : min(x.shape[1], s0 + SEGMENT)]
    m = _row_max(xs)
    M[j] = m
    if abs(m) < np.inf:
        e = np.empty(xs.shape[0], dtype=x.dtype)
        s, c = _row_exp_sum(xs, m, e, 0)
    else:  # all -inf (adds nothing), or +inf / all NaN (the row is redone as a whole)
        s, c = 0.0, 0.0
    S[j] = s
    Cn[j] = c


@_jit(parallel=True)
def segment_stats_par(x, n_seg, M, S, Cn):
    _wide_vectors()
    for j in prange(x.shape[0] * n_seg):
        _segment_stats(np.int64(j), x, n_seg, M, S, Cn)


@_jit()
def segment_stats_ser(x, n_seg, M, S, Cn):
    _wide_vectors()
    for j in range(x.shape[0] * n_seg):
        _segment_stats(np.int64(j), x, n_seg, M, S, Cn)


@_jit()
def merge_segments(n_seg, M, S, Cn, out_m, out_s, out_c):
    """Per row: the maximum over its segments and the float64 sum off it and
    count, rescaling each segment's sum by exp(segment max - max). A row
    whose maximum is not finite gets NaN sums (the caller redoes it)."""
    _wide_vectors()
    for r in range(out_m.shape[0]):
        m = M[r * n_seg]
        for j in range(r * n_seg + 1, (r + 1) * n_seg):
            m = _maxnum(m, M[j])
        s = 0.0
        c = 0.0
        if abs(m) < np.inf:
            for j in range(r * n_seg, (r + 1) * n_seg):
                mj = M[j]
                if mj == m:
                    s += S[j]
                    c += Cn[j]
                elif mj > -np.inf:
                    s += (S[j] + Cn[j]) * math.exp(np.float64(mj) - np.float64(m))
                elif mj != mj:  # a segment of NaN only
                    s += np.nan
        else:
            s = np.nan
        out_m[r] = m
        out_s[r] = s
        out_c[r] = c


@_jit()
def _segment_apply(j, x, n_seg, m, a, log, out):
    _wide_vectors()
    r = j // n_seg
    s0 = (j - r * n_seg) * SEGMENT
    s1 = min(x.shape[1], s0 + SEGMENT)
    mr = m[r]
    ar = a[r]
    xr = x[r]
    orow = out[r]
    if log:
        for k in range(s0, s1):
            orow[k] = np.float64(xr[k] - mr) - ar
    else:
        for k in range(s0, s1):
            orow[k] = fexp_nonpos(xr[k] - mr) * ar


@_jit(parallel=True)
def segment_apply_par(x, n_seg, m, a, log, out):
    """softmax (``out = exp(x - m) * a``) or log_softmax (``out = (x - m) - a``)
    of each row, segment by segment."""
    _wide_vectors()
    for j in prange(x.shape[0] * n_seg):
        _segment_apply(np.int64(j), x, n_seg, m, a, log, out)


@_jit()
def segment_apply_ser(x, n_seg, m, a, log, out):
    _wide_vectors()
    for j in range(x.shape[0] * n_seg):
        _segment_apply(np.int64(j), x, n_seg, m, a, log, out)


@_jit()
def _segment_weighted_gap(j, x, n_seg, m, w, out):
    r = j // n_seg
    s0 = (j - r * n_seg) * SEGMENT
    s1 = min(x.shape[1], s0 + SEGMENT)
    out[j] = _row_weighted_gap(w[s0:s1], x[r, s0:s1], m[r])


@_jit(parallel=True)
def segment_weighted_gap_par(x, n_seg, m, w, out):
    """out[j] = sum_k w_k (m_r - x_k) over segment j (row r) in float64: the
    label-smoothing term of the cross-entropy of few long rows."""
    _wide_vectors()
    for j in prange(x.shape[0] * n_seg):
        _segment_weighted_gap(np.int64(j), x, n_seg, m, w, out)


@_jit()
def segment_weighted_gap_ser(x, n_seg, m, w, out):
    _wide_vectors()
    for j in range(x.shape[0] * n_seg):
        _segment_weighted_gap(np.int64(j), x, n_seg, m, w, out)


@_jit()
def _segment_ce_grad(j, x, n_seg, m, a, cs, w, g):
    _wide_vectors()
    r = j // n_seg
    s0 = (j - r * n_seg) * SEGMENT
    s1 = min(x.shape[1], s0 + SEGMENT)
    mr = m[r]
    ar = a[r]
    cr = cs[r]
    xr = x[r]
    gr = g[r]
    if ar == 0.0 and cr == 0.0:  # an ignored row
        for k in range(s0, s1):
            gr[k] = 0.0
    else:
        for k in range(s0, s1):
            gr[k] = ar * fexp_nonpos(xr[k] - mr) - cr * w[k]


@_jit(parallel=True)
def segment_ce_grad_par(x, n_seg, m, a, cs, w, g):
    """g = a_r exp(x - m_r) - cs_r w, segment by segment: the cross-entropy
    gradient of few long rows but the target's entry (set by the caller)."""
    _wide_vectors()
    for j in prange(x.shape[0] * n_seg):
        _segment_ce_grad(np.int64(j), x, n_seg, m, a, cs, w, g)


@_jit()
def segment_ce_grad_ser(x, n_seg, m, a, cs, w, g):
    _wide_vectors()
    for j in range(x.shape[0] * n_seg):
        _segment_ce_grad(np.int64(j), x, n_seg, m, a, cs, w, g)


@_jit()
def _segment_prob_terms(j, x, t, n_seg, m, w, keep, spread, part, total):
    r = j // n_seg
    s0 = (j - r * n_seg) * SEGMENT
    s1 = min(x.shape[1], s0 + SEGMENT)
    part[j], total[j] = _row_prob_terms(w[s0:s1], t[r, s0:s1], x[r, s0:s1], m[r], keep, spread)


@_jit(parallel=True)
def segment_prob_terms_par(x, t, n_seg, m, w, keep, spread, part, total):
    """Per segment j (row r): sum_k w_k t'_k (m_r - x_k) and sum_k w_k t'_k
    (see _row_prob_terms): the probability-target cross-entropy of few long rows."""
    _wide_vectors()
    for j in prange(x.shape[0] * n_seg):
        _segment_prob_terms(np.int64(j), x, t, n_seg, m, w, keep, spread, part, total)


@_jit()
def segment_prob_terms_ser(x, t, n_seg, m, w, keep, spread, part, total):
    _wide_vectors()
    for j in range(x.shape[0] * n_seg):
        _segment_prob_terms(np.int64(j), x, t, n_seg, m, w, keep, spread, part, total)


@_jit()
def _segment_ce_prob_grad(j, x, t, n_seg, m, a, cs, w, keep, spread, g):
    _wide_vectors()
    r = j // n_seg
    s0 = (j - r * n_seg) * SEGMENT
    s1 = min(x.shape[1], s0 + SEGMENT)
    mr = m[r]
    ar = a[r]
    cr = cs[r]
    xr = x[r]
    tr = t[r]
    gr = g[r]
    for k in range(s0, s1):
        gr[k] = ar * fexp_nonpos(xr[k] - mr) - cr * w[k] * (keep * tr[k] + spread)


@_jit(parallel=True)
def segment_ce_prob_grad_par(x, t, n_seg, m, a, cs, w, keep, spread, g):
    """g = a_r exp(x - m_r) - cs_r w t', segment by segment (see _ce_prob_row)."""
    _wide_vectors()
    for j in prange(x.shape[0] * n_seg):
        _segment_ce_prob_grad(np.int64(j), x, t, n_seg, m, a, cs, w, keep, spread, g)


@_jit()
def segment_ce_prob_grad_ser(x, t, n_seg, m, a, cs, w, keep, spread, g):
    _wide_vectors()
    for j in range(x.shape[0] * n_seg):
        _segment_ce_prob_grad(np.int64(j), x, t, n_seg, m, a, cs, w, keep, spread, g)


# ---------------------------------------------------------------------------
# elementwise sigmoid / log-sigmoid on flat arrays, in blocks


@_jit()
def _sigmoid_block(j, x, out, log, block):
    """sigmoid (or log-sigmoid) of x[j * block:(j + 1) * block], computed in
    float64 from e = exp(-|x|): sigmoid = 1 / (1 + e) or e / (1 + e),
    log-sigmoid = -log1p(e) - max(-x, 0): no overflow, full relative
    precision in both tails."""
    _wide_vectors()
    stop = min(x.shape[0], (j + 1) * block)
    if log:
        for i in range(j * block, stop):
            z = np.float64(x[i])
            out[i] = -flog1p_unit(fexp_nonpos(-abs(z))) - max(-z, 0.0)
    else:
        for i in range(j * block, stop):
            z = np.float64(x[i])
            e = fexp_nonpos(-abs(z))
            inv = 1.0 / (1.0 + e)
            out[i] = inv if z >= 0.0 else e * inv


@_jit(parallel=True)
def sigmoid_par(x, out, log, block):
    _wide_vectors()
    for j in prange((x.shape[0] + block - 1) // block):
        _sigmoid_block(np.int64(j), x, out, log, block)


@_jit()
def sigmoid_ser(x, out, log, block):
    _wide_vectors()
    for j in range((x.shape[0] + block - 1) // block):
        _sigmoid_block(np.int64(j), x, out, log, block)


# ---------------------------------------------------------------------------
# cross-entropy over (N, C, S) logits: class axis in the middle, S = d1*...*dk
# (S = 1 for the usual (N, C) input). A "row" r = n * S + s is x[n, :, s].
#
# Two layouts of the work, chosen by shape:
# * rows: S == 1 and rows of more than TILE_MAX_BYTES. One row at a time, vectorised along the
#   classes (exp, sums and max are SIMD over k).
# * tiles: everything else (few classes, or spatial input). LANES rows are
#   copied into a (C, LANES) tile, so that every operation is SIMD across rows
#   (lanes) instead of along a short class axis; spatial input is already laid
#   out that way (classes strided, positions contiguous).

# Rows of up to 512 bytes (128 float32, 64 float64 elements) use tiles: a
# tile of LANES such rows is at most 32 KiB, within L1 beside its scratch.
# Measured (2 threads, 2*10**7 elements, ns per element, rows / tiles):
# float32 C=50: cross_entropy+grad 1.32/0.78, softmax 1.11/0.77, logsumexp
# 1.18/0.53; C=64 1.18/0.73, 0.96/0.74, 1.05/0.50; C=128 0.80/0.76,
# 0.79/0.80, 0.71/0.55; C=160 0.59/0.74 (rows win). float64 C=50
# 1.25/1.02, 1.18/1.06, 1.12/0.69; C=64 1.18/1.10, 1.09/1.12, 1.03/0.70;
# C=100 0.83/1.31 (rows win). The row path's loops are vectorised by 64
# elements at a time, so rows of 50-64 elements ran scalar.
TILE_MAX_BYTES = 512
LANES = 64
TILE_SCRATCH = 10  # rows of the float64 per-lane scratch F of the tile functions
TILE_GRAD_SCRATCH = 7  # rows of the per-lane scratch G of _ce_index_tile, in the tile's dtype


# Blocks of the pass over class-index targets; fixed, so that the float64
# sums of weights are the same for any thread count.
TARGET_STATS_BLOCK = 1 << 16


@_jit()
def _index_target_stats_block(j, t, ignore_index, n_classes, w, sw, sw_step, weighted, bad, count, wsum):
    """Targets [j * TARGET_STATS_BLOCK, (j + 1) * TARGET_STATS_BLOCK): the
    position of the first invalid one or -1 into ``bad[j]``, the number of
    non-ignored ones into ``count[j]``, the sum over them of class weight x
    sample weight (float64) into ``wsum[j]``. ``weighted=False`` when every
    class and sample weight is 1: the sum is the count, and the loop, with no
    branch and no gather of weights, vectorises."""
    _wide_vectors()
    lo = j * TARGET_STATS_BLOCK
    hi = min(t.shape[0], lo + TARGET_STATS_BLOCK)
    first_bad = -1
    n = 0
    s = 0.0
    if weighted:
        for i in range(lo, hi):
            y = t[i]
            if y == ignore_index:
                continue
            if y < 0 or y >= n_classes:
                if first_bad < 0:
                    first_bad = i
                continue
            n += 1
            s += w[y] * sw[i * sw_step]
    else:
        n_bad = 0
        n_cls = np.uint64(n_classes)
        tb = t[lo:hi]  # indices from 0: no wraparound select, so the loop vectorises
        for i in range(tb.shape[0]):
            y = tb[i]
            keep = np.int64(y != ignore_index)
            ok = np.int64(np.uint64(y) < n_cls)  # 0 <= y < n_classes
            n += keep & ok
            n_bad += keep & (1 - ok)
        if n_bad > 0:
            for i in range(lo, hi):
                y = t[i]
                if y != ignore_index and (y < 0 or y >= n_classes):
                    first_bad = i
                    break
        s = float(n)
    bad[j] = first_bad
    count[j] = n
    wsum[j] = s


@_jit(parallel=True)
def index_target_stats_par(t, ignore_index, n_classes, w, sw, sw_step, weighted, bad, count, wsum):
    """One pass over class-index targets before the loss kernel, by blocks
    (see :func:`_index_target_stats_block`); the caller combines them."""
    _wide_vectors()
    for j in prange(bad.shape[0]):
        _index_target_stats_block(np.int64(j), t, ignore_index, n_classes, w, sw, sw_step, weighted, bad, count, wsum)


@_jit()
def index_target_stats_ser(t, ignore_index, n_classes, w, sw, sw_step, weighted, bad, count, wsum):
    _wide_vectors()
    for j in range(bad.shape[0]):
        _index_target_stats_block(np.int64(j), t, ignore_index, n_classes, w, sw, sw_step, weighted, bad, count, wsum)


@_jit()
def _ce_index_row(x, y, w, wsum, eps, scale, g, need_grad, e, ahead):
    """Loss of one row with class-index target ``y`` (PyTorch's formula with
    label smoothing ``eps`` and class weights ``w``), and ``scale`` times its
    gradient written into ``g`` when ``need_grad``; ``ahead`` as for
    :func:`_row_exp_sum`.

    loss = (1 - eps) w_y (lse - x_y) + eps / C * sum_k w_k (lse - x_k)
    grad_k = [(1 - eps) w_y + eps W / C] p_k - (1 - eps) w_y [k == y] - eps / C w_k
    """
    _wide_vectors()
    n = x.shape[0]
    m = _row_max(x)
    s, c = _row_exp_sum(x, m, g if need_grad else e, ahead)
    sp = s + (c - 1.0)  # the sum of the terms but one maximum
    lse_m = math.log1p(sp)  # lse - m
    wy = w[y]
    xy = x[y]
    coef = (1.0 - eps) * wy
    loss = coef * np.float64(m - xy)
    full = coef
    if eps > 0.0:
        loss += eps / n * _row_weighted_gap(w, x, m)
        full += eps * wsum / n
    loss += full * lse_m
    if need_grad:
        a = scale * full / (1.0 + sp)
        if eps > 0.0:
            cs = scale * eps / n
            for k in range(n):
                g[k] = a * g[k] - cs * w[k]
        else:
            _scale_row(g, a)
        g[y] = _target_grad(xy == m, g[y], sp, wy, wsum, eps, n, scale)
    return loss


@_jit()
def _target_grad(at_max, g_y, sp, wy, wsum, eps, n, scale):
    """The gradient entry of the target class. Where the target holds the
    maximum, p_y - 1 = -sp / (1 + sp) exactly: no cancellation as p_y -> 1."""
    if at_max:
        return scale * (-(1.0 - eps) * wy * sp + eps / n * (wsum - wy * (1.0 + sp))) / (1.0 + sp)
    return g_y - scale * (1.0 - eps) * wy


@_jit()
def _ce_prob_row(x, t, w, eps, scale, g, need_grad, e):
    """Loss of one row with class-probability target ``t`` smoothed to
    t' = (1 - eps) t + eps / C: sum_k w_k t'_k (lse - x_k); gradient
    p_k sum_j w_j t'_j - w_k t'_k."""
    _wide_vectors()
    n = x.shape[0]
    m = _row_max(x)
    s, c = _row_exp_sum(x, m, g if need_grad else e, 0)
    sp = s + (c - 1.0)
    lse_m = math.log1p(sp)
    keep = 1.0 - eps
    spread = eps / n
    part, total = _row_prob_terms(w, t, x, m, keep, spread)
    loss = part + total * lse_m
    if need_grad:
        a = scale * total / (1.0 + sp)
        for k in range(n):
            g[k] = a * g[k] - scale * w[k] * (keep * t[k] + spread)
    return loss


# Rows of at most this many bytes are moved between the input and a tile by
# strided loads (gathers) across the lanes, class by class; longer rows row by
# row. Measured on the float32/float64 copy in and out of 10**7 elements, one
# core: C=2 19 -> 7 ms, C=3 14 -> 6.4 ms, C=5 9.6 -> 6.7 ms, C=10 float32 even,
# C=8 float64 and C=16 float32 slower by gathers.
_GATHER_ROW_BYTES = 40


# Rows of at most this many classes (float32, float64) are moved between the
# input and a full tile by an in-register transpose (_rows_to_tile and
# _tile_to_rows), and back. Other rows of at most _GATHER_ROW_BYTES by
# strided loads, longer ones row by row. History: the transpose first took
# rows of up to 48 bytes (12 float32, 6 float64 classes), each class one
# shuffle of all the VL rows loaded as one vector (copy in and out of 10**6
# rows, one core, old gather / transpose, ms: float32 C=3 4.0/0.70, C=10
# 10/3.9; float64 C=8 7.2/6.1, C=12 13/19; 2026-11); then rows of up to 14
# classes, once whole calls were timed (2026-12-04, Intel host, 16,384 rows
# in cache, one thread, ns per row of softmax / cross_entropy + gradient,
# before / after: float64 C=10 23-25/32-34 -> 19.5/29, C=13 30/42-43 ->
# 25/38-39; float32 C=13 23/29 -> 19-20/24, C=14 26/31 -> 19-22/26-27);
# then, with the square blocks below, 32 float32 and 16 float64 classes
# (same measure, rows by row / blocks: float32 C=16 28/39-40 -> 18.5-21/
# 32-33, C=20 34.5-36.5/47-53 -> 23-26/39-41, C=32 52-59/65-75 ->
# 43.5-45/58.5; float64 C=16 37-39/48-50 -> 32-34.5/47-50). Each class
# count is a case of the transpose's switch, compiled into every tile
# kernel: the first softmax call in a cold cache compiled in 5.9 s with
# direct shuffles up to 14/14 classes, and with blocks in 5.7 s up to 14/14,
# 6.9 s up to 24/16, 8.9 s up to 32/16, 18.5 s up to 64/64.
#
# The square blocks below store with masks, native on AVX-512 (Intel, AMD
# Zen 4). Without AVX-512, LLVM lowers a masked store to vmaskmovps, which
# is microcoded and slow on AMD Zen 2 and 3: there the transposes keep the
# direct shuffles and the limits of 48 bytes they were measured with.
_SHUFFLE_MAX_F32 = 32 if _AVX512 else 12
_SHUFFLE_MAX_F64 = 16 if _AVX512 else 6


def _shuffle_row_classes(dtype):
    """The class counts that :func:`_rows_to_tile` handles for ``dtype``."""
    return range(1, (_SHUFFLE_MAX_F32 if dtype.bitwidth == 32 else _SHUFFLE_MAX_F64) + 1)


# From this many classes on (float32, float64) the transpose goes through
# square blocks instead: each of the VL rows is one masked vector load of
# (up to) VL classes, the VL x VL block is transposed in log2(VL) stages of
# two-source shuffles (Eklundh's scheme; VL of them per stage, fewer in the
# last one, which forms only the classes needed), and each class is one
# vector store; back the same way with masked stores. Rows of more than VL
# classes (float32 from 17, float64 from 9) take a block per VL classes.
# Instructions per VL rows, in + out, direct shuffles / blocks (LLVM of
# numba 0.68, rocketlake): float32 C=5 136/136, C=10 458/188, C=14
# 911/213; float64 C=5 132/81, C=10 301/138; C=2-4 fewer the direct way.
# Whole calls, ns per row as above, direct / blocks, two runs each
# (2026-12-04): float32 C=5-6 even, C=8 9.7-10.7/13.7-14.4 ->
# 9.3-10.2/13.5-14.1, C=10 13.2-13.9/16.9-18 -> 11.5-11.7/16.1-16.2, C=14
# 19.7-21.3/25.5-26.7 -> 15.5-17/22.2-22.8; float64 C=5 10.7-10.9/
# 15.7-17.3 -> 9.2-10/15.3-15.7, C=10 21.3-21.4/29.9-30.8 ->
# 19.3-20.5/29.2-29.5, C=14 31-33.4/45 -> 27.2-27.4/42.3-44.3.
_BLOCK_MIN_F32 = 5
_BLOCK_MIN_F64 = 5


def _eklundh(builder, vecs, keep):
    """Transpose the square block of the n vectors ``vecs`` of n lanes each
    (n a power of two; None for an undefined vector): the first ``keep``
    vectors of the transpose (vector k holds lane k of every input)."""
    n = len(vecs)
    vt = next(v.type for v in vecs if v is not None)
    rows = [ir.Constant(vt, ir.Undefined) if v is None else v for v in vecs]
    i32v = ir.VectorType(ir.IntType(32), n)
    stages = n.bit_length() - 1
    for stage in range(stages):
        d = 1 << stage
        last = stage == stages - 1
        lo = ir.Constant(i32v, [(q if not q & d else n + q - d) for q in range(n)])
        hi = ir.Constant(i32v, [(q + d if not q & d else n + q) for q in range(n)])
        new = list(rows)
        for r in range(n):
            if r & d:
                continue
            if not last or r < keep:
                new[r] = builder.shuffle_vector(rows[r], rows[r + d], lo)
            if not last or r + d < keep:
                new[r + d] = builder.shuffle_vector(rows[r], rows[r + d], hi)
        rows = new
    return rows[:keep]


def _lane_mask(n, count):
    """The <n x i1> constant of the first ``count`` lanes."""
    return ir.Constant(ir.VectorType(ir.IntType(1), n), [q < count for q in range(n)])


def _masked_load(builder, ptr, vt, count, align, fill=None):
    """``llvm.masked.load`` of the first ``count`` lanes of a ``vt`` at ``ptr``
    (``count`` a Python int, or an ``<n x i1>`` mask computed at run time);
    the other lanes are ``fill`` (a ``vt`` value), undefined without it."""
    suffix = "f32" if isinstance(vt.element, ir.FloatType) else "f64"
    mask = _lane_mask(vt.count, count) if isinstance(count, int) else count
    fnty = ir.FunctionType(vt, [ptr.type, ir.IntType(32), mask.type, vt])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.load.v{vt.count}{suffix}.p0")
    return builder.call(fn, [ptr, ir.Constant(ir.IntType(32), align), mask, ir.Constant(vt, ir.Undefined) if fill is None else fill])


def _masked_store(builder, value, ptr, count, align):
    """``llvm.masked.store`` of the first ``count`` lanes of ``value`` at ``ptr``."""
    vt = value.type
    suffix = "f32" if isinstance(vt.element, ir.FloatType) else "f64"
    fnty = ir.FunctionType(ir.VoidType(), [vt, ptr.type, ir.IntType(32), ir.VectorType(ir.IntType(1), vt.count)])
    fn = cgutils.get_or_insert_function(builder.module, fnty, f"llvm.masked.store.v{vt.count}{suffix}.p0")
    builder.call(fn, [value, ptr, ir.Constant(ir.IntType(32), align), _lane_mask(vt.count, count)])


def _transpose_codegen(to_tile):
    """Code of :func:`_rows_to_tile` (``to_tile``) or :func:`_tile_to_rows`:
    a switch on the class count C = T.shape[0] with one branch per count of
    :func:`_shuffle_row_classes` (other counts do nothing)."""

    def codegen(context, builder, signature, args):
        if to_tile:
            (flat_ty, _, tile_ty, _), (flat, base, tile, i0) = signature.args, args
        else:
            (tile_ty, _, flat_ty, _), (tile, i0, flat, base) = signature.args, args
        dtype = tile_ty.dtype
        fty = context.get_value_type(dtype)
        vl = 512 // dtype.bitwidth
        flat_a = context.make_array(flat_ty)(context, builder, flat)
        tile_a = context.make_array(tile_ty)(context, builder, tile)
        n_classes = cgutils.unpack_tuple(builder, tile_a.shape)[0]
        row_stride = cgutils.unpack_tuple(builder, tile_a.strides)[0]
        byte_ptr = ir.IntType(8).as_pointer()
        tile_base = builder.gep(builder.bitcast(tile_a.data, byte_ptr), [builder.mul(i0, ir.Constant(i0.type, dtype.bitwidth // 8))])
        rows_ptr = builder.gep(flat_a.data, [base])
        end = builder.append_basic_block("transpose_end")
        switch = builder.switch(n_classes, end)
        align = dtype.bitwidth // 8
        for c in _shuffle_row_classes(dtype):
            block = builder.append_basic_block(f"transpose_{c}")
            switch.add_case(ir.Constant(n_classes.type, c), block)
            builder.position_at_end(block)
            wide = ir.VectorType(fty, c * vl)
            narrow = ir.VectorType(fty, vl)

            def class_ptr(k):
                off = builder.mul(row_stride, ir.Constant(row_stride.type, k))
                return builder.bitcast(builder.gep(tile_base, [off]), narrow.as_pointer())

            if _AVX512 and c >= (_BLOCK_MIN_F32 if dtype.bitwidth == 32 else _BLOCK_MIN_F64):
                for q in range(0, c, vl):  # the block of classes [q, q + kc)
                    kc = min(vl, c - q)

                    def row_ptr(j):
                        return builder.bitcast(builder.gep(rows_ptr, [ir.Constant(base.type, j * c + q)]), narrow.as_pointer())

                    if to_tile:
                        rows = [_masked_load(builder, row_ptr(j), narrow, kc, align) for j in range(vl)]
                        for k, col in enumerate(_eklundh(builder, rows, kc)):
                            builder.store(col, class_ptr(q + k), align=align)
                    else:
                        cols = [builder.load(class_ptr(q + k), align=align) for k in range(kc)]
                        rows = _eklundh(builder, cols + [None] * (vl - kc), vl)
                        for j in range(vl):
                            _masked_store(builder, rows[j], row_ptr(j), kc, align)
            elif to_tile:
                rows = builder.load(builder.bitcast(rows_ptr, wide.as_pointer()), align=align)
                for k in range(c):
                    mask = ir.Constant(ir.VectorType(ir.IntType(32), vl), [j * c + k for j in range(vl)])
                    builder.store(builder.shuffle_vector(rows, ir.Constant(wide, ir.Undefined), mask), class_ptr(k), align=align)
            else:
                parts = [builder.load(class_ptr(k), align=align) for k in range(c)]
                parts += [ir.Constant(narrow, ir.Undefined)] * ((1 << (c - 1).bit_length()) - c)
                while len(parts) > 1:  # concatenate: class k at [k * vl, (k + 1) * vl)
                    n2 = 2 * parts[0].type.count
                    cat = ir.Constant(ir.VectorType(ir.IntType(32), n2), list(range(n2)))
                    parts = [builder.shuffle_vector(parts[q], parts[q + 1], cat) for q in range(0, len(parts), 2)]
                whole = parts[0]
                mask = ir.Constant(ir.VectorType(ir.IntType(32), c * vl), [(q % c) * vl + q // c for q in range(c * vl)])
                rows = builder.shuffle_vector(whole, ir.Constant(whole.type, ir.Undefined), mask)
                builder.store(rows, builder.bitcast(rows_ptr, wide.as_pointer()), align=align)
            builder.branch(end)
        builder.position_at_end(end)
        return context.get_dummy_value()

    return codegen


def _transpose_types(flat, base, tile, i0):
    """The rows' array: C-contiguous (any number of dimensions: ``base`` is
    an offset into its flat view); the tile: a 2-D array of the same dtype."""
    return (
        isinstance(flat, types.Array) and isinstance(tile, types.Array) and flat.dtype == tile.dtype
        and flat.dtype in (types.float32, types.float64) and flat.layout == "C" and tile.ndim == 2
        and isinstance(base, types.Integer) and isinstance(i0, types.Integer)
    )  # fmt: skip


@intrinsic
def _rows_to_tile(typingctx, xf, base, T, i0):
    """T[k, i0 + j] = xf[base + j * C + k] (xf: the flat view of a C-contiguous
    array) for the VL rows j < VL (VL = 16 float32, 8 float64) and the
    C = T.shape[0] classes, for C in
    :func:`_shuffle_row_classes` (nothing otherwise). No bounds checks: the
    caller guarantees xf[base : base + VL * C] and T[:, i0 : i0 + VL]."""
    if not _transpose_types(xf, base, T, i0):
        return None
    return types.void(xf, types.int64, T, types.int64), _transpose_codegen(True)


@intrinsic
def _tile_to_rows(typingctx, T, i0, gf, base):
    """The inverse of :func:`_rows_to_tile`: gf[base + j * C + k] = T[k, i0 + j]."""
    if not _transpose_types(gf, base, T, i0):
        return None
    return types.void(T, types.int64, gf, types.int64), _transpose_codegen(False)


# Write prefetch of the tiles' output. A float32 tile of few classes is
# computed in about 2 us and then written out as a burst of stores to lines
# that are in no cache: their reads for ownership stall the stores. Asking
# for the lines ahead (prefetchw) took cross_entropy + gradient of
# 1,000,000 x 10 float32 from 45 to 32 ns per row on one core of the Intel
# host, 16,384 rows (in cache) unchanged; softmax of 13 classes 2.50 to 2.28
# ns per element; 50 and 100 classes unchanged (2026-12-04, alternating
# processes; not measured on the AMD hosts of earlier sessions, whose
# prefetchers differ). Float64 tiles had no gain at first (their
# arithmetic bounded them); once rows of up to 14 float64 classes were
# transposed in registers they did: 1,000,000 x 10 float64 on 2 threads,
# cross_entropy + gradient with grad_out= 24 -> 19 ms, softmax with out=
# 4.0-4.1 -> 2.9-3.1 ns per element and thread, 13 classes likewise; 50
# classes unchanged (2026-12-04). Not kept: prefetching the input too (no
# further gain, 50 and 100 classes 4-6% slower), the write prefetch in the
# row layout (rows of 1,000 and 50,000 classes 5-20% slower; the hardware
# prefetcher follows a long row being written; that layout reads ahead
# instead, below).
PREFETCH_BYTES = 5120  # how far ahead of the tile being computed
# The row layout reads the next row into the cache while it computes the
# exponentials of the current one, for rows of at most this many bytes.
# Without it, a row's first pass (its maximum) waited on memory, and the
# hardware prefetcher did not run far enough ahead during the passes that
# work in the cache. On 2 threads, grad_out=, best of 7, two alternating
# rounds (2026-12-04, Intel host), ms: cross_entropy 10**5 x 1,000 float32
# 53 -> 43-44, float64 97 -> 90-91; 4 x 10**5 x 250 float64 95-99 -> 84-86
# (float32 even); 4,096 x 50,000 float32 119 -> 109.5; but float64 rows of
# 50,000 (400 KB) 225-230 -> 253-258: the next row no longer fits in L2
# beside the current row and its gradient. Inputs that fit in the caches do
# not prefetch: the chunked loop costs there (16,384 rows, one thread, rows of
# 200 float32 classes 1.50-1.52 -> 1.80-1.83 ns per element).
# softmax and log_softmax do the same (10**5 x 1,000 out of cache, 2
# threads, out=, ms: float32 47-48 -> 41, float64 88 -> 83; 4 x 10**5 x 250
# float64 77-78 -> 70; 4,096 x 50,000 float32 111-113 -> 107-108). The row
# functions take the next row's address, not the array: passing the array
# and an index down cost inputs in cache even without a prefetch (2,000
# rows of 200 float32 classes, one thread: softmax 1.18 -> 1.56 ns per
# element), the address nothing measurable (1.18-1.19 either way).
# logsumexp does not: this way its 10**5 x 1,000 rows got slower (float32
# 38 -> 40 ms on 2 threads, 76 -> 86 on one; float64 71-75 -> 80), and the
# chunked loop alone without the prefetches cost it 6 ms on one thread;
# passing the array down as 9ec299d did gave 33 ms (not understood).
PREFETCH_ROW_MAX_BYTES = 1 << 18
PREFETCH_MIN_BYTES = 1 << 24


def _emit_prefetch(builder, ptr, rw):
    """``llvm.prefetch`` of the cache line at ``ptr``, for reading (rw 0) or
    writing (rw 1; ``prefetchw`` on x86), with high temporal locality (into
    L1), data cache: a hint only (no fault, even past the end of an array)."""
    i8p = ir.IntType(8).as_pointer()
    i32 = ir.IntType(32)
    fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
    fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
    builder.call(fn, [builder.bitcast(ptr, i8p), ir.Constant(i32, rw), ir.Constant(i32, 3), ir.Constant(i32, 1)])


def _flat_element_ptr(context, builder, aty, a, i):
    """Pointer to element ``i`` of the flat view of the C-contiguous array ``a`` (no bounds check)."""
    return builder.gep(context.make_array(aty)(context, builder, a).data, [i])


@intrinsic
def _prefetch_write(typingctx, a, i):
    """Prefetch for writing the cache line of element ``i`` of the flat view
    of the C-contiguous array ``a`` (see :func:`_emit_prefetch`)."""
    if not (isinstance(a, types.Array) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        _emit_prefetch(builder, _flat_element_ptr(context, builder, signature.args[0], *args), 1)
        return context.get_dummy_value()

    return types.void(a, types.intp), codegen


@intrinsic
def _address(typingctx, a, i):
    """The address (intp) of element ``i`` of the flat view of the
    C-contiguous array ``a`` (no bounds check)."""
    if not (isinstance(a, types.Array) and isinstance(i, types.Integer)):
        return None

    def codegen(context, builder, signature, args):
        return builder.ptrtoint(_flat_element_ptr(context, builder, signature.args[0], *args), context.get_value_type(types.intp))

    return types.intp(a, types.intp), codegen


@intrinsic
def _prefetch_address(typingctx, addr):
    """Prefetch for reading the cache line at address ``addr`` (an integer,
    from :func:`_address`; see :func:`_emit_prefetch`)."""
    if not isinstance(addr, types.Integer):
        return None

    def codegen(context, builder, signature, args):
        (value,) = args
        ptr = builder.inttoptr(context.cast(builder, value, signature.args[0], types.intp), ir.IntType(8).as_pointer())
        _emit_prefetch(builder, ptr, 0)
        return context.get_dummy_value()

    return types.void(addr), codegen


@intrinsic
def _stream_line(typingctx, dst, i, src, q):
    """Store the 64 bytes at element ``q`` of the flat view of ``src`` to
    element ``i`` of the flat view of ``dst`` (C-contiguous arrays of one
    float dtype) with a non-temporal store: written to memory without
    reading the line into the cache first. The destination must be 64-byte
    aligned (no check)."""
    if not (isinstance(dst, types.Array) and isinstance(src, types.Array) and dst.dtype == src.dtype
            and dst.dtype in (types.float32, types.float64) and isinstance(i, types.Integer) and isinstance(q, types.Integer)):  # fmt: skip
        return None

    def codegen(context, builder, signature, args):
        dty, _, sty, _ = signature.args
        d, iv, s_, qv = args
        vt = ir.VectorType(context.get_value_type(dty.dtype), 512 // dty.dtype.bitwidth)
        v = builder.load(builder.bitcast(_flat_element_ptr(context, builder, sty, s_, qv), vt.as_pointer()), align=dty.dtype.bitwidth // 8)
        st = builder.store(v, builder.bitcast(_flat_element_ptr(context, builder, dty, d, iv), vt.as_pointer()), align=64)
        st.set_metadata("nontemporal", builder.module.add_metadata([ir.Constant(ir.IntType(32), 1)]))
        return context.get_dummy_value()

    return types.void(dst, types.intp, src, types.intp), codegen


@intrinsic
def _store_fence(typingctx):
    """A full memory fence (``mfence`` on x86): the non-temporal stores
    before it are visible to other threads before anything after it."""

    def codegen(context, builder, signature, args):
        builder.fence("seq_cst")
        return context.get_dummy_value()

    return types.void(), codegen


@_jit()
def _prefetch_tile_out(out3, r):
    """For rows (out3 of shape (N, C, 1)): prefetch for writing the
    LANES rows of ``out3`` that start PREFETCH_BYTES after row ``r``
    (clipped to the array)."""
    _wide_vectors()
    if out3.shape[2] == 1:
        lo = r * out3.shape[1] + PREFETCH_BYTES // out3.itemsize
        for k in range(lo, min(lo + LANES * out3.shape[1], out3.size), 64 // out3.itemsize):
            _prefetch_write(out3, k)


# The per-tile functions below index their arrays (T[k, i], F[c, i], t[r + i])
# rather than take views of them (T[k], F[c], t[r:]): Numba counts the
# references of every view with an atomic increment and decrement of the
# parent's count, and for the input arrays that count is shared by the
# threads, whose cores then pass its cache line back and forth at each tile.


@_jit()
def _transposed(n_classes, itemsize):
    """Whether full tiles of rows of ``n_classes`` go in and out by
    :func:`_rows_to_tile` / :func:`_tile_to_rows` (the counts of
    :func:`_shuffle_row_classes`)."""
    return n_classes <= (_SHUFFLE_MAX_F32 if itemsize == 4 else _SHUFFLE_MAX_F64)


@_jit()
def _tile_in(x3, n, s, nb, T):
    """Copy ``nb`` rows starting at (n, s) into the (C, LANES) tile ``T``."""
    _wide_vectors()
    n_classes = x3.shape[1]
    if x3.shape[2] == 1:
        if nb == LANES and _transposed(n_classes, x3.itemsize):
            vl = 64 // x3.itemsize
            for i0 in range(0, LANES, vl):
                _rows_to_tile(x3, (n + i0) * n_classes, T, i0)
        elif n_classes * x3.itemsize <= _GATHER_ROW_BYTES:
            for k in range(n_classes):
                for i in range(nb):
                    T[k, i] = x3[n + i, k, 0]
        else:
            for i in range(nb):
                for k in range(n_classes):
                    T[k, i] = x3[n + i, k, 0]
    else:
        for k in range(n_classes):
            for i in range(nb):
                T[k, i] = x3[n, k, s + i]


@_jit()
def _tile_out(T, n, s, nb, g3):
    """Inverse of :func:`_tile_in`, into the gradient."""
    _wide_vectors()
    n_classes = g3.shape[1]
    if g3.shape[2] == 1:
        if nb == LANES and _transposed(n_classes, g3.itemsize):
            vl = 64 // g3.itemsize
            for i0 in range(0, LANES, vl):
                _tile_to_rows(T, i0, g3, (n + i0) * n_classes)
        elif n_classes * g3.itemsize <= _GATHER_ROW_BYTES:
            for k in range(n_classes):
                for i in range(nb):
                    g3[n + i, k, 0] = T[k, i]
        else:
            for i in range(nb):
                for k in range(n_classes):
                    g3[n + i, k, 0] = T[k, i]
    else:
        for k in range(n_classes):
            for i in range(nb):
                g3[n, k, s + i] = T[k, i]


@_jit()
def _tile_max(T, nb, M):
    """M[i] = max over the classes of lane i (NaN skipped)."""
    _wide_vectors()
    for i in range(nb):
        M[i] = T[0, i]
    for k in range(1, T.shape[0]):
        for i in range(nb):
            M[i] = _maxnum(M[i], T[k, i])


@_jit()
def _tile_exp(T, nb, M, F, E):
    """Per lane, F[1, i] = S and F[2, i] = Cnt as in _row_exp_sum, and
    E = exp(T - M) (E must not be T).

    For a float32 tile, two loops: the exponentials alone in float32 (all
    16 lanes of a vector), then the float64 sums, which read T again for
    the test against the maximum; one loop with the float32 exponentials
    and the float64 sums ran 8 lanes at a time with conversions. A float64
    tile takes one loop."""
    _wide_vectors()
    for i in range(nb):
        F[1, i] = 0.0
        F[2, i] = 0.0
    if T.itemsize == 4:
        for k in range(T.shape[0]):
            for i in range(nb):
                E[k, i] = fexp_nonpos(T[k, i] - M[i])
        for k in range(T.shape[0]):
            for i in range(nb):
                eq = T[k, i] == M[i]
                e = np.float64(E[k, i])
                F[1, i] += 0.0 if eq else e
                F[2, i] += 1.0 if eq else 0.0
    else:
        for k in range(T.shape[0]):
            for i in range(nb):
                v = T[k, i]
                e = fexp_nonpos(v - M[i])
                E[k, i] = e
                eq = v == M[i]
                F[1, i] += 0.0 if eq else np.float64(e)
                F[2, i] += 1.0 if eq else 0.0


@_jit()
def _ce_index_tile(T, nb, t, r, sw, sw_step, w, wt, wsum, ignore_index, eps, scale, need_grad, M, F, G, E):
    """Loss (into F[0, :nb]) and, with ``need_grad``, gradient (into T) of
    the ``nb`` rows from row ``r`` (targets t[r:], sample weights
    sw[r * sw_step:]) held as the columns of the tile T. ``F`` is float64
    scratch of shape (TILE_SCRATCH, LANES); ``M``, ``G`` (TILE_GRAD_SCRATCH,
    LANES) and ``E`` (the shape of T) scratch of the tile's dtype, and ``wt``
    the class weights ``w`` in it.

    The target class of each lane is held as a float (-1 where the row is
    ignored), and every access to the target's entry is a select on
    ``target == k`` in a loop over the classes: LLVM vectorises these loops
    across the lanes, where T[t[r + i], i] ran one lane at a time. The
    gradient loop runs in the tile's dtype (per-lane factors in G), so that
    a float32 tile takes 16 lanes per vector without conversions."""
    _wide_vectors()
    n_classes = T.shape[0]
    zero = T.dtype.type(0.0)
    # rows of F: 0 loss, 1 S, 2 Cnt, 4 w_y, 5 sum of w (M - x), 7 sample weight, 9 target (-1 where ignored)
    # rows of G: 0 A, 1 CS, 2 the target's gradient where it holds the maximum, 3 (1 there, else 0),
    # 4 the target's subtrahend otherwise, 5 target (-1 where ignored), 6 x_y
    for i in range(nb):
        yi = t[r + i]
        valid = yi != ignore_index
        F[9, i] = np.float64(yi) if valid else -1.0
        F[4, i] = w[yi if valid else 0]
    if sw_step == 0:  # two loops rather than one load sw[(r + i) * sw_step], which LLVM leaves scalar
        for i in range(nb):
            F[7, i] = sw[0]
    else:
        for i in range(nb):
            F[7, i] = sw[r + i]
    for i in range(nb):
        G[5, i] = F[9, i]
        G[6, i] = zero
        F[5, i] = 0.0
    for k in range(n_classes):
        for i in range(nb):
            # the load before the select: a load under a condition keeps LLVM from vectorising
            v = T[k, i]
            x_y = G[6, i]
            G[6, i] = v if G[5, i] == k else x_y
    _tile_max(T, nb, M)
    if eps > 0.0:
        for k in range(n_classes):
            wk = w[k]
            for i in range(nb):
                F[5, i] += wk * np.float64(M[i] - T[k, i])
    _tile_exp(T, nb, M, F, E)
    epsk = eps / n_classes
    for i in range(nb):
        sp = F[1, i] + (F[2, i] - 1.0)
        coef = (1.0 - eps) * F[4, i]
        full = coef + epsk * wsum
        rw = F[7, i]
        rs = scale * rw
        value = rw * (coef * (np.float64(M[i]) - np.float64(G[6, i])) + epsk * F[5, i] + full * flog1p(sp))
        F[0, i] = value if F[9, i] >= 0.0 else 0.0
        G[0, i] = rs * full / (1.0 + sp)
        G[1, i] = rs * epsk
        G[2, i] = _target_grad(True, 0.0, sp, F[4, i], wsum, eps, n_classes, rs)  # (the value at the maximum)
        G[3, i] = 1.0 if G[6, i] == M[i] else 0.0
        G[4, i] = rs * coef
    if need_grad:
        for k in range(n_classes):
            wk = wt[k]
            for i in range(nb):
                gk = G[0, i] * E[k, i] - G[1, i] * wk
                g_max = G[2, i]
                g_other = gk - G[4, i]
                gy = g_max if G[3, i] != zero else g_other
                gk = gy if G[5, i] == k else gk
                T[k, i] = gk if G[5, i] >= zero else zero


@_jit()
def _ce_prob_tile(T, TT, nb, sw, r, sw_step, w, eps, scale, need_grad, M, F, E):
    """Probability-target version of :func:`_ce_index_tile`; TT holds the
    targets of the lanes, E scratch of the shape of T."""
    _wide_vectors()
    n_classes = T.shape[0]
    # rows of F: 0 loss, 1 S, 2 Cnt, 3 PART, 4 TOT, 5 A
    keep = 1.0 - eps
    spread = eps / n_classes
    _tile_max(T, nb, M)
    for i in range(nb):
        F[3, i] = 0.0
        F[4, i] = 0.0
    for k in range(n_classes):
        wk = w[k]
        for i in range(nb):
            wt = wk * (keep * TT[k, i] + spread)
            F[3, i] += 0.0 if wt == 0.0 else wt * np.float64(M[i] - T[k, i])
            F[4, i] += wt
    _tile_exp(T, nb, M, F, E)
    for i in range(nb):
        sp = F[1, i] + (F[2, i] - 1.0)
        rw = sw[(r + i) * sw_step]
        F[0, i] = rw * (F[3, i] + F[4, i] * flog1p(sp))
        F[5, i] = scale * rw * F[4, i] / (1.0 + sp)
        F[1, i] = scale * rw
    if need_grad:
        for k in range(n_classes):
            wk = w[k]
            for i in range(nb):
                T[k, i] = F[5, i] * E[k, i] - F[1, i] * wk * (keep * TT[k, i] + spread)


@_jit()
def _softmax_tiles(j, x, out, log, block):
    """softmax (or log_softmax) of rows [j * block, (j + 1) * block) of
    ``x`` (rows of at most TILE_MAX_BYTES bytes) through tiles: the formulas
    of :func:`_softmax_row` / :func:`_log_softmax_row`, which also take the
    rows whose maximum is not finite."""
    _wide_vectors()
    n, n_classes = x.shape
    r0 = j * block
    r1 = min(n, r0 + block)
    x3 = x.reshape((n, n_classes, 1))
    o3 = out.reshape((n, n_classes, 1))
    T = np.empty((n_classes, LANES), dtype=x.dtype)
    E = np.empty((n_classes, LANES), dtype=x.dtype)
    M = np.empty(LANES, dtype=x.dtype)
    F = np.empty((3, LANES))  # rows: 0 the lane's result factor, 1 and 2 _tile_exp's S and Cnt
    r = r0
    while r < r1:
        nb = min(LANES, r1 - r)
        _prefetch_tile_out(o3, r)
        _tile_in(x3, r, 0, nb, T)
        _tile_max(T, nb, M)
        _tile_exp(T, nb, M, F, E)
        if log:
            for i in range(nb):
                F[0, i] = flog1p(F[1, i] + (F[2, i] - 1.0))
            for k in range(n_classes):
                for i in range(nb):
                    E[k, i] = np.float64(T[k, i] - M[i]) - F[0, i]
        else:
            for i in range(nb):
                F[0, i] = 1.0 / (F[1, i] + F[2, i])
            for k in range(n_classes):
                for i in range(nb):
                    E[k, i] = E[k, i] * F[0, i]
        _tile_out(E, r, 0, nb, o3)
        for i in range(nb):
            if not abs(M[i]) < np.inf:
                if log:
                    _log_softmax_row(x[r + i], out[r + i], 0)
                else:
                    _softmax_row(x[r + i], out[r + i], 0)
        r += nb


@_jit()
def _lse_tiles(j, x, return_sign, out, sgn, block):
    """logsumexp without weights of rows [j * block, (j + 1) * block) of ``x``
    (rows of at most TILE_MAX_BYTES bytes) through tiles: SciPy's
    log1p(s / c) + log(c) + max of :func:`_lse_row`, which also takes the
    rows whose maximum or result is not finite."""
    _wide_vectors()
    n, n_classes = x.shape
    r0 = j * block
    r1 = min(n, r0 + block)
    x3 = x.reshape((n, n_classes, 1))
    T = np.empty((n_classes, LANES), dtype=x.dtype)
    E = np.empty((n_classes, LANES), dtype=x.dtype)
    M = np.empty(LANES, dtype=x.dtype)
    F = np.empty((3, LANES))  # rows: 0 the lanes' results, 1 and 2 _tile_exp's S and Cnt
    e = np.empty(n_classes, dtype=x.dtype)
    r = r0
    while r < r1:
        nb = min(LANES, r1 - r)
        _tile_in(x3, r, 0, nb, T)
        _tile_max(T, nb, M)
        _tile_exp(T, nb, M, F, E)
        if _row_max(F[2, :nb]) == 1.0:
            # no lane has a tie at its maximum: log1p(s / 1) + log(1) is log1p(s) exactly
            for i in range(nb):
                F[0, i] = flog1p(F[1, i]) + np.float64(M[i])
        else:
            for i in range(nb):
                F[0, i] = flog1p(F[1, i] / F[2, i]) + flog(F[2, i]) + np.float64(M[i])
        for i in range(nb):
            out[r + i] = F[0, i]
            sgn[r + i] = 1.0
        if not _lanes_finite(F, 0, nb):
            for i in range(nb):
                if not abs(F[0, i]) < np.inf:
                    out[r + i], sgn[r + i] = _lse_row(x[r + i], x[r + i], False, return_sign, e)
        r += nb


@_jit(reduce=True)
def _lanes_finite(F, q, nb):
    """Whether F[q, :nb] is all finite (its sum times 0 is 0 only then)."""
    _wide_vectors()
    s = 0.0
    for i in range(nb):
        s += F[q, i] * 0.0
    return s == 0.0


@_jit()
def _tile_span(r, r1, width):
    """The tile starting at row r (of at most LANES rows, not past r1 nor the
    end of a spatial slice): its (n, s) position and its number of rows."""
    n = r // width
    s = r - n * width
    nb = min(LANES, r1 - r) if width == 1 else min(LANES, r1 - r, width - s)
    return n, s, nb


@_jit()
def _tile_losses(F, nb, lane_acc, loss_rows, need_rows, r):
    """Add the tile's losses F[0, :nb] to the lanes' sums; store them as the
    losses of rows [r, r + nb) when ``need_rows``."""
    _wide_vectors()
    for i in range(nb):
        lane_acc[i] += F[0, i]
    if need_rows:
        for i in range(nb):
            loss_rows[r + i] = F[0, i]


@_jit()
def _ce_index_block(j, x3, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad3, block):
    """Rows [j * block, (j + 1) * block) with class-index targets: fills their
    losses and gradients and returns the sum of their losses (float64, in a
    fixed order)."""
    _wide_vectors()
    n_batch, n_classes, width = x3.shape
    r0 = j * block
    r1 = min(n_batch * width, r0 + block)
    acc = 0.0
    if width == 1 and n_classes * x3.itemsize > TILE_MAX_BYTES:
        x2 = x3.reshape((n_batch, n_classes))
        g2 = grad3.reshape((grad3.shape[0], n_classes))
        e = np.empty(n_classes, dtype=x3.dtype)
        start, row_bytes = _rows_ahead(x2)
        for r in range(r0, r1):
            g = g2[r] if need_grad else g2[0]
            if t[r] == ignore_index:
                value = 0.0
                if need_grad:
                    g[:] = 0.0
            else:
                sr = sw[r * sw_step]
                ahead = _next_row(start, row_bytes, r, n_batch)
                value = sr * _ce_index_row(x2[r], t[r], w, wsum, eps, scale * sr, g, need_grad, e, ahead)
            if need_rows:
                loss_rows[r] = value
            acc += value
        return acc
    T = np.empty((n_classes, LANES), dtype=x3.dtype)
    M = np.empty(LANES, dtype=x3.dtype)
    F = np.empty((TILE_SCRATCH, LANES))
    G = np.empty((TILE_GRAD_SCRATCH, LANES), dtype=x3.dtype)
    E = np.empty((n_classes, LANES), dtype=x3.dtype)
    wt = w.astype(x3.dtype)
    lane_acc = np.zeros(LANES)
    r = r0
    while r < r1:
        n, s, nb = _tile_span(r, r1, width)
        if need_grad:
            _prefetch_tile_out(grad3, r)
        _tile_in(x3, n, s, nb, T)
        _ce_index_tile(T, nb, t, r, sw, sw_step, w, wt, wsum, ignore_index, eps, scale, need_grad, M, F, G, E)
        if need_grad:
            _tile_out(T, n, s, nb, grad3)
        _tile_losses(F, nb, lane_acc, loss_rows, need_rows, r)
        r += nb
    for i in range(LANES):
        acc += lane_acc[i]
    return acc


@_jit()
def _ce_prob_block(j, x3, t3, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad3, block):
    """:func:`_ce_index_block` for class-probability targets ``t3``."""
    _wide_vectors()
    n_batch, n_classes, width = x3.shape
    r0 = j * block
    r1 = min(n_batch * width, r0 + block)
    acc = 0.0
    if width == 1 and n_classes * x3.itemsize > TILE_MAX_BYTES:
        x2 = x3.reshape((n_batch, n_classes))
        t2 = t3.reshape((n_batch, n_classes))
        g2 = grad3.reshape((grad3.shape[0], n_classes))
        e = np.empty(n_classes, dtype=x3.dtype)
        for r in range(r0, r1):
            g = g2[r] if need_grad else g2[0]
            sr = sw[r * sw_step]
            value = sr * _ce_prob_row(x2[r], t2[r], w, eps, scale * sr, g, need_grad, e)
            if need_rows:
                loss_rows[r] = value
            acc += value
        return acc
    T = np.empty((n_classes, LANES), dtype=x3.dtype)
    TT = np.empty((n_classes, LANES), dtype=x3.dtype)
    E = np.empty((n_classes, LANES), dtype=x3.dtype)
    M = np.empty(LANES, dtype=x3.dtype)
    F = np.empty((TILE_SCRATCH, LANES))
    lane_acc = np.zeros(LANES)
    r = r0
    while r < r1:
        n, s, nb = _tile_span(r, r1, width)
        if need_grad:
            _prefetch_tile_out(grad3, r)
        _tile_in(x3, n, s, nb, T)
        _tile_in(t3, n, s, nb, TT)
        _ce_prob_tile(T, TT, nb, sw, r, sw_step, w, eps, scale, need_grad, M, F, E)
        if need_grad:
            _tile_out(T, n, s, nb, grad3)
        _tile_losses(F, nb, lane_acc, loss_rows, need_rows, r)
        r += nb
    for i in range(LANES):
        acc += lane_acc[i]
    return acc


# ---------------------------------------------------------------------------
# cross_entropy with class-index targets, no class weights, no label
# smoothing and no sample weights, for rows of a few classes: one loop over
# the lanes of a tile whose body is written out class by class, so that the
# row's values, maximum, exponentials and sums stay in registers from the
# load of the tile to the store of the gradient (the general tile functions
# above pass them through the scratch rows of F between one loop over the
# classes and the next). The class count must be a constant of the code for
# that, so the tile function is generated per class count, on first use, and
# compiled from _kernels.py's file name so that Numba caches it like the
# rest. Same formulas as _ce_index_tile with w = 1, eps = 0 and sample
# weights 1, except for the two economies below and that each row's loss
# is rounded to the dtype before the float64 sum.
#
# Only the tile function is generated. The blocks and the serial and parallel
# drivers are compiled once per dtype and call the tile function of the
# call's class count through its address (_call_lanes_tile), once per tile of
# LANES rows: generating them per class count too had LLVM optimise the
# inlined tile body three more times, 7.3 s of compilation per class count
# and dtype instead of about 1.5 s (2026-12-04).

# The tile function takes the lanes' targets as int32 (-1 for an ignored
# row) and gives their losses in the tile's dtype, copied and summed in
# float64 by the block: with the int64 targets and float64 losses of the
# caller, every type of the loop was 64 bits wide and LLVM ran a float32 tile
# 8 lanes at a time, in halves of vectors. With 32-bit types throughout it
# takes 16 lanes per vector.
# Per row of a whole call (16,384 rows, one thread, in cache, loss+gradient,
# ns, int64 targets and float64 losses / int32 and the tile's dtype;
# 2026-12-04, Intel host): float32 C=2 8.5/7.4, C=5 12.8/10.1, C=8 22.4/14.1,
# C=10 25.5/17.2, C=12 33/21; float64 C=10 32/32, C=12 36/39.
#
# Two economies of the loop body against the general tiles:
# - the row maximum is Python's compare-and-select, one vmaxps per class,
#   instead of the NaN-skipping _maxnum (three). A NaN in the row makes
#   the row's loss and gradient NaN whichever maximum is taken: its
#   exponential is NaN, and so are the sum and everything after it; if m
#   itself is NaN, every exponential is;
# - the count of terms equal to the maximum is kept in the tile's dtype (a
#   count of at most CE_LANES_MAX_CLASSES is exact in float32): one masked
#   add per class instead of two float64 ones in a float32 tile.
# Ten classes, loss+gradient, one thread, Intel host, alternating processes
# (2026-12-05), before / after, ns per row: the tile function alone on a
# tile in cache float32 8.0-8.6 / 7.4-7.6, float64 13.0-13.9 / 12.7-14.0;
# a whole call on 16,384 rows float32 14.9-15.3 / 14.2-15.0, float64
# 27.2-28.2 / 26.3-27.2. Python's max alone had changed nothing before the
# count was float32 (docs/performance). Also measured: rounding the float64
# sum to float32 once and evaluating log1p, the reciprocal and the gradient
# in float32 took the tile alone to 6.8-7.1 ns and 10**6 x 10 on 2 threads
# from 8.9-9.8 to 8.5-8.9 ms, but the per-row formulas of the losses are
# float64 by the policy of docs/numerics: not taken.
#
# Class counts of ce_index_lanes, per dtype: beyond these LLVM spills the
# written-out gradient loop (float32 C=15 157 ns, float64 C=14 47-50 against
# 46 ns for the general tiles; float32 C=14 32-34 against 37, float64 C=13 41
# against 43). Compiled for a CPU without AVX-512 (16 vector registers
# instead of 32; NUMBA_CPU_NAME=haswell on the same host), float64 rows
# spill sooner: generated / general tiles C=5 26.5/27.3, C=7 39.7/39.2, C=8
# 42.9/43.5, C=9 51.2/46.0, C=10 56-57/50-53, C=12 66.9/59.9; float32 up to
# 14 classes still gains (C=10 26.5-27.6/29.3, C=14 41.8/44.0).
CE_LANES_MAX_CLASSES = {np.dtype(np.float32): 14, np.dtype(np.float64): 13 if _AVX512 else 8}


def _lanes_tile_types(dtype):
    """Argument types of the generated tile functions for tiles of ``dtype``
    (a Numba float type): ``(T, nb, y, scale, need_grad, lo)``, with ``y`` the
    int32 targets of the lanes (-1 for an ignored one) and ``lo`` the losses
    of the lanes, of T's dtype."""
    return (
        types.Array(dtype, 2, "C"), types.int64, types.Array(types.int32, 1, "C"), types.float64, types.boolean,
        types.Array(dtype, 1, "C"),
    )  # fmt: skip


@intrinsic
def _call_lanes_tile(typingctx, addr, T, nb, y, scale, need_grad, lo):
    """Call the generated tile function at address ``addr`` (Numba's own
    calling convention, as for a first-class function) on the other
    arguments, whose types must be :func:`_lanes_tile_types` of T's dtype."""
    if not (isinstance(addr, types.Integer) and isinstance(T, types.Array) and T.dtype in (types.float32, types.float64)):
        return None
    callee = _lanes_tile_types(T.dtype)
    argtys = (T, nb, y, scale, need_grad, lo)
    if argtys != callee:
        return None

    def codegen(context, builder, signature, args):
        fnty = context.call_conv.get_function_type(types.none, callee)
        fn = builder.inttoptr(args[0], fnty.as_pointer())
        status, _ = context.call_conv.call_function(builder, fn, types.none, callee, args[1:])
        with cgutils.if_unlikely(builder, status.is_error):
            context.call_conv.return_status_propagate(builder, status)
        return context.get_dummy_value()

    return types.void(addr, *argtys), codegen


def _ce_lanes_source(c):
    """Python source of the tile function of :func:`ce_index_lanes` for ``c`` classes."""
    ks = range(c)
    head = [
        f"def _ce_lanes_tile_{c}(T, nb, t, scale, need_grad, lo):",
        "    _wide_vectors()",
        "    zero = T.dtype.type(0.0)",
        "    one = T.dtype.type(1.0)",
        "    sc = T.dtype.type(scale)",
    ]
    body = [f"        v{k} = T[{k}, i]" for k in ks]
    body += ["        m = v0"] + [f"        m = v{k} if v{k} > m else m" for k in ks[1:]]
    body += ["        y = t[i]", "        xy = v0"] + [f"        xy = v{k} if y == {k} else xy" for k in ks[1:]]
    body += [f"        e{k} = fexp_nonpos(v{k} - m)" for k in ks]
    body += ["        s = 0.0", "        cnt = zero"]
    for k in ks:
        body += [f"        s += 0.0 if v{k} == m else np.float64(e{k})", f"        cnt += one if v{k} == m else zero"]
    body += [
        "        sp = s + np.float64(cnt - one)",
        "        valid = y >= 0",
        "        value = (np.float64(m) - np.float64(xy)) + flog1p(sp)",
        "        lo[i] = value if valid else 0.0",
    ]
    grad = [
        "        inv = 1.0 / (1.0 + sp)",
        "        a = T.dtype.type(scale * inv)",
        "        # p_y - 1 = -sp / (1 + sp) where the target holds the maximum",
        "        g_max = T.dtype.type(-scale * sp * inv)",
        "        at_max = xy == m",
    ]
    for k in ks:
        grad += [
            f"        g{k} = a * e{k}",
            f"        g{k} = (g_max if at_max else g{k} - sc) if y == {k} else g{k}",
            f"        T[{k}, i] = g{k} if valid else zero",
        ]
    lines = head + ["    if need_grad:", "        for i in range(nb):"]
    lines += ["    " + s for s in body + grad]
    lines += ["    else:", "        for i in range(nb):"]
    lines += ["    " + s for s in body]
    return "\n".join(lines) + "\n"


# The generated tile functions (class count -> dispatcher) and their addresses
# ((class count, dtype) -> int). The dispatchers stay here for the life of the
# process: their code must outlive every address handed out. The lock makes
# concurrent first calls from several threads generate and compile once; a
# forked child gets a new one (a thread of the parent may have held it).
_LANES_LOCK = threading.Lock()
_LANES_TILES = {}
_LANES_ADDRESSES = {}


def _new_lanes_lock():
    global _LANES_LOCK
    _LANES_LOCK = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lanes_lock)


def _ce_lanes_tile(c):
    """The dispatcher of the generated tile function for ``c`` classes."""
    with _LANES_LOCK:
        tile = _LANES_TILES.get(c)
        if tile is None:
            namespace = dict(globals())
            # the file name of this module: Numba's cache locates (and invalidates) the function by it
            exec(compile(_ce_lanes_source(c), __file__, "exec"), namespace)
            tile = _LANES_TILES[c] = _jit()(namespace[f"_ce_lanes_tile_{c}"])
        return tile


def ce_index_lanes(c, dtype):
    """Address of the tile function for ``c`` classes and tiles of ``dtype``
    (np.float32 or np.float64), compiled or loaded from the cache on first
    use: the ``tile`` argument of :func:`ce_lanes_par` / :func:`ce_lanes_ser`."""
    key = (c, np.dtype(dtype))
    address = _LANES_ADDRESSES.get(key)
    if address is None:
        tile = _ce_lanes_tile(c)
        with _LANES_LOCK:
            address = _LANES_ADDRESSES.get(key)
            if address is None:
                sig = types.none(*_lanes_tile_types(numba.from_dtype(key[1])))
                cres = tile.get_compile_result(sig)
                address = _LANES_ADDRESSES[key] = cres.library.get_pointer_to_function(cres.fndesc.llvm_func_name)
    return address


@_jit()
def _ce_lanes_block(j, tile, x3, t, ignore_index, scale, need_grad, loss_rows, need_rows, grad3, block):
    """:func:`_ce_index_block` for the generated tile function at address ``tile``."""
    _wide_vectors()
    r0 = j * block
    r1 = min(x3.shape[0], r0 + block)
    T = np.empty((x3.shape[1], LANES), dtype=x3.dtype)
    lane_acc = np.zeros(LANES)
    y = np.empty(LANES, dtype=np.int32)
    lo = np.empty(LANES, dtype=x3.dtype)
    r = r0
    while r < r1:
        nb = min(LANES, r1 - r)
        if need_grad:
            _prefetch_tile_out(grad3, r)
        _tile_in(x3, r, 0, nb, T)
        for i in range(nb):
            ti = t[r + i]
            y[i] = -1 if ti == ignore_index else np.int32(ti)
        _call_lanes_tile(tile, T, nb, y, scale, need_grad, lo)
        if need_grad:
            _tile_out(T, r, 0, nb, grad3)
        _tile_losses(lo.reshape((1, LANES)), nb, lane_acc, loss_rows, need_rows, r)
        r += nb
    acc = 0.0
    for i in range(LANES):
        acc += lane_acc[i]
    return acc


@_jit(parallel=True)
def ce_lanes_par(tile, x3, t, ignore_index, scale, need_grad, loss_rows, need_rows, grad3, partial, block):
    """cross_entropy with class-index targets and no weights, for the tile
    function at address ``tile`` (:func:`ce_index_lanes` of x3.shape[1] and
    x3's dtype); the other arguments as :func:`ce_index_par` without the
    weights; ``x3`` of shape (N, C, 1)."""
    _wide_vectors()
    for j in prange(partial.shape[0]):
        partial[j] = _ce_lanes_block(
            np.int64(j), tile, x3, t, ignore_index, scale, need_grad, loss_rows, need_rows, grad3, block
        )


@_jit()
def ce_lanes_ser(tile, x3, t, ignore_index, scale, need_grad, loss_rows, need_rows, grad3, partial, block):
    _wide_vectors()
    for j in range(partial.shape[0]):
        partial[j] = _ce_lanes_block(
            np.int64(j), tile, x3, t, ignore_index, scale, need_grad, loss_rows, need_rows, grad3, block
        )


# prange hands out unsigned indices: cast them, or the block function is
# compiled a second time for uint64.


@_jit(parallel=True)
def ce_index_par(x3, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad3, partial, block):
    _wide_vectors()
    for j in prange(partial.shape[0]):
        partial[j] = _ce_index_block(
            np.int64(j), x3, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad3, block
        )


@_jit()
def ce_index_ser(x3, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad3, partial, block):
    _wide_vectors()
    for j in range(partial.shape[0]):
        partial[j] = _ce_index_block(
            np.int64(j), x3, t, w, wsum, sw, sw_step, ignore_index, eps, scale, need_grad, loss_rows, need_rows, grad3, block
        )


@_jit(parallel=True)
def ce_prob_par(x3, t3, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad3, partial, block):
    _wide_vectors()
    for j in prange(partial.shape[0]):
        partial[j] = _ce_prob_block(np.int64(j), x3, t3, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad3, block)


@_jit()
def ce_prob_ser(x3, t3, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad3, partial, block):
    _wide_vectors()
    for j in range(partial.shape[0]):
        partial[j] = _ce_prob_block(np.int64(j), x3, t3, w, sw, sw_step, eps, scale, need_grad, loss_rows, need_rows, grad3, block)


# ---------------------------------------------------------------------------
# binary cross-entropy, elementwise over a 2-D view (R, L) of the input with
# weights of shape (1 or R, 1 or L), in segments of at most BCE_SEGMENT
# elements (whole rows when L is short, pieces of one row when it is long).

BCE_SEGMENT = 8192


def bce_logits_run(x, y, w, pw, scale, lo, g):
    """Losses of binary_cross_entropy_with_logits into ``lo`` and their
    gradients times ``scale`` into ``g`` (Numba only; one loop without
    branches, so that it vectorises)."""
    raise NotImplementedError


def bce_prob_run(x, y, w, scale, lo, g):
    """The same for binary_cross_entropy; returns the number of inputs outside
    [0, 1] (Numba only)."""
    raise NotImplementedError


# One version per dtype so that float32 input is computed in float32
# arithmetic (typed constants) with the float32 exp and log.


def _bce_logits_impl(F, weighted):
    """The loop of :func:`bce_logits_run` in the arithmetic of ``F``
    (np.float32 or np.float64); ``weighted=False`` for ``w = pw = None``:
    the formulas with w = pw = 1 (equal to rounding), in 12-15% less time
    than with arrays of ones. The folded forms below (one product for the
    loss, one multiply-add for the gradient) took 16% (float32) and 8%
    (float64) off the unweighted loop against the two-sided forms
    (2026-12-04)."""
    zero = F(0.0)
    one = F(1.0)

    def run(x, y, w, pw, scale, lo, g):
        _wide_vectors()
        # The branching form, no cancellation: with sp = log1p(exp(-|z|)) and
        # e = exp(-|z|), -log sigmoid(z) = sp + max(-z, 0), -log sigmoid(-z) =
        # sp + max(z, 0), sigmoid(|z|) = 1 / (1 + e), sigmoid(-|z|) = e / (1 + e).
        # The loss  w (pw y (-log sigmoid(z)) + (1 - y) (-log sigmoid(-z)))
        #   = w ((pw y + 1 - y) sp + c z)
        # and the gradient  w ((1 - y) sigmoid(z) - pw y sigmoid(-z))
        #   = w (c + d e) / (1 + e),
        # with c = 1 - y, d = -pw y for z >= 0 and c = -pw y, d = 1 - y below.
        for k in range(x.shape[0]):
            z = x[k]
            yk = y[k]
            e = fexp_nonpos(-abs(z))
            sp, inv = flog1p_unit_recip(e)  # log1p(e), 1 / (1 + e)
            pos = z >= zero
            if weighted:
                wk = w[k]
                py = pw[k] * yk
                c = (one - yk) if pos else -py
                d = -py if pos else (one - yk)
                lo[k] = wk * ((py + (one - yk)) * sp + c * z)
                g[k] = (scale * inv) * (wk * (c + d * e))
            else:
                c = (one - yk) if pos else -yk
                d = -yk if pos else (one - yk)
                lo[k] = sp + c * z
                g[k] = (scale * inv) * (c + d * e)

    return run


_BCE_LOGITS_RUNS = {
    (F, weighted): _bce_logits_impl(F, weighted) for F in (np.float32, np.float64) for weighted in (False, True)
}


def _bce_prob_run64(x, y, w, scale, lo, g):
    # PyTorch: logs clamped at -100; backward w (p - y) / max(p (1 - p), 1e-12).
    _wide_vectors()
    n_bad = 0
    for k in range(x.shape[0]):
        p = x[k]
        yk = y[k]
        wk = w[k]
        lp = max(flog(p), -100.0)
        l1p = max(flog1p(-p), -100.0)
        lo[k] = wk * ((yk - 1.0) * l1p - yk * lp)
        g[k] = scale * (wk * (p - yk) / max((1.0 - p) * p, 1e-12))
        n_bad += 0 if (p >= 0.0 and p <= 1.0) else 1
    return n_bad


def _bce_prob_run32(x, y, w, scale, lo, g):
    _wide_vectors()
    one = _F32(1.0)
    n_bad = 0
    for k in range(x.shape[0]):
        p = x[k]
        yk = y[k]
        wk = w[k]
        lp = max(flog(p), _F32(-100.0))
        l1p = max(flog1p(-p), _F32(-100.0))
        lo[k] = wk * ((yk - one) * l1p - yk * lp)
        g[k] = scale * (wk * (p - yk) / max((one - p) * p, _F32(1e-12)))
        n_bad += 0 if (p >= _F32(0.0) and p <= one) else 1
    return n_bad


@overload(bce_logits_run, jit_options=_FAST_OPTS)
def _bce_logits_run_overload(x, y, w, pw, scale, lo, g):
    weighted = not isinstance(w, types.NoneType)
    if x.dtype == types.float32:
        return _BCE_LOGITS_RUNS[np.float32, weighted]
    if x.dtype == types.float64:
        return _BCE_LOGITS_RUNS[np.float64, weighted]
    return None


_overload_by_float(bce_prob_run, _bce_prob_run32, _bce_prob_run64, of=lambda t: t.dtype)


@_jit()
def _weights_row(w, i, c0, c1, buf):
    """Row i, columns [c0, c1) of a weight of shape (1 or R, 1 or L) as a
    contiguous vector (a view, or ``buf`` filled with the broadcast value)."""
    row = w[i if w.shape[0] > 1 else 0]
    if w.shape[1] > 1:
        return row[c0:c1]
    v = buf[: c1 - c0]
    v[:] = row[0]
    return v


@_jit()
def _bce_segment(j, logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, bad, col_segments, rows_per_segment):
    _wide_vectors()
    n_rows, width = x.shape
    seg = min(width, BCE_SEGMENT)
    group = j // col_segments
    c0 = (j - group * col_segments) * seg
    c1 = min(width, c0 + seg)
    acc = 0.0
    n_bad = 0
    # no weight and no pos_weight (both the (1, 1) array of ones): the unweighted loop
    plain = w.size == 1 and pw.size == 1 and w[0, 0] == 1.0 and pw[0, 0] == 1.0
    # scratch only where used (one element otherwise): broadcast weights, the
    # losses when not asked for, the gradient when not asked for
    wbuf = np.empty(1 if logits and plain else seg, dtype=x.dtype)
    pbuf = np.empty(seg if logits and not plain else 1, dtype=x.dtype)
    lbuf = np.empty(1 if need_el else seg, dtype=x.dtype)
    gbuf = np.empty(1 if need_grad else seg, dtype=x.dtype)
    for i in range(group * rows_per_segment, min(n_rows, (group + 1) * rows_per_segment)):
        lo = loss_el[i, c0:c1] if need_el else lbuf[: c1 - c0]
        g = grad[i, c0:c1] if need_grad else gbuf[: c1 - c0]
        if logits and plain:
            bce_logits_run(x[i, c0:c1], y[i, c0:c1], None, None, scale, lo, g)
        elif logits:
            wv = _weights_row(w, i, c0, c1, wbuf)
            pv = _weights_row(pw, i, c0, c1, pbuf)
            bce_logits_run(x[i, c0:c1], y[i, c0:c1], wv, pv, scale, lo, g)
        else:
            wv = _weights_row(w, i, c0, c1, wbuf)
            n_bad += bce_prob_run(x[i, c0:c1], y[i, c0:c1], wv, scale, lo, g)
        acc += _sum(lo)
    bad[j] = n_bad
    return acc


@_jit(parallel=True)
def bce_par(logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, partial, bad, col_segments, rows_per_segment):
    _wide_vectors()
    for j in prange(partial.shape[0]):
        partial[j] = _bce_segment(
            np.int64(j), logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, bad, col_segments, rows_per_segment
        )


@_jit()
def bce_ser(logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, partial, bad, col_segments, rows_per_segment):
    _wide_vectors()
    for j in range(partial.shape[0]):
        partial[j] = _bce_segment(
            np.int64(j), logits, x, y, w, pw, scale, need_grad, loss_el, need_el, grad, bad, col_segments, rows_per_segment
        )
