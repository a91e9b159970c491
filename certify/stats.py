"""Confidence bounds on expected regret from i.i.d. samples of proven per-profile bounds.

A certification run on P profiles ``v_1..v_P`` drawn i.i.d. from the prior gives, for agent i and
each profile k, a number ``X_k >= regret_i(v_k)``: the certified upper bound, clipped to ``[0, R]``
where ``R`` is a *proven* bound on ``regret_i`` over the whole valuation box (so clipping keeps it
an upper bound, since ``0 <= regret_i <= R``). The ``X_k`` are i.i.d. in ``[0, R]`` (each a
function of its own profile), hence a bound on ``E[X]`` at confidence ``1 - delta`` is one on
``E_v[regret_i(v)] <= E[X]``.

Mean (:func:`bernstein_ucb`): the **empirical Bernstein bound** of Maurer & Pontil (2009,
"Empirical Bernstein Bounds and Sample Variance Penalization", Theorem 4). For ``n >= 2`` i.i.d.
``Z_k`` in ``[0, 1]``, with probability at least ``1 - delta``::

    E Z <= mean(Z) + sqrt(2 V ln(2/delta) / n) + 7 ln(2/delta) / (3 (n - 1)),

``V`` the sample variance with ``ddof=1``. Applied to ``Z = X / R`` and scaled back::

    E X <= mean(X) + sqrt(2 V_X ln(2/delta) / n) + 7 R ln(2/delta) / (3 (n - 1)).

:func:`hoeffding_ucb` is Hoeffding's ``E X <= mean(X) + R sqrt(ln(1/delta) / (2 n))``;
:func:`mean_ucb` with ``method=BERNSTEIN_HOEFFDING`` takes the smaller of the two at ``delta/2``
each (a union bound: both hold at once with probability ``>= 1 - delta``). Every bound is also
capped at ``R`` (``E X <= R`` surely).

Tail (:func:`exceedance_ucb`): with ``k`` of the ``n`` samples having ``X_k > t``,
``P(regret > t) <= P(X > t) <= p_U``, the one-sided **Clopper-Pearson** upper bound
``p_U = Beta.ppf(1 - delta, k + 1, n - k)`` (1 when ``k = n``), which holds with probability
``>= 1 - delta``. A sample whose proven bound is ``<= t`` surely has regret ``<= t``; one whose
bound exceeds ``t`` is counted as exceeding (conservative). Each threshold's bound and the mean
bound hold at ``1 - delta`` each, not jointly.

Range: a whole-space certificate's bound (``space.json``, read by :mod:`certify.report`), else
:func:`trivial_regret_range`, from the ranges of allocations and payments alone (derivation in its
docstring). Both are proven for the exact real-arithmetic function (a ``space.json`` record's
``upper_float32``, when given, covers float32 ``mechanism.apply`` too). Where ``R`` covers the
exact function only, the bound is one on ``E[regret]`` for it and on ``E[min(regret, R)]`` for
float32 ``apply`` (whose regret can pass ``R`` by rounding errors at most).

Samples (:func:`conservative_samples`): unproven pairs are counted against the bound, never
dropped: at the bound they reached, else at ``R``. The bounds assume the recorded profiles are a
set of prior samples fixed independently of the results (a finished run: its first ``P`` samples).

The key names of these numbers in ``summary.json`` (:mod:`certify.report`) and in the
``jaxauction.evaluate`` output are the constants below: one definition each.
"""
from __future__ import annotations

import math

import numpy as np

DEFAULT_DELTA = 0.05
DEFAULT_THRESHOLDS = (1e-3, 1e-2)

BERNSTEIN = "empirical-bernstein (Maurer-Pontil 2009, Thm 4)"
BERNSTEIN_HOEFFDING = "min(empirical-bernstein (Maurer-Pontil 2009, Thm 4), Hoeffding) at delta/2 each"
METHODS = (BERNSTEIN, BERNSTEIN_HOEFFDING)
EXCEED_METHOD = "Clopper-Pearson exact, one-sided"

# summary.json / evaluate keys
KEY_UCB = "expected_regret_ucb"          # (1 - delta) upper bound on E_v[regret]
KEY_DELTA = "ucb_delta"
KEY_METHOD = "ucb_method"
KEY_EXCEED = "exceed_prob_ucb"           # {f"{t:g}": (1 - delta) upper bound on P(regret > t)}
KEY_EXCEED_METHOD = "exceed_method"
KEY_RANGE = "ucb_range"                  # the proven R with 0 <= regret <= R
KEY_RANGE_SOURCE = "ucb_range_source"    # RANGE_SPACE or RANGE_TRIVIAL
KEY_SAMPLES = "ucb_samples"              # n, the number of i.i.d. profiles
KEY_UNPROVEN = "ucb_unproven"            # samples counted at a bound reached or at R (not proven)
KEY_MISSING = "ucb_missing"              # of those: pairs absent from the results (counted at R)
KEY_NOTE = "ucb_note"                    # why a bound is missing, or what the "all" row bounds
KEY_PGD_UCB = "pgd_regret_ucb"           # UCB on mean *PGD* regret: NOT a bound on expected regret
KEY_PGD_UCB_AGENTS = "pgd_regret_ucb_per_agent"
KEY_PGD_NOTE = "pgd_regret_ucb_note"
PGD_NOTE = ("upper confidence bound on the mean PGD regret; PGD regret is a lower bound on regret, "
            "so this is NOT a bound on expected regret (certify for that)")
RANGE_SPACE = "space.json"
RANGE_TRIVIAL = "trivial"

FRACTIONAL = ("fractional", "fractional_sigmoid")
FREE = "free"


def check_delta(delta: float) -> float:
    """``delta`` as a float; ValueError unless ``0 < delta < 1``."""
    try:
        d = float(delta)
    except (TypeError, ValueError):
        raise ValueError(f"delta must be a number in (0, 1), got {delta!r}") from None
    if not 0.0 < d < 1.0:
        raise ValueError(f"delta must be in (0, 1), got {delta!r}")
    return d


def _sample(x, R: float, n_min: int = 1) -> tuple[np.ndarray, float]:
    a = np.asarray(x, np.float64).ravel()
    R = float(R)
    if not (math.isfinite(R) and R >= 0):
        raise ValueError(f"range R must be finite and >= 0, got {R}")
    if a.size < n_min:
        raise ValueError(f"need at least {n_min} samples, got {a.size}")
    if not np.all(np.isfinite(a)):
        raise ValueError("samples must be finite (count a missing bound as R)")
    if a.size and (a.min() < 0 or a.max() > R):
        raise ValueError(f"samples must lie in [0, R] = [0, {R:g}], got [{a.min():g}, {a.max():g}] "
                         f"(clip proven upper bounds to [0, R] first)")
    return a, R


def bernstein_ucb(x, R: float, delta: float = DEFAULT_DELTA) -> float:
    """Maurer & Pontil (2009), Thm 4: ``mean + sqrt(2 V ln(2/delta)/n) + 7 R ln(2/delta)/(3(n-1))``
    for i.i.d. ``x`` in ``[0, R]``, ``n >= 2``, ``V`` the ddof=1 sample variance (not capped at R)."""
    delta = check_delta(delta)
    a, R = _sample(x, R, n_min=2)
    n, log = a.size, math.log(2.0 / delta)
    var = float(a.var(ddof=1))
    return float(a.mean()) + math.sqrt(2.0 * var * log / n) + 7.0 * R * log / (3.0 * (n - 1))


def hoeffding_ucb(x, R: float, delta: float = DEFAULT_DELTA) -> float:
    """Hoeffding: ``mean + R sqrt(ln(1/delta) / (2n))`` for i.i.d. ``x`` in ``[0, R]`` (not capped at R)."""
    delta = check_delta(delta)
    a, R = _sample(x, R, n_min=1)
    return float(a.mean()) + R * math.sqrt(math.log(1.0 / delta) / (2.0 * a.size))


def mean_ucb(x, R: float, delta: float = DEFAULT_DELTA, method: str = BERNSTEIN) -> float:
    """``(1 - delta)`` upper confidence bound on ``E X`` for i.i.d. ``x`` in ``[0, R]``, capped at ``R``.

    ``method``: :data:`BERNSTEIN` (Maurer-Pontil at ``delta``) or :data:`BERNSTEIN_HOEFFDING` (the
    smaller of Maurer-Pontil and Hoeffding, each at ``delta / 2``: union bound).
    """
    delta = check_delta(delta)
    if method == BERNSTEIN:
        b = bernstein_ucb(x, R, delta)
    elif method == BERNSTEIN_HOEFFDING:
        b = min(bernstein_ucb(x, R, delta / 2), hoeffding_ucb(x, R, delta / 2))
    else:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    return min(b, float(R))


def clopper_pearson_upper(k: int, n: int, delta: float = DEFAULT_DELTA) -> float:
    """One-sided exact upper bound on a binomial ``p`` from ``k`` successes in ``n`` trials:
    ``P(p <= Beta.ppf(1 - delta, k + 1, n - k)) >= 1 - delta``; 1 when ``k = n``."""
    from scipy.stats import beta

    delta = check_delta(delta)
    if int(n) != n or int(k) != k or not 0 <= k <= n or n < 1:
        raise ValueError(f"need integers 0 <= k <= n, n >= 1; got k={k}, n={n}")
    k, n = int(k), int(n)
    return 1.0 if k == n else float(beta.ppf(1.0 - delta, k + 1, n - k))


def exceedance_ucb(x, R: float, thresholds=DEFAULT_THRESHOLDS, delta: float = DEFAULT_DELTA) -> dict:
    """``{f"{t:g}": bound on P(regret > t)}`` from samples ``x`` of upper bounds in ``[0, R]``.

    ``k = #{x_k > t}`` feeds :func:`clopper_pearson_upper`. When ``R <= t`` the probability is 0
    surely (regret ``<= R``), and 0 is reported.
    """
    delta = check_delta(delta)
    a, R = _sample(x, R, n_min=1)
    out = {}
    for t in thresholds:
        t = float(t)
        if not (math.isfinite(t) and t >= 0):
            raise ValueError(f"thresholds must be finite and >= 0, got {t}")
        out[f"{t:g}"] = 0.0 if R <= t else clopper_pearson_upper(int(np.sum(a > t)), a.size, delta)
    return out


def trivial_regret_range(payment: str, payment_max: float | None, low, high) -> np.ndarray:
    """A proven ``R_i`` with ``0 <= regret_i(v) <= R_i`` for every profile ``v`` in the box, per agent.

    ``regret_i(v) = max_b u_i(b, v_-i; v_i) - u_i(v; v_i) <= sup_b u_i(b; v_i) - inf_b u_i(b; v_i)``
    over bids in the box ``[low, high]`` (``v`` itself is one), with ``u_i(b; v_i) = sum_j a_ij(b)
    v_ij - p_i(b)`` and ``a_ij`` in ``[0, 1]`` (the cap ``sum_i a_ij <= 1`` does not restrict one
    agent). Write ``lo_ij, hi_ij`` for the box and ``c-_j = min(0, lo_ij)``, ``c+_j = max(0, hi_ij)``.

    * Fractional (``p_i = f sum_j a_ij b_ij``, ``f`` in ``[0, 1]``): ``u_i = sum_j a_ij (v_ij - f b_ij)``
      and ``f b_ij`` lies in ``[c-_j, c+_j]``, so term j lies in ``[min(0, v_ij - c+_j),
      max(0, v_ij - c-_j)] = [v_ij - c+_j, v_ij - c-_j]`` (as ``c-_j <= v_ij <= c+_j``): a width of
      ``c+_j - c-_j`` whatever ``v``. Summing the per-item widths (sound though the shared ``f``
      couples them): ``R_i = sum_j (max(0, hi_ij) - min(0, lo_ij))`` (``sum_j hi_ij`` for a
      nonnegative box: ``M`` on ``U[0, 1]``).
    * Free (``p_i`` in ``[0, P]``, ``P = payment_max``): ``sup_b u_i <= sum_j max(0, v_ij)`` and
      ``inf_b u_i >= sum_j min(0, v_ij) - P``, a width of ``sum_j |v_ij| + P``; over the box
      ``R_i = sum_j max(|lo_ij|, |hi_ij|) + P``.

    This bounds the exact real-arithmetic function; float32 ``mechanism.apply`` can exceed it only
    by its rounding errors, so for the float32 meaning the capped ``min(X, R)`` bounds ``min(regret, R)``.

    Args:
      payment: ``MechanismSpec.payment``.
      payment_max: ``MechanismSpec.payment_max`` (the free payment's clip; ignored otherwise).
      low, high: the valuation (and bid) box, shape (N, M).
    """
    lo, hi = np.asarray(low, np.float64), np.asarray(high, np.float64)
    if lo.ndim != 2 or lo.shape != hi.shape or not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
        raise ValueError(f"box must be two finite (N, M) arrays, got shapes {lo.shape} and {hi.shape}")
    if np.any(hi < lo):
        raise ValueError("box: every high must be >= its low")
    if payment in FRACTIONAL:
        return (np.maximum(0.0, hi) - np.minimum(0.0, lo)).sum(axis=1)
    if payment == FREE:
        pmax = float("nan") if payment_max is None else float(payment_max)
        if not (math.isfinite(pmax) and pmax >= 0):
            raise ValueError(f"free payment needs a finite payment_max >= 0, got {payment_max!r}")
        return np.maximum(np.abs(lo), np.abs(hi)).sum(axis=1) + pmax
    raise ValueError(f"unknown payment {payment!r} (expected one of {FRACTIONAL + (FREE,)})")


def conservative_samples(records, agents, n_points: int, R, proven) -> tuple[np.ndarray, dict, dict]:
    """The samples ``X`` (n_points, len(agents)) of certification records, unproven pairs counted against.

    ``X[k, c] = clip(b, 0, R[agents[c]])`` for the record of (point k, agent ``agents[c]``) with
    ``b`` its ``regret_upper`` when ``proven(record)`` (the certified bound) or, for a record neither
    proven nor ``status == "error"``, when finite (the bound reached, e.g. at a time limit);
    ``b = R`` for an error, an infinite or absent bound, and a pair with no record.

    Returns ``(X, unproven, missing)``: per agent the number of pairs not proven (missing ones
    included) and of pairs with no record.
    """
    R = np.asarray(R, np.float64)
    col = {int(a): c for c, a in enumerate(agents)}
    X = np.tile(R[list(col)], (int(n_points), 1))
    seen = np.zeros(X.shape, bool)
    unproven = dict.fromkeys(col, 0)
    for r in records:
        k, a = int(r["point"]), int(r["agent"])
        if not 0 <= k < n_points or a not in col:
            raise ValueError(f"record (point {k}, agent {a}) is outside points 0..{n_points - 1}, agents {list(col)}")
        if seen[k, col[a]]:
            raise ValueError(f"two records for (point {k}, agent {a}): deduplicate first")
        seen[k, col[a]] = True
        up = r.get("regret_upper")
        ok = proven(r)
        unproven[a] += not ok
        if (ok or r.get("status") != "error") and isinstance(up, (int, float)) and math.isfinite(up):
            X[k, col[a]] = min(max(float(up), 0.0), R[a])
    missing = {a: int((~seen[:, c]).sum()) for a, c in col.items()}
    return X, {a: unproven[a] + missing[a] for a in col}, missing


def ucb_fields(x, R: float, delta: float = DEFAULT_DELTA, thresholds=DEFAULT_THRESHOLDS,
               method: str = BERNSTEIN) -> dict:
    """The mean and tail bounds of samples ``x`` in ``[0, R]`` under the keys above."""
    return {KEY_UCB: mean_ucb(x, R, delta, method), KEY_DELTA: check_delta(delta), KEY_METHOD: method,
            KEY_EXCEED: exceedance_ucb(x, R, thresholds, delta), KEY_EXCEED_METHOD: EXCEED_METHOD,
            KEY_RANGE: float(R), KEY_SAMPLES: int(np.size(x))}


def pgd_ucb(regret, R, delta: float = DEFAULT_DELTA, method: str = BERNSTEIN) -> dict:
    """Upper confidence bounds on the mean PGD regret, labelled as such (see :data:`PGD_NOTE`).

    ``regret``: (B, N) PGD regrets of B i.i.d. profiles; ``R``: (N,) proven ranges. Per agent the
    variable is ``clip(regret_i, 0, R_i)``; overall it is the per-profile mean over agents (the agents
    of one profile are not independent, profiles are), in ``[0, mean_i R_i]``.
    """
    r = np.asarray(regret, np.float64)
    R = np.asarray(R, np.float64).ravel()
    if r.ndim != 2 or r.shape[1] != R.size:
        raise ValueError(f"regret must be (B, N) with N = len(R) = {R.size}, got shape {r.shape}")
    x = np.clip(r, 0.0, R)
    return {KEY_PGD_UCB: mean_ucb(x.mean(axis=1), float(R.mean()), delta, method),
            KEY_PGD_UCB_AGENTS: [mean_ucb(x[:, i], float(R[i]), delta, method) for i in range(R.size)],
            KEY_DELTA: check_delta(delta), KEY_METHOD: method, KEY_PGD_NOTE: PGD_NOTE}
