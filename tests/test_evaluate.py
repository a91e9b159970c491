import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import checkpoints, evaluate, mechanism, priors
from jaxauction.mechanism import MechanismSpec

KEYS = {"revenue", "regret_mean", "regret_max", "regret_mean_per_agent", "regret_max_per_agent",
        "ir_violation_rate", "ir_violation_mean", "revenue_ir_zeroed", "revenue_ir_adjusted",
        "n_agents", "n_items", "points", "steps", "seconds"}


def test_ir_metrics_of_a_constant_mechanism():
    # 2 agents, 1 item, bids ignored: each agent gets half the item and pays 0.7 resp. 0.2.
    # u_0 = v_0/2 - 0.7 < 0 always; u_1 = v_1/2 - 0.2 < 0 iff v_1 < 0.4. Nothing to gain by lying.
    spec = MechanismSpec(2, 1, hidden=(1,), allocation="softmax", payment="free", payment_max=1.0)
    params = {"trunk": [{"w": jnp.zeros((2, 1)), "b": jnp.zeros(1)}],  # softmax(10, 10, -10) = (1/2, 1/2, 1e-9)
              "alloc": {"w": jnp.zeros((1, 3)), "b": jnp.array([10.0, 10.0, -10.0])},
              "pay": {"w": jnp.zeros((1, 2)), "b": jnp.array([0.7, 0.2])}}
    prior = priors.uniform(2, 1)
    res = evaluate.evaluate(params, spec, prior, points=200, seed=3, steps=5)
    v = np.asarray(prior.sample(jax.random.PRNGKey(3), 200))[:, :, 0]  # the same profiles
    ok1 = v[:, 1] / 2 - 0.2 >= -evaluate.IR_TOL
    assert 0.2 < ok1.mean() < 0.9  # both cases occur
    assert res["revenue"] == pytest.approx(0.9, abs=1e-6)
    assert res["revenue_ir_zeroed"] == pytest.approx(0.0, abs=1e-7)      # agent 0 always walks away
    assert res["revenue_ir_adjusted"] == pytest.approx(0.2 * ok1.mean(), abs=1e-6)  # only its payment lost
    assert res["ir_violation_rate"] == pytest.approx((1 + (~ok1).mean()) / 2, abs=1e-6)
    want_mean = (np.mean(0.7 - v[:, 0] / 2) + np.mean(np.maximum(0.2 - v[:, 1] / 2, 0))) / 2
    assert res["ir_violation_mean"] == pytest.approx(want_mean, abs=1e-6)
    assert res["regret_max"] == pytest.approx(0.0, abs=1e-7)
    assert res["regret_mean_per_agent"] == pytest.approx([0.0, 0.0], abs=1e-7)
    assert KEYS <= set(res) and (res["n_agents"], res["n_items"], res["points"]) == (2, 1, 200)
    json.dumps(res)  # plain Python numbers


def test_regret_metrics_of_the_hand_computed_mechanism():
    # the 1x1 net of test_misreport: u(b) = (b + 1)/2 (v - b/2), best bid clip(v - 1/2, 0, 1)
    spec = MechanismSpec(1, 1, hidden=(1,), payment="fractional")
    params = {"trunk": [{"w": jnp.ones((1, 1)), "b": jnp.zeros(1)}],
              "alloc": {"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(2)},
              "pay": {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}}
    prior = priors.uniform(1, 1)
    res = evaluate.evaluate(params, spec, prior, points=50, seed=1, steps=400, lr=0.1)
    v = np.asarray(prior.sample(jax.random.PRNGKey(1), 50)).ravel()
    u = lambda b: (b + 1) / 2 * (v - b / 2)  # noqa: E731
    rgt = u(np.clip(v - 0.5, 0, 1)) - u(v)
    assert res["regret_mean"] == pytest.approx(rgt.mean(), abs=2e-6)
    assert res["regret_max"] == pytest.approx(rgt.max(), abs=2e-6)
    assert res["regret_mean_per_agent"] == pytest.approx([rgt.mean()], abs=2e-6)
    assert res["revenue"] == pytest.approx(np.mean((v + 1) / 2 * v / 2), abs=1e-6)
    assert res["ir_violation_rate"] == 0.0 and res["revenue_ir_zeroed"] == pytest.approx(res["revenue"])


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A saved 2x3 mechanism with a non-unit, asymmetric prior."""
    spec = MechanismSpec(2, 3, hidden=(32, 32), allocation="softmax", payment="fractional")
    rng = np.random.default_rng(0)  # Glorot-uniform weights drawn with numpy (no per-shape XLA compiles)

    def draw(s):
        lim = np.sqrt(6.0 / sum(s)) if len(s) == 2 else 0.1
        return rng.uniform(-lim, lim, s).astype(np.float32)
    params = jax.tree_util.tree_map(draw, mechanism.layer_shapes(spec), is_leaf=lambda s: isinstance(s, tuple))
    prior = priors.per_item(2, [4.0, 4.0, 0.0], [16.0, 7.0, 1.0])
    d = checkpoints.save_mechanism(tmp_path_factory.mktemp("ckpt") / "run", params, spec, prior.to_dict())
    return d, params, spec, prior


def test_cli_json_matches_the_library(ckpt, capsys):
    d, params, spec, prior = ckpt
    assert evaluate.main(["--ckpt", str(d), "--points", "64", "--steps", "30", "--seed", "2", "--json"]) == 0
    out = capsys.readouterr().out
    assert len(out.strip().splitlines()) == 1
    res = json.loads(out)
    assert KEYS <= set(res) and (res["n_agents"], res["n_items"], res["points"], res["steps"]) == (2, 3, 64, 30)
    assert len(res["regret_max_per_agent"]) == 2
    # the CLI used the checkpoint's prior (values in [4, 16] x [4, 7] x [0, 1]), not the unit box
    want = evaluate.evaluate(params, spec, prior, points=64, seed=2, steps=30)
    for k in ("revenue", "regret_mean", "ir_violation_rate", "revenue_ir_zeroed"):
        assert res[k] == pytest.approx(want[k], rel=1e-5, abs=1e-7), k
    unit = evaluate.evaluate(params, spec, priors.uniform(2, 3), points=64, seed=2, steps=30)
    assert abs(unit["revenue"] - res["revenue"]) > 0.1


def test_cli_table(ckpt, capsys):
    d = ckpt[0]
    assert evaluate.main(["--ckpt", str(d), "--points", "64", "--steps", "30"]) == 0
    out = capsys.readouterr().out
    for k in ("revenue", "regret_mean", "regret_max_per_agent", "ir_violation_rate", "seconds"):
        assert any(line.split()[0] == k for line in out.splitlines() if line.strip()), k


def test_cli_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "mechanism.json").write_text("{not json")
    empty = tmp_path / "empty"
    empty.mkdir()
    for argv in (["--ckpt", str(bad)], ["--ckpt", str(empty)], ["--ckpt", str(tmp_path / "nope.npz")]):
        assert evaluate.main(argv + ["--json"]) == 2
        cap = capsys.readouterr()
        assert cap.out == ""
        lines = cap.err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), cap.err


def test_cli_missing_checkpoint_exit_code(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "jaxauction.evaluate", "--ckpt", str(tmp_path / "missing"), "--json"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("error: ") and "missing" in proc.stderr


def test_bad_arguments(ckpt, capsys):
    d, params, spec, _ = ckpt
    assert evaluate.main(["--ckpt", str(d), "--points", "0"]) == 2
    assert "points" in capsys.readouterr().err
    with pytest.raises(ValueError, match="prior"):
        evaluate.evaluate(params, spec, priors.uniform(1, 3), points=4, steps=1)


def test_restarts_reveal_the_corner_exploit_in_the_evaluation():
    # the trap net of test_misreport: ascent from the truthful bid finds regret v/4 (v <= 0.9), the
    # corner b = 1 gives 3v/4; --restarts finds the corner, the paper's protocol does not.
    spec = MechanismSpec(1, 1, hidden=(1,), payment="fractional")
    params = {"trunk": [{"w": jnp.array([[10.0]]), "b": jnp.array([-9.0])}],
              "alloc": {"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(2)},
              "pay": {"w": jnp.array([[-50.0]]), "b": jnp.zeros(1)}}
    prior = priors.uniform(1, 1)
    v = np.asarray(prior.sample(jax.random.PRNGKey(4), 64)).ravel()
    plain = evaluate.evaluate(params, spec, prior, points=64, seed=4, steps=50, lr=0.1)
    strong = evaluate.evaluate(params, spec, prior, points=64, seed=4, steps=50, lr=0.1, restarts=32)
    # brute force: the best misreport on a fine grid of [0, 1], per profile
    grid = jnp.linspace(0.0, 1.0, 20001)
    a, pay = mechanism.apply(params, grid.reshape(-1, 1, 1), spec)
    a, pay = np.asarray(a).ravel(), np.asarray(pay).ravel()
    at, pt = (np.asarray(x).ravel() for x in mechanism.apply(params, jnp.asarray(v).reshape(-1, 1, 1), spec))
    best = np.max(a[None, :] * v[:, None] - pay[None, :], axis=1) - (at * v - pt)
    assert plain["restarts"] == 0 and strong["restarts"] == 32
    assert plain["regret_mean"] < 0.5 * best.mean()
    assert strong["regret_mean"] == pytest.approx(best.mean(), abs=1e-4)
    assert strong["regret_max"] == pytest.approx(best.max(), abs=1e-4)


def test_worst_profiles_are_the_largest_regrets_worst_first():
    """``worst=K`` returns the K profiles of largest PGD regret, worst first: checked against the
    hand-computed regret of the 1x1 mechanism of the test above on v ~ U[0, 0.5], where the best
    bid is 0 and the regret u(0) - u(v) = (v - v^2) / 4 grows strictly with v (no ties)."""
    spec = MechanismSpec(1, 1, hidden=(1,), payment="fractional")
    params = {"trunk": [{"w": jnp.ones((1, 1)), "b": jnp.zeros(1)}],
              "alloc": {"w": jnp.array([[1.0, 0.0]]), "b": jnp.zeros(2)},
              "pay": {"w": jnp.zeros((1, 1)), "b": jnp.zeros(1)}}
    prior = priors.per_item(1, [0.0], [0.5])
    res = evaluate.evaluate(params, spec, prior, points=50, seed=1, steps=400, lr=0.1, worst=3)
    v = np.asarray(prior.sample(jax.random.PRNGKey(1), 50)).ravel()
    rgt = (v - v ** 2) / 4
    top = np.argsort(-rgt)[:3]
    assert rgt[top[2]] - rgt[np.argsort(-rgt)[3]] > 1e-5  # the top 3 are well separated
    np.testing.assert_allclose(np.asarray(res["worst_profiles"]).ravel(), v[top], rtol=1e-6)
    np.testing.assert_allclose(np.asarray(res["worst_regrets"]).ravel(), rgt[top], atol=2e-6)
    assert "worst_profiles" not in evaluate.evaluate(params, spec, prior, points=50, seed=1, steps=10)


def test_cli_worst_out_writes_a_profiles_file_certify_reads(ckpt, tmp_path, capsys):
    from certify.campaign.profiles import read_profiles_file

    d, params, spec, prior = ckpt
    out = tmp_path / "worst.json"
    assert evaluate.main(["--ckpt", str(d), "--points", "64", "--steps", "30", "--json",
                          "--worst-out", str(out), "--worst", "3"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["worst_out"] == str(out) and "worst_profiles" not in res
    worst = np.asarray(res["worst_regrets"]).max(axis=1)
    assert np.all(np.diff(worst) <= 0) and worst[0] == pytest.approx(res["regret_max"], rel=1e-6)
    low, high = (np.broadcast_to(np.asarray(x, float), (2, 3)) for x in prior.bounds())
    prof = read_profiles_file(out, 2, 3, low, high)
    assert np.asarray(prof).shape == (3, 2, 3)
    assert evaluate.main(["--ckpt", str(d), "--points", "64", "--steps", "30", "--worst-out", str(out)]) == 0
    table = capsys.readouterr().out  # the table prints the (K, N) worst regrets too
    assert any(line.startswith("worst_regrets") and line.count("[") == 11 for line in table.splitlines())
    assert evaluate.main(["--ckpt", str(d), "--worst-out", str(out), "--worst", "0"]) == 2
    assert "--worst must be >= 1" in capsys.readouterr().err
