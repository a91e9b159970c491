"""The batched branch and bound (``solver="bab"``, :mod:`certify.bab`): agreement with the exact MIP
on piecewise-linear nets, with a dense search on smooth ones, a hand-built net with a known
regret, honest time-outs and pool limits, refusals, and the command line.

Few network shapes (each compiles the bound kernel once, seconds): 1x2 and 2x2 with hidden (8,),
and the hand-built (2,) net.
"""
from __future__ import annotations

import json

import jax
import numpy as np
import pytest

import _nets
from certify import bab, certificate, methods, regret
from certify.certificate import CertifyOptions
from certify.network import utility64, weights64
from jaxauction import checkpoints, mechanism
from jaxauction.mechanism import MechanismSpec

F32 = np.float32


def spec_of(n, alloc="sparsemax", pay="free", act="relu", towers="shared", hidden=(8,)):
    return MechanismSpec(n_agents=n, n_items=2, hidden=hidden, allocation=alloc, payment=pay, activation=act,
                         towers=towers)


def random_case(spec, seed, low=0.0, high=1.0, scale=1.0):
    rng = np.random.default_rng(seed)
    params = _nets.random_params(spec, rng)
    if scale != 1.0:
        params = jax.tree_util.tree_map(lambda a: np.asarray(a * scale, F32), params)
    n = spec.n_agents
    v = (low + rng.random((n, 2)) * (high - low)).astype(F32).astype(np.float64)
    agent = int(rng.integers(n))
    return params, v, agent, np.full((n, 2), low), np.full((n, 2), high)


def check_bab_cert(c):
    """What every bab certificate must say (the constructor checks the invariants too)."""
    certificate.check_invariants(c)
    assert c.solver == "bab", c.solver
    assert c.status in certificate.STATUSES
    assert c.n_binaries == 0 and c.mip_objective is None
    assert c.nodes is not None and c.nodes >= 1 and c.n_boxes == c.nodes
    if c.regret_upper is not None:
        assert c.regret_upper_exact is not None
        assert c.regret_lower <= c.regret_upper_exact <= c.regret_upper + 1e-12
    if c.status == "optimal":
        assert c.gap <= c.gap_tol + 1e-12


def u64_at(params, spec, v, agent, bids):
    w = weights64(params)
    prof = np.repeat(v[None], len(bids), 0)
    prof[:, agent] = bids
    return np.asarray(utility64(w, spec, prof, v, agent))


def dense_max(params, spec, v, agent, lo, hi, n=201, refine=2):
    """max u64 over an n x n grid of the box, refined (twice) on a 21 x 21 grid one step around
    each of the 8 best points: (max utility, bid)."""
    axes = [np.linspace(lo[j], hi[j], n) for j in range(2)]
    pts = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 2)
    u = u64_at(params, spec, v, agent, pts)
    step = (hi - lo) / (n - 1)
    fine = np.stack(np.meshgrid(*[np.linspace(-1, 1, 21)] * 2, indexing="ij"), -1).reshape(-1, 2)
    for _ in range(refine):
        top = pts[np.argsort(-u)[:8]]
        loc = np.clip((top[:, None] + fine[None] * step).reshape(-1, 2), lo, hi)
        pts, u = np.concatenate([pts, loc]), np.concatenate([u, u64_at(params, spec, v, agent, loc)])
        step = step / 10
    k = int(np.argmax(u))
    return float(u[k]), pts[k]


# ------------------------------------------------------------------------------------------------
# bab vs the exact MIP (piecewise-linear nets)
# ------------------------------------------------------------------------------------------------
MIP_CASES = [(n, pay, seed) for n in (1, 2) for pay in ("free", "fractional") for seed in (0, 1)]


@pytest.mark.parametrize("n,pay,seed", MIP_CASES, ids=[f"{n}x2-{p}-s{s}" for n, p, s in MIP_CASES])
def test_bab_agrees_with_the_mip(n, pay, seed):
    spec = spec_of(n, pay=pay)
    params, v, agent, low, high = random_case(spec, 100 + seed, low=-1.0 if seed else 0.0)
    cb = regret.certify_point(params, spec, v, agent, low=low, high=high, solver="bab", pgd_steps=0)
    cm = regret.certify_point(params, spec, v, agent, low=low, high=high, solver="scip", pgd_steps=0)
    check_bab_cert(cb)
    assert cb.status == "optimal" and cm.status == "optimal", (cb.message, cm.message)
    # both brackets of the exact regret overlap and are narrow
    lo = max(cb.regret_lower, cm.regret_lower)
    hi = min(cb.regret_upper_exact, cm.regret_upper_exact)
    assert lo <= hi + 1e-9, (cb.regret_lower, cb.regret_upper_exact, cm.regret_lower, cm.regret_upper_exact)
    assert cb.regret_upper_exact - cb.regret_lower <= 1e-5
    assert cm.regret_upper_exact - cm.regret_lower <= 1e-5
    assert abs(cb.truthful_utility - cm.truthful_utility) <= 1e-12


@pytest.mark.slow
@pytest.mark.parametrize("seed", range(2, 12))
@pytest.mark.parametrize("n,pay", [(1, "free"), (2, "fractional"), (2, "free")])
def test_bab_agrees_with_the_mip_more_seeds(n, pay, seed):
    test_bab_agrees_with_the_mip(n, pay, seed)


# ------------------------------------------------------------------------------------------------
# bab vs dense search (smooth nets)
# ------------------------------------------------------------------------------------------------
SMOOTH_CASES = [(1, "shared", 0), (1, "separate", 1), (2, "shared", 2)]


@pytest.mark.parametrize("n,towers,seed", SMOOTH_CASES, ids=[f"{n}x2-{t}-s{s}" for n, t, s in SMOOTH_CASES])
def test_bab_brackets_the_dense_search_on_smooth_nets(n, towers, seed):
    spec = spec_of(n, alloc="softmax", pay="fractional_sigmoid", act="tanh", towers=towers)
    params, v, agent, low, high = random_case(spec, 200 + seed, scale=2.0)
    opts = CertifyOptions()
    c = regret.certify_point(params, spec, v, agent, low=low, high=high, solver="bab", pgd_steps=0, options=opts)
    check_bab_cert(c)
    assert c.status == "optimal", c.message
    umax, b = dense_max(params, spec, v, agent, low[agent], high[agent])
    dense = umax - c.truthful_utility
    assert dense >= 0.0
    assert c.regret_upper_exact >= dense - 1e-9, (c.regret_upper_exact, dense, b)
    assert c.regret_upper >= dense - 1e-9
    # the refined grid finds the maximum to ~1e-8 on these smooth nets
    assert c.regret_lower <= dense + 1e-7, (c.regret_lower, dense, b)
    # within bab's gap plus the float64 twin's rounding margins (~1e-13 here)
    assert c.regret_upper_exact - c.regret_lower <= opts.bab_gap + 1e-9, c


# ------------------------------------------------------------------------------------------------
# a hand-built smooth net with a known regret
# ------------------------------------------------------------------------------------------------
def hand_net():
    """1x2, tanh trunk of 2 neurons ``h_j = tanh(b_j - 1/2)``, softmax over (agent, dummy) with
    logits ``s_0 = 4 h_0``, ``s_1 = -2 h_1`` (dummy 0), free payment 0.3: ``a_0 = sigmoid(4 h_0)``
    rises with b_0 and ``a_1 = sigmoid(-2 h_1)`` falls with b_1, so for v > 0 the best bid is
    (1, 0) and the regret is ``(a_0(1) - a_0(v_0)) v_0 + (a_1(0) - a_1(v_1)) v_1`` exactly."""
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(2,), allocation="softmax", payment="free",
                         activation="tanh")
    wa = np.zeros((2, 4))          # columns: (agent item 0, agent item 1, dummy item 0, dummy item 1)
    wa[0, 0], wa[1, 1] = 4.0, -2.0
    params = _nets.make_params(spec, trunk=[(np.eye(2), [-0.5, -0.5])], alloc=(wa, np.zeros(4)),
                               pay=(np.zeros((2, 1)), [0.3]))
    return params, spec


def hand_regret(v):
    sig = lambda z: 1.0 / (1.0 + np.exp(-z))
    a0 = lambda b: sig(4.0 * np.tanh(b - 0.5))
    a1 = lambda b: sig(-2.0 * np.tanh(b - 0.5))
    return (a0(1.0) - a0(v[0])) * v[0] + (a1(0.0) - a1(v[1])) * v[1]


@pytest.mark.parametrize("v", [(0.3, 0.8), (0.9, 0.1), (0.5, 0.5)])
def test_hand_built_net_known_regret(v):
    params, spec = hand_net()
    vv = np.array([v], np.float64)
    truth = hand_regret(vv[0])
    c = regret.certify_point(params, spec, vv, 0, solver="bab", pgd_steps=0)
    check_bab_cert(c)
    assert c.status == "optimal", c.message
    assert c.regret_lower <= truth + 1e-12 <= c.regret_upper_exact + 2e-12, (c.regret_lower, truth, c.regret_upper_exact)
    assert c.regret_upper >= truth
    assert c.regret_upper_exact - c.regret_lower <= 1e-5
    assert np.allclose(np.asarray(c.best_misreport)[0], [1.0, 0.0], atol=1e-2), c.best_misreport


# ------------------------------------------------------------------------------------------------
# time-outs and pool limits are reported as such
# ------------------------------------------------------------------------------------------------
def test_time_limit_is_honest():
    spec = spec_of(2, pay="fractional")
    params, v, agent, low, high = random_case(spec, 7, scale=30.0)
    opts = CertifyOptions(bab_gap=1e-12)
    c = regret.certify_point(params, spec, v, agent, low=low, high=high, solver="bab", pgd_steps=0,
                             time_limit=1e-3, options=opts)
    check_bab_cert(c)
    assert c.status == "time_limit", (c.status, c.message)
    assert c.regret_upper is not None and np.isfinite(c.regret_upper) and c.regret_upper >= c.regret_lower
    umax, _ = dense_max(params, spec, v, agent, low[agent], high[agent], refine=0)
    assert c.regret_upper_exact >= umax - c.truthful_utility - 1e-9
    assert "time limit" in c.message


def test_max_open_gives_gap_open_and_valid_bounds():
    spec = spec_of(2, pay="fractional")
    params, v, agent, low, high = random_case(spec, 7, scale=30.0)
    prob = bab.Problem(weights64(params), spec, v, agent, batch=512)
    res = bab.maximize(prob, low[agent], high[agent], gap=1e-12, max_open=3)
    assert res.status == "gap_open", res
    assert "max_open" in res.message
    umax, _ = dense_max(params, spec, v, agent, low[agent], high[agent], refine=0)
    assert res.best_u <= umax + 1e-12 and res.upper >= umax - 1e-12
    assert np.isfinite(res.upper) and res.upper > res.best_u
    # and a generous pool ends the same problem with a bracket of the grid's maximum
    res2 = bab.maximize(prob, low[agent], high[agent], gap=1e-6, branching="slope")
    assert res2.status == "optimal" and res2.upper - res2.best_u <= 1e-6
    assert res2.upper >= umax - 1e-12 and res2.upper <= res.upper + 1e-12
    assert abs(float(u64_at(params, spec, v, agent, res2.best_b[None])[0]) - res2.best_u) <= 1e-9


def test_deadline_in_the_past_stops_after_the_root():
    spec = spec_of(2, pay="fractional")
    params, v, agent, low, high = random_case(spec, 7, scale=30.0)
    prob = bab.Problem(weights64(params), spec, v, agent, batch=512)
    res = bab.maximize(prob, low[agent], high[agent], gap=1e-12, deadline=0.0)
    assert res.status == "time_limit" and res.rounds == 0 and res.boxes == 1 and res.open == 1
    assert res.upper >= res.best_u


# ------------------------------------------------------------------------------------------------
# refusals
# ------------------------------------------------------------------------------------------------
def test_mip_refuses_smooth_nets_and_names_bab():
    for spec in (spec_of(1, alloc="softmax", pay="fractional_sigmoid", act="tanh"),
                 spec_of(1, act="tanh"), spec_of(1, alloc="softmax")):
        params, v, agent, low, high = random_case(spec, 0)
        with pytest.raises(ValueError, match="bab"):
            regret.certify_point(params, spec, v, agent, solver="scip", pgd_steps=0)
        assert methods.pick(spec, "auto") == "bab"
        assert not methods.mip_encodable(spec)


def test_auto_rule():
    """auto: bab where the MIP cannot encode the net; bab then the MIP on small single-bidder
    piecewise-linear nets; the MIP on the other piecewise-linear nets (certify/methods.py)."""
    assert methods.pick(spec_of(1), "auto") == methods.PLANAR_THEN_MIP          # free payment, 2 items
    assert methods.pick(spec_of(1), "auto", n_unstable=200) == methods.BAB_THEN_MIP
    assert methods.pick(spec_of(1), "auto", n_unstable=100) == methods.PLANAR_THEN_MIP
    assert methods.pick(spec_of(1, pay="fractional"), "auto", n_unstable=10) == methods.BAB_THEN_MIP
    assert methods.pick(spec_of(2, pay="fractional"), "auto", n_unstable=100) == methods.MIP_AUTO
    assert methods.pick(spec_of(2, pay="fractional"), "auto", n_unstable=150) == methods.BAB_THEN_MIP
    assert methods.pick(spec_of(2), "auto") == methods.MIP_AUTO
    big = MechanismSpec(n_agents=2, n_items=3, hidden=(8,))
    assert methods.pick(big, "auto") == methods.MIP_AUTO
    smooth3 = MechanismSpec(n_agents=2, n_items=3, hidden=(8,), activation="tanh", allocation="softmax")
    assert methods.pick(smooth3, "auto") == "bab"
    assert methods.pick(spec_of(2), "mip") == methods.MIP_AUTO and methods.pick(spec_of(2), "bab") == "bab"
    assert "bab" in methods.describe(spec_of(1, act="tanh"), "auto")
    assert "then the exact MIP" in methods.describe(spec_of(1), "auto")
    assert "bab first" in methods.describe(spec_of(1, pay="fractional"), "auto")
    assert "bab first" in methods.describe(spec_of(2, pay="fractional"), "auto")


def test_auto_falls_back_from_bab_to_the_mip(monkeypatch):
    """A bab attempt that does not close its gap within the box budget hands over to the MIP,
    whose certificate (with bab's best bid as a start) is the result."""
    spec = spec_of(1, pay="fractional")
    params, v, agent, low, high = random_case(spec, 3)
    exact = regret.certify_point(params, spec, v, agent, solver="scip", pgd_steps=0)
    monkeypatch.setattr(methods, "BAB_MIN_UNSTABLE", 0)
    monkeypatch.setattr(methods, "BAB_FIRST_BOXES", 1)
    c = regret.certify_point(params, spec, v, agent, solver="auto", pgd_steps=0)
    assert c.solver in ("gurobi", "scip") and "bab first" in c.message and c.status == "optimal"
    assert abs(c.regret_upper_exact - exact.regret_upper_exact) < 1e-5
    monkeypatch.setattr(methods, "BAB_FIRST_BOXES", 10 ** 9)
    c = regret.certify_point(params, spec, v, agent, solver="auto", pgd_steps=0)
    assert c.solver == "bab" and c.status == "optimal"
    assert c.regret_lower <= exact.regret_upper_exact + 1e-9 and exact.regret_lower <= c.regret_upper_exact + 1e-9


def test_auto_falls_back_to_the_mip_where_bab_refuses():
    spec = MechanismSpec(n_agents=6, n_items=2, hidden=(8,))
    assert methods.pick(spec, "auto") == methods.MIP_AUTO


def test_bab_refusals():
    spec = spec_of(1)
    params, v, agent, low, high = random_case(spec, 0)
    prob = bab.Problem(weights64(params), spec, v, agent)
    with pytest.raises(ValueError, match="branching"):
        bab.maximize(prob, low[agent], high[agent], branching="nope")
    with pytest.raises(ValueError, match="gap"):
        bab.maximize(prob, low[agent], high[agent], gap=0.0)
    with pytest.raises(ValueError, match="bab_branching"):
        CertifyOptions(bab_branching="nope")
    wide = MechanismSpec(n_agents=1, n_items=2, hidden=(2500,), towers="separate")
    with pytest.raises(ValueError, match="fan-ins up to 4000"):
        methods.check(wide, "bab")
    big = MechanismSpec(n_agents=6, n_items=2, hidden=(4,))
    p6 = _nets.random_params(big, np.random.default_rng(0))
    with pytest.raises(ValueError, match="too many"):
        regret.certify_point(p6, big, np.full((6, 2), 0.5), 0, solver="bab", pgd_steps=0)
    with pytest.raises(ValueError, match="lp_file"):
        regret.certify_point(params, spec, v, agent, solver="bab", pgd_steps=0, lp_file="/tmp/x.lp")


# ------------------------------------------------------------------------------------------------
# the command line
# ------------------------------------------------------------------------------------------------
def test_cli_solver_bab_end_to_end(tmp_path):
    from test_certify_cli import run_cli

    spec = spec_of(1, alloc="softmax", pay="fractional_sigmoid", act="tanh", towers="separate")
    params = mechanism.init(jax.random.PRNGKey(3), spec)
    ck = tmp_path / "ck"
    checkpoints.save_mechanism(ck, params, spec)
    out = tmp_path / "cert"
    r = run_cli("--ckpt", ck, "--points", "2", "--solver", "bab", "--time-limit", "120", "--out", out)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [(x["point"], x["agent"]) for x in recs] == [(0, 0), (1, 0)]
    for x in recs:
        certificate.check_invariants(x)
        assert x["solver"] == "bab" and x["status"] == "optimal", x
        assert x["regret_upper"] >= x["pgd_regret"] - 1e-6
        assert x["n_binaries"] == 0
    assert (out / "summary.md").stat().st_size > 0
