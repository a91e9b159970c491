"""Bounds for the MIP (certify.tighten): soundness by sampling, tightened ⊆ IBP, batching."""
import jax.numpy as jnp
import numpy as np
import pytest

from certify.network import weights64
from certify.tighten import OUTWARD, crown_batch, ibp64, select, tighten, unstable_counts
from jaxauction import bounds as jbounds
from jaxauction.bounds import Interval
from jaxauction.checkpoints import load_mechanism
from jaxauction import mechanism
from jaxauction.mechanism import MechanismSpec


def random_net(seed, n=2, m=2, hidden=(8, 8), payment="free"):
    """A small random mechanism (Glorot-uniform weights, biases N(0, 0.3^2)), float32 numpy leaves."""
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=hidden, allocation="sparsemax", payment=payment)
    rng = np.random.default_rng(seed)

    def dense(fan_in, fan_out):
        lim = np.sqrt(6.0 / (fan_in + fan_out))
        return {"w": rng.uniform(-lim, lim, (fan_in, fan_out)).astype(np.float32),
                "b": (0.3 * rng.normal(size=fan_out)).astype(np.float32)}

    widths = (n * m,) + tuple(hidden)
    params = {"trunk": [dense(widths[k], widths[k + 1]) for k in range(len(hidden))],
              "alloc": dense(hidden[-1], (n + 1) * m), "pay": dense(hidden[-1], n)}
    mechanism.check_params(params, spec)
    return params, spec


def agent_box(v, agent, lo_i, hi_i):
    lo, hi = v.copy(), v.copy()
    lo[agent], hi[agent] = lo_i, hi_i
    return Interval(lo, hi)


def sample_values(params, spec, v, agent, lo_i, hi_i, count=4000, seed=0):
    """Pre-activations per layer, allocation and payment logits at random bids in the box (float64)."""
    rng = np.random.default_rng(seed)
    b = np.repeat(v[None], count, 0)
    b[:, agent] = lo_i + rng.random((count, spec.n_items)) * (hi_i - lo_i)
    b[: 2 ** spec.n_items, agent] = np.array(np.meshgrid(*[[lo_i[j], hi_i[j]] for j in range(spec.n_items)])).reshape(
        spec.n_items, -1).T  # box corners too
    w = weights64(params)
    h = b.reshape(count, -1)
    pre = []
    for wk, bk in w.trunk:
        z = h @ wk + bk
        pre.append(z)
        h = np.maximum(z, 0)
    s = (h @ w.alloc[0] + w.alloc[1]).reshape(count, spec.n_agents + 1, spec.n_items)
    q = h @ w.pay[0] + w.pay[1]
    return pre, s, q


def assert_contains(nb, pre, s, q, tol=1e-9):
    for k, z in enumerate(pre):
        assert np.all(z >= nb.pre[k].lower - tol), f"layer {k} lower bound violated"
        assert np.all(z <= nb.pre[k].upper + tol), f"layer {k} upper bound violated"
    assert np.all(s >= nb.alloc_logits.lower - tol) and np.all(s <= nb.alloc_logits.upper + tol)
    assert np.all(q >= nb.pay_logits.lower - tol) and np.all(q <= nb.pay_logits.upper + tol)


def subset(inner, outer, tol=0.0):
    pairs = list(zip(inner.pre, outer.pre)) + [(inner.alloc_logits, outer.alloc_logits), (inner.pay_logits, outer.pay_logits)]
    return all(np.all(a.lower >= b.lower - tol) and np.all(a.upper <= b.upper + tol) for a, b in pairs)


@pytest.mark.parametrize("payment", ["free", "fractional"])
@pytest.mark.parametrize("seed", [0, 1])
def test_bounds_are_sound_and_nested(seed, payment):
    params, spec = random_net(seed, hidden=(8, 8, 8), payment=payment)
    v = np.random.default_rng(seed).random((2, 2))
    lo_i, hi_i = np.array([0.1, 0.0]), np.array([0.7, 1.0])
    box = agent_box(v, 1, lo_i, hi_i)
    samples = sample_values(params, spec, v, 1, lo_i, hi_i)
    ibp = tighten(params, spec, box, method="ibp")
    crown = tighten(params, spec, box, method="crown")
    lp = tighten(params, spec, box, method="lp")
    for nb in (ibp, crown, lp):
        assert_contains(nb, *samples)
    # nested up to the outward rounding (each method widens its own bounds by OUTWARD x magnitude)
    tol = 100 * OUTWARD
    assert subset(crown, ibp, tol) and subset(lp, crown, tol) and subset(lp, ibp, tol)


def test_ibp64_matches_jaxauction_ibp():
    params, spec = random_net(3)
    v = np.random.default_rng(3).random((2, 2))
    box = agent_box(v, 0, np.zeros(2), np.ones(2))
    ours = ibp64(params, spec, box)
    ref = jbounds.ibp(params, Interval(jnp.asarray(box.lower, jnp.float32), jnp.asarray(box.upper, jnp.float32)), spec)
    for a, b in zip(ours.pre + [ours.alloc_logits, ours.pay_logits], ref.pre + [ref.alloc_logits, ref.pay_logits]):
        np.testing.assert_allclose(a.lower, np.asarray(b.lower), atol=1e-5)
        np.testing.assert_allclose(a.upper, np.asarray(b.upper), atol=1e-5)


def test_crown_batch_equals_single_boxes():
    params, spec = random_net(4)
    v = np.random.default_rng(4).random((2, 2))
    los, his = [], []
    for k in range(3):
        box = agent_box(v, 0, np.array([0.1 * k, 0.0]), np.array([0.1 * k + 0.3, 0.5]))
        los.append(box.lower)
        his.append(box.upper)
    batch = crown_batch(params, spec, np.array(los), np.array(his))
    for k in range(3):
        single = tighten(params, spec, Interval(los[k], his[k]), method="crown")
        assert subset(select(batch, k), single, 1e-12) and subset(single, select(batch, k), 1e-12)


def test_lp_tightening_helps_on_reference_network(refdir):
    params, spec, info = load_mechanism(refdir / "2x2_sparsemax_in_linsigpmt_scratch_fast.npz")
    v = np.array(info["json"]["results"][0]["truthful_input"])
    box = agent_box(v, 0, np.zeros(2), np.ones(2))
    ibp, lp = tighten(params, spec, box, method="ibp"), tighten(params, spec, box, method="lp")
    assert_contains(lp, *sample_values(params, spec, v, 0, np.zeros(2), np.ones(2), count=20000))
    # Layer 1 is affine in the box, so IBP is already exact there; deeper layers must improve.
    assert unstable_counts(lp)[0] == unstable_counts(ibp)[0]
    assert sum(unstable_counts(lp)[1:]) < sum(unstable_counts(ibp)[1:])
    width = lambda nb: sum(float(np.sum(z.upper - z.lower)) for z in nb.pre[1:])
    assert width(lp) < 0.8 * width(ibp)


def test_bad_box_and_method():
    params, spec = random_net(0)
    with pytest.raises(ValueError, match="method"):
        tighten(params, spec, Interval(np.zeros((2, 2)), np.ones((2, 2))), method="zonotope")
    with pytest.raises(ValueError, match="shape"):
        tighten(params, spec, Interval(np.zeros((3, 2)), np.ones((3, 2))))
    with pytest.raises(ValueError, match="lower <= upper"):
        tighten(params, spec, Interval(np.ones((2, 2)), np.zeros((2, 2))))


def test_unstable_relus_bench_counts_a_hand_built_net():
    """``bench/unstable_relus.py`` on a 2-agent net whose first layer is known by hand.

    Agent 0's box is b_0 in [0, 1]^1 with v_1 fixed; neuron z1 = b_0 - 0.5 crosses 0 there
    (unstable), z2 = b_0 + 1 does not. On agent 1's box z1 = v_0 - 0.5 and z2 = v_0 + 1 are constants
    (stable). So the counts are [1, 0] per (profile, agent 0 / agent 1)."""
    import importlib.util

    from conftest import REPO
    from jaxauction.mechanism import MechanismSpec

    spec = MechanismSpec(n_agents=2, n_items=1, hidden=(2,), allocation="sparsemax", payment="free", payment_max=1.0)
    params = {"trunk": [{"w": np.array([[1.0, 1.0], [0.0, 0.0]], np.float32), "b": np.array([-0.5, 1.0], np.float32)}],
              "alloc": {"w": np.ones((2, 3), np.float32), "b": np.zeros(3, np.float32)},
              "pay": {"w": np.ones((2, 2), np.float32), "b": np.zeros(2, np.float32)}}
    mod_spec = importlib.util.spec_from_file_location("unstable_relus", REPO / "bench" / "unstable_relus.py")
    mod = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(mod)
    profiles = np.array([[[0.2], [0.7]], [[0.9], [0.1]]])
    for method in ("ibp", "crown"):
        counts = mod.unstable_per_layer(params, spec, profiles, method)
        np.testing.assert_array_equal(counts, [[1], [0], [1], [0]])
