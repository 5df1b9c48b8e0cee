"""What ``jaxcorr train`` reports (private): the result (the ``--json`` object), warnings, the summary.

Also the one-line messages of runs that cannot go on: a DDFN-cap stop in the command line's terms
(:func:`cap_message`) and a non-finite loss (:func:`divergence_message`), both built from typed
values, never from another message's text.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np

from jaxcorr import methods, optimizers
from jaxcorr.cli import _library

__all__ = [
    "cap_message",
    "comparison",
    "divergence_message",
    "evaluation",
    "jsonable",
    "print_summary",
    "process_start",
    "result",
    "warnings",
]


def process_start(process: bool) -> float:
    """``time.perf_counter()`` at the start of the process (``process``: a command-line run, read from
    ``/proc`` where there is one), else now (in-process calls measure from their ``main()`` call)."""
    now = time.perf_counter()
    if not process:
        return now
    try:
        with open("/proc/self/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        started = int(fields[19]) / os.sysconf("SC_CLK_TCK")  # field 22: start time after boot
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return now
    return now - max(uptime - started, 0.0)


def _unit(norms) -> bool:
    return norms is None or bool(np.allclose(norms, 1, atol=1e-3))


def cap_message(err, method: str, norms, lr: float) -> str:
    """A :class:`jaxcorr.errors.DDFNCapExceeded` in the command line's terms: what happened and which
    options get out of it (a lower ``--lr`` only past step 0, ``--normalize`` for rows off unit norm)."""
    outs = ["train with --method dense", "add --fallback dense (switch to dense GD when this happens)"]
    hint = ""
    if not _unit(norms):
        outs.insert(0, "add --normalize")
        hint = f" The rows of X have norms up to {np.max(norms):.3g}, but the paper assumes unit norm."
    if err.step > 0:
        outs.insert(0, f"lower --lr (now {lr:g})")
    return (f"with --method {method}, a data point's fire set reached {err.k} neurons at step {err.step}, beyond "
            f"the DDFN cap ceil(m^(4/5)) = {err.cap} that the sparse methods need (Definition 1.3).{hint} Ways out: "
            f"{'; '.join(outs)}.")


def divergence_message(div, *, lr: float, save: str | None, dtype, y_max: float) -> tuple[str, int]:
    """``(message, exit status)`` of a run whose loss became non-finite (:class:`jaxcorr.cli.run.Divergence`).

    A loss non-finite before any step of the run is not a divergence: the data overflow the dtype
    (exit 2, bad input); otherwise the steps diverged (exit 1: lower ``--lr``)."""
    kept = (f"; {save} was not updated after step {div.saved}" if save and div.saved is not None
            else ("; nothing saved" if save else ""))
    if div.initial:
        wide = "float64" if np.dtype(dtype).itemsize < 8 else "a larger dtype"
        return (f"the initial loss L(W({div.step})) is {div.loss}: it overflows {np.dtype(dtype).name} before any "
                f"step (|y| up to {y_max:.3g}); scale y (e.g. divide it by its largest magnitude) or train in "
                f"{wide} (JAX_ENABLE_X64=1){kept}"), 2
    last = f"; the last finite loss was {div.last:.4g} at step {div.step - 1}" if div.last is not None else ""
    return f"training diverged: the loss L(W({div.step})) is {div.loss}{last}; lower --lr (now {lr:g}){kept}", 1


def result(run, hist, params, wall: float, done: int, save: str | None) -> dict:
    """The run's results as one dict (the ``--json`` object)."""
    from jaxcorr import distributed, nn

    cfg, X, y, b = run.cfg, run.X, run.y, run.cfg.b
    if run.span:  # the training points: only A counts (no row outside A fires for them), from K
        loss_final = _library.span_train_loss(params, X, y, b)[0]
    elif run.wide:  # rows outside A never fire: the held rows at the full width's scale
        loss_final = float(nn.loss_and_grad(params.W, params.a, X, y, b, scale=1.0 / math.sqrt(cfg.m))[0])
    else:
        loss_final = float(nn.loss(params, X, y, b))
    loss_initial = float(hist.loss[0]) if done else loss_final
    ms = hist.ms_per_step if done and math.isfinite(hist.ms_per_step) else None
    setup = run.setup["setup_s"] if run.setup else None
    n = max(int(cfg.n), 1)
    return {
        "method": cfg.method,
        "method_choice": run.choice,
        "fallback_step": None if hist.fallback_step is None else run.step0 + hist.fallback_step,
        "steps": done,
        "step_start": run.step0,
        "step_end": run.step0 + done,
        "loss_initial": loss_initial,
        "loss_final": loss_final,
        "loss_initial_mean": loss_initial / n,  # L / n: comparable across data sets of other n
        "loss_final_mean": loss_final / n,
        "ms_per_step": ms,
        "setup_s": hist.setup_s + (setup or 0.0),
        "wall_s": wall,
        "process_s": time.perf_counter() - run.t_start,
        "fire": _fire_stats(hist, params, X, b, cfg.m, done),
        "n_active": params.n_active if (run.wide or run.span) else hist.n_active,
        "capacity_events": hist.capacity_events,
        **{k: getattr(cfg, k) for k in ("n", "m", "d", "b", "lr", "optimizer", "seed")},
        "data": cfg.data or "synthetic",
        "checkpoint": save,
        "memory_estimate_bytes": run.memory.estimate.total,
        "memory_available_bytes": run.memory.available,
        "compilation_cache": run.cache,
        "wide": run.wide,
        "wide_setup_s": setup if run.wide else None,
        "init": cfg.init,
        "init_setup": run.setup if cfg.init == "span" and run.setup else None,
        **distributed.info(run.mesh),  # "processes", "devices"
    }


def warnings(hist, res: dict, run) -> list[str]:
    """Things a user should know about a finished run (printed even with --quiet)."""
    from jaxcorr import nn

    out = [run.method_warning] if run.method_warning else []
    if res["steps"] and int(np.max(hist.fire_union)) == 0:
        small = "" if _unit(run.norms) or run.cfg.normalize else (
            f"; the rows of X have norms up to {np.max(run.norms):.3g}, but the paper assumes unit norm: "
            "add --normalize")
        out.append(f"no neuron fired for any data point at any step: b = {res['b']:g} is above every <w_r, x_i>, so "
                   f"the output is 0 and W never changed; lower --b (default sqrt(0.4 ln m) = "
                   f"{float(nn.default_threshold(res['m'])):.4g}){small}")
    first, last = res["loss_initial"], res["loss_final"]
    if res["steps"] and math.isfinite(first) and math.isfinite(last) and last > first:
        own = optimizers.spec(res["optimizer"]).learning_rate
        out.append(f"the loss rose over the run, from {first:.6g} to {last:.6g}: lower --lr (now {res['lr']:g}; "
                   f"{res['optimizer']}'s default is {own:g})")
    return out


def evaluation(ev, path: str, step: int) -> dict:
    """The ``--eval-data`` report of a :class:`jaxcorr.cli.run.Evaluator`: the returned model's
    :class:`jaxcorr.evaluation.Evaluation` (after ``step`` steps), the evaluations made at the
    progress lines, and the time spent evaluating (not part of the training time)."""
    e = ev.last
    return {"data": path, "step": step, "n": e.n, "loss_sum": e.loss_sum, "loss_mean": e.loss_mean, "mse": e.mse,
            "accuracy": e.accuracy, "eval_s": ev.seconds, "history": list(ev.history)}


def comparison(method: str, cmp, hist, res: dict, params, X, y, b) -> dict:
    """The baseline run (a :class:`jaxcorr.cli.run.Outcome`) against the main one: speed per step and
    end to end, loss and weight gaps."""
    from jaxcorr import nn

    bh = cmp.history
    bloss_final = float(nn.loss(cmp.params, X, y, b))
    la, lb = np.asarray(hist.loss, np.float64), np.asarray(bh.loss, np.float64)
    k = min(la.size, lb.size)
    absd = np.abs(la[:k] - lb[:k])
    ref = np.maximum(np.abs(lb[:k]), 1e-300)
    fin = abs(res["loss_final"] - bloss_final)
    ms, bms = res["ms_per_step"], bh.ms_per_step
    return {
        "method": method,
        "ms_per_step": bms,
        "wall_s": cmp.wall_s,
        "speedup_per_step": (bms / ms) if (ms and bms) else None,
        "speedup_end_to_end": cmp.wall_s / res["wall_s"] if res["wall_s"] > 0 else None,
        "loss_final": bloss_final,
        "loss_final_mean": bloss_final / max(len(X), 1),
        "max_loss_diff_abs": max(float(absd.max()) if k else 0.0, fin),
        "max_loss_diff_rel": max(float((absd / ref).max()) if k else 0.0, fin / max(abs(bloss_final), 1e-300)),
        "max_weight_diff": float(np.max(np.abs(np.asarray(_rows(params).W) - np.asarray(cmp.params.W)))),
    }


def _rows(params):
    """The rows of ``params``: a span-defined model's all m (materialised: ``m <= 2^24``), else its own."""
    return params.params() if _library.span_model(params) else params


def _fire_stats(hist, params, X, b: float, m: int, done: int) -> dict:
    """Fire-set sizes |S_i,fire(t)| = #{r : <w_r, x_i> > b} over the run, and the Lemma 2.5 bounds."""
    if done:
        mean, mx, union = hist.fire_mean, hist.fire_max, hist.fire_union
    else:  # no steps: the sets of the returned weights (a span-defined model's rows of A: no other fires)
        if _library.span_model(params):
            fired = _library.span_train_loss(params, X, np.zeros(len(X)), b)[1].T
        else:
            fired = np.asarray(X, np.float64) @ np.asarray(params.W, np.float64).T > b
        sizes = fired.sum(axis=1) if fired.size else np.zeros(len(X))
        mean, mx, union = [sizes.mean()], [sizes.max()], [fired.any(axis=0).sum()]
    return {
        "mean": float(np.mean(mean)),
        "max": int(np.max(mx)),
        "union_max": int(np.max(union)),
        "bound_m_4_5": m ** 0.8,
        "bound_m_exp_b2": m * math.exp(-(b**2) / 2),
    }


def jsonable(x):
    """``x`` with numpy scalars as Python numbers and non-finite floats as None (JSON has no inf)."""
    if isinstance(x, dict):
        return {k: jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, (np.floating, float)):
        x = float(x)
        return x if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _ratio(x: float | None) -> str:
    if not x:
        return "n/a"
    return f"{x:.2f}x faster" if x >= 1 else f"{1 / x:.2f}x slower"


def _bounds(f: dict, b: float) -> str:
    """The Lemma 2.5 line: both bounds, or one figure where they are equal (at the default b)."""
    a, e = f"{f['bound_m_4_5']:.1f}", f"{f['bound_m_exp_b2']:.1f}"
    both = f"m^(4/5) = m*exp(-b^2/2) = {a}" if a == e else f"m^(4/5) = {a}   m*exp(-b^2/2) = {e}"
    return f"Lemma 2.5   {both}   (b = {b:.4g});  max |S_i,fire| / m^(4/5) = {f['max'] / f['bound_m_4_5']:.3f}"


def print_summary(r: dict, out, events=()) -> None:
    """The human-readable summary of :func:`result` ``r`` (with its History's typed ``events``)."""
    f = r["fire"]
    ms = f"{r['ms_per_step']:.3f} ms/step (training steps only)" if r["ms_per_step"] else "n/a (no step ran)"
    what = r["method"] if r["fallback_step"] is None else f"{r['method']} then dense from step {r['fallback_step']}"
    lines = [
        f"done: {r['steps']} steps of {what} (steps {r['step_start']} -> {r['step_end']}) in {r['process_s']:.2f} s "
        f"end to end (the whole process), of which training {r['wall_s']:.2f} s and set-up and compilation "
        f"{r['setup_s']:.2f} s",
        f"loss        {r['loss_initial']:.6g} -> {r['loss_final']:.6g}   "
        "(1/2 sum_i (f(x_i) - y_i)^2 of the returned weights)",
        f"mean loss   {r['loss_initial_mean']:.6g} -> {r['loss_final_mean']:.6g}   (the loss / n, n = {r['n']} points)",
        f"speed       {ms}",
        f"fire sets   |S_i,fire| mean {f['mean']:.1f}, max {f['max']}; union over i: max {f['union_max']}   "
        f"(of m = {r['m']})",
        _bounds(f, r["b"]),
    ]
    lines.append(_init_line(r))
    if r.get("eval"):
        lines.append(_eval_line(r["eval"]))
    choice = r.get("method_choice") or {}
    if choice.get("requested") == "auto":
        why = choice["reason"].removeprefix(f"{choice['chosen']}: ")
        lines.append(f"method      {r['method']}, chosen by --method auto (jaxcorr.cost): {why}")
    reruns = _library.capacity_reruns(events)
    if reruns:
        lines.append(f"capacity    {reruns} chunk(s) rerun with a larger frontier capacity (a fire set outgrew it)")
    if r["fallback_step"] is not None:
        lines.append(f"fallback    {r['method']} could not go on exactly at step {r['fallback_step']}; dense GD ran "
                     "from there (--fallback dense)")
    c = r.get("compare")
    if c:
        lines += _compare_lines(r, c)
    if r["checkpoint"]:
        lines.append(f"checkpoint  {r['checkpoint']} (step {r['step_end']})")
    if not c and methods.get(r["method"]).sparse and not r["wide"] and (r["init"] != "span" or r["m"] <= 2**24):
        lines.append("next        jaxcorr train --compare dense   (speed and loss against plain GD);  "
                     "jaxcorr train --help")
    elif not c:
        lines.append("next        jaxcorr train --help")
    print("\n".join(lines), file=out)


def _init_line(r: dict) -> str:
    """How W(0) was defined (``--init``), and for a fresh span set-up its held rows and time."""
    if r["init"] != "span":
        return f"init        rows: W(0) = nn.init(key(seed {r['seed']})), all m rows drawn"
    s = r.get("init_setup")
    drawn = (f"; {s['n_active']} held rows (|A|) of m drawn in {s['setup_s']:.2f} s ({s['mode']})" if s else "")
    return f"init        span: W(0) by key(seed {r['seed']}) and the basis of span X{drawn}"


def _eval_line(e: dict) -> str:
    acc = "" if e["accuracy"] is None else f", accuracy {100 * e['accuracy']:.4g}% (labels +-1)"
    return (f"eval        {e['data']} (n = {e['n']}): mean loss {e['loss_mean']:.6g}, mse {e['mse']:.6g}{acc}   "
            f"(loss {e['loss_sum']:.6g}; evaluated in {e['eval_s']:.2f} s, apart from the training time)")


def _compare_lines(r: dict, c: dict) -> list[str]:
    m, b = r["method"], c["method"]
    return [
        f"vs {b:<8} per step:   {b} {c['ms_per_step'] or float('nan'):.3f} ms, {m} "
        f"{r['ms_per_step'] or float('nan'):.3f} ms -> {m} {_ratio(c['speedup_per_step'])} per step "
        "(the jitted training steps only)",
        f"            end to end: {b} {c['wall_s']:.2f} s, {m} {r['wall_s']:.2f} s -> {m} "
        f"{_ratio(c['speedup_end_to_end'])} end to end (set-up, compilation and steps; {b} ran second, in the "
        "same process, so it reused any compiled programs the two runs share)",
        f"            loss: largest absolute difference {c['max_loss_diff_abs']:.3g}, largest relative difference "
        f"{c['max_loss_diff_rel']:.3g}; largest weight difference {c['max_weight_diff']:.3g}",
    ]
