"""Where a campaign's pairs are certified: in this process, a local process pool, or on Ray.

Every executor calls :func:`certify_one` on each (point, agent) of ``todo`` and hands its record to
``on_result`` **in the driver process**, which alone writes ``results.jsonl``
(:mod:`certify.campaign.results`). A record is ``None`` for an interrupted solve (not a result).

* :func:`run_serial`: in this process, one pair after the other.
* :func:`run_local_pool`: ``spawn``-ed worker processes on this machine (each loads the checkpoint
  once and runs JAX on one CPU thread); SIGTERM stops them like Ctrl-C, and a worker whose driver
  died (SIGKILL) exits instead of finishing a MIP nobody will read.
* :func:`run_ray`: one Ray actor per worker, each holding the model (shipped once through Ray's
  object store, so the nodes need the package installed but not the checkpoint); a lost actor is
  restarted and its pair retried (:data:`RAY_RETRIES`). See :func:`connect_ray` for addresses.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque

import numpy as np

from certify.campaign.errors import RunError
from certify.campaign.pair import WORKER_ENV, Job, certify_one, default_certify_fn, is_fatal

EXECUTORS = ("local", "ray")


def run_serial(job: Job, todo, profiles, on_result) -> None:
    for p, a in todo:
        on_result(certify_one(job, p, a, profiles[p]))


def run_batched(job: Job, todo, profiles, on_result, batch_pairs: int) -> None:
    """In this process, ``batch_pairs`` pairs of one agent at a time in one bab pool
    (:func:`certify.batch.certify_many`; ``job.certify_kwargs`` may hold its ``options``)."""
    from certify.batch import certify_many
    from certify.campaign.pair import finish_record

    by_agent: dict = {}
    for p, a in todo:
        by_agent.setdefault(a, []).append(p)
    for a, points in by_agent.items():
        for s0 in range(0, len(points), batch_pairs):
            chunk = points[s0:s0 + batch_pairs]
            t0 = time.perf_counter()
            kw = {k: v for k, v in job.certify_kwargs.items() if k in ("options", "pgd_steps", "pgd_lr")}
            certs = certify_many(job.params, job.spec, np.asarray([profiles[p] for p in chunk]), a, low=job.low,
                                 high=job.high, time_limit=job.time_limit, **kw)
            wall = (time.perf_counter() - t0) / len(chunk)
            for p, c in zip(chunk, certs):
                on_result(finish_record(dict(c.to_json()), p, a, profiles[p], wall))


# --------------------------------------------------------------------------------------------
# The local process pool

_WORKER: Job | None = None


def _exit_when_orphaned(parent: int, period: float = 1.0) -> None:
    """Daemon thread body: end this worker once its parent is gone (killed by a signal that left it
    no chance to stop its workers, e.g. SIGKILL), instead of finishing a MIP nobody will read."""
    import threading

    def watch():
        while os.getppid() == parent:
            time.sleep(period)
        os._exit(1)

    threading.Thread(target=watch, name="orphan-watch", daemon=True).start()


def _worker_init(ckpt: str, certify_fn, solver, time_limit, certify_kwargs, parent: int | None = None) -> None:
    """Per worker process: pin JAX to one CPU thread, load the checkpoint once; exit if orphaned."""
    import signal

    os.environ.update(WORKER_ENV)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and ends workers
    if parent is not None:
        _exit_when_orphaned(parent)
    import jax

    from jaxauction import checkpoints

    jax.config.update("jax_platforms", "cpu")
    global _WORKER
    params, spec, info, prior = checkpoints.load_with_prior(ckpt)
    low, high = prior.bounds()
    _WORKER = Job(params, spec, low.astype(np.float64), high.astype(np.float64),
                  certify_fn or default_certify_fn(), solver, time_limit, 1, certify_kwargs)


def _worker_task(point: int, agent: int, vals) -> dict | None:
    assert _WORKER is not None, "worker not initialised"
    return certify_one(_WORKER, point, agent, np.asarray(vals))


@contextlib.contextmanager
def _env(extra: dict):
    old = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_local_pool(ckpt, todo, profiles, workers, certify_fn, solver, time_limit, certify_kwargs,
                   on_result) -> None:
    """Certify ``todo`` in ``workers`` spawned processes; ``certify_fn`` None means the default
    (a custom one must be a module-level function, pickled by reference)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    ctx = mp.get_context("spawn")
    with _env(WORKER_ENV):  # inherited by the spawned workers
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(str(ckpt), certify_fn, solver, time_limit, certify_kwargs, os.getpid()))
        # Keep at most 2 tasks per worker queued, so an abort leaves little half-done work.
        drain_pool(ex, todo, lambda pa: ex.submit(_worker_task, pa[0], pa[1], profiles[pa[0]].tolist()), on_result,
                   lambda e: RunError(f"a worker process died ({e}); finished results are saved, rerun to resume"),
                   max_pending=2 * workers)


def drain_pool(ex, jobs, submit, on_result, died, max_pending: int | None = None) -> None:
    """Run ``jobs`` on the process pool ``ex``: ``submit(job)`` -> a future, at most ``max_pending``
    in flight (None: all), ``on_result`` in the caller's process as each finishes. SIGTERM stops
    it like Ctrl-C; any failure kills the workers; a dead worker raises ``died(exc)``. Shuts the
    pool down at the end (the certification pool and the training-sweep pool both run this)."""
    from concurrent.futures import FIRST_COMPLETED, wait
    from concurrent.futures.process import BrokenProcessPool

    old_term = raise_on_sigterm()
    try:
        pending, queue = set(), list(jobs)
        while queue or pending:
            while queue and (max_pending is None or len(pending) < max_pending):
                pending.add(submit(queue.pop(0)))
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                on_result(fut.result())
    except BrokenProcessPool as e:
        _terminate(ex)
        raise died(e) from None
    except BaseException:
        _terminate(ex)
        raise
    finally:
        restore_sigterm(old_term)
    ex.shutdown(wait=True)


def raise_on_sigterm():
    """Turn SIGTERM (``kill``, a batch scheduler's stop) into KeyboardInterrupt while workers run,
    so the parent stops them like on Ctrl-C; returns the previous handler (None off the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def restore_sigterm(old) -> None:
    import signal

    if old is not None:
        signal.signal(signal.SIGTERM, old)


def _terminate(ex) -> None:
    """Stop a ProcessPoolExecutor now (kill its workers: an in-flight MIP may run for minutes)."""
    procs = list(getattr(ex, "_processes", {}).values())
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        with contextlib.suppress(Exception):
            p.terminate()
    for p in procs:
        with contextlib.suppress(Exception):
            p.join(timeout=5)


# --------------------------------------------------------------------------------------------
# Ray

# Times a pair is retried after its worker was lost (node gone, process killed, out of memory);
# the worker (an actor) itself is restarted as often as needed.
RAY_RETRIES = 3
# Pairs sent to an actor at once (one running, the others queued at the actor) while many are left.
RAY_QUEUED = 2
# Seconds to wait for a cluster at --address to answer (a TCP probe first fails fast on a closed port).
RAY_CONNECT_TIMEOUT_S = 30.0
RAY_MISSING = 'the Ray executor needs Ray: pip install -e ".[ray]"'


def import_ray():
    try:
        import ray
    except ImportError:
        raise RunError(RAY_MISSING) from None
    return ray


def connect_ray(address: str | None, num_cpus: int, timeout: float = RAY_CONNECT_TIMEOUT_S) -> bool:
    """Connect this process to Ray; True if it did so (and must :func:`ray.shutdown` at the end).

    Already connected (``ray.init`` called by the caller): that connection is used as it is.
    ``address`` None (and no ``RAY_ADDRESS``): a local Ray instance with ``num_cpus`` CPUs starts,
    and stops with ``ray.shutdown()``. Otherwise ``HOST:PORT`` (a head's GCS port, 6379 unless
    ``ray start --head --port``), ``ray://HOST:PORT`` (Ray Client) or ``auto``; a closed port, an
    unknown host or a server that does not answer within ``timeout`` seconds is a :class:`RunError`.
    """
    import logging
    import threading

    ray = import_ray()
    if ray.is_initialized():
        return False
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address is None or address == "local":
        ray.init(num_cpus=num_cpus, include_dashboard=False, logging_level=logging.ERROR)
        return True
    check_address(address, min(timeout, 5.0))
    box: dict = {}

    def connect():  # in a thread: ray.init retries an unresponsive address for minutes
        try:
            ray.init(address=address, logging_level=logging.ERROR)
            box["ok"] = True
        except BaseException as e:  # noqa: BLE001 -- reported below
            box["error"] = e

    t = threading.Thread(target=connect, name="ray-connect", daemon=True)
    t.start()
    t.join(timeout)
    if t.is_alive():
        raise RunError(f"no Ray cluster answered at {address} within {timeout:g} s (is it the head's GCS "
                       f"address, as printed by `ray start --head`?)")
    if "error" in box:
        e = box["error"]
        hint = ("; if the cluster uses token authentication, set RAY_AUTH_MODE=token and give this machine "
                "its token (~/.ray/auth_token)" if "connect" in str(e).lower() else "")
        raise RunError(f"cannot connect to the Ray cluster at {address}: {str(e).splitlines()[0]}{hint}")
    return True


def check_address(address: str | None, timeout: float = 5.0) -> None:
    """Fail fast (RunError) unless Ray imports and the cluster ``address`` (or ``RAY_ADDRESS``)
    accepts a TCP connection; no probe for a local instance or an open Ray connection."""
    import socket

    ray = import_ray()
    address = address or os.environ.get("RAY_ADDRESS") or None
    if address in (None, "auto", "local") or ray.is_initialized():
        return
    hostport = address.split("://", 1)[1] if "://" in address else address
    host, sep, port = hostport.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise RunError(f"--address {address!r}: expected HOST:PORT (the Ray head's address), ray://HOST:PORT "
                       f"or auto")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RunError(f"cannot reach a Ray cluster at {address}: {e.strerror or e} (start one with "
                       f"`ray start --head`, or fix --address)") from None


class _RayWorker:
    """A Ray actor: fetches the model (a :class:`Job`) at its first pair, keeps it, certifies pairs.

    The job comes with each call as a reference nested in a list (Ray passes it unresolved), so
    a restarted actor fetches it again, and actor creation carries no object-store arguments.
    """

    def __init__(self):
        self.job = None

    def certify(self, job_ref: list, point: int, agent: int, vals) -> dict | None:
        if self.job is None:
            import jax
            import ray

            job: Job = ray.get(job_ref[0])
            # Arrays from the object store are read-only views: give the certifier its own copies.
            params = jax.tree_util.tree_map(np.array, job.params)
            self.job = Job(params, job.spec, np.array(job.low), np.array(job.high),
                           job.certify_fn or default_certify_fn(), job.solver, job.time_limit, 1,
                           dict(job.certify_kwargs))
        return certify_one(self.job, point, agent, np.asarray(vals))


def run_ray(job: Job, todo, profiles, workers: int, on_result, address: str | None = None) -> None:
    """Certify ``todo`` on ``workers`` Ray actors (one CPU each), the model loaded once per actor.

    ``job.certify_fn`` None means the default certifier; a custom one is pickled (by reference
    when importable on the workers). The results come back to this process, which alone calls
    ``on_result``. An actor lost mid-pair is restarted and the pair retried up to
    :data:`RAY_RETRIES` times, then the run stops with a :class:`RunError` (finished pairs stay
    recorded; rerun to resume). A fatal exception in a worker is raised here as itself.
    """
    ray = import_ray()
    started = connect_ray(address, workers)
    old_term = raise_on_sigterm()
    actors = []
    try:
        cpus = int(ray.cluster_resources().get("CPU", 0))
        if cpus < 1:
            raise RunError("the Ray cluster has no CPUs to run workers on")
        if cpus < workers:  # more actors than CPUs: the extra ones would never start
            print(f"notice: the Ray cluster has {cpus} CPUs; using {cpus} workers instead of {workers}",
                  file=sys.stderr)
            workers = cpus
        actor_cls = ray.remote(num_cpus=1, max_restarts=-1, max_task_retries=RAY_RETRIES,
                               runtime_env={"env_vars": dict(WORKER_ENV)})(_RayWorker)
        job_ref = [ray.put(job)]  # in the object store once, for every actor
        actors = [actor_cls.remote() for _ in range(workers)]
        queue, load, pending = deque(todo), [0] * workers, {}

        def submit():
            # Each actor holds one pair, and a second one queued while many pairs are left (it
            # never waits for this process); in the last pairs of the run only idle actors get
            # one, so that no pair waits behind a long solve while another actor is free.
            while queue:
                depth = RAY_QUEUED if len(queue) >= workers else 1
                w = min(range(workers), key=load.__getitem__)
                if load[w] >= depth:
                    return
                p, a = queue.popleft()
                pending[actors[w].certify.remote(job_ref, p, a, profiles[p].tolist())] = w
                load[w] += 1

        submit()
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)  # timeout: Ctrl-C is seen
            for ref in done:
                load[pending.pop(ref)] -= 1
            submit()  # before writing the results: the actors need not wait for the fsync
            for ref in done:
                on_result(_ray_result(ray, ref))
    finally:
        restore_sigterm(old_term)
        for actor in actors:
            with contextlib.suppress(Exception):
                ray.kill(actor)
        if started:
            ray.shutdown()


def _ray_result(ray, ref):
    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as e:  # the certifier raised in the worker: a fatal error
        cause = getattr(e, "cause", None)
        if isinstance(cause, BaseException) and (is_fatal(cause) or isinstance(cause, KeyboardInterrupt)):
            raise cause from None
        raise RunError(f"a Ray worker failed: {str(e).splitlines()[0]}") from None
    except ray.exceptions.RayError as e:  # the worker died (after RAY_RETRIES retries), a node was lost, ...
        raise RunError(f"a Ray worker was lost ({type(e).__name__}: {str(e).splitlines()[0]}) after "
                       f"{RAY_RETRIES} retries; finished results are saved, rerun to resume") from None
