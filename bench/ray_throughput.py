"""Benchmark: pairs per second of the local process pool against Ray actors, and Ray's per-task overhead.

Certifies agent 0 at the first ``--points`` profiles of a checkpoint (seed 0) with each executor of
:mod:`certify.campaign.executors`: in this process (serial), the local pool with ``--pool-workers``
processes, and Ray actors on a local Ray instance with each count of ``--ray-workers``; every
result is appended (flush + fsync) to a scratch results file as ``run_certification`` does. Then
the same with a no-op certifier (``--noop-pairs`` pairs), whose time per pair is the executor's
own overhead. Printed per executor: wall time from the first submission to the last result (worker
start-up, checkpoint loading and JAX compilation included), and the steady rate after each
worker's first pair (which carries the compilation: ``(n - W) / (t_n - t_W)``).

    python bench/ray_throughput.py --ckpt checkpoints/1x2_distill --points 40 --solver planar --rounds 2
    python bench/ray_throughput.py --ckpt checkpoints/2x2_distill --points 40 --solver planar \
        --ray-workers 2 --no-serial --noop-pairs 0 --rounds 2      # heavier pairs: pool vs 2 Ray workers
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from certify.campaign import executors, results  # noqa: E402
from certify.campaign.pair import Job, default_certify_fn  # noqa: E402
from certify.campaign.profiles import sample_profiles  # noqa: E402
from jaxauction import checkpoints  # noqa: E402


def noop_certify(params, spec, valuations, agent, **kw):
    """A certifier that does nothing (the executor's overhead alone)."""
    return {"agent": agent, "status": "error", "message": "no-op"}


def measure(name, workers, n, run) -> dict:
    """Run ``run(on_result)``; times of the results -> wall and steady pairs per second."""
    stamps = []
    with tempfile.TemporaryDirectory() as d:
        out = results.Appender(Path(d) / results.RESULTS)

        def on_result(rec):
            out.write(rec)
            stamps.append(time.perf_counter())

        t0 = time.perf_counter()
        try:
            run(on_result)
        finally:
            out.close()
    t = np.asarray(stamps) - t0
    assert len(t) == n, (name, len(t), n)
    w = min(workers, n - 1)
    steady = (n - w) / (t[-1] - t[w - 1]) if w >= 1 and t[-1] > t[w - 1] else float("nan")
    row = {"executor": name, "workers": workers, "pairs": n, "wall_s": float(t[-1]),
           "pairs_per_s_wall": n / float(t[-1]), "pairs_per_s_steady": float(steady)}
    print(f"  {name:>10} W={workers}: {n} pairs in {t[-1]:.2f} s ({row['pairs_per_s_wall']:.2f}/s), "
          f"steady {steady:.2f}/s", file=sys.stderr)
    return row


def campaign_rows(ckpt, params, spec, low, high, prof, solver, time_limit, pool_workers, ray_workers, fn,
                  rounds=1, serial=True):
    """Each executor in turn, ``rounds`` times (so a load that changes hits them alike)."""
    todo = [(p, 0) for p in range(len(prof))]
    n = len(todo)
    job = Job(params, spec, low, high, fn or default_certify_fn(), solver, time_limit, 1, {})
    ray_job = Job(params, spec, low, high, fn, solver, time_limit, 1, {})
    rows = []
    for _ in range(rounds):
        if serial:
            rows.append(measure("serial", 1, n, lambda cb: executors.run_serial(job, todo, prof, cb)))
        rows.append(measure("local pool", pool_workers, n, lambda cb: executors.run_local_pool(
            ckpt, todo, prof, pool_workers, fn, solver, time_limit, {}, cb)))
        for w in ray_workers:
            rows.append(measure("ray", w, n, lambda cb, w=w: executors.run_ray(ray_job, todo, prof, w, cb)))
    return rows


def table(rows, per_task: bool) -> str:
    head = "| executor | workers | pairs | wall s | pairs/s (wall) | pairs/s (steady) |"
    if per_task:
        head += " ms per pair (steady) |"
    lines = [head, "|" + " --- |" * (head.count("|") - 1)]
    for r in rows:
        line = (f"| {r['executor']} | {r['workers']} | {r['pairs']} | {r['wall_s']:.2f} | "
                f"{r['pairs_per_s_wall']:.2f} | {r['pairs_per_s_steady']:.2f} |")
        if per_task:
            line += f" {1000.0 / r['pairs_per_s_steady']:.2f} |"
        lines.append(line)
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ckpt", default="checkpoints/1x2_distill")
    ap.add_argument("--points", type=int, default=40, help="profiles (agent 0 of each): pairs per executor")
    ap.add_argument("--solver", default="planar")
    ap.add_argument("--time-limit", type=float, default=60.0)
    ap.add_argument("--pool-workers", type=int, default=2)
    ap.add_argument("--ray-workers", default="1,2,4", help="comma-separated Ray actor counts")
    ap.add_argument("--noop-pairs", type=int, default=200, help="pairs of the no-op run (0: skip)")
    ap.add_argument("--skip-real", action="store_true", help="only the no-op runs")
    ap.add_argument("--rounds", type=int, default=1, help="repeat the executors in turn (real certifier)")
    ap.add_argument("--no-serial", action="store_true", help="skip the in-process run")
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    import ray

    ray_workers = [int(w) for w in args.ray_workers.split(",") if w.strip()]
    params, spec, _, prior = checkpoints.load_with_prior(args.ckpt)
    low, high = (b.astype(np.float64) for b in prior.bounds())
    t = time.perf_counter()
    ray.init(num_cpus=max(ray_workers), include_dashboard=False, logging_level="ERROR")
    ray_init_s = time.perf_counter() - t
    print(f"local Ray instance ({max(ray_workers)} CPUs) started in {ray_init_s:.1f} s", file=sys.stderr)
    out = {"ckpt": args.ckpt, "solver": args.solver, "cpus": os.cpu_count(), "ray_init_s": ray_init_s,
           "ray_version": ray.__version__, "load_before": os.getloadavg()}
    try:
        if not args.skip_real:
            print(f"{args.ckpt}, {args.points} pairs, solver {args.solver}:", file=sys.stderr)
            out["real"] = campaign_rows(args.ckpt, params, spec, low, high, sample_profiles(prior, 0, args.points),
                                        args.solver, args.time_limit, args.pool_workers, ray_workers, None,
                                        rounds=args.rounds, serial=not args.no_serial)
        if args.noop_pairs:
            print(f"no-op certifier, {args.noop_pairs} pairs:", file=sys.stderr)
            out["noop"] = campaign_rows(args.ckpt, params, spec, low, high,
                                        sample_profiles(prior, 0, args.noop_pairs), args.solver, args.time_limit,
                                        args.pool_workers, ray_workers, noop_certify)
    finally:
        t = time.perf_counter()
        ray.shutdown()
        out["ray_shutdown_s"] = time.perf_counter() - t
        out["load_after"] = os.getloadavg()
    print(f"\n{os.cpu_count()} CPUs, Ray {ray.__version__} (local instance: start {ray_init_s:.1f} s, "
          f"stop {out['ray_shutdown_s']:.1f} s, not included below); load average before "
          f"{out['load_before'][0]:.1f}, after {out['load_after'][0]:.1f}")
    if "real" in out:
        print(f"\n{args.ckpt}, agent 0 of {args.points} profiles, solver {args.solver}:\n")
        print(table(out["real"], per_task=False))
    if "noop" in out:
        print(f"\nno-op certifier, {args.noop_pairs} pairs (the executor's own cost per pair):\n")
        print(table(out["noop"], per_task=True))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
