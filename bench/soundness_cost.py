"""What soundness costs: time per (profile, agent) of this checkout's certifier on the same pairs.

    python bench/soundness_cost.py --pairs 10 checkpoints/1x2_reg:results/1x2_reg [CKPT:RUN_DIR ...]
    # the same with an older checkout, for the "before" figure:
    git worktree add /tmp/before 4f00819 && (cd /tmp/before && python /path/to/bench/soundness_cost.py ...)

For each ``CKPT:RUN_DIR`` it certifies the first ``--pairs`` (point, agent) pairs recorded in
``RUN_DIR/results.jsonl`` (their profiles, the run's solver) with ``certify.regret.certify_point``
of the checkout it runs in (the current directory's ``certify``), one pair at a time, after one
warm-up pair, and prints the mean wall time per pair and the mean certified regret. Only the
signature ``certify_point(params, spec, v, agent, low=, high=, solver=)`` is used, so an older
checkout runs it too.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path.cwd()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+", help="CKPT:RUN_DIR")
    ap.add_argument("--pairs", type=int, default=10)
    args = ap.parse_args(argv)
    import numpy as np

    from certify.regret import certify_point
    from jaxauction import checkpoints

    for spec_arg in args.runs:
        ckpt, run_dir = spec_arg.split(":")
        params, spec, _, prior = checkpoints.load_with_prior(ckpt)
        low, high = (np.asarray(a, np.float64) for a in prior.bounds())
        manifest = json.loads((Path(run_dir) / "run.json").read_text())
        src = Path(run_dir) / "results.jsonl.before"
        src = src if src.exists() else Path(run_dir) / "results.jsonl"
        recs = [json.loads(line) for line in src.read_text().splitlines() if line.strip()][: args.pairs + 1]
        times, uppers = [], []
        for k, r in enumerate(recs):
            t0 = time.perf_counter()
            c = certify_point(params, spec, np.asarray(r["valuations"]), int(r["agent"]), low=low, high=high,
                              solver=manifest["solver"], time_limit=manifest.get("time_limit"))
            if k:  # the first pair warms up JAX
                times.append(time.perf_counter() - t0)
                uppers.append(c.regret_upper if c.regret_upper is not None else float("nan"))
        print(f"{ckpt}: {len(times)} pairs, {manifest['solver']}: {np.mean(times):.3f} s per pair, "
              f"mean certified regret {np.nanmean(uppers):.5f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
