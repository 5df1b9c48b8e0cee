"""Sharded correlation trees and sharded ``fit`` against the single-device code.

The device count of the CPU backend is fixed when JAX starts, so the checks run once in a child
process (this file run as a script) with ``XLA_FLAGS=--xla_force_host_platform_device_count=4``
and ``JAX_PLATFORMS=cpu``; it prints one JSON object of measurements, and the tests below assert
on it. Sizes include point counts that 4 devices do not divide (n = 5 and 6: padded to 8).

What is compared, sharded (4 devices) vs single device:

- DTree (Theorem 3.1): layout (each device holds n_pad / 4 trees), ``query_all`` and per-point
  ``query`` before and after a batch ``update`` with a repeated index, at a negative threshold
  (so padding points would show up if they could fire); update leaves; the compiled sharded
  update has no collective at all (Section 5: the n tree updates are independent).
- DDFN (Definition 1.3): pairs, count and overflow after an update.
- ``fit(method="dtree")`` and ``fit(method="active")``: losses within 2e-4 relative (float32), W, optimizer state and fire
  statistics, for sgd (Gram path) and adam (generic path) at n = 6, and for n = 5 with an overflow
  rerun that must grow the capacity exactly as on one device; the compiled step has all-reduce /
  reduce-scatter (the sums over points) and no all-gather; a second call (with a NamedSharding
  over ``jax.make_mesh`` instead of the Mesh) does not retrace; past the DDFN cap the error and
  the dense fallback are those of one device; bad mesh arguments raise.

Multi-host (``jax.distributed``) is not exercised here: one host only.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

DEVICES = 4
M, D, STEPS, CHUNK, B = 512, 8, 10, 5, 1.2
COLLECTIVES = ("all-gather", "all-reduce", "reduce-scatter", "all-to-all", "collective-permute")


def _child() -> dict:
    import jax
    import numpy as np
    import optax

    from jaxcorr import data, ddfn, dtree, maxtree, nn, sharding, train

    out: dict = {"device_count": jax.device_count()}
    mesh = sharding.data_mesh()
    rng = np.random.default_rng(0)

    def hlo_collectives(text):
        return {c: text.count(c + "(") + text.count(c + "-start(") for c in COLLECTIVES}

    # ---------------------------------------------------------------- DTree and DDFN, n = 6 and 5
    for n in (6, 5):
        m, d = 37, 4
        W = rng.standard_normal((m, d)).astype(np.float32)
        X = rng.standard_normal((n, d)).astype(np.float32)
        t1 = dtree.init(W, X)
        # n = 5 also checks a jax.make_mesh mesh (Explicit axes by default in JAX 0.10)
        ts = sharding.shard_dtree(t1, mesh if n == 6 else jax.make_mesh((DEVICES,), ("data",)))
        r = {"n_pad": ts.n,
             "rows_per_device": sorted({s.data.shape[0] for s in ts.tree.levels[0].addressable_shards}),
             "devices_holding_levels": len({s.device for s in ts.tree.levels[0].addressable_shards})}
        tau = -0.3
        rr = np.array([3, 10, 3, 36], np.int32)  # a repeated index: the last occurrence wins
        Z = rng.standard_normal((4, d)).astype(np.float32)
        u1, us = dtree.update(t1, rr, Z), dtree.update(ts, rr, Z)
        r["update_sharding_kept"] = us.tree.levels[0].sharding.is_equivalent_to(ts.tree.levels[0].sharding, 2)
        lowered = jax.jit(dtree.update_unchecked).lower(ts, rr, Z).compile().as_text()
        r["update_collectives"] = hlo_collectives(lowered)
        ok = True
        for a, b_ in ((t1, ts), (u1, us)):
            f1, fs = dtree.query_all(a, tau, 64), dtree.query_all(b_, tau, 64)
            ok &= np.array_equal(np.asarray(f1.indices), np.asarray(fs.indices)[:n])
            ok &= np.array_equal(np.asarray(f1.count), np.asarray(fs.count)[:n])
            ok &= not np.asarray(fs.valid)[n:].any() and not np.asarray(fs.count)[n:].any()
            for i in range(n):
                ok &= np.array_equal(np.asarray(dtree.query(a, i, tau, 8).indices),
                                     np.asarray(dtree.query(b_, i, tau, 8).indices))
        r["queries_equal"] = bool(ok)
        back = sharding.unshard_dtree(us, n)
        r["update_leaves_maxdiff"] = float(np.abs(np.asarray(dtree.inner_products(back))
                                                  - np.asarray(dtree.inner_products(u1))).max())
        r["unsharded_invariant"] = bool(maxtree.check_invariant(back.tree))
        s1 = ddfn.init(X, W, b=tau, cap=200)
        ss = sharding.shard_ddfn(s1, jax.make_mesh((DEVICES,), ("data",)) if n == 5 else mesh)
        s1, ss = ddfn.update(s1, rr, Z), ddfn.update(ss, rr, Z)
        q1, qs = ddfn.query(s1), ddfn.query(ss)
        pairs = lambda q: sorted(zip(np.asarray(q.i)[np.asarray(q.valid)].tolist(),  # noqa: E731
                                     np.asarray(q.j)[np.asarray(q.valid)].tolist()))
        r["ddfn_equal"] = bool(pairs(q1) == pairs(qs) and int(q1.count) == int(qs.count)
                               and bool(q1.overflow) == bool(qs.overflow))
        r["ddfn_count"] = int(q1.count)
        out[f"dtree_n{n}"] = r

    # --------------------------------------------------- fit: n = 6 (uneven on 4 devices), sgd and adam
    opts = {"sgd": train.sgd(2.0), "adam": optax.adam(0.05)}
    p = nn.init(jax.random.key(0), M, D)
    for n, method in ((6, "dtree"), (6, "active")):
        X, y = data.synthetic(0, n, D)
        for name, opt in opts.items():
            kw = dict(steps=STEPS, method=method, b=B, optimizer=opt, chunk_size=CHUNK)
            p1, h1 = train.fit(p, X, y, **kw)
            ps, hs = train.fit(p, X, y, mesh=mesh, **kw)
            s1 = jax.tree_util.tree_leaves(h1["opt_state"])
            ss = jax.tree_util.tree_leaves(hs["opt_state"])
            out[f"fit_n{n}_{method}_{name}"] = {
                "loss_rel": float(np.abs(hs["loss"] - h1["loss"]).max() / np.abs(h1["loss"]).max()),
                "W_maxdiff": float(np.abs(np.asarray(ps.W) - np.asarray(p1.W)).max()),
                "W_moved": float(np.abs(np.asarray(p1.W) - np.asarray(p.W)).max()),
                "state_maxdiff": max([float(np.abs(np.asarray(u) - np.asarray(v)).max())
                                      for u, v in zip(s1, ss)], default=0.0),
                "fire_equal": all(np.array_equal(h1[k], hs[k]) for k in ("fire_max", "fire_union")),
                "fire_mean_maxdiff": float(np.abs(h1["fire_mean"] - hs["fire_mean"]).max()),
                "span": [bool(h1["span"]), bool(hs["span"])],
                "shards": hs["shards"],
                "W_dtype": str(ps.W.dtype),
                "W_single_device": len(ps.W.devices()) == 1,
            }
    texts = [ex.as_text() for ex in sharding.EXECUTABLES.values()]
    out["runner_collectives"] = [hlo_collectives(t) for t in texts]

    # a NamedSharding works as well as a Mesh, and the same static configuration does not retrace
    before = sharding.TRACE_COUNTS["dtree"]
    ns = jax.sharding.NamedSharding(jax.make_mesh((DEVICES,), ("data",)), jax.sharding.PartitionSpec("data"))
    _, hn = train.fit(p, X, y, steps=STEPS, method="dtree", b=B, optimizer=opts["adam"], chunk_size=CHUNK,
                      mesh=ns)
    out["retraced"] = sharding.TRACE_COUNTS["dtree"] - before
    # h1 is the single-device adam run (active) of the loop above; rerun dtree's
    _, h1 = train.fit(p, X, y, steps=STEPS, method="dtree", b=B, optimizer=opts["adam"], chunk_size=CHUNK)
    out["named_sharding_loss_rel"] = float(np.abs(hn["loss"] - h1["loss"]).max() / h1["loss"].max())

    # n = 5, overflow: b = 1.6 sizes the capacity small, sgd(300) grows the fire sets; chunk rerun
    X, y = data.synthetic(0, 5, D)
    kw = dict(steps=STEPS, method="dtree", b=1.6, optimizer=train.sgd(300.0), chunk_size=CHUNK)
    p1, h1 = train.fit(p, X, y, **kw)
    ps, hs = train.fit(p, X, y, mesh=mesh, **kw)
    out["overflow"] = {
        "events_single": [e["new_capacity"] for e in h1["capacity_events"]],
        "events_sharded": [e["new_capacity"] for e in hs["capacity_events"]],
        "loss_rel": float(np.abs(hs["loss"] - h1["loss"]).max() / np.abs(h1["loss"]).max()),
        "W_rel": float(np.abs(np.asarray(ps.W) - np.asarray(p1.W)).max() / np.abs(np.asarray(p1.W)).max()),
        "fire_max_equal": bool(np.array_equal(h1["fire_max"], hs["fire_max"])),
        "span": bool(hs["span"]),
    }

    # beyond the DDFN cap: the same error, or the same dense fallback, as on one device
    X, y = data.synthetic(0, 6, D)
    out["fallback_equal"] = True
    for method in ("dtree", "active"):
        kw = dict(steps=2, method=method, b=-0.5, chunk_size=2)
        pf, hf = train.fit(p, X, y, fallback="dense", mesh=mesh, **kw)
        p1, h1 = train.fit(p, X, y, fallback="dense", **kw)
        out["fallback_equal"] &= bool(np.array_equal(np.asarray(pf.W), np.asarray(p1.W))
                                      and hf["fallback_step"] == h1["fallback_step"] == 0)

    # bad arguments
    errs = {}
    for label, call in {
        "dense": lambda: train.fit(p, X, y, steps=1, method="dense", mesh=mesh),
        "wtree": lambda: train.fit(p, X, y, steps=1, method="wtree", mesh=mesh),
        "not_a_mesh": lambda: train.fit(p, X, y, steps=1, mesh="data"),
        "bad_axis": lambda: sharding.layout(mesh, "model"),
        "cap": lambda: train.fit(p, X, y, steps=2, method="dtree", b=-0.5, chunk_size=2, mesh=mesh),
        "cap_active": lambda: train.fit(p, X, y, steps=2, method="active", b=-0.5, chunk_size=2, mesh=mesh),
    }.items():
        try:
            call()
            errs[label] = None
        except ValueError as e:
            errs[label] = str(e)
    out["errors"] = errs
    return out


@pytest.fixture(scope="module")
def res():
    env = dict(os.environ)
    flag = f"--xla_force_host_platform_device_count={DEVICES}"
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + flag).strip()
    env["JAX_PLATFORMS"] = "cpu"
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, os.path.abspath(__file__)], env=env, capture_output=True,
                          text=True, timeout=600, cwd=root)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_child_has_several_devices(res):
    assert res["device_count"] == DEVICES


@pytest.mark.parametrize("n", [6, 5])
def test_dtree_layout_and_queries(res, n):
    r = res[f"dtree_n{n}"]
    assert r["n_pad"] == 8 and r["rows_per_device"] == [2] and r["devices_holding_levels"] == DEVICES
    assert r["queries_equal"]
    assert r["update_leaves_maxdiff"] <= 1e-6 and r["unsharded_invariant"]
    assert r["update_sharding_kept"]


@pytest.mark.parametrize("n", [6, 5])
def test_dtree_update_is_communication_free(res, n):
    # Section 5: the n tree updates are independent, so the sharded UPDATE needs no collective.
    assert not any(res[f"dtree_n{n}"]["update_collectives"].values()), res[f"dtree_n{n}"]


@pytest.mark.parametrize("n", [6, 5])
def test_ddfn_sharded_matches(res, n):
    assert res[f"dtree_n{n}"]["ddfn_equal"] and res[f"dtree_n{n}"]["ddfn_count"] > 0


@pytest.mark.parametrize("method", ["dtree", "active"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_fit_trajectory_matches_single_device(res, opt, method):
    r = res[f"fit_n6_{method}_{opt}"]
    assert r["shards"] == DEVICES
    assert r["loss_rel"] <= 2e-4, r
    assert r["W_moved"] > 1e-3  # the comparison is not vacuous
    assert r["W_maxdiff"] <= 1e-4 and r["state_maxdiff"] <= 1e-4, r
    assert r["fire_equal"] and r["fire_mean_maxdiff"] <= 1e-5, r
    assert r["span"] == ([True, True] if opt == "sgd" else [False, False])
    assert r["W_dtype"] == "float32" and r["W_single_device"]


def test_fit_collectives_only_for_sums(res):
    # one all-reduce family per sum over points (loss, gradient or K G, statistics); never an all-gather
    for c in res["runner_collectives"]:
        assert c["all-gather"] == 0 and c["all-to-all"] == 0 and c["collective-permute"] == 0, c
        assert c["all-reduce"] + c["reduce-scatter"] >= 2, c


def test_fit_named_sharding_and_no_retrace(res):
    assert res["retraced"] == 0
    assert res["named_sharding_loss_rel"] <= 2e-4


def test_fit_sharded_overflow_rerun(res):
    o = res["overflow"]
    assert len(o["events_single"]) >= 2, f"no overflow happened (capacity events {o['events_single']})"
    assert o["events_sharded"] == o["events_single"], o
    assert o["loss_rel"] <= 2e-4 and o["fire_max_equal"] and o["W_rel"] <= 1e-5 and o["span"]


def test_fit_mesh_errors(res):
    e = res["errors"]
    assert "('active', 'dtree')" in e["dense"] and "('active', 'dtree')" in e["wtree"]
    assert "Mesh" in e["not_a_mesh"] and "'model'" in e["bad_axis"]
    assert "DDFN cap" in e["cap"] and "DDFN cap" in e["cap_active"] and res["fallback_equal"]


if __name__ == "__main__":
    print(json.dumps(_child()))
