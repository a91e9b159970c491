"""Certified regret of one agent at one valuation profile.

For a mechanism (params + :class:`~jaxauction.mechanism.MechanismSpec`), a profile ``v`` (N, M)
and an agent i, :func:`certify_point` solves, exactly,

    U* = max_{b_i in [low_i, high_i]}  u_i(b_i, v_-i),     u_i = sum_j a_ij v_ij - p_i

and returns a :class:`Certificate` with ``regret = U* - u_i(v)`` bracketed from both sides:

* ``regret_lower``: the JAX forward pass replayed at the best misreport found (an actual bid, so a
  proven lower bound);
* ``regret_upper``: the solvers' proven dual bound minus the truthful utility (never an
  incumbent); ``None`` if no bound was proven.

Search (every choice below changes only the speed, never the certified value; see
:mod:`certify.encoders` for the MIP and :mod:`certify.tighten` for the bounds):

1. Incumbent: projected gradient ascent (``jaxauction.misreport.regret_pgd``, 1000 steps, lr 0.02)
   plus a grid of ``samples`` bids of agent i, all evaluated in float64.
2. Input-space branch and bound over agent i's bid box (M-dimensional: the other agents are
   fixed). Each box gets CROWN bounds (batched) and an upper bound on the utility from bounds on
   the allocation-logit differences (sparsemax is monotone in them) and the lowest payment.
   Phase 1 bisects (widest side first) the box holding the incumbent until CROWN leaves at most
   ``split_unstable`` unstable ReLUs, and solves its MIP with the incumbent as MIP start.
   Phase 2 takes the other boxes best-first: a box whose bound is not above the incumbent is
   pruned; a small box gets a MIP with ``cutoff = incumbent + gap_abs`` (status "cutoff" proves
   nothing in it beats the cutoff); a big one is bisected.
3. ``U* <= max`` over boxes of their proven bounds (MIP dual bound, cutoff, or the pruning bound),
   and every MIP incumbent is replayed and kept if better.

``solver="planar"`` (free-payment, 2-item mechanisms only) replaces steps 2-3 by the exact
linear-region enumeration of :mod:`certify.planar` (no MIP): the maximum over all region
vertices, with a 1e-9 tolerance as the gap. For a single bidder the regions do not depend on the
profile and are enumerated once per network.

With ``split_unstable=None`` the whole box is one MIP, as in the paper. Why splitting: the first
layer's unstable ReLUs are hyperplanes through the bid box (exact, so no bound tightening removes
them); a sub-box is crossed by few of them, and all later bounds shrink with the box, so each MIP
has few binaries and tight big-Ms, and most sub-box MIPs end at the root against the cutoff.
"""
from __future__ import annotations

import dataclasses
import math
import time

import jax.numpy as jnp
import numpy as np

from certify import backends as bk
from certify import planar
from certify.encoders import (EncodeOptions, RegretMIP, UnsupportedArchitecture, apply_jax, check_supported,  # noqa: F401
                              encode, sparsemax_np, utility64)
from certify.tighten import crown_batch, logit_differences, select, tighten, unstable_counts, weights64
from jaxauction import auction
from jaxauction.bounds import Interval, NetworkBounds
from jaxauction.mechanism import MechanismSpec, Params, check_params

BOUND_METHODS = ("lp", "crown", "ibp")
SOLVERS = bk.SOLVERS + ("planar",)


@dataclasses.dataclass
class Certificate:
    """The result of certifying one (profile, agent).

    Attributes:
      agent: the misreporting agent i.
      valuations: (N, M) nested list, the true profile v.
      truthful_utility: u_i(v) by the JAX forward pass.
      regret_lower: JAX replay at ``best_misreport`` minus ``truthful_utility`` (>= 0 up to fp).
      regret_upper: proven: solver dual bound minus ``truthful_utility``; None if no bound.
      best_misreport: (N, M) full bid profile (agent i's row replaced), or None.
      status: "optimal" | "time_limit" | "error" | "infeasible" ...
      solver: "gurobi" | "scip" (the one that solved the last MIP; "gurobi+scip" if both were used),
        or "planar" (no MIP: :mod:`certify.planar`).
      gap: ``regret_upper - regret_lower`` (absolute), None without an upper bound.
      nodes: branch-and-bound nodes over all MIPs (planar: linear regions enumerated).
      time_bounds_s, time_build_s, time_solve_s: wall time in bounds (CROWN/LP), model building,
        and the solver (including loading the model into it).
      mip_objective: MIP objective at the incumbent of the MIP that found the best misreport
        (planar: the float64 utility at the best region vertex).
      mip_network_error: ``|mip_objective - JAX replay utility at its bids|``.
      pgd_regret: regret found by PGD alone (``jaxauction.misreport``), None if not run.
      n_binaries: binaries over all MIPs solved.
      n_unstable_relus: unstable trunk ReLUs on the whole box (what one MIP would branch on).
      message: details (errors, solver notes).
      point: index of the profile in a run (set by the caller).
      n_boxes: MIPs solved (leaf boxes of the input-space branch and bound).
    """

    agent: int
    valuations: list
    truthful_utility: float
    regret_lower: float
    regret_upper: float | None
    best_misreport: list | None
    status: str
    solver: str
    gap: float | None
    nodes: int | None
    time_bounds_s: float
    time_build_s: float
    time_solve_s: float
    mip_objective: float | None
    mip_network_error: float | None
    pgd_regret: float | None
    n_binaries: int
    n_unstable_relus: int
    message: str = ""
    point: int | None = None
    n_boxes: int = 1

    def to_json(self) -> dict:
        """A JSON-serializable dict of every field (non-finite floats become None)."""
        def clean(x):
            if isinstance(x, (list, tuple)):
                return [clean(y) for y in x]
            if isinstance(x, (np.floating, float)):
                return float(x) if math.isfinite(float(x)) else None
            if isinstance(x, (np.integer,)):
                return int(x)
            if isinstance(x, np.ndarray):
                return clean(x.tolist())
            return x
        return {k: clean(v) for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass(frozen=True)
class CertifyOptions:
    """How :func:`certify_point` searches (every choice gives the same certified value).

    Attributes:
      bounds: per-leaf bounds for the MIP: ``"crown"`` (default; already computed by the
        partition), ``"lp"`` (CROWN + Planet LP per neuron) or ``"ibp"``.
      split_unstable: boxes with more unstable ReLUs (CROWN) than this are bisected (around the
        incumbent) or first tried with a node limit; None solves one MIP on the whole box;
        "auto" (default) is :func:`auto_split_unstable` of the architecture: 16 for the fractional
        payment (its bilinear term makes every MIP a spatial branch and bound, which small boxes
        tame), 48 for the free payment (its MIPs are linear; more boxes cost more than they save).
      try_node_limit: node limit for a MIP on a box above ``split_unstable`` before bisecting it;
        None bisects such boxes right away.
      max_depth: at most this many bisections.
      max_split_items: split only when agent i bids on at most this many items (the box is
        M-dimensional; beyond a few dimensions bisection creates too many boxes).
      samples: grid/random bids of agent i evaluated (float64) for the first incumbent.
      encode: formulation options (sparsemax encoding, compact, ideal cuts).
      solver_params: ``((name, value), ...)`` native solver parameters overriding
        :data:`certify.backends.SOLVER_PARAMS` (e.g. ``(("Presolve", 0),)`` for Gurobi).
    """

    bounds: str = "crown"
    split_unstable: int | None | str = "auto"
    try_node_limit: int | None = None
    max_depth: int = 12
    max_split_items: int = 4
    samples: int = 256
    encode: EncodeOptions = EncodeOptions()
    solver_params: tuple = ()

    def __post_init__(self):
        if self.bounds not in BOUND_METHODS:
            raise ValueError(f"bounds must be one of {BOUND_METHODS}, got {self.bounds!r}")
        if self.split_unstable != "auto" and self.split_unstable is not None and (
                isinstance(self.split_unstable, str) or self.split_unstable < 0):
            raise ValueError(f"split_unstable must be >= 0, None or 'auto', got {self.split_unstable!r}")


SPLIT_UNSTABLE = {"fractional": 16, "fractional_sigmoid": 16, "free": 48}


def auto_split_unstable(spec: MechanismSpec) -> int:
    """The default split threshold for ``spec`` (``bench/split_threshold.py`` measured it: 13
    networks, thresholds 16 / 32 / 48 / one MIP; BENCHMARKS.md). Fractional-payment nets were
    fastest at 16 (one MIP: 3-30x slower), free-payment nets at 32-48 (16: 1.3-6x slower; one MIP
    on a net with 100-300 unstable ReLUs: time-outs)."""
    return SPLIT_UNSTABLE[spec.payment]


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def validate(params, spec: MechanismSpec, valuations, agent, low=None, high=None):
    """Check the inputs; returns float64 ``(v, low, high)`` of shape (N, M). Raises ``ValueError``."""
    if not isinstance(spec, MechanismSpec):
        raise ValueError(f"spec must be a MechanismSpec, got {type(spec).__name__}")
    check_supported(spec)
    check_params(params, spec)
    n, m = spec.n_agents, spec.n_items
    v = np.asarray(valuations, np.float64)
    if v.shape != (n, m):
        raise ValueError(f"valuations have shape {v.shape}, expected (n_agents, n_items) = ({n}, {m})")
    if not np.all(np.isfinite(v)):
        raise ValueError("valuations contain NaN or inf")
    low = np.zeros((n, m)) if low is None else np.broadcast_to(np.asarray(low, np.float64), (n, m)).copy()
    high = np.ones((n, m)) if high is None else np.broadcast_to(np.asarray(high, np.float64), (n, m)).copy()
    if not (np.all(np.isfinite(low)) and np.all(np.isfinite(high))) or np.any(low > high):
        raise ValueError("bid support needs finite low <= high")
    out = (v < low - 1e-12) | (v > high + 1e-12)
    if np.any(out):
        i, j = map(int, np.argwhere(out)[0])
        raise ValueError(f"valuation v[{i},{j}] = {v[i, j]} lies outside the bid support "
                         f"[{low[i, j]}, {high[i, j]}]")
    if isinstance(agent, bool) or not isinstance(agent, (int, np.integer)) or not 0 <= int(agent) < n:
        raise ValueError(f"agent must be an integer in [0, {n}), got {agent!r}")
    return v, low, high


# ------------------------------------------------------------------------------------------------
# pieces
# ------------------------------------------------------------------------------------------------
def build_model(params: Params, spec: MechanismSpec, valuations, agent: int, *, low=None, high=None,
                bounds: str | NetworkBounds = "lp", options: EncodeOptions = EncodeOptions()) -> RegretMIP:
    """Build (record) the regret MIP of ``agent`` on its whole bid box.

    Returns a :class:`certify.encoders.RegretMIP`; move it to a solver and solve it::

        mip = build_model(params, spec, v, 0).to("scip")
        res = mip.solve(time_limit=60)
        mip.misreport(res), mip.get_error(res)   # bids, |MIP objective - forward pass|
    """
    v, low, high = validate(params, spec, valuations, agent, low, high)
    box = _agent_box(v, agent, low[agent], high[agent])
    nb = bounds if isinstance(bounds, NetworkBounds) else tighten(params, spec, box, method=bounds)
    return encode(bk.Model(), weights64(params), spec, v, agent, low, high, nb, options, params=params)


def _agent_box(v, agent, lo_i, hi_i) -> Interval:
    lo, hi = v.copy(), v.copy()
    lo[agent], hi[agent] = lo_i, hi_i
    return Interval(lo, hi)


def _utility_upper(nb: NetworkBounds, diff: Interval, spec: MechanismSpec, v, agent, b_lo, b_hi) -> np.ndarray:
    """Upper bound of agent's utility over boxes (batched: arrays have a leading B axis).

    ``a_ij`` depends on the logits only through the differences ``d_rj = s_ij - s_rj`` and is
    nondecreasing in each, so ``a^U = sparsemax(-d^U)_i`` and ``a^L = sparsemax(-d^L)_i`` (with
    ``d_ij = 0``); ``diff`` holds CROWN bounds on ``d`` (B, (N+1)*M). The payment is at least
    ``clip(q^L, 0, P)`` (free) or ``f^L * y^L`` with ``y = sum_j a_ij b_ij`` (fractional).
    """
    n1, m = spec.n_agents + 1, spec.n_items
    sl, su = nb.alloc_logits.lower, nb.alloc_logits.upper  # (B, N+1, M)
    d_l = np.maximum(diff.lower.reshape(-1, n1, m), sl[:, agent:agent + 1] - su)
    d_u = np.minimum(diff.upper.reshape(-1, n1, m), su[:, agent:agent + 1] - sl)
    d_l[:, agent], d_u[:, agent] = 0.0, 0.0
    a_u = sparsemax_np(-d_u)[0][:, agent]
    a_l = sparsemax_np(-d_l)[0][:, agent]
    ql = nb.pay_logits.lower[:, agent]
    if spec.payment == "free":
        p_l = np.clip(ql, 0.0, spec.payment_max)
    else:
        f_l = np.clip(ql / 10 + 0.5, 0.0, 1.0)
        corners = np.stack([a_l * b_lo, a_l * b_hi, a_u * b_lo, a_u * b_hi])
        y_l = np.sum(corners.min(0), axis=-1)
        p_l = np.minimum(f_l * y_l, np.clip(nb.pay_logits.upper[:, agent] / 10 + 0.5, 0.0, 1.0) * y_l)
    return np.sum(a_u * v[agent], axis=-1) - p_l


def _pgd(params, spec, v, agent, low, high, steps, lr):
    """PGD misreport of ``agent`` (jaxauction.misreport, or a local fallback) and its regret."""
    vals = jnp.asarray(v[None], jnp.float32)
    try:
        from jaxauction.misreport import regret_pgd
    except ImportError:  # pragma: no cover - the module exists in this repo
        regret_pgd = None
    if regret_pgd is not None:
        mis, rg = regret_pgd(params, spec, vals, jnp.asarray(low, jnp.float32), jnp.asarray(high, jnp.float32),
                             steps=int(steps), lr=float(lr))
        return np.asarray(mis[0, agent], np.float64), float(rg[0, agent])
    import jax  # pragma: no cover

    def util(b):
        return auction.deviation_utilities(params, spec, vals, vals.at[0, agent].set(b))[0, agent]

    g = jax.jit(jax.grad(util))
    b = vals[0, agent]
    for _ in range(int(steps)):
        b = jnp.clip(b + lr * g(b), low[agent], high[agent])
    u_t = auction.truthful(params, spec, vals)[2][0, agent]
    return np.asarray(b, np.float64), max(0.0, float(util(b) - u_t))


def _grid(lo_i, hi_i, count, seed=0):
    """About ``count`` bids in the box: a full grid for M <= 3, random points otherwise."""
    m = len(lo_i)
    if count <= 0:
        return np.zeros((0, m))
    if m <= 3:
        k = max(2, int(round(count ** (1.0 / m))))
        axes = [np.linspace(lo_i[j], hi_i[j], k) for j in range(m)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, m)
    rng = np.random.default_rng(seed)
    return lo_i + rng.random((count, m)) * (hi_i - lo_i)


# ------------------------------------------------------------------------------------------------
# certify_point
# ------------------------------------------------------------------------------------------------
def certify_point(params: Params, spec: MechanismSpec, valuations, agent: int, *, low=None, high=None,
                  solver: str = "auto", time_limit: float | None = None, threads: int = 1, pgd_steps: int = 1000,
                  pgd_lr: float = 0.02, mip_start: bool = True, lp_file: str | None = None,
                  options: CertifyOptions | None = None) -> Certificate:
    """Certify agent ``agent``'s regret at profile ``valuations`` (see module docstring).

    Args:
      params, spec: the mechanism (sparsemax allocation; fractional or free payment).
      valuations: (N, M) true profile v, inside ``[low, high]``.
      agent: the misreporting agent.
      low, high: (N, M) bid support (default zeros / ones).
      solver: "auto" (Gurobi if its license takes the model, else SCIP), "gurobi", "scip", or
        "planar" (exact region enumeration, :mod:`certify.planar`; free payment and 2 items).
      time_limit: wall-clock seconds for the whole point (None: no limit).
      threads: solver threads (default 1).
      pgd_steps, pgd_lr: gradient ascent for the first incumbent (0 steps: skip).
      mip_start: give the incumbent to the MIP of the leaf box that holds it.
      lp_file: write the first MIP built (the one holding the incumbent) to this path (MIP
        solvers only).
      options: search options (:class:`CertifyOptions`; the MIP's, unused by "planar").

    Raises:
      ValueError: bad shapes, valuations outside the support, agent out of range, NaN weights, or
        an unsupported architecture (:class:`~certify.encoders.UnsupportedArchitecture`,
        :class:`~certify.planar.PlanarError`).
      certify.backends.LicenseLimitError: ``solver="gurobi"`` and the license refuses a model.
    """
    opts = options or CertifyOptions()
    v, low, high = validate(params, spec, valuations, agent, low, high)
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {SOLVERS}, got {solver!r}")
    if solver == "planar":
        planar.check(spec)
        if lp_file:
            raise ValueError("solver='planar' builds no MIP, so there is no model to write to lp_file; "
                             "use a MIP solver (auto, gurobi or scip) for an .lp dump")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be positive or None, got {time_limit}")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    t_start = time.perf_counter()
    deadline = None if time_limit is None else t_start + float(time_limit)
    n, m = spec.n_agents, spec.n_items
    w = weights64(params)
    a_t, p_t = _apply_jax(params, spec, v)  # JAX (float32) allocation and payment; utility summed in float64
    truthful_u = float(np.sum(a_t[agent] * v[agent]) - p_t[agent])

    def replay(bids_i):
        prof = v.copy()
        prof[agent] = bids_i
        a, p = _apply_jax(params, spec, prof)
        return float(np.sum(a[agent] * v[agent]) - p[agent]), prof

    # 1. incumbent -----------------------------------------------------------------------------
    pgd_regret = None
    cands = [v[agent].copy()]
    if pgd_steps and pgd_steps > 0:
        pgd_b, pgd_regret = _pgd(params, spec, v, agent, low, high, pgd_steps, pgd_lr)
        cands.append(np.clip(pgd_b, low[agent], high[agent]))
    cands = np.concatenate([np.asarray(cands), _grid(low[agent], high[agent], opts.samples)])
    prof = np.repeat(v[None], len(cands), 0)
    prof[:, agent] = cands
    utils = utility64(w, spec, prof, v, agent)
    k = int(np.argmax(utils))
    inc_u, inc_b = float(utils[k]), cands[k].copy()

    if solver == "planar":
        return _certify_planar(params, spec, w, v, agent, low, high, truthful_u, replay, inc_u, inc_b, pgd_regret,
                               deadline)

    # 2. input-space branch and bound ----------------------------------------------------------
    search = _Search(params, spec, w, v, agent, low, high, opts, solver, threads, mip_start, lp_file, deadline)
    search.run(inc_u, inc_b)
    if search.error is not None:
        return _error_certificate(agent, v, truthful_u, search.inc_b, replay, search.error[0], search.error[1],
                                  pgd_regret, search.n_unstable_root, search.times, search.nodes, search.n_bin)
    upper_u = max(max(search.bounds), search.inc_u)
    reg_lo_u, best_prof = replay(search.inc_b)
    mip_obj = mip_err = None
    if search.best_from_mip is not None:
        u_jax, _ = replay(search.best_from_mip[2])
        mip_obj = float(search.best_from_mip[1])
        mip_err = abs(mip_obj - u_jax)
    regret_lower = reg_lo_u - truthful_u
    regret_upper = upper_u - truthful_u
    t_b, t_build, t_solve = search.times
    return Certificate(
        agent=int(agent), valuations=v.tolist(), truthful_utility=truthful_u, regret_lower=regret_lower,
        regret_upper=regret_upper, best_misreport=best_prof.tolist(), status=search.status,
        solver="+".join(sorted(search.solvers)) or {"auto": "none"}.get(solver, solver),
        gap=regret_upper - regret_lower, nodes=search.nodes, time_bounds_s=t_b, time_build_s=t_build,
        time_solve_s=t_solve, mip_objective=mip_obj, mip_network_error=mip_err, pgd_regret=pgd_regret,
        n_binaries=search.n_bin, n_unstable_relus=search.n_unstable_root,
        message="; ".join(dict.fromkeys(search.messages)), n_boxes=search.n_mips)


def _certify_planar(params, spec, w, v, agent, low, high, truthful_u, replay, inc_u, inc_b, pgd_regret, deadline):
    """Steps 2-3 by :func:`certify.planar.maximize_utility` (exact; no MIP). Past the deadline:
    status "time_limit", no upper bound (an unfinished enumeration proves nothing)."""
    t0 = time.perf_counter()
    box = _agent_box(v, agent, low[agent], high[agent])
    nb = crown_batch(params, spec, box.lower[None], box.upper[None])
    n_unst = sum(unstable_counts(nb))
    t1 = time.perf_counter()
    t_b = t1 - t0
    try:
        res = planar.maximize_utility(w, spec, v, agent, low[agent], high[agent], deadline)
    except planar.PlanarTimeout as e:
        u_jax, best_prof = replay(inc_b)
        return Certificate(
            agent=int(agent), valuations=v.tolist(), truthful_utility=truthful_u, regret_lower=u_jax - truthful_u,
            regret_upper=None, best_misreport=best_prof.tolist(), status="time_limit", solver="planar", gap=None,
            nodes=None, time_bounds_s=t_b, time_build_s=0.0, time_solve_s=time.perf_counter() - t1,
            mip_objective=None, mip_network_error=None, pgd_regret=pgd_regret, n_binaries=0,
            n_unstable_relus=n_unst, message=str(e), n_boxes=0)
    msgs = [f"{res.n_regions} linear regions, {res.n_vertices} vertices" + (" (regions reused)" if res.cached else "")]
    status = "optimal"
    if inc_u > res.upper:  # a sampled bid beats the enumerated maximum: never report that bound
        status = "error"
        msgs.append(f"planar enumeration inconsistent: a sampled bid has utility {inc_u:.9g} above the "
                    f"enumerated maximum {res.best_utility:.9g}")
    best_b = res.best_bids if res.best_utility >= inc_u else inc_b
    u_jax, best_prof = replay(best_b)
    upper = res.upper - truthful_u if status == "optimal" else None
    lower = u_jax - truthful_u
    return Certificate(
        agent=int(agent), valuations=v.tolist(), truthful_utility=truthful_u, regret_lower=lower,
        regret_upper=upper, best_misreport=best_prof.tolist(), status=status, solver="planar",
        gap=None if upper is None else upper - lower, nodes=res.n_regions, time_bounds_s=t_b, time_build_s=0.0,
        time_solve_s=res.time_s, mip_objective=res.best_utility, mip_network_error=abs(res.best_utility - u_jax),
        pgd_regret=pgd_regret, n_binaries=0, n_unstable_relus=n_unst, message="; ".join(msgs), n_boxes=0)


def _error_certificate(agent, v, truthful_u, inc_b, replay, solver, msg, pgd_regret, n_unst, times, nodes, n_bin):
    u, prof = replay(inc_b)
    return Certificate(agent=int(agent), valuations=v.tolist(), truthful_utility=truthful_u,
                       regret_lower=u - truthful_u, regret_upper=None, best_misreport=prof.tolist(), status="error",
                       solver=solver, gap=None, nodes=nodes, time_bounds_s=times[0], time_build_s=times[1],
                       time_solve_s=times[2], mip_objective=None, mip_network_error=None, pgd_regret=pgd_regret,
                       n_binaries=n_bin, n_unstable_relus=n_unst, message=msg)


_apply_jax = apply_jax


@dataclasses.dataclass
class _Box:
    lo: np.ndarray          # agent's bids, lower corner
    hi: np.ndarray
    ub: float               # proven upper bound on the utility over the box
    nb: NetworkBounds       # CROWN bounds on the box
    unstable: int
    depth: int

    def holds(self, b) -> bool:
        return bool(np.all(self.lo - 1e-12 <= b) and np.all(b <= self.hi + 1e-12))


class _Search:
    """Input-space branch and bound over agent i's bid box (see the module docstring).

    Phase 1 bisects the root down to a box with at most ``split_unstable`` unstable ReLUs around
    the incumbent and solves its MIP (with the incumbent as MIP start): this usually makes the
    incumbent optimal. Phase 2 takes the other boxes best-first (largest bound first): a box whose
    bound is not above the incumbent is pruned; a small box gets a MIP with the incumbent as cutoff;
    a big one is bisected (or, with ``try_node_limit``, first gets a MIP limited to that many nodes
    and is bisected only if that fails; its children inherit the MIP's dual bound).
    """

    def __init__(self, params, spec, w, v, agent, low, high, opts: CertifyOptions, solver, threads, mip_start,
                 lp_file, deadline):
        self.params, self.spec, self.w, self.v, self.agent = params, spec, w, v, agent
        self.low, self.high, self.opts, self.solver, self.threads = low, high, opts, solver, threads
        self.mip_start, self.lp_file, self.deadline = mip_start, lp_file, deadline
        self.diff_w = logit_differences(params, spec, agent)
        self.bounds, self.messages, self.solvers = [], [], set()
        self.status, self.error = "optimal", None
        self.nodes = self.n_bin = self.n_mips = 0
        self.t = [0.0, 0.0, 0.0]
        self.best_from_mip = None
        self.n_unstable_root = 0

    @property
    def times(self):
        return tuple(self.t)

    def boxes(self, corners, depth) -> list[_Box]:
        """CROWN bounds, utility bounds and unstable counts for several boxes (one batched call)."""
        t0 = time.perf_counter()
        lo = np.repeat(self.v[None], len(corners), 0)
        hi = lo.copy()
        lo[:, self.agent] = [c[0] for c in corners]
        hi[:, self.agent] = [c[1] for c in corners]
        nb, diff = crown_batch(self.params, self.spec, lo, hi, extra=self.diff_w)
        ub = _utility_upper(nb, diff, self.spec, self.v, self.agent, lo[:, self.agent], hi[:, self.agent])
        unst = sum(np.sum((z.lower < 0) & (z.upper > 0), axis=-1) for z in nb.pre)
        self.t[0] += time.perf_counter() - t0
        return [_Box(c[0], c[1], float(ub[k]), select(nb, k), int(unst[k]), depth) for k, c in enumerate(corners)]

    def split(self, box: _Box) -> list[_Box]:
        j = int(np.argmax(box.hi - box.lo))
        mid = 0.5 * (box.lo[j] + box.hi[j])
        left_hi, right_lo = box.hi.copy(), box.lo.copy()
        left_hi[j], right_lo[j] = mid, mid
        kids = self.boxes([(box.lo, left_hi), (right_lo, box.hi)], box.depth + 1)
        for k in kids:
            k.ub = min(k.ub, box.ub)
        return kids

    def can_split(self, box: _Box) -> bool:
        return box.depth < self.opts.max_depth and float(np.max(box.hi - box.lo)) > 0

    def run(self, inc_u, inc_b):
        import heapq

        self.inc_u, self.inc_b = inc_u, inc_b
        opts, thr = self.opts, self.opts.split_unstable
        if thr == "auto":
            thr = auto_split_unstable(self.spec)
        if self.spec.n_items > opts.max_split_items:
            thr = None  # bisecting a high-dimensional bid box multiplies MIPs; solve one MIP instead
        root = self.boxes([(self.low[self.agent].copy(), self.high[self.agent].copy())], 0)[0]
        self.n_unstable_root = root.unstable
        heap, count = [], 0

        def push(b):
            nonlocal count
            heapq.heappush(heap, (-b.ub, count, b))
            count += 1

        # phase 1: descend to the incumbent's box
        box = root
        while thr is not None and box.unstable > thr and self.can_split(box):
            kids = self.split(box)
            box = kids[0] if kids[0].holds(self.inc_b) else kids[1]
            push(kids[1] if box is kids[0] else kids[0])
        self.solve_box(box, first=True)
        # phase 2: best first
        while heap and self.error is None:
            _, _, box = heapq.heappop(heap)
            if box.ub <= self.inc_u:
                self.bounds.append(box.ub)
                continue
            if self.deadline is not None and time.perf_counter() >= self.deadline:
                self.status = "time_limit"
                self.bounds.append(box.ub)
                continue
            small = thr is None or box.unstable <= thr or not self.can_split(box)
            limit = None if small else opts.try_node_limit
            if not small and limit is None:
                for k in self.split(box):
                    push(k)
                continue
            res = self.solve_box(box, node_limit=limit)
            if res is not None and res.status == "node_limit":
                parent_ub = min(box.ub, res.bound) if res.bound is not None else box.ub
                for k in self.split(box):
                    k.ub = min(k.ub, parent_ub)
                    push(k)

    def solve_box(self, box: _Box, first=False, node_limit=None):
        opts, agent, v = self.opts, self.agent, self.v
        remaining = None if self.deadline is None else self.deadline - time.perf_counter()
        if remaining is not None and remaining <= 0:
            self.status = "time_limit"
            self.bounds.append(box.ub)
            return None
        t0 = time.perf_counter()
        nb = box.nb if opts.bounds == "crown" else tighten(self.params, self.spec, _agent_box(v, agent, box.lo, box.hi),
                                                          method=opts.bounds, prior=box.nb)
        t1 = time.perf_counter()
        lo_b, hi_b = self.low.copy(), self.high.copy()
        lo_b[agent], hi_b[agent] = box.lo, box.hi
        mip = encode(bk.Model(), self.w, self.spec, v, agent, lo_b, hi_b, nb, opts.encode, params=self.params)
        name = bk.choose_solver(self.solver, mip.backend.size())
        mip.to(name)
        self.solvers.add(name)
        has_inc = box.holds(self.inc_b)
        if has_inc and self.mip_start:
            mip.set_start(self.inc_b)
        if self.lp_file and self.n_mips == 0:
            mip.backend.write(self.lp_file)
        t2 = time.perf_counter()
        # Cutoff slightly above the incumbent: proving "nothing beats U* + gap_abs" terminates even
        # for a nonconvex box whose maximum equals U* (spatial branching only converges to it).
        cutoff = None if (first or has_inc) else self.inc_u + bk.TOLERANCES["gap_abs"]
        res = mip.solve(time_limit=remaining, threads=self.threads, cutoff=cutoff, node_limit=node_limit,
                        params=dict(opts.solver_params))
        t3 = time.perf_counter()
        self.t[0] += t1 - t0
        self.t[1] += t2 - t1
        self.t[2] += t3 - t2
        self.n_mips += 1
        self.nodes += res.nodes or 0
        self.n_bin += mip.n_binaries
        if res.message:
            self.messages.append(res.message)
        if res.status == "error":
            self.error = (name, res.message)
            return res
        if res.values is not None and res.objective is not None:
            b_i = mip.misreport(res)[agent]
            u64 = utility64(self.w, self.spec, mip.profile(b_i), v, agent)
            if self.best_from_mip is None or u64 > self.best_from_mip[0]:
                self.best_from_mip = (u64, res.objective, b_i)
            if u64 > self.inc_u:
                self.inc_u, self.inc_b = u64, b_i.copy()
        if res.status in ("optimal", "cutoff"):
            self.bounds.append(res.bound if res.bound is not None else box.ub)
        elif res.status == "node_limit":
            pass  # the caller splits the box
        elif res.status == "time_limit":
            self.status = "time_limit"
            self.bounds.append(min(box.ub, res.bound) if res.bound is not None else box.ub)
        else:  # infeasible, numeric, ...: the box is nonempty, so something is off
            self.status = res.status
            self.messages.append(f"box {box.lo.tolist()}..{box.hi.tolist()}: solver status {res.status}")
            self.bounds.append(box.ub)
        return res
