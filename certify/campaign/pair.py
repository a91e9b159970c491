"""Certifying one (point, agent) of a campaign: the same code in the driver and in every worker.

:func:`certify_one` calls the certifier (:func:`certify.regret.certify_point` or an injected
function of the same signature) and returns the pair's results line: an exception becomes an
``"error"`` record, except the fatal ones (:func:`is_fatal`), which end the whole run.
"""
from __future__ import annotations

import dataclasses
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import numpy as np

from certify.campaign.results import jsonable
from certify.certificate import RESULT_KEYS
from certify.mip.encoders import UnsupportedArchitecture
from certify.mip.licensing import LicenseLimitError

# Exceptions that abort the whole run instead of being recorded per point: a solver that refuses
# its licence, or an architecture the MIP cannot encode, fails every point the same way (so does
# any exception with a true ``fatal`` attribute).
FATAL_ERRORS = (MemoryError, LicenseLimitError, UnsupportedArchitecture)
# A solve stopped by Ctrl-C is not a result: such certificates are discarded, not recorded.
INTERRUPTED = frozenset({"interrupted", "userinterrupt", "user_interrupt"})
# Environment of worker processes: CPU JAX, one thread per library (set before they import jax).
WORKER_ENV = {
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


@dataclasses.dataclass
class Job:
    """What certifying a pair needs: the model, its bid box, the certifier and its options."""
    params: Any
    spec: Any
    low: np.ndarray
    high: np.ndarray
    certify_fn: Callable
    solver: str
    time_limit: float | None
    threads: int
    certify_kwargs: dict


def default_certify_fn():
    from certify import regret

    return regret.certify_point


def is_fatal(e: BaseException) -> bool:
    return isinstance(e, FATAL_ERRORS) or bool(getattr(e, "fatal", False))


def error_record(point: int, agent: int, vals: np.ndarray, solver: str, message: str) -> dict:
    rec = {k: None for k in RESULT_KEYS}
    rec.update(point=int(point), agent=int(agent), valuations=np.asarray(vals).tolist(), status="error",
               solver=solver, message=message)
    return rec


def certify_one(job: Job, point: int, agent: int, vals: np.ndarray) -> dict | None:
    """Certify one pair; an exception becomes an ``"error"`` record unless it is fatal."""
    t0 = time.perf_counter()
    try:
        cert = job.certify_fn(job.params, job.spec, np.asarray(vals), int(agent), low=job.low, high=job.high,
                              solver=job.solver, time_limit=job.time_limit, threads=job.threads,
                              **job.certify_kwargs)
        rec = dict(cert.to_json() if hasattr(cert, "to_json") else cert)
    except Exception as e:  # one bad point must not end the run
        if is_fatal(e):
            raise
        msg = f"{type(e).__name__}: {e}"
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            msg += f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
        rec = error_record(point, agent, vals, job.solver, msg)
    return finish_record(rec, point, agent, vals, time.perf_counter() - t0)


def finish_record(rec: dict, point: int, agent: int, vals, wall_s: float) -> dict | None:
    """A results line from a certificate's fields: every key, the pair, its wall time (None for
    an interrupted solve, which is not a result)."""
    if str(rec.get("status")) in INTERRUPTED:
        return None
    for k in RESULT_KEYS:
        rec.setdefault(k, None)
    rec["point"], rec["agent"] = int(point), int(agent)
    rec["valuations"] = np.asarray(vals).tolist()
    rec["wall_s"] = wall_s
    return jsonable(rec)
