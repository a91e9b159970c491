"""Consistency of a whole-space certificate with the per-profile ones and with brute force.

For a net with a ``--space`` result (SPACE_DIR/space.json) and a per-profile run on prior samples
(CERT_DIR/results.jsonl, run.json), per agent:

* the whole-space bracket ``[lower, upper_exact]`` against the largest per-profile certified regret
  (``regret_lower`` and ``regret_upper_exact`` over the proven pairs): every point's regret lies
  below the whole space's bound, and the worst pair found is at least the worst point's (up to the
  search's gap);
* against a dense float64 search of ``R(v, b)`` (a grid of the joint box for one bidder, random
  profiles with a misreport grid otherwise);
* the expected-regret UCB (certify.report.confidence_bounds, range from space.json) for the first
  N = 25, 50, 100, ... profiles: at least the sample mean of the certified bounds, tightening with N.

    python bench/space_consistency.py results/space/1x2_reg results/1x2_reg --ckpt checkpoints/1x2_reg
"""
from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402


def dense(params, spec, agent, low, high, points: int, seed: int = 0) -> float:
    """max R over a dense set of (v, b): the float64 twin, no search."""
    from certify import network

    w = network.weights64(params)
    n, m = spec.n_agents, spec.n_items
    rng = np.random.default_rng(seed)
    k = 11 if n * m + m <= 4 else 5
    g = [np.linspace(low[agent, j], high[agent, j], 4 * k) for j in range(m)]
    bids = np.stack(np.meshgrid(*g, indexing="ij"), -1).reshape(-1, m)
    best = -np.inf
    for _ in range(points):
        v = low + rng.random((n, m)) * (high - low)
        prof = np.repeat(v[None], len(bids), 0)
        prof[:, agent] = bids
        r = network.utility64(w, spec, prof, v, agent) - network.utility64(w, spec, v, v, agent)
        best = max(best, float(np.max(r)))
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("space_dir")
    ap.add_argument("cert_dir")
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--dense-points", type=int, default=2000, help="profiles of the dense search")
    args = ap.parse_args(argv)
    from certify import report
    from certify.certificate import is_proven
    from jaxauction import checkpoints

    params, spec, _, prior = checkpoints.load_with_prior(args.ckpt)
    low, high = (b.astype(np.float64) for b in prior.bounds())
    doc = json.loads((Path(args.space_dir) / "space.json").read_text())
    recs, manifest = report.load(args.cert_dir)
    print("| agent | space lower | space upper (exact) | max point regret_lower | max point regret_upper_exact "
          "| dense search max | lower >= points - gap | upper >= points, dense |")
    print("|---:|---:|---:|---:|---:|---:|:-:|:-:|")
    for r in doc["agents"]:
        a = r["agent"]
        mine = [x for x in recs if int(x["agent"]) == a and is_proven(x)]
        pl = max(float(x["regret_lower"]) for x in mine)
        pu = max(float(x["regret_upper_exact"]) for x in mine)
        d = dense(params, spec, a, low, high, args.dense_points)
        ok_l = r["lower"] >= pl - r["gap_exact"] - 3e-6
        ok_u = r["upper_exact"] >= max(pl, d) - 1e-9 and r["upper_exact"] >= pu - 3e-6
        print(f"| {a} | {r['lower']:.6f} | {r['upper_exact']:.6f} | {pl:.6f} | {pu:.6f} | {d:.6f} | "
              f"{'yes' if ok_l else 'NO'} | {'yes' if ok_u else 'NO'} |")
    print("\n| N profiles | agent | mean certified (float32) | expected_regret_ucb | range (source) |")
    print("|---:|---:|---:|---:|:--|")
    n_all = 1 + max(int(x["point"]) for x in recs)
    sizes = [s for s in (25, 50, 100, 200, 400, 800) if s <= n_all]
    for n in sizes:
        sub = [x for x in recs if int(x["point"]) < n]
        cb = report.confidence_bounds(sub, manifest, args.cert_dir, space=Path(args.space_dir) / "space.json")
        for a in sorted(k for k in cb if k != "all"):
            mean = np.mean([float(x["regret_upper"]) for x in sub if int(x["agent"]) == a and is_proven(x)])
            c = cb[a]
            print(f"| {n} | {a} | {mean:.6f} | {c['expected_regret_ucb']:.6f} | {c['ucb_range']:.4f} "
                  f"({c['ucb_range_source']}) |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
