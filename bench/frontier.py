"""Issue 14, "trace the frontier": revenue against mean certified regret, one plot per setting.

    python bench/frontier.py                      # -> results/frontier/{frontier_<setting>.png, frontier.md, frontier.json}
    python bench/frontier.py --points 20000 --seed 0 --out results/frontier

Settings: 1x2, 2x2, 2x3, 3x2, 3x3, 2x5, 3x10, additive values, every one U[0, 1] i.i.d. A net whose
prior is not U[0, 1] is left out. Nothing is trained or certified here: the script reads the
certificates already in ``results/`` and evaluates revenues (``mechanism.apply``) on ``--points``
profiles of the prior (key ``PRNGKey(--seed)``; the same profiles for every net and baseline of a
setting, so revenue differences get a paired standard error).

Where each number comes from (discovered, not listed by hand):

* **Our nets** (family ``ours``): every directory ``checkpoints/NAME``. Its certificates are the
  certification run directories ``results/**/run.json`` (``format: jaxauction-cert-run-v1``) whose
  ``"ckpt"`` resolves to that directory, e.g. ``results/1x2_reg`` -> ``checkpoints/1x2_reg``,
  ``results/1x2_distill`` and ``results/1x2_distill_planar`` -> ``checkpoints/1x2_distill``,
  ``results/audit/1x2_teacher`` -> ``checkpoints/1x2_teacher``, ``results/3x10_worst`` ->
  ``checkpoints/3x10`` (a run counts only if its ``weights_sha256`` is the digest of the weights
  there now, ``certify.network.digest``). Runs on profiles sampled from the prior give the mean:
  the primary run is the one with the most proven pairs (ties: the directory named like the
  checkpoint, then the MIP over planar); the others are listed in the notes. Runs on chosen
  profiles (``profiles.kind != "prior"``, e.g. the PGD-flagged worst profiles) only add their max
  to the notes. A checkpoint with no run on prior profiles is plotted at its PGD regret as
  ``ours_pgd`` (not certified). PGD regret, training time and steps: ``checkpoints/NAME/final_eval.json``
  (``regret_mean``: 1000 PGD steps, lr 0.02, from the truthful bid); hardware: the ``- hardware:``
  line of ``checkpoints/NAME/CARD.md``.
* **The paper's nets** (family ``paper``): ``../shared/reference/NAME.npz`` (``load_mechanism``). Their
  certified regret is the paper's own Gurobi certification recorded in ``NAME.json``
  (``results``: agent 0, ``results_agent1``: agent 1; ``certified_regret`` per point; the mean is
  the mean of the per-agent means), unless one of our runs (as above, ``"ckpt"`` -> the ``.npz``)
  certifies it. PGD regret: the paper's ``pgd_misreport_util - truthful_util`` on the same points;
  certification time: the paper's ``solve_time_s`` and ``+ setup_time_s`` (its code, 2020 hardware);
  for our runs the table's "solve / wall" are the means of ``time_solve_s`` and ``wall_s`` (the whole
  pair: bounds, PGD, model building and solve) of ``results.jsonl``.
  Training time and hardware are not recorded ("-"); the note gives ``train_args``' epochs.
* **optimaler's published nets**: ``../shared/optimaler/NAME.npz``; their certificates are the run
  directories whose ``"ckpt"`` resolves to the ``.npz`` (``results/audit/NAME``). Every pair proven:
  family ``optimaler`` at the certified mean. Otherwise ``optimaler_searched``: plotted at the
  regret their own protocol's search reports (``pgd_own_protocol`` of ``results/audit/summary.json``:
  one uniform random start, 1000 Adam steps, lr 0.1), labelled as such, with the proven bounds
  the certifier reached in the notes. Training: ``- (N iterations)`` from the JSON's ``source``.
* **Our learned affine maximizers** (family ``ours_sp``): every ``checkpoints/NAME`` with an ``ama.json``
  (``python -m jaxauction.ama_train``). An affine maximizer is strategyproof and IR for any parameters
  (``jaxauction/ama.py`` proves it), so its regret is 0 at every profile and there is no certificate to
  read; the misreport search recorded in its ``final_eval.json`` must have found no gain (a check of the
  code, in the checks list). Drawn as a solid horizontal line, like the baselines, at its revenue here.
* **Strategyproof baselines** (regret 0): item-wise Myerson and the grand bundle,
  ``jaxauction.baselines.make`` (the bundle's reserve fitted on its own 100000 profiles), revenue
  by Monte Carlo on the same profiles, checked against ``baselines.revenue_estimate`` (and
  Myerson's closed form ``baselines.expected_revenue`` in the notes).

Certified regret is the mean over every (profile, agent) pair of ``regret_upper_exact``, the proven
upper bound for the exact function of the weights (what the paper's MIP and the audit report);
its standard error is over profiles (per-profile mean over agents). The float32 claim
(``regret_upper``, bound plus rounding margin for any summation order) is the table's next column.
Revenue is the mean total payment at truthful bids; ``IR viol.`` and the revenue with
IR-violating profiles zeroed (``jaxauction.evaluate``'s definitions, tolerance 1e-6) are in the notes
and the JSON.
"""
from __future__ import annotations

import os

for _v in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import argparse  # noqa: E402
import json  # noqa: E402
import re  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections import Counter, defaultdict  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = REPO.parent / "shared"

import jax  # noqa: E402

from certify import network, report  # noqa: E402
from certify.certificate import is_proven  # noqa: E402
from certify.campaign.results import locate_ckpt  # noqa: E402
from jaxauction import ama, baselines, checkpoints, mechanism  # noqa: E402

SETTINGS = ("1x2", "2x2", "2x3", "3x2", "3x3", "2x5", "3x10")
IR_TOL = 1e-6  # as jaxauction.evaluate
FAMILIES = {  # key -> (legend label, marker, filled, colour)
    "ours": ("ours (certified)", "o", True, "C0"),
    "ours_pgd": ("ours, PGD regret only (not certified)", "o", False, "C0"),
    "paper": ("paper's nets (certified by the paper's MIP)", "s", True, "C1"),
    "optimaler": ("optimaler RegretNet (certified, results/audit)", "^", True, "C2"),
    "optimaler_searched": ("optimaler RegretNet, searched regret only (not certified)", "^", False, "C2"),
    "ours_sp": ("ours, learned affine maximizer (strategyproof by construction: regret 0)", None, True, "C0"),
    "baseline": ("strategyproof baseline (regret 0)", None, True, "C3"),
}
ZERO_REGRET = ("ours_sp", "baseline")  # families at regret 0 by construction: drawn as horizontal lines
FAMILY_ORDER = list(FAMILIES)
CHECKS_DONE = ("Each run's `weights_sha256` against the digest of the weights it names; each run's summary.json "
               "(pair count, exact mean) against its results.jsonl; recorded revenues (final_eval.json, "
               "results/audit/summary.json: other profiles) within 4 s.e. of a difference of ours; each baseline's "
               "paired revenue against `baselines.revenue_estimate`, and Myerson's against its closed form (within 3 s.e.).")
BASELINE_STYLE = {"myerson": ("item-wise Myerson", "--", "C3"), "bundle": ("grand bundle", ":", "C4")}


# ---- discovery -----------------------------------------------------------------------------------

def discover_runs() -> dict[Path, list[dict]]:
    """Certification run directories under results/, grouped by the resolved checkpoint they certify."""
    runs = defaultdict(list)
    for mf in sorted((REPO / "results").rglob("run.json")):
        d = mf.parent
        if "frontier" in d.relative_to(REPO / "results").parts:
            continue
        try:
            man = json.loads(mf.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if man.get("format") != "jaxauction-cert-run-v1" or not (d / "results.jsonl").exists():
            continue
        ck = locate_ckpt(man.get("ckpt", ""))
        if ck is not None:
            runs[ck].append({"dir": d, "manifest": man})
    return runs


def _uniform01(prior) -> bool:
    lo, hi = (np.asarray(x, float) for x in prior.bounds())
    return bool(np.all(lo == 0.0) and np.all(hi == 1.0))


def run_stats(d: Path) -> dict:
    """Certified-regret statistics of one run directory (every pair of results.jsonl, deduplicated)."""
    recs, man = report.load(d)
    proven = [is_proven(r) for r in recs]
    ux = np.array([np.nan if r.get("regret_upper_exact") is None else r["regret_upper_exact"] for r in recs], float)
    u32 = np.array([np.nan if r.get("regret_upper") is None else r["regret_upper"] for r in recs], float)
    lo = np.array([r.get("regret_lower") or 0.0 for r in recs], float)
    by_point = defaultdict(list)
    for r, x in zip(recs, ux):
        by_point[r["point"]].append(x)
    prof = np.array([np.mean(v) for v in by_point.values()])
    return {
        "dir": str(d.relative_to(REPO)), "pairs": len(recs), "proven": int(sum(proven)), "profiles": len(by_point),
        "profiles_kind": (man or {}).get("profiles", {}).get("kind"),
        "mean": float(np.nanmean(ux)) if len(recs) else None,
        "se": float(np.std(prof, ddof=1) / np.sqrt(len(prof))) if len(prof) > 1 else None,
        "max": float(np.nanmax(ux)) if len(recs) else None,
        "mean_f32": float(np.nanmean(u32)) if len(recs) else None,
        "lower_mean": float(lo.mean()) if len(recs) else None,
        "solve_s": float(np.mean([r.get("time_solve_s") or 0.0 for r in recs])) if recs else None,
        "end_to_end_s": float(np.mean([r.get("wall_s") or 0.0 for r in recs])) if recs else None,
        "solver": ",".join(sorted(Counter(str(r.get("solver")) for r in recs))),
        "statuses": dict(Counter(r.get("status") for r in recs)),
    }


def _pick_primary(cands: list[dict], stem: str) -> dict:
    return max(cands, key=lambda s: (s["proven"], Path(s["dir"]).name == stem, "planar" not in s["solver"]))


def certificates(path: Path, params, runs, checks: list[str], stem: str) -> tuple[dict | None, list[dict], list[dict]]:
    """(primary prior-profile run stats or None, other prior runs, runs on chosen profiles) certifying ``path``."""
    dig = network.digest(params)
    prior_runs, chosen = [], []
    for run in runs.get(path.resolve(), []):
        rel = run["dir"].relative_to(REPO)
        if run["manifest"].get("weights_sha256") != dig:
            checks.append(f"{rel}: weights_sha256 is not the digest of {path.name}'s weights now: run ignored")
            continue
        st = run_stats(run["dir"])
        (prior_runs if st["profiles_kind"] == "prior" else chosen).append(st)
        _check_summary(run["dir"], st, checks)
    if not prior_runs:
        return None, [], chosen
    prim = _pick_primary(prior_runs, stem)
    return prim, [s for s in prior_runs if s is not prim], chosen


def _check_summary(d: Path, st: dict, checks: list[str]):
    """Cross-check our recomputed mean against the run's own summary.json (where one exists)."""
    f = d / report.SUMMARY_JSON
    if not f.exists():
        return
    try:
        rows = json.loads(f.read_text())["rows"]
    except (OSError, json.JSONDecodeError, KeyError, TypeError):
        checks.append(f"{d.relative_to(REPO)}/summary.json: unreadable")
        return
    row = rows[-1]
    m = (row.get("certified_regret_exact") or {}).get("mean")
    if row.get("count") != st["pairs"]:
        checks.append(f"{d.relative_to(REPO)}/summary.json counts {row.get('count')} pairs, results.jsonl {st['pairs']}")
    elif m is not None and st["proven"] == st["pairs"] and abs(m - st["mean"]) > 1e-9:
        checks.append(f"{d.relative_to(REPO)}/summary.json exact mean {m:.6g} != results.jsonl {st['mean']:.6g}")


def _card_hardware(ck: Path) -> str:
    card = ck / "CARD.md"
    if not card.exists():
        return "-"
    m = re.search(r"^- hardware: (.*)$", card.read_text(), re.M)
    return m[1].split(" (")[0].strip() if m else "-"


# ---- revenue -------------------------------------------------------------------------------------

def per_profile_revenue(params, spec, vals):
    """(revenue per profile, IR violated in the profile) at truthful bids, float64 sums."""
    alloc, pay = jax.jit(mechanism.apply, static_argnums=2)(params, vals, spec)
    alloc, pay, v = (np.asarray(x, np.float64) for x in (alloc, pay, vals))
    util = np.sum(alloc * v, axis=-1) - pay
    return pay.sum(axis=1), np.any(util < -IR_TOL, axis=1), float(np.mean(util < -IR_TOL))


def _rev_fields(rev, viol, rate):
    n = len(rev)
    return {"revenue": float(rev.mean()), "revenue_se": float(rev.std(ddof=1) / np.sqrt(n)),
            "revenue_ir_zeroed": float(np.where(viol, 0.0, rev).mean()), "ir_violation_rate": rate}


# ---- rows ----------------------------------------------------------------------------------------

def _row(setting, net, family, **kw):
    row = {"setting": setting, "net": net, "family": family, "x": None, "x_se": None, "x_what": None,
           "cert": None, "pgd": None, "cert_time": None, "training": "-", "hardware": "-", "source": "-",
           "notes": []}
    row.update(kw)
    return row


def _cert_fields(row, prim, others, chosen):
    if prim is not None:
        row["cert"] = {k: prim[k] for k in ("mean", "se", "max", "mean_f32", "pairs", "proven", "profiles", "dir",
                                            "lower_mean", "statuses", "solver")}
        row["cert_time"] = {"solve_s": prim["solve_s"], "end_to_end_s": prim["end_to_end_s"], "what": prim["solver"]}
        row["source"] = prim["dir"]
    for s in others:
        row["notes"].append(f"also {s['dir']} ({s['solver']}, {s['proven']}/{s['pairs']} proven): mean {s['mean']:.5f}, "
                            f"solve {s['solve_s']:.3g} s/pair")
    for s in chosen:
        row["notes"].append(f"chosen profiles {s['dir']} ({s['profiles']} profiles, {s['proven']}/{s['pairs']} proven): "
                            f"max certified {s['max']:.4f}")


def _space_note(row, ck: Path, params):
    """A whole-space certificate for these weights, if one sits in results/space/NAME or NAME/space."""
    dig = network.digest(params)
    for f in (REPO / "results" / "space" / ck.name / "space.json", ck / "space" / "space.json"):
        if not f.exists():
            continue
        try:
            sp = json.loads(f.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if sp.get("digest") != dig:
            continue
        for a in sp.get("agents", []):
            row["notes"].append(f"whole space ({f.parent.relative_to(REPO)}, agent {a['agent']}, {a['status']}): worst "
                                f"regret in [{a['lower']:.4f}, {a['upper_exact']:.4f}] (exact)")


def _shipped(vals_by_setting, revs, is_kind, load):
    """Each shipped checkpoint of a kind, for a frontier setting with a U[0,1] prior: yields
    ``(ck, params, spec, setting, (rev, viol, rate))`` after recording its per-profile revenue in ``revs``."""
    for ck in sorted(p for p in (REPO / "checkpoints").iterdir() if is_kind(p)):
        params, spec, _, prior = load(ck)
        setting = f"{spec.n_agents}x{spec.n_items}"
        if setting not in vals_by_setting or not _uniform01(prior):
            continue
        measured = per_profile_revenue(params, spec, vals_by_setting[setting])
        revs[(setting, ck.name)] = measured[0]
        yield ck, params, spec, setting, measured


def our_rows(vals_by_setting, runs, checks, revs):
    rows = []
    for ck, params, spec, setting, (rev, viol, rate) in _shipped(
            vals_by_setting, revs, lambda p: (p / "mechanism.json").exists(), checkpoints.load_with_prior):
        ev = json.loads((ck / "final_eval.json").read_text()) if (ck / "final_eval.json").exists() else {}
        prim, others, chosen = certificates(ck, params, runs, checks, ck.name)
        fam = "ours" if prim is not None and prim["proven"] == prim["pairs"] else "ours_pgd"
        row = _row(setting, ck.name, fam, **_rev_fields(rev, viol, rate))
        _cert_fields(row, prim, others, chosen)
        if prim is not None and fam == "ours_pgd":
            row["notes"].append(f"{prim['dir']}: only {prim['proven']}/{prim['pairs']} pairs proven")
        if ev.get("regret_mean") is not None:
            row["pgd"] = {"value": ev["regret_mean"], "protocol": f"final_eval ({ev.get('points')} profiles, "
                          f"{ev.get('steps')} steps, lr {ev.get('lr')}, truthful start)"}
        if ev.get("train_seconds") is not None:
            row["training"] = f"{ev['train_seconds']:.0f} s, {ev.get('step', '?')} steps"
        row["hardware"] = _card_hardware(ck)
        if ev.get("revenue") is not None:
            row["revenue_recorded"] = {"value": ev["revenue"], "where": f"checkpoints/{ck.name}/final_eval.json "
                                       f"({ev.get('points')} profiles, seed {ev.get('seed')})"}
        if row["source"] == "-":
            row["source"] = f"checkpoints/{ck.name}/final_eval.json"
        if fam == "ours":
            row.update(x=row["cert"]["mean"], x_se=row["cert"]["se"], x_what="certified (exact)")
        elif row["pgd"]:
            row.update(x=row["pgd"]["value"], x_what="PGD regret (not certified)")
        _space_note(row, ck, params)
        rows.append(row)
    return rows


def ama_rows(vals_by_setting, checks, revs):
    """Our learned affine maximizers (``checkpoints/NAME/ama.json``, ``jaxauction.ama_train``): regret 0
    at every profile by construction, so no certificate; the recorded misreport search must have found nothing."""
    rows = []
    for ck, params, spec, setting, (rev, viol, rate) in _shipped(vals_by_setting, revs, ama.is_ama, ama.load):
        ev = json.loads((ck / "final_eval.json").read_text())
        gain = ev["misreport_search"]["max_gain"]
        if gain > 1e-9:
            checks.append(f"{ck.name}: its misreport search found a gain of {gain:.3g} (an affine maximizer allows none)")
        row = _row(setting, ck.name, "ours_sp", **_rev_fields(rev, viol, rate))
        row.update(x=0.0, x_what="0 (strategyproof by construction: affine maximizer)", source=f"checkpoints/{ck.name}",
                   training=f"{ev['train_seconds']:.0f} s, {ev['step']} steps", hardware=_card_hardware(ck),
                   revenue_recorded={"value": ev["revenue"], "where": f"checkpoints/{ck.name}/final_eval.json "
                                     f"({ev['points']} profiles, seed {ev['seed']})"})
        row["notes"].append(f"menu {spec.n_deterministic} deterministic + {spec.n_lotteries} lotteries; misreport search "
                            f"({ev['misreport_search']['profiles']} profiles) largest gain {gain:.1e}")
        rows.append(row)
    return rows


def paper_rows(vals_by_setting, runs, checks, revs):
    rows = []
    for npz in sorted((SHARED / "reference").glob("*.npz")):
        params, spec, _, prior = checkpoints.load_with_prior(npz)
        setting = f"{spec.n_agents}x{spec.n_items}"
        if setting not in vals_by_setting or not _uniform01(prior):
            continue
        doc = json.loads(npz.with_suffix(".json").read_text())
        rev, viol, rate = per_profile_revenue(params, spec, vals_by_setting[setting])
        revs[(setting, npz.stem)] = rev
        row = _row(setting, npz.stem, "paper", **_rev_fields(rev, viol, rate))
        prim, others, chosen = certificates(npz, params, runs, checks, npz.stem)
        if prim is not None and prim["proven"] == prim["pairs"]:
            _cert_fields(row, prim, others, chosen)
            row["notes"].append("certified by our run (not the paper's JSON)")
        else:
            per_agent = [doc[k] for k in ("results", "results_agent1") if doc.get(k)]
            cr = [np.array([p["certified_regret"] for p in pts], float) for pts in per_agent]
            pg = [np.array([max(0.0, p["pgd_misreport_util"] - p["truthful_util"]) for p in pts], float) for pts in per_agent]
            allp = [p for pts in per_agent for p in pts]
            se = np.sqrt(sum(np.var(c, ddof=1) / len(c) for c in cr)) / len(cr)
            row["cert"] = {"mean": float(np.mean([c.mean() for c in cr])), "se": float(se),
                           "max": float(max(c.max() for c in cr)), "mean_f32": None,
                           "pairs": int(sum(len(c) for c in cr)), "proven": int(sum(len(c) for c in cr)),
                           "profiles": [len(c) for c in cr], "dir": f"../shared/reference/{npz.with_suffix('.json').name}"}
            row["pgd"] = {"value": float(np.mean([g.mean() for g in pg])),
                          "protocol": "the paper's PGD on its certified points"}
            row["cert_time"] = {"solve_s": float(np.mean([p["solve_time_s"] for p in allp])),
                                "end_to_end_s": float(np.mean([p["solve_time_s"] + p["setup_time_s"] for p in allp])),
                                "what": "the paper's Gurobi MIP, 2020 hardware"}
            row["source"] = row["cert"]["dir"]
            row["notes"].append("agents: " + " + ".join(f"{len(c)} agent-{i} points" for i, c in enumerate(cr))
                                + " of the paper's own certification run (its profiles, not certify's sampler)")
        ta = doc.get("train_args", {})
        row["training"] = f"- ({ta['num_epochs']} epochs of {ta['num_examples']} profiles)" if "num_epochs" in ta else "-"
        row.update(x=row["cert"]["mean"], x_se=row["cert"]["se"], x_what="certified (exact)")
        rows.append(row)
    return rows


def optimaler_rows(vals_by_setting, runs, checks, revs):
    rows = []
    audit = {}
    f = REPO / "results" / "audit" / "summary.json"
    if f.exists():
        audit = {r["net"]: r for r in json.loads(f.read_text())}
    for npz in sorted((SHARED / "optimaler").glob("*.npz")):
        params, spec, _, prior = checkpoints.load_with_prior(npz)
        setting = f"{spec.n_agents}x{spec.n_items}"
        if setting not in vals_by_setting or not _uniform01(prior):
            continue
        doc = json.loads(npz.with_suffix(".json").read_text())
        rev, viol, rate = per_profile_revenue(params, spec, vals_by_setting[setting])
        revs[(setting, npz.stem)] = rev
        prim, others, chosen = certificates(npz, params, runs, checks, npz.stem)
        ok = prim is not None and prim["proven"] == prim["pairs"]
        row = _row(setting, npz.stem, "optimaler" if ok else "optimaler_searched", **_rev_fields(rev, viol, rate))
        _cert_fields(row, prim, others, chosen)
        a = audit.get(npz.stem)
        if a is not None:
            row["pgd"] = {"value": a["pgd_own_protocol"], "protocol": "own protocol (results/audit/summary.json: one "
                          "random start, 1000 Adam steps, lr 0.1, on the certified profiles)"}
            row["revenue_recorded"] = {"value": a["revenue"], "where": "results/audit/summary.json (20000 profiles, seed 1)"}
            row["strongest_attack"] = a.get("strongest_attack")
        m = re.search(r"model_(\d+)", doc.get("source", ""))
        row["training"] = f"- ({m[1]} iterations)" if m else "-"
        if ok:
            row.update(x=row["cert"]["mean"], x_se=row["cert"]["se"], x_what="certified (exact)")
        else:
            if prim is not None:
                row["notes"].append(f"not certified: {prim['proven']}/{prim['pairs']} pairs proven, mean bounds reached "
                                    f"[{prim['lower_mean']:.5f}, {prim['mean']:.3f}] (exact)")
                row["cert"]["not_proven"] = True
            if row["pgd"]:
                row.update(x=row["pgd"]["value"], x_what="searched regret, own protocol (not certified)")
        rows.append(row)
    return rows


def baseline_rows(vals_by_setting, priors_by_setting, points, seed, checks, revs):
    rows = []
    for setting, vals in vals_by_setting.items():
        for name in baselines.COMPARED:
            b = baselines.make(name, priors_by_setting[setting])
            rev, viol, rate = per_profile_revenue(b.params, b.spec, vals)
            revs[(setting, name)] = rev
            mean, se = baselines.revenue_estimate(b, points=points, seed=seed)
            if abs(mean - rev.mean()) > 1e-6:
                checks.append(f"{name}:{setting}: revenue_estimate {mean:.6f} != paired evaluation {rev.mean():.6f}")
            row = _row(setting, name, "baseline", **_rev_fields(rev, viol, rate))
            row.update(x=0.0, x_what="0 (strategyproof by construction)", source=f"jaxauction.baselines.make({name!r})")
            exact = baselines.expected_revenue(b)
            if exact is not None:
                row["notes"].append(f"closed form {exact:.4f}")
                if abs(exact - row["revenue"]) > 3 * row["revenue_se"]:
                    checks.append(f"{name}:{setting}: Monte Carlo {row['revenue']:.4f} more than 3 s.e. from the closed form {exact:.4f}")
            if name == "bundle":
                row["notes"].append(f"reserve {b.info['reserve']:.4f} ({b.info['reserve_rule']})")
            else:
                row["notes"].append("reserves max(lo, hi/2) = 0.5")
            rows.append(row)
    return rows


# ---- comparisons ---------------------------------------------------------------------------------

def paired(revs, setting, a, b):
    """(mean revenue of a - b, standard error) on the shared profiles."""
    d = revs[(setting, a)] - revs[(setting, b)]
    return float(d.mean()), float(d.std(ddof=1) / np.sqrt(len(d)))


def comparisons(rows, revs):
    """Per setting: each certified net of ours against the best baseline and the certified published nets."""
    out = {}
    for setting in SETTINGS:
        rs = [r for r in rows if r["setting"] == setting]
        base = [r for r in rs if r["family"] == "baseline"]
        if not base:
            continue
        best = max(base, key=lambda r: r["revenue"])
        pub = [r for r in rs if r["family"] in ("paper", "optimaler")]
        searched = [r for r in rs if r["family"] == "optimaler_searched"]
        lines = []
        for r in sorted((r for r in rs if r["family"] in ("ours_sp", "ours", "ours_pgd")), key=lambda r: -r["revenue"]):
            d, se = paired(revs, setting, r["net"], best["net"])
            what = {"ours": "certified", "ours_pgd": "PGD, not certified", "ours_sp": "strategyproof by construction"}[r["family"]]
            ent = {"net": r["net"], "family": r["family"], "regret": r["x"], "regret_what": what,
                   "vs_best_baseline": {"baseline": best["net"], "diff": d, "se": se},
                   "vs_baselines": {b["net"]: dict(zip(("diff", "se"), paired(revs, setting, r["net"], b["net"]))) for b in base},
                   "vs_published": []}
            for p in sorted(pub, key=lambda p: p["x"]):
                pd_, pse = paired(revs, setting, r["net"], p["net"])
                ent["vs_published"].append({"net": p["net"], "regret": p["x"], "diff": pd_, "se": pse,
                                            "published_regret_lower_or_equal": p["x"] <= r["x"]})
            ent["vs_published_uncertified"] = [
                dict(zip(("diff", "se"), paired(revs, setting, r["net"], p["net"])), net=p["net"], searched_regret=p["x"])
                for p in sorted(searched, key=lambda p: p["x"])]
            lines.append(ent)
        out[setting] = {"best_baseline": {"net": best["net"], "revenue": best["revenue"], "se": best["revenue_se"]},
                        "ours": lines}
    return out


# ---- output --------------------------------------------------------------------------------------

def _f(x, fmt):
    return "-" if x is None else format(x, fmt)


def table(rows) -> str:
    head = ["setting", "net", "family", "revenue ± s.e.", "cert. regret (exact): mean ± s.e. / max",
            "cert. regret (float32) mean", "pairs proven", "PGD regret", "cert. s per pair: solve / wall",
            "training", "hardware", "source", "notes"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        c, t = r["cert"], r["cert_time"]
        if r["family"] in ZERO_REGRET:
            cert, f32, prov = "0 (strategyproof)", "-", "-"
        elif c is None:
            cert, f32, prov = "-", "-", "-"
        elif c.get("not_proven"):
            cert = f"not proven (bounds reached: mean [{c['lower_mean']:.5f}, {c['mean']:.3f}])"
            f32, prov = "-", f"{c['proven']}/{c['pairs']}"
        else:
            cert = f"{c['mean']:.5f} ± {_f(c['se'], '.5f')} / {c['max']:.5f}"
            f32, prov = _f(c["mean_f32"], ".5f"), f"{c['proven']}/{c['pairs']}"
        pgd = "-" if r["pgd"] is None else f"{r['pgd']['value']:.5f}"
        if r["family"] == "optimaler_searched" and r["pgd"] is not None:
            pgd += " (own protocol; plotted)"
        ct = "-" if t is None else f"{_f(t['solve_s'], '.3g')} / {_f(t['end_to_end_s'], '.3g')} ({t['what']})"
        notes = list(r["notes"])
        if r.get("ir_violation_rate"):
            notes.insert(0, f"IR viol. {r['ir_violation_rate']:.3f} (rev. IR-zeroed {r['revenue_ir_zeroed']:.4f})")
        notes = "; ".join(notes) or "-"
        lines.append("| " + " | ".join([r["setting"], f"`{r['net']}`", r["family"], f"{r['revenue']:.4f} ± {r['revenue_se']:.4f}",
                                          cert, f32, prov, pgd, ct, r["training"], r["hardware"], r["source"], notes]) + " |")
    return "\n".join(lines) + "\n"


def compact_table(rows) -> str:
    """The issue's columns only (what RESULTS.md shows)."""
    head = ["setting", "net", "family", "revenue ± s.e.", "cert. regret (exact) mean / max", "PGD regret",
            "cert. s per pair (solve / wall)", "training", "hardware"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join("---" for _ in head) + " |"]
    for r in rows:
        c, t = r["cert"], r["cert_time"]
        if r["family"] in ZERO_REGRET:
            cert = "0 (strategyproof)"
        elif c is None:
            cert = "- (not certified)"
        elif c.get("not_proven"):
            cert = f"not proven ({c['proven']}/{c['pairs']}; bounds [{c['lower_mean']:.5f}, {c['mean']:.2f}])"
        else:
            cert = f"{c['mean']:.5f} / {c['max']:.4f}"
        pgd = "-" if r["pgd"] is None else f"{r['pgd']['value']:.5f}"
        ct = "-" if t is None else f"{_f(t['solve_s'], '.3g')} / {_f(t['end_to_end_s'], '.3g')}"
        if t is not None and "paper" in t["what"]:
            ct += " (paper, 2020)"
        lines.append("| " + " | ".join([r["setting"], f"`{_short(r['net']) if r['family'] == 'paper' else r['net']}`",
                                          r["family"], f"{r['revenue']:.4f} ± {r['revenue_se']:.4f}", cert, pgd, ct,
                                          r["training"], r["hardware"]]) + " |")
    return "\n".join(lines) + "\n"


def reading(comp) -> str:
    out = []
    for setting, c in comp.items():
        b = c["best_baseline"]
        out.append(f"- **{setting}** (best baseline `{b['net']}` {b['revenue']:.4f} ± {b['se']:.4f}):")
        if not c["ours"]:
            out.append("  no net of ours.")
        for e in c["ours"]:
            v = e["vs_best_baseline"]
            regret = ("regret 0, strategyproof by construction" if e["family"] in ZERO_REGRET
                      else f"{e['regret_what']} {e['regret']:.5f}")
            s = f"  `{e['net']}` ({regret}): {v['diff']:+.4f} ± {v['se']:.4f} vs `{v['baseline']}`"
            pubs = [f"`{p['net']}` at {p['regret']:.5f} ({'<=' if p['published_regret_lower_or_equal'] else '>'} ours): "
                    f"{p['diff']:+.4f} ± {p['se']:.4f}" for p in e["vs_published"]]
            s += ("; vs certified published nets: " + ", ".join(pubs)) if pubs else "; no certified published net"
            unc = [f"`{p['net']}` (searched regret {p['searched_regret']:.5f}): {p['diff']:+.4f} ± {p['se']:.4f}"
                   for p in e["vs_published_uncertified"]]
            out.append(s + ("; vs published nets that are not certified: " + ", ".join(unc) if unc else ""))
    return "\n".join(out) + "\n"


def plot(rows, setting, path: Path, points: int, seed: int):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rs = [r for r in rows if r["setting"] == setting]
    fig, ax = plt.subplots(figsize=(8.5, 5.5))
    seen = set()
    xs = [r["x"] for r in rs if r["family"] not in ZERO_REGRET and r["x"]]
    ys = [r["revenue"] for r in rs]
    yspan = (max(ys) - min(ys)) or 1.0
    placed = []  # (x, y) of labelled points: a label near an earlier one is moved down a line
    for r in rs:
        if r["family"] in ZERO_REGRET or not r["x"]:
            continue
        lab, mk, filled, col = FAMILIES[r["family"]]
        ax.errorbar(r["x"], r["revenue"], yerr=r["revenue_se"], xerr=r["x_se"] or None, fmt=mk, color=col,
                    mfc=col if filled else "none", ms=8, capsize=3, elinewidth=1,
                    label=None if r["family"] in seen else lab)
        seen.add(r["family"])
        k = sum(abs(np.log(r["x"] / x)) < 0.5 and abs(r["revenue"] - y) < 0.04 * yspan for x, y in placed)
        placed.append((r["x"], r["revenue"]))
        ax.annotate(_short(r["net"]), (r["x"], r["revenue"]), textcoords="offset points", xytext=(7, 4 - 10 * k),
                    fontsize=7)
    for r in rs:
        if r["family"] not in ZERO_REGRET:
            continue
        lab, ls, col = BASELINE_STYLE.get(r["net"], (f"ours: {r['net']}, learned affine maximizer", "-", "C0"))
        ax.axhline(r["revenue"], ls=ls, color=col, lw=2.0 if r["family"] == "ours_sp" else 1.3,
                   label=f"{lab}, regret 0: {r['revenue']:.4f} ± {r['revenue_se']:.4f}")
        ax.axhspan(r["revenue"] - r["revenue_se"], r["revenue"] + r["revenue_se"], color=col, alpha=0.15, lw=0)
    ax.set_xscale("log")
    if xs:
        ax.set_xlim(min(xs) / 2.5, max(xs) * 2.5)
    else:
        ax.set_xlim(1e-4, 1e-1)
    span = max(ys) - min(ys) or 0.05 * max(ys)
    ax.set_ylim(min(ys) - 0.12 * span, max(ys) + 0.12 * span)
    ax.set_xlabel("mean regret per (profile, agent): certified upper bound, exact function (log)\n"
                  "hollow markers: searched (PGD) regret only, not certified; regret 0 (strategyproof): horizontal lines")
    ax.set_ylabel(f"revenue ({points} profiles, seed {seed}) ± s.e.")
    none = "" if any(r["family"] in ("ours", "ours_pgd", "ours_sp") for r in rs) else " (no mechanism of ours)"
    ax.set_title(f"{setting}, additive U[0,1]: revenue vs mean certified regret{none}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _short(name: str) -> str:
    m = re.match(r"regretnet_\d+x\d+_seed_(\d+)$", name)
    if m:
        return f"optimaler s{m[1]}"
    m = re.match(r"\d+x\d+_sparsemax_(.*)_fast$", name)
    if m:
        return "paper " + {"in_linsigpmt_scratch": "scratch (frac. pmt)", "linearpmt_distill": "distill"}.get(m[1], m[1])
    return name


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--points", type=int, default=20000, help="revenue profiles per setting (default 20000)")
    ap.add_argument("--seed", type=int, default=0, help="their sampling seed (default 0)")
    ap.add_argument("--out", default=str(REPO / "results" / "frontier"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    priors_by_setting = {s: baselines.setting_prior(s) for s in SETTINGS}
    vals_by_setting = {s: p.sample(jax.random.PRNGKey(args.seed), args.points) for s, p in priors_by_setting.items()}
    runs = discover_runs()
    checks: list[str] = []
    revs: dict = {}
    rows = (our_rows(vals_by_setting, runs, checks, revs) + ama_rows(vals_by_setting, checks, revs)
            + paper_rows(vals_by_setting, runs, checks, revs)
            + optimaler_rows(vals_by_setting, runs, checks, revs)
            + baseline_rows(vals_by_setting, priors_by_setting, args.points, args.seed, checks, revs))
    for r in rows:  # recorded revenues (other profiles) against ours
        rec = r.get("revenue_recorded")
        if rec and abs(rec["value"] - r["revenue"]) > 4 * r["revenue_se"] * np.sqrt(2):
            checks.append(f"{r['net']}: revenue {r['revenue']:.4f} here vs {rec['value']:.4f} in {rec['where']} "
                          f"(more than 4 s.e. of a difference)")
    rows.sort(key=lambda r: (SETTINGS.index(r["setting"]), FAMILY_ORDER.index(r["family"]), -r["revenue"]))
    comp = comparisons(rows, revs)
    for s in SETTINGS:
        plot(rows, s, out / f"frontier_{s}.png", args.points, args.seed)

    tab = table(rows)
    cmd = "python bench/frontier.py" + ("" if (args.points, args.seed) == (20000, 0) else f" --points {args.points} --seed {args.seed}")
    md = ["# Revenue at certified regret (issue 14)\n",
          f"`{cmd}` ({time.strftime('%Y-%m-%d')}). Revenue: mean total payment at truthful bids on {args.points} "
          f"profiles of the prior (seed {args.seed}, the same profiles for every mechanism of a setting). Certified regret: "
          "mean over (profile, agent) pairs of the proven upper bound for the exact function (s.e. over profiles); "
          "families and sources: `bench/frontier.py`'s docstring. Plots: `frontier_<setting>.png`.\n",
          compact_table(rows), "\n## Every column\n", tab,
          "\n## Against the best baseline and the certified published nets (paired differences ± s.e.)\n", reading(comp)]
    md += ["\n## Checks\n", CHECKS_DONE + (" Failed:\n\n" + "\n".join(f"- {c}" for c in checks) if checks
                                           else " All passed.") + "\n"]
    (out / "frontier.md").write_text("\n".join(md))
    (out / "frontier.json").write_text(json.dumps({"points": args.points, "seed": args.seed, "settings": list(SETTINGS),
                                                   "rows": rows, "comparisons": comp, "checks": checks}, indent=1))
    print(tab)
    print(reading(comp))
    for c in checks:
        print(f"check: {c}")
    print(f"wrote {out}/frontier.{{md,json}} and {len(SETTINGS)} plots in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
