"""Where a sweep's runs train: :func:`train_one` (one run, in a worker), :func:`run_local` (a pool
of spawned processes on this machine's cores) and :func:`run_ray` (one Ray task per run)."""
from __future__ import annotations

import contextlib
import io
import os
import shutil
import tarfile
import tempfile
import time
import traceback
from pathlib import Path
from typing import Callable, Optional, Sequence

from jaxauction.sweep.spec import Run, SweepError
from jaxauction.sweep.summary import SWEEP_JSON

EXECUTORS = ("local", "ray", "vmap")  # vmap: jaxauction.multirun, in this process
# Exceptions of train_and_evaluate that are a run's own failure (bad resume, diverged...), not a bug.
EXPECTED_FAILURES = frozenset({"ConfigError", "CheckpointError", "TrainingDiverged", "FileExistsError"})
# Times Ray retries a run whose worker died (node lost, killed, out of memory); it resumes.
RAY_RETRIES = 2


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
    from concurrent.futures import ProcessPoolExecutor

    from certify.campaign.executors import _env, drain_pool

    cores = cpu_slots()
    threads = max(1, len(cores) // workers)
    ctx = mp.get_context("spawn")
    counter = ctx.Value("i", 0)
    with _env(local_env(threads)):  # inherited by the spawned workers
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_local_worker_init,
                                 initargs=(counter, cores, threads, os.getpid()))
        drain_pool(ex, todo, lambda r: ex.submit(_local_task, r, str(out / r.name)), on_result,
                   lambda e: SweepError(f"a worker process died ({e}); finished runs are saved, rerun to resume"))


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
