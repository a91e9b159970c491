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

The ``auto`` rule comes from ``bench/bab_vs_mip.py`` (BENCHMARKS.md, "Branch and bound"): the
MIP where it can encode the net and agent i bids on more than :data:`BAB_MAX_ITEMS` items (input
splitting needs ~2^M boxes per level, so it loses in high dimension), bab otherwise.
"""
from __future__ import annotations

from certify.mip.encoders import UnsupportedArchitecture, check_supported
from jaxauction.mechanism import MechanismSpec

MIP_AUTO = "auto"          # the MIP with the solver its licence allows (certify.mip.licensing)
# auto picks bab for MIP-encodable nets up to this many items per agent (bench/bab_vs_mip.py)
BAB_MAX_ITEMS = 2


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


def pick(spec: MechanismSpec, solver: str) -> str:
    """The method ``solver`` means for ``spec``: ``"auto"`` becomes ``"bab"`` or :data:`MIP_AUTO`
    (see the module docstring); any other name is checked with :func:`check` and returned."""
    if solver != "auto":
        check(spec, solver)
        return MIP_AUTO if solver == "mip" else solver
    if not mip_encodable(spec) or spec.n_items <= BAB_MAX_ITEMS:
        check(spec, "bab")
        return "bab"
    return MIP_AUTO


def describe(spec: MechanismSpec, solver: str) -> str:
    """One line saying what ``solver`` runs on ``spec`` (printed by the command line)."""
    method = pick(spec, solver)
    if method == "bab":
        why = "" if solver == "bab" else (" (auto: the MIP cannot encode this net)" if not mip_encodable(spec)
                                           else f" (auto: {spec.n_items} items per agent)")
        return "method: bab, batched branch and bound with linear relaxations" + why
    if method == "planar":
        return "method: planar, exact linear-region enumeration"
    name = "Gurobi or SCIP by licence" if method == MIP_AUTO else method
    why = f" (auto: {spec.n_items} items per agent)" if solver == "auto" else ""
    return f"method: exact MIP ({name}){why}"
