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

    python certify.py --ckpt CKPT --space [--agents ...] [--gap G] [--box FILE.json] [--time-limit T]
                      [--grid K] [--workers W] [--map-tol T] [--out DIR]

certifies the mechanism instead of points: for each agent a proven upper bound on its worst regret
over every profile of the prior's support (or of the box in FILE.json, {"low": N x M, "high": N x M})
and every misreport, and the worst pair found (certify/space.py). Results go to DIR/space.json
(default RUN_DIR/space/ or runs/space/<npz stem>/), with DIR/space.md and, for two items, a heatmap
per agent; a killed run resumes from DIR/cells.jsonl and the saved pool. --time-limit is per agent
there (default 3600 s).
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def default_out(ckpt: str, kind: str = "cert") -> Path:
    p = Path(ckpt)
    if p.suffix == ".npz":
        return Path("runs") / kind / p.stem
    if p.name in ("mechanism.json", "mechanism.npz"):
        p = p.parent
    return p / kind


def parse_args(argv=None) -> argparse.Namespace:
    from certify.campaign.executors import EXECUTORS
    from certify.certificate import SOLVERS

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ckpt", required=True, help="run dir, checkpoint dir, or reference NAME.npz")
    ap.add_argument("--points", type=int, default=100, help="profiles sampled from the prior (default 100)")
    ap.add_argument("--agents", default="all", help="'all' or comma-separated agent indices (default all)")
    ap.add_argument("--seed", type=int, default=0, help="profile sampling seed (default 0)")
    ap.add_argument("--time-limit", type=float, default=None,
                    help="time limit per profile and agent, seconds (default 600; 0 = none); a pair "
                         "that reaches it reports the bounds it proved (status time_limit); with --space, "
                         "per agent (default 3600)")
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
    sp = ap.add_argument_group("whole space (--space)")
    sp.add_argument("--space", action="store_true",
                    help="certify the worst regret over the whole valuation space (or --box), not sampled profiles")
    sp.add_argument("--gap", type=float, default=1e-4,
                    help="stop when upper - lower <= GAP for the exact function (default 1e-4)")
    sp.add_argument("--box", help="JSON file {\"low\": N x M, \"high\": N x M}: profiles to cover (default the prior's support)")
    sp.add_argument("--grid", type=int, default=None,
                    help="cells per dimension of the agent's own values (default 8 for two items; the heatmap's resolution)")
    sp.add_argument("--map-tol", type=float, default=None,
                    help="also bound every cell to within MAP_TOL of the worst regret found in it, so the heatmap "
                         "maps the regret over the agent's values (default: cells are only bounded by the global worst)")
    return ap.parse_args(argv)


def main_space(args) -> int:
    from jaxauction.checkpoints import CheckpointError
    from certify.campaign import RunError
    from certify.campaign.space_run import SPACE_JSON, run_space
    from certify.space_report import format_space

    out = Path(args.out) if args.out else default_out(args.ckpt, "space")
    limit = 3600.0 if args.time_limit is None else (args.time_limit or None)
    try:
        doc = run_space(args.ckpt, out, agents=args.agents, gap=args.gap, box=args.box, time_limit=limit,
                        grid=args.grid, workers=args.workers, map_tol=args.map_tol)
    except (CheckpointError, RunError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\ninterrupted; finished cells and the open pool are in {out}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print()
    print(format_space(doc))
    print(f"Files: {out / SPACE_JSON} and beside it space.md, cells.jsonl, heatmaps")
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.space:
        return main_space(args)
    if args.time_limit is None:
        args.time_limit = 600.0
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
