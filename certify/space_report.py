"""The whole-space certificate as people read it: ``space.md`` (a table per agent) and, for two
items, ``heatmap_agent<i>.png``: agent i's own values ``v_i`` cut into the search's cells, each
coloured by the proven bound on the worst regret over the cell (every ``v_-i`` and misreport),
beside the worst regret found there (a real misreport). The search prunes at the global worst
pair, so a cell's bound says "at most this"; the cells that were split finest are the ones near
the worst case.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

SPACE_JSON = "space.json"   # the whole-space result (certify.campaign.space_run; certify.report reads it)
SPACE_DIR = "space"         # its default directory beside a run's cert/ (certify.py's default_out)
SPACE_MD = "space.md"
HEATMAP = "heatmap_agent{}.png"


def _f(x, fmt=".6f") -> str:
    return "-" if x is None else format(float(x), fmt)


def format_space(doc: dict) -> str:
    """Markdown table of space.json's agents."""
    head = ("| agent | lower | upper (float32) | upper (exact) | gap (exact) | status | cells | boxes | seconds |\n"
            "|---:|---:|---:|---:|---:|:--|---:|---:|---:|")
    rows = [f"| {r['agent']} | {_f(r['lower'])} | {_f(r['upper'])} | {_f(r.get('upper_exact'))} | "
            f"{_f(r.get('gap_exact'), '.2e')} | {r['status']} | {r['cells']} | {r.get('boxes', '-')} | "
            f"{_f(r['seconds'], '.1f')} |" for r in doc["agents"]]
    worst = [f"- agent {r['agent']}: worst pair found v = {np.round(np.asarray(r['worst_profile']), 6).tolist()}, "
             f"misreport b = {np.round(np.asarray(r['worst_misreport']), 6).tolist()}" for r in doc["agents"]]
    return ("# Whole-space regret certificate\n\n"
            "For each agent i: lower <= max over every profile v of the box and every misreport b of "
            "u_i((b, v_-i); v_i) - u_i(v; v_i) <= upper. upper (float32) bounds what `mechanism.apply` "
            "computes (it adds the rounding margin); upper (exact) bounds the exact function of the weights; "
            "lower is the regret of the worst pair found, replayed.\n\n" + head + "\n" + "\n".join(rows) + "\n\n"
            + "\n".join(worst) + "\n")


def heatmap(upper, lower, index, v_lo, v_hi, agent: int, path: Path, title: str = "") -> Path | None:
    """Draw one agent's cells over its two values: ``upper``/``lower`` (C,) the cells' proven bounds
    and worst regrets found, ``index`` (C, 2) their grid positions, ``v_lo``/``v_hi`` (2,) the range
    of the agent's values. None unless two items."""
    index = np.asarray(index)
    if index.ndim != 2 or index.shape[1] != 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = int(index.max()) + 1
    up, lo = np.full((g, g), np.nan), np.full((g, g), np.nan)
    up[index[:, 1], index[:, 0]] = upper
    lo[index[:, 1], index[:, 0]] = np.maximum(lower, 0.0)
    vmax = float(np.nanmax(up)) if np.any(np.isfinite(up)) else 1.0
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4), constrained_layout=True)
    for ax, data, name in ((axes[0], up, "proven bound on the worst regret in the cell"),
                           (axes[1], lo, "worst regret found (a real misreport)")):
        im = ax.imshow(data, origin="lower", extent=(v_lo[0], v_hi[0], v_lo[1], v_hi[1]), cmap="magma",
                       vmin=0.0, vmax=vmax, aspect="auto")
        ax.set_xlabel(f"agent {agent}'s value for item 1")
        ax.set_ylabel(f"agent {agent}'s value for item 2")
        ax.set_title(name, fontsize=10)
    fig.colorbar(im, ax=axes, shrink=0.9, label="regret (over every other value and misreport)")
    fig.suptitle(title or f"agent {agent}: where the mechanism can be exploited")
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(out: Path, doc: dict, maps: dict | None = None, *, plots: bool = True) -> list[Path]:
    """space.md, and a heatmap per agent of ``maps`` (agent -> keyword arguments of
    :func:`heatmap` without path and agent), into ``out``; returns the files written."""
    out = Path(out)
    (out / SPACE_MD).write_text(format_space(doc))
    files = [out / SPACE_MD]
    for agent, kw in (maps or {}).items():
        p = heatmap(agent=agent, path=out / HEATMAP.format(agent), **kw) if plots else None
        if p is not None:
            files.append(p)
    return files
