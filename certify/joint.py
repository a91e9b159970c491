"""A proven upper bound on agent i's regret over a joint box of profiles and misreports.

The whole-space certificate (:mod:`certify.space`) maximizes

    R(v, b) = u_i((b, v_-i); v_i) - u_i(v; v_i),      u_i(x; v_i) = sum_j a_ij(x) v_ij - p_i(x),

over ``z = (v, b)`` in a box of ``D = N M + M`` dimensions (``v`` row-major, then agent i's
misreport ``b``). Both utilities get linear bounds *in z* from the forward relaxations of
:mod:`certify.linbound` (the same layer steps and rounding as a per-profile bound):

* copy 1 (the misreport) reads the bids ``(b, v_-i)``: its first layer is ``z W'`` with agent
  i's rows of ``W_1`` moved to the ``b`` coordinates;
* copy 2 (the truth) reads ``v``;
* the true values ``v_i`` are coordinates of ``z`` too, so ``a_ij v_ij`` and ``v_ij - f b_j`` are
  McCormick products and sums of linear bounds (``linbound._head`` with a :class:`Lin` of values).

The difference of the two bounds is then concretized, ``max_z (au_1 - al_2) . z + (cu_1 - cl_2)``.
Keeping both sides in the same coordinates is what makes this converge: near the truthful
diagonal ``b = v_i`` the mechanism's own first-order condition makes both utilities move together,
and their difference's coefficients nearly cancel, so the bound on a small box is second order in
its width (the true max regret there is too), where the difference of two intervals would be
first order.
"""
from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from certify import linbound, relax
from certify.linbound import AgentNet
from certify.network import Weights
from certify.relax import Box, Lin
from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec


class JointNet(NamedTuple):
    """The two copies of agent i's net over ``z = (v, b)`` (a pytree of float64 arrays)."""

    misreport: AgentNet     # reads (b, v_-i)
    truthful: AgentNet      # reads v
    alloc: linbound.Dense   # the full heads (every agent's logits), for :func:`copy_bounds`
    pay: linbound.Dense


def layout(spec: MechanismSpec, agent: int):
    """Index arrays into ``z``: ``v`` (N M,), agent i's values ``v_i`` (M,), its misreport ``b`` (M,)."""
    n, m = spec.n_agents, spec.n_items
    return np.arange(n * m), np.arange(agent * m, (agent + 1) * m), np.arange(n * m, n * m + m)


def compile_joint(w: Weights, spec: MechanismSpec, agent: int) -> JointNet:
    """Both copies, from :func:`certify.linbound.compile_net` of agent ``agent``."""
    linbound.check_supported(spec)
    net = linbound.compile_net(w, spec, agent)
    w1 = np.asarray(w.trunk[0][0], np.float64)
    m, h1 = spec.n_items, w1.shape[1]
    mis = np.concatenate([net.w1, net.w1_agent])                   # (D, H1): v_-i rows, then b rows
    tru = np.concatenate([w1, np.zeros((m, h1))])
    zero = np.zeros((1, h1))
    as_joint = lambda first: net._replace(w1_agent=first, w1=zero, w1_abs=zero)
    return JointNet(as_joint(mis), as_joint(tru), linbound._dense(*w.alloc), linbound._dense(*w.pay))


def rows(y: Lin, idx) -> Lin:
    """The quantities ``idx`` of ``y``."""
    return Lin(*(t[idx] for t in y))


def regret_lin(jn: JointNet, zl, zu, spec: MechanismSpec, agent: int, tapes=(None, None)):
    """Linear bounds of ``R(z)`` over one box ``[zl, zu]`` (D,) (module docstring). Returns
    ``(R, copies)``, ``copies`` each copy's ``(trunk, y, q)`` (its trunk and head inputs) for
    :func:`regret_backward`; the heads' decisions go to ``tapes`` (one :class:`certify.relax.Tape`
    per copy, or None)."""
    _, vi, bi = layout(spec, agent)
    box = Box(zl, zu)
    z = relax.inputs(box)
    vals = rows(z, vi)
    fixed = jnp.zeros(1, zl.dtype)
    copies, us = [], []
    for net, bids, tape in ((jn.misreport, rows(z, bi), tapes[0]), (jn.truthful, vals, tapes[1])):
        trunk = linbound._trunk(net, box, fixed, spec.activation)
        y, q = linbound._head_inputs(net, trunk[1])
        us.append(linbound._head(y, q, bids, Box(zl, zu, tape), vals, spec))
        copies.append((trunk, y, q))
    return relax.combine([(1.0, us[0]), (-1.0, us[1])]), copies


def regret_backward(jn: JointNet, zl, zu, spec: MechanismSpec, agent: int, copies, tapes) -> jax.Array:
    """A second upper bound of ``R`` over the box (CROWN-style, as
    :func:`certify.linbound.backward_upper` for one copy): both heads are replayed from their tapes
    in the space of ``(h_L^mis, h_L^tru, z)``, where their inputs are exactly affine, giving
    ``R <= g_1 . h_1 + g_2 . h_2 + g_z . z + c``; then ``g_1`` and ``g_2`` go back through their own
    trunks' recorded relaxations to ``z``, and the result is maximized over the box."""
    _, vi, bi = layout(spec, agent)
    (t1, y1, q1), (t2, y2, q2) = copies
    hdim, d = t1[1].cl.shape[0], zl.shape[0]
    width = 2 * hdim + d
    dt = zl.dtype

    def exact(wt, b, block, mag):    # a head input W^T h_block + b as an exact Lin of the big space
        a = jnp.zeros((wt.shape[0], width), dt).at[:, block * hdim:(block + 1) * hdim].set(wt)
        return Lin(a, b, a, b, mag)

    eye = jnp.zeros((d, width), dt).at[:, 2 * hdim:].set(jnp.eye(d, dtype=dt))
    z = Lin(eye, jnp.zeros(d, dt), eye, jnp.zeros(d, dt), relax.inputs(Box(zl, zu)).mag)
    vals = rows(z, vi)
    us = []
    for k, (net, y, q, bids) in enumerate(((jn.misreport, y1, q1, rows(z, bi)), (jn.truthful, y2, q2, vals))):
        w_y, w_q = net.alloc.pos + net.alloc.neg, net.pay.pos + net.pay.neg
        yk, qk = exact(w_y.T, net.alloc.b, k, y.mag), exact(w_q.T, net.pay.b, k, q.mag)
        us.append(linbound._head(yk, qk, bids, Box(zl, zu, tapes[k].rewind()), vals, spec))
    r = relax.combine([(1.0, us[0]), (-1.0, us[1])])
    g1, g2, g_z, c = r.au[0, :hdim], r.au[0, hdim:2 * hdim], r.au[0, 2 * hdim:], r.cu[0]
    fixed = jnp.zeros(1, dt)
    g_z, c, mag = linbound.backsubstitute(jn.misreport, t1, fixed, g1, g_z, c, r.mag[0])
    g_z, c, mag = linbound.backsubstitute(jn.truthful, t2, fixed, g2, g_z, c, mag)
    return linbound.concretize(g_z, c, mag, Box(zl, zu))


@functools.partial(jax.jit, static_argnames=("spec", "agent", "backward"))
def bound_boxes(jn: JointNet, params64, zl, zu, spec: MechanismSpec, agent: int, backward: bool = True):
    """For boxes ``zl, zu`` (B, D): ``(upper (B,), R at the centre (B,))``; the upper bound is
    ``+inf`` where it is not finite; ``backward``: also :func:`regret_backward`, and the smaller of
    the two. Call under ``jax.enable_x64(True)``."""
    def one(zl_, zu_):
        tapes = (relax.Tape(), relax.Tape()) if backward else (None, None)
        r, copies = regret_lin(jn, zl_, zu_, spec, agent, tapes)
        up = relax.upper(r, Box(zl_, zu_))[0]
        if backward:
            up = jnp.minimum(up, regret_backward(jn, zl_, zu_, spec, agent, copies, tapes))
        return jnp.where(jnp.isnan(up), jnp.inf, up)

    return jax.vmap(one)(zl, zu), regret_at(params64, (zl + zu) / 2, spec, agent)


@functools.partial(jax.jit, static_argnames=("activation",))
def _copy_bounds(jn: JointNet, zl, zu, activation: str):
    box = Box(zl, zu)
    fixed = jnp.zeros(1, zl.dtype)
    out = []
    for net in (jn.misreport, jn.truthful):
        pre, h, _, _ = linbound._trunk(net, box, fixed, activation)
        heads = [relax.interval(relax.affine(h, d.pos, d.neg, d.abs, d.b, d.b_abs), box) for d in (jn.alloc, jn.pay)]
        out.append(([relax.interval(z, box) for z in pre], heads[0], heads[1]))
    return out


def copy_bounds(jn: JointNet, zl, zu, spec: MechanismSpec, agent: int):
    """For one box ``[zl, zu]`` (D,): per copy (misreport, truthful) ``(bid_lower (N, M), bid_upper,
    NetworkBounds)``, interval bounds on every pre-activation and logit that hold over the copy's
    bids (what :func:`certify.rounding.outcome_errors` needs)."""
    from jaxauction.bounds import Interval, NetworkBounds

    n, m = spec.n_agents, spec.n_items
    zl, zu = np.asarray(zl, np.float64), np.asarray(zu, np.float64)
    with jax.enable_x64(True):
        out = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64),
                                     _copy_bounds(jn, jnp.asarray(zl), jnp.asarray(zu), spec.activation))
    vl, vu = zl[:n * m].reshape(n, m), zu[:n * m].reshape(n, m)
    ml, mu = vl.copy(), vu.copy()
    ml[agent], mu[agent] = zl[n * m:], zu[n * m:]
    res = []
    for (lo, hi), (pre, s, q) in zip(((ml, mu), (vl, vu)), out):
        nb = NetworkBounds([Interval(*z) for z in pre], Interval(s[0].reshape(n + 1, m), s[1].reshape(n + 1, m)),
                           Interval(*q))
        res.append((lo, hi, nb))
    return res


def regret_at(params64, z, spec: MechanismSpec, agent: int):
    """``R(z)`` at points ``z`` (B, D) by ``mechanism.apply`` (float64 under x64: the exact twin's
    numbers up to rounding)."""
    n, m = spec.n_agents, spec.n_items
    v = z[:, :n * m].reshape(-1, n, m)
    b = z[:, n * m:]
    mis = v.at[:, agent, :].set(b)
    a, p = mechanism.apply(params64, jnp.concatenate([mis, v]), spec)
    u = jnp.sum(a[:, agent, :] * jnp.concatenate([v, v])[:, agent, :], axis=-1) - p[:, agent]
    k = z.shape[0]
    return u[:k] - u[k:]


def split_point(z: np.ndarray, spec: MechanismSpec):
    """``(v (N, M), b (M,))`` of a point ``z`` (D,)."""
    n, m = spec.n_agents, spec.n_items
    z = np.asarray(z, np.float64)
    return z[:n * m].reshape(n, m).copy(), z[n * m:].copy()


@functools.partial(jax.jit, static_argnames=("spec", "agent", "steps"))
def ascend(params64, z0, zl, zu, spec: MechanismSpec, agent: int, steps: int = 64, lr: float = 0.01):
    """Projected gradient ascent on ``R`` from points ``z0`` (P, D) inside ``[zl, zu]`` (D,); returns
    the best point of each path and its ``R`` (candidates only: every reported lower bound is
    replayed by the caller)."""
    grad = jax.vmap(jax.value_and_grad(lambda z: regret_at(params64, z[None], spec, agent)[0]))

    def step(carry, k):
        z, best_z, best_r = carry
        r, g = grad(z)
        better = r > best_r
        best_z = jnp.where(better[:, None], z, best_z)
        best_r = jnp.where(better, r, best_r)
        z = jnp.clip(z + lr * (0.97 ** k) * jnp.sign(g), zl, zu)
        return (z, best_z, best_r), None

    init = (z0, z0, jnp.full(z0.shape[0], -jnp.inf, z0.dtype))
    (z, best_z, best_r), _ = jax.lax.scan(step, init, jnp.arange(steps))
    r = regret_at(params64, z, spec, agent)
    better = r > best_r
    return jnp.where(better[:, None], z, best_z), jnp.where(better, r, best_r)
