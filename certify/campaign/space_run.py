"""``certify.py --space``: the whole-space certificate of a mechanism, resumable, with its files.

    OUT/space_run.json   what the run is about (weights digest, spec, box, cells); a rerun must match
    OUT/cells.jsonl      one line per finished cell (crash-safe appends): its bound, its worst pair
    OUT/pool_agent<i>.npz the open boxes of agent i's search, saved every ``save_every`` seconds
    OUT/space.json       per agent: lower, upper, status, gap, worst_profile, worst_misreport, cells,
                         seconds (:data:`AGENT_KEYS`; scripts read these), rewritten as agents finish
    OUT/space.md, OUT/heatmap_agent<i>.png   the table and, for two items, the cells drawn over v_i

A killed run loses nothing it finished: rerunning the same command reloads the finished cells and the
last saved pool (both are proven bounds whenever they were written) and goes on.
"""
from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

from certify import network, space
from certify.campaign.errors import ManifestError, RunError
from certify.campaign.profiles import parse_agents
from certify.campaign.results import Appender, dir_lock, jsonable, portable_ckpt
from certify.space_report import SPACE_JSON
from jaxauction import checkpoints

SPACE_RUN = "space_run.json"
CELLS = "cells.jsonl"
POOL = "pool_agent{}{}.npz"     # agent, and "_part<w>of<W>" for a worker of --workers W
# one agent's whole-space result: the keys of space.json that scripts use (the contract)
AGENT_KEYS = ("agent", "lower", "upper", "status", "gap", "worst_profile", "worst_misreport", "cells", "seconds")
# beside them: the bound for the exact function, its gap, the float32 margin, boxes bounded, a message
EXTRA_KEYS = ("upper_exact", "gap_exact", "margin32", "boxes", "message")
_MATCH = ("weights_sha256", "spec", "low", "high", "bid_low", "bid_high", "grid")


def read_box(path, low, high):
    """A box of profiles from a JSON file ``{"low": N x M, "high": N x M}`` inside the support."""
    try:
        d = json.loads(Path(path).read_text())
        lo, hi = (np.asarray(d[k], np.float64) for k in ("low", "high"))
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise RunError(f"--box {path}: expected a JSON object with 'low' and 'high' (N x M lists): {e}") from None
    if lo.shape != low.shape or hi.shape != low.shape:
        raise RunError(f"--box {path}: low/high must have shape {low.shape}, got {lo.shape} and {hi.shape}")
    if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise RunError(f"--box {path}: low/high contain NaN or inf")
    if np.any(lo > hi) or np.any(lo < low) or np.any(hi > high):
        raise RunError(f"--box {path}: need low <= high inside the prior's support [{low.tolist()}, {high.tolist()}]")
    return lo, hi


def _read_cells(path: Path) -> list[dict]:
    out = []
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue   # a torn last line: that cell is simply not finished
    return out


def _save_pool(path: Path, pool: space.Pool, seconds: float) -> None:
    checkpoints.atomic_savez(path, {"zl": pool.zl, "zu": pool.zu, "ub": pool.ub, "cid": pool.cid,
                                    "pruned": pool.pruned, "cell_lower": pool.cell_lower, "cell_z": pool.cell_z,
                                    "boxes": np.asarray(pool.boxes), "rounds": np.asarray(pool.rounds),
                                    "seconds": np.asarray(seconds)})


def _load_pool(path: Path, sp: space.Space, part: tuple[int, int]):
    """``(pool, seconds)`` of the saved pool, or a fresh one with every cell of ``part`` open."""
    if not path.exists():
        return space.new_pool(sp, np.flatnonzero(_mine(sp.n_cells, part))), 0.0
    with np.load(path) as f:
        d = {k: f[k] for k in f.files}
    pool = space.Pool(d["zl"], d["zu"], d["ub"], d["cid"], d["pruned"], d["cell_lower"], d["cell_z"],
                      ~_mine(sp.n_cells, part), int(d["boxes"]), int(d["rounds"]))
    return pool, float(d["seconds"])


def _mine(n_cells: int, part: tuple[int, int]) -> np.ndarray:
    """The cells of worker ``part = (w, W)``: ``c % W == w``."""
    return np.arange(n_cells) % part[1] == part[0]


def _restore(sp: space.Space, out: Path, agent: int, gap: float, part: tuple[int, int] = (0, 1),
             map_tol: float | None = None):
    """The agent's pool (of the cells ``c % W == w`` for ``part = (w, W)``): the finished cells of
    cells.jsonl, the saved open boxes, fresh roots for the cells in neither. The other workers'
    cells count as done here (they are theirs to bound). A cell whose boxes were pruned under a
    looser rule than this run's ``gap`` or ``map_tol`` (a rerun asking for more) is searched again
    from its root. Returns ``(pool, seconds of earlier runs)``."""
    mine = _mine(sp.n_cells, part)
    recs = [r for r in _read_cells(out / CELLS) if r.get("agent") == agent]
    fin = {int(r["cell"]): r for r in recs if mine[int(r["cell"])]}   # the last record of a cell wins
    pool, seconds = _load_pool(out / _pool_name(agent, part), sp, part)
    for c, r in fin.items():
        pool.pruned[c] = max(pool.pruned[c], float(r["upper_exact"]))
        if r.get("lower") is not None and float(r["lower"]) > pool.cell_lower[c]:
            pool.cell_lower[c] = float(r["lower"])
            pool.cell_z[c] = np.concatenate([np.asarray(r["worst_profile"], np.float64).reshape(-1),
                                             np.asarray(r["worst_misreport"], np.float64)])
    # the best pair known when any of these boxes was pruned: at most the incumbent now (a cell
    # record also keeps the incumbent it finished under)
    best = max([float(pool.cell_lower.max())] + [float(r.get("incumbent", -np.inf)) for r in recs])
    finished = np.zeros(sp.n_cells, bool)
    finished[list(fin)] = True
    pool.keep(~finished[pool.cid])
    thr = np.full(sp.n_cells, best + gap / 2)
    if map_tol is not None:
        thr = np.minimum(thr, pool.cell_lower + map_tol)
    covered = np.zeros(sp.n_cells, bool)
    covered[pool.cid] = True
    # not finished and without open boxes (new since the save, or a torn record), or pruned
    # under a looser rule: the whole cell again (its root covers it)
    redo = mine & (np.isfinite(pool.pruned) & (pool.pruned > thr) | ~finished & ~covered)
    if np.any(redo):
        pool.reopen(sp, np.flatnonzero(redo))
    pool.done = ~mine | (finished & ~redo)
    return pool, seconds


def _pool_name(agent: int, part: tuple[int, int]) -> str:
    return POOL.format(agent, "" if part[1] == 1 else f"_part{part[0]}of{part[1]}")


def _bar(agent: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=None, disable=not enabled, unit="box", unit_scale=True, dynamic_ncols=True,
                desc=f"agent {agent} whole space", file=sys.stderr)


def certify_agent(sp: space.Space, params, out: Path, *, gap: float, time_limit: float | None,
                  progress: bool = True, save_every: float = 30.0, part: tuple[int, int] = (0, 1),
                  map_tol: float | None = None):
    """Search (or resume) one agent's whole space, or its part ``(w, W)`` of the cells; returns
    ``(space.json record, per-cell arrays for the heatmap)``."""
    agent, spec = sp.agent, sp.spec
    pool, seconds0 = _restore(sp, out, agent, gap, part, map_tol)
    pool_file = out / _pool_name(agent, part)
    earlier = pool.pruned.copy()   # bounds of boxes pruned by earlier runs (their leaves are gone)
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + float(time_limit)
    space.seed_incumbent(sp, pool, params)
    cells_out = Appender(out / CELLS)
    bar = _bar(agent, progress)
    last = [t0]

    def on_finish(cells):
        up, best = space.cell_upper(pool), space.incumbent(pool)[0]
        for c in cells:
            v, b = space.joint.split_point(pool.cell_z[c], spec)
            cells_out.write({"agent": agent, "cell": int(c), "index": sp.cell_index[c], "v_lo": sp.cell_lo[c],
                             "v_hi": sp.cell_hi[c], "upper_exact": float(up[c]), "lower": float(pool.cell_lower[c]),
                             "worst_profile": v, "worst_misreport": b, "incumbent": best})

    def on_round(p):
        now = time.perf_counter()
        if now - last[0] >= save_every:
            last[0] = now
            _save_pool(pool_file, p, seconds0 + now - t0)

    def show(lower, upper, n_open, finished):
        bar.n = pool.boxes
        bar.set_postfix_str(f"[{lower:.6f}, {upper:.6f}] open {n_open} cells {finished}/{sp.n_cells}", refresh=False)
        bar.update(0)

    margin_root = sp.margin_of(sp.zl0, sp.zu0)
    try:
        status, message, leaves = space.search(sp, pool, gap=gap, deadline=deadline, progress=show,
                                               on_finish=on_finish, on_round=on_round, keep_margin=margin_root,
                                               cell_tol=map_tol)
    finally:
        bar.close()
        cells_out.close()
    seconds = seconds0 + time.perf_counter() - t0
    _save_pool(pool_file, pool, seconds)
    lower, z = space.incumbent(pool)
    upper_exact = float(space.cell_upper(pool).max())
    upper = upper_exact + space.float32_margin(sp, leaves, upper_exact, margin_root)
    mine = _mine(sp.n_cells, part)
    for c in np.flatnonzero(np.isfinite(earlier) & mine):
        # boxes pruned by earlier runs: their cell's margin
        upper = max(upper, earlier[c] + sp.margin_of(*(a[0] for a in sp.cell_box([c]))))
    margin = upper - upper_exact
    v, b = space.joint.split_point(z, spec)
    rec = {"agent": agent, "lower": lower, "upper": upper, "status": status, "gap": upper - lower,
           "worst_profile": v, "worst_misreport": b, "cells": sp.n_cells, "seconds": seconds,
           "upper_exact": upper_exact, "gap_exact": upper_exact - lower, "margin32": margin,
           "boxes": pool.boxes, "message": message, "map_tol": map_tol}
    cells = {"upper": np.where(mine, space.cell_upper(pool), np.nan), "lower": np.where(mine, pool.cell_lower, np.nan),
             "index": sp.cell_index, "v_lo": sp.low[agent], "v_hi": sp.high[agent]}
    return rec, cells


def _part(ckpt, out, agent, low, high, grid, batch, backward, gap, time_limit, part, map_tol):
    """One worker of ``--workers W``: its part of the agent's cells (a spawned process)."""
    params, spec, _, prior = checkpoints.load_with_prior(ckpt)
    bid_low, bid_high = (b.astype(np.float64) for b in prior.bounds())
    sp = space.Space(network.weights64(params), spec, agent, low, high, bid_low=bid_low, bid_high=bid_high,
                     grid=grid, batch=batch, backward=backward)
    return certify_agent(sp, params, Path(out), gap=gap, time_limit=time_limit, progress=False, part=part,
                         map_tol=map_tol)


def merge(parts: list) -> tuple[dict, dict]:
    """The agent's record from its workers' (each bounds its own cells, so the maxima are the
    whole space's: ``upper - lower <= max_w (upper_w - lower_w)``)."""
    recs = [r for r, _ in parts]
    best = max(recs, key=lambda r: r["lower"])
    rec = dict(best)
    for k in ("upper", "upper_exact", "margin32"):
        rec[k] = max(r[k] for r in recs)
    rec.update(gap=rec["upper"] - rec["lower"], gap_exact=rec["upper_exact"] - rec["lower"],
               boxes=sum(r["boxes"] for r in recs), seconds=max(r["seconds"] for r in recs),
               status=next((r["status"] for r in recs if r["status"] != "optimal"), "optimal"),
               message="; ".join(f"worker {w}: {r['message']}" for w, r in enumerate(recs) if r["message"]))
    cells = dict(parts[0][1])
    for k in ("upper", "lower"):
        cells[k] = np.nanmax(np.stack([c[k] for _, c in parts]), axis=0)
    return rec, cells


def run_space(ckpt, out_dir, *, agents="all", gap: float = 1e-4, box=None, time_limit: float | None = None,
              grid: int | None = None, progress: bool = True, batch: int = 1024, backward: bool | None = None,
              plots: bool = True, workers: int = 1, map_tol: float | None = None) -> dict:
    """Certify the whole space of ``ckpt`` for ``agents`` into ``out_dir`` (module docstring);
    returns the space.json content. ``workers > 1``: each agent's cells are dealt round-robin to
    that many processes, each with its own pool (a rerun with another count keeps the finished
    cells and restarts the open ones). ``map_tol``: resolve every cell's bound to within this of
    its worst pair (:func:`certify.space.search`'s ``cell_tol``: a heatmap of the regret over v_i)."""
    if map_tol is not None and not map_tol > 0:
        raise RunError(f"--map-tol must be positive, got {map_tol}")
    if not isinstance(workers, int) or workers < 1:
        raise RunError(f"--workers must be a positive integer, got {workers!r}")
    if not gap > 0:
        raise RunError(f"--gap must be positive, got {gap}")
    if grid is not None and (isinstance(grid, bool) or not isinstance(grid, int) or grid < 1):
        raise RunError(f"--grid must be a positive integer, got {grid!r}")
    if time_limit is not None and not time_limit > 0:
        raise RunError(f"--time-limit must be positive, got {time_limit}")
    params, spec, info, prior = checkpoints.load_with_prior(ckpt)
    from certify import linbound

    try:
        linbound.check_supported(spec)
    except Exception as e:
        raise RunError(f"the whole-space certificate uses bab's relaxations: {e}") from None
    bid_low, bid_high = (b.astype(np.float64) for b in prior.bounds())
    low, high = (bid_low, bid_high) if box is None else read_box(box, bid_low, bid_high)
    agent_list = parse_agents(agents, spec.n_agents)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if backward is None:   # as for a profile's bab: the CROWN-style replay pays off on tanh nets only
        from certify.certificate import CertifyOptions
        from certify.regret import bab_backward

        backward = bab_backward(spec, CertifyOptions())
    w = network.weights64(params)
    spaces = {a: space.Space(w, spec, a, low, high, bid_low=bid_low, bid_high=bid_high, grid=grid,
                             batch=batch, backward=backward) for a in agent_list}
    manifest = {"ckpt": portable_ckpt(ckpt), "weights_sha256": network.digest(params), "spec": spec.to_dict(),
                "low": low, "high": high, "bid_low": bid_low, "bid_high": bid_high,
                "grid": spaces[agent_list[0]].grid}
    maps = {}
    with dir_lock(out):
        _check_manifest(out, jsonable(manifest))
        doc = _read_space(out)
        for a in agent_list:
            prev = next((r for r in doc["agents"] if r["agent"] == a), None)
            if (prev is not None and prev["status"] == "optimal" and prev.get("gap_exact", np.inf) <= gap
                    and map_tol is None):
                continue
            if workers == 1:
                rec, maps[a] = certify_agent(spaces[a], params, out, gap=gap, time_limit=time_limit,
                                             progress=progress, map_tol=map_tol)
            else:
                rec, maps[a] = merge(_run_parts(ckpt, out, a, low, high, spaces[a].grid, batch, backward, gap,
                                                time_limit, workers, progress, map_tol))
            doc["agents"] = sorted([r for r in doc["agents"] if r["agent"] != a] + [jsonable(rec)],
                                   key=lambda r: r["agent"])
            doc.update({"weights_sha256": manifest["weights_sha256"], "digest": manifest["weights_sha256"],
                        "spec": manifest["spec"], "low": low, "high": high, "requested_gap": gap})
            checkpoints.atomic_write_text(out / SPACE_JSON, json.dumps(jsonable(doc), indent=1))
        from certify import space_report

        space_report.write(out, doc, maps, plots=plots)
    return doc


def _run_parts(ckpt, out, agent, low, high, grid, batch, backward, gap, time_limit, workers, progress, map_tol):
    import concurrent.futures as cf
    import multiprocessing as mp

    if progress:
        print(f"agent {agent}: whole space on {workers} worker processes ...", file=sys.stderr)
    with cf.ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as ex:
        futs = [ex.submit(_part, str(ckpt), str(out), agent, low, high, grid, batch, backward, gap, time_limit,
                          (w, workers), map_tol) for w in range(workers)]
        return [f.result() for f in futs]


def _read_space(out: Path) -> dict:
    p = out / SPACE_JSON
    if p.exists():
        try:
            return json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            pass
    return {"agents": []}


def _check_manifest(out: Path, manifest: dict) -> None:
    p = out / SPACE_RUN
    if p.exists():
        old = json.loads(p.read_text())
        diffs = [k for k in _MATCH if old.get(k) != manifest.get(k)]
        if diffs:
            raise ManifestError(f"{out} holds a whole-space run of another net or box (differs in "
                                f"{', '.join(diffs)}); use another --out")
        return
    checkpoints.atomic_write_text(p, json.dumps(manifest, indent=1))
