"""jaxcorr.memory: the estimate grows with the sizes, covers measured peaks; the refusal names
estimate, room and what fits; the plan picks full width or the wide model."""

import pytest

from jaxcorr import errors, memory

GIB = 2**30


def _total(method, n, m, d, **kw):
    return memory.estimate(method, n=n, m=m, d=d, **kw).total


def test_estimate_grows_with_every_size_and_optimizer():
    for method in ("dense", "dtree", "wtree", "active"):
        base = _total(method, 8, 2**16, 32)
        assert _total(method, 8, 2**17, 32) > base
        assert _total(method, 8, 2**16, 64) > base
        assert _total(method, 16, 2**16, 32) > base
        assert _total(method, 8, 2**16, 32, optimizer="adam") > base
        assert _total(method, 8, 2**16, 32, dtype="float64") > base
    assert _total("dtree", 8, 2**16, 32, compare="dense") > _total("dtree", 8, 2**16, 32)
    est = memory.estimate("dtree", n=8, m=2**16, d=32)
    assert est.total == sum(est.parts.values()) and est.inputs["method"] == "dtree" and 0 < est.n_active <= 2**16
    with pytest.raises(ValueError, match="method"):
        memory.estimate("nope", n=8, m=16, d=4)


def test_estimate_covers_measured_peaks():
    """Peak RSS of `jaxcorr train --steps 2` (n=8, d=32) measured on the 2-core reference machine."""
    measured_kb = {
        ("dense", 2**22, "sgd"): 2364156, ("dense", 2**22, "adam"): 5043564,
        ("dtree", 2**22, "sgd"): 2422940, ("dtree", 2**22, "adam"): 3539192,
        ("wtree", 2**22, "sgd"): 2423728, ("wtree", 2**22, "adam"): 3871976,
        ("dense", 2**20, "sgd"): 785804, ("dtree", 2**20, "sgd"): 978852, ("wtree", 2**20, "sgd"): 869240,
    }
    for (method, m, opt), kb in measured_kb.items():
        est = _total(method, 8, m, 32, optimizer=opt)
        assert kb * 1024 <= est <= 3 * kb * 1024, (method, m, opt, est / 1024 / kb)


def test_wide_estimate_covers_measured_peaks():
    """The wide model: the span path (train.sgd) holds n numbers per row and slot, not d: a lower
    estimate that still covers the peaks measured with it (docs/bench/bench_width.json: 2.21 GB at
    2^26, 5.29 GB at 2^28; `jaxcorr train --m 2^26 --d 64 --save` 2.49 GiB for sgd, 3.02 GiB for
    momentum); the estimate grows with m."""
    est = memory.estimate("dtree", n=8, m=2**26, d=64, wide=True)
    assert est.total <= 4.5 * GIB and est.inputs["wide"]
    totals = [_total("dtree", 8, 2**k, 64, wide=True) for k in range(10, 41, 3)]
    assert totals == sorted(totals)
    for logm, opt, unspanned, measured in ((26, "sgd", "adam", 2.49 * GIB), (28, "sgd", "adam", 5.29e9),
                                           (26, "momentum", "adam", 3.02 * GIB)):
        span = _total("active", 8, 2**logm, 64, wide=True, optimizer=opt)
        assert measured <= span < _total("active", 8, 2**logm, 64, wide=True, optimizer=unspanned)


def test_largest_width_is_the_boundary():
    avail = 8 * GIB
    for method, wide, d in (("dtree", False, 32), ("dense", False, 64), ("dtree", True, 64)):
        m = memory.largest_width(method, n=8, d=d, available=avail, wide=wide)
        assert 0 < m < (memory.MAX_WIDE_WIDTH if wide else memory.MAX_TREE_WIDTH)
        assert _total(method, 8, m, d, wide=wide) <= avail < _total(method, 8, m + 1, d, wide=wide)
    assert memory.largest_width("dtree", n=8, d=32, available=1) == 0


def test_check_refuses_with_one_line_naming_everything():
    with pytest.raises(errors.InsufficientMemoryError) as e:
        memory.check("dtree", n=8, m=2**28, d=32, available=(4 * GIB, "cgroup memory limit"))
    msg = str(e.value)
    assert "\n" not in msg and isinstance(e.value, ValueError)
    for w in ("--m 268435456", "does not fit", "GiB", "4.0 GiB is available (cgroup memory limit)", "at most --m",
              "the wide model (method active) fits"):
        assert w in msg, msg
    fits = int(msg.split("at most --m ")[1].split()[0])
    assert fits == e.value.largest and e.value.available == 4 * GIB
    assert memory.check("dtree", n=8, m=fits, d=32, available=(4 * GIB, "x")).estimate.total <= 4 * GIB
    with pytest.raises(ValueError, match="2\\^30"):
        memory.check("dense", n=8, m=3_000_000_000, d=32)
    assert memory.check("dense", n=8, m=2**10, d=32, available=(None, "unknown")).available is None
    # The wide model at 2^26 fits in 24 GiB; full width does not, and the message says what fits.
    gib24 = (24 * GIB, "MemAvailable")
    assert memory.check("dtree", n=8, m=2**26, d=64, wide=True, available=gib24).wide
    with pytest.raises(errors.InsufficientMemoryError) as e:
        memory.check("dense", n=8, m=2**26, d=64, available=gib24)
    msg = str(e.value)
    assert "--m 67108864" in msg and "24.0 GiB is available" in msg and "the wide model (method active) fits" in msg
    assert 2**20 < e.value.largest < 2**26
    with pytest.raises(errors.InsufficientMemoryError, match="needs about"):
        memory.check("dtree", n=8, m=2**40, d=64, wide=True, available=gib24)


def test_plan_keeps_full_width_when_it_fits_else_the_wide_model():
    room = (24 * GIB, "MemAvailable")
    kw = dict(n=8, d=64, available=room)
    assert not memory.plan("dtree", m=2**20, **kw).wide
    assert memory.plan("dtree", m=2**20, wide="on", **kw).wide
    p = memory.plan("active", m=2**28, **kw)
    assert p.wide and p.estimate.inputs["wide"] and p.available == room[0]
    with pytest.raises(errors.InsufficientMemoryError):  # off: full width or nothing
        memory.plan("active", m=2**28, wide="off", **kw)
    with pytest.raises(errors.InsufficientMemoryError, match="sparse method"):  # dense never goes wide
        memory.plan("dense", m=2**28, **kw)
    with pytest.raises(errors.InsufficientMemoryError):  # a --compare baseline needs the full width
        memory.plan("active", m=2**28, compare="dense", **kw)
    assert memory.plan("active", m=2**20, resumed="wide", **kw).wide
    assert memory.plan("active", m=2**20, resumed="compact", **kw).wide is False
    for bad in (dict(resumed="wide", wide="off"), dict(resumed="wide", compare="dense"), dict(resumed="full",
                                                                                              wide="on")):
        with pytest.raises(ValueError, match="checkpoint"):
            memory.plan("active", m=2**20, **kw, **bad)
    with pytest.raises(errors.InsufficientMemoryError):  # a full checkpoint stays full width
        memory.plan("active", m=2**28, resumed="full", **kw)
    big = dict(kw, available=(256 * GIB, "MemAvailable"))
    assert memory.plan("active", m=2**31, **big).wide  # past the tree-index limit: the wide model


def test_width_limits_are_the_ones_they_name():
    from jaxcorr import nn

    assert memory.MAX_WIDE_WIDTH == nn.MAX_WIDTH and memory.MAX_TREE_WIDTH == 2**30
    assert memory.expected_active(2**20, 8) == pytest.approx(memory.expected_active(2**20, 8,
                                                                                    float(nn.default_threshold(2**20))))


def test_available_reads_this_machine():
    avail, source = memory.available()
    assert avail is not None and avail > 0 and source


def test_cgroup_limits_are_read(tmp_path, monkeypatch):
    """A cgroup v2 limit below MemAvailable is the binding one (file layout as the kernel writes it)."""
    root = tmp_path / "cg"
    root.mkdir()
    (root / "memory.max").write_text(f"{2 * 2**30}\n")
    (root / "memory.current").write_text(f"{2**30}\n")
    (root / "memory.stat").write_text(f"anon 1\ninactive_file {2**28}\n")
    real = memory._cgroup_dirs
    monkeypatch.setattr(memory, "_cgroup_dirs", lambda r, v: [str(root)] if v == 2 else [])
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 64 * 2**30)
    avail, source = memory.available()
    assert source == "cgroup memory limit" and avail == 2 * 2**30 - (2**30 - 2**28)
    (root / "memory.max").write_text("max\n")
    assert memory.available() == (64 * 2**30, "MemAvailable")
    assert real("/nonexistent", 2) == []


class _Device:
    platform = "gpu"

    def memory_stats(self):
        return {"bytes_limit": 3 * GIB, "bytes_in_use": GIB}


def test_accelerator_memory_is_counted():
    assert memory.available(_Device()) == (2 * GIB, "gpu device memory")
