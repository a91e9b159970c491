"""A proven upper bound on agent i's utility over a box of its bids, for any RegretNet-family net.

For the profile ``v`` with agent i's row replaced by ``x in [xl, xu]`` (M,), the utility

    u_i(x) = sum_j a_ij(x) v_ij - p_i(x)

is bounded by the forward linear relaxations of :mod:`certify.relax`, layer by layer:

* trunk: ``z_1 = x W_1[i] + (v_-i W_1 + c_1)`` exactly, then ReLU or tanh and dense layers;
  separate allocation and payment towers arrive as one block-diagonal trunk
  (:func:`certify.network.weights64`), which is the same function;
* sparsemax: ``a_ij = relu(min_S y_S)``, ``y_S = s_ij - (sum_{r in S} s_rj - 1) / |S|`` over the
  non-empty subsets S of the N + 1 rows (``tau = max_S (sum_S s - 1) / |S|`` is the threshold of
  :func:`jaxauction.mechanism.sparsemax`; the maximum over subsets of a size is the top-k sum);
  each ``y_S`` is one affine function of the last hidden layer, so its coefficients are combined
  before the relaxation (no cancellation lost);
* softmax: ``a_ij = 1 / (1 + sum_{r != i} exp(s_rj - s_ij))``, with the differences combined the
  same way, then exp and the reciprocal relaxed;
* payment: ``p_i = f(q_i) * sum_j a_ij x_j`` (hard sigmoid as two ReLUs, or the logistic
  sigmoid), relaxed as ``u_i = sum_j a_ij (v_ij - f x_j)`` with two McCormick products
  (:func:`utility_lin`), or the clipped free payment;

then ``max_x`` of the upper linear bound over the box. :func:`bound_boxes` does it for a batch
of boxes (and profiles) of one agent in one jitted call; :func:`network_bounds` returns the
interval bounds on every pre-activation and logit over a box, which the rounding margins of
:mod:`certify.rounding` need.
"""
from __future__ import annotations

import functools
import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from certify import relax
from certify.network import Weights
from certify.relax import Box, Lin
from jaxauction import mechanism
from jaxauction.bounds import Interval, NetworkBounds
from jaxauction.mechanism import MechanismSpec

# exp's argument above this: the relaxation's upper side is dropped (a's lower side becomes 0)
_EXP_CAP = 50.0


def check_supported(spec: MechanismSpec) -> None:
    """Raise ``UnsupportedArchitecture`` unless :func:`bound_boxes` has a relaxation for every
    piece of ``spec``."""
    from certify.mip.encoders import UnsupportedArchitecture

    if spec.activation not in ("relu", "tanh"):
        raise UnsupportedArchitecture(f"bab has no relaxation for activation={spec.activation!r} (relu, tanh)")
    if spec.allocation not in ("softmax", "sparsemax"):
        raise UnsupportedArchitecture(f"bab has no relaxation for allocation={spec.allocation!r}")
    if spec.payment not in ("fractional", "fractional_sigmoid", "free"):
        raise UnsupportedArchitecture(f"bab has no relaxation for payment={spec.payment!r}")
    widest = max(spec.n_agents * spec.n_items, *(h * (2 if spec.towers == "separate" else 1)
                                                  for h in spec.hidden))
    if widest > 4000:
        raise UnsupportedArchitecture(f"bab's outward rounding (relax.PAD) covers fan-ins up to 4000; this net has "
                                      f"a layer of {widest} inputs")
    if spec.allocation == "sparsemax" and spec.n_agents + 1 > 6:
        raise UnsupportedArchitecture(f"bab's sparsemax bound enumerates the 2^(N+1) - 1 supports; "
                                      f"N = {spec.n_agents} agents is too many (at most 5)")


class Dense(NamedTuple):
    pos: jax.Array
    neg: jax.Array
    abs: jax.Array
    b: jax.Array
    b_abs: jax.Array


def _dense(w, b, w_abs=None, b_abs=None) -> Dense:
    w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
    return Dense(np.maximum(w, 0.0), np.minimum(w, 0.0), np.abs(w) if w_abs is None else w_abs, b,
                 np.abs(b) if b_abs is None else b_abs)


class AgentNet(NamedTuple):
    """The weights as :func:`bound_boxes` reads them for one agent (a pytree of float64 arrays)."""

    w1_agent: np.ndarray        # (M, H1): the first layer's rows of agent i
    w1: np.ndarray              # (N*M, H1) with agent i's rows zeroed (the fixed bids' part)
    w1_abs: np.ndarray
    b1: np.ndarray
    layers: tuple               # Dense per later trunk layer
    alloc: Dense                # sparsemax: y_{S,j} (S-major); softmax: d_{r,j}, r != i (r-major)
    pay: Dense                  # (H, 1): q_i


def subsets(rows: int) -> np.ndarray:
    """(S, rows) matrix of 1/|S| on the members of every non-empty subset S."""
    out = []
    for k in range(1, rows + 1):
        for c in itertools.combinations(range(rows), k):
            r = np.zeros(rows)
            r[list(c)] = 1.0 / k
            out.append(r)
    return np.asarray(out)


def compile_net(w: Weights, spec: MechanismSpec, agent: int) -> AgentNet:
    """Split and combine the float64 weights for agent ``agent`` (see the module docstring)."""
    n, m = spec.n_agents, spec.n_items
    rows = n + 1
    (w1, b1), rest = w.trunk[0], w.trunk[1:]
    w1 = np.asarray(w1, np.float64)
    w1a = w1[agent * m:(agent + 1) * m].copy()
    w1f = w1.copy()
    w1f[agent * m:(agent + 1) * m] = 0.0
    wa, ba = (np.asarray(t, np.float64) for t in w.alloc)
    h = wa.shape[0]
    wa3, ba2 = wa.reshape(h, rows, m), ba.reshape(rows, m)
    if spec.allocation == "sparsemax":
        check_supported(spec)
        p = subsets(rows)                                      # (S, R)
        comb = np.eye(rows)[agent][None] - p                   # (S, R): y_S = comb . s + 1/|S|
        g = np.einsum("hrj,sr->hsj", wa3, comb).reshape(h, -1)
        g_abs = (np.abs(wa3[:, agent])[:, None, :] + np.einsum("hrj,sr->hsj", np.abs(wa3), p)).reshape(h, -1)
        inv = p.max(axis=1)[:, None]
        gb = (np.einsum("rj,sr->sj", ba2, comb) + inv).reshape(-1)
        gb_abs = (np.abs(ba2[agent])[None] + np.einsum("rj,sr->sj", np.abs(ba2), p) + inv).reshape(-1)
        alloc = _dense(g, gb, g_abs, gb_abs)
    else:
        others = [r for r in range(rows) if r != agent]
        d = (wa3[:, others] - wa3[:, agent:agent + 1]).reshape(h, -1)
        d_abs = (np.abs(wa3[:, others]) + np.abs(wa3[:, agent:agent + 1])).reshape(h, -1)
        db = (ba2[others] - ba2[agent:agent + 1]).reshape(-1)
        db_abs = (np.abs(ba2[others]) + np.abs(ba2[agent:agent + 1])).reshape(-1)
        alloc = _dense(d, db, d_abs, db_abs)
    wq, bq = (np.asarray(t, np.float64) for t in w.pay)
    pay = _dense(wq[:, agent:agent + 1], bq[agent:agent + 1])
    return AgentNet(w1a, w1f, np.abs(w1f), np.asarray(b1, np.float64),
                    tuple(_dense(wk, bk) for wk, bk in rest), alloc, pay)


# ------------------------------------------------------------------------------------------------
# one box (vmapped below)
# ------------------------------------------------------------------------------------------------
def _activate(z: Lin, box: Box, activation: str):
    if activation == "relu":
        return relax.relu_step(z, box)
    return relax.smooth_step(relax.TANH, z, box, lo=-1.0, hi=1.0)


def _trunk(net: AgentNet, box: Box, fixed, activation: str):
    """Lin bounds of every pre-activation, of the last hidden layer, and each layer's effective
    relaxation (for :func:`backward_upper`)."""
    x = relax.inputs(box)
    c = fixed @ net.w1 + net.b1
    z = relax.widen(Lin(net.w1_agent.T, c, net.w1_agent.T, c,
                        x.mag @ jnp.abs(net.w1_agent) + jnp.abs(fixed) @ net.w1_abs + jnp.abs(net.b1)))
    pre, rel, hs = [z], [], []
    h, r = _activate(z, box, activation)
    rel.append(r)
    hs.append(h)
    for layer in net.layers:
        z = relax.affine(h, layer.pos, layer.neg, layer.abs, layer.b, layer.b_abs)
        pre.append(z)
        h, r = _activate(z, box, activation)
        rel.append(r)
        hs.append(h)
    return pre, h, rel, hs


def _head_inputs(net: AgentNet, h: Lin):
    """The allocation head's affine quantities and the payment logit q_i, from h_L."""
    return (relax.affine(h, net.alloc.pos, net.alloc.neg, net.alloc.abs, net.alloc.b, net.alloc.b_abs),
            relax.affine(h, net.pay.pos, net.pay.neg, net.pay.abs, net.pay.b, net.pay.b_abs))


def _allocation(y: Lin, box: Box, spec: MechanismSpec) -> Lin:
    """Lin bounds of agent i's allocation a_i (M,) from the head's affine quantities ``y``."""
    m = spec.n_items
    if spec.allocation == "sparsemax":
        s = y.cl.shape[0] // m
        r3 = lambda a: a.reshape((s, m) + a.shape[1:])
        t = relax.min_of(r3(y.al), r3(y.cl), r3(y.au), r3(y.cu), r3(y.mag), box)
        return relax.clamp(relax.apply_relu(t, box), box, lo=0.0, hi=1.0)
    l, u = relax.decide(box, lambda: relax.interval(y, box))
    big = u > _EXP_CAP
    yc = relax.clamp(y, box, hi=_EXP_CAP)  # only used where u <= cap, so unchanged there
    e = relax.apply_smooth(relax.EXP, yc, box, lo=0.0)
    # above the cap: 0 <= e <= exp(u) as constants (inf past float64's range: the bound is then
    # not finite and bound_boxes reports +inf); a's lower side is 0 for that item
    top = jnp.where(u > 700.0, jnp.inf, jnp.exp(jnp.minimum(u, 700.0)) * (1.0 + 1e-12))
    e = Lin(jnp.where(big[:, None], 0.0, e.al), jnp.where(big, 0.0, e.cl), jnp.where(big[:, None], 0.0, e.au),
            jnp.where(big, top, e.cu), jnp.where(big, top, e.mag))
    total = relax.clamp(relax.combine([(1.0, relax.group_sum(e, e.cl.shape[0] // m))], 1.0), box, lo=1.0)
    a = relax.apply_smooth(relax.RECIPROCAL, total, box, lo=0.0, hi=1.0, domain=(1.0, jnp.inf))  # S >= 1
    any_big = big.reshape(-1, m).any(0)
    return Lin(jnp.where(any_big[:, None], 0.0, a.al), jnp.where(any_big, 0.0, a.cl), a.au, a.cu, a.mag)


def _fraction(q: Lin, box: Box, spec: MechanismSpec) -> Lin:
    """The payment fraction f (fractional) or the payment p (free) from the logit q_i."""
    if spec.payment == "free":
        return relax.apply_clip(q, box, float(spec.payment_max))
    if spec.payment == "fractional":
        y = relax.combine([(1.0 / mechanism.HARD_SIGMOID_DIVISOR, q)], mechanism.HARD_SIGMOID_OFFSET)
        return relax.apply_clip(y, box, 1.0)
    return relax.apply_smooth(relax.SIGMOID, q, box, lo=0.0, hi=1.0)


def _head(y: Lin, q: Lin, x: Lin, box: Box, vals, spec: MechanismSpec) -> Lin:
    """Lin bounds of ``u_i`` from the head's inputs (see :func:`utility_lin`). ``vals``: agent i's
    true values, constants (M,) or, where they range over the box too (the joint (v, b) box of
    :mod:`certify.space`), a :class:`Lin` of them (then ``a_j v_j`` is a McCormick product)."""
    a = _allocation(y, box, spec)
    f = _fraction(q, box, spec)
    m = spec.n_items
    if spec.payment == "free":
        av = relax.total(a, vals) if not isinstance(vals, Lin) else relax.total(relax.product(a, vals, box),
                                                                                 jnp.ones(m))
        return relax.combine([(1.0, av), (-1.0, f)])
    fx = relax.product(relax.repeat(f, m), x, box)                             # f x_j
    c = (relax.combine([(1.0, vals), (-1.0, fx)]) if isinstance(vals, Lin)
         else relax.combine([(-1.0, fx)], vals))                               # v_j - f x_j
    return relax.total(relax.product(a, c, box), jnp.ones(m))


def utility_lin(net: AgentNet, xl, xu, fixed, vals, spec: MechanismSpec, tape=None):
    """Lin bounds of ``u_i`` over one box: ``xl, xu`` (M,), ``fixed`` (N*M,) the other agents'
    bids (agent i's entries 0), ``vals`` (M,) agent i's true values. Returns ``(u, trunk)`` with
    ``trunk = (pre, h_L, relaxations, hidden)`` of :func:`_trunk`.

    A fractional payment is relaxed in the factored form ``u_i = sum_j a_ij (v_ij - f x_j)``: both
    McCormick products then keep the sign of ``v_ij - f x_j``, so where an allocation switches on
    at a loss (``a`` crosses a ReLU kink while ``v - f x < 0``) the bound stays <= 0 instead of
    paying the kink's slack twice (once in ``a v``, once in the payment)."""
    box = Box(xl, xu)
    trunk = _trunk(net, box, fixed, spec.activation)
    y, q = _head_inputs(net, trunk[1])
    head_box = Box(xl, xu, tape)
    return _head(y, q, relax.inputs(box), head_box, vals, spec), trunk, (y, q)


def backward_upper(net: AgentNet, xl, xu, fixed, vals, spec: MechanismSpec, trunk, head_in, tape) -> jax.Array:
    """A second, usually tighter, upper bound of ``u_i`` (CROWN-style back-substitution).

    The head is replayed (same intervals and choices, :class:`certify.relax.Tape`) in the space of
    ``(h_L, x)``: its inputs are exactly affine there, so this gives ``u_i <= g . h_L + g_x . x + c``
    without the trunk's slack. Then ``g`` goes back through the trunk with each layer's recorded
    relaxation (upper side where a coefficient is positive, lower where negative) to ``x``, and
    the result is maximized over the box. Rounding: every step's terms are bounded by the forward
    pass's magnitudes, ``PAD`` times four times their sum is added (module docstring of relax)."""
    pre, h, rel, hs = trunk
    y, q = head_in
    hdim, m = h.cl.shape[0], xl.shape[0]
    zero_x = lambda k: jnp.zeros((k, m), y.al.dtype)
    ex = lambda w_t, k: jnp.concatenate([w_t, zero_x(k)], axis=1)
    y2 = Lin(ex((net.alloc.pos + net.alloc.neg).T, y.cl.shape[0]), net.alloc.b,
             ex((net.alloc.pos + net.alloc.neg).T, y.cl.shape[0]), net.alloc.b, y.mag)
    q2 = Lin(ex((net.pay.pos + net.pay.neg).T, 1), net.pay.b, ex((net.pay.pos + net.pay.neg).T, 1), net.pay.b, q.mag)
    xin = jnp.concatenate([jnp.zeros((m, hdim), y.al.dtype), jnp.eye(m, dtype=y.al.dtype)], axis=1)
    x2 = Lin(xin, jnp.zeros(m, y.al.dtype), xin, jnp.zeros(m, y.al.dtype), relax.inputs(Box(xl, xu)).mag)
    u2 = _head(y2, q2, x2, Box(xl, xu, tape.rewind()), vals, spec)
    g, g_x, c = u2.au[0, :hdim], u2.au[0, hdim:], u2.cu[0]
    g_x, c, mag = backsubstitute(net, trunk, fixed, g, g_x, c, u2.mag[0])
    return concretize(g_x, c, mag, Box(xl, xu))


def concretize(g_x, c, mag, box: Box) -> jax.Array:
    """``max over the box of g_x . x + c`` for a back-substituted bound (:func:`backsubstitute`),
    rounded up by ``4 PAD (mag + |c|)``."""
    return g_x @ box.mid + jnp.abs(g_x) @ box.rad + c + 4.0 * relax.PAD * (mag + jnp.abs(c))


def backsubstitute(net: AgentNet, trunk, fixed, g, g_x, c, mag):
    """``g . h_L + g_x . x + c`` (an upper bound of some quantity, ``mag`` its rounding scale) taken
    back through the trunk to ``g_x' . x + c'``: each layer's recorded relaxation (its upper side
    where a coefficient is positive, the lower where negative), then its dense map. Returns
    ``(g_x', c', mag')``; the caller concretizes and pads by ``4 PAD (mag' + |c'|)``."""
    pre, h, rel, hs = trunk
    mag = mag + jnp.abs(g) @ h.mag
    for k in range(len(rel) - 1, -1, -1):
        lam_l, mu_l, lam_u, mu_u = rel[k]
        gp, gn = jnp.maximum(g, 0.0), jnp.minimum(g, 0.0)
        gz = gp * lam_u + gn * lam_l
        c = c + gp @ mu_u + gn @ mu_l
        mag = mag + jnp.abs(g) @ hs[k].mag + jnp.abs(gz) @ pre[k].mag
        if k > 0:
            layer = net.layers[k - 1]
            g = (layer.pos + layer.neg) @ gz
            c = c + gz @ layer.b
        else:
            g_x = g_x + net.w1_agent @ gz
            c = c + gz @ (fixed @ net.w1 + net.b1)
    return g_x, c, mag


@functools.partial(jax.jit, static_argnames=("spec", "backward"))
def bound_boxes(net: AgentNet, xl, xu, fixed, vals, spec: MechanismSpec, backward: bool = True):
    """Upper bounds of ``u_i`` over a batch of boxes: ``xl, xu`` (B, M), ``fixed`` (B, N*M),
    ``vals`` (B, M). Returns ``(upper (B,), au (B, M))``: the bound and its linear part (for
    branching); ``backward``: also :func:`backward_upper`, and the smaller of the two. Call under
    ``jax.enable_x64(True)`` with float64 arrays."""
    def one(xl_, xu_, f_, v_):
        tape = relax.Tape()
        u, trunk, head_in = utility_lin(net, xl_, xu_, f_, v_, spec, tape)
        up = relax.upper(u, Box(xl_, xu_))[0]
        if backward:
            up = jnp.minimum(up, backward_upper(net, xl_, xu_, f_, v_, spec, trunk, head_in, tape))
        return jnp.where(jnp.isnan(up), jnp.inf, up), u.au[0]   # not finite: no bound (+inf)
    return jax.vmap(one)(xl, xu, fixed, vals)


def network_bounds(w: Weights, spec: MechanismSpec, v, agent: int, lo_i, hi_i) -> NetworkBounds:
    """Interval bounds (float64 numpy) on every pre-activation and on the logits ``s`` (N+1, M) and
    ``q`` (N,) over the box where agent ``agent`` bids in ``[lo_i, hi_i]`` and the others bid ``v``:
    what :func:`certify.rounding.outcome_errors` needs, for any activation."""
    n, m = spec.n_agents, spec.n_items
    net = compile_net(w, spec, agent)
    wa, ba = (np.asarray(t, np.float64) for t in w.alloc)
    wq, bq = (np.asarray(t, np.float64) for t in w.pay)
    fixed = np.asarray(v, np.float64).copy()
    fixed[agent] = 0.0
    with jax.enable_x64(True):
        out = _network_bounds(net, _dense(wa, ba), _dense(wq, bq), jnp.asarray(lo_i, jnp.float64),
                              jnp.asarray(hi_i, jnp.float64), jnp.asarray(fixed.reshape(-1)), spec.activation)
        pre, s, q = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), out)
    return NetworkBounds([Interval(*z) for z in pre], Interval(s[0].reshape(n + 1, m), s[1].reshape(n + 1, m)),
                         Interval(*q))


@functools.partial(jax.jit, static_argnames=("activation",))
def _network_bounds(net, alloc, pay, xl, xu, fixed, activation):
    box = Box(xl, xu)
    pre, h, _, _ = _trunk(net, box, fixed, activation)
    heads = [relax.interval(relax.affine(h, d.pos, d.neg, d.abs, d.b, d.b_abs), box) for d in (alloc, pay)]
    return [relax.interval(z, box) for z in pre], heads[0], heads[1]
