"""certify_point: analytic cases, random networks vs sampling, the paper's certified regrets."""
import json

import jax.numpy as jnp
import numpy as np
import pytest

from certify.mip import backends as bk, licensing, model as mm
from certify.certificate import CertifyOptions, auto_split_unstable
from certify.regret import build_model, certify_point
from certify.mip.encoders import EncodeOptions, UnsupportedArchitecture
from certify.network import utility64, weights64
from jaxauction import auction
from jaxauction.checkpoints import load_mechanism
from jaxauction.mechanism import MechanismSpec
from test_tighten import random_net


def gurobi_available():
    try:
        licensing.gurobi_size_limited()
        return True
    except Exception:
        return False


SOLVERS = ["scip"] + (["gurobi"] if gurobi_available() else [])
ONE_MIP = CertifyOptions(split_unstable=None)


def hand_net(payment):
    """1 agent, 1 item, allocation a(b) = b on [0, 1] (sparsemax of logits (2b - 1, 0)).

    free:        trunk h = (relu(b), relu(b - 0.6)); q = 0.5 h_0 + 1.5 h_1;  p = clip(q, 0, 1)
                 u(b) = v b - 0.5 b - 1.5 relu(b - 0.6): for v = 0.8 the best bid is 0.6, u = 0.18,
                 truthful u(0.8) = -0.06, regret 0.24.
    fractional:  q = 5 b - 5, so f = hard_sigmoid(q) = b / 2 and p = f a b = b^3 / 2;
                 u(b) = v b - b^3 / 2 is maximized at b = sqrt(2 v / 3): for v = 0.9, b* = sqrt(0.6),
                 regret u(b*) - u(0.9) = 0.9 sqrt(0.6) - 0.3 sqrt(0.6) - 0.81 + 0.3645.
    """
    spec = MechanismSpec(n_agents=1, n_items=1, hidden=(2,), allocation="sparsemax", payment=payment, payment_max=1.0)
    f = lambda *a: np.array(a, np.float32)
    params = {"trunk": [{"w": f([1.0, 1.0]).reshape(1, 2), "b": f(0.0, -0.6)}],
              "alloc": {"w": f([2.0, 0.0], [0.0, 0.0]), "b": f(-1.0, 0.0)}}
    if payment == "free":
        params["pay"] = {"w": f([0.5], [1.5]), "b": f(0.0)}
        v, best, regret = 0.8, 0.6, 0.24
    else:
        params["pay"] = {"w": f([5.0], [0.0]), "b": f(-5.0)}
        v, best = 0.9, np.sqrt(0.6)
        regret = 0.9 * best - 0.5 * best ** 3 - (0.81 - 0.5 * 0.9 ** 3)
    return params, spec, np.array([[v]]), best, regret


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("payment", ["free", "fractional"])
@pytest.mark.parametrize("opts", [ONE_MIP, CertifyOptions()], ids=["one_mip", "split"])
def test_hand_built_network_known_optimum(payment, solver, opts):
    params, spec, v, best, regret = hand_net(payment)
    c = certify_point(params, spec, v, 0, solver=solver, pgd_steps=0, options=opts)
    assert c.status == "optimal", c.message
    assert c.solver == solver
    assert c.regret_upper_exact == pytest.approx(regret, abs=1e-5)
    assert c.regret_lower == pytest.approx(regret, abs=1e-5)
    assert c.best_misreport[0][0] == pytest.approx(best, abs=3e-3)
    # the float32 claim costs the rounding margin, no more
    assert c.regret_upper >= c.regret_upper_exact >= c.regret_lower
    assert c.regret_upper - c.regret_upper_exact <= c.margin + 1e-12 and 0 < c.margin < 1e-4
    assert c.mip_network_error is not None and c.mip_network_error < 1e-5
    json.dumps(c.to_json())


def sampled_best_regret(params, spec, v, agent, count=20000, seed=0):
    rng = np.random.default_rng(seed)
    prof = np.repeat(v[None], count, 0)
    prof[:, agent] = rng.random((count, spec.n_items))
    w = weights64(params)
    return float(np.max(utility64(w, spec, prof, v, agent)) - utility64(w, spec, v, v, agent))


@pytest.mark.parametrize("payment", ["free", "fractional"])
@pytest.mark.parametrize("seed", [0, 1])
def test_random_networks_certificate_dominates_search(payment, seed):
    params, spec = random_net(20 + seed, n=2, m=2, hidden=(8, 8, 8), payment=payment)
    v = np.random.default_rng(seed).random((2, 2))
    agent = seed % 2
    sampled = sampled_best_regret(params, spec, v, agent)
    results = {}
    for solver in SOLVERS:
        for name, opts in (("one_mip", ONE_MIP), ("split", CertifyOptions(split_unstable=4))):
            if solver == "gurobi" and name == "one_mip":
                mip = build_model(params, spec, v, agent, bounds="crown")
                if licensing.gurobi_size_limited() and licensing.gurobi_refusal(mip.backend.size()):
                    continue
            c = certify_point(params, spec, v, agent, solver=solver, pgd_steps=200, options=opts)
            assert c.status == "optimal", c.message
            assert c.regret_upper >= sampled - 1e-6
            assert c.regret_upper >= c.pgd_regret - 1e-6
            assert c.regret_upper_exact - c.regret_lower < 1e-5 and c.gap <= c.gap_tol
            assert c.mip_network_error is None or c.mip_network_error < 1e-5
            results[solver, name] = c.regret_upper_exact
    vals = list(results.values())
    assert max(vals) - min(vals) < 1e-5, results


def test_build_model_handle_reports_error():
    params, spec = random_net(3, hidden=(8, 8))
    v = np.random.default_rng(5).random((2, 2))
    mip = build_model(params, spec, v, 1).to("scip")
    res = mip.solve(time_limit=60)
    b = mip.misreport(res)
    assert b.shape == (2, 2) and np.allclose(b[0], v[0])
    assert mip.get_error(res, reference="float64") < 1e-6
    assert mip.get_error(res) < 1e-5  # vs the float32 JAX forward pass
    u_jax = float(auction.deviation_utilities(params, spec, jnp.asarray(v[None], jnp.float32),
                                              jnp.asarray(b[None], jnp.float32))[0, 1])
    assert abs(res.objective - u_jax) < 1e-5


def test_time_limit_keeps_honest_bounds():
    params, spec = random_net(8, n=2, m=2, hidden=(16, 16), payment="fractional")
    v = np.random.default_rng(8).random((2, 2))
    c = certify_point(params, spec, v, 0, solver="scip", pgd_steps=0, time_limit=0.05, options=ONE_MIP)
    assert c.status in ("time_limit", "optimal")
    assert c.regret_lower >= -1e-6
    if c.regret_upper is not None:
        exact = certify_point(params, spec, v, 0, solver="scip", pgd_steps=0)
        assert c.regret_upper >= exact.regret_upper_exact - 1e-6 and c.regret_lower <= exact.regret_lower + 1e-6


# ------------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------------
def test_bad_inputs_raise_clear_errors():
    params, spec = random_net(0)
    v = np.full((2, 2), 0.5)
    with pytest.raises(ValueError, match="shape"):
        certify_point(params, spec, np.zeros((3, 2)), 0)
    with pytest.raises(ValueError, match="outside the bid support"):
        certify_point(params, spec, np.array([[0.5, 1.5], [0.2, 0.2]]), 0)
    with pytest.raises(ValueError, match="agent"):
        certify_point(params, spec, v, 2)
    with pytest.raises(ValueError, match="agent"):
        certify_point(params, spec, v, -1)
    bad = {**params, "pay": {"w": params["pay"]["w"].copy(), "b": params["pay"]["b"]}}
    bad["pay"]["w"][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        certify_point(bad, spec, v, 0)
    soft = MechanismSpec(n_agents=2, n_items=2, hidden=(8, 8), allocation="softmax", payment="free")
    for solver in ("scip", "gurobi", "mip", "planar"):  # the MIP cannot encode softmax; bab (auto) can
        with pytest.raises(UnsupportedArchitecture, match="softmax.*bab"):
            certify_point(params, soft, v, 0, solver=solver)
    with pytest.raises(ValueError, match="solver"):
        certify_point(params, spec, v, 0, solver="cplex")


def test_gurobi_license_refusal_mentions_scip():
    if not gurobi_available() or not licensing.gurobi_size_limited():
        pytest.skip("needs the size-limited (pip) Gurobi license")
    params, spec = random_net(9, n=2, m=2, hidden=(64, 64, 64), payment="fractional")
    v = np.random.default_rng(9).random((2, 2))
    # compact=False: a variable per live neuron, so the bilinear model has well over 200 variables
    opts = CertifyOptions(split_unstable=None, encode=EncodeOptions(compact=False))
    with pytest.raises(licensing.LicenseLimitError, match="scip") as e:
        certify_point(params, spec, v, 0, solver="gurobi", pgd_steps=0, options=opts)
    assert "200" in str(e.value)
    c = certify_point(params, spec, v, 0, solver="mip", pgd_steps=0, options=opts)  # falls back to SCIP
    assert c.solver == "scip" and c.status == "optimal"


# ------------------------------------------------------------------------------------------------
# the reference oracle: the paper's certified regrets
# ------------------------------------------------------------------------------------------------
REFERENCE = {  # network -> (solver, points in the default suite)
    "1x2_sparsemax_linearpmt_distill_fast": ("auto", 5),
    "2x2_sparsemax_linearpmt_distill_fast": ("auto", 2),
    "1x2_sparsemax_in_linsigpmt_scratch_fast": ("scip", 2),
    "2x2_sparsemax_in_linsigpmt_scratch_fast": ("scip", 2),
}


def check_reference(refdir, name, points):
    params, spec, info = load_mechanism(refdir / f"{name}.npz")
    solver = REFERENCE[name][0]
    for k, pt in enumerate(info["json"]["results"][:points]):
        c = certify_point(params, spec, np.array(pt["truthful_input"]), 0, solver=solver)
        ref = pt["certified_regret"]
        assert c.status == "optimal", (name, k, c.message)
        # the paper's certificates are about the exact function (a float64 MIP)
        assert abs(c.regret_upper_exact - ref) < 1e-4, (name, k, c.regret_upper_exact, ref)
        assert c.regret_upper >= ref - 1e-6
        assert abs(c.regret_lower - ref) < 1e-4, (name, k, c.regret_lower, ref)
        assert c.truthful_utility == pytest.approx(pt["truthful_util"], abs=1e-5)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_networks_first_points(refdir, name):
    check_reference(refdir, name, REFERENCE[name][1])


@pytest.mark.parametrize("name", [n for n in REFERENCE if n.startswith("2x2")])
def test_reference_networks_agent1(refdir, name):
    """The JSON also holds the paper's certificates for agent 1 of the 2x2 networks."""
    params, spec, info = load_mechanism(refdir / f"{name}.npz")
    pt = info["json"]["results_agent1"][0]
    assert pt["agent"] == 1
    c = certify_point(params, spec, np.array(pt["truthful_input"]), 1, solver=REFERENCE[name][0])
    assert c.status == "optimal" and c.agent == 1
    assert abs(c.regret_upper_exact - pt["certified_regret"]) < 1e-4
    assert c.regret_upper >= pt["certified_regret"] - 1e-6
    assert abs(c.regret_lower - pt["certified_regret"]) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("name", list(REFERENCE))
def test_reference_networks_first_20_points(refdir, name):
    check_reference(refdir, name, 20)


def test_auto_split_threshold_follows_the_payment():
    """The default threshold is the architecture's (16 bilinear / 48 linear), and a search with it
    splits exactly as the explicit threshold does; nonsense thresholds are refused."""

    assert auto_split_unstable(MechanismSpec(1, 2, (8,), "sparsemax", "fractional")) == 16
    assert auto_split_unstable(MechanismSpec(1, 2, (8,), "sparsemax", "free")) == 48
    assert CertifyOptions().split_unstable == "auto"
    params, spec = random_net(7, n=2, m=2, hidden=(32, 32), payment="free")
    v = np.random.default_rng(7).random((2, 2))
    runs = {name: certify_point(params, spec, v, 0, solver="scip", pgd_steps=50, options=o)
            for name, o in (("auto", CertifyOptions()), ("48", CertifyOptions(split_unstable=48)),
                            ("16", CertifyOptions(split_unstable=16)))}
    assert runs["auto"].n_boxes == runs["48"].n_boxes < runs["16"].n_boxes, {k: c.n_boxes for k, c in runs.items()}
    assert abs(runs["auto"].regret_upper - runs["16"].regret_upper) < 1e-5
    for bad in ("fast", -1):
        with pytest.raises(ValueError, match="split_unstable"):
            CertifyOptions(split_unstable=bad)


def test_split_threshold_bench_agrees_across_thresholds(capsys):
    """``bench/split_threshold.py`` on the shipped 1x2 student (17 unstable ReLUs per box): a
    threshold of 4 splits into several MIPs, "none" solves one, and both prove the same regret."""
    import importlib.util

    from conftest import REPO

    mod_spec = importlib.util.spec_from_file_location("split_threshold", REPO / "bench" / "split_threshold.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    assert mod.main([str(REPO / "checkpoints" / "1x2_distill"), "--points", "1", "--thresholds", "4,none"]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1].strip("| ").split(" | ")
    assert row[0] == "1x2_distill" and row[1] == "1"
    split_mips, one_mip = (int(c.split("(")[1].split(")")[0]) for c in row[3:5])
    assert split_mips > 1 and one_mip == 1
    assert float(row[5]) < 1e-5
    assert mod.main(["/nonexistent/ckpt"]) == 2
