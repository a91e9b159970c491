"""Augmented Lagrangian for the regret (and IR) constraints, as an optax-style ``(init, update)`` pair.

RegretNet (Duetting et al. 2019) maximizes revenue subject to ``rgt_i = 0`` for every agent by
minimizing, over the mechanism parameters w, the augmented Lagrangian::

    L(w; lam, rho) = -rev(w) + sum_i lam_i rgt_i(w) + rho/2 sum_i rgt_i(w)^2
                             + sum_i mu_i ir_i(w) + rho_ir/2 sum_i ir_i(w)^2

where ``rgt_i`` is agent i's empirical mean regret over the batch and ``ir_i`` its mean IR penalty
(``mean_b max(0, -u_bi)^p``, only used for free payments). Every ``update_every`` steps the
multipliers take a dual ascent step with the current batch's constraint values::

    lam_i <- lam_i + rho * rgt_i            mu_i <- mu_i + rho_ir * ir_i

and every ``rho_every`` steps the penalty grows, ``rho <- rho + rho_increment`` (likewise
``rho_ir``).

**A regret budget** ``R >= 0`` turns the constraint ``rgt_i = 0`` into ``rgt_i <= R`` (maximize
revenue subject to a mean regret of at most R per agent, the budgeted formulation of
RegretFormer). The multiplier step becomes projected dual ascent for an inequality, and the
quadratic term penalizes only the excess::

    lam_i <- max(0, lam_i + rho * (rgt_i - R))        rho/2 sum_i max(0, rgt_i - R)^2

so a net below its budget sees its multiplier shrink, down to 0, where it spends regret on
revenue. With ``R = 0`` both are RegretNet's exactly (``rgt_i >= 0`` and ``lam_i >= 0``). The step counter counts calls to ``update``; the multiplier step uses rho *before*
that call's increment (the order of the paper's code). All of this is a pure function of a
:class:`LagrangianState`, so it can live inside a jitted train step and be checkpointed.
"""
from __future__ import annotations

from typing import Callable, NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp


class LagrangianState(NamedTuple):
    """Multipliers and penalty weights.

    Attributes:
      lam: (N,) regret multipliers.
      rho: () regret penalty weight.
      mu: (N,) IR multipliers.
      rho_ir: () IR penalty weight.
      count: () int32 number of ``update`` calls so far.
    """

    lam: jax.Array
    rho: jax.Array
    mu: jax.Array
    rho_ir: jax.Array
    count: jax.Array


class Lagrangian(NamedTuple):
    """The ``(init, update)`` pair returned by :func:`lagrangian`."""

    init: Callable[[int], LagrangianState]
    update: Callable[[LagrangianState, jax.Array, Optional[jax.Array]], LagrangianState]


def lagrangian(rho0: float, rho_increment: float = 0.0, rho_every: int = 5, update_every: int = 6, *,
               lambda0: float = 5.0, mu0: float = 20.0, rho_ir0: float = 1.0, rho_ir_increment: float = 5.0,
               rho_ir_every: int = 5, ir_update_every: int = 6, budget: float = 0.0) -> Lagrangian:
    """Build the multiplier schedule.

    Args:
      rho0: initial regret penalty weight rho.
      rho_increment: added to rho every ``rho_every`` updates.
      rho_every: period of the rho increments.
      update_every: period of the regret multiplier step ``lam += rho * rgt``.
      lambda0: initial value of every ``lam_i``.
      mu0: initial value of every IR multiplier ``mu_i``.
      rho_ir0, rho_ir_increment, rho_ir_every, ir_update_every: the same for IR.
      budget: the regret budget R >= 0 per agent (0: regret driven to zero, as RegretNet); pass
        the same value to :func:`loss`.

    Returns:
      ``Lagrangian(init, update)``: ``init(n_agents) -> state`` and
      ``update(state, regret_per_agent (N,), ir_per_agent (N,) or None) -> state``.
    """
    for name, k in (("rho_every", rho_every), ("update_every", update_every), ("rho_ir_every", rho_ir_every),
                    ("ir_update_every", ir_update_every)):
        if int(k) <= 0:
            raise ValueError(f"lagrangian: {name} must be a positive integer, got {k}")

    def init_fn(n_agents: int) -> LagrangianState:
        return LagrangianState(lam=jnp.full((n_agents,), lambda0, jnp.float32), rho=jnp.asarray(rho0, jnp.float32),
                               mu=jnp.full((n_agents,), mu0, jnp.float32), rho_ir=jnp.asarray(rho_ir0, jnp.float32),
                               count=jnp.zeros((), jnp.int32))

    def update_fn(state: LagrangianState, regret_per_agent: jax.Array,
                  ir_per_agent: Optional[jax.Array] = None) -> LagrangianState:
        chex.assert_equal_shape([state.lam, regret_per_agent])
        rgt = jax.lax.stop_gradient(regret_per_agent).astype(jnp.float32)
        ir = jnp.zeros_like(rgt) if ir_per_agent is None else jax.lax.stop_gradient(ir_per_agent).astype(jnp.float32)
        chex.assert_equal_shape([rgt, ir])
        count = state.count + 1
        lam = jnp.where(count % update_every == 0, jnp.maximum(0.0, state.lam + state.rho * (rgt - budget)),
                        state.lam)
        mu = jnp.where(count % ir_update_every == 0, state.mu + state.rho_ir * ir, state.mu)
        rho = jnp.where(count % rho_every == 0, state.rho + rho_increment, state.rho)
        rho_ir = jnp.where(count % rho_ir_every == 0, state.rho_ir + rho_ir_increment, state.rho_ir)
        return LagrangianState(lam=lam, rho=rho, mu=mu, rho_ir=rho_ir, count=count)

    return Lagrangian(init_fn, update_fn)


def loss(state: LagrangianState, revenue: jax.Array, regret_per_agent: jax.Array,
         ir_per_agent: Optional[jax.Array] = None, budget: float = 0.0) -> jax.Array:
    """The augmented Lagrangian (a scalar to minimize); multipliers are constants (no gradient).

    ``-revenue + sum_i lam_i rgt_i + rho/2 sum_i max(0, rgt_i - R)^2 + sum_i mu_i ir_i
    + rho_ir/2 sum_i ir_i^2`` with R = ``budget`` (the IR terms are dropped when ``ir_per_agent``
    is None). With R = 0 the regret term is ``rho/2 sum_i rgt_i^2``.
    """
    chex.assert_equal_shape([state.lam, regret_per_agent])
    st = jax.lax.stop_gradient(state)
    excess = jnp.maximum(regret_per_agent - budget, 0.0)
    out = -revenue + jnp.sum(st.lam * regret_per_agent) + st.rho / 2 * jnp.sum(excess ** 2)
    if ir_per_agent is not None:
        chex.assert_equal_shape([st.mu, ir_per_agent])
        out = out + jnp.sum(st.mu * ir_per_agent) + st.rho_ir / 2 * jnp.sum(ir_per_agent ** 2)
    return out
