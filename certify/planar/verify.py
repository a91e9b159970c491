"""The a posteriori verification of the planar enumeration's final regions.

*The check* (:func:`_verify`, rigorous given the rounding model of :mod:`certify.planar.tolerances`,
whose ``r``, ``g``, ``tol_enum`` and ``eps_cov`` it uses). Fix a final polygon P (the convex hull
of its float vertices) and let ``A`` be the network with every ReLU, sparsemax cell and clip piece
frozen to P's pattern: an affine function of b on P. Write the exact network's
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
``L_u eps_cov`` (the bound :func:`certify.planar.maximize_utility` assembles).
"""
from __future__ import annotations

import numpy as np

from jaxauction.mechanism import MechanismSpec

from certify.network import Weights, forward64, heads64, sparsemax64
from certify.planar.cuts import Polygons, _minmax
from certify.planar.errors import _MIP_HINT, PlanarError
from certify.planar.tolerances import U64, _cell_scale, _EnumTol, _Scales


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
