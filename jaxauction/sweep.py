"""Training sweeps: many ``train.py`` runs from one sweep file, into one directory, with a summary.

A sweep file is a Python file whose ``get_sweep()`` returns a dict (the style of ``configs/*.py``)::

    # configs/sweeps/1x2_seeds.py
    def get_sweep():
        return {
            "config": "1x2",                          # as train.py --config takes (a name in configs/ or a path)
            "seeds": [0, 1, 2],                       # one run per seed (optional: the config's seed)
            "grid": {"rho": [1, 3], "lr": [0.001]},   # every combination (optional)
            "set": ["steps=2000"],                    # overrides common to all runs, as train.py --set
        }

Keys: ``config`` (required), ``seeds`` (non-empty list of ints), ``grid`` (non-empty dict of
field -> non-empty list of values; a value is a number, bool, string or tuple, written as
``--set`` would: ``(64, 64)`` is ``hidden=64,64``), ``set`` (list of ``"FIELD=VALUE"``), ``name``
(the runs' name prefix, default the config file's stem) and, at the top level only, ``runs``: a
list of dicts with the same keys, each one entry of the sweep, inheriting the top level's keys
(``set`` lists are concatenated, top level first; ``grid`` dicts merged; others replaced).
Overrides apply in the order ``set``, ``grid``, seed, then :func:`jaxauction.config.validate`.

Every run gets a stable name from its prefix, its grid values (fields sorted) and its seed, e.g.
``1x2-lr=0.001-rho=1-seed=0``, and trains with ``training.train_and_evaluate(cfg, OUT/NAME,
resume=True)`` (the layout of :mod:`jaxauction.rundir`). The runs of one *group* (same name but
the seed) are summarized together.

Resuming: a run is finished (skipped) when its ``final_eval.json`` belongs to the run's resolved
config (:func:`run_finished`); any other run is (re)started with ``resume=True``, which continues
from its last saved state (``state.npz``) or starts afresh without one. So rerunning the same
command after a kill finishes the sweep, and raising a budget (``steps``, ``max_seconds``) in the
sweep file continues the finished runs; changing a non-resumable field (``lr``, ``hidden``...)
under the same run name makes that run fail with a config error (use another ``--out``).

Executors (:data:`EXECUTORS`): ``local`` runs W spawned worker processes on this machine (CPU JAX,
each pinned to its share of the cores), ``ray`` one Ray task per run (``num_cpus=1``,
``num_gpus=G``; CPU JAX on one thread when G = 0). A Ray task trains straight into ``OUT/NAME``
where its node sees ``OUT`` (the driver's machine, or a shared filesystem); elsewhere it trains
in a temporary directory and the finished run directory comes back to the driver (such a run,
if interrupted, restarts from scratch). A run that fails (diverged, a resume refused...) is
reported and the others go on. The driver alone writes ``OUT/sweep.json`` (the resolved runs)
and, at the end (also after a failure or Ctrl-C), ``OUT/summary.json`` and ``OUT/summary.md``.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import io
import itertools
import json
import math
import os
import re
import shutil
import sys
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from jaxauction.config import REPO, Config, ConfigError, validate

EXECUTORS = ("local", "ray")
SWEEP_DIR = REPO / "configs" / "sweeps"
SWEEP_JSON, SUMMARY_JSON, SUMMARY_MD = "sweep.json", "summary.json", "summary.md"
ENTRY_KEYS = frozenset({"config", "name", "seeds", "grid", "set"})
# Metrics of final_eval.json in the summary (PGD regret = regret_mean of the final evaluation).
SUMMARY_METRICS = ("revenue", "regret_mean", "regret_max", "ir_violation_rate", "train_seconds")
# Exceptions of train_and_evaluate that are a run's own failure (bad resume, diverged...), not a bug.
EXPECTED_FAILURES = frozenset({"ConfigError", "CheckpointError", "TrainingDiverged", "FileExistsError"})
# Times Ray retries a run whose worker died (node lost, killed, out of memory); it resumes.
RAY_RETRIES = 2


class SweepError(ValueError):
    """A bad sweep file, bad arguments, or an executor that cannot start (the CLI exits 2)."""


@dataclasses.dataclass(frozen=True)
class Run:
    """One run of a sweep: its name (= directory in OUT), group, base config, overrides, config."""
    name: str
    group: str
    config: str
    seed: int
    grid: tuple[str, ...]       # this run's grid overrides, FIELD=VALUE (fields sorted)
    overrides: tuple[str, ...]  # everything applied to the base config: set + grid + seed
    cfg: Config

    def to_dict(self) -> dict:
        return {"name": self.name, "group": self.group, "config": self.config, "seed": self.seed,
                "grid": list(self.grid), "overrides": list(self.overrides), "resolved": self.cfg.to_dict()}


# ---- sweep files ------------------------------------------------------------------------------

def resolve_sweep_path(name_or_path: str | Path) -> Path:
    """An existing file as is, else ``configs/sweeps/NAME.py`` (``NAME`` or ``NAME.py``)."""
    p = Path(name_or_path)
    if p.is_file():
        return p.resolve()
    if len(p.parts) == 1:
        cand = SWEEP_DIR / (p.name if p.name.endswith(".py") else f"{p.name}.py")
        if cand.is_file():
            return cand
    raise SweepError(f"sweep file {str(name_or_path)!r}: no such file")


def load_sweep_dict(path: Path) -> dict:
    """Run the sweep file and return its ``get_sweep()`` (its directory on sys.path meanwhile)."""
    path = Path(path)
    before = set(sys.modules)
    sys.path.insert(0, str(path.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"_jaxauction_sweep_{abs(hash(str(path)))}", path)
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
            if not callable(getattr(module, "get_sweep", None)):
                raise SweepError(f"{path}: defines no get_sweep()")
            sweep = module.get_sweep()
        except SweepError:
            raise
        except Exception as e:  # a broken sweep file: say which one
            raise SweepError(f"{path}: {type(e).__name__}: {e}") from None
    finally:
        sys.path.remove(str(path.parent))
        for k in set(sys.modules) - before:
            f = getattr(sys.modules[k], "__file__", None) or ""
            if k.startswith("_jaxauction_sweep_") or Path(f).parent == path.parent:
                del sys.modules[k]
    if not isinstance(sweep, dict):
        raise SweepError(f"{path}: get_sweep() returned {type(sweep).__name__}, not a dict")
    return sweep


def override_text(value) -> str:
    """A grid value as ``--set`` writes it: tuples ``a,b``, bools ``true``, None ``none``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (list, tuple)):
        return ",".join(override_text(v) for v in value)
    return str(value)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._,=+-]", "_", text)


def _entries(sweep: dict, where: str) -> list[dict]:
    top = dict(sweep)
    subs = top.pop("runs", None)
    unknown = sorted(set(top) - ENTRY_KEYS)
    if unknown:
        raise SweepError(f"{where}: unknown key(s) {unknown} (known: {sorted(ENTRY_KEYS | {'runs'})})")
    if subs is None:
        return [top]
    if not isinstance(subs, (list, tuple)) or not subs:
        raise SweepError(f"{where}: 'runs' must be a non-empty list of dicts")
    out = []
    for i, sub in enumerate(subs):
        if not isinstance(sub, dict):
            raise SweepError(f"{where}: runs[{i}] is a {type(sub).__name__}, not a dict")
        unknown = sorted(set(sub) - ENTRY_KEYS)
        if unknown:
            raise SweepError(f"{where}: runs[{i}]: unknown key(s) {unknown} (known: {sorted(ENTRY_KEYS)})")
        merged = {**top, **sub}
        if "set" in top and "set" in sub:
            merged["set"] = [*_as_list(top["set"], f"{where}: set"), *_as_list(sub["set"], f"{where}: runs[{i}].set")]
        if isinstance(top.get("grid"), dict) and isinstance(sub.get("grid"), dict):
            merged["grid"] = {**top["grid"], **sub["grid"]}
        out.append(merged)
    return out


def _as_list(v, where: str) -> list:
    if isinstance(v, str) or not isinstance(v, (list, tuple)):
        raise SweepError(f"{where}: expected a list, got {v!r}")
    return list(v)


def resolve_sweep(sweep: dict, where: str = "sweep", base_dir: Optional[Path] = None) -> list[Run]:
    """The runs of a sweep dict (see the module docstring); every config resolved and validated.

    ``base_dir``: a relative ``config`` path is looked up there first (the sweep file's directory).
    Raises :class:`SweepError` naming the entry or run at fault.
    """
    from jaxauction.config_io import apply_overrides, load_config

    runs: list[Run] = []
    bases: dict[str, Config] = {}
    for i, e in enumerate(_entries(sweep, where)):
        at = where if "runs" not in sweep else f"{where}: runs[{i}]"
        config = e.get("config")
        if not isinstance(config, str) or not config:
            raise SweepError(f"{at}: 'config' (a config name or path, as train.py --config) is required")
        if base_dir is not None and not Path(config).is_absolute() and (base_dir / config).is_file():
            config = str((base_dir / config).resolve())
        if config not in bases:
            try:
                bases[config] = load_config(config)
            except ConfigError as err:
                raise SweepError(f"{at}: {err}") from None
        sets = [str(s) for s in _as_list(e.get("set", []), f"{at}: set")]
        if any("=" not in s for s in sets):
            raise SweepError(f"{at}: set: expected FIELD=VALUE strings, got {sets}")
        grid = e.get("grid")
        if grid is None:
            grid = {}
        elif not isinstance(grid, dict) or not grid:
            raise SweepError(f"{at}: grid: empty or not a dict (leave 'grid' out for no grid)")
        for k, vals in grid.items():
            if k == "seed":
                raise SweepError(f"{at}: grid: use 'seeds' for the seed")
            if isinstance(vals, (str, bytes)) or not isinstance(vals, (list, tuple)) or not vals:
                raise SweepError(f"{at}: grid: {k}: expected a non-empty list of values, got {vals!r}")
        seeds = e.get("seeds")
        if seeds is not None:
            if not isinstance(seeds, (list, tuple)) or not seeds or not all(
                    isinstance(s, int) and not isinstance(s, bool) for s in seeds):
                raise SweepError(f"{at}: seeds: expected a non-empty list of ints, got {seeds!r}")
            if len(set(seeds)) != len(seeds):
                raise SweepError(f"{at}: seeds: repeated seed in {list(seeds)}")
        prefix = e.get("name") or Path(config).stem
        if not isinstance(prefix, str):
            raise SweepError(f"{at}: name: expected a string, got {prefix!r}")
        fields = sorted(grid)
        for combo in itertools.product(*(grid[k] for k in fields)):
            point = tuple(f"{k}={override_text(v)}" for k, v in zip(fields, combo))
            for seed in (seeds if seeds is not None else [None]):
                overrides = [*sets, *point] + ([f"seed={seed}"] if seed is not None else [])
                group = "-".join(_safe(s) for s in (prefix, *point))
                try:
                    cfg = validate(apply_overrides(bases[config], overrides))
                except ConfigError as err:
                    raise SweepError(f"{at}: run {group}: {err}") from None
                runs.append(Run(f"{group}-seed={cfg.seed}", group, config, cfg.seed, point, tuple(overrides), cfg))
    seen: dict[str, int] = {}
    for r in runs:
        seen[r.name] = seen.get(r.name, 0) + 1
    dup = sorted(n for n, c in seen.items() if c > 1)
    if dup:
        raise SweepError(f"{where}: several runs are named {dup} (entries differing only in 'set' need "
                         f"different 'name's)")
    return runs


def load_sweep(name_or_path: str | Path) -> tuple[Path, list[Run]]:
    """Resolve a sweep file (:func:`resolve_sweep_path`) and its runs."""
    path = resolve_sweep_path(name_or_path)
    return path, resolve_sweep(load_sweep_dict(path), where=str(path), base_dir=path.parent)


# ---- the state of a run directory ---------------------------------------------------------------

def _read_json(path: Path):
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def run_finished(workdir: Path, cfg: Config) -> bool:
    """Has ``workdir`` a final evaluation of ``cfg``: config.json is ``cfg``, and final_eval.json
    is from the last attempt (its step reached ``cfg.steps``, or the ``max_seconds`` budget stopped
    it) with the config's final-evaluation size? (A resumed run writes config.json at its start
    and final_eval.json at its end, so a kill in between leaves an older final_eval.json.)"""
    from jaxauction import rundir

    workdir = Path(workdir)
    fe, old = _read_json(workdir / rundir.FINAL_EVAL), _read_json(workdir / rundir.CONFIG_JSON)
    if not isinstance(fe, dict) or not isinstance(old, dict):
        return False
    try:
        if Config.from_dict(old).to_dict() != cfg.to_dict():
            return False
    except (ConfigError, TypeError):
        return False
    step, secs = fe.get("step"), fe.get("train_seconds")
    if not isinstance(step, int) or fe.get("points") != cfg.final_eval_points or fe.get("steps") != cfg.final_eval_steps:
        return False
    budget_hit = bool(cfg.max_seconds) and isinstance(secs, (int, float)) and secs >= cfg.max_seconds
    return step >= cfg.steps or budget_hit


# ---- training one run (in a worker) ----------------------------------------------------------------

def train_one(run: Run, workdir: Path) -> dict:
    """Train ``run`` in ``workdir`` (``resume=True``); a result dict, never an exception but
    KeyboardInterrupt: ``{"name", "ok", "error", "seconds", "backend", "host"}``."""
    import platform

    t0 = time.perf_counter()
    res = {"name": run.name, "ok": False, "error": None, "backend": None, "host": platform.node()}
    try:
        import chex
        import jax

        from jaxauction.training import train_and_evaluate

        # The train step is wrapped in chex.assert_max_traces, whose counter is per source location:
        # a second config in the same process would count as a retrace of the first.
        chex.clear_trace_counter()
        res["backend"] = jax.default_backend()
        train_and_evaluate(run.cfg, workdir, resume=True, progress=False)
        res["ok"] = True
    except Exception as e:  # noqa: BLE001 -- one run's failure is reported, the sweep goes on
        res["error"] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}".rstrip(": ")
        if type(e).__name__ not in EXPECTED_FAILURES:
            res["traceback"] = traceback.format_exc()  # not an expected failure: a bug to report
    res["seconds"] = round(time.perf_counter() - t0, 2)
    return res


# ---- the local executor ----------------------------------------------------------------------------

def cpu_slots() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def local_env(threads: int) -> dict:
    """Environment of a local worker: CPU JAX with ``threads`` threads per library."""
    env = {"JAX_PLATFORMS": "cpu", "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads),
           "MKL_NUM_THREADS": str(threads), "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}
    if threads == 1:
        flags = os.environ.get("XLA_FLAGS", "")
        if "xla_cpu_multi_thread_eigen" not in flags:
            flags = f"{flags} --xla_cpu_multi_thread_eigen=false".strip()
        env["XLA_FLAGS"] = flags
    return env


def run_local(todo: Sequence[Run], out: Path, workers: int, on_result: Callable[[dict], None]) -> None:
    """Train ``todo`` in ``workers`` spawned processes, each on ``cores // workers`` cores."""
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    from certify.campaign.executors import _env, _terminate, raise_on_sigterm, restore_sigterm

    cores = cpu_slots()
    threads = max(1, len(cores) // workers)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    with _env(local_env(threads)):  # inherited by the spawned workers
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_local_worker_init,
                                 initargs=(counter, cores, threads, os.getpid()))
        old_term = raise_on_sigterm()
        try:
            pending = {ex.submit(_local_task, r, str(out / r.name)) for r in todo}
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(fut.result())
        except BrokenProcessPool as e:
            _terminate(ex)
            raise SweepError(f"a worker process died ({e}); finished runs are saved, rerun to resume") from None
        except BaseException:
            _terminate(ex)
            raise
        finally:
            restore_sigterm(old_term)
        ex.shutdown(wait=True)


def _local_worker_init(counter, cores: list[int], threads: int, parent: int) -> None:
    """Per worker: pin this process to its own ``threads`` cores (XLA sizes its CPU thread pool
    by the affinity mask when its backend starts), ignore Ctrl-C (the driver stops the workers)
    and exit if the driver is gone (killed), so that no orphan keeps writing a run directory."""
    import signal

    with counter.get_lock():
        slot = counter.value
        counter.value += 1
    if hasattr(os, "sched_setaffinity") and threads * (slot + 1) <= len(cores):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, cores[slot * threads:(slot + 1) * threads])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    from certify.campaign.executors import _exit_when_orphaned

    _exit_when_orphaned(parent)


def _local_task(run: Run, workdir: str) -> dict:
    return train_one(run, Path(workdir))


# ---- the Ray executor ------------------------------------------------------------------------------

def _pack(workdir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(str(workdir), arcname=".")
    return buf.getvalue()


def unpack_run(data: bytes, workdir: Path) -> None:
    """Replace ``workdir`` by the run directory packed in ``data`` (a run shipped back by Ray)."""
    workdir = Path(workdir)
    tmp = workdir.with_name(f".{workdir.name}.incoming")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(tmp, filter="data")
        else:  # Python < 3.10.12 / 3.11.4
            tar.extractall(tmp)
    old = workdir.with_name(f".{workdir.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if workdir.exists():
        workdir.rename(old)
    tmp.rename(workdir)
    shutil.rmtree(old, ignore_errors=True)


def ray_task(run: Run, out: str) -> dict:
    """Body of a Ray task: train ``run`` in ``OUT/NAME`` where this node sees ``OUT`` (a shared
    filesystem, or the driver's own machine: ``OUT/sweep.json`` is there), else in a temporary
    directory whose contents come back packed in the result (``"archive"``)."""
    out_dir = Path(out)
    if (out_dir / SWEEP_JSON).is_file():
        return train_one(run, out_dir / run.name)
    with tempfile.TemporaryDirectory(prefix="jaxauction-sweep-") as tmp:
        res = train_one(run, Path(tmp) / run.name)
        if (Path(tmp) / run.name).is_dir():
            res["archive"] = _pack(Path(tmp) / run.name)
    return res


def ray_env(gpus_per_run: float) -> dict:
    """Environment of a Ray task: CPU JAX on one thread, or the accelerator Ray assigned."""
    if gpus_per_run <= 0:
        return local_env(1)
    env = {"JAX_PLATFORMS": "", "TF_CPP_MIN_LOG_LEVEL": "3"}
    if gpus_per_run < 1:  # several runs share a GPU: no 75% preallocation each
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
    return env


def run_ray(todo: Sequence[Run], out: Path, workers: Optional[int], gpus_per_run: float, address: Optional[str],
            on_result: Callable[[dict], None], log: Callable[[str], None]) -> None:
    """Train ``todo`` as Ray tasks (``num_cpus=1, num_gpus=gpus_per_run``), at most ``workers`` at
    once (default: what the cluster holds). See :func:`certify.campaign.executors.connect_ray` for
    ``address`` (None: a local instance, started and stopped here)."""
    from certify.campaign.errors import RunError
    from certify.campaign.executors import connect_ray, import_ray, raise_on_sigterm, restore_sigterm

    try:
        ray = import_ray()
        started = connect_ray(address, workers or len(cpu_slots()))
    except RunError as e:
        raise SweepError(str(e)) from None
    old_term = raise_on_sigterm()
    pending: dict = {}
    try:
        res = ray.cluster_resources()
        cpus, gpus = int(res.get("CPU", 0)), float(res.get("GPU", 0))
        if cpus < 1:
            raise SweepError("the Ray cluster has no CPUs to run training on")
        if gpus_per_run > 0 and gpus < gpus_per_run:
            raise SweepError(f"--gpus-per-run {gpus_per_run:g}: the Ray cluster has {gpus:g} GPUs")
        capacity = int(gpus // gpus_per_run) if gpus_per_run > 0 else cpus
        workers = min(workers or capacity, len(todo))
        if workers > capacity:
            log(f"notice: the Ray cluster holds {capacity} runs at once; the others wait in Ray's queue")
        # The environment is the worker process's own (set before it imports JAX).
        task = ray.remote(num_cpus=1, num_gpus=gpus_per_run, max_retries=RAY_RETRIES, retry_exceptions=False,
                          runtime_env={"env_vars": ray_env(gpus_per_run)})(ray_task)
        queue = list(todo)
        while queue or pending:
            while queue and len(pending) < workers:
                r = queue.pop(0)
                pending[task.remote(r, str(out))] = r
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # timeout: Ctrl-C is seen
            for ref in done:
                r = pending.pop(ref)
                try:
                    result = ray.get(ref)
                except ray.exceptions.RayError as e:  # its worker died RAY_RETRIES + 1 times, a node was lost...
                    result = {"name": r.name, "ok": False, "seconds": None,
                              "error": f"Ray task lost ({type(e).__name__}: {str(e).splitlines()[0]})"}
                archive = result.pop("archive", None)
                if archive is not None:
                    unpack_run(archive, out / r.name)
                on_result(result)
    finally:
        restore_sigterm(old_term)
        for ref in pending:  # Ctrl-C or an error: stop the runs still training (they resume later)
            with contextlib.suppress(Exception):
                ray.cancel(ref, force=True)
        if started:
            ray.shutdown()


# ---- the driver ------------------------------------------------------------------------------------

def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def default_out(sweep_path: Path) -> Path:
    return Path("runs") / "sweeps" / Path(sweep_path).stem


def run_sweep(sweep: str | Path, out: str | Path | None = None, *, executor: str = "local",
              workers: Optional[int] = None, address: Optional[str] = None, gpus_per_run: float = 0,
              log: Callable[[str], None] = _stderr) -> dict:
    """Run a sweep file (:func:`load_sweep`) into ``out`` (default ``runs/sweeps/STEM``).

    Finished runs (:func:`run_finished`) are skipped, the others trained (resumed where they
    have a saved state). Writes ``sweep.json`` first and ``summary.json``/``summary.md`` at the
    end, also when interrupted. Returns the summary dict plus ``"trained"`` and ``"skipped"``
    (run names) and ``"failed"`` (name -> error) of this call. Raises :class:`SweepError` on bad
    input (before anything is written) or an executor that cannot start.
    """
    if executor not in EXECUTORS:
        raise SweepError(f"--executor {executor!r}: expected one of {list(EXECUTORS)}")
    if workers is not None and workers < 1:
        raise SweepError(f"--workers {workers}: must be >= 1")
    if gpus_per_run < 0:
        raise SweepError(f"--gpus-per-run {gpus_per_run:g}: must be >= 0")
    if gpus_per_run and executor != "ray":
        raise SweepError("--gpus-per-run needs --executor ray (the local executor trains on CPU cores)")
    if address and executor != "ray":
        raise SweepError("--address needs --executor ray")
    path, runs = load_sweep(sweep)
    if executor == "ray":  # Ray installed, and the cluster's port open: fail before writing anything
        from certify.campaign.errors import RunError
        from certify.campaign.executors import check_address

        try:
            check_address(address)
        except RunError as e:
            raise SweepError(str(e)) from None
    out = Path(out) if out is not None else default_out(path)
    if out.exists() and not out.is_dir():
        raise SweepError(f"--out {out}: not a directory")
    out.mkdir(parents=True, exist_ok=True)
    from jaxauction.checkpoints import atomic_write_text

    atomic_write_text(out / SWEEP_JSON, json.dumps({"sweep": str(path), "runs": [r.to_dict() for r in runs]},
                                                   indent=1))
    skipped = [r.name for r in runs if run_finished(out / r.name, r.cfg)]
    todo = [r for r in runs if r.name not in set(skipped)]
    log(f"sweep {path.name}: {len(runs)} runs in {out}; {len(skipped)} finished, {len(todo)} to train"
        + (f" ({executor} executor)" if todo else ""))
    trained, failed = [], {}
    t0 = time.perf_counter()

    def on_result(res: dict) -> None:
        n = len(trained) + len(failed) + 1
        where = f" on {res['host']} ({res['backend']})" if res.get("host") else ""
        if res.get("ok"):
            trained.append(res["name"])
            fe = _read_json(out / res["name"] / "final_eval.json") or {}
            log(f"[{n}/{len(todo)}] {res['name']}: revenue {_fmt(fe.get('revenue'))}, PGD regret "
                f"{_fmt(fe.get('regret_mean'))}, {res.get('seconds')} s{where}")
        else:
            failed[res["name"]] = res.get("error") or "failed"
            log(f"[{n}/{len(todo)}] {res['name']}: FAILED{where}: {failed[res['name']]}"
                + (f"\n{res['traceback']}".rstrip() if res.get("traceback") else ""))

    try:
        if todo:
            if executor == "local":
                w = min(workers or len(cpu_slots()), len(todo))
                run_local(todo, out.resolve(), w, on_result)
            else:  # the workers' working directory is not this one
                run_ray(todo, out.resolve(), workers, gpus_per_run, address, on_result, log)
    finally:
        summary = write_summary(out, path, runs, failed)
    log(f"sweep {path.name}: {len(trained)} trained, {len(skipped)} skipped, {len(failed)} failed in "
        f"{time.perf_counter() - t0:.1f} s; summary: {out / SUMMARY_MD}")
    return {**summary, "trained": trained, "skipped": skipped, "failed": failed}


# ---- summary ---------------------------------------------------------------------------------------

def _fmt(v, spec: str = ".4g") -> str:
    return "-" if v is None else format(v, spec)


def _mean_std(xs: list[float]) -> tuple[Optional[float], Optional[float]]:
    if not xs:
        return None, None
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return m, None
    return m, math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))


def summarize(out: Path, runs: Sequence[Run], failed: Optional[dict] = None) -> dict:
    """One row per run (status ``ok`` / ``failed`` / ``pending``, its final_eval metrics) and one
    per group (mean and sample std over the seeds of its finished runs)."""
    failed = failed or {}
    rows = []
    for r in runs:
        row = {"name": r.name, "group": r.group, "config": r.config, "seed": r.seed, "grid": list(r.grid),
               "overrides": list(r.overrides)}
        if run_finished(out / r.name, r.cfg):
            fe = _read_json(out / r.name / "final_eval.json")
            row.update(status="ok", step=fe.get("step"), **{k: fe.get(k) for k in SUMMARY_METRICS})
        else:
            row.update(status="failed" if r.name in failed else "pending", error=failed.get(r.name), step=None,
                       **{k: None for k in SUMMARY_METRICS})
        rows.append(row)
    groups = []
    for g in dict.fromkeys(r["group"] for r in rows):
        members = [r for r in rows if r["group"] == g]
        ok = [r for r in members if r["status"] == "ok"]
        grp = {"group": g, "config": members[0]["config"], "grid": members[0]["grid"], "runs": len(members),
               "finished": len(ok), "seeds": [r["seed"] for r in ok]}
        for k in SUMMARY_METRICS:
            grp[f"{k}_mean"], grp[f"{k}_std"] = _mean_std([r[k] for r in ok if r[k] is not None])
        groups.append(grp)
    return {"runs": rows, "groups": groups}


def format_summary(summary: dict, title: str) -> str:
    cols = ("run", "seed", "grid", "step", "revenue", "PGD regret", "regret max", "IR viol. rate", "train s", "status")
    lines = [f"# {title}", "", "PGD regret: mean over (profile, agent) of the final evaluation "
             "(final_eval.json); std: sample std over seeds.", "",
             "| " + " | ".join(cols) + " |", "|" + "|".join("---:" if c not in ("run", "grid", "status") else "---"
                                                          for c in cols) + "|"]
    for r in summary["runs"]:
        status = r["status"] + (f": {r['error']}" if r.get("error") else "")
        lines.append("| " + " | ".join([
            r["name"], str(r["seed"]), " ".join(r["grid"]) or "-", _fmt(r["step"], "d"), _fmt(r["revenue"], ".4f"),
            _fmt(r["regret_mean"], ".3g"), _fmt(r["regret_max"], ".3g"), _fmt(r["ir_violation_rate"], ".3g"),
            _fmt(r["train_seconds"], ".1f"), status.replace("|", "/")]) + " |")
    gcols = ("group", "finished", "revenue", "PGD regret", "regret max", "IR viol. rate", "train s")
    lines += ["", "Per group (mean ± std over seeds, finished runs):", "",
              "| " + " | ".join(gcols) + " |", "|---|" + "---:|" * (len(gcols) - 1)]

    def ms(g, k, spec):
        m, s = g[f"{k}_mean"], g[f"{k}_std"]
        return "-" if m is None else _fmt(m, spec) + ("" if s is None else f" ± {_fmt(s, spec)}")

    for g in summary["groups"]:
        seeds = f"{g['finished']}/{g['runs']}"
        lines.append("| " + " | ".join([g["group"], seeds, ms(g, "revenue", ".4f"), ms(g, "regret_mean", ".3g"),
                                        ms(g, "regret_max", ".3g"), ms(g, "ir_violation_rate", ".3g"),
                                        ms(g, "train_seconds", ".1f")]) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out: Path, sweep_path: Path, runs: Sequence[Run], failed: Optional[dict] = None) -> dict:
    from jaxauction.checkpoints import atomic_write_text

    summary = {"sweep": str(sweep_path), **summarize(out, runs, failed)}
    atomic_write_text(out / SUMMARY_JSON, json.dumps(summary, indent=1))
    atomic_write_text(out / SUMMARY_MD, format_summary(summary, f"Sweep {Path(sweep_path).name}"))
    return summary
