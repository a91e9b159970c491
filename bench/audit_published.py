"""The audit: certify published RegretNets (and our softmax teachers) with ``--solver bab``.

For each network: revenue (mean total payment, 20000 prior samples, ``mechanism.apply``), the PGD
regret its own protocol reports (one uniform random start, 1000 Adam steps, lr 0.1: RegretNet's
and optimaler's test-time attack), our strongest attack (the larger of 16-restart PGD and the
certified lower bound, itself a replayed misreport), and the certificates of every agent at the
first P profiles of certify's sampler (seed 0): the certified lower regret, the proven upper
bound on the exact function of the weights (``regret_upper_exact``) and the float32 claim
(``regret_upper``), how many pairs were proven, and seconds per pair. Each network's
certificates are a normal certify.py run directory (``OUT/NAME/results.jsonl``: resumable); the
table is ``OUT/summary.md`` and ``OUT/summary.json``.

    python bench/audit_published.py --out results/audit                    # all ten + the teachers
    python bench/audit_published.py --out /tmp/a --nets regretnet_1x2_seed_0 --points 5
"""
from __future__ import annotations

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import jax  # noqa: E402

from certify import campaign  # noqa: E402
from certify.campaign import results as cres  # noqa: E402
from jaxauction import checkpoints, mechanism, misreport  # noqa: E402

OPTIMALER = REPO.parent / "shared" / "optimaler"
TEACHERS = ["1x2_teacher", "2x2_teacher", "2x3_teacher", "3x2_teacher", "3x3_teacher", "3x10_teacher"]
# profiles per setting (the issue: >= 100 for 1x2 and 2x2, 50 for 2x3, 20 for 2x5 and 3x10)
POINTS = {(1, 2): 100, (2, 2): 100, (2, 3): 50, (3, 2): 50, (3, 3): 20, (2, 5): 20, (3, 10): 20}


def nets(selected):
    out = [(p.stem, p) for p in sorted(OPTIMALER.glob("regretnet_*.npz"))]
    out += [(t, REPO / "checkpoints" / t) for t in TEACHERS if (REPO / "checkpoints" / t).exists()]
    return [(n, p) for n, p in out if not selected or n in selected]


def attacks(params, spec, prior, profiles, seed=0):
    """Per (profile, agent): the own-protocol PGD regret and 16-restart PGD regret (float32)."""
    low, high = prior.bounds()
    vals = np.asarray(profiles, np.float32)
    key = jax.random.PRNGKey(seed)
    _, own = misreport.regret_pgd(params, spec, vals, low, high, steps=1000, lr=0.1, optimizer="adam", key=key)
    _, strong = misreport.regret_pgd(params, spec, vals, low, high, steps=1000, lr=0.02, optimizer="adam",
                                     restarts=16, key=jax.random.fold_in(key, 1))
    return np.asarray(own, np.float64), np.asarray(strong, np.float64)


def revenue(params, spec, prior, n=20000, seed=1):
    v = prior.sample(jax.random.PRNGKey(seed), n)
    _, p = jax.jit(mechanism.apply, static_argnums=2)(params, v, spec)
    return float(np.mean(np.sum(np.asarray(p, np.float64), axis=1)))


def audit_one(name, path, out, points, time_limit, workers):
    params, spec, info, prior = checkpoints.load_with_prior(path)
    p = points or POINTS.get((spec.n_agents, spec.n_items), 20)
    run_dir = out / name
    t0 = time.perf_counter()
    campaign.run_certification(str(path), run_dir, points=p, agents="all", seed=0, time_limit=time_limit,
                               solver="bab", workers=workers, progress=False)
    wall = time.perf_counter() - t0
    recs = cres.latest_by_pair(cres.read_results(run_dir / cres.RESULTS))
    prof = np.asarray([recs[(k, 0)]["valuations"] for k in range(p)])
    own, strong = attacks(params, spec, prior, prof)
    rows = [recs[(k, a)] for k in range(p) for a in range(spec.n_agents)]
    lower = np.array([r["regret_lower"] for r in rows])
    up_x = np.array([np.nan if r["regret_upper_exact"] is None else r["regret_upper_exact"] for r in rows])
    up_32 = np.array([np.nan if r["regret_upper"] is None else r["regret_upper"] for r in rows])
    strongest = np.maximum(strong.reshape(-1), lower)
    secs = np.array([r["time_bounds_s"] + r["time_solve_s"] for r in rows])
    proven = sum(r["status"] == "optimal" for r in rows)
    return {"net": name, "setting": f"{spec.n_agents}x{spec.n_items}", "arch": f"{spec.activation} {spec.towers}, "
            f"{spec.allocation}, {spec.payment}", "revenue": revenue(params, spec, prior), "profiles": p,
            "pairs": len(rows), "pgd_own_protocol": float(own.mean()), "strongest_attack": float(strongest.mean()),
            "certified_lower": float(lower.mean()), "upper_exact": float(np.nanmean(up_x)),
            "upper_exact_max": float(np.nanmax(up_x)), "upper_float32": float(np.nanmean(up_32)),
            "proven": int(proven), "statuses": {s: sum(r["status"] == s for r in rows) for s in
                                                ("optimal", "gap_open", "time_limit", "error")},
            "seconds_per_pair": float(secs.mean()), "wall_s": wall, "time_limit": time_limit}


def table(rows) -> str:
    head = ("| net | setting | revenue | PGD regret (own protocol) | strongest attack | certified lower | "
            "certified upper (exact) mean / max | certified upper (float32) | proven | s per pair |")
    lines = [head, "| " + " | ".join(["---"] * 10) + " |"]
    for r in rows:
        lines.append(f"| {r['net']} | {r['setting']} | {r['revenue']:.4f} | {r['pgd_own_protocol']:.5f} | "
                     f"{r['strongest_attack']:.5f} | {r['certified_lower']:.5f} | {r['upper_exact']:.5f} / "
                     f"{r['upper_exact_max']:.5f} | {r['upper_float32']:.4f} | {r['proven']}/{r['pairs']} | "
                     f"{r['seconds_per_pair']:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--nets", default="", help="comma-separated names (default: all ten and the teachers)")
    ap.add_argument("--points", type=int, default=0, help="profiles per net (default: by setting, POINTS)")
    ap.add_argument("--time-limit", type=float, default=60.0, help="seconds per pair (default 60)")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    selected = [n for n in args.nets.split(",") if n]
    todo = nets(selected)
    if not todo:
        print(f"audit_published.py: no networks found (looked in {OPTIMALER} and checkpoints/)", file=sys.stderr)
        return 2
    summary = out / "summary.json"
    rows = {r["net"]: r for r in (json.loads(summary.read_text()) if summary.exists() else [])}
    for name, path in todo:
        print(f"{name} ...", flush=True)
        rows[name] = audit_one(name, path, out, args.points, args.time_limit, args.workers)
        ordered = sorted(rows.values(), key=lambda r: (r["net"].startswith("regretnet") is False, r["net"]))
        checkpoints.atomic_write_text(summary, json.dumps(ordered, indent=1))
        checkpoints.atomic_write_text(out / "summary.md", table(ordered))
        print(table([rows[name]]).splitlines()[-1], flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
