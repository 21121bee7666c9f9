"""Loss + gradients of a linear layer's cross-entropy: time and peak memory of
fastce.linear_cross_entropy against the unfused computation and PyTorch.

Usage::

    python benchmarks/compare_linear_ce.py [--n 8192] [--d 1024] [--k 50000]
        [--dtype float32] [--repeat 2] [--threads 2] [--methods ...]

Methods (mean reduction, class-index targets, no bias, loss and the
gradients with respect to X and W):

fastce fused
    ``fastce.linear_cross_entropy(X, W, y, return_grad=True)``.
fastce unfused
    ``Z = X @ W.T``; ``fastce.cross_entropy(Z, y, return_grad=True)``;
    ``G @ W`` and ``G.T @ X``.
torch reference
    ``torch.nn.functional.linear_cross_entropy(X, W, y)`` and ``backward()``
    (``options=None``: the logits are materialised).
torch chunked
    The same with ``options=torch.nn.LinearCrossEntropyOptions()`` (PyTorch's
    chunked path, its automatic chunking).

Each method runs in a fresh Python process (``subprocess``), so that no
allocator cache or thread pool of another method is involved. The child
builds the inputs (X, W, y; float32 standard normal, W scaled by
1/sqrt(D)), runs the method once on a small problem (JIT compilation,
thread pools, PyTorch's lazy init), then resets the kernel's peak-RSS
counter (``VmHWM``, by writing 5 to ``/proc/self/clear_refs``) and runs the
method ``--repeat`` times at full size. Reported:

time
    The fastest of the repeats (wall clock).
peak memory
    ``VmHWM - VmRSS`` measured just before the timed runs: the largest
    resident memory the process reached during them, above what it held
    with the inputs in place. It includes the outputs (``grad_X``,
    ``grad_W``: 4 (N + K) D bytes in float32) and every temporary.
loss
    The mean loss, for a check that all methods compute the same thing.
"""

import argparse
import json
import os
import subprocess
import sys
import time

METHODS = ("fastce fused", "fastce unfused", "torch reference", "torch chunked")


def _status():
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024
    return out


def _make(n, d, k, dtype, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32).astype(dtype, copy=False)
    W = rng.standard_normal((k, d), dtype=np.float32)
    W *= np.float32(1.0 / np.sqrt(d))
    W = W.astype(dtype, copy=False)
    y = rng.integers(0, k, size=n)
    return X, W, y


def _method(name, X, W, y, threads, buffer_mib=None):
    """A zero-argument callable computing loss and both gradients; returns the loss as a float."""
    if name.startswith("fastce"):
        import fastce

        if name == "fastce fused":
            from fastce.linear_ce import linear_cross_entropy

            kw = {} if buffer_mib is None else {"buffer_bytes": int(buffer_mib * 2**20)}
            return lambda: float(linear_cross_entropy(X, W, y, return_grad=True, n_threads=threads, **kw)[0])

        def unfused():
            Z = X @ W.T
            loss, G = fastce.cross_entropy(Z, y, return_grad=True, n_threads=threads)
            del Z
            gX = G @ W
            gW = G.T @ X
            del gX, gW
            return float(loss)

        return unfused
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    tX = torch.from_numpy(X).requires_grad_(True)
    tW = torch.from_numpy(W).requires_grad_(True)
    ty = torch.from_numpy(y)
    options = torch.nn.LinearCrossEntropyOptions() if name == "torch chunked" else None

    def run():
        tX.grad = None
        tW.grad = None
        loss = F.linear_cross_entropy(tX, tW, ty, options=options)
        loss.backward()
        return loss.item()

    return run


def child(args):
    """Run one method in this process and print a JSON line with its figures."""
    import numpy as np

    from threadpoolctl import threadpool_limits

    dtype = np.dtype(args.dtype)
    with threadpool_limits(limits=args.threads, user_api="blas"):
        small = _make(64, 32, 300, dtype, seed=1)
        _method(args.child, *small, args.threads)()  # compile, start pools
        del small
        X, W, y = _make(args.n, args.d, args.k, dtype)
        fn = _method(args.child, X, W, y, args.threads, args.buffer_mib)
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        base = _status()["VmRSS"]
        times = []
        loss = None
        for _ in range(args.repeat):
            t0 = time.perf_counter()
            loss = fn()
            times.append(time.perf_counter() - t0)
        peak = _status()["VmHWM"] - base
    print(json.dumps({"method": args.child, "time": min(times), "times": times, "peak": peak, "loss": loss}))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=8192)
    parser.add_argument("--d", type=int, default=1024)
    parser.add_argument("--k", type=int, default=50000)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS, metavar="METHOD")
    parser.add_argument("--buffer-mib", type=float, default=None,
                        help="buffer_bytes of fastce.linear_cross_entropy, in MiB (default: its own)")  # fmt: skip
    parser.add_argument("--child", choices=METHODS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return child(args)

    n, d, k = args.n, args.d, args.k
    print(f"N={n} D={d} K={k} {args.dtype}, loss + grad_X + grad_W, {args.threads} threads, best of {args.repeat}")
    print(f"inputs: X {n * d * 4 / 2**20:.0f} MiB, W {k * d * 4 / 2**20:.0f} MiB (float32); "
          f"logits N x K: {n * k * 4 / 2**20:.0f} MiB")  # fmt: skip
    rows = []
    for method in args.methods:
        cmd = [sys.executable, __file__, "--child", method, "--n", str(n), "--d", str(d), "--k", str(k)]
        cmd += ["--dtype", args.dtype, "--repeat", str(args.repeat), "--threads", str(args.threads)]
        if args.buffer_mib is not None:
            cmd += ["--buffer-mib", str(args.buffer_mib)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            print(f"{method}: failed\n{proc.stderr[-2000:]}", file=sys.stderr)
            continue
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    unfused = next((r for r in rows if r["method"] == "fastce unfused"), None)
    print()
    print(f"| {'method':<16} | {'time (s)':>8} | {'peak memory (MiB)':>17} | {'peak / unfused':>14} | {'loss':>10} |")
    print(f"|{'-' * 18}|{'-' * 9}:|{'-' * 18}:|{'-' * 15}:|{'-' * 11}:|")
    for r in rows:
        ratio = f"{r['peak'] / unfused['peak']:.3f}" if unfused else "-"
        print(f"| {r['method']:<16} | {r['time']:8.2f} | {r['peak'] / 2**20:17.0f} | {ratio:>14} | {r['loss']:10.6f} |")


if __name__ == "__main__":
    main()
