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
