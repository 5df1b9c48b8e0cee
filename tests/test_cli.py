# Over 500 lines: one concept, the `train` command end to end (its options, data files, checkpoints, resume, errors).
"""`jaxcorr train`: smoke runs, user data, compare, checkpoints and resume, bad input.

Most runs call :func:`jaxcorr.cli.main` in-process at tiny sizes (so the jitted training step is
compiled once for the module); the process behaviour (signals, exit codes, pipes) is tested on
``python -m jaxcorr`` subprocesses in ``test_cli_process.py``.
"""

import json
import os
import signal
import subprocess
import sys

import jax
import numpy as np
import pytest

from jaxcorr import checkpoint, cli, data, wide

TINY = ["--n", "4", "--m", "256", "--d", "4", "--init", "rows"]
STEPS = 6
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(capsys, *argv):
    rc = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    return rc, out, err


def run_json(capsys, *argv):
    rc, out, err = run(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


def assert_one_line_error(rc, out, err, *words):
    assert rc == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("jaxcorr"), err
    assert "Traceback" not in err
    for w in words:
        assert w in lines[0], lines[0]


def load_state(path):
    """A checkpoint of ``jaxcorr train`` as full-width params and state (:func:`jaxcorr.checkpoint.restore`:
    a compact one, the rows that differ from W(0), expanded back to all m rows; a wide one expanded too)."""
    cfg = checkpoint.read_meta(path)["config"]
    opt = cli._make_optimizer(cfg["optimizer"], cfg["lr"])
    ck = checkpoint.restore(path, optimizer=opt)
    params, state = ck.model, ck.opt_state
    if ck.kind == "wide":
        params, state, _ = wide.expand(params, state, opt)
    return {"params": params, "opt_state": jax.tree_util.tree_leaves(state), "step": ck.step, "config": ck.config}


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted run of STEPS steps, saved: the reference for every resume test."""
    path = tmp_path_factory.mktemp("ref") / "full.ckpt"
    rc = cli.main(["train", *TINY, "--steps", str(STEPS), "--save", str(path), "--json", "--quiet"])
    assert rc == 0
    return path, load_state(path)


def assert_same_state(a, b, exact=True):
    """Same step, params and optimizer state: bitwise, or (``exact=False``) to float32 rounding.

    A resumed dtree/wtree run is not bitwise equal to an uninterrupted one: each ``train.fit`` call
    re-compacts the active rows and (SGD, momentum) re-bases its span path ``W = W(0) + K X``; its
    docstring promises "to rounding, about 1e-6 relative in float32". Dense resumes bitwise.
    """
    assert a["step"] == b["step"]
    pairs = [(a["params"].W, b["params"].W), (a["params"].a, b["params"].a)]
    assert len(a["opt_state"]) == len(b["opt_state"])
    pairs += list(zip(a["opt_state"], b["opt_state"]))
    for x, y in pairs:
        if exact:
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
        else:
            np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- runs


def test_default_output_has_progress_and_summary(capsys):
    rc, out, err = run(capsys, *TINY, "--steps", "5")
    assert rc == 0, err
    assert "step 5/5" in err and "ms/step" in err  # progress
    assert "loss" in out and "ms/step" in out
    # b = sqrt(0.4 ln m) makes both bounds equal (256 ** 0.8 = 84.4): said once
    assert "m^(4/5) = m*exp(-b^2/2) = 84.4" in out and out.count("84.4") == 1
    assert "|S_i,fire|" in out


def test_json_last_line(capsys):
    from jaxcorr import nn

    r = run_json(capsys, *TINY, "--steps", "5")
    for key in ("method", "steps", "loss_initial", "loss_final", "ms_per_step", "fire"):
        assert key in r
    assert r["method"] == r["method_choice"]["chosen"] and r["method_choice"]["requested"] == "auto"  # the default
    assert r["steps"] == 5
    assert (r["n"], r["m"], r["d"]) == (4, 256, 4)
    assert r["b"] == pytest.approx(nn.default_threshold(256))
    assert r["fire"]["bound_m_4_5"] == pytest.approx(256**0.8)
    assert 0 < r["fire"]["mean"] <= r["fire"]["max"] <= r["fire"]["union_max"] <= 256
    assert r["ms_per_step"] > 0
    assert np.isfinite(r["loss_final"]) and r["loss_final"] != r["loss_initial"]


def test_json_loss_final_is_loss_of_saved_weights(capsys, full_run):
    from jaxcorr import nn

    path, ck = full_run
    r = run_json(capsys, *TINY, "--steps", str(STEPS))
    X, y = data.synthetic(0, 4, 4)
    b = nn.default_threshold(256)
    assert r["loss_final"] == pytest.approx(float(nn.loss(ck["params"], X, y, b)), rel=1e-6)
    p0 = nn.init(jax.random.key(0), 256, 4)
    assert r["loss_initial"] == pytest.approx(float(nn.loss(p0, X, y, b)), rel=1e-6)


def test_zero_steps(capsys):
    r = run_json(capsys, *TINY, "--steps", "0")
    assert r["steps"] == 0 and r["loss_final"] == r["loss_initial"] and r["ms_per_step"] is None


def test_compare_dense(capsys):
    r = run_json(capsys, *TINY, "--steps", "5", "--compare", "dense")
    c = r["compare"]
    assert c["method"] == "dense" and c["ms_per_step"] > 0
    assert c["speedup_per_step"] == pytest.approx(c["ms_per_step"] / r["ms_per_step"])
    assert c["speedup_end_to_end"] == pytest.approx(c["wall_s"] / r["wall_s"])
    assert c["max_loss_diff_abs"] <= 1e-4 * max(1.0, r["loss_initial"])  # the trees are exact
    assert c["max_loss_diff_rel"] <= 1e-4
    rc, out, err = run(capsys, *TINY, "--steps", "5", "--compare", "dense", "--quiet")
    assert rc == 0 and "vs dense" in out
    assert "per step" in out and "end to end" in out  # both ratios, each labelled
    assert "largest absolute difference" in out and "largest relative difference" in out


def test_compare_with_itself_is_refused(capsys):
    rc, out, err = run(capsys, *TINY, "--method", "dense", "--compare", "dense")
    assert_one_line_error(rc, out, err, "--compare dense", "--method dense", "itself")


@pytest.mark.parametrize("fmt", ["npz", "csv"])
def test_user_data(capsys, tmp_path, fmt):
    rng = np.random.default_rng(1)
    X = rng.normal(size=(4, 4))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = rng.uniform(-1, 1, size=4)
    path = tmp_path / f"d.{fmt}"
    if fmt == "npz":
        np.savez(path, X=X, y=y)
    else:
        np.savetxt(path, np.column_stack([X, y]), delimiter=",", header="x1,x2,x3,x4,y", comments="")
    r = run_json(capsys, "--data", str(path), "--m", "256", "--steps", "3", "--init", "rows")
    assert (r["n"], r["d"], r["data"]) == (4, 4, str(path))
    from jaxcorr import nn

    params = nn.init(__import__("jax").random.key(0), 256, 4)
    loss0 = float(nn.loss(params, X.astype(np.float32), y.astype(np.float32), r["b"]))
    assert r["loss_initial"] == pytest.approx(loss0, rel=1e-5)


def test_subprocess_python_m(tmp_path):
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    p = subprocess.run(
        [sys.executable, "-m", "jaxcorr", "train", *TINY, "--steps", "2", "--method", "dense", "--json"],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120,
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["steps"] == 2 and r["method"] == "dense"
    assert "step 2/2" in p.stderr


# ------------------------------------------------------------------------------------- checkpoints


def test_resume_ends_where_uninterrupted_run_ends(capsys, tmp_path, full_run):
    _, ref = full_run
    half = tmp_path / "half.ckpt"
    assert run(capsys, *TINY, "--steps", str(STEPS // 2), "--save", str(half))[0] == 0
    assert load_state(half)["step"] == STEPS // 2
    rc, out, err = run(capsys, "--resume", str(half), "--save", str(half), "--steps", str(STEPS - STEPS // 2))
    assert rc == 0, err
    assert_same_state(load_state(half), ref, exact=False)


def test_resume_with_adam_and_save_every_is_bitwise(capsys, tmp_path):
    full, part = tmp_path / "full.ckpt", tmp_path / "part.ckpt"
    opt = ["--optimizer", "adam", "--lr", "0.05", "--method", "dense"]
    assert run(capsys, *TINY, *opt, "--steps", "5", "--save", str(full))[0] == 0
    rc, out, err = run(capsys, *TINY, *opt, "--steps", "2", "--save", str(part), "--save-every", "1")
    assert rc == 0 and err.count("saved checkpoint") == 1, err  # after step 1; step 2 is the final save
    assert run(capsys, "--resume", str(part), "--save", str(part), "--steps", "3", "--save-every", "2")[0] == 0
    assert_same_state(load_state(part), load_state(full), exact=True)


def test_ctrl_c_saves_and_resume_completes(capsys, tmp_path, full_run, monkeypatch):
    _, ref = full_run
    path = tmp_path / "int.ckpt"
    calls = []

    def report(line):
        calls.append(line)
        if line.startswith("set-up done"):  # then a line per one-step chunk: stop after the first
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli.progress, "report", report)
    monkeypatch.setattr(cli.run, "initial_chunk", lambda *a, **k: 1)
    monkeypatch.setattr(cli.run.ChunkTimer, "observe", lambda *a, **k: None)
    rc, out, err = run(capsys, *TINY, "--steps", str(STEPS), "--save", str(path))
    assert rc == 130, err
    assert "interrupted by Ctrl-C at step" in err and "--resume" in err
    saved = load_state(path)["step"]
    assert 0 < saved < STEPS
    monkeypatch.undo()
    assert run(capsys, "--resume", str(path), "--save", str(path), "--steps", str(STEPS - saved))[0] == 0
    assert_same_state(load_state(path), ref, exact=False)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty"])
def test_corrupted_checkpoint_is_an_error(capsys, tmp_path, full_run, damage):
    src, _ = full_run
    path = tmp_path / "bad.ckpt"
    raw = src.read_bytes()
    if damage == "flip":
        i = len(raw) // 3
        raw = raw[:i] + bytes([raw[i] ^ 0xFF]) + raw[i + 1 :]
    elif damage == "truncate":
        raw = raw[: len(raw) // 2]
    elif damage == "garbage":
        raw = b"not a checkpoint at all\n" * 10
    else:
        raw = b""
    path.write_bytes(raw)
    rc, out, err = run(capsys, "--resume", str(path), "--steps", "0")
    assert_one_line_error(rc, out, err, "corrupted")


def test_corrupt_zip_version_field_is_a_checkpoint_error(capsys, tmp_path, full_run):
    """A bit flipped in the zip's "version needed to extract" field (central directory): the one
    checkpoint error, exit 2, no traceback (the zip reader alone raises NotImplementedError)."""
    src, _ = full_run
    raw = bytearray(src.read_bytes())
    i = raw.find(b"PK\x01\x02")
    raw[i + 6], raw[i + 7] = 0xFF, 0x00
    path = tmp_path / "v.ckpt"
    path.write_bytes(bytes(raw))
    rc, out, err = run(capsys, "--resume", str(path), "--steps", "0")
    assert_one_line_error(rc, out, err, "corrupted", str(path))


@pytest.mark.parametrize(
    "extra, words",
    [
        (["--m", "128"], ["m=256", "--m 128"]),
        (["--d", "5"], ["d=4"]),
        (["--lr", "0.123"], ["lr="]),
        (["--seed", "1"], ["seed=0"]),
        (["--optimizer", "adam"], ["optimizer='sgd'"]),
    ],
)
def test_mismatched_resume_is_an_error(capsys, full_run, extra, words):
    src, _ = full_run
    rc, out, err = run(capsys, "--resume", str(src), "--steps", "0", *extra)
    assert_one_line_error(rc, out, err, *words)


def test_resume_on_other_data_is_an_error(capsys, tmp_path):
    X, y = data.synthetic(0, 4, 4)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, X=X, y=y)
    np.savez(b, X=X, y=-np.asarray(y))
    ck = tmp_path / "a.ckpt"
    assert run(capsys, "--data", str(a), "--m", "256", "--steps", "1", "--save", str(ck))[0] == 0
    rc, out, err = run(capsys, "--resume", str(ck), "--data", str(b), "--steps", "0")
    assert_one_line_error(rc, out, err, "other data", "sha256")
    c = tmp_path / "c.npz"
    np.savez(c, X=np.asarray(X)[:3], y=np.asarray(y)[:3])
    rc, out, err = run(capsys, "--resume", str(ck), "--data", str(c), "--steps", "0")
    assert_one_line_error(rc, out, err, "other data", "X_shape", "[4, 4]", "[3, 4]")  # names what differs
    os.replace(b, a)  # same path, other contents
    rc, out, err = run(capsys, "--resume", str(ck), "--steps", "0")
    assert_one_line_error(rc, out, err, "other data")


def test_resume_matches_data_by_content_not_path(capsys, tmp_path, monkeypatch):
    """A checkpoint resumes from another directory, and with the same data under another name."""
    X, y = data.synthetic(3, 4, 4)
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    np.savez(tmp_path / "one" / "d.npz", X=X, y=y)
    monkeypatch.chdir(tmp_path / "one")
    ck = tmp_path / "run.ckpt"
    assert run(capsys, "--data", "d.npz", "--m", "256", "--steps", "2", "--save", str(ck))[0] == 0
    monkeypatch.chdir(tmp_path / "two")  # the relative path "d.npz" means nothing here
    rc, out, err = run(capsys, "--resume", str(ck), "--save", str(ck), "--steps", "1")
    assert rc == 0, err
    (tmp_path / "one" / "d.npz").rename(tmp_path / "two" / "renamed.npz")
    rc, out, err = run(capsys, "--resume", str(ck), "--save", str(ck), "--steps", "1", "--data", "renamed.npz")
    assert rc == 0, err
    assert load_state(ck)["step"] == 4
    (tmp_path / "two" / "renamed.npz").unlink()
    rc, out, err = run(capsys, "--resume", str(ck), "--steps", "0")  # the file is gone: say how to go on
    assert_one_line_error(rc, out, err, "renamed.npz", "--data FILE")


def test_missing_checkpoint_is_an_error(capsys, tmp_path):
    rc, out, err = run(capsys, "--resume", str(tmp_path / "nope.ckpt"), "--steps", "0")
    assert_one_line_error(rc, out, err, "does not exist")


def test_resume_without_save_is_refused_unless_only_evaluating(capsys, full_run):
    src, ck = full_run
    rc, out, err = run(capsys, "--resume", str(src), "--steps", "3")
    assert_one_line_error(rc, out, err, "--resume", "without --save", f"--save {src}", "--steps 0")
    r = run_json(capsys, "--resume", str(src), "--steps", "0")
    assert r["steps"] == 0 and r["step_end"] == ck["step"]


def test_save_never_overwrites_data_or_other_files(capsys, tmp_path):
    X, y = data.synthetic(0, 4, 4)
    path = tmp_path / "mine.csv"
    np.savetxt(path, np.column_stack([X, y]), delimiter=",")
    before = path.read_bytes()
    rc, out, err = run(capsys, "--data", str(path), "--m", "64", "--steps", "1", "--save", str(path))
    assert_one_line_error(rc, out, err, "--save", "data file")
    other = tmp_path / "notes.txt"
    other.write_text("precious")
    rc, out, err = run(capsys, *TINY, "--steps", "1", "--save", str(other))
    assert_one_line_error(rc, out, err, "--save", "not a jaxcorr checkpoint")
    assert path.read_bytes() == before and other.read_text() == "precious"


def test_unwritable_save_path_fails_before_training(capsys):
    rc, out, err = run(capsys, *TINY, "--steps", "1", "--save", "/proc/x.ckpt")
    assert_one_line_error(rc, out, err, "--save /proc/x.ckpt", "cannot write")
    assert "step" not in err  # refused before any training


def test_diverging_run_stops_with_one_line_and_status_1(capsys):
    rc, out, err = run(capsys, *TINY, "--method", "dense", "--lr", "1e30", "--steps", "50")
    assert rc == 1 and out == ""
    last = err.strip().splitlines()[-1]
    assert last.startswith("jaxcorr: error: training diverged") and "--lr" in last, err
    t = int(last.split("L(W(")[1].split(")")[0])
    assert 0 < t < 50  # the first non-finite step is named


def test_ddfn_cap_error_in_cli_terms():
    """fit's cap error (typed: its fields, not its text), re-worded with the options that get out of
    it (lr only past step 0)."""
    from jaxcorr import errors

    unit, big = np.ones(4), np.array([1.0, 9.0])
    out = cli.report.cap_message(errors.DDFNCapExceeded(step=7, k=120, cap=85, m=256), "dtree", unit, 2.0)
    assert "step 7" in out and "85" in out and "120" in out
    assert "lower --lr (now 2)" in out and "--method dense" in out and "--fallback dense" in out
    assert "--normalize" not in out
    out0 = cli.report.cap_message(errors.DDFNCapExceeded(step=0, k=120, cap=85, m=256), "dtree", big, 2.0)
    assert "--normalize" in out0 and "norms up to 9" in out0 and "--lr" not in out0


def test_fallback_dense_continues_and_a_diverging_sparse_run_says_so(capsys):
    rc, out, err = run(capsys, *TINY, "--lr", "1e30", "--steps", "20", "--fallback", "dense")
    assert rc == 1 and out == "" and "diverged" in err.strip().splitlines()[-1]


def test_unnormalised_data_names_normalize(capsys, tmp_path):
    rng = np.random.default_rng(0)
    X = 20 * rng.normal(size=(4, 4))
    path = _write(tmp_path, "big.npz", {"X": X, "y": np.ones(4)})
    rc, out, err = run(capsys, "--data", path, "--m", "256", "--steps", "2", "--quiet", "--method", "active")
    assert rc == 2 and out == ""
    last = err.strip().splitlines()[-1]
    for w in ("at step 0", "--normalize", "--method dense", "--fallback dense", "unit norm"):
        assert w in last, last
    assert "lower --lr" not in last  # useless at step 0
    assert run(capsys, "--data", path, "--m", "256", "--steps", "2", "--normalize", "--quiet")[0] == 0


def test_no_neuron_fires_is_said_even_when_quiet(capsys):
    r = run_json(capsys, *TINY, "--b", "10", "--steps", "2", "--quiet")
    assert r["fire"]["union_max"] == 0 and r["loss_final"] == r["loss_initial"]
    assert any("no neuron fired" in w and "--b" in w for w in r["warnings"])
    rc, out, err = run(capsys, *TINY, "--b", "10", "--steps", "2", "--quiet")
    assert rc == 0 and "warning: no neuron fired" in err


def test_csv_with_bom_quotes_and_header_is_read_whole(capsys, tmp_path):
    X, y = data.synthetic(0, 4, 4)
    rows = [",".join(f'"{v:.6f}"' for v in (*xi, yi)) for xi, yi in zip(np.asarray(X), np.asarray(y))]
    path = tmp_path / "q.csv"
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode("utf-8"))  # BOM, quotes, CRLF, no header
    r = run_json(capsys, "--data", str(path), "--m", "256", "--steps", "1")
    assert r["n"] == 4  # the first row is data, not a header
    path.write_text("a,b,c,d,y\n" + "\n".join(rows) + "\n")
    rc, out, err = run(capsys, "--data", str(path), "--m", "256", "--steps", "1", "--quiet")
    assert rc == 0 and "skipped the header row (line 1: 'a,b,c,d,y')" in err


def test_memory_refusals_are_one_line(capsys):
    rc, out, err = run(capsys, "--m", "3000000000", "--steps", "1", "--wide", "off", "--init", "rows")
    assert_one_line_error(rc, out, err, "--m 3000000000", "2^30")
    rc, out, err = run(capsys, "--m", str(2**30), "--d", "64", "--steps", "1", "--wide", "off", "--init", "rows")
    assert_one_line_error(rc, out, err, "does not fit in memory", "available", "at most --m")


def test_version_and_help(capsys):
    with pytest.raises(SystemExit):
        cli.build_parser().parse_args(["--version"])
    assert cli.main(["--version"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("jaxcorr ") and "jax " in out
    assert cli.main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.METHODS:
        assert name in out
    assert "--cache-dir" in out and "--fallback" in out


def test_methods_and_default_follow_the_library():
    from jaxcorr import train

    assert cli.METHODS == tuple(train.METHODS)
    assert cli.DEFAULT_METHOD == ("active" if "active" in train.METHODS else "dtree") == train.DEFAULT_METHOD
    assert cli.DEFAULTS["method"] == "auto"  # the CLI's default: the cost model picks (test_cli_auto.py)


def test_cache_dir_resolution(monkeypatch, tmp_path):
    args = cli.build_parser().parse_args(["train"])
    monkeypatch.delenv("JAXCORR_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert cli.cache_dir(args, process=True) == str(tmp_path / "jaxcorr" / "xla")
    assert cli.cache_dir(args, process=False) is None  # in-process calls change no global state
    monkeypatch.setenv("JAXCORR_CACHE_DIR", str(tmp_path / "env"))
    assert cli.cache_dir(args, process=False) == str(tmp_path / "env")
    monkeypatch.setenv("JAXCORR_CACHE_DIR", "")
    assert cli.cache_dir(args, process=True) is None
    args = cli.build_parser().parse_args(["train", "--cache-dir", "X"])
    assert cli.cache_dir(args, process=True) == "X"
    args = cli.build_parser().parse_args(["train", "--no-cache"])
    monkeypatch.setenv("JAXCORR_CACHE_DIR", str(tmp_path / "env"))
    assert cli.cache_dir(args, process=True) is None


# --------------------------------------------------------------------------------------- bad input


def _write(tmp_path, name, content):
    p = tmp_path / name
    if isinstance(content, dict):
        np.savez(p, **content)
    else:
        p.write_text(content)
    return str(p)


@pytest.mark.parametrize(
    "case, words",
    [
        ("missing", ["does not exist"]),
        ("npz_no_y", ["no array y"]),
        ("npz_not_zip", ["not a readable .npz"]),
        ("csv_text", ["line 3", "not a row of numbers"]),
        ("csv_ragged", ["line 3", "columns"]),
        ("csv_one_column", ["at least 2 columns"]),
        ("lengths", ["X has 3 rows but y has 2"]),
        ("nan", ["NaN or infinite"]),
        ("inf_csv", ["NaN or infinite"]),
        ("suffix", ["unknown format"]),
    ],
)
def test_bad_data_file(capsys, tmp_path, case, words):
    X = np.eye(3)
    path = {
        "missing": lambda: str(tmp_path / "missing.npz"),
        "npz_no_y": lambda: _write(tmp_path, "a.npz", {"X": X}),
        "npz_not_zip": lambda: _write(tmp_path, "a.npz", "hello"),
        "csv_text": lambda: _write(tmp_path, "a.csv", "x,y\n1,2\nfoo,3\n"),
        "csv_ragged": lambda: _write(tmp_path, "a.csv", "1,2,3\n4,5,6\n7,8\n"),
        "csv_one_column": lambda: _write(tmp_path, "a.csv", "1\n2\n"),
        "lengths": lambda: _write(tmp_path, "a.npz", {"X": X, "y": np.ones(2)}),
        "nan": lambda: _write(tmp_path, "a.npz", {"X": np.where(X == 1, np.nan, X), "y": np.ones(3)}),
        "inf_csv": lambda: _write(tmp_path, "a.csv", "1,0,1\n0,1,inf\n"),
        "suffix": lambda: _write(tmp_path, "a.txt", "1,2\n"),
    }[case]()
    rc, out, err = run(capsys, "--data", path, "--m", "16", "--steps", "1")
    assert_one_line_error(rc, out, err, *words)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--m", "0"], ["--m must be >= 1"]),
        (["--n", "-3"], ["--n must be >= 1"]),
        (["--steps", "-1"], ["--steps must be >= 0"]),
        (["--method", "sparse"], ["invalid choice", "sparse"]),
        (["--optimizer", "rmsprop"], ["invalid choice"]),
        (["--m", "lots"], ["--m", "'lots'", "2^K"]),
        (["--lr", "nan"], ["--lr must be finite"]),
        (["--lr", "0"], ["--lr must be > 0"]),
        (["--save-every", "2"], ["needs --save"]),
        (["--bogus"], ["unrecognized arguments"]),
        (["--save", "/nonexistent-dir/x.ckpt"], ["does not exist"]),
        (["--seed", "-1"], ["--seed", "-1"]),
        (["--seed", str(2**32)], ["--seed", "2^32 - 1"]),
        (["--normalize"], ["--normalize", "--data"]),
        (["--cache-dir", "x", "--no-cache"], ["--no-cache"]),
        (["--steps", "0", "--compare", "dense"], ["--compare dense", "--steps 0", "--steps N"]),
    ],
)
def test_bad_options(capsys, argv, words):
    rc = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, out, err, *words)


def test_no_command_is_an_error(capsys):
    assert cli.main([]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_chunks_are_sized_by_time():
    from jaxcorr.cli import run as cr

    assert cr.choose_chunk(10, 100) == 10 and cr.choose_chunk(14, 100) == 10  # a divisor: one compilation
    assert cr.choose_chunk(16, 97) == 16  # a prime: no divisor in [8, 16]
    assert cr.choose_chunk(500, 30) == 30 and cr.choose_chunk(0, 5) == 1
    # The default run (dense cost bound 1 ns per n*m*d on a CPU): chunks of ~0.5 s at most.
    assert cr.initial_chunk(8, 2**17, 32, 100) == 14
    assert cr.initial_chunk(8, 2**22, 64, 10**6) == 1  # a dense step there takes ~0.5 s
    assert cr.initial_chunk(4, 256, 4, 10**6) == 2500  # tiny: bounded by the fixed cost of a step
    assert cr.initial_chunk(8, 2**17, 32, 10**6, platform="gpu") > cr.initial_chunk(8, 2**17, 32, 10**6)
    # Sparse steps are bounded by their active rows, not m: at m = 2^26 (|A| = 1.9M, span path, 30 ms
    # measured) chunks of 8 steps, not 1; adam (no span) at m = 2^22 (|A| = 219K, 33 ms) 7; dtree 3x.
    assert cr.initial_chunk(8, 2**26, 64, 10**6, rows=1.9e6, span=True) == 8
    assert cr.initial_chunk(8, 2**22, 64, 10**6, rows=2.19e5) == 7
    assert cr.initial_chunk(8, 2**22, 64, 10**6, rows=2.19e5, span=True, cost=3.0) == 23
    t = cr.ChunkTimer(chunk=1000, seg=10**6)
    assert t.observe(1000, ms_per_step=5.0) == 100  # 5 s chunks: far over the stop latency
    t = cr.ChunkTimer(chunk=10, seg=10**6)
    t.t0 -= 0.5  # a set-up of half a second
    assert t.observe(10, ms_per_step=0.01) is None  # the first chunk only measures set-up
    t.t_last -= 0.05  # then 50 ms of overhead per 0.1 ms chunk: worth a restart with longer chunks
    assert t.observe(20, ms_per_step=0.01) == int(cr.TARGET_CHUNK_S / 1e-5)
    t = cr.ChunkTimer(chunk=10, seg=10**6)
    t.t0 -= 30.0  # a long set-up (a DTree at m = 2^22): a new fit call would delay a stop by as much
    assert t.observe(10, ms_per_step=0.01) is None
    t.t_last -= 0.05
    assert t.observe(20, ms_per_step=0.01) is None


def test_a_chunk_resize_keeps_the_steps_done(capsys, tmp_path, full_run, monkeypatch):
    """When the measured chunks call for another length, the run goes on from where it is: the
    result is the uninterrupted run's, and the steps of the first chunks are not trained twice."""
    _, ref = full_run
    calls = []

    def observe(self, done, ms_per_step):
        calls.append(done)
        return 2 if len(calls) == 1 else None

    monkeypatch.setattr(cli.run, "initial_chunk", lambda *a, **k: 1)
    monkeypatch.setattr(cli.run.ChunkTimer, "observe", observe)
    path = tmp_path / "r.ckpt"
    r = run_json(capsys, *TINY, "--steps", str(STEPS), "--save", str(path), "--quiet")
    assert r["steps"] == STEPS and calls[0] == 1  # 1 step, then chunks of 2 for the other 5
    assert_same_state(load_state(path), ref, exact=False)


def test_resume_of_a_full_checkpoint_saves_compactly(capsys, tmp_path):
    """A full-format checkpoint (an older jaxcorr, or another process layout) resumes exactly, and the
    resumed run's own saves hold only the rows that differ from W(0) (drawn again from the seed)."""
    args = ["--n", "4", "--m", "4096", "--d", "8", "--quiet", "--method", "dense", "--optimizer", "adam",
            "--lr", "0.01", "--init", "rows"]
    ref, part = tmp_path / "ref.ckpt", tmp_path / "part.ckpt"
    assert run(capsys, *args, "--steps", "4", "--save", str(ref))[0] == 0
    assert run(capsys, *args, "--steps", "2", "--save", str(part))[0] == 0
    st = load_state(part)
    opt = cli._make_optimizer("adam", 0.01)
    cfg = checkpoint.read_meta(part)["config"]
    cfg.pop("wide")
    cfg["m"] = 4096
    X, y = data.synthetic(0, 4, 8)
    full_state = jax.tree_util.tree_unflatten(jax.tree_util.tree_structure(opt.init(st["params"].W)), st["opt_state"])
    assert checkpoint.save(part, st["params"], X=X, y=y, opt_state=full_state, step=st["step"], config=cfg) == "full"
    big = part.stat().st_size
    assert checkpoint.kind(part) == "full" and checkpoint.read_meta(part)["config"].get("wide") is None
    rc, out, err = run(capsys, "--resume", str(part), "--save", str(part), "--steps", "2", "--quiet")
    assert rc == 0, err
    assert checkpoint.read_meta(part)["config"]["wide"]["full_width"] and part.stat().st_size < big / 4
    assert checkpoint.kind(part) == "compact"
    assert_same_state(load_state(part), load_state(ref), exact=True)


# ------------------------------------------------------------- what a user trusting the CLI expects


def test_initial_loss_overflow_is_not_called_a_divergence(capsys, tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path, "huge.npz", {"X": rng.normal(size=(4, 4)), "y": 1e20 * rng.normal(size=4)})
    for method in ("active", "dense"):
        rc, out, err = run(capsys, "--data", path, "--normalize", "--m", "256", "--steps", "3", "--method", method)
        assert_one_line_error(rc, out, err.strip().splitlines()[-1], "initial loss", "overflows float32",
                              "before any step", "scale y", "float64")
        assert "diverged" not in err and "lower --lr" not in err


@pytest.mark.parametrize("name", ["sgd", "momentum", "adam"])
def test_default_learning_rate_is_each_optimizers_own(capsys, name):
    from jaxcorr import optimizers

    r = run_json(capsys, *TINY, "--steps", "1", "--optimizer", name, "--quiet")
    assert r["lr"] == optimizers.spec(name).learning_rate
    assert cli.main(["train", "--help"]) == 0
    assert f"{name} {optimizers.spec(name).learning_rate:g}" in " ".join(capsys.readouterr().out.split())


@pytest.mark.parametrize("opt", [["--optimizer", "adam", "--lr", "10"], ["--lr", "100"]])
def test_a_loss_that_rose_is_warned(capsys, opt):
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r = run_json(capsys, *TINY, "--steps", "6", "--method", "dense", "--quiet", *opt)
    assert r["loss_final"] > r["loss_initial"]
    assert any("loss rose" in w and "lower --lr" in w for w in r["warnings"])
    assert not [w for w in seen if "loss rose" in str(w.message)]  # said once, by the CLI (not train.fit too)
    r = run_json(capsys, *TINY, "--steps", "6", "--method", "dense", "--quiet")  # a falling loss: nothing said
    assert r["loss_final"] < r["loss_initial"] and r["warnings"] == []


def test_fallback_dense_says_what_ran(capsys, tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path, "big.npz", {"X": 20 * rng.normal(size=(4, 4)), "y": np.ones(4)})
    argv = ["--data", path, "--m", "256", "--steps", "3", "--fallback", "dense", "--quiet", "--method", "active",
            "--init", "rows"]
    r = run_json(capsys, *argv)
    assert r["method"] == "active" and r["fallback_step"] == 0
    rc, out, err = run(capsys, *argv)
    assert rc == 0 and "of active then dense from step 0" in out and "fallback    active could not go on" in out
    assert "fallback='dense'" not in out + err and "pass fallback" not in out + err


def test_small_norm_data_that_fires_nothing_names_normalize(capsys, tmp_path):
    rng = np.random.default_rng(0)
    path = _write(tmp_path, "small.npz", {"X": 0.01 * rng.normal(size=(4, 4)), "y": np.ones(4)})
    r = run_json(capsys, "--data", path, "--m", "256", "--steps", "2", "--quiet")
    (w,) = [w for w in r["warnings"] if "no neuron fired" in w]
    assert "--normalize" in w and "--b" in w
    r = run_json(capsys, *TINY, "--b", "10", "--steps", "2", "--quiet")  # unit rows: --b only
    assert not any("--normalize" in w for w in r["warnings"])


def test_summary_suggests_compare_only_where_it_applies(capsys):
    rc, out, err = run(capsys, *TINY, "--steps", "2", "--method", "dense", "--quiet")
    assert rc == 0 and "--compare dense" not in out and "jaxcorr train --help" in out
    rc, out, err = run(capsys, *TINY, "--steps", "2", "--quiet", "--method", "active")
    assert rc == 0 and "jaxcorr train --compare dense" in out
    rc, out, err = run(capsys, *TINY, "--steps", "2", "--quiet", "--compare", "dense")
    assert "reused programs both compile" not in out and "reused any compiled programs" in out


def test_bounds_printed_twice_only_when_they_differ(capsys):
    rc, out, err = run(capsys, *TINY, "--steps", "1", "--b", "1.0", "--quiet")
    assert "m^(4/5) = 84.4   m*exp(-b^2/2) = 155.3" in out


def test_end_to_end_is_the_whole_call(capsys):
    r = run_json(capsys, *TINY, "--steps", "2", "--quiet")
    assert r["process_s"] >= r["wall_s"] > 0
    rc, out, err = run(capsys, *TINY, "--steps", "2", "--quiet")
    assert "end to end (the whole process)" in out


def test_callback_work_runs_under_the_transfer_guard(monkeypatch):
    """The CLI's own work between chunks runs under jax.transfer_guard("disallow"): an implicit
    transfer there (here one planted in the progress line) is refused; the run itself passes."""
    import jax.numpy as jnp

    seen = []
    line = cli.progress.progress_line

    def planted(*a):
        try:
            jnp.asarray(np.ones(2)) + 0  # an implicit host-to-device transfer
            seen.append("allowed")
        except Exception as e:  # noqa: BLE001 -- the guard's refusal
            seen.append("refused" if "isallowed" in str(e) else repr(e))
        return line(*a)

    monkeypatch.setattr(cli.progress, "progress_line", planted)
    X, y = data.synthetic(0, 4, 4)
    p0 = __import__("jaxcorr").nn.init(jax.random.key(0), 64, 4)
    plan = cli.run.Plan(X=X, y=y, b=1.0, optimizer=cli._make_optimizer("sgd", 1.0), step0=0, steps=3)
    out = cli.run.run_steps(__import__("jaxcorr").train.fit, p0, None, plan, method="dense")
    assert len(out.history.loss) == 3 and seen and set(seen) == {"refused"}, seen
