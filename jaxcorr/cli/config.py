"""A run of ``jaxcorr train`` before training (private): its settings, data, memory plan, start state.

:func:`prepare` turns the parsed options into a :class:`Run`: the settings (:class:`Config`: the
options given, else the ``--resume`` checkpoint's, else :data:`jaxcorr.cli.args.DEFAULTS`), the
data (a ``--data`` file, matched to a resumed checkpoint by content, or the synthetic data), the
memory plan that picks the full-width or the wide model (:func:`jaxcorr.memory.plan`), and the
state the run starts from (fresh ``nn.init`` with ``--init rows``; a fresh ``--init span`` run is
drawn in set-up, :mod:`jaxcorr.cli.execute`; or the checkpoint's). ``--init`` is resolved here
(``_resolve_init``: the option, the checkpoint's definition, else ``span``, on one process or
several), and an ``--init span`` run is planned with :func:`jaxcorr.memory.plan`'s
``init="span"`` (no m d term) unless it materialises W(0) for ``--method dense``. With ``--save`` the run holds the
checkpoint's writer's lock (:func:`jaxcorr.checkpoint.lock`) from here to its end.

``--method auto`` (the default) is resolved here, with the memory plan: the candidates are the
methods of :mod:`jaxcorr.methods` that can run this run (dense is none for a wide model or with
``--compare dense``; several processes take :func:`jaxcorr.distributed.mesh_method`);
:func:`jaxcorr.cost.choose` picks the one predicted fastest for ``--steps`` steps from the data's
sizes and row norms, and when its memory plan is refused the next fastest is taken. ``--eval-data``
is read here too (like ``--data``; ``--normalize`` applies to it).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from jaxcorr import errors, methods, optimizers
from jaxcorr.cli import _library
from jaxcorr.cli.args import AUTO, DEFAULTS, INITS, METHODS

__all__ = ["CONFIG_KEYS", "Config", "EvalData", "Run", "make_optimizer", "prepare"]

#: The settings fixed for a run, checked against the checkpoint on ``--resume``.
CONFIG_KEYS = ("n", "m", "d", "b", "lr", "optimizer", "seed")


@dataclasses.dataclass
class Config:
    """The run's settings (what a checkpoint's ``config`` records, with ``dtype`` and the data's path).

    ``n``/``d`` are None until the data file is read, ``b``/``lr`` until their defaults are taken
    (``sqrt(0.4 ln m)``, the optimizer's own learning rate)."""

    n: int | None
    m: int
    d: int | None
    b: float | None
    lr: float | None
    optimizer: str
    seed: int
    method: str  # "auto" until prepare() resolves it, then the method that runs
    data: str | None
    normalize: bool
    init: str | None = None  # "span" or "rows" (None until prepare() resolves the default)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EvalData:
    """The ``--eval-data`` file's points, read like ``--data`` (normalised with ``--normalize``)."""

    path: str
    X: np.ndarray
    y: np.ndarray


@dataclasses.dataclass
class Run:
    """Everything a run needs once it is prepared (:func:`prepare`)."""

    cfg: Config
    X: np.ndarray
    y: np.ndarray
    norms: np.ndarray  # the rows' Euclidean norms of X
    optimizer: Any
    params0: Any  # nn.Params, a wide model, or None (a wide run draws its rows in set-up)
    state0: Any  # the optimizer state to start from (None: a fresh one)
    step0: int
    W0: Any  # nn.init(seed) where the run holds it (the base of compact checkpoints), else None
    dtype: np.dtype
    notes: list
    memory: Any  # the jaxcorr.memory.Plan: full width or wide, its estimate, the memory available
    platform: str
    mesh: Any
    wide: bool
    t_start: float  # time.perf_counter() at the start of the process (or of the main() call)
    cache: str | None = None
    setup: dict | None = None  # the wide set-up's info, once it ran
    choice: dict | None = None  # how the method was chosen (the --json "method_choice")
    method_warning: str | None = None  # a sparse --method predicted slower per step than dense
    eval_data: EvalData | None = None  # --eval-data
    span: bool = False  # a span-defined model trains (--init span, a sparse method): params0 a SpanModel
    span0: Any = None  # the untrained SpanModel of a fresh --init span run (its W(0)), once set up


@functools.lru_cache(maxsize=32)
def make_optimizer(name: str, lr: float):
    """The optimizer for ``--optimizer name --lr lr``: :func:`jaxcorr.optimizers.make` (the table
    shared with the scripts). One object per (name, lr), so that repeated runs in one process reuse
    :func:`jaxcorr.train.fit`'s compiled code."""
    return optimizers.make(name, lr)


def prepare(args, sig, t_start: float, hold) -> Run:
    """Everything before training: settings, data, memory plan, start state. ``hold`` enters a
    context for the rest of the run (the ``--save`` path's lock). Raises ValueError / OSError with
    one-line messages (:class:`jaxcorr.errors.CheckpointError` for a checkpoint that cannot be used
    or written, :class:`jaxcorr.errors.InsufficientMemoryError` for a run that cannot fit)."""
    import jax
    import jax.numpy as jnp

    from jaxcorr import distributed, nn

    del sig  # (a signal during preparation ends the process: nothing to save yet)
    mesh = distributed.setup(args.coordinator, args.num_processes, args.process_id)  # None: one process
    dtype = np.dtype(jnp.result_type(float))  # float32, or float64 under JAX_ENABLE_X64
    cfg, kind = _resolve_config(args)
    cfg.init = _resolve_init(args, cfg, kind)
    if args.save is not None:
        _claim(args.save, cfg, hold, writer=jax.process_index() == 0)
    X, y, notes = _load_data(args, cfg, dtype)
    eval_data = _load_eval(args, cfg, dtype, notes)
    norms = np.linalg.norm(X.astype(np.float64), axis=1)
    if not np.allclose(norms, 1, atol=1e-3):
        notes.append(f"note: the rows of X have norms in [{norms.min():.3g}, {norms.max():.3g}]; the paper's "
                     "bounds assume unit norm (--normalize rescales them)")
    device = jax.devices()[0]
    if cfg.b is None:
        cfg.b = float(nn.default_threshold(cfg.m))
    if cfg.lr is None:
        cfg.lr = float(optimizers.spec(cfg.optimizer).learning_rate)  # each optimizer's own default
    optimizer = make_optimizer(cfg.optimizer, cfg.lr)
    plan, choice, warning = _method_and_plan(args, cfg, dtype, _library.available(device), norms, kind, mesh, X)
    wide = plan.wide and plan.init == "rows"  # (a span-defined model is no WideParams)
    params0, state0, step0, W0 = _start_state(args, cfg, kind, wide, X, y, optimizer, dtype, mesh is None)
    return Run(cfg=cfg, X=X, y=y, norms=norms, optimizer=optimizer, params0=params0, state0=state0, step0=step0,
               W0=W0, dtype=dtype, notes=notes, memory=plan, platform=device.platform, mesh=mesh, wide=wide,
               t_start=t_start, choice=choice, method_warning=warning, eval_data=eval_data,
               span=plan.init == "span")


def _resolve_init(args, cfg: Config, kind) -> str:
    """``--init``: the option, else the ``--resume`` checkpoint's definition (a span checkpoint is
    ``span``; any other records it in its config, ``rows`` before the option existed), else ``span``
    (several processes too: each builds the same held rows, and they train on the mesh's row path).
    Refused (ValueError, one line): an ``--init`` that contradicts the checkpoint, and ``--wide on|off``
    (the ``nn.init`` wide model or full width) with ``span``."""
    if kind is not None:
        saved = "span" if kind == "span" else (cfg.init or "rows")
        if args.init is not None and args.init != saved:
            raise errors.CheckpointError(f"checkpoint {args.resume!r} defines W(0) by --init {saved}, but --init "
                                         f"{args.init} was given; a resumed run keeps its definition of W(0) "
                                         "(drop --init)", args.resume)
        init = saved
    else:
        init = args.init or "span"
    if init == "span" and args.wide != "auto" and kind in (None, "span"):
        how = "--init span (the default)" if args.init is None and kind is None else "--init span"
        raise ValueError(f"--wide {args.wide} is for W(0) drawn as nn.init rows, but {how} defines W(0) by its key "
                         "and the data's basis and holds only the rows that can fire anyway: drop --wide, or add "
                         "--init rows")
    return init


def _claim(path: str, cfg: Config, hold, writer: bool) -> None:
    """Check that ``--save path`` may be written (new, or a checkpoint; never the data file), then
    hold its writer's lock for the run (the writing process only): a second run saving to the same
    path is refused here, before it trains."""
    try:
        _library.check_target(path, protect=(cfg.data,))
    except (ValueError, OSError) as e:
        raise ValueError(f"--save {path}: {e}") from None
    if writer:
        try:
            hold(_library.lock(path))
        except errors.CheckpointError as e:
            raise errors.CheckpointError(f"--save {path}: {e}", path) from None


def _load_data(args, cfg: Config, dtype):
    """``(X, y, notes)``: the --data file (normalised with --normalize), else the synthetic data; sets
    ``cfg.n``/``cfg.d`` from a file."""
    from jaxcorr import data, datafiles

    notes = []
    if cfg.data is None:
        X, y = data.synthetic(cfg.seed, cfg.n, cfg.d, dtype=dtype)
        return np.asarray(X), np.asarray(y), notes
    X, y, info = datafiles.load_data(cfg.data, dtype, return_info=True)
    if info["header"] is not None:
        notes.append(f"data: skipped the header row (line {info['header_line']}: {info['header'][:60]!r})")
    if cfg.normalize:
        X = datafiles.unit_rows(X)
    for name, have in (("n", X.shape[0]), ("d", X.shape[1])):
        if getattr(args, name) is not None and getattr(args, name) != have:
            raise ValueError(f"--{name} {getattr(args, name)} given, but the data file has {name}={have}")
    cfg.n, cfg.d = X.shape
    return X, y, notes


def _load_eval(args, cfg: Config, dtype, notes: list) -> EvalData | None:
    """The ``--eval-data`` file, read like ``--data`` (:func:`jaxcorr.datafiles.load_data`, rows to
    unit norm with ``--normalize``); its ``d`` must be the training data's."""
    from jaxcorr import datafiles

    path = args.eval_data
    if path is None:
        return None
    try:
        X, y, info = datafiles.load_data(path, dtype, return_info=True)
    except errors.DataError as e:
        raise errors.DataError(f"--eval-data: {e}", e.path) from None
    if X.shape[1] != cfg.d:
        raise ValueError(f"--eval-data {path} has d={X.shape[1]} (columns of X), but the model is trained on "
                         f"d={cfg.d}: the held-out points must have the training data's dimension")
    if info["header"] is not None:
        notes.append(f"eval data: skipped the header row (line {info['header_line']}: {info['header'][:60]!r})")
    if cfg.normalize:
        X = datafiles.unit_rows(X)
    return EvalData(path=path, X=X, y=y)


# ------------------------------------------------------------------------------------ the method
def _method_and_plan(args, cfg: Config, dtype, available, norms, kind, mesh, X):
    """``(memory plan, method_choice dict, warning or None)``; sets ``cfg.method`` when it is ``auto``.

    A named method is planned as given, with a warning when it is sparse, the run is full width and
    :func:`jaxcorr.cost.dense_expected_faster` says dense would be faster per step. ``auto``: the
    fastest exact candidate by :func:`jaxcorr.cost.choose` whose memory plan is not refused; a
    refused one is dropped and the choice made again among the rest (its reason says so). When
    every candidate is refused, the refusal naming the widest ``m`` that fits is raised. The
    predictions use |A| counted on the data (:func:`jaxcorr.cost.sampled_active`: real points are
    correlated and fire far fewer rows than points in general position)."""
    ask = dict(n=cfg.n, m=cfg.m, d=cfg.d, optimizer=cfg.optimizer, b=cfg.b, x_norms=[float(v) for v in norms],
               dtype=np.dtype(dtype).name, n_active=_library.sampled_active(X, cfg.m, cfg.b))

    def plan_for(method: str):
        cfg.method = method
        return _memory_plan(args, cfg, dtype, available, norms, resumed=kind)

    if cfg.method != AUTO:
        plan = plan_for(cfg.method)
        return (plan, *_named(args, cfg, plan, ask))
    if mesh is not None:  # several processes: the library's method for a mesh (the cost model is one process's)
        from jaxcorr import distributed

        plan = plan_for(distributed.mesh_method())
        return plan, {"requested": AUTO, "chosen": cfg.method, "dense_expected_faster": None,
                      "reason": f"{cfg.method}: several processes, the method of jaxcorr.distributed.mesh_method "
                                "(the cost model jaxcorr.cost is calibrated on one process)"}, None
    return (*_auto(args, plan_for, ask, kind, span=cfg.init == "span"), None)


def _span_choice(choice):
    """:func:`jaxcorr.cost.choose`'s choice re-ranked for an ``--init span`` run: a sparse method's
    set-up there is the draw of A (common to all of them, O(|A|)), not the cost model's ``nn.init``
    draw and scan over all m rows, so the sparse methods are ranked by compilation and steps
    (``total_s - setup_s``); dense (materialised W(0), all m rows) keeps its total."""
    preds = choice.predictions

    def total(k):
        p = preds[k]
        return p.total_s - (p.setup_s if methods.get(k).sparse else 0.0)

    exact = [k for k, p in preds.items() if p.exact]
    best = min(exact, key=total)
    if best == choice.method:
        return choice
    p = preds[best]
    why = (f"{best}: predicted {p.step_s * 1e3:.3g} ms/step, {total(best):.3g} s for the run against "
           + ", ".join(f"{k} {total(k):.3g} s" for k in exact if k != best)
           + " (--init span: the sparse set-up is the draw of A, not counted)")
    slower = methods.get(best).sparse and "dense" in preds and preds["dense"].step_s < p.step_s
    return choice._replace(method=best, reason=why, dense_expected_faster=bool(slower))


def _auto(args, plan_for, ask: dict, kind, span: bool = False):
    """``(plan, method_choice)`` of ``--method auto`` on one process (see :func:`_method_and_plan`)."""
    cands, excluded = _candidates(args, kind)
    refused: dict = {}
    while True:
        try:
            choice = _library.choose_method(**ask, steps=args.steps, methods=cands)
            if span:
                choice = _span_choice(choice)
        except (ValueError, KeyError) as e:  # no exact candidate left (KeyError: a method the cost model lacks)
            if refused:
                raise _widest(refused) from None
            raise ValueError(f"--method auto: {e}") from None
        try:
            plan = plan_for(choice.method)
        except (errors.InsufficientMemoryError, ValueError) as e:
            refused[choice.method] = e
            cands = [k for k in cands if k != choice.method]
            if not cands:
                raise _widest(refused) from None
            continue
        return plan, _auto_info(args, choice, cands, excluded, refused, plan)


def _candidates(args, kind) -> tuple[list, dict]:
    """The methods ``auto`` chooses among (one process), and why the others are not (name -> reason)."""
    excluded = {}
    for k in METHODS:
        if methods.get(k).sparse:
            continue
        if args.wide == "on" or kind == "wide":
            excluded[k] = "the wide model holds only the rows that can fire; dense trains all m rows"
        elif kind == "span":
            excluded[k] = "the span checkpoint goes on from its held rows; dense trains all m rows"
        elif args.compare == k:
            excluded[k] = f"--compare {k} runs it as the baseline"
    return [k for k in METHODS if k not in excluded], excluded


def _widest(refused: dict) -> Exception:
    """Of the candidates' refusals (method -> error), the one whose widest fitting ``m`` is largest,
    the sparse methods' first (they may go wide; dense's refusal names a sparse method as the way
    out, which was refused too); else the first."""
    errs = list(refused.values())
    for pool in ([e for k, e in refused.items() if methods.get(k).sparse], errs):
        mem = [e for e in pool if isinstance(e, errors.InsufficientMemoryError)]
        if mem:
            return max(mem, key=lambda e: e.largest or 0)
    return errs[0]


def _auto_info(args, choice, cands, excluded: dict, refused: dict, plan) -> dict:
    """The ``--json`` ``method_choice`` of ``auto``: what was chosen and why, every prediction."""
    reason = choice.reason
    if refused:
        reason += "; " + ", ".join(refused) + " would not fit in memory"
    if plan.wide and plan.init == "rows" and args.wide == "auto":
        reason += "; the wide model, as the full-width run would not fit in memory"
    for k, why in excluded.items():
        reason += f"; {k} is not a candidate: {why}"
    preds = choice.predictions
    return {"requested": AUTO, "chosen": choice.method, "reason": reason,
            "dense_expected_faster": bool(choice.dense_expected_faster),
            "candidates": list(cands) + list(refused),
            "predicted_step_s": {k: p.step_s for k, p in preds.items()},
            "predicted_total_s": {k: p.total_s for k, p in preds.items()},
            "excluded": {**excluded, **{k: p.reason for k, p in preds.items() if not p.exact},
                         **{k: " ".join(str(e).split()) for k, e in refused.items()}}}


def _named(args, cfg: Config, plan, ask: dict) -> tuple[dict, str | None]:
    """The ``method_choice`` of a method given (or a resumed checkpoint's), and the warning when it is
    sparse, full width, and dense is predicted faster per step (:func:`jaxcorr.cost.dense_expected_faster`)."""
    given = args.method is not None
    info = {"requested": cfg.method if given else None, "chosen": cfg.method,
            "reason": f"--method {cfg.method}" if given else "the --resume checkpoint's method",
            "dense_expected_faster": None}
    if not methods.get(cfg.method).sparse or (plan.wide and plan.init == "rows"):
        return info, None
    try:
        slower = _library.dense_expected_faster(cfg.method, **ask)
    except ValueError:  # the cost model cannot say (sizes outside it): no warning
        return info, None
    info["dense_expected_faster"] = bool(slower)
    if not (slower and given):
        return info, None
    preds = _library.choose_method(**ask, steps=args.steps, methods=(cfg.method, "dense")).predictions
    ms = {k: f"{preds[k].step_s * 1e3:.3g} ms" for k in (cfg.method, "dense")}
    return info, (f"--method {cfg.method}: dense GD is predicted faster per step here ({ms['dense']} against "
                  f"{cfg.method}'s {ms[cfg.method]} at n={cfg.n}, m={cfg.m}, d={cfg.d}, jaxcorr.cost); "
                  "--method dense or --method auto may train faster")


def _start_state(args, cfg: Config, kind, wide: bool, X, y, optimizer, dtype, one_process: bool = True):
    """``(params0, state0, step0, W0)``: the fresh ``nn.init`` (None for a wide run, which draws its
    rows in set-up), or the ``--resume`` checkpoint's model (:func:`jaxcorr.checkpoint.restore`: all m
    rows, or for a wide run the held rows; the data matched by content). ``W0`` is ``nn.init(seed)``
    where the run holds it and saves (the base of compact checkpoints; several processes save all of
    W), else None."""
    import jax

    from jaxcorr import nn

    if kind is None:
        if wide or cfg.init == "span":  # drawn in set-up (jaxcorr.cli.execute)
            return None, None, 0, None
        p = nn.init(jax.random.key(cfg.seed), cfg.m, cfg.d, dtype=dtype)
        return p, None, 0, p
    ck = _library.restore(args.resume, X=X, y=y, optimizer=optimizer, as_wide=wide)
    if kind == "span":  # a SpanModel: its optimizer state is its training's (model.trained)
        return ck.model, None, ck.step, None
    if wide:  # a model carrying coefficients goes on from their state: the row form is not kept
        state = None if one_process and ck.model.coefficients is not None else ck.opt_state
        return ck.model, state, ck.step, None
    again = args.save is not None and one_process and cfg.init == "rows"  # W(0) drawn again, as a fresh run holds it
    W0 = nn.init(jax.random.key(cfg.seed), cfg.m, cfg.d, dtype=dtype) if again else None
    return ck.model, ck.opt_state, ck.step, W0


def _memory_plan(args, cfg: Config, dtype, available, norms, resumed=None):
    """The full-width or the wide model, checked against memory before anything is allocated
    (:func:`jaxcorr.memory.plan`: full width whenever it fits and ``--wide`` is not ``on``, else the
    wide model for a sparse method; a run that fits neither way is refused with one line naming the
    estimate, the memory available and the widest m that fits). ``resumed`` is the kind of the
    ``--resume`` checkpoint: a wide one stays wide, a full one full width, a compact one goes either
    way; an option that contradicts it is refused here, naming the option."""
    if resumed == "wide" and args.wide == "off":
        raise ValueError(f"--resume {args.resume} holds a wide model (only its active rows); drop --wide off")
    if resumed == "wide" and args.compare:  # (the baseline would train the held rows as a narrow network)
        raise ValueError(f"--resume {args.resume} holds a wide model (only its active rows), but --compare "
                         f"{args.compare} needs the full-width weights; drop --compare")
    if resumed == "full" and args.wide == "on":
        raise ValueError(f"--resume {args.resume} holds a full-width model; drop --wide on")
    wide, init = args.wide, "rows"
    if cfg.init == "span" and resumed in (None, "span"):
        init, wide = _span_plan(args, cfg, resumed)
    return _library.memory_plan(cfg.method, n=cfg.n, m=cfg.m, d=cfg.d, wide=wide, resumed=resumed,
                                compare=args.compare, available=available, optimizer=cfg.optimizer, dtype=dtype,
                                b=cfg.b, x_norm=float(np.max(norms)) if norms.size else 1.0, init=init)


def _span_plan(args, cfg: Config, resumed) -> tuple[str, str]:
    """``(init, wide)`` of the memory plan of an ``--init span`` run: a sparse method trains the
    span-defined model (``"span"``: no ``m d`` term); ``dense`` materialises W(0) (all ``m`` rows,
    :meth:`jaxcorr.span_init.SpanModel.params`, ``m <= 2^24``) and trains it at full width
    (``"rows"``, ``"off"``). ``--compare dense`` materialises W(0) for its baseline (``m <= 2^24``)."""
    limit = _library.MAX_MATERIALIZE
    if not methods.get(cfg.method).sparse:
        if resumed == "span":
            raise ValueError(f"--resume {args.resume} holds a span-defined model (its held rows and their training "
                             "state); it goes on with a sparse method (--method active, dtree or wtree), not "
                             f"--method {cfg.method}")
        if cfg.m > limit:
            raise ValueError(f"--method {cfg.method} with --init span materialises all m rows of W(0), at most "
                             f"m = 2^{limit.bit_length() - 1}, but --m {cfg.m} was given: train a sparse method "
                             "(--method active), or --init rows")
        return "rows", "off"
    if args.compare:
        if resumed == "span":
            raise ValueError(f"--resume {args.resume} holds a span-defined model (only its held rows), but --compare "
                             f"{args.compare} needs the full-width weights and their optimizer state; drop --compare")
        if cfg.m > limit:
            raise ValueError(f"--compare {args.compare} with --init span materialises all m rows of W(0) for the "
                             f"baseline, at most m = 2^{limit.bit_length() - 1}, but --m {cfg.m} was given: drop "
                             "--compare, or --init rows")
    if args.fallback == "dense":
        raise ValueError(f"--fallback dense needs all m rows of W, but --init span trains only the held rows of "
                         f"--method {cfg.method}: drop --fallback, or add --init rows")
    return "span", "auto"


def _resolve_config(args) -> tuple[Config, str | None]:
    """The run's settings: options given, else the checkpoint's (with --resume), else DEFAULTS.

    A checkpoint names its data file, but the data are matched by content: ``--data`` may give any
    path whose contents have the checkpoint's fingerprint (checked when the checkpoint is loaded).

    Returns:
      ``(cfg, kind)``: the settings, and the kind of the ``--resume`` checkpoint: None (no resume),
      ``"full"`` (all of W), ``"compact"`` (a full-width run's rows that differ from W(0)) or
      ``"wide"`` (a wide run's active rows). Only the metadata is read here.
    """
    given = {k: getattr(args, k) for k in CONFIG_KEYS}
    if args.resume is None:
        vals = {k: (DEFAULTS.get(k) if v is None else v) for k, v in given.items()}
        if args.data is not None:
            vals["n"] = vals["d"] = None  # taken from the file
        return Config(**vals, method=args.method or DEFAULTS["method"], data=args.data,
                      normalize=args.normalize), None
    path = args.resume
    kind = _library.kind(path)
    saved = _library.read_meta(path).get("config") or {}
    if kind != "full" and "m" not in saved:  # a wide checkpoint's width
        saved = {**saved, "m": _library.wide_width(saved)}
    missing = [k for k in (*CONFIG_KEYS, "data") if k not in saved]
    if missing:
        raise errors.CheckpointError(f"checkpoint {path!r} lacks the run settings {missing}; it was not written "
                                     "by `jaxcorr train`", path)
    for k in CONFIG_KEYS:
        v = given[k]
        if v is not None and v != saved[k]:
            raise errors.CheckpointError(
                f"checkpoint {path!r} was trained with {k}={saved[k]!r}, but --{k} {v!r} was given; "
                "a resumed run keeps its data, sizes and hyperparameters", path)
    if args.normalize and not saved.get("normalize"):
        raise errors.CheckpointError(f"checkpoint {path!r} was trained without --normalize", path)
    # The method may change on resume: all follow the same trajectory (to float rounding).
    method = args.method or (saved.get("method") if saved.get("method") in METHODS else DEFAULTS["method"])
    cfg = Config(**{k: saved[k] for k in CONFIG_KEYS}, method=method, data=_resume_data(args, saved),
                 normalize=bool(saved.get("normalize")), init=saved.get("init") if saved.get("init") in INITS else None)
    return cfg, kind


def _resume_data(args, saved: dict):
    """The data file of a resumed run: --data, else the checkpoint's file where it still is."""
    path = args.resume
    if saved["data"] is None:
        if args.data is not None:
            raise errors.CheckpointError(f"checkpoint {path!r} was trained on the synthetic data, but --data "
                                         f"{args.data!r} was given", path)
        return None
    if args.data is not None:
        return args.data
    for p in (saved.get("data_abspath"), saved["data"]):
        if p is not None and os.path.exists(p):
            return p
    raise errors.CheckpointError(
        f"checkpoint {path!r} was trained on {saved['data']!r}, which is not there any more; pass "
        "--data FILE (any path holding the same data)", path)
