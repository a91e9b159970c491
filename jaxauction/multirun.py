"""Many training runs at the price of one: R runs as one vmapped, jitted program (purejaxrl-style).

Runs that differ only in their seed and in the continuous hyperparameters :data:`VMAP_FIELDS`
(learning rate, the augmented Lagrangian's rho, initial multipliers...) train together: their
states (parameters, Adam state, multipliers, stored misreports, PRNG key), training sets and
batch indices are stacked on a leading run axis, and ``jax.vmap`` of the one training step,
``training.train_step_function`` (the step ``train.py`` jits; the same loss, misreport search
and updates), advances all R of them at once, ``lax.scan`` over a chunk of steps per call. A
hyperparameter that differs between the runs is a traced (R,) array inside that step, so the
program is compiled once for the whole set; every other field is static and must be the same.
Each run sees exactly its single run's data: the batch of step s is
``training.batch_indices(seed, s, ...)``, its state starts as ``training.init_state`` of its own
config, so run r's parameters match ``train.py --set seed=...`` up to float rounding
(tests/test_multirun.py checks it). On an accelerator one step of R small runs costs about what
one costs; on a CPU about R times (bench/train_many.py).

Every run writes ``train.py``'s run directory (:mod:`jaxauction.rundir`: ``config.json``,
``metrics.jsonl``, ``checkpoint/``, ``state.npz``, ``final_eval.json``), so ``certify.py --ckpt``,
``python -m jaxauction.evaluate`` and ``train.py --resume`` read it. The evaluations (periodic
and final) are :func:`evaluate_runs`: ``evaluate.evaluate``'s protocol vmapped over the runs'
parameters. A run whose loss or parameters become non-finite is reported as diverged (its last
saved checkpoint is kept) and the others go on. Time budgets (``max_seconds``) and periodic work
happen at chunk boundaries; ``train_seconds`` is the group's wall time.

Command line: the ``vmap`` executor of the sweeps (``jaxauction.sweep``),
``python sweep.py SWEEP_FILE --executor vmap``: the sweep file describes the set, its runs are
grouped by :func:`group_key` (one program per group) and ``OUT/summary.md`` tabulates revenue and
PGD regret per run with mean ± std over seeds. A group resumes from its runs' ``state.npz`` when
all of them hold one at the same step, else it starts afresh.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import platform
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxauction import evaluate, misreport, rundir, training
from jaxauction.config import Config, validate
from jaxauction.mechanism import MechanismSpec

# Config fields that may differ between the runs of one program (traced (R,) float32 arrays in the
# step: each is used only in arithmetic there, or only in the initial state).
VMAP_FIELDS = ("lr", "lr_decay_to", "lambda_init", "rho", "rho_increment", "mu_init", "rho_ir",
               "rho_ir_increment", "misreport_lr", "regret_budget")
_DEFAULT = Config()


def group_key(cfg: Config) -> Config:
    """What runs of one program share: ``cfg`` with its seed and :data:`VMAP_FIELDS` set to defaults."""
    return dataclasses.replace(cfg, seed=_DEFAULT.seed, **{f: getattr(_DEFAULT, f) for f in VMAP_FIELDS})


def group_runs(cfgs: Sequence[Config]) -> list[list[int]]:
    """Indices of ``cfgs`` grouped by :func:`group_key`, in order of first appearance."""
    groups: dict[Config, list[int]] = {}
    for i, c in enumerate(cfgs):
        groups.setdefault(group_key(c), []).append(i)
    return list(groups.values())


def varying_fields(cfgs: Sequence[Config]) -> tuple[str, ...]:
    """The :data:`VMAP_FIELDS` whose values differ among ``cfgs`` (traced in the program)."""
    return tuple(f for f in VMAP_FIELDS if len({getattr(c, f) for c in cfgs}) > 1)


def stack(trees: Sequence) -> object:
    """Stack pytrees of the same structure on a new leading axis."""
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *trees)


def unstack(tree, r: int) -> object:
    """Run ``r``'s slice of a stacked pytree."""
    return jax.tree_util.tree_map(lambda x: x[r], tree)


@functools.lru_cache(maxsize=4)
def _program(cfg: Config, varying: tuple[str, ...], teacher_spec: Optional[MechanismSpec]) -> Callable:
    """Jitted ``(states, data, idx (K, R, B), hp, teacher_params) -> (states, metrics (K, R, ...))``."""

    def one(state, data, idx, hp, teacher_params):
        step = training.train_step_function(dataclasses.replace(cfg, **hp), teacher_spec)
        return step(state, data, idx, teacher_params)

    vstep = jax.vmap(one, in_axes=(0, 0, 0, 0, None))

    def run(states, data, idx, hp, teacher_params):
        return jax.lax.scan(lambda st, ix: vstep(st, data, ix, hp, teacher_params), states, idx)

    return jax.jit(run, donate_argnums=(0,))


@functools.lru_cache(maxsize=4)
def _eval_program(spec: MechanismSpec, prior, steps: int) -> Callable:
    low, high = prior.bounds()

    def one(params, vals, lr):  # evaluate.evaluate's search (from the truthful bids) and metrics, for one run
        mis, _ = misreport.regret_pgd(params, spec, vals, low, high, steps=steps, lr=lr)
        return evaluate.summarize(params, spec, vals, mis)

    return jax.jit(jax.vmap(one, in_axes=(0, None, 0)))


def evaluate_runs(params, spec: MechanismSpec, prior, *, points: int, seed: int, steps: int, lr) -> list[dict]:
    """``evaluate.evaluate(params_r, spec, prior, points=..., seed=..., steps=..., lr=lr_r)`` for
    every run r of the stacked ``params`` (leading axis R) as one program; ``lr``: a float or (R,).
    Returns R dicts with ``evaluate.METRICS`` and the protocol's fields (``seconds``: the whole call's)."""
    r = jax.tree_util.tree_leaves(params)[0].shape[0]
    lr = np.broadcast_to(np.asarray(lr, np.float32), (r,))
    t0 = time.perf_counter()
    vals = prior.sample(jax.random.PRNGKey(seed), points)
    m = jax.device_get(_eval_program(spec, prior, int(steps))(params, vals, jnp.asarray(lr)))
    secs = time.perf_counter() - t0
    out = []
    for k in range(r):
        res = {name: (np.asarray(m[name][k]).tolist() if np.ndim(m[name][k]) else float(m[name][k]))
               for name in evaluate.METRICS}
        res.update(n_agents=spec.n_agents, n_items=spec.n_items, points=int(points), seed=int(seed), steps=int(steps),
                   lr=float(lr[k]), optimizer="sgd", restarts=0, seconds=secs)
        out.append(res)
    return out


def _chunks(start: int, cfg: Config) -> list[int]:
    """Chunk lengths from ``start`` to ``cfg.steps``: every logging, evaluation and checkpoint
    step ends a chunk (chunks of the gcd of their periods; at most 3 distinct lengths, 3 compiles)."""
    period = math.gcd(cfg.log_every, cfg.checkpoint_every, cfg.eval_every or cfg.log_every)
    out, s = [], start
    while s < cfg.steps:
        k = min(period - s % period, cfg.steps - s)
        out.append(k)
        s += k
    return out


def init_runs(cfgs: Sequence[Config], setups: Sequence[training.Setup], teacher: Optional[tuple] = None) -> tuple[list, list]:
    """Per run, its training set and fresh ``training.init_state`` (unstacked lists); ``teacher``:
    the group's ``training.load_teacher`` pair, for distillation pretraining."""
    data = [training.training_data(c, s) for c, s in zip(cfgs, setups)]
    return data, [training.init_state(c, s, d, teacher) for c, s, d in zip(cfgs, setups, data)]


def program_for(cfgs: Sequence[Config], teacher_spec: Optional[MechanismSpec] = None) -> tuple[Callable, dict]:
    """The jitted ``program(states, data, idx, hp, teacher_params) -> (states, metrics)`` of the
    runs ``cfgs`` (one :func:`group_key`; ``states``/``data`` stacked on a leading run axis, ``idx``
    (K, R, B) from :func:`batch_plan`, ``metrics`` leaves (K, R, ...)), and its ``hp``: the
    :func:`varying_fields` as (R,) float32 arrays. ``states`` is donated."""
    varying = varying_fields(cfgs)
    hp = {f: jnp.asarray([getattr(c, f) for c in cfgs], jnp.float32) for f in varying}
    static = dataclasses.replace(cfgs[0], seed=0, **{f: getattr(_DEFAULT, f) for f in varying})  # never read: traced
    return _program(static, varying, teacher_spec), hp


def batch_plan(cfgs: Sequence[Config], start: int, k: int) -> np.ndarray:
    """(K, R, B) int32 batch indices of steps ``start .. start + k - 1`` of every run (``training.batch_indices``)."""
    idx = np.stack([[training.batch_indices(c.seed, start + j, c.num_examples, c.batch_size) for c in cfgs]
                    for j in range(k)])
    chex.assert_shape(idx, (k, len(cfgs), cfgs[0].batch_size))
    return idx


def train_group(cfgs: Sequence[Config], workdirs: Sequence[Path], *, resume: bool = True, overwrite: bool = False,
                log: Callable[[str], None] = lambda m: None) -> list[dict]:
    """Train the runs ``cfgs`` (one :func:`group_key`) into ``workdirs`` as one vmapped program.

    ``resume``/``overwrite``: as ``training.train_and_evaluate``, per run directory (a group
    resumes only when all its runs hold a state at the same step). Returns one result per run:
    ``{"name", "ok", "error", "seconds", "backend", "host", "step"}`` (``error``: why it failed,
    e.g. ``"TrainingDiverged: ..."``). Raises ``ConfigError``/``CheckpointError``/``FileExistsError``
    for the whole group (bad configs, teacher, existing runs).
    """
    cfgs = [validate(c) for c in cfgs]
    if not cfgs or len(cfgs) != len(workdirs):
        raise ValueError(f"train_group needs one workdir per config, got {len(cfgs)} configs, {len(workdirs)} dirs")
    if len({group_key(c) for c in cfgs}) != 1:
        raise ValueError("train_group: the configs differ in more than seed and " + ", ".join(VMAP_FIELDS))
    t_start = time.perf_counter()
    base, varying, workdirs = cfgs[0], varying_fields(cfgs), [Path(w) for w in workdirs]
    setups = [training.make_setup(c) for c in cfgs]
    teacher_params, teacher_spec = training.load_teacher(base, setups[0])
    resumable = [rundir.prepare_workdir(w, c, resume=resume, overwrite=overwrite) for w, c in zip(workdirs, cfgs)]
    data, states = init_runs(cfgs, setups, (teacher_params, teacher_spec))
    elapsed, start = 0.0, 0
    if all(resumable):
        loaded = [rundir.load_state(w, s) for w, s in zip(workdirs, states)]
        if len({int(s.step) for s, _ in loaded}) == 1:
            states, elapsed = [s for s, _ in loaded], max(e for _, e in loaded)
            start = int(states[0].step)
    if start == 0 and any(resumable):
        for w, c in zip(workdirs, cfgs):  # not all at one step: the whole group starts afresh
            rundir.prepare_workdir(w, c, resume=False, overwrite=True)
    for w, c in zip(workdirs, cfgs):
        rundir.truncate_metrics(w / rundir.METRICS, start)
        rundir.write_config(w, c)
    log(f"multirun: {len(cfgs)} runs of {base.name} in one program (varying: {', '.join(varying) or 'seed only'}); "
        + (f"resuming at step {start}" if start else "from step 0"))

    states, data = stack(states), jnp.stack(data)
    program, hp = program_for(cfgs, teacher_spec)
    spec, per_epoch, n = setups[0].spec, base.num_examples // base.batch_size, len(cfgs)
    diverged: dict[int, int] = {}
    t0 = time.perf_counter() - elapsed
    s = start
    for k in _chunks(start, base):
        states, metrics = program(states, data, jnp.asarray(batch_plan(cfgs, s, k)), hp, teacher_params)
        finite = np.asarray(metrics["finite"])  # (K, R)
        for r in range(n):
            if r not in diverged and not finite[:, r].all():
                diverged[r] = s + int(np.argmin(finite[:, r])) + 1
        s += k
        last = jax.tree_util.tree_map(lambda x: x[-1], metrics)
        wall = time.perf_counter() - t0
        evals = None
        if base.eval_every and (s % base.eval_every == 0 or s == base.steps):
            evals = evaluate_runs(states.params, spec, setups[0].prior, points=base.eval_points,
                                  steps=base.eval_misreport_steps, seed=training.PERIODIC_EVAL_SEED,
                                  lr=[c.misreport_lr for c in cfgs])
        save = s % base.checkpoint_every == 0 or s == base.steps
        for r in range(n):
            if r in diverged:
                continue
            if s % base.log_every == 0 or s == base.steps or evals is not None:
                row = rundir.metrics_row(s, unstack(last, r), wall, s / per_epoch)
                if evals is not None:
                    row["eval"] = evals[r]
                with open(workdirs[r] / rundir.METRICS, "a") as f:
                    f.write(json.dumps(row) + "\n")
            if save:
                st = unstack(states, r)
                rundir.save_checkpoint(workdirs[r], cfgs[r], setups[r], st)
                rundir.save_state(workdirs[r], st, wall, cfgs[r])
        if base.max_seconds and time.perf_counter() - t0 > base.max_seconds:
            log(f"multirun: training budget max_seconds={base.max_seconds:g} spent at step {s}")
            break
    wall = time.perf_counter() - t0
    ok = [r for r in range(n) if r not in diverged]
    for r in ok:
        if (s % base.checkpoint_every and s != base.steps) or not (workdirs[r] / rundir.CHECKPOINT_DIR).exists():
            st = unstack(states, r)
            rundir.save_checkpoint(workdirs[r], cfgs[r], setups[r], st)
            rundir.save_state(workdirs[r], st, wall, cfgs[r])
    if ok:
        final = evaluate_runs(unstack_many(states.params, ok), spec, setups[0].prior, points=base.final_eval_points,
                              steps=base.final_eval_steps, seed=training.FINAL_EVAL_SEED,
                              lr=[cfgs[r].misreport_lr for r in ok])
        for r, res in zip(ok, final):
            res.update(step=s, train_seconds=round(wall, 2), config=cfgs[r].name)
            rundir.write_final_eval(workdirs[r], res)
    secs = round(time.perf_counter() - t_start, 2)
    out = []
    for r, w in enumerate(workdirs):
        err = None
        if r in diverged:
            saved = (w / rundir.CHECKPOINT_DIR).exists()
            err = (f"TrainingDiverged: non-finite loss or parameters at step {diverged[r]} (lr={cfgs[r].lr}); "
                   + (f"the last good checkpoint is in {w / rundir.CHECKPOINT_DIR}" if saved else "no checkpoint was saved"))
        out.append({"name": w.name, "ok": err is None, "error": err, "seconds": secs, "backend": jax.default_backend(),
                    "host": platform.node(), "step": s})
    return out


def unstack_many(tree, rows: Sequence[int]):
    """The runs ``rows`` of a stacked pytree, still stacked."""
    sel = jnp.asarray(list(rows))
    return jax.tree_util.tree_map(lambda x: x[sel], tree)


def run_vmap(todo, out: Path, on_result: Callable[[dict], None], log: Callable[[str], None] = lambda m: None) -> None:
    """The sweeps' ``vmap`` executor: the runs ``todo`` (``sweep.Run``) grouped by :func:`group_key`,
    each group trained by :func:`train_group` into ``OUT/NAME`` (resuming), here, on JAX's default
    device. A group that fails as a whole (a config or teacher error) reports each of its runs failed."""
    todo = list(todo)
    for idx in group_runs([r.cfg for r in todo]):
        runs = [todo[i] for i in idx]
        try:
            results = train_group([r.cfg for r in runs], [Path(out) / r.name for r in runs], resume=True, log=log)
        except Exception as e:  # noqa: BLE001 -- one group's failure is reported, the sweep goes on
            from jaxauction.sweep.executors import EXPECTED_FAILURES

            msg = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
            extra = {} if type(e).__name__ in EXPECTED_FAILURES else {"traceback": traceback.format_exc()}
            results = [{"name": r.name, "ok": False, "error": msg, "seconds": None, **extra} for r in runs]
        for res in results:
            on_result(res)
