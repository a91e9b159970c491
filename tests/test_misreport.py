"""Tests of the projected-gradient misreport search.

Compilation dominates the run time on CPU, so the tests share a few (spec, shape, steps)
configurations: the 1x1 hand-computed mechanism (B=4, 400 steps) and the 2x3 random nets
(B=64, 30 steps).
"""
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import auction, checkpoints, mechanism, misreport
from jaxauction.mechanism import MechanismSpec

# --- 1 agent, 1 item, hand-computed ------------------------------------------------------------
SPEC_1x1 = MechanismSpec(n_agents=1, n_items=1, hidden=(1,), payment="fractional")
UNIT = (np.zeros((1, 1), np.float32), np.ones((1, 1), np.float32))
V4 = np.array([0.3, 0.5, 0.8, 0.95], np.float32)  # b = 1 would sit on a sparsemax kink
STEPS_1x1 = 400
dev_u = jax.jit(auction.deviation_utilities, static_argnames="spec")


def random_params(spec, seed, scale=1.0):
    """Glorot-uniform weights and small random biases, drawn with numpy (no per-shape XLA compiles)."""
    rng = np.random.default_rng(seed)
    shapes = mechanism.layer_shapes(spec)

    def draw(s):
        lim = np.sqrt(6.0 / sum(s)) if len(s) == 2 else 0.1
        return jnp.asarray(scale * rng.uniform(-lim, lim, s), jnp.float32)
    return jax.tree_util.tree_map(draw, shapes, is_leaf=lambda s: isinstance(s, tuple))


def uniform(seed, shape, low=0.0, high=1.0):
    return jnp.asarray(np.random.default_rng(seed).uniform(low, high, shape), jnp.float32)


def quadratic_params():
    """h = relu(b) = b; allocation logits (b, 0) -> sparsemax a(b) = (b + 1) / 2 (for |b| < 1);
    payment hard_sigmoid(0) * a * b = a b / 2. Utility u(b) = (b + 1)/2 * (v - b/2): concave, with
    u'(b) = (v - b/2)/2 - (b + 1)/4, maximized at b* = v - 1/2 (projected onto [0, 1])."""
    return {"trunk": [{"w": jnp.ones((1, 1)), "b": jnp.zeros(1)}],
            "alloc": {"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(2)},
            "pay": {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}}


def u_quad(b, v):
    return (b + 1) / 2 * (v - b / 2)


def du_quad(b, v):
    return (v - b / 2) / 2 - (b + 1) / 4


def pgd_1x1(params, lr, **kw):
    vals = jnp.asarray(V4).reshape(-1, 1, 1)
    return misreport.regret_pgd(params, SPEC_1x1, vals, *UNIT, steps=STEPS_1x1, lr=lr, **kw)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.1), ("adam", 0.01)])
def test_finds_the_analytic_optimum(optimizer, lr):
    best = np.clip(V4 - 0.5, 0.0, 1.0)  # v = 0.3: the interior optimum -0.2 is projected to 0
    mis, rgt = pgd_1x1(quadratic_params(), lr, optimizer=optimizer)
    # u is flat near b* (u(b* + d) = u(b*) - d^2/4), so float32 utilities pin b* only to ~1e-3
    np.testing.assert_allclose(np.asarray(mis).ravel(), best, atol=3e-3)
    np.testing.assert_allclose(np.asarray(rgt).ravel(), u_quad(best, V4) - u_quad(V4, V4), atol=2e-6)
    if optimizer == "sgd":  # the last iterate of a contraction (factor 1 - lr/2 per step) converges
        last, _ = pgd_1x1(quadratic_params(), lr, keep_best=False)
        np.testing.assert_allclose(np.asarray(last).ravel(), best, atol=1e-5)


def test_posted_price_net_bids_zero():
    # a = 1 and p = b/2 (the net of test_auction): utility v - b/2 is maximized by bidding 0.
    params = {"trunk": [{"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}],
              "alloc": {"w": jnp.zeros((1, 2)), "b": jnp.array([10.0, -10.0])},
              "pay": {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}}
    mis, rgt = pgd_1x1(params, 0.02)
    np.testing.assert_allclose(mis, 0.0, atol=1e-7)
    np.testing.assert_allclose(np.asarray(rgt).ravel(), V4 / 2, atol=1e-6)


@pytest.mark.parametrize("optimizer,lr", [("sgd", 0.001), ("adam", 0.0005)])
def test_update_math_against_a_float64_trajectory(optimizer, lr):
    """400 steps from the truth with a step size too small to converge: the end point depends on
    every update. Reference: the docstring's formulas with the analytic gradient, in float64."""
    b, mu, nu = V4.astype(np.float64), 0.0, 0.0
    for t in range(1, STEPS_1x1 + 1):
        g = du_quad(b, V4)
        if optimizer == "sgd":
            b = b + lr * g
        else:
            mu, nu = 0.9 * mu + 0.1 * g, 0.999 * nu + 0.001 * g * g
            b = b + lr * (mu / (1 - 0.9 ** t)) / (np.sqrt(nu / (1 - 0.999 ** t)) + 1e-8)
        b = np.clip(b, 0.0, 1.0)
    mis, _ = pgd_1x1(quadratic_params(), lr, optimizer=optimizer, keep_best=False)
    assert np.max(np.abs(b - V4)) > 0.05  # the trajectory really moved
    np.testing.assert_allclose(np.asarray(mis).ravel(), b, atol=2e-5)


# --- random 2x3 nets ---------------------------------------------------------------------------
SPECS_2x3 = [MechanismSpec(2, 3, hidden=(32, 32), allocation="sparsemax", payment="free", payment_max=3.0),
             MechanismSpec(2, 3, hidden=(32, 32), allocation="softmax", payment="fractional")]
B, STEPS = 64, 30
BOX01 = (np.zeros((2, 3), np.float32), np.ones((2, 3), np.float32))


@pytest.mark.parametrize("spec", SPECS_2x3, ids=["sparsemax-free", "softmax-fractional"])
def test_never_below_the_start(spec):
    """Random nets (weights doubled for sharper kinks), random starts, steps large enough that the
    *last* iterate often ends below the start (checked for the sparsemax net: a last-iterate
    search fails this test); the returned best iterate never does."""
    worst, last_below = [], []
    for seed in range(3):
        params = random_params(spec, seed, scale=2.0)
        vals, init = uniform(100 + seed, (B, 2, 3)), uniform(200 + seed, (B, 2, 3))
        u0 = np.asarray(dev_u(params, spec, vals, init))
        for optimizer, lr in (("sgd", 5.0), ("adam", 0.5)):
            mis = misreport.pgd(params, spec, vals, init, *BOX01, steps=STEPS, lr=lr, optimizer=optimizer)
            u = np.asarray(dev_u(params, spec, vals, mis))
            worst.append(np.min(u - u0))
            assert np.mean(u > u0 + 1e-4) > 0.3  # and it does climb (elsewhere the gradient is 0)
        if spec.allocation == "sparsemax":
            last = misreport.pgd(params, spec, vals, init, *BOX01, steps=STEPS, lr=5.0, keep_best=False)
            last_below.append(np.mean(np.asarray(dev_u(params, spec, vals, last)) < u0 - 1e-6))
        # from the truth, the (nonnegative) regret is positive somewhere for a random net
        mis = misreport.pgd(params, spec, vals, vals, *BOX01, steps=STEPS, lr=0.5)
        gain = np.asarray(dev_u(params, spec, vals, mis) - dev_u(params, spec, vals, vals))
        assert np.all(gain >= -1e-6) and np.max(gain) > 1e-4
    assert min(worst) >= -1e-6, worst
    assert not last_below or max(last_below) > 0.05, last_below


def test_stays_inside_a_non_unit_box():
    spec = SPECS_2x3[0]
    # asymmetric support: agent 0's items in [4, 16], [4, 7], [0, 1]; agent 1's in [1, 2], [0, 3], [5, 6]
    low = np.array([[4.0, 4.0, 0.0], [1.0, 0.0, 5.0]], np.float32)
    high = np.array([[16.0, 7.0, 1.0], [2.0, 3.0, 6.0]], np.float32)
    params = random_params(spec, 0)
    vals = low + uniform(1, (B, 2, 3)) * (high - low)
    init = low - 3 + uniform(2, (B, 2, 3)) * (high - low + 6)  # partly outside the box
    for optimizer, lr in (("sgd", 10.0), ("adam", 3.0)):
        mis = np.asarray(misreport.pgd(params, spec, vals, init, low, high, steps=STEPS, lr=lr, optimizer=optimizer))
        assert np.all(mis >= low) and np.all(mis <= high)
        # each bound is active somewhere, i.e. the projection is exercised with the right orientation
        assert np.any(np.isclose(mis, low)) and np.any(np.isclose(mis, high))
    mis, rgt = misreport.regret_pgd(params, spec, vals, low, high, steps=STEPS, lr=1.0, key=jax.random.PRNGKey(2))
    assert np.all(np.asarray(mis) >= low) and np.all(np.asarray(mis) <= high)
    assert np.all(np.asarray(rgt) >= 0)


def _same_search(params, spec, vals, x, y, tol=1e-5):
    """(B, N): on which (profile, agent) pairs two searches found the same misreport (every item
    within ``tol``) and the same deviation utility (within ``tol``).

    PGD in float32 is not bitwise reproducible across batch shapes or CPUs (XLA promises no
    summation order), and a last-ulp difference can put one trajectory on the other side of a
    ReLU/sparsemax kink or of the box's face, where it ends up ~1e-4 away (seen on an Intel Xeon:
    1 pair of 128). A real mix-up of rows (misaligned chunks, padding leaking in, agents swapped or
    coupled) changes most pairs."""
    x, y = np.asarray(x), np.asarray(y)
    same_bid = np.max(np.abs(x - y), axis=-1) <= tol
    same_u = np.abs(np.asarray(dev_u(params, spec, vals, jnp.asarray(x)) - dev_u(params, spec, vals, jnp.asarray(y)))) <= tol
    return same_bid & same_u


def test_agents_are_independent_and_chunking_is_exact():
    """Agent 0's search ignores agent 1's start, and chunking the batch (3 chunks of 22, the last
    padded) is the same search: equal up to float32 reproducibility (see :func:`_same_search`)."""
    spec = SPECS_2x3[0]
    params = random_params(spec, 5)
    vals = uniform(6, (B, 2, 3))
    init_b = vals.at[:, 1].set(0.5)  # same row 0, different row 1
    a = misreport.pgd(params, spec, vals, vals, *BOX01, steps=STEPS, lr=0.2)
    b = misreport.pgd(params, spec, vals, init_b, *BOX01, steps=STEPS, lr=0.2)
    same = _same_search(params, spec, vals, a, b)
    assert same[:, 0].mean() >= 0.95  # agent 0's search ignores agent 1's misreport
    assert same[:, 1].mean() < 0.5  # while agent 1's searches did differ
    c = misreport.pgd(params, spec, vals, vals, *BOX01, steps=STEPS, lr=0.2, chunk=24)
    assert _same_search(params, spec, vals, c, a).mean() >= 0.95
    # the criterion catches the bugs chunking could have: rows off by one, agents swapped
    assert _same_search(params, spec, vals, np.roll(np.asarray(a), 1, axis=0), a).mean() < 0.5
    assert _same_search(params, spec, vals, np.asarray(a)[:, ::-1], a).mean() < 0.5


def test_no_retracing_for_same_shapes():
    spec = SPECS_2x3[1]
    low, high = BOX01
    misreport.regret_pgd(random_params(spec, 9), spec, jnp.zeros((B, 2, 3)), low, high, steps=STEPS, lr=0.3)
    before = misreport._pgd_jit._cache_size()
    for seed, lr in ((0, 0.02), (1, 0.05), (2, 0.1)):  # new weights, values and step size
        params = random_params(spec, seed)
        vals = uniform(seed, (B, 2, 3))
        misreport.regret_pgd(params, spec, vals, low, high, steps=STEPS, lr=lr)
        # numpy / list inputs and a different box: same program
        misreport.regret_pgd(params, spec, np.asarray(vals), (low - 1).tolist(), high + 1, steps=STEPS, lr=lr)
    assert misreport._pgd_jit._cache_size() == before
    misreport.regret_pgd(params, spec, vals[:B - 1], low, high, steps=STEPS, lr=0.1)  # a new shape compiles
    assert misreport._pgd_jit._cache_size() == before + 1


def test_bad_input_is_named():
    vals = jnp.zeros((2, 1, 1))
    with pytest.raises(ValueError, match="optimizer"):
        misreport.pgd(quadratic_params(), SPEC_1x1, vals, vals, *UNIT, steps=1, lr=0.1, optimizer="lbfgs")
    with pytest.raises(ValueError, match="steps"):
        misreport.pgd(quadratic_params(), SPEC_1x1, vals, vals, *UNIT, steps=-1, lr=0.1)
    with pytest.raises(ValueError, match="low <= high"):
        misreport.pgd(quadratic_params(), SPEC_1x1, vals, vals, UNIT[1], UNIT[0], steps=1, lr=0.1)
    with pytest.raises(AssertionError):  # 2 agents for a 1-agent mechanism
        misreport.pgd(quadratic_params(), SPEC_1x1, jnp.zeros((2, 2, 1)), jnp.zeros((2, 2, 1)), *UNIT, steps=1, lr=0.1)


# --- the paper's network -----------------------------------------------------------------------
def test_matches_the_paper_pgd_on_the_reference_1x2(refdir):
    """The JSON's pgd_misreport_util is 1000 plain ascent steps at lr 0.01 from the truthful bid
    (the defaults of the paper's certification script, ``experiment_on_input``), last iterate.
    Ours with the same settings reproduces it (over all 200 points: median |diff| 6e-8, max
    1.05e-4, the largest where a trajectory crosses a kink) and never beats the MIP optimum."""
    name = "1x2_sparsemax_in_linsigpmt_scratch_fast"
    params, spec, _ = checkpoints.load_mechanism(refdir / f"{name}.npz")
    res = json.loads((refdir / f"{name}.json").read_text())["results"][:20]
    vals = jnp.array([r["truthful_input"] for r in res], jnp.float32)
    cert = np.array([r["certified_regret"] for r in res])
    pgd_u = np.array([r["pgd_misreport_util"] for r in res])
    low, high = np.zeros((1, 2), np.float32), np.ones((1, 2), np.float32)

    mis, rgt = misreport.regret_pgd(params, spec, vals, low, high, steps=1000, lr=0.01, keep_best=False)
    u = np.asarray(dev_u(params, spec, vals, mis))[:, 0]
    diff = np.abs(u - pgd_u)
    assert np.median(diff) < 1e-5 and diff.max() < 5e-4, diff
    assert np.all(np.asarray(rgt)[:, 0] <= cert + 1e-4)

    # the evaluation default (lr 0.02, best iterate) is also below the certified regret, and close
    _, rgt2 = misreport.regret_pgd(params, spec, vals, low, high, steps=1000, lr=0.02)
    gap = cert - np.asarray(rgt2)[:, 0]
    assert np.all(gap >= -1e-4) and np.mean(gap) < 5e-3, gap


def test_pgd_accepts_concrete_jax_bounds_inside_jit():
    """Bounds passed as jax arrays (concrete or traced) must not break the low <= high check."""
    from jaxauction import mechanism as _mech
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(4,))
    params = _mech.init(jax.random.PRNGKey(0), spec)
    v = jnp.full((2, 1, 2), 0.5)
    traced = jax.jit(lambda lo, hi: misreport.pgd(params, spec, v, v, lo, hi, steps=2, lr=0.02))
    out = traced(jnp.zeros((1, 2)), jnp.ones((1, 2)))
    assert out.shape == (2, 1, 2)
    with pytest.raises(ValueError, match="low <= high"):
        misreport.pgd(params, spec, v, v, jnp.ones((1, 2)), jnp.zeros((1, 2)), steps=2, lr=0.02)


# --- restarts ------------------------------------------------------------------------------------

def trap_params():
    """1x1 net with a corner exploit that ascent from the truthful bid cannot reach.

    h = relu(10 b - 9) (0 up to b = 0.9, 1 at b = 1); allocation logits (h, 0) -> a = (1 + h)/2;
    payment logit -50 h -> fraction clip(1/2 - 5 h, 0, 1). For b <= 0.9: u(b) = (v - b/2)/2, so
    ascent from b = v slides to b = 0 (u = v/2, regret v/4). At the corner b = 1: a = 1 and the
    fraction is 0, u = v (regret 3v/4), the global maximum.
    """
    return {"trunk": [{"w": jnp.array([[10.0]]), "b": jnp.array([-9.0])}],
            "alloc": {"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(2)},
            "pay": {"w": jnp.array([[-50.0]]), "b": jnp.zeros(1)}}


def test_restarts_find_the_corner_exploit_ascent_misses():
    vals = jnp.asarray(V4[:3]).reshape(-1, 1, 1)  # values below 0.9: truthful start in the flat part
    key = jax.random.PRNGKey(0)
    mis0, rgt0 = misreport.regret_pgd(trap_params(), SPEC_1x1, vals, *UNIT, steps=50, lr=0.1)
    np.testing.assert_allclose(np.asarray(mis0).ravel(), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rgt0).ravel(), V4[:3] / 4, atol=1e-6)
    mis, rgt = misreport.regret_pgd(trap_params(), SPEC_1x1, vals, *UNIT, steps=50, lr=0.1, restarts=16, key=key)
    np.testing.assert_allclose(np.asarray(mis).ravel(), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(rgt).ravel(), 3 * V4[:3] / 4, atol=1e-6)
    with pytest.raises(ValueError, match="PRNG key"):
        misreport.regret_pgd(trap_params(), SPEC_1x1, vals, *UNIT, steps=5, lr=0.05, restarts=2)


def test_restart_inits_hit_corners_faces_and_interior_of_the_box():
    low = np.array([[0.0, 1.0], [-1.0, 2.0]], np.float32)
    high = np.array([[1.0, 3.0], [0.0, 2.5]], np.float32)
    x = np.asarray(misreport.restart_inits(jax.random.PRNGKey(1), (20000, 2, 2), low, high))
    assert x.shape == (20000, 2, 2)
    assert np.all(x >= low) and np.all(x <= high)
    at_low, at_high = np.mean(x == low, axis=0), np.mean(x == high, axis=0)
    np.testing.assert_allclose(at_low, 0.25, atol=0.015)
    np.testing.assert_allclose(at_high, 0.25, atol=0.015)
    corner = np.all(x[:, 0] == high[0], axis=-1)  # agent 0 bids its maximum on both items
    assert abs(corner.mean() - 1 / 16) < 0.01


def test_best_of_picks_the_highest_deviation_utility_per_agent():
    spec = MechanismSpec(n_agents=2, n_items=3, hidden=(8,), payment="fractional")
    params = random_params(spec, 5)
    vals = uniform(0, (6, 2, 3))
    cands = uniform(1, (4, 6, 2, 3))
    best = np.asarray(misreport.best_of(params, spec, vals, cands))
    # utilities of each candidate alone: another batch shape than best_of's, so equal only up to
    # float32 rounding; the pick is checked exactly where the winner leads by more than that
    u = np.stack([np.asarray(dev_u(params, spec, vals, c)) for c in cands])  # (R, B, N)
    r = u.argmax(axis=0)
    lead = np.sort(u, axis=0)[-1] - np.sort(u, axis=0)[-2]
    assert np.mean(lead > 1e-5) > 0.9
    for b in range(6):
        for i in range(2):
            if lead[b, i] > 1e-5:
                np.testing.assert_array_equal(best[b, i], np.asarray(cands)[r[b, i], b, i])
    # and never below any candidate, in particular the first (truthful-start) one
    assert np.all(np.asarray(dev_u(params, spec, vals, jnp.asarray(best))) >= u.max(axis=0) - 1e-6)
