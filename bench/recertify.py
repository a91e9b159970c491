"""Re-certify the pairs of existing run directories with the current certifier, in place.

    python bench/recertify.py results/1x2_reg [results/2x2_reg ...] [--workers 2]

For each directory: the same checkpoint (``run.json``), solver, time limit and (profile, agent)
pairs as its ``results.jsonl``; the new certificates go to ``results.jsonl.recert`` as they finish
(rerunning resumes) and replace ``results.jsonl`` once every pair is done (the original file is kept
as ``results.jsonl.before``, and a second pass re-certifies the same pairs and keeps it). Prints the time per pair before and after.
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from certify.campaign.results import locate_ckpt  # noqa: E402

_STATE = {}


def _ckpt_path(ckpt: str) -> str:
    found = locate_ckpt(ckpt)  # relative to the repository, or another checkout's absolute path
    if found is None:
        raise SystemExit(f"checkpoint {ckpt} (recorded in run.json) not found")
    return str(found)


def _init(ckpt, solver, time_limit):
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    from jaxauction import checkpoints

    params, spec, _, prior = checkpoints.load_with_prior(ckpt)
    low, high = (a.astype("float64") for a in prior.bounds())
    _STATE.update(params=params, spec=spec, low=low, high=high, solver=solver, time_limit=time_limit)


def _one(job):
    import numpy as np

    from certify.regret import certify_point

    point, agent, vals = job
    s = _STATE
    t0 = time.perf_counter()
    try:
        cert = certify_point(s["params"], s["spec"], np.asarray(vals), int(agent), low=s["low"], high=s["high"], solver=s["solver"], time_limit=s["time_limit"])
        rec = cert.to_json()
    except Exception as e:  # recorded, as a campaign does
        rec = {"agent": int(agent), "valuations": vals, "status": "error", "message": f"{type(e).__name__}: {e}"}
    rec["point"], rec["agent"], rec["valuations"] = int(point), int(agent), vals
    rec["wall_s"] = time.perf_counter() - t0
    return rec


def recertify(run_dir: Path, workers: int) -> dict:
    manifest = json.loads((run_dir / "run.json").read_text())
    src = run_dir / "results.jsonl.before"
    src = src if src.exists() else run_dir / "results.jsonl"  # the original records, on a second pass too
    old = [json.loads(line) for line in src.read_text().splitlines() if line.strip()]
    tmp = run_dir / "results.jsonl.recert"
    done = {}
    if tmp.exists():
        for line in tmp.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                break  # a torn last line
            done[(r["point"], r["agent"])] = r
    jobs = [(r["point"], r["agent"], r["valuations"]) for r in old if (r["point"], r["agent"]) not in done]
    ckpt = _ckpt_path(manifest["ckpt"])
    print(f"{run_dir}: {len(old)} pairs, {len(done)} already re-certified, checkpoint {ckpt}, "
          f"solver {manifest['solver']}", flush=True)
    with open(tmp, "a") as f:
        args = (ckpt, manifest["solver"], manifest.get("time_limit"))
        if workers > 1:
            ctx = mp.get_context("spawn")
            with ctx.Pool(workers, initializer=_init, initargs=args) as pool:
                for k, rec in enumerate(pool.imap_unordered(_one, jobs), 1):
                    f.write(json.dumps(rec) + "\n")
                    f.flush()
                    os.fsync(f.fileno())
                    done[(rec["point"], rec["agent"])] = rec
        else:
            _init(*args)
            for rec in map(_one, jobs):
                f.write(json.dumps(rec) + "\n")
                f.flush()
                os.fsync(f.fileno())
                done[(rec["point"], rec["agent"])] = rec
    new = [done[(r["point"], r["agent"])] for r in old]
    before = run_dir / "results.jsonl.before"
    if before.exists():  # a second pass: keep the first pass's original
        (run_dir / "results.jsonl").unlink()
    else:
        (run_dir / "results.jsonl").replace(before)
    with open(run_dir / "results.jsonl", "w") as f:
        for r in new:
            f.write(json.dumps(r) + "\n")
    tmp.unlink()
    t = lambda rs: sum((r.get("time_bounds_s") or 0) + (r.get("time_build_s") or 0) + (r.get("time_solve_s") or 0)
                       for r in rs) / max(len(rs), 1)
    out = {"dir": str(run_dir), "pairs": len(new), "before_s": t(old), "after_s": t(new)}
    print(f"{run_dir}: {out['pairs']} pairs, certifier time per pair {out['before_s']:.3f} s -> "
          f"{out['after_s']:.3f} s", flush=True)
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dirs", nargs="+")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    for d in args.dirs:
        p = Path(d)
        if not (p / "run.json").exists() or not (p / "results.jsonl").exists():
            print(f"error: {p} is not a run directory (run.json and results.jsonl)", file=sys.stderr)
            return 2
    for d in args.dirs:
        recertify(Path(d), args.workers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
