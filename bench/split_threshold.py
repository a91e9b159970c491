"""Benchmark: how the input-space split threshold (``CertifyOptions.split_unstable``) affects
certification time, per network, on the same profiles (the certified values must not change: "max diff" is the largest spread of one
pair's proven bound across thresholds, time-outs left out).

For each checkpoint, certifies every agent at the first ``--points`` profiles drawn by certify's
sampler (seed 0, the prior from the checkpoint) once per threshold, single-threaded, and prints a
table: mean unstable ReLUs of the root box, and per threshold the mean seconds per pair (and the
mean number of MIPs). "none" is one MIP over the whole bid box (the paper's method). One untimed
warm-up pair per network absorbs JAX compilation.

    python bench/split_threshold.py checkpoints/1x2_reg checkpoints/3x3 --points 2
    python bench/split_threshold.py RUN --thresholds 16,48,none --time-limit 60
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

from certify.regret import CertifyOptions, certify_point  # noqa: E402
from bench._setup import load_network  # noqa: E402


def threshold(s: str) -> int | None:
    return None if s == "none" else int(s)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+", help="run dirs, checkpoint dirs or reference .npz files")
    ap.add_argument("--points", type=int, default=2)
    ap.add_argument("--thresholds", default="16,48,none", help="comma-separated ints or 'none'")
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per pair")
    args = ap.parse_args(argv)
    names = args.thresholds.split(",")
    print("| network | pairs | root unstable | " + " | ".join(f"split {n}: s (MIPs)" for n in names) + " | max diff |")
    print("| --- | --- | --- | " + " | ".join("---" for _ in names) + " | --- |")
    for path in args.ckpts:
        net = load_network("split_threshold.py", path, args.points, args.time_limit)
        if net is None:
            return 2
        params, spec, profiles, kw = net
        cells, values, unstable = [], [], []
        for n in names:
            opts = CertifyOptions(split_unstable=threshold(n))
            ts, mips, ups, bad = [], [], [], 0
            for v in profiles:
                for a in range(spec.n_agents):
                    t = time.perf_counter()
                    c = certify_point(params, spec, np.asarray(v), a, solver="mip", options=opts, **kw)
                    ts.append(time.perf_counter() - t)
                    mips.append(c.n_boxes)
                    ups.append(c.regret_upper if c.status == "optimal" else np.nan)
                    unstable.append(c.n_unstable_relus)
                    bad += c.status != "optimal"
            values.append(ups)
            cells.append(f"{np.mean(ts):.2f} ({np.mean(mips):.0f})" + (f", {bad} not optimal" if bad else ""))
        diff = float(np.nanmax(np.ptp(np.asarray(values, float), axis=0)))
        print(f"| {Path(path).name} | {len(values[0])} | {np.mean(unstable):.0f} | " + " | ".join(cells)
              + f" | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
