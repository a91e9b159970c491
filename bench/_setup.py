"""Shared setup of the per-network certification benchmarks (split_threshold.py, planar_vs_mip.py)."""
from __future__ import annotations

import sys

import numpy as np

from certify.regret import certify_point
from certify.campaign.profiles import sample_profiles
from jaxauction import checkpoints


def load_network(prog: str, path: str, points: int, time_limit: float, check=None):
    """A checkpoint, its bid box and certify's first ``points`` profiles (seed 0), after one
    untimed warm-up pair (JAX compilation). ``check(spec)`` may refuse the network with a
    ``ValueError``. Returns ``(params, spec, profiles, kw)`` with ``kw`` the bid box and time limit
    for :func:`certify_point`, or None after printing a one-line error for ``prog``."""
    try:
        params, spec, _, prior = checkpoints.load_with_prior(path)
        if check is not None:
            check(spec)
    except (checkpoints.CheckpointError, ValueError) as e:
        print(f"{prog}: {path}: {e}", file=sys.stderr)
        return None
    low, high = (np.broadcast_to(np.asarray(x, float), (spec.n_agents, spec.n_items)) for x in prior.bounds())
    profiles = sample_profiles(prior, 0, points)
    kw = dict(low=low, high=high, time_limit=time_limit)
    certify_point(params, spec, np.asarray(profiles[0]), 0, **kw)
    return params, spec, profiles, kw
