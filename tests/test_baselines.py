"""Strategyproof baselines (jaxauction.baselines): item-wise Myerson and the grand bundle.

Hand-computed expected revenues for U[0, 1] item values, n bidders, reserve 1/2 (Myerson's lemma:
revenue = E[max(0, phi(X))] with phi(x) = 2x - 1 and X the highest of n values, density n x^(n-1)):

    int_{1/2}^1 (2x - 1) n x^(n-1) dx = 2n/(n+1) (1 - 2^-(n+1)) - (1 - 2^-n)
    n = 1: 1 (3/4) - 1/2 = 1/4;   n = 2: (4/3)(7/8) - 3/4 = 5/12;   n = 3: (3/2)(15/16) - 7/8 = 17/32

(check n = 1 directly: price 1/2, sold with probability 1/2: 1/4.) Items are sold separately, so
NxM earns M times the per-item value: 1x2 0.5, 2x2 5/6, 2x3 1.25, 2x5 25/12, 3x2 17/16,
3x3 51/32, 3x10 170/32. The grand bundle of 1x2: a posted price p <= 1 for v1 + v2 sells with
probability 1 - p^2/2, revenue p - p^3/2, maximal at p = sqrt(2/3): (2/3)^(3/2) = 0.5443.
"""
import json
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import auction, baselines, evaluate, mechanism, priors

HAND = {(1, 2): 0.5, (2, 2): 5 / 6, (2, 3): 1.25, (2, 5): 25 / 12, (3, 2): 17 / 16, (3, 3): 51 / 32,
        (3, 10): 170 / 32}


@pytest.mark.parametrize("n,m", sorted(HAND))
def test_myerson_revenue_matches_the_hand_computed_closed_form(n, m):
    b = baselines.make("myerson", priors.uniform(n, m))
    assert baselines.expected_revenue(b) == pytest.approx(HAND[(n, m)], rel=1e-12)
    mean, se = baselines.revenue_estimate(b, points=40_000, seed=3)
    assert 0 < se < 0.01
    assert abs(mean - HAND[(n, m)]) < 4 * se  # within sampling error


def test_closed_form_of_a_non_unit_box_matches_monte_carlo():
    # 1x2_asym: item 1 U[4, 16]: price 8, sold w.p. 2/3 -> 16/3; item 2 U[4, 7]: hi/2 = 3.5 < 4, always sold at 4
    b = baselines.load("myerson:1x2_asym")
    assert b.info["reserves"] == [[8.0, 4.0]]
    assert baselines.expected_revenue(b) == pytest.approx(4 + 16 / 3, rel=1e-12)
    mean, se = baselines.revenue_estimate(b, points=100_000, seed=1)
    assert abs(mean - (4 + 16 / 3)) < 4 * se


def test_myerson_is_second_price_with_reserve_for_a_shared_marginal():
    rng = np.random.default_rng(0)
    bids = rng.uniform(0, 1, (500, 3, 4)).astype(np.float32)
    bids[:5, :, 0] = 0.7  # three-way ties: agent 0 wins and pays 0.7
    bids[5:10, :, 1] = 0.5  # exactly at the reserve: sold to agent 0 at 0.5
    myerson = baselines.make("myerson", priors.uniform(3, 4))
    a, p = jax.jit(lambda x: myerson(x))(jnp.asarray(bids))
    a, p = np.asarray(a), np.asarray(p)
    order = np.argsort(-bids, axis=1, kind="stable")  # highest first, lowest index first on ties
    top = np.take_along_axis(bids, order[:, :1], axis=1)[:, 0]
    second = np.take_along_axis(bids, order[:, 1:2], axis=1)[:, 0]
    want_a = np.zeros_like(bids)
    np.put_along_axis(want_a, order[:, :1], (top >= 0.5)[:, None].astype(np.float32), axis=1)
    np.testing.assert_array_equal(a, want_a)
    # per item the price is exactly max(0.5, second bid); the sum over items rounds in its own order
    np.testing.assert_allclose(p, np.sum(want_a * np.maximum(0.5, second)[:, None], axis=-1), rtol=0, atol=1e-6)
    assert np.all(a[:5, 0, 0] == 1) and np.all(a[5:10, 0, 1] == 1)


def test_shapes_single_profile_and_leading_dims():
    b = baselines.make("myerson", priors.uniform(2, 3))
    v = priors.uniform(2, 3).sample(jax.random.PRNGKey(0), 12)
    a, p = mechanism.apply(b.params, v, b.spec)  # the package's forward pass dispatches to the baseline
    assert a.shape == (12, 2, 3) and p.shape == (12, 2)
    a1, p1 = mechanism.apply(b.params, v[0], b.spec)
    np.testing.assert_array_equal(a1, a[0])
    np.testing.assert_array_equal(p1, p[0])
    a4, p4 = b(v.reshape(3, 4, 2, 3))
    np.testing.assert_array_equal(a4.reshape(12, 2, 3), a)
    np.testing.assert_array_equal(p4.reshape(12, 2), p)
    bundle = baselines.make("bundle", priors.uniform(2, 3), fit_points=1000)
    a, p = bundle(v)
    assert np.all(np.asarray(a).sum(axis=1) <= 1) and a.shape == (12, 2, 3)
    np.testing.assert_array_equal(np.asarray(a).min(axis=-1), np.asarray(a).max(axis=-1))  # all items or none
    with pytest.raises(AssertionError):
        b(jnp.zeros((4, 3, 3)))


def _grid_gain(baseline, v, agent, per_item=33):
    """Max over a grid of agent's misreports (plus every critical value: the others' bids, the
    reserves, its own values) of u(misreport) - u(truth), in float64."""
    lo, hi = (np.asarray(x, np.float64) for x in baseline.prior.bounds())
    axes = []
    for j in range(v.shape[1]):
        crit = [*v[:, j], lo[agent, j], hi[agent, j], max(lo[agent, j], hi[agent, j] / 2)]
        if baseline.name == "bundle":
            crit += [float(baseline.params["reserve"]), *(v.sum(1) - v[agent].sum() + v[agent, j])]
        axes.append(np.clip(np.concatenate([np.linspace(lo[agent, j], hi[agent, j], per_item), crit]),
                            lo[agent, j], hi[agent, j]))  # repeats are harmless, and keep one shape (one compile)
    mis = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, v.shape[1])
    prof = np.repeat(v[None], len(mis), axis=0)
    prof[:, agent] = mis
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), baseline.params)
        run = jax.jit(baseline.spec.apply)
        a, p = run(params, jnp.asarray(prof))
        at, pt = run(params, jnp.asarray(v))
        u = np.asarray(a[:, agent] @ jnp.asarray(v[agent]) - p[:, agent])
        ut = float(at[agent] @ jnp.asarray(v[agent]) - pt[agent])
    assert ut >= -1e-12  # IR
    return float(u.max() - ut)


@pytest.mark.parametrize("name,prior", [
    ("myerson", priors.uniform(2, 2)), pytest.param("myerson", priors.uniform(3, 2), marks=pytest.mark.slow),
    pytest.param("myerson", priors.uniform(2, 3), marks=pytest.mark.slow),
    ("myerson", priors.UniformPrior(((0.0,), (2.0,), (0.5,)), ((1.0,), (3.0,), (4.0,)))),  # per-agent boxes
    ("bundle", priors.uniform(2, 2)), ("bundle", priors.uniform(1, 2)),
    ("softmyerson", priors.uniform(2, 2)),
    ("softmyerson", priors.UniformPrior(((0.0,), (2.0,), (0.5,)), ((1.0,), (3.0,), (4.0,))))])
def test_no_misreport_on_a_dense_grid_gains(name, prior):
    b = baselines.make(name, prior, fit_points=5000)
    vals = np.asarray(prior.sample(jax.random.PRNGKey(7), 4), np.float64)
    vals[0] = np.asarray(prior.bounds()[1])  # every agent at the top of its box: ties everywhere
    per_item = 15 if prior.n_items > 2 else 41
    for v in vals:
        for i in range(prior.n_agents):
            assert _grid_gain(b, v, i, per_item) <= 1e-9


@pytest.mark.parametrize("name", ["myerson", "bundle"])
def test_pgd_finds_no_regret(name):
    prior = priors.uniform(2, 2)
    b = baselines.make(name, prior, fit_points=5000)
    # evaluate's PGD (jaxauction.misreport) from 1 + 8 starts per (profile, agent), 8 of them corner-biased
    res = evaluate.evaluate(b.params, b.spec, prior, points=100, steps=20, lr=0.1, restarts=8)
    assert res["regret_max"] <= 1e-6 and res["ir_violation_rate"] == 0.0
    # the gradient of a deviator's utility is zero (piecewise-constant allocation, a price set by the others)
    v = prior.sample(jax.random.PRNGKey(2), 50)
    g = jax.jit(jax.grad(lambda m: jnp.sum(auction.deviation_utilities(b.params, b.spec, v, m))))(v)
    assert float(jnp.max(jnp.abs(g))) == 0.0


def test_bundle_reserve_is_the_empirical_optimum():
    prior = priors.uniform(2, 2)
    r, rev = baselines.fit_bundle_reserve(prior, points=4000, seed=5)
    b = baselines.make("bundle", prior, fit_points=4000, fit_seed=5)
    assert float(b.params["reserve"]) == pytest.approx(r, rel=1e-6) and "empirical optimum" in b.info["reserve_rule"]
    fit = prior.sample(jax.random.fold_in(jax.random.PRNGKey(5), baselines._FIT_SALT), 4000)
    with jax.enable_x64(True):
        def revenue(res):
            return float(jnp.mean(jnp.sum(b.spec.apply({"reserve": jnp.float64(res)}, jnp.asarray(fit, jnp.float64))[1], -1)))
        assert revenue(r) == pytest.approx(rev, rel=1e-9)  # the formula is the mechanism's own revenue
        for other in np.linspace(0.0, 2.0, 201):  # and no reserve on a grid does better
            assert revenue(other) <= rev + 1e-12


def test_bundle_of_one_bidder_two_items_approaches_the_closed_form():
    b = baselines.load("bundle:1x2")
    assert b.info["reserve"] == pytest.approx(math.sqrt(2 / 3), abs=0.05)
    mean, se = baselines.revenue_estimate(b, points=100_000, seed=11)  # fresh profiles, not the fit's
    assert abs(mean - (2 / 3) ** 1.5) < 4 * se + 1e-3  # 1e-3: the fitted reserve's own shortfall, ~1.2 dR^2


def test_errors_name_the_problem():
    with pytest.raises(baselines.BaselineError, match="unknown baseline 'vcg'"):
        baselines.load("vcg:2x2")
    with pytest.raises(baselines.BaselineError, match="NAME:SETTING"):
        baselines.load("myerson")
    with pytest.raises(baselines.BaselineError, match="'banana'"):
        baselines.load("myerson:banana")

    class Beta:
        n_agents, n_items = 1, 1

    with pytest.raises(baselines.BaselineError, match="UniformPrior only, got Beta"):
        baselines.make("myerson", Beta())
    assert baselines.is_baseline("myerson:3x2") and not baselines.is_baseline("runs/3x2")


def test_evaluate_cli_takes_a_baseline(capsys):
    assert evaluate.main(["--ckpt", "myerson:2x3", "--points", "500", "--steps", "5", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["checkpoint"] == "myerson:2x3" and (res["n_agents"], res["n_items"]) == (2, 3)
    assert res["regret_max"] == 0.0 and abs(res["revenue"] - 1.25) < 0.1
    assert evaluate.main(["--ckpt", "vcg:2x3"]) == 2
    assert "unknown baseline" in capsys.readouterr().err


# ---- soft item-wise Myerson ------------------------------------------------------------------

def test_soft_myerson_payment_is_the_payment_identity_by_quadrature():
    """p = b a(b) - int_lo^b a(s) ds for one agent's bid on one item, the others fixed; numeric integral."""
    prior = priors.UniformPrior(((0.0, 0.0), (0.2, 0.0), (0.0, 0.0)), ((1.0, 1.0), (1.5, 1.0), (1.0, 2.0)))
    b = baselines.make("softmyerson", prior, tau=0.1)
    v = np.array([[0.3, 0.6], [0.9, 0.2], [0.5, 1.4]])
    with jax.enable_x64(True):
        params = jax.tree_util.tree_map(lambda x: jnp.asarray(x, jnp.float64), b.params)
        for agent, item in ((0, 1), (1, 0), (2, 1)):
            lo = prior.bounds()[0][agent, item]
            s = np.linspace(lo, v[agent, item], 20001)
            prof = np.repeat(v[None], len(s), axis=0)
            prof[:, agent, item] = s
            a, p = b.spec.apply(params, jnp.asarray(prof))
            a_own = np.asarray(a[:, agent, item])
            integral = float(np.sum((a_own[1:] + a_own[:-1]) / 2 * np.diff(s)))
            # the payment is additive over items: isolate this item's part by zeroing the other item's bid effect
            a0, p0 = b.spec.apply(params, jnp.asarray(prof[:1]))
            want = v[agent, item] * a_own[-1] - integral
            item_part = float(p[-1, agent] - p0[0, agent]) + float(s[0] * a_own[0])  # p(b) - p(lo) + lo a(lo)
            assert abs(item_part - want) < 1e-7, (agent, item, item_part, want)
    # the lowest bid has utility 0 on every item (IR binds there)
    with jax.enable_x64(True):
        lo_prof = np.asarray(prior.bounds()[0], np.float64)
        a, p = b.spec.apply(params, jnp.asarray(lo_prof))
        np.testing.assert_allclose(np.sum(np.asarray(a) * lo_prof, axis=-1) - np.asarray(p), 0.0, atol=1e-12)


@pytest.mark.parametrize("n,m", [(1, 2), (3, 2), (2, 3)])
def test_soft_myerson_approaches_myerson_from_below_as_tau_falls(n, m):
    prior = priors.uniform(n, m)
    revs = [baselines.revenue_estimate(baselines.make("softmyerson", prior, tau=t), points=50_000)[0]
            for t in (0.1, 0.02, 0.002)]
    exact = HAND[(n, m)]
    assert revs[0] < revs[1] < revs[2] + 1e-4 and revs[2] == pytest.approx(exact, abs=0.01)
    assert revs[0] < exact


def test_soft_myerson_pgd_finds_no_regret_and_tau_is_checked():
    prior = priors.uniform(3, 2)
    b = baselines.make("softmyerson", prior)
    res = evaluate.evaluate(b.params, b.spec, prior, points=200, steps=100, lr=0.05, restarts=4)
    assert res["regret_max"] <= 2e-6 and res["ir_violation_rate"] == 0.0
    with pytest.raises(baselines.BaselineError, match="tau must be > 0"):
        baselines.make("softmyerson", prior, tau=0.0)
