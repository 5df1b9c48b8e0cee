"""The training loop of ``jaxcorr train`` (private): fit calls, chunks sized by time, saves, stops.

A run is one :func:`jaxcorr.train.fit` call (one set-up) whenever it can be: checkpoints every
``--save-every`` steps are written from fit's callback, progress is shown from it, and a signal
stops the run at the next chunk boundary. The jitted chunks are sized so that one takes about
:data:`TARGET_CHUNK_S` seconds at any size (the stop latency is one chunk): a first length from a
cost model of the step (:func:`initial_chunk`), corrected once from the first measured chunks
(:class:`ChunkTimer`). The CLI's own code between the chunks runs under
``jax.transfer_guard("disallow")``; the transfers it means (a checkpoint's arrays, an evaluation's
data and outputs) are explicit. With ``--eval-data`` an :class:`Evaluator` scores the current model
at each progress line, timed apart from the steps (its time is not in ``ms_per_step`` nor in the
training wall time).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from jaxcorr import errors, methods
from jaxcorr.cli import _library, progress

__all__ = [
    "TARGET_CHUNK_S",
    "ChunkTimer",
    "Divergence",
    "Evaluator",
    "Outcome",
    "Plan",
    "choose_chunk",
    "initial_chunk",
    "merge",
    "run_steps",
]

#: Wall time a chunk should take -- the longest wait between a signal and the stop.
TARGET_CHUNK_S = 0.5


# ------------------------------------------------------------------------------------ chunk sizing
def initial_chunk(n: int, m: int, d: int, steps: int, platform: str = "cpu", *, rows: float | None = None,
                  span: bool = False, cost: float = 1.0) -> int:
    """A first chunk length from an upper bound on the time per step.

    The model: a dense step (``rows=None``) costs 1 ns per multiply-add, ``n m d`` of them; a
    sparse step (``rows``: the active rows it works on, |A| or its estimate) costs per row and point
    4 ns on the span path (``span``: no ``d``) or 0.6 ns per dimension otherwise, times the method's
    relative step cost (``cost``: ``jaxcorr.methods.Method.step_cost``, the trees' frontier and
    rebuild). An accelerator is counted 50 times faster. Every step costs at least 0.2 ms (the
    fixed cost of a step). The bounds are deliberately pessimistic for a CPU: a chunk too long
    delays a stop, one too short only pays a per-chunk cost, which :class:`ChunkTimer` corrects
    once the first chunks are measured.
    """
    scale = 1.0 if platform == "cpu" else 0.02
    if rows is None:
        t_step = n * m * d * 1e-9
    else:
        per = 4e-9 if span else 0.6e-9 * d
        t_step = rows * n * per * cost
    t_step = max(t_step * scale, 2e-4)
    return max(1, min(int(TARGET_CHUNK_S / t_step), max(int(steps), 1)))


def choose_chunk(cmax: int, seg: int) -> int:
    """A chunk length <= ``cmax`` for a segment of ``seg`` steps: a divisor of ``seg`` in
    [cmax/2, cmax] when there is one (the last chunk then needs no compilation of its own), else
    ``cmax``; ``seg`` itself when it is shorter."""
    cmax = max(1, int(cmax))
    if seg <= cmax:
        return max(1, seg)
    for c in range(cmax, (cmax + 1) // 2 - 1, -1):
        if seg % c == 0:
            return c
    return cmax


class ChunkTimer:
    """Measures the chunks of one ``fit`` call and says when another chunk length would be better.

    ``observe()`` after a callback returns a new chunk length when a chunk took over 2 s (the
    stop latency), or when chunks are so short that the per-chunk overhead saved over the rest of
    the segment is worth twice a new set-up (which costs what this call's set-up cost) and that
    set-up is short enough (<= 1 s) not to delay a stop.
    """

    def __init__(self, chunk: int, seg: int):
        self.chunk, self.seg = chunk, seg
        self.t0 = time.perf_counter()
        self.t_last = self.t0
        self.calls = 0
        self.setup_s = 0.0
        self.overhead_s = 0.0

    def observe(self, done: int, ms_per_step: float) -> int | None:
        now = time.perf_counter()
        self.calls += 1
        exec_s = self.chunk * ms_per_step / 1e3
        if self.calls == 1:
            self.setup_s = max(now - self.t0 - exec_s, 0.0)
        else:
            self.overhead_s = max(now - self.t_last - exec_s, 0.0)
        self.t_last = now
        t_step = ms_per_step / 1e3
        ideal = max(1, min(int(TARGET_CHUNK_S / max(t_step, 1e-9)), self.seg))
        left = self.seg - done
        if exec_s > 4 * TARGET_CHUNK_S and self.chunk > 1 and left > 0:
            return ideal
        # Longer chunks need a new fit call, whose set-up delays a stop as long as this call's
        # set-up took: only where that is short.
        if self.calls >= 2 and ideal >= 4 * self.chunk and left > 0 and self.setup_s <= 2 * TARGET_CHUNK_S:
            saved = (left / self.chunk - left / ideal) * self.overhead_s
            cost = self.setup_s + done * t_step
            if saved > 2 * cost:
                return ideal
        return None


def _step_size(params, method: str, optimizer, n: int, b: float) -> dict:
    """What a step of ``method`` works on, for :func:`initial_chunk`: the active rows (the held rows
    of a wide model, else the expected |A| of the width), the span path, the step's relative cost."""
    if not methods.get(method).sparse:
        return {}
    if _library.span_model(params):  # the held rows A, drawn already
        return {"rows": max(params.n_active, 1), "span": _library.is_span(optimizer),
                "cost": methods.get(method).step_cost}
    held = params.W.shape[0]
    rows = held if _library.is_wide(params) else min(held, _library.expected_active(held, n, b))
    return {"rows": rows, "span": _library.is_span(optimizer), "cost": methods.get(method).step_cost}


def _segment(cmax: int, done: int, steps: int, save_every):
    """``(steps of the next fit call, chunk length)``: the rest of the run, saving from the callback,
    when the chunk divides ``save_every``; else up to the next save (one call per segment)."""
    rest = steps - done
    if not save_every:
        return rest, choose_chunk(cmax, rest)
    chunk = choose_chunk(cmax, save_every)
    if save_every % chunk == 0:
        return rest, chunk
    seg = min(save_every - done % save_every, rest)
    return seg, choose_chunk(cmax, seg)


# ----------------------------------------------------------------------------------- evaluation
class Evaluator:
    """``--eval-data`` during a run: :func:`jaxcorr.evaluation.evaluate` of the model at a step.

    ``history`` lists each evaluation (step, mean loss, mse, accuracy); ``seconds`` is the time spent
    evaluating (the snapshot of the model included), kept out of the training time.
    """

    def __init__(self, X, y, b: float):
        self.X, self.y, self.b = X, y, b
        self.seconds = 0.0
        self.history: list = []
        self.last = None  # the latest Evaluation

    def at(self, model, step: int):
        """The :class:`jaxcorr.evaluation.Evaluation` of ``model`` (the weights after ``step`` steps);
        ``model`` may be a function returning ``(model, opt_state)`` (a callback's snapshot)."""
        import jax

        t0 = time.perf_counter()
        with jax.transfer_guard("allow"):  # meant: the data to the device, the outputs back
            if callable(model):
                model = model()[0]
            e = _library.evaluate(model, self.X, self.y, b=self.b)
        self.seconds += time.perf_counter() - t0
        if self.history and self.history[-1]["step"] == step:
            self.history.pop()
        self.history.append({"step": int(step), "loss_mean": e.loss_mean, "mse": e.mse, "accuracy": e.accuracy})
        self.last = e
        return e


# ------------------------------------------------------------------------------------------ types
@dataclasses.dataclass(frozen=True)
class Plan:
    """What :func:`run_steps` trains and how it shows it (the same for the main and the baseline run)."""

    X: Any
    y: Any
    b: float
    optimizer: Any
    step0: int
    steps: int
    fallback: str = "error"
    platform: str = "cpu"
    norms: Any = None  # the rows' norms of X (for the hints of a DDFN-cap error)
    lr: float = 1.0
    mode: str = "off"  # progress: "bar", "lines" or "off"
    signals: Any = None  # a jaxcorr.cli.signals.Signals, or None
    evaluator: Any = None  # an Evaluator (--eval-data), or None


@dataclasses.dataclass(frozen=True)
class Divergence:
    """The first non-finite loss of a run: its step, value, the loss before it (None: the first loss
    of a fit call), the step of the last checkpoint written, and whether it is the loss the run
    started from (``initial``: no step had been taken)."""

    step: int
    loss: float
    last: float | None
    saved: int | None
    initial: bool = False


@dataclasses.dataclass
class Outcome:
    """What :func:`run_steps` returns."""

    params: Any
    opt_state: Any
    history: Any  # the merged jaxcorr History of the fit calls
    interrupted: bool  # a signal stopped the run before its steps
    diverged: Divergence | None
    wall_s: float
    saved_at: int | None  # the step of the last checkpoint this call or the resumed run wrote
    method: str  # the method that ran last (dense after a --fallback dense)
    finishing: Any = None  # a progress.Notice armed at the last step: done() once the summary is out

    def quiet(self) -> None:
        """The wait after the last step is over: cancel its notice."""
        if self.finishing is not None:
            self.finishing.done()


@dataclasses.dataclass
class _Loop:
    """The state of one :func:`run_steps` call across its fit calls."""

    steps: int
    saved_at: int | None
    t_run: float
    label: str
    hists: list = dataclasses.field(default_factory=list)
    done: int = 0
    resized: bool = False
    started: bool = False
    finishing: Any = None  # the progress.Notice armed at the last step


# ------------------------------------------------------------------------------------- the loop
def run_steps(fit: Callable, params, opt_state, plan: Plan, *, method: str, save=None, save_every=None,
              idle_phase: str = "setup") -> Outcome:
    """``plan.steps`` gradient steps as :func:`jaxcorr.train.fit` calls, with progress, stops and saves.

    One fit call (one set-up) runs the whole run; a checkpoint every ``save_every`` steps is written
    from fit's callback, from the state after the chunk that ends there (``info["snapshot"]()``,
    no new set-up): the chunk length is then a divisor of ``save_every`` (:func:`choose_chunk`).
    Only when no divisor near the wanted length exists does the run fall back to one call per
    segment. Within a call, the jitted chunks are sized to about :data:`TARGET_CHUNK_S`; if the
    first measured chunks are far off that size, the call ends there and the run goes on in a new
    call with a better length (once per run, early). A non-finite loss stops the run at the first
    chunk that has one (nothing is saved from that chunk on). Splitting a run into calls changes
    nothing for dense and the trajectory only by float rounding for the sparse methods (fit's
    resume guarantee). A DDFN-cap stop is raised as :class:`jaxcorr.errors.DDFNCapExceeded` whose
    message says which options get out of it.
    """
    X, sig, steps, step0 = plan.X, plan.signals, plan.steps, plan.step0
    n, d = X.shape
    width = params.m if _library.span_model(params) else params.W.shape[0]
    cmax = initial_chunk(n, d=d, m=width, steps=steps, platform=plan.platform,
                         **_step_size(params, method, plan.optimizer, n, plan.b))
    label = method if step0 == 0 else f"{method} (resumed)"
    prog = progress.Progress(plan.mode, progress.report, label)
    if sig is not None:
        sig.on_exit = prog.close
    st = _Loop(steps=steps, saved_at=step0 if step0 else None, t_run=time.perf_counter(), label=method)
    ev_s0 = _eval_seconds(plan)
    diverged = None
    if steps > 0:
        what, short = _setup_words(method)
        prog.setup(f"setting up: {what} (once per run; the compiled programs are cached for the next run)...", short)
    try:
        while st.done < steps and not (sig is not None and sig.requested):
            seg, chunk = _segment(cmax, st.done, steps, save_every)
            timer = ChunkTimer(chunk, seg)
            resize: dict = {"to": None}
            callback = _steps_callback(st, timer, resize, plan, prog, save, save_every, idle_phase)
            if sig is not None:  # "setup": from a saved or reproducible state; a signal ends it
                sig.phase = idle_phase if st.saved_at == step0 + st.done or st.done == 0 else "resetup"
            try:
                params, hist = fit(params, plan.X, plan.y, steps=seg, method=method, optimizer=plan.optimizer,
                                   b=plan.b, opt_state=opt_state, callback=callback, chunk_size=chunk,
                                   fallback=plan.fallback)
            except errors.DDFNCapExceeded as e:
                from jaxcorr.cli import report

                raise errors.DDFNCapExceeded(e.step, e.k, e.cap, e.m,
                                             message=report.cap_message(e, method, plan.norms, plan.lr)) from None
            opt_state = hist.opt_state
            st.hists.append(hist)
            if hist.fallback_step is not None and st.label != "dense":
                st.label = "dense"
                prog.relabel(f"dense (fell back from {method})")
            diverged = _divergence(hist.loss, step0 + st.done, st.saved_at, first_call=st.done == 0)
            st.done += len(hist.loss)
            if diverged is not None:
                break
            if resize["to"] is not None:
                st.resized, cmax = True, resize["to"]
                continue
            if (save is not None and st.done < steps and st.saved_at != step0 + st.done
                    and not (sig is not None and sig.requested)):
                _save_now(save, params, opt_state, step0 + st.done, st, plan.mode)  # a segment's end
    finally:
        prog.close()
    interrupted = bool(sig is not None and sig.requested) and st.done < steps and diverged is None
    if opt_state is None:
        opt_state = _initial_state(params, plan.optimizer)
    return Outcome(params=params, opt_state=opt_state, history=merge(st.hists, plan.b, opt_state),
                   interrupted=interrupted, diverged=diverged,
                   wall_s=time.perf_counter() - st.t_run - (_eval_seconds(plan) - ev_s0),
                   saved_at=st.saved_at, method=st.label, finishing=st.finishing)


def _initial_state(params, optimizer):
    """The optimizer state of a run that took no step: a span-defined model's own (None untrained:
    its saves then store none), else ``optimizer.init`` of the rows."""
    if _library.span_model(params):
        return None if params.trained is None else params.trained.opt_state
    return optimizer.init(params.W)


def _eval_seconds(plan: Plan) -> float:
    return plan.evaluator.seconds if plan.evaluator is not None else 0.0


def _setup_words(method: str) -> tuple[str, str]:
    """What set-up does for ``method``: a sentence for the lines, a few words for the bar."""
    if not methods.get(method).sparse:
        return "compiling the training step", "compiling"
    return ("computing the inner products <w_r, x_i> to find the active rows, then compiling the step",
            "inner products, then compiling")


def _save_now(save, params, opt_state, step: int, st: _Loop, mode: str) -> None:
    save(params, opt_state, step)
    st.saved_at = step
    if mode == "lines":
        progress.report(f"saved checkpoint at step {step}")


def _steps_callback(st: _Loop, timer: ChunkTimer, resize: dict, plan: Plan, prog, save, save_every, idle_phase):
    """fit's callback for :func:`run_steps`: progress, stop on a signal or a non-finite loss, the
    early chunk-length check, and the checkpoints at multiples of ``save_every`` (no new set-up).
    Its own work runs under ``jax.transfer_guard("disallow")``: fit hands it host values; the one
    transfer it means, a checkpoint's arrays, is the saver's (allowed there)."""
    import jax

    seg_done, sig, step0, plan_method = st.done, plan.signals, plan.step0, st.label

    def callback(info):
        with jax.transfer_guard("disallow"):
            return _on_chunk(info)

    def _on_chunk(info):
        rel = seg_done + int(info["step"])  # steps done in this run_steps call
        abs_step, total = step0 + rel, step0 + st.steps
        if not st.started:
            st.started = True
            prog.start(step0 + seg_done, total, time.perf_counter() - st.t_run)
        if sig is not None:
            sig.phase = "train"
        running = info.get("method", st.label)  # a library that says which method ran this chunk
        if running != st.label:
            st.label = running
            prog.relabel(f"{running} (fell back from {plan_method})")
        loss = float(info["loss"])
        extra, postfix = _evaluate(plan.evaluator, info, abs_step, prog, timer)
        prog.update(abs_step, loss, info["ms_per_step"],
                    progress.progress_line(st.label, abs_step, total, info, plan.X.shape[0], extra), postfix)
        if not math.isfinite(loss):
            return True
        stop = bool(sig is not None and sig.requested)
        if (save is not None and save_every and rel % save_every == 0 and rel < st.steps and not stop
                and "snapshot" in info):
            with jax.transfer_guard("allow"):  # meant: the state goes to the host and the file
                p, s = info["snapshot"]()
                _save_now(save, p, s, abs_step, st, plan.mode)
            if sig is not None:
                sig.phase = idle_phase  # a durable state: a signal may end the run at once
        if not st.resized and timer.calls < 3:  # decide early, once per run
            resize["to"] = timer.observe(int(info["step"]), info["ms_per_step"])
            if resize["to"] is not None:
                return True  # go on with chunks of the better length (a new fit call)
        if rel >= st.steps and plan.mode != "off" and st.finishing is None:
            st.finishing = progress.Notice(prog.say, "finalizing: gathering the trained weights, then the summary...")
        return stop

    return callback


def _evaluate(ev: Evaluator | None, info: dict, step: int, prog, timer: ChunkTimer) -> tuple[str, str]:
    """``(line text, bar text)`` of an evaluation of the model after ``step`` steps, where a progress
    line is due and ``--eval-data`` was given; its time is taken off the chunk timer's overheads."""
    if ev is None or "snapshot" not in info or not math.isfinite(float(info["loss"])) or not prog.due(step):
        return "", ""
    before = ev.seconds
    e = ev.at(info["snapshot"], step)
    timer.t0 += ev.seconds - before
    timer.t_last += ev.seconds - before
    return progress.eval_text(e), progress.eval_text(e, short=True)


def _divergence(loss, step_base: int, saved_at, first_call: bool = False) -> Divergence | None:
    """None if every loss is finite; else the first non-finite step's :class:`Divergence`."""
    bad = np.flatnonzero(~np.isfinite(np.asarray(loss, np.float64)))
    if not bad.size:
        return None
    j = int(bad[0])
    return Divergence(step=step_base + j, loss=float(loss[j]), last=float(loss[j - 1]) if j > 0 else None,
                      saved=saved_at, initial=first_call and j == 0)


def merge(hists: list, b: float, opt_state=None, method: str = "dense"):
    """One History from the Histories of consecutive fit calls (steps, events and times added up;
    ``fallback_step`` counted from the first call's start; the rest from the last call)."""
    if not hists:
        return untrained(0, 0.0, b, opt_state, method, n_active=None)
    cat = {k: np.concatenate([np.asarray(getattr(h, k)) for h in hists]) for k in
           ("loss", "fire_mean", "fire_max", "fire_union")}
    counts = [len(h.loss) for h in hists]
    total = sum(counts)
    ms = sum(h.ms_per_step * k for h, k in zip(hists, counts) if k) / total if total else float("nan")
    fallback, before = None, 0
    for h, k in zip(hists, counts):
        if h.fallback_step is not None and fallback is None:
            fallback = before + h.fallback_step
        before += k
    last = hists[-1]
    return dataclasses.replace(last, **cat, events=[e for h in hists for e in h.events], ms_per_step=ms,
                               setup_s=sum(h.setup_s for h in hists), fallback_step=fallback)


def untrained(steps: int, loss0: float, b: float, opt_state, method: str, *, n_active):
    """The History of ``steps`` steps of a model that cannot move (no neuron fires: every loss is
    ``loss0``, every fire set empty); no step is run, so no time per step."""
    zeros = np.zeros(steps, np.int64)
    return _library.empty_history(
        loss=np.full(steps, loss0, np.float64), fire_mean=zeros.astype(np.float64), fire_max=zeros,
        fire_union=zeros, events=[], opt_state=opt_state, method=method, b=float(b), ms_per_step=float("nan"),
        setup_s=0.0, n_active=n_active, span=False, fallback_step=None, state_bytes=0)
