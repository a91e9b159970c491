"""Benchmark: certify the paper's reference networks and compare with their certified regrets.

For each network in ../shared/reference (or $JAXAUCTION_REFERENCE) and its first ``--points``
agent-0 points, runs :func:`certify.regret.certify_point` and prints per point the certified
regret, the paper's, their difference, the time in bounds / model building / solver, the
end-to-end wall time (PGD, truthful utility and replay included), the B&B nodes and the number of
MIPs (leaf boxes). A summary per network gives mean and p95 times, mean nodes and how many points
agree with the paper within 1e-4 (both ``regret_upper`` and ``regret_lower``).

Single-threaded: BLAS threads are pinned to 1 before numpy loads, solvers use ``--threads 1``.
One untimed warm-up point per network absorbs JAX compilation.

    python bench/certify_reference.py --points 20
    python bench/certify_reference.py --networks 2x2_sparsemax_linearpmt_distill_fast --split none
    python bench/certify_reference.py --solver scip --sparsemax sos1 --out /tmp/scip_sos1.json
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from certify.encoders import EncodeOptions  # noqa: E402
from certify.regret import CertifyOptions, certify_point  # noqa: E402
from jaxauction.checkpoints import load_mechanism  # noqa: E402

NETWORKS = ["1x2_sparsemax_linearpmt_distill_fast", "1x2_sparsemax_in_linsigpmt_scratch_fast",
            "2x2_sparsemax_linearpmt_distill_fast", "2x2_sparsemax_in_linsigpmt_scratch_fast"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--points", type=int, default=20)
    ap.add_argument("--networks", nargs="+", default=NETWORKS)
    ap.add_argument("--solver", default="mip", choices=["mip", "gurobi", "scip", "bab"])
    ap.add_argument("--split", default=None,
                    help="split_unstable threshold, or 'none' for one MIP per point (default: the library's)")
    ap.add_argument("--bounds", default="crown", choices=["crown", "lp", "ibp"])
    ap.add_argument("--sparsemax", default="bigm", choices=["bigm", "sos1"])
    ap.add_argument("--no-mip-start", action="store_true")
    ap.add_argument("--pgd-steps", type=int, default=1000)
    ap.add_argument("--time-limit", type=float, default=None)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--refdir", default=os.environ.get("JAXAUCTION_REFERENCE", str(REPO.parent / "shared" / "reference")))
    ap.add_argument("--out", default=None, help="write all certificates and summaries as JSON here")
    ap.add_argument("--quiet", action="store_true", help="summaries only")
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    split = CertifyOptions().split_unstable if a.split is None else (None if a.split == "none" else int(a.split))
    opts = CertifyOptions(bounds=a.bounds, split_unstable=split, encode=EncodeOptions(sparsemax=a.sparsemax))
    kw = dict(solver=a.solver, time_limit=a.time_limit, threads=a.threads, pgd_steps=a.pgd_steps,
              mip_start=not a.no_mip_start, options=opts)
    print(f"# options: {vars(a)}")
    out = {"args": vars(a), "networks": {}}
    for name in a.networks:
        params, spec, info = load_mechanism(Path(a.refdir) / f"{name}.npz")
        pts = info["json"]["results"][: a.points]
        certify_point(params, spec, np.array(pts[0]["truthful_input"]), 0, **kw)  # warm-up (JAX compile)
        rows, certs = [], []
        print(f"\n## {name}  ({spec.n_agents}x{spec.n_items}, hidden={spec.hidden}, payment={spec.payment})")
        if not a.quiet:
            print(f"{'pt':>3} {'status':>8} {'regret_up':>10} {'paper':>10} {'diff':>9} {'ok':>2} {'bounds':>7} "
                  f"{'build':>7} {'solve':>7} {'b+b+s':>7} {'wall':>7} {'nodes':>6} {'mips':>5} solver")
        for k, pt in enumerate(pts):
            t0 = time.perf_counter()
            c = certify_point(params, spec, np.array(pt["truthful_input"]), 0, **kw)
            wall = time.perf_counter() - t0
            ref = pt["certified_regret"]
            up = c.regret_upper if c.regret_upper is not None else float("nan")
            ok = abs(up - ref) < 1e-4 and abs(c.regret_lower - ref) < 1e-4
            core = c.time_bounds_s + c.time_build_s + c.time_solve_s
            rows.append((core, wall, c.nodes or 0, c.n_boxes, ok, c.time_bounds_s, c.time_build_s, c.time_solve_s))
            c.point = k
            certs.append({**c.to_json(), "paper_certified_regret": ref, "wall_s": wall})
            if not a.quiet:
                print(f"{k:>3} {c.status:>8} {up:>10.6f} {ref:>10.6f} {up - ref:>+9.1e} {'y' if ok else 'N':>2} "
                      f"{c.time_bounds_s:>7.3f} {c.time_build_s:>7.3f} {c.time_solve_s:>7.3f} {core:>7.3f} "
                      f"{wall:>7.3f} {c.nodes:>6} {c.n_boxes:>5} {c.solver}", flush=True)
        r = np.array(rows, dtype=float)
        paper = np.array([p["solve_time_s"] + p["setup_time_s"] for p in pts])
        summ = {"points": len(pts), "agree_1e-4": int(r[:, 4].sum()),
                "core_mean_s": float(r[:, 0].mean()), "core_p95_s": float(np.percentile(r[:, 0], 95)),
                "wall_mean_s": float(r[:, 1].mean()), "wall_p95_s": float(np.percentile(r[:, 1], 95)),
                "bounds_mean_s": float(r[:, 5].mean()), "build_mean_s": float(r[:, 6].mean()),
                "solve_mean_s": float(r[:, 7].mean()), "nodes_mean": float(r[:, 2].mean()),
                "mips_mean": float(r[:, 3].mean()), "paper_json_setup_plus_solve_mean_s": float(paper.mean())}
        print(f"summary {name}: agree {summ['agree_1e-4']}/{len(pts)}; bounds+build+solve mean "
              f"{summ['core_mean_s']:.3f} s, p95 {summ['core_p95_s']:.3f} s (bounds {summ['bounds_mean_s']:.3f}, "
              f"build {summ['build_mean_s']:.3f}, solve {summ['solve_mean_s']:.3f}); end-to-end mean "
              f"{summ['wall_mean_s']:.3f} s, p95 {summ['wall_p95_s']:.3f} s; nodes {summ['nodes_mean']:.0f}; "
              f"MIPs {summ['mips_mean']:.1f}; paper JSON (2020 hardware) {summ['paper_json_setup_plus_solve_mean_s']:.2f} s",
              flush=True)
        out["networks"][name] = {"summary": summ, "certificates": certs}
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1))
        print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
