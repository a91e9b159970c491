"""Interval bound propagation (IBP) through the mechanism's trunk and heads.

Bounds are small value types; propagation is a pure, jittable, differentiable function of
``(params, box)``. For a dense layer ``z = x @ W + c`` and ``x in [l, u]``::

    mid = (l + u) / 2,  rad = (u - l) / 2
    z in [mid @ W + c - rad @ |W|,  mid @ W + c + rad @ |W|]

and the activations (``relu``, ``tanh``) are monotone, so ``act(z) in [act(z_l), act(z_u)]``. Every
bound is sound: each output of the network for any input in the box lies inside it (tested by
sampling).

Separate towers (``MechanismSpec.towers == "separate"``) are propagated tower by tower, and
``NetworkBounds.pre[l]`` holds layer l of the allocation tower followed by layer l of the payment
tower (concatenated on the last axis): the pre-activations of the equivalent block-diagonal trunk
(``certify.network.weights64``), so float64 consumers index them like a shared trunk.
"""
from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxauction.mechanism import MechanismSpec, Params, activate


class Interval(NamedTuple):
    """Elementwise bounds ``lower <= x <= upper``."""

    lower: jax.Array
    upper: jax.Array


class NetworkBounds(NamedTuple):
    """IBP bounds of one network on one input box.

    Attributes:
      pre: per trunk layer, bounds on the pre-activation ``z_l`` (shape (..., H_l); (..., 2 H_l) for
        separate towers: the allocation tower's neurons, then the payment tower's).
      alloc_logits: bounds on the allocation logits (..., N+1, M).
      pay_logits: bounds on the payment logits (..., N).
    """

    pre: list
    alloc_logits: Interval
    pay_logits: Interval


def dense(box: Interval, w: jax.Array, b: jax.Array) -> Interval:
    """Bounds of ``x @ w + b`` for ``x`` in ``box``."""
    mid = (box.lower + box.upper) / 2
    rad = (box.upper - box.lower) / 2
    c = mid @ w + b
    r = rad @ jnp.abs(w)
    return Interval(c - r, c + r)


def relu(box: Interval) -> Interval:
    return Interval(jax.nn.relu(box.lower), jax.nn.relu(box.upper))


def activation(name: str, box: Interval) -> Interval:
    """Bounds of the (monotone) trunk activation ``name`` of ``box``."""
    return Interval(activate(name, box.lower), activate(name, box.upper))


def _tower(layers, h: Interval, act: str) -> tuple[list, Interval]:
    pre = []
    for layer in layers:
        z = dense(h, layer["w"], layer["b"])
        pre.append(z)
        h = activation(act, z)
    return pre, h


def ibp(params: Params, bid_box: Interval, spec: MechanismSpec) -> NetworkBounds:
    """Propagate a box of bid profiles (lower/upper of shape (..., N, M)) through the network."""
    lead = bid_box.lower.shape[:-2]
    flat = Interval(bid_box.lower.reshape(lead + (-1,)), bid_box.upper.reshape(lead + (-1,)))
    if spec.towers == "separate":
        pre_a, h_a = _tower(params["alloc_tower"], flat, spec.activation)
        pre_p, h_p = _tower(params["pay_tower"], flat, spec.activation)
        cat = lambda a, b: Interval(jnp.concatenate([a.lower, b.lower], -1), jnp.concatenate([a.upper, b.upper], -1))
        pre = [cat(a, b) for a, b in zip(pre_a, pre_p)]
    else:
        pre, h_a = _tower(params["trunk"], flat, spec.activation)
        h_p = h_a
    s = dense(h_a, params["alloc"]["w"], params["alloc"]["b"])
    shape = lead + (spec.n_agents + 1, spec.n_items)
    s = Interval(s.lower.reshape(shape), s.upper.reshape(shape))
    q = dense(h_p, params["pay"]["w"], params["pay"]["b"])
    return NetworkBounds(pre, s, q)


def agent_box(bids: jax.Array, agent: int, low: jax.Array, high: jax.Array) -> Interval:
    """The box where agent ``agent``'s bids range over ``[low[agent], high[agent]]``, others fixed.

    Args:
      bids: (..., N, M) profiles; low/high: (N, M) support bounds.
    """
    lo = bids.at[..., agent, :].set(jnp.broadcast_to(low[agent], bids[..., agent, :].shape))
    hi = bids.at[..., agent, :].set(jnp.broadcast_to(high[agent], bids[..., agent, :].shape))
    return Interval(lo, hi)


def _relu_only(spec: MechanismSpec, what: str) -> None:
    if spec.activation != "relu":
        raise ValueError(f"{what} is a ReLU-stability regularizer; this mechanism's activation is "
                         f"{spec.activation!r} (set stability_weight=0)")


def relu_stability_loss(params: Params, bid_box: Interval, spec: MechanismSpec) -> jax.Array:
    """Xiao et al. (2019) ReLU-stability regularizer, summed over trunk neurons, mean over boxes.

    ``L = mean_boxes sum_neurons -tanh(1 + l * u)`` where ``[l, u]`` are the IBP pre-activation
    bounds. ``l * u > 0`` (a stable neuron) drives the term toward -1; an unstable neuron
    (``l < 0 < u``) is penalized. Minimizing it makes fewer ReLUs need a binary in the MIP.
    """
    _relu_only(spec, "relu_stability_loss")
    nb = ibp(params, bid_box, spec)
    total = 0.0
    for z in nb.pre:
        total = total + jnp.sum(-jnp.tanh(1.0 + z.lower * z.upper), axis=-1)
    return jnp.mean(total)


def relu_margin_loss(params: Params, bid_box: Interval, spec: MechanismSpec, eps: float = 1e-6) -> jax.Array:
    """Scale-free ReLU-stability regularizer: a soft count of the unstable trunk neurons per box.

    With IBP pre-activation bounds ``[l, u]``, centre ``c = (l + u) / 2`` and radius
    ``r = (u - l) / 2``, a neuron is unstable iff ``|c| < r``, and

        ``L = mean_boxes sum_neurons max(0, 1 - |c| / (r + eps))``,

    1 for a neuron centred on its kink, 0 for a stable one. Xiao et al.'s ``-tanh(1 + l u)``
    (:func:`relu_stability_loss`) changes by about ``0.42 * l u`` between an unstable and a stable
    neuron, and ``l u`` is ~1e-2 in our trained trunks (bounds of width ~0.1-0.3), so its gradient
    hardly moves them; this one depends on ``c / r`` alone and is unchanged by rescaling a layer.
    """
    _relu_only(spec, "relu_margin_loss")
    nb = ibp(params, bid_box, spec)
    total = 0.0
    for z in nb.pre:
        c, r = (z.lower + z.upper) / 2, (z.upper - z.lower) / 2
        total = total + jnp.sum(jax.nn.relu(1.0 - jnp.abs(c) / (r + eps)), axis=-1)
    return jnp.mean(total)


STABILITY_LOSSES = {"xiao": relu_stability_loss, "margin": relu_margin_loss}  # Config.stability_loss
