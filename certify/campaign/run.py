"""run_certification: certify many (profile, agent) pairs of one mechanism, resumably, on an executor."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from certify.campaign import executors, results
from certify.campaign.errors import RunError
from certify.campaign.pair import Job, default_certify_fn
from certify.campaign.profiles import parse_agents, resolve_profiles
from certify.certificate import SOLVERS, is_proven
from jaxauction import checkpoints


def check_certifiable(spec, solver: str = "auto") -> None:
    """Refuse, before any work, a mechanism that ``solver`` cannot certify (e.g. a softmax
    allocation with a MIP solver, or 3 items with "planar"; :func:`certify.methods.check`)."""
    from certify import methods

    try:
        methods.pick(spec, solver)
    except ValueError as e:
        raise RunError(str(e)) from None


def run_certification(ckpt: str | Path, out_dir: str | Path, *, points: int = 100,
                      agents: str | Sequence[int] = "all", seed: int = 0, time_limit: float | None = None,
                      solver: str = "auto", workers: int = 1, profiles: Any = None,
                      certify_fn: Callable | None = None, progress: bool = True, threads: int = 1,
                      certify_kwargs: dict | None = None, executor: str = "local",
                      address: str | None = None, batch_pairs: int = 1) -> list[dict]:
    """Certify ``points`` profiles x ``agents``; append to ``out_dir/results.jsonl``; resume if present.

    Args:
      ckpt: run directory, checkpoint directory, or reference ``NAME.npz`` (see
        :func:`jaxauction.checkpoints.load_mechanism`).
      out_dir: where ``run.json`` and ``results.jsonl`` live (created if missing).
      points: number of profiles sampled from the prior (ignored when ``profiles`` is given).
      agents: ``"all"``, ``"0,1"`` or a list of agent indices.
      seed: PRNG seed of the profile sampling.
      time_limit: MIP time limit in seconds per pair (``None``: none).
      solver: one of :data:`certify.certificate.SOLVERS` (passed to ``certify_fn``).
      workers: pairs certified in parallel. With ``executor="local"``: ``spawn``-ed processes (each
        loads the checkpoint once and runs JAX on one CPU thread), ``1`` runs in this process; with
        ``executor="ray"``: Ray actors of one CPU each.
      profiles: ``None`` (sample), a (P, N, M) array, or the path of a JSON list of N x M matrices.
      certify_fn: ``certify_point``-compatible function (default :func:`certify.regret.certify_point`);
        must be a module-level function when ``workers > 1`` with the local executor.
      progress: show a tqdm bar with ETA and the running mean certified regret.
      threads: solver threads per pair in serial mode (workers always use 1).
      certify_kwargs: extra keyword arguments for ``certify_fn`` (e.g. ``pgd_steps``).
      executor: ``"local"`` (this process or a local process pool) or ``"ray"``
        (:func:`certify.campaign.executors.run_ray`); the same records either way.
      address: the Ray cluster (``executor="ray"`` only; see
        :func:`certify.campaign.executors.connect_ray`); None starts a local Ray instance.
      batch_pairs: > 1: certify this many pairs of one agent together in one bab pool, in this
        process (:func:`certify.batch.certify_many`; bab only, ``workers=1``, local executor).

    Returns:
      One record per requested (point, agent), sorted, the old ones included.

    Raises:
      CheckpointError, RunError (ProfileError, ManifestError, ResultsError): bad input.
    """
    if executor not in executors.EXECUTORS:
        raise RunError(f"executor must be one of {executors.EXECUTORS}, got {executor!r}")
    if address is not None and executor != "ray":
        raise RunError("--address is the address of a Ray cluster: it needs --executor ray")
    if executor == "ray":  # a missing Ray, a closed address: say so before any work
        executors.check_address(address)
    params, spec, info, prior = checkpoints.load_with_prior(ckpt)
    low, high = (b.astype(np.float64) for b in prior.bounds())
    agent_list = parse_agents(agents, spec.n_agents)
    if solver not in SOLVERS:
        raise RunError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if certify_fn is None:
        check_certifiable(spec, solver)
        if progress:
            from certify import methods

            print(methods.describe(spec, solver), flush=True)
    if workers < 1:
        raise RunError(f"workers must be >= 1, got {workers}")
    if batch_pairs < 1:
        raise RunError(f"batch_pairs must be >= 1, got {batch_pairs}")
    if batch_pairs > 1:
        from certify import methods

        method = methods.pick(spec, solver)
        if method != "bab":
            raise RunError(f"--batch-pairs certifies pairs together in one branch-and-bound pool: it needs bab "
                           f"(--solver bab, or auto on a net no MIP encodes); solver {solver!r} runs "
                           f"{'the MIP' if method == methods.MIP_AUTO else repr(method)} here")
        if workers > 1 or executor == "ray":
            raise RunError("--batch-pairs runs in this process: use it with --workers 1 and the local executor")
    if time_limit is not None and not time_limit > 0:
        raise RunError(f"time limit must be positive, got {time_limit}")
    prof, source = resolve_profiles(profiles, prior, spec, seed, points, low, high)
    source_key = {k: v for k, v in source.items() if k != "path"}  # a moved file is the same source

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with results.dir_lock(out_dir):
        manifest = results.make_manifest(ckpt, spec, prior, params, seed, solver, time_limit, source_key)
        existing = results.resume(out_dir, manifest, prof)
        wanted = [(p, a) for p in range(len(prof)) for a in agent_list]
        todo = [pa for pa in wanted if pa not in existing]
        done = {pa: existing[pa] for pa in wanted if pa in existing}

        bar = _progress(len(wanted), len(wanted) - len(todo), progress)
        _update_bar(bar, done.values())
        appender = results.Appender(out_dir / results.RESULTS)
        written = set()

        def on_result(rec):
            if rec is None:  # interrupted solve: not a result
                raise KeyboardInterrupt
            pair = (rec["point"], rec["agent"])
            if pair in written:  # never twice in the file, whatever an executor delivers
                return
            appender.write(rec)
            written.add(pair)
            done[pair] = rec
            bar.update(1)
            _update_bar(bar, done.values())

        kwargs = dict(certify_kwargs or {})
        try:
            if not todo:
                pass
            elif executor == "ray":
                job = Job(params, spec, low, high, certify_fn, solver, time_limit, 1, kwargs)
                executors.run_ray(job, todo, prof, min(workers, len(todo)), on_result, address=address)
            elif batch_pairs > 1:
                job = Job(params, spec, low, high, None, solver, time_limit, 1, kwargs)
                executors.run_batched(job, todo, prof, on_result, batch_pairs)
            elif workers == 1 or len(todo) <= 1:
                job = Job(params, spec, low, high, certify_fn or default_certify_fn(), solver, time_limit,
                          threads, kwargs)
                executors.run_serial(job, todo, prof, on_result)
            else:
                executors.run_local_pool(ckpt, todo, prof, min(workers, len(todo)), certify_fn, solver,
                                         time_limit, kwargs, on_result)
        finally:
            appender.close()
            bar.close()
    return [done[pa] for pa in wanted if pa in done]


def _progress(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, unit="cert", dynamic_ncols=True,
                desc="certifying", file=sys.stderr)


def _update_bar(bar, records: Iterable[dict]) -> None:
    if bar.disable:
        return
    recs = list(records)
    proven = [r["regret_upper"] for r in recs if is_proven(r)]
    post = {"mean_cert_regret": f"{np.mean(proven):.5f}" if proven else "-", "proven": len(proven)}
    n_other = sum(1 for r in recs if not is_proven(r) and r.get("status") != "error")
    n_err = sum(1 for r in recs if r.get("status") == "error")
    if n_other:
        post["unproven"] = n_other
    if n_err:
        post["errors"] = n_err
    bar.set_postfix(post, refresh=True)
