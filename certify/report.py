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
"""
from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path
from typing import Iterable

import numpy as np

from certify.campaign.results import MANIFEST, RESULTS, latest_by_pair, read_results
from certify.certificate import is_proven

SUMMARY_MD = "summary.md"
SUMMARY_JSON = "summary.json"
PLOT_REGRET = "regret_hist.png"
PLOT_TIME = "solve_time_hist.png"
PLOT_ARROWS = "misreports.png"
MAX_LISTED = 20


_SOLVE_NAMES = {"planar": "Planar enumeration", "bab": "Branch and bound"}  # else: the MIP


def _solve_label(solvers) -> str:
    """What ``time_solve_s`` measured: the MIP solve, the planar enumeration, bab, or a mix (the
    records' ``solver`` fields, e.g. auto ran bab on some pairs and the MIP on others)."""
    names = sorted({_SOLVE_NAMES.get(x, "MIP solve") for x in solvers if x and x != "none"}) or ["MIP solve"]
    return names[0] if len(names) == 1 else "Search (" + ", ".join(n.lower() for n in names) + ")"


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


def _source(src) -> str:
    if not src:
        return "?"
    if src.get("kind") == "prior":
        return f"sampled from the prior, seed {src.get('seed')}"
    return f"{src.get('kind')} (sha256 {str(src.get('sha256'))[:12]})"


# --------------------------------------------------------------------------------------------
# Plots


def _bounds_box(records: list[dict], manifest: dict | None) -> tuple[np.ndarray, np.ndarray] | None:
    prior = ((manifest or {}).get("setting") or {}).get("prior")
    if prior and isinstance(prior.get("low"), list):
        return np.asarray(prior["low"], float), np.asarray(prior["high"], float)
    return None


def plot_all(records: list[dict], out_dir: str | Path, manifest: dict | None = None) -> list[Path]:
    """Write the histograms (and, for 1 agent x 2 items, the misreport arrows); return the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir = Path(out_dir)
    paths = []
    agents = sorted({int(r["agent"]) for r in records})
    proven = [r for r in records if is_proven(r)]
    n_unproven = sum(1 for r in records if not is_proven(r) and r.get("status") != "error")

    # Certified regret histogram (proven only), stacked per agent.
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    data = [[r["regret_upper"] for r in proven if int(r["agent"]) == a] for a in agents]
    if any(data):
        ax.hist(data, bins=30, stacked=True, label=[f"agent {a}" for a in agents])
        if len(agents) > 1:
            ax.legend()
    else:
        ax.text(0.5, 0.5, "no proven results", ha="center", va="center", transform=ax.transAxes)
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("certified regret (proven upper bound)")
    ax.set_ylabel("number of profiles")
    ax.set_title(f"Certified regret: {len(proven)} proven"
                 + (f", {n_unproven} unproven not shown" if n_unproven else ""))
    fig.tight_layout()
    paths.append(out_dir / PLOT_REGRET)
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # Solve time histogram: proven vs not proven.
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    t_ok = [r["time_solve_s"] for r in proven if r.get("time_solve_s") is not None]
    t_bad = [r["time_solve_s"] for r in records
             if not is_proven(r) and r.get("status") != "error" and r.get("time_solve_s") is not None]
    if t_ok or t_bad:
        groups = [(t, lab, c) for t, lab, c in ((t_ok, "proven", "tab:blue"),
                                                 (t_bad, "not proven (time-out etc.)", "tab:red")) if t]
        ax.hist([g[0] for g in groups], bins=30, stacked=True, label=[g[1] for g in groups],
                color=[g[2] for g in groups])
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no solver times", ha="center", va="center", transform=ax.transAxes)
    tl = (manifest or {}).get("time_limit")
    what = _solve_label({r.get("solver") for r in records})
    title = f"{what} time per certified pair"
    if tl and max(t_ok + t_bad, default=0.0) >= 0.5 * tl:  # draw the limit only where it is in view
        ax.axvline(tl, color="k", ls="--", lw=1)
        ax.annotate("time limit", (tl, 0.97), xycoords=("data", "axes fraction"), xytext=(-4, 0),
                    textcoords="offset points", ha="right", va="top", fontsize=8)
    elif tl:
        title += f" (time limit {tl:g} s)"
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"{what} time (s)")
    ax.set_ylabel("number of (profile, agent) pairs")
    ax.set_title(title)
    fig.tight_layout()
    paths.append(out_dir / PLOT_TIME)
    fig.savefig(paths[-1], dpi=120)
    plt.close(fig)

    # 1 agent, 2 items: arrows from the truthful valuation to the best misreport (paper Fig. 1).
    shape = np.shape(records[0]["valuations"]) if records else None
    if shape == (1, 2):
        paths.append(_plot_arrows(records, out_dir / PLOT_ARROWS, _bounds_box(records, manifest), plt))
    return paths


def _plot_arrows(records, path, box, plt) -> Path:
    from matplotlib import cm, colors

    lo, hi = box if box is not None else (np.zeros((1, 2)), np.ones((1, 2)))
    fig, ax = plt.subplots(figsize=(6.0, 5.4))
    recs = [r for r in records if r.get("best_misreport") is not None]
    proven = [r for r in recs if is_proven(r)]
    regrets = np.asarray([r["regret_upper"] for r in proven], float)
    norm = colors.Normalize(vmin=0.0, vmax=float(regrets.max()) if regrets.size and regrets.max() > 0 else 1.0)
    cmap = plt.get_cmap("viridis")
    for r in recs:
        v = np.asarray(r["valuations"], float)[0]
        b = np.asarray(r["best_misreport"], float)[0]
        ok = is_proven(r)
        c = cmap(norm(r["regret_upper"])) if ok else "0.6"
        ax.plot(*v, "o", ms=3, color=c)
        if np.linalg.norm(b - v) > 1e-4:
            ax.annotate("", xy=b, xytext=v, arrowprops=dict(arrowstyle="->", color=c, lw=1.0,
                                                             ls="-" if ok else "--"))
    if proven:
        sm = cm.ScalarMappable(norm=norm, cmap=cmap)
        fig.colorbar(sm, ax=ax, label="certified regret")
    pad_x, pad_y = 0.03 * (hi[0, 0] - lo[0, 0]), 0.03 * (hi[0, 1] - lo[0, 1])
    ax.set_xlim(lo[0, 0] - pad_x, hi[0, 0] + pad_x)
    ax.set_ylim(lo[0, 1] - pad_y, hi[0, 1] + pad_y)
    ax.add_patch(plt.Rectangle((lo[0, 0], lo[0, 1]), hi[0, 0] - lo[0, 0], hi[0, 1] - lo[0, 1], fill=False,
                               ec="k", lw=0.8))
    ax.set_aspect("equal")
    ax.set_xlabel("value / bid for item 1")
    ax.set_ylabel("value / bid for item 2")
    n_un = len(recs) - len(proven)
    ax.set_title("Truthful valuation (dot) \u2192 best misreport (arrow head)"
                 + (f"\ngrey dashed: {n_un} not proven (best found)" if n_un else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write_report(out_dir: str | Path, *, plots: bool = True) -> dict:
    """Summarize ``out_dir``: write ``summary.md``, ``summary.json`` and the PNGs.

    Returns ``{"summary": ..., "text": markdown, "files": [paths]}``.
    """
    from jaxauction.checkpoints import atomic_write_text

    out_dir = Path(out_dir)
    records, manifest = load(out_dir)
    summary = summarize(records)
    text = format_summary(summary, manifest)
    atomic_write_text(out_dir / SUMMARY_MD, "# Certification summary\n\n" + text)
    atomic_write_text(out_dir / SUMMARY_JSON, json.dumps(summary, indent=1))
    files = [out_dir / RESULTS, out_dir / SUMMARY_MD, out_dir / SUMMARY_JSON]
    if plots and records:
        files += plot_all(records, out_dir, manifest)
    return {"summary": summary, "text": text, "files": files}
