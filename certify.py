"""Certify the regret of a trained mechanism at sampled (or given) valuation profiles.

    python certify.py --ckpt RUN_DIR_OR_REFERENCE_NPZ [--points N] [--agents all|0,1] [--seed S]
                      [--time-limit T] [--solver auto|bab|mip|gurobi|scip|planar] [--workers W] [--out DIR]
                      [--profiles FILE.json] [--executor local|ray] [--address RAY_ADDRESS] [--batch-pairs K]

Results go to OUT/results.jsonl (one line per profile and agent; rerunning resumes), then a summary
table is printed and written to OUT/summary.md/.json with plots beside it. The default OUT is
RUN_DIR/cert/ for a run directory and runs/cert/<npz stem>/ for a reference network.
--executor ray runs the pairs on Ray actors (a local Ray instance, or the cluster at --address);
the driver alone writes results.jsonl, so resuming works the same with either executor.
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
    from certify.campaign.executors import EXECUTORS
    from certify.certificate import SOLVERS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="run dir, checkpoint dir, or reference NAME.npz")
    ap.add_argument("--points", type=int, default=100, help="profiles sampled from the prior (default 100)")
    ap.add_argument("--agents", default="all", help="'all' or comma-separated agent indices (default all)")
    ap.add_argument("--seed", type=int, default=0, help="profile sampling seed (default 0)")
    ap.add_argument("--time-limit", type=float, default=600.0,
                    help="time limit per profile and agent, seconds (default 600; 0 = none); a pair "
                         "that reaches it reports the bounds it proved (status time_limit)")
    ap.add_argument("--solver", choices=SOLVERS, default="auto",
                    help="auto (default: the fastest sound method for the net, printed at the start; "
                         "certify/methods.py), bab (batched branch and bound: any RegretNet-family net, "
                         "tanh and softmax included), mip (the exact MIP: Gurobi if its licence takes the "
                         "model, else SCIP), gurobi, scip, or planar (exact region enumeration: free "
                         "payment, 2 items)")
    ap.add_argument("--workers", type=int, default=1,
                    help="pairs certified in parallel: worker processes, or Ray actors (default 1)")
    ap.add_argument("--executor", choices=EXECUTORS, default="local",
                    help="local: this machine's process pool (default); ray: Ray actors (pip install -e '.[ray]')")
    ap.add_argument("--address", help="Ray cluster to use with --executor ray (HOST:PORT of its head, "
                                      "ray://HOST:PORT or auto); default: start a local Ray instance")
    ap.add_argument("--out", help="output directory (default: RUN_DIR/cert or runs/cert/<npz stem>)")
    ap.add_argument("--profiles", help="JSON file: a list of N x M valuation matrices (instead of sampling)")
    ap.add_argument("--batch-pairs", type=int, default=1,
                    help="with bab: certify this many profiles of an agent together in one branch-and-bound "
                         "pool (full batches; keeps a GPU busy); one process (default 1: one pair at a time)")
    return ap.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    from jaxauction.checkpoints import CheckpointError
    from certify import campaign, report

    out = Path(args.out) if args.out else default_out(args.ckpt)
    try:
        campaign.run_certification(args.ckpt, out, points=args.points, agents=args.agents, seed=args.seed,
                                   time_limit=args.time_limit or None, solver=args.solver, workers=args.workers,
                                   profiles=args.profiles, progress=True, executor=args.executor,
                                   address=args.address, batch_pairs=args.batch_pairs)
    except Exception as e:  # bad input, or an error every pair would hit (a licence, an architecture)
        if not isinstance(e, (CheckpointError, campaign.RunError)) and not campaign.is_fatal(e):
            raise
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished results are in {out / campaign.RESULTS}; rerun the same command to resume",
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
