"""Progress of ``jaxcorr train`` on stderr (private): a bar on a terminal, plain lines otherwise.

- :class:`Progress`: a tqdm bar on a terminal (set-up, then steps with the rate, loss and time
  left; laid out so that 80 columns keep a readable bar), plain lines when stderr is not a
  terminal, nothing when quiet.
- :class:`SetupProgress`: the wide model's streamed set-up (rows of W(0) drawn, active rows kept).
- :class:`Notice`: a line said only when a wait lasts longer than a second (after the last step:
  the trained weights gathered, the summary written), so no long wait is silent.
- :func:`report`: where plain lines go (stderr): the seam the tests replace.
"""

from __future__ import annotations

import math
import os
import sys
import threading
import time

__all__ = ["Notice", "Progress", "SetupProgress", "eval_text", "fmt_s", "progress_line", "report"]

#: The step bar -- percentage, bar, count, time left, rate and the loss (no elapsed time, one speed).
BAR_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} [{remaining}, {rate_fmt}{postfix}]"


def report(line: str) -> None:
    """Where progress lines go (stderr); a seam for the tests."""
    print(line, file=sys.stderr, flush=True)


def progress_line(method: str, step: int, total: int, info: dict, n: int | None = None, extra: str = "") -> str:
    """``dtree  step  40/100  L(W(39)) = 0.0447  L/n = 0.00559  3.86 ms/step``: fit reports the loss
    of the weights the last step started from; ``n`` (the number of points) adds the mean loss
    beside the paper's sum, and ``extra`` follows (the ``--eval-data`` figures)."""
    w = len(str(total))
    ms = info.get("ms_per_step")
    speed = f"{ms:8.2f} ms/step" if ms is not None and math.isfinite(ms) else ""
    loss = f"L(W({step - 1})) = {float(info['loss']):.6g}"
    mean = f"L/n = {float(info['loss']) / n:<10.4g} " if n else ""
    return f"{method:<5}  step {step:>{w}}/{total}  {loss:<{w + 21}} {mean}{speed}{extra}".rstrip()


def eval_text(e, short: bool = False) -> str:
    """The ``--eval-data`` figures of an :class:`jaxcorr.evaluation.Evaluation`: the mean loss, and the
    accuracy for +-1 labels (``short``: for the bar's postfix)."""
    acc = "" if e.accuracy is None else (f" acc {100 * e.accuracy:.3g}%" if short else
                                          f", accuracy {100 * e.accuracy:.4g}%")
    return f" eval {e.loss_mean:.4g}{acc}" if short else f"  eval L/n = {e.loss_mean:.6g}{acc}"


class Notice:
    """Say ``text`` (through ``say``) if ``done()`` is not called within ``delay_s`` seconds."""

    def __init__(self, say, text: str, delay_s: float = 1.0):
        self._timer = threading.Timer(delay_s, say, args=(text,))
        self._timer.daemon = True
        self._timer.start()

    def done(self) -> None:
        self._timer.cancel()


class Progress:
    """Progress on stderr: ``mode`` ``"bar"`` (tqdm), ``"lines"`` (plain) or ``"off"``.

    ``report`` prints one plain line (the CLI passes its own seam). Lines mode prints a line at each
    tenth of the run and at least every ``every_s`` seconds.
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
        self._postfix = ""  # the bar's latest --eval-data figures

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

    def setup(self, text: str, short: str = "compiling") -> None:
        """Show that set-up is running: ``text`` as a line, ``short`` (what it does) in the bar."""
        if self.mode == "lines":
            self.report(text)
        elif self.mode == "bar" and self._setup_bar is None:
            from tqdm import tqdm

            self._setup_bar = tqdm(total=None, desc=f"{self.label}: set-up ({short})",
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
                            smoothing=0.1, bar_format=BAR_FORMAT, **_width())

    def _tenth(self, step: int) -> int:
        return int(10 * (step - self.step0) / max(self.total - self.step0, 1))

    def due(self, step: int) -> bool:
        """Whether :meth:`update` at ``step`` shows a new line (lines: at each tenth of the run, every
        ``every_s`` seconds and at the end; the bar: at each tenth and the end; off: never)."""
        if self.mode == "off" or (self.mode == "bar" and self.bar is None):
            return False
        late = self.mode == "lines" and time.perf_counter() - self._last_line >= self.every_s
        return self._tenth(step) != self._last_tenth or late or step >= self.total

    def update(self, step: int, loss: float, ms_per_step: float, line: str, postfix: str = "") -> None:
        """Steps done up to ``step`` (absolute), the latest loss and the time per step (``postfix``:
        more for the bar, after the loss)."""
        if self.mode == "bar" and self.bar is not None:
            self._last_tenth = self._tenth(step)
            self._postfix = postfix or self._postfix  # the latest evaluation stays shown until the next
            self.bar.set_postfix_str(f"loss {loss:.4g}{self._postfix}", refresh=False)  # the rate is the bar's own
            self.bar.update(step - self.bar.n)
        elif self.mode == "lines":
            now = time.perf_counter()
            tenth = self._tenth(step)
            if tenth != self._last_tenth or now - self._last_line >= self.every_s or step >= self.total:
                eta = (self.total - step) * ms_per_step / 1e3
                tail = f"  eta {fmt_s(eta)}" if step < self.total and math.isfinite(eta) else ""
                self.report(line + tail)
                self._last_line, self._last_tenth = now, tenth

    def rewind(self, step: int) -> None:
        """Steps after ``step`` are discarded (the run restarts there with another chunk length)."""
        if self.mode == "bar" and self.bar is not None:
            self.bar.reset(total=self.total)
            self.bar.update(step)

    def relabel(self, label: str) -> None:
        """The method running changed (``--fallback dense``): label what follows with ``label``."""
        self.label = label
        if self.mode == "bar" and self.bar is not None:
            self.bar.set_description_str(label, refresh=False)

    def say(self, line: str) -> None:
        """One plain line (the bar, if any, is closed first so the line stands on its own)."""
        if self.mode == "bar":
            self.close()
        if self.mode != "off":
            self.report(line)

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
    """Progress of the wide set-up (rows of W(0) drawn, active rows kept) on stderr: a tqdm bar
    (``mode="bar"``), a plain line every ``every_s`` seconds and at the end (``"lines"``), or nothing."""

    every_s = 10.0

    def __init__(self, mode: str, report, rows: int):
        self.mode, self.report, self._last = mode, report, 0.0
        self.bar = None
        if mode == "bar":
            from tqdm import tqdm

            self.bar = tqdm(total=rows, desc="set-up: rows of W(0)", unit="row", unit_scale=True,
                            file=sys.stderr, leave=False, **_width())

    def update(self, p: dict) -> None:
        """``p``: :func:`jaxcorr.wide.setup`'s progress dict."""
        if self.bar is not None:
            self.bar.set_postfix_str(f"{p['n_active']} active", refresh=False)
            self.bar.update(p["rows_done"] - self.bar.n)
        elif self.mode == "lines" and (p["elapsed_s"] - self._last >= self.every_s or p["rows_done"] == p["rows"]):
            self._last = p["elapsed_s"]
            eta = (p["rows"] - p["rows_done"]) / max(p["rows_per_s"], 1e-9)
            self.report(f"set-up: {p['rows_done']}/{p['rows']} rows of W(0) drawn, {p['n_active']} active, "
                        f"{p['rows_per_s']:.3g} rows/s, eta {fmt_s(eta)}")

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


def fmt_s(s: float) -> str:
    s = max(0.0, s)
    if s < 60:
        return f"{s:.0f} s"
    if s < 3600:
        return f"{int(s // 60)} min {int(s % 60):02d} s"
    return f"{int(s // 3600)} h {int(s % 3600 // 60):02d} min"
