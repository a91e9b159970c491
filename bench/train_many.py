"""Time per training step of R runs vmapped into one program (jaxauction.multirun) against one run.

    python bench/train_many.py [--config 1x2] [--runs 1,8] [--steps 20] [--chunk 5] [--set field=value ...] [--json]

For each R in ``--runs``: R seeds of ``--config`` (seeds 0..R-1, everything else equal), stacked
and advanced by ``multirun.program_for``'s jitted ``lax.scan`` of ``--chunk`` vmapped steps per
call. The first call (compilation + ``--chunk`` steps) is timed apart; then ``--steps`` steps
(rounded up to whole chunks), synced with ``block_until_ready``. Also the plain jitted step of
``train.py`` (``training.make_train_step``, one run, one step per call) as the reference. Reports
seconds per step, per run-step, and the speed-up of R vmapped runs over R plain runs one after the
other. Runs on JAX's default device (JAX_PLATFORMS=cpu forces the CPU). Training sets are
``num_examples`` profiles per run (``--set num_examples=...`` to shrink them).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import time

import jax
import jax.numpy as jnp


def _time_calls(call, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        jax.block_until_ready(call())
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="1x2")
    ap.add_argument("--runs", default="1,8", help="comma-separated numbers of vmapped runs (default 1,8)")
    ap.add_argument("--steps", type=int, default=20, help="timed steps per measurement (default 20)")
    ap.add_argument("--chunk", type=int, default=5, help="steps per program call (lax.scan length, default 5)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=VALUE")
    ap.add_argument("--json", action="store_true", help="also print one JSON line")
    args = ap.parse_args(argv)

    from jaxauction import multirun, training
    from jaxauction.config import validate
    from jaxauction.config_io import apply_overrides, load_config

    cfg = validate(apply_overrides(load_config(args.config), [*args.overrides, "teacher="]), check_files=False)
    calls = -(-args.steps // args.chunk)
    steps = calls * args.chunk
    rows = []

    # the reference: train.py's own jitted step, one run
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    state = training.init_state(cfg, setup, data)
    step_fn = training.make_train_step(cfg)
    at = [0]

    def plain():
        nonlocal state
        idx = jnp.asarray(training.batch_indices(cfg.seed, at[0], cfg.num_examples, cfg.batch_size))
        at[0] += 1
        state, m = step_fn(state, data, idx, None)
        return m["revenue"]

    compile_s = _time_calls(plain, 1)
    plain_s = _time_calls(plain, steps) / steps
    rows.append({"what": "plain train step (1 run)", "runs": 1, "first_call_s": compile_s, "step_s": plain_s,
                 "run_step_s": plain_s, "speedup": 1.0})

    for r in (int(x) for x in args.runs.split(",")):
        cfgs = [dataclasses.replace(cfg, seed=s) for s in range(r)]
        setups = [training.make_setup(c) for c in cfgs]
        data, states = multirun.init_runs(cfgs, setups)
        states, data = multirun.stack(states), jnp.stack(data)
        program, hp = multirun.program_for(cfgs)
        pos = [0]

        def many():
            nonlocal states
            idx = jnp.asarray(multirun.batch_plan(cfgs, pos[0], args.chunk))
            pos[0] += args.chunk
            states, m = program(states, data, idx, hp, None)
            return m["revenue"]

        first = _time_calls(many, 1)
        per_step = _time_calls(many, calls) / steps
        rows.append({"what": f"vmapped, {r} runs", "runs": r, "first_call_s": first, "step_s": per_step,
                     "run_step_s": per_step / r, "speedup": r * plain_s / per_step})

    print(f"{cfg.name}: batch {cfg.batch_size}, {cfg.misreport_steps} misreport steps x (1 + {cfg.misreport_restarts}) "
          f"starts, hidden {cfg.hidden}; device {jax.devices()[0].device_kind} ({jax.default_backend()}); "
          f"{steps} timed steps after the first call\n")
    print("| program | runs | first call (s) | s / step | s / run-step | vs R plain runs |")
    print("|---|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['what']} | {row['runs']} | {row['first_call_s']:.1f} | {row['step_s']:.4f} | "
              f"{row['run_step_s']:.4f} | {row['speedup']:.2f}x |")
    if args.json:
        print(json.dumps({"config": cfg.name, "backend": jax.default_backend(), "steps": steps, "rows": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
