r"""Several JAX processes (hosts) on JAX's own distributed runtime: start-up, global mesh, failures.

Section 5 of the paper splits the ``n`` correlation trees of Theorem 3.1 across processors; on one
host :mod:`jaxcorr.sharding` lays them out across the devices of a mesh. This module runs the same
code across *processes* (one per host, or several on one machine) with
:func:`jax.distributed.initialize`: every process runs the same program on the same arrays, the mesh
spans the devices of all processes, and XLA's collectives (gloo over TCP on CPU, NCCL on GPU, ICI on
TPU) carry the per-step sums. There is no scheduler or transport of our own.

What it adds to a bare ``jax.distributed.initialize()``:

- **Who am I.** :func:`resolve` takes ``coordinator`` (``HOST:PORT``), ``num_processes`` and
  ``process_id`` (all three or none) and checks them; with none it detects a cluster environment
  (SLURM, Open MPI, Cloud TPU, Kubernetes, ...) with the same detectors
  ``jax.distributed.initialize()`` runs, and stays single-process where there is none (or one
  process).
- **CPU collectives.** On CPU the runtime needs a collectives implementation; gloo is selected
  (JAX's ``jax_cpu_collectives_implementation``) unless one is already set.
- **Bounded waits.** :class:`Timeouts` (start-up, heartbeat, shutdown; environment overrides
  ``JAXCORR_INIT_TIMEOUT``, ``JAXCORR_HEARTBEAT_TIMEOUT``, ``JAXCORR_SHUTDOWN_TIMEOUT`` in
  seconds). A process that cannot reach its peers within the start-up timeout exits with one
  ``jaxcorr: error:`` line (status :data:`PEER_FAILURE_EXIT`) instead of JAX's abort.
- **A peer dies.** A process blocked in a collective gets an error from the transport at once (gloo:
  "Connection reset by peer"); one that is not is stopped by JAX's coordination service once the
  dead peer misses its heartbeats. :func:`install_failure_exit` turns an uncaught exception into one
  clear line and an immediate exit (status :data:`PEER_FAILURE_EXIT` for a peer failure, 1 for
  anything else), so no process then waits out the shutdown barrier for a peer that will never come.
- **One writer.** :func:`is_writer` is True in process 0 only: files (checkpoints, results) are
  written once. Every process reads the same inputs.

:func:`setup` does all of it and returns the global mesh (or ``None`` for a single process); it is
what ``jaxcorr train --coordinator HOST:PORT --num-processes N --process-id I`` calls. For tests and
for one machine, :class:`LocalRun` starts N processes on this host and :func:`free_port` finds a
port for the coordinator.

Examples:
  In every process (here process ``i`` of 2 on one machine; on a cluster leave the arguments out).
  It needs its peer processes, so it is shown, not run as a doctest::

      from jaxcorr import data, distributed, nn, train
      mesh = distributed.setup("127.0.0.1:12345", num_processes=2, process_id=i)
      X, y = data.synthetic(seed=0, n=64, d=16)    # the same arrays in every process
      params = nn.init(jax.random.key(0), m=4096, d=16)
      p, hist = train.fit(params, X, y, steps=20, method=distributed.mesh_method(), mesh=mesh)

  One process alone is the single-process case:

  >>> from jaxcorr import distributed
  >>> distributed.setup() is None   # no coordinator given and no cluster detected
  True

  ``scripts/multiprocess.py --processes 2`` launches this on localhost and checks the result.

References:
  Alman, Liang, Song, Zhang, Zhuo. Bypass Exponential Time Preprocessing: Fast Neural Network
  Training via Weight-Data Correlation Preprocessing. NeurIPS 2023. Section 5 (parallel updates),
  Theorem 3.1 (Correlation DTree), Algorithm 8.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import jax

__all__ = [
    "PEER_FAILURE_EXIT",
    "Timeouts",
    "ProcessSpec",
    "parse_coordinator",
    "resolve",
    "detect_cluster",
    "initialize",
    "global_mesh",
    "setup",
    "is_writer",
    "mesh_method",
    "info",
    "is_peer_failure",
    "install_failure_exit",
    "free_port",
    "LocalRun",
]

#: Exit status of a process that stops because a peer failed or could not be reached.
PEER_FAILURE_EXIT = 3

_TIMEOUT_ENV = {"init": "JAXCORR_INIT_TIMEOUT", "heartbeat": "JAXCORR_HEARTBEAT_TIMEOUT",
                "shutdown": "JAXCORR_SHUTDOWN_TIMEOUT"}
# Text of the errors the transports and the coordination service raise when a peer is gone.
_PEER_MARKERS = ("gloo", "connection reset", "closed by peer", "connection refused", "heartbeat",
                 "coordination service", "unavailable:", "nccl", "socket closed", "broken pipe")


class Timeouts(NamedTuple):
    """Bounded waits of the distributed runtime, in seconds (passed to :func:`jax.distributed.initialize`).

    ``init``: how long a process waits for all peers to register (and, on CPU, to exchange device
    topologies). ``heartbeat``: a peer silent this long is declared dead and every process is
    stopped. ``shutdown``: how long a finishing process waits for the others at the exit barrier.
    """

    init: int = 300
    heartbeat: int = 100
    shutdown: int = 120

    @classmethod
    def from_env(cls, environ=None) -> Timeouts:
        """Defaults, overridden by ``JAXCORR_INIT_TIMEOUT`` / ``_HEARTBEAT_`` / ``_SHUTDOWN_TIMEOUT``."""
        env = os.environ if environ is None else environ
        vals = cls()._asdict()
        for field, var in _TIMEOUT_ENV.items():
            if env.get(var):
                try:
                    vals[field] = int(env[var])
                except ValueError:
                    raise ValueError(f"{var} must be a whole number of seconds, got {env[var]!r}") from None
                if vals[field] < 1:
                    raise ValueError(f"{var} must be >= 1 second, got {vals[field]}")
        return cls(**vals)


class ProcessSpec(NamedTuple):
    """This process's place in a multi-process run."""

    coordinator: str | None  # "HOST:PORT" of process 0's coordinator; None: the cluster's
    num_processes: int
    process_id: int
    source: str  # "flags", or the detected cluster environment ("slurm", "ompi", ...)


def parse_coordinator(address: str) -> tuple[str, int]:
    """``"HOST:PORT"`` (IPv6 as ``[::1]:PORT``) to ``(host, port)``; ``ValueError`` naming the argument."""
    if not isinstance(address, str) or ":" not in address:
        raise ValueError(f"--coordinator must be HOST:PORT, got {address!r}")
    host, port = address.rsplit(":", 1)
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"--coordinator must be HOST:PORT with a port in 1..65535, got {address!r}")
    return host, int(port)


def resolve(coordinator=None, num_processes=None, process_id=None) -> ProcessSpec | None:
    """This process's :class:`ProcessSpec` from the three settings, or from the cluster environment.

    Args:
      coordinator: ``"HOST:PORT"`` where process 0 runs the coordinator service.
      num_processes: number of processes N (>= 1).
      process_id: this process's index in ``0 .. N-1``.

    Returns:
      The spec; ``None`` when all three are ``None`` and no multi-process cluster environment is
      detected (:func:`detect_cluster`), or when N = 1: a single process needs no runtime.

    Raises:
      ValueError: only some of the three given, a malformed address, N < 1, or an id out of range.
    """
    given = {"--coordinator": coordinator, "--num-processes": num_processes, "--process-id": process_id}
    if all(v is None for v in given.values()):
        return detect_cluster()
    missing = [k for k, v in given.items() if v is None]
    if missing:
        raise ValueError(f"--coordinator, --num-processes and --process-id go together; missing {', '.join(missing)}")
    parse_coordinator(coordinator)
    if isinstance(num_processes, bool) or not isinstance(num_processes, int) or num_processes < 1:
        raise ValueError(f"--num-processes must be an integer >= 1, got {num_processes!r}")
    if isinstance(process_id, bool) or not isinstance(process_id, int) or not 0 <= process_id < num_processes:
        raise ValueError(f"--process-id must be an integer in 0..{num_processes - 1} (--num-processes "
                         f"{num_processes}), got {process_id!r}")
    if num_processes == 1:
        return None
    return ProcessSpec(coordinator, num_processes, process_id, "flags")


def detect_cluster() -> ProcessSpec | None:
    """The cluster environment ``jax.distributed.initialize()`` would detect, if it has several processes.

    Runs JAX's own detectors (``jax._src.clusters``: SLURM, Open MPI, Cloud TPU, Kubernetes, ...),
    except the opt-in ones (mpi4py), in JAX's order. They live in a private module, so any failure
    to import or query them counts as "no cluster".

    Returns:
      ``ProcessSpec(None, N, id, name)`` for the first environment present with N > 1, else ``None``.
    """
    try:
        from jax._src import clusters  # noqa: PLC0415  (what jax.distributed.initialize() uses)

        kinds = [c for c in clusters.ClusterEnv._cluster_types if not c.opt_in_only_method]
    except Exception:  # noqa: BLE001  (private API: absent or changed means no detection)
        return None
    for kind in kinds:
        try:
            with warnings.catch_warnings():  # e.g. "Kubernetes detected, but no kubernetes package"
                warnings.simplefilter("ignore")
                if not kind.is_env_present():
                    continue
                n, pid = int(kind.get_process_count()), int(kind.get_process_id())
        except Exception:  # noqa: BLE001  (a detector that cannot answer is not this environment)
            continue
        return ProcessSpec(None, n, pid, kind.name or kind.__name__) if n > 1 else None
    return None


def _die(message: str, status: int) -> None:
    """Print one ``jaxcorr: error:`` line and leave now, skipping the runtime's exit barrier."""
    print(f"jaxcorr: error: {' '.join(message.split())}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(status)


def initialize(spec: ProcessSpec, timeouts: Timeouts | None = None) -> None:
    """Start JAX's distributed runtime for ``spec`` and create the (global) backend, within ``timeouts.init``.

    Must run before any JAX computation in the process. On CPU it selects gloo collectives (unless
    an implementation is set) and bounds the topology exchange by ``timeouts.init``. When the peers
    do not all arrive in time, prints one error line and exits with :data:`PEER_FAILURE_EXIT`
    (JAX itself would abort a little later, with ``timeouts.init + 10`` s).
    """
    t = timeouts or Timeouts.from_env()
    if not jax.config.jax_cpu_collectives_implementation:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.config.update("jax_cpu_get_global_topology_timeout_minutes", max(1, -(-t.init // 60)))
    where = spec.coordinator or f"from the {spec.source} environment"
    watchdog = threading.Timer(t.init, _die, args=(
        f"process {spec.process_id} of {spec.num_processes}: the distributed runtime did not start within "
        f"{t.init} s (coordinator {where}); are all {spec.num_processes} processes running, with the same "
        f"coordinator and process count? (JAXCORR_INIT_TIMEOUT sets the wait)", PEER_FAILURE_EXIT))
    watchdog.daemon = True
    watchdog.start()
    try:
        kw = {}
        if spec.source == "flags":
            kw = dict(coordinator_address=spec.coordinator, num_processes=spec.num_processes,
                      process_id=spec.process_id)
        jax.distributed.initialize(**kw, initialization_timeout=t.init + 10,
                                   heartbeat_timeout_seconds=t.heartbeat,
                                   shutdown_timeout_seconds=t.shutdown)
        jax.devices()  # create the backend now: the global topology exchange is part of start-up
    finally:
        watchdog.cancel()
    if jax.process_count() != spec.num_processes:
        raise RuntimeError(f"expected {spec.num_processes} processes, the runtime has {jax.process_count()}")


def global_mesh(axis_name: str = "data"):
    """A 1-D mesh over every device of every process (:func:`jaxcorr.sharding.data_mesh`)."""
    from jaxcorr import sharding  # noqa: PLC0415

    return sharding.data_mesh(jax.devices(), axis_name)


def setup(coordinator=None, num_processes=None, process_id=None, timeouts: Timeouts | None = None):
    """Resolve, initialise and return the global mesh; ``None`` for a single process. Call it first.

    Args:
      coordinator, num_processes, process_id: see :func:`resolve` (all three, or none to detect a
        cluster environment).
      timeouts: default :meth:`Timeouts.from_env`.

    Returns:
      The 1-D ``"data"`` mesh over all processes' devices (:func:`global_mesh`), or ``None`` when
      this is a single-process run (then nothing is initialised).

    Raises:
      ValueError: bad settings (see :func:`resolve`), or bad ``JAXCORR_*_TIMEOUT`` values.
    """
    spec = resolve(coordinator, num_processes, process_id)
    if spec is None:
        return None
    timeouts = timeouts or Timeouts.from_env()
    initialize(spec, timeouts)
    install_failure_exit()
    return global_mesh()


def is_writer() -> bool:
    """True in the one process that writes files: process 0 (always, in a single-process run)."""
    return jax.process_index() == 0


def mesh_method(preferred: str | None = None) -> str:
    """The sparse method to run on a mesh: ``preferred`` if given, else the default method
    (:data:`jaxcorr.methods.DEFAULT`) if it shards, else the first method of the registry that
    shards (``jaxcorr.methods.Method.shards``)."""
    from jaxcorr import methods  # noqa: PLC0415

    if preferred is not None:
        return preferred
    if methods.get(methods.DEFAULT).shards:
        return methods.DEFAULT
    return next(m.name for m in methods.METHODS.values() if m.shards)


def info(mesh=None) -> dict:
    """``{"processes": P, "devices": D}``: the processes of the run and the devices training uses
    (the mesh's size, or 1 without a mesh)."""
    return {"processes": jax.process_count(), "devices": 1 if mesh is None else int(mesh.devices.size)}


def is_peer_failure(exc: BaseException) -> bool:
    """True when ``exc`` is the runtime reporting a lost peer (transport or coordination service)."""
    if not isinstance(exc, RuntimeError):
        return False
    text = str(exc).lower()
    return any(m in text for m in _PEER_MARKERS)


def install_failure_exit() -> None:
    """Make an uncaught exception end this process at once, with a clear line for a lost peer.

    Without it, a process whose peer died raises in the collective, then waits at the runtime's
    shutdown barrier (``timeouts.shutdown``) for the dead peer and aborts; and a process that fails
    alone keeps its sockets open, so its peers block in the next collective until then. Here the
    traceback is printed, then one ``jaxcorr: error:`` line, then the process exits with
    :data:`PEER_FAILURE_EXIT` (lost peer) or 1 (anything else); its peers see the closed connection.
    """
    previous = sys.excepthook

    def hook(kind, exc, tb):
        if issubclass(kind, KeyboardInterrupt):
            return previous(kind, exc, tb)
        pid, n = jax.process_index(), jax.process_count()
        if is_peer_failure(exc):
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else kind.__name__
            _die(f"process {pid} of {n}: a peer process failed or became unreachable ({first[:300]}); "
                 "stopping. See the other processes' output for the first error.", PEER_FAILURE_EXIT)
        traceback.print_exception(kind, exc, tb, file=sys.stderr)
        _die(f"process {pid} of {n}: {kind.__name__}: {exc}; stopping this process (its peers stop "
             "when they next need it)", 1)

    sys.excepthook = hook


# ------------------------------------------------------------------------------ local launching
def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` now (for a coordinator on this machine)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalRun:
    """``N`` processes on this machine, one per command, with output captured to files.

    Args:
      commands: one argv list per process.
      env: environment for all processes (default ``os.environ``); ``envs``: extra per process.
      cwd: working directory of all processes, or a list of one per process.

    Examples:
      >>> import sys
      >>> run = LocalRun([[sys.executable, "-c", f"print({i})"] for i in range(2)])
      >>> [(r["returncode"], r["stdout"].strip()) for r in run.wait(timeout_s=60)]
      [(0, '0'), (0, '1')]
    """

    def __init__(self, commands: Sequence[Sequence[str]], env=None, envs=None, cwd=None):
        self._dir = tempfile.TemporaryDirectory(prefix="jaxcorr-procs-")
        self.procs, self._files, self.started = [], [], time.monotonic()
        self.ended: list = [None] * len(commands)
        for i, cmd in enumerate(commands):
            out = open(os.path.join(self._dir.name, f"{i}.out"), "w+")
            err = open(os.path.join(self._dir.name, f"{i}.err"), "w+")
            penv = dict(os.environ if env is None else env, **((envs or [{}] * len(commands))[i]))
            where = cwd[i] if isinstance(cwd, (list, tuple)) else cwd
            self.procs.append(subprocess.Popen(list(cmd), stdout=out, stderr=err, env=penv, cwd=where,
                                               start_new_session=True))
            self._files.append((out, err))

    def stderr(self, i: int) -> str:
        """What process ``i`` has written to stderr so far."""
        with open(self._files[i][1].name) as fh:
            return fh.read()

    def stdout(self, i: int) -> str:
        with open(self._files[i][0].name) as fh:
            return fh.read()

    def kill(self, i: int) -> None:
        """SIGKILL process ``i`` (and only it), as a crash would."""
        if self.procs[i].poll() is None:
            os.kill(self.procs[i].pid, signal.SIGKILL)

    def poll(self) -> list:
        """Return codes so far (``None`` while running); records when each one ended."""
        now = time.monotonic()
        codes = [p.poll() for p in self.procs]
        for i, c in enumerate(codes):
            if c is not None and self.ended[i] is None:
                self.ended[i] = now
        return codes

    def wait(self, timeout_s: float) -> list[dict]:
        """Wait for all, killing those still running after ``timeout_s``; one dict per process with
        ``returncode`` (None: killed at the deadline), ``seconds`` (from start to exit), ``stdout``,
        ``stderr``."""
        deadline = self.started + timeout_s
        while any(c is None for c in self.poll()) and time.monotonic() < deadline:
            time.sleep(0.05)
        timed_out = [c is None for c in self.poll()]
        for i, late in enumerate(timed_out):
            if late:
                self.kill(i)
                self.procs[i].wait()
        out = []
        for i, p in enumerate(self.procs):
            out.append({"returncode": None if timed_out[i] else p.returncode,
                        "seconds": (self.ended[i] or time.monotonic()) - self.started,
                        "stdout": self.stdout(i), "stderr": self.stderr(i)})
        for fo, fe in self._files:
            fo.close()
            fe.close()
        self._dir.cleanup()
        return out
