"""`jaxcorr train --init {span,rows}`: W(0) by its key and the data's basis (the default) or nn.init rows.

Every run is checked against an independent oracle: the library called directly
(:func:`jaxcorr.span_init.build` + :func:`jaxcorr.span_init.fit` for span, :func:`jaxcorr.train.fit`
on :func:`jaxcorr.nn.init` for rows, ``train.fit(method="dense")`` on the materialised span W(0)).
The CLI's loss history is read with a spy on :func:`jaxcorr.cli.report.result`.
"""

import json

import jax
import numpy as np
import pytest
from test_cli import run, run_json

from jaxcorr import checkpoint, cli, data, evaluation, nn, optimizers, span_init, train
from jaxcorr.cli import _library, report
from jaxcorr.cli import args as cli_args

N, M, D = 4, 2**12, 8
SMALL = ["--n", str(N), "--m", "2^12", "--d", str(D), "--quiet"]


@pytest.fixture
def spy(monkeypatch):
    """The History each run reports (``report.result``'s argument)."""
    seen = []
    real = report.result

    def result(run, hist, *args, **kwargs):
        seen.append(hist)
        return real(run, hist, *args, **kwargs)

    monkeypatch.setattr(report, "result", result)
    return seen


def one_line_error(capsys, *argv, words=()):
    rc, out, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert rc == 2 and out == "" and len(lines) == 1 and lines[0].startswith("jaxcorr: error:"), (rc, err)
    for w in words:
        assert w in lines[0], lines[0]


def problem(seed=0):
    X, y = data.synthetic(seed, N, D)
    return np.asarray(X), np.asarray(y), float(nn.default_threshold(M))


def oracle(steps, method, optimizer="sgd", seed=0):
    """span_init directly: build(key(seed), X, m, b), then fit."""
    X, y, b = problem(seed)
    spec, act = span_init.build(jax.random.key(seed), X, M, b)
    opt = cli._make_optimizer(optimizer, optimizers.default_learning_rate(optimizer))
    trained, hist = span_init.fit(spec, act, X, y, steps=steps, method=method, optimizer=opt, b=b)
    return spec, act, trained, hist


def trained_rows(path):
    r = checkpoint.restore(path)
    return r, np.asarray(r.model.trained.trained_rows(r.model.spec, r.model.active, r.model.X).W)


def test_default_is_span_and_equals_span_init_fit(capsys, spy, tmp_path):
    """No --init, --method auto: a span run, said in --json, its checkpoint's config and form; its
    losses and trained rows those of span_init.fit on span_init.build(key(seed), X, m, b)."""
    path = tmp_path / "a.ckpt"
    # (--method active: at m = 2^12 and 5 steps auto picks dense, whose compile is the shortest; the
    # default --method auto is tested in tests/test_cli_auto.py)
    r = run_json(capsys, *SMALL, "--steps", "5", "--method", "active", "--save", str(path))
    assert r["init"] == "span" and r["wide"] is False and r["method_choice"]["requested"] == "active"
    spec, act, trained, hist = oracle(5, r["method"])
    assert r["n_active"] == act.n_active and r["init_setup"]["n_active"] == act.n_active
    np.testing.assert_allclose(spy[-1].loss, hist.loss, rtol=1e-6)
    ck, W = trained_rows(path)
    assert checkpoint.kind(path) == "span" and ck.init == "span" and ck.config["init"] == "span" and ck.step == 5
    np.testing.assert_array_equal(ck.model.active.idx, act.idx)
    np.testing.assert_allclose(W, np.asarray(trained.trained_rows(spec, act, ck.model.X).W), rtol=0, atol=1e-6)
    # the final loss (from K, no d-dimensional row) is the restored model's, by evaluation's streamed predict
    X, y, b = problem()
    assert r["loss_final"] == pytest.approx(evaluation.evaluate(ck.model, X, y).loss_sum, rel=1e-5)


def test_init_rows_is_nn_init(capsys, spy):
    """--init rows: today's network, train.fit on nn.init(key(seed)) (bit for bit: the same call)."""
    r = run_json(capsys, *SMALL, "--init", "rows", "--method", "active", "--steps", "5")
    assert r["init"] == "rows"
    X, y, b = problem()
    _, hist = train.fit(nn.init(jax.random.key(0), M, D), X, y, steps=5, method="active", b=b,
                        optimizer=cli._make_optimizer("sgd", 1.0))
    np.testing.assert_allclose(spy[-1].loss, hist.loss, rtol=1e-6)


def test_dense_under_span_trains_the_materialised_w0(capsys, spy, tmp_path):
    """--method dense under span: train.fit dense on SpanModel(spec, A, None, X).params(), saved in the
    full form; the sparse span run follows the same losses to float rounding."""
    path = tmp_path / "d.ckpt"
    r = run_json(capsys, *SMALL, "--method", "dense", "--steps", "5", "--save", str(path))
    assert r["init"] == "span" and r["method"] == "dense"
    spec, act, _, sparse = oracle(5, "active")
    X, y, b = problem()
    W0 = span_init.SpanModel(spec, act, None, X).params()
    p, hist = train.fit(W0, X, y, steps=5, method="dense", b=b, optimizer=cli._make_optimizer("sgd", 1.0))
    np.testing.assert_array_equal(spy[-1].loss, hist.loss)
    np.testing.assert_allclose(hist.loss, sparse.loss, rtol=1e-5)
    ck = checkpoint.restore(path)
    assert ck.kind == "full" and ck.config["init"] == "span"
    np.testing.assert_array_equal(np.asarray(ck.model.W), np.asarray(p.W))


def test_compare_dense_from_the_same_w0(capsys):
    r = run_json(capsys, *SMALL, "--method", "active", "--steps", "5", "--compare", "dense")
    c = r["compare"]
    assert c["method"] == "dense" and c["max_loss_diff_rel"] < 1e-5 and c["max_weight_diff"] < 1e-5


@pytest.mark.parametrize("optimizer", ["momentum", "adam"])  # the span path (K) and the row path (rows of A)
def test_resume_equals_uninterrupted(capsys, spy, tmp_path, optimizer):
    """6 steps at once == 3, then --resume 3 more (span form both times), with --save-every saves
    that hold the state after their chunk: bit for bit / 1e-6 in float32."""
    full, part = tmp_path / "full.ckpt", tmp_path / "part.ckpt"
    base = [*SMALL, "--method", "active", "--optimizer", optimizer]
    run_json(capsys, *base, "--steps", "6", "--save", str(full))
    run_json(capsys, *base, "--steps", "3", "--save", str(part))
    r = run_json(capsys, "--resume", str(part), "--save", str(part), "--steps", "3", "--quiet")
    assert r["init"] == "span" and r["step_start"] == 3 and r["step_end"] == 6
    a, Wa = trained_rows(full)
    b, Wb = trained_rows(part)
    assert a.step == b.step == 6 and a.model.trained.path == b.model.trained.path
    np.testing.assert_allclose(Wb, Wa, rtol=0, atol=1e-6)
    for x, y in zip(jax.tree_util.tree_leaves(a.opt_state), jax.tree_util.tree_leaves(b.opt_state)):
        np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=0, atol=1e-6)
    _, _, _, hist = oracle(6, "active", optimizer)
    np.testing.assert_allclose(np.concatenate([spy[-2].loss, spy[-1].loss]), hist.loss, rtol=1e-5)


def test_save_every_saves_the_state_after_its_chunk(capsys, monkeypatch, tmp_path):
    saved = {}
    real = _library.save

    def save(path, model, **kw):
        saved[kw["step"]] = np.asarray(model.trained.trained_rows(model.spec, model.active, model.X).W)
        return real(path, model, **kw)

    monkeypatch.setattr(_library, "save", save)
    run_json(capsys, *SMALL, "--method", "active", "--optimizer", "momentum", "--steps", "4", "--save",
             str(tmp_path / "e.ckpt"), "--save-every", "2")
    assert sorted(saved) == [2, 4]
    spec, act, tr, _ = oracle(2, "active", "momentum")
    X = problem()[0]
    np.testing.assert_allclose(saved[2], np.asarray(tr.trained_rows(spec, act, X).W), rtol=0, atol=1e-6)


def test_predict_and_evaluate_on_a_span_checkpoint(capsys, tmp_path):
    path = tmp_path / "p.ckpt"
    run_json(capsys, *SMALL, "--method", "active", "--steps", "3", "--save", str(path))
    Xn, yn = data.synthetic(7, 5, D)
    file = tmp_path / "new.npz"
    np.savez(file, X=np.asarray(Xn), y=np.asarray(yn))
    want = np.asarray(evaluation.predict(checkpoint.restore(path).model, np.asarray(Xn)), np.float64)
    r = run_json(capsys, "--resume", str(path), "--steps", "0", "--quiet")  # fire sets of the trained rows
    X, y, b = problem()
    fired = X.astype(np.float64) @ np.asarray(checkpoint.restore(path).model.params().W, np.float64).T > b
    assert (r["fire"]["max"], r["fire"]["union_max"]) == (fired.sum(1).max(), fired.any(0).sum())
    assert r["loss_final"] == pytest.approx(evaluation.evaluate(checkpoint.restore(path).model, X, y).loss_sum,
                                            rel=1e-5)
    assert cli.main(["predict", str(path), "--data", str(file), "--json"]) == 0
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["predictions"]
    np.testing.assert_allclose(got, want, rtol=1e-6)
    assert cli.main(["evaluate", str(path), "--data", str(file), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    np.testing.assert_allclose(ev["loss_sum"], 0.5 * np.sum((want - np.asarray(yn, np.float64)) ** 2), rtol=1e-6)


def test_bad_combinations_one_line(capsys, tmp_path):
    span_ck, rows_ck = tmp_path / "s.ckpt", tmp_path / "r.ckpt"
    run_json(capsys, *SMALL, "--method", "active", "--steps", "1", "--save", str(span_ck))
    run_json(capsys, *SMALL, "--init", "rows", "--method", "active", "--steps", "1", "--save", str(rows_ck))
    assert checkpoint.read_meta(rows_ck)["config"]["init"] == "rows"
    one_line_error(capsys, "--resume", str(span_ck), "--init", "rows", "--steps", "0", words=("--init span",
                                                                                            "--init rows"))
    one_line_error(capsys, "--resume", str(rows_ck), "--init", "span", "--steps", "0", words=("--init rows",))
    one_line_error(capsys, "--resume", str(span_ck), "--save", str(span_ck), "--method", "dense",
                   words=("span-defined", "sparse method"))
    one_line_error(capsys, "--resume", str(span_ck), "--save", str(span_ck), "--compare", "dense",
                   words=("drop --compare",))
    one_line_error(capsys, *SMALL, "--wide", "on", words=("--wide on", "--init rows"))
    one_line_error(capsys, *SMALL, "--method", "active", "--fallback", "dense", words=("--fallback dense",
                                                                                       "--init rows"))
    one_line_error(capsys, "--m", "2^25", "--method", "dense", words=("2^24", "--init rows", "sparse"))
    one_line_error(capsys, "--m", "2^25", "--method", "active", "--compare", "dense", words=("2^24", "--compare"))
    # several processes are no bad combination (tests/test_multiprocess.py runs them)
    cli_args.check_options(cli.build_parser().parse_args(["train", *SMALL, "--init", "span", "--coordinator",
                                                      "127.0.0.1:1", "--num-processes", "2", "--process-id", "0"]))
    assert _library.MAX_MATERIALIZE == span_init._MAX_MATERIALIZE


def test_auto_under_span_drops_dense_past_materialisable_widths():
    """--method auto under span: dense is a candidate only at m <= 2^24 (materialised W(0))."""
    from jaxcorr.cli import config

    n = 1000  # where the cost model picks dense at m = 2^25 (|A| counted on the data: cost.sampled_active)
    args = cli.build_parser().parse_args(["train", "--m", "2^25", "--n", str(n), "--d", "8"])
    cfg, kind = config._resolve_config(args)
    cfg.init, cfg.n, cfg.d, cfg.b, cfg.lr = "span", n, 8, float(nn.default_threshold(2**25)), 1.0
    X = np.asarray(data.synthetic(0, n, 8)[0])
    plan, choice, _ = config._method_and_plan(args, cfg, np.dtype("float32"), (None, "unknown"), np.ones(n), kind,
                                              None, X)
    assert choice["chosen"] != "dense" and plan.init == "span" and "2^24" in choice["excluded"]["dense"]
    cfg.m, cfg.method = 2**12, "auto"  # at a width that materialises, dense stays a candidate
    _, choice, _ = config._method_and_plan(args, cfg, np.dtype("float32"), (None, "unknown"), np.ones(n), kind, None,
                                           X)
    assert "dense" in choice["candidates"]


def test_span_run_where_no_neuron_fires(capsys):
    """|A| = 0 (b above every <g_r, c_i>): the span model cannot move; the warning of any such run."""
    rc, out, err = run(capsys, *SMALL, "--b", "50", "--steps", "3", "--method", "active", "--json")
    r = json.loads(out.strip().splitlines()[-1])
    assert rc == 0 and r["init"] == "span" and r["n_active"] == 0 and r["steps"] == 3
    X, y, _ = problem()
    assert r["loss_final"] == r["loss_initial"] == pytest.approx(0.5 * float(np.sum(y.astype(np.float64) ** 2)))
    assert "no neuron fired" in err


def test_auto_under_span_does_not_count_the_rows_set_up():
    """The cost model's sparse set-up is nn.init's draw and scan over all m rows; under span it is the
    draw of A, so auto ranks the sparse methods by compilation + steps (dense keeps its total)."""
    from jaxcorr import cost
    from jaxcorr.cli import config

    m = 2**28
    c = cost.choose(8, m, 64, optimizer="sgd", steps=100, b=float(nn.default_threshold(m)), x_norms=[1.0] * 8,
                    dtype="float32", methods=("dense", "active", "dtree", "wtree"))
    s = config._span_choice(c)
    rest = {k: p.total_s - p.setup_s for k, p in c.predictions.items() if k != "dense" and p.exact}
    assert s.method == min(rest, key=rest.get) and "--init span" in s.reason
