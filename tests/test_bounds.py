import jax
import jax.numpy as jnp
import numpy as np

from jaxauction import bounds, mechanism
from jaxauction.mechanism import MechanismSpec


def test_ibp_contains_sampled_outputs():
    spec = MechanismSpec(n_agents=2, n_items=3, hidden=(16, 16, 16))
    params = mechanism.init(jax.random.PRNGKey(1), spec)
    v = jax.random.uniform(jax.random.PRNGKey(2), (2, 3))
    box = bounds.agent_box(v, 1, jnp.zeros((2, 3)), jnp.ones((2, 3)))
    nb = bounds.ibp(params, box, spec)
    pts = jax.random.uniform(jax.random.PRNGKey(3), (4000, 3))
    bids = jnp.broadcast_to(v, (4000, 2, 3)).at[:, 1, :].set(pts)
    h = bids.reshape(4000, 6)
    for layer, z_b in zip(params["trunk"], nb.pre):
        z = h @ layer["w"] + layer["b"]
        assert np.all(z >= z_b.lower - 1e-5) and np.all(z <= z_b.upper + 1e-5)
        h = jax.nn.relu(z)
    s, q = mechanism.heads(params, h, spec)
    assert np.all(s >= nb.alloc_logits.lower - 1e-5) and np.all(s <= nb.alloc_logits.upper + 1e-5)
    assert np.all(q >= nb.pay_logits.lower - 1e-5) and np.all(q <= nb.pay_logits.upper + 1e-5)
    # the box is not trivially loose: the agent-0 rows of the input are fixed points
    np.testing.assert_array_equal(box.lower[0], box.upper[0])


def test_dense_hand_computed():
    box = bounds.Interval(jnp.array([-1.0, 0.0]), jnp.array([1.0, 2.0]))
    w = jnp.array([[1.0], [-2.0]])
    out = bounds.dense(box, w, jnp.array([0.5]))
    # x0 - 2 x1 + 0.5 over the box: min -1 - 4 + 0.5, max 1 - 0 + 0.5
    np.testing.assert_allclose(out.lower, [-4.5])
    np.testing.assert_allclose(out.upper, [1.5])


def test_stability_loss_prefers_stable_neurons():
    spec = MechanismSpec(n_agents=1, n_items=1, hidden=(2,))
    stable = {"trunk": [{"w": jnp.array([[1.0, 1.0]]), "b": jnp.array([1.0, -5.0])}],
              "alloc": {"w": jnp.zeros((2, 2)), "b": jnp.zeros(2)}, "pay": {"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)}}
    unstable = jax.tree_util.tree_map(lambda x: x, stable)
    unstable["trunk"][0]["b"] = jnp.array([-0.5, -0.5])
    box = bounds.Interval(jnp.zeros((1, 1)), jnp.ones((1, 1)))
    assert bounds.relu_stability_loss(stable, box, spec) < bounds.relu_stability_loss(unstable, box, spec)


def _one_layer(w, b):
    return {"trunk": [{"w": jnp.asarray(w), "b": jnp.asarray(b)}],
            "alloc": {"w": jnp.zeros((len(b), 2)), "b": jnp.zeros(2)}, "pay": {"w": jnp.zeros((len(b), 1)), "b": jnp.zeros(1)}}


def test_margin_loss_is_a_soft_count_of_unstable_neurons_by_hand():
    """Bid box [0, 1], neurons z = w x + b: [0.5x - 0.25] spans [-0.25, 0.25] (centred on its kink:
    1), [x - 0.25] spans [-0.25, 0.75] (c 0.25, r 0.5: 1 - 0.5 = 0.5), [x + 1] is stable (0)."""
    spec = MechanismSpec(n_agents=1, n_items=1, hidden=(3,))
    params = _one_layer([[0.5, 1.0, 1.0]], [-0.25, -0.25, 1.0])
    box = bounds.Interval(jnp.zeros((1, 1)), jnp.ones((1, 1)))
    np.testing.assert_allclose(bounds.relu_margin_loss(params, box, spec), 1.5, rtol=1e-5)
    # a stable neuron's term is 0 however close it is to its kink; the mean runs over boxes
    two = bounds.Interval(jnp.zeros((2, 1, 1)), jnp.array([[[1.0]], [[0.5]]]))  # 2nd box: [-0.25, 0] and [-0.25, 0.25]
    np.testing.assert_allclose(bounds.relu_margin_loss(params, two, spec), (1.5 + (0.0 + 1.0)) / 2, rtol=1e-5)


def test_margin_loss_ignores_layer_scale_where_the_paper_loss_does_not():
    """Scaling a ReLU layer's weights and bias by s > 0 changes no neuron's stability; the margin
    loss is unchanged, Xiao's -tanh(1 + l u) is not (its push shrinks with the bounds' size)."""
    spec = MechanismSpec(n_agents=2, n_items=2, hidden=(16, 16))
    params = mechanism.init(jax.random.PRNGKey(3), spec)  # zero biases
    params["trunk"][0]["b"] = jax.random.uniform(jax.random.PRNGKey(4), (16,), minval=-0.5, maxval=0.5)
    scaled = jax.tree_util.tree_map(lambda x: x, params)
    scaled["trunk"][0] = {"w": 0.1 * params["trunk"][0]["w"], "b": 0.1 * params["trunk"][0]["b"]}
    v = jax.random.uniform(jax.random.PRNGKey(5), (8, 2, 2))
    box = bounds.agent_box(v, 0, jnp.zeros((2, 2)), jnp.ones((2, 2)))
    m, m_s = bounds.relu_margin_loss(params, box, spec), bounds.relu_margin_loss(scaled, box, spec)
    assert float(m) > 0.5
    np.testing.assert_allclose(m_s, m, rtol=1e-4)
    x, x_s = bounds.relu_stability_loss(params, box, spec), bounds.relu_stability_loss(scaled, box, spec)
    assert abs(float(x_s) - float(x)) > 1e-3
    assert set(bounds.STABILITY_LOSSES) == set(__import__("jaxauction.config").config.STABILITY_LOSSES)


def test_ibp_tanh_and_separate_towers_contain_sampled_outputs():
    """IBP for tanh (monotone) and separate towers: pre[l] is the allocation tower's layer l then the
    payment tower's, i.e. the pre-activations of the block-diagonal trunk of certify.network."""
    import pytest

    from certify import network, tighten

    for act in mechanism.ACTIVATIONS:
        for towers in mechanism.TOWERS:
            spec = MechanismSpec(n_agents=2, n_items=3, hidden=(16, 12), allocation="softmax",
                                 payment="fractional_sigmoid", activation=act, towers=towers)
            params = mechanism.init(jax.random.PRNGKey(1), spec)
            v = jax.random.uniform(jax.random.PRNGKey(2), (2, 3))
            box = bounds.agent_box(v, 1, jnp.zeros((2, 3)), jnp.ones((2, 3)))
            nb = bounds.ibp(params, box, spec)
            nb64 = tighten.ibp64(params, spec, box)
            pts = jax.random.uniform(jax.random.PRNGKey(3), (4000, 3))
            bids = np.asarray(jnp.broadcast_to(v, (4000, 2, 3)).at[:, 1, :].set(pts), np.float64)
            zs, s, q = network.preactivations64(network.weights64(params), spec, bids)
            for b in (nb, nb64):
                assert [np.shape(z.lower)[-1] for z in b.pre] == [z.shape[-1] for z in zs]
                for z, z_b in zip(zs, b.pre):
                    assert np.all(z >= z_b.lower - 1e-5) and np.all(z <= z_b.upper + 1e-5)
                assert np.all(s >= b.alloc_logits.lower - 1e-5) and np.all(s <= b.alloc_logits.upper + 1e-5)
                assert np.all(q >= b.pay_logits.lower - 1e-5) and np.all(q <= b.pay_logits.upper + 1e-5)
            if act == "tanh":
                for loss in bounds.STABILITY_LOSSES.values():
                    with pytest.raises(ValueError, match="ReLU-stability.*'tanh'"):
                        loss(params, box, spec)
                with pytest.raises(ValueError, match="ReLUs only.*--solver bab"):
                    tighten.crown_batch(params, spec, np.asarray(box.lower)[None], np.asarray(box.upper)[None])
