"""jaxcorr.checkpoint: round trip, atomic save, corruption and mismatch detection, exact resume."""

import json
import os

import jax
import numpy as np
import optax
import pytest

from jaxcorr import checkpoint, data, nn

M, D, N = 64, 3, 5


@pytest.fixture
def setup():
    X, y = data.synthetic(0, N, D)
    params = nn.init(jax.random.key(0), M, D)
    opt = optax.adam(1e-2)
    state = opt.init(params.W)
    # A non-trivial state: one update.
    upd, state = opt.update(nn.grad_W(params, X, y, 1.0), state, params.W)
    return X, y, params._replace(W=optax.apply_updates(params.W, upd)), opt, state


def test_round_trip(tmp_path, setup):
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=3, config={"m": M, "d": D, "lr": 0.01})
    ck = checkpoint.load(path, X=X, y=y, optimizer=opt)
    assert ck.step == 3 and ck.config == {"m": M, "d": D, "lr": 0.01}
    assert isinstance(ck.model, nn.Params)
    np.testing.assert_array_equal(ck.model.W, params.W)
    np.testing.assert_array_equal(ck.model.a, params.a)
    assert jax.tree_util.tree_structure(ck.opt_state) == jax.tree_util.tree_structure(state)
    for a, b in zip(jax.tree_util.tree_leaves(ck.opt_state), jax.tree_util.tree_leaves(state)):
        np.testing.assert_array_equal(a, b)
        assert a.dtype == b.dtype
    assert checkpoint.read_meta(path)["fingerprint"] == checkpoint.fingerprint(X, y) and ck.kind == "full"
    # No temporary files left beside it.
    assert os.listdir(tmp_path) == ["c.ckpt"]


def test_sgd_state_without_leaves(tmp_path, setup):
    X, y, params, _, _ = setup
    opt = optax.sgd(0.1)
    checkpoint.save(tmp_path / "s.ckpt", params, X=X, y=y, opt_state=opt.init(params.W), step=0, config={})
    ck = checkpoint.load(tmp_path / "s.ckpt", optimizer=opt)
    assert jax.tree_util.tree_leaves(ck.opt_state) == []


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, setup, monkeypatch):
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=1, config={})
    before = path.read_bytes()

    def crash(f, arrays, meta):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint._container, "_write_npz", crash)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save(path, params._replace(W=params.W + 1), X=X, y=y, opt_state=state, step=2, config={})
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["c.ckpt"]
    monkeypatch.undo()
    assert checkpoint.load(path).step == 1


@pytest.mark.parametrize("where", [0.1, 0.5, 0.9])
def test_flipped_byte_or_truncation_is_detected(tmp_path, setup, where):
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=1, config={})
    raw = path.read_bytes()
    i = int(len(raw) * where)
    path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :])
    with pytest.raises(checkpoint.CheckpointError, match="corrupted"):
        checkpoint.load(path)
    path.write_bytes(raw[:i])
    with pytest.raises(checkpoint.CheckpointError, match="corrupted or truncated"):
        checkpoint.load(path)


def test_not_a_checkpoint(tmp_path):
    p = tmp_path / "x.npz"
    np.savez(p, W=np.zeros((2, 2)))
    with pytest.raises(checkpoint.CheckpointError, match="not a jaxcorr checkpoint"):
        checkpoint.load(p)
    with pytest.raises(checkpoint.CheckpointError, match="does not exist"):
        checkpoint.load(tmp_path / "missing")
    assert issubclass(checkpoint.CheckpointError, ValueError)


def test_other_data_and_other_optimizer_are_errors(tmp_path, setup):
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=1, config={"optimizer": "adam"})
    with pytest.raises(checkpoint.CheckpointError, match="other data of the same shape"):
        checkpoint.load(path, X=X, y=y + 1)
    X2, y2 = data.synthetic(0, N + 1, D)
    with pytest.raises(checkpoint.CheckpointError, match="other data: X_shape"):
        checkpoint.load(path, X=X2, y=y2)
    X3, y3 = data.synthetic(0, N, D + 1)
    with pytest.raises(checkpoint.CheckpointError, match="has d=3"):
        checkpoint.load(path, X=X3, y=y3)
    with pytest.raises(checkpoint.CheckpointError, match="saved with 'adam'"):
        checkpoint.load(path, optimizer=optax.sgd(0.1, momentum=0.9))
    # Same number of leaves, other shapes: a state for another width.
    with pytest.raises(checkpoint.CheckpointError, match="optimizer state array"):
        other = nn.init(jax.random.key(1), M + 1, D)
        checkpoint.save(path, params, X=X, y=y, opt_state=opt.init(other.W), step=1, config={})
        checkpoint.load(path, optimizer=opt)


def test_config_inconsistent_with_params(tmp_path, setup):
    X, y, params, opt, state = setup
    checkpoint.save(tmp_path / "c", params, X=X, y=y, opt_state=state, step=0, config={"m": M + 1})
    with pytest.raises(checkpoint.CheckpointError, match="inconsistent"):
        checkpoint.load(tmp_path / "c")


def test_bad_arguments(tmp_path, setup):
    X, y, params, opt, state = setup
    with pytest.raises(ValueError, match="step"):
        checkpoint.save(tmp_path / "c", params, X=X, y=y, opt_state=state, step=-1, config={})
    with pytest.raises(ValueError, match="JSON"):
        checkpoint.save(tmp_path / "c", params, X=X, y=y, opt_state=state, step=0, config={"f": object()})
    assert not os.listdir(tmp_path)


@pytest.mark.parametrize("method", ["dtree", "dense"])
def test_python_api_resume_equals_uninterrupted(tmp_path, method):
    """fit, save, load, fit again == one fit: bitwise for dense; for dtree to float32 rounding, as
    train.fit documents (a new call re-compacts the active rows and re-bases the span path)."""
    from jaxcorr import cli, train

    X, y = data.synthetic(0, 4, 4)
    params0 = nn.init(jax.random.key(0), 256, 4)
    opt = cli._make_optimizer("sgd", 1.0)  # the CLI's default object and chunk size: compiled code is shared
    kw = dict(method=method, optimizer=opt, chunk_size=1)
    full, hfull = train.fit(params0, X, y, steps=6, **kw)

    p, h = train.fit(params0, X, y, steps=2, **kw)
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, p, X=X, y=y, opt_state=h.opt_state, step=2, config={"m": 256, "d": 4})
    ck = checkpoint.load(path, X=X, y=y, optimizer=opt)
    p2, h2 = train.fit(ck.model, X, y, steps=4, opt_state=ck.opt_state, **kw)
    tol = {"rtol": 0, "atol": 0} if method == "dense" else {"rtol": 1e-5, "atol": 1e-6}
    np.testing.assert_allclose(p2.W, full.W, **tol)
    np.testing.assert_allclose(np.concatenate([h.loss, h2.loss]), hfull.loss, **tol)
    for a, b in zip(jax.tree_util.tree_leaves(h2.opt_state), jax.tree_util.tree_leaves(hfull.opt_state)):
        np.testing.assert_allclose(a, b, **tol)
    # The resumed run really moved: not a silent restart from params0.
    assert not np.allclose(p2.W, p.W) and not np.allclose(p.W, params0.W)


_KILLED_SAVE = """
import os, signal, sys
import numpy as np
import jax
from jaxcorr import checkpoint, data, nn

X, y = data.synthetic(0, 3, 2)
params = nn.init(jax.random.key(0), 8, 2)

def half_then_killed(f, arrays, meta):
    f.write(b"PK\\x03\\x04 half a zip")
    f.flush()
    os.kill(os.getpid(), signal.SIGKILL)  # killed mid-write: no except clause runs

checkpoint._container._write_npz = half_then_killed
checkpoint.save(sys.argv[1], params, X=X, y=y, opt_state=None, step=1, config={})
"""


def test_next_save_removes_temporaries_of_a_killed_save(tmp_path, setup):
    """A save killed mid-write (SIGKILL) leaves a temporary file; the next save of that path removes it."""
    import subprocess
    import sys

    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    left = []
    for _ in range(2):  # the second killed save already removes the first one's file
        p = subprocess.run([sys.executable, "-c", _KILLED_SAVE, str(path)], env=env, timeout=120)
        assert p.returncode == -9
        now = [f for f in os.listdir(tmp_path) if f.endswith(".tmp")]
        assert len(now) == 1 and now != left and not path.exists()
        left = now
    alive = tmp_path / f".c.ckpt.{os.getppid()}-inflight.tmp"  # a live process's save in progress
    alive.write_bytes(b"partial")
    other = tmp_path / f".other.ckpt.{999999}-x.tmp"  # another path's temporary: not ours to touch
    other.write_bytes(b"x")
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=2, config={})
    assert sorted(os.listdir(tmp_path)) == sorted(["c.ckpt", alive.name, other.name])
    assert checkpoint.load(path).step == 2


def test_is_checkpoint_and_check_target(tmp_path, setup):
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=1, config={})
    assert checkpoint.is_checkpoint(path)
    npz = tmp_path / "d.npz"
    np.savez(npz, X=np.asarray(X), y=np.asarray(y))
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for p in (npz, text, tmp_path / "missing", tmp_path):
        assert not checkpoint.is_checkpoint(p)
    checkpoint.check_target(path)  # an existing checkpoint may be overwritten
    checkpoint.check_target(tmp_path / "new.ckpt")
    with pytest.raises(ValueError, match="data file"):
        checkpoint.check_target(npz, protect=[str(npz)])
    with pytest.raises(ValueError, match="not a jaxcorr checkpoint"):
        checkpoint.check_target(text)
    with pytest.raises(ValueError, match="directory"):
        checkpoint.check_target(tmp_path)
    with pytest.raises(OSError, match="does not exist"):
        checkpoint.check_target(tmp_path / "no" / "x.ckpt")
    with pytest.raises(OSError, match="cannot write"):
        checkpoint.check_target("/proc/x.ckpt")
    assert sorted(os.listdir(tmp_path)) == ["c.ckpt", "d.npz", "notes.txt"]  # the probe file is gone


def test_every_flipped_byte_is_detected_or_harmless(tmp_path, setup):
    """Format 2 (zip CRC-32 per member, repeated in meta): a flipped byte anywhere in the file either
    raises CheckpointError or leaves every loaded array and the metadata bit for bit as saved (zip
    fields that carry no data, such as timestamps)."""
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=3, config={"m": M})
    raw = path.read_bytes()
    ref = checkpoint.load(path)
    ref_fp = checkpoint.read_meta(path)["fingerprint"]
    flat = lambda ck: [np.asarray(v) for v in (ck.model.W, ck.model.a, *ck.opt_state)]  # noqa: E731
    silent = 0
    for i in range(0, len(raw), 2):  # every other byte: the whole file's structure, in a few seconds
        path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x10]) + raw[i + 1:])
        try:
            ck = checkpoint.load(path)
        except checkpoint.CheckpointError:
            continue
        silent += 1
        assert ck.step == 3 and ck.config == ref.config and checkpoint.read_meta(path)["fingerprint"] == ref_fp, i
        assert all(a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
                   for a, b in zip(flat(ck), flat(ref))), i
    assert silent < len(raw) // 20  # a few bytes of zip bookkeeping, not the data


def test_format_1_checkpoints_are_still_read(tmp_path, setup):
    X, y, params, opt, state = setup
    arrays = {"W": np.asarray(params.W), "a": np.asarray(params.a)}
    arrays.update({f"opt_{i:03d}": np.asarray(x) for i, x in enumerate(jax.tree_util.tree_leaves(state))})
    meta = json.dumps({"format": "jaxcorr-checkpoint/1", "step": 5, "config": {"m": M},
                       "fingerprint": checkpoint.fingerprint(X, y)}, sort_keys=True).encode()
    digest = checkpoint._container._checksum_v1(meta, arrays).encode()
    path = tmp_path / "old.ckpt"
    with open(path, "wb") as f:
        np.savez(f, **arrays, meta=np.frombuffer(meta, np.uint8), checksum=np.frombuffer(digest, np.uint8))
    assert checkpoint.is_checkpoint(path)
    ck = checkpoint.load(path, X=X, y=y, optimizer=opt)
    assert ck.step == 5 and np.array_equal(ck.model.W, params.W)
    raw = path.read_bytes()
    i = raw.index(np.asarray(params.W).tobytes()[:8]) + 4
    path.write_bytes(raw[:i] + bytes([raw[i] ^ 1]) + raw[i + 1:])
    with pytest.raises(checkpoint.CheckpointError, match="corrupted"):
        checkpoint.load(path)


def test_save_reports_its_phases_and_read_meta_reads_only_metadata(tmp_path, setup):
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    t = {}
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=4, config={"m": M}, timings=t)
    assert set(t) == {"host", "write", "fsync", "rename", "bytes"} and t["bytes"] == path.stat().st_size
    meta = checkpoint.read_meta(path)
    assert meta["format"] == checkpoint.FORMAT and meta["step"] == 4 and meta["arrays"]["W"][1] == [M, D]


# ------------------------------------------------------ compact checkpoints of full-width runs
def _bits_equal(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _state_equal(s, t):
    ls, lt = jax.tree_util.tree_leaves(s), jax.tree_util.tree_leaves(t)
    return len(ls) == len(lt) and all(_bits_equal(a, b) for a, b in zip(ls, lt))


@pytest.mark.parametrize("method", ["active", "dense"])
@pytest.mark.parametrize("which", ["sgd", "momentum", "adam"])
def test_compact_checkpoint_of_a_full_width_run_restores_it_bit_for_bit(tmp_path, method, which):
    """The paper's invariant (rows that fire for no point at t = 0 never move): a full-width run is
    saved as its active rows plus any row that moved, and restore() rebuilds W and the optimizer state
    bit for bit; the resumed run then equals the one resumed from the full checkpoint."""
    from jaxcorr import train, wide

    X, y = data.synthetic(1, 4, 6)
    m, key = 2048, jax.random.key(5)
    opt = {"sgd": train.sgd(1.0), "momentum": train.sgd(0.1, momentum=0.9), "adam": optax.adam(0.01)}[which]
    W0 = nn.init(key, m, 6)
    b = float(nn.default_threshold(m))
    p, h = train.fit(W0, X, y, steps=3, method=method, optimizer=opt, b=b)
    small, full = tmp_path / "small.ckpt", tmp_path / "full.ckpt"
    kind = checkpoint.save(small, p, X=X, y=y, key=key, b=b, W0=W0, opt_state=h.opt_state, optimizer=opt,
                           step=3, config={"run": 1})
    checkpoint.save(full, p, X=X, y=y, opt_state=h.opt_state, step=3, config={"m": m}, form="full")
    assert kind == "compact" and small.stat().st_size < full.stat().st_size / 4
    held = checkpoint.restore(small, X=X, y=y, optimizer=opt, as_wide=True)
    assert held.kind == "compact" and held.step == 3 and held.config["run"] == 1 and held.config["wide"]["full_width"]
    active = wide.active_rows(W0.W, X, b)
    assert np.array_equal(np.asarray(held.model.idx), np.flatnonzero(active))  # exactly A: nothing else moved
    ck = checkpoint.restore(small, X=X, y=y, optimizer=opt)
    assert ck.kind == "compact" and isinstance(ck.model, nn.Params)
    assert _bits_equal(ck.model.W, p.W) and _bits_equal(ck.model.a, p.a)
    assert _state_equal(ck.opt_state, h.opt_state)
    ref = checkpoint.restore(full, X=X, y=y, optimizer=opt)
    a1, _ = train.fit(ck.model, X, y, steps=2, method=method, optimizer=opt, b=b, opt_state=ck.opt_state)
    a2, _ = train.fit(ref.model, X, y, steps=2, method=method, optimizer=opt, b=b, opt_state=ref.opt_state)
    assert _bits_equal(a1.W, a2.W)


def test_load_of_a_compact_checkpoint_is_the_trained_model(tmp_path):
    """Issue 23 item 12: checkpoint.load of a compact file (as `jaxcorr train --save` writes for a seeded
    run) is the full-width model: nn.predict and nn.loss on it equal the trained model's."""
    from jaxcorr import train

    X, y = data.synthetic(3, 6, 8)
    m, key = 4096, jax.random.key(11)
    W0 = nn.init(key, m, 8)
    b = float(nn.default_threshold(m))
    opt = optax.adam(1e-2)
    p, h = train.fit(W0, X, y, steps=4, optimizer=opt, b=b)
    path = tmp_path / "run.ckpt"
    assert checkpoint.save(path, p, X=X, y=y, key=key, b=b, W0=W0, opt_state=h.opt_state, optimizer=opt,
                           step=4) == "compact"
    with pytest.raises(checkpoint.CheckpointError, match="optimizer="):
        checkpoint.load(path)  # the state of the rows not held needs the optimizer: refused, not partial
    got = checkpoint.load(path, optimizer=opt)
    assert got.model.W.shape == (m, 8)
    assert _bits_equal(nn.predict(got.model, X, b), nn.predict(p, X, b))
    assert _bits_equal(nn.loss(got.model, X, y, b), nn.loss(p, X, y, b))
    sgd_path = tmp_path / "sgd.ckpt"  # no state arrays: loads without the optimizer
    p2, _ = train.fit(W0, X, y, steps=2, optimizer=train.sgd(0.5), b=b)
    checkpoint.save(sgd_path, p2, X=X, y=y, key=key, b=b, step=2, form="compact")
    assert _bits_equal(checkpoint.load(sgd_path).model.W, p2.W)


def test_compact_checkpoint_keeps_every_row_that_differs_in_any_bit(tmp_path):
    """Rows outside A that differ from W(0) or from a fresh state (even -0.0 for 0.0) are kept too,
    so a compact checkpoint never loses anything; past max_fraction of the rows it is a full one."""
    from jaxcorr import wide

    X, y = data.synthetic(0, 3, 4)
    m, key = 512, jax.random.key(2)
    W0 = nn.init(key, m, 4)
    b = float(nn.default_threshold(m))
    active = wide.active_rows(W0.W, X, b)
    out = np.flatnonzero(~active)[:3]
    opt = optax.adam(1e-3)
    W = W0.W.at[out[0], 1].add(1e-3)
    state = opt.init(W)
    mu = state[0].mu.at[out[1], 0].set(-0.0)
    state = (state[0]._replace(mu=mu, count=jax.numpy.asarray(7, state[0].count.dtype)), state[1])
    path = tmp_path / "c.ckpt"
    assert checkpoint.save(path, W0._replace(W=W), X=X, y=y, key=key, b=b, W0=W0, opt_state=state,
                           optimizer=opt) == "compact"
    held = checkpoint.restore(path, optimizer=opt, as_wide=True)
    idx = set(np.asarray(held.model.idx).tolist())
    assert idx == set(np.flatnonzero(active).tolist()) | {int(out[0]), int(out[1])}
    ck = checkpoint.restore(path, optimizer=opt)
    assert _bits_equal(ck.model.W, W) and _state_equal(ck.opt_state, state)
    moved = W0.W + 1.0  # every row moved: the full format
    assert checkpoint.save(path, W0._replace(W=moved), X=X, y=y, key=key, b=b, W0=W0) == "full"
    assert _bits_equal(checkpoint.load(path).model.W, moved)
    with pytest.raises(ValueError, match="optimizer"):
        checkpoint.save(path, W0, X=X, y=y, key=key, b=b, W0=W0, opt_state=state)
    with pytest.raises(ValueError, match="a is never trained"):
        checkpoint.save(path, W0._replace(a=-W0.a), X=X, y=y, key=key, b=b, W0=W0)
    with pytest.raises(ValueError, match="form"):
        checkpoint.save(path, W0, X=X, y=y, form="rows")
    with pytest.raises(ValueError, match="key="):
        checkpoint.save(path, W0, X=X, y=y, form="compact")


# ------------------------------------------------------------------ corruption, dtypes, locks
def _flip_offsets(raw: bytes):
    """Every byte of the zip's headers and of each member's .npy header, plus every 7th byte."""
    import zipfile

    offs = set(range(0, len(raw), 7))
    with zipfile.ZipFile(io_bytes(raw)) as z:
        for info in z.infolist():
            h = info.header_offset
            offs.update(range(h, h + 30 + len(info.filename) + 20 + 128))  # local header, zip64 extra, npy header
    cd = raw.rfind(b"PK\x01\x02")
    first_cd = raw.find(b"PK\x01\x02")
    offs.update(range(first_cd, len(raw)))  # the central directory and the end records
    del cd
    return sorted(o for o in offs if 0 <= o < len(raw))


def io_bytes(raw):
    import io

    return io.BytesIO(raw)


def test_every_single_bit_flip_in_the_headers_is_a_checkpoint_error(tmp_path, setup):
    """Issue 23 item 5: a flipped bit in a member's .npy header, the zip's "version needed" field or
    anywhere else raises CheckpointError (never TokenError, SyntaxError, NotImplementedError, ...) or
    loads exactly what was saved (a bit in a field that carries no data)."""
    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params._replace(W=params.W[:4], a=params.a[:4]), X=X, y=y, step=3)
    raw = path.read_bytes()
    ref = checkpoint.load(path)
    errors = 0
    for i in _flip_offsets(raw):
        for bit in (0, 3, 6):
            path.write_bytes(raw[:i] + bytes([raw[i] ^ (1 << bit)]) + raw[i + 1:])
            try:
                ck = checkpoint.load(path)
            except checkpoint.CheckpointError:
                errors += 1
                continue
            assert ck.step == 3 and _bits_equal(ck.model.W, ref.model.W) and _bits_equal(ck.model.a, ref.model.a), i
            checkpoint.read_meta(path)
    assert errors > 0


@pytest.mark.parametrize("dt", ["bfloat16", "float16"])
def test_low_precision_optimizer_state_round_trips_bit_for_bit(tmp_path, setup, dt):
    """Issue 23 item 6: adam(mu_dtype=bfloat16) and other ml_dtypes states are saved and restored losslessly."""
    import jax.numpy as jnp

    X, y, params, _, _ = setup
    opt = optax.adam(1e-2, mu_dtype=getattr(jnp, dt))
    state = opt.init(params.W)
    upd, state = opt.update(nn.grad_W(params, X, y, 1.0), state, params.W)
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=state, step=1)
    ck = checkpoint.load(path, X=X, y=y, optimizer=opt)
    assert jax.tree_util.tree_leaves(ck.opt_state)[1].dtype == jnp.dtype(dt)
    assert _state_equal(ck.opt_state, state)
    if dt == "bfloat16":  # stored as uint16 with its name in meta: a damaged name is refused
        raw = path.read_bytes()
        assert b'"bfloat16"' in raw
        path.write_bytes(raw.replace(b'"bfloat16"', b'"bfloat17"'))
        with pytest.raises(checkpoint.CheckpointError):
            checkpoint.load(path)


def test_every_ml_dtype_leaf_round_trips_bit_for_bit(tmp_path, setup):
    import jax.numpy as jnp

    X, y, params, _, _ = setup
    leaves = [jnp.asarray(np.arange(-6, 6) / 4, dt) for dt in ("bfloat16", "float8_e4m3fn", "float8_e5m2", "int4")]
    path = tmp_path / "c.ckpt"
    checkpoint.save(path, params, X=X, y=y, opt_state=leaves, step=1)
    got = checkpoint.load(path).opt_state
    assert [g.dtype for g in got] == [x.dtype for x in leaves]
    assert all(_bits_equal(g, x) for g, x in zip(got, leaves))


_HOLD_LOCK = """
import sys, time
from jaxcorr import checkpoint
with checkpoint.lock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(60)
"""


def test_a_second_writer_of_the_same_path_is_refused(tmp_path, setup):
    """Issue 23 item 10: a run holding checkpoint.lock(path) makes another process's save fail with
    CheckpointError (no silent loss); the holder's own saves go on; released, the path is free again."""
    import subprocess
    import sys

    X, y, params, opt, state = setup
    path = tmp_path / "c.ckpt"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""), JAX_PLATFORMS="cpu")
    holder = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(path)], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(checkpoint.CheckpointError, match="another run") as e:
            checkpoint.save(path, params, X=X, y=y, step=1)
        assert e.value.path == str(path) and not path.exists()
        with pytest.raises(checkpoint.CheckpointError, match="another run"):
            with checkpoint.lock(path):
                pass
    finally:
        holder.kill()
        holder.wait()
    with checkpoint.lock(path):  # free again; the holder's own saves (re-entrant) go on
        checkpoint.save(path, params, X=X, y=y, step=2)
        checkpoint.save(path, params, X=X, y=y, step=3)
    assert checkpoint.load(path).step == 3
