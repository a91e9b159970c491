"""Certify the regret of a trained mechanism at sampled (or given) valuation profiles.

    python certify.py --ckpt RUN_DIR_OR_REFERENCE_NPZ [--points N] [--agents all|0,1] [--seed S]
                      [--time-limit T] [--solver auto|gurobi|scip|planar] [--workers W] [--out DIR]
                      [--profiles FILE.json]

Results go to OUT/results.jsonl (one line per profile and agent; rerunning resumes), then a summary
table is printed and written to OUT/summary.md/.json with plots beside it. The default OUT is
RUN_DIR/cert/ for a run directory and runs/cert/<npz stem>/ for a reference network.
Bad input ends with a one-line error and exit code 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_out(ckpt: str) -> Path:
    p = Path(ckpt)
    if p.suffix == ".npz":
        return Path("runs") / "cert" / p.stem
    if p.name in ("mechanism.json", "mechanism.npz"):
        p = p.parent
    return p / "cert"


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="run dir, checkpoint dir, or reference NAME.npz")
    ap.add_argument("--points", type=int, default=100, help="profiles sampled from the prior (default 100)")
    ap.add_argument("--agents", default="all", help="'all' or comma-separated agent indices (default all)")
    ap.add_argument("--seed", type=int, default=0, help="profile sampling seed (default 0)")
    ap.add_argument("--time-limit", type=float, default=600.0,
                    help="MIP time limit per profile and agent, seconds (default 600; 0 = none)")
    ap.add_argument("--solver", choices=("auto", "gurobi", "scip", "planar"), default="auto",
                    help="MIP solver (auto: Gurobi if its license takes the model, else SCIP), or 'planar': "
                         "exact linear-region enumeration, no MIP (free payment, 2 items only)")
    ap.add_argument("--workers", type=int, default=1, help="parallel worker processes (default 1)")
    ap.add_argument("--out", help="output directory (default: RUN_DIR/cert or runs/cert/<npz stem>)")
    ap.add_argument("--profiles", help="JSON file: a list of N x M valuation matrices (instead of sampling)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from jaxauction.checkpoints import CheckpointError
    from certify import report, runs

    out = Path(args.out) if args.out else default_out(args.ckpt)
    fatal = runs.fatal_exceptions()
    try:
        runs.run_certification(args.ckpt, out, points=args.points, agents=args.agents, seed=args.seed,
                               time_limit=args.time_limit or None, solver=args.solver, workers=args.workers,
                               profiles=args.profiles, progress=True)
    except (CheckpointError, runs.RunError, *fatal) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished results are in {out / runs.RESULTS}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    rep = report.write_report(out)
    print()
    print(rep["text"])
    print("Files:")
    for f in rep["files"]:
        print(f"  {f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
