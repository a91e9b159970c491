"""Certification runs: certify many (profile, agent) pairs, resumably, optionally in parallel.

A run certifies, for each valuation profile ``v^(p)`` (p = 0..P-1) and each requested agent i,

    rgt_i(v^(p)) = max_{b_i in [low_i, high_i]} u_i(b_i, v_-i) - u_i(v)

with :func:`certify.regret.certify_point` (or an injected ``certify_fn`` of the same signature),
and appends one JSON line per finished pair to ``OUT/results.jsonl``.

Files in ``OUT``:

* ``run.json``: the manifest, written once when the directory is created: checkpoint path and the
  sha256 of its weights, the setting (spec and prior), seed, solver, time limit and the profile
  source. Resuming into a directory whose manifest differs (other weights, setting, seed, solver,
  time limit or profile source) is refused with :class:`ManifestError`.
* ``results.jsonl``: one line per (point, agent), written by the parent process only, each line
  followed by flush + fsync. Rerunning the same command skips pairs already present, so a killed
  run loses at most the pairs in flight. A torn last line (a kill or power loss mid-write) is
  detected and cut off before appending; an unreadable line elsewhere is an error (never guessed
  around). Pairs recorded with status ``"error"`` count as finished; delete their lines to retry.

Profiles are either sampled from the mechanism's prior, deterministically in the seed and
prefix-stable (profile p uses the key ``fold_in(PRNGKey(seed), p)``, so the first K profiles of a
P-point run are those of a K-point run), or read from a JSON file (a list of N x M matrices),
validated for shape, finiteness and the prior's support.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import json
import math
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from jaxauction import checkpoints, priors

RESULTS = "results.jsonl"
MANIFEST = "run.json"
LOCK = ".lock"
MANIFEST_FORMAT = "jaxauction-cert-run-v1"

# Keys every results line carries (stable names, from Certificate.to_json()).
RESULT_KEYS = ("point", "agent", "valuations", "truthful_utility", "regret_lower", "regret_upper",
               "best_misreport", "status", "solver", "gap", "nodes", "time_bounds_s", "time_build_s",
               "time_solve_s", "mip_objective", "mip_network_error", "pgd_regret", "n_binaries",
               "n_unstable_relus", "message")
# Manifest entries that must agree for a run directory to be resumed.
SOLVERS = ("auto", "gurobi", "scip", "planar")
MATCH_KEYS = ("weights_sha256", "setting", "seed", "profiles", "solver", "time_limit")
# A solve stopped by Ctrl-C is not a result: such certificates are discarded, not recorded.
INTERRUPTED = frozenset({"interrupted", "userinterrupt", "user_interrupt"})
SUPPORT_TOL = 1e-6


class RunError(ValueError):
    """A certification run cannot proceed: bad profiles or agents, or an unusable output directory."""


class ProfileError(RunError):
    """A profiles file or array has the wrong shape, non-finite values, or values outside the support."""


class ManifestError(RunError):
    """The output directory belongs to a different run (checkpoint, setting, seed, ...)."""


class ResultsError(RunError):
    """``results.jsonl`` is corrupt somewhere other than a torn last line."""


# --------------------------------------------------------------------------------------------
# Profiles


def sample_profiles(prior: priors.UniformPrior, seed: int, points: int) -> np.ndarray:
    """(P, N, M) float64 profiles; profile p drawn with ``fold_in(PRNGKey(seed), p)`` (prefix-stable).

    Profiles are drawn in jitted blocks of :data:`SAMPLE_BLOCK` indices (one compilation per prior),
    each depending only on its own index, so any P gives the same first profiles.
    """
    if points < 0:
        raise RunError(f"points must be non-negative, got {points}")
    blocks = [np.asarray(_sample_block(prior, int(seed), start))
              for start in range(0, points, SAMPLE_BLOCK)]
    if not blocks:
        return np.zeros((0, prior.n_agents, prior.n_items))
    return np.concatenate(blocks)[:points].astype(np.float32).astype(np.float64)


SAMPLE_BLOCK = 256


@functools.lru_cache(maxsize=None)
def _sampler(prior: priors.UniformPrior):
    import jax
    import jax.numpy as jnp

    @jax.jit
    def block(base, start):
        idx = start + jnp.arange(SAMPLE_BLOCK, dtype=jnp.uint32)
        keys = jax.vmap(lambda i: jax.random.fold_in(base, i))(idx)
        return jax.vmap(lambda k: prior.sample(k, 1)[0])(keys)

    return block


def _sample_block(prior, seed: int, start: int):
    import jax
    import jax.numpy as jnp

    return _sampler(prior)(jax.random.PRNGKey(seed), jnp.uint32(start))


def validate_profiles(profiles: Any, n_agents: int, n_items: int, low: np.ndarray, high: np.ndarray,
                      what: str = "profiles") -> np.ndarray:
    """Check a list/array of N x M profiles; return it as a (P, N, M) float64 array.

    Raises:
      ProfileError: naming the first offending profile index (wrong shape, non-numeric, NaN/inf,
        or a value outside ``[low, high]``).
    """
    if isinstance(profiles, np.ndarray):
        items = list(profiles) if profiles.ndim >= 1 else [profiles]
    elif isinstance(profiles, (list, tuple)):
        items = list(profiles)
    else:
        raise ProfileError(f"{what}: expected a list of {n_agents}x{n_items} matrices, got {type(profiles).__name__}")
    if not items:
        raise ProfileError(f"{what}: no profiles given")
    out = np.empty((len(items), n_agents, n_items))
    for k, item in enumerate(items):
        try:
            arr = np.asarray(item, dtype=np.float64)
        except (TypeError, ValueError):
            raise ProfileError(f"{what}: profile {k} is not a numeric {n_agents}x{n_items} matrix") from None
        if arr.shape != (n_agents, n_items):
            raise ProfileError(f"{what}: profile {k} has shape {arr.shape}, the mechanism needs "
                               f"({n_agents}, {n_items}) (agents x items)")
        if not np.all(np.isfinite(arr)):
            raise ProfileError(f"{what}: profile {k} contains NaN or inf")
        bad = (arr < low - SUPPORT_TOL) | (arr > high + SUPPORT_TOL)
        if bad.any():
            i, j = map(int, np.argwhere(bad)[0])
            raise ProfileError(f"{what}: profile {k} value {arr[i, j]:g} for agent {i}, item {j} is outside "
                               f"the prior's support [{low[i, j]:g}, {high[i, j]:g}]")
        out[k] = np.clip(arr, low, high)
    return out


def read_profiles_file(path: str | Path, n_agents: int, n_items: int, low: np.ndarray,
                       high: np.ndarray) -> np.ndarray:
    """Read and validate ``FILE.json`` holding a list of N x M valuation matrices."""
    path = Path(path)
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        raise ProfileError(f"profiles file {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProfileError(f"profiles file {path} is not readable JSON: {e}") from None
    return validate_profiles(doc, n_agents, n_items, low, high, what=f"profiles file {path}")


def array_sha256(arr: np.ndarray) -> str:
    a = np.ascontiguousarray(np.asarray(arr, np.float64))
    return hashlib.sha256(repr(a.shape).encode() + a.tobytes()).hexdigest()


def weights_sha256(params) -> str:
    """Hash of the weights (names, shapes, float32 bytes): identifies a checkpoint's content."""
    h = hashlib.sha256()
    for k, v in sorted(checkpoints.flatten_tree(params).items()):
        a = np.ascontiguousarray(np.asarray(v, np.float32))
        h.update(k.encode() + repr(a.shape).encode() + a.tobytes())
    return h.hexdigest()


def parse_agents(agents: str | int | Iterable[int], n_agents: int) -> list[int]:
    """``"all"``, ``"0,1"``, an int or a list of ints -> sorted unique agent indices (range-checked)."""
    if isinstance(agents, str):
        if agents.strip().lower() == "all":
            return list(range(n_agents))
        try:
            agents = [int(a) for a in agents.split(",") if a.strip()]
        except ValueError:
            raise RunError(f"agents must be 'all' or comma-separated indices, got {agents!r}") from None
    elif isinstance(agents, (int, np.integer)):
        agents = [int(agents)]
    agents = sorted({int(a) for a in agents})
    if not agents:
        raise RunError("no agents given")
    bad = [a for a in agents if not 0 <= a < n_agents]
    if bad:
        raise RunError(f"agent index {bad[0]} out of range: the mechanism has {n_agents} agent(s) "
                       f"(valid: 0..{n_agents - 1})")
    return agents


# --------------------------------------------------------------------------------------------
# results.jsonl


def read_results(path: str | Path, *, repair: bool = False) -> list[dict]:
    """All records of a ``results.jsonl``, in file order.

    A torn tail (bytes after the last complete, parseable line) is ignored; with ``repair=True``
    the file is truncated to its last good line (and a parseable last line lacking its newline
    gets one), so later appends start on a fresh line.

    Raises:
      ResultsError: a line other than the tail is not a JSON object with ``point`` and ``agent``.
    """
    path = Path(path)
    if not path.exists():
        return []
    data = path.read_bytes()
    records, good_end, bad = [], 0, None
    pos = 0
    for lineno, raw in enumerate(data.split(b"\n"), start=1):
        end = pos + len(raw)
        has_newline = end < len(data)
        if raw.strip():
            try:
                rec = json.loads(raw)
                ok = isinstance(rec, dict) and "point" in rec and "agent" in rec
            except (json.JSONDecodeError, UnicodeDecodeError):
                ok = False
            if ok and bad is None:
                records.append(rec)
                good_end = end + 1 if has_newline else end
            elif ok:  # a good line after a bad one: the bad one was not a torn tail
                raise ResultsError(f"{path}: line {bad} is corrupt (not a complete JSON result); "
                                   f"fix or delete that line and rerun")
            elif bad is None:
                bad = lineno
        elif bad is None:
            good_end = end + 1 if has_newline else end
        pos = end + 1
    needs_newline = good_end > 0 and data[good_end - 1:good_end] != b"\n"
    if bad is not None or needs_newline:
        if bad is not None:
            print(f"warning: {path}: ignoring a torn last line (line {bad}, from an interrupted write)",
                  file=sys.stderr)
        if repair:
            with open(path, "r+b") as f:
                f.truncate(good_end)
                if needs_newline:
                    f.seek(good_end)
                    f.write(b"\n")
                f.flush()
                os.fsync(f.fileno())
    return records


def latest_by_pair(records: Iterable[dict]) -> dict[tuple[int, int], dict]:
    """``{(point, agent): record}``, the last line winning if a pair appears more than once."""
    out = {}
    for r in records:
        out[(int(r["point"]), int(r["agent"]))] = r
    return out


class _Appender:
    """Append JSON lines with flush + fsync after each, so a kill loses at most a torn tail."""

    def __init__(self, path: Path):
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(_jsonable(rec), allow_nan=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def _jsonable(x):
    """Plain JSON types; NaN/inf become None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


@contextlib.contextmanager
def _dir_lock(out_dir: Path):
    """Refuse two runs writing into the same directory at once (advisory flock)."""
    import fcntl

    f = open(out_dir / LOCK, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise RunError(f"another certification run is writing to {out_dir}") from None
    try:
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


# --------------------------------------------------------------------------------------------
# Manifest


def make_manifest(ckpt, spec, prior, params, seed, solver, time_limit, profile_source) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "ckpt": str(Path(ckpt).resolve()),
        "weights_sha256": weights_sha256(params),
        "setting": {"spec": spec.to_dict(), "prior": prior.to_dict()},
        "seed": int(seed),
        "solver": solver,
        "time_limit": None if time_limit is None else float(time_limit),
        "profiles": profile_source,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def check_or_write_manifest(out_dir: Path, manifest: dict) -> dict:
    """Write ``run.json`` for a new run; for one with results, require :data:`MATCH_KEYS` to agree.

    A directory whose ``results.jsonl`` is missing or empty (e.g. a run refused by the solver's
    license before its first result) is simply taken over by the new run.
    """
    path = out_dir / MANIFEST
    has_results = (out_dir / RESULTS).exists() and (out_dir / RESULTS).stat().st_size > 0
    if not path.exists() or not has_results:  # nothing recorded yet: (re)start this run here
        if has_results:
            raise ManifestError(f"{out_dir} holds {RESULTS} but no {MANIFEST}; refusing to mix runs "
                                f"(use another --out)")
        checkpoints.atomic_write_text(path, json.dumps(manifest, indent=1))
        return manifest
    try:
        old = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ManifestError(f"{path} is unreadable ({e}); use another --out") from None
    diffs = [k for k in MATCH_KEYS if _canon(old.get(k)) != _canon(manifest.get(k))]
    if diffs:
        what = "; ".join(f"{k}: {_short(old.get(k))} there vs {_short(manifest.get(k))} now" for k in diffs)
        raise ManifestError(f"{out_dir} was created for a different run ({what}; checkpoint there: "
                            f"{old.get('ckpt')}); use another --out to start a new run")
    return old


def _canon(x):
    return json.dumps(_jsonable(x), sort_keys=True)


def _short(x, n: int = 60) -> str:
    s = x if isinstance(x, str) else json.dumps(_jsonable(x), sort_keys=True)
    if isinstance(x, str) and len(s) == 64 and all(c in "0123456789abcdef" for c in s):
        return s[:12]  # a sha256
    return s if len(s) <= n else s[: n - 3] + "..."


# --------------------------------------------------------------------------------------------
# Certifying one pair (the same code in the parent and in workers)


@dataclasses.dataclass
class _Job:
    params: Any
    spec: Any
    low: np.ndarray
    high: np.ndarray
    certify_fn: Callable
    solver: str
    time_limit: float | None
    threads: int
    certify_kwargs: dict


def _default_certify_fn():
    from certify import regret  # the core, imported lazily (and only where needed)

    return regret.certify_point


def fatal_exceptions() -> tuple[type, ...]:
    """Exceptions that abort the whole run instead of being recorded per point.

    A solver that is unavailable or refuses its license, or an architecture the MIP cannot encode,
    fails every point the same way: ``certify.backends.LicenseLimitError``,
    ``certify.encoders.UnsupportedArchitecture``, any class in ``certify.backends.FATAL_ERRORS``, and
    any exception with a true ``fatal`` attribute abort the run.
    """
    out = [MemoryError]
    try:
        from certify import backends  # type: ignore

        out += list(getattr(backends, "FATAL_ERRORS", ()))
        if hasattr(backends, "LicenseLimitError"):
            out.append(backends.LicenseLimitError)
        from certify import encoders  # type: ignore

        if hasattr(encoders, "UnsupportedArchitecture"):
            out.append(encoders.UnsupportedArchitecture)
    except Exception:  # the core may not exist or may not import here; nothing more to add
        pass
    return tuple(out)


def check_certifiable(spec, solver: str = "auto") -> None:
    """Refuse, before any work, a mechanism the MIP core cannot encode (e.g. a softmax allocation),
    or one outside what ``solver="planar"`` handles (free payment, 2 items)."""
    try:
        from certify import encoders, planar
    except ImportError:
        return
    try:
        encoders.check_supported(spec)
        if solver == "planar":
            planar.check(spec)
    except ValueError as e:
        raise RunError(str(e)) from None


def _error_record(point: int, agent: int, vals: np.ndarray, solver: str, message: str) -> dict:
    rec = {k: None for k in RESULT_KEYS}
    rec.update(point=int(point), agent=int(agent), valuations=np.asarray(vals).tolist(), status="error",
               solver=solver, message=message)
    return rec


def _certify_one(job: _Job, point: int, agent: int, vals: np.ndarray) -> dict | None:
    """Certify one pair; an exception becomes an ``"error"`` record unless it is fatal."""
    t0 = time.perf_counter()
    try:
        cert = job.certify_fn(job.params, job.spec, np.asarray(vals), int(agent), low=job.low, high=job.high,
                              solver=job.solver, time_limit=job.time_limit, threads=job.threads,
                              **job.certify_kwargs)
        rec = dict(cert.to_json() if hasattr(cert, "to_json") else cert)
    except fatal_exceptions():
        raise
    except Exception as e:  # one bad point must not end the run
        if getattr(e, "fatal", False):
            raise
        msg = f"{type(e).__name__}: {e}"
        tb = traceback.extract_tb(e.__traceback__)
        if tb:
            msg += f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})"
        rec = _error_record(point, agent, vals, job.solver, msg)
    if str(rec.get("status")) in INTERRUPTED:
        return None
    for k in RESULT_KEYS:
        rec.setdefault(k, None)
    rec["point"], rec["agent"] = int(point), int(agent)
    rec["valuations"] = np.asarray(vals).tolist()
    rec["wall_s"] = time.perf_counter() - t0
    return _jsonable(rec)


_WORKER: _Job | None = None

# Environment for worker processes: CPU JAX, one thread per library (set before they import jax).
WORKER_ENV = {
    "JAX_PLATFORMS": "cpu",
    "XLA_FLAGS": "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1",
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "TF_CPP_MIN_LOG_LEVEL": "3",
}


def _exit_when_orphaned(parent: int, period: float = 1.0) -> None:
    """Daemon thread body: end this worker once its parent is gone (killed by a signal that left it
    no chance to stop its workers, e.g. SIGKILL), instead of finishing a MIP nobody will read."""
    import threading
    import time

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

    jax.config.update("jax_platforms", "cpu")
    global _WORKER
    params, spec, info, prior = checkpoints.load_with_prior(ckpt)
    low, high = prior.bounds()
    _WORKER = _Job(params, spec, low.astype(np.float64), high.astype(np.float64),
                   certify_fn or _default_certify_fn(), solver, time_limit, 1, certify_kwargs)


def _worker_task(point: int, agent: int, vals) -> dict | None:
    assert _WORKER is not None, "worker not initialised"
    return _certify_one(_WORKER, point, agent, np.asarray(vals))


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


def _run_parallel(ckpt, todo, profiles, workers, certify_fn, solver, time_limit, certify_kwargs, on_result):
    import multiprocessing as mp
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
    from concurrent.futures.process import BrokenProcessPool

    ctx = mp.get_context("spawn")
    with _env(WORKER_ENV):  # inherited by the spawned workers
        ex = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_worker_init,
                                 initargs=(str(ckpt), certify_fn, solver, time_limit, certify_kwargs, os.getpid()))
        old_term = _raise_on_sigterm()
        try:
            pending = set()
            queue = list(todo)
            # Keep at most 2 tasks per worker queued, so an abort leaves little half-done work.
            while queue or pending:
                while queue and len(pending) < 2 * workers:
                    p, a = queue.pop(0)
                    pending.add(ex.submit(_worker_task, p, a, profiles[p].tolist()))
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    on_result(fut.result())
        except BrokenProcessPool as e:
            _terminate(ex)
            raise RunError(f"a worker process died ({e}); finished results are saved, rerun to resume") from None
        except BaseException:
            _terminate(ex)
            raise
        finally:
            _restore_sigterm(old_term)
        ex.shutdown(wait=True)


def _raise_on_sigterm():
    """Turn SIGTERM (``kill``, a batch scheduler's stop) into KeyboardInterrupt while workers run,
    so the parent stops them like on Ctrl-C; returns the previous handler (None off the main thread)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(old) -> None:
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
# The run


def run_certification(ckpt: str | Path, out_dir: str | Path, *, points: int = 100,
                      agents: str | Sequence[int] = "all", seed: int = 0, time_limit: float | None = None,
                      solver: str = "auto", workers: int = 1, profiles: Any = None,
                      certify_fn: Callable | None = None, progress: bool = True, threads: int = 1,
                      certify_kwargs: dict | None = None) -> list[dict]:
    """Certify ``points`` profiles x ``agents``; append to ``out_dir/results.jsonl``; resume if present.

    Args:
      ckpt: run directory, checkpoint directory, or reference ``NAME.npz`` (see
        :func:`jaxauction.checkpoints.load_mechanism`).
      out_dir: where ``run.json`` and ``results.jsonl`` live (created if missing).
      points: number of profiles sampled from the prior (ignored when ``profiles`` is given).
      agents: ``"all"``, ``"0,1"`` or a list of agent indices.
      seed: PRNG seed of the profile sampling.
      time_limit: MIP time limit in seconds per pair (``None``: none).
      solver: ``"auto"``, ``"gurobi"``, ``"scip"`` or ``"planar"`` (passed to ``certify_fn``).
      workers: processes certifying in parallel (``spawn``; each loads the checkpoint once and
        runs JAX on one CPU thread). ``1`` runs in this process.
      profiles: ``None`` (sample), a (P, N, M) array, or the path of a JSON list of N x M matrices.
      certify_fn: ``certify_point``-compatible function (default :func:`certify.regret.certify_point`);
        must be a module-level function when ``workers > 1``.
      progress: show a tqdm bar with ETA and the running mean certified regret.
      threads: solver threads per pair in serial mode (workers always use 1).
      certify_kwargs: extra keyword arguments for ``certify_fn`` (e.g. ``pgd_steps``).

    Returns:
      One record per requested (point, agent), sorted, the old ones included.

    Raises:
      CheckpointError, RunError (ProfileError, ManifestError, ResultsError): bad input.
    """
    params, spec, info, prior = checkpoints.load_with_prior(ckpt)
    low, high = (b.astype(np.float64) for b in prior.bounds())
    agent_list = parse_agents(agents, spec.n_agents)
    if solver not in SOLVERS:
        raise RunError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if certify_fn is None:
        check_certifiable(spec, solver)
    fn = certify_fn or _default_certify_fn()
    if workers < 1:
        raise RunError(f"workers must be >= 1, got {workers}")
    if time_limit is not None and not time_limit > 0:
        raise RunError(f"time limit must be positive, got {time_limit}")
    if profiles is None:
        prof = sample_profiles(prior, seed, points)
        source = {"kind": "prior", "seed": int(seed)}
    elif isinstance(profiles, (str, Path)):
        prof = read_profiles_file(profiles, spec.n_agents, spec.n_items, low, high)
        source = {"kind": "file", "path": str(Path(profiles).resolve()), "sha256": array_sha256(prof)}
    else:
        prof = validate_profiles(profiles, spec.n_agents, spec.n_items, low, high, what="profiles array")
        source = {"kind": "array", "sha256": array_sha256(prof)}
    source_key = {k: v for k, v in source.items() if k != "path"}  # a moved file is the same source

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with _dir_lock(out_dir):
        manifest = make_manifest(ckpt, spec, prior, params, seed, solver, time_limit, source_key)
        check_or_write_manifest(out_dir, manifest)
        existing = latest_by_pair(read_results(out_dir / RESULTS, repair=True))
        for (p, a), rec in existing.items():
            if p < len(prof) and not np.allclose(np.asarray(rec.get("valuations"), np.float64), prof[p],
                                                 atol=1e-6):
                raise ManifestError(f"{out_dir / RESULTS}: point {p} was certified at other valuations "
                                    f"than this run's profile {p}; use another --out")
        wanted = [(p, a) for p in range(len(prof)) for a in agent_list]
        todo = [pa for pa in wanted if pa not in existing]
        results = {pa: existing[pa] for pa in wanted if pa in existing}

        bar = _progress(len(wanted), len(wanted) - len(todo), progress)
        _update_bar(bar, results.values())
        appender = _Appender(out_dir / RESULTS)

        def on_result(rec):
            if rec is None:  # interrupted solve: not a result
                raise KeyboardInterrupt
            appender.write(rec)
            results[(rec["point"], rec["agent"])] = rec
            bar.update(1)
            _update_bar(bar, results.values())

        try:
            if workers == 1 or len(todo) <= 1:
                job = _Job(params, spec, low, high, fn, solver, time_limit, threads, dict(certify_kwargs or {}))
                for p, a in todo:
                    on_result(_certify_one(job, p, a, prof[p]))
            else:
                _run_parallel(ckpt, todo, prof, min(workers, len(todo)), certify_fn, solver, time_limit,
                              dict(certify_kwargs or {}), on_result)
        finally:
            appender.close()
            bar.close()
    return [results[pa] for pa in wanted if pa in results]


def is_proven(rec: dict) -> bool:
    """Certified: the solver proved optimality and reported an upper bound."""
    return rec.get("status") == "optimal" and rec.get("regret_upper") is not None


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
