"""Ctrl-C and SIGTERM for ``jaxcorr train`` (private): stop at a chunk boundary, or at once.

:class:`Signals`: Ctrl-C (SIGINT) and SIGTERM ask the run to stop at the next chunk boundary (the
caller saves a checkpoint and exits 130 / 143); a second signal aborts at once. When the process is
a command-line run, a watchdog thread also sees each signal while the main thread is inside XLA
(compiling, or building the trees), so a signal during set-up, when nothing has been trained yet,
ends the process at once instead of after the set-up. :func:`exit_now` ends a stopped run without
the interpreter's teardown.
"""

from __future__ import annotations

import os
import signal
import sys
import threading

__all__ = ["EXIT_CODES", "Signals", "exit_now", "say"]

#: Exit status of a run stopped by a signal (128 + signal number, as shells report it).
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}
_NAMES = {signal.SIGINT: "Ctrl-C", signal.SIGTERM: "SIGTERM"}
#: Phases in which a command-line process ends at once on a signal (nothing unsaved would be lost).
_AT_ONCE = {
    "setup": "during set-up; no step trained since the last saved state, nothing to save",
    "finish": "after the training finished (any --save checkpoint is written); no summary printed",
    "compare": "during the --compare baseline run (the main run finished; any --save checkpoint is written)",
}


class Signals:
    """SIGINT/SIGTERM handling for one run (a context manager).

    The first signal sets ``signum`` (the caller stops at its next check, saves, and exits with
    ``exit_code``); a second one aborts at once: ``os._exit`` in a command-line process,
    ``KeyboardInterrupt`` otherwise. With ``process=True`` a watchdog thread reads the signals from
    a wakeup pipe, so they are seen even while the main thread is inside XLA; if the run is still in
    ``phase`` ``"setup"`` (nothing trained since the last durable state), ``"finish"`` or
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
                say(f"jaxcorr: {self.name}: stopping at the next chance ({self.name} again to abort at once)")
        else:
            say(f"jaxcorr: {self.name}: stopping within about a second{self.what_on_stop} "
                 f"({'Ctrl-C again' if signum == signal.SIGINT else 'send it again'} to abort at once)")

    def _abort(self, message: str) -> None:
        if self.on_exit is not None:
            try:
                self.on_exit()
            except Exception:  # noqa: BLE001 -- exiting anyway
                pass
        say(f"jaxcorr: {message}")
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
    (its time grows with the buffers held) and adds nothing a stopped run needs. Returns without
    exiting when JAX runs several processes (their shutdown handshake must run) or is not loaded.
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


def say(line: str) -> None:
    try:
        print(line, file=sys.stderr, flush=True)
    except (OSError, ValueError):
        pass
