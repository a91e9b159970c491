"""The plots of a certification run: histograms of the certified regret and the solve times, and
for single-bidder 2-item mechanisms the arrows from truthful values to the best misreports
(:func:`plot_all`, called by :func:`certify.report.write_report`)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from certify.certificate import is_proven

PLOT_REGRET = "regret_hist.png"
PLOT_TIME = "solve_time_hist.png"
PLOT_ARROWS = "misreports.png"

_SOLVE_NAMES = {"planar": "Planar enumeration", "bab": "Branch and bound"}  # else: the MIP


def _solve_label(solvers) -> str:
    """What ``time_solve_s`` measured: the MIP solve, the planar enumeration, bab, or a mix (the
    records' ``solver`` fields, e.g. auto ran bab on some pairs and the MIP on others)."""
    names = sorted({_SOLVE_NAMES.get(x, "MIP solve") for x in solvers if x and x != "none"}) or ["MIP solve"]
    return names[0] if len(names) == 1 else "Search (" + ", ".join(n.lower() for n in names) + ")"


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
