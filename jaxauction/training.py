"""Training: RegretNet's augmented-Lagrangian loop with the paper's regularizers, resumable.

One training step on a batch of valuation profiles ``v`` (B, N, M):

1. Misreports ``b'`` (B, N, M): ``misreport_steps`` of projected gradient ascent of every agent's
   deviation utility ``u_i(b'_i, v_-i)`` over the prior's box (``misreport.pgd``), started at the
   truthful bids or, with ``warm_start``, at the misreports last found for the same profiles;
   with ``misreport_restarts = R``, also from R corner-biased random starts, keeping the best.
2. The loss, differentiated w.r.t. the parameters only (misreports are constants)::

       L = -rev + sum_i lam_i rgt_i + rho/2 sum_i rgt_i^2                 (lagrangian.loss)
             [+ sum_i mu_i ir_i + rho_ir/2 sum_i ir_i^2]                   (free payments)
             + stability_weight * mean_boxes sum_neurons -tanh(1 + l u)    (bounds.relu_stability_loss;
                                                                           "margin": relu_margin_loss)
             + distill_weight * (MSE(a, a_T) + MSE(p, p_T))                (teacher T)

   with ``rgt_i = mean_b max(0, u_i(b'_i, v_-i) - u_i(v))``, ``rev = mean_b sum_i p_i`` and
   ``ir_i = mean_b max(0, -u_i(v))^ir_power``. The truthful and the N deviation profiles of every
   sample go through the network as one (B + B*N)-row batch. The stability boxes let one agent's
   bids range over its whole support with the others fixed at the sampled profile.
3. An Adam step, then the multiplier schedule (``lagrangian.update``).

The step is one jitted function (``chex.assert_max_traces`` guards against retracing) that also
returns a finiteness flag; a NaN/inf in the loss or the new parameters stops training with
:class:`TrainingDiverged`, leaving the last good checkpoint untouched.

:func:`train_and_evaluate` writes a run directory (``config.json``, ``metrics.jsonl``,
``checkpoint/``, the resumable ``state.npz`` + ``state.json``, ``final_eval.json``; see
:mod:`jaxauction.rundir`). Batches are a deterministic function of ``(seed, step)`` (a fresh
permutation of the fixed training set per epoch), so ``resume`` reproduces the uninterrupted
trajectory exactly.
"""
from __future__ import annotations

import dataclasses
import functools
import json
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxauction import auction, bounds, checkpoints, evaluate, lagrangian, mechanism, misreport, pretrain, rundir
from jaxauction.config import Config, is_baseline_teacher, resolve_teacher, validate
from jaxauction.mechanism import MechanismSpec, Params
from jaxauction.priors import UniformPrior


class TrainingDiverged(RuntimeError):
    """The loss or the parameters became NaN/inf; the run directory keeps the last good checkpoint."""


class TrainState(NamedTuple):
    """Everything the training loop carries from one step to the next.

    Attributes:
      step: () int32, optimizer steps taken.
      params: mechanism parameter pytree.
      opt_state: optax Adam state.
      lagr: :class:`lagrangian.LagrangianState`.
      misreports: (num_examples, N, M) last misreports per training profile with ``warm_start``,
        else (0, N, M).
      rng: PRNG key (drives the stability subsample).
    """

    step: jax.Array
    params: Params
    opt_state: Any
    lagr: lagrangian.LagrangianState
    misreports: jax.Array
    rng: jax.Array


class Setup(NamedTuple):
    """Static pieces of a run derived from the config."""

    spec: MechanismSpec
    prior: UniformPrior
    low: np.ndarray  # (N, M) float32 support bounds (numpy: trace-time constants)
    high: np.ndarray  # (N, M)
    optimizer: optax.GradientTransformation
    lagr: lagrangian.Lagrangian


def make_setup(cfg: Config) -> Setup:
    spec, prior = cfg.spec(), cfg.prior()
    lo, hi = prior.bounds()
    sched = optax.cosine_decay_schedule(cfg.lr, max(cfg.steps, 1), alpha=cfg.lr_decay_to)
    lag = lagrangian.lagrangian(cfg.rho, cfg.rho_increment, cfg.rho_every, cfg.lagrange_every,
                                lambda0=cfg.lambda_init, mu0=cfg.mu_init, rho_ir0=cfg.rho_ir,
                                rho_ir_increment=cfg.rho_ir_increment, rho_ir_every=cfg.rho_ir_every,
                                ir_update_every=cfg.ir_every, budget=cfg.regret_budget)
    return Setup(spec, prior, lo, hi, optax.adam(sched), lag)


def _keys(seed: int) -> dict[str, jax.Array]:
    k = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"init": k[0], "data": k[1], "rng": k[2]}


def init_state(cfg: Config, setup: Setup, data: jax.Array, teacher: Optional[tuple] = None) -> TrainState:
    """Fresh parameters (Glorot; see ``Config.payment_init`` and ``Config.bias_init``; then
    ``distill_pretrain_steps`` of pure distillation, :mod:`jaxauction.pretrain`) or those of
    ``init_from``, Adam state, multipliers and truthful stored misreports. ``teacher``: the
    :func:`load_teacher` pair when the caller already holds it (else it is loaded here if needed)."""
    keys = _keys(cfg.seed)
    if cfg.init_from:
        params = initial_params(cfg, setup)
    else:
        params = mechanism.init(keys["init"], setup.spec)
        if cfg.bias_init == "uniform":  # PyTorch nn.Linear: b ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in))
            params = uniform_biases(jax.random.fold_in(keys["init"], 1), params)
        if cfg.payment_init == "nonneg":  # every payment logit starts >= 0: no agent starts dead at the clip
            params["pay"]["w"] = jnp.abs(params["pay"]["w"])
        if cfg.distill_pretrain_steps:
            params, _ = pretrain.pretrain(cfg, setup.spec, params, data,
                                          teacher if teacher is not None else load_teacher(cfg, setup))
    mis = jnp.array(data) if cfg.warm_start else jnp.zeros((0, cfg.n_agents, cfg.n_items), jnp.float32)
    return TrainState(jnp.zeros((), jnp.int32), params, setup.optimizer.init(params),
                      setup.lagr.init(cfg.n_agents), mis, keys["rng"])


def initial_params(cfg: Config, setup: Setup) -> Params:
    """The parameters of ``cfg.init_from``, checked to be this config's architecture and prior."""
    path = resolve_teacher(cfg.init_from)
    params, spec, info = checkpoints.load_mechanism(path)
    if spec != setup.spec:
        raise checkpoints.CheckpointError(f"init_from {path}: its architecture {spec} is not the config's {setup.spec}")
    _check_prior(f"init_from {path}", info, setup)
    return jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float32), params)


def _check_prior(what: str, info: dict, setup: Setup) -> None:
    from jaxauction.priors import from_dict
    lo, hi = from_dict(info.get("prior"), setup.spec.n_agents, setup.spec.n_items).bounds()
    if not (np.allclose(lo, setup.low) and np.allclose(hi, setup.high)):
        raise checkpoints.CheckpointError(f"{what} was trained on a different prior "
                                          f"(low {lo.tolist()}, high {hi.tolist()})")


def uniform_biases(key: jax.Array, params: Params) -> Params:
    """``params`` with every bias redrawn from U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (one key per layer)."""
    layers = mechanism.dense_layers(params)  # trunk (or both towers), alloc, pay
    keys = jax.random.split(key, len(layers))
    new = []
    for k, layer in zip(keys, layers):
        bound = 1.0 / np.sqrt(layer["w"].shape[0])
        new.append({**layer, "b": jax.random.uniform(k, layer["b"].shape, layer["b"].dtype, -bound, bound)})
    out, at = {**params, "alloc": new[-2], "pay": new[-1]}, 0
    for name in mechanism.tower_keys(params):
        out[name], at = new[at:at + len(params[name])], at + len(params[name])
    return out


def training_data(cfg: Config, setup: Setup) -> jax.Array:
    """The fixed training set (num_examples, N, M), a deterministic function of the seed."""
    return setup.prior.sample(_keys(cfg.seed)["data"], cfg.num_examples)


@functools.lru_cache(maxsize=2)
def _epoch_permutation(seed: int, epoch: int, num_examples: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)


def batch_indices(seed: int, step: int, num_examples: int, batch_size: int) -> np.ndarray:
    """Indices of the batch of ``step`` (0-based): slice ``step % per_epoch`` of a fresh permutation
    of the training set per epoch ``step // per_epoch`` (``per_epoch = num_examples // batch_size``)."""
    epoch, pos = divmod(int(step), num_examples // batch_size)
    return _epoch_permutation(seed, epoch, num_examples)[pos * batch_size:(pos + 1) * batch_size]


# ---- the loss ---------------------------------------------------------------------------------

class LossAux(NamedTuple):
    revenue: jax.Array  # ()
    regret: jax.Array  # (N,) mean regret per agent
    regret_max: jax.Array  # ()
    ir: jax.Array  # (N,) mean IR violation per agent, mean_b max(0, -u_bi)
    ir_term: jax.Array  # (N,) the penalized mean_b max(0, -u_bi)^ir_power (zeros without ir_penalty)
    stability: jax.Array  # ()
    distill: jax.Array  # ()


def outcomes(params: Params, spec: MechanismSpec, vals: jax.Array, mis: jax.Array):
    """Truthful outcomes and deviation utilities from ONE forward pass over B + B*N profiles.

    Returns ``(alloc (B,N,M), pay (B,N), truthful_util (B,N), deviation_util (B,N))``.
    """
    b, n, m = vals.shape
    prof = auction.misreport_profiles(vals, mis).reshape(b * n, n, m)
    a, p = mechanism.apply(params, jnp.concatenate([vals, prof], axis=0), spec)
    a_t, p_t = a[:b], p[:b]
    a_d = a[b:].reshape(b, n, n, m)
    p_d = p[b:].reshape(b, n, n)
    # deviator i's own row of its own deviation profile
    own_a = jnp.diagonal(a_d, axis1=1, axis2=2)  # (B, M, N)
    u_dev = jnp.einsum("bmn,bnm->bn", own_a, vals) - jnp.diagonal(p_d, axis1=1, axis2=2)
    return a_t, p_t, auction.utilities(a_t, p_t, vals), u_dev


def stability_boxes(vals: jax.Array, low: jax.Array, high: jax.Array) -> bounds.Interval:
    """(N, B, N, M) boxes: in box [i, b] agent i's bids span [low_i, high_i], others fixed at vals[b]."""
    n = vals.shape[1]
    low, high = jnp.asarray(low), jnp.asarray(high)
    return jax.vmap(lambda i: bounds.agent_box(vals, i, low, high))(jnp.arange(n))


def make_loss_fn(cfg: Config, setup: Setup) -> Callable:
    """``loss_fn(params, lagr, vals, mis, stab_vals, teacher_out) -> (L, LossAux)``."""
    spec = setup.spec

    def loss_fn(params, lagr, vals, mis, stab_vals, teacher_out):
        a, p, u_true, u_dev = outcomes(params, spec, vals, mis)
        rgt = jax.nn.relu(u_dev - u_true)
        rev = auction.revenue(p)
        irv = jax.nn.relu(-u_true)
        ir_term = jnp.mean(irv ** cfg.ir_power, axis=0) if cfg.ir_penalty else None
        total = lagrangian.loss(lagr, rev, jnp.mean(rgt, axis=0), ir_term, budget=cfg.regret_budget)
        ir_term = jnp.zeros_like(rev, shape=rgt.shape[1:]) if ir_term is None else ir_term
        stab = jnp.zeros(())
        if cfg.stability_weight > 0:
            stability = bounds.STABILITY_LOSSES[cfg.stability_loss]
            stab = stability(params, stability_boxes(stab_vals, setup.low, setup.high), spec)
            total = total + cfg.stability_weight * stab
        dist = jnp.zeros(())
        if teacher_out is not None:
            dist = pretrain.distill_mse(a, p, teacher_out)
            total = total + cfg.distill_weight * dist
        aux = LossAux(rev, jnp.mean(rgt, axis=0), jnp.max(rgt), jnp.mean(irv, axis=0), ir_term, stab, dist)
        return total, aux

    return loss_fn


# Fields that do not change the compiled train step (normalized away so runs share compilations).
_STEP_NEUTRAL = dict(name="", teacher="", init_from="", distill_pretrain_steps=0, log_every=1, eval_every=0,
                     eval_points=1, eval_misreport_steps=0, checkpoint_every=1, final_eval_points=1, final_eval_steps=0)


def make_train_step(cfg: Config, teacher_spec: Optional[MechanismSpec] = None, max_traces: int = 1) -> Callable:
    """The jitted ``step(state, data, idx, teacher_params) -> (state, metrics)`` for ``cfg``.

    ``data`` is the (num_examples, N, M) training set, ``idx`` the (B,) batch indices, and
    ``teacher_params`` the teacher's pytree (None without distillation; ``teacher_spec`` is its
    architecture). ``metrics`` holds device scalars/arrays, including ``finite`` (loss and new
    parameters all finite). The state argument is donated. Step functions are cached per
    step-relevant config, so repeated runs (and a resume) reuse the compilation; each is wrapped
    in ``chex.assert_max_traces(n=max_traces)``, so a retrace (e.g. a changed batch shape) raises.
    """
    key = dataclasses.replace(cfg, **{**_STEP_NEUTRAL, "teacher": "yes" if cfg.teacher else ""})
    return _build_train_step(key, teacher_spec, max_traces)


@functools.lru_cache(maxsize=8)
def _build_train_step(cfg: Config, teacher_spec: Optional[MechanismSpec], max_traces: int) -> Callable:
    step = train_step_function(cfg, teacher_spec)
    return jax.jit(chex.assert_max_traces(step, n=max_traces), donate_argnums=(0,))


def train_step_function(cfg: Config, teacher_spec: Optional[MechanismSpec] = None) -> Callable:
    """The plain (not jitted, not cached) ``step(state, data, idx, teacher_params) -> (state,
    metrics)`` that :func:`make_train_step` jits: for other transformations of the same step
    (``jaxauction.multirun`` vmaps it over runs). Continuous fields used only in arithmetic
    (``lr``, ``lr_decay_to``, ``rho_increment``, ``misreport_lr``...) may be traced values there."""
    setup = make_setup(cfg)
    spec = setup.spec
    loss_fn = make_loss_fn(cfg, setup)
    grad_fn = jax.grad(loss_fn, has_aux=True)
    n_stab = cfg.stability_points

    def step(state: TrainState, data: jax.Array, idx: jax.Array, teacher_params):
        vals = data[idx]
        chex.assert_shape(vals, (cfg.batch_size, cfg.n_agents, cfg.n_items))
        init = state.misreports[idx] if cfg.warm_start else vals
        frozen = jax.lax.stop_gradient(state.params)
        rng, sub = jax.random.split(state.rng)
        search = dict(steps=cfg.misreport_steps, lr=cfg.misreport_lr,
                      chunk=max(cfg.batch_size * (1 + cfg.misreport_restarts), misreport.DEFAULT_CHUNK))
        if cfg.misreport_restarts:  # the warm/truthful start is candidate 0, so it wins ties
            sub, k_restart = jax.random.split(sub)
            starts = misreport.restart_inits(k_restart, (cfg.misreport_restarts, *vals.shape), setup.low, setup.high)
            mis = misreport.pgd_restarts(frozen, spec, vals, jnp.concatenate([init[None], starts]),
                                         setup.low, setup.high, **search)
        else:
            mis = misreport.pgd(frozen, spec, vals, init, setup.low, setup.high, **search)
        mis = jax.lax.stop_gradient(mis)
        if 0 < n_stab < cfg.batch_size:
            stab_vals = vals[jax.random.choice(sub, cfg.batch_size, (n_stab,), replace=False)]
        else:
            stab_vals = vals
        teacher_out = None
        if teacher_params is not None and cfg.distill_weight > 0:
            teacher_out = jax.lax.stop_gradient(mechanism.apply(teacher_params, vals, teacher_spec))
        grads, aux = grad_fn(state.params, state.lagr, vals, mis, stab_vals, teacher_out)
        updates, opt_state = setup.optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        lagr = setup.lagr.update(state.lagr, aux.regret, aux.ir_term if cfg.ir_penalty else None)
        stored = state.misreports.at[idx].set(mis) if cfg.warm_start else state.misreports
        leaves = jax.tree_util.tree_leaves(params) + list(aux)
        finite = jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))
        new = TrainState(state.step + 1, params, opt_state, lagr, stored, rng)
        metrics = {"finite": finite, **aux._asdict(), "lam": state.lagr.lam, "rho": state.lagr.rho,
                   "mu": state.lagr.mu, "rho_ir": state.lagr.rho_ir}
        return new, metrics

    return step


# ---- evaluation ---------------------------------------------------------------------------------

FINAL_EVAL_SEED, PERIODIC_EVAL_SEED = 0, 1


def run_evaluation(cfg: Config, setup: Setup, params: Params, *, points: int, steps: int, seed: int) -> dict:
    """``evaluate.evaluate`` (revenue, PGD regret from truthful bids, IR) with the config's misreport lr.

    The final evaluation uses ``seed=FINAL_EVAL_SEED`` (0), the default of
    ``python -m jaxauction.evaluate``, so that command reproduces ``final_eval.json``.
    """
    return evaluate.evaluate(params, setup.spec, setup.prior, points=points, seed=seed, steps=steps,
                             lr=cfg.misreport_lr)


# ---- teacher ------------------------------------------------------------------------------------

def load_teacher(cfg: Config, setup: Setup) -> tuple[Optional[Params], Optional[MechanismSpec]]:
    """Load the distillation teacher and check it is for the same setting and prior. A baseline
    name (``"myerson"``, ``"bundle"``, ``"softmyerson"``) is built for the config's prior
    (``baselines.make``)."""
    if not cfg.teacher:
        return None, None
    if is_baseline_teacher(cfg.teacher):
        from jaxauction import baselines
        b = baselines.make(cfg.teacher, setup.prior)
        return jax.tree_util.tree_map(jnp.asarray, b.params), b.spec
    path = resolve_teacher(cfg.teacher)
    params, spec, info = checkpoints.load_mechanism(path)
    if (spec.n_agents, spec.n_items) != (cfg.n_agents, cfg.n_items):
        raise checkpoints.CheckpointError(
            f"teacher {path} is a {spec.n_agents}x{spec.n_items} mechanism, but the config is "
            f"{cfg.n_agents}x{cfg.n_items}")
    _check_prior(f"teacher {path}", info, setup)
    return jax.tree_util.tree_map(jnp.asarray, params), spec


# ---- the loop -------------------------------------------------------------------------------------

def train_and_evaluate(config: Config, workdir: str | Path, *, resume: bool = False, overwrite: bool = False,
                       progress: bool = True) -> TrainState:
    """Train the mechanism described by ``config`` in ``workdir`` and write the final evaluation.

    Args:
      config: a validated (or to-be-validated) :class:`Config`.
      workdir: run directory (created). An existing run is refused unless ``resume`` or ``overwrite``.
      resume: continue from ``workdir/state.npz`` (same trajectory as an uninterrupted run; only the
        fields in ``rundir.RESUME_MUTABLE``, e.g. ``steps``, may change). Without a saved state it starts fresh.
      overwrite: discard an existing run in ``workdir``.
      progress: show a tqdm progress bar.

    Returns:
      The final :class:`TrainState`.

    Raises:
      ConfigError: invalid config, or a resume with an incompatible config.
      CheckpointError: unreadable state/teacher, or a teacher for another setting.
      TrainingDiverged: NaN/inf in the loss or parameters (the last checkpoint is kept).
      FileExistsError: ``workdir`` holds a run and neither ``resume`` nor ``overwrite`` is set.
    """
    from tqdm.auto import tqdm

    cfg = validate(config)
    workdir = Path(workdir)
    setup = make_setup(cfg)
    teacher_params, teacher_spec = load_teacher(cfg, setup)
    resuming = rundir.prepare_workdir(workdir, cfg, resume=resume, overwrite=overwrite)

    data = training_data(cfg, setup)
    # a resumed run loads its parameters: the template needs no pretraining
    state = init_state(dataclasses.replace(cfg, distill_pretrain_steps=0) if resuming else cfg, setup, data,
                       (teacher_params, teacher_spec))
    elapsed = 0.0
    if resuming:
        state, elapsed = rundir.load_state(workdir, state)
        rundir.truncate_metrics(workdir / rundir.METRICS, int(state.step))
    rundir.write_config(workdir, cfg)

    step_fn = make_train_step(cfg, teacher_spec)
    per_epoch = cfg.num_examples // cfg.batch_size
    start = int(state.step)
    bar = tqdm(total=cfg.steps, initial=start, disable=not progress, dynamic_ncols=True, desc=cfg.name)
    t0 = time.perf_counter() - elapsed
    last_saved = start
    try:
        with open(workdir / rundir.METRICS, "a") as log:
            for s in range(start, cfg.steps):
                idx = batch_indices(cfg.seed, s, cfg.num_examples, cfg.batch_size)
                state, m = step_fn(state, data, jnp.asarray(idx), teacher_params)
                if not bool(m["finite"]):
                    raise TrainingDiverged(
                        f"non-finite loss or parameters at step {s + 1} (lr={cfg.lr}); training stopped. "
                        f"The last good checkpoint (step {last_saved}) is in {workdir / rundir.CHECKPOINT_DIR}"
                        + ("" if last_saved else " (none was saved yet)"))
                done = s + 1
                bar.update(1)
                if done % cfg.log_every == 0 or done == cfg.steps or (cfg.eval_every and done % cfg.eval_every == 0):
                    row = rundir.metrics_row(done, m, time.perf_counter() - t0, done / per_epoch)
                    if cfg.eval_every and (done % cfg.eval_every == 0 or done == cfg.steps):
                        row["eval"] = run_evaluation(cfg, setup, state.params, points=cfg.eval_points,
                                                     steps=cfg.eval_misreport_steps, seed=PERIODIC_EVAL_SEED)
                    log.write(json.dumps(row) + "\n")
                    log.flush()
                    bar.set_postfix({"rev": f"{row['revenue']:.4f}", "rgt": f"{row['regret_mean']:.2e}",
                                     "lam": f"{np.mean(row['lambda']):.2f}"}, refresh=False)
                if done % cfg.checkpoint_every == 0 or done == cfg.steps:
                    rundir.save_checkpoint(workdir, cfg, setup, state)
                    rundir.save_state(workdir, state, time.perf_counter() - t0, cfg)
                    last_saved = done
                if cfg.max_seconds and time.perf_counter() - t0 > cfg.max_seconds:
                    bar.write(f"{cfg.name}: training budget max_seconds={cfg.max_seconds:g} spent at step {done}")
                    break
    finally:
        bar.close()
    if int(state.step) > last_saved or not (workdir / rundir.CHECKPOINT_DIR).exists():
        rundir.save_checkpoint(workdir, cfg, setup, state)
        rundir.save_state(workdir, state, time.perf_counter() - t0, cfg)
    result = run_evaluation(cfg, setup, jax.device_get(state.params), points=cfg.final_eval_points,
                            steps=cfg.final_eval_steps, seed=FINAL_EVAL_SEED)
    result.update(step=int(state.step), train_seconds=round(time.perf_counter() - t0, 2), config=cfg.name)
    rundir.write_final_eval(workdir, result)
    return state
