"""Exact regret for two-item mechanisms by linear-region enumeration (no MIP solver).

With free (clipped linear) payments the mechanism is continuous and piecewise affine in agent
i's bids: ReLUs, sparsemax and the payment clip are all piecewise affine. So agent i's utility

    u(b) = sum_j v_ij a_ij(b, v_-i) - clip(q_i(b, v_-i), 0, P)

is affine on each linear region of the network restricted to the bid box B = [lo, hi]^M, and its
maximum over B is attained at a vertex of some region. For M = 2 items B is a rectangle and the
regions are convex polygons, which this package enumerates (in float64), then *verifies*:

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
4. A posteriori check (:mod:`~certify.planar.verify`): every pre-activation, cell test and clip
   line is evaluated afresh at every final vertex (from the vertex's coordinates, not
   interpolated), and each polygon must be on one side of each line up to a rounding band; the
   linearization error that the bands allow is bounded per polygon (``Delta(P)``) and added to
   the bound. A polygon on which a line takes both signs beyond its band is a kink the
   enumeration missed: :class:`PlanarError`, no bound. So is a centroid whose forward-pass
   allocation or payment is not the vertices' interpolation up to the same bounds (a
   cross-check of the argument).
5. The maximum of u over all vertices, evaluated by the float64 twin
   (:func:`certify.network.forward64`), plus the verified tolerance, bounds u over B.

* :mod:`~certify.planar.cuts`       -- the flat polygons and the vectorized rounds of cuts (1-3);
* :mod:`~certify.planar.tolerances` -- the scale-aware sign bands of the cuts and their derivation;
* :mod:`~certify.planar.verify`     -- step 4, and the bound ``Delta(P)`` it proves per polygon;
* :mod:`~certify.planar.errors`     -- :class:`PlanarError`, :class:`PlanarTimeout`.

The bound (``Delta(P)`` and ``L_u`` from :mod:`~certify.planar.verify`, ``eps_cov`` from
:mod:`~certify.planar.tolerances`):

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
import time
from typing import NamedTuple

import numpy as np

from jaxauction.mechanism import MechanismSpec

from certify.network import Weights, cache_key, forward64, heads64, sparsemax64
from certify.planar.cuts import Polygons, _relu_cuts, _rounds, _sign_cuts, _sparsemax_cuts
from certify.planar.errors import _MIP_HINT, PlanarError, PlanarTimeout
from certify.planar.tolerances import INTERP_ERR, U64, _cell_scale, _EnumTol, _scales
from certify.planar.verify import _verify
from certify.rounding import gamma

__all__ = ["MAX_TOLERANCE", "TOLERANCE", "PlanarError", "PlanarResult", "PlanarTimeout", "Regions", "check",
           "clear_cache", "enumerate_regions", "maximize_utility", "vertices"]

TOLERANCE = 1e-9            # the least upper - best_utility reported (the computed tolerance is usually far less)
MAX_TOLERANCE = 1e-6        # a verified tolerance above this is an error: the net is beyond float64 enumeration


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
        bounds ``|u - u_A|`` on polygon P (:mod:`certify.planar.verify`).
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
    """Raise :class:`PlanarError` unless ``spec`` is a free-payment sparsemax ReLU mechanism with 2
    items (shared or separate towers: the latter are the block-diagonal shared trunk of
    ``certify.network.weights64``)."""
    if spec.n_items != 2:
        raise PlanarError(f"the planar method needs 2 items (a 2-D bid box); this mechanism has {spec.n_items}: "
                          f"{_MIP_HINT}")
    if spec.payment != "free":
        raise PlanarError(f"the planar method needs the free (clipped linear) payment: with the {spec.payment!r} "
                          f"payment the utility is not piecewise affine; {_MIP_HINT}")
    if spec.allocation != "sparsemax":
        raise PlanarError(f"the planar method needs a sparsemax allocation, got {spec.allocation!r} "
                          f"(use --solver bab)")
    if spec.activation != "relu":
        raise PlanarError(f"the planar method needs a ReLU trunk (piecewise affine), got activation="
                          f"{spec.activation!r} (use --solver bab)")


def enumerate_regions(w: Weights, spec: MechanismSpec, profile, agent: int, lo_i, hi_i,
                      deadline: float | None = None) -> Regions:
    """All vertices of the linear regions of agent ``agent``'s utility over the rectangle
    ``[lo_i, hi_i]`` of its bids, the other agents bidding ``profile[-i]``, verified by
    :func:`certify.planar.verify._verify` (which raises :class:`PlanarError` on a kink the
    enumeration missed).

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
    key = cache_key(w, spec, prof, lo_i, hi_i, tag=str(agent))
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
