"""Run a training sweep: ``python sweep.py SWEEP_FILE [--out DIR] [--executor local|ray] [--address ADDR] [--workers W] [--gpus-per-run G]``.

SWEEP_FILE is a file in configs/sweeps/ (``1x2_seeds``) or a path to a Python file whose
``get_sweep()`` lists the runs (base config, seeds, grid of --set overrides; see
``jaxauction/sweep/__init__.py``). Each run trains into OUT/<run name>/ (train.py's run directory), OUT
defaulting to runs/sweeps/<sweep file stem>; OUT/summary.md and OUT/summary.json gather the final
evaluations. Rerunning the command skips finished runs and resumes interrupted ones.
--executor local (default) trains W runs at once in worker processes on this machine's cores;
--executor ray runs each run as a Ray task (a local Ray instance, or the cluster at --address),
with --gpus-per-run G GPUs each; --executor vmap trains every group of runs that differ only in seed
and continuous hyperparameters (lr, rho, ...) as one vmapped program in this process, on its default
device (a GPU if JAX sees one). Bad input: one-line error, exit 2; a failed run: exit 1.
"""
from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sweep", metavar="SWEEP_FILE", help="sweep name in configs/sweeps/ or path to a sweep .py")
    ap.add_argument("--out", help="output directory (default: runs/sweeps/STEM)")
    ap.add_argument("--executor", default="local", choices=("local", "ray", "vmap"),
                    help="local worker processes (default), Ray tasks, or vmap: runs differing only in seed and "
                         "continuous hyperparameters as one vmapped program here (jaxauction/multirun.py)")
    ap.add_argument("--address", help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto); "
                                      "default: RAY_ADDRESS, else a local Ray instance")
    ap.add_argument("--workers", type=int, help="runs trained at once (default: one per CPU core; Ray: "
                                                "what the cluster holds)")
    ap.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                    help="GPUs per run with --executor ray (0: CPU runs, one core each)")
    args = ap.parse_args(argv)

    from jaxauction.sweep import SweepError, run_sweep

    try:
        res = run_sweep(args.sweep, args.out, executor=args.executor, workers=args.workers, address=args.address,
                        gpus_per_run=args.gpus_per_run)
    except SweepError as e:
        print(f"sweep.py: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sweep.py: interrupted; finished runs are saved, rerun the command to resume", file=sys.stderr)
        return 130
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
