"""``jaxcorr train`` from prepared options to exit status (private): train, save, compare, report."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import sys
import time

import numpy as np

from jaxcorr.cli import _library, config, progress, report
from jaxcorr.cli import run as run_mod
from jaxcorr.cli.args import AUTO, cache_dir, check_options, enable_cache
from jaxcorr.cli.signals import Signals

__all__ = ["train"]


def train(args, process: bool, t_start: float) -> int:
    """The ``train`` command; returns the exit status (raises ValueError/OSError with a one-line
    message on bad input). With ``--save`` the path's writer's lock is held until the run ends."""
    check_options(args)
    cache = enable_cache(cache_dir(args, process))
    what = f" and saving to {args.save}" if args.save else ""
    with Signals(process, what_on_stop=what, saving=args.save is not None) as sig, contextlib.ExitStack() as held:
        run = config.prepare(args, sig, t_start, held.enter_context)
        run.cache = cache
        return _execute(args, run, sig)


def _plan(args, run: config.Run, mode: str, sig) -> run_mod.Plan:
    import jax.numpy as jnp

    cfg = run.cfg
    ev = None if run.eval_data is None else run_mod.Evaluator(run.eval_data.X, run.eval_data.y, cfg.b)
    return run_mod.Plan(X=jnp.asarray(run.X), y=jnp.asarray(run.y), b=cfg.b, optimizer=run.optimizer,
                        step0=run.step0, steps=args.steps, fallback=args.fallback, platform=run.platform,
                        norms=run.norms, lr=cfg.lr, mode=mode, signals=sig, evaluator=ev)


def _execute(args, run: config.Run, sig) -> int:
    """Train, save, compare and report; returns the exit status."""
    cfg = run.cfg
    for note in run.notes:
        print(f"jaxcorr: {note}", file=sys.stderr)
    _say_method(run)
    mode = progress.Progress.pick_mode(args.quiet)
    if mode != "off":
        src = cfg.data or f"synthetic (jaxcorr.data.synthetic, seed {cfg.seed})"
        start = f"resuming {args.resume} at step {run.step0}" if args.resume else "fresh start"
        auto = f" ({AUTO})" if run.choice and run.choice["requested"] == AUTO else ""
        held = f"\neval data: {run.eval_data.path} (n={len(run.eval_data.y)})" if run.eval_data else ""
        progress.report(f"jaxcorr train: method={cfg.method}{auto}  init={cfg.init}  n={cfg.n} d={cfg.d} m={cfg.m}  "
                        f"b={cfg.b:.4g}  optimizer={cfg.optimizer} lr={cfg.lr:g}  steps={args.steps}  ({start})\n"
                        f"data: {src}{held}")
    plan = _plan(args, run, mode, sig)
    fit = _library.fit_function(run.mesh)
    if run.wide:
        fit = _library.wide_fit_function(run.mesh)
        if run.params0 is None:
            run.params0 = _wide_setup(run, mode, sig)
    elif cfg.init == "span" and run.params0 is None:  # a fresh --init span run: draw the held rows
        run.span0 = _span_setup(run, mode)
        run.params0 = run.span0 if run.span else _materialize(run.span0, mode)
    if run.span:
        fit = _library.span_fit_function(run.mesh)
    save = _saver(args, run, sig) if args.save else None
    if (run.wide or run.span) and run.params0.n_active == 0:
        out = _cannot_move(run, plan)
    else:
        out = run_mod.run_steps(fit, run.params0, run.state0, plan, method=cfg.method, save=save,
                                save_every=args.save_every)
    try:
        return _after_training(args, run, sig, out, save, plan)
    finally:
        out.quiet()


def _say_method(run: config.Run) -> None:
    """One line on stderr: the method ``--method auto`` chose and why; or the warning for a sparse
    method given where dense is predicted faster per step (printed even with ``--quiet``)."""
    c = run.choice
    if c is not None and c["requested"] == AUTO:
        why = c["reason"].removeprefix(f"{c['chosen']}: ")
        print(f"jaxcorr: --method {AUTO} chose {c['chosen']}: {why}", file=sys.stderr)
    if run.method_warning:
        print(f"jaxcorr: warning: {run.method_warning}", file=sys.stderr)


def _cannot_move(run: config.Run, plan: run_mod.Plan) -> run_mod.Outcome:
    """A wide model with no active row: no neuron fires for any point, so the output is 0, every
    gradient is 0 and no step changes anything; its History is the initial loss ``plan.steps``
    times, without running them."""
    from jaxcorr import nn

    t0 = time.perf_counter()
    model = run.params0
    if run.span:  # the output is 0 at every point: L = 1/2 sum_i y_i^2, and no state to speak of
        loss0, state = 0.5 * float(np.sum(np.square(np.asarray(run.y, np.float64)))), None
    else:
        loss0 = float(nn.loss_and_grad(model.W, model.a, plan.X, plan.y, plan.b, scale=1.0 / np.sqrt(run.cfg.m))[0])
        state = run.state0 if run.state0 is not None else run.optimizer.init(model.W)
    hist = run_mod.untrained(plan.steps, loss0, plan.b, state, run.cfg.method, n_active=0)
    return run_mod.Outcome(params=model, opt_state=state, history=hist, interrupted=False, diverged=None,
                           wall_s=time.perf_counter() - t0, saved_at=run.step0 or None, method=run.cfg.method)


def _after_training(args, run: config.Run, sig, out: run_mod.Outcome, save, plan: run_mod.Plan) -> int:
    """The last save, then the exit status and report of a run that stopped, diverged or finished."""
    cfg, step0 = run.cfg, run.step0
    params, opt_state, hist = out.params, out.opt_state, out.history
    done = len(hist.loss)
    step_end = step0 + done
    if out.diverged is not None:
        msg, rc = report.divergence_message(out.diverged, lr=cfg.lr, save=args.save, dtype=run.dtype,
                                            y_max=float(np.max(np.abs(run.y))) if run.y.size else 0.0)
        print(f"jaxcorr: error: {msg}", file=sys.stderr)
        return rc
    if args.save and out.saved_at != step_end:  # at the end, or where a signal stopped the run
        if out.interrupted:
            print(f"jaxcorr: saving checkpoint {args.save} at step {step_end}...", file=sys.stderr, flush=True)
        save(params, opt_state, step_end)
    if out.interrupted:
        return _interrupted(args, sig, step_end, done)
    if sig.requested:  # during the final save: the run is complete and saved
        print(f"jaxcorr: interrupted by {sig.name} after the training finished (step {step_end}"
              f"{'; saved to ' + args.save if args.save else ''})", file=sys.stderr)
        return sig.exit_code
    sig.phase = "finish"
    res = report.result(run, hist, params, out.wall_s, done, args.save)
    if plan.evaluator is not None:
        # the evaluations at progress lines ran in fit's callback, outside its timed steps: fit counts
        # them with its set-up; they are reported apart (eval_s), so they leave the set-up figure
        res["setup_s"] = max(0.0, res["setup_s"] - plan.evaluator.seconds)
        plan.evaluator.at(params, step_end)  # the returned model, evaluated anew
        res["eval"] = report.evaluation(plan.evaluator, run.eval_data.path, step_end)
    res["warnings"] = report.warnings(hist, res, run)
    if args.compare:
        sig.phase = "compare"
        base = _materialize(run.span0, "off") if run.span else run.params0  # the same W(0)
        cmp = run_mod.run_steps(_library.fit_function(), base, None if run.span else run.state0,
                                dataclasses.replace(plan, evaluator=None), method=args.compare, idle_phase="compare")
        cmp.quiet()
        if cmp.interrupted:
            print(f"jaxcorr: interrupted by {sig.name} during the {args.compare} comparison run "
                  f"(the {cfg.method} run is complete{'; saved to ' + args.save if args.save else ''})",
                  file=sys.stderr)
            return sig.exit_code
        res["compare"] = report.comparison(args.compare, cmp, hist, res, params, plan.X, plan.y, cfg.b)
    out.quiet()
    for w in res["warnings"]:
        if w != run.method_warning:  # (said before the run)
            print(f"jaxcorr: warning: {w}", file=sys.stderr)
    res["process_s"] = time.perf_counter() - run.t_start  # end to end: the process until the summary
    if args.json:
        print(json.dumps(report.jsonable(res)))
    else:
        report.print_summary(res, sys.stdout, hist.events)
    return 0


def _saver(args, run: config.Run, sig):
    """``save(params, opt_state, step)`` for ``--save``: process 0 writes :func:`jaxcorr.checkpoint.save`'s
    smallest form: a wide run its rows or coefficients; a full-width run that holds ``W(0)`` only the
    rows that differ from it and the active rows (megabytes where ``W`` is gigabytes); otherwise (a
    resumed full checkpoint whose ``a`` is not the seed's, several processes) all of ``W``."""
    import jax

    cfg, X, y = run.cfg, run.X, run.y
    saved = {**cfg.as_dict(), "dtype": str(run.dtype)}
    if cfg.data is not None:
        saved["data_abspath"] = os.path.abspath(cfg.data)
    compact = {}
    if run.W0 is not None and run.mesh is None and not run.wide:
        # once per run, not per save: the active rows, and the save's programs compiled now
        key, active = jax.random.key(cfg.seed), _library.active_rows(run.W0.W, X, cfg.b)
        state0 = run.state0 if run.state0 is not None else run.optimizer.init(run.params0.W)
        try:
            _library.from_params(key, run.params0, X, b=cfg.b, W0=run.W0, opt_state=state0,
                                 optimizer=run.optimizer, active=active)
            compact = {"key": key, "b": cfg.b, "W0": run.W0, "optimizer": run.optimizer, "active": active}
        except ValueError:  # a resumed model whose a is not the seed's: save all of W
            pass
        del state0

    def save(p, s, step):
        sig.phase = "save"
        if jax.process_index() != 0:  # one writer across processes
            return
        if _library.span_model(p):  # the "span" form; its state is its training's own
            s = None
        with jax.transfer_guard("allow"):  # meant: the state goes to the host and the file
            _library.save(args.save, p, X=X, y=y, opt_state=s, step=step, config=saved, **compact)

    return save


def _wide_setup(run: config.Run, mode: str, sig):
    """The wide model's active rows (its streamed set-up), with set-up progress."""
    import jax

    cfg = run.cfg
    show = progress.SetupProgress(mode, progress.report, cfg.m)

    def on_chunk(p):
        if sig.requested and not sig.process:  # in-process runs: stop between chunks
            raise KeyboardInterrupt
        show.update(p)

    if mode == "lines":
        progress.report(f"set-up: drawing W(0) from seed {cfg.seed} and keeping the rows that can fire "
                        f"(wide model, m={cfg.m}; memory estimate {run.memory.estimate.total / 2**30:.2f} GiB)")
    try:
        model, info = _library.wide_setup(jax.random.key(cfg.seed), cfg.m, cfg.d, run.X, b=cfg.b, dtype=run.dtype,
                                          progress=on_chunk)
    finally:
        show.close()
    run.setup = info
    if mode == "lines":
        progress.report(f"set-up: {info['n_active']} active rows of {cfg.m} in {info['setup_s']:.1f} s")
    return model


def _span_setup(run: config.Run, mode: str):
    """The untrained span-defined model of ``--seed``: W(0) by the key and the basis of span X, only the
    held rows A drawn (:func:`jaxcorr.span_init.build`: O(|A|) rows, nothing d-dimensional). With
    several processes each draws the same A (a pure function of the key, X, m and b): the set-up is
    repeated, not divided."""
    import jax

    cfg = run.cfg
    if mode == "lines":
        every = "; every process draws the same rows" if run.mesh is not None else ""
        progress.report(f"set-up: W(0) from seed {cfg.seed} and the basis of span X, drawing only the rows that can "
                        f"fire (--init span, m={cfg.m}; memory estimate {run.memory.estimate.total / 2**30:.2f} GiB"
                        f"{every})")
    with jax.transfer_guard("allow"):
        model = _library.span_build(jax.random.key(cfg.seed), run.X, cfg.m, b=cfg.b, dtype=run.dtype)
    act = model.active
    run.setup = {"setup_s": act.setup_s, "n_active": act.n_active, "n_candidates": act.n_candidates,
                 "mode": act.mode, "n_fire_union": act.n_fire_union}
    if mode == "lines":
        progress.report(f"set-up: {act.n_active} held rows of {cfg.m} ({act.n_candidates} candidates, {act.mode}) "
                        f"in {act.setup_s:.2f} s")
    return model


def _materialize(model, mode: str):
    """All ``m`` rows of a span-defined W(0) as :class:`jaxcorr.nn.Params` (``--method dense`` or the
    ``--compare dense`` baseline under ``--init span``; ``m <= 2^24``, checked by the memory plan)."""
    import jax

    if mode == "lines":
        progress.report(f"set-up: materialising all {model.m} rows of the span-defined W(0) for dense GD")
    with jax.transfer_guard("allow"):
        return model.params()


def _interrupted(args, sig, step_end: int, done: int) -> int:
    where = f"saved to {args.save}" if args.save else "not saved (no --save given)"
    print(f"jaxcorr: interrupted by {sig.name} at step {step_end} after {done} of {args.steps} steps; "
          f"state {where}", file=sys.stderr)
    if args.save:
        print(f"jaxcorr: continue with: jaxcorr train --resume {args.save} --save {args.save} "
              f"--steps {args.steps - done}", file=sys.stderr)
    return sig.exit_code
