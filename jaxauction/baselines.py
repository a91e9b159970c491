"""Strategyproof baselines: item-wise Myerson and the grand bundle, as mechanisms of this package.

A baseline is a ``(params, spec)`` pair like a network: ``mechanism.apply(params, bids, spec)``
hands a :class:`BaselineSpec` to :meth:`BaselineSpec.apply`, so ``jaxauction.auction``,
``jaxauction.misreport`` (PGD) and ``jaxauction.evaluate`` take a baseline as they take a net.
:func:`make` builds one from a prior, :func:`load` from a text such as ``"myerson:3x2"`` (what
``python -m jaxauction.evaluate --ckpt myerson:3x2`` reads); a :class:`Baseline` is also the
function ``bids (..., N, M) -> (alloc (..., N, M), pay (..., N))``. Bids are assumed to lie in the
prior's box (as every misreport search here keeps them).

**Item-wise Myerson** (``"myerson"``; optimal for additive bidders with independent values when
the items are sold separately). For item j, agent i's value has CDF F_ij and density f_ij on
[lo_ij, hi_ij] and virtual value ``phi_ij(b) = b - (1 - F_ij(b)) / f_ij(b)``. For U[lo, hi],
``F = (b - lo) / (hi - lo)`` and ``f = 1 / (hi - lo)``, so ``phi(b) = 2 b - hi`` (increasing: no
ironing). Per item independently:

* the item goes to ``i* = argmax_i phi_ij(b_ij)`` if ``phi_i*j(b_i*j) >= 0``, else stays unsold;
  ties go to the lowest agent index (``jnp.argmax``), ``phi = 0`` sells;
* the winner pays its threshold bid ``max(lo_ij, phi_ij^-1(max(0, max_{k != i} phi_kj(b_kj))))``,
  with ``phi^-1(x) = (x + hi) / 2``: the lowest bid in its box that still wins, so truthful
  bidding is a dominant strategy (Myerson's lemma: monotone allocation, threshold payment) and
  the mechanism is IR (the price is at most the winning bid).

When the agents share item j's marginal (every prior of this package but a per-agent box), this
is a second-price auction with reserve ``r_j = max(lo_j, phi^-1(0)) = max(lo_j, hi_j / 2)``, the
root of ``r - (1 - F(r)) / f(r) = 0`` (clamped to the box): the price is ``max(r_j, second bid)``.
The reserves come from the prior's box (:func:`myerson_reserves`); the virtual value is the
uniform one in closed form, and any other prior raises :class:`BaselineError` naming it.

**Grand bundle** (``"bundle"``): a second-price auction with reserve R on the bundle bids
``s_i = sum_j b_ij``: the highest ``s_i >= R`` (lowest index on ties) gets every item and pays
``max(R, max_{k != i} s_k)``. An additive bidder's value for the bundle is ``sum_j v_ij`` and the
outcome depends on its bids only through ``s_i``, so this is strategyproof too. R is an
**empirical optimum**: the reserve maximizing the revenue on ``fit_points`` profiles drawn from the
prior (:func:`fit_bundle_reserve`, exact over those samples), not a closed form; evaluate it on
other profiles (its in-sample revenue is biased upward).

**Soft item-wise Myerson** (``"softmyerson"``, temperature ``tau``, default :data:`SOFT_TAU`):
a smooth, exactly strategyproof relative of item-wise Myerson, made to be a distillation teacher
(a net fits a smooth function far better than Myerson's steps; ``jaxauction.pretrain``). Per
item j, with ``z_kj = phi_kj(b_kj) / tau`` and a dummy logit 0 for "unsold",
``a_ij = exp(z_ij) / (1 + sum_k exp(z_kj))``: a softmax over the virtual values, increasing in
``b_ij``. The payment is Myerson's payment identity for that allocation rule, in closed form::

    p_ij = b_ij a_ij(b_ij) - int_{lo_ij}^{b_ij} a_ij(s) ds,
    int a_ij(s) ds = (tau / 2) [log(C + exp(z_ij(b_ij))) - log(C + exp(z_ij(lo_ij)))],

with ``C = 1 + sum_{k != i} exp(z_kj)`` (``d/ds log(C + exp((2 s - hi)/tau)) = (2/tau) a(s)``).
A monotone allocation with this payment makes truthful bidding optimal item by item, hence for
additive bidders (Myerson's lemma); the utility at the lowest bid is 0, so it is IR. As
``tau -> 0`` it becomes item-wise Myerson (ties aside); its revenue is a little below it.

Closed-form expected revenues: :func:`expected_revenue` (item-wise Myerson with the agents sharing
each item's uniform marginal); :func:`revenue_estimate` is the Monte Carlo one with its standard error.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import NamedTuple, Optional

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxauction.priors import UniformPrior

BASELINES = ("myerson", "bundle", "softmyerson")
COMPARED = ("myerson", "bundle")  # the baselines tables and frontier plots set beside the nets (softmyerson is a teacher)
SOFT_TAU = 0.02  # the soft Myerson's default temperature, in virtual-value units
FIT_POINTS = 100_000  # profiles the bundle reserve is fitted on
_FIT_SALT = 0x62756E64  # folded into the fit seed: the fit profiles are never an evaluation's


class BaselineError(ValueError):
    """A baseline cannot be built: unknown name, bad setting, or a prior it cannot handle."""


@dataclasses.dataclass(frozen=True)
class BaselineSpec:
    """Static description of a baseline (hashable: a jit static argument, like ``MechanismSpec``).

    Attributes:
      kind: one of :data:`BASELINES`.
      n_agents, n_items: N, M.
    """

    kind: str
    n_agents: int
    n_items: int

    def __post_init__(self):
        if self.kind not in BASELINES:
            raise BaselineError(f"unknown baseline {self.kind!r}; known: {', '.join(BASELINES)}")

    def apply(self, params: dict, bids: jax.Array) -> tuple[jax.Array, jax.Array]:
        """``(alloc (..., N, M), pay (..., N))`` of bids (..., N, M) (see the module docstring)."""
        bids = jnp.asarray(bids)
        chex.assert_axis_dimension(bids, -2, self.n_agents)
        chex.assert_axis_dimension(bids, -1, self.n_items)
        return {"myerson": _myerson, "bundle": _bundle, "softmyerson": _soft_myerson}[self.kind](params, bids)


class Baseline(NamedTuple):
    """A built baseline: ``mechanism.apply(b.params, bids, b.spec)``, or ``b(bids)``.

    ``info``: how it was built (reserves, and for the bundle how its reserve was fitted)."""

    name: str
    params: dict
    spec: BaselineSpec
    prior: UniformPrior
    info: dict

    def __call__(self, bids: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.spec.apply(self.params, bids)


def _top_two(x: jax.Array, axis: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Index of the first maximum along ``axis`` (lowest index on ties), the maximum, and the
    largest value among the others (-inf for a single entry); the axis is removed."""
    idx = jnp.argmax(x, axis=axis)
    top = jnp.max(x, axis=axis)
    if x.shape[axis] == 1:
        second = jnp.full_like(top, -jnp.inf)
    else:
        second = jnp.take(jnp.sort(x, axis=axis), x.shape[axis] - 2, axis=axis)
    return idx, top, second


def _myerson(params: dict, bids: jax.Array):
    lo, hi = params["low"], params["high"]                     # (N, M)
    n = bids.shape[-2]
    phi = 2.0 * bids - hi                                      # uniform virtual values (..., N, M)
    win, top, second = _top_two(phi, axis=-2)                  # (..., M)
    winner = jnp.arange(n)[:, None] == win[..., None, :]       # (..., N, M)
    alloc = (winner & (top >= 0.0)[..., None, :]).astype(bids.dtype)
    others = jnp.where(winner, second[..., None, :], top[..., None, :])   # max_{k != i} phi_kj
    price = jnp.maximum(lo, (jnp.maximum(others, 0.0) + hi) / 2.0)        # threshold bid
    return alloc, jnp.sum(alloc * price, axis=-1)


def _soft_myerson(params: dict, bids: jax.Array):
    lo, hi, tau = params["low"], params["high"], params["tau"]
    z = (2.0 * bids - hi) / tau                                            # (..., N, M)
    zero = jnp.zeros_like(z[..., :1, :])
    alloc = jax.nn.softmax(jnp.concatenate([z, zero], axis=-2), axis=-2)[..., :-1, :]
    # log C_i = log(1 + sum_{k != i} exp z_k), as a logsumexp with agent i masked out (no cancellation)
    n = z.shape[-2]
    others = jnp.where(jnp.eye(n, dtype=bool)[:, :, None], -jnp.inf, z[..., None, :, :])    # (..., i, k, M)
    log_c = jnp.logaddexp(0.0, jax.nn.logsumexp(others, axis=-2))                           # (..., N, M)
    z_lo = (2.0 * lo - hi) / tau
    integral = tau / 2.0 * (jnp.logaddexp(log_c, z) - jnp.logaddexp(log_c, z_lo))
    return alloc, jnp.sum(bids * alloc - integral, axis=-1)


def _bundle(params: dict, bids: jax.Array):
    s = jnp.sum(bids, axis=-1)                                 # (..., N)
    reserve = params["reserve"]
    win, top, second = _top_two(s, axis=-1)                    # (...)
    sold = top >= reserve
    gets = ((jnp.arange(bids.shape[-2]) == win[..., None]) & sold[..., None]).astype(bids.dtype)  # (..., N)
    alloc = jnp.broadcast_to(gets[..., None], bids.shape)
    return alloc, gets * jnp.maximum(reserve, second)[..., None]


# ---- building -------------------------------------------------------------------------------------

def _uniform(prior, what: str) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(prior, UniformPrior):
        raise BaselineError(f"{what} needs the prior's marginal CDF and density; they are implemented in "
                            f"closed form for UniformPrior only, got {type(prior).__name__}")
    return prior.bounds()


def myerson_reserves(prior: UniformPrior) -> np.ndarray:
    """(N, M) Myerson reserves: ``max(lo, phi^-1(0)) = max(lo, hi / 2)`` per (agent, item)."""
    lo, hi = _uniform(prior, "item-wise Myerson")
    return np.maximum(lo, hi / 2.0)


def fit_bundle_reserve(prior: UniformPrior, points: int = FIT_POINTS, seed: int = 0) -> tuple[float, float]:
    """The grand bundle's empirical optimal reserve: ``(R, in-sample revenue)`` on ``points``
    profiles from ``prior`` (key ``fold_in(PRNGKey(seed), salt)``, never an evaluation's profiles).

    With ``s1 >= s2`` the two highest bundle bids of a profile, the revenue of reserve R is
    ``rev(R) = mean [s1 >= R] max(R, s2) = (R (#{s1 >= R} - #{s2 >= R}) + sum_{s2 >= R} s2) / n``.
    Between consecutive values of s1 it only grows with R, so its maximum over R is at one of the
    sampled s1 (it jumps down just after each): we evaluate every one exactly (sorting and
    prefix sums, in float64) and take the best (the smallest R on ties).
    """
    if points < 1:
        raise BaselineError(f"bundle reserve fit needs points >= 1, got {points}")
    vals = prior.sample(jax.random.fold_in(jax.random.PRNGKey(seed), _FIT_SALT), points)
    s = np.sort(np.asarray(vals, np.float64).sum(axis=-1), axis=-1)  # (n, N) bundle bids, ascending
    s1 = np.sort(s[:, -1])
    s2 = np.sort(s[:, -2]) if s.shape[1] > 1 else np.full(points, -np.inf)
    cand = s1
    n1 = points - np.searchsorted(s1, cand, side="left")
    at2 = np.searchsorted(s2, cand, side="left")
    tail2 = np.concatenate([np.cumsum(s2[::-1])[::-1], [0.0]])[at2]  # sum_{s2 >= R} s2 (the -inf entries are never in a tail)
    rev = (cand * (n1 - (points - at2)) + tail2) / points
    best = int(np.argmax(rev))
    return float(cand[best]), float(rev[best])


def make(name: str, prior: UniformPrior, *, fit_points: int = FIT_POINTS, fit_seed: int = 0,
         tau: float = SOFT_TAU) -> Baseline:
    """Baseline ``name`` (one of :data:`BASELINES`) for ``prior``; ``fit_points``/``fit_seed``: the
    bundle reserve's fit (:func:`fit_bundle_reserve`); ``tau``: the soft Myerson's temperature."""
    spec = BaselineSpec(name, prior.n_agents, prior.n_items)  # checks the name
    if name == "myerson":
        lo, hi = _uniform(prior, "item-wise Myerson")
        params = {"low": jnp.asarray(lo), "high": jnp.asarray(hi)}
        info = {"reserves": myerson_reserves(prior).tolist(), "reserve_rule": "max(lo, hi/2): Myerson, closed form"}
    elif name == "softmyerson":
        if not float(tau) > 0.0:
            raise BaselineError(f"softmyerson: tau must be > 0, got {tau}")
        lo, hi = _uniform(prior, "soft item-wise Myerson")
        params = {"low": jnp.asarray(lo), "high": jnp.asarray(hi), "tau": jnp.asarray(tau, jnp.float32)}
        info = {"tau": float(tau), "rule": "softmax over uniform virtual values / tau, Myerson payment identity"}
    else:
        r, rev = fit_bundle_reserve(prior, fit_points, fit_seed)
        params = {"reserve": jnp.asarray(r, jnp.float32)}
        info = {"reserve": r, "reserve_rule": f"empirical optimum on {fit_points} profiles (fit seed {fit_seed})",
                "fit_revenue": rev}
    return Baseline(name, params, spec, prior, info)


_NXM = re.compile(r"^(\d+)x(\d+)$")


def setting_prior(setting: str) -> UniformPrior:
    """The prior a setting names: a checkpoint or run directory (or reference ``.npz``): its prior;
    a config name or ``.py`` path (as ``train.py --config``): its prior; else ``NxM``: N agents,
    M items, U[0, 1] values."""
    from jaxauction import checkpoints, priors
    from jaxauction.config import ConfigError
    from jaxauction.config_io import load_config

    p = Path(setting)
    if p.is_dir() or (p.suffix == ".npz" and p.exists()):
        try:
            return checkpoints.load_with_prior(p)[3]
        except checkpoints.CheckpointError as e:
            raise BaselineError(f"setting {setting!r}: {e}") from None
    try:
        return load_config(setting).prior()
    except ConfigError as e:
        m = _NXM.match(setting)
        if m and int(m[1]) > 0 and int(m[2]) > 0:
            return priors.uniform(int(m[1]), int(m[2]))
        raise BaselineError(f"setting {setting!r}: not a checkpoint, a config ({e}) or NxM") from None


def is_baseline(text: str) -> bool:
    """Is ``text`` meant as a baseline: ``NAME:SETTING`` and no file or directory of that name?
    (:func:`load` then says whether NAME is one of :data:`BASELINES`.)"""
    name, sep, _ = str(text).partition(":")
    return bool(sep and name) and "/" not in name and not Path(text).exists()


def load(text: str, **kwargs) -> Baseline:
    """``"NAME:SETTING"`` -> :func:`make` (NAME, :func:`setting_prior` (SETTING)), e.g. ``"myerson:3x2"``."""
    name, sep, setting = str(text).partition(":")
    if not sep or not setting:
        raise BaselineError(f"baseline {text!r}: expected NAME:SETTING with NAME one of {', '.join(BASELINES)}")
    if name not in BASELINES:
        raise BaselineError(f"unknown baseline {name!r} in {text!r}; known: {', '.join(BASELINES)}")
    return make(name, setting_prior(setting), **kwargs)


# ---- revenue ----------------------------------------------------------------------------------------

def revenue_estimate(baseline: Baseline, points: int = 100_000, seed: int = 0, chunk: int = 65536) -> tuple[float, float]:
    """Monte Carlo expected revenue of ``baseline`` on ``points`` profiles from its prior (key
    ``PRNGKey(seed)``, as ``evaluate``): ``(mean, standard error)`` of ``sum_i p_i`` (sample std / sqrt(n))."""
    if points < 2:
        raise BaselineError(f"revenue_estimate needs points >= 2, got {points}")
    vals = baseline.prior.sample(jax.random.PRNGKey(seed), points)
    run = jax.jit(lambda v: jnp.sum(baseline(v)[1], axis=-1))
    rev = np.concatenate([np.asarray(run(vals[i:i + chunk]), np.float64) for i in range(0, points, chunk)])
    return float(rev.mean()), float(rev.std(ddof=1) / np.sqrt(points))


def expected_revenue(baseline: Baseline) -> Optional[float]:
    """Closed-form expected revenue where we know it, else None.

    Item-wise Myerson whose agents share item j's marginal U[lo, hi] (n agents): by Myerson's lemma
    the expected revenue is ``E[max(0, phi(X))]`` with X the highest of n values, per item. With
    ``X = lo + (hi - lo) U``, U having density ``n u^(n-1)`` on [0, 1], ``phi(X) = 2 lo - hi +
    2 (hi - lo) U`` is >= 0 for ``U >= u0 = clip((hi - 2 lo) / (2 (hi - lo)), 0, 1)``, so::

        E[max(0, phi(X))] = (2 lo - hi) (1 - u0^n) + 2 (hi - lo) n / (n + 1) (1 - u0^(n + 1))

    (U[0, 1]: 1/4, 5/12, 17/32 for n = 1, 2, 3). The sum over items. None otherwise (the bundle,
    agents with different marginals).
    """
    if baseline.name != "myerson":
        return None
    lo, hi = (np.asarray(x, np.float64) for x in baseline.prior.bounds())
    if not (np.all(lo == lo[:1]) and np.all(hi == hi[:1])):
        return None
    n, total = lo.shape[0], 0.0
    for a, b in zip(lo[0], hi[0]):
        u0 = float(np.clip((b - 2 * a) / (2 * (b - a)), 0.0, 1.0))
        total += (2 * a - b) * (1 - u0 ** n) + 2 * (b - a) * n / (n + 1) * (1 - u0 ** (n + 1))
    return total
