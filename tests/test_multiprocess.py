"""The main job across JAX processes on JAX's own distributed runtime, for real.

Two ``jaxcorr train`` processes on localhost (a free port, gloo collectives on CPU) run Algorithm 8
with the ``n`` trees split across the two processes' devices (Section 5's parallel updates): the
result must be the single-process one within 1e-5 relative, only process 0 may write the checkpoint,
and a resumed run (both processes reading it) must end where an uninterrupted one ends. A run in
which one process is killed must end the other with a clear error within a bounded time, as must a
process whose peers never arrive. Every launch has a deadline (:class:`jaxcorr.distributed.LocalRun`
kills what is left), so a broken runtime fails the test instead of hanging the suite.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time

import numpy as np
import pytest

from jaxcorr import distributed

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = ["--n", "6", "--m", "512", "--d", "8", "--b", "1.2", "--seed", "3"]  # 6 points on 2 processes
DEADLINE = 120  # seconds for any launch; far above the ~10 s a healthy one takes
PROGRESS = re.compile(r"step +\d+/\d+")  # a progress line of jaxcorr train
BOUND = 30  # seconds from a peer's death (or absence) to the survivor's exit


@pytest.fixture(scope="module", autouse=True)
def _compile_cache(tmp_path_factory):
    """One persistent XLA compilation cache for the module's launches (they compile the same steps)."""
    CACHE["dir"] = str(tmp_path_factory.mktemp("xla-cache"))


CACHE: dict = {}


def _env(**extra):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               JAX_PLATFORMS="cpu", JAXCORR_INIT_TIMEOUT="60", JAXCORR_HEARTBEAT_TIMEOUT="10",
               JAXCORR_SHUTDOWN_TIMEOUT="20", JAX_COMPILATION_CACHE_DIR=CACHE["dir"],
               JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0", JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    env.update(extra)
    return env


def _train_cmds(n: int, *args, port=None):
    port = port or distributed.free_port()
    return [[sys.executable, "-m", "jaxcorr", "train", *SIZES, *args, "--coordinator", f"127.0.0.1:{port}",
             "--num-processes", str(n), "--process-id", str(i)] for i in range(n)]


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def _check_ok(results):
    for i, r in enumerate(results):
        assert r["returncode"] == 0, f"process {i} exited {r['returncode']}:\n{r['stderr'][-3000:]}"


def test_two_processes_train_and_resume_like_one(tmp_path):
    """2 processes, 6 + 4 steps with a checkpoint in between == 10 steps in one process (1e-5)."""
    import jax
    import optax

    from jaxcorr import checkpoint, data, nn, train

    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for d in dirs:
        d.mkdir()
    first = distributed.LocalRun(_train_cmds(2, "--init", "rows", "--steps", "6", "--save", "run.ckpt", "--json",
                                             "--quiet"), env=_env(), cwd=[str(d) for d in dirs]).wait(DEADLINE)
    _check_ok(first)
    assert (dirs[0] / "run.ckpt").exists() and not (dirs[1] / "run.ckpt").exists()  # process 0 writes
    summaries = [_last_json(r["stdout"]) for r in first]
    assert all(s["processes"] == 2 and s["devices"] == 2 for s in summaries)
    assert all(s["method"] == distributed.mesh_method() == "active" for s in summaries)  # the sparse default
    assert summaries[0]["loss_final"] == summaries[1]["loss_final"]
    shutil.copy(dirs[0] / "run.ckpt", dirs[1] / "run.ckpt")  # a shared file system, by hand
    second = distributed.LocalRun(
        _train_cmds(2, "--steps", "4", "--resume", "run.ckpt", "--save", "run.ckpt", "--json", "--quiet"),
        env=_env(), cwd=[str(d) for d in dirs]).wait(DEADLINE)
    _check_ok(second)
    resumed = [_last_json(r["stdout"]) for r in second]
    assert [s["step_end"] for s in resumed] == [10, 10]

    # the reference: one process, one device, 10 steps (what `jaxcorr train` does without the flags)
    X, y = data.synthetic(3, 6, 8)
    params = nn.init(jax.random.key(3), 512, 8)
    ref, hist = train.fit(params, X, y, steps=10, method="dtree", optimizer=optax.sgd(1.0), b=1.2)
    ref_loss = float(nn.loss(ref, X, y, 1.2))
    assert abs(summaries[0]["loss_final"] - float(hist.loss[6])) <= 1e-5 * float(hist.loss[6])
    for s in resumed:
        assert abs(s["loss_final"] - ref_loss) <= 1e-5 * ref_loss
    W = np.asarray(checkpoint.load(str(dirs[0] / "run.ckpt")).model.W)
    assert np.max(np.abs(W - np.asarray(ref.W))) <= 1e-5 * np.max(np.abs(np.asarray(ref.W)))


def test_two_processes_init_span_like_one(tmp_path, capsys):
    """--init span (the default) on 2 processes: each builds the same held rows A (span_init.build
    is a pure function of the key, X, m and b) and trains them on the mesh's row path. Fresh, 3 steps
    == span_init.fit on one device (1e-5); a one-process span-path checkpoint (K and its momentum
    trace) resumed on 2 processes for 3 more == 6 steps on one device; process 0's checkpoint (the
    trained rows) resumes on one process to the same end."""
    import jax

    from jaxcorr import checkpoint, cli, data, optimizers, span_init

    dirs = [tmp_path / "p0", tmp_path / "p1"]
    for d in dirs:
        d.mkdir()
    opt = ["--optimizer", "momentum", "--method", "active", "--json", "--quiet"]
    assert cli.main(["train", *SIZES, *opt, "--steps", "3", "--save", str(dirs[0] / "k.ckpt")]) == 0  # K
    shutil.copy(dirs[0] / "k.ckpt", dirs[1] / "k.ckpt")
    fresh = distributed.LocalRun(_train_cmds(2, *opt, "--steps", "3", "--save", "w.ckpt"), env=_env(),
                                 cwd=[str(d) for d in dirs]).wait(DEADLINE)
    _check_ok(fresh)
    resumed = distributed.LocalRun(_train_cmds(2, "--resume", "k.ckpt", "--save", "k.ckpt", "--steps", "3", "--json",
                                               "--quiet"), env=_env(), cwd=[str(d) for d in dirs]).wait(DEADLINE)
    _check_ok(resumed)
    assert (dirs[0] / "w.ckpt").exists() and not (dirs[1] / "w.ckpt").exists()  # process 0 writes
    capsys.readouterr()
    assert cli.main(["train", "--resume", str(dirs[0] / "w.ckpt"), "--save", str(tmp_path / "one.ckpt"), "--steps",
                     "3", "--json", "--quiet"]) == 0
    one = _last_json(capsys.readouterr().out)

    X, y = data.synthetic(3, 6, 8)  # the reference: span_init on one device, 3 + 3 + 1 steps
    spec, act = span_init.build(jax.random.key(3), X, 512, 1.2)
    kw = dict(method="active", optimizer=optimizers.make("momentum", optimizers.spec("momentum").learning_rate), b=1.2)
    at3, h1 = span_init.fit(spec, act, X, y, steps=3, **kw)
    ref, h2 = span_init.fit(spec, act, X, y, steps=3, start=at3, **kw)
    _, h3 = span_init.fit(spec, act, X, y, steps=1, start=ref, **kw)
    loss = np.concatenate([np.asarray(h.loss, np.float64) for h in (h1, h2, h3)])
    for s in map(_last_json, (r["stdout"] for r in fresh)):
        assert s["init"] == "span" and s["processes"] == 2 and s["n_active"] == act.n_active
        np.testing.assert_allclose([s["loss_initial"], s["loss_final"]], loss[[0, 3]], rtol=1e-5)
    for s in [*map(_last_json, (r["stdout"] for r in resumed)), one]:
        assert s["init"] == "span" and s["step_end"] == 6
        np.testing.assert_allclose([s["loss_initial"], s["loss_final"]], loss[[3, 6]], rtol=1e-5)
    for path, steps, want in (("p0/w.ckpt", 3, at3), ("p0/k.ckpt", 6, None), ("one.ckpt", 6, None)):
        ck = checkpoint.restore(tmp_path / path)
        assert checkpoint.kind(tmp_path / path) == "span" and ck.step == steps and ck.model.trained.path == "rows"
        np.testing.assert_array_equal(ck.model.active.idx, act.idx)
        W = (want or ref).trained_rows(spec, act, X).W
        got = ck.model.trained.trained_rows(ck.model.spec, ck.model.active, ck.model.X).W
        np.testing.assert_allclose(np.asarray(got), np.asarray(W), rtol=0, atol=1e-5 * float(np.abs(W).max()))


def test_killed_peer_stops_the_other_with_a_clear_error():
    """Kill process 1 mid-training: process 0 exits with status 3 and one clear line, promptly.

    Process 0 is then inside the jitted steps, whose collectives fail as soon as the peer's sockets
    close. (A survivor outside any collective, e.g. still compiling, is stopped instead by JAX's
    coordination service once the dead peer has missed heartbeats for JAXCORR_HEARTBEAT_TIMEOUT
    seconds, with JAX's own message; see docs/multiprocess.md.)
    """
    run = distributed.LocalRun(_train_cmds(2, "--steps", "5000"), env=_env())
    t_kill = None
    while time.monotonic() - run.started < DEADLINE:
        if any(c is not None for c in run.poll()):
            break
        if all(PROGRESS.search(run.stderr(i)) for i in (0, 1)):  # both are training
            run.kill(1)
            t_kill = time.monotonic()
            break
        time.sleep(0.05)
    results = run.wait(DEADLINE)
    tails = "\n".join(r["stderr"][-3000:] for r in results[:2])
    assert t_kill is not None, f"training never started:\n{tails}"
    survivor = results[0]
    assert survivor["returncode"] == distributed.PEER_FAILURE_EXIT, survivor["stderr"][-3000:]
    assert "jaxcorr: error: process 0 of 2: a peer process failed or became unreachable" in survivor["stderr"]
    assert survivor["seconds"] - (t_kill - run.started) < BOUND


def test_absent_peer_is_a_bounded_start_up_error():
    """Process 1 of 2 alone: it gives up after JAXCORR_INIT_TIMEOUT with a clear line, not a hang."""
    cmd = _train_cmds(2, "--steps", "1")[1]
    (r,) = distributed.LocalRun([cmd], env=_env(JAXCORR_INIT_TIMEOUT="3")).wait(DEADLINE)
    assert r["returncode"] == distributed.PEER_FAILURE_EXIT, r["stderr"][-3000:]
    assert "did not start within 3 s" in r["stderr"] and "are all 2 processes running" in r["stderr"]
    assert r["seconds"] < 3 + BOUND


@pytest.mark.parametrize("kw, words", [
    (dict(coordinator="127.0.0.1:1234"), "missing --num-processes, --process-id"),
    (dict(num_processes=2, process_id=0), "missing --coordinator"),
    (dict(coordinator="nohost", num_processes=2, process_id=0), "HOST:PORT"),
    (dict(coordinator="h:99999", num_processes=2, process_id=0), "port in 1..65535"),
    (dict(coordinator="h:1", num_processes=0, process_id=0), "--num-processes must be an integer >= 1"),
    (dict(coordinator="h:1", num_processes=2, process_id=2), "--process-id must be an integer in 0..1"),
])
def test_bad_settings_are_clear_errors(kw, words):
    with pytest.raises(ValueError, match=words):
        distributed.resolve(**kw)


def test_resolve_and_timeouts():
    assert distributed.resolve("h:1", 1, 0) is None  # one process needs no runtime
    assert distributed.resolve("[::1]:80", 3, 2) == distributed.ProcessSpec("[::1]:80", 3, 2, "flags")
    assert distributed.resolve() is None  # no cluster environment on the test machine
    assert distributed.Timeouts.from_env({"JAXCORR_HEARTBEAT_TIMEOUT": "7"}).heartbeat == 7
    with pytest.raises(ValueError, match="JAXCORR_INIT_TIMEOUT must be a whole number"):
        distributed.Timeouts.from_env({"JAXCORR_INIT_TIMEOUT": "soon"})


def test_cluster_environment_is_detected_like_jax(monkeypatch):
    """Under SLURM (``srun -n 4``) the process count and id come from the environment, as in
    ``jax.distributed.initialize()``; a one-task allocation stays single-process."""
    env = {"SLURM_JOB_ID": "77", "SLURM_STEP_NODELIST": "node[001-004]", "SLURM_NTASKS": "4",
           "SLURM_PROCID": "2", "SLURM_LOCALID": "0"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    assert distributed.resolve() == distributed.ProcessSpec(None, 4, 2, "slurm")
    monkeypatch.setenv("SLURM_NTASKS", "1")
    monkeypatch.setenv("SLURM_PROCID", "0")
    assert distributed.resolve() is None


def test_cli_flags_all_or_none(capsys):
    from jaxcorr import cli

    assert cli.main(["train", "--coordinator", "127.0.0.1:1", "--steps", "1"]) == 2
    assert "--coordinator, --num-processes and --process-id go together" in capsys.readouterr().err


def test_peer_failure_messages():
    assert distributed.is_peer_failure(RuntimeError("UNKNOWN: Gloo all-reduce failed: Connection reset by peer"))
    assert not distributed.is_peer_failure(RuntimeError("shapes do not match"))
    assert not distributed.is_peer_failure(ValueError("Gloo"))
