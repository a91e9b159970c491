"""Projected-gradient search for each agent's most profitable misreport (test-time regret).

For every valuation profile ``v`` (B, N, M) and every agent i we search the support box
``[low_i, high_i]`` (N, M) for the bid ``b'_i`` maximizing agent i's deviation utility::

    u_i(b'_i) = sum_j a_ij(b'_i, v_-i) v_ij - p_i(b'_i, v_-i)      (auction.deviation_utilities)

All B*N searches run together: the misreport array ``mis`` (B, N, M) holds agent i's candidate in
row i, and since ``u_i`` depends on ``mis[:, i]`` only, the gradient of ``U = sum_{b,i} u_i``
w.r.t. ``mis`` is, row by row, each agent's own gradient ``g = dU/dmis``. One step is

* ``optimizer="sgd"`` (default; what the certified-RegretNet reference does:
  ``regretnet.optimize_misreports`` in currymj/certified-regretnet adds ``lr * grad`` to the
  misreports and clamps them to [0, 1], with ``misreport_lr = 0.02``, 1000 test iterations)::

      mis <- clip(mis + lr * g, low, high)

* ``optimizer="adam"`` (what the original TensorFlow RegretNet of Duetting et al. uses for its
  misreports, ``AdamOptimizer(gd_lr)``), elementwise, with step count t = 1, 2, ...::

      m <- b1 m + (1 - b1) g,   s <- b2 s + (1 - b2) g^2
      mis <- clip(mis + lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps), low, high)

  with b1 = 0.9, b2 = 0.999, eps = 1e-8 (optax / PyTorch defaults). Adam is elementwise, so one
  state over the whole (B, N, M) array equals an independent Adam per (profile, agent).

Both are optax ``GradientTransformation`` s applied to ``-g`` (ascent as descent on ``-U``),
followed by the projection (``clip``) onto the box.

``keep_best=True`` (default) returns, per (profile, agent), the best iterate seen (the start
included) instead of the last one, so the search never ends below its start. The utilities come
for free from the value-and-gradient evaluation of each step; the last iterate is scored by one
extra step whose update is discarded. ``keep_best=False`` returns the last iterate, exactly as the
reference does.

Restarts (:func:`restart_inits`, :func:`best_of`, ``regret_pgd(..., restarts=R)``): the utility
of a piecewise-linear network over the box peaks at a vertex of one of its linear regions, very
often on the box's boundary (a corner such as "bid the maximum for everything"), which plain
ascent from the truthful bid can miss for good. Each restart start draws every coordinate
independently at its lower bound, its upper bound or uniformly in between (probabilities 1/4,
1/4, 1/2), so corners and faces get starts as well as the interior; per (profile, agent) the
candidate with the highest deviation utility wins.

Everything is one jitted program per (spec, shapes, steps, optimizer, keep_best, chunk); the
learning rate and the box are traced, so changing them does not recompile. Batches larger than
``chunk`` profiles are split into equal chunks run one after the other by ``lax.map`` inside the
same program, bounding memory.
"""
from __future__ import annotations

import functools
from typing import Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxauction import auction
from jaxauction.mechanism import MechanismSpec, Params

OPTIMIZERS = ("sgd", "adam")
DEFAULT_CHUNK = 8192


def misreport_optimizer(name: str, lr) -> optax.GradientTransformation:
    """The optax transformation for one misreport step (applied to the *negated* utility gradient)."""
    if name == "sgd":
        return optax.sgd(lr)
    if name == "adam":
        return optax.adam(lr, b1=0.9, b2=0.999, eps=1e-8)
    raise ValueError(f"misreport optimizer must be one of {OPTIMIZERS}, got {name!r}")


def _ascend(params, spec, vals, init, low, high, lr, steps, optimizer, keep_best):
    """Un-jitted core on one chunk: ``steps`` projected steps from ``clip(init)``."""
    opt = misreport_optimizer(optimizer, lr)

    def neg_total_utility(mis):
        u = auction.deviation_utilities(params, spec, vals, mis)  # (B, N)
        return -jnp.sum(u), u

    grad_fn = jax.grad(neg_total_utility, has_aux=True)
    mis0 = jnp.clip(init, low, high)

    def keep(best, best_u, mis, u):
        better = u > best_u
        return jnp.where(better[..., None], mis, best), jnp.where(better, u, best_u)

    def body(_, carry):
        mis, state, best, best_u = carry
        g, u = grad_fn(mis)  # u: utilities at the current iterate
        if keep_best:
            best, best_u = keep(best, best_u, mis, u)
        upd, state = opt.update(g, state, mis)
        mis = jnp.clip(optax.apply_updates(mis, upd), low, high)
        return mis, state, best, best_u

    neg_inf = jnp.full(vals.shape[:2], -jnp.inf, vals.dtype)
    # With keep_best, one extra pass scores the last iterate (its own update is discarded); this
    # keeps a single copy of the forward/backward graph in the program.
    n_iter = steps + 1 if (keep_best and steps > 0) else steps
    mis, _, best, _ = jax.lax.fori_loop(0, n_iter, body, (mis0, opt.init(mis0), mis0, neg_inf))
    return best if keep_best else mis


@functools.partial(jax.jit, static_argnames=("spec", "steps", "optimizer", "keep_best", "chunk"))
def _pgd_jit(params, spec, vals, init, low, high, lr, *, steps, optimizer, keep_best, chunk):
    b, n, m = vals.shape
    run = functools.partial(_ascend, params, spec, low=low, high=high, lr=lr, steps=steps,
                            optimizer=optimizer, keep_best=keep_best)
    if b <= chunk:
        return run(vals, init)
    k = -(-b // chunk)              # number of chunks
    c = -(-b // k)                  # balanced chunk size, so padding is < k rows
    pad = ((0, k * c - b), (0, 0), (0, 0))
    v = jnp.pad(vals, pad, mode="edge").reshape(k, c, n, m)
    i = jnp.pad(init, pad, mode="edge").reshape(k, c, n, m)
    out = jax.lax.map(lambda xs: run(xs[0], xs[1]), (v, i))
    return out.reshape(k * c, n, m)[:b]


def _check_inputs(spec, vals, init, low, high):
    chex.assert_rank(vals, 3)
    chex.assert_axis_dimension(vals, 1, spec.n_agents)
    chex.assert_axis_dimension(vals, 2, spec.n_items)
    chex.assert_equal_shape([vals, init])
    chex.assert_shape([low, high], (spec.n_agents, spec.n_items))


def pgd(params: Params, spec: MechanismSpec, vals: jax.Array, init: jax.Array, low, high, *,
        steps: int, lr: float, optimizer: str = "sgd", keep_best: bool = True,
        chunk: int = DEFAULT_CHUNK) -> jax.Array:
    """Projected gradient ascent on every agent's deviation utility (see module docstring).

    Args:
      params: mechanism parameter pytree.
      spec: the architecture (static).
      vals: (B, N, M) true valuations.
      init: (B, N, M) starting misreports (row i is agent i's); projected onto the box first.
      low, high: (N, M) misreport support; every iterate is clipped to ``[low, high]``.
      steps: number of ascent steps (static: a new value compiles a new program).
      lr: step size (traced: changing it does not recompile).
      optimizer: ``"sgd"`` (plain gradient ascent, the reference's choice) or ``"adam"``.
      keep_best: return each (profile, agent)'s best iterate (default) or the last one.
      chunk: at most this many profiles per inner batch (memory bound).

    Returns:
      (B, N, M) misreports inside ``[low, high]``.
    """
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"misreport optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if int(steps) < 0 or int(chunk) < 1:
        raise ValueError(f"pgd needs steps >= 0 and chunk >= 1, got steps={steps}, chunk={chunk}")
    vals = jnp.asarray(vals, jnp.float32)
    init = jnp.asarray(init, jnp.float32)
    low = jnp.asarray(low, jnp.float32)
    high = jnp.asarray(high, jnp.float32)
    _check_inputs(spec, vals, init, low, high)
    try:  # concrete bounds (numpy or jax arrays) are checked here; traced ones cannot be
        inverted = bool(np.any(np.asarray(low) > np.asarray(high)))
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        inverted = False
    if inverted:
        raise ValueError(f"misreport support needs low <= high everywhere, got low={low.tolist()}, "
                         f"high={high.tolist()}")
    return _pgd_jit(params, spec, vals, init, low, high, jnp.float32(lr), steps=int(steps),
                    optimizer=optimizer, keep_best=bool(keep_best), chunk=int(chunk))


def restart_inits(key: jax.Array, shape: tuple[int, ...], low, high) -> jax.Array:
    """Random starting misreports of ``shape`` (..., N, M), biased to the box's corners and faces.

    Every coordinate is independently ``low`` (probability 1/4), ``high`` (1/4) or
    ``low + U[0, 1] (high - low)`` (1/2). So a given corner of an M-item agent's box is drawn with
    probability ``4^-M``, and every face gets starts, where a piecewise-linear mechanism's most
    profitable misreports tend to lie (see the module docstring).
    """
    low = jnp.asarray(low, jnp.float32)
    high = jnp.asarray(high, jnp.float32)
    k_kind, k_u = jax.random.split(key)
    kind = jax.random.randint(k_kind, shape, 0, 4)  # 0: low, 1: high, 2-3: uniform
    frac = jnp.where(kind == 0, 0.0, jnp.where(kind == 1, 1.0, jax.random.uniform(k_u, shape, jnp.float32)))
    return low + frac * (high - low)


def best_of(params: Params, spec: MechanismSpec, vals: jax.Array, candidates: jax.Array) -> jax.Array:
    """Per (profile, agent), the candidate misreport with the highest deviation utility.

    Args:
      vals: (B, N, M) true valuations.
      candidates: (R, B, N, M) candidate misreports.

    Returns:
      (B, N, M): ``candidates[r*(b, i), b, i]`` with ``r* = argmax_r u_i(candidates[r, b, i], v_-i)``
      (ties go to the lowest r).
    """
    chex.assert_rank(candidates, 4)
    chex.assert_equal_shape([vals, candidates[0]])
    u = jax.vmap(lambda c: auction.deviation_utilities(params, spec, vals, c))(candidates)  # (R, B, N)
    r = jnp.argmax(u, axis=0)  # (B, N)
    return jnp.take_along_axis(candidates, r[None, ..., None], axis=0)[0]


def pgd_restarts(params: Params, spec: MechanismSpec, vals: jax.Array, inits: jax.Array, low, high, *,
                 steps: int, lr: float, **kwargs) -> jax.Array:
    """:func:`pgd` from each of R starts (inits (R, B, N, M)) as one batch, then :func:`best_of`.

    Returns (B, N, M) misreports: per (profile, agent) the best of the R searches.
    """
    chex.assert_rank(inits, 4)
    r, b, n, m = inits.shape
    tiled = jnp.broadcast_to(vals, (r, b, n, m)).reshape(r * b, n, m)
    found = pgd(params, spec, tiled, inits.reshape(r * b, n, m), low, high, steps=steps, lr=lr, **kwargs)
    return _best_of_jit(params, spec, vals, found.reshape(r, b, n, m))


def regret_pgd(params: Params, spec: MechanismSpec, vals: jax.Array, low, high, *, steps: int,
               lr: float, init: Optional[jax.Array] = None, key: Optional[jax.Array] = None,
               restarts: int = 0, **kwargs) -> tuple[jax.Array, jax.Array]:
    """Misreports and regret ``max(0, u_i(mis_i, v_-i) - u_i(v))``.

    Starts from ``init`` if given, else from uniform random bids in the box if ``key`` is given
    (and ``restarts == 0``), else from the truthful bids (the reference's choice). With
    ``restarts = R > 0`` (needs ``key``), R more searches start at :func:`restart_inits` points
    and each (profile, agent) keeps the best of the 1 + R results. Extra keyword arguments go to
    :func:`pgd`.

    Returns:
      ``(mis (B, N, M), regret (B, N))``.
    """
    vals = jnp.asarray(vals, jnp.float32)
    low = jnp.asarray(low, jnp.float32)
    high = jnp.asarray(high, jnp.float32)
    if restarts < 0:
        raise ValueError(f"restarts must be >= 0, got {restarts}")
    if restarts and key is None:
        raise ValueError("regret_pgd with restarts > 0 needs a PRNG key")
    if init is None:
        if key is None or restarts:
            init = vals
        else:
            init = low + jax.random.uniform(key, vals.shape, jnp.float32) * (high - low)
    if restarts:
        starts = jnp.concatenate([init[None], restart_inits(key, (restarts, *vals.shape), low, high)])
        mis = pgd_restarts(params, spec, vals, starts, low, high, steps=steps, lr=lr, **kwargs)
    else:
        mis = pgd(params, spec, vals, init, low, high, steps=steps, lr=lr, **kwargs)
    return mis, _regret_jit(params, spec, vals, mis)


_regret_jit = jax.jit(auction.regret, static_argnames="spec")
_best_of_jit = jax.jit(best_of, static_argnames="spec")
