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
``num_gpus=G``; CPU JAX on one thread when G = 0), ``vmap`` every group of runs differing only in
seed and continuous hyperparameters as one vmapped, jitted program in this process, on JAX's
default device (:mod:`jaxauction.multirun`; a group resumes only when all its runs can). A Ray
task trains straight into ``OUT/NAME`` where its node sees ``OUT`` (the driver's machine, or a
shared filesystem); elsewhere it trains in a temporary directory and the finished run directory
comes back to the driver (such a run, if interrupted, restarts from scratch). A run that fails (diverged, a resume refused...) is
reported and the others go on. The driver alone writes ``OUT/sweep.json`` (the resolved runs)
and, at the end (also after a failure or Ctrl-C), ``OUT/summary.json`` and ``OUT/summary.md``.

Modules: :mod:`~jaxauction.sweep.spec` (sweep files, runs and their names),
:mod:`~jaxauction.sweep.summary` (finished runs, ``summary.json``/``summary.md``),
:mod:`~jaxauction.sweep.executors` (training the runs: local processes, Ray tasks); here,
:func:`run_sweep`, which ties them together.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Callable, Optional

from jaxauction.sweep.executors import EXECUTORS, cpu_slots, ray_task, run_local, run_ray, train_one, unpack_run
from jaxauction.sweep.spec import Run, SweepError, load_sweep, resolve_sweep
from jaxauction.sweep.summary import SUMMARY_MD, SWEEP_JSON, _fmt, _read_json, run_finished, write_summary

__all__ = ["EXECUTORS", "SWEEP_JSON", "Run", "SweepError", "load_sweep", "ray_task", "resolve_sweep", "run_finished",
           "run_sweep", "train_one", "unpack_run"]


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
    if workers is not None and executor == "vmap":
        raise SweepError("--workers: the vmap executor trains each group of runs as one program (no workers)")
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
            elif executor == "vmap":  # one jitted, vmapped program per group of runs, here
                from jaxauction.multirun import run_vmap

                run_vmap(todo, out.resolve(), on_result, log)
            else:  # the workers' working directory is not this one
                run_ray(todo, out.resolve(), workers, gpus_per_run, address, on_result, log)
    finally:
        summary = write_summary(out, path, runs, failed)
    log(f"sweep {path.name}: {len(trained)} trained, {len(skipped)} skipped, {len(failed)} failed in "
        f"{time.perf_counter() - t0:.1f} s; summary: {out / SUMMARY_MD}")
    return {**summary, "trained": trained, "skipped": skipped, "failed": failed}
