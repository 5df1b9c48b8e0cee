"""`jaxcorr train --wide` (the wide model, :mod:`jaxcorr.wide`): same run as the full-width one,
checkpoints and resume, ``--m 2^K``, and one-line memory refusals before anything is allocated."""


import shutil

import jax
import numpy as np
import pytest
from test_cli import assert_one_line_error as _one_line_error
from test_cli import load_state, run, run_json

from jaxcorr import checkpoint, cli, memory, nn

TINY = ["--n", "4", "--m", "2^8", "--d", "4", "--quiet", "--init", "rows"]


def assert_one_line_error(rc, out, err, *words):
    _one_line_error(rc, out, err, *words)
    assert err.startswith("jaxcorr: error: "), err


@pytest.mark.parametrize("method", ["active", "dtree"])
def test_wide_run_is_the_eager_run(capsys, tmp_path, method):
    """Same losses, and the trained rows of A equal the eager run's rows; every other eager row is W(0)."""
    pe, pi = tmp_path / "eager.ckpt", tmp_path / "wide.ckpt"
    e = run_json(capsys, *TINY, "--method", method, "--steps", "6", "--wide", "off", "--save", str(pe))
    i = run_json(capsys, *TINY, "--method", method, "--steps", "6", "--wide", "on", "--save", str(pi))
    assert (e["wide"], i["wide"]) == (False, True)
    assert e["m"] == i["m"] == 256
    np.testing.assert_allclose(i["loss_initial"], e["loss_initial"], rtol=1e-6)
    np.testing.assert_allclose(i["loss_final"], e["loss_final"], rtol=1e-5)
    ck = checkpoint.restore(pi)
    assert ck.kind == "wide"
    model, full = ck.model, load_state(pe)["params"]
    assert i["n_active"] == model.n_active < 256
    idx = np.asarray(model.idx)
    np.testing.assert_allclose(np.asarray(model.W), np.asarray(full.W)[idx], rtol=1e-5, atol=1e-6)
    rest = np.setdiff1d(np.arange(256), idx)  # rows outside A never move: still nn.init's rows
    W0 = np.asarray(nn.init(jax.random.key(0), 256, 4).W)
    assert np.array_equal(np.asarray(full.W)[rest], W0[rest])


def test_wide_checkpoint_resume(capsys, tmp_path):
    """6 steps at once == 3 + 3 through a wide checkpoint (resume detects the kind)."""
    full, part = tmp_path / "full.ckpt", tmp_path / "part.ckpt"
    a = run_json(capsys, *TINY, "--steps", "6", "--wide", "on", "--save", str(full))
    run_json(capsys, *TINY, "--steps", "3", "--wide", "on", "--save", str(part))
    b = run_json(capsys, "--resume", str(part), "--save", str(part), "--steps", "3", "--quiet")
    assert b["wide"] is True and b["step_start"] == 3 and b["step_end"] == 6
    np.testing.assert_allclose(b["loss_final"], a["loss_final"], rtol=1e-5)
    x, y = checkpoint.restore(full), checkpoint.restore(part)
    assert x.step == y.step == 6 and x.kind == y.kind == "wide"
    assert np.array_equal(np.asarray(x.model.idx), np.asarray(y.model.idx))
    np.testing.assert_allclose(np.asarray(x.model.W), np.asarray(y.model.W), rtol=1e-5, atol=1e-6)
    rc, out, err = run(capsys, "--resume", str(part), "--steps", "0", "--wide", "off")
    assert_one_line_error(rc, out, err, "wide model", "--wide off")
    rc, out, err = run(capsys, "--resume", str(part), "--save", str(part), "--steps", "1", "--compare", "dense")
    assert_one_line_error(rc, out, err, "wide model", "--compare dense", "drop --compare")


def test_width_accepts_powers_of_two(capsys):
    assert cli.build_parser().parse_args(["train", "--m", "2^26"]).m == 2**26
    assert cli.build_parser().parse_args(["train", "--m", "2**5"]).m == 32
    assert cli.build_parser().parse_args(["train", "--m", "1000"]).m == 1000
    rc, out, err = run(capsys, "--m", "3^4")
    assert rc == 2 and "--m" in err and "2^K" in err and len(err.strip().splitlines()) == 1


def test_too_wide_is_one_line_exit_2(capsys):
    rc, out, err = run(capsys, "--m", "2^40", "--steps", "1", "--init", "rows")
    assert_one_line_error(rc, out, err, "--m 1099511627776 does not fit", "(wide model) needs about", "available",
                          "at most --m")


def test_dense_that_cannot_fit_is_refused_before_allocating(capsys, monkeypatch):
    monkeypatch.setattr(memory, "available", lambda device=None: (2**30, "test limit"))
    rc, out, err = run(capsys, "--m", "2^26", "--method", "dense", "--steps", "1", "--init", "rows")
    assert_one_line_error(rc, out, err, "--m 67108864 does not fit", "1.0 GiB is available", "at most --m",
                          "the wide model (method active) fits up to --m", "--method active")
    # auto's sparse methods go wide, whose estimates at 2^26 (about 2 GiB and more) are over 1 GiB too
    rc, out, err = run(capsys, "--m", "2^26", "--steps", "1", "--init", "rows")
    assert_one_line_error(rc, out, err, "--m 67108864 does not fit", "(wide model) needs about",
                          "1.0 GiB is available (test limit)", "at most --m")


def test_compare_dense_with_wide_is_refused(capsys):
    rc, out, err = run(capsys, *TINY, "--wide", "on", "--compare", "dense")
    assert_one_line_error(rc, out, err, "--compare dense", "--wide on")


def test_setup_progress_lines(capsys):
    rc, out, err = run(capsys, "--n", "4", "--m", "2^8", "--d", "4", "--steps", "2", "--wide", "on", "--init", "rows")
    assert rc == 0, err
    assert "set-up: 256/256 rows of W(0) drawn" in err and "active rows of 256" in err


def test_full_width_run_saves_compactly_and_resumes_either_way(capsys, tmp_path):
    """An eager (full-width) run's checkpoint holds only its active rows (megabytes, not m*d floats);
    resuming it holds all m rows again (bitwise the uninterrupted run for dense) or, with
    --wide on, only the held rows (the same run to float rounding)."""
    m = 4096
    args = ["--n", "4", "--m", str(m), "--d", "8", "--quiet", "--method", "dense", "--optimizer", "momentum",
            "--init", "rows"]
    full, part, lazy = tmp_path / "full.ckpt", tmp_path / "part.ckpt", tmp_path / "lazy.ckpt"
    a = run_json(capsys, *args, "--steps", "4", "--wide", "off", "--save", str(full))
    run_json(capsys, *args, "--steps", "2", "--wide", "off", "--save", str(part))
    meta = checkpoint.read_meta(part)
    assert meta["config"]["wide"]["full_width"] is True and checkpoint.kind(part) == "compact"
    n_held = meta["config"]["wide"]["n_active"]
    assert n_held < m / 8 and part.stat().st_size < m * (2 * 8 + 1) * 4 / 4  # W, a, momentum: 1/7 of them
    shutil.copy(part, lazy)
    b = run_json(capsys, "--resume", str(part), "--save", str(part), "--steps", "2", "--quiet")
    assert b["wide"] is False and b["step_end"] == 4
    ref, got = load_state(full), load_state(part)
    assert np.asarray(got["params"].W).tobytes() == np.asarray(ref["params"].W).tobytes()
    c = run_json(capsys, "--resume", str(lazy), "--save", str(lazy), "--steps", "2", "--wide", "on", "--quiet")
    assert c["wide"] is True and c["step_end"] == 4
    np.testing.assert_allclose(c["loss_final"], a["loss_final"], rtol=1e-5)
    np.testing.assert_allclose(np.asarray(load_state(lazy)["params"].W), np.asarray(ref["params"].W),
                               rtol=1e-5, atol=1e-6)


def test_sgd_run_checkpoints_its_coefficients_and_resumes(capsys, tmp_path):
    """A wide momentum run (n < d) checkpoints K (|A|, n) and its state instead of the rows
    (form "coefficients", smaller than the rows form); 3 + 3 steps through it equal 6 at once, and a
    checkpoint written from the callback mid-run (--save-every) holds the same rows as the end state."""
    args = ["--n", "4", "--m", "4096", "--d", "16", "--quiet", "--optimizer", "momentum", "--wide", "on",
            "--init", "rows"]
    full, part, every = tmp_path / "full.ckpt", tmp_path / "part.ckpt", tmp_path / "every.ckpt"
    a = run_json(capsys, *args, "--steps", "6", "--save", str(full))
    run_json(capsys, *args, "--steps", "3", "--save", str(part))
    meta = checkpoint.read_meta(part)["config"]["wide"]
    assert meta["form"] == "coefficients"
    k = meta["n_active"]
    assert part.stat().st_size < k * (2 * 16 + 2) * 4 * 0.6  # rows form: W, a, momentum (|A| (2d + 2))
    b = run_json(capsys, "--resume", str(part), "--save", str(part), "--steps", "3", "--quiet")
    assert b["wide"] is True and b["step_end"] == 6
    np.testing.assert_allclose(b["loss_final"], a["loss_final"], rtol=1e-6)
    x, y = checkpoint.restore(full), checkpoint.restore(part)
    assert x.model.coefficients is not None and y.step == 6
    np.testing.assert_allclose(np.asarray(y.model.W), np.asarray(x.model.W), rtol=1e-6, atol=1e-7)
    run_json(capsys, *args, "--steps", "6", "--save-every", "3", "--save", str(every))
    z = checkpoint.restore(every)
    assert z.step == 6 and checkpoint.read_meta(every)["config"]["wide"]["form"] == "coefficients"
    np.testing.assert_allclose(np.asarray(z.model.W), np.asarray(x.model.W), rtol=1e-6, atol=1e-7)


def test_wide_run_where_no_neuron_fires_warns_like_a_full_width_run(capsys, tmp_path):
    """|A| = 0 (b above every <w_r, x_i>): the model cannot move; the run ends with the warning a
    full-width run gives, not a shape error."""
    args = ["--n", "4", "--m", "4096", "--d", "8", "--b", "50", "--steps", "3", "--quiet", "--init", "rows"]
    w = run_json(capsys, *args, "--wide", "on")
    f = run_json(capsys, *args, "--wide", "off")
    assert w["wide"] is True and w["n_active"] == 0 and w["steps"] == 3
    assert w["loss_final"] == w["loss_initial"] == pytest.approx(f["loss_initial"], rel=1e-6)
    assert w["fire"]["union_max"] == 0 and w["ms_per_step"] is None
    assert any("no neuron fired" in x for x in w["warnings"]) and any("no neuron fired" in x for x in f["warnings"])
    rc, out, err = run(capsys, *args, "--wide", "on")
    assert rc == 0 and "warning: no neuron fired" in err and "n/a (no step ran)" in out
