"""Command line: ``python -m fastce demo``, ``python -m fastce warmup`` and ``python -m fastce bench``."""

import argparse
import sys
import time
import warnings

from ._bench import logistic_objective, synthetic_problem

CLI_HINT = 'pip install "fastce[cli]"'


def demo(args):
    """Fit fastce's and scikit-learn's LogisticRegression side by side and print a table."""
    try:
        from rich import box
        from rich.console import Console
        from rich.panel import Panel
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn
        from rich.table import Table
    except ImportError:
        print(f"error: the demo needs the optional dependency 'rich'; install it with:\n    {CLI_HINT}", file=sys.stderr)
        return 1
    import contextlib

    import numpy as np
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.model_selection import train_test_split
    from threadpoolctl import threadpool_limits

    import fastce
    from fastce._config import ensure_threading_layer, max_threads

    console = Console(width=max(140, Console().width))
    layer = ensure_threading_layer()
    console.print(
        Panel.fit(
            f"[bold]fastce {fastce.__version__}[/] - LogisticRegression on fused Numba kernels vs scikit-learn\n"
            f"threads: {max_threads()} (Numba layer '{layer}'); same C=1, tol=1e-4, max_iter=1000 for every fit",
            border_style="cyan",
        )
    )
    n_rows = 20_000 if args.quick else args.rows
    problems = [("digits", 10), (f"synthetic {n_rows:,} x {args.features}", args.classes)]
    results = []
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=False) as progress:
        task = progress.add_task("compiling the kernels (cached by Numba after the first run)", total=1)
        t0 = time.perf_counter()
        Xw, yw = synthetic_problem(40_000, 8, 3, seed=1)  # large enough for the parallel kernels
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for solver in ("lbfgs", "newton-cg"):
                fastce.LogisticRegression(solver=solver, max_iter=2).fit(Xw, yw).predict_proba(Xw[:10])
                fastce.LogisticRegression(solver=solver, max_iter=2).fit(Xw[:200], yw[:200])
        progress.update(task, completed=1, description=f"kernels ready in {time.perf_counter() - t0:.1f} s")

        for name, n_classes in problems:
            task = progress.add_task(f"{name}: preparing the data", total=5)
            if name == "digits":
                X, y = load_digits(return_X_y=True)
                X = X / 16.0
                split = dict(test_size=0.25, random_state=0, stratify=y)
            else:
                X, y = synthetic_problem(n_rows, args.features, n_classes)
                split = dict(test_size=0.2, random_state=0)
            X_train, X_test, y_train, y_test = train_test_split(X, y, **split)
            progress.advance(task)
            # scikit-learn twice: BLAS as configured, and BLAS on one thread (on
            # small problems its L-BFGS-B loses more to OpenBLAS's threads than it gains)
            fits = [
                ("scikit-learn lbfgs", SkLogisticRegression(max_iter=1000), None),
                ("scikit-learn, 1 BLAS thread", SkLogisticRegression(max_iter=1000), 1),
                ("fastce lbfgs", fastce.LogisticRegression(max_iter=1000), None),
                ("fastce newton-cg", fastce.LogisticRegression(solver="newton-cg", max_iter=1000), None),
            ]
            for label, model, blas in fits:
                progress.update(task, description=f"{name}: fitting {label}")
                time.sleep(0.3)  # let the previous fit's BLAS/OpenMP worker threads go idle (not timed)
                with threadpool_limits(blas, user_api="blas") if blas else contextlib.nullcontext():
                    t = time.perf_counter()
                    model.fit(X_train, y_train)
                    seconds = time.perf_counter() - t
                results.append(
                    dict(
                        problem=f"{name} ({len(y_train):,} train rows, {X.shape[1]} features, {n_classes} classes)",
                        label=label,
                        seconds=seconds,
                        n_iter=int(model.n_iter_[0]),
                        objective=logistic_objective(model, X_train, y_train),
                        train_acc=model.score(X_train, y_train),
                        test_acc=model.score(X_test, y_test),
                        train_log_loss=log_loss(y_train, model.predict_proba(X_train), labels=model.classes_),
                        test_log_loss=log_loss(y_test, model.predict_proba(X_test), labels=model.classes_),
                    )
                )
                progress.advance(task)
            progress.update(task, description=f"{name}: done")

    summary = []
    for problem in dict.fromkeys(r["problem"] for r in results):
        rows = [r for r in results if r["problem"] == problem]
        sk = min(rows[:2], key=lambda r: r["seconds"])  # scikit-learn's faster BLAS setting
        table = Table(title=problem, box=box.SIMPLE_HEAD, padding=(0, 1), title_justify="left")
        for col in ("estimator", "fit time", "speed-up", "iter.", "final objective", "vs sklearn",
                    "accuracy train/test", "log loss train/test"):  # fmt: skip
            table.add_column(col, justify="left" if col == "estimator" else "right", no_wrap=True)
        for r in rows:
            speed = sk["seconds"] / r["seconds"]
            gap = (r["objective"] - rows[0]["objective"]) / rows[0]["objective"]
            faster = r not in rows[:2] and speed >= 1
            table.add_row(
                r["label"], f"{r['seconds'] * 1e3:,.0f} ms", f"[bold green]{speed:.1f}x[/]" if faster else f"{speed:.1f}x",
                str(r["n_iter"]), f"{r['objective']:.10f}", "" if r is rows[0] else f"{gap:+.1e}",
                f"{r['train_acc']:.4f} / {r['test_acc']:.4f}", f"{r['train_log_loss']:.4f} / {r['test_log_loss']:.4f}",
            )  # fmt: skip
        console.print(table)
        best = min(rows[2:], key=lambda r: r["seconds"])
        gap = (best["objective"] - sk["objective"]) / sk["objective"]
        if gap == 0.0:
            same = "its final objective is the same, bit for bit"
        else:
            same = f"its final objective is {'lower' if gap < 0 else 'higher'} by {abs(gap):.1e} (relative)"
        summary.append(
            f"{problem.split(' (')[0]}: {best['label']} is {sk['seconds'] / best['seconds']:.1f}x faster than "
            f"scikit-learn's faster setting; {same}"
        )
    console.print(
        "speed-up = the faster scikit-learn time / this fit time (one run each; benchmarks/compare_logistic.py "
        "repeats them). final objective = scikit-learn's (mean log loss + ||W||^2 / (2 C n_train)), computed in float64 "
        "for every model; 'vs sklearn' is its relative difference: equal objectives, same model.\n"
    )
    for line in summary:
        console.print(f"[bold green]>[/] {line}")
    return 0


def warmup(args):
    """Compile every kernel for float32 and float64 so that later processes load them from the cache."""
    import numpy as np
    import scipy.sparse as sp

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
        # class-index targets without weights: kernels generated per class count, 2 to 14
        from fastce._kernels import CE_LANES_MAX_CLASSES

        for n_classes in range(3, CE_LANES_MAX_CLASSES[np.dtype(dtype)] + 1):
            for n in (4, big):
                fastce.cross_entropy(np.zeros((n, n_classes), dtype), np.zeros(n, dtype=np.intp), return_grad=True)
        # few long rows: the segment kernels
        long_row = np.zeros(1 << 18, dtype=dtype)
        fastce.logsumexp(long_row)
        fastce.softmax(long_row)
        fastce.log_softmax(long_row)
        fastce.cross_entropy(long_row, np.array(0), label_smoothing=0.1, return_grad=True)
        fastce.cross_entropy(long_row, np.full(long_row.shape, 1.0 / long_row.size, dtype), return_grad=True)
    # linear_cross_entropy: its own kernels between the BLAS products
    for dtype in (np.float32, np.float64):
        for n in (4, big):
            X = np.zeros((n, 2), dtype=dtype)
            W = np.zeros((3, 2), dtype=dtype)
            t = np.zeros(n, dtype=np.intp)
            fastce.linear_cross_entropy(X, W, t, np.zeros(3, dtype), return_grad=True)
            fastce.linear_cross_entropy(X, W, np.full((n, 3), 1 / 3, dtype), return_grad=True)
    # Keras-style classes: their own kernels for probabilities (clipping) and
    # the logits paths
    from fastce import keras

    for dtype in (np.float32, np.float64):
        for n in (4, big):
            p = np.full((n, 2), 0.5, dtype=dtype)
            y = np.zeros((n, 2), dtype=dtype)
            keras.BinaryCrossentropy().loss_and_grad(y, p)
            keras.BinaryCrossentropy(from_logits=True).loss_and_grad(y, p)
            keras.CategoricalCrossentropy().loss_and_grad(y, p)
            keras.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1, axis=1).loss_and_grad(
                np.zeros((n, 2, 3), dtype), np.zeros((n, 2, 3), dtype)
            )
            keras.SparseCategoricalCrossentropy().loss_and_grad(np.zeros(n, dtype=np.intp), p)
    # LogisticRegression: single-pass kernels (dense), loss functions + Hessian
    # kernels (sparse), binomial and multinomial, both solvers, both dtypes
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for dtype in (np.float32, np.float64):
            for n in (64, big):
                X = rng.standard_normal((n, 2)).astype(dtype)
                for n_classes in (2, 3):
                    y = np.arange(n) % n_classes
                    for data in (X, sp.csr_matrix(X)):
                        for solver in ("lbfgs", "newton-cg"):
                            est = fastce.LogisticRegression(solver=solver, max_iter=2)
                            est.fit(data, y, sample_weight=np.ones(n)).predict_proba(data[:4])
                            est.fit(data, y)
    print(f"kernels ready in {time.perf_counter() - t0:.1f} s (threading layer: {ensure_threading_layer()})")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m fastce", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser(
        "demo",
        help="fit fastce's and scikit-learn's LogisticRegression on digits and a large synthetic problem",
        description=f"Fit fastce.LogisticRegression and scikit-learn's side by side (needs rich: {CLI_HINT}).",
    )
    p.add_argument("--rows", type=int, default=300_000, help="rows of the synthetic problem (default 300,000)")
    p.add_argument("--features", type=int, default=100, help="features of the synthetic problem (default 100)")
    p.add_argument("--classes", type=int, default=10, help="classes of the synthetic problem (default 10)")
    p.add_argument("--quick", action="store_true", help="a small synthetic problem (20,000 rows)")
    p.set_defaults(func=demo)
    p = sub.add_parser("warmup", help="compile all kernels into Numba's cache")
    p.set_defaults(func=warmup)
    from . import _bench

    p = sub.add_parser("bench", help=_bench.HELP, description=_bench.DESCRIPTION)
    _bench.add_arguments(p)
    p.set_defaults(func=_bench.run)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
