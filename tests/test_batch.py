"""Many pairs in one branch-and-bound pool: bab.maximize_many, batch.certify_many, --batch-pairs."""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from certify import bab, batch, campaign, certificate, regret
from certify.network import utility64, weights64
from jaxauction import checkpoints, mechanism
from jaxauction.mechanism import MechanismSpec

SPEC = MechanismSpec(n_agents=2, n_items=2, hidden=(8,), activation="tanh", towers="separate",
                     allocation="softmax", payment="fractional_sigmoid")


def net(seed=0):
    return mechanism.init(jax.random.PRNGKey(seed), SPEC)


def profiles(k, seed=0):
    return np.random.default_rng(seed).random((k, 2, 2)).astype(np.float32).astype(np.float64)


def test_maximize_many_proves_what_maximize_proves():
    params = net(1)
    w = weights64(params)
    lo, hi = np.zeros(2), np.ones(2)
    vs = profiles(5, 1)
    probs = [bab.Problem(w, SPEC, v, 1, batch=64) for v in vs]
    incs = [(utility64(w, SPEC, v, v, 1), v[1]) for v in vs]
    many = bab.maximize_many(probs, lo, hi, incs=incs, gap=1e-6)
    for p, inc, m in zip(probs, incs, many):
        one = bab.maximize(p, lo, hi, inc_u=inc[0], inc_b=inc[1], gap=1e-6)
        assert m.status == one.status == "optimal"
        assert m.best_u <= one.upper + 1e-12 and one.best_u <= m.upper + 1e-12     # the brackets overlap
        assert m.upper - m.best_u <= 1e-6 and m.best_u >= inc[0]
        # the leaves partition the box: a dense set of bids each lies in a leaf whose bound covers it
        xl, xu, ub = m.leaves
        g = np.stack(np.meshgrid(np.linspace(0, 1, 41), np.linspace(0, 1, 41), indexing="ij"), -1).reshape(-1, 2)
        inside = np.all((g[:, None] >= xl[None] - 1e-15) & (g[:, None] <= xu[None] + 1e-15), axis=2)
        assert inside.any(axis=1).all()
        prof = np.repeat(p.v[None], len(g), 0)
        prof[:, 1] = g
        u = utility64(w, SPEC, prof, p.v, 1)
        cover = np.where(inside, ub[None], -np.inf).max(axis=1)
        assert np.all(u <= cover + 1e-9)


def test_maximize_many_deadline_and_refusals():
    params = net(2)
    w = weights64(params)
    vs = profiles(3, 2)
    probs = [bab.Problem(w, SPEC, v, 0, batch=64) for v in vs]
    res = bab.maximize_many(probs, np.zeros(2), np.ones(2), gap=1e-12, deadline=0.0)  # already past
    for r in res:
        assert r.status == "time_limit" and np.isfinite(r.upper) and r.best_u <= r.upper
    with pytest.raises(ValueError, match="one agent"):
        bab.maximize_many(probs + [bab.Problem(w, SPEC, vs[0], 1, batch=64)], np.zeros(2), np.ones(2))
    assert bab.maximize_many([], np.zeros(2), np.ones(2)) == []


def test_certify_many_agrees_with_certify_point():
    params = net(3)
    vs = profiles(4, 3)
    certs = batch.certify_many(params, SPEC, vs, 0, pgd_steps=50)
    assert len(certs) == 4
    for v, c in zip(vs, certs):
        one = regret.certify_point(params, SPEC, v, 0, solver="bab", pgd_steps=50)
        certificate.check_invariants(c)
        assert c.solver == "bab" and c.status == one.status == "optimal"
        assert c.regret_lower <= one.regret_upper_exact + 1e-9 and one.regret_lower <= c.regret_upper_exact + 1e-9
        assert abs(c.truthful_utility - one.truthful_utility) < 1e-12
    with pytest.raises(ValueError, match="shape"):
        batch.certify_many(params, SPEC, np.zeros((2, 3, 2)), 0)


def test_batch_pairs_campaign_writes_resumes_and_refuses(tmp_path):
    ck = tmp_path / "ck"
    checkpoints.save_mechanism(ck, net(4), SPEC)
    out = tmp_path / "cert"
    recs = campaign.run_certification(str(ck), out, points=3, solver="bab", batch_pairs=3, progress=False,
                                      certify_kwargs={"pgd_steps": 0})
    assert sorted((r["point"], r["agent"]) for r in recs) == [(p, a) for p in range(3) for a in range(2)]
    lines = (out / "results.jsonl").read_text().splitlines()
    assert len(lines) == 6
    for r in map(json.loads, lines):
        certificate.check_invariants(r)
        assert r["solver"] == "bab" and r["status"] == "optimal" and r["wall_s"] > 0
    # resume: nothing left to do, nothing written twice; two more points: only those run
    campaign.run_certification(str(ck), out, points=3, solver="bab", batch_pairs=3, progress=False,
                               certify_kwargs={"pgd_steps": 0})
    assert len((out / "results.jsonl").read_text().splitlines()) == 6
    campaign.run_certification(str(ck), out, points=5, solver="bab", batch_pairs=4, progress=False,
                               certify_kwargs={"pgd_steps": 0})
    assert len((out / "results.jsonl").read_text().splitlines()) == 10
    relu = MechanismSpec(n_agents=1, n_items=2, hidden=(8,), allocation="sparsemax", payment="free")
    ck2 = tmp_path / "ck2"
    checkpoints.save_mechanism(ck2, mechanism.init(jax.random.PRNGKey(0), relu), relu)
    with pytest.raises(campaign.RunError, match="needs bab"):
        campaign.run_certification(str(ck2), tmp_path / "c2", points=2, solver="mip", batch_pairs=2, progress=False)
    with pytest.raises(campaign.RunError, match="workers 1"):
        campaign.run_certification(str(ck), tmp_path / "c3", points=2, solver="bab", batch_pairs=2, workers=2,
                                   progress=False)
