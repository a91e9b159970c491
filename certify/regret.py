"""Certified regret of one agent at one valuation profile.

For a mechanism (params + :class:`~jaxauction.mechanism.MechanismSpec`), a profile ``v`` (N, M)
and an agent i, :func:`certify_point` solves, exactly,

    U* = max_{b_i in [low_i, high_i]}  u_i(b_i, v_-i),     u_i = sum_j a_ij v_ij - p_i

and returns a :class:`~certify.certificate.Certificate` with ``regret = U* - u_i(v)`` bracketed
from both sides, for the exact real-arithmetic function of the weights and for the float32
function ``mechanism.apply`` computes (the semantics: :mod:`certify.certificate`):

* ``regret_lower``: the float64 twin (:mod:`certify.network`) at the best misreport found, minus
  the truthful utility and the twin's rounding bound (an actual bid, so a proven lower bound);
* ``regret_upper``: the method's proven bound (never an incumbent) minus the truthful utility,
  plus the rounding margins of :mod:`certify.rounding`; ``None`` if no bound was proven.

Search (every choice below changes only the speed, never the certified value; see
:mod:`certify.mip` for the MIP and :mod:`certify.tighten` for the bounds):

1. Incumbent: projected gradient ascent (``jaxauction.misreport.regret_pgd``, 1000 steps, lr 0.02)
   plus a grid of ``samples`` bids of agent i, all evaluated in float64.
2. Input-space branch and bound over agent i's bid box with an exact MIP at the leaves
   (:class:`certify.mip.search.Search`).
3. ``U* <= max`` over boxes of their proven bounds (MIP dual bound, cutoff, or the pruning bound),
   and every MIP incumbent is replayed and kept if better. A bound below a bid the search
   evaluated is reported as an error, never as a certificate.
4. The rounding margins over the whole bid box (:func:`certify.rounding.utility_margin`, from the
   box's CROWN bounds) and :func:`certify.certificate.settle` turn the bounds into a certificate
   that keeps its invariants: "optimal" only if the bounds met within ``gap_tol``.

``solver="bab"`` replaces steps 2-3 by the batched branch and bound of :mod:`certify.bab` (linear
relaxations for every RegretNet-family net, no MIP): its bounds on ``U*`` within
``options.bab_gap``, or the bounds reached at the time limit.

``solver="planar"`` (free-payment, 2-item mechanisms only) replaces steps 2-3 by the exact
linear-region enumeration of :mod:`certify.planar` (no MIP): the maximum over all region
vertices, with its tolerance as the gap; an enumeration that cannot resolve the net's kinks in
float64 is an error, not a bound. For a single bidder the regions do not depend on the
profile and are enumerated once per network.

With ``split_unstable=None`` the whole box is one MIP, as in the paper. Why splitting: the first
layer's unstable ReLUs are hyperplanes through the bid box (exact, so no bound tightening removes
them); a sub-box is crossed by few of them, and all later bounds shrink with the box, so each MIP
has few binaries and tight big-Ms, and most sub-box MIPs end at the root against the cutoff.
"""
from __future__ import annotations

import collections
import dataclasses
import time

import jax
import jax.numpy as jnp
import numpy as np

from certify import methods, network, planar, rounding
from certify.certificate import SOLVERS, Certificate, CertifyOptions, settle
from certify.mip import model as mm
from certify.mip.encoders import EncodeOptions, RegretMIP, check_supported, encode
from certify.mip.search import Search, agent_box
from certify import bab, linbound
from certify.network import utility64, weights64
from certify.tighten import crown_batch, select, tighten, unstable_counts
from jaxauction.bounds import NetworkBounds
from jaxauction.mechanism import MechanismSpec, Params, check_params

# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def validate(params, spec: MechanismSpec, valuations, agent, low=None, high=None):
    """Check the inputs; returns float64 ``(v, low, high)`` of shape (N, M). Raises ``ValueError``."""
    if not isinstance(spec, MechanismSpec):
        raise ValueError(f"spec must be a MechanismSpec, got {type(spec).__name__}")
    check_params(params, spec)
    for leaf in jax.tree_util.tree_leaves(params):
        a = np.asarray(leaf)
        if a.dtype != np.float32 and not np.array_equal(a.astype(np.float32).astype(a.dtype), a):
            raise ValueError(f"parameters must be float32 numbers (the stored weights; mechanism.apply rounds "
                             f"others to float32, so a certificate would be about other weights); got {a.dtype} "
                             f"values that float32 does not represent exactly")
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
    check_supported(spec)
    v, low, high = validate(params, spec, valuations, agent, low, high)
    box = agent_box(v, agent, low[agent], high[agent])
    nb = bounds if isinstance(bounds, NetworkBounds) else tighten(params, spec, box, method=bounds)
    return encode(mm.Model(), weights64(params), spec, v, agent, low, high, nb, options, params=params)


def _pgd(params, spec, v, agent, low, high, steps, lr):
    """PGD misreport of ``agent`` (:func:`jaxauction.misreport.regret_pgd`, float32) and its regret."""
    mis, rg = pgd_batch(params, spec, v[None], low, high, steps, lr)
    return mis[0, agent], float(rg[0, agent])


def pgd_batch(params, spec, vals, low, high, steps, lr):
    """:func:`jaxauction.misreport.regret_pgd` on profiles (P, N, M): misreports and regrets, float64."""
    from jaxauction.misreport import regret_pgd

    mis, rg = regret_pgd(params, spec, jnp.asarray(vals, jnp.float32), jnp.asarray(low, jnp.float32),
                         jnp.asarray(high, jnp.float32), steps=int(steps), lr=float(lr))
    return np.asarray(mis, np.float64), np.asarray(rg, np.float64)


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
      params, spec: the mechanism (any RegretNet-family net for "bab"; the MIP and "planar" need
        a piecewise-linear one: :mod:`certify.methods`).
      valuations: (N, M) true profile v, inside ``[low, high]``.
      agent: the misreporting agent.
      low, high: (N, M) bid support (default zeros / ones).
      solver: "auto" (:func:`certify.methods.pick`: bab or the MIP; the certificate's ``solver``
        says which ran), "bab" (:mod:`certify.bab`), "gurobi", "scip", or "planar" (exact region
        enumeration, :mod:`certify.planar`; free payment and 2 items).
      time_limit: wall-clock seconds for the whole point (None: no limit).
      threads: solver threads (default 1).
      pgd_steps, pgd_lr: gradient ascent for the first incumbent (0 steps: skip).
      mip_start: give the incumbent to the MIP of the leaf box that holds it.
      lp_file: write the first MIP built (the one holding the incumbent) to this path (MIP
        solvers only).
      options: search options (:class:`CertifyOptions`: the MIP's and bab's; unused by "planar").

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
    method = methods.pick(spec, solver)       # raises naming the piece the method cannot certify
    if method in ("planar", "bab", *methods.FIRST_THEN_MIP) and lp_file:
        raise ValueError(f"solver={method!r} builds no MIP, so there is no model to write to lp_file; "
                         f"use a MIP solver (gurobi or scip) for an .lp dump")
    if time_limit is not None and not time_limit > 0:
        raise ValueError(f"time_limit must be positive or None, got {time_limit}")
    if int(threads) < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    t_start = time.perf_counter()
    deadline = None if time_limit is None else t_start + float(time_limit)
    pgd = _pgd(params, spec, v, agent, low, high, pgd_steps, pgd_lr) if pgd_steps and pgd_steps > 0 else None
    ctx, inc_u, inc_b = prepare(params, spec, v, agent, low, high, opts, pgd)
    w, n_unstable = ctx.w, ctx.n_unstable
    if solver == "auto":   # the measured rule depends on the box's unstable ReLUs (certify.methods)
        method = methods.pick(spec, solver, n_unstable=n_unstable)
    if method == "planar":
        return _certify_planar(ctx, low, high, inc_u, inc_b, deadline)
    if method == "bab":
        return _certify_bab(ctx, low, high, inc_u, inc_b, opts, deadline)
    if method in methods.FIRST_THEN_MIP:   # auto: a fast method first, the MIP if it did not prove the bound
        if methods.FIRST_THEN_MIP[method] == "bab":
            first = _certify_bab(ctx, low, high, inc_u, inc_b, opts, deadline, max_boxes=methods.BAB_FIRST_BOXES)
        else:
            first = _certify_planar(ctx, low, high, inc_u, inc_b, deadline)
        if first.status == "optimal" or (deadline is not None and time.perf_counter() > deadline):
            return first
        b = np.asarray(first.best_misreport)[agent]
        u_b = float(utility64(w, spec, ctx.profile(b), v, agent))
        if u_b > inc_u:
            inc_u, inc_b = u_b, b
        cert = _certify_mip(ctx, low, high, inc_u, inc_b, opts, methods.MIP_AUTO, threads, mip_start, lp_file, deadline)
        cert.message = "; ".join(m for m in (f"{first.solver} first ({first.status}): {first.message}", cert.message) if m)
        return cert
    return _certify_mip(ctx, low, high, inc_u, inc_b, opts, method, threads, mip_start, lp_file, deadline)


def prepare(params, spec, v, agent, low, high, opts: CertifyOptions, pgd=None):
    """Steps 1 and 4's margins for a validated pair: ``(ctx, inc_u, inc_b)``, the best of the
    truthful bid, the gradient-ascent misreport ``pgd = (bid, regret)`` (if any) and a grid of
    ``opts.samples`` bids, evaluated by the float64 twin."""
    w = weights64(params)
    truthful_u = float(utility64(w, spec, v, v, agent))
    cands = [v[agent].copy()]
    if pgd is not None:
        cands.append(np.clip(pgd[0], low[agent], high[agent]))
    cands = np.concatenate([np.asarray(cands), _grid(low[agent], high[agent], opts.samples)])
    prof = np.repeat(v[None], len(cands), 0)
    prof[:, agent] = cands
    utils = utility64(w, spec, prof, v, agent)
    k = int(np.argmax(utils))
    # rounding margins over agent i's whole bid box (certify.rounding), from its CROWN bounds
    t0 = time.perf_counter()
    box = agent_box(v, agent, low[agent], high[agent])
    errors, n_unstable = _box_errors(params, spec, w, box, agent)
    margins = {p: rounding.combine(*errors[p], v, agent) for p in errors}
    ctx = _Context(params, spec, w, v, agent, truthful_u, None if pgd is None else pgd[1], margins,
                   time.perf_counter() - t0, n_unstable)
    return ctx, float(utils[k]), cands[k].copy()


_BOX_ERRORS: "collections.OrderedDict[bytes, tuple]" = collections.OrderedDict()
_CELL_ERRORS: "collections.OrderedDict[bytes, tuple]" = collections.OrderedDict()  # _Context.margin32


def _box_errors(params, spec, w, box, agent: int):
    """:func:`certify.rounding.outcome_errors` in both precisions and the unstable-ReLU count of a
    box, memoized on (weights, spec, box): a single bidder's box is the same for every profile."""
    key = network.cache_key(w, spec, box.lower, box.upper)
    if key not in _BOX_ERRORS:
        if spec.activation == "relu":
            nb = select(crown_batch(params, spec, box.lower[None], box.upper[None]), 0)
        else:  # CROWN here is ReLU-only; the forward relaxations of certify.linbound take any activation
            nb = linbound.network_bounds(w, spec, box.lower, agent, box.lower[agent], box.upper[agent])
        errs = {p: rounding.outcome_errors(w, spec, nb, box.lower, box.upper, p) for p in ("float32", "float64")}
        _BOX_ERRORS[key] = (errs, int(sum(unstable_counts(nb))))
        while len(_BOX_ERRORS) > 8:
            _BOX_ERRORS.popitem(last=False)
    _BOX_ERRORS.move_to_end(key)
    return _BOX_ERRORS[key]


@dataclasses.dataclass
class _Context:
    """What every method's certificate needs about the problem."""

    params: Params
    spec: MechanismSpec
    w: network.Weights
    v: np.ndarray
    agent: int
    truthful_u: float
    pgd_regret: float | None
    margins: dict
    time_margin_s: float
    n_unstable: int

    def profile(self, bids_i) -> np.ndarray:
        prof = self.v.copy()
        prof[self.agent] = bids_i
        return prof

    def margin32(self, lo_i, hi_i) -> float:
        """Bound on ``|u_32 - u_R|`` where agent i bids in ``[lo_i, hi_i]`` (a sub-box of its bid box;
        bounds from :func:`certify.linbound.network_bounds`, any activation). The outcome errors
        are memoized on the box: for a single bidder the cells of bab's margin refinement are the
        same for every profile."""
        lo, hi = self.profile(lo_i), self.profile(hi_i)
        key = network.cache_key(self.w, self.spec, lo, hi, tag="cell")
        errs = _CELL_ERRORS.get(key)
        if errs is None:
            nb = linbound.network_bounds(self.w, self.spec, self.v, self.agent, lo_i, hi_i)
            errs = rounding.outcome_errors(self.w, self.spec, nb, lo, hi, "float32")
            _CELL_ERRORS[key] = errs
            while len(_CELL_ERRORS) > 512:
                _CELL_ERRORS.popitem(last=False)
        return rounding.combine(*errs, self.v, self.agent)

    def certificate(self, *, search_status, upper_u, best_b, method_tol, time_bounds_s=0.0, margin32=None,
                    margin32_truthful=None, **fields) -> Certificate:
        """:func:`certify.certificate.settle` with the float64 value of ``best_b`` as the lower bound
        and its float32 replay beside it; ``margin32``/``margin32_truthful`` override the whole-box
        float32 margin (the maximum's side and the truthful bid's)."""
        prof = self.profile(best_b)
        lower_u = float(utility64(self.w, self.spec, prof, self.v, self.agent))
        u32 = network.utility32(self.params, self.spec, np.stack([prof, self.v]), self.v, self.agent)
        fields.setdefault("pgd_regret", self.pgd_regret)
        fields.setdefault("n_unstable_relus", self.n_unstable)
        return settle(search_status=search_status, upper_u=upper_u, truthful_u=self.truthful_u, lower_u=lower_u,
                      margin64=self.margins["float64"],
                      margin32=self.margins["float32"] if margin32 is None else margin32,
                      margin32_truthful=margin32_truthful, method_tol=method_tol,
                      agent=int(self.agent), valuations=self.v.tolist(), best_misreport=prof.tolist(),
                      regret_lower_f32=float(u32[0] - u32[1]), time_bounds_s=time_bounds_s + self.time_margin_s,
                      **fields)


def _certify_mip(ctx: _Context, low, high, inc_u, inc_b, opts, solver, threads, mip_start, lp_file, deadline):
    """Steps 2-3 of the module docstring: :class:`certify.mip.search.Search`."""
    search = Search(ctx.params, ctx.spec, ctx.w, ctx.v, ctx.agent, low, high, opts, solver, threads, mip_start,
                    lp_file, deadline)
    search.run(inc_u, inc_b)
    t_b, t_build, t_solve = search.times
    common = dict(nodes=search.nodes, time_bounds_s=t_b, time_build_s=t_build, time_solve_s=t_solve,
                  n_binaries=search.n_bin, n_boxes=search.n_mips,
                  method_tol=mm.gap_tolerance(max(search.bounds) if search.bounds else 0.0))
    msgs = list(dict.fromkeys(search.messages))
    if search.error is not None:
        who = search.error[0] if search.error[0] in SOLVERS else "+".join(sorted(search.solvers)) or "none"
        return ctx.certificate(search_status="error", upper_u=None, best_b=search.inc_b, solver=who,
                               mip_objective=None, mip_network_error=None,
                               message="; ".join([search.error[1]] + msgs), **common)
    bound = max(search.bounds)
    status = search.status
    # Every proven bound must be at least the utility of every bid evaluated (the incumbent is
    # the best of them): a bound below it by more than the solver's gap tolerance means the MIP
    # spoke about another function. Report that, never the bound.
    if search.inc_u > bound + mm.TOLERANCES["gap_abs"] * (1 + abs(bound)):
        msgs.append(f"a bid has utility {search.inc_u:.9g} above the proven bound {bound:.9g}: the MIP does not "
                    f"encode the network here; no bound is reported")
        status, upper_u = "error", None
    else:
        upper_u = max(bound, search.inc_u)
    mip_obj = mip_err = None
    if search.best_from_mip is not None:
        mip_obj = float(search.best_from_mip[1])
        mip_err = abs(mip_obj - float(search.best_from_mip[0]))
    return ctx.certificate(search_status=status, upper_u=upper_u, best_b=search.inc_b,
                           solver="+".join(sorted(search.solvers)) or "none", mip_objective=mip_obj,
                           mip_network_error=mip_err, message="; ".join(msgs), **common)


def _certify_planar(ctx: _Context, low, high, inc_u, inc_b, deadline):
    """Steps 2-3 by :func:`certify.planar.maximize_utility` (exact; no MIP). Past the deadline:
    status "time_limit", no upper bound (an unfinished enumeration proves nothing); an
    enumeration that cannot resolve the net's kinks in float64 (:class:`certify.planar.PlanarError`):
    status "error"."""
    agent = ctx.agent
    common = dict(solver="planar", time_build_s=0.0, n_binaries=0, n_boxes=0,
                  method_tol=planar.TOLERANCE + ctx.margins["float64"])
    t1 = time.perf_counter()
    try:
        res = planar.maximize_utility(ctx.w, ctx.spec, ctx.v, agent, low[agent], high[agent], deadline)
    except (planar.PlanarTimeout, planar.PlanarError) as e:
        status = "time_limit" if isinstance(e, planar.PlanarTimeout) else "error"
        return ctx.certificate(search_status=status, upper_u=None, best_b=inc_b, nodes=None,
                               time_solve_s=time.perf_counter() - t1, mip_objective=None, mip_network_error=None,
                               message=str(e), **common)
    msgs = [f"{res.n_regions} linear regions, {res.n_vertices} vertices" + (" (regions reused)" if res.cached else "")]
    status, upper_u = "optimal", res.upper + ctx.margins["float64"]  # the vertices' u64 -> u_R
    if inc_u > res.upper:  # a sampled bid beats the enumerated maximum: never report that bound
        status, upper_u = "error", None
        msgs.append(f"planar enumeration inconsistent: a sampled bid has utility {inc_u:.9g} above the "
                    f"enumerated maximum {res.best_utility:.9g}")
    best_b = res.best_bids if res.best_utility >= inc_u else inc_b
    u_best = float(utility64(ctx.w, ctx.spec, ctx.profile(best_b), ctx.v, agent))
    common["method_tol"] = (res.upper - res.best_utility) + ctx.margins["float64"]  # the enumeration's own slack
    return ctx.certificate(search_status=status, upper_u=upper_u, best_b=best_b, nodes=res.n_regions,
                           time_solve_s=res.time_s, mip_objective=res.best_utility,
                           mip_network_error=abs(res.best_utility - u_best), message="; ".join(msgs), **common)


def _certify_bab(ctx: _Context, low, high, inc_u, inc_b, opts: CertifyOptions, deadline, max_boxes=None):
    """Steps 2-3 by :func:`certify.bab.maximize` (no MIP): proven bounds on ``max u_R`` within
    ``opts.bab_gap``; at the deadline or the pool limit, the bounds reached (status time_limit /
    gap_open)."""
    agent = ctx.agent
    problem = bab.Problem(ctx.w, ctx.spec, ctx.v, agent, batch=opts.bab_batch, backward=bab_backward(ctx.spec, opts))
    res = bab.maximize(problem, low[agent], high[agent], inc_u=inc_u, inc_b=inc_b, gap=opts.bab_gap,
                       deadline=deadline, branching=opts.bab_branching, max_boxes=max_boxes)
    return bab_certificate(ctx, res, low, high, inc_u, inc_b, opts)


def bab_backward(spec, opts: CertifyOptions) -> bool:
    """Whether bab back-substitutes (``opts.bab_backward``; None: for tanh nets, as measured)."""
    return opts.bab_backward if opts.bab_backward is not None else spec.activation == "tanh"


def bab_certificate(ctx: _Context, res, low, high, inc_u, inc_b, opts: CertifyOptions) -> Certificate:
    """The certificate of a finished :class:`certify.bab.BabResult`, with the float32 margins of
    the cells where the maximum can be (:func:`certify.bab.leaf_margin`) and at the truthful bid."""
    agent = ctx.agent
    best_b = res.best_b if res.best_u >= inc_u else inc_b
    msgs = [f"{res.boxes} boxes in {res.rounds} rounds, {res.open} open"] + ([res.message] if res.message else [])
    common = dict(solver="bab", nodes=res.boxes, time_solve_s=res.seconds, time_build_s=0.0, n_binaries=0,
                  n_boxes=res.boxes, mip_objective=None, mip_network_error=None, method_tol=opts.bab_gap)
    upper_u = res.upper
    if not np.isfinite(upper_u):
        return ctx.certificate(search_status="error" if res.status == "optimal" else res.status, upper_u=None,
                               best_b=best_b, message="; ".join(msgs + ["no finite bound (overflowing relaxation)"]),
                               **common)
    # float32 margins where they matter: the region the maximum can be in, and the truthful bid
    t0 = time.perf_counter()
    m_up = bab.leaf_margin(res.leaves, low[agent], high[agent], ctx.margins["float32"], ctx.margin32,
                           budget=opts.bab_margin_cells)
    m_truth = min(ctx.margins["float32"], ctx.margin32(ctx.v[agent], ctx.v[agent]))
    return ctx.certificate(search_status=res.status, upper_u=upper_u, best_b=best_b, margin32=m_up,
                           margin32_truthful=m_truth, time_bounds_s=time.perf_counter() - t0,
                           message="; ".join(msgs), **common)
