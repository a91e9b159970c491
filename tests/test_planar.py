"""certify.planar: exact linear-region enumeration for 2-item free-payment mechanisms."""
import numpy as np
import pytest

from certify import planar
from certify.network import forward64, utility64, weights64
from certify.regret import certify_point
from jaxauction import mechanism
from jaxauction.checkpoints import load_mechanism
from jaxauction.mechanism import MechanismSpec
from test_tighten import random_net

f32 = lambda *a: np.array(a, np.float32)


def hand_net_2items(kink_w=(1.0, -1.0), kink_b=-0.6):
    """1 agent, 2 items, allocation a_j(b) = b_j (sparsemax of logits (2 b_j - 1, 0)).

    Trunk h = (relu(b_0), relu(b_1), relu(kink_w . b + kink_b)); payment q = 0.5 h_0 + 0.5 h_1 +
    1.5 h_2, clipped to [0, 2]. With the default kink (relu(b_0 - b_1 - 0.6))
    u(b) = (v_0 - 0.5) b_0 + (v_1 - 0.5) b_1 - 1.5 relu(b_0 - b_1 - 0.6).
    """
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(3,), allocation="sparsemax", payment="free", payment_max=2.0)
    params = {"trunk": [{"w": f32([1.0, 0.0, kink_w[0]], [0.0, 1.0, kink_w[1]]), "b": f32(0.0, 0.0, kink_b)}],
              "alloc": {"w": f32([2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]),
                        "b": f32(-1.0, -1.0, 0.0, 0.0)},
              "pay": {"w": f32([0.5], [0.5], [1.5]), "b": f32(0.0)}}
    return params, spec


def test_hand_built_two_item_network_known_optimum():
    """v = (0.9, 0.2): u = 0.4 b_0 - 0.3 b_1 - 1.5 relu(b_0 - b_1 - 0.6). Off the kink the slope
    pushes towards it from both sides, and along it u = 0.1 b_0 + 0.18, so the best bid is
    (1, 0.4) with u = 0.28; truthful u = 0.36 - 0.06 - 0.15 = 0.15: regret 0.13."""
    params, spec = hand_net_2items()
    v = np.array([[0.9, 0.2]])
    c = certify_point(params, spec, v, 0, solver="planar", pgd_steps=0)
    assert c.status == "optimal" and c.solver == "planar", c.message
    assert c.truthful_utility == pytest.approx(0.15, abs=1e-6)
    assert c.regret_upper_exact == pytest.approx(0.13, abs=1e-6)
    assert c.regret_upper == pytest.approx(0.13 + c.margin, abs=1e-6)
    assert c.regret_lower == pytest.approx(0.13, abs=1e-6)
    assert c.best_misreport[0] == pytest.approx([1.0, 0.4], abs=1e-6)
    assert 0 <= c.gap <= c.gap_tol and c.gap - c.margin <= 1e-6 and c.n_binaries == 0
    assert "linear regions" in c.message


def test_cut_lines_through_vertices_are_exact():
    """A kink along the box diagonal (relu(b_0 - b_1)) passes exactly through two corners."""
    params, spec = hand_net_2items(kink_w=(1.0, -1.0), kink_b=0.0)
    w = weights64(params)
    v = np.array([[0.9, 0.8]])
    # u = 0.4 b_0 + 0.3 b_1 - 1.5 relu(b_0 - b_1): max over the square at (1, 1): 0.7
    res = planar.maximize_utility(w, spec, v, 0, np.zeros(2), np.ones(2))
    assert res.best_utility == pytest.approx(0.7, abs=1e-12)
    assert res.best_bids == pytest.approx([1.0, 1.0])
    assert res.n_regions == 2


def sampled_max(w, spec, v, agent, count=20000, seed=0):
    rng = np.random.default_rng(seed)
    prof = np.repeat(v[None], count, 0)
    prof[:, agent] = rng.random((count, spec.n_items))
    return float(np.max(utility64(w, spec, prof, v, agent)))


@pytest.mark.parametrize("n,seed,agent", [(1, 0, 0), (1, 1, 0), (2, 2, 0), (2, 3, 1), (3, 4, 2)])
def test_matches_the_mip_and_dominates_sampling(n, seed, agent):
    params, spec = random_net(40 + seed, n=n, m=2, hidden=(8, 8), payment="free")
    spec = MechanismSpec(n_agents=n, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free",
                         payment_max=2.0)
    v = np.random.default_rng(seed).random((n, 2))
    w = weights64(params)
    res = planar.maximize_utility(w, spec, v, agent, np.zeros(2), np.ones(2))
    assert res.n_regions > 1
    assert res.network_error < 1e-9
    assert res.upper >= sampled_max(w, spec, v, agent)  # soundness: no sampled bid beats the bound
    assert res.best_utility <= sampled_max(w, spec, v, agent) + 0.05  # and the vertex is a real bid
    c_p = certify_point(params, spec, v, agent, solver="planar", pgd_steps=100)
    c_m = certify_point(params, spec, v, agent, solver="scip", pgd_steps=100)
    assert c_p.status == c_m.status == "optimal", (c_p.message, c_m.message)
    assert c_p.regret_upper == pytest.approx(c_m.regret_upper, abs=2e-6)
    assert c_p.regret_lower == pytest.approx(c_m.regret_lower, abs=2e-6)
    assert c_p.regret_upper >= c_p.pgd_regret - 1e-6


def test_single_bidder_regions_are_enumerated_once():
    params, spec = random_net(7, n=1, m=2, hidden=(8, 8), payment="free")
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free", payment_max=2.0)
    w = weights64(params)
    box = (np.zeros(2), np.ones(2))
    planar.clear_cache()
    r1 = planar.maximize_utility(w, spec, np.array([[0.2, 0.7]]), 0, *box)
    r2 = planar.maximize_utility(w, spec, np.array([[0.9, 0.1]]), 0, *box)
    assert not r1.cached and r2.cached and r1.n_regions == r2.n_regions
    fresh = planar.enumerate_regions(w, spec, np.zeros((1, 2)), 0, *box)
    v2 = np.array([[0.9, 0.1]])
    prof = np.repeat(v2[None], len(fresh.points), 0)
    prof[:, 0] = fresh.points
    assert r2.best_utility == pytest.approx(float(np.max(utility64(w, spec, prof, v2, 0))), abs=1e-12)
    # two bidders: the other agent's bid changes the regions, so nothing is reused
    params2, _ = random_net(8, n=2, m=2, hidden=(8, 8), payment="free")
    spec2 = MechanismSpec(n_agents=2, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free", payment_max=2.0)
    w2 = weights64(params2)
    assert not planar.maximize_utility(w2, spec2, np.array([[0.2, 0.7], [0.5, 0.5]]), 0, *box).cached
    assert not planar.maximize_utility(w2, spec2, np.array([[0.2, 0.7], [0.6, 0.5]]), 0, *box).cached
    assert planar.maximize_utility(w2, spec2, np.array([[0.9, 0.9], [0.6, 0.5]]), 0, *box).cached


def test_refuses_what_it_cannot_do():
    params, spec = random_net(1, n=1, m=2, hidden=(4,), payment="fractional")
    with pytest.raises(planar.PlanarError, match="free .*payment"):
        certify_point(params, spec, np.full((1, 2), 0.5), 0, solver="planar")
    params, spec = random_net(1, n=1, m=3, hidden=(4,), payment="free")
    spec = MechanismSpec(n_agents=1, n_items=3, hidden=(4,), allocation="sparsemax", payment="free", payment_max=3.0)
    with pytest.raises(planar.PlanarError, match="2 items"):
        certify_point(params, spec, np.full((1, 3), 0.5), 0, solver="planar")
    assert issubclass(planar.PlanarError, ValueError)
    params, spec = hand_net_2items()
    with pytest.raises(ValueError, match="no MIP"):
        certify_point(params, spec, np.full((1, 2), 0.5), 0, solver="planar", lp_file="m.lp")


@pytest.mark.parametrize("name,points", [("1x2_sparsemax_linearpmt_distill_fast", 20),
                                         ("2x2_sparsemax_linearpmt_distill_fast", 2)])
def test_reference_networks_match_the_papers_certificates(refdir, name, points):
    params, spec, info = load_mechanism(refdir / f"{name}.npz")
    for k, pt in enumerate(info["json"]["results"][:points]):
        c = certify_point(params, spec, np.array(pt["truthful_input"]), 0, solver="planar")
        assert c.status == "optimal", c.message
        # the paper's certificates are about the exact function: compare the exact bound
        assert abs(c.regret_upper_exact - pt["certified_regret"]) < 1e-5, (k, c.regret_upper_exact, pt["certified_regret"])
        assert c.regret_upper >= pt["certified_regret"] - 1e-6
        assert abs(c.regret_lower - pt["certified_regret"]) < 1e-5


def test_time_limit_proves_nothing():
    """An enumeration cut short by the time limit reports status time_limit and no upper bound."""
    params, spec = random_net(5, n=2, m=2, hidden=(8, 8), payment="free")
    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free", payment_max=2.0)
    planar.clear_cache()
    c = certify_point(params, spec, np.full((2, 2), 0.5), 0, solver="planar", pgd_steps=0, time_limit=1e-6)
    assert c.status == "time_limit" and c.regret_upper is None and c.gap is None
    assert "time limit" in c.message and c.regret_lower is not None


def test_reference_2x2_agent1_matches_the_papers_certificates(refdir):
    params, spec, info = load_mechanism(refdir / "2x2_sparsemax_linearpmt_distill_fast.npz")
    for pt in info["json"]["results_agent1"][:2]:
        c = certify_point(params, spec, np.array(pt["truthful_input"]), 1, solver="planar")
        assert c.status == "optimal" and c.agent == 1
        assert abs(c.regret_upper_exact - pt["certified_regret"]) < 1e-5
        assert c.regret_upper >= pt["certified_regret"] - 1e-6


# --------------------------------------------------------------------------------------------
# sign decisions at every scale, and the a posteriori check (issue 12, finding 2)
# --------------------------------------------------------------------------------------------
C32 = float(np.float32(0.1))   # the payment's bias, as float32 stores it


def valley_net(scale=1e-12, weight=None, width=0.0):
    """1 agent, 2 items, both always allocated (logits (2, 0) per item: sparsemax gives (1, 0)).

    Trunk h = (relu(scale (1/2 - b_0)), relu(scale (b_0 - 1/2 - width))); payment q = 0.1 +
    weight (h_0 + h_1) (weight = 100 / scale by default), clipped to [0, 2]. So
    u(b) = v_0 + v_1 - clip(0.1 + 100 dist(b_0, [1/2, 1/2 + width]), 0, 2): the best bids put b_0 in
    the valley, u = v_0 + v_1 - 0.1; at v = (0.9, 0.2) the truthful payment is 2 (u = -0.9), so the
    regret is 2 - 0.1 = 1.9. The issue's finding 2 is ``valley_net(1e-12)`` (the weight 1e14).
    """
    weight = 100.0 / scale if weight is None else weight
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(2,), allocation="sparsemax", payment="free", payment_max=2.0)
    params = {"trunk": [{"w": f32([-scale, scale], [0.0, 0.0]),
                         "b": f32(0.5 * scale, -(0.5 + width) * scale)}],
              "alloc": {"w": np.zeros((2, 4), np.float32), "b": f32(2.0, 2.0, 0.0, 0.0)},
              "pay": {"w": f32([weight], [weight]), "b": f32(0.1)}}
    mechanism.check_params(params, spec)
    return params, spec


def dense_max(w, spec, v, agent, n=201):
    g = np.linspace(0.0, 1.0, n)
    b = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    prof = np.repeat(v[None], len(b), 0)
    prof[:, agent] = b
    return float(np.max(utility64(w, spec, prof, v, agent)))


def sound_or_refused(w, spec, v, agent, true_max, lo=np.zeros(2), hi=np.ones(2)):
    """The planar method's one contract: an upper bound at least the true maximum, or PlanarError."""
    planar.clear_cache()
    try:
        res = planar.maximize_utility(w, spec, v, agent, lo, hi)
    except planar.PlanarError as e:
        assert "use a MIP solver" in str(e)
        return None
    assert res.upper >= true_max, (res.upper, true_max)
    assert res.upper - res.best_utility == pytest.approx(res.tolerance, abs=1e-15)
    return res


@pytest.mark.parametrize("scale", [1e-12, 1e-20, 1e-9, 1e-3, 1.0])
def test_tiny_preactivations_into_a_huge_payment_weight_are_cut(scale):
    """Finding 2: pre-activations +-1e-12 (b_0 - 1/2) into a payment weight 1e14. The absolute
    1e-12 "on the line" test saw one region and proved regret <= 1e-9; the truth is 1.9. The
    scale-aware bands (here ~1e-27) cut the kink like any other, at every scale."""
    params, spec = valley_net(scale)
    w = weights64(params)
    v = np.array([[0.9, 0.2]])
    truthful = utility64(w, spec, v[None], v, 0)
    assert truthful == pytest.approx(-0.9, abs=1e-12)
    res = sound_or_refused(w, spec, v, 0, 1.1 - C32 - 1e-12)
    assert res is not None, "planar refused a net it can resolve"
    assert res.best_utility == pytest.approx(1.1 - C32, abs=1e-9)
    assert res.best_bids[0] == pytest.approx(0.5, abs=1e-9)
    assert res.best_utility - truthful == pytest.approx(1.9, abs=1e-6)  # the regret, not 1e-9
    assert res.n_regions == 4 and res.tolerance < 1e-6  # the kink at 1/2, the clip at q = 2 on both sides


def test_a_valley_narrower_than_any_grid_is_found():
    """Two kinks 2^-23 apart (b_0 in [1/2, 1/2 + 1.2e-7], payment 0.1 there, +1e6 per unit outside):
    no grid sees the valley (a dense search finds u = -0.9), the enumeration does. (At +1e9 per
    unit, float64 vertex positions, ~1e-15 off, would cost ~1e-6 of u: PlanarError.)"""
    params, spec = valley_net(1.0, weight=1e6, width=2.0 ** -23)
    w = weights64(params)
    v = np.array([[0.9, 0.2]])
    assert dense_max(w, spec, v, 0, n=200) == pytest.approx(-0.9, abs=1e-9)  # a grid off b_0 = 1/2
    res = sound_or_refused(w, spec, v, 0, 1.1 - C32 - 1e-12)
    assert res is not None
    assert res.best_utility == pytest.approx(1.1 - C32, abs=1e-9)
    assert 0.5 - 1e-12 <= res.best_bids[0] <= 0.5 + 2.0 ** -23 + 1e-12


def cancellation_net(weight):
    """Layer 2 computes z = relu(b_0 + 1e4) - relu(1e4 + 1/2) = b_0 - 1/2 exactly in real
    arithmetic, but in float64 with rounding noise ~1e-12 (terms of size 1e4); the payment is
    0.1 + weight |z|. Its kink at b_0 = 1/2 is decidable only to ~1e-12 in b_0, which costs ~weight
    x 1e-12 in u: a finite tolerance for moderate weights, an error for huge ones."""
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(2, 2), allocation="sparsemax", payment="free",
                         payment_max=2.0)
    params = {"trunk": [{"w": f32([1.0, 0.0], [0.0, 0.0]), "b": f32(1e4, 1e4 + 0.5)},
                        {"w": f32([1.0, -1.0], [-1.0, 1.0]), "b": f32(0.0, 0.0)}],
              "alloc": {"w": np.zeros((2, 4), np.float32), "b": f32(2.0, 2.0, 0.0, 0.0)},
              "pay": {"w": f32([weight], [weight]), "b": f32(0.1)}}
    mechanism.check_params(params, spec)
    return params, spec


@pytest.mark.parametrize("weight", [1e2, 1e3, 1e4, 1e8, 1e12])
def test_kinks_decidable_only_to_rounding_cost_a_tolerance_or_an_error(weight):
    """Never a bound below the true maximum 1.1 - 0.1 (at b_0 = 1/2): either the verified tolerance
    covers what the float64 enumeration cannot tell (~2e-10 x weight here), or PlanarError."""
    params, spec = cancellation_net(weight)
    w = weights64(params)
    v = np.array([[0.9, 0.2]])
    res = sound_or_refused(w, spec, v, 0, 1.1 - C32 - 1e-12)
    if weight <= 1e3:
        assert res is not None and res.best_utility == pytest.approx(1.1 - C32, abs=1e-9)
        assert 1e-12 * weight < res.tolerance < 1e-6
    if weight >= 1e8:
        assert res is None  # >= 1e-4 of u is undecidable in float64: refused, not guessed


def test_a_missed_kink_is_an_error_not_a_bound(monkeypatch):
    """The a posteriori check: an enumeration that misses a kink (here: no ReLU cuts at all) is
    caught by re-evaluating the lines at the final vertices: PlanarError, no bound."""
    params, spec = hand_net_2items()
    w = weights64(params)
    monkeypatch.setattr(planar, "_relu_cuts", lambda vals, tol_fn: lambda polys, rho: (
        np.zeros(len(polys.sizes), bool), np.zeros(len(polys.vals)), np.zeros(len(polys.vals))))
    planar.clear_cache()
    with pytest.raises(planar.PlanarError, match="could not resolve the network's kinks.*use a MIP solver"):
        planar.maximize_utility(w, spec, np.array([[0.9, 0.2]]), 0, np.zeros(2), np.ones(2))
    params, spec = valley_net(1e-12)
    with pytest.raises(planar.PlanarError, match="layer 1 neuron"):
        planar.maximize_utility(weights64(params), spec, np.array([[0.9, 0.2]]), 0, np.zeros(2), np.ones(2))
    planar.clear_cache()


def test_undecidable_values_widen_the_bound_or_refuse(monkeypatch):
    """With bands as wide as the old absolute test (every |z| <= 1e-12 'on the line'), finding 2's
    kink goes uncut; the check then bounds what the band neurons can change (1e-12 x 1e14 here)
    and refuses rather than report regret ~0."""
    params, spec = valley_net(1e-12)
    w = weights64(params)
    real = planar._scales

    def wide(*a):
        sc = real(*a)
        return sc._replace(err=[e + 1e-12 for e in sc.err])
    monkeypatch.setattr(planar, "_scales", wide)
    planar.clear_cache()
    with pytest.raises(planar.PlanarError, match="verified tolerance"):
        planar.maximize_utility(w, spec, np.array([[0.9, 0.2]]), 0, np.zeros(2), np.ones(2))
    planar.clear_cache()


def scaled(params, s):
    """The same function with layer 1 scaled by s and layer 2's weights by 1/s (ReLU is
    positively homogeneous; float32 rounds the scaled weights, ~1e-7 relative)."""
    out = {k: v for k, v in params.items()}
    t0, t1 = params["trunk"][0], params["trunk"][1]
    out["trunk"] = [{"w": (t0["w"] * s).astype(np.float32), "b": (t0["b"] * s).astype(np.float32)},
                    {"w": (t1["w"] / s).astype(np.float32), "b": t1["b"]}, *params["trunk"][2:]]
    return out


@pytest.mark.parametrize("s", [1e6, 1e-6, 1e-12, 2.0 ** 20, 2.0 ** -20, 2.0 ** -40])
def test_rescaled_network_has_the_same_regions(s):
    """Scaled by a power of two the function and every float64 step scale exactly: the very same
    regions and vertices (an absolute tolerance would not scale). By 1e6, 1e-6, 1e-12 float32 rounds
    the weights (~1e-7 relative): the same regions, vertices equal to ~1e-6."""
    params, spec = random_net(11, n=2, m=2, hidden=(8, 8), payment="free")
    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free",
                         payment_max=2.0)
    v = np.array([[0.3, 0.8], [0.6, 0.4]])
    box = (np.zeros(2), np.ones(2))
    base = planar.enumerate_regions(weights64(params), spec, v, 0, *box)
    res = planar.enumerate_regions(weights64(scaled(params, s)), spec, v, 0, *box)
    assert res.n_regions == base.n_regions
    if np.log2(s) == np.round(np.log2(s)):
        assert np.array_equal(res.points, base.points) and np.array_equal(res.sizes, base.sizes)
        assert np.array_equal(res.alloc, base.alloc) and np.array_equal(res.pay, base.pay)
    else:  # near-coincident vertices may merge or not: compare the sets both ways
        near = lambda a, b: np.max(np.min(np.abs(a[:, None] - b[None]).max(-1), 1))
        assert near(res.points, base.points) < 1e-5 and near(base.points, res.points) < 1e-5
    planar.clear_cache()
    r = planar.maximize_utility(weights64(scaled(params, s)), spec, v, 0, *box)
    assert r.best_utility == pytest.approx(float(np.max(base.alloc @ v[0] - base.pay)), abs=1e-5)
    assert r.tolerance <= 1e-8


def degenerate_nets():
    """Random nets made awkward: weights x30, duplicated and mirrored neurons (the same cut line
    two and three times), hyperplanes through box corners, a near-zero neuron."""
    out = []
    for seed in range(3):
        params, _ = random_net(60 + seed, n=2, m=2, hidden=(8, 8), payment="free")
        t0 = params["trunk"][0]
        w0, b0 = t0["w"].copy(), t0["b"].copy()
        w0[:, 1], b0[1] = w0[:, 0], b0[0]                       # duplicate
        w0[:, 2], b0[2] = -w0[:, 0], -b0[0]                     # mirror
        w0[:, 3] = [1.0, -1.0, 0.0, 0.0]
        b0[3] = 0.0                                            # b_0 = b_1: through (0, 0) and (1, 1)
        w0[:, 4] *= 1e-9                                       # near zero
        b0[4] *= 1e-9
        params["trunk"][0] = {"w": (w0 * (30 if seed == 0 else 1)).astype(np.float32), "b": b0}
        out.append(params)
    return out


@pytest.mark.parametrize("k", range(3))
def test_degenerate_nets_are_sound_against_dense_search(k):
    params = degenerate_nets()[k]
    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free",
                         payment_max=2.0)
    w = weights64(params)
    v = np.random.default_rng(k).random((2, 2))
    for agent in range(2):
        dm = dense_max(w, spec, v, agent)
        res = sound_or_refused(w, spec, v, agent, dm)
        assert res is not None
        assert res.best_utility <= dm + 0.05


def test_vertex_values_are_the_float64_twins():
    """The regions' allocations and payments are forward64's at the vertices, bit for bit, and the
    interpolated ones agree to rounding."""
    params, spec = random_net(3, n=2, m=2, hidden=(8, 8), payment="free")
    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(8, 8), allocation="sparsemax", payment="free",
                         payment_max=2.0)
    w = weights64(params)
    v = np.array([[0.2, 0.9], [0.5, 0.1]])
    r = planar.enumerate_regions(w, spec, v, 1, np.zeros(2), np.ones(2))
    prof = np.repeat(v[None], len(r.points), 0)
    prof[:, 1] = r.points
    a, p = forward64(w, spec, prof)
    assert np.array_equal(r.alloc, a[:, 1]) and np.array_equal(r.pay, p[:, 1])
    assert np.max(np.abs(r.interp_alloc - r.alloc)) < 1e-12 and np.max(np.abs(r.interp_pay - r.pay)) < 1e-12
    assert len(r.inverse) == r.sizes.sum() and r.dev_alloc.shape == (r.n_regions, 2)


@pytest.mark.parametrize("name", ["1x2_distill", "2x2_distill"])
def test_shipped_nets_verified_tolerance_is_small(name):
    """On the shipped free-payment nets the verified tolerance stays under the 1e-9 floor."""
    from conftest import REPO

    params, spec, _ = load_mechanism(REPO / "checkpoints" / name)
    w = weights64(params)
    v = np.full((spec.n_agents, 2), 0.5)
    planar.clear_cache()
    res = planar.maximize_utility(w, spec, v, 0, np.zeros(2), np.ones(2))
    assert res.tolerance == planar.TOLERANCE


@pytest.mark.parametrize("name,agent,points", [("1x2_sparsemax_linearpmt_distill_fast", 0, 20),
                                               ("2x2_sparsemax_linearpmt_distill_fast", 0, 3),
                                               ("2x2_sparsemax_linearpmt_distill_fast", 1, 3)])
def test_reference_networks_enumeration_matches_the_papers_regrets(refdir, name, agent, points):
    """The enumeration alone (no certify_point): float64 max over the box minus the truthful
    utility is the paper's certified regret, and the verified tolerance stays near the 1e-9 floor
    (1.1e-9 at worst here: the vertices' position error times u's Lipschitz bound)."""
    params, spec, info = load_mechanism(refdir / f"{name}.npz")
    w = weights64(params)
    key = "results" if agent == 0 else "results_agent1"
    planar.clear_cache()
    for pt in info["json"][key][:points]:
        v = np.array(pt["truthful_input"], np.float64)
        res = planar.maximize_utility(w, spec, v, agent, np.zeros(2), np.ones(2))
        regret = res.best_utility - utility64(w, spec, v[None], v, agent)
        assert abs(regret - pt["certified_regret"]) < 1e-5, (regret, pt["certified_regret"])
        assert res.tolerance < 1e-8
