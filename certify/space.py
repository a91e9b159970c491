"""The whole-space certificate: agent i's worst regret over every profile and every misreport.

For agent i, a box ``V`` of valuation profiles (the prior's support, or a given box) and agent i's
bid box ``B_i``,

    lower  <=  max_{v in V, b in B_i}  R(v, b)  <=  upper,     R(v, b) = u_i((b, v_-i); v_i) - u_i(v; v_i)

where ``lower = R(v*, b*)`` at a pair found (replayed in float64) and ``upper`` is proven by best-first
branch and bound over the joint box ``z = (v, b)`` of ``D = N M + M`` dimensions, every box bounded
by :func:`certify.joint.bound_boxes` (both network copies in the box's coordinates), 1024 boxes per
jitted call, each call also evaluating ``R`` at every box centre (the candidates). A box whose bound is
at most ``lower + gap / 2`` is pruned. ``upper = max(open bounds, pruned bounds, lower)``: every point
of the space lies in an open or a pruned box. ``upper`` holds for the exact real-arithmetic function
of the stored weights; ``upper_float32`` adds a rounding margin (:func:`float32_margin`) and bounds
what ``mechanism.apply`` computes.

The space is first cut into *cells*, a grid over agent i's own values ``v_i`` (every cell spans all
of ``v_-i`` and ``B_i``): a cell all of whose boxes are pruned is finished and its record (its bound,
the worst pair found in it) is final; :mod:`certify.campaign.space_run` writes those as they finish
and saves the open pool, so a killed run resumes without loss. The cells' bounds, drawn over ``v_i``,
show where the mechanism can be exploited.

Stopping: ``upper - lower <= gap`` ("optimal"), the deadline ("time_limit"), or the open pool would
pass ``max_open`` boxes ("gap_open"); the bounds reached are reported in every case.
"""
from __future__ import annotations

import dataclasses
import itertools
import time

import jax
import jax.numpy as jnp
import numpy as np

from certify import bab, joint, network, rounding
from certify.network import Weights
from jaxauction.mechanism import MechanismSpec

# pruned boxes kept for the float32 margin: those within the root's margin of the top, at most this many
_KEEP_LEAVES = 200_000


@dataclasses.dataclass
class Pool:
    """The search state of one agent (what a resume needs): open boxes, per-cell pruned maxima,
    the incumbent, finished cells. ``cid`` tags each box with its cell."""

    zl: np.ndarray
    zu: np.ndarray
    ub: np.ndarray
    cid: np.ndarray
    pruned: np.ndarray       # (C,) max bound of the cell's pruned boxes
    cell_lower: np.ndarray   # (C,) best R found in the cell
    cell_z: np.ndarray       # (C, D) where
    done: np.ndarray         # (C,) bool: finished (no open boxes)
    boxes: int = 0
    rounds: int = 0

    def keep(self, mask) -> None:
        """Keep only the open boxes ``mask``."""
        self.zl, self.zu, self.ub, self.cid = self.zl[mask], self.zu[mask], self.ub[mask], self.cid[mask]

    def add(self, zl, zu, ub, cid) -> None:
        """Open more boxes."""
        self.zl, self.zu = np.concatenate([self.zl, zl]), np.concatenate([self.zu, zu])
        self.ub, self.cid = np.concatenate([self.ub, ub]), np.concatenate([self.cid, cid])

    def reopen(self, space: "Space", cells) -> None:
        """Search ``cells`` again from their root boxes (their open boxes and pruned bounds dropped)."""
        cells = np.asarray(cells, int)
        self.keep(~np.isin(self.cid, cells))
        self.pruned[cells] = -np.inf
        zl, zu = space.cell_box(cells)
        self.add(zl, zu, np.full(len(cells), np.inf), cells)


class Space:
    """One agent's whole-space problem: the joint net, the root box, the cells."""

    def __init__(self, w: Weights, spec: MechanismSpec, agent: int, low, high, *, bid_low=None, bid_high=None,
                 grid: int | None = None, batch: int = 1024, backward: bool = True):
        """``low, high`` (N, M): the box of profiles; ``bid_low, bid_high`` (N, M) the bid support,
        whose row ``agent`` is the misreport box (default: the profile box)."""
        n, m = spec.n_agents, spec.n_items
        low, high = np.asarray(low, np.float64).reshape(n, m), np.asarray(high, np.float64).reshape(n, m)
        bid_low = low if bid_low is None else np.asarray(bid_low, np.float64).reshape(n, m)
        bid_high = high if bid_high is None else np.asarray(bid_high, np.float64).reshape(n, m)
        for name, (lo, hi) in (("valuation", (low, high)), ("bid", (bid_low, bid_high))):
            if np.any(lo > hi) or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                raise ValueError(f"the {name} box needs finite low <= high")
        self.w, self.spec, self.agent, self.batch, self.backward = w, spec, int(agent), int(batch), bool(backward)
        self.low, self.high = low, high
        self.jn = joint.compile_joint(w, spec, self.agent)
        self.params64 = network.params_from(w, np.float64)
        _, self.vi, self.bi = joint.layout(spec, self.agent)
        self.bid_low, self.bid_high = bid_low, bid_high
        self.zl0 = np.concatenate([low.reshape(-1), bid_low[self.agent]])
        self.zu0 = np.concatenate([high.reshape(-1), bid_high[self.agent]])
        self.width0 = np.where(self.zu0 > self.zl0, self.zu0 - self.zl0, 1.0)
        self.grid = default_grid(m) if grid is None else int(grid)
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1 cells per value dimension, got {grid}")
        g = self.grid
        edges = [np.linspace(low[self.agent, j], high[self.agent, j], g + 1) for j in range(m)]
        idx = np.array(list(itertools.product(range(g), repeat=m)), int).reshape(-1, m)
        self.cell_lo = np.stack([edges[j][idx[:, j]] for j in range(m)], 1)
        self.cell_hi = np.stack([edges[j][idx[:, j] + 1] for j in range(m)], 1)
        self.cell_index = idx

    @property
    def n_cells(self) -> int:
        return len(self.cell_lo)

    def cell_box(self, c):
        zl, zu = np.tile(self.zl0, (len(c), 1)), np.tile(self.zu0, (len(c), 1))
        zl[:, self.vi], zu[:, self.vi] = self.cell_lo[c], self.cell_hi[c]
        return zl, zu

    def cell_of(self, z):
        """The cell of points ``z`` (P, D) (by agent i's values; a point on an edge: the lower cell)."""
        vi = z[:, self.vi]
        lo, hi = self.low[self.agent], self.high[self.agent]
        frac = np.where(hi > lo, (vi - lo) / np.where(hi > lo, hi - lo, 1.0), 0.0)
        k = np.clip(np.floor(frac * self.grid).astype(int), 0, self.grid - 1)
        return k @ (self.grid ** np.arange(self.spec.n_items - 1, -1, -1))

    def bound(self, zl, zu):
        """``(upper, R at centre)`` of boxes (B, D), in calls of ``batch`` boxes."""
        outs = []
        for s in range(0, len(zl), self.batch):
            a, b = zl[s:s + self.batch], zu[s:s + self.batch]
            k = len(a)
            if k < self.batch:
                a = np.concatenate([a, np.repeat(a[:1], self.batch - k, 0)])
                b = np.concatenate([b, np.repeat(b[:1], self.batch - k, 0)])
            with jax.enable_x64(True):
                o = joint.bound_boxes(self.jn, self.params64, jnp.asarray(a), jnp.asarray(b), self.spec, self.agent,
                                      self.backward)
                outs.append([np.asarray(t, np.float64)[:k] for t in o])
        return tuple(np.concatenate([o[j] for o in outs]) for j in range(2))

    def polish(self, pool: "Pool", z0, steps: int = 64) -> None:
        """Gradient ascent (:func:`certify.joint.ascend`) from the points ``z0``; the paths' best
        points, replayed, are offered as candidates."""
        if len(z0) == 0:
            return
        with jax.enable_x64(True):
            z, _ = joint.ascend(self.params64, jnp.asarray(z0, jnp.float64), jnp.asarray(self.zl0),
                                jnp.asarray(self.zu0), self.spec, self.agent, steps)
        z = np.clip(np.asarray(z, np.float64), self.zl0, self.zu0)
        offer(pool, self, z, self.regret(z))

    def regret(self, z) -> np.ndarray:
        """``R`` at points (P, D), float64."""
        with jax.enable_x64(True):
            return np.asarray(joint.regret_at(self.params64, jnp.asarray(z, jnp.float64), self.spec, self.agent))

    def margin_of(self, zl, zu) -> float:
        """``E >= |R_32 - R|`` on the box ``[zl, zu]`` (D,): the float32 rounding margins
        (:mod:`certify.rounding`) of both copies' utilities, from interval bounds of the joint
        relaxation (:func:`certify.joint.copy_bounds`), with the values' largest magnitude."""
        n, m = self.spec.n_agents, self.spec.n_items
        vmax = np.maximum(np.abs(zl[:n * m]), np.abs(zu[:n * m])).reshape(n, m)
        return sum(rounding.combine(*rounding.outcome_errors(self.w, self.spec, nb, lo, hi, "float32"), vmax,
                                    self.agent)
                   for lo, hi, nb in joint.copy_bounds(self.jn, zl, zu, self.spec, self.agent))


def default_grid(m: int) -> int:
    """Cells per dimension of agent i's values: 8 x 8 for two items (the heatmap), fewer beyond."""
    return {1: 16, 2: 8, 3: 4}.get(m, 2 if m <= 6 else 1)


def new_pool(space: Space, cells=None) -> Pool:
    """A pool with the root boxes of ``cells`` (default: all) open and nothing found yet."""
    c = np.arange(space.n_cells) if cells is None else np.asarray(cells, int)
    zl, zu = space.cell_box(c)
    return Pool(zl, zu, np.full(len(c), np.inf), c.copy(), np.full(space.n_cells, -np.inf),
                np.full(space.n_cells, -np.inf), np.repeat(((space.zl0 + space.zu0) / 2)[None], space.n_cells, 0),
                np.zeros(space.n_cells, bool))


def offer(pool: Pool, space: Space, z, r, cid=None) -> None:
    """Candidate pairs ``z`` (P, D) with regrets ``r``: each cell keeps its best."""
    if len(z) == 0:
        return
    cid = space.cell_of(z) if cid is None else cid
    for j in bab.group_best(cid, r):
        if r[j] > pool.cell_lower[cid[j]]:
            pool.cell_lower[cid[j]], pool.cell_z[cid[j]] = float(r[j]), z[j]


def incumbent(pool: Pool):
    k = int(np.argmax(pool.cell_lower))
    return float(pool.cell_lower[k]), pool.cell_z[k]


def cell_upper(pool: Pool) -> np.ndarray:
    """Each cell's proven bound now: its pruned and open boxes, at least its best pair."""
    up = pool.pruned.copy()
    if len(pool.ub):
        np.maximum.at(up, pool.cid, pool.ub)
    return np.maximum(up, pool.cell_lower)


def search(space: Space, pool: Pool, *, gap: float, deadline: float | None = None, max_open: int = 4_000_000,
           progress=None, on_finish=None, on_round=None, keep_margin: float = 0.0,
           polish_every: int = 25, cell_tol: float | None = None):
    """Branch and bound (module docstring), continuing ``pool`` in place. ``on_finish(cells)`` is
    called with newly finished cells, ``on_round(pool)`` after every round (to save it),
    ``progress(lower, upper, open, finished)`` every round. Returns ``(status, message, leaves)``:
    ``leaves`` the boxes with bounds above ``lower - keep_margin`` (open and pruned, for the float32
    margin), or None if there were more than :data:`_KEEP_LEAVES`. ``cell_tol``: also resolve every
    cell to within ``cell_tol`` of the worst pair found in it (a box is pruned only when its bound is
    within ``cell_tol`` of its cell's best too, and the search goes on until no box is open), so
    the cells' bounds map the regret over ``v_i`` instead of all sitting just below the global worst."""
    if not gap > 0:
        raise ValueError(f"gap must be positive, got {gap}")
    half = max(1, space.batch // 2)
    kept, n_kept = [], 0
    fresh = ~np.isfinite(pool.ub)
    if np.any(fresh):  # roots (new or reopened cells): bound them
        ub, r = space.bound(pool.zl[fresh], pool.zu[fresh])
        pool.ub[fresh] = ub
        offer(pool, space, (pool.zl[fresh] + pool.zu[fresh]) / 2, r, pool.cid[fresh])
        pool.boxes += int(fresh.sum())
    status, message = "optimal", ""
    while True:
        lower, _ = incumbent(pool)
        keep = pool.ub > lower + gap / 2
        if cell_tol is not None:
            keep |= pool.ub > pool.cell_lower[pool.cid] + cell_tol
        if not np.all(keep):
            gone = ~keep
            np.maximum.at(pool.pruned, pool.cid[gone], pool.ub[gone])
            near = gone & (pool.ub > lower - keep_margin)
            if kept is not None and np.any(near):
                kept.append((pool.zl[near], pool.zu[near], pool.ub[near]))
                n_kept += int(near.sum())
                if n_kept > _KEEP_LEAVES:
                    kept = None
            pool.keep(keep)
        has_open = np.zeros(space.n_cells, bool)
        has_open[pool.cid] = True
        newly = ~pool.done & ~has_open
        if np.any(newly):
            pool.done |= newly
            if on_finish is not None:
                on_finish(np.flatnonzero(newly))
        upper = float(cell_upper(pool).max())
        if progress is not None:
            progress(lower, upper, len(pool.ub), int(pool.done.sum()))
        if on_round is not None:
            on_round(pool)
        if upper - lower <= gap and (cell_tol is None or len(pool.ub) == 0):
            break
        if deadline is not None and time.perf_counter() > deadline:
            status, message = "time_limit", f"time limit with {len(pool.ub)} open boxes"
            break
        if len(pool.ub) + half * 8 > max_open:
            status, message = "gap_open", f"stopped at {len(pool.ub)} open boxes (max_open {max_open})"
            break
        k = min(half, len(pool.ub))
        sel = np.argpartition(-pool.ub, k - 1)[:k] if k < len(pool.ub) else np.arange(len(pool.ub))
        rest = np.ones(len(pool.ub), bool)
        rest[sel] = False
        levels = max(1, int(np.log2(max(1, space.batch // len(sel)))))
        cl, cu = bab._split(pool.zl[sel], pool.zu[sel], None, space.width0, "longest", levels)
        ccid = np.tile(pool.cid[sel], 2 ** levels)
        cub, cr = space.bound(cl, cu)
        cub = np.minimum(cub, np.tile(pool.ub[sel], 2 ** levels))   # a child is inside its parent
        pool.boxes += len(cl)
        pool.rounds += 1
        offer(pool, space, (cl + cu) / 2, cr, ccid)
        if pool.rounds % polish_every == 0:   # ascend from the best centres of this round
            top = np.argsort(-cr)[:16]
            space.polish(pool, (cl[top] + cu[top]) / 2)
        pool.keep(rest)
        pool.add(cl, cu, cub, ccid)
    leaves = None
    if kept is not None:
        kept.append((pool.zl, pool.zu, pool.ub))
        leaves = tuple(np.concatenate([k[j] for k in kept]) for j in range(3))
    return status, message, leaves


def float32_margin(space: Space, leaves, upper: float, margin_root: float, budget: int = 32) -> float:
    """``E`` with ``max R_32 <= upper + E``: :func:`certify.bab.leaf_margin` over the boxes kept near
    the top (every other box's bound is below ``upper - margin_root``, so its float32 value is below
    ``upper``); ``margin_root`` when the boxes were not kept."""
    if leaves is None or len(leaves[2]) == 0:
        return float(margin_root)
    e = bab.leaf_margin(leaves, space.zl0, space.zu0, margin_root, space.margin_of, budget=budget)
    return max(0.0, float(leaves[2].max()) + e - upper)


def seed_incumbent(space: Space, pool: Pool, params, *, points: int = 256, steps: int = 300, lr: float = 0.02,
                   seed: int = 0) -> None:
    """Start the search from gradient ascent: misreports (:func:`certify.regret.pgd_batch`) at the
    cells' centres and at random profiles, replayed in float64."""
    from certify.regret import pgd_batch

    n, m = space.spec.n_agents, space.spec.n_items
    rng = np.random.default_rng(seed)
    v = space.low + rng.random((points, n, m)) * (space.high - space.low)
    mid = (space.low + space.high) / 2
    centres = np.repeat(mid[None], space.n_cells, 0)
    centres[:, space.agent] = (space.cell_lo + space.cell_hi) / 2
    v = np.concatenate([centres, v])
    mis, _ = pgd_batch(params, space.spec, v, space.bid_low, space.bid_high, steps, lr)
    b = np.clip(mis[:, space.agent], space.bid_low[space.agent], space.bid_high[space.agent])
    z = np.concatenate([v.reshape(len(v), -1), b], 1)
    r = space.regret(z)
    offer(pool, space, z, r)
    space.polish(pool, z[np.argsort(-r)[:32]])
