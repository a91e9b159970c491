"""Exact certification of a mechanism's strategyproofness (regret) by mixed-integer programming.

* :mod:`certify.tighten`  -- sound per-neuron bounds (IBP, CROWN, Planet LP) on a box of bids;
* :mod:`certify.encoders` -- the exact MIP of ``mechanism.apply`` for one misreporting agent;
* :mod:`certify.backends` -- one small model interface, with Gurobi and SCIP behind it;
* :mod:`certify.planar`   -- the MIP-free exact method for free-payment, 2-item mechanisms
  (linear-region enumeration over agent i's bid square);
* :mod:`certify.regret`   -- :func:`certify_point`: the certified regret of one (profile, agent).
"""
from certify.backends import LicenseLimitError, SolveResult
from certify.encoders import EncodeOptions, RegretMIP, UnsupportedArchitecture
from certify.regret import Certificate, CertifyOptions, build_model, certify_point

__all__ = ["Certificate", "CertifyOptions", "EncodeOptions", "LicenseLimitError", "RegretMIP", "SolveResult",
           "UnsupportedArchitecture", "build_model", "certify_point"]
