"""Many (profile, agent) pairs of one agent certified together, in one branch-and-bound pool.

:func:`certify_many` is :func:`certify.regret.certify_point` with ``solver="bab"`` for a batch of
profiles: gradient ascent runs on all profiles at once, and :func:`certify.bab.maximize_many`
bounds boxes of every profile in the same jitted calls, so each call stays full (on a GPU, the
device stays busy) while a single profile would need only a few boxes per round. Every
certificate says what one of :func:`certify_point` says; ``time_solve_s`` is the shared pool's
wall time until that pair's bounds met. ``certify.py --batch-pairs K`` uses it.
"""
from __future__ import annotations

import time

import numpy as np

from certify import bab, linbound, methods, regret
from certify.certificate import Certificate, CertifyOptions
from jaxauction.mechanism import MechanismSpec, Params


def certify_many(params: Params, spec: MechanismSpec, profiles, agent: int, *, low=None, high=None,
                 time_limit: float | None = None, pgd_steps: int = 1000, pgd_lr: float = 0.02,
                 options: CertifyOptions | None = None) -> list[Certificate]:
    """Certify agent ``agent`` at every profile of ``profiles`` (P, N, M) with bab (see the module
    docstring); ``time_limit`` bounds the whole batch (every pair runs from its start)."""
    opts = options or CertifyOptions()
    methods.check(spec, "bab")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be positive or None, got {time_limit}")
    checked = [regret.validate(params, spec, v, agent, low, high) for v in np.asarray(profiles, np.float64)]
    if not checked:
        return []
    t0 = time.perf_counter()
    deadline = None if time_limit is None else t0 + float(time_limit)
    vs = np.stack([c[0] for c in checked])
    low, high = checked[0][1], checked[0][2]
    pgd = regret.pgd_batch(params, spec, vs, low, high, pgd_steps, pgd_lr) if pgd_steps and pgd_steps > 0 else None
    preps = [regret.prepare(params, spec, v, agent, low, high, opts,
                            None if pgd is None else (pgd[0][k, agent], float(pgd[1][k, agent])))
             for k, v in enumerate(vs)]
    backward = regret.bab_backward(spec, opts)
    net = linbound.compile_net(preps[0][0].w, spec, agent)   # one agent, one compiled net
    problems = [bab.Problem(ctx.w, spec, ctx.v, agent, batch=opts.bab_batch, backward=backward, net=net)
                for ctx, _, _ in preps]
    results = bab.maximize_many(problems, low[agent], high[agent], incs=[(u, b) for _, u, b in preps],
                                gap=opts.bab_gap, deadline=deadline, branching=opts.bab_branching)
    return [regret.bab_certificate(ctx, res, low, high, inc_u, inc_b, opts)
            for (ctx, inc_u, inc_b), res in zip(preps, results)]
