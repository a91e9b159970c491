"""Which method certifies which network, and what ``solver="auto"`` picks.

The methods (:data:`certify.certificate.SOLVERS`):

* ``"bab"``: batched input-space branch and bound with linear relaxations (:mod:`certify.bab`);
  every RegretNet-family net (ReLU or tanh, shared or separate towers, softmax or sparsemax,
  any payment). Exact in the limit on piecewise-linear nets; on smooth nets the bounds meet
  within its gap.
* ``"gurobi"``, ``"scip"``: the exact MIP (:mod:`certify.mip`), for piecewise-linear nets only
  (ReLU trunk, sparsemax, hard-sigmoid or free payment); ``"mip"``: the MIP with Gurobi if its
  licence takes the model, else SCIP (:data:`MIP_AUTO`, the MIP core's "auto").
* ``"planar"``: exact linear-region enumeration (:mod:`certify.planar`): free payment, 2 items.
* ``"auto"``: :func:`pick`.

The ``auto`` rule comes from ``bench/bab_vs_mip.py`` (BENCHMARKS.md, "Branch and bound"):

* a net the MIP cannot encode (tanh, softmax, sigmoid payment): bab;
* a piecewise-linear net with at most :data:`BAB_MAX_ITEMS` items per agent that is a
  single-bidder fractional-payment net, or has at least :data:`BAB_MIN_UNSTABLE` unstable ReLUs
  over agent i's bid box: bab first, with a budget of :data:`BAB_FIRST_BOXES` boxes, then the
  MIP if bab has not closed its gap (:data:`BAB_THEN_MIP`). Measured (5-10 profiles, every
  agent, search seconds per pair, MIP / bab, with the unstable ReLUs):

  ============================  ========  ==========  ============  ==========================
  net                            payment  unstable    MIP / bab s   faster
  ============================  ========  ==========  ============  ==========================
  1x2_reg / 1x2_noreg            fract.    85 / 198   0.75 / 0.23,  bab 3.2x, 4.2x
                                                      0.93 / 0.22
  paper 1x2 scratch              fract.    50         0.74 / 0.21   bab 3.6x
  2x2_reg / paper 2x2 scratch    fract.    52 / 55    0.83 / 1.28,  MIP 1.5x, 2.2x
                                                      0.35 / 0.76
  2x2_noreg                      fract.    303        1.46 / 0.22   bab 6.8x
  2x2_distill / 3x2              free      201 / 108  0.38 / 0.29,  bab 1.3x, 1.2x
                                                      0.56 / 0.48
  paper 2x2 distill              free      83         0.45 / 1.82   MIP 4x
  1x2_distill / paper 1x2 dist.  free      17 / 28    0.012 / 3.7,  MIP 300x, 26x
                                                      0.046 / 1.2
  ============================  ========  ==========  ============  ==========================

  The MIP's work grows with the unstable ReLUs, bab's with the kinks near the maximum, where
  input splitting converges only linearly (on adversarial nets, weights x30, it can need
  millions of boxes where the MIP needs 25: hence the budget). A free payment makes the utility
  ``a v - p`` a difference of two relaxations, so bab pays every kink's slack there;
* a single-bidder free-payment net with 2 items and fewer unstable ReLUs: the exact region
  enumeration first, the MIP if it reports an error (:data:`PLANAR_THEN_MIP`): 1 ms per pair on
  1x2_distill (its regions do not depend on the profile) against the MIP's 12 ms;
* every other piecewise-linear net: the MIP (in more dimensions input splitting needs ~2^M boxes
  per level).
"""
from __future__ import annotations

from certify.mip.encoders import UnsupportedArchitecture, check_supported
from jaxauction.mechanism import MechanismSpec

MIP_AUTO = "auto"          # the MIP with the solver its licence allows (certify.mip.licensing)
BAB_THEN_MIP = "bab_then_mip"        # what auto runs on small piecewise-linear nets (module docstring)
PLANAR_THEN_MIP = "planar_then_mip"
FIRST_THEN_MIP = {BAB_THEN_MIP: "bab", PLANAR_THEN_MIP: "planar"}
BAB_MAX_ITEMS = 2
BAB_MIN_UNSTABLE = 150
BAB_FIRST_BOXES = 20_000


def mip_encodable(spec: MechanismSpec) -> bool:
    try:
        check_supported(spec)
    except UnsupportedArchitecture:
        return False
    return True


def check(spec: MechanismSpec, solver: str) -> None:
    """Raise ``ValueError`` (:class:`UnsupportedArchitecture` / ``PlanarError``) naming the piece
    of ``spec`` that ``solver`` cannot certify."""
    from certify import planar

    if solver in ("gurobi", "scip", "mip"):
        check_supported(spec)
    elif solver == "planar":
        check_supported(spec)
        planar.check(spec)
    elif solver == "bab":
        from certify.linbound import check_supported as bab_supported

        bab_supported(spec)


def bab_supported(spec: MechanismSpec) -> bool:
    try:
        check(spec, "bab")
    except UnsupportedArchitecture:
        return False
    return True


def pick(spec: MechanismSpec, solver: str, n_unstable: int | None = None) -> str:
    """The method ``solver`` means for ``spec``: ``"auto"`` becomes ``"bab"``,
    :data:`BAB_THEN_MIP`, :data:`PLANAR_THEN_MIP` or :data:`MIP_AUTO` (module docstring; without
    ``n_unstable``, the unstable ReLUs over the bid box, a piecewise-linear net counts as having
    few); any other name is checked with :func:`check` and returned ("mip" as :data:`MIP_AUTO`)."""
    if solver != "auto":
        check(spec, solver)
        return MIP_AUTO if solver == "mip" else solver
    if not mip_encodable(spec):
        check(spec, "bab")   # raises naming the piece if neither method can certify the net
        return "bab"
    many = n_unstable is not None and n_unstable >= BAB_MIN_UNSTABLE
    single_fractional = spec.n_agents == 1 and spec.payment == "fractional"
    if spec.n_items <= BAB_MAX_ITEMS and (single_fractional or many) and bab_supported(spec):
        return BAB_THEN_MIP
    if spec.n_agents == 1 and spec.n_items == 2 and spec.payment == "free":
        return PLANAR_THEN_MIP
    return MIP_AUTO


def describe(spec: MechanismSpec, solver: str) -> str:
    """One line saying what ``solver`` runs on ``spec`` (printed by the command line)."""
    method = pick(spec, solver)
    if method == "bab":
        why = "" if solver == "bab" else " (auto: the MIP cannot encode this net)"
        return "method: bab, batched branch and bound with linear relaxations" + why
    if method == "planar":
        return "method: planar, exact linear-region enumeration"
    first = ""
    if method == BAB_THEN_MIP:
        return (f"method (auto): bab first, then the exact MIP if its gap is open after {BAB_FIRST_BOXES} boxes "
                f"(a single-bidder fractional-payment net)")
    if solver == "auto" and spec.n_items <= BAB_MAX_ITEMS and bab_supported(spec):
        first = (f"bab first (then the MIP if its gap is open after {BAB_FIRST_BOXES} boxes) on pairs with >= "
                 f"{BAB_MIN_UNSTABLE} unstable ReLUs, else ")
    if method == PLANAR_THEN_MIP:
        return f"method (auto): {first}planar (exact region enumeration), then the exact MIP if it cannot resolve a kink"
    name = "Gurobi or SCIP by licence" if method == MIP_AUTO else method
    return f"method{' (auto)' if solver == 'auto' else ''}: {first}the exact MIP ({name})"
