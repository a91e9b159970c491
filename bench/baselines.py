"""Revenue of the strategyproof baselines (jaxauction.baselines) per setting: a markdown table.

    python bench/baselines.py [--points 100000] [--seed 0] [--settings 1x2,2x2,...]

Per setting and baseline: the Monte Carlo revenue on ``--points`` fresh profiles from the prior,
with its standard error (``baselines.revenue_estimate``), the closed form where one is known
(``baselines.expected_revenue``: item-wise Myerson when the agents share each item's uniform
marginal) and how the reserve was set (Myerson's ``max(lo, hi/2)``; the bundle's is an empirical
optimum on 100k other profiles). A setting is a config name (its prior) or NxM (U[0, 1]).
"""
from __future__ import annotations

import argparse
import sys
import time

SETTINGS = ("1x2", "2x2", "2x3", "2x5", "3x2", "3x3", "3x10", "1x2_asym")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=100_000, help="Monte Carlo profiles per row (default 100000)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed of the evaluation profiles (default 0)")
    ap.add_argument("--settings", default=",".join(SETTINGS), help="comma-separated settings")
    args = ap.parse_args(argv)

    from jaxauction import baselines

    t0 = time.perf_counter()
    print(f"Strategyproof baselines: revenue on {args.points} profiles (seed {args.seed}) ± standard error\n")
    print("| setting | baseline | revenue (MC) | closed form | reserve |")
    print("|---|---|---:|---:|---|")
    for setting in args.settings.split(","):
        for name in baselines.COMPARED:
            try:
                b = baselines.load(f"{name}:{setting}")
            except baselines.BaselineError as e:
                print(f"bench/baselines.py: {e}", file=sys.stderr)
                return 2
            mean, se = baselines.revenue_estimate(b, points=args.points, seed=args.seed)
            exact = baselines.expected_revenue(b)
            if name == "myerson":
                reserve = "max(lo, hi/2) = " + ", ".join(f"{r:g}" for r in sorted({x for row in b.info["reserves"] for x in row}))
            else:
                reserve = f"{b.info['reserve']:.4f} ({b.info['reserve_rule']})"
            print(f"| {setting} | {name} | {mean:.4f} ± {se:.4f} | {'-' if exact is None else f'{exact:.4f}'} | {reserve} |",
                  flush=True)
    print(f"\n({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
