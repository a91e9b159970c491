"""Whole-space regret on a box by an exact two-copy MIP (the reference for :mod:`certify.space`).

For agent i, a box ``V = [v_lo, v_hi]`` of valuation profiles (N, M) and a box ``B = [b_lo, b_hi]``
of misreports (M,), :func:`max_regret_box` brackets

    R* = max_{v in V, b in B} R(v, b),
    R(v, b) = u_i((b, v_-i); v_i) - u_i(v; v_i),     u_i(x; v_i) = sum_j a_ij(x) v_ij - p_i(x),

with ``(a, p)`` the mechanism's exact (real-arithmetic) function of its stored weights. Every
bid is a variable, so the network is encoded twice by :func:`certify.mip.encoders.encode_net`
(the encoding :func:`~certify.mip.encoders.encode` uses; exact pieces; bounds from
:func:`certify.tighten.tighten` on each copy's input box):

* copy 2 reads ``x2 = v``: N*M variables ``v_rj in [v_lo_rj, v_hi_rj]``;
* copy 1 reads ``x1 = (b, v_-i)``: the M variables ``b_j in [b_lo_j, b_hi_j]`` in row i and the
  *same* columns as copy 2 elsewhere.

A coordinate whose box has ``lo == hi`` is a constant, not a variable (with all of v fixed,
copy 1 is the per-profile regret MIP of :func:`certify.regret.build_model` and copy 2 is
constant up to its bounds' outward rounding).
The objective ``R = sum_j (a1_ij - a2_ij) v_ij - p1_i + p2_i`` is bilinear where ``v_ij``
varies: ``d_j = a1_ij - a2_ij`` and ``g_j = d_j v_ij`` are variables tied by the nonconvex
equalities ``g_j == d_j * v_ij`` (:meth:`certify.mip.model.Model.add_bilinear_eq`), as are the
fractional payments ``p_k = f_k y_k``, ``y_k = sum_j a^k_ij x^k_ij`` (copy 1 multiplies by
``b_j``, copy 2 by ``v_ij``). SCIP solves such MIQCPs exactly by spatial branching; Gurobi with
``NonConvex=2`` (its size-limited pip licence refuses models over 200 variables with quadratic
terms: :class:`certify.mip.licensing.LicenseLimitError`, never hidden).

What the numbers mean (:class:`TwoCopyResult`):

* ``lower = R_64(v, b)``: the float64 twin (:func:`certify.network.utility64`) at a real point of
  the box, the reported ``(v, b)`` (the best of the solver's incumbent and a sampled MIP start).
  It is a lower bound on the twin's maximum exactly, and on ``R*`` up to the twin's rounding
  (about 1e-13 on small nets; :mod:`certify.rounding`, not added here). Not clamped at 0: if B
  does not contain v_i, R* may be negative.
* ``upper = dual + SLACK (1 + |dual|)``: the solver's dual bound on the MIP's maximum (solved to
  absolute gap ``gap``, relative gap 0) plus ``SLACK``, the solvers' absolute gap tolerance
  (``TOLERANCES["gap_abs"]`` = 1e-6) as an allowance for their feasibility tolerance (1e-8,
  times big-M coefficients) and the cuts' and branching's rounding. It is a
  bound on ``R*`` as far as the solver's tolerances hold: a test reference, not a certificate (no
  float32 margin, no rigorous rounding; :func:`certify.certificate.settle` is where those live).
  ``inf`` when no bound was proven (e.g. a time limit before the root relaxation).
* ``status``: ``"optimal"`` (the solver closed its gap and ``upper - lower <= gap + gap_tol``,
  ``gap_tol = SLACK (1 + |dual|) + REPLAY_TOL``: the slack plus the MIP-vs-replay tolerance),
  ``"gap_open"`` (closed per the solver but the replay is further off), ``"time_limit"`` /
  ``"node_limit"`` (the bounds reached), or ``"error"`` (``upper = inf``: the solver failed, or
  the model refused a real point of the box, or a replayed point beat the bound: the encoding
  is not the network's, reported instead of a bound). Always ``lower <= upper``.
"""
from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from certify.mip import licensing
from certify.mip import model as mm
from certify.mip.affine import Affine, plus
from certify.mip.backends import BACKENDS
from certify.mip.encoders import EncodeOptions, Encoder, UnsupportedArchitecture, check_supported, encode_net
from certify.network import utility64, weights64
from certify.regret import validate
from certify.tighten import tighten
from jaxauction.bounds import Interval
from jaxauction.mechanism import MechanismSpec

__all__ = ["TwoCopyResult", "max_regret_box", "regret64", "UnsupportedArchitecture"]

SLACK = mm.TOLERANCES["gap_abs"]       # added to the dual bound, times (1 + |bound|)
START_SAMPLES = 256                    # random (v, b) evaluated for the MIP start
START_VIOLATION = 1e-6                 # the model must admit the start point (see search.CENTRE_VIOLATION)


@dataclasses.dataclass
class TwoCopyResult:
    """Bounds on ``max R`` over the box (module docstring).

    Attributes:
      lower: ``R`` by the float64 twin at ``(v, b)``; upper: proven bound (within solver tolerances)
        or ``inf``; status: "optimal" | "gap_open" | "time_limit" | "node_limit" | "error".
      v: (N, M) profile and b: (M,) misreport achieving ``lower``; seconds: total wall time.
      gap_tol: ``upper - lower <= gap + gap_tol`` when optimal (``SLACK (1 + |dual|) + REPLAY_TOL``).
      solver, nodes, size (the model's :meth:`~certify.mip.model.Model.size`), n_unstable_relus
      (both copies), mip_objective (the incumbent's MIP value, None without one), message.
    """

    lower: float
    upper: float
    status: str
    v: np.ndarray
    b: np.ndarray
    seconds: float
    gap_tol: float = 0.0
    solver: str = ""
    nodes: int | None = None
    size: dict = dataclasses.field(default_factory=dict)
    n_unstable_relus: int = 0
    mip_objective: float | None = None
    message: str = ""


def regret64(w, spec: MechanismSpec, agent: int, v, b) -> float:
    """``R(v, b)`` by the float64 twin: ``u_64((b, v_-i); v_i) - u_64(v; v_i)`` (one point)."""
    v = np.asarray(v, np.float64)
    x = v.copy()
    x[agent] = b
    return float(utility64(w, spec, np.stack([x, v]), v, agent) @ np.array([1.0, -1.0]))


class _Named:
    """The recorder seen through a name prefix (copy k's columns and rows read ``c1.h[1,3]``)."""

    def __init__(self, be: mm.Model, prefix: str):
        self.be, self.prefix = be, prefix

    def add_vars(self, name, *a, **k):
        return self.be.add_vars(self.prefix + name, *a, **k)

    def add_linear(self, name, *a, **k):
        return self.be.add_linear(self.prefix + name, *a, **k)

    def add_sos1(self, name, *a, **k):
        return self.be.add_sos1(self.prefix + name, *a, **k)

    def add_bilinear_eq(self, name, *a, **k):
        return self.be.add_bilinear_eq(self.prefix + name, *a, **k)

    def bounds(self, cols):
        return self.be.bounds(cols)


def _check_box(name_lo, lo, name_hi, hi, shape):
    lo, hi = np.asarray(lo, np.float64), np.asarray(hi, np.float64)
    for nm, x in ((name_lo, lo), (name_hi, hi)):
        if x.shape != shape:
            raise ValueError(f"{nm} has shape {x.shape}, expected {shape}")
        if not np.all(np.isfinite(x)):
            raise ValueError(f"{nm} contains NaN or inf")
    if np.any(lo > hi):
        k = tuple(int(t) for t in np.argwhere(lo > hi)[0])
        raise ValueError(f"empty box: {name_lo}{list(k)} = {lo[k]} > {name_hi}{list(k)} = {hi[k]}")
    return lo, hi


def max_regret_box(params, spec: MechanismSpec, agent: int, v_lo, v_hi, b_lo, b_hi, *, solver: str = "scip",
                   time_limit: float = 60.0, gap: float = 1e-6, bounds: str = "lp", seed: int = 0) -> TwoCopyResult:
    """Bounds on ``max R(v, b)`` over ``v in [v_lo, v_hi]`` (N, M), ``b in [b_lo, b_hi]`` (M,).

    Args:
      params, spec: a piecewise-linear mechanism (ReLU trunk, sparsemax, "fractional" or "free"
        payment; others raise :class:`UnsupportedArchitecture`).
      agent: the misreporting agent i.
      solver: "scip", "gurobi" or "auto" (:func:`certify.mip.licensing.choose_solver`).
      time_limit: seconds for the whole call (the solve gets what building left).
      gap: the solver's absolute gap (its relative gap is set to 0).
      bounds: :func:`certify.tighten.tighten` method for each copy's box ("lp", "crown", "ibp").
      seed: for the sampled MIP start.

    Raises:
      ValueError: bad shapes, empty or non-finite boxes, bad agent/params/options.
      certify.mip.licensing.LicenseLimitError: ``solver="gurobi"`` and its licence refuses the model.
    """
    t0 = time.perf_counter()
    if not isinstance(spec, MechanismSpec):
        raise ValueError(f"spec must be a MechanismSpec, got {type(spec).__name__}")
    check_supported(spec)
    n, m = spec.n_agents, spec.n_items
    v_lo, v_hi = _check_box("v_lo", v_lo, "v_hi", v_hi, (n, m))
    b_lo, b_hi = _check_box("b_lo", b_lo, "b_hi", b_hi, (m,))
    validate(params, spec, v_lo, agent, v_lo, v_hi)  # params (float32, shapes, finite) and agent, as certify_point
    if solver not in licensing.MIP_SOLVERS:
        raise ValueError(f"solver must be one of {licensing.MIP_SOLVERS}, got {solver!r}")
    if not (time_limit is not None and time_limit > 0):
        raise ValueError(f"time_limit must be positive, got {time_limit}")
    if not (math.isfinite(gap) and gap >= 0):
        raise ValueError(f"gap must be finite and >= 0, got {gap}")
    agent = int(agent)
    w = weights64(params)
    box1_lo, box1_hi = v_lo.copy(), v_hi.copy()
    box1_lo[agent], box1_hi[agent] = b_lo, b_hi
    nb1 = tighten(params, spec, Interval(box1_lo, box1_hi), method=bounds)
    nb2 = tighten(params, spec, Interval(v_lo, v_hi), method=bounds)

    # --- the model ------------------------------------------------------------------------
    be = mm.Model()
    vcol, bcol = np.full((n, m), -1), np.full(m, -1)
    vvar, bvar = v_lo < v_hi, b_lo < b_hi
    vcol[vvar] = be.add_vars("v", v_lo[vvar], v_hi[vvar], index=[tuple(map(int, k)) for k in np.argwhere(vvar)])
    bcol[bvar] = be.add_vars("b", b_lo[bvar], b_hi[bvar], index=[(agent, int(j)) for j in np.flatnonzero(bvar)])
    col1, val1 = vcol.copy(), v_lo.copy()
    col1[agent], val1[agent] = bcol, b_lo
    opts = EncodeOptions()
    enc1 = Encoder(_Named(be, "c1."), w, spec, opts)
    enc2 = Encoder(_Named(be, "c2."), w, spec, opts)
    enc2.evaluators = enc1.evaluators  # one list, in definition order
    a1, p1 = encode_net(enc1, col1, val1, agent, nb1)
    a2, p2 = encode_net(enc2, vcol, v_lo, agent, nb2)
    (l1, u1), (l2, u2) = be.bounds(a1), be.bounds(a2)
    lab = [(agent, j) for j in range(m)]
    d = enc2.materialize("gain_d", "gain_d", lab, Affine(np.hstack([np.eye(m), -np.eye(m)]), np.concatenate([a1, a2]),
                                                         np.zeros(m)), l1 - u2, u1 - l2)
    g = enc2.times("gain_g", lab, d, l1 - u2, u1 - l2, vcol[agent], v_lo[agent])[0]
    gain = Affine(g.coef.sum(0, keepdims=True), g.cols, np.zeros(1))
    obj = plus(plus(gain, Affine(-p1.coef, p1.cols, -p1.const)), p2)
    be.set_objective(obj.cols, obj.coef[0], float(obj.const[0]))

    def values(v, b):
        vals = np.zeros(be.n_vars)
        vals[vcol[vvar]], vals[bcol[bvar]] = v[vvar], b[bvar]
        for fn in enc1.evaluators:
            fn(vals)
        return vals

    # --- a start: the best of sampled points (and the box centre), replayed in float64 ----
    rng = np.random.default_rng(seed)
    cand = [((v_lo + v_hi) / 2, (b_lo + b_hi) / 2)] + [
        (v_lo + rng.random((n, m)) * (v_hi - v_lo), b_lo + rng.random(m) * (b_hi - b_lo)) for _ in range(START_SAMPLES)]
    rs = [regret64(w, spec, agent, v, b) for v, b in cand]
    k = int(np.argmax(rs))
    best_v, best_b, lower = cand[k][0], cand[k][1], rs[k]
    start = values(best_v, best_b)
    size = be.size()
    common = dict(size=size, n_unstable_relus=enc1.n_unstable + enc2.n_unstable)
    viol = be.violation(start)
    if viol > START_VIOLATION:
        return TwoCopyResult(lower, math.inf, "error", best_v, best_b, time.perf_counter() - t0, solver=solver,
                             message=f"the model refuses a point of the box (violation {viol:.3g}): the encoding is "
                                     f"not the network's; no bound", **common)
    name = licensing.choose_solver(solver, size)  # raises LicenseLimitError for a refused "gurobi"
    mdl = be.to(BACKENDS[name])
    mdl.set_start(start)
    params_ = {"limits/absgap": float(gap), "limits/gap": 0.0} if name == "scip" else {"MIPGapAbs": float(gap), "MIPGap": 0.0}
    res = mdl.solve(time_limit=max(float(time_limit) - (time.perf_counter() - t0), 1e-3), params=params_)

    # --- the incumbent, replayed -----------------------------------------------------------
    msgs = [res.message] if res.message else []
    if res.values is not None:
        v_m = np.where(vvar, res.values[np.maximum(vcol, 0)], v_lo).clip(v_lo, v_hi)
        b_m = np.where(bvar, res.values[np.maximum(bcol, 0)], b_lo).clip(b_lo, b_hi)
        r_m = regret64(w, spec, agent, v_m, b_m)
        if r_m > lower:
            best_v, best_b, lower = v_m, b_m, r_m
        if res.objective is not None and abs(res.objective - r_m) > mm.REPLAY_TOL:
            msgs.append(f"incumbent's MIP value {res.objective:.9g} vs its replay {r_m:.9g}")
    status, upper, tol = res.status, math.inf, 0.0
    if res.bound is not None and status not in ("error", "infeasible", "infeasible_or_unbounded", "unbounded"):
        tol = SLACK * (1.0 + abs(res.bound))
        upper = res.bound + tol
        tol += mm.REPLAY_TOL
        if lower > upper:
            msgs.append(f"a point has R = {lower:.9g} above the bound {upper:.9g}: the MIP does not encode the "
                        f"network here; no bound")
            status, upper = "error", math.inf
        elif status == "optimal" and upper - lower > gap + tol:
            status = "gap_open"
    else:
        msgs.append(f"solver status {res.status}: no bound")
        status = status if status in ("time_limit", "node_limit") else "error"
    return TwoCopyResult(lower, upper, status, np.asarray(best_v, np.float64), np.asarray(best_b, np.float64),
                         time.perf_counter() - t0, gap_tol=tol, solver=name, nodes=res.nodes,
                         mip_objective=res.objective, message="; ".join(msgs), **common)
