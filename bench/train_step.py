"""Throughput of one training step (misreport PGD + loss gradient + Adam + multipliers).

Default: the paper's 2x2 setting (configs/2x2.py at batch 20000: 25 PGD steps from one start
(``misreport_restarts=0``, as the paper; pass ``--set misreport_restarts=2`` for our default), 3 ReLU
layers of 128, sparsemax, fractional payment, ReLU-stability regularizer on). Compile time is measured
separately (first call); then ``--warmup`` untimed steps and ``--steps`` timed ones, each synced
with ``block_until_ready``. Runs on whatever device JAX picks (set JAX_PLATFORMS to force one).

    python bench/train_step.py [--config 2x2] [--batch 20000] [--steps 5] [--warmup 1] [--set field=value ...]

Reference: the paper's PyTorch code takes 4.3 s/step for this setting on the project's 2-core CPU.
"""
from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="2x2")
    ap.add_argument("--batch", type=int, default=20000, help="batch size (default: the paper's 20000)")
    ap.add_argument("--steps", type=int, default=5, help="timed steps")
    ap.add_argument("--warmup", type=int, default=1, help="untimed steps after compilation")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args = ap.parse_args(argv)

    from jaxauction import training
    from jaxauction.config import validate
    from jaxauction.config_io import apply_overrides, load_config

    cfg = apply_overrides(load_config(args.config), [f"batch_size={args.batch}", "misreport_restarts=0",
                                                     *args.overrides])
    num = max(cfg.num_examples, cfg.batch_size * (args.steps + args.warmup + 1))
    cfg = validate(apply_overrides(cfg, [f"num_examples={num}", "teacher="]), check_files=False)
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    state = training.init_state(cfg, setup, data)
    step_fn = training.make_train_step(cfg)

    def idx(s):
        return jnp.asarray(training.batch_indices(cfg.seed, s, cfg.num_examples, cfg.batch_size))

    jax.block_until_ready((data, state))
    t = time.perf_counter()
    state, m = step_fn(state, data, idx(0), None)
    jax.block_until_ready((state, m))
    compile_s = time.perf_counter() - t
    for s in range(1, 1 + args.warmup):
        state, m = step_fn(state, data, idx(s), None)
    jax.block_until_ready((state, m))
    times = []
    for s in range(1 + args.warmup, 1 + args.warmup + args.steps):
        t = time.perf_counter()
        state, m = step_fn(state, data, idx(s), None)
        jax.block_until_ready((state, m))
        times.append(time.perf_counter() - t)
    mean = sum(times) / len(times)
    dev = jax.devices()[0]
    res = {"config": cfg.name, "setting": f"{cfg.n_agents}x{cfg.n_items}", "hidden": list(cfg.hidden),
           "allocation": cfg.allocation, "payment": cfg.payment, "batch": cfg.batch_size,
           "misreport_steps": cfg.misreport_steps, "stability_weight": cfg.stability_weight,
           "warm_start": cfg.warm_start, "device": f"{dev.platform}:{getattr(dev, 'device_kind', '')}",
           "compile_plus_first_step_s": round(compile_s, 3), "s_per_step": round(mean, 4),
           "s_per_step_min": round(min(times), 4), "steps_per_s": round(1 / mean, 3),
           "profiles_per_s": round(cfg.batch_size / mean, 1), "timed_steps": len(times),
           "finite": bool(m["finite"])}
    print(f"{res['setting']} hidden={cfg.hidden} {cfg.allocation}/{cfg.payment} batch={cfg.batch_size} "
          f"pgd={cfg.misreport_steps} on {res['device']}: compile+first step {compile_s:.2f} s; "
          f"{mean:.4f} s/step (min {min(times):.4f}) = {1 / mean:.3f} steps/s = {cfg.batch_size / mean:,.0f} profiles/s")
    if args.json:
        print(json.dumps(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
