"""certify.planar: exact linear-region enumeration for 2-item free-payment mechanisms."""
import numpy as np
import pytest

from certify import planar
from certify.encoders import utility64
from certify.regret import certify_point
from certify.tighten import weights64
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
    assert c.regret_upper == pytest.approx(0.13, abs=1e-6)
    assert c.regret_lower == pytest.approx(0.13, abs=1e-6)
    assert c.best_misreport[0] == pytest.approx([1.0, 0.4], abs=1e-6)
    assert 0 <= c.gap <= 1e-6 and c.n_binaries == 0
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
        assert abs(c.regret_upper - pt["certified_regret"]) < 1e-5, (k, c.regret_upper, pt["certified_regret"])
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
        assert abs(c.regret_upper - pt["certified_regret"]) < 1e-5
