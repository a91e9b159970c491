"""Certification of a mechanism's strategyproofness (regret): proofs, not estimates.

* :mod:`certify.network`     -- the one float64 twin of ``mechanism.apply`` every certifier evaluates;
* :mod:`certify.rounding`    -- rigorous float32 / float64 rounding margins over a box of bids;
* :mod:`certify.certificate` -- what a certificate claims, its invariants, the vocabularies;
* :mod:`certify.tighten`     -- sound per-neuron bounds (IBP, CROWN, Planet LP) on a box of bids;
* :mod:`certify.mip`         -- the exact MIP: ``encoders`` (one per layer kind), ``model`` (the
  recorder), ``backends`` (Gurobi, SCIP), ``licensing`` (which solver may take a model);
* :mod:`certify.planar`      -- the MIP-free exact method for free-payment, 2-item mechanisms;
* :mod:`certify.regret`      -- :func:`certify_point`: the certified regret of one (profile, agent).
"""
from certify.certificate import Certificate, CertifyOptions
from certify.mip.encoders import EncodeOptions, RegretMIP, UnsupportedArchitecture
from certify.mip.licensing import LicenseLimitError
from certify.mip.model import SolveResult
from certify.regret import build_model, certify_point

__all__ = ["Certificate", "CertifyOptions", "EncodeOptions", "LicenseLimitError", "RegretMIP", "SolveResult",
           "UnsupportedArchitecture", "build_model", "certify_point"]
