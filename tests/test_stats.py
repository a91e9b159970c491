"""certify.stats: the confidence bounds (hand values, coverage, monotonicity) and the trivial range."""
import math

import numpy as np
import pytest

from certify import stats

DELTA = 0.05


# ---------------------------------------------------------------------------------------------
# Hand-computed values


def test_bernstein_by_hand():
    # x = (0.1, 0.2, 0.3, 0.4): mean 0.25, V (ddof=1) = 0.05/3, ln(2/0.05) = ln 40 = 3.6888794541
    # 0.25 + sqrt(2 * 0.0166667 * 3.68888 / 4) + 7 * 1 * 3.68888 / (3 * 3) = 0.25 + 0.175330 + 2.869128
    assert stats.bernstein_ucb([0.1, 0.2, 0.3, 0.4], 1.0, 0.05) == pytest.approx(3.2944586, abs=1e-6)
    # R scales only the second term: (0.2, 0.4), R = 10, delta = 0.5: 0.3 + 0.166511 + 32.346862
    assert stats.bernstein_ucb([0.2, 0.4], 10.0, 0.5) == pytest.approx(32.8133793, abs=1e-6)
    # constant samples: no variance term
    assert stats.bernstein_ucb([0.5] * 8, 1.0, 0.1) == pytest.approx(0.5 + 7 * math.log(20) / 21)
    # mean_ucb caps at R (E X <= R surely)
    assert stats.mean_ucb([0.1, 0.2, 0.3, 0.4], 1.0, 0.05) == 1.0


def test_hoeffding_and_the_union_bound_by_hand():
    assert stats.hoeffding_ucb([0.0, 1.0], 1.0, 0.1) == pytest.approx(0.5 + math.sqrt(math.log(10) / 4))
    x = np.linspace(0.0, 0.02, 200)
    both = stats.mean_ucb(x, 1.0, 0.1, method=stats.BERNSTEIN_HOEFFDING)
    assert both == pytest.approx(min(stats.bernstein_ucb(x, 1.0, 0.05), stats.hoeffding_ucb(x, 1.0, 0.05)))
    # with half the delta each, the combination can be looser than Bernstein alone at the full delta
    assert both > stats.mean_ucb(x, 1.0, 0.1)
    with pytest.raises(ValueError, match="method"):
        stats.mean_ucb(x, 1.0, 0.1, method="chebyshev")


def test_clopper_pearson_closed_forms():
    n = 10
    assert stats.clopper_pearson_upper(0, n, 0.05) == pytest.approx(1 - 0.05 ** (1 / n))  # 0.258866
    assert stats.clopper_pearson_upper(n - 1, n, 0.05) == pytest.approx(0.95 ** (1 / n))
    assert stats.clopper_pearson_upper(n, n, 0.05) == 1.0
    # the textbook 95% one-sided bound for 5 of 10
    assert stats.clopper_pearson_upper(5, 10, 0.05) == pytest.approx(0.7775, abs=1e-4)


def test_exceedance_counts_bounds_above_the_threshold():
    x = [0.0, 0.0005, 0.002, 0.02, 0.0]
    ex = stats.exceedance_ucb(x, 1.0, (1e-3, 1e-2), 0.05)
    assert set(ex) == {"0.001", "0.01"}
    assert ex["0.001"] == pytest.approx(stats.clopper_pearson_upper(2, 5, 0.05))
    assert ex["0.01"] == pytest.approx(stats.clopper_pearson_upper(1, 5, 0.05))
    # a proven range below the threshold: exceeding is impossible
    assert stats.exceedance_ucb([0.0, 0.001], 0.001, (0.001, 0.5))["0.001"] == 0.0


def test_bad_input_is_named():
    for d in (0, 1, -0.1, 1.5, float("nan"), "x", None):
        with pytest.raises(ValueError, match="delta"):
            stats.mean_ucb([0.1, 0.2], 1.0, d)
    with pytest.raises(ValueError, match="at least 2"):
        stats.bernstein_ucb([0.1], 1.0)
    with pytest.raises(ValueError, match=r"\[0, R\]"):
        stats.mean_ucb([0.1, 1.5], 1.0)
    with pytest.raises(ValueError, match=r"\[0, R\]"):
        stats.mean_ucb([-0.1, 0.5], 1.0)
    with pytest.raises(ValueError, match="finite"):
        stats.mean_ucb([0.1, float("nan")], 1.0)
    with pytest.raises(ValueError, match="range R"):
        stats.mean_ucb([0.1, 0.2], float("inf"))
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.clopper_pearson_upper(3, 2)
    with pytest.raises(ValueError, match="thresholds"):
        stats.exceedance_ucb([0.1, 0.2], 1.0, (-1.0,))


# ---------------------------------------------------------------------------------------------
# Coverage and monotonicity on synthetic data with a known mean


def test_mean_ucb_covers_the_true_mean():
    rng = np.random.default_rng(0)
    R, a, b, reps, n = 3.0, 0.5, 8.0, 2000, 50
    mu = R * a / (a + b)
    x = R * rng.beta(a, b, size=(reps, n))
    for method in stats.METHODS:
        ucb = np.array([stats.mean_ucb(row, R, DELTA, method) for row in x])
        assert np.mean(ucb >= mu) >= 1 - DELTA
        assert np.all(ucb >= x.mean(axis=1))  # never below the sample mean


def test_clopper_pearson_covers_the_true_probability():
    rng = np.random.default_rng(1)
    reps, n = 2000, 50
    for p in (0.02, 0.3):
        k = rng.binomial(n, p, size=reps)
        ub = np.array([stats.clopper_pearson_upper(int(kk), n, DELTA) for kk in k])
        assert np.mean(ub >= p) >= 1 - DELTA
        assert np.all(ub >= k / n)


def test_the_bound_tightens_with_n():
    rng = np.random.default_rng(2)
    R, reps = 1.0, 200
    means = []
    for n in (20, 100, 1000):
        x = R * rng.beta(1.0, 20.0, size=(reps, n))
        means.append(np.mean([stats.mean_ucb(row, R, DELTA) for row in x]))
    assert means[0] > means[1] > means[2] > 1 / 21  # decreasing, always above the true mean 1/21


# ---------------------------------------------------------------------------------------------
# The trivial range


def test_trivial_range_by_hand():
    unit = np.zeros((1, 2)), np.ones((1, 2))
    for pay in ("fractional", "fractional_sigmoid"):
        np.testing.assert_allclose(stats.trivial_regret_range(pay, None, *unit), [2.0])  # sum_j hi_j
    np.testing.assert_allclose(stats.trivial_regret_range("free", 2.0, *unit), [4.0])  # sum_j hi_j + P
    lo, hi = np.array([[-1.0, 0.5], [0.0, 0.0]]), np.array([[2.0, 3.0], [1.0, 4.0]])
    # fractional: sum_j (max(0, hi) - min(0, lo)) = (2 + 1) + (3 - 0); agent 1: 1 + 4
    np.testing.assert_allclose(stats.trivial_regret_range("fractional", None, lo, hi), [6.0, 5.0])
    # free, P = 1.5: sum_j max(|lo|, |hi|) + P = 2 + 3 + 1.5; agent 1: 1 + 4 + 1.5
    np.testing.assert_allclose(stats.trivial_regret_range("free", 1.5, lo, hi), [6.5, 6.5])
    with pytest.raises(ValueError, match="payment"):
        stats.trivial_regret_range("vcg", None, *unit)
    with pytest.raises(ValueError, match="payment_max"):
        stats.trivial_regret_range("free", None, *unit)
    with pytest.raises(ValueError, match="high must be >= its low"):
        stats.trivial_regret_range("free", 1.0, *unit[::-1])


@pytest.mark.parametrize("payment", ["fractional", "free"])
def test_trivial_range_bounds_the_utility_spread_of_a_random_net(payment):
    """sup_b u_i(b; v_i) - inf_b u_i(b; v_i) <= R_i over random bids of random mechanisms, on a box
    with negative values (so the derivation's signs matter)."""
    import jax

    from jaxauction import mechanism
    from jaxauction.mechanism import MechanismSpec

    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(16,), payment=payment, payment_max=3.0)
    lo, hi = np.array([[-1.0, 0.5], [-2.0, -1.0]]), np.array([[2.0, 3.0], [1.0, 0.0]])
    R = stats.trivial_regret_range(spec.payment, spec.payment_max, lo, hi)
    rng = np.random.default_rng(3)
    apply = jax.jit(lambda params, b: mechanism.apply(params, b, spec))
    for seed in range(3):
        params = jax.tree_util.tree_map(lambda sh: rng.normal(size=sh).astype(np.float32),
                                        mechanism.layer_shapes(spec), is_leaf=lambda x: isinstance(x, tuple))
        bids = lo + (hi - lo) * rng.uniform(size=(4000, 2, 2))
        bids[:8] = np.where(rng.uniform(size=(8, 2, 2)) < 0.5, lo, hi)  # a few corners
        a, p = (np.asarray(t, np.float64) for t in apply(params, bids.astype(np.float32)))
        for v in (lo, hi, 0.5 * (lo + hi)):
            u = (a * v).sum(axis=2) - p  # (B, N): every bid's utility at values v
            assert np.all(u.max(axis=0) - u.min(axis=0) <= R + 1e-5)


# ---------------------------------------------------------------------------------------------
# Samples of records; the PGD bound


def _proven(r):
    return r.get("status") == "optimal" and r.get("regret_upper") is not None


def test_conservative_samples_count_unproven_against():
    recs = [{"point": 0, "agent": 0, "status": "optimal", "regret_upper": 0.01},
            {"point": 1, "agent": 0, "status": "time_limit", "regret_upper": 0.3},
            {"point": 2, "agent": 0, "status": "time_limit", "regret_upper": None},
            {"point": 3, "agent": 0, "status": "error", "regret_upper": 0.001},
            {"point": 4, "agent": 0, "status": "optimal", "regret_upper": 7.0},   # above R: clipped
            {"point": 0, "agent": 1, "status": "optimal", "regret_upper": -1e-9}]  # below 0: clipped
    X, unproven, missing = stats.conservative_samples(recs, [0, 1], 6, [2.0, 1.5], _proven)
    np.testing.assert_allclose(X[:, 0], [0.01, 0.3, 2.0, 2.0, 2.0, 2.0])
    np.testing.assert_allclose(X[:, 1], [0.0, 1.5, 1.5, 1.5, 1.5, 1.5])
    assert unproven == {0: 4, 1: 5} and missing == {0: 1, 1: 5}
    with pytest.raises(ValueError, match="outside"):
        stats.conservative_samples(recs, [0, 1], 3, [2.0, 1.5], _proven)
    with pytest.raises(ValueError, match="two records"):
        stats.conservative_samples(recs + recs[:1], [0, 1], 6, [2.0, 1.5], _proven)


def test_pgd_ucb_is_labelled_and_per_agent():
    rng = np.random.default_rng(4)
    rgt = rng.uniform(0, 0.01, size=(500, 2))
    out = stats.pgd_ucb(rgt, [2.0, 4.0], DELTA)
    assert out[stats.KEY_PGD_UCB] == pytest.approx(stats.mean_ucb(rgt.mean(axis=1), 3.0, DELTA))
    assert out[stats.KEY_PGD_UCB_AGENTS] == pytest.approx([stats.mean_ucb(rgt[:, 0], 2.0, DELTA),
                                                           stats.mean_ucb(rgt[:, 1], 4.0, DELTA)])
    assert "NOT a bound on expected regret" in out[stats.KEY_PGD_NOTE] and stats.KEY_UCB not in out
    with pytest.raises(ValueError, match="len\\(R\\)"):
        stats.pgd_ucb(rgt, [2.0], DELTA)


def test_evaluate_reports_the_pgd_ucb_labelled():
    import jax

    from jaxauction import evaluate, mechanism, priors
    from jaxauction.mechanism import MechanismSpec

    spec = MechanismSpec(n_agents=2, n_items=1, hidden=(8,), payment="free", payment_max=1.0)  # R_i = 1 + 1
    rng = np.random.default_rng(5)
    params = jax.tree_util.tree_map(lambda sh: rng.normal(size=sh).astype(np.float32),
                                    mechanism.layer_shapes(spec), is_leaf=lambda x: isinstance(x, tuple))
    res = evaluate.evaluate(params, spec, priors.uniform(2, 1), points=64, seed=0, steps=3, ucb_delta=0.1)
    assert res[stats.KEY_DELTA] == 0.1 and res[stats.KEY_METHOD] == stats.BERNSTEIN
    assert res[stats.KEY_PGD_UCB] >= res["regret_mean"] and len(res[stats.KEY_PGD_UCB_AGENTS]) == 2
    assert res[stats.KEY_PGD_UCB] <= 2.0 and "NOT a bound" in res[stats.KEY_PGD_NOTE]
    assert "pgd_regret_ucb" in evaluate.format_table(res)
    with pytest.raises(ValueError, match="delta"):
        evaluate.evaluate(params, spec, priors.uniform(2, 1), points=4, steps=1, ucb_delta=0)
