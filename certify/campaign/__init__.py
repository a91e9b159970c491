"""Certification campaigns: certify many (profile, agent) pairs of one mechanism, resumably, on a
local process pool or a Ray cluster.

A campaign certifies, for each valuation profile ``v^(p)`` (p = 0..P-1) and each requested agent i,

    rgt_i(v^(p)) = max_{b_i in [low_i, high_i]} u_i(b_i, v_-i) - u_i(v)

with :func:`certify.regret.certify_point` (or an injected ``certify_fn`` of the same signature),
and appends one JSON line per finished pair to ``OUT/results.jsonl``.

* :mod:`~certify.campaign.profiles`  -- profiles sampled from the prior or read from a file; agents;
* :mod:`~certify.campaign.results`   -- ``run.json``, ``results.jsonl`` (crash-safe), the lock, resume;
* :mod:`~certify.campaign.pair`      -- certifying one pair (errors recorded, fatal ones raised);
* :mod:`~certify.campaign.executors` -- where pairs run: this process, a local pool, Ray actors;
* :mod:`~certify.campaign.run`       -- :func:`run_certification`, which ties them together.
"""
from certify.campaign.errors import ManifestError, ProfileError, ResultsError, RunError
from certify.campaign.executors import EXECUTORS
from certify.campaign.pair import FATAL_ERRORS, is_fatal
from certify.campaign.profiles import (SAMPLE_BLOCK, parse_agents, read_profiles_file, sample_profiles,
                                       validate_profiles)
from certify.campaign.results import MANIFEST, RESULTS, latest_by_pair, read_results
from certify.campaign.run import check_certifiable, run_certification

__all__ = ["EXECUTORS", "FATAL_ERRORS", "MANIFEST", "RESULTS", "SAMPLE_BLOCK", "ManifestError", "ProfileError",
           "ResultsError", "RunError", "check_certifiable", "is_fatal", "latest_by_pair", "parse_agents",
           "read_profiles_file", "read_results", "run_certification", "sample_profiles", "validate_profiles"]
