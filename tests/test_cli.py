"""`jaxcorr train` (issue 4): smoke runs, user data, compare, checkpoints and resume, bad input.

Most runs call :func:`jaxcorr.cli.main` in-process at tiny sizes (so the jitted training step is
compiled once for the module); one test runs ``python -m jaxcorr train`` in a subprocess.
"""

import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest

from jaxcorr import checkpoint, cli, data

TINY = ["--n", "4", "--m", "256", "--d", "4"]
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


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """An uninterrupted run of STEPS steps, saved: the reference for every resume test."""
    path = tmp_path_factory.mktemp("ref") / "full.ckpt"
    rc = cli.main(["train", *TINY, "--steps", str(STEPS), "--save", str(path), "--json", "--quiet"])
    assert rc == 0
    return path, checkpoint.load(path)


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
    assert "m^(4/5) = 84.4" in out  # 256 ** 0.8
    assert "m*exp(-b^2/2) = 84.4" in out  # b = sqrt(0.4 ln m) makes both bounds equal
    assert "|S_i,fire|" in out


def test_json_last_line(capsys):
    from jaxcorr import nn

    r = run_json(capsys, *TINY, "--steps", "5")
    for key in ("method", "steps", "loss_initial", "loss_final", "ms_per_step", "fire"):
        assert key in r
    assert r["method"] == "dtree" and r["steps"] == 5
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
    assert r["loss_initial"] == pytest.approx(float(nn.loss(nn.init(__import__("jax").random.key(0), 256, 4), X, y, b)), rel=1e-6)


def test_zero_steps(capsys):
    r = run_json(capsys, *TINY, "--steps", "0")
    assert r["steps"] == 0 and r["loss_final"] == r["loss_initial"] and r["ms_per_step"] is None


def test_compare_dense(capsys):
    r = run_json(capsys, *TINY, "--steps", "5", "--compare", "dense")
    c = r["compare"]
    assert c["method"] == "dense" and c["ms_per_step"] > 0 and c["speedup"] > 0
    assert c["max_loss_diff"] <= 1e-4 * max(1.0, r["loss_initial"])  # the trees are exact
    rc, out, err = run(capsys, *TINY, "--steps", "5", "--compare", "dense", "--quiet")
    assert rc == 0 and "vs dense" in out and "largest loss difference" in out


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
    r = run_json(capsys, "--data", str(path), "--m", "256", "--steps", "3")
    assert (r["n"], r["d"], r["data"]) == (4, 4, str(path))
    from jaxcorr import nn

    params = nn.init(__import__("jax").random.key(0), 256, 4)
    assert r["loss_initial"] == pytest.approx(float(nn.loss(params, X.astype(np.float32), y.astype(np.float32), r["b"])), rel=1e-5)


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
    assert checkpoint.load(half)["step"] == STEPS // 2
    rc, out, err = run(capsys, "--resume", str(half), "--save", str(half), "--steps", str(STEPS - STEPS // 2))
    assert rc == 0, err
    assert_same_state(checkpoint.load(half), ref, exact=False)


def test_resume_with_adam_and_save_every_is_bitwise(capsys, tmp_path):
    full, part = tmp_path / "full.ckpt", tmp_path / "part.ckpt"
    opt = ["--optimizer", "adam", "--lr", "0.05", "--method", "dense"]
    assert run(capsys, *TINY, *opt, "--steps", "5", "--save", str(full))[0] == 0
    rc, out, err = run(capsys, *TINY, *opt, "--steps", "2", "--save", str(part), "--save-every", "1")
    assert rc == 0 and err.count("saved checkpoint") == 1, err  # after step 1; step 2 is the final save
    assert run(capsys, "--resume", str(part), "--save", str(part), "--steps", "3", "--save-every", "2")[0] == 0
    assert_same_state(checkpoint.load(part), checkpoint.load(full), exact=True)


def test_ctrl_c_saves_and_resume_completes(capsys, tmp_path, full_run, monkeypatch):
    _, ref = full_run
    path = tmp_path / "int.ckpt"
    calls = []

    def report(line):
        calls.append(line)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(cli, "_report", report)
    rc, out, err = run(capsys, *TINY, "--steps", str(STEPS), "--save", str(path))
    assert rc == 130, err
    assert "interrupted at step" in err and "--resume" in err
    saved = checkpoint.load(path)["step"]
    assert 0 < saved < STEPS
    monkeypatch.undo()
    assert run(capsys, "--resume", str(path), "--save", str(path), "--steps", str(STEPS - saved))[0] == 0
    assert_same_state(checkpoint.load(path), ref, exact=False)
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
    rc, out, err = run(capsys, "--resume", str(path), "--steps", "1")
    assert_one_line_error(rc, out, err, "corrupted")


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
    rc, out, err = run(capsys, "--resume", str(src), "--steps", "1", *extra)
    assert_one_line_error(rc, out, err, *words)


def test_resume_on_other_data_is_an_error(capsys, tmp_path):
    X, y = data.synthetic(0, 4, 4)
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    np.savez(a, X=X, y=y)
    np.savez(b, X=X, y=-np.asarray(y))
    ck = tmp_path / "a.ckpt"
    assert run(capsys, "--data", str(a), "--m", "256", "--steps", "1", "--save", str(ck))[0] == 0
    rc, out, err = run(capsys, "--resume", str(ck), "--data", str(b), "--steps", "1")
    assert_one_line_error(rc, out, err, "data")
    os.replace(b, a)  # same path, other contents
    rc, out, err = run(capsys, "--resume", str(ck), "--steps", "1")
    assert_one_line_error(rc, out, err, "other data")


def test_missing_checkpoint_is_an_error(capsys, tmp_path):
    rc, out, err = run(capsys, "--resume", str(tmp_path / "nope.ckpt"), "--steps", "1")
    assert_one_line_error(rc, out, err, "does not exist")


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
        (["--m", "lots"], ["invalid int value"]),
        (["--lr", "nan"], ["--lr must be finite"]),
        (["--lr", "0"], ["--lr must be > 0"]),
        (["--save-every", "2"], ["needs --save"]),
        (["--bogus"], ["unrecognized arguments"]),
        (["--save", "/nonexistent-dir/x.ckpt"], ["does not exist"]),
    ],
)
def test_bad_options(capsys, argv, words):
    rc = cli.main(["train", *argv])
    out, err = capsys.readouterr()
    assert_one_line_error(rc, out, err, *words)


def test_no_command_is_an_error(capsys):
    assert cli.main([]) == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1
