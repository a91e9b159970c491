"""The ``certify.py`` command line: one-line errors with exit code 2, and an end-to-end run via SCIP."""
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxauction import checkpoints, mechanism
from jaxauction.mechanism import MechanismSpec

REPO = Path(__file__).resolve().parents[1]


def _load_cli():
    spec = importlib.util.spec_from_file_location("certify_cli", REPO / "certify.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


cli = _load_cli()


def run_cli(*args, timeout=300):
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.run([sys.executable, str(REPO / "certify.py"), *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)


def small_spec():
    return MechanismSpec(n_agents=1, n_items=2, hidden=(8,), allocation="sparsemax", payment="free")


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    d = tmp_path_factory.mktemp("run") / "checkpoint"
    spec = small_spec()
    params = mechanism.init(jax.random.PRNGKey(3), spec)
    # A payment that depends on the bids, so misreporting can pay off (non-trivial regret).
    params["pay"]["b"] = jnp.array([0.3])
    checkpoints.save_mechanism(d, params, spec)
    return d


def assert_one_line_error(code, err, capsys_or_text, pattern):
    text = capsys_or_text
    assert code == 2
    # Ignore the progress bar (tqdm writes "certifying: ..." segments separated by carriage returns).
    lines = [l for l in text.replace("\r", "\n").splitlines() if l.strip() and not l.startswith("certifying")]
    assert len(lines) == 1 and lines[0].startswith("error: "), text
    assert pattern in lines[0], text
    assert "Traceback" not in text


def test_missing_checkpoint_exits_2_without_traceback(tmp_path):
    r = run_cli("--ckpt", tmp_path / "nope", "--out", tmp_path / "out", "--points", "1")
    assert_one_line_error(r.returncode, r.stderr, r.stderr, "does not exist")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_agent_out_of_range(ckpt, tmp_path, capsys):
    code = cli.main(["--ckpt", str(ckpt), "--agents", "1", "--points", "1", "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "agent index 1 out of range")


def test_corrupt_checkpoint(tmp_path, capsys):
    d = tmp_path / "ck"
    d.mkdir()
    (d / "mechanism.json").write_text("{not json")
    code = cli.main(["--ckpt", str(d), "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "cannot read")


def test_nan_weights(tmp_path, capsys):
    d = tmp_path / "ck"
    spec = small_spec()
    params = mechanism.init(jax.random.PRNGKey(0), spec)
    checkpoints.save_mechanism(d, params, spec)
    flat = checkpoints.flatten_tree(params)
    flat["trunk/0/w"] = np.full_like(flat["trunk/0/w"], np.nan)
    checkpoints.atomic_savez(d / checkpoints.MECH_NPZ, flat)
    code = cli.main(["--ckpt", str(d), "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "NaN")


def test_bad_profiles_file(ckpt, tmp_path, capsys):
    f = tmp_path / "p.json"
    f.write_text(json.dumps([[[0.1, 0.2]], [[0.1, 2.0]]]))
    code = cli.main(["--ckpt", str(ckpt), "--profiles", str(f), "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "profile 1 value 2 for agent 0, item 1 is outside")
    f.write_text(json.dumps([[0.1, 0.2]]))
    code = cli.main(["--ckpt", str(ckpt), "--profiles", str(f), "--out", str(tmp_path / "o2")])
    assert_one_line_error(code, None, capsys.readouterr().err, "profile 0 has shape (2,)")


def test_ray_executor_without_ray_is_a_one_line_error(ckpt, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as if Ray were not installed
    code = cli.main(["--ckpt", str(ckpt), "--executor", "ray", "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, 'pip install -e ".[ray]"')
    code = cli.main(["--ckpt", str(ckpt), "--address", "localhost:6379", "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "needs --executor ray")
    assert not (tmp_path / "o").exists()


def test_default_out_dirs():
    assert cli.default_out("runs/x") == Path("runs/x/cert")
    assert cli.default_out("/a/b/1x2_net.npz") == Path("runs/cert/1x2_net")


def test_end_to_end_two_points_via_scip(ckpt, tmp_path, capsys):
    pytest.importorskip("certify.regret")
    out = tmp_path / "cert"
    args = ["--ckpt", ckpt, "--points", "2", "--solver", "scip", "--time-limit", "60", "--out", out]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [(x["point"], x["agent"]) for x in recs] == [(0, 0), (1, 0)]
    for x in recs:
        assert x["status"] == "optimal", x
        assert x["solver"] == "scip"
        assert x["regret_lower"] <= x["regret_upper"] + 1e-5  # lower: float32 JAX replay
        # The certified maximum can be no lower than what gradient ascent found.
        assert x["regret_upper"] >= x["pgd_regret"] - 1e-4
        assert abs(x["mip_network_error"]) < 1e-4
    assert "cert. regret mean" in r.stdout and str(out / "summary.md") in r.stdout
    for name in ("summary.md", "summary.json", "regret_hist.png", "solve_time_hist.png", "misreports.png"):
        assert (out / name).stat().st_size > 0, name
    # Rerunning resumes (nothing to do); another seed into the same directory is refused.
    argv = [str(a) for a in args]
    assert cli.main(argv) == 0 and len((out / "results.jsonl").read_text().splitlines()) == 2
    capsys.readouterr()
    code = cli.main(argv + ["--seed", "1"])
    assert_one_line_error(code, None, capsys.readouterr().err, "seed: 0 there vs 1 now")


def test_license_refusal_is_a_one_line_error(ckpt, tmp_path, capsys, monkeypatch):
    regret = pytest.importorskip("certify.regret")
    from certify.mip import licensing

    def refuse(*a, **kw):
        raise licensing.LicenseLimitError("Gurobi's size-limited license refuses this model: 2400 variables > 2000")

    monkeypatch.setattr(regret, "certify_point", refuse)
    code = cli.main(["--ckpt", str(ckpt), "--points", "2", "--solver", "gurobi", "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "size-limited license refuses this model")
    assert (tmp_path / "o" / "results.jsonl").read_text() == ""  # nothing recorded


def test_softmax_mechanism_is_refused_by_the_mip_before_any_work(tmp_path, capsys):
    pytest.importorskip("certify.regret")
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(8,), allocation="softmax", payment="free")
    checkpoints.save_mechanism(tmp_path / "ck", mechanism.init(jax.random.PRNGKey(0), spec), spec)
    code = cli.main(["--ckpt", str(tmp_path / "ck"), "--solver", "mip", "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "softmax")
    assert not (tmp_path / "o").exists()


def test_planar_end_to_end_and_refusal(ckpt, tmp_path, capsys):
    """``--solver planar``: exact enumeration, no MIP; single bidder, so the regions of the first
    pair are reused by the others. A fractional-payment net is refused before any work."""
    pytest.importorskip("certify.regret")
    out = tmp_path / "planar"
    assert cli.main(["--ckpt", str(ckpt), "--points", "3", "--solver", "planar", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    recs = [json.loads(l) for l in (out / "results.jsonl").read_text().splitlines()]
    assert [x["status"] for x in recs] == ["optimal"] * 3 and {x["solver"] for x in recs} == {"planar"}
    assert "regions reused" not in recs[0]["message"] and all("regions reused" in x["message"] for x in recs[1:])
    for x in recs:
        assert x["regret_lower"] <= x["regret_upper"] + 1e-5 and x["regret_upper"] >= x["pgd_regret"] - 1e-6
        assert x["n_binaries"] == 0
    assert "Planar enumeration time (s)" in text and "Solver: planar" in text
    spec = MechanismSpec(n_agents=1, n_items=2, hidden=(8,), allocation="sparsemax", payment="fractional")
    checkpoints.save_mechanism(tmp_path / "frac", mechanism.init(jax.random.PRNGKey(0), spec), spec)
    code = cli.main(["--ckpt", str(tmp_path / "frac"), "--solver", "planar", "--out", str(tmp_path / "o")])
    assert_one_line_error(code, None, capsys.readouterr().err, "free (clipped linear) payment")
    assert not (tmp_path / "o").exists()
