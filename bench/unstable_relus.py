"""Unstable trunk ReLUs of a mechanism on the boxes certification searches: how hard a net is to certify.

For ``--profiles`` valuation profiles drawn from U[0, 1] (seeded) and every agent i, the box lets
agent i's bids range over [0, 1]^M with the others fixed at their values; a ReLU is unstable on a
box when its pre-activation bounds straddle 0 (each one costs the MIP a binary). For one agent the
box is the whole bid space, the same for every profile.

    python bench/unstable_relus.py CKPT [CKPT ...] [--profiles 5] [--method crown|ibp|lp] [--seed 0]
"""
from __future__ import annotations

import argparse

import numpy as np


def unstable_per_layer(params, spec, profiles: np.ndarray, method: str) -> np.ndarray:
    """(P*N, layers) unstable ReLU counts, one row per (profile, agent) box."""
    from certify.tighten import tighten, unstable_counts
    from jaxauction.bounds import Interval

    rows = []
    for v in profiles:
        for i in range(spec.n_agents):
            lo, hi = v.copy(), v.copy()
            lo[i], hi[i] = 0.0, 1.0
            rows.append(unstable_counts(tighten(params, spec, Interval(lo.reshape(-1), hi.reshape(-1)), method=method)))
    return np.asarray(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+", help="checkpoint directories or reference .npz files")
    ap.add_argument("--profiles", type=int, default=5)
    ap.add_argument("--method", choices=("crown", "ibp", "lp"), default="crown")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from jaxauction import checkpoints

    for path in args.ckpts:
        params, spec = checkpoints.load_mechanism(path)[:2]
        vals = np.random.default_rng(args.seed).uniform(size=(args.profiles, spec.n_agents, spec.n_items))
        counts = unstable_per_layer(params, spec, vals, args.method)
        width = sum(layer["w"].shape[-1] for layer in params["trunk"])
        per_layer = " + ".join(f"{c:.1f}" for c in counts.mean(axis=0))
        print(f"{path}: {counts.sum(axis=1).mean():.1f} of {width} trunk ReLUs unstable per agent box "
              f"({per_layer} by layer; {args.method}, {len(counts)} boxes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
