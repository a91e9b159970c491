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
* a piecewise-linear single-bidder net with at most :data:`BAB_MAX_ITEMS` items: bab first,
  with a budget of :data:`BAB_FIRST_BOXES` boxes, then the MIP if bab has not closed its gap
  (:data:`BAB_THEN_MIP`): on our shipped 1x2 nets bab is 2-3x faster than the MIP, but input
  splitting converges only linearly at the ReLU kinks where a piecewise-linear maximum sits, and
  on adversarial nets (weights x30) it can need millions of boxes where the MIP needs 25;
* every other piecewise-linear net: the MIP (on the 2x2 nets it is faster than bab, and in more
  dimensions input splitting needs ~2^M boxes per level).
"""
from __future__ import annotations

from certify.mip.encoders import UnsupportedArchitecture, check_supported
from jaxauction.mechanism import MechanismSpec

MIP_AUTO = "auto"          # the MIP with the solver its licence allows (certify.mip.licensing)
BAB_THEN_MIP = "bab_then_mip"  # what auto runs on small piecewise-linear nets (module docstring)
BAB_MAX_ITEMS = 2
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


def pick(spec: MechanismSpec, solver: str) -> str:
    """The method ``solver`` means for ``spec``: ``"auto"`` becomes ``"bab"``,
    :data:`BAB_THEN_MIP` or :data:`MIP_AUTO` (see the module docstring); any other name is
    checked with :func:`check` and returned ("mip" as :data:`MIP_AUTO`)."""
    if solver != "auto":
        check(spec, solver)
        return MIP_AUTO if solver == "mip" else solver
    if not mip_encodable(spec):
        check(spec, "bab")   # raises naming the piece if neither method can certify the net
        return "bab"
    if spec.n_agents == 1 and spec.n_items <= BAB_MAX_ITEMS and bab_supported(spec):
        return BAB_THEN_MIP
    return MIP_AUTO


def describe(spec: MechanismSpec, solver: str) -> str:
    """One line saying what ``solver`` runs on ``spec`` (printed by the command line)."""
    method = pick(spec, solver)
    if method == BAB_THEN_MIP:
        return (f"method: bab, then the exact MIP if bab has not closed its gap within {BAB_FIRST_BOXES} boxes "
                f"(auto: a piecewise-linear single-bidder net)")
    if method == "bab":
        why = "" if solver == "bab" else " (auto: the MIP cannot encode this net)"
        return "method: bab, batched branch and bound with linear relaxations" + why
    if method == "planar":
        return "method: planar, exact linear-region enumeration"
    name = "Gurobi or SCIP by licence" if method == MIP_AUTO else method
    why = " (auto: a piecewise-linear net)" if solver == "auto" else ""
    return f"method: exact MIP ({name}){why}"
