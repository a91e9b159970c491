"""Many runs as one vmapped program (jaxauction.multirun): run r of a vmapped group ends with the
parameters of the plain single run of its config (seed and hyperparameters) after the same steps,
writes train.py's run directory, and the sweeps' ``vmap`` executor tabulates them."""
import dataclasses
import json

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import checkpoints, evaluate, multirun, rundir, sweep, training

TINY = ["steps=4", "batch_size=64", "num_examples=256", "hidden=8,8", "misreport_steps=2", "misreport_restarts=1",
        "eval_every=0", "log_every=2", "checkpoint_every=2", "final_eval_points=64", "final_eval_steps=5"]
# (4 steps in chunks of 2: one compile of the vmapped program.)
# Three runs of one vmapped program, from a sweep file: seed 0 with the config's hyperparameters; seed 1
# differing in every kind of vmapped field (schedule, multipliers, penalty, misreport step); seed 2
# with an absurd learning rate, which diverges
SET1 = ["lr=0.003", "lr_decay_to=0.5", "rho=3", "rho_increment=1", "lambda_init=1", "misreport_lr=0.05",
        "regret_budget=0.001"]
SWEEP = {"config": "1x2", "set": TINY, "runs": [{"name": "a", "seeds": [0]}, {"name": "b", "seeds": [1], "set": SET1},
                                              {"name": "c", "seeds": [2], "set": ["lr=1e30"]}]}
NAMES = ["a-seed=0", "b-seed=1", "c-seed=2"]


def plain_run(cfg):
    """``train.py``'s step for ``cfg.steps`` steps on its own data (what train_and_evaluate does)."""
    chex.clear_trace_counter()  # the step is guarded per source location: each config is its first trace
    setup = training.make_setup(cfg)
    data = training.training_data(cfg, setup)
    state = training.init_state(cfg, setup, data)
    step = training.make_train_step(cfg)
    for s in range(cfg.steps):
        state, _ = step(state, data, jnp.asarray(training.batch_indices(cfg.seed, s, cfg.num_examples, cfg.batch_size)),
                        None)
    return jax.device_get(state)


@pytest.fixture(scope="module")
def group(tmp_path_factory):
    """The sweep trained by the vmap executor: ``(run dirs, configs, run_sweep's result, OUT)``."""
    tmp = tmp_path_factory.mktemp("multirun")
    path, out = tmp / "s.py", tmp / "out"
    path.write_text(f"def get_sweep():\n    return {SWEEP!r}\n")
    res = sweep.run_sweep(path, out, executor="vmap", log=lambda m: None)
    cfgs = [r.cfg for r in sweep.load_sweep(path)[1]]
    return [out / n for n in NAMES], cfgs, res, out


def test_each_vmapped_run_matches_its_plain_run(group):
    dirs, cfgs, res, _ = group
    assert res["trained"] == NAMES[:2] and multirun.group_runs(cfgs) == [[0, 1, 2]]
    assert multirun.varying_fields(cfgs) == ("lr", "lr_decay_to", "lambda_init", "rho", "rho_increment", "misreport_lr",
                                              "regret_budget")
    assert (cfgs[1].lr, cfgs[1].rho, cfgs[2].lr) == (0.003, 3.0, 1e30)
    for cfg, d in zip(cfgs[:2], dirs):
        want = plain_run(cfg)
        params, _, _ = checkpoints.load_mechanism(d)
        chex.assert_trees_all_close(params, want.params, rtol=1e-5, atol=1e-7)
        state, _ = rundir.load_state(d, want)  # the resumable state too: Adam moments, multipliers, misreports
        chex.assert_trees_all_close(state.opt_state, want.opt_state, rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(state.lagr, want.lagr, rtol=1e-5, atol=1e-7)
        chex.assert_trees_all_close(state.misreports, want.misreports, rtol=1e-5, atol=1e-6)
        assert int(state.step) == 4 and np.array_equal(state.rng, want.rng)
    # the two runs really differ (different seeds and hyperparameters)
    p0, p1 = (checkpoints.load_mechanism(d)[0] for d in dirs[:2])
    assert not np.allclose(p0["trunk"][0]["w"], p1["trunk"][0]["w"])


def test_run_directories_are_train_py_run_directories(group):
    dirs, cfgs, _, _ = group
    for cfg, d in zip(cfgs[:2], dirs):
        assert json.loads((d / rundir.CONFIG_JSON).read_text()) == cfg.to_dict()
        rows = [json.loads(line) for line in (d / rundir.METRICS).read_text().splitlines()]
        assert [r["step"] for r in rows] == [2, 4]  # log_every=2
        assert {"revenue", "regret_mean", "lambda", "rho"} <= set(rows[0])
        assert rows[-1]["rho"] == pytest.approx(cfg.rho)  # the multipliers of this run, not another's
        assert sweep.run_finished(d, cfg)  # what the sweep summary and rerun skipping read
        # final_eval.json is evaluate.evaluate's result on the saved checkpoint (vmapped evaluate_runs)
        fe = json.loads((d / rundir.FINAL_EVAL).read_text())
        params, spec, _, prior = checkpoints.load_with_prior(d)
        ref = evaluate.evaluate(params, spec, prior, points=cfg.final_eval_points, steps=cfg.final_eval_steps,
                                seed=training.FINAL_EVAL_SEED, lr=cfg.misreport_lr)
        for k in ("revenue", "regret_mean", "regret_max", "ir_violation_rate"):
            assert fe[k] == pytest.approx(ref[k], rel=1e-5, abs=1e-7), k
        assert (fe["step"], fe["points"], fe["steps"], fe["lr"]) == (4, 64, 5, pytest.approx(cfg.misreport_lr))


def test_a_diverged_run_fails_alone_and_the_summary_says_so(group):
    dirs, cfgs, res, out = group
    assert list(res["failed"]) == NAMES[2:] and "TrainingDiverged" in res["failed"][NAMES[2]]
    assert not (dirs[2] / rundir.FINAL_EVAL).exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["ok", "ok", "failed"]
    assert all(r["revenue"] is not None for r in summary["runs"][:2])
    assert "PGD regret" in (out / "summary.md").read_text()


def test_configs_must_share_everything_but_seed_and_vmapped_fields(group, tmp_path):
    cfgs = group[1]
    other = dataclasses.replace(cfgs[0], hidden=(4, 4))
    assert multirun.group_runs([cfgs[0], other, cfgs[1]]) == [[0, 2], [1]]
    with pytest.raises(ValueError, match="differ in more than seed"):
        multirun.train_group([cfgs[0], other], [tmp_path / "a", tmp_path / "b"])
    with pytest.raises(ValueError, match="one workdir per config"):
        multirun.train_group(cfgs, [tmp_path / "a"])
    with pytest.raises(sweep.SweepError, match="vmap executor"):
        sweep.run_sweep(tmp_path / "none.py", tmp_path / "out", executor="vmap", workers=2)
