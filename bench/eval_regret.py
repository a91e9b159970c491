"""Time test-time regret evaluation: ``steps`` PGD steps on ``points`` profiles.

Usage::

    python bench/eval_regret.py                                   # fresh 2x2 paper-architecture net
    python bench/eval_regret.py --ckpt ../shared/reference/2x2_sparsemax_in_linsigpmt_scratch_fast.npz
    python bench/eval_regret.py --points 3000 --steps 1000 --repeats 2 --json

A fresh net is the paper's 2x2 architecture: 3 ReLU layers of 128, sparsemax allocation,
fractional (hard-sigmoid) payment, Glorot init with ``--seed``. The search program (the one
``misreport.pgd`` runs: SGD, best iterate, from the truthful bids) is compiled ahead of time
(``compile_s``: trace + lower + XLA compile), then run ``--repeats`` times (``run_s``: median wall
time; ``run_cpu_s``: median CPU time of this process over all threads, a check on how much of
the machine it got when other work shares it). Then the metrics of
:func:`jaxauction.evaluate.summarize` on the same profiles and misreports are printed.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", default=None, help="checkpoint dir or reference NAME.npz (default: fresh 2x2 net)")
    ap.add_argument("--points", type=int, default=3000)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--lr", type=float, default=0.02)
    ap.add_argument("--optimizer", default="sgd", choices=("sgd", "adam"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="timed runs of the compiled search")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    from jaxauction import checkpoints, evaluate, mechanism, misreport, priors

    if args.ckpt:
        try:
            params, spec, _, prior = checkpoints.load_with_prior(args.ckpt)
        except checkpoints.CheckpointError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        net = args.ckpt
    else:
        spec = mechanism.MechanismSpec(2, 2, hidden=(128, 128, 128), allocation="sparsemax", payment="fractional")
        params = mechanism.init(jax.random.PRNGKey(args.seed), spec)
        prior = priors.uniform(2, 2)
        net = "fresh 2x2 (3x128 ReLU, sparsemax, fractional)"

    low, high = prior.bounds()
    vals = prior.sample(jax.random.PRNGKey(args.seed), args.points)

    # Compile ahead of time (the program misreport.pgd runs), so compile and run are timed apart.
    low, high = jnp.asarray(low), jnp.asarray(high)
    lr = jnp.float32(args.lr)
    t = time.perf_counter()
    compiled = misreport._pgd_jit.lower(params, spec, vals, vals, low, high, lr, steps=args.steps,
                                        optimizer=args.optimizer, keep_best=True,
                                        chunk=misreport.DEFAULT_CHUNK).compile()
    compile_s = time.perf_counter() - t

    def search():
        return jax.block_until_ready(compiled(params, vals, vals, low, high, lr))

    runs, cpu = [], []
    for _ in range(max(1, args.repeats)):
        t, c = time.perf_counter(), time.process_time()
        mis = search()
        runs.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    run_s = statistics.median(runs)
    res = {"net": net, "n_agents": spec.n_agents, "n_items": spec.n_items, "points": args.points,
           "steps": args.steps, "lr": args.lr, "optimizer": args.optimizer,
           "compile_s": compile_s, "run_s": run_s, "runs_s": runs, "run_cpu_s": statistics.median(cpu),
           "device": str(jax.devices()[0]), "cpus": os.cpu_count(), "loadavg_1m": os.getloadavg()[0]}
    res.update(evaluate._to_python(evaluate.summarize(params, spec, vals, mis)))
    if args.json:
        print(json.dumps(res))
    else:
        print(evaluate.format_table(res, title="test-time regret evaluation"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
