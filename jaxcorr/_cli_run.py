"""Process behaviour of ``jaxcorr train`` (private): signals, progress display, chunks sized by time.

- :class:`Signals`: Ctrl-C (SIGINT) and SIGTERM ask the run to stop at the next chunk boundary (the
  caller saves a checkpoint and exits 130 / 143); a second signal aborts at once. When the process
  is a command-line run, a watchdog thread also sees each signal while the main thread is inside XLA
  (compiling, or building the trees), so a signal during set-up, when nothing has been trained yet,
  ends the process at once instead of after the set-up.
- :class:`Progress`: a tqdm bar on a terminal (set-up, then steps with steps/s, loss and ETA), plain
  lines when stderr is not a terminal, nothing when quiet.
- :func:`initial_chunk` / :func:`choose_chunk`: how many steps a jitted chunk runs, so that a chunk
  takes about :data:`TARGET_CHUNK_S` seconds at any size (the stop latency is one chunk).
"""

from __future__ import annotations

import math
import os
import signal
import sys
import threading
import time

__all__ = ["Signals", "Progress", "initial_chunk", "choose_chunk", "TARGET_CHUNK_S", "EXIT_CODES", "exit_now"]

#: Wall time a chunk should take: the longest wait between a signal and the stop.
TARGET_CHUNK_S = 0.5
#: Exit status of a run stopped by a signal (128 + signal number, as shells report it).
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
#: Phases in which a command-line process ends at once on a signal (nothing unsaved would be lost).
_AT_ONCE = {
    "setup": "during set-up; no step trained since the last saved state, nothing to save",
    "finish": "after the training finished (any --save checkpoint is written); no summary printed",
    "compare": "during the --compare baseline run (the main run finished; any --save checkpoint is written)",
}


def initial_chunk(n: int, m: int, d: int, steps: int, platform: str = "cpu", *, rows: float | None = None,
                  span: bool = False, trees: bool = False) -> int:
    """A first chunk length from an upper bound on the time per step.

    Dense (``rows=None``): 1 ns per multiply-add of the dense step, O(n m d), on a CPU (measured: 0.7
    ns on the 2-core reference machine). Sparse (``rows``: the active rows the step works on, |A| or
    its estimate): per row and point 4 ns on the span path (``span``, no ``d``: measured 2 ns at
    m = 2^26) or 0.6 ns per dimension otherwise (measured 0.3 ns for adam at m = 2^22), three times
    that for the tree methods (``trees``: frontier and rebuild, measured 10 ns per row and point).
    An accelerator is counted 50 times faster. At least 0.2 ms per step (the fixed cost of a step:
    measured 0.05-0.12 ms at n=4, m=256, d=4). A chunk too short pays a per-chunk cost (page faults
    of the temporaries, measured 16 ms at |A| = 2^19.3) on every chunk; :class:`ChunkTimer` corrects
    the estimate once the first chunks are measured.
    """
    scale = 1.0 if platform == "cpu" else 0.02
    if rows is None:
        t_step = n * m * d * 1e-9
    else:
        per = 4e-9 if span else 0.6e-9 * d
        t_step = rows * n * per * (3 if trees else 1)
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

    ``should_resize`` after a callback returns a new chunk length when a chunk took over 2 s (the
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
        # set-up took: only where that is short (at m = 2^22 a DTree set-up takes tens of seconds).
        if self.calls >= 2 and ideal >= 4 * self.chunk and left > 0 and self.setup_s <= 2 * TARGET_CHUNK_S:
            saved = (left / self.chunk - left / ideal) * self.overhead_s
            cost = self.setup_s + done * t_step
            if saved > 2 * cost:
                return ideal
        return None


class Signals:
    """SIGINT/SIGTERM handling for one run (a context manager).

    The first signal sets :attr:`signum` (the caller stops at its next check, saves, and exits with
    :attr:`exit_code`); a second one aborts at once: ``os._exit`` in a command-line process,
    ``KeyboardInterrupt`` otherwise. With ``process=True`` a watchdog thread reads the signals from
    a wakeup pipe, so they are seen even while the main thread is inside XLA; if the run is still in
    :attr:`phase` ``"setup"`` (nothing trained since the last durable state), ``"finish"`` or
    ``"compare"`` (training over, checkpoint written), the process ends at once; in ``"resetup"``
    (a new ``fit`` call after some steps) it does so only when nothing would be saved anyway.
    """

    def __init__(self, process: bool, what_on_stop: str = "", saving: bool = False):
        self.process = process
        self.what_on_stop = what_on_stop
        self.saving = saving  # a stop will save a checkpoint (--save)
        self.signum = None
        self.count = 0
        self.phase = "setup"
        self._lock = threading.Lock()
        self._old = {}
        self._pipe = None
        self._old_wakeup = -1
        self.on_exit = None  # called before an immediate exit (closes the progress bar)

    @property
    def requested(self) -> bool:
        return self.signum is not None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.signum, 130)

    @property
    def name(self) -> str:
        return _NAMES.get(self.signum, f"signal {self.signum}")

    def __enter__(self):
        if threading.current_thread() is not threading.main_thread():
            return self  # signals can only be handled in the main thread; leave them alone
        for sig in (signal.SIGINT, signal.SIGTERM):
            self._old[sig] = signal.signal(sig, self._handler)
        if self.process:
            r, w = os.pipe()
            os.set_blocking(w, False)
            self._pipe = (r, w)
            self._old_wakeup = signal.set_wakeup_fd(w, warn_on_full_buffer=False)
            threading.Thread(target=self._watch, args=(r,), daemon=True, name="jaxcorr-signals").start()
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)
        if self._pipe is not None:
            signal.set_wakeup_fd(self._old_wakeup)
            os.close(self._pipe[1])  # the watchdog sees EOF and ends
        return False

    def _handler(self, signum, frame):
        if not self.process:  # in-process (tests, notebooks): the main thread counts
            self._note(signum)

    def _watch(self, fd: int) -> None:
        while True:
            try:
                data = os.read(fd, 64)
            except OSError:
                return
            if not data:
                return
            for b in data:
                self._note(b)

    def _note(self, signum: int) -> None:
        with self._lock:
            self.count += 1
            first = self.signum is None
            if first:
                self.signum = signum
            phase = self.phase
        if not first:
            self._abort("aborted at once (second signal); nothing saved")
        elif phase == "resetup" and not self.saving:  # nothing would be saved: do not wait for XLA
            self._abort(f"interrupted by {self.name} while compiling longer chunks; not saved (no --save given)")
        elif phase in _AT_ONCE:
            if self.process:
                self._abort(f"interrupted by {self.name} {_AT_ONCE[phase]}")
            else:
                _say(f"jaxcorr: {self.name}: stopping at the next chance ({self.name} again to abort at once)")
        else:
            _say(f"jaxcorr: {self.name}: stopping within about a second{self.what_on_stop} "
                 f"({'Ctrl-C again' if signum == signal.SIGINT else 'send it again'} to abort at once)")

    def _abort(self, message: str) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception:  # noqa: BLE001 -- exiting anyway
                pass
        _say(f"jaxcorr: {message}")
        if self.process:
            try:
                sys.stdout.flush()
            except Exception:  # noqa: BLE001
                pass
            os._exit(self.exit_code)
        raise KeyboardInterrupt


def exit_now(code: int) -> None:
    """End a stopped single-process run at once: flush stdout and stderr, then ``os._exit``.

    Called after the checkpoint is written (fsynced and renamed) and the last line printed. It skips
    the interpreter's teardown, which frees every device buffer and joins XLA's threads one by one
    (measured 0.4-0.8 s at the default size, more with gigabytes of buffers) and adds nothing a
    stopped run needs. Returns without exiting when JAX runs several processes (their shutdown
    handshake must run) or is not loaded.
    """
    jax = sys.modules.get("jax")
    try:
        if jax is None or jax.process_count() != 1:
            return
    except Exception:  # noqa: BLE001 -- cannot tell: take the ordinary way out
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass


class Progress:
    """Progress on stderr: ``mode`` ``"bar"`` (tqdm), ``"lines"`` (plain) or ``"off"``.

    ``report`` prints one plain line (the CLI passes its own seam). Lines mode prints a line at each
    tenth of the run and at least every :attr:`every_s` seconds.
    """

    every_s = 10.0

    def __init__(self, mode: str, report, label: str):
        self.mode, self.report, self.label = mode, report, label
        self.bar = None
        self._setup_bar = None
        self._stop_refresh = threading.Event()
        self.total = 0
        self.step0 = 0
        self._last_line = 0.0
        self._last_tenth = -1

    @staticmethod
    def pick_mode(quiet: bool, stream=None) -> str:
        stream = sys.stderr if stream is None else stream
        if quiet:
            return "off"
        try:
            tty = stream.isatty()
        except (AttributeError, ValueError):
            tty = False
        if tty:
            try:
                import tqdm  # noqa: F401
            except ImportError:
                return "lines"
            return "bar"
        return "lines"

    def setup(self, text: str) -> None:
        """Show that set-up (trees, compilation) is running."""
        if self.mode == "lines":
            self.report(text)
        elif self.mode == "bar" and self._setup_bar is None:
            from tqdm import tqdm

            self._setup_bar = tqdm(total=None, desc=f"{self.label}: set-up (compiling)",
                                   bar_format="{desc} {elapsed}", file=sys.stderr, leave=False, **_width())
            threading.Thread(target=self._refresh, daemon=True).start()

    def _refresh(self) -> None:
        while not self._stop_refresh.wait(0.5):
            bar = self._setup_bar
            if bar is None:
                return
            try:
                bar.refresh()
            except Exception:  # noqa: BLE001 -- display only
                return

    def start(self, step0: int, total: int, setup_s: float) -> None:
        """Set-up is over: show the steps from ``step0`` to ``total``."""
        self.step0, self.total = step0, total
        if self.mode == "lines":
            self.report(f"set-up done in {setup_s:.1f} s (compilation, and for the sparse methods the active rows)")
            self._last_line = time.perf_counter()
        elif self.mode == "bar":
            self._close_setup()
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=step0, desc=self.label, unit="step", file=sys.stderr,
                            smoothing=0.1, **_width())

    def update(self, step: int, loss: float, ms_per_step: float, line: str) -> None:
        """Steps done up to ``step`` (absolute), the latest loss and the time per step."""
        if self.mode == "bar" and self.bar is not None:
            self.bar.set_postfix_str(f"loss {loss:.4g}, {ms_per_step:.3g} ms/step", refresh=False)
            self.bar.update(step - self.bar.n)
        elif self.mode == "lines":
            now = time.perf_counter()
            tenth = int(10 * (step - self.step0) / max(self.total - self.step0, 1))
            if tenth != self._last_tenth or now - self._last_line >= self.every_s or step >= self.total:
                eta = (self.total - step) * ms_per_step / 1e3
                tail = f"  eta {_fmt_s(eta)}" if step < self.total and math.isfinite(eta) else ""
                self.report(line + tail)
                self._last_line, self._last_tenth = now, tenth

    def rewind(self, step: int) -> None:
        """Steps after ``step`` are discarded (the run restarts there with another chunk length)."""
        if self.mode == "bar" and self.bar is not None:
            self.bar.reset(total=self.total)
            self.bar.update(step)

    def _close_setup(self) -> None:
        self._stop_refresh.set()
        if self._setup_bar is not None:
            bar, self._setup_bar = self._setup_bar, None
            bar.close()

    def close(self) -> None:
        self._close_setup()
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.close()


class SetupProgress:
    """Progress of the implicit set-up (rows of W(0) drawn, active rows kept) on stderr: a tqdm bar
    (``mode="bar"``), a plain line every :attr:`every_s` seconds and at the end (``"lines"``), or nothing."""

    every_s = 10.0

    def __init__(self, mode: str, report, rows: int):
        self.mode, self.report, self._last = mode, report, 0.0
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=rows, desc="set-up: rows of W(0)", unit="row", unit_scale=True,
                            file=sys.stderr, leave=False, **_width())

    def update(self, p: dict) -> None:
        """``p``: :func:`jaxcorr.implicit.setup`'s progress dict."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{p['n_active']} active", refresh=False)
            self.bar.update(p["rows_done"] - self.bar.n)
        elif self.mode == "lines" and (p["elapsed_s"] - self._last >= self.every_s or p["rows_done"] == p["rows"]):
            self._last = p["elapsed_s"]
            eta = (p["rows"] - p["rows_done"]) / max(p["rows_per_s"], 1e-9)
            self.report(f"set-up: {p['rows_done']}/{p['rows']} rows of W(0) drawn, {p['n_active']} active, "
                        f"{p['rows_per_s']:.3g} rows/s, eta {_fmt_s(eta)}")

    def close(self) -> None:
        if self.bar is not None:
            bar, self.bar = self.bar, None
            bar.close()


def _width() -> dict:
    """tqdm's width arguments: follow the terminal, or 80 columns where it reports none (a fresh
    pseudo-terminal says 0 columns and 0 rows, and tqdm would draw nothing)."""
    try:
        cols = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError, AttributeError):
        cols = 0
    return {"dynamic_ncols": True} if cols > 0 else {"ncols": 80, "nrows": 24}


def _fmt_s(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
