"""Exact regret for two-item mechanisms by linear-region enumeration (no MIP solver).

With free (clipped linear) payments the mechanism is continuous and piecewise affine in agent
i's bids: ReLUs, sparsemax and the payment clip are all piecewise affine. So agent i's utility

    u(b) = sum_j v_ij a_ij(b, v_-i) - clip(q_i(b, v_-i), 0, P)

is affine on each linear region of the network restricted to the bid box B = [lo, hi]^M, and its
maximum over B is attained at a vertex of some region. For M = 2 items B is a rectangle and the
regions are convex polygons, which this module enumerates (in float64), then *verifies*:

1. Start from the rectangle; every polygon carries its vertices and, at each vertex, the values
   of the layer being processed (affine on the polygon, so values along an edge interpolate).
2. Trunk layer l: a polygon on which some pre-activation ``z_k`` takes both signs at its vertices
   is cut along ``z_k = 0`` (both pieces keep the on-line vertices), until every neuron has one
   sign per polygon; then the next layer's values are ``relu(z) @ W + c`` at the vertices.
3. Heads (:func:`certify.network.heads64`): for each item j, a polygon is cut until all its
   vertices lie in one closed sparsemax cell ``{z : z_k >= tau_S(z) for k in S, z_k <= tau_S(z)
   otherwise}``, with ``tau_S = (sum_{k in S} z_k - 1) / |S|`` and S the support at the polygon's
   centroid (a convex polygon whose vertices lie in a convex cell lies in it); then along
   ``q_i = 0`` and ``q_i = P``.
4. A posteriori check (:func:`_verify`): every pre-activation, cell test and clip line is
   evaluated afresh at every final vertex (from the vertex's coordinates, not interpolated), and
   each polygon must be on one side of each line up to a rounding band; the linearization error
   that the bands allow is bounded per polygon (``Delta(P)`` below) and added to the bound. A
   polygon on which a line takes both signs beyond its band is a kink the enumeration missed:
   :class:`PlanarError`, no bound. So is a centroid whose forward-pass allocation or payment is
   not the vertices' interpolation up to the same bounds (a cross-check of the argument).
5. The maximum of u over all vertices, evaluated by the float64 twin
   (:func:`certify.network.forward64`), plus the verified tolerance, bounds u over B.

All polygons are stored flat (:class:`Polygons`) and cut together, in rounds: each round cuts
every polygon that still needs it along its first offending line, in a few vectorized numpy
operations, so Python work grows with the number of rounds, not of regions.

Numerics (u = 2^-53; every tolerance is relative to the magnitude of its own computation)
-----------------------------------------------------------------------------------------
*Scales* (:func:`_scales`, per net, box and other bids). For each trunk pre-activation z_k of layer
l: the magnitude ``M_k = Hbar_{l-1} @ |W_l[:, k]| + |c_k|`` with ``Hbar`` interval (IBP) upper
bounds of ``|h_{l-1}|`` over the box (``|x|`` for the bids), which bounds every term of the dot
product that computes z_k anywhere in the box; the rounding bound of a fresh float64 evaluation,
``r_l = r_{l-1} @ |W_l| + gamma_{n+1} M_l`` (Higham's ``gamma_n = n u / (1 - n u)``, any summation
order, ReLU exact and 1-Lipschitz); and the input gain ``g_l = g_{l-1} @ |W_l|`` (g_0 = 1 on agent
i's two bids), so ``|z_k(b) - z_k(b')| <= g_k ||b_i - b_i'||_inf``. The same for the heads.

*Enumeration decisions* (scale-aware, never absolute). A stored (interpolated) value differs from
the exact affine function at its (virtual, exactly interpolated) vertex by at most ``e``: at the
start of a stage (fresh corner values, or ``relu(stored) @ W + c``) ``e_0 = e_prev @ |W| +
gamma_{n+1} M``; one cut ``v_a + t (v_b - v_a)`` (t in [0, 1]) adds at most ``u (2.01 |v_b - v_a| +
|v|) <= 5.1 u M`` (:data:`INTERP_ERR`) to the convex combination of the parents' errors, so after
rho rounds of a stage ``e <= e_0 + 5.1 rho u M_k`` =: ``tol_k(rho)``. A vertex value with
``|s| <= tol_k(rho)`` counts as on the line (it belongs to both pieces); beyond it its side is
certain. The sparsemax cell tests ``g_k = z_k - tau_S`` use ``2 max_r tol_s + gamma_{N+4} (sum_r
M_s,r + 1 + max_r M_s,r)``, the clip lines ``tol_q`` and ``tol_q + u (M_q + P)``. For the finding
that motivated this (pre-activations ``+-1e-12 (b0 - 1/2)`` into a payment weight 1e14), M ~ 1e-12
and the band is ~1e-27, so the kink at b0 = 1/2 is cut like any other; an absolute 1e-12 missed it.

*Undecidable values.* A line whose values on a polygon all lie within its band is not cut: in
float64 its side cannot be told there. That is sound, not silent: the check below bounds what such
a band neuron can change (its |z| on the polygon, times its downstream effect), per polygon, and
adds it to the bound; the result is an error only when that bound exceeds :data:`MAX_TOLERANCE`
(then the enumeration cannot resolve the net in float64 and a MIP solver has to).

*Positions.* A cut point ``fl(p_a + t fl(p_b - p_a))`` is within ``eps_v = 1.02 u (2.01 width +
max |coord|)`` (per coordinate, Euclidean over two) of the exact point on the float edge. Per
round this (a) leaves slivers of width <= eps_v between a polygon and its two pieces and (b) moves
the float vertices off the virtual ones the stored values describe. After R rounds in all, every
bid of B is within ``eps_cov = 2 R eps_v`` of a final polygon (slivers nest), and the float
vertices are within eps_cov of the virtual ones.

*The check* (:func:`_verify`, rigorous given the rounding model above). Fix a final polygon P (the
convex hull of its float vertices) and let ``A`` be the network with every ReLU, sparsemax cell
and clip piece frozen to P's pattern: an affine function of b on P. Write the exact network's
layer values as ``A + delta`` with ``|delta| <= D`` (D_1 = 0: the first layer is affine). For a
neuron with fresh vertex values ``zhat`` (``|zhat - z| <= r``): ``A_k = z - delta >= min zhat - r
- D`` at the vertices, hence on P, hence ``z >= min zhat - r - 2D`` on P; so the frozen "active"
piece errs by ``E_k = max(0, r + 2D - min zhat)``, the "inactive" one by ``max(0, max zhat + r +
2D)``; the check takes the smaller, and ``D_{l+1} = (D_l + E_l) @ |W_{l+1}|``. For the sparsemax
of item j with cell S (from the fresh centroid logits), the violations ``E_k`` of the cell tests
(the same argument with ``D_g = 2 max_r D_s``) give ``tau - tau_S in [0, sum_k E_k]`` and so
``|a_ij - a_S,ij| <= sum_k E_k + E_i``; the frozen logits add ``2 max_r D_s,rj``. The payment: the
clip lines' ``E_0 + E_P`` plus ``D_q``. Hence on P

    |u(b) - u_A(b)| <= Delta(P) = sum_j |v_ij| dev_alloc_j(P) + dev_pay(P),

with u_A affine, so ``max_P u <= max_vertices u_A + Delta <= max_vertices u + 2 Delta(P)``.
A line with values beyond ``beta = tol_enum + g eps_cov + 2 r + 2 D`` on both sides of zero on one
polygon is a kink the enumeration missed: :class:`PlanarError`. Finally, with the Lipschitz
constant ``L_u = sum_j |v_ij| 2 max_r g_s,rj + g_q`` of u in ``||b_i||_inf`` (sparsemax moves by at
most twice the max-norm of its logits' change, the clip is 1-Lipschitz), the slivers cost
``L_u eps_cov``:

    max_B u  <=  max_P (max_{vertices of P} u64 + 2 Delta(P)) + L_u eps_cov + (u64 -> u_R),

where the last term, the float64 twin's own rounding, is the caller's (:mod:`certify.rounding`).
:attr:`PlanarResult.upper` is the rest, and never less than ``best_utility + TOLERANCE``
(``PlanarResult.tolerance`` is the difference). On the shipped nets the computed part is ~6e-12
(1x2) and ~1e-10 (2x2; up to 1.1e-9 on the paper's 2x2 net), mostly ``L_u eps_cov``: the |W|
product bound L_u ~ 1e4 is loose, eps_cov ~ 3e-14 after ~30 rounds.

For a single bidder the regions do not depend on the profile (the network sees only agent i's
bids), so :func:`vertices` memoizes them, verified, per (weights, agent, box, other bids):
certifying many profiles of a 1xM mechanism enumerates once.
"""
from __future__ import annotations

import collections
import hashlib
import time
from typing import NamedTuple

import numpy as np

from jaxauction.mechanism import MechanismSpec

from certify.network import Weights, forward64, heads64, sparsemax64
from certify.rounding import UNIT_ROUNDOFF, gamma

U64 = UNIT_ROUNDOFF["float64"]
INTERP_ERR = 5.1            # error of one interpolation v_a + t (v_b - v_a), in units of u * magnitude
TOLERANCE = 1e-9            # the least upper - best_utility reported (the computed tolerance is usually far less)
MAX_TOLERANCE = 1e-6        # a verified tolerance above this is an error: the net is beyond float64 enumeration
MAX_REGIONS = 100_000
MAX_ROUNDS = 100_000
_PAD = 1e-12                # relative widening of the float64-computed magnitude bounds (their own rounding)

_MIP_HINT = "use a MIP solver (--solver auto)"


class PlanarError(ValueError):
    """The mechanism or box is outside what the planar method handles, or the float64 enumeration
    could not resolve the network's kinks (no bound is proven)."""


class PlanarTimeout(RuntimeError):
    """The enumeration passed its deadline (no bound is proven)."""


class Regions(NamedTuple):
    """Result of an enumeration, verified: candidate points (agent i's bids) and bookkeeping.

    Attributes:
      points: (K, 2) every vertex of every linear region (duplicates removed).
      alloc, pay: (K, M) agent i's allocation and (K,) its payment at the points, from the float64
        twin (:func:`certify.network.forward64`).
      interp_alloc, interp_pay: the same from the interpolated head values (``network_error``).
      inverse: (R,) row r of the polygons' vertex lists is point ``inverse[r]``.
      sizes: (n_regions,) vertices per polygon (rows ``starts[p] : starts[p] + sizes[p]``).
      dev_alloc, dev_pay: (n_regions, M), (n_regions,): ``Delta(P) = dev_alloc @ |v_i| + dev_pay``
        bounds ``|u - u_A|`` on polygon P (module docstring).
      lip_alloc, lip_pay: (M,), float: ``L_u = lip_alloc @ |v_i| + lip_pay``.
      eps_cov: every bid of the box is within this distance of a polygon.
      n_regions: number of linear regions found; n_rounds: rounds of cuts in all.
      time_s: wall time of the enumeration and its check.
    """

    points: np.ndarray
    alloc: np.ndarray
    pay: np.ndarray
    interp_alloc: np.ndarray
    interp_pay: np.ndarray
    inverse: np.ndarray
    sizes: np.ndarray
    dev_alloc: np.ndarray
    dev_pay: np.ndarray
    lip_alloc: np.ndarray
    lip_pay: float
    eps_cov: float
    n_regions: int
    n_rounds: int
    time_s: float


def check(spec: MechanismSpec) -> None:
    """Raise :class:`PlanarError` unless ``spec`` is a free-payment mechanism with 2 items."""
    if spec.n_items != 2:
        raise PlanarError(f"the planar method needs 2 items (a 2-D bid box); this mechanism has {spec.n_items}: "
                          f"{_MIP_HINT}")
    if spec.payment != "free":
        raise PlanarError(f"the planar method needs the free (clipped linear) payment: with the {spec.payment!r} "
                          f"payment the utility is not piecewise affine; {_MIP_HINT}")
    if spec.allocation != "sparsemax":
        raise PlanarError(f"the planar method needs a sparsemax allocation, got {spec.allocation!r}")


# --------------------------------------------------------------------------------------------
# scales: magnitudes, fresh rounding errors and input gains over the box
# --------------------------------------------------------------------------------------------
class _Scales(NamedTuple):
    mag: list          # per trunk layer (K,): bound on |h| @ |W| + |c| over the box
    err: list          # per trunk layer (K,): |fresh float64 z - exact z|
    gain: list         # per trunk layer (K,): |z(b) - z(b')| <= gain ||b_i - b_i'||_inf
    mag_s: np.ndarray  # allocation logits, flat ((N+1)*M,) as heads64 lays them out (row r, item j at r*M + j)
    err_s: np.ndarray
    gain_s: np.ndarray
    mag_q: float       # agent i's payment logit
    err_q: float
    gain_q: float
    eps_v: float       # one cut point's position error (Euclidean)


def _scales(w: Weights, spec: MechanismSpec, profile, agent: int, lo_i, hi_i) -> _Scales:
    m = spec.n_items
    xl = np.asarray(profile, np.float64).copy()
    xu = xl.copy()
    xl[agent], xu[agent] = lo_i, hi_i
    xl, xu = xl.reshape(-1), xu.reshape(-1)
    hl, hu = xl, xu
    hmag = np.maximum(np.abs(xl), np.abs(xu))
    err = np.zeros_like(hmag)
    gain = np.zeros_like(hmag)
    gain[agent * m:(agent + 1) * m] = 1.0
    mags, errs, gains = [], [], []

    def dense(wk, ck):
        aw = np.abs(wk)
        mag = (hmag @ aw + np.abs(ck)) * (1 + _PAD)
        return mag, err @ aw + gamma(wk.shape[0] + 1, U64) * mag, gain @ aw

    for wk, ck in w.trunk:
        mag, err, gain = dense(wk, ck)
        mags.append(mag), errs.append(err), gains.append(gain)
        mid, rad = (hl + hu) / 2, (hu - hl) / 2
        c, r = mid @ wk + ck, rad @ np.abs(wk)
        hl, hu = np.maximum(c - r - _PAD * mag, 0.0), np.maximum(c + r + _PAD * mag, 0.0)
        hmag = hu + err
    mag_s, err_s, gain_s = dense(*w.alloc)
    wp, cp = w.pay[0][:, agent:agent + 1], w.pay[1][agent:agent + 1]
    mag_q, err_q, gain_q = (float(a[0]) for a in dense(wp, cp))
    width = np.asarray(hi_i, np.float64) - np.asarray(lo_i, np.float64)
    coord = np.maximum(np.abs(lo_i), np.abs(hi_i))
    eps_v = float(np.linalg.norm(1.02 * U64 * (2.01 * width + coord)))
    return _Scales(mags, errs, gains, mag_s, err_s, gain_s, mag_q, err_q, gain_q, eps_v)


def _cell_scale(mag_s: np.ndarray, n: int, m: int) -> np.ndarray:
    """(M,) rounding scale of computing ``g = z - (sum_S z - 1) / |S|`` from the logits of item j."""
    ms = mag_s.reshape(n + 1, m)
    return gamma(n + 4, U64) * (ms.sum(0) + 1.0 + ms.max(0))


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


# --------------------------------------------------------------------------------------------
# enumeration
# --------------------------------------------------------------------------------------------
class _EnumTol(NamedTuple):
    """The enumeration's final on-the-line tolerances (what its stored values may be off by)."""

    trunk: list        # per layer (K,)
    cell: np.ndarray   # (M,)
    pay: tuple         # (line q = 0, line q = P)


def enumerate_regions(w: Weights, spec: MechanismSpec, profile, agent: int, lo_i, hi_i,
                      deadline: float | None = None) -> Regions:
    """All vertices of the linear regions of agent ``agent``'s utility over the rectangle
    ``[lo_i, hi_i]`` of its bids, the other agents bidding ``profile[-i]``, verified by
    :func:`_verify` (which raises :class:`PlanarError` on a kink the enumeration missed).

    Args:
      w: float64 weights (:func:`certify.network.weights64`).
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
    prof0 = np.asarray(profile, np.float64).copy()
    prof0[agent] = lo_i
    sc = _scales(w, spec, prof0, agent, lo_i, hi_i)
    pts = np.array([[lo_i[0], lo_i[1]], [hi_i[0], lo_i[1]], [hi_i[0], hi_i[1]], [lo_i[0], hi_i[1]]])
    prof = np.repeat(prof0[None], 4, 0)
    prof[:, agent] = pts
    w1, c1 = w.trunk[0]
    polys = Polygons(pts, prof.reshape(4, -1) @ w1 + c1, np.array([4]))
    err, n_rounds, tol_trunk = sc.err[0], 0, []
    for l, mag in enumerate(sc.mag):
        tol_fn = lambda rho, e=err, mg=mag: e + INTERP_ERR * rho * U64 * mg
        polys, k = _rounds(polys, _relu_cuts(polys.vals, tol_fn), deadline)
        n_rounds += k
        err = tol_fn(k)
        tol_trunk.append(err)
        if l + 1 < len(w.trunk):
            wk, ck = w.trunk[l + 1]
            polys = polys.with_vals(np.maximum(polys.vals, 0.0) @ wk + ck)
            err = err @ np.abs(wk) + gamma(wk.shape[0] + 1, U64) * sc.mag[l + 1]
    s, q = heads64(w, spec, np.maximum(polys.vals, 0.0))
    polys = polys.with_vals(np.concatenate([s.reshape(len(s), -1), q[:, agent:agent + 1]], 1))
    h_gamma = gamma(w.alloc[0].shape[0] + 1, U64)
    e_s = err @ np.abs(w.alloc[0]) + h_gamma * sc.mag_s
    e_q = float(err @ np.abs(w.pay[0][:, agent]) + h_gamma * sc.mag_q)
    tol_s = lambda rho: e_s + INTERP_ERR * rho * U64 * sc.mag_s
    cell_scale = _cell_scale(sc.mag_s, n, m)
    tol_cell = lambda rho, j: 2 * tol_s(rho).reshape(n + 1, m)[:, j].max() + cell_scale[j]
    pmax = float(spec.payment_max)
    tol_pay = lambda rho: np.array([e_q, e_q + U64 * (sc.mag_q + pmax)]) + INTERP_ERR * rho * U64 * sc.mag_q
    rho = 0                                    # the head values are interpolated through all head stages
    for j in range(m):
        polys, k = _rounds(polys, _sparsemax_cuts(np.arange(n + 1) * m + j, lambda r, j=j: tol_cell(r, j)),
                           deadline, start=rho)
        rho += k
    polys, k = _rounds(polys, _sign_cuts(lambda v: np.stack([v[:, -1], v[:, -1] - pmax], 1), tol_pay),
                       deadline, start=rho)
    rho += k
    n_rounds += rho
    tols = _EnumTol(tol_trunk, np.array([tol_cell(rho, j) for j in range(m)]), tuple(tol_pay(rho)))
    all_pts, first, inverse = np.unique(polys.pts, axis=0, return_index=True, return_inverse=True)
    inverse = inverse.reshape(-1)
    vals = polys.vals[first]
    interp_alloc = sparsemax64(vals[:, :-1].reshape(-1, n + 1, m))[0][:, agent]
    interp_pay = np.clip(vals[:, -1], 0.0, pmax)
    eps_cov = 2.0 * max(n_rounds, 1) * sc.eps_v
    bids = np.repeat(prof0[None], len(all_pts), 0)
    bids[:, agent] = all_pts
    a, p = forward64(w, spec, bids)
    dev_alloc, dev_pay = _verify(w, spec, polys, inverse, bids, a[:, agent], p[:, agent], agent, sc, tols, eps_cov)
    lip_alloc = 2.0 * sc.gain_s.reshape(n + 1, m).max(0)
    return Regions(all_pts, a[:, agent], p[:, agent], interp_alloc, interp_pay, inverse, polys.sizes, dev_alloc,
                   dev_pay, lip_alloc, sc.gain_q, eps_cov, len(polys.sizes), n_rounds, time.perf_counter() - t0)


def _missed(what: str, lo, hi, band) -> PlanarError:
    return PlanarError(f"planar enumeration could not resolve the network's kinks in float64 ({what} ranges over "
                       f"[{lo:.3g}, {hi:.3g}] on one region, beyond its rounding band {band:.3g}): {_MIP_HINT}")


def _verify(w: Weights, spec: MechanismSpec, polys: Polygons, inverse, bids, alloc, pay, agent, sc: _Scales,
            tols: _EnumTol, eps_cov: float):
    """The a posteriori check (module docstring): re-evaluate every line at every final vertex,
    require one side per polygon up to its band, and bound the linearization error per polygon.
    Returns ``(dev_alloc (P, M), dev_pay (P,))``; raises :class:`PlanarError` on a missed kink."""
    n, m = spec.n_agents, spec.n_items
    st, sizes = polys.starts, polys.sizes
    lo_hi = lambda vals: _minmax(vals, sizes, inverse)   # per-polygon min and max of vertex values
    h = bids.reshape(len(bids), -1)
    dev = np.zeros((len(sizes), h.shape[1]))              # D + E of the layer below (the bids: exact)
    for l, (wk, ck) in enumerate(w.trunk):
        d = dev @ np.abs(wk)                              # D_l: how far the layer's input is from frozen-affine
        z = h @ wk + ck                                   # the pre-activations the twin's ReLUs see
        slack = sc.err[l] + 2 * d                         # r + 2 D: (P, K)
        # columns one-signed beyond the slack at every vertex cannot cross and add no E: skip them
        smax = slack.max(0)
        live = np.flatnonzero(~((z.min(0) >= smax) | (z.max(0) <= -smax)))
        zmin, zmax = lo_hi(z[:, live])
        slack = slack[:, live]
        band = tols.trunk[l][live] + sc.gain[l][live] * eps_cov + sc.err[l][live] + slack
        bad = (zmin < -band) & (zmax > band)
        if bad.any():
            p_, k = np.argwhere(bad)[0]
            raise _missed(f"layer {l + 1} neuron {live[k]}'s pre-activation", zmin[p_, k], zmax[p_, k], band[p_, k])
        dev = d
        dev[:, live] += np.minimum(np.maximum(slack - zmin, 0.0), np.maximum(zmax + slack, 0.0))
        h = np.maximum(z, 0.0)
    s, q = heads64(w, spec, h)
    s = s.reshape(len(s), -1)
    d_s = dev @ np.abs(w.alloc[0])                        # (P, (N+1) M)
    d_q = dev @ np.abs(w.pay[0][:, agent])                # (P,)
    # sparsemax cells
    cell_scale = _cell_scale(sc.mag_s, n, m)
    dev_alloc = np.zeros((len(sizes), m))
    for j in range(m):
        cols = np.arange(n + 1) * m + j
        zr = s[inverse][:, cols]                                             # (R, N+1) at the polygons' rows
        centroid = np.add.reduceat(zr, st, 0) / sizes[:, None]
        support = sparsemax64(centroid[:, :, None])[0][:, :, 0] > 0          # (P, N+1)
        sup_rows = np.repeat(support, sizes, 0)
        g = zr - ((np.sum(zr * sup_rows, 1) - 1.0) / sup_rows.sum(1))[:, None]
        gmin, gmax = _minmax(g, sizes)
        dmax = d_s[:, cols].max(1)
        r_g = 2 * sc.err_s[cols].max() + cell_scale[j]
        slack = (r_g + 4 * dmax)[:, None]                # r + 2 D_g, D_g = 2 max_r D_s
        band = tols.cell[j] + 2 * sc.gain_s[cols].max() * eps_cov + r_g + slack
        bad = np.where(support, gmin < -band, gmax > band)
        if bad.any():
            p_, k = np.argwhere(bad)[0]
            raise _missed(f"item {j}'s sparsemax cell test for row {k}", gmin[p_, k], gmax[p_, k], band[p_, 0])
        e = np.where(support, np.maximum(slack - gmin, 0.0), np.maximum(gmax + slack, 0.0))
        dev_alloc[:, j] = e.sum(1) + e[:, agent] + 2 * dmax
    # the payment clip
    pmax = float(spec.payment_max)
    dev_pay = d_q.copy()
    qa = q[:, agent]
    for line, (shift, tol) in enumerate(zip((0.0, pmax), tols.pay)):
        lmin, lmax = (x - shift for x in lo_hi(qa))
        r_l = sc.err_q + (U64 * (sc.mag_q + pmax) if line else 0.0)
        slack = r_l + 2 * d_q
        band = tol + sc.gain_q * eps_cov + r_l + slack
        bad = (lmin < -band) & (lmax > band)
        if bad.any():
            p_ = np.flatnonzero(bad)[0]
            raise _missed(f"agent {agent}'s payment logit minus {shift:g}", lmin[p_], lmax[p_], band[p_])
        dev_pay += np.minimum(np.maximum(slack - lmin, 0.0), np.maximum(lmax + slack, 0.0))
    if not (np.all(np.isfinite(dev_alloc)) and np.all(np.isfinite(dev_pay))):
        raise PlanarError(f"planar enumeration could not resolve the network's kinks in float64 (the "
                          f"linearization bound is not finite: overflowing weights?): {_MIP_HINT}")
    _check_centroids(w, spec, polys, inverse, bids, alloc, pay, agent, sc, dev_alloc, dev_pay, eps_cov)
    return dev_alloc, dev_pay


def _check_centroids(w, spec, polys, inverse, bids, alloc, pay, agent, sc, dev_alloc, dev_pay, eps_cov):
    """Cross-check of :func:`_verify`'s argument: at each polygon's centroid the twin's allocation
    and payment must be the vertices' average up to ``2 dev`` plus rounding (the twin's, at most
    ~4x the logits' error, and the centroid's position)."""
    n, m = spec.n_agents, spec.n_items
    st, sizes = polys.starts, polys.sizes
    centroid = np.add.reduceat(polys.pts, st, 0) / sizes[:, None]
    b = np.repeat(bids[:1], len(sizes), 0)
    b[:, agent] = centroid
    a_c, p_c = forward64(w, spec, b)
    mean = lambda x: np.add.reduceat(x[inverse], st, 0) / (sizes[:, None] if x.ndim > 1 else sizes)
    pos = eps_cov + sc.eps_v * (1 + sizes.max())
    err_s = sc.err_s.reshape(n + 1, m).max(0)
    r_a = 4 * (2 * err_s + _cell_scale(sc.mag_s, n, m)) + 2 * sc.gain_s.reshape(n + 1, m).max(0) * pos + 8 * U64
    r_p = 4 * sc.err_q + sc.gain_q * pos + 8 * U64 * (sc.mag_q + float(spec.payment_max))
    off_a = np.abs(a_c[:, agent] - mean(alloc)) - (2 * dev_alloc + r_a)
    off_p = np.abs(p_c[:, agent] - mean(pay)) - (2 * dev_pay + r_p)
    if off_a.max() > 0 or off_p.max() > 0:
        which = "allocation" if off_a.max() > off_p.max() else "payment"
        raise PlanarError(f"planar enumeration could not resolve the network's kinks in float64 (at a region's "
                          f"centroid the forward pass's {which} is {max(off_a.max(), off_p.max()):.3g} beyond "
                          f"the interpolation of its vertices): {_MIP_HINT}")


_CACHE: "collections.OrderedDict[bytes, Regions]" = collections.OrderedDict()
_CACHE_SIZE = 8


def clear_cache() -> None:
    """Forget memoized enumerations (e.g. to time a fresh one)."""
    _CACHE.clear()


def vertices(w: Weights, spec: MechanismSpec, profile, agent: int, lo_i, hi_i,
             deadline: float | None = None) -> tuple[Regions, bool]:
    """:func:`enumerate_regions`, memoized (the last few calls). Returns ``(regions, cached)``.
    The key hashes the float64 weights themselves (shapes and bytes), the other bids, the box,
    the spec and the agent."""
    prof = np.asarray(profile, np.float64).copy()
    prof[agent] = 0.0
    h = hashlib.sha1()
    for a in [*(x for layer in w.trunk for x in layer), *w.alloc, *w.pay, prof,
              np.asarray(lo_i, np.float64), np.asarray(hi_i, np.float64)]:
        a = np.ascontiguousarray(a, np.float64)
        h.update(repr(a.shape).encode() + a.tobytes())
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
      best_utility: u at it (float64 twin).
      upper: proven upper bound on the *exact* utility over the box, but for the float64 twin's own
        rounding (which the caller adds): ``best_utility + tolerance``.
      tolerance: ``max_P (max_vertices u + 2 Delta(P)) + L_u eps_cov - best_utility`` (module
        docstring), at least :data:`TOLERANCE`.
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
    tolerance: float = TOLERANCE


def maximize_utility(w: Weights, spec: MechanismSpec, valuations, agent: int, lo_i, hi_i,
                     deadline: float | None = None) -> PlanarResult:
    """``max_{b in [lo_i, hi_i]} u_i(b; v)`` over agent ``agent``'s bids, the others truthful.

    Raises :class:`PlanarTimeout` if the enumeration passes ``deadline``, and :class:`PlanarError`
    if it cannot resolve the network's kinks in float64 (a missed kink, or a verified tolerance
    above :data:`MAX_TOLERANCE`): then no bound is proven."""
    t0 = time.perf_counter()
    v = np.asarray(valuations, np.float64)
    regions, cached = vertices(w, spec, v, agent, lo_i, hi_i, deadline)
    vi = v[agent]
    u = regions.alloc @ vi - regions.pay
    u_interp = regions.interp_alloc @ vi - regions.interp_pay
    k = int(np.argmax(u))
    best = float(u[k])
    starts = np.cumsum(regions.sizes) - regions.sizes
    u_poly = np.maximum.reduceat(u[regions.inverse], starts)
    delta = regions.dev_alloc @ np.abs(vi) + regions.dev_pay
    lip = float(regions.lip_alloc @ np.abs(vi) + regions.lip_pay)
    tol = float(np.max(u_poly + 2 * delta) - best + lip * regions.eps_cov)
    if not tol <= MAX_TOLERANCE:
        raise PlanarError(f"planar enumeration could not resolve the network's kinks in float64 (its verified "
                          f"tolerance {tol:.3g} exceeds {MAX_TOLERANCE:g}): {_MIP_HINT}")
    tol = max(tol, TOLERANCE)
    return PlanarResult(regions.points[k].copy(), best, best + tol, float(np.max(np.abs(u - u_interp))),
                        regions.n_regions, len(regions.points), time.perf_counter() - t0, cached, tol)
