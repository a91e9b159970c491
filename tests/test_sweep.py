"""Training sweeps (``sweep.py``, :mod:`jaxauction.sweep`): a 2-run sweep of a tiny 1x2 config on the
local executor (1 worker) and on a local Ray instance gives the same summary; a rerun skips
finished runs and resumes unfinished ones; bad sweep files are one-line errors with exit 2.

The module's two real sweeps train 2 runs each (about 15 s apiece on 2 cores); the other tests
fabricate run directories or replace the training.
"""
import dataclasses
import importlib.util
import json
import shutil
from pathlib import Path

import pytest

from jaxauction import sweep
from jaxauction.config_io import load_config

REPO = Path(__file__).resolve().parents[1]
TINY = ["steps=3", "batch_size=64", "num_examples=256", "hidden=8,8", "misreport_steps=2", "misreport_restarts=0",
        "eval_every=0", "final_eval_points=64", "final_eval_steps=5"]
NAMES = ["1x2-seed=0", "1x2-seed=1"]


def _load_cli():
    spec = importlib.util.spec_from_file_location("sweep_cli", REPO / "sweep.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cli = _load_cli()


def write_sweep(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def tiny_sweep(tmp: Path) -> Path:
    return write_sweep(tmp / "tiny.py", f"def get_sweep():\n    return {{'config': '1x2', 'seeds': [0, 1], 'set': {TINY!r}}}\n")


@pytest.fixture(scope="module", autouse=True)
def compile_cache(tmp_path_factory):
    """A persistent XLA cache for the worker processes this module starts (they compile the same
    tiny programs again and again); this process's JAX is already configured and unaffected."""
    mp = pytest.MonkeyPatch()
    mp.setenv("JAX_COMPILATION_CACHE_DIR", str(tmp_path_factory.mktemp("xla_cache")))
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    mp.setenv("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
    yield
    mp.undo()


@pytest.fixture(scope="module")
def local_run(tmp_path_factory):
    """The tiny sweep trained once with the local executor (1 worker)."""
    tmp = tmp_path_factory.mktemp("sweep")
    path, out = tiny_sweep(tmp), tmp / "out"
    res = sweep.run_sweep(path, out, executor="local", workers=1, log=lambda m: None)
    return path, out, res


def _metrics(summary):
    return [(r["name"], r["seed"], r["step"], r["revenue"], r["regret_mean"], r["ir_violation_rate"])
            for r in summary["runs"]]


def test_local_sweep_writes_runs_and_summary(local_run):
    path, out, res = local_run
    assert res["trained"] == NAMES and res["skipped"] == [] and res["failed"] == {}
    for name in NAMES:
        assert (out / name / "final_eval.json").exists() and (out / name / "checkpoint").is_dir()
    resolved = json.loads((out / "sweep.json").read_text())
    assert [r["name"] for r in resolved["runs"]] == NAMES
    assert resolved["runs"][1]["overrides"] == [*TINY, "seed=1"]
    summary = json.loads((out / "summary.json").read_text())
    assert [r["status"] for r in summary["runs"]] == ["ok", "ok"]
    for r in summary["runs"]:
        fe = json.loads((out / r["name"] / "final_eval.json").read_text())
        assert r["step"] == 3 and r["revenue"] == fe["revenue"] and r["regret_mean"] == fe["regret_mean"]
        assert r["ir_violation_rate"] == fe["ir_violation_rate"] and r["train_seconds"] == fe["train_seconds"]
    (g,) = summary["groups"]
    assert g["group"] == "1x2" and g["finished"] == 2 and g["seeds"] == [0, 1]
    revs = [r["revenue"] for r in summary["runs"]]
    assert g["revenue_mean"] == pytest.approx(sum(revs) / 2)
    assert g["revenue_std"] == pytest.approx(abs(revs[0] - revs[1]) / 2 ** 0.5)
    md = (out / "summary.md").read_text()
    assert md.count("| 1x2-seed=") == 2 and "±" in md


def test_rerun_skips_finished_and_resumes_the_rest(local_run, tmp_path):
    path, out0, _ = local_run
    out = tmp_path / "out"
    shutil.copytree(out0, out)
    stamps = {n: (out / n / "final_eval.json").stat().st_mtime_ns for n in NAMES}
    res = sweep.run_sweep(path, out, workers=1, log=lambda m: None)
    assert res["trained"] == [] and res["skipped"] == NAMES
    assert {n: (out / n / "final_eval.json").stat().st_mtime_ns for n in NAMES} == stamps
    # A run killed after its last checkpoint (no final_eval.json) resumes from its state.
    (out / NAMES[1] / "final_eval.json").unlink()
    metrics = (out / NAMES[1] / "metrics.jsonl").read_text()
    res = sweep.run_sweep(path, out, workers=1, log=lambda m: None)
    assert res["trained"] == [NAMES[1]] and res["skipped"] == [NAMES[0]]
    assert (out / NAMES[0] / "final_eval.json").stat().st_mtime_ns == stamps[NAMES[0]]
    assert (out / NAMES[1] / "metrics.jsonl").read_text() == metrics  # resumed at step 3: nothing re-logged
    assert _metrics(json.loads((out / "summary.json").read_text())) == _metrics(res)
    old = json.loads((out0 / NAMES[1] / "final_eval.json").read_text())
    new = json.loads((out / NAMES[1] / "final_eval.json").read_text())
    assert new["revenue"] == old["revenue"] and new["step"] == 3


def test_run_finished(tmp_path):
    cfg = dataclasses.replace(load_config("1x2"), steps=10, final_eval_points=64, final_eval_steps=5)
    d = tmp_path / "run"
    d.mkdir()
    assert not sweep.run_finished(d, cfg)
    (d / "config.json").write_text(json.dumps(cfg.to_dict()))
    fe = {"step": 10, "points": 64, "steps": 5, "train_seconds": 3.0, "revenue": 0.5}
    assert not sweep.run_finished(d, cfg)
    (d / "final_eval.json").write_text(json.dumps(fe))
    assert sweep.run_finished(d, cfg)
    assert not sweep.run_finished(d, dataclasses.replace(cfg, lr=0.5))      # another config: not this run's
    assert not sweep.run_finished(d, dataclasses.replace(cfg, final_eval_points=128))
    # resumed with more steps and killed before its end: config.json is new, final_eval.json old
    more = dataclasses.replace(cfg, steps=20)
    (d / "config.json").write_text(json.dumps(more.to_dict()))
    assert not sweep.run_finished(d, more)
    # ... unless a wall-clock budget stopped it there
    budget = dataclasses.replace(more, max_seconds=2.0)
    (d / "config.json").write_text(json.dumps(budget.to_dict()))
    assert sweep.run_finished(d, budget)
    (d / "final_eval.json").write_text("{not json")
    assert not sweep.run_finished(d, budget)


def test_names_grid_and_entries():
    runs = sweep.resolve_sweep({"config": "1x2", "seeds": [0, 1], "set": ["steps=5"],
                                "grid": {"rho": [1, 3.5], "hidden": [(8, 8)], "warm_start": [False]}})
    assert [r.name for r in runs[:2]] == ["1x2-hidden=8,8-rho=1-warm_start=false-seed=0",
                                          "1x2-hidden=8,8-rho=1-warm_start=false-seed=1"]
    assert len(runs) == 4 and runs[3].group == "1x2-hidden=8,8-rho=3.5-warm_start=false"
    assert runs[3].cfg.rho == 3.5 and runs[3].cfg.hidden == (8, 8) and runs[3].cfg.steps == 5 and runs[3].seed == 1
    assert runs[0].overrides == ("steps=5", "hidden=8,8", "rho=1", "warm_start=false", "seed=0")
    runs = sweep.resolve_sweep({"config": "1x2", "set": ["steps=5"],
                                "runs": [{"name": "short"}, {"name": "long", "set": ["steps=9"], "seeds": [4]},
                                         {"config": "2x2", "grid": {"lr": [0.01]}}]})
    assert [(r.name, r.cfg.steps, r.cfg.n_agents) for r in runs] == [
        ("short-seed=0", 5, 1), ("long-seed=4", 9, 1), ("2x2-lr=0.01-seed=0", 5, 2)]
    assert sweep.load_sweep("1x2_seeds")[1][0].name == "1x2-stability_weight=0.0-seed=0"  # the shipped example


@pytest.mark.parametrize("body, message", [
    ("X = 1\n", "defines no get_sweep()"),
    ("def get_sweep():\n    return [1]\n", "not a dict"),
    ("def get_sweep():\n    return {'config': '1x2', 'set': ['rho2=3']}\n", "rho2: unknown config field"),
    ("def get_sweep():\n    return {'config': '1x2', 'grid': {'bogus': [1]}}\n", "bogus: unknown config field"),
    ("def get_sweep():\n    return {'config': '1x2', 'grid': {}}\n", "grid: empty"),
    ("def get_sweep():\n    return {'config': '1x2', 'grid': {'rho': []}}\n", "rho: expected a non-empty list"),
    ("def get_sweep():\n    return {'config': '1x2', 'seeds': []}\n", "seeds: expected a non-empty list"),
    ("def get_sweep():\n    return {'config': '1x2', 'seed': [0, 1]}\n", "unknown key(s) ['seed']"),
    ("def get_sweep():\n    return {'seeds': [0]}\n", "'config'"),
    ("def get_sweep():\n    return {'config': 'nope'}\n", "config 'nope'"),
    ("def get_sweep():\n    return {'config': '1x2', 'grid': {'lr': [-1]}}\n", "lr: must be positive"),
    ("def get_sweep():\n    return {'config': '1x2', 'runs': [{}, {'set': ['steps=9']}]}\n", "several runs are named"),
    ("def get_sweep():\n    raise RuntimeError('boom')\n", "RuntimeError: boom"),
])
def test_bad_sweep_files(tmp_path, capsys, body, message):
    path = write_sweep(tmp_path / "bad.py", body)
    assert cli.main([str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sweep.py: ") and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()


def test_bad_arguments(tmp_path, capsys):
    path = tiny_sweep(tmp_path)
    for args, message in [([str(tmp_path / "missing.py")], "no such file"),
                          ([str(path), "--gpus-per-run", "1"], "needs --executor ray"),
                          ([str(path), "--workers", "0"], "must be >= 1")]:
        assert cli.main(args + ["--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err


def test_ray_task_ships_the_run_back_without_a_shared_filesystem(tmp_path, monkeypatch):
    """A Ray node that does not see OUT trains in a temporary directory and returns it packed."""
    def fake_train(run, workdir):
        workdir.mkdir(parents=True, exist_ok=True)
        (workdir / "final_eval.json").write_text(json.dumps({"where": str(workdir)}))
        return {"name": run.name, "ok": True}

    from jaxauction.sweep import executors

    monkeypatch.setattr(executors, "train_one", fake_train)
    run = sweep.resolve_sweep({"config": "1x2", "set": TINY})[0]
    out = tmp_path / "out"
    res = sweep.ray_task(run, str(out))  # this "node" has no OUT/sweep.json
    assert not out.exists() and isinstance(res["archive"], bytes)
    (out / run.name).mkdir(parents=True)
    (out / run.name / "stale").write_text("x")
    sweep.unpack_run(res["archive"], out / run.name)
    assert sorted(p.name for p in (out / run.name).iterdir()) == ["final_eval.json"]
    assert sorted(p.name for p in out.iterdir()) == [run.name]
    (out / sweep.SWEEP_JSON).write_text("{}")  # a node that sees OUT trains in place
    res = sweep.ray_task(run, str(out))
    assert "archive" not in res
    assert json.loads((out / run.name / "final_eval.json").read_text())["where"] == str(out / run.name)


def test_ray_executor_gives_the_same_summary(local_run, tmp_path):
    pytest.importorskip("ray")
    path, _, local = local_run
    res = sweep.run_sweep(path, tmp_path / "out", executor="ray", workers=1, log=lambda m: None)
    assert res["trained"] == NAMES and res["failed"] == {}
    assert _metrics(res) == _metrics(local)
    assert [g["revenue_mean"] for g in res["groups"]] == [g["revenue_mean"] for g in local["groups"]]


def test_ray_bad_address(tmp_path, capsys):
    pytest.importorskip("ray")
    path = tiny_sweep(tmp_path)
    assert cli.main([str(path), "--out", str(tmp_path / "out"), "--executor", "ray", "--address", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err
    assert "cannot reach a Ray cluster at 127.0.0.1:1" in err and err.count("\n") == 1, err
    assert not (tmp_path / "out").exists()
