"""certify.campaign on Ray (``executor="ray"``): the same results as the local executor, exactly once
after a driver kill, a killed worker's pair retried, fatal errors and bad addresses reported.

One local Ray instance (2 CPUs) serves the whole module; ``run_certification`` uses a connection
that is already open. Most tests inject a fast fake certifier (this module is pickled by value, so
Ray's workers need not import it); one compares the real certifier (SCIP) with the local run.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

ray = pytest.importorskip("ray")

from certify import campaign  # noqa: E402
from certify.campaign import executors  # noqa: E402
from jaxauction import checkpoints, mechanism  # noqa: E402
from jaxauction.mechanism import MechanismSpec  # noqa: E402

ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TIMING = ("wall_s", "time_bounds_s", "time_build_s", "time_solve_s")


@pytest.fixture(scope="module")
def cluster():
    """The module's local Ray instance; yields its address (for driver subprocesses)."""
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


def fake_certify(params, spec, valuations, agent, *, low=None, high=None, solver="auto", time_limit=None,
                 threads=1, sleep=0.0, die_on=None, marker=None, **kw):
    """regret = 0.1 * v[agent, 0] (deterministic). ``sleep``: seconds per pair. ``die_on=(point, agent)``
    with ``marker``: SIGKILL this process at that pair (once if the marker is a file path that is
    written first; every time if ``marker`` is None)."""
    if sleep:
        time.sleep(sleep)
    v = np.asarray(valuations, float)
    if die_on is not None and [round(x, 12) for x in v.ravel()] == die_on[0] and agent == die_on[1]:
        if marker is None or not os.path.exists(marker):
            if marker is not None:
                Path(marker).write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)
    r = 0.1 * v[agent, 0]
    return dict(agent=agent, valuations=v.tolist(), truthful_utility=float(v[agent].sum()), regret_lower=r,
                regret_upper=r, best_misreport=v.tolist(), status="optimal", solver="fake", gap=0.0, nodes=1,
                time_bounds_s=0.0, time_build_s=0.0, time_solve_s=0.0, mip_objective=None,
                mip_network_error=None, pgd_regret=r, n_binaries=0, n_unstable_relus=0,
                message=f"pid {os.getpid()}")


class Refused(RuntimeError):
    fatal = True


def refusing_certify(*a, **kw):
    raise Refused("the licence refuses this model")


def save_ckpt(d, n=1, m=2, seed=0):
    spec = MechanismSpec(n_agents=n, n_items=m, hidden=(8,), allocation="sparsemax", payment="free")
    params = mechanism.init(jax.random.PRNGKey(seed), spec)
    params["pay"]["b"] = jnp.full_like(params["pay"]["b"], 0.3)  # bid-dependent payment: regret > 0
    checkpoints.save_mechanism(d, params, spec)
    return d


@pytest.fixture(scope="module")
def ckpt22(tmp_path_factory):
    return save_ckpt(tmp_path_factory.mktemp("ck") / "ckpt22", n=2, m=2)


def lines(path):
    return [json.loads(l) for l in Path(path).read_text().splitlines()]


def strip(recs, drop=TIMING + ("message",)):
    return [{k: v for k, v in r.items() if k not in drop} for r in recs]


def run(ckpt, out, **kw):
    kw.setdefault("certify_fn", fake_certify)
    kw.setdefault("progress", False)
    return campaign.run_certification(ckpt, out, **kw)


def pairs_once(path, want):
    got = [(r["point"], r["agent"]) for r in lines(path)]
    assert len(got) == len(set(got)), f"a pair recorded twice: {sorted(got)}"
    assert set(got) == set(want)


def test_ray_gives_the_local_results(cluster, ckpt22, tmp_path):
    local = run(ckpt22, tmp_path / "local", points=5)
    remote = run(ckpt22, tmp_path / "ray", points=5, executor="ray", workers=2)
    assert strip(remote) == strip(local)
    pids = {r["message"] for r in remote}
    assert len(pids) == 2 and f"pid {os.getpid()}" not in pids  # two actors, none of them this process
    pairs_once(tmp_path / "ray" / campaign.RESULTS, [(p, a) for p in range(5) for a in range(2)])
    # Resuming with the other executor is the same run: nothing left to do, nothing rewritten.
    before = (tmp_path / "ray" / campaign.RESULTS).read_text()
    assert strip(run(ckpt22, tmp_path / "ray", points=5)) == strip(local)
    assert (tmp_path / "ray" / campaign.RESULTS).read_text() == before


def test_the_real_certifier_gives_the_local_certificate(cluster, tmp_path):
    pytest.importorskip("certify.regret")
    ck = save_ckpt(tmp_path / "ck12", n=1, m=2, seed=3)
    kw = dict(points=2, solver="scip", time_limit=60.0, certify_fn=None)
    local = run(ck, tmp_path / "local", **kw)
    remote = run(ck, tmp_path / "ray", executor="ray", workers=1, **kw)
    assert [r["status"] for r in local] == ["optimal", "optimal"]
    assert strip(remote, TIMING) == strip(local, TIMING)


def test_a_killed_worker_is_retried_and_each_pair_recorded_once(cluster, ckpt22, tmp_path):
    prof = campaign.sample_profiles(checkpoints.load_with_prior(ckpt22)[3], 0, 4)
    marker = tmp_path / "killed_pid"
    die_on = ([round(x, 12) for x in prof[2].ravel()], 1)
    recs = run(ckpt22, tmp_path / "out", points=4, executor="ray", workers=1,
               certify_kwargs=dict(die_on=die_on, marker=str(marker)))
    assert marker.exists(), "the worker was not killed"
    (retried,) = [r for r in recs if (r["point"], r["agent"]) == (2, 1)]
    assert retried["message"] != f"pid {marker.read_text()}"  # certified again, by a new process
    assert strip(recs) == strip(run(ckpt22, tmp_path / "local", points=4))
    pairs_once(tmp_path / "out" / campaign.RESULTS, [(p, a) for p in range(4) for a in range(2)])


def test_a_worker_dying_on_every_try_stops_the_run_with_a_clear_error(cluster, ckpt22, tmp_path, monkeypatch):
    monkeypatch.setattr(executors, "RAY_RETRIES", 1)
    prof = campaign.sample_profiles(checkpoints.load_with_prior(ckpt22)[3], 0, 1)
    die_on = ([round(x, 12) for x in prof[0].ravel()], 0)
    with pytest.raises(campaign.RunError, match=f"lost .* after {executors.RAY_RETRIES} retries"):
        run(ckpt22, tmp_path / "out", points=1, agents="0", executor="ray", workers=1,
            certify_kwargs=dict(die_on=die_on))
    assert (tmp_path / "out" / campaign.RESULTS).read_text() == ""


def test_a_fatal_error_in_a_worker_is_raised_as_itself(cluster, ckpt22, tmp_path):
    with pytest.raises(Refused, match="licence refuses"):
        run(ckpt22, tmp_path / "out", points=2, executor="ray", workers=1, certify_fn=refusing_certify)
    assert (tmp_path / "out" / campaign.RESULTS).read_text() == ""


def test_a_killed_driver_resumes_with_each_pair_exactly_once(cluster, ckpt22, tmp_path):
    out = tmp_path / "out"
    code = ("import sys; sys.path.insert(0, %r); import test_campaign_ray as t; from certify import campaign; "
            "campaign.run_certification(%r, %r, points=6, workers=1, certify_fn=t.fake_certify, progress=False, "
            "executor='ray', address=%r, certify_kwargs={'sleep': 0.25})" % (str(TESTS), str(ckpt22), str(out),
                                                                           cluster))
    driver = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 90
        while time.time() < deadline and driver.poll() is None:
            if (out / campaign.RESULTS).exists() and len((out / campaign.RESULTS).read_text().splitlines()) >= 3:
                break
            time.sleep(0.05)
        assert driver.poll() is None, driver.stderr.read()[-3000:]
        driver.send_signal(signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        driver.kill()
    first = (out / campaign.RESULTS).read_text()
    n_first = len(first.splitlines())
    assert 3 <= n_first < 12
    recs = run(ckpt22, out, points=6, executor="ray", workers=2)
    text = (out / campaign.RESULTS).read_text()
    assert text.startswith(first.rstrip("\n").rsplit("\n", 1)[0])  # the complete lines were kept
    pairs_once(out / campaign.RESULTS, [(p, a) for p in range(6) for a in range(2)])
    assert strip(recs) == strip(run(ckpt22, tmp_path / "local", points=6))


def _closed_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def test_bad_address_is_a_one_line_error(ckpt22, tmp_path):
    """A closed port fails at once; a port that accepts TCP but is no Ray head, after the timeout."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run([sys.executable, str(REPO / "certify.py"), "--ckpt", str(ckpt22), "--points", "2",
                        "--executor", "ray", "--address", f"127.0.0.1:{_closed_port()}", "--out", str(tmp_path / "o")],
                       cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and err[0].startswith("error: cannot reach a Ray cluster at 127.0.0.1:"), r.stderr
    assert not (tmp_path / "o").exists()  # refused before any work
    with socket.socket() as srv:  # listens (the kernel accepts connections) but never answers
        srv.bind(("127.0.0.1", 0))
        srv.listen(8)
        code = ("from certify.campaign import executors, RunError\n"
                "try:\n    executors.connect_ray('127.0.0.1:%d', 1, timeout=3)\n"
                "except RunError as e:\n    print(e); raise SystemExit(2)\n" % srv.getsockname()[1])
        t0 = time.time()
        r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                           timeout=120)
    assert r.returncode == 2 and "no Ray cluster answered at 127.0.0.1:" in r.stdout, (r.stdout, r.stderr[-2000:])
    assert time.time() - t0 < 60
