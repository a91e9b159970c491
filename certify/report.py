"""Summaries and plots of a certification run (``OUT/results.jsonl`` -> ``summary.md/json``, PNGs).

Per agent (and over all agents when there are several):

* certified regret: mean, std (population, ddof=0) and max of ``regret_upper`` over *proven*
  pairs only (status ``"optimal"``). ``regret_upper`` is the proven upper bound on
  ``max_b u_i(b, v_-i) - u_i(v)`` for the exact function and for float32 ``mechanism.apply``
  (:mod:`certify.certificate`), so it is the sound number to report; beside it the same
  statistics of ``regret_upper_exact`` (the exact function alone) and the mean rounding margin;
* the mean empirical (PGD) regret over the same proven pairs, and the ratio
  ``mean certified / mean PGD`` (>= 1 up to solver tolerance, since PGD is a lower bound);
* solve time (``time_solve_s``: the MIP solver, or the planar enumeration) mean, std, p50, p95 (linear interpolation) and max over all
  pairs that reached the solver (time-outs included: they are times too), and the status counts.

Pairs that were not proven (time-outs and the like) are never counted as certified: they are
listed with the bounds the solver reached (``regret_lower`` .. ``regret_upper``).

Confidence bounds (:mod:`certify.stats`; only for profiles sampled from the prior, which are
i.i.d.): every row gains ``expected_regret_ucb``, a ``1 - ucb_delta`` upper bound on
``E_v[regret_i(v)]`` (empirical Bernstein), and ``exceed_prob_ucb`` ``{t: bound on P(regret_i > t)}``
(Clopper-Pearson), from ``X_k = clip(bound_k, 0, R_i)`` over the profiles ``k = 0..K-1`` (``K - 1``
the largest recorded point). ``bound_k`` is ``regret_upper`` if proven; **unproven pairs are counted
against the bound**: a time-out's ``regret_upper`` (the bound reached) if finite, else ``R_i``; an
error, or a pair missing from the file, ``R_i`` (``ucb_unproven`` counts them, ``ucb_missing`` the
missing ones). The range ``R_i`` is proven (:func:`regret_ranges`): the whole-space certificate of
``space.json`` when one for these weights and this box is found, else (and whenever smaller) the
trivial bound :func:`certify.stats.trivial_regret_range`. The "all" row's variable is the
per-profile mean over agents (agents of one profile are not independent; profiles are), so it
bounds ``mean_i E[regret_i]``, in ``[0, mean_i R_i]``; its exceedance bounds use the per-profile max
over agents: ``P(some agent's regret > t)``.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from certify import stats
from certify.campaign.results import MANIFEST, RESULTS, latest_by_pair, read_results
from certify.certificate import is_proven
from certify.report_plots import PLOT_ARROWS, PLOT_REGRET, PLOT_TIME, _solve_label, plot_all  # noqa: F401
from certify.space_report import SPACE_DIR, SPACE_JSON

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
MAX_LISTED = 20


def load(out_dir: str | Path) -> tuple[list[dict], dict | None]:
    """Deduplicated records of ``out_dir/results.jsonl`` sorted by (point, agent), and ``run.json`` (or None)."""
    out_dir = Path(out_dir)
    recs = latest_by_pair(read_results(out_dir / RESULTS))
    manifest = None
    if (out_dir / MANIFEST).exists():
        try:
            manifest = json.loads((out_dir / MANIFEST).read_text())
        except (OSError, json.JSONDecodeError):
            manifest = None
    return [recs[k] for k in sorted(recs)], manifest


def _stats(xs: list[float], percentiles: bool = False) -> dict:
    if not xs:
        keys = ("mean", "std", "max") + (("p50", "p95") if percentiles else ())
        return {k: None for k in keys}
    a = np.asarray(xs, np.float64)
    out = {"mean": float(a.mean()), "std": float(a.std()), "max": float(a.max())}
    if percentiles:
        out["p50"] = float(np.percentile(a, 50))
        out["p95"] = float(np.percentile(a, 95))
    return out


def summarize_group(records: list[dict]) -> dict:
    """Statistics of one group of records (see module docstring)."""
    proven = [r for r in records if is_proven(r)]
    errors = [r for r in records if r.get("status") == "error"]
    unproven = [r for r in records if not is_proven(r) and r.get("status") != "error"]
    cert = [float(r["regret_upper"]) for r in proven]
    exact = [float(r["regret_upper_exact"]) for r in proven if r.get("regret_upper_exact") is not None]
    margins = [float(r["margin"]) for r in proven if r.get("margin") is not None]
    pgd = [float(r["pgd_regret"]) for r in proven if r.get("pgd_regret") is not None]
    pgd_mean = float(np.mean(pgd)) if pgd else None
    cert_mean = float(np.mean(cert)) if cert else None
    ratio = cert_mean / pgd_mean if cert_mean is not None and pgd_mean and pgd_mean > 0 else None
    times = [float(r["time_solve_s"]) for r in records if r.get("time_solve_s") is not None]
    totals = [sum(float(r.get(k) or 0.0) for k in ("time_bounds_s", "time_build_s", "time_solve_s"))
              for r in records if r.get("status") != "error"]
    return {
        "count": len(records),
        "proven": len(proven),
        "unproven": len(unproven),
        "errors": len(errors),
        "status_counts": dict(sorted(Counter(str(r.get("status")) for r in records).items())),
        "certified_regret": _stats(cert),
        "certified_regret_exact": _stats(exact),
        "margin_mean": float(np.mean(margins)) if margins else None,
        "pgd_regret_mean": pgd_mean,
        "pgd_points": len(pgd),
        "certified_over_pgd": ratio,
        "solve_time_s": _stats(times, percentiles=True),
        "total_time_s_mean": float(np.mean(totals)) if totals else None,
        "unproven_pairs": [
            {"point": r["point"], "agent": r["agent"], "status": r.get("status"),
             "regret_lower": r.get("regret_lower"), "regret_upper": r.get("regret_upper"), "gap": r.get("gap")}
            for r in unproven],
        "error_pairs": [{"point": r["point"], "agent": r["agent"], "message": r.get("message")} for r in errors],
    }


def summarize(records: Iterable[dict]) -> dict:
    """``{"rows": [{"agent": 0, ...stats}, ..., {"agent": "all", ...}], "count": n}``."""
    records = list(records)
    agents = sorted({int(r["agent"]) for r in records})
    rows = [{"agent": a, **summarize_group([r for r in records if int(r["agent"]) == a])} for a in agents]
    if len(agents) > 1:
        rows.append({"agent": "all", **summarize_group(records)})
    return {"count": len(records), "rows": rows, "solvers": sorted({r.get("solver") or "none" for r in records})}


# --------------------------------------------------------------------------------------------
# Confidence bounds on expected regret (module docstring; the math is in certify.stats)


def _box(manifest: dict) -> tuple[dict, np.ndarray, np.ndarray]:
    """The run's spec (a dict with MechanismSpec's defaults) and valuation box (float64), widened
    to cover its float32 rounding too (the certifiers' box is ``prior.bounds()``, float32)."""
    from jaxauction import priors
    from jaxauction.mechanism import MechanismSpec

    setting = manifest.get("setting") or {}
    spec = MechanismSpec.from_dict(setting.get("spec") or {}).to_dict()
    prior = priors.from_dict(setting.get("prior"), spec["n_agents"], spec["n_items"])
    lo, hi = np.asarray(prior.low, np.float64), np.asarray(prior.high, np.float64)
    lo32, hi32 = (b.astype(np.float64) for b in prior.bounds())
    return spec, np.minimum(lo, lo32), np.maximum(hi, hi32)


def _space_uppers(path: Path, manifest: dict, spec: dict, lo, hi) -> dict[int, float]:
    """``{agent: proven whole-space max regret}`` of a ``space.json`` made for this run's weights
    (``digest``), box and spec; ValueError naming the mismatch otherwise."""
    try:
        space = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable ({e})") from None
    if not isinstance(space, dict) or not isinstance(space.get("agents"), list):
        raise ValueError(f"{path}: not a space.json (no 'agents' list)")
    if not manifest.get("weights_sha256") or space.get("digest") != manifest.get("weights_sha256"):
        raise ValueError(f"{path}: certifies other weights (digest {str(space.get('digest'))[:12]}, "
                         f"this run's {str(manifest.get('weights_sha256'))[:12]})")
    for key, mine in (("low", lo), ("high", hi)):
        if space.get(key) is not None:
            theirs = np.broadcast_to(np.asarray(space[key], np.float64), mine.shape).astype(np.float32)
            if not np.array_equal(theirs, mine.astype(np.float32)):
                raise ValueError(f"{path}: certifies another valuation box ({key} {space[key]})")
    from jaxauction.mechanism import MechanismSpec

    finite = lambda u: isinstance(u, (int, float)) and not isinstance(u, bool) and math.isfinite(u)
    out = {}
    try:
        if isinstance(space.get("spec"), dict) and MechanismSpec.from_dict(space["spec"]).to_dict() != spec:
            raise ValueError(f"{path}: certifies another mechanism spec")
        for rec in space["agents"]:
            u, u32 = rec.get("upper"), rec.get("upper_float32")
            if not finite(u):
                continue  # nothing proven for this agent (e.g. an error record): the trivial bound stands
            u = max(float(u), float(u32)) if finite(u32) else float(u)
            if u < 0:
                raise ValueError(f"{path}: agent {rec.get('agent')}: negative regret bound {u}")
            out[int(rec["agent"])] = u
    except (AttributeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: malformed ({type(e).__name__}: {e})") from None
    return out


def regret_ranges(out_dir: str | Path, manifest: dict, space: str | Path | None = None):
    """Proven per-agent ranges ``R_i >= max_v regret_i(v)``: ``(R (N,), sources (N,), notes)``.

    The trivial bound (:func:`certify.stats.trivial_regret_range`), replaced by a ``space.json``
    agent's ``upper`` (the larger of it and ``upper_float32`` when both are given) where smaller.
    The file is ``space`` if given (a mismatch with this run is then a ValueError), else the first
    of ``out_dir/space.json``, ``out_dir/../space/space.json``,
    ``out_dir/../../space/<out_dir name>/space.json`` and ``out_dir/../space/<out_dir name>/space.json``
    (the shipped ``results/NAME`` beside ``results/space/NAME``) that exists, used only if it
    certifies these weights (``digest``), box and spec (otherwise ignored, with a note).
    """
    spec, lo, hi = _box(manifest)
    R = stats.trivial_regret_range(spec["payment"], spec["payment_max"], lo, hi)
    sources, notes = [stats.RANGE_TRIVIAL] * len(R), []
    out_dir = Path(out_dir)
    if space is not None:
        uppers = _space_uppers(Path(space), manifest, spec, lo, hi)
    else:
        uppers = {}
        # beside it: RUN_DIR/{cert,space}/, or runs/{cert,space}/<npz stem>/ (certify.py's defaults),
        # or results/NAME beside results/space/NAME (what the repository ships)
        for path in (out_dir / SPACE_JSON, out_dir.parent / SPACE_DIR / SPACE_JSON,
                     out_dir.parent.parent / SPACE_DIR / out_dir.name / SPACE_JSON,
                     out_dir.parent / SPACE_DIR / out_dir.name / SPACE_JSON):
            if path.exists():
                try:
                    uppers = _space_uppers(path, manifest, spec, lo, hi)
                except ValueError as e:
                    notes.append(f"ignored {e}")
                break
    for a, u in uppers.items():
        if 0 <= a < len(R) and u < R[a]:
            R[a], sources[a] = u, stats.RANGE_SPACE
    return R, sources, notes


def confidence_bounds(records: list[dict], manifest: dict | None, out_dir: str | Path, *, space=None,
                      delta: float = stats.DEFAULT_DELTA, thresholds=stats.DEFAULT_THRESHOLDS,
                      method: str = stats.BERNSTEIN) -> dict:
    """``{agent or "all": {key: value}}`` under the :mod:`certify.stats` keys (module docstring)."""
    delta = stats.check_delta(delta)
    agents = sorted({int(r["agent"]) for r in records})
    keys = list(agents) + (["all"] if len(agents) > 1 else [])
    empty = {stats.KEY_UCB: None, stats.KEY_DELTA: delta, stats.KEY_METHOD: method, stats.KEY_EXCEED: {},
             stats.KEY_EXCEED_METHOD: stats.EXCEED_METHOD, stats.KEY_RANGE: None,
             stats.KEY_RANGE_SOURCE: None, stats.KEY_SAMPLES: 0, stats.KEY_UNPROVEN: None,
             stats.KEY_MISSING: None}
    n_points = 1 + max((int(r["point"]) for r in records), default=-1)
    kind = ((manifest or {}).get("profiles") or {}).get("kind")
    why = (f"no {MANIFEST}: the profiles' distribution is unknown" if manifest is None else
           f"profiles are not i.i.d. prior samples (kind {kind!r})" if kind != "prior" else
           f"needs at least 2 profiles, got {n_points}" if n_points < 2 else None)
    if why is None:
        try:
            _box(manifest)
        except (TypeError, ValueError, KeyError, AttributeError) as e:
            why = f"{MANIFEST} has no usable spec and prior ({e})"
    if why:
        return {a: {**empty, stats.KEY_NOTE: why} for a in keys}
    R, sources, notes = regret_ranges(out_dir, manifest, space)
    if agents[-1] >= len(R):
        raise ValueError(f"records name agent {agents[-1]} but the run's mechanism has {len(R)} agents")
    X, unproven, missing = stats.conservative_samples(records, agents, n_points, R, is_proven)
    out = {}
    for c, a in enumerate(agents):
        out[a] = {**stats.ucb_fields(X[:, c], R[a], delta, thresholds, method),
                  stats.KEY_RANGE_SOURCE: sources[a], stats.KEY_UNPROVEN: unproven[a],
                  stats.KEY_MISSING: missing[a], stats.KEY_NOTE: "; ".join(notes) or None}
    if "all" in keys:
        Rs = R[agents]
        out["all"] = {**stats.ucb_fields(X.mean(axis=1), float(Rs.mean()), delta, thresholds, method),
                      # the tail variable: max_i X_i, in [0, max_i R_i]
                      stats.KEY_EXCEED: stats.exceedance_ucb(X.max(axis=1), float(Rs.max()), thresholds, delta),
                      stats.KEY_RANGE_SOURCE: "+".join(sorted({sources[a] for a in agents})),
                      stats.KEY_UNPROVEN: sum(unproven.values()), stats.KEY_MISSING: sum(missing.values()),
                      stats.KEY_NOTE: "; ".join(notes + [ALL_NOTE])}
    return out


ALL_NOTE = ("'all': the per-profile mean over agents (bounds mean_i E[regret_i]), and for P(> t) the "
            "per-profile max over agents (bounds P(some agent's regret > t))")


def _f(x, fmt: str = ".5f") -> str:
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    return format(x, fmt)


def _md_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[k]) for r in rows)) if rows else len(h) for k, h in enumerate(headers)]
    line = lambda cells: "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths)) + " |"
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])


def format_summary(summary: dict, manifest: dict | None = None) -> str:
    """Markdown (readable as plain text): regret table, time table, status counts, unproven pairs."""
    out = []
    if manifest:
        spec = (manifest.get("setting") or {}).get("spec") or {}
        tl = manifest.get("time_limit")
        out.append(f"Checkpoint: {manifest.get('ckpt')}  \n"
                   f"Setting: {spec.get('n_agents')}x{spec.get('n_items')}, hidden={spec.get('hidden')}, "
                   f"{spec.get('allocation')} allocation, {spec.get('payment')} payment  \n"
                   f"Solver: {manifest.get('solver')}, time limit: {'none' if tl is None else f'{tl:g} s'}, "
                   f"profiles: {_source(manifest.get('profiles'))}\n")
    rows = summary["rows"]
    out.append("Certified regret = proven upper bound (status optimal only) for float32 `mechanism.apply` and "
               "the exact function; 'exact' = for the exact function alone; margin = the float rounding margin "
               "included; PGD regret and the ratio over the same proven pairs.\n")
    ex = lambda r: r.get("certified_regret_exact") or {}
    out.append(_md_table(
        ["agent", "pairs", "proven", "unproven", "errors", "cert. regret mean", "std", "max", "exact mean",
         "exact max", "margin mean", "PGD regret mean", "cert/PGD"],
        [[str(r["agent"]), str(r["count"]), str(r["proven"]), str(r["unproven"]), str(r["errors"]),
          _f(r["certified_regret"]["mean"]), _f(r["certified_regret"]["std"]), _f(r["certified_regret"]["max"]),
          _f(ex(r).get("mean")), _f(ex(r).get("max")), _f(r.get("margin_mean"), ".2g"),
          _f(r["pgd_regret_mean"]), _f(r["certified_over_pgd"], ".3f")] for r in rows]))
    out.append(_md_ucb(rows))
    out.append(f"\n{_solve_label(summary.get('solvers', []))} time (s), all pairs that reached the solver:\n")
    out.append(_md_table(
        ["agent", "mean", "std", "p50", "p95", "max", "total/pair mean", "status counts"],
        [[str(r["agent"]), *(_f(r["solve_time_s"][k], ".3g") for k in ("mean", "std", "p50", "p95", "max")),
          _f(r["total_time_s_mean"], ".3g"),
          ", ".join(f"{k}: {v}" for k, v in r["status_counts"].items())] for r in rows]))
    per_agent = [r for r in rows if r["agent"] != "all"]
    unproven = [u for r in per_agent for u in r["unproven_pairs"]]
    if unproven:
        out.append(f"\nNot proven ({len(unproven)}; NOT counted as certified; bounds reached):\n")
        out.append(_md_table(["point", "agent", "status", "regret lower", "regret upper", "gap"],
                             [[str(u["point"]), str(u["agent"]), str(u["status"]), _f(u["regret_lower"]),
                               _f(u["regret_upper"]), _f(u["gap"], ".3g")] for u in unproven[:MAX_LISTED]]))
        if len(unproven) > MAX_LISTED:
            out.append(f"\n... and {len(unproven) - MAX_LISTED} more (see {SUMMARY_JSON}).")
    errors = [e for r in per_agent for e in r["error_pairs"]]
    if errors:
        out.append(f"\nErrors ({len(errors)}):\n")
        out.extend(f"- point {e['point']}, agent {e['agent']}: {e['message']}" for e in errors[:MAX_LISTED])
        if len(errors) > MAX_LISTED:
            out.append(f"- ... and {len(errors) - MAX_LISTED} more (see {SUMMARY_JSON}).")
    return "\n".join(out) + "\n"


def _md_ucb(rows: list[dict]) -> str:
    """The confidence-bound table (or the one reason it is missing)."""
    have = [r for r in rows if r.get(stats.KEY_UCB) is not None]
    if not have:
        why = next((r.get(stats.KEY_NOTE) for r in rows if r.get(stats.KEY_NOTE)), "no results")
        return f"\nExpected regret bound: not computed ({why}).\n"
    r0 = have[0]
    ts = list(r0[stats.KEY_EXCEED])
    notes = sorted({n for r in have for n in str(r.get(stats.KEY_NOTE) or "").split("; ") if n})
    text = (f"\nExpected regret, {1 - r0[stats.KEY_DELTA]:.0%} upper confidence bounds over the "
            f"{r0[stats.KEY_SAMPLES]} i.i.d. prior profiles: E[regret] by {r0[stats.KEY_METHOD]}, "
            f"P(regret > t) by {r0[stats.KEY_EXCEED_METHOD]} (each at delta = {r0[stats.KEY_DELTA]:g}); "
            f"unproven pairs counted at the bound reached, or at the proven range R:\n\n")
    return text + _md_table(
        ["agent", "counted unproven", "R", "R source", "E[regret] UCB", *(f"P(> {t}) UCB" for t in ts)],
        [[str(r["agent"]), "-" if r.get(stats.KEY_UNPROVEN) is None else str(r[stats.KEY_UNPROVEN]),
          _f(r.get(stats.KEY_RANGE), ".4g"), str(r.get(stats.KEY_RANGE_SOURCE) or "-"), _f(r.get(stats.KEY_UCB)),
          *(_f(r[stats.KEY_EXCEED].get(t), ".4f") for t in ts)] for r in rows]) + \
        "".join(f"\n\nNote: {n}" for n in notes)


def _source(src) -> str:
    if not src:
        return "?"
    if src.get("kind") == "prior":
        return f"sampled from the prior, seed {src.get('seed')}"
    return f"{src.get('kind')} (sha256 {str(src.get('sha256'))[:12]})"


# --------------------------------------------------------------------------------------------
# Plots


def write_report(out_dir: str | Path, *, plots: bool = True, space: str | Path | None = None,
                 ucb_delta: float = stats.DEFAULT_DELTA, thresholds=stats.DEFAULT_THRESHOLDS,
                 ucb_method: str = stats.BERNSTEIN) -> dict:
    """Summarize ``out_dir``: write ``summary.md``, ``summary.json`` and the PNGs.

    ``space``: a ``space.json`` to take the regret ranges from (default: found next to the run,
    :func:`regret_ranges`); ``ucb_delta``, ``thresholds``, ``ucb_method``: the confidence bounds'
    (:func:`confidence_bounds`). Returns ``{"summary": ..., "text": markdown, "files": [paths]}``.
    """
    from jaxauction.checkpoints import atomic_write_text

    out_dir = Path(out_dir)
    records, manifest = load(out_dir)
    summary = summarize(records)
    bounds = confidence_bounds(records, manifest, out_dir, space=space, delta=ucb_delta, thresholds=thresholds,
                               method=ucb_method)
    for row in summary["rows"]:
        row.update(bounds[row["agent"]])
    text = format_summary(summary, manifest)
    atomic_write_text(out_dir / SUMMARY_MD, "# Certification summary\n\n" + text)
    atomic_write_text(out_dir / SUMMARY_JSON, json.dumps(summary, indent=1))
    files = [out_dir / RESULTS, out_dir / SUMMARY_MD, out_dir / SUMMARY_JSON]
    if plots and records:
        files += plot_all(records, out_dir, manifest)
    return {"summary": summary, "text": text, "files": files}
