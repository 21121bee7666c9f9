"""Fit time of fastce.LogisticRegression against scikit-learn's (lbfgs), at the same objective.

Usage::

    python benchmarks/compare_logistic.py [--quick] [--rounds R]

Two seeded synthetic problems (float64, C=1, tol=1e-4, max_iter=1000 for
every fit so that all of them stop on the tolerance):

* multinomial: 200,000 x 100, 10 classes;
* binary: 1,000,000 x 50.

Features are standard normal; labels are drawn from a softmax (logistic)
model with random coefficients and Gumbel (logistic) noise. ``--quick``
divides the rows by 10.

Each round fits scikit-learn's lbfgs, fastce's lbfgs and fastce's newton-cg
once, interleaved (with a pause of 0.5 s before each fit, so that the worker
threads of the previous one have gone idle), so that load from other
processes hits all of them alike;
the table reports the fastest and the median round. The final objective of
every model is scikit-learn's (mean log loss + ||W||^2 / (2 C n)) evaluated
in float64 by the same code, so "same objective" is checked, not assumed.
scikit-learn is timed twice, with BLAS as configured (all cores) and with
BLAS limited to one thread (on small problems its L-BFGS-B iterations lose
more to OpenBLAS's threading than they gain); the speed ratio is the faster
of the two scikit-learn times over fastce's, on the fastest round, for fastce
fits whose objective is not above scikit-learn's by more than 1e-6
(relative).
"""

import argparse
import contextlib
import os
import statistics
import sys
import time
import warnings

import numpy as np

from fastce._bench import logistic_objective as objective
from fastce._bench import synthetic_problem as make_problem

SAME_OBJECTIVE_RTOL = 1e-6
# Idle time before each fit: the BLAS and OpenMP worker threads of the
# previous fit spin for a while after it and would slow the next one down.
PAUSE = 0.5


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a tenth of the rows")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of fits (default 5, 2 with --quick)")
    args = parser.parse_args(argv)
    rounds = args.rounds or (2 if args.quick else 5)
    scale = 10 if args.quick else 1

    import numba
    import scipy
    import sklearn
    from sklearn.linear_model import LogisticRegression as SkLogisticRegression
    from threadpoolctl import threadpool_info

    import fastce
    from fastce._config import ensure_threading_layer

    blas = ", ".join(f"{i['internal_api']} {i.get('num_threads')} threads" for i in threadpool_info() if i["user_api"] == "blas")
    print(
        f"fastce {fastce.__version__}, scikit-learn {sklearn.__version__}, numpy {np.__version__}, scipy "
        f"{scipy.__version__}, numba {numba.__version__}\n{os.cpu_count()} CPUs; Numba: {numba.get_num_threads()} "
        f"threads, layer '{ensure_threading_layer()}'; BLAS: {blas}\n"
    )
    problems = [
        ("multinomial", 200_000 // scale, 100, 10),
        ("binary", 1_000_000 // scale, 50, 2),
    ]
    from threadpoolctl import threadpool_limits

    # (label, estimator factory, BLAS threads during the fit: None = as configured)
    estimators = [
        ("scikit-learn lbfgs", lambda: SkLogisticRegression(max_iter=1000), None),
        ("scikit-learn, 1 BLAS", lambda: SkLogisticRegression(max_iter=1000), 1),
        ("fastce lbfgs", lambda: fastce.LogisticRegression(max_iter=1000), None),
        ("fastce newton-cg", lambda: fastce.LogisticRegression(solver="newton-cg", max_iter=1000), None),
    ]
    sk_labels = [e[0] for e in estimators if e[0].startswith("scikit")]
    header = (
        f"{'problem':<38} {'estimator':<20} {'best':>9} {'median':>9} {'iter':>5} {'final objective':>17} "
        f"{'vs sklearn':>10} {'speed-up':>9}"
    )
    lines = [header, "-" * len(header)]
    ratios = []
    for name, n, d, k in problems:
        X, y = make_problem(n, d, k, seed=0)
        title = f"{name} {n:,} x {d}" + (f", {k} classes" if k > 2 else "")
        print(f"{title}: warming up (compiling the kernels is not timed) ...", flush=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for label, make, _ in estimators:
                make().set_params(max_iter=2).fit(X[:50_000], y[:50_000])
        times = {label: [] for label, _, _ in estimators}
        fitted = {}
        for r in range(rounds):
            for label, make, blas in estimators:
                model = make()
                time.sleep(PAUSE)
                with threadpool_limits(blas, user_api="blas") if blas else contextlib.nullcontext():
                    t0 = time.perf_counter()
                    model.fit(X, y)
                    times[label].append(time.perf_counter() - t0)
                fitted[label] = model
            print(f"  round {r + 1}/{rounds}: " + ", ".join(f"{lab} {ts[-1]:.3f} s" for lab, ts in times.items()), flush=True)
        f_sk = objective(fitted["scikit-learn lbfgs"], X, y)
        t_sk = min(min(times[lab]) for lab in sk_labels)  # scikit-learn's faster BLAS setting
        best = None
        for label, _, _ in estimators:
            model = fitted[label]
            f = objective(model, X, y)
            gap = (f - f_sk) / f_sk
            t = min(times[label])
            same = gap <= SAME_OBJECTIVE_RTOL
            speed = t_sk / t
            if label not in sk_labels and same and (best is None or speed > best[1]):
                best = (label, speed)
            lines.append(
                f"{title:<38} {label:<20} {t:>8.3f}s {statistics.median(times[label]):>8.3f}s {int(model.n_iter_[0]):>5} "
                f"{f:>17.12f} {'' if label == 'scikit-learn lbfgs' else f'{gap:+.1e}':>10} "
                f"{speed:>8.2f}x" + ("" if same else "  (objective higher: not counted)")
            )
        ratios.append((title, best))
        lines.append("")
    print()
    print("\n".join(lines))
    for title, best in ratios:
        if best is None:
            print(f"{title}: no fastce fit reached scikit-learn's objective")
        else:
            print(f"{title}: {best[0]} is {best[1]:.2f}x faster than scikit-learn's lbfgs at the same objective")
    return 0


if __name__ == "__main__":
    sys.exit(main())
