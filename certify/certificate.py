"""What a certificate says, its invariants, and the vocabularies of certification.

A :class:`Certificate` is a claim of proof about agent i's regret at a valuation profile v,

    rgt_i(v) = max_{b_i in [low_i, high_i]} u_i((b_i, v_-i); v_i) - u_i(v; v_i),

for the mechanism in **both** of its meanings (:mod:`certify.network`):

* ``u_R``: the exact real-arithmetic function of the stored (float32) weights, and
* ``u_32``: the allocations and payments that ``jaxauction.mechanism.apply`` computes in float32
  (round-to-nearest float32 arithmetic, any summation order in every matrix product; the
  assumptions are listed in :func:`certify.network.rounding_margin`), combined with v exactly.

The fields that carry the claim:

* ``regret_upper``: proven ``>= rgt_i(v)`` under both meanings. It is the search's proven bound on
  ``max u_R`` (MIP dual bound, region enumeration, or a relaxation bound) minus the float64 twin's
  truthful utility, plus ``margin``: the rigorous rounding margin that covers the float64 twin's
  error and the float32 evaluation's error over agent i's whole bid box. None if nothing was proven.
* ``regret_lower``: ``u_64(b*) - u_64(v)`` minus twice the float64 twin's error bound, for the
  reported bid ``b*`` (``best_misreport``): a proven lower bound on the exact regret ``rgt_R``.
  ``regret_lower_f32`` is that bid's regret as ``mechanism.apply`` computes it in float32 (what a
  user replaying the bid in JAX sees; not a bound on anything).
* ``regret_upper_exact``: the same bound for ``u_R`` alone (no float32 margin): what a user who
  evaluates the mechanism exactly (or in float64, within ``margin``'s float64 part) may rely on.
* ``status``: one of :data:`STATUSES`. ``"optimal"`` only when ``regret_upper - regret_lower <=
  gap_tol``, where ``gap_tol`` is the method's gap tolerance plus the rounding margins (reported).

Invariants, checked when a certificate is made (:meth:`Certificate.__post_init__` raises
:class:`CertificateError` otherwise): ``0 <= regret_lower <= regret_upper`` when an upper bound
exists, ``gap == regret_upper - regret_lower``, and "optimal" implies ``gap <= gap_tol``.
:func:`settle` turns a search's raw bounds into a certificate that satisfies them.
"""
from __future__ import annotations

import dataclasses
import math

import numpy as np

from certify.mip.encoders import EncodeOptions
from certify.mip.licensing import MIP_SOLVERS
from jaxauction.mechanism import MechanismSpec

# Methods by name (certify.methods says which nets each handles): "auto" (certify.methods.pick),
# the MIP solvers "gurobi" and "scip" ("mip": whichever the licence allows), "planar" (exact
# linear-region enumeration, free payment and 2 items; certify.planar) and "bab" (batched branch
# and bound with linear relaxations, any RegretNet-family net; certify.bab).
SOLVERS = MIP_SOLVERS + ("mip", "planar", "bab")
# Statuses of a certificate: "optimal" = the bounds met within gap_tol; "gap_open" = the search
# ended with proven bounds that did not meet (e.g. a solver stopped early); "time_limit" = the time
# limit ended the search (the bounds reached are reported); "error" = nothing proven (upper None).
STATUSES = ("optimal", "gap_open", "time_limit", "error")
BOUND_METHODS = ("lp", "crown", "ibp")
# Relative slack allowed in the invariants' comparisons (they compare float64 numbers).
_CMP = 1e-12


class CertificateError(ValueError):
    """A certificate would break its invariants (a bug in a certifier: never reported)."""


@dataclasses.dataclass
class Certificate:
    """The result of certifying one (profile, agent); see the module docstring for the semantics.

    Attributes:
      agent: the misreporting agent i.
      valuations: (N, M) nested list, the true profile v.
      truthful_utility: ``u_i(v)`` by the float64 twin (:func:`certify.network.utility64`).
      regret_lower: proven lower bound on the exact regret, achieved by ``best_misreport``.
      regret_upper: proven upper bound on the regret under both meanings; None if none.
      best_misreport: (N, M) full bid profile (agent i's row replaced), or None.
      status: one of :data:`STATUSES`.
      solver: "gurobi" | "scip" (the one that solved the last MIP; "gurobi+scip" if both were used),
        "planar" (no MIP: :mod:`certify.planar`), or "none" (no MIP was needed).
      gap: ``regret_upper - regret_lower`` (absolute), None without an upper bound.
      gap_tol: the gap below which the bounds count as met: the method's tolerance plus ``margin``.
      margin: rounding margin included in ``regret_upper`` (float64 twin and float32 evaluation).
      regret_lower_f32: the float32 regret (``mechanism.apply``) of ``best_misreport``.
      regret_upper_exact: proven upper bound on the exact real-arithmetic regret only (``regret_upper``
        without the float32 margin); ``regret_lower <= regret_upper_exact <= regret_upper``.
      nodes: branch-and-bound nodes over all MIPs (planar: linear regions enumerated).
      time_bounds_s, time_build_s, time_solve_s: wall time in bounds (CROWN/LP, margins), model
        building, and the solver (including loading the model into it).
      mip_objective: MIP objective at the incumbent of the MIP that found the best misreport
        (planar: the float64 utility at the best region vertex).
      mip_network_error: ``|mip_objective - float64 twin's utility at its bids|``.
      pgd_regret: regret found by PGD alone (``jaxauction.misreport``, float32), None if not run.
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
    gap_tol: float | None = None
    margin: float | None = None
    regret_lower_f32: float | None = None
    regret_upper_exact: float | None = None

    def __post_init__(self):
        check_invariants(self)

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


# Keys every results line carries (the Certificate's fields, in order): spelled once, here.
RESULT_KEYS = tuple(f.name for f in dataclasses.fields(Certificate))


def check_invariants(c) -> None:
    """Raise :class:`CertificateError` unless ``c`` (a Certificate or a results record) keeps the
    invariants of the module docstring."""
    get = (lambda k: getattr(c, k, None)) if not isinstance(c, dict) else c.get
    status, lo, up, gap, tol = get("status"), get("regret_lower"), get("regret_upper"), get("gap"), get("gap_tol")
    if status not in STATUSES:
        raise CertificateError(f"status {status!r} is not one of {STATUSES}")
    if up is None:
        if status not in ("error", "time_limit"):
            raise CertificateError(f"status {status!r} without a proven upper bound")
        if gap is not None:
            raise CertificateError("a gap without an upper bound")
        return
    slack = _CMP * (1.0 + abs(up))
    if lo is None or not lo >= 0.0:
        raise CertificateError(f"regret_lower {lo} must be a number >= 0")
    if not up >= lo:
        raise CertificateError(f"regret_lower {lo} > regret_upper {up}")
    ex = get("regret_upper_exact")
    if ex is not None and not lo <= ex <= up + slack:
        raise CertificateError(f"regret_upper_exact {ex} outside [regret_lower {lo}, regret_upper {up}]")
    if gap is None or abs(gap - (up - lo)) > slack:
        raise CertificateError(f"gap {gap} != regret_upper - regret_lower = {up - lo}")
    if status == "optimal" and (tol is None or gap > tol + slack):
        raise CertificateError(f"status optimal with gap {gap} above gap_tol {tol}")


def settle(*, search_status: str, upper_u: float | None, truthful_u: float, lower_u: float, margin64: float,
           margin32: float, method_tol: float, margin32_truthful: float | None = None, **fields) -> Certificate:
    """A :class:`Certificate` from a search's raw results, keeping every invariant.

    Args:
      search_status: what the search says: "optimal" (it closed its own gap), "time_limit",
        "gap_open" or "error".
      upper_u: proven upper bound on ``max_b u_R(b)`` over the box (None: nothing proven).
      truthful_u: the float64 twin's ``u_i(v)``; lower_u: its utility at the reported bid.
      margin64: bound on ``|u_64 - u_R|`` at any bid of the box; margin32: on ``|u_32 - u_R|``
        wherever the maximum can be (the whole box, or the region :func:`certify.bab.hot_margin`
        shows the others cannot reach); margin32_truthful: the same at the truthful bid (default
        ``margin32``).
      method_tol: the method's own gap tolerance (MIP gap, enumeration tolerance).
      fields: the remaining :class:`Certificate` fields.
    """
    m32_t = margin32 if margin32_truthful is None else margin32_truthful
    margin = margin32 + m32_t + margin64
    lower = max(0.0, lower_u - truthful_u - 2.0 * margin64)
    msgs = [fields.pop("message", "")] if fields.get("message") else []
    fields.pop("message", None)
    if upper_u is None or search_status == "error":
        status = "error" if search_status == "error" or upper_u is None and search_status != "time_limit" \
            else search_status
        return Certificate(truthful_utility=truthful_u, regret_lower=lower, regret_upper=None, gap=None,
                           status=status, gap_tol=None, margin=margin, message="; ".join(msgs), **fields)
    exact = max(0.0, upper_u - truthful_u + margin64)
    upper = max(exact, upper_u - truthful_u + margin64 + margin32 + m32_t)
    gap_tol = method_tol + margin + 2.0 * margin64
    if exact < lower:  # the search's bound is below a bid it evaluated: never report that bound
        msgs.append(f"inconsistent bounds: regret upper {upper:.9g} below the lower {lower:.9g} of an evaluated "
                    f"bid; no bound reported")
        return Certificate(truthful_utility=truthful_u, regret_lower=lower, regret_upper=None, gap=None,
                           status="error", gap_tol=None, margin=margin, message="; ".join(msgs), **fields)
    gap = upper - lower
    status = search_status
    if status == "optimal" and gap > gap_tol + _CMP * (1.0 + abs(upper)):
        status = "gap_open"
        msgs.append(f"the search ended with gap {gap:.3g} above its tolerance {gap_tol:.3g}")
    return Certificate(truthful_utility=truthful_u, regret_lower=lower, regret_upper=upper, gap=gap,
                       status=status, gap_tol=gap_tol, margin=margin, regret_upper_exact=exact,
                       message="; ".join(msgs), **fields)


@dataclasses.dataclass(frozen=True)
class CertifyOptions:
    """How :func:`certify.regret.certify_point` searches (every choice gives the same certified value).

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
        :data:`certify.mip.backends.SOLVER_PARAMS` (e.g. ``(("Presolve", 0),)`` for Gurobi).
      bab_gap: ``solver="bab"`` stops when its bounds on ``max u_i`` are this close (absolute;
        the default is the MIP's stated tolerance at utility 1, :func:`certify.mip.model.gap_tolerance`,
        so the two methods certify to the same precision).
      bab_batch: boxes bounded per jitted call (more keeps a GPU busy; 512 suits a CPU).
      bab_branching: ``"longest"`` or ``"slope"`` (:data:`certify.bab.BRANCHING`).
      bab_backward: also bound each box by back-substitution through the trunk
        (:func:`certify.linbound.backward_upper`): tighter, about twice the cost per box; None
        (default): on for tanh nets, off for ReLU nets (``bench/bab_vs_mip.py --no-backward``:
        on the optimaler 2x2 net 0.33 s per pair with it, 0.36 without; on our ReLU nets it
        costs 1.3-2.3x; BENCHMARKS.md).
      bab_margin_cells: sub-boxes whose float32 margins replace the whole box's where bab's
        maximum can be (:func:`certify.bab.leaf_margin`; 0: the whole-box margin).
    """

    bounds: str = "crown"
    split_unstable: int | None | str = "auto"
    try_node_limit: int | None = None
    max_depth: int = 12
    max_split_items: int = 4
    samples: int = 256
    encode: EncodeOptions = EncodeOptions()
    solver_params: tuple = ()
    bab_gap: float = 3e-6
    bab_batch: int = 512
    bab_branching: str = "longest"
    bab_margin_cells: int = 8
    bab_backward: bool | None = None

    def __post_init__(self):
        if not self.bab_gap > 0:
            raise ValueError(f"bab_gap must be positive, got {self.bab_gap}")
        if int(self.bab_batch) < 2:
            raise ValueError(f"bab_batch must be >= 2, got {self.bab_batch}")
        if self.bab_branching not in ("longest", "slope"):
            raise ValueError(f"bab_branching must be 'longest' or 'slope', got {self.bab_branching!r}")
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


def is_proven(rec) -> bool:
    """Certified: the bounds met (status optimal) and an upper bound is reported."""
    get = rec.get if isinstance(rec, dict) else (lambda k: getattr(rec, k, None))
    return get("status") == "optimal" and get("regret_upper") is not None
