"""Batched input-space branch and bound in JAX: ``max u_i(x)`` over agent i's bid box.

The search keeps a pool of open boxes, each with a proven upper bound
(:func:`certify.linbound.bound_boxes`). Every round it takes the ``batch / 2`` open boxes with the
largest bounds (best first), bisects each, and bounds all children in one jitted, vmapped call,
which also evaluates the utility at every child's centre (``mechanism.apply`` in float64: the
candidate misreports). Then

    lower = best utility evaluated,      upper = max(open bounds, pruned bounds, lower)

is a valid bracket of ``max_x u_i``: every point of the root box lies in an open box, a pruned
one, or a bisected one whose children cover it. A child whose bound is at most
``lower + gap / 2`` is pruned (its bound is remembered in ``upper``). The search stops when
``upper - lower <= gap`` ("optimal"), at the deadline ("time_limit") or when the pool would exceed
``max_open`` boxes ("gap_open"): the bounds reached are reported either way.

Branching (``branching``): ``"longest"`` bisects the widest edge relative to the root box;
``"slope"`` the edge with the largest ``|a_j| (xu_j - xl_j)``, ``a`` the linear part of the
box's utility bound (the direction in which the bound changes most, so one child is likely to be
pruned). ``bench/bab_vs_mip.py --branching`` measures both (BENCHMARKS.md): longest edge, the
default, was faster on all four nets tried.
"""
from __future__ import annotations

import dataclasses
import functools
import time

import jax
import jax.numpy as jnp
import numpy as np

from certify import linbound, network
from certify.network import Weights
from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec

BRANCHING = ("longest", "slope")


@dataclasses.dataclass
class BabResult:
    """What :func:`maximize` proved: ``best_u <= max_x u_i(x) <= upper``."""

    upper: float
    best_u: float
    best_b: np.ndarray
    status: str          # "optimal" | "time_limit" | "gap_open"
    boxes: int           # boxes bounded
    rounds: int
    open: int            # open boxes left
    seconds: float
    message: str = ""
    leaves: tuple = ()   # (xl (L, M), xu (L, M), ub (L,)): the final partition, open and pruned boxes


def group_best(group: np.ndarray, val: np.ndarray) -> np.ndarray:
    """Indices of the largest ``val`` of each group present in ``group`` (one per group)."""
    order = np.lexsort((-val, group))
    head = np.ones(len(order), bool)
    head[1:] = group[order][1:] != group[order][:-1]
    return order[head]


def _split(pl, pu, pa, width0, branching, levels):
    """Bisect every box ``levels`` times (each time along its best edge): 2^levels pieces each
    (``pa``, the boxes' slopes, is only read by ``"slope"``; None with ``"longest"``)."""
    for _ in range(levels):
        k = len(pl)
        score = (pu - pl) / width0 if branching == "longest" else np.abs(pa) * (pu - pl) + 1e-300 * (pu - pl)
        score = np.where(pu > pl, score, -1.0)
        dim = np.argmax(score, axis=1)
        rows = np.arange(k)
        cut = (pl[rows, dim] + pu[rows, dim]) / 2
        left_u, right_l = pu.copy(), pl.copy()
        left_u[rows, dim] = cut
        right_l[rows, dim] = cut
        pl, pu = np.concatenate([pl, right_l]), np.concatenate([left_u, pu])
        pa = None if pa is None else np.concatenate([pa, pa])
    return pl, pu


@functools.partial(jax.jit, static_argnames=("spec", "backward"))
def _round(net, params64, xl, xu, fixed, vals, onehot, spec, backward):
    """Bounds of a batch of boxes and the utility at their centres (the agent is the one-hot
    ``onehot`` (N,), an array, so one compilation serves every agent)."""
    ub, au = linbound.bound_boxes(net, xl, xu, fixed, vals, spec, backward)
    mid = (xl + xu) / 2
    n, m = spec.n_agents, spec.n_items
    prof = fixed.reshape(-1, n, m) + onehot[None, :, None] * mid[:, None, :]
    a, p = mechanism.apply(params64, prof, spec)   # params64 is shared-trunk: apply reads its keys
    u = jnp.einsum("bnm,n,bm->b", a, onehot, vals) - p @ onehot
    return ub, au, u


class Problem:
    """One (profile, agent) to maximize: the compiled weights and the jitted round."""

    def __init__(self, w: Weights, spec: MechanismSpec, v, agent: int, batch: int = 1024, backward: bool = True,
                 net: linbound.AgentNet | None = None):
        """``net``: :func:`certify.linbound.compile_net` of ``(w, spec, agent)`` if already made (it
        does not depend on the profile, so problems of one agent can share it)."""
        self.spec, self.agent, self.batch, self.backward = spec, int(agent), int(batch), bool(backward)
        self.v = np.asarray(v, np.float64)
        self.net = linbound.compile_net(w, spec, self.agent) if net is None else net
        self.params64 = network.params_from(w, np.float64)  # the shared-trunk form
        fixed = self.v.copy()
        fixed[self.agent] = 0.0
        self.fixed = fixed.reshape(-1)
        self.vals = self.v[self.agent]

    def bound(self, xl: np.ndarray, xu: np.ndarray, fixed=None, vals=None):
        """``(upper (B,), slope (B, M), centre utility (B,))`` for boxes (B, M) of this problem, or
        of other profiles of the same agent (``fixed`` (B, N*M), ``vals`` (B, M)). Every call is
        padded to ``batch`` boxes (one compilation per network; a padded call costs a full one)."""
        b = len(xl)
        size = max(b, self.batch)
        fixed = np.tile(self.fixed, (b, 1)) if fixed is None else fixed
        vals = np.tile(self.vals, (b, 1)) if vals is None else vals
        pad = lambda a: np.concatenate([a, np.repeat(a[:1], size - b, 0)]) if size > b else a
        with jax.enable_x64(True):
            out = _round(self.net, self.params64, jnp.asarray(pad(xl)), jnp.asarray(pad(xu)),
                         jnp.asarray(pad(fixed)), jnp.asarray(pad(vals)),
                         jnp.asarray(np.eye(self.spec.n_agents)[self.agent]), self.spec, self.backward)
            ub, au, u = (np.asarray(t, np.float64)[:b] for t in out)
        return ub, au, u


def maximize(problem: Problem, lo_i, hi_i, *, inc_u: float = -np.inf, inc_b=None, gap: float = 1e-6,
             deadline: float | None = None, branching: str = "longest",
             max_open: int = 2_000_000, max_boxes: int | None = None, progress=None) -> BabResult:
    """Branch and bound ``max u_i`` over ``[lo_i, hi_i]`` (module docstring): :func:`maximize_many`
    of one problem.

    Args:
      problem: the (profile, agent).
      lo_i, hi_i: (M,) agent i's bid box.
      inc_u, inc_b: a known bid and its utility (e.g. from gradient ascent), if any.
      gap: stop when ``upper - lower <= gap`` (absolute).
      deadline: ``time.perf_counter()`` value to stop at.
      branching: one of :data:`BRANCHING`.
      max_open: stop ("gap_open") before the pool of open boxes exceeds this.
      max_boxes: stop ("gap_open") once this many boxes have been bounded (None: no limit).
      progress: optional callable ``(lower, upper, open_boxes)`` called every round.
    """
    prog = None if progress is None else (lambda lower, upper, n_open: progress(float(lower[0]), float(upper[0]), n_open))
    return maximize_many([problem], lo_i, hi_i, incs=[(inc_u, inc_b)], gap=gap, deadline=deadline,
                         branching=branching, max_open=max_open, max_boxes=max_boxes, progress=prog)[0]


def maximize_many(problems: list, lo_i, hi_i, *, incs=None, gap: float = 1e-6, deadline: float | None = None,
                  branching: str = "longest", max_open: int = 2_000_000, max_boxes: int | None = None,
                  progress=None) -> list:
    """Branch and bound for many problems of one agent (profiles of one network) in one pool:
    every call bounds boxes of several profiles, so a batch stays full (on a GPU, busy) while each
    problem needs only a few. Each problem gets a fair share of every call (its best boxes);
    its bracket is what it would prove alone (other boxes). ``incs``: per problem ``(inc_u,
    inc_b)`` or None. A problem that has not closed its gap at the deadline gets status
    "time_limit", and one stopped by ``max_open`` (the shared pool) or ``max_boxes`` (its own
    boxes) "gap_open", with the bounds reached. ``progress(lower (P,), upper (P,), open_boxes)``
    is called every round."""
    if branching not in BRANCHING:
        raise ValueError(f"branching must be one of {BRANCHING}, got {branching!r}")
    if not gap > 0:
        raise ValueError(f"gap must be positive, got {gap}")
    if not problems:
        return []
    first = problems[0]
    if any(p.agent != first.agent or p.spec != first.spec or p.batch != first.batch or p.backward != first.backward
           for p in problems):
        raise ValueError("maximize_many needs problems of one agent, spec, batch and bound method")
    t0 = time.perf_counter()
    n = len(problems)
    lo_i, hi_i = np.asarray(lo_i, np.float64), np.asarray(hi_i, np.float64)
    width0 = np.where(hi_i > lo_i, hi_i - lo_i, 1.0)
    fixed_all = np.stack([p.fixed for p in problems])
    vals_all = np.stack([p.vals for p in problems])
    batch, half = first.batch, max(1, first.batch // 2)
    best_u = np.full(n, -np.inf)
    best_b = np.repeat(((lo_i + hi_i) / 2)[None], n, 0)
    for k, inc in enumerate(incs or [None] * n):
        if inc is not None and inc[1] is not None:
            best_u[k], best_b[k] = float(inc[0]), np.asarray(inc[1], np.float64)
    pruned = np.full(n, -np.inf)
    boxes, rounds, left = np.zeros(n, int), np.zeros(n, int), np.zeros(n, int)
    status, msgs, done_at = ["optimal"] * n, [""] * n, np.full(n, np.nan)
    gone = []                       # pruned and finished boxes (xl, xu, ub, pid): with the open ones, a partition
    uppers, final = np.full(n, np.inf), np.full(n, np.inf)

    def bound(xl, xu, pid):
        out = []
        for s0 in range(0, len(xl), batch):   # calls of at most `batch` boxes: one compilation
            sl = slice(s0, s0 + batch)
            out.append(first.bound(xl[sl], xu[sl], fixed_all[pid[sl]], vals_all[pid[sl]]))
        return tuple(np.concatenate([o[k] for o in out]) for k in range(3))

    def take_best(pid, val, xl, xu):
        for j in group_best(pid, val):
            if val[j] > best_u[pid[j]]:
                best_u[pid[j]], best_b[pid[j]] = float(val[j]), (xl[j] + xu[j]) / 2

    pid = np.arange(n)
    xl, xu = np.repeat(lo_i[None], n, 0), np.repeat(hi_i[None], n, 0)
    ub, au, u = bound(xl, xu, pid)
    boxes += 1
    take_best(pid, u, xl, xu)
    active = np.ones(n, bool)
    while True:
        keep = ub > best_u[pid] + gap / 2
        if not np.all(keep):
            np.maximum.at(pruned, pid[~keep], ub[~keep])
            gone.append((xl[~keep], xu[~keep], ub[~keep], pid[~keep]))
            xl, xu, ub, au, pid = xl[keep], xu[keep], ub[keep], au[keep], pid[keep]
        top_open = np.full(n, -np.inf)
        np.maximum.at(top_open, pid, ub)
        uppers = np.maximum(np.maximum(top_open, pruned), best_u)
        uppers = np.where(active, uppers, final)       # a finished problem keeps the bound it ended with
        if progress is not None:
            progress(best_u, uppers, len(ub))
        over = deadline is not None and time.perf_counter() > deadline
        full = len(ub) + half > max_open
        ending = active & (uppers - best_u <= gap)     # closed; the others below end with their gap open
        for k in np.flatnonzero(active & ~ending):
            if over or full or (max_boxes is not None and boxes[k] >= max_boxes):
                ending[k] = True
                status[k] = "time_limit" if over else "gap_open"
                msgs[k] = (f"time limit with {int(np.sum(pid == k))} open boxes" if over else
                           f"stopped at {len(ub)} open boxes (max_open {max_open})" if full else
                           f"stopped after {boxes[k]} boxes (max_boxes {max_boxes})")
        if np.any(ending):
            final[ending] = uppers[ending]
            done_at[ending] = time.perf_counter() - t0
            np.add.at(left, pid, ending[pid])
            active &= ~ending
            out = ~active[pid]
            gone.append((xl[out], xu[out], ub[out], pid[out]))
            xl, xu, ub, au, pid = xl[~out], xu[~out], ub[~out], au[~out], pid[~out]
        if not np.any(active):
            break
        n_act = int(np.sum(active))
        quota = max(1, half // n_act)
        if n_act == 1:   # one problem left (or alone): its best boxes, without sorting the pool
            sel = np.argpartition(-ub, quota - 1)[:quota] if quota < len(ub) else np.arange(len(ub))
        else:
            order = np.lexsort((-ub, pid))
            first_of = np.searchsorted(pid[order], pid[order], side="left")
            sel = order[np.arange(len(order)) - first_of < quota]
            if len(sel) > half:  # more problems than half a batch: their best boxes, best first
                sel = sel[np.argsort(-ub[sel])[:half]]
        rest = np.ones(len(ub), bool)
        rest[sel] = False
        # a small pool: cut each box into 2^levels pieces, so that a round fills the batch
        levels = max(1, int(np.log2(max(1, batch // len(sel)))))
        cl, cu = _split(xl[sel], xu[sel], au[sel], width0, branching, levels)
        cpid = np.tile(pid[sel], 2 ** levels)
        cub, cau, cval = bound(cl, cu, cpid)
        np.add.at(boxes, cpid, 1)
        rounds[np.unique(cpid)] += 1
        take_best(cpid, cval, cl, cu)
        xl, xu = np.concatenate([xl[rest], cl]), np.concatenate([xu[rest], cu])
        ub, au, pid = np.concatenate([ub[rest], cub]), np.concatenate([au[rest], cau]), np.concatenate([pid[rest], cpid])
    allx = [np.concatenate([g[k] for g in gone]) for k in range(4)]
    results = []
    for k in range(n):
        mine = allx[3] == k
        results.append(BabResult(upper=float(final[k]), best_u=float(best_u[k]), best_b=best_b[k].copy(),
                                 status=status[k], boxes=int(boxes[k]), rounds=int(rounds[k]), open=int(left[k]),
                                 seconds=float(done_at[k]), message=msgs[k],
                                 leaves=(allx[0][mine], allx[1][mine], allx[2][mine])))
    return results


def leaf_margin(leaves, root_lo, root_hi, margin_root: float, margin_of, budget: int = 16) -> float:
    """``E`` with ``max_x u_32(x) <= max_leaves (ub + E_leaf) <= upper + E``: the float32 margin of
    the maximum, from margins of sub-boxes instead of the whole box.

    ``margin_of(lo, hi)`` bounds ``|u_32 - u_R|`` on a sub-box (:mod:`certify.rounding`) and
    ``margin_root`` on the whole box. The box is cut into cells, each with its own margin; a leaf
    gets the largest margin of the cells it touches, so ``max over cells of (max ub of the leaves
    touching the cell + the cell's margin)`` bounds ``u_32`` everywhere. Best first: the cell
    attaining that maximum is bisected (longest edge) and its halves' margins computed, ``budget``
    times. Returns the result minus ``max ub`` (so ``upper + E`` is the float32 bound)."""
    xl, xu, ub = leaves
    top_all = float(ub.max())
    cells = [(np.asarray(root_lo, np.float64), np.asarray(root_hi, np.float64), float(margin_root))]

    def value(cell):
        lo, hi, e = cell
        touch = np.all(xl <= hi, axis=1) & np.all(xu >= lo, axis=1)
        return (float(ub[touch].max()) if np.any(touch) else -np.inf) + e

    vals = [value(cells[0])]
    for _ in range(max(0, budget // 2)):
        k = int(np.argmax(vals))
        lo, hi, e = cells[k]
        d = int(np.argmax(hi - lo))
        if not hi[d] > lo[d]:
            break
        cut = (lo[d] + hi[d]) / 2
        a_hi, b_lo = hi.copy(), lo.copy()
        a_hi[d], b_lo[d] = cut, cut
        kids = [(lo, a_hi, min(e, float(margin_of(lo, a_hi)))), (b_lo, hi, min(e, float(margin_of(b_lo, hi))))]
        cells[k:k + 1] = kids
        vals[k:k + 1] = [value(c) for c in kids]
    return max(0.0, max(vals) - top_all)
