"""The files a sweep writes in OUT, whether a run there is finished, and the summary
(``summary.json``, ``summary.md``: per run and per seed group)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional, Sequence

from jaxauction.config import Config, ConfigError
from jaxauction.sweep.spec import Run

SWEEP_JSON, SUMMARY_JSON, SUMMARY_MD = "sweep.json", "summary.json", "summary.md"
# Metrics of final_eval.json in the summary (PGD regret = regret_mean of the final evaluation).
SUMMARY_METRICS = ("revenue", "regret_mean", "regret_max", "ir_violation_rate", "train_seconds")


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
