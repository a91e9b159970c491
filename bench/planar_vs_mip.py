"""Benchmark: exact linear-region enumeration (``--solver planar``) against the MIP, per network,
on the same profiles (the certified values must agree: "max diff" is the largest difference of one
pair's proven upper bound, which includes the MIP's 1e-6 gap tolerance and planar's 1e-9).

For each checkpoint (free payment, 2 items), certifies every agent at the first ``--points``
profiles drawn by certify's sampler (seed 0, the checkpoint's prior), single-threaded, and prints
mean seconds per pair of: the MIP (``time_solve_s``, solver "auto"), planar as ``certify.py`` runs
it (regions reused across profiles where the other agents' bids do not change them: a single
bidder), and planar with the memo cleared before every pair (one full enumeration per pair). One
untimed warm-up pair per network absorbs JAX compilation.

    python bench/planar_vs_mip.py checkpoints/1x2_distill checkpoints/3x2 --points 20
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from certify import planar  # noqa: E402
from certify.regret import certify_point  # noqa: E402
from bench._setup import load_network  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+", help="run dirs, checkpoint dirs or reference .npz files")
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--time-limit", type=float, default=120.0, help="seconds per pair (MIP)")
    args = ap.parse_args(argv)
    print("| network | pairs | MIP solve s | planar s (regions reused) | planar s (fresh) | regions (mean) | max diff |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in args.ckpts:
        net = load_network("planar_vs_mip.py", path, args.points, args.time_limit, check=planar.check)
        if net is None:
            return 2
        params, spec, profiles, kw = net
        times = {"mip": [], "reused": [], "fresh": []}
        mip_upper, regions, diff = [], [], 0.0
        for mode in ("mip", "reused", "fresh"):
            planar.clear_cache()
            for v in profiles:
                for agent in range(spec.n_agents):
                    if mode == "fresh":
                        planar.clear_cache()
                    c = certify_point(params, spec, np.asarray(v), agent, solver="auto" if mode == "mip" else "planar", **kw)
                    if c.status != "optimal":
                        print(f"planar_vs_mip.py: {path}: {mode} pair not proven: {c.status} {c.message}", file=sys.stderr)
                        return 1
                    times[mode].append(c.time_solve_s)
                    if mode == "mip":
                        mip_upper.append(c.regret_upper)
                    else:
                        diff = max(diff, abs(c.regret_upper - mip_upper[len(times[mode]) - 1]))
                        regions.append(c.nodes)
        print(f"| {Path(path).name} | {len(times['mip'])} | {np.mean(times['mip']):.4f} | {np.mean(times['reused']):.5f} "
              f"| {np.mean(times['fresh']):.4f} | {np.mean(regions):.0f} | {diff:.1e} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
