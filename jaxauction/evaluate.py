"""Test-time evaluation of a mechanism: revenue, PGD regret and IR violation on fresh samples.

Protocol (as the certified-RegretNet reference's ``test_loop``): draw ``points`` valuation
profiles from the prior, run ``steps`` projected gradient-ascent steps (``lr`` 0.02, plain
ascent, from the truthful bids; see :mod:`jaxauction.misreport`) for every agent, and report,
(with ``restarts = R > 0``, R more searches per (profile, agent) start at corner-biased random
points and the best of the 1 + R is kept: a stronger attack than the paper's protocol),
with ``u_i`` the truthful utility, ``a_i . v_i`` its value and ``rgt_i = max(0, u_i(mis_i, v_-i) -
u_i(v))`` per (profile, agent):

* ``revenue``: mean over profiles of ``sum_i p_i`` (truthful bids).
* ``regret_mean`` / ``regret_max``: mean / max of ``rgt_i`` over all (profile, agent) pairs (the
  reference's ``regret_mean`` is the same: total regret / n_agents / points);
  ``regret_mean_per_agent`` / ``regret_max_per_agent``: the same per agent (lists of N).
* ``ir_violation_rate``: fraction of (profile, agent) pairs with ``u_i < -IR_TOL`` (IR_TOL = 1e-6
  absorbs float32 rounding of the IR-by-construction fractional payments, whose utility is
  ``(1 - frac) a.v >= 0`` exactly but can come out as -1e-8; the reference compares
  ``p_i > a_i . v_i`` without tolerance).
* ``ir_violation_mean``: mean over (profile, agent) pairs of ``max(0, -u_i)`` (no tolerance). The
  reference's ``ir_violation_mean`` sums over agents per profile, i.e. is N times this.
* ``revenue_ir_zeroed``: mean over profiles of ``sum_i p_i`` where a profile in which *any* agent's
  IR is violated (as for the rate) contributes 0: the revenue a seller keeps if a profile
  where someone would walk away is lost entirely.
* ``revenue_ir_adjusted``: the reference's ``payment_ir_adjusted``: only the violating agents'
  payments are zeroed (same tolerance). ``revenue >= revenue_ir_adjusted >= revenue_ir_zeroed``.
* ``pgd_regret_ucb`` (``_per_agent``): ``1 - ucb_delta`` upper confidence bounds on the *mean PGD
  regret* (:func:`certify.stats.pgd_ucb`, ``ucb_method``), over the proven range
  :func:`certify.stats.trivial_regret_range`. PGD regret is a lower bound on regret, so this is
  NOT a bound on expected regret (a certification run's ``summary.json`` has that); ``None`` with
  ``pgd_regret_ucb_note`` saying why when no range is known (a baseline) or ``points < 2``.

CLI::

    python -m jaxauction.evaluate --ckpt DIR_OR_NPZ [--points N] [--seed S] [--steps K] [--lr LR]
                                  [--restarts R] [--json] [--worst-out FILE.json [--worst K]]

prints a table, or with ``--json`` exactly one JSON object on stdout. ``--worst-out`` writes the K
profiles with the largest PGD regret (a JSON list of N x M matrices) for
``certify.py --profiles FILE.json``: mean regret over random profiles can hide a rare region where
the mechanism is badly manipulable, and that is where a certificate says most. A missing or
unreadable checkpoint prints one ``error: ...`` line on stderr and exits with status 2.

``--ckpt NAME:SETTING`` evaluates a strategyproof baseline instead of a network
(:mod:`jaxauction.baselines`): NAME is ``myerson`` (item-wise Myerson) or ``bundle`` (the grand
bundle, second price with an empirically optimal reserve), SETTING a config name such as ``3x2``
(its prior), a run or checkpoint directory (its prior), or ``NxM`` (U[0, 1] values), e.g.
``python -m jaxauction.evaluate --ckpt myerson:3x2``.
"""
from __future__ import annotations

import argparse
import functools
import json
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from certify import stats
from jaxauction import auction, misreport
from jaxauction.mechanism import MechanismSpec, Params

IR_TOL = 1e-6


@functools.partial(jax.jit, static_argnames="spec")
def summarize(params: Params, spec: MechanismSpec, vals: jax.Array, mis: jax.Array) -> dict:
    """Metrics (see module docstring) of ``vals`` (B, N, M) given misreports ``mis`` (B, N, M),
    plus ``"regret"``: the (B, N) regrets themselves (not in :data:`METRICS`)."""
    a, p, u = auction.truthful(params, spec, vals)
    rgt = auction.regret(params, spec, vals, mis, truthful_util=u)  # (B, N)
    viol = u < -IR_TOL                                                # (B, N)
    profile_ok = ~jnp.any(viol, axis=1)
    return {
        "revenue": auction.revenue(p),
        "regret_mean": jnp.mean(rgt),
        "regret_max": jnp.max(rgt),
        "regret_mean_per_agent": jnp.mean(rgt, axis=0),
        "regret_max_per_agent": jnp.max(rgt, axis=0),
        "ir_violation_rate": jnp.mean(viol.astype(jnp.float32)),
        "ir_violation_mean": jnp.mean(jax.nn.relu(-u)),
        "revenue_ir_zeroed": jnp.mean(jnp.where(profile_ok, jnp.sum(p, axis=1), 0.0)),
        "revenue_ir_adjusted": jnp.mean(jnp.sum(jnp.where(viol, 0.0, p), axis=1)),
        "regret": rgt,
    }


METRICS = ("revenue", "revenue_ir_zeroed", "revenue_ir_adjusted", "regret_mean", "regret_max",
           "regret_mean_per_agent", "regret_max_per_agent", "ir_violation_rate", "ir_violation_mean")


def _to_python(metrics: dict) -> dict:
    out = {}
    for k in METRICS:
        arr = np.asarray(metrics[k])
        out[k] = arr.tolist() if arr.ndim else float(arr)
    return out


def evaluate(params: Params, spec: MechanismSpec, prior, *, points: int = 3000, seed: int = 0,
             steps: int = 1000, lr: float = 0.02, optimizer: str = "sgd", restarts: int = 0,
             worst: int = 0, ucb_delta: float = stats.DEFAULT_DELTA) -> dict:
    """Sample ``points`` profiles from ``prior`` (key ``PRNGKey(seed)``), search misreports, report.

    Args:
      params, spec: the mechanism.
      prior: a :class:`jaxauction.priors.UniformPrior`; its box is also the misreport support.
      points: number of valuation profiles.
      seed: sampling seed.
      steps, lr, optimizer: the misreport search (:func:`jaxauction.misreport.pgd`).
      restarts: extra corner-biased random starts per (profile, agent) (0 = the paper's protocol).
      worst: also return the ``worst`` profiles with the largest PGD regret (max over agents),
        worst first, as ``worst_profiles`` (K x N x M nested lists, the format of
        ``certify.py --profiles``) and ``worst_regrets`` (K x N): where to aim a certificate.
      ucb_delta: the confidence of ``pgd_regret_ucb`` is ``1 - ucb_delta``.

    Returns:
      dict of plain Python numbers (JSON-serializable): the metrics of the module docstring plus
      ``n_agents, n_items, points, seed, steps, lr, optimizer, restarts, seconds`` (wall time, compile
      included).
    """
    if points < 1 or steps < 0:
        raise ValueError(f"evaluate needs points >= 1 and steps >= 0, got points={points}, steps={steps}")
    stats.check_delta(ucb_delta)
    if (prior.n_agents, prior.n_items) != (spec.n_agents, spec.n_items):
        raise ValueError(f"prior is {prior.n_agents}x{prior.n_items} but the mechanism is "
                         f"{spec.n_agents}x{spec.n_items}")
    t0 = time.perf_counter()
    low, high = prior.bounds()
    vals = prior.sample(jax.random.PRNGKey(seed), points)
    # the first search starts at the truthful bids (the protocol above); only restarts need the key
    # (with a key and no restarts, regret_pgd would start at uniform random bids instead)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 1) if restarts else None
    mis, _ = misreport.regret_pgd(params, spec, vals, low, high, steps=steps, lr=lr, optimizer=optimizer,
                                  restarts=restarts, key=key)
    metrics = summarize(params, spec, vals, mis)
    out = _to_python(metrics)
    if worst > 0:
        rgt = np.asarray(metrics["regret"])  # (B, N)
        top = np.argsort(-rgt.max(axis=1), kind="stable")[:worst]
        out.update(worst_profiles=np.asarray(vals)[top].astype(float).tolist(), worst_regrets=rgt[top].astype(float).tolist())
    out.update(_pgd_ucb(np.asarray(metrics["regret"]), spec, low, high, ucb_delta))
    out.update(n_agents=spec.n_agents, n_items=spec.n_items, points=int(points), seed=int(seed),
               steps=int(steps), lr=float(lr), optimizer=optimizer, restarts=int(restarts), seconds=time.perf_counter() - t0)
    return out


def _pgd_ucb(rgt, spec, low, high, delta) -> dict:
    """:func:`certify.stats.pgd_ucb` over the trivial range of ``spec`` on the box, or None and why."""
    try:
        R = stats.trivial_regret_range(spec.payment, spec.payment_max, low, high)
    except (AttributeError, ValueError) as e:  # a baseline has no MechanismSpec payment
        why = f"not computed: no proven regret range for {type(spec).__name__} ({e})"
        return {stats.KEY_PGD_UCB: None, stats.KEY_PGD_UCB_AGENTS: None, stats.KEY_PGD_NOTE: why}
    if rgt.shape[0] < 2:
        return {stats.KEY_PGD_UCB: None, stats.KEY_PGD_UCB_AGENTS: None,
                stats.KEY_PGD_NOTE: f"not computed: needs at least 2 profiles, got {rgt.shape[0]}"}
    return stats.pgd_ucb(rgt, R, delta)


def format_table(res: dict, title: str = "") -> str:
    """Readable two-column table of an :func:`evaluate` result."""
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.6g}"
        if isinstance(v, list):
            return "[" + ", ".join(fmt(x) for x in v) + "]"
        return str(v)

    rows = [(k, fmt(v)) for k, v in res.items()]
    w = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"{k:<{w}}  {v}" for k, v in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m jaxauction.evaluate", description=__doc__.split("\n")[0])
    ap.add_argument("--ckpt", required=True, help="run dir, checkpoint dir, reference NAME.npz, an affine maximizer "
                                                  "(jaxauction.ama_train's directory), or a baseline "
                                                  "myerson:SETTING / bundle:SETTING (e.g. myerson:3x2)")
    ap.add_argument("--points", type=int, default=3000, help="valuation profiles (default 3000)")
    ap.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ap.add_argument("--steps", type=int, default=1000, help="misreport ascent steps (default 1000)")
    ap.add_argument("--lr", type=float, default=0.02, help="misreport step size (default 0.02)")
    ap.add_argument("--restarts", type=int, default=0,
                    help="extra corner-biased random starts per misreport search (default 0: the paper's protocol)")
    ap.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    ap.add_argument("--worst-out", metavar="FILE.json",
                    help="write the --worst profiles with the largest PGD regret here (for certify.py --profiles)")
    ap.add_argument("--worst", type=int, default=10, help="how many profiles --worst-out gets (default 10)")
    args = ap.parse_args(argv)

    from jaxauction import ama, baselines, checkpoints

    try:
        if baselines.is_baseline(args.ckpt):
            b = baselines.load(args.ckpt)
            params, spec, prior = b.params, b.spec, b.prior
        elif ama.is_ama(args.ckpt):
            params, spec, _, prior = ama.load(args.ckpt)
        else:
            params, spec, _, prior = checkpoints.load_with_prior(args.ckpt)
        if args.worst_out and args.worst < 1:
            raise ValueError(f"--worst must be >= 1, got {args.worst}")
        res = evaluate(params, spec, prior, points=args.points, seed=args.seed, steps=args.steps, lr=args.lr,
                       restarts=args.restarts, worst=args.worst if args.worst_out else 0)
        if args.worst_out:
            Path(args.worst_out).write_text(json.dumps(res.pop("worst_profiles")))
    except (checkpoints.CheckpointError, ValueError, OSError) as e:
        msg = " ".join(str(e).split())  # one line
        print(f"error: {msg}", file=sys.stderr)
        return 2
    res = {"checkpoint": str(args.ckpt), **res}
    if args.worst_out:
        res["worst_out"] = str(args.worst_out)
    if args.json:
        print(json.dumps(res))
    else:
        print(format_table(res, title=f"evaluation of {args.ckpt}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
