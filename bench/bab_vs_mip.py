"""Benchmark: the batched branch and bound (``--solver bab``) against the exact MIP, per network,
on the same profiles and agents (certify's sampler, seed 0), one process, single-threaded.

Prints per network: seconds per (profile, agent) of each method's search (``time_bounds_s +
time_solve_s``: the gradient-ascent incumbent and the rounding margin, which both methods share,
are excluded; "pair s" is the whole certify_point call), their ratio (MIP / bab), how many pairs
each proved (status optimal), and the largest difference of the two exact upper bounds (both
methods stop within their gap tolerance, ~3e-6). One untimed warm-up pair per method absorbs JAX
compilation.

    python bench/bab_vs_mip.py checkpoints/1x2_reg checkpoints/2x2_reg --points 10
    python bench/bab_vs_mip.py ../shared/reference/*.npz --points 10
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._setup import load_network  # noqa: E402
from certify.certificate import CertifyOptions  # noqa: E402
from certify.regret import certify_point  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+", help="run dirs, checkpoint dirs or reference .npz files")
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per pair, each method")
    ap.add_argument("--methods", default="mip,bab", help="comma-separated solvers (default mip,bab)")
    ap.add_argument("--branching", default="longest", help="bab branching rule (longest, slope)")
    ap.add_argument("--batch", type=int, default=512, help="bab boxes per call")
    ap.add_argument("--backward", choices=["auto", "on", "off"], default="auto",
                    help="bab's back-substitution (auto: on for tanh nets)")
    args = ap.parse_args(argv)
    methods = args.methods.split(",")
    opts = CertifyOptions(bab_branching=args.branching, bab_batch=args.batch, bab_backward={"auto": None, "on": True, "off": False}[args.backward])
    print(f"| network | pairs | " + " | ".join(f"{m} search s (median / mean)" for m in methods)
          + " | ratio of means | proven | max diff upper |")
    print("| --- | --- | " + " | ".join("---" for _ in methods) + " | --- | --- | --- |")
    for path in args.ckpts:
        net = load_network("bab_vs_mip.py", path, args.points, args.time_limit)
        if net is None:
            return 2
        params, spec, profiles, kw = net
        times, uppers, proven = {m: [] for m in methods}, {m: [] for m in methods}, {m: 0 for m in methods}
        for m in methods:
            certify_point(params, spec, np.asarray(profiles[0]), 0, solver=m, options=opts, **kw)  # warm-up
            for v in profiles:
                for agent in range(spec.n_agents):
                    t = time.perf_counter()
                    c = certify_point(params, spec, np.asarray(v), agent, solver=m, options=opts, **kw)
                    wall = time.perf_counter() - t
                    times[m].append((c.time_bounds_s + c.time_solve_s, wall))
                    uppers[m].append(c.regret_upper_exact if c.regret_upper_exact is not None else np.nan)
                    proven[m] += c.status == "optimal"
        cells = []
        for m in methods:
            s = np.asarray(times[m])
            cells.append(f"{np.median(s[:, 0]):.3f} / {np.mean(s[:, 0]):.3f} (pair {np.mean(s[:, 1]):.3f})")
        ratio = (np.mean(np.asarray(times[methods[0]])[:, 0]) / np.mean(np.asarray(times[methods[-1]])[:, 0])
                 if len(methods) > 1 else 1.0)
        diff = np.nanmax(np.abs(np.asarray(uppers[methods[0]]) - np.asarray(uppers[methods[-1]]))) \
            if len(methods) > 1 else 0.0
        n = len(times[methods[0]])
        print(f"| {Path(path).name} | {n} | " + " | ".join(cells) + f" | {ratio:.1f}x | "
              + ", ".join(f"{m} {proven[m]}/{n}" for m in methods) + f" | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
