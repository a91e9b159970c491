"""Rigorous rounding-error margins: how far a floating-point evaluation of the mechanism can be
from the exact real-arithmetic function of its stored weights, over a whole box of bids.

:func:`utility_margin` returns ``E`` with ``|u_hat(b) - u_R(b)| <= E`` for every bid profile ``b``
in the box, where ``u_R`` is agent i's utility under exact arithmetic and ``u_hat`` the same
utility from a float evaluation: ``precision="float32"`` is ``jaxauction.mechanism.apply``, and
``precision="float64"`` the twin :func:`certify.network.forward64`. The allocation and payment are
the evaluation's; they are combined with the true values exactly.

Assumptions (the model of floating point the proof rests on):

1. IEEE round-to-nearest with unit roundoff ``u`` (2^-24 for float32, 2^-53 for float64), no
   overflow or underflow to subnormals that matters (terms below 1e-30 are absorbed by the
   margin's ``+ |c|`` terms). On GPUs this means full float32 matmuls
   (``jax_default_matmul_precision="highest"``): TF32 or bfloat16 passes are outside it.
2. A dot product of length n plus a bias, **in any summation order** (XLA's blocking, fused
   multiply-adds, reassociation across batch shapes): ``|fl(x.w + c) - (x.w + c)| <=
   gamma_{n+1} (|x|.|w| + |c|)``, ``gamma_n = n u / (1 - n u)`` (Higham, Accuracy and Stability of
   Numerical Algorithms, 2nd ed., Lemma 3.1 / Eq. 3.5). The same for ``cumsum`` and ``sum``.
3. ``exp``, ``tanh`` and the logistic sigmoid are accurate to :data:`LIBM_REL` relative error
   (float32: 2^-20, i.e. 8 ulps; float64: 2^-50). ``tests/test_rounding.py`` measures XLA's and
   numpy's functions against this on a dense grid.
4. Sorting, negation, ``max``, ``relu`` and ``clip`` are exact on floats. (``tanh`` is not: see 3.)
5. The real bounds ``nb`` passed in hold for the exact pre-activations on the box, for the
   activation of ``spec.activation`` (e.g. ``certify.tighten.ibp64``: IBP is sound for the
   monotone tanh as for relu).

The method: every computed quantity is ``exact + delta``. Each matrix layer adds a *local* error
``eps_l`` bounded by assumption 2, with ``|x|`` bounded by the real bounds of the box
(:class:`jaxauction.bounds.NetworkBounds`) plus the error so far. Errors are carried through the
later layers **symbolically**: ``delta_l = sum_k M_{k,l} eps_k`` with interval matrices
``M_{k,l+1} = W^T D_l M_{k,l}``, where ``D_l`` is the activation's slope between the computed and
the exact pre-activation. ReLU: 1 on neurons that stay positive under the error, 0 on those that
stay negative, [0, 1] otherwise. tanh (mean value theorem): ``[min tanh', max tanh']`` over the
neuron's real bounds widened by its error, within (0, 1]; evaluating tanh adds its own local error
``LIBM_REL |tanh(z_hat)| <= LIBM_REL min(1, |z| + e_z)`` (assumption 3), and the next layer's
input magnitude is ``|tanh(z)| <= min(1, |z|)``. Separate towers need nothing of their own: the
block-diagonal shared trunk of ``certify.network.weights64`` computes the same numbers (its extra
terms are exact zeros), and its larger fan-in only makes ``gamma_{n+1}`` larger (sound). Keeping the signs of ``W^T D M`` (instead of ``|W|^T |M|``) is what
makes the margin 3-10x tighter than the textbook forward bound on trained nets. The heads:

* sparsemax (``tau = max_k (cumsum_k - 1) / k``, as ``mechanism.sparsemax`` computes it): tau is
  1-Lipschitz in the max norm of the logits; its own computation errs by at most
  ``gamma_{R+2} (sum_r |s_r| + 1)``; the final ``relu(s_r - tau)`` by ``u (1 + error)``;
* softmax: ``a_r(s + d) / a_r(s) in [e^{-2|d|}, e^{2|d|}]``, plus the relative errors of the
  shift, ``exp`` (assumption 3), the sum and the division;
* hard sigmoid, logistic sigmoid (1/4-Lipschitz), the clip of the free payment (1-Lipschitz) and
  the product ``f * sum_j a_j b_j`` with its own roundings.
"""
from __future__ import annotations

import numpy as np

from certify.network import Weights
from jaxauction.bounds import NetworkBounds
from jaxauction.mechanism import MechanismSpec

UNIT_ROUNDOFF = {"float32": 2.0 ** -24, "float64": 2.0 ** -53}
LIBM_REL = {"float32": 2.0 ** -20, "float64": 2.0 ** -50}
# Real bounds of the box come from float64 computations: widen them by this relative amount
# before deciding which neurons stay on one side (their own rounding is ~1e-15 relative).
_BOUND_PAD = 1e-9


def gamma(n: int, u: float) -> float:
    """Higham's ``gamma_n = n u / (1 - n u)``."""
    nu = n * u
    if nu >= 1:
        raise ValueError(f"gamma_{n} undefined for unit roundoff {u}")
    return nu / (1.0 - nu)


def _mag(iv_lower, iv_upper):
    return np.maximum(np.abs(iv_lower), np.abs(iv_upper))


class _Errors:
    """``delta = sum_k M_k eps_k`` for the current layer: interval matrices ``(C_k, R_k)`` of shape
    (H, dim eps_k) and the bounds ``rho_k`` (dim eps_k,) of the local errors."""

    def __init__(self):
        self.mats: list[tuple[np.ndarray, np.ndarray]] = []
        self.rhos: list[np.ndarray] = []

    def bound(self) -> np.ndarray:
        """Componentwise bound on ``|delta|``."""
        if not self.mats:
            return 0.0
        return sum((np.abs(c) + r) @ rho for (c, r), rho in zip(self.mats, self.rhos))

    def add_local(self, rho: np.ndarray) -> None:
        self.mats.append((np.eye(len(rho)), np.zeros((len(rho), len(rho)))))
        self.rhos.append(np.asarray(rho, np.float64))

    def relu_then_dense(self, d_lo: np.ndarray, d_hi: np.ndarray, w: np.ndarray, local=None) -> "_Errors":
        """Errors after ``h = act(z)`` (slopes in [d_lo, d_hi] per neuron, between the computed and
        the exact ``z``), plus the activation's own rounding ``local`` (bounds per neuron, or None
        for an exact activation), and ``h @ w``."""
        out = _Errors()
        out.rhos = list(self.rhos)
        dl_, dh_ = d_lo[:, None], d_hi[:, None]           # 0 <= d_lo <= d_hi <= 1
        if self.mats:
            c = np.concatenate([m[0] for m in self.mats], axis=1)   # all eps_k side by side: one product
            r = np.concatenate([m[1] for m in self.mats], axis=1)
            lo, hi = c - r, c + r
            dl = np.where(lo < 0, dh_ * lo, dl_ * lo)     # min of d m over d in [d_lo, d_hi], m in [lo, hi]
            dh = np.where(hi > 0, dh_ * hi, dl_ * hi)
            cc, rr = w.T @ ((dl + dh) / 2), np.abs(w.T) @ ((dh - dl) / 2)
            cuts = np.cumsum([m[0].shape[1] for m in self.mats])[:-1]
            out.mats = list(zip(np.split(cc, cuts, axis=1), np.split(rr, cuts, axis=1)))
        if local is not None:                             # eps_act enters after the slope: w^T eps_act
            out.mats.append((w.T.copy(), np.zeros_like(w.T)))
            out.rhos.append(np.asarray(local, np.float64))
        return out


def _slopes(lower, upper, err, activation: str = "relu"):
    """Slopes ``[d_lo, d_hi]`` of the activation between any two points of ``[lower, upper]``
    widened by ``err`` (the exact and the computed pre-activation): relu 1 (stably on), 0 (stably
    off) or [0, 1]; tanh ``[min tanh', max tanh']`` over the widened interval, within (0, 1]."""
    lo = lower - _BOUND_PAD * (1 + np.abs(lower)) - err
    hi = upper + _BOUND_PAD * (1 + np.abs(upper)) + err
    if activation == "tanh":  # tanh' = 1 / cosh^2, even, decreasing in |z| (float64: a few ulps off)
        far = np.maximum(np.abs(lo), np.abs(hi))
        near = np.where((lo <= 0) & (hi >= 0), 0.0, np.minimum(np.abs(lo), np.abs(hi)))
        with np.errstate(over="ignore"):
            d_lo = (1.0 - 1e-12) / np.cosh(far) ** 2
            d_hi = np.minimum(1.0, (1.0 + 1e-12) / np.cosh(near) ** 2)
        return d_lo, d_hi
    on, off = lo >= 0, hi <= 0
    return np.where(on, 1.0, 0.0), np.where(off, 0.0, 1.0)


def logit_errors(w: Weights, spec: MechanismSpec, nb: NetworkBounds, box_lower, box_upper, precision: str):
    """Bounds on ``|s_hat - s|`` (N+1, M) and ``|q_hat - q|`` (N,) over the box, and on the bids'
    own rounding (N, M)."""
    u = UNIT_ROUNDOFF[precision]
    x_mag = _mag(np.asarray(box_lower, np.float64), np.asarray(box_upper, np.float64)).reshape(-1)
    e_x = u * x_mag if precision == "float32" else np.zeros_like(x_mag)
    lib = LIBM_REL[precision]
    errs = _Errors()
    errs.add_local(e_x)                                   # delta_0 = eps_0 (bid rounding)
    h_mag, h_err = x_mag, e_x
    d_lo = d_hi = np.ones_like(x_mag)                     # the input has no activation
    e_act = None                                          # the activation's own rounding (tanh)
    for k, (wk, ck) in enumerate(w.trunk):
        errs = errs.relu_then_dense(d_lo, d_hi, wk, e_act)
        rho = gamma(wk.shape[0] + 1, u) * ((h_mag + h_err) @ np.abs(wk) + np.abs(ck))
        errs.add_local(rho)
        z = nb.pre[k]
        e_z = errs.bound()
        d_lo, d_hi = _slopes(z.lower, z.upper, e_z, spec.activation)
        if spec.activation == "tanh":
            # |tanh(z_hat)| <= min(1, |z| + e_z); fl(tanh(z_hat)) = tanh(z_hat) (1 + theta), |theta| <= lib
            z_mag = _mag(z.lower, z.upper)
            e_act = lib * np.minimum(1.0, z_mag + e_z)
            h_mag, h_err = np.minimum(1.0, z_mag), e_z + e_act
        else:
            h_mag, h_err = np.maximum(z.upper, 0.0) + e_z, e_z
    out = []
    for wh, ch in (w.alloc, w.pay):
        eh = errs.relu_then_dense(d_lo, d_hi, wh, e_act)
        rho = gamma(wh.shape[0] + 1, u) * ((h_mag + h_err) @ np.abs(wh) + np.abs(ch))
        eh.add_local(rho)
        out.append(eh.bound())
    e_s = np.asarray(out[0]).reshape(spec.n_agents + 1, spec.n_items)
    return e_s, np.asarray(out[1]), e_x.reshape(spec.n_agents, spec.n_items)


def allocation_errors(spec: MechanismSpec, nb: NetworkBounds, e_s: np.ndarray, precision: str) -> np.ndarray:
    """Bounds on ``|a_hat - a|`` (N, M) given logit errors ``e_s`` (N+1, M)."""
    u, lib = UNIT_ROUNDOFF[precision], LIBM_REL[precision]
    sl, su = nb.alloc_logits.lower, nb.alloc_logits.upper
    r_ = spec.n_agents + 1
    m_s = _mag(sl, su)
    d = e_s.max(axis=0)                                   # (M,) max-norm of the logit error, per item
    if spec.allocation == "sparsemax":
        e_tau = d + gamma(r_ + 2, u) * (np.sum(m_s + e_s, axis=0) + 1.0)
        e_a = e_s + e_tau[None] + u * (1.0 + e_s + e_tau[None])
    else:
        # a_r <= 1 / (1 + sum_{k != r} exp(s_k^L - s_r^U))
        diff = sl[None, :, :] - su[:, None, :]            # (r, k, M)
        eye = np.eye(r_, dtype=bool)[:, :, None]
        a_up = 1.0 / (1.0 + np.sum(np.where(eye, 0.0, np.exp(np.minimum(diff, 700.0))), axis=1))
        spread = (su.max(0) - sl.min(0))[None] + 2 * d[None]     # |s_r - max_k s_k| <= spread
        rel_exp = np.expm1(u * spread) + lib + u * lib
        rel = (1 + rel_exp) ** 2 * (1 + gamma(r_, u)) * (1 + u) - 1   # numerator and sum of exps, division
        grow = np.expm1(2 * d)[None]
        e_a = a_up * grow + a_up * (1 + grow) * rel
        # both lie in [0, 1 + ...]: a in [0, a_up], and a_hat = fl(e_r / fl(sum_k e_k)) with e_r among the
        # nonnegative summands, so fl(sum) >= e_r (1 - gamma_R) and a_hat <= (1 + u) / (1 - gamma_R)
        e_a = np.minimum(e_a, np.maximum(a_up, (1 + u) / (1 - gamma(r_, u))))
    return e_a[: spec.n_agents]


def payment_errors(spec: MechanismSpec, nb: NetworkBounds, e_q, e_a, e_b, box_lower, box_upper,
                   precision: str) -> np.ndarray:
    """Bounds on ``|p_hat - p|`` (N,)."""
    u, lib = UNIT_ROUNDOFF[precision], LIBM_REL[precision]
    m_q = _mag(nb.pay_logits.lower, nb.pay_logits.upper)
    if spec.payment == "free":
        pm = float(spec.payment_max)
        p_round = abs(float(np.float32(pm)) - pm) if precision == "float32" else 0.0
        return e_q + p_round
    if spec.payment == "fractional":
        from jaxauction.mechanism import HARD_SIGMOID_DIVISOR as dv, HARD_SIGMOID_OFFSET as off

        t = (m_q + e_q) / dv * (1 + u)
        e_f = e_q / dv + u * t + u * (t + abs(off))
    else:  # f, f_hat in [0, 1 + lib]: |f_hat - f| <= 1 + lib whatever the logit error
        e_f = np.minimum(e_q / 4.0 + lib + u, 1.0 + lib + u)
    m_b = _mag(np.asarray(box_lower, np.float64), np.asarray(box_upper, np.float64))
    a_mag = 1.0 + e_a
    m = spec.n_items
    e_y = np.sum(e_a * m_b + a_mag * e_b, axis=1) + gamma(m + 1, u) * np.sum(a_mag * (m_b + e_b), axis=1)
    m_y = np.sum(m_b, axis=1)
    f_mag = 1.0 + e_f
    return e_f * m_y + f_mag * e_y + u * f_mag * (m_y + e_y)


def outcome_errors(w: Weights, spec: MechanismSpec, nb: NetworkBounds, box_lower, box_upper,
                   precision: str = "float32") -> tuple[np.ndarray, np.ndarray]:
    """Bounds ``(|a_hat - a|`` (N, M), ``|p_hat - p|`` (N,)) over the box: what
    :func:`utility_margin` combines with the values (so callers may reuse them across profiles
    that share a box)."""
    if precision not in UNIT_ROUNDOFF:
        raise ValueError(f"precision must be one of {tuple(UNIT_ROUNDOFF)}, got {precision!r}")
    e_s, e_q, e_b = logit_errors(w, spec, nb, box_lower, box_upper, precision)
    e_a = allocation_errors(spec, nb, e_s, precision)
    return e_a, payment_errors(spec, nb, e_q, e_a, e_b, box_lower, box_upper, precision)


def combine(e_a: np.ndarray, e_p: np.ndarray, valuations, agent: int) -> float:
    """``sum_j |a_hat_ij - a_ij| |v_ij| + |p_hat_i - p_i|``: the utility's error bound."""
    v = np.abs(np.asarray(valuations, np.float64)[agent])
    e_u = float(np.sum(e_a[agent] * v) + e_p[agent])
    if not np.isfinite(e_u):
        raise ValueError("the rounding margin is not finite (overflowing weights or bounds)")
    return e_u


def utility_margin(w: Weights, spec: MechanismSpec, nb: NetworkBounds, box_lower, box_upper, valuations,
                   agent: int, precision: str = "float32") -> float:
    """``E >= |u_hat_i(b) - u_R,i(b)|`` for every bid profile ``b`` in ``[box_lower, box_upper]``
    (N, M), where ``nb`` holds real bounds valid on that box; see the module docstring."""
    return combine(*outcome_errors(w, spec, nb, box_lower, box_upper, precision), valuations, agent)
