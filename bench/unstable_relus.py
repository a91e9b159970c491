"""Unstable trunk ReLUs of a mechanism on the boxes certification searches: how hard a net is to certify.

For ``--profiles`` valuation profiles drawn from the checkpoint's prior (seeded, as ``certify.py``
samples them) and every agent i, the box lets agent i's bids range over its support with the
others fixed at their values; a ReLU is unstable on a box when its pre-activation bounds straddle 0
(each one costs the MIP a binary). For one agent the box is the whole bid space.

    python bench/unstable_relus.py CKPT [CKPT ...] [--profiles 5] [--method crown|ibp|lp] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys

import numpy as np


def unstable_per_layer(params, spec, profiles: np.ndarray, method: str, low=0.0, high=1.0) -> np.ndarray:
    """(P*N, layers) unstable ReLU counts, one row per (profile, agent) box; ``low``/``high``: the
    (N, M) support (broadcast)."""
    import jax.numpy as jnp

    from certify.tighten import tighten, unstable_counts
    from jaxauction.bounds import Interval, agent_box

    shape = (spec.n_agents, spec.n_items)
    low, high = jnp.broadcast_to(jnp.asarray(low), shape), jnp.broadcast_to(jnp.asarray(high), shape)
    rows = []
    for v in jnp.asarray(profiles):
        for i in range(spec.n_agents):
            box = agent_box(v, i, low, high)
            flat = Interval(np.asarray(box.lower).reshape(-1), np.asarray(box.upper).reshape(-1))
            rows.append(unstable_counts(tighten(params, spec, flat, method=method)))
    return np.asarray(rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+", help="checkpoint directories or reference .npz files")
    ap.add_argument("--profiles", type=int, default=5)
    ap.add_argument("--method", choices=("crown", "ibp", "lp"), default="crown")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from certify.campaign.profiles import sample_profiles
    from jaxauction import checkpoints, mechanism

    for path in args.ckpts:
        try:
            params, spec, _, prior = checkpoints.load_with_prior(path)
        except checkpoints.CheckpointError as e:
            print(f"unstable_relus.py: {e}", file=sys.stderr)
            return 2
        vals = sample_profiles(prior, args.seed, args.profiles)
        counts = unstable_per_layer(params, spec, vals, args.method, *prior.bounds())
        width = sum(layer["w"].shape[-1] for name in mechanism.tower_keys(params) for layer in params[name])
        per_layer = " + ".join(f"{c:.1f}" for c in counts.mean(axis=0))
        print(f"{path}: {counts.sum(axis=1).mean():.1f} of {width} trunk ReLUs unstable per agent box "
              f"({per_layer} by layer; {args.method}, {len(counts)} boxes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
