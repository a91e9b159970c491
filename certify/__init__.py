"""Certification of a mechanism's strategyproofness (regret): proofs, not estimates.

* :mod:`certify.network`     -- the one float64 twin of ``mechanism.apply`` every certifier evaluates;
* :mod:`certify.rounding`    -- rigorous float32 / float64 rounding margins over a box of bids;
* :mod:`certify.certificate` -- what a certificate claims, its invariants, the vocabularies;
* :mod:`certify.tighten`     -- sound per-neuron bounds (IBP, CROWN, Planet LP) on a box of bids;
* :mod:`certify.mip`         -- the exact MIP: ``encoders`` (one per layer kind), ``model`` (the
  recorder), ``backends`` (Gurobi, SCIP), ``licensing`` (which solver may take a model), ``search``
  (input-space branch and bound with MIP leaves);
* :mod:`certify.planar`      -- the MIP-free exact method for free-payment, 2-item mechanisms;
* :mod:`certify.regret`      -- :func:`certify_point`: the certified regret of one (profile, agent);
* :mod:`certify.campaign`    -- many pairs: profiles, the crash-safe results file, local and Ray executors;
* :mod:`certify.report`      -- tables and plots.

The names below are imported on first use (PEP 562), so ``import certify.campaign`` stays light.
"""
import importlib

_EXPORTS = {"Certificate": "certify.certificate", "CertifyOptions": "certify.certificate",
            "EncodeOptions": "certify.mip.encoders", "RegretMIP": "certify.mip.encoders",
            "UnsupportedArchitecture": "certify.mip.encoders", "LicenseLimitError": "certify.mip.licensing",
            "SolveResult": "certify.mip.model", "build_model": "certify.regret", "certify_point": "certify.regret"}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'certify' has no attribute {name!r}")
