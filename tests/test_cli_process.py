"""`python -m jaxcorr` as a process: signals, exit codes, what goes to stdout and stderr, pipes.

Each test starts one subprocess at a tiny size (importing JAX costs a few seconds). The compilation
cache of the subprocesses is a temporary directory, never the user's.
"""

import os
import queue
import signal
import subprocess
import sys
import threading
import time

import pytest

from jaxcorr import checkpoint

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--n", "4", "--m", "256", "--d", "4", "--init", "rows"]
#: Seconds from a signal to the process's exit that count as "at once" on a loaded 2-core machine
#: (measured well under a second when the machine is quiet: chunks are sized to about 0.5 s).
PROMPT_S = 6.0

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def _env(tmp_path):
    return dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu",
                JAXCORR_CACHE_DIR=str(tmp_path / "cache"))


class Proc:
    """A ``python -m jaxcorr`` subprocess whose stderr lines are collected as they come."""

    def __init__(self, tmp_path, *args, **kw):
        self.p = subprocess.Popen([sys.executable, "-m", "jaxcorr", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=tmp_path, **kw)
        self.lines: queue.Queue = queue.Queue()
        self.err: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.p.stderr:
            self.lines.put(line)

    def wait_for(self, text, timeout=120):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.1)
            except queue.Empty:
                assert self.p.poll() is None, f"exited {self.p.returncode}: {''.join(self.err)}"
                continue
            self.err.append(line)
            if text in line:
                return line
        raise AssertionError(f"no {text!r} in {''.join(self.err)}")

    def finish(self, timeout=120):
        rc = self.p.wait(timeout=timeout)
        out = self.p.stdout.read()
        time.sleep(0.05)
        while not self.lines.empty():
            self.err.append(self.lines.get())
        return rc, out, "".join(self.err)


def _stop_after_setup(tmp_path, sig, *extra):
    proc = Proc(tmp_path, "train", *TINY, "--method", "dense", "--steps", "1000000", *extra)
    proc.wait_for("set-up done")
    time.sleep(0.3)
    t0 = time.monotonic()
    proc.p.send_signal(sig)
    rc, out, err = proc.finish()
    return rc, out, err, time.monotonic() - t0


def test_sigterm_saves_a_checkpoint_and_exits_143_promptly(tmp_path):
    ck = tmp_path / "run.ckpt"
    rc, out, err, dt = _stop_after_setup(tmp_path, signal.SIGTERM, "--save", str(ck))
    assert rc == 143, err
    assert dt < PROMPT_S, dt
    assert "SIGTERM" in err and "saved to" in err and f"--resume {ck}" in err
    assert out == ""  # no summary of an unfinished run on stdout
    said = int(err.split("interrupted by SIGTERM at step ")[1].split()[0])
    # The state where the run stopped (0 only if the signal came as the run restarted with longer
    # chunks, which starts over from step 0; test_cli.py checks a mid-run save deterministically).
    assert checkpoint.restore(ck).step == said < 1000000
    assert checkpoint.kind(ck) == "compact"  # the compact form: rows that moved
    assert f"saving checkpoint {ck} at step {said}" in err
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]


def test_second_run_saving_to_the_same_path_is_refused(tmp_path):
    """Two runs saving to one path (issue 23 item 10): the second exits 2 with one line naming the
    lock and its holder, before training; the first goes on undisturbed and saves its own state; once
    it has ended (killed by a signal: its lock file is left behind) the path is free again."""
    ck = tmp_path / "same.ckpt"
    first = Proc(tmp_path, "train", *TINY, "--method", "dense", "--steps", "1000000", "--save", str(ck))
    first.wait_for("set-up done")
    second = subprocess.run([sys.executable, "-m", "jaxcorr", "train", *TINY, "--steps", "2", "--save", str(ck)],
                            capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=120)
    assert second.returncode == 2 and second.stdout == "", second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    for words in (f"jaxcorr: error: --save {ck}:", "being written by another run", f"{ck}.lock",
                  f"process {first.p.pid}", "save to another path"):
        assert words in lines[0], lines[0]
    assert "setting up" not in second.stderr  # refused before any set-up
    assert first.p.poll() is None  # the first run is still training
    first.p.send_signal(signal.SIGTERM)
    rc, out, err = first.finish()
    assert rc == 143, err
    saved = checkpoint.restore(ck).step
    assert saved > 0 and f"saving checkpoint {ck} at step {saved}" in err
    again = subprocess.run([sys.executable, "-m", "jaxcorr", "train", "--resume", str(ck), "--save", str(ck),
                            "--steps", "1", "--quiet"], capture_output=True, text=True, env=_env(tmp_path),
                           cwd=tmp_path, timeout=120)
    assert again.returncode == 0, again.stderr
    assert checkpoint.restore(ck).step == saved + 1


def test_ctrl_c_during_setup_exits_at_once(tmp_path):
    proc = Proc(tmp_path, "train", *TINY, "--steps", "1000000", "--no-cache")
    proc.wait_for("setting up")
    t0 = time.monotonic()
    proc.p.send_signal(signal.SIGINT)
    rc, out, err = proc.finish()
    assert rc == 130, err
    assert time.monotonic() - t0 < PROMPT_S
    assert "during set-up" in err and "Traceback" not in err


def test_second_ctrl_c_aborts_at_once(tmp_path):
    proc = Proc(tmp_path, "train", *TINY, "--method", "dense", "--steps", "1000000")
    proc.wait_for("set-up done")
    proc.p.send_signal(signal.SIGINT)
    proc.wait_for("stopping")
    proc.p.send_signal(signal.SIGINT)
    rc, out, err = proc.finish()
    assert rc == 130, err
    assert "Traceback" not in err and ("aborted at once" in err or "interrupted by Ctrl-C" in err)


def _read_terminal(master: int, slave: int) -> str:
    """Everything the child writes to its pseudo-terminal until it closes it."""
    os.close(slave)
    chunks = []
    while True:
        try:
            b = os.read(master, 4096)
        except OSError:
            break
        if not b:
            break
        chunks.append(b)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal(tmp_path):
    import pty

    master, slave = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "jaxcorr", "train", *TINY, "--method", "dense", "--steps", "40",
                          "--json"],
                         stdout=subprocess.PIPE, stderr=slave, env=_env(tmp_path), cwd=tmp_path)
    text = _read_terminal(master, slave)
    rc = p.wait(timeout=120)
    assert rc == 0, text
    assert "40/40" in text and "step/s" in text and "loss" in text  # tqdm: count, rate, loss
    assert "\r" in text  # redrawn in place, not one line per update


def test_progress_bar_at_80_columns_keeps_bar_and_postfix(tmp_path):
    """COLUMNS=80 on a terminal of 80 columns: every redraw fits, the bar keeps room, the loss is
    shown whole, and the speed once (steps/s, not also ms/step)."""
    import fcntl
    import pty
    import re
    import struct
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = dict(_env(tmp_path), COLUMNS="80", LINES="24")
    p = subprocess.Popen([sys.executable, "-m", "jaxcorr", "train", *TINY, "--steps", "300", "--json"],
                         stdout=subprocess.PIPE, stderr=slave, env=env, cwd=tmp_path)
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]", "", _read_terminal(master, slave))
    assert p.wait(timeout=120) == 0
    bars = [s for s in re.split(r"[\r\n]", text) if "300/300" in s]
    assert bars, text
    for s in bars:
        assert len(s.rstrip()) <= 80, s
        inner = s.split("|")[1]
        assert len(inner) >= 10, s  # a readable bar
        assert re.search(r"loss \d", s) and "step/s" in s and "ms/step" not in s, s


def test_end_to_end_is_the_process_wall_clock(tmp_path):
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "jaxcorr", "train", *TINY, "--steps", "2", "--json", "--quiet"],
                       capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=120)
    outside = time.monotonic() - t0
    assert p.returncode == 0, p.stderr
    import json

    r = json.loads(p.stdout.strip().splitlines()[-1])
    assert r["wall_s"] < r["process_s"] <= outside and r["process_s"] > 0.6 * outside, (r["process_s"], outside)


def test_help_into_a_closed_pipe_is_quiet(tmp_path):
    p = subprocess.run(f"{sys.executable} -m jaxcorr train --help | true", shell=True, capture_output=True,
                       text=True, env=_env(tmp_path), cwd=tmp_path, timeout=120)
    assert "Broken pipe" not in p.stderr and "Traceback" not in p.stderr, p.stderr
