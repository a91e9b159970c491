"""The files of a campaign directory: the manifest, the results file, the lock; resuming.

* ``run.json``: the manifest, written once when the directory is created: checkpoint path
  (:func:`portable_ckpt`: relative to the repository when it lies in the repository or beside it,
  as ``../shared/...``, so a clone elsewhere finds it again with :func:`locate_ckpt`) and the
  weights digest (:func:`certify.network.digest`), the setting (spec and prior), seed, solver,
  time limit and the profile source. Resuming into a directory whose manifest differs in one of
  :data:`MATCH_KEYS` is refused with :class:`ManifestError`.
* ``results.jsonl``: one line per (point, agent), written by the driver process only (whatever the
  executor), each line followed by flush + fsync. Rerunning the same command skips pairs already
  present, so a killed run loses at most the pairs in flight. A torn last line (a kill or power loss
  mid-write) is detected and cut off before appending; an unreadable line elsewhere is an error
  (never guessed around). Pairs recorded with status ``"error"`` count as finished; delete their
  lines to retry.
* ``.lock``: an advisory lock, so two runs never write into one directory at once.
"""
from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from certify import network
from certify.campaign.errors import ManifestError, ResultsError, RunError
from jaxauction import checkpoints
from jaxauction.config import REPO

RESULTS = "results.jsonl"
MANIFEST = "run.json"
LOCK = ".lock"
MANIFEST_FORMAT = "jaxauction-cert-run-v1"
# Manifest entries that must agree for a run directory to be resumed.
MATCH_KEYS = ("weights_sha256", "setting", "seed", "profiles", "solver", "time_limit")


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


class Appender:
    """Append JSON lines with flush + fsync after each, so a kill loses at most a torn tail."""

    def __init__(self, path: Path):
        self.f = open(path, "a", encoding="utf-8")

    def write(self, rec: dict) -> None:
        self.f.write(json.dumps(jsonable(rec), allow_nan=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()


def jsonable(x):
    """Plain JSON types; NaN/inf become None (strict JSON)."""
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, np.bool_):
        return bool(x)
    return x


@contextlib.contextmanager
def dir_lock(out_dir: Path):
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


def portable_ckpt(ckpt) -> str:
    """The checkpoint path a manifest records: relative to the repository (POSIX separators) when
    it lies inside the repository or its parent (``checkpoints/NAME``, ``../shared/...``), else
    absolute. The path as named (links kept: ``../shared`` may be a link to elsewhere) is tried
    before the resolved one. The weights digest, not the path, is what identifies the network."""
    real = Path(ckpt).resolve()
    for p in (Path(os.path.abspath(ckpt)), real):
        for base, prefix in ((REPO, ""), (REPO.parent, "../")):   # REPO is resolved
            if p.is_relative_to(base):
                return prefix + p.relative_to(base).as_posix()
    return str(real)


def locate_ckpt(recorded: str) -> Path | None:
    """The existing path a manifest's ``"ckpt"`` names, or None. Relative: against the repository.
    Absolute (older manifests, or another checkout's): this repository's copy first, the tail from
    the last ``checkpoints`` or ``shared`` component, so a clone elsewhere reads its own files; then
    the path as recorded."""
    if not recorded:
        return None
    p = Path(recorded)
    if not p.is_absolute():
        cands = [REPO / p]
    else:
        cands = []
        for part, base in (("checkpoints", REPO), ("shared", REPO.parent)):
            if part in p.parts:
                last = len(p.parts) - 1 - p.parts[::-1].index(part)
                cands.append(base.joinpath(*p.parts[last:]))
        cands.append(p)
    return next((c.resolve() for c in cands if c.exists()), None)


def make_manifest(ckpt, spec, prior, params, seed, solver, time_limit, profile_source) -> dict:
    return {
        "format": MANIFEST_FORMAT,
        "ckpt": portable_ckpt(ckpt),
        "weights_sha256": network.digest(params),
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
    diffs = [k for k in MATCH_KEYS if _canon(_spec_defaults(old, k)) != _canon(manifest.get(k))]
    if diffs:
        what = "; ".join(f"{k}: {_short(old.get(k))} there vs {_short(manifest.get(k))} now" for k in diffs)
        raise ManifestError(f"{out_dir} was created for a different run ({what}; checkpoint there: "
                            f"{old.get('ckpt')}); use another --out to start a new run")
    return old


def resume(out_dir: Path, manifest: dict, profiles: np.ndarray) -> dict[tuple[int, int], dict]:
    """Check (or write) the manifest, repair a torn tail, and return the pairs already recorded.

    Raises:
      ManifestError: another run's directory, or a recorded point at other valuations than
        ``profiles`` gives it.
    """
    check_or_write_manifest(out_dir, manifest)
    existing = latest_by_pair(read_results(out_dir / RESULTS, repair=True))
    for (p, a), rec in existing.items():
        if p < len(profiles) and not np.allclose(np.asarray(rec.get("valuations"), np.float64), profiles[p],
                                                 atol=1e-6):
            raise ManifestError(f"{out_dir / RESULTS}: point {p} was certified at other valuations "
                                f"than this run's profile {p}; use another --out")
    return existing


def _spec_defaults(manifest: dict, key: str):
    """``manifest[key]``; for the setting, its spec with the defaults of MechanismSpec fields added
    since the manifest was written (activation, towers), so that older runs still resume."""
    x = manifest.get(key)
    if key != "setting" or not isinstance(x, dict) or not isinstance(x.get("spec"), dict):
        return x
    from jaxauction.mechanism import MechanismSpec

    try:
        return {**x, "spec": MechanismSpec.from_dict(x["spec"]).to_dict()}
    except (TypeError, ValueError):
        return x


def _canon(x):
    return json.dumps(jsonable(x), sort_keys=True)


def _short(x, n: int = 60) -> str:
    s = x if isinstance(x, str) else json.dumps(jsonable(x), sort_keys=True)
    if isinstance(x, str) and len(s) == 64 and all(c in "0123456789abcdef" for c in s):
        return s[:12]  # a sha256
    return s if len(s) <= n else s[: n - 3] + "..."
