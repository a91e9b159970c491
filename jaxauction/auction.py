"""Utilities, revenue, IR violation and regret of a mechanism, given valuations and misreports.

Notation: ``v`` valuations (B, N, M); ``a`` allocations (B, N, M); ``p`` payments (B, N).
Agent i's (quasi-linear, additive) utility is ``u_i = sum_j a_ij v_ij - p_i``.
A misreport array ``b'`` of shape (B, N, M) holds, in row i, the bid agent i would report
instead of ``v_i``; agent i's deviation utility is its utility when it bids ``b'_i`` and every
other agent bids truthfully. Regret is ``rgt_i = max(0, u_i(b'_i, v_-i) - u_i(v))``.
"""
from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec, Params


def utilities(alloc: jax.Array, pay: jax.Array, vals: jax.Array) -> jax.Array:
    """(B, N) utilities ``sum_j a_ij v_ij - p_i``."""
    chex.assert_equal_shape([alloc, vals])
    return jnp.sum(alloc * vals, axis=-1) - pay


def revenue(pay: jax.Array) -> jax.Array:
    """Mean over profiles of total payment ``sum_i p_i``."""
    return jnp.mean(jnp.sum(pay, axis=-1))


def ir_violation(alloc: jax.Array, pay: jax.Array, vals: jax.Array) -> jax.Array:
    """(B, N) ``max(0, -u_i)``: how much an agent loses by participating truthfully."""
    return jax.nn.relu(-utilities(alloc, pay, vals))


def misreport_profiles(vals: jax.Array, mis: jax.Array) -> jax.Array:
    """(B, N, N, M) profiles: entry [b, i] is ``vals[b]`` with row i replaced by ``mis[b, i]``."""
    chex.assert_equal_shape([vals, mis])
    n = vals.shape[1]
    eye = jnp.eye(n, dtype=vals.dtype)[None, :, :, None]  # (1, N(deviator), N(row), 1)
    return vals[:, None] * (1 - eye) + mis[:, :, None, :] * eye


def deviation_utilities(params: Params, spec: MechanismSpec, vals: jax.Array, mis: jax.Array) -> jax.Array:
    """(B, N): agent i's true utility when it reports ``mis[:, i]`` and others report truthfully."""
    b, n, m = vals.shape
    prof = misreport_profiles(vals, mis).reshape(b * n, n, m)
    a, p = mechanism.apply(params, prof, spec)
    u = utilities(a, p, jnp.repeat(vals, n, axis=0)).reshape(b, n, n)
    return jnp.diagonal(u, axis1=1, axis2=2)


def truthful(params: Params, spec: MechanismSpec, vals: jax.Array):
    """``(alloc, pay, utilities)`` under truthful bidding."""
    a, p = mechanism.apply(params, vals, spec)
    return a, p, utilities(a, p, vals)


def regret(params: Params, spec: MechanismSpec, vals: jax.Array, mis: jax.Array,
           truthful_util: jax.Array | None = None) -> jax.Array:
    """(B, N) ``max(0, u_i(mis_i, v_-i) - u_i(v))``."""
    if truthful_util is None:
        truthful_util = truthful(params, spec, vals)[2]
    return jax.nn.relu(deviation_utilities(params, spec, vals, mis) - truthful_util)
