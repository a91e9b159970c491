"""The scale-aware sign bands of the planar enumeration and the magnitudes they derive from.

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
float64 its side cannot be told there. That is sound, not silent: the check
(:mod:`certify.planar.verify`) bounds what such a band neuron can change (its |z| on the polygon,
times its downstream effect), per polygon, and adds it to the bound; the result is an error only
when that bound exceeds :data:`certify.planar.MAX_TOLERANCE` (then the enumeration cannot resolve
the net in float64 and a MIP solver has to).

*Positions.* A cut point ``fl(p_a + t fl(p_b - p_a))`` is within ``eps_v = 1.02 u (2.01 width +
max |coord|)`` (per coordinate, Euclidean over two) of the exact point on the float edge. Per
round this (a) leaves slivers of width <= eps_v between a polygon and its two pieces and (b) moves
the float vertices off the virtual ones the stored values describe. After R rounds in all, every
bid of B is within ``eps_cov = 2 R eps_v`` of a final polygon (slivers nest), and the float
vertices are within eps_cov of the virtual ones.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from jaxauction.mechanism import MechanismSpec

from certify.network import Weights
from certify.rounding import UNIT_ROUNDOFF, gamma

U64 = UNIT_ROUNDOFF["float64"]
INTERP_ERR = 5.1            # error of one interpolation v_a + t (v_b - v_a), in units of u * magnitude
_PAD = 1e-12                # relative widening of the float64-computed magnitude bounds (their own rounding)


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


class _EnumTol(NamedTuple):
    """The enumeration's final on-the-line tolerances (what its stored values may be off by)."""

    trunk: list        # per layer (K,)
    cell: np.ndarray   # (M,)
    pay: tuple         # (line q = 0, line q = P)
