"""Benchmark: pairs per second of ``--solver bab``, one pair at a time against ``--batch-pairs K``
(many profiles of one agent in one branch-and-bound pool, :func:`certify.batch.certify_many`).

For each network: the first ``--points`` profiles of certify's sampler, agent 0, gap 3e-6,
the whole certificate (gradient ascent, bounds, float32 margins); one untimed warm-up pair.
On a GPU pass ``--batch`` (boxes per jitted call) large, e.g. 8192.

    python bench/bab_batched.py ../shared/optimaler/regretnet_1x2_seed_0.npz --points 16 --pairs 16
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from certify.batch import certify_many  # noqa: E402
from certify.campaign.profiles import sample_profiles  # noqa: E402
from certify.certificate import CertifyOptions  # noqa: E402
from certify.regret import certify_point  # noqa: E402
from jaxauction import checkpoints  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ckpts", nargs="+")
    ap.add_argument("--points", type=int, default=16)
    ap.add_argument("--pairs", type=int, default=16, help="K: pairs per pool")
    ap.add_argument("--batch", type=int, default=512, help="boxes per jitted call")
    args = ap.parse_args(argv)
    opts = CertifyOptions(bab_batch=args.batch)
    print("| network | pairs | one at a time: pairs/s | pool of K: pairs/s | K | speed-up | proven (one / pool) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for path in args.ckpts:
        params, spec, _, prior = checkpoints.load_with_prior(path)
        low, high = (np.broadcast_to(np.asarray(x, float), (spec.n_agents, spec.n_items)) for x in prior.bounds())
        prof = sample_profiles(prior, 0, args.points)
        certify_point(params, spec, prof[0], 0, low=low, high=high, solver="bab", options=opts)   # warm-up
        certify_many(params, spec, prof[:2], 0, low=low, high=high, options=opts)
        t = time.perf_counter()
        one = [certify_point(params, spec, v, 0, low=low, high=high, solver="bab", options=opts) for v in prof]
        t_one = time.perf_counter() - t
        t = time.perf_counter()
        many = []
        for s in range(0, len(prof), args.pairs):
            many += certify_many(params, spec, prof[s:s + args.pairs], 0, low=low, high=high, options=opts)
        t_many = time.perf_counter() - t
        ok = lambda cs: sum(c.status == "optimal" for c in cs)
        print(f"| {Path(path).name} | {len(prof)} | {len(prof) / t_one:.2f} | {len(prof) / t_many:.2f} | {args.pairs} | "
              f"{t_one / t_many:.2f}x | {ok(one)} / {ok(many)} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
