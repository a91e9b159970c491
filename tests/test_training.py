"""End-to-end training on a shrunken 1x2 config. All runs share one config, hence one compilation."""
import dataclasses
import importlib.util
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import auction, checkpoints, evaluate, mechanism, misreport, training
from jaxauction.config import REPO, Config, ConfigError, validate

TINY = Config(name="tiny", n_agents=1, n_items=2, hidden=(16, 16), batch_size=256, num_examples=2048, steps=100,
              lr=0.01, lr_decay_to=0.5, misreport_steps=10, misreport_restarts=0, rho=1.0, log_every=10,
              eval_every=50, eval_points=256, eval_misreport_steps=20, checkpoint_every=10, final_eval_points=512,
              final_eval_steps=50)

METRIC_KEYS = {"step", "epoch", "seconds", "revenue", "regret_mean", "regret_max", "regret", "lambda", "rho",
               "ir_mean", "ir", "mu", "rho_ir", "reg_loss", "distill_loss"}


def _read_metrics(d):
    return [json.loads(l) for l in (d / "metrics.jsonl").read_text().splitlines()]


def _state_arrays(d):
    with np.load(d / "state.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("straight")
    state = training.train_and_evaluate(TINY, d, progress=False)
    return d, state


def test_short_run_improves_revenue_keeps_regret_bounded(straight_run):
    d, state = straight_run
    assert int(state.step) == TINY.steps
    setup = training.make_setup(TINY)
    init_params = mechanism.init(training._keys(TINY.seed)["init"], setup.spec)
    before = evaluate.evaluate(init_params, setup.spec, setup.prior, points=512, steps=50)
    after = json.loads((d / "final_eval.json").read_text())
    assert after["step"] == TINY.steps and after["points"] == 512
    assert after["revenue"] > before["revenue"] + 0.05, (before["revenue"], after["revenue"])
    assert after["regret_mean"] < 0.03
    # the saved mechanism is what was trained, and loads through the shared loader
    params, spec, info = checkpoints.load_mechanism(d)
    assert spec == setup.spec and info["prior"] == setup.prior.to_dict()
    jax.tree_util.tree_map(np.testing.assert_array_equal, params, jax.device_get(state.params))
    assert json.loads((d / "config.json").read_text()) == TINY.to_dict()


def test_metrics_jsonl_has_the_keys(straight_run):
    d, _ = straight_run
    rows = _read_metrics(d)
    assert [r["step"] for r in rows] == list(range(10, 101, 10))
    for r in rows:
        assert METRIC_KEYS <= set(r), METRIC_KEYS - set(r)
        assert len(r["regret"]) == len(r["lambda"]) == TINY.n_agents
        assert r["regret_mean"] >= 0 and r["reg_loss"] < 0  # stability loss is a sum of -tanh terms
    assert {"revenue", "regret_mean"} <= set(rows[4]["eval"])  # step 50: periodic evaluation
    # multipliers follow lam += rho * rgt every lagrange_every steps: they never decrease
    lams = [r["lambda"][0] for r in rows]
    assert lams == sorted(lams) and lams[-1] > TINY.lambda_init


def test_resume_reproduces_uninterrupted_run(straight_run, tmp_path, monkeypatch):
    d_straight, _ = straight_run
    real = training.batch_indices

    def interrupt_at_55(seed, step, *a, **k):
        if step == 55:
            raise KeyboardInterrupt
        return real(seed, step, *a, **k)

    monkeypatch.setattr(training, "batch_indices", interrupt_at_55)
    with pytest.raises(KeyboardInterrupt):
        training.train_and_evaluate(TINY, tmp_path, progress=False)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 50
    monkeypatch.setattr(training, "batch_indices", real)
    with pytest.raises(FileExistsError, match="resume"):
        training.train_and_evaluate(TINY, tmp_path, progress=False)
    training.train_and_evaluate(TINY, tmp_path, resume=True, progress=False)
    a, b = _state_arrays(d_straight), _state_arrays(tmp_path)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-6, atol=1e-7, err_msg=k)
    rows_a, rows_b = _read_metrics(d_straight), _read_metrics(tmp_path)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]  # no duplicated lines after resume
    assert rows_b[-1]["revenue"] == pytest.approx(rows_a[-1]["revenue"], rel=1e-5)


def test_resume_with_different_setting_fails_clearly(straight_run):
    d, _ = straight_run
    with pytest.raises(ConfigError, match="hidden"):
        training.train_and_evaluate(dataclasses.replace(TINY, hidden=(8, 8)), d, resume=True, progress=False)


def test_nan_stops_training_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    real = training.make_train_step

    def make_poisoning(cfg, *a, **k):
        step = real(cfg, *a, **k)

        def poisoning(state, *args):  # before step 37, one weight turns NaN (as if it had diverged)
            if int(state.step) == 36:
                state = state._replace(params={**state.params, "pay": {**state.params["pay"],
                                       "b": state.params["pay"]["b"].at[0].set(jnp.nan)}})
            return step(state, *args)
        return poisoning

    monkeypatch.setattr(training, "make_train_step", make_poisoning)
    with pytest.raises(training.TrainingDiverged, match=r"non-finite .* step 37.*step 30"):
        training.train_and_evaluate(TINY, tmp_path, progress=False)
    assert json.loads((tmp_path / "state.json").read_text())["step"] == 30
    params, spec, info = checkpoints.load_mechanism(tmp_path)  # finite (check_params) and loadable
    assert info["json"]["meta"]["step"] == 30
    assert not (tmp_path / "final_eval.json").exists()


def test_train_step_does_not_retrace_and_guard_catches_retrace():
    setup = training.make_setup(TINY)
    data = training.training_data(TINY, setup)
    state = training.init_state(TINY, setup, data)
    step = training.make_train_step(TINY)
    for s in range(3):
        state, m = step(state, data, jnp.asarray(training.batch_indices(0, s, 2048, 256)), None)
        assert bool(m["finite"])
    with pytest.raises(AssertionError):  # a different batch shape would recompile: caught
        step(state, data, jnp.arange(128), None)


def test_misreport_restarts_keep_the_best_of_warm_and_random_starts():
    cfg = dataclasses.replace(TINY, misreport_restarts=2, stability_weight=0.0)
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    state = training.init_state(cfg, setup, data)
    params = jax.tree_util.tree_map(jnp.copy, state.params)  # the step donates the state
    idx = jnp.asarray(training.batch_indices(0, 0, cfg.num_examples, cfg.batch_size))
    vals = data[idx]
    plain = misreport.pgd(params, setup.spec, vals, vals, setup.low, setup.high,
                          steps=cfg.misreport_steps, lr=cfg.misreport_lr)
    state, m = training.make_train_step(cfg)(state, data, idx, None)
    assert bool(m["finite"])
    stored = state.misreports[idx]
    u_plain = auction.deviation_utilities(params, setup.spec, vals, plain)
    u_stored = auction.deviation_utilities(params, setup.spec, vals, stored)
    assert np.all(np.asarray(u_stored) >= np.asarray(u_plain) - 1e-6)
    assert np.mean(np.asarray(u_stored) > np.asarray(u_plain) + 1e-6) > 0.0  # restarts won somewhere
    # the loss used those misreports: its regret is the mean of the stored ones' regret
    want = auction.regret(params, setup.spec, vals, stored).mean(axis=0)
    np.testing.assert_allclose(np.asarray(m["regret"]), np.asarray(want), rtol=1e-4, atol=1e-7)


def test_fused_outcomes_match_auction_functions():
    spec = mechanism.MechanismSpec(2, 3, (16, 16), "sparsemax", "fractional")
    params = mechanism.init(jax.random.PRNGKey(0), spec)
    vals = jax.random.uniform(jax.random.PRNGKey(1), (7, 2, 3))
    mis = jax.random.uniform(jax.random.PRNGKey(2), (7, 2, 3))
    a, p, u, u_dev = jax.jit(training.outcomes, static_argnums=1)(params, spec, vals, mis)
    a_ref, p_ref, u_ref = jax.jit(auction.truthful, static_argnums=1)(params, spec, vals)
    np.testing.assert_allclose(a, a_ref, atol=1e-6)
    np.testing.assert_allclose(p, p_ref, atol=1e-6)
    np.testing.assert_allclose(u, u_ref, atol=1e-6)
    u_dev_ref = jax.jit(auction.deviation_utilities, static_argnums=1)(params, spec, vals, mis)
    np.testing.assert_allclose(u_dev, u_dev_ref, atol=1e-6)


def test_stability_boxes_free_one_agent_at_a_time():
    vals = jax.random.uniform(jax.random.PRNGKey(0), (5, 3, 2))
    low, high = jnp.zeros((3, 2)), jnp.array([[1.0, 1.0], [2.0, 2.0], [3.0, 3.0]])
    box = jax.jit(training.stability_boxes)(vals, low, high)
    assert box.lower.shape == (3, 5, 3, 2)
    for i in range(3):
        np.testing.assert_array_equal(box.lower[i, :, i], 0.0)
        np.testing.assert_array_equal(box.upper[i, :, i], np.broadcast_to(high[i], (5, 2)))
        others = [k for k in range(3) if k != i]
        np.testing.assert_array_equal(box.lower[i][:, others], vals[:, others])
        np.testing.assert_array_equal(box.upper[i][:, others], vals[:, others])


def test_distillation_with_free_payment_and_ir_penalty(straight_run, tmp_path):
    teacher_dir, _ = straight_run
    cfg = dataclasses.replace(TINY, name="student", payment="free", ir_penalty=True, teacher=str(teacher_dir),
                              steps=40, eval_every=0, stability_weight=0.0, distill_weight=10.0, final_eval_steps=10)
    training.train_and_evaluate(cfg, tmp_path, progress=False)
    rows = _read_metrics(tmp_path)
    setup = training.make_setup(cfg)
    vals = training.training_data(cfg, setup)[:256]
    t_params, t_spec, _ = checkpoints.load_mechanism(teacher_dir)
    s0 = mechanism.init(training._keys(cfg.seed)["init"], setup.spec)
    (a_t, p_t), (a_s, p_s) = (jax.jit(mechanism.apply, static_argnums=2)(pp, vals, sp)
                              for pp, sp in ((t_params, t_spec), (s0, setup.spec)))
    initial = float(jnp.mean((a_s - a_t) ** 2) + jnp.mean((p_s - p_t) ** 2))
    assert rows[-1]["distill_loss"] < 0.25 * initial, (initial, [r["distill_loss"] for r in rows])
    assert rows[-1]["reg_loss"] == 0.0
    mus = [r["mu"][0] for r in rows]  # IR multipliers only grow, and rho_ir follows its schedule
    assert mus == sorted(mus) and mus[0] >= cfg.mu_init
    assert rows[-1]["rho_ir"] == pytest.approx(cfg.rho_ir + cfg.rho_ir_increment * (39 // cfg.rho_ir_every))
    _, spec, _ = checkpoints.load_mechanism(tmp_path)
    assert spec.payment == "free" and spec.payment_max == 2.0


def test_myerson_teacher_is_built_from_the_prior_and_distilled(tmp_path):
    from jaxauction import baselines
    cfg = dataclasses.replace(TINY, name="student", payment="free", ir_penalty=True, teacher="myerson",
                              steps=40, eval_every=0, stability_weight=0.0, distill_weight=10.0, final_eval_steps=10)
    validate(cfg)  # a baseline name needs no file
    setup = training.make_setup(cfg)
    t_params, t_spec = training.load_teacher(cfg, setup)
    assert isinstance(t_spec, baselines.BaselineSpec) and t_spec.kind == "myerson"
    np.testing.assert_allclose(t_params["high"], 1.0)
    training.train_and_evaluate(cfg, tmp_path, progress=False)
    vals = training.training_data(cfg, setup)[:256]
    a_t, p_t = mechanism.apply(t_params, vals, t_spec)
    s0 = mechanism.init(training._keys(cfg.seed)["init"], setup.spec)
    a_s, p_s = mechanism.apply(s0, vals, setup.spec)
    initial = float(jnp.mean((a_s - a_t) ** 2) + jnp.mean((p_s - p_t) ** 2))
    rows = _read_metrics(tmp_path)
    assert rows[-1]["distill_loss"] < 0.5 * initial, (initial, [r["distill_loss"] for r in rows])
    with pytest.raises(ConfigError, match="teacher: nosuch"):
        validate(dataclasses.replace(cfg, teacher="nosuch"))


def test_distill_pretraining_fits_myerson_deterministically():
    from jaxauction import pretrain
    cfg = dataclasses.replace(TINY, n_agents=2, payment="free", ir_penalty=True, teacher="myerson", distill_weight=0.0,
                              distill_pretrain_steps=300)
    validate(cfg)
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    teacher = training.load_teacher(cfg, setup)
    fresh = training.init_state(dataclasses.replace(cfg, teacher="", distill_pretrain_steps=0), setup, data).params
    fitted = training.init_state(cfg, setup, data).params
    again = training.init_state(cfg, setup, data).params
    vals = data[:512]
    out = mechanism.apply(teacher[0], vals, teacher[1])
    before, after = (float(pretrain.distill_loss(p, setup.spec, vals, out)) for p in (fresh, fitted))
    assert after < 0.5 * before, (before, after)
    for a, b in zip(jax.tree_util.tree_leaves(fitted), jax.tree_util.tree_leaves(again)):
        np.testing.assert_array_equal(a, b)
    for bad, msg in ((dict(teacher=""), "distill_pretrain_steps: needs a teacher"),
                     (dict(init_from="x"), "distill_pretrain_steps: starts from a fresh"),
                     (dict(distill_pretrain_steps=0), "distill_weight: is 0")):
        with pytest.raises(ConfigError, match=msg):
            validate(dataclasses.replace(cfg, **bad), check_files=False)


def test_init_from_starts_at_the_given_mechanism_and_refuses_another(straight_run, tmp_path):
    src, _ = straight_run
    cfg = dataclasses.replace(TINY, init_from=str(src), seed=7)
    setup = training.make_setup(cfg)
    state = training.init_state(cfg, setup, training.training_data(cfg, setup))
    want, _, _ = checkpoints.load_mechanism(src)
    for a, b in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(want)):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(checkpoints.CheckpointError, match="architecture"):
        other = dataclasses.replace(TINY, hidden=(8,), init_from=str(src))
        training.init_state(other, training.make_setup(other), training.training_data(other, setup))
    with pytest.raises(ConfigError, match="init_from"):
        validate(dataclasses.replace(TINY, init_from=str(tmp_path / "missing")))


def test_a_regret_budget_above_the_regret_releases_the_multipliers(tmp_path):
    cfg = dataclasses.replace(TINY, regret_budget=0.5, rho=5.0, steps=30, eval_every=0, final_eval_steps=10)
    training.train_and_evaluate(cfg, tmp_path, progress=False)
    lam = [r["lambda"][0] for r in _read_metrics(tmp_path)]
    # lam starts at 5 and each update (every 6 steps) moves it by 5 * (rgt - 0.5) < -2.4: at 0 by step 18
    assert lam[0] <= TINY.lambda_init and lam[-1] == 0.0, lam
    with pytest.raises(ConfigError, match="regret_budget"):
        validate(dataclasses.replace(TINY, regret_budget=-0.1))


def test_teacher_for_another_setting_is_refused(tmp_path):
    spec = mechanism.MechanismSpec(2, 2, (8,))
    checkpoints.save_mechanism(tmp_path / "t", mechanism.init(jax.random.PRNGKey(0), spec), spec)
    cfg = dataclasses.replace(TINY, teacher=str(tmp_path / "t"), payment="free", ir_penalty=True)
    with pytest.raises(checkpoints.CheckpointError, match="2x2 mechanism.*1x2"):
        training.train_and_evaluate(cfg, tmp_path / "run", progress=False)


def _cli():
    spec = importlib.util.spec_from_file_location("train_cli", REPO / "train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.main


def test_cli_config_errors_are_one_line_exit_2(capsys, tmp_path):
    main = _cli()
    assert main(["--config", "1x2", "--workdir", str(tmp_path), "--set", "batch_size=0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "batch_size" in err and "\n" not in err
    assert main(["--config", "1x2", "--set", "hiden=8"]) == 2
    assert "hiden" in capsys.readouterr().err
    assert main(["--config", "no_such_config"]) == 2
    assert "no_such_config" in capsys.readouterr().err


def test_nonneg_payment_init_keeps_every_free_payment_alive():
    """With plain Glorot weights, seed 0 of the 2x2 free-payment net starts with agent 1's payment
    clipped at 0 on every profile, and the clip passes no gradient, so that agent would never pay
    (seen on a 2x2 distilled student). ``payment_init="nonneg"`` (the distilled configs') starts
    every payment logit >= 0."""
    cfg = dataclasses.replace(TINY, n_agents=2, hidden=(128, 128, 128), payment="free", ir_penalty=True,
                              stability_weight=0.0, num_examples=256, batch_size=256)
    setup = training.make_setup(cfg)
    vals = training.training_data(cfg, setup)
    loss_fn = training.make_loss_fn(cfg, setup)

    def payments_and_bias_grad(c):
        params = training.init_state(c, setup, vals).params
        _, p = mechanism.apply(params, vals, setup.spec)
        grads, _ = jax.grad(loss_fn, has_aux=True)(params, setup.lagr.init(2), vals, vals, vals, None)
        return np.asarray(p), np.asarray(grads["pay"]["b"])

    p, g = payments_and_bias_grad(cfg)
    dead = [i for i in range(2) if p[:, i].max() == 0.0]
    assert dead == [1] and g[1] == 0.0  # the failure this option exists for
    p, g = payments_and_bias_grad(dataclasses.replace(cfg, payment_init="nonneg"))
    assert (p > 0).mean(axis=0).min() > 0.9 and np.all(g != 0.0)
    with pytest.raises(ConfigError, match="payment_init"):
        validate(dataclasses.replace(cfg, payment_init="zeros"), check_files=False)


def test_uniform_bias_init_draws_pytorch_style_biases_and_keeps_weights():
    """``bias_init="uniform"``: every bias ~ U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (PyTorch's Linear);
    the Glorot weights are the same draw as with zero biases; the default stays zeros."""
    cfg = dataclasses.replace(TINY, hidden=(16, 8), num_examples=64, batch_size=64)
    setup = training.make_setup(cfg)
    vals = training.training_data(cfg, setup)
    zero = training.init_state(cfg, setup, vals).params
    unif = training.init_state(dataclasses.replace(cfg, bias_init="uniform"), setup, vals).params
    layers = lambda p: [*p["trunk"], p["alloc"], p["pay"]]  # noqa: E731
    for z, u in zip(layers(zero), layers(unif)):
        np.testing.assert_array_equal(z["w"], u["w"])
        assert np.all(z["b"] == 0.0)
        bound = 1.0 / np.sqrt(u["w"].shape[0])
        b = np.asarray(u["b"])
        assert np.all(np.abs(b) <= bound)
        assert b.size == 1 or np.std(b) > 0.2 * bound  # U(-c, c) has std c / sqrt(3)
    first = np.asarray(unif["trunk"][0]["b"])
    assert (first > 0).any() and (first < 0).any()
    with pytest.raises(ConfigError, match="bias_init"):
        validate(dataclasses.replace(cfg, bias_init="normal"), check_files=False)


def test_margin_stability_loss_trains_toward_fewer_unstable_neurons():
    """``stability_loss="margin"`` is what the train step minimizes: with a large weight, 30 steps
    lower the soft count of unstable neurons on the training boxes; unknown names are refused."""
    from jaxauction import bounds

    cfg = dataclasses.replace(TINY, stability_loss="margin", stability_weight=1.0, bias_init="uniform")
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    state = training.init_state(cfg, setup, data)
    boxes = training.stability_boxes(data[:256], setup.low, setup.high)
    before = float(bounds.relu_margin_loss(state.params, boxes, setup.spec))
    step = training.make_train_step(cfg)
    for s in range(30):
        state, m = step(state, data, jnp.asarray(training.batch_indices(0, s, 2048, 256)), None)
        assert bool(m["finite"])
    after = float(bounds.relu_margin_loss(state.params, boxes, setup.spec))
    assert before > 3.0 and after < 0.8 * before, (before, after)
    with pytest.raises(ConfigError, match="stability_loss"):
        validate(dataclasses.replace(cfg, stability_loss="tanh"), check_files=False)


def test_regretnet_separate_tanh_towers_train():
    """RegretNet's own architecture (configs/regretnet_*.py): separate tanh towers, softmax, logistic
    payment, no stability regularizer. A few steps run, stay finite and move both towers; uniform
    biases reach every layer of both towers; a ReLU-stability regularizer on tanh is refused."""
    from jaxauction import config_io

    for name in ("regretnet_1x2", "regretnet_2x2"):
        spec = validate(config_io.load_config(name)).spec()
        assert (spec.activation, spec.towers, spec.hidden) == ("tanh", "separate", (100, 100))
    cfg = dataclasses.replace(TINY, hidden=(16, 16), activation="tanh", towers="separate", allocation="softmax",
                              payment="fractional_sigmoid", stability_weight=0.0, bias_init="uniform")
    validate(cfg)
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    state = training.init_state(cfg, setup, data)
    first = jax.tree_util.tree_map(np.array, state.params)  # the step donates its input buffers
    mechanism.check_params(first, setup.spec)
    assert all(np.any(np.asarray(l["b"]) != 0) for l in mechanism.dense_layers(first))
    step = training.make_train_step(cfg)
    for s in range(4):
        state, m = step(state, data, jnp.asarray(training.batch_indices(0, s, 2048, 256)), None)
        assert bool(m["finite"])
    for key in ("alloc_tower", "pay_tower"):
        assert np.abs(np.asarray(state.params[key][0]["w"]) - np.asarray(first[key][0]["w"])).max() > 0
    with pytest.raises(ConfigError, match="stability_weight.*activation='tanh'"):
        validate(dataclasses.replace(cfg, stability_weight=0.0025), check_files=False)
    with pytest.raises(ConfigError, match="towers"):
        validate(dataclasses.replace(cfg, towers="both"), check_files=False)
    with pytest.raises(ConfigError, match="activation"):
        validate(dataclasses.replace(cfg, activation="gelu", stability_weight=0.0), check_files=False)
