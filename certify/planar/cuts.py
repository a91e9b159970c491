"""Convex polygons stored flat, and the vectorized rounds that cut them along affine lines.

All polygons are stored flat (:class:`Polygons`) and cut together, in rounds: each round cuts
every polygon that still needs it along its first offending line, in a few vectorized numpy
operations, so Python work grows with the number of rounds, not of regions.

A cut ``v_a + t (v_b - v_a)`` interpolates the stored values along with the vertices; what that
costs, and when a value counts as on the line, is :mod:`certify.planar.tolerances`.
"""
from __future__ import annotations

import time
from typing import NamedTuple

import numpy as np

from certify.network import sparsemax64
from certify.planar.errors import _MIP_HINT, PlanarError, PlanarTimeout

MAX_REGIONS = 100_000
MAX_ROUNDS = 100_000


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


def _minmax(vals: np.ndarray, sizes: np.ndarray, index: np.ndarray | None = None):
    """Per-polygon min and max (P, ...) of ``vals[index]`` (rows in polygon order; ``index=None``:
    ``vals`` itself). Grouped by polygon size (a few plain reductions), which numpy runs ~10x
    faster than ``reduceat`` along axis 0."""
    starts = np.cumsum(sizes) - sizes
    lo = np.empty((len(sizes),) + vals.shape[1:], vals.dtype)
    hi = np.empty_like(lo)
    for size in np.unique(sizes):
        ps = np.flatnonzero(sizes == size)
        rows = starts[ps][:, None] + np.arange(size)
        at = vals[rows if index is None else index[rows]]
        lo[ps], hi[ps] = at.min(1), at.max(1)
    return lo, hi


def _concat(parts: list) -> Polygons:
    return Polygons(np.concatenate([p.pts for p in parts]), np.concatenate([p.vals for p in parts]),
                    np.concatenate([p.sizes for p in parts]))


def _cut(polys: Polygons, s: np.ndarray, tol: np.ndarray) -> Polygons:
    """Cut every polygon along the zero line of the affine function with values ``s`` (V,) at
    the vertices. Each polygon becomes its ``s <= 0`` piece followed by its ``s >= 0`` piece;
    vertices with ``|s| <= tol`` (V,) are on the line and belong to both; pieces with < 3
    vertices (only on-line vertices: no area) are dropped."""
    sizes, starts = polys.sizes, polys.starts
    n_v = len(s)
    nxt = np.arange(1, n_v + 1)
    nxt[starts + sizes - 1] = starts                 # the edge after a polygon's last vertex closes it
    sn = s[nxt]
    cross = ((s < -tol) & (sn > tol)) | ((s > tol) & (sn < -tol))
    c = np.flatnonzero(cross)
    t = (s[c] / (s[c] - sn[c]))[:, None]
    new_pts = polys.pts[c] + t * (polys.pts[nxt[c]] - polys.pts[c])
    new_vals = polys.vals[c] + t * (polys.vals[nxt[c]] - polys.vals[c])
    # items in polygon order: vertex a (row a), then the crossing on edge (a, a+1) (row n_v + rank)
    src = np.stack([np.arange(n_v), np.full(n_v, -1)], 1)
    src[c, 1] = n_v + np.arange(len(c))
    src = src.reshape(-1)
    pid = np.repeat(np.repeat(np.arange(len(sizes)), sizes), 2)
    neg = np.stack([s <= tol, cross], 1).reshape(-1)
    pos = np.stack([s >= -tol, cross], 1).reshape(-1)
    piece = np.concatenate([2 * pid[neg], 2 * pid[pos] + 1])
    order = np.argsort(piece, kind="stable")
    new_sizes = np.bincount(piece, minlength=2 * len(sizes))
    keep = new_sizes >= 3
    rows = np.concatenate([src[neg], src[pos]])[order[keep[piece[order]]]]
    old = rows < n_v                                  # gather from the old and the new vertices, no concatenation
    pts = np.empty((len(rows), 2))
    vals = np.empty((len(rows), polys.vals.shape[1]))
    pts[old], vals[old] = polys.pts[rows[old]], polys.vals[rows[old]]
    pts[~old], vals[~old] = new_pts[rows[~old] - n_v], new_vals[rows[~old] - n_v]
    return Polygons(pts, vals, new_sizes[keep])


def _rounds(polys: Polygons, cut_values, deadline: float | None = None, start: int = 0) -> tuple[Polygons, int]:
    """Cut polygons in rounds until ``cut_values`` has nothing left to cut; returns the polygons
    and the number of rounds that cut.

    ``cut_values(polys, rho)`` returns ``(cut (P,) bool, s (V,), tol (V,))``: which polygons to
    cut, the values at the vertices of the affine function along whose zero line each is cut,
    and their on-the-line tolerance, for values that went through ``rho`` interpolations (``start``
    plus this call's rounds so far). Raises :class:`PlanarTimeout` past ``deadline``
    (``time.perf_counter()`` seconds)."""
    done, rounds = [], 0
    while len(polys.sizes):
        if deadline is not None and time.perf_counter() > deadline:
            raise PlanarTimeout(f"enumeration stopped by the time limit after {rounds} rounds "
                                f"({sum(len(p.sizes) for p in done) + len(polys.sizes)} regions so far)")
        cut, s, tol = cut_values(polys, start + rounds)
        done.append(polys.take(~cut))
        if not cut.any():
            break
        rows = np.repeat(cut, polys.sizes)
        polys = _cut(polys.take(cut), s[rows], tol[rows])
        rounds += 1
        if sum(len(p.sizes) for p in done) + len(polys.sizes) > MAX_REGIONS or rounds > MAX_ROUNDS:
            raise PlanarError(f"more than {MAX_REGIONS} linear regions or {MAX_ROUNDS} rounds of cuts "
                              f"(a numerically degenerate network?): {_MIP_HINT}")
    return _concat(done), rounds


def _first_violated(values, violated, sizes, tol):
    """``(cut (P,), s (V,), tol (V,))`` for :func:`_rounds`: the column of ``values`` (V, L) of
    each polygon's first violated line (``violated`` (P, L)) and that line's tolerance (L,)."""
    if not violated.shape[1]:
        return np.zeros(len(sizes), bool), np.zeros(len(values)), np.zeros(len(values))
    first = np.repeat(violated.argmax(1), sizes)
    return violated.any(1), values[np.arange(len(values)), first], np.broadcast_to(tol, violated.shape[1:])[first]


def _sign_cuts(lines, tol_fn):
    """Cut until each affine function ``lines(vals) -> (V, L)`` has one sign on each polygon, up
    to its tolerance ``tol_fn(rho) -> (L,)``."""
    def cut_values(polys, rho):
        s, tol = lines(polys.vals), tol_fn(rho)
        lo, hi = _minmax(s, polys.sizes)
        crossing = (lo < -tol) & (hi > tol)
        return _first_violated(s, crossing, polys.sizes, tol)
    return cut_values


def _relu_cuts(vals, tol_fn):
    """:func:`_sign_cuts` of the pre-activations that take both signs somewhere: cuts only add
    convex combinations of a polygon's vertices, so a neuron with one sign at every vertex (up to
    its tolerance, which grows with the rounds faster than a convex combination's rounding) now
    never needs a cut."""
    tol0 = tol_fn(0)
    cols = np.flatnonzero((vals.min(0) < -tol0) & (vals.max(0) > tol0))
    return _sign_cuts(lambda v: v[:, cols], lambda rho: tol_fn(rho)[cols])


def _sparsemax_cuts(cols, tol_fn):
    """Cut until each polygon lies in one closed sparsemax cell of the logits ``vals[:, cols]``:
    the cell of the support S at the polygon's centroid is ``g_k = z_k - tau_S(z) >= 0`` for k in
    S and ``<= 0`` otherwise, ``tau_S = (sum_{k in S} z_k - 1) / |S|``; ``tol_fn(rho)`` is the
    tolerance of g (a scalar)."""
    def cut_values(polys, rho):
        z, st, sizes = polys.vals[:, cols], polys.starts, polys.sizes
        tol = tol_fn(rho)
        centroid = np.add.reduceat(z, st, 0) / sizes[:, None]
        support = np.repeat(sparsemax64(centroid[:, :, None])[0][:, :, 0] > 0, sizes, 0)
        tau = (np.sum(z * support, 1) - 1.0) / support.sum(1)
        g = z - tau[:, None]
        bad = np.where(support, g < -tol, g > tol)
        return _first_violated(g, _minmax(bad, sizes)[1], sizes, np.full(len(cols), tol))
    return cut_values
