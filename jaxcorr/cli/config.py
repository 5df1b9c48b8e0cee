"""A run of ``jaxcorr train`` before training (private): its settings, data, memory plan, start state.

:func:`prepare` turns the parsed options into a :class:`Run`: the settings (:class:`Config`: the
options given, else the ``--resume`` checkpoint's, else :data:`jaxcorr.cli.args.DEFAULTS`), the
data (a ``--data`` file, matched to a resumed checkpoint by content, or the synthetic data), the
memory check that picks the full-width or the wide model (:class:`MemoryPlan`), and the state the
run starts from (fresh ``nn.init``, or the checkpoint's).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any

import numpy as np

from jaxcorr import errors, optimizers
from jaxcorr.cli import _library
from jaxcorr.cli.args import DEFAULT_METHOD, DEFAULTS, METHODS

__all__ = ["CONFIG_KEYS", "Config", "MemoryPlan", "Run", "make_optimizer", "prepare"]

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
    method: str
    data: str | None
    normalize: bool

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MemoryPlan:
    """The memory check's figures: the estimate and the bytes available (None: unknown) and where
    the latter come from."""

    estimate: float | None
    available: int | None
    source: str | None = None


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
    memory: MemoryPlan
    platform: str
    mesh: Any
    wide: bool
    t_start: float  # time.perf_counter() at the start of the process (or of the main() call)
    cache: str | None = None
    setup: dict | None = None  # the wide set-up's info, once it ran


@functools.lru_cache(maxsize=32)
def make_optimizer(name: str, lr: float):
    """The optimizer for ``--optimizer name --lr lr``: :func:`jaxcorr.optimizers.make` (the table
    shared with the scripts). One object per (name, lr), so that repeated runs in one process reuse
    :func:`jaxcorr.train.fit`'s compiled code."""
    return optimizers.make(name, lr)


def prepare(args, sig, t_start: float) -> Run:
    """Everything before training: settings, data, memory check, start state. Raises ValueError /
    OSError / MemoryError with one-line messages."""
    import jax
    import jax.numpy as jnp

    from jaxcorr import distributed, nn

    del sig  # (a signal during preparation ends the process: nothing to save yet)
    mesh = distributed.setup(args.coordinator, args.num_processes, args.process_id)  # None: one process
    dtype = np.dtype(jnp.result_type(float))  # float32, or float64 under JAX_ENABLE_X64
    cfg, kind = _resolve_config(args)
    if args.save is not None:
        try:
            _library.check_target(args.save, protect=(cfg.data,))
        except (ValueError, OSError) as e:
            raise ValueError(f"--save {args.save}: {e}") from None
    X, y, notes = _load_data(args, cfg, dtype)
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
    mem, wide = _memory_plan(args, cfg, dtype, _library.available_bytes(device), norms, resumed=kind)
    params0, state0, step0, W0 = _start_state(args, cfg, kind, wide, X, y, optimizer, dtype, mesh is None)
    return Run(cfg=cfg, X=X, y=y, norms=norms, optimizer=optimizer, params0=params0, state0=state0, step0=step0,
               W0=W0, dtype=dtype, notes=notes, memory=mem, platform=device.platform, mesh=mesh, wide=wide,
               t_start=t_start)


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


def _start_state(args, cfg: Config, kind, wide: bool, X, y, optimizer, dtype, one_process: bool = True):
    """``(params0, state0, step0, W0)``: the fresh ``nn.init`` (None for a wide run, which draws its
    rows in set-up), or the ``--resume`` checkpoint (a compact one of a full-width run expanded back
    to all m rows, unless the run is wide). ``W0`` is ``nn.init(seed)`` where the run holds it (the
    base of compact checkpoints; several processes save all of W), else None."""
    import jax

    from jaxcorr import nn

    if kind is None:
        if wide:
            return None, None, 0, None
        p = nn.init(jax.random.key(cfg.seed), cfg.m, cfg.d, dtype=dtype)
        return p, None, 0, p
    if kind == "full":  # W(0) drawn again (as a fresh run holds it) so that the next saves are compact
        ck = _library.load_full(args.resume, X=X, y=y, optimizer=optimizer)  # data matched by content
        again = args.save is not None and one_process
        W0 = nn.init(jax.random.key(cfg.seed), cfg.m, cfg.d, dtype=dtype) if again else None
        return ck["params"], ck["opt_state"], ck["step"], W0
    ck = _library.load_wide(args.resume, X=X, y=y, optimizer=optimizer)
    if wide:  # a model carrying coefficients goes on from their state: the row form is not kept
        state = None if one_process and ck["model"].coefficients is not None else ck["opt_state"]
        return ck["model"], state, ck["step"], None
    params, state, W0 = _library.expand(ck["model"], ck["opt_state"], optimizer)
    return params, state, ck["step"], W0


def _memory_plan(args, cfg: Config, dtype, available, norms, resumed=None) -> tuple[MemoryPlan, bool]:
    """Check the run's memory before allocating anything and pick the full-width or the wide model.

    The full-width model (``nn.init`` + ``train.fit`` over all m rows) is kept whenever it fits and
    ``--wide`` is not ``on``; otherwise, for a sparse method, the wide model (W(0) streamed from the
    seed, only the rows that can fire held). A run that fits neither way raises one line naming the
    estimate, the memory available and the widest m that fits. ``resumed`` is the kind of the
    ``--resume`` checkpoint (:func:`_resolve_config`): a wide run's stays wide, a full one stays
    full width, a compact one of a full-width run goes either way.
    """
    method, n, m, d = cfg.method, cfg.n, cfg.m, cfg.d
    if resumed == "wide" and args.wide == "off":
        raise ValueError(f"--resume {args.resume} holds a wide model (only its active rows); drop --wide off")
    if resumed == "wide" and args.compare:  # (the baseline would train the held rows as a narrow network)
        raise ValueError(f"--resume {args.resume} holds a wide model (only its active rows), but --compare "
                         f"{args.compare} needs the full-width weights; drop --compare")
    if resumed == "full" and args.wide == "on":
        raise ValueError(f"--resume {args.resume} holds a full-width model; drop --wide on")
    spec = optimizers.spec(cfg.optimizer)
    if not (resumed == "wide" or args.wide == "on"):
        try:
            mem = _library.check_memory(method, n, m, d, itemsize=dtype.itemsize, optimizer=cfg.optimizer,
                                        compare=args.compare, available=available)
            return MemoryPlan(mem["estimate"], mem["available"], mem.get("source")), False
        except (MemoryError, ValueError) as e:
            if method == "dense" and isinstance(e, MemoryError) and not args.compare:
                fits = _library.wide_largest_width(DEFAULT_METHOD, n, d, available[0] or 0, dtype,
                                                   optimizer_slots=spec.state_slots, span=spec.span)
                raise MemoryError(f"{e}; --method {DEFAULT_METHOD} (wide) fits up to --m {fits}") from None
            if args.wide == "off" or method == "dense" or args.compare or resumed == "full":
                raise  # (a resumed full checkpoint stays full width)
    est = _library.wide_check_fits(method, n, d, m, dtype, available=available[0], b=cfg.b,
                                   x_norm=float(np.max(norms)), optimizer_slots=spec.state_slots, span=spec.span)
    return MemoryPlan(est["total"], available[0], available[1]), True


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
    saved = _library.read_meta(path).get("config") or {}
    form = saved.get("implicit")  # the checkpoint format's key for the wide and compact forms
    kind = "full" if not isinstance(form, dict) else ("compact" if form.get("full_width") else "wide")
    if kind != "full" and "m" not in saved:  # a wide checkpoint's width
        saved = {**saved, "m": form.get("width")}
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
                 normalize=bool(saved.get("normalize")))
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
