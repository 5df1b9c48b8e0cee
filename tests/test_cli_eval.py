"""``jaxcorr predict`` and ``jaxcorr evaluate`` on every checkpoint form, against a numpy float64
forward pass of Definition 2.1 (f(x) = 1/sqrt(m) sum_r a_r max(<w_r, x> - b, 0)) on the model's
full W, and against jaxcorr.evaluation on the restored model."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from test_cli import assert_one_line_error

from jaxcorr import checkpoint, cli, data, datafiles, evaluation, nn, train, wide
from jaxcorr.checkpoint import wide as wide_form

M, N, D = 256, 6, 4


def _oracle(W, a, X, b):
    W, a, X = (np.asarray(v, np.float64) for v in (W, a, X))
    return np.maximum(X @ W.T - b, 0.0) @ a / np.sqrt(W.shape[0])


def _full_weights(path):
    """(W, a, b) of the checkpoint at ``path`` as all m rows (a wide or compact model materialized
    under its recorded PRNG settings): the oracle's input, read independently of load_model."""
    r = checkpoint.restore(path, as_wide=True)
    if r.kind == "full":
        return np.asarray(r.model.W), np.asarray(r.model.a), float(r.config.get("b", nn.default_threshold(M)))
    with wide_form.drawing_as(wide_form.wide_meta(r.config), path):
        p = wide.materialize(r.model)
    return np.asarray(p.W), np.asarray(p.a), float(r.model.b)


def _cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _json(capsys, *argv):
    rc, out, err = _cli(capsys, *argv, "--json")
    assert rc == 0, err
    return json.loads(out.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Data files and one checkpoint of each form: full (a config b), compact (`jaxcorr train
    --normalize`, adam), wide rows and coefficients (one momentum run, n < d)."""
    tmp = tmp_path_factory.mktemp("eval")
    X, y = data.synthetic(seed=0, n=N, d=D)
    X, y = 3.0 * np.asarray(X), np.sign(np.asarray(y))  # rows of norm 3: --normalize matters
    Xn, yn = (np.asarray(v) for v in data.synthetic(seed=1, n=5, d=D))
    f = {"train": tmp / "train.csv", "new_csv": tmp / "new.csv", "new_npz": tmp / "new.npz",
         "lab_npz": tmp / "lab.npz", "lab_csv": tmp / "lab.csv", "X": Xn, "y": np.sign(yn), "yr": yn}
    np.savetxt(f["train"], np.column_stack([X, y]), delimiter=",", header="a,b,c,d,y", comments="")
    np.savetxt(f["new_csv"], Xn, delimiter=",")
    np.savez(f["new_npz"], X=Xn)
    np.savez(f["lab_npz"], X=Xn, y=np.sign(yn))
    np.savetxt(f["lab_csv"], np.column_stack([Xn, yn]), delimiter=",")
    f["compact"] = tmp / "compact.ckpt"  # the user's path: jaxcorr train --save (adam state, --normalize)
    assert cli.main(["train", "--data", str(f["train"]), "--m", str(M), "--steps", "4", "--quiet", "--init", "rows",
                     "--optimizer", "adam", "--normalize", "--save", str(f["compact"])]) == 0
    assert checkpoint.kind(f["compact"]) == "compact"
    f["full"] = tmp / "full.ckpt"
    p = nn.init(jax.random.key(5), M, D)
    p = nn.Params(W=p.W + 0.1, a=p.a)
    checkpoint.save(f["full"], p, X=X, y=y, config={"b": 0.25}, form="full")
    Xc, yc = data.synthetic(seed=2, n=3, d=D)
    model, _ = wide.setup(jax.random.key(1), M, D, Xc)
    model, _ = wide.fit(model, Xc, yc, steps=3, optimizer=train.sgd(0.5, momentum=0.9))
    for form in ("rows", "coefficients"):
        f[form] = tmp / f"{form}.ckpt"
        assert checkpoint.save(f[form], model, X=Xc, y=yc, form=form) == form
    return f


FORMS = ("full", "compact", "rows", "coefficients")
NORMALIZED = ("compact",)  # trained with --normalize


def _kind(files, form):
    return {"full": "full", "compact": "compact"}.get(form, "wide")


@pytest.mark.parametrize("form", FORMS)
def test_predict_is_the_models_forward_pass(capsys, files, form):
    """Printed outputs: bitwise evaluation.predict on the loaded model, and the float64 oracle on its
    full W to float32 rounding; a compact checkpoint of a --normalize run normalises by default."""
    path = str(files[form])
    rc, out, err = _cli(capsys, "predict", path, "--data", str(files["new_csv"]))
    assert rc == 0, err
    got = np.asarray([np.float32(v) for v in out.split()])
    X = datafiles.unit_rows(files["X"].astype(np.float32)) if form in NORMALIZED else files["X"]
    assert ("trained with --normalize" in err) == (form in NORMALIZED)
    ref = np.asarray(evaluation.predict(path, X))
    assert got.tobytes() == ref.astype(np.float32).tobytes()
    W, a, b = _full_weights(path)
    np.testing.assert_allclose(got, _oracle(W, a, X, b), rtol=1e-5, atol=1e-6)
    assert np.any(got != 0)  # the oracle is not vacuous: some neuron fires
    if form == "compact":  # the held rows streamed over m = all m rows expanded (restore with the optimizer)
        cfg = checkpoint.read_meta(path)["config"]
        r = checkpoint.restore(path, optimizer=cli._make_optimizer(cfg["optimizer"], cfg["lr"]))
        np.testing.assert_allclose(got, np.asarray(evaluation.predict(r.model, X, b=cfg["b"])), rtol=1e-6, atol=1e-7)
    rec = _json(capsys, "predict", path, "--data", str(files["new_npz"]))
    assert rec["kind"] == _kind(files, form) and rec["n"] == 5 and rec["d"] == D and rec["m"] == M
    assert rec["targets"] is False and rec["normalize"] == (form in NORMALIZED)
    assert np.asarray(rec["predictions"], np.float32).tobytes() == got.tobytes()


def test_no_normalize_overrides_the_checkpoint(capsys, files):
    path = str(files["compact"])
    rc, out, err = _cli(capsys, "predict", path, "--data", str(files["new_csv"]), "--no-normalize")
    assert rc == 0 and "--no-normalize keeps" in err
    W, a, b = _full_weights(path)
    np.testing.assert_allclose(np.asarray(out.split(), np.float64), _oracle(W, a, files["X"], b), rtol=1e-5,
                               atol=1e-6)
    rec = _json(capsys, "predict", str(files["full"]), "--data", str(files["new_csv"]), "--normalize")
    Xu = datafiles.unit_rows(files["X"].astype(np.float32))
    W, a, b = _full_weights(str(files["full"]))
    assert b == 0.25 and rec["b"] == 0.25  # the threshold the config records, not sqrt(0.4 ln m)
    np.testing.assert_allclose(rec["predictions"], _oracle(W, a, Xu, b), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("form", FORMS)
def test_evaluate_matches_a_numpy_oracle(capsys, files, form):
    path = str(files[form])
    W, a, b = _full_weights(path)
    X = datafiles.unit_rows(files["X"].astype(np.float32)) if form in NORMALIZED else files["X"]
    for data_file, y in (("lab_npz", files["y"]), ("lab_csv", files["yr"])):
        rec = _json(capsys, "evaluate", path, "--data", str(files[data_file]))
        e = _oracle(W, a, X, b) - np.asarray(y, np.float64)
        assert rec["n"] == 5 and rec["targets"] is True and rec["kind"] == _kind(files, form)
        assert rec["loss_sum"] == pytest.approx(0.5 * e @ e, rel=1e-5)
        assert rec["loss_mean"] == pytest.approx(0.5 * e @ e / 5, rel=1e-5)
        assert rec["mse"] == pytest.approx(e @ e / 5, rel=1e-5)
        if data_file == "lab_npz":  # +-1 labels
            assert rec["accuracy"] == pytest.approx(np.mean((e + y) * y > 0))
        else:
            assert rec["accuracy"] is None
    # the same through one Python call
    one = evaluation.evaluate(path, X, files["y"].astype(np.float32))
    assert one.loss_sum == pytest.approx(_json(capsys, "evaluate", path, "--data", str(files["lab_npz"]))["loss_sum"])


def test_evaluate_summary_names_every_number(capsys, files):
    rc, out, err = _cli(capsys, "evaluate", str(files["rows"]), "--data", str(files["lab_npz"]))
    assert rc == 0, err
    for word in ("n ", "loss L = 1/2 sum (f - y)^2", "Definition 2.1", "mean loss L / n", "MSE", "accuracy",
                 "wide checkpoint", "step 0"):
        assert word in out, out


@pytest.mark.parametrize("suffix", [".csv", ".npz", ".json"])
def test_out_formats_round_trip(capsys, files, tmp_path, suffix):
    path, target = str(files["rows"]), tmp_path / f"p{suffix}"
    rc, out, err = _cli(capsys, "predict", path, "--data", str(files["new_csv"]), "--out", str(target))
    assert rc == 0 and f"wrote 5 outputs to {target}" in out, err
    ref = np.asarray(evaluation.predict(path, files["X"]))
    printed = _cli(capsys, "predict", path, "--data", str(files["new_csv"]))[1]
    if suffix == ".csv":
        lines = target.read_text().splitlines()
        assert lines[0] == "prediction" and lines[1:] == printed.split()  # the digits stdout prints
        assert max(len(v) for v in lines[1:]) <= 15  # the shortest float32 decimals, not float64's
        got = np.asarray([np.float32(v) for v in lines[1:]])
    elif suffix == ".npz":
        with np.load(target) as z:
            got = z["predictions"]
        assert got.dtype == ref.dtype
    else:
        got = np.asarray(json.loads(target.read_text())["predictions"], np.float32)
    assert got.tobytes() == ref.tobytes()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


def test_float64_checkpoint(capsys, tmp_path):
    with jax.enable_x64(True):
        X, y = data.synthetic(seed=3, n=4, d=3, dtype=np.float64)
        p = nn.init(jax.random.key(0), 64, 3, dtype=np.float64)
        path = tmp_path / "x64.ckpt"
        checkpoint.save(path, p, X=X, y=y, config={"b": 0.1})
        np.savez(tmp_path / "x.npz", X=np.asarray(X), y=np.asarray(y))
        rec = _json(capsys, "evaluate", str(path), "--data", str(tmp_path / "x.npz"))
        pred = _json(capsys, "predict", str(path), "--data", str(tmp_path / "x.npz"))
    f = _oracle(p.W, p.a, X, 0.1)
    np.testing.assert_allclose(pred["predictions"], f, rtol=1e-12, atol=1e-14)
    e = f - np.asarray(y)
    assert rec["loss_sum"] == pytest.approx(0.5 * e @ e, rel=1e-12)


def test_inputs_without_targets(tmp_path):
    """datafiles.load_inputs: an .npz with X alone, a CSV of d columns (d = 1 too) is X alone."""
    np.savetxt(tmp_path / "one.csv", np.arange(3.0)[:, None])
    X, y = datafiles.load_inputs(tmp_path / "one.csv", d=1)
    assert X.shape == (3, 1) and y is None
    X, y = datafiles.load_inputs(tmp_path / "one.csv")
    assert X.shape == (3, 1) and y is None
    np.savetxt(tmp_path / "two.csv", np.ones((3, 2)), delimiter=",")
    X, y = datafiles.load_inputs(tmp_path / "two.csv", d=1)
    assert X.shape == (3, 1) and y.shape == (3,)
    np.savez(tmp_path / "x.npz", X=np.ones((2, 5)))
    X, y = datafiles.load_inputs(tmp_path / "x.npz", d=5)
    assert X.shape == (2, 5) and y is None


def _bad_files(files, tmp_path):
    (tmp_path / "nan.csv").write_text("0.1,0.2,0.3,nan\n0.1,0.2,0.3,0.4\n")
    np.savetxt(tmp_path / "three.csv", np.ones((2, 3)), delimiter=",")
    np.savez(tmp_path / "wide.npz", X=np.ones((2, 7)))
    np.savez(tmp_path / "nox.npz", Z=np.ones((2, 4)))
    damaged = tmp_path / "damaged.ckpt"
    damaged.write_bytes(files["full"].read_bytes()[:-100])
    return {"nan": tmp_path / "nan.csv", "three": tmp_path / "three.csv", "wide": tmp_path / "wide.npz",
            "nox": tmp_path / "nox.npz", "damaged": damaged, "missing": tmp_path / "missing.csv",
            "nodir": tmp_path / "no" / "p.csv", "txt": tmp_path / "p.txt"}


BAD = [
    (["predict", "{missing}", "--data", "{new_csv}"], ["missing.csv", "does not exist"]),
    (["predict", "{new_csv}", "--data", "{new_csv}"], ["new.csv", "corrupted"]),
    (["predict", "{lab_npz}", "--data", "{new_csv}"], ["lab.npz", "not a jaxcorr checkpoint"]),
    (["evaluate", "{damaged}", "--data", "{lab_npz}"], ["damaged.ckpt", "corrupted or truncated"]),
    (["predict", "{full}", "--data", "{missing}"], ["missing.csv", "does not exist"]),
    (["predict", "{full}", "--data", "{three}"], ["three.csv", "3 columns", "d=4"]),
    (["evaluate", "{rows}", "--data", "{wide}"], ["wide.npz", "7 columns", "d=4"]),
    (["predict", "{full}", "--data", "{nox}"], ["nox.npz", "no array X"]),
    (["predict", "{compact}", "--data", "{nan}"], ["nan.csv", "NaN or infinite"]),
    (["evaluate", "{full}", "--data", "{new_csv}"], ["new.csv", "no targets"]),
    (["predict", "{full}", "--data", "{new_csv}", "--out", "{txt}"], ["--out", "unknown format '.txt'"]),
    (["predict", "{full}", "--data", "{new_csv}", "--out", "{nodir}"], ["--out", "does not exist"]),
    (["predict", "{full}", "--data", "{new_csv}", "--out", "{new_csv}"], ["--out", "is the data file"]),
    (["predict", "{full}", "--data", "{new_csv}", "--out", "{full}"], ["--out", "unknown format '.ckpt'"]),
    (["predict", "{full}"], ["jaxcorr predict: error", "--data"]),
    (["evaluate"], ["jaxcorr evaluate: error", "CHECKPOINT"]),
]


@pytest.mark.parametrize("argv,words", BAD, ids=[" ".join(a[:1] + a[2:]) for a, _ in BAD])
def test_bad_input_is_one_line_exit_2(capsys, files, tmp_path, argv, words):
    names = {k: v for k, v in files.items() if not isinstance(v, np.ndarray)} | _bad_files(files, tmp_path)
    argv = [a.format(**names) for a in argv]
    rc, out, err = _cli(capsys, *argv)
    assert_one_line_error(rc, out, err, *words)
    assert not (tmp_path / "p.txt").exists()


def test_outputs_that_overflow_are_refused(capsys, files, tmp_path):
    np.savez(tmp_path / "big.npz", X=np.full((2, D), 3e38, np.float32))
    rc, out, err = _cli(capsys, "predict", str(files["full"]), "--data", str(tmp_path / "big.npz"))
    assert_one_line_error(rc, out, err, "not finite", "2 of 2")
    np.savez(tmp_path / "big.npz", X=np.full((2, D), 3e38, np.float32), y=np.ones(2, np.float32))
    rc, out, err = _cli(capsys, "evaluate", str(files["full"]), "--data", str(tmp_path / "big.npz"))
    assert_one_line_error(rc, out, err, "not finite", "big.npz")
