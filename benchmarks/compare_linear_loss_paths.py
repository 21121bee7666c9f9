"""Objective + gradient of LogisticRegression's multinomial objective by its
three evaluation paths, to place the crossover where ``LinearLoss`` hands the
evaluation to :func:`fastce.linear_cross_entropy`.

Usage::

    python benchmarks/compare_linear_loss_paths.py [--n 20000] [--shapes 100x3000 300x1000 ...]

For each ``DxK`` (features x classes): float64 standard normal ``X`` of
``N`` rows, uniform sample weights in [0.5, 2], the L2 penalty, one
``loss_gradient`` at random coefficients; best of 3 calls after one
warm-up, in ms, for

single pass
    ``LinearLoss(..., linear_ce=False)``: the single-pass Numba kernels.
BLAS + cross_entropy
    ``LinearLoss(..., single_pass=False)``: ``X @ W.T``, one fused
    ``cross_entropy`` call, ``X.T @ G`` on whole matrices (``2 N K`` float64
    of buffers).
linear_cross_entropy
    ``LinearLoss(..., linear_ce=True)``.

The last column says which path ``LinearLoss`` picks by itself (``auto``),
and the check column the largest relative difference of the gradients
between the paths.
"""

import argparse
import time

import numpy as np


def _best(f, repeat=3):
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv=None):
    from fastce._linear_loss import LinearLoss

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=20000)
    parser.add_argument(
        "--shapes", nargs="+", default=["100x200", "100x3000", "300x300", "300x1000", "1000x100", "1000x300", "1000x1000"]
    )
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    n = args.n
    print(f"N={n}, float64, ms per loss_gradient (best of 3)")
    print(f"{'D':>5} {'K':>5} {'single pass':>12} {'BLAS+CE':>9} {'linear_CE':>10} {'auto':>10} {'check':>8}")
    for shape in args.shapes:
        d, k = (int(v) for v in shape.split("x"))
        X = rng.standard_normal((n, d))
        y = rng.integers(0, k, n)
        sw = rng.uniform(0.5, 2.0, n)
        kw = dict(n_classes=k, fit_intercept=True, l2_reg_strength=1e-3, n_threads=args.threads)
        paths = {
            "single": LinearLoss(X, y, sw, linear_ce=False, **kw),
            "blas": LinearLoss(X, y, sw, single_pass=False, **kw),
            "lce": LinearLoss(X, y, sw, linear_ce=True, **kw),
        }
        w = 0.1 * rng.standard_normal(paths["single"].size)
        grads = [loss.loss_gradient(w)[1] for loss in paths.values()]
        check = max(np.abs(g - grads[0]).max() for g in grads) / np.abs(grads[0]).max()
        times = {name: _best(lambda loss=loss: loss.loss_gradient(w)) for name, loss in paths.items()}
        auto = "linear_CE" if LinearLoss(X, y, sw, **kw).linear_ce else "single"
        print(
            f"{d:>5} {k:>5} {1e3 * times['single']:>12.1f} {1e3 * times['blas']:>9.1f} {1e3 * times['lce']:>10.1f}"
            f" {auto:>10} {check:>8.1e}",
            flush=True,
        )


if __name__ == "__main__":
    main()
