"""The two-copy MIP for whole-space regret on a box (certify/mip/two_copy.py): against dense
float64 searches of R over the box, the per-profile certificate, a hand-computed regret, and its
refusals."""
import numpy as np
import pytest

from _nets import random_params
from certify.mip import licensing
from certify.mip.encoders import UnsupportedArchitecture
from certify.mip.two_copy import SLACK, max_regret_box
from certify.network import utility64, weights64
from certify.regret import certify_point
from jaxauction.mechanism import MechanismSpec
from test_certify_regret import hand_net

GAP = 1e-6


def net(n, payment, hidden=(6, 6), seed=0, **kw):
    spec = MechanismSpec(n_agents=n, n_items=2, hidden=hidden, allocation="sparsemax", payment=payment, **kw)
    return random_params(spec, np.random.default_rng(seed)), spec


def regret_many(w, spec, agent, v, bs):
    """R(v, b) for one profile v (N, M) and bids bs (K, M), from utility64 directly (an evaluation
    independent of two_copy's own replay)."""
    prof = np.repeat(v[None], len(bs), 0)
    prof[:, agent] = bs
    return utility64(w, spec, prof, v, agent) - utility64(w, spec, v, v, agent)


def corners(lo, hi):
    lo, hi = np.ravel(lo), np.ravel(hi)
    bits = (np.arange(2 ** lo.size)[:, None] >> np.arange(lo.size)) & 1
    return np.where(bits == 1, hi, lo)


def check_result(r, params, spec, agent, v_lo, v_hi, b_lo, b_hi, searched_max):
    """The contract: a real optimal point replayed to 1e-9, lower <= upper, the bound above every
    searched point, and the gap closed (so lower is also within the gap of the search's best)."""
    assert r.status == "optimal", r.message
    assert r.v.shape == v_lo.shape and r.b.shape == b_lo.shape
    assert np.all(v_lo <= r.v) and np.all(r.v <= v_hi) and np.all(b_lo <= r.b) and np.all(r.b <= b_hi)
    w = weights64(params)
    assert abs(regret_many(w, spec, agent, r.v, r.b[None])[0] - r.lower) <= 1e-9
    assert r.lower <= r.upper
    assert r.upper >= searched_max, (r.upper, searched_max)
    assert 0 < r.gap_tol < 1e-5 and r.upper - r.lower <= GAP + r.gap_tol
    assert r.lower >= searched_max - GAP - r.gap_tol


@pytest.mark.parametrize("payment,towers", [("fractional", "shared"), ("free", "shared"), ("fractional", "separate")])
@pytest.mark.parametrize("box_seed", [1, 2])
def test_1x2_against_dense_grid(payment, towers, box_seed):
    params, spec = net(1, payment, towers=towers)
    rng = np.random.default_rng(box_seed)
    v_lo = rng.uniform(0, 0.7, (1, 2)); v_hi = v_lo + rng.uniform(0.1, 0.3, (1, 2))
    b_lo = rng.uniform(0, 0.7, 2); b_hi = b_lo + rng.uniform(0.1, 0.3, 2)
    r = max_regret_box(params, spec, 0, v_lo, v_hi, b_lo, b_hi, gap=GAP)
    w = weights64(params)
    k = 11  # 11^4 points: a grid over v (N=1: 2 dims) times a grid over b
    axes = lambda lo, hi: np.stack(np.meshgrid(*[np.linspace(a, b, k) for a, b in zip(lo, hi)], indexing="ij"), -1)
    bs = axes(b_lo, b_hi).reshape(-1, 2)
    best = max(float(np.max(regret_many(w, spec, 0, v.reshape(1, 2), bs))) for v in axes(v_lo[0], v_hi[0]).reshape(-1, 2))
    check_result(r, params, spec, 0, v_lo, v_hi, b_lo, b_hi, best)


@pytest.mark.parametrize("payment", ["fractional", "free"])
@pytest.mark.parametrize("agent", [0, 1])
def test_2x2_against_random_search(payment, agent):
    params, spec = net(2, payment, seed=5)
    rng = np.random.default_rng(10 + agent)
    v_lo = rng.uniform(0, 0.7, (2, 2)); v_hi = v_lo + rng.uniform(0.1, 0.3, (2, 2))
    b_lo = rng.uniform(0, 0.7, 2); b_hi = b_lo + rng.uniform(0.1, 0.3, 2)
    r = max_regret_box(params, spec, agent, v_lo, v_hi, b_lo, b_hi, gap=GAP)
    w = weights64(params)
    # 200 random profiles x 100 random bids each (20000 points), plus every corner of both boxes
    best = -np.inf
    for _ in range(200):
        v = v_lo + rng.random((2, 2)) * (v_hi - v_lo)
        best = max(best, float(np.max(regret_many(w, spec, agent, v, b_lo + rng.random((100, 2)) * (b_hi - b_lo)))))
    for v in corners(v_lo, v_hi):
        best = max(best, float(np.max(regret_many(w, spec, agent, v.reshape(2, 2), corners(b_lo, b_hi)))))
    check_result(r, params, spec, agent, v_lo, v_hi, b_lo, b_hi, best)


def test_hand_net_whole_space_regret():
    """1 agent, 1 item (test_certify_regret.hand_net): a(b) = b, p(b) = b^3 / 2, so
    R(v, b) = v b - b^3/2 - v^2 + v^3/2, maximal over b in [0, 1] at b = sqrt(2v/3), so
    max_b R = v^3/2 - v^2 + (2v/3)^(3/2), maximized over v in [0.5, 0.9] on a fine grid."""
    params, spec, *_ = hand_net("fractional")
    r = max_regret_box(params, spec, 0, [[0.5]], [[0.9]], [0.0], [1.0], gap=GAP)
    vs = np.linspace(0.5, 0.9, 40001)
    exact = float(np.max(vs ** 3 / 2 - vs ** 2 + (2 * vs / 3) ** 1.5))   # ~ the exact function (float32 weights exact)
    check_result(r, params, spec, 0, np.array([[0.5]]), np.array([[0.9]]), np.zeros(1), np.ones(1), exact - 1e-7)
    assert r.lower == pytest.approx(exact, abs=1e-6)


@pytest.mark.parametrize("case", ["hand_fractional", "hand_free", "2x2_fractional", "2x2_free"])
def test_fixed_profile_equals_certificate(case):
    """v_lo == v_hi: the per-profile regret max_b R(v, b), which certify_point certifies."""
    if case.startswith("hand"):
        params, spec, v, _, exact = hand_net(case.split("_")[1])
        agent, b_lo, b_hi = 0, np.zeros(1), np.ones(1)
    else:
        params, spec = net(2, case.split("_")[1], seed=3)
        v, agent, b_lo, b_hi, exact = np.random.default_rng(4).random((2, 2)), 1, np.zeros(2), np.ones(2), None
    r = max_regret_box(params, spec, agent, v, v, b_lo, b_hi, gap=GAP)
    c = certify_point(params, spec, v, agent, solver="scip", pgd_steps=0)
    assert r.status == "optimal" and c.status == "optimal", (r.message, c.message)
    assert np.array_equal(r.v, v)
    assert r.lower == pytest.approx(c.regret_lower, abs=1e-6)
    # both bounds on the same maximum: the two-copy one adds its SLACK on top of the dual bound
    assert c.regret_lower <= r.upper and r.lower <= c.regret_upper_exact
    assert abs(r.upper - c.regret_upper_exact) <= 1e-6 + SLACK * (1 + abs(r.upper))
    if exact is not None:
        assert r.lower == pytest.approx(exact, abs=1e-6)


def test_time_limit_reports_bounds_reached():
    params, spec = net(2, "fractional", hidden=(12, 12), seed=7)
    r = max_regret_box(params, spec, 0, np.zeros((2, 2)), np.ones((2, 2)), np.zeros(2), np.ones(2), time_limit=0.05)
    assert r.status == "time_limit", r.message
    assert r.lower <= r.upper                      # upper may be inf (no bound yet)
    assert abs(regret_many(weights64(params), spec, 0, r.v, r.b[None])[0] - r.lower) <= 1e-9


@pytest.mark.parametrize("kw,what", [(dict(allocation="softmax"), "softmax"), (dict(activation="tanh"), "tanh"),
                                     (dict(payment="fractional_sigmoid"), "sigmoid")])
def test_refuses_unsupported_architecture(kw, what):
    spec = MechanismSpec(**{**dict(n_agents=1, n_items=2, hidden=(4,), allocation="sparsemax", payment="free"), **kw})
    params = random_params(spec, np.random.default_rng(0))
    with pytest.raises(UnsupportedArchitecture, match=what):
        max_regret_box(params, spec, 0, np.zeros((1, 2)), np.ones((1, 2)), np.zeros(2), np.ones(2))


def test_bad_boxes_and_arguments():
    params, spec = net(1, "free", hidden=(4,))
    lo, hi, blo, bhi = np.zeros((1, 2)), np.ones((1, 2)), np.zeros(2), np.ones(2)
    bad = [((lo, np.array([[1.0, -0.5]]), blo, bhi), {}, r"empty box: v_lo\[0, 1\] = 0.0 > v_hi\[0, 1\] = -0.5"),
           ((lo, hi, np.array([0.2, 0.9]), np.array([0.3, 0.5])), {}, r"empty box: b_lo\[1\]"),
           ((np.zeros(2), hi, blo, bhi), {}, r"v_lo has shape \(2,\), expected \(1, 2\)"),
           ((lo, np.ones((2, 2)), blo, bhi), {}, r"v_hi has shape \(2, 2\), expected \(1, 2\)"),
           ((lo, hi, np.zeros(3), bhi), {}, r"b_lo has shape \(3,\), expected \(2,\)"),
           ((lo, np.array([[1.0, np.nan]]), blo, bhi), {}, "v_hi contains NaN"),
           ((lo, hi, blo, bhi), dict(solver="cplex"), "solver must be one of"),
           ((lo, hi, blo, bhi), dict(time_limit=0.0), "time_limit must be positive"),
           ((lo, hi, blo, bhi), dict(gap=-1.0), "gap must be"),
           ((lo, hi, blo, bhi), dict(agent=1), "agent must be an integer")]
    for args, kw, msg in bad:
        kw = {"agent": 0, **kw}
        with pytest.raises(ValueError, match=msg):
            max_regret_box(params, spec, kw.pop("agent"), *args, **kw)


def test_gurobi_licence_refusal_is_raised():
    try:
        limited = licensing.gurobi_size_limited()
    except Exception:
        pytest.skip("Gurobi not usable here")
    if not limited:
        pytest.skip("a full Gurobi licence takes the model")
    params, spec = net(2, "fractional", hidden=(32, 32), seed=1)   # 280 variables, 8 bilinear equalities
    with pytest.raises(licensing.LicenseLimitError, match="quadratic"):
        max_regret_box(params, spec, 0, np.zeros((2, 2)), np.ones((2, 2)), np.zeros(2), np.ones(2), solver="gurobi",
                       time_limit=5)


def test_gurobi_agrees_with_scip():
    try:
        licensing.gurobi_size_limited()
    except Exception:
        pytest.skip("Gurobi not usable here")
    params, spec = net(1, "fractional")
    box = (np.array([[0.2, 0.4]]), np.array([[0.4, 0.6]]), np.array([0.1, 0.3]), np.array([0.4, 0.6]))
    rs = {s: max_regret_box(params, spec, 0, *box, solver=s, gap=GAP) for s in ("scip", "gurobi")}
    assert rs["gurobi"].solver == "gurobi" and rs["scip"].solver == "scip"
    for r in rs.values():
        assert r.status == "optimal", r.message
    assert rs["gurobi"].lower == pytest.approx(rs["scip"].lower, abs=GAP + rs["scip"].gap_tol)
    assert rs["gurobi"].lower <= rs["scip"].upper and rs["scip"].lower <= rs["gurobi"].upper
