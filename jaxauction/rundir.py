"""The files of a training run (``train.py`` writes them, ``training.train_and_evaluate`` drives it).

A run directory holds

* ``config.json``: the resolved :class:`~jaxauction.config.Config` (``Config.to_dict``);
* ``metrics.jsonl``: one JSON object per logged step (:func:`metrics_row`), with an ``"eval"``
  entry at periodic evaluations;
* ``checkpoint/``: the mechanism, via ``checkpoints.save_mechanism``: what certification and
  evaluation read (``checkpoints.load_mechanism`` accepts the run directory itself);
* ``state.npz`` + ``state.json``: everything needed to resume (parameters, Adam state,
  multipliers, stored misreports, rng, step; the step, elapsed seconds and config name);
* ``final_eval.json``: the final evaluation (``evaluate.evaluate`` plus step, train_seconds, config).

Every file is written atomically (``checkpoints.atomic_write_text`` / ``atomic_savez``), so a kill
leaves the previous version. :func:`prepare_workdir` guards an existing run (resume it, or
overwrite it explicitly) and :func:`reproduce_command` turns a run's ``config.json`` into the
``python train.py`` command its card (``checkpoints/NAME/CARD.md``) shows.
"""
from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxauction import checkpoints, lagrangian
from jaxauction.config import Config, ConfigError, is_baseline_teacher
from jaxauction.config_io import load_config

if TYPE_CHECKING:
    from jaxauction.training import Setup, TrainState

STATE_NPZ, STATE_JSON = "state.npz", "state.json"
CONFIG_JSON, METRICS = "config.json", "metrics.jsonl"
CHECKPOINT_DIR, FINAL_EVAL = "checkpoint", "final_eval.json"

# Fields that may differ between a run directory's config and the config passed with resume=True
# (a changed ``steps`` also stretches the lr schedule when lr_decay_to < 1).
RESUME_MUTABLE = frozenset({"name", "steps", "log_every", "eval_every", "eval_points", "eval_misreport_steps",
                            "checkpoint_every", "final_eval_points", "final_eval_steps",
                            "max_seconds"})


# ---- creating / resuming ------------------------------------------------------------------------

def prepare_workdir(workdir: Path, cfg: Config, *, resume: bool, overwrite: bool) -> bool:
    """Create/guard the run directory. Returns True when there is a state to resume from."""
    workdir = Path(workdir)
    has_run = any((workdir / f).exists() for f in (CONFIG_JSON, METRICS, STATE_NPZ, CHECKPOINT_DIR))
    if resume and (workdir / STATE_NPZ).exists():
        _check_resume_config(workdir, cfg)
        return True
    if has_run and not resume and not overwrite:
        raise FileExistsError(f"{workdir} already holds a run; pass resume=True (--resume) to continue it "
                              f"or overwrite=True (--overwrite) to start over")
    workdir.mkdir(parents=True, exist_ok=True)
    for f in (METRICS, STATE_NPZ, STATE_JSON, FINAL_EVAL):
        (workdir / f).unlink(missing_ok=True)
    shutil.rmtree(workdir / CHECKPOINT_DIR, ignore_errors=True)  # never leave another run's mechanism
    return False


def _check_resume_config(workdir: Path, cfg: Config) -> None:
    try:
        old = Config.from_dict(checkpoints._read_json(workdir / CONFIG_JSON))
    except (checkpoints.CheckpointError, ConfigError, TypeError) as e:
        raise ConfigError(f"resume: cannot read {workdir / CONFIG_JSON}: {e}") from None
    diff = [f.name for f in dataclasses.fields(Config)
            if f.name not in RESUME_MUTABLE and getattr(old, f.name) != getattr(cfg, f.name)]
    if diff:
        pairs = ", ".join(f"{k}: run has {getattr(old, k)!r}, config has {getattr(cfg, k)!r}" for k in diff)
        raise ConfigError(f"resume: {workdir} was trained with a different config ({pairs})")


def write_config(workdir: Path, cfg: Config) -> None:
    checkpoints.atomic_write_text(Path(workdir) / CONFIG_JSON, json.dumps(cfg.to_dict(), indent=1))


def write_final_eval(workdir: Path, result: dict) -> None:
    checkpoints.atomic_write_text(Path(workdir) / FINAL_EVAL, json.dumps(result, indent=1))


# ---- training state and mechanism ---------------------------------------------------------------

def save_state(workdir: Path, state: "TrainState", elapsed: float, cfg: Config) -> None:
    """Atomically write state.npz (all arrays) then state.json (step and bookkeeping)."""
    host = jax.device_get(state)
    arrays = checkpoints.flatten_tree({"params": host.params, "opt_state": host.opt_state,
                                       "lagr": host.lagr._asdict(), "misreports": host.misreports,
                                       "rng": host.rng, "step": host.step})
    checkpoints.atomic_savez(workdir / STATE_NPZ, arrays)
    checkpoints.atomic_write_text(workdir / STATE_JSON, json.dumps(
        {"step": int(host.step), "elapsed_s": elapsed, "config": cfg.name}, indent=1))


def load_state(workdir: Path, template: "TrainState") -> tuple["TrainState", float]:
    """Read state.npz into the structure of ``template`` (shapes must match the config)."""
    arrays = checkpoints._read_npz(workdir / STATE_NPZ)
    tmpl = {"params": template.params, "opt_state": template.opt_state, "lagr": template.lagr._asdict(),
            "misreports": template.misreports, "rng": template.rng, "step": template.step}
    t = checkpoints.unflatten_like(jax.device_get(tmpl), arrays, what=f"training state {workdir / STATE_NPZ}")
    meta = checkpoints._read_json(workdir / STATE_JSON) if (workdir / STATE_JSON).exists() else {}
    state = type(template)(jnp.asarray(t["step"]), jax.tree_util.tree_map(jnp.asarray, t["params"]),
                           jax.tree_util.tree_map(jnp.asarray, t["opt_state"]),
                           lagrangian.LagrangianState(**{k: jnp.asarray(v) for k, v in t["lagr"].items()}),
                           jnp.asarray(t["misreports"]), jnp.asarray(t["rng"]))
    return state, float(meta.get("elapsed_s", 0.0))


def save_checkpoint(workdir: Path, cfg: Config, setup: "Setup", state: "TrainState") -> None:
    params = jax.device_get(state.params)
    checkpoints.save_mechanism(workdir / CHECKPOINT_DIR, params, setup.spec, setup.prior.to_dict(),
                               meta={"step": int(state.step), "config": cfg.name})


# ---- metrics.jsonl ------------------------------------------------------------------------------

def truncate_metrics(path: Path, max_step: int) -> None:
    """Drop the lines after ``max_step`` (a resumed run re-logs them) and any line cut by a kill."""
    if not path.exists():
        return
    keep = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line).get("step", 0) <= max_step:
                keep.append(line)
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    checkpoints.atomic_write_text(path, "".join(l + "\n" for l in keep))


def metrics_row(step: int, m: dict, elapsed: float, epoch: float) -> dict:
    """One metrics.jsonl line from the train step's metrics ``m`` (device values)."""
    m = jax.device_get(m)
    regret = np.asarray(m["regret"])
    return {"step": step, "epoch": round(epoch, 4), "seconds": round(elapsed, 3),
            "revenue": float(m["revenue"]), "regret_mean": float(regret.mean()),
            "regret_max": float(m["regret_max"]), "regret": regret.tolist(),
            "lambda": np.asarray(m["lam"]).tolist(), "rho": float(m["rho"]),
            "ir_mean": float(np.mean(m["ir"])), "ir": np.asarray(m["ir"]).tolist(),
            "mu": np.asarray(m["mu"]).tolist(), "rho_ir": float(m["rho_ir"]),
            "reg_loss": float(m["stability"]), "distill_loss": float(m["distill"])}


# ---- cards --------------------------------------------------------------------------------------

def _fmt_value(v) -> str:
    return ",".join(str(x) for x in v) if isinstance(v, list) else str(v)


def reproduce_command(cfg: dict, steps_done: Optional[int] = None) -> str:
    """``python train.py --config NAME [--set field=value ...]`` giving the resolved ``cfg`` (a
    run's config.json): one ``--set`` per field where the run differs from today's
    ``configs/NAME.py`` (a teacher path becomes a placeholder, a baseline teacher's name stays: a path names the run directory the
    teacher was trained in). A wall-clock budget (``max_seconds``) that did not stop the run
    (``steps_done == steps``) is left out: on a slower machine it would stop the rerun early."""
    ref = load_config(cfg["name"]).to_dict()
    cfg = Config.from_dict(cfg).to_dict()  # a field added since the run takes its value then
    sets = []
    for k, v in cfg.items():
        if k == "name" or (k == "max_seconds" and steps_done is not None and steps_done >= cfg["steps"]):
            continue
        if k == "teacher" and not is_baseline_teacher(v):  # a baseline's name is not a path: keep it
            if v:
                sets.append("--set teacher=<teacher run>")
            continue
        if ref.get(k) != v:
            sets.append(f"--set {k}={_fmt_value(v)}")
    return " ".join([f"python train.py --config {cfg['name']}", *sets])
