"""Distillation pretraining: fit a teacher's outcomes before the augmented Lagrangian starts.

A net started near a good mechanism can keep much of what it starts with. Started at soft
item-wise Myerson (``teacher="softmyerson"``: strategyproof, within 0.1% of item-wise Myerson's
revenue, and above every RegretNet we trained on a CPU in 3x2, 3x3 and 3x10;
``jaxauction.baselines``), the regret Lagrangian only has to remove the regret of the net's
imperfect fit. Distilling *during* training does not get there: the distillation term competes
with the revenue and regret terms, and on 3x2 the student's MSE to (hard) Myerson stayed at 0.2,
about that of allocating uniformly, after 750 steps. Pure distillation of the 3x2 net (ReLU
128x3, sparsemax, free payment) measured on 2 CPU cores (``evaluate``: 1000 profiles, 200 PGD
steps):

=====================  ==========  ======  ==========  ===========
teacher                steps       MSE     revenue     PGD regret
=====================  ==========  ======  ==========  ===========
myerson                3000        0.0115  1.058       0.032
myerson                30000       0.0049  1.059       0.011
softmyerson tau=0.02   10000       0.0004  1.063       0.010
softmyerson tau=0.05   10000       0.0002  1.042       0.009
=====================  ==========  ======  ==========  ===========

A fit's regret is not its MSE: an adversary picks the misreport where the fitting error helps it
most, so the regret is about the error's range along an agent's own bids, not its mean square.

``pretrain(cfg, spec, params, data, teacher)`` takes ``cfg.distill_pretrain_steps`` Adam steps
(learning rate ``cfg.lr``, constant) on::

    MSE(a(v), a_T(v)) + MSE(p(v), p_T(v))        v: a batch of ``cfg.batch_size`` training profiles

with no misreports, no revenue and no regularizer, so a step costs one forward and backward pass
(about 4 ms for the 3x2 net at batch 1024 on 2 CPU cores, against 300 ms for a training step).
The batches are drawn with a key derived from ``cfg.seed``: the result is a deterministic
function of the config, so a resumed run (which loads its state instead) and a fresh one agree.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import optax

from jaxauction import mechanism

_SALT = 0x70726574  # folded into the seed's key: pretraining batches are not the training batches


def distill_mse(alloc: jax.Array, pay: jax.Array, teacher_out) -> jax.Array:
    """``MSE(a, a_T) + MSE(p, p_T)``: the distillation term, here and in the training loss."""
    ta, tp = teacher_out
    return jnp.mean((alloc - ta) ** 2) + jnp.mean((pay - tp) ** 2)


def distill_loss(params, spec, vals: jax.Array, teacher_out) -> jax.Array:
    """:func:`distill_mse` of the net's outcomes at the truthful bids ``vals`` (B, N, M)."""
    return distill_mse(*mechanism.apply(params, vals, spec), teacher_out)


@functools.partial(jax.jit, static_argnames=("spec", "teacher_spec", "steps", "batch_size"))
def _fit(params, data, key, lr, teacher_params, *, spec, teacher_spec, steps: int, batch_size: int):
    opt = optax.adam(lr)

    def body(carry, k):
        p, st = carry
        vals = data[jax.random.randint(k, (batch_size,), 0, data.shape[0])]
        out = jax.lax.stop_gradient(mechanism.apply(teacher_params, vals, teacher_spec))
        loss, g = jax.value_and_grad(distill_loss)(p, spec, vals, out)
        upd, st = opt.update(g, st, p)
        return (optax.apply_updates(p, upd), st), loss

    (params, _), losses = jax.lax.scan(body, (params, opt.init(params)), jax.random.split(key, steps))
    return params, losses


def pretrain(cfg, spec, params, data: jax.Array, teacher) -> tuple[dict, jax.Array]:
    """``params`` after ``cfg.distill_pretrain_steps`` steps of pure distillation towards
    ``teacher = (teacher_params, teacher_spec)``; also the (steps,) losses."""
    t_params, t_spec = teacher
    key = jax.random.fold_in(jax.random.PRNGKey(cfg.seed), _SALT)
    return _fit(params, data, key, jnp.float32(cfg.lr), t_params, spec=spec, teacher_spec=t_spec,
                steps=int(cfg.distill_pretrain_steps), batch_size=int(cfg.batch_size))
