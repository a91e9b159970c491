"""Affine maximizer auctions (jaxauction.ama): hand-computed outcomes, Myerson as an AMA, strategyproofness
and IR for arbitrary parameters (a search that finds the gain of a non-strategyproof mechanism finds none
here), files, errors, training and the CLI."""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import ama, ama_train, baselines, checkpoints, mechanism, priors
from jaxauction import evaluate as evaluate_mod


def _params(spec, boost, log_w=None, logits=None):
    return {"boost": jnp.asarray(boost, jnp.float32),
            "log_w": jnp.zeros(spec.n_agents, jnp.float32) if log_w is None else jnp.asarray(log_w, jnp.float32),
            "lottery_logits": (jnp.zeros((spec.n_lotteries, spec.n_agents + 1, spec.n_items), jnp.float32)
                               if logits is None else jnp.asarray(logits, jnp.float32))}


def _random_params(spec, seed, scale=0.5):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    return {"boost": scale * jax.random.normal(k1, (spec.n_menu,)),
            "log_w": 0.5 * jax.random.normal(k2, (spec.n_agents,)),
            "lottery_logits": 2.0 * jax.random.normal(k3, (spec.n_lotteries, spec.n_agents + 1, spec.n_items))}


def test_deterministic_menu_by_hand():
    m = ama.deterministic_menu(1, 2)  # owners (0,0), (0,1), (1,0), (1,1); owner 1 = unsold
    np.testing.assert_array_equal(m[:, 0, :], [[1, 1], [1, 0], [0, 1], [0, 0]])
    assert ama.deterministic_menu(2, 3).shape == (27, 2, 3)
    assert np.all(ama.deterministic_menu(3, 2).sum(axis=1) <= 1)


def test_posted_prices_and_second_price_by_hand():
    # one agent, two items, w = 1: boosts are minus the menu's prices: bundle 0.8, item 0 at 0.5, item 1 at 0.6
    spec = ama.AMASpec(1, 2)
    p = _params(spec, [-0.8, -0.5, -0.6, 0.0])
    alloc, pay = ama.apply(p, jnp.array([[[0.7, 0.2], [0.7, 0.65], [0.3, 0.3]]]).reshape(3, 1, 2), spec)
    # utilities: (0.7,0.2): bundle 0.1, item0 0.2, item1 -0.4 -> item 0 at 0.5; (0.7,0.65): bundle 0.55 wins;
    # (0.3,0.3): every price above the value -> nothing, pays 0
    np.testing.assert_allclose(alloc[:, 0], [[1, 0], [1, 1], [0, 0]])
    np.testing.assert_allclose(pay[:, 0], [0.5, 0.8, 0.0], atol=1e-6)
    # two agents, one item, no boosts: the second-price auction
    spec = ama.AMASpec(2, 1)
    alloc, pay = ama.apply(_params(spec, [0.0, 0.0, 0.0]), jnp.array([[0.7], [0.4]]), spec)
    np.testing.assert_allclose(alloc, [[1.0], [0.0]])
    np.testing.assert_allclose(pay, [0.4, 0.0], atol=1e-6)


@pytest.mark.parametrize("n,m", [(1, 2), (2, 2), (3, 2), (2, 3)])
def test_init_is_itemwise_myerson(n, m):
    prior = priors.uniform(n, m)
    spec = ama.AMASpec(n, m)
    p = ama.init(spec, prior, jax.random.PRNGKey(0))
    vals = prior.sample(jax.random.PRNGKey(1), 4000)
    a, pay = mechanism.apply(p, vals, spec)  # the package's dispatch reaches AMASpec.apply
    my = baselines.make("myerson", prior)
    a_m, pay_m = my(vals)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a_m))
    np.testing.assert_allclose(np.asarray(pay), np.asarray(pay_m), atol=2e-6)


@pytest.mark.parametrize("n,m,lot", [(2, 2, 0), (3, 2, 4), (2, 3, 3), (1, 3, 5)])
def test_strategyproof_and_ir_for_random_parameters(n, m, lot):
    spec = ama.AMASpec(n, m, lot)
    prior = priors.uniform(n, m)
    vals = np.asarray(prior.sample(jax.random.PRNGKey(2), 200))
    for seed in range(3):
        p = _random_params(spec, seed)
        assert ama_train.misreport_search(p, spec, vals, misreports=128, seed=seed) <= 1e-12
        a, pay = ama.apply(p, jnp.asarray(vals), spec)
        util = np.sum(np.asarray(a) * vals, axis=-1) - np.asarray(pay)
        assert util.min() >= -1e-6 and np.asarray(pay).min() >= -1e-6
        assert np.all(np.asarray(a).sum(axis=1) <= 1 + 1e-6)


def test_dense_grid_finds_no_gain_2x2():
    spec = ama.AMASpec(2, 2, 2)
    p = _random_params(spec, 7, scale=0.3)
    g = np.linspace(0, 1, 41)
    grid = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    rng = np.random.default_rng(0)
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), p)
        for v in rng.uniform(size=(20, 2, 2)):
            for i in range(2):
                bids = np.repeat(v[None], len(grid), 0)
                bids[:, i] = grid
                a, pay = ama.apply(p64, jnp.asarray(bids), spec)
                u = np.asarray(a[:, i] @ v[i] - pay[:, i])
                a0, p0 = ama.apply(p64, jnp.asarray(v), spec)
                assert u.max() <= float(a0[i] @ v[i] - p0[i]) + 1e-12


def test_search_catches_a_mechanism_that_is_not_strategyproof(monkeypatch):
    """The check can fail: charge the winner its own bid (first price) instead of the VCG payment."""
    spec = ama.AMASpec(2, 1)
    p = _params(spec, [0.0, 0.0, 0.0])

    def first_price(params, bids, spec):
        alloc, _ = real(params, bids, spec)
        return alloc, jnp.sum(alloc * bids, axis=-1)

    real = ama.apply
    vals = np.asarray(priors.uniform(2, 1).sample(jax.random.PRNGKey(3), 100))
    assert ama_train.misreport_search(p, spec, vals) <= 1e-12
    monkeypatch.setattr(ama, "apply", first_price)
    whole = ama_train.misreport_search(p, spec, vals)
    assert whole > 0.05
    # profiles in chunks (of 7 here: the last one shorter) find the same largest gain
    per = (256 + 2 + 2) * spec.n_menu * spec.n_agents
    assert ama_train.misreport_search(p, spec, vals, max_elements=7 * per) == whole


def test_save_load_roundtrip_and_errors(tmp_path):
    spec = ama.AMASpec(2, 2, 3)
    prior = priors.uniform(2, 2)
    p = ama.init(spec, prior, jax.random.PRNGKey(0))
    ama.save(tmp_path / "a", p, spec, prior, meta={"note": "x"})
    assert ama.is_ama(tmp_path / "a") and not ama.is_ama(tmp_path)
    q, spec2, doc, prior2 = ama.load(tmp_path / "a")
    assert spec2 == spec and prior2 == prior and doc["meta"]["note"] == "x"
    for k in p:
        np.testing.assert_array_equal(np.asarray(p[k]), np.asarray(q[k]))
    # a net-only loader says what the directory is
    with pytest.raises(checkpoints.CheckpointError, match="affine maximizer"):
        checkpoints.load_mechanism(tmp_path / "a")
    doc["format"] = "other"
    (tmp_path / "a" / ama.AMA_JSON).write_text(json.dumps(doc))
    with pytest.raises(ama.AMAError, match="format"):
        ama.load(tmp_path / "a")
    with pytest.raises(ama.AMAError, match="shape"):
        ama.check_params({**p, "boost": p["boost"][:-1]}, spec)
    with pytest.raises(ama.AMAError, match="non-finite"):
        ama.check_params({**p, "log_w": p["log_w"].at[0].set(jnp.nan)}, spec)


def test_spec_and_init_errors():
    with pytest.raises(ama.AMAError, match="exceeds"):
        ama.AMASpec(3, 10)  # 4^10 deterministic entries
    assert ama.AMASpec(3, 10, 64, deterministic=False).n_menu == 64
    with pytest.raises(ama.AMAError, match="empty"):
        ama.AMASpec(2, 2, 0, deterministic=False)
    with pytest.raises(ama.AMAError, match="lo <= hi / 2"):
        ama.init(ama.AMASpec(1, 2), priors.per_item(1, [0.6, 0.0], [1.0, 1.0]), jax.random.PRNGKey(0))
    with pytest.raises(ama.AMAError, match="UniformPrior"):
        ama.init(ama.AMASpec(1, 2), priors.uniform(2, 2), jax.random.PRNGKey(0))


def test_train_keeps_the_best_and_never_falls_below_its_myerson_start():
    prior = priors.uniform(2, 2)
    spec = ama.AMASpec(2, 2)
    res = ama_train.train(spec, prior, steps=60, batch=512, val_points=2000, eval_every=20, lr=3e-3)
    start = res.history[0]["val_revenue"]
    assert res.best_val_revenue == max(h["val_revenue"] for h in res.history) >= start
    val = prior.sample(jax.random.fold_in(jax.random.PRNGKey(0), ama_train._VAL_SALT), 2000)
    assert float(jnp.mean(jnp.sum(ama.apply(res.params, val, spec)[1], -1))) == pytest.approx(res.best_val_revenue, abs=1e-6)
    my = baselines.make("myerson", prior)
    assert start == pytest.approx(float(jnp.mean(jnp.sum(my(val)[1], -1))), abs=1e-5)
    with pytest.raises(ama.AMAError, match="steps"):
        ama_train.train(spec, prior, steps=0)


def _manelli_vincent(spec):
    """1x2, U[0,1]^2: the optimal strategyproof mechanism (Manelli and Vincent 2006) is a posted-price
    menu, each item at 2/3 and the bundle at (4 - sqrt 2)/3; a one-bidder AMA with w = 1 charges
    -boost of the entry it picks (the unsold entry's boost 0 is the max), so boost = -price."""
    prices = {(0, 0): (4 - np.sqrt(2)) / 3, (0, 1): 2 / 3, (1, 0): 2 / 3, (1, 1): 0.0}   # owners per item; 1 = unsold
    menu = ama.deterministic_menu(1, 2)
    owners = [tuple(int(1 - a[0, j]) for j in range(2)) for a in menu]
    return _params(spec, [-prices[o] for o in owners])


def test_manelli_vincent_as_an_ama_earns_its_closed_form():
    # Hand-computed: item j alone sells on {v_j >= 2/3, v_-j <= (2 - sqrt 2)/3}, area (2 - sqrt 2)/9; the
    # bundle on {v1, v2 >= (2 - sqrt 2)/3, v1 + v2 >= (4 - sqrt 2)/3}, area (2 + 2 sqrt 2)/9; so the
    # revenue is 2 (2/3)(2 - sqrt 2)/9 + (4 - sqrt 2)(2 + 2 sqrt 2)/27 = (12 + 2 sqrt 2)/27 = 0.549201.
    spec = ama.AMASpec(1, 2)
    v = priors.uniform(1, 2).sample(jax.random.PRNGKey(3), 400_000)
    rev = np.asarray(jnp.sum(ama.apply(_manelli_vincent(spec), v, spec)[1], -1), np.float64)
    se = rev.std() / np.sqrt(rev.size)
    assert abs(rev.mean() - (12 + 2 * np.sqrt(2)) / 27) < 4 * se


def test_1x2_training_reaches_the_strategyproof_optimum():
    """The shipped recipe (``ama_train 1x2`` defaults) must reach Manelli-Vincent's optimal revenue, paired on
    the same profiles: an outside, theoretical oracle for the learner (no strategyproof mechanism earns more)."""
    spec, prior = ama.AMASpec(1, 2), priors.uniform(1, 2)
    res = ama_train.train(spec, prior)
    v = prior.sample(jax.random.PRNGKey(11), 100_000)
    ours = np.asarray(jnp.sum(ama.apply(res.params, v, spec)[1], -1), np.float64)
    best = np.asarray(jnp.sum(ama.apply(_manelli_vincent(spec), v, spec)[1], -1), np.float64)
    d = ours - best
    assert d.mean() > -0.003, (d.mean(), d.std() / np.sqrt(d.size))


def test_cli_writes_a_checkpoint_that_evaluate_reads(tmp_path, capsys):
    out = tmp_path / "1x2_ama"
    assert ama_train.main(["1x2", "--out", str(out), "--steps", "40", "--batch", "256", "--eval-every", "20",
                           "--test-points", "2000"]) == 0
    ev = json.loads((out / "final_eval.json").read_text())
    assert ev["misreport_search"]["max_gain"] <= 1e-12 and ev["min_utility"] >= -1e-6
    assert set(ev["vs"]) == set(baselines.COMPARED)
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["step"] for x in lines] == [0, 20, 40]
    assert "regret: 0 at every profile" in (out / "CARD.md").read_text()
    capsys.readouterr()
    assert evaluate_mod.main(["--ckpt", str(out), "--points", "200", "--steps", "20", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["regret_max"] <= 1e-6 and res["revenue"] > 0.4
    assert ama_train.main(["9x9", "--out", str(tmp_path / "big")]) == 2  # (9+1)^9 entries: a clear error
    assert "exceeds" in capsys.readouterr().err


# ---- factored menus (item groups) ---------------------------------------------------------------

def _product_boosts(spec, boost):
    """The boosts of the ungrouped AMA over the product menu: each full entry's boost is the sum of its
    groups' boosts (entry order: itertools.product over item owners, as ama.deterministic_menu)."""
    import itertools
    n, at, per_group = spec.n_agents, 0, []
    for g in spec.item_groups:
        per_group.append(np.asarray(boost[at:at + (n + 1) ** len(g)]))
        at += (n + 1) ** len(g)
    out = []
    for owners in itertools.product(range(n + 1), repeat=spec.n_items):
        total = 0.0
        for g, b in zip(spec.item_groups, per_group):
            idx = 0
            for j in g:  # the index of the group's owner tuple in itertools.product order
                idx = idx * (n + 1) + owners[j]
            total += b[idx]
        out.append(total)
    return np.asarray(out, np.float32)


@pytest.mark.parametrize("groups", [((0, 2), (1,)), ((1,), (0,), (2,))])
def test_grouped_ama_is_the_ama_of_its_product_menu(groups):
    # the factored menu is one AMA: same allocation and payments as the full menu with summed boosts
    grouped = ama.AMASpec(2, 3, groups=groups)
    full = ama.AMASpec(2, 3)
    p = _random_params(grouped, 7)
    q = {**_random_params(full, 7), "boost": jnp.asarray(_product_boosts(grouped, p["boost"])), "log_w": p["log_w"]}
    vals = priors.uniform(2, 3).sample(jax.random.PRNGKey(3), 500)
    a_g, pay_g = ama.apply(p, vals, grouped)
    a_f, pay_f = ama.apply(q, vals, full)
    np.testing.assert_array_equal(np.asarray(a_g), np.asarray(a_f))
    np.testing.assert_allclose(np.asarray(pay_g), np.asarray(pay_f), atol=1e-5)


def test_grouped_init_is_itemwise_myerson_and_strategyproof():
    prior = priors.uniform(3, 4)
    spec = ama.AMASpec(3, 4, groups=((0, 3), (1, 2)))
    assert spec.n_menu == 2 * 4 ** 2
    vals = prior.sample(jax.random.PRNGKey(1), 3000)
    a, pay = ama.apply(ama.init(spec, prior, jax.random.PRNGKey(0)), vals, spec)
    a_m, pay_m = baselines.make("myerson", prior)(vals)
    np.testing.assert_array_equal(np.asarray(a), np.asarray(a_m))
    np.testing.assert_allclose(np.asarray(pay), np.asarray(pay_m), atol=2e-6)
    small = np.asarray(vals[:150])
    for seed in range(2):
        p = _random_params(spec, seed)
        assert ama_train.misreport_search(p, spec, small, misreports=128, seed=seed) <= 1e-12
        a, pay = ama.apply(p, jnp.asarray(small), spec)
        assert (np.sum(np.asarray(a) * small, axis=-1) - np.asarray(pay)).min() >= -1e-6


def test_group_errors_and_parsing(tmp_path):
    with pytest.raises(ama.AMAError, match="partition"):
        ama.AMASpec(2, 3, groups=((0, 1),))
    with pytest.raises(ama.AMAError, match="partition"):
        ama.AMASpec(2, 3, groups=((0, 1), (1, 2)))
    with pytest.raises(ama.AMAError, match="no lotteries"):
        ama.AMASpec(2, 3, 4, groups=((0, 1), (2,)))
    assert ama.AMASpec(3, 10, groups=((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))).n_menu == 2 * 4 ** 5
    assert ama_train.parse_groups("0-4,5-9") == ((0, 1, 2, 3, 4), (5, 6, 7, 8, 9))
    assert ama_train.parse_groups("2, 0-1") == ((2,), (0, 1)) and ama_train.parse_groups("") == ()
    for bad in ("0-x", "3-1"):
        with pytest.raises(ama.AMAError, match="--groups"):
            ama_train.parse_groups(bad)
    spec = ama.AMASpec(2, 3, groups=((0, 2), (1,)))
    prior = priors.uniform(2, 3)
    ama.save(tmp_path / "g", ama.init(spec, prior, jax.random.PRNGKey(0)), spec, prior)
    assert ama.load(tmp_path / "g")[1] == spec
