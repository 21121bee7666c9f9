"""Command line: ``python -m fastce demo`` and ``python -m fastce warmup``."""

import argparse
import sys
import time


def _best_of(fn, repeat=5):
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def demo(args):
    """Fit softmax regression on scikit-learn's digits with fastce's fused loss+gradient,
    check it against PyTorch if installed, and time a large batch."""
    import numpy as np
    from scipy.optimize import minimize
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    import fastce

    print(f"fastce {fastce.__version__}")
    t0 = time.perf_counter()
    fastce.cross_entropy(np.zeros((2, 3)), np.array([0, 1]), return_grad=True)
    print(f"first call (compiles or loads the kernels from Numba's cache): {time.perf_counter() - t0:.2f} s\n")

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=0)
    n, d = X_train.shape
    k = 10
    X1 = np.hstack([X_train, np.ones((n, 1))])
    alpha = 1e-3

    def objective(flat):
        W = flat.reshape(d + 1, k)
        loss, grad_logits = fastce.cross_entropy(X1 @ W, y_train, return_grad=True)
        return loss + 0.5 * alpha * np.sum(W[:-1] ** 2), (X1.T @ grad_logits + alpha * np.vstack([W[:-1], np.zeros((1, k))])).ravel()

    t0 = time.perf_counter()
    result = minimize(objective, np.zeros((d + 1) * k), jac=True, method="L-BFGS-B", options={"maxiter": 500})
    fit_time = time.perf_counter() - t0
    W = result.x.reshape(d + 1, k)
    logits_test = np.hstack([X_test, np.ones((len(X_test), 1))]) @ W
    print("Softmax regression on digits (1797 images, 64 pixels, 10 classes), L-BFGS on fastce.cross_entropy:")
    print(f"  iterations {result.nit}, fit {fit_time * 1e3:.0f} ms, final objective {result.fun:.6f}")
    print(f"  test accuracy {np.mean(logits_test.argmax(1) == y_test):.4f}, "
          f"test log loss {float(fastce.cross_entropy(logits_test, y_test)):.4f}\n")

    rng = np.random.default_rng(0)
    logits = rng.normal(size=(args.rows, 10)).astype(np.float32)
    target = rng.integers(0, 10, size=args.rows)
    rows = []
    t = _best_of(lambda: fastce.cross_entropy(logits, target, return_grad=True))
    rows.append(("fastce cross_entropy, loss+grad", t))
    ref64 = None
    try:
        import torch

        torch.set_num_threads(max(1, torch.get_num_threads()))
        xt = torch.from_numpy(logits)
        tt = torch.from_numpy(target)

        def torch_fwd_bwd():
            x = xt.clone().requires_grad_(True)
            loss = torch.nn.functional.cross_entropy(x, tt)
            loss.backward()
            return loss, x.grad

        rows.append(("torch F.cross_entropy, forward+backward", _best_of(torch_fwd_bwd)))
        ref64 = torch.nn.functional.cross_entropy(xt.double(), tt).item()
    except ImportError:
        pass
    from scipy.special import log_softmax

    def numpy_reference():
        logp = log_softmax(logits, axis=1)
        grad = np.exp(logp)
        grad[np.arange(len(target)), target] -= 1
        return -logp[np.arange(len(target)), target].mean(), grad / len(target)

    rows.append(("scipy log_softmax + NumPy gradient", _best_of(numpy_reference, repeat=3)))
    print(f"Cross-entropy loss+gradient on {args.rows:,} x 10 float32 logits (best of several runs):")
    for name, seconds in rows:
        print(f"  {name:<42s} {seconds * 1e3:8.1f} ms   {seconds / rows[0][1]:6.1f}x fastce's time")
    loss = float(fastce.cross_entropy(logits, target))
    if ref64 is not None:
        print(f"  float32 loss {loss:.9f} vs float64 PyTorch reference {ref64:.9f} "
              f"(relative difference {abs(loss - ref64) / ref64:.1e})")
    return 0


def warmup(args):
    """Compile every kernel for float32 and float64 so that later processes load them from the cache."""
    import numpy as np

    import fastce
    from fastce._config import ensure_threading_layer

    t0 = time.perf_counter()
    big = 1 << 16  # large enough for the parallel variants
    for dtype in (np.float32, np.float64):
        for n in (4, big):
            x = np.zeros((n, 2), dtype=dtype)
            t = np.zeros(n, dtype=np.intp)
            fastce.cross_entropy(x, t, return_grad=True)
            fastce.cross_entropy(x, t, sample_weight=np.ones(n), return_grad=True)
            fastce.cross_entropy(x, x, return_grad=True)
            fastce.binary_cross_entropy(np.full(n, 0.5, dtype), np.zeros(n, dtype), return_grad=True)
            fastce.binary_cross_entropy_with_logits(x[:, 0], x[:, 1], return_grad=True)
            fastce.logsumexp(x, axis=1)
            fastce.logsumexp(x, axis=1, b=x)
            fastce.softmax(x, axis=1)
            fastce.log_softmax(x, axis=1)
            fastce.sigmoid(x)
    print(f"kernels ready in {time.perf_counter() - t0:.1f} s (threading layer: {ensure_threading_layer()})")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastce", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fit softmax regression on digits and time a large batch")
    p.add_argument("--rows", type=int, default=1_000_000, help="rows of the timed batch (default 1,000,000)")
    p.set_defaults(func=demo)
    p = sub.add_parser("warmup", help="compile all kernels into Numba's cache")
    p.set_defaults(func=warmup)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
