"""`jaxcorr train --method auto` (the default), `--eval-data` and the mean loss (issue 24).

The oracle of WHICH method auto picks is the cost model itself (:func:`jaxcorr.cost.choose` on the
same sizes, row norms, optimizer and steps); the cases are chosen where its predicted per-step ratio
is wide (dense 20x faster at n = 1000, m = 2^10; the sparse methods 2x..20x faster at n = 8,
m = 2^15), so a recalibration does not flip them. The evaluation numbers are checked against
:func:`jaxcorr.evaluation.evaluate` on the saved model and against a numpy float64 forward pass.
"""

import json
import time

import jax
import numpy as np
import pytest
from test_cli import assert_one_line_error, load_state, run, run_json

from jaxcorr import cli, cost, data, errors, evaluation, methods, nn

TINY = ["--n", "4", "--m", "256", "--d", "4", "--init", "rows"]


def _oracle(n, m, d, steps, methods_=None, seed=0):
    """What cost.choose says for the CLI's synthetic data of these sizes (|A| counted on the data, as
    the CLI counts it: cost.sampled_active)."""
    X, _ = data.synthetic(seed, n, d)
    norms = np.linalg.norm(np.asarray(X, np.float64), axis=1)
    b = float(nn.default_threshold(m))
    return cost.choose(n, m, d, optimizer="sgd", steps=steps, b=b, x_norms=norms, dtype="float32", methods=methods_,
                       n_active=cost.sampled_active(X, m, b))


def _auto_line(err):
    lines = [s for s in err.splitlines() if s.startswith("jaxcorr: --method auto chose ")]
    assert len(lines) == 1, err
    return lines[0]


def _eval_file(tmp_path, n=12, d=4, seed=5, name="held.npz"):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    y = np.where(rng.normal(size=n) > 0, 1.0, -1.0)
    path = tmp_path / name
    np.savez(path, X=X, y=y)
    return path, X, y


def _numpy_eval(W, a, b, X, y):
    """f(x) = 1/sqrt(m) sum_r a_r relu(<w_r, x> - b) (Definition 2.1) in float64, and its figures."""
    W, a = np.asarray(W, np.float64), np.asarray(a, np.float64)
    f = np.maximum(np.asarray(X, np.float64) @ W.T - b, 0.0) @ a / np.sqrt(W.shape[0])
    e = f - np.asarray(y, np.float64)
    return 0.5 * e @ e, 0.5 * e @ e / len(y), e @ e / len(y), float(np.mean(f * y > 0))


# ------------------------------------------------------------------------------------- --method auto
def test_auto_is_the_cli_default_and_not_the_librarys():
    assert cli.DEFAULTS["method"] == "auto" and methods.DEFAULT == cli.DEFAULT_METHOD == "active"
    assert cli.build_parser().parse_args(["train"]).method is None  # resolved in config (resume keeps its own)


def test_auto_picks_dense_where_the_cost_model_says_many_points(capsys):
    n, m, d, steps = 1000, 2**10, 4, 2
    oracle = _oracle(n, m, d, steps)
    assert oracle.method == "dense", oracle.reason  # the regime: n far above m^(1/5)
    rc, out, err = run(capsys, "--n", str(n), "--m", str(m), "--d", str(d), "--steps", str(steps), "--json")
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    c = r["method_choice"]
    assert r["method"] == c["chosen"] == "dense" and c["requested"] == "auto"
    assert c["reason"].startswith(oracle.reason) and c["dense_expected_faster"] is False
    assert c["predicted_step_s"] == pytest.approx({k: p.step_s for k, p in oracle.predictions.items()})
    assert _auto_line(err) == "jaxcorr: --method auto chose dense: " + c["reason"].removeprefix("dense: ")
    assert "warning" not in err


def test_auto_picks_a_sparse_method_at_few_points_and_a_wide_m(capsys):
    n, m, d, steps = 8, 2**16, 32, 200  # (fewer steps: dense, whose compile is the shortest, wins in all)
    oracle = _oracle(n, m, d, steps)
    assert methods.get(oracle.method).sparse and not oracle.dense_expected_faster, oracle.reason
    argv = ["--n", str(n), "--m", str(m), "--d", str(d), "--steps", str(steps)]
    rc, out, err = run(capsys, *argv)
    assert rc == 0, err
    line = _auto_line(err)
    assert line.startswith(f"jaxcorr: --method auto chose {oracle.method}: predicted") and "vs dense" in line
    assert f"method      {oracle.method}, chosen by --method auto" in out  # the summary says it too
    assert f"done: {steps} steps of {oracle.method} " in out
    # the same method named: no warning, since dense is not predicted faster per step here
    r = run_json(capsys, *argv, "--method", oracle.method, "--quiet")
    assert r["method_choice"] == {"requested": oracle.method, "chosen": oracle.method,
                                  "reason": f"--method {oracle.method}", "dense_expected_faster": False}
    assert r["warnings"] == []


def test_a_sparse_method_where_dense_is_predicted_faster_is_warned_not_refused(capsys):
    X, _ = data.synthetic(0, 4, 4)
    norms = np.linalg.norm(np.asarray(X, np.float64), axis=1)
    b = float(nn.default_threshold(256))
    slower = cost.dense_expected_faster("active", n=4, m=256, d=4, optimizer="sgd", b=b, x_norms=norms,
                                        dtype="float32", n_active=cost.sampled_active(X, 256, b))
    rc, out, err = run(capsys, *TINY, "--steps", "2", "--method", "active", "--quiet")
    assert rc == 0, err
    said = [s for s in err.splitlines() if "dense GD is predicted faster per step" in s]
    assert len(said) == (1 if slower else 0), err
    if slower:
        assert said[0].startswith("jaxcorr: warning: --method active: ") and "--method dense" in said[0]
        r = run_json(capsys, *TINY, "--steps", "2", "--method", "active", "--quiet")
        assert r["method_choice"]["dense_expected_faster"] is True
        assert any("dense GD is predicted faster" in w for w in r["warnings"])
    rc, out, err = run(capsys, *TINY, "--steps", "2", "--method", "dense", "--quiet")
    assert rc == 0 and "predicted faster" not in err and "--method auto chose" not in err


def test_auto_without_dense_for_a_wide_model_and_for_compare_dense(capsys):
    sparse = [k for k in methods.names() if methods.get(k).sparse]
    oracle = _oracle(4, 256, 4, 1, methods_=sparse)
    r = run_json(capsys, *TINY, "--steps", "1", "--wide", "on", "--quiet")
    assert r["wide"] is True and r["method"] == oracle.method
    assert "dense" in r["method_choice"]["excluded"] and "dense" not in r["method_choice"]["candidates"]
    assert "dense is not a candidate" in r["method_choice"]["reason"]
    r = run_json(capsys, *TINY, "--steps", "1", "--compare", "dense", "--quiet")
    assert r["method"] == oracle.method and r["compare"]["method"] == "dense"
    assert "--compare dense" in r["method_choice"]["excluded"]["dense"]


def test_resume_keeps_the_checkpoints_method_unless_one_is_given(capsys, tmp_path):
    ck = tmp_path / "run.ckpt"
    assert run(capsys, *TINY, "--steps", "2", "--method", "dtree", "--save", str(ck), "--quiet")[0] == 0
    r = run_json(capsys, "--resume", str(ck), "--steps", "0", "--quiet")
    assert r["method"] == "dtree" and r["method_choice"]["requested"] is None
    rc, out, err = run(capsys, "--resume", str(ck), "--steps", "0", "--json", "--method", "auto")
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["method"] == _oracle(4, 256, 4, 0).method == r["method_choice"]["chosen"]
    assert "--method auto chose" in err


def test_auto_takes_the_next_fastest_when_the_memory_plan_refuses(monkeypatch):
    """The fastest candidate's memory plan refused: the choice is made again among the others, and
    when every one is refused the refusal naming the widest m that fits is raised."""
    args = cli.build_parser().parse_args(["train", *TINY])
    ask = dict(n=1000, m=2**10, d=4, optimizer="sgd", b=1.2, x_norms=[1.0] * 1000, dtype="float32")
    first = cost.choose(**ask, steps=2).method
    tried = []

    def plan_for(method, refuse=(first,)):
        tried.append(method)
        if method in refuse:
            raise errors.InsufficientMemoryError(f"{method} does not fit", largest=len(tried))
        return type("Plan", (), {"wide": False})()

    plan, info = cli.config._auto(args, plan_for, ask, kind=None)
    second = cost.choose(**ask, steps=2, methods=[k for k in methods.names() if k != first]).method
    assert tried == [first, second] and info["chosen"] == second
    assert f"{first} would not fit in memory" in info["reason"] and first in info["excluded"]
    tried.clear()
    with pytest.raises(errors.InsufficientMemoryError, match="does not fit") as e:
        cli.config._auto(args, lambda k: plan_for(k, refuse=methods.names()), ask, kind=None)
    assert sorted(tried) == sorted(methods.names())
    # the widest of the sparse methods' refusals (dense's names a sparse method as the way out)
    assert e.value.largest == max(i + 1 for i, k in enumerate(tried) if methods.get(k).sparse)


# -------------------------------------------------------------------------------------- --eval-data
def test_eval_data_equals_evaluate_on_the_final_model_and_numpy(capsys, tmp_path, monkeypatch):
    path, Xe, ye = _eval_file(tmp_path)
    ck = tmp_path / "m.ckpt"
    monkeypatch.setattr(cli.run, "initial_chunk", lambda *a, **k: 1)  # a progress line per step
    monkeypatch.setattr(cli.run.ChunkTimer, "observe", lambda *a, **k: None)
    rc, out, err = run(capsys, *TINY, "--method", "active", "--b", "1.2", "--steps", "5", "--eval-data", str(path),
                       "--save", str(ck), "--json")
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    e = r["eval"]
    model = load_state(ck)["params"]
    ref = evaluation.evaluate(model, Xe.astype(np.float32), ye.astype(np.float32), b=r["b"])
    assert (e["n"], e["step"], e["data"]) == (12, 5, str(path))
    for k in ("loss_sum", "loss_mean", "mse", "accuracy"):
        assert e[k] == pytest.approx(getattr(ref, k), rel=1e-6, abs=1e-9), k
    loss_sum, loss_mean, mse, acc = _numpy_eval(model.W, model.a, r["b"], Xe, ye)
    assert e["loss_sum"] == pytest.approx(loss_sum, rel=1e-4) and e["loss_mean"] == pytest.approx(loss_mean, rel=1e-4)
    assert e["mse"] == pytest.approx(mse, rel=1e-4) and e["accuracy"] == acc
    # at each progress line: the steps 1..5, the last one the returned model
    lines = [s for s in err.splitlines() if "step " in s and "eval L/n = " in s]
    assert len(lines) == 5, err
    assert [h["step"] for h in e["history"]] == [1, 2, 3, 4, 5]
    assert e["history"][-1]["loss_mean"] == pytest.approx(ref.loss_mean, rel=1e-6)
    assert f"eval L/n = {e['history'][0]['loss_mean']:.6g}, accuracy" in lines[0]


def test_eval_time_is_kept_out_of_the_step_times(capsys, tmp_path, monkeypatch):
    path, _, _ = _eval_file(tmp_path)
    slow = cli._library.evaluate

    def evaluate(*a, **k):
        time.sleep(0.3)
        return slow(*a, **k)

    monkeypatch.setattr(cli._library, "evaluate", evaluate)
    monkeypatch.setattr(cli.run, "initial_chunk", lambda *a, **k: 1)
    monkeypatch.setattr(cli.run.ChunkTimer, "observe", lambda *a, **k: None)
    r = run_json(capsys, *TINY, "--method", "dense", "--steps", "4", "--eval-data", str(path))
    e = r["eval"]
    assert len(e["history"]) == 4 and e["eval_s"] >= 5 * 0.3  # 4 progress lines, then the returned model
    assert r["ms_per_step"] < 300  # a step is not charged the 0.3 s of an evaluation
    assert r["wall_s"] + e["eval_s"] <= r["process_s"] + 0.05  # the training time holds none of it
    assert r["setup_s"] + r["wall_s"] + e["eval_s"] <= r["process_s"] + 0.05  # nor the set-up figure


def test_eval_data_is_normalised_with_normalize_and_read_from_csv(capsys, tmp_path):
    rng = np.random.default_rng(2)
    Xt, yt = 3 * rng.normal(size=(4, 4)), rng.uniform(-1, 1, 4)
    train_path = tmp_path / "t.npz"
    np.savez(train_path, X=Xt, y=yt)
    Xe, ye = 5 * rng.normal(size=(6, 4)), np.array([1.0, -1, 1, 1, -1, -1])
    held = tmp_path / "h.csv"
    np.savetxt(held, np.column_stack([Xe, ye]), delimiter=",", header="a,b,c,d,y", comments="")
    ck = tmp_path / "n.ckpt"
    rc, out, err = run(capsys, "--data", str(train_path), "--normalize", "--m", "256", "--steps", "2", "--method",
                       "dense", "--eval-data", str(held), "--save", str(ck), "--json")
    assert rc == 0, err
    assert "eval data: skipped the header row" in err
    e = json.loads(out.strip().splitlines()[-1])["eval"]
    model = load_state(ck)["params"]
    unit = Xe / np.linalg.norm(Xe, axis=1, keepdims=True)
    assert e["loss_sum"] == pytest.approx(_numpy_eval(model.W, model.a, float(nn.default_threshold(256)), unit, ye)[0],
                                          rel=1e-4)


def test_eval_data_with_other_labels_has_no_accuracy_and_is_in_the_summary(capsys, tmp_path):
    rng = np.random.default_rng(3)
    X = rng.normal(size=(5, 4))
    path = tmp_path / "r.npz"
    np.savez(path, X=X / np.linalg.norm(X, axis=1, keepdims=True), y=rng.uniform(-1, 1, 5))
    rc, out, err = run(capsys, *TINY, "--method", "dense", "--steps", "2", "--eval-data", str(path), "--quiet")
    assert rc == 0, err
    (line,) = [s for s in out.splitlines() if s.startswith("eval ")]
    assert f"{path} (n = 5): mean loss" in line and "mse" in line and "accuracy" not in line
    r = run_json(capsys, *TINY, "--method", "dense", "--steps", "2", "--eval-data", str(path), "--quiet")
    assert r["eval"]["accuracy"] is None and r["eval"]["mse"] == pytest.approx(2 * r["eval"]["loss_mean"])


@pytest.mark.parametrize("case, words", [
    ("d", ["--eval-data", "d=5", "d=4"]),
    ("missing", ["--eval-data", "does not exist"]),
    ("ragged", ["--eval-data", "columns"]),
])
def test_bad_eval_data_is_one_line_exit_2(capsys, tmp_path, case, words):
    path = tmp_path / ("e.csv" if case == "ragged" else "e.npz")
    if case == "d":
        np.savez(path, X=np.ones((3, 5)), y=np.ones(3))
    elif case == "ragged":
        path.write_text("1,2,3,4,5\n1,2,3\n")
    rc, out, err = run(capsys, *TINY, "--method", "dense", "--steps", "1", "--eval-data", str(path))
    assert_one_line_error(rc, out, err, *words)
    assert "set-up" not in err  # refused before training


# ----------------------------------------------------------------------------------------- mean loss
def test_mean_loss_beside_the_sum(capsys, monkeypatch):
    monkeypatch.setattr(cli.run, "initial_chunk", lambda *a, **k: 1)
    monkeypatch.setattr(cli.run.ChunkTimer, "observe", lambda *a, **k: None)
    rc, out, err = run(capsys, *TINY, "--method", "dense", "--steps", "3", "--json")
    assert rc == 0, err
    r = json.loads(out.strip().splitlines()[-1])
    assert r["loss_final_mean"] == r["loss_final"] / 4 and r["loss_initial_mean"] == r["loss_initial"] / 4
    X, y = data.synthetic(0, 4, 4)
    p0 = nn.init(jax.random.key(0), 256, 4)
    assert r["loss_initial_mean"] == pytest.approx(float(nn.loss(p0, X, y, r["b"])) / 4, rel=1e-6)
    step1 = [s for s in err.splitlines() if "step 1/3" in s]
    assert step1 and f"L/n = {r['loss_initial_mean']:.4g}" in step1[0], err  # L(W(0)) / n
    rc, out, err = run(capsys, *TINY, "--method", "dense", "--steps", "3", "--quiet")
    assert f"mean loss   {r['loss_initial_mean']:.6g} -> {r['loss_final_mean']:.6g}   (the loss / n, n = 4" in out
