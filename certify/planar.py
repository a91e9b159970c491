"""Exact regret for two-item mechanisms by linear-region enumeration (no MIP solver).

With free (clipped linear) payments the mechanism is continuous and piecewise affine in agent
i's bids: ReLUs, sparsemax and the payment clip are all piecewise affine. So agent i's utility

    u(b) = sum_j v_ij a_ij(b, v_-i) - clip(q_i(b, v_-i), 0, P)

is affine on each linear region of the network restricted to the bid box B = [lo, hi]^M, and its
maximum over B is attained at a vertex of some region. For M = 2 items B is a rectangle and the
regions are convex polygons, which this module enumerates exactly (in float64):

1. Start from the rectangle; every polygon carries its vertices and, at each vertex, the values
   of the layer being processed (affine on the polygon, so values along an edge interpolate).
2. Trunk layer l: a polygon on which some pre-activation ``z_k`` takes both signs at its vertices
   is cut along ``z_k = 0`` (both pieces keep the on-line vertices), until every neuron has one
   sign per polygon; then the next layer's values are ``relu(z) @ W + c`` at the vertices.
3. Heads: for each item j, a polygon is cut until all its vertices lie in one closed sparsemax
   cell ``{z : z_k >= tau_S(z) for k in S, z_k <= tau_S(z) otherwise}``, with
   ``tau_S = (sum_{k in S} z_k - 1) / |S|`` and S the support at the polygon's centroid (a convex
   polygon whose vertices lie in a convex cell lies in it); then along ``q_i = 0`` and
   ``q_i = P``.
4. The maximum of u over all vertices (evaluated by the float64 forward pass, not by the
   interpolated values) is the maximum over B.

All polygons are stored flat (:class:`Polygons`) and cut together, in rounds: each round cuts
every polygon that still needs it along its first offending line, in a few vectorized numpy
operations, so Python work grows with the number of rounds, not of regions.

Numerics: a vertex whose value is within :data:`EPS` (1e-12) of a cut line counts as on it. The
certificate's upper bound is the vertex maximum plus :data:`TOLERANCE` (reported as the gap),
which covers the float64 error of the vertex positions by orders of magnitude (the interpolated
and the replayed utilities agree to ~1e-15 on the shipped networks; ``network_error`` reports it).

For a single bidder the regions do not depend on the profile (the network sees only agent i's
bids), so :func:`vertices` memoizes them per (weights, agent, box, other bids): certifying many
profiles of a 1xM mechanism enumerates once.
"""
from __future__ import annotations

import collections
import hashlib
import time
from typing import NamedTuple

import numpy as np

from jaxauction.mechanism import MechanismSpec

from .encoders import forward64, sparsemax_np
from .tighten import Weights

EPS = 1e-12
TOLERANCE = 1e-9
MAX_REGIONS = 100_000
MAX_ROUNDS = 100_000


class PlanarError(ValueError):
    """The mechanism or box is outside what the planar method handles."""


class PlanarTimeout(RuntimeError):
    """The enumeration passed its deadline (no bound is proven)."""


class Regions(NamedTuple):
    """Result of an enumeration: candidate points (agent i's bids) and bookkeeping.

    Attributes:
      points: (K, 2) every vertex of every linear region (duplicates removed).
      alloc, pay: (K, M) agent i's allocation and (K,) its payment at the points, from the
        interpolated head values (to compare with the forward pass).
      n_regions: number of linear regions found.
      time_s: wall time of the enumeration.
    """

    points: np.ndarray
    alloc: np.ndarray
    pay: np.ndarray
    n_regions: int
    time_s: float


def check(spec: MechanismSpec) -> None:
    """Raise :class:`PlanarError` unless ``spec`` is a free-payment mechanism with 2 items."""
    if spec.n_items != 2:
        raise PlanarError(f"the planar method needs 2 items (a 2-D bid box); this mechanism has {spec.n_items}: "
                          f"use a MIP solver (--solver auto)")
    if spec.payment != "free":
        raise PlanarError(f"the planar method needs the free (clipped linear) payment: with the {spec.payment!r} "
                          f"payment the utility is not piecewise affine; use a MIP solver (--solver auto)")
    if spec.allocation != "sparsemax":
        raise PlanarError(f"the planar method needs a sparsemax allocation, got {spec.allocation!r}")


# --------------------------------------------------------------------------------------------
# polygon cutting, all polygons at once
# --------------------------------------------------------------------------------------------
class Polygons(NamedTuple):
    """Convex polygons stored flat: polygon p owns rows ``starts[p] : starts[p] + sizes[p]`` of
    ``pts`` (its vertices in order) and ``vals`` (values, affine on the polygon, at them)."""

    pts: np.ndarray    # (V, 2)
    vals: np.ndarray   # (V, D)
    sizes: np.ndarray  # (P,)

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.sizes) - self.sizes

    def take(self, keep: np.ndarray) -> "Polygons":
        """The polygons with ``keep`` (P,) true."""
        rows = np.repeat(keep, self.sizes)
        return Polygons(self.pts[rows], self.vals[rows], self.sizes[keep])

    def with_vals(self, vals) -> "Polygons":
        return Polygons(self.pts, vals, self.sizes)


def _concat(parts: list) -> Polygons:
    return Polygons(np.concatenate([p.pts for p in parts]), np.concatenate([p.vals for p in parts]),
                    np.concatenate([p.sizes for p in parts]))


def _cut(polys: Polygons, s: np.ndarray) -> Polygons:
    """Cut every polygon along the zero line of the affine function with values ``s`` (V,) at
    the vertices. Each polygon becomes its ``s <= 0`` piece followed by its ``s >= 0`` piece;
    vertices within EPS of the line belong to both, and pieces with < 3 vertices are dropped."""
    sizes, starts = polys.sizes, polys.starts
    n_v = len(s)
    nxt = np.arange(1, n_v + 1)
    nxt[starts + sizes - 1] = starts                 # the edge after a polygon's last vertex closes it
    sn = s[nxt]
    cross = ((s < -EPS) & (sn > EPS)) | ((s > EPS) & (sn < -EPS))
    c = np.flatnonzero(cross)
    t = (s[c] / (s[c] - sn[c]))[:, None]
    pts = np.concatenate([polys.pts, polys.pts[c] + t * (polys.pts[nxt[c]] - polys.pts[c])])
    vals = np.concatenate([polys.vals, polys.vals[c] + t * (polys.vals[nxt[c]] - polys.vals[c])])
    # items in polygon order: vertex a (row a), then the crossing on edge (a, a+1) (row n_v + rank)
    src = np.stack([np.arange(n_v), np.full(n_v, -1)], 1)
    src[c, 1] = n_v + np.arange(len(c))
    src = src.reshape(-1)
    pid = np.repeat(np.repeat(np.arange(len(sizes)), sizes), 2)
    neg = np.stack([s <= EPS, cross], 1).reshape(-1)
    pos = np.stack([s >= -EPS, cross], 1).reshape(-1)
    piece = np.concatenate([2 * pid[neg], 2 * pid[pos] + 1])
    order = np.argsort(piece, kind="stable")
    rows = np.concatenate([src[neg], src[pos]])[order]
    new_sizes = np.bincount(piece, minlength=2 * len(sizes))
    out = Polygons(pts[rows], vals[rows], new_sizes)
    return out.take(new_sizes >= 3)


def _rounds(polys: Polygons, cut_values, deadline: float | None = None) -> Polygons:
    """Cut polygons in rounds until ``cut_values`` has nothing left to cut.

    ``cut_values(polys)`` returns ``(cut (P,) bool, s (V,))``: which polygons to cut, and the
    values at the vertices of the affine function along whose zero line each is cut. Raises
    :class:`PlanarTimeout` past ``deadline`` (``time.perf_counter()`` seconds)."""
    done, rounds = [], 0
    while len(polys.sizes):
        if deadline is not None and time.perf_counter() > deadline:
            raise PlanarTimeout(f"enumeration stopped by the time limit after {rounds} rounds "
                                f"({sum(len(p.sizes) for p in done) + len(polys.sizes)} regions so far)")
        cut, s = cut_values(polys)
        done.append(polys.take(~cut))
        polys = _cut(polys.take(cut), s[np.repeat(cut, polys.sizes)])
        rounds += 1
        if sum(len(p.sizes) for p in done) + len(polys.sizes) > MAX_REGIONS or rounds > MAX_ROUNDS:
            raise PlanarError(f"more than {MAX_REGIONS} linear regions or {MAX_ROUNDS} rounds of cuts "
                              f"(a numerically degenerate network?): use a MIP solver")
    return _concat(done)


def _first_violated(values, violated, sizes):
    """``(cut (P,), s (V,))`` for :func:`_rounds`: the column of ``values`` (V, L) of each
    polygon's first violated line (``violated`` (P, L))."""
    if not violated.shape[1]:
        return np.zeros(len(sizes), bool), np.zeros(len(values))
    first = np.repeat(violated.argmax(1), sizes)
    return violated.any(1), values[np.arange(len(values)), first]


def _sign_cuts(lines):
    """Cut until each affine function ``lines(vals) -> (V, L)`` has one sign on each polygon."""
    def cut_values(polys):
        s, st = lines(polys.vals), polys.starts
        crossing = (np.minimum.reduceat(s, st, 0) < -EPS) & (np.maximum.reduceat(s, st, 0) > EPS)
        return _first_violated(s, crossing, polys.sizes)
    return cut_values


def _relu_cuts(vals):
    """:func:`_sign_cuts` of the pre-activations that take both signs somewhere: cuts only add
    convex combinations of a polygon's vertices, so a neuron with one sign at every vertex now
    never needs a cut."""
    cols = np.flatnonzero((vals.min(0) < -EPS) & (vals.max(0) > EPS))
    return _sign_cuts(lambda v: v[:, cols])


def _sparsemax_cuts(cols):
    """Cut until each polygon lies in one closed sparsemax cell of the logits ``vals[:, cols]``:
    the cell of the support S at the polygon's centroid is ``g_k = z_k - tau_S(z) >= 0`` for k in
    S and ``<= 0`` otherwise, ``tau_S = (sum_{k in S} z_k - 1) / |S|``."""
    def cut_values(polys):
        z, st, sizes = polys.vals[:, cols], polys.starts, polys.sizes
        centroid = np.add.reduceat(z, st, 0) / sizes[:, None]
        support = np.repeat(sparsemax_np(centroid[:, :, None])[0][:, :, 0] > 0, sizes, 0)
        tau = (np.sum(z * support, 1) - 1.0) / support.sum(1)
        g = z - tau[:, None]
        bad = np.where(support, g < -EPS, g > EPS)
        return _first_violated(g, np.maximum.reduceat(bad, st, 0), sizes)
    return cut_values


# --------------------------------------------------------------------------------------------
# enumeration
# --------------------------------------------------------------------------------------------
def enumerate_regions(w: Weights, spec: MechanismSpec, profile, agent: int, lo_i, hi_i,
                      deadline: float | None = None) -> Regions:
    """All vertices of the linear regions of agent ``agent``'s utility over the rectangle
    ``[lo_i, hi_i]`` of its bids, the other agents bidding ``profile[-i]``.

    Args:
      w: float64 weights (:func:`certify.tighten.weights64`).
      spec: a free-payment, 2-item, sparsemax mechanism (:func:`check`).
      profile: (N, 2) bids; row ``agent`` is ignored.
      agent: the misreporting agent i.
      lo_i, hi_i: (2,) the corners of agent i's bid box.
      deadline: ``time.perf_counter()`` time after which :class:`PlanarTimeout` is raised.
    """
    check(spec)
    t0 = time.perf_counter()
    n, m = spec.n_agents, spec.n_items
    lo_i, hi_i = np.asarray(lo_i, np.float64), np.asarray(hi_i, np.float64)
    pts = np.array([[lo_i[0], lo_i[1]], [hi_i[0], lo_i[1]], [hi_i[0], hi_i[1]], [lo_i[0], hi_i[1]]])
    prof = np.repeat(np.asarray(profile, np.float64)[None], 4, 0)
    prof[:, agent] = pts
    (w1, c1), rest = w.trunk[0], w.trunk[1:]
    polys = Polygons(pts, prof.reshape(4, -1) @ w1 + c1, np.array([4]))
    for wk, ck in rest:
        polys = _rounds(polys, _relu_cuts(polys.vals), deadline)
        polys = polys.with_vals(np.maximum(polys.vals, 0.0) @ wk + ck)
    polys = _rounds(polys, _relu_cuts(polys.vals), deadline)
    heads_w = np.concatenate([w.alloc[0], w.pay[0][:, agent:agent + 1]], 1)
    heads_b = np.concatenate([w.alloc[1], w.pay[1][agent:agent + 1]])
    polys = polys.with_vals(np.maximum(polys.vals, 0.0) @ heads_w + heads_b)
    for j in range(m):
        polys = _rounds(polys, _sparsemax_cuts(np.arange(n + 1) * m + j), deadline)
    pmax = spec.payment_max
    polys = _rounds(polys, _sign_cuts(lambda v: np.stack([v[:, -1], v[:, -1] - pmax], 1)), deadline)
    all_pts, first = np.unique(polys.pts, axis=0, return_index=True)
    vals = polys.vals[first]
    s = vals[:, :-1].reshape(-1, n + 1, m)
    alloc = sparsemax_np(s)[0][:, agent]
    pay = np.clip(vals[:, -1], 0.0, pmax)
    return Regions(all_pts, alloc, pay, len(polys.sizes), time.perf_counter() - t0)


_CACHE: "collections.OrderedDict[bytes, Regions]" = collections.OrderedDict()
_CACHE_SIZE = 8


def clear_cache() -> None:
    """Forget memoized enumerations (e.g. to time a fresh one)."""
    _CACHE.clear()


def vertices(w: Weights, spec: MechanismSpec, profile, agent: int, lo_i, hi_i,
             deadline: float | None = None) -> tuple[Regions, bool]:
    """:func:`enumerate_regions`, memoized (the last few calls). Returns ``(regions, cached)``."""
    prof = np.asarray(profile, np.float64).copy()
    prof[agent] = 0.0
    h = hashlib.sha1()
    for a in [*(x for layer in w.trunk for x in layer), *w.alloc, *w.pay, prof,
              np.asarray(lo_i, np.float64), np.asarray(hi_i, np.float64)]:
        h.update(np.ascontiguousarray(a).tobytes())
    h.update(f"{spec}|{agent}".encode())
    key = h.digest()
    if key in _CACHE:
        _CACHE.move_to_end(key)
        return _CACHE[key], True
    r = enumerate_regions(w, spec, prof, agent, lo_i, hi_i, deadline)
    _CACHE[key] = r
    while len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return r, False


class PlanarResult(NamedTuple):
    """Agent i's best misreport over the box, exactly.

    Attributes:
      best_bids: (2,) the maximizing vertex.
      best_utility: u at it (float64 forward pass).
      upper: proven upper bound on u over the box (``best_utility + TOLERANCE``).
      network_error: max over vertices of |interpolated u - forward-pass u|.
      n_regions, n_vertices: size of the enumeration.
      time_s: wall time (enumeration, unless cached, plus the vertex evaluation).
      cached: whether the regions came from the memo.
    """

    best_bids: np.ndarray
    best_utility: float
    upper: float
    network_error: float
    n_regions: int
    n_vertices: int
    time_s: float
    cached: bool


def maximize_utility(w: Weights, spec: MechanismSpec, valuations, agent: int, lo_i, hi_i,
                     deadline: float | None = None) -> PlanarResult:
    """``max_{b in [lo_i, hi_i]} u_i(b; v)`` over agent ``agent``'s bids, the others truthful.
    Raises :class:`PlanarTimeout` if the enumeration passes ``deadline``."""
    t0 = time.perf_counter()
    v = np.asarray(valuations, np.float64)
    regions, cached = vertices(w, spec, v, agent, lo_i, hi_i, deadline)
    prof = np.repeat(v[None], len(regions.points), 0)
    prof[:, agent] = regions.points
    a, p = forward64(w, spec, prof)
    u = a[:, agent] @ v[agent] - p[:, agent]
    u_interp = regions.alloc @ v[agent] - regions.pay
    k = int(np.argmax(u))
    return PlanarResult(regions.points[k].copy(), float(u[k]), float(u[k]) + TOLERANCE,
                        float(np.max(np.abs(u - u_interp))), regions.n_regions, len(regions.points),
                        time.perf_counter() - t0, cached)
