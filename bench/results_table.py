"""Write RESULTS.md: our shipped networks next to the paper's Tables 1 and 2.

Reads ``checkpoints/NAME/final_eval.json`` (revenue, 1000-step PGD regret on 10000 profiles) and
``results/NAME/summary.json`` (certification by ``bench/certify_all.sh``) and, where present,
``results/NAME/pgd_restarts.json`` (1000 profiles, PGD with 8 corner-biased restarts), prints the tables and
writes them into RESULTS.md between the ``<!-- tables -->`` markers.

    python bench/results_table.py
"""
from __future__ import annotations

import functools
import json
import re
from pathlib import Path

from jaxauction import ama, baselines
from jaxauction.rundir import reproduce_command

ROOT = Path(__file__).resolve().parents[1]

# (name, setting, IR by construction, ReLU reg.) -> paper: solve s, revenue, emp. regret, cert. regret
TABLE1 = [
    ("1x2_noreg", "1x2", "yes", "no", (25.6, 0.593, 0.014, 0.019)),
    ("1x2_reg", "1x2", "yes", "yes", (7.2, 0.569, 0.003, 0.004)),
    ("1x2_distill", "1x2", "no", "yes", (0.034, 0.568, 0.009, 0.011)),
    ("2x2_noreg", "2x2", "yes", "no", (13.9, 0.876, 0.009, 0.014)),
    ("2x2_reg", "2x2", "yes", "yes", (5.8, 0.874, 0.008, 0.013)),
    ("2x2_distill", "2x2", "no", "yes", (5.48, 0.882, 0.006, 0.011)),
]
TABLE2 = [("2x3", (160.7, 0.034)), ("3x2", (5.0, 0.021)), ("3x3", (71.8, 0.024)), ("3x10", ("-", "-"))]
# free-payment 2-item networks also certified by exact region enumeration (results/NAME_planar)
PLANAR = [("1x2_distill", 0.034), ("2x2_distill", 5.48), ("3x2", 5.0)]


@functools.lru_cache(maxsize=None)  # write_report re-plots: do it once per network
def _load(name):
    ev = ROOT / "checkpoints" / name / "final_eval.json"
    out = ROOT / "results" / name
    ev = json.loads(ev.read_text()) if ev.exists() else None
    sm = None
    if (out / "results.jsonl").exists():  # re-summarize: a run cut short leaves no fresh summary.json
        from certify.report import write_report

        sm = write_report(out)["summary"]
    row = next((r for r in sm["rows"] if r["agent"] == "all"), sm["rows"][0]) if sm and sm.get("rows") else None
    strong = out / "pgd_restarts.json"
    if ev is not None and strong.exists():
        ev = {**ev, "regret_restarts": json.loads(strong.read_text())["regret_mean"]}
    return ev, row


def _records(name):
    """``{(point, agent): record}`` of results/NAME (certify.report.load: deduplicated)."""
    from certify.report import load

    return {(r["point"], r["agent"]): r for r in load(ROOT / "results" / name)[0]}


def _f(x, fmt="{:.4f}"):
    return "-" if x is None else fmt.format(x)


def table1() -> str:
    out = ["| setting | IR | ReLU reg. | pairs proven | solve s mean (std) | revenue | emp. regret | emp. regret, 8 restarts "
           "| cert. regret (float32 & exact) | cert. regret (exact) | emp./cert. (exact) | IR viol. rate | paper: solve s "
           "| paper: revenue | paper: emp. | paper: cert. |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, setting, ir, reg, paper in TABLE1:
        ev, row = _load(name)
        if ev is None:
            out.append(f"| {setting} | {ir} | {reg} | not trained | | | | | | | | | {paper[0]} | {paper[1]} | {paper[2]} | {paper[3]} |")
            continue
        cert = row["certified_regret"]["mean"] if row and row["proven"] else None
        exact = _exact(row)
        st = row["solve_time_s"] if row else {}
        ratio = ev["regret_mean"] / exact if exact else None
        proven = f"{row['proven']}/{row['count']}" if row else "not certified"
        out.append(
            f"| {setting} (`{name}`) | {ir} | {reg} | {proven} | {_f(st.get('mean'), '{:.3f}')} ({_f(st.get('std'), '{:.3f}')}) "
            f"| {ev['revenue']:.4f} | {ev['regret_mean']:.5f} | {_f(ev.get('regret_restarts'), '{:.5f}')} "
            f"| {_f(cert, '{:.5f}')} | {_f(exact, '{:.5f}')} | {_f(ratio, '{:.2f}')} "
            f"| {ev['ir_violation_rate']:.3f} | {paper[0]} | {paper[1]} | {paper[2]} | {paper[3]} |")
    return "\n".join(out)


def _exact(row):
    """Mean certified regret of the exact (real-arithmetic) function over the proven pairs."""
    return ((row or {}).get("certified_regret_exact") or {}).get("mean") if row and row["proven"] else None


def _unproven_bounds(row) -> str:
    """'k pairs: [mean lower, mean upper]' over the pairs the solver did not prove (time-outs)."""
    pairs = [u for u in (row or {}).get("unproven_pairs", [])
             if u.get("regret_lower") is not None and u.get("regret_upper") is not None]
    if not pairs:
        return "-"
    lo = sum(u["regret_lower"] for u in pairs) / len(pairs)
    hi = sum(u["regret_upper"] for u in pairs) / len(pairs)
    return f"{len(pairs)} pairs: [{lo:.5f}, {hi:.4f}]"


def table2() -> str:
    out = ["| setting | pairs proven | solve s mean (std) | revenue | emp. regret | emp. regret, 8 restarts "
           "| cert. regret (float32 & exact) | cert. regret (exact) "
           "| not proven: mean bounds reached [lower, upper] | IR viol. rate | paper: solve s | paper: cert. regret |",
           "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, paper in TABLE2:
        ev, row = _load(name)
        if ev is None:
            continue
        cert = row["certified_regret"]["mean"] if row and row["proven"] else None
        st = row["solve_time_s"] if row else {}
        proven = f"{row['proven']}/{row['count']}" if row else "not certified"
        out.append(f"| {name} | {proven} | {_f(st.get('mean'), '{:.3f}')} ({_f(st.get('std'), '{:.3f}')}) | {ev['revenue']:.4f} "
                   f"| {ev['regret_mean']:.5f} | {_f(ev.get('regret_restarts'), '{:.5f}')} | {_f(cert, '{:.5f}')} "
                   f"| {_f(_exact(row), '{:.5f}')} | {_unproven_bounds(row)} | {ev['ir_violation_rate']:.3f} | {paper[0]} | {paper[1]} |")
    return "\n".join(out)


def table_planar() -> str:
    """The same profiles certified twice: by the MIP (results/NAME) and by ``--solver planar``."""
    out = ["| network | pairs proven (planar) | planar s per pair mean (std) | MIP solve s mean (results/NAME run) "
           "| cert. regret (float32 & exact) | max \\|planar - MIP\\| exact upper bound | paper: solve s | planar vs paper |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, paper in PLANAR:
        _, row = _load(name + "_planar")
        _, mip = _load(name)
        if row is None or mip is None:
            continue
        a, b = _records(name), _records(name + "_planar")
        key = "regret_upper_exact"
        both = [k for k in b if k in a and a[k].get(key) is not None and b[k].get(key) is not None]
        diff = max((abs(a[k][key] - b[k][key]) for k in both), default=None)
        t, tm = row["solve_time_s"], mip["solve_time_s"]["mean"]
        out.append(f"| {name} | {row['proven']}/{row['count']} | {t['mean']:.4f} ({t['std']:.4f}) | {tm:.3f} "
                   f"| {_f(row['certified_regret']['mean'], '{:.5f}')} | {_f(diff, '{:.1e}')} "
                   f"| {paper} | {paper / t['mean']:.0f}x |")
    return "\n".join(out)


HARDWARE = {n: "one NVIDIA H200, shared with 5 other training runs (bench/gpu_rerun.sh)"
            for n in ("2x3_teacher", "3x2_teacher", "3x3_teacher")}
HARDWARE.update({n: "the project's 2-core CPU" for n in ("1x2_reg", "1x2_teacher")})
HARDWARE.update({n: "one NVIDIA H200, shared with 13 other training runs (bench/gpu_train_all.sh, 2026-11-26)"
                 for n in ("2x2_reg", "2x2_noreg", "1x2_noreg", "2x2_teacher", "3x10_teacher")})
HARDWARE.update({n: "one NVIDIA H200, shared with 11 other training runs (bench/gpu_stability.sh, 2026-11-26)"
                 for n in ("2x3", "1x2_distill")})
HARDWARE.update({n: "one NVIDIA H200, shared with 9 other training runs (bench/gpu_stability.sh b, 2026-11-26)"
                 for n in ("3x3", "3x10")})
HARDWARE["2x2_distill"] = "the project's 2-core CPU, shared with another training run for most of the time (2026-11-26)"
HARDWARE["3x2"] = "the project's 2-core CPU (2026-11-26)"
HARDWARE["1x2_regretnet_r001"] = "the project's 2-core CPU, 3 runs vmapped in one program (2026-12-03)"
HARDWARE["1x2_regretnet_r0005"] = HARDWARE["1x2_regretnet_r001"]  # the same vmapped sweep
HARDWARE["1x2_regretnet_ft"] = "the project's 2-core CPU (2026-12-03)"
HARDWARE["1x2_regretnet_ft2"] = "the project's 2-core CPU, beside a fresh-clone CI run for 37 of its 41 minutes (2026-12-03)"
HARDWARE["1x2_regretnet_ft3"] = "the project's 2-core CPU, beside a second fine-tune all the time and one or two other jobs for part of it (2026-12-03)"


BASELINE_POINTS, BASELINE_SEED = 100_000, 0  # the cards' baseline revenue estimates


@functools.lru_cache(maxsize=None)  # one estimate per prior (hashable), shared by the cards of a setting
def _baseline_revenues(prior) -> tuple:
    """``((name, mean, s.e.), ...)`` of the strategyproof baselines (:data:`baselines.COMPARED`) for
    ``prior``, Monte Carlo on BASELINE_POINTS profiles (key BASELINE_SEED); a baseline the prior does
    not admit is left out."""
    out = []
    for name in baselines.COMPARED:
        try:
            b = baselines.make(name, prior)
        except baselines.BaselineError:
            continue
        out.append((name, *baselines.revenue_estimate(b, points=BASELINE_POINTS, seed=BASELINE_SEED)))
    return tuple(out)


def shipped_amas(prior) -> list[tuple[str, float]]:
    """The shipped affine maximizers (``checkpoints/*/ama.json``) for this prior: (name, recorded
    revenue), highest first. They are strategyproof by construction (``jaxauction.ama``)."""
    out = []
    for d in sorted((ROOT / "checkpoints").iterdir()):
        if ama.is_ama(d) and ama.load(d)[3] == prior:
            out.append((d.name, json.loads((d / "final_eval.json").read_text())["revenue"]))
    return sorted(out, key=lambda t: -t[1])


def baseline_line(ckpt: Path, revenue: float) -> str:
    """The card's line on the strategyproof baselines of the checkpoint's prior, and whether the net
    earns less than the best of them (a user would then run that auction: zero regret, more revenue)."""
    from jaxauction import checkpoints

    prior = checkpoints.load_with_prior(ckpt)[3]
    rows = _baseline_revenues(prior)
    if not rows:
        return "- strategyproof baselines: none defined for this prior"
    best = max(rows, key=lambda r: r[1])
    text = ", ".join(f"{name} {mean:.4f} ± {se:.4f}" for name, mean, se in rows)
    gap = revenue - best[1]
    better = [(n, r) for n, r in shipped_amas(prior) if r > revenue]
    instead = best[0] + "".join(f", or the shipped affine maximizer `{n}` ({r:.4f}, regret 0 by construction)"
                                for n, r in better[:1])
    verdict = (f"this net earns {-gap:.4f} **less** than {best[0]}, which has zero regret: run {instead} instead; "
               "the net is shipped as a reproduction (or a teacher), not as a mechanism to prefer"
               if gap < 0 else f"this net earns {gap:.4f} more than the best of them ({best[0]})")
    return (f"- strategyproof baselines for this prior (`jaxauction.baselines`, revenue on {BASELINE_POINTS} profiles, seed {BASELINE_SEED}): "
            f"{text}; the net's revenue above is on final_eval's profiles; {verdict}")


FRONTIER = ROOT / "results" / "frontier" / "frontier.json"  # bench/frontier.py: paired revenue differences
PAIRED_PREFIX = "- paired revenue differences"  # how a card's paired line starts (write_ama_card replaces it)


def paired_line(name: str, frontier: Path = FRONTIER) -> str:
    """The card's paired comparisons, read from ``bench/frontier.py``'s output: the net's revenue minus
    each strategyproof baseline's and each certified published net's *on the same profiles* (mean
    ± standard error of the per-profile difference), which is what "earns more" should rest on;
    the baseline line's figures come from different profile sets. Empty when the frontier has
    not been run or does not list the net."""
    try:
        comp = json.loads(frontier.read_text())
    except (OSError, json.JSONDecodeError):
        return ""
    for setting, c in comp.get("comparisons", {}).items():
        for r in c.get("ours", []):
            if r["net"] != name:
                continue
            base = ", ".join(f"{d['diff']:+.4f} ± {d['se']:.4f} against {b}" for b, d in sorted(r["vs_baselines"].items()))
            pub = "; ".join(f"{d['diff']:+.4f} ± {d['se']:.4f} against {d['net']} (its certified regret {d['regret']:.5f})"
                            for d in r.get("vs_published", []))
            return (f"{PAIRED_PREFIX}, this mechanism minus the other, on the same {comp['points']} profiles "
                    f"(seed {comp['seed']}; `python bench/frontier.py`, results/frontier/frontier.md): {base}"
                    + (f"; published nets certified in {setting}: {pub}" if pub else ""))
    return ""


def _body(spec: dict) -> str:
    """``ReLU trunk [128, 128]`` or ``tanh towers [100, 100] (one for allocation, one for payment)``: what feeds the heads."""
    act = {"relu": "ReLU", "tanh": "tanh"}[spec.get("activation", "relu")]
    if spec.get("towers", "shared") == "separate":
        return f"{act} towers {spec['hidden']} (one for allocation, one for payment)"
    return f"{act} trunk {spec['hidden']}"


def _solver(name: str) -> str:
    """The ``--solver`` results/NAME was certified with (its run.json; certify.methods names them)."""
    try:
        return json.loads((ROOT / "results" / name / "run.json").read_text())["solver"]
    except (OSError, KeyError, json.JSONDecodeError):
        return "?"


def write_card(ckpt: Path) -> None:
    """CARD.md for one shipped checkpoint: config, training time and hardware, revenue, regrets."""
    name = ckpt.name
    cfg = json.loads((ckpt / "config.json").read_text())
    spec = json.loads((ckpt / "mechanism.json").read_text())["spec"]
    ev, row = _load(name)
    lines = [f"# {name}", "",
             f"- setting: {cfg['n_agents']} agent(s) x {cfg['n_items']} item(s), additive values, item j ~ U[low_j, high_j] with low={cfg['prior_low']}, high={cfg['prior_high']}",
             f"- architecture: {_body(spec)}, {spec['allocation']} allocation, {spec['payment']} payment"
             + (f" (clip to [0, {spec['payment_max']}])" if spec["payment"] == "free" else ""),
             f"- config: `configs/{cfg['name']}.py` (resolved copy: `config.json`); reproduce with "
             f"`{reproduce_command(cfg, ev['step'] if ev else None)}`",
             f"- hardware: {HARDWARE.get(name, 'unknown')}"]
    if ev:
        stopped = (f"; stopped by the max_seconds budget at step {ev['step']} of a {cfg['steps']}-step schedule "
                   "(the learning-rate decay was not finished, and a rerun stops wherever the budget runs out "
                   "on its machine)") if cfg.get("max_seconds") and ev["step"] < cfg["steps"] else ""
        lines += [f"- training: {ev['step']} steps in {ev['train_seconds']:.0f} s (batch {cfg['batch_size']}){stopped}",
                  f"- revenue {ev['revenue']:.4f}; PGD regret mean {ev['regret_mean']:.5f}, max {ev['regret_max']:.4f} "
                  f"({ev['points']} profiles, {ev['steps']} steps); IR violation rate {ev['ir_violation_rate']:.3f}, "
                  f"revenue with IR-violating profiles zeroed {ev['revenue_ir_zeroed']:.4f}"]
        if ev.get("regret_restarts") is not None:
            lines += [f"- PGD regret with 8 corner-biased restarts per search (1000 profiles, results/{name}/pgd_restarts.json): "
                      f"mean {ev['regret_restarts']:.5f}"]
        lines += [baseline_line(ckpt, ev["revenue"])]
        if paired := paired_line(name):
            lines.append(paired)
    if row:
        cr = row["certified_regret"]
        ce = row.get("certified_regret_exact") or {}
        lines += [f"- certified regret (results/{name}/, `bash bench/certify_all.sh`; float32 `mechanism.apply` and the "
                  f"exact function): mean {_f(cr.get('mean'), '{:.5f}')}, max {_f(cr.get('max'), '{:.5f}')} over "
                  f"{row['proven']} proven of {row['count']} (profile, agent) pairs; for the exact function alone: mean "
                  f"{_f(ce.get('mean'), '{:.5f}')}, max {_f(ce.get('max'), '{:.5f}')} (mean rounding margin "
                  f"{_f(row.get('margin_mean'), '{:.2g}')}); solve time mean {row['solve_time_s']['mean']:.3f} s per pair (`--solver {_solver(name)}`)"]
        _, prow = _load(name + "_planar")
        if prow:
            lines += [f"- exact region enumeration (`--solver planar`, results/{name}_planar/): certified regret mean "
                      f"{_f(prow['certified_regret'].get('mean'), '{:.5f}')} over {prow['proven']} proven of "
                      f"{prow['count']} pairs; {prow['solve_time_s']['mean']:.4f} s per pair"]
    else:
        lines += ["- certified regret: not certified yet (`python certify.py --ckpt checkpoints/%s`)" % name]
    (ckpt / "CARD.md").write_text("\n".join(lines) + "\n")


def write_ama_card(ckpt: Path) -> None:
    """An affine maximizer's CARD.md is written by ``jaxauction.ama_train``; this adds (or refreshes) the
    frontier's paired line, the one part that ``bench/frontier.py`` computes afterwards."""
    card = ckpt / "CARD.md"
    lines = [x for x in card.read_text().splitlines() if not x.startswith(PAIRED_PREFIX)]
    if paired := paired_line(ckpt.name):
        lines.append(paired)
    card.write_text("\n".join(lines) + "\n")


def main() -> None:
    for ckpt in sorted((ROOT / "checkpoints").iterdir()):
        if (ckpt / "mechanism.json").exists():
            write_card(ckpt)
        elif ama.is_ama(ckpt):
            write_ama_card(ckpt)
    text = ("### Table 1 (1x2 and 2x2)\n\n" + table1() + "\n\n### Table 2 (larger settings, no IR guarantee)\n\n" + table2()
            + "\n\n### Free-payment 2-item networks: exact region enumeration (`--solver planar`) beside the MIP\n\n"
            + table_planar())
    print(text)
    path = ROOT / "RESULTS.md"
    doc = path.read_text()
    new = re.sub(r"<!-- tables -->.*<!-- /tables -->", "<!-- tables -->\n" + text.replace("\\", "\\\\") + "\n<!-- /tables -->",
                 doc, flags=re.S)
    path.write_text(new)


if __name__ == "__main__":
    main()
