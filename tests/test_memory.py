"""jaxcorr.memory: the estimate grows with the sizes, the refusal names estimate, room and what fits."""

import pytest

from jaxcorr import memory


def test_estimate_grows_with_every_size_and_optimizer():
    for method in ("dense", "dtree", "wtree", "active"):
        base = memory.estimate_bytes(method, 8, 2**16, 32)
        assert memory.estimate_bytes(method, 8, 2**17, 32) > base
        assert memory.estimate_bytes(method, 8, 2**16, 64) > base
        assert memory.estimate_bytes(method, 16, 2**16, 32) > base
        assert memory.estimate_bytes(method, 8, 2**16, 32, optimizer="adam") > base
        assert memory.estimate_bytes(method, 8, 2**16, 32, itemsize=8) > base
    assert memory.estimate_bytes("dtree", 8, 2**16, 32, compare="dense") > memory.estimate_bytes("dtree", 8, 2**16, 32)


def test_estimate_covers_measured_peaks():
    """Peak RSS of `jaxcorr train --steps 2` (n=8, d=32) measured on the 2-core reference machine."""
    measured_kb = {
        ("dense", 2**22, "sgd"): 2364156, ("dense", 2**22, "adam"): 5043564,
        ("dtree", 2**22, "sgd"): 2422940, ("dtree", 2**22, "adam"): 3539192,
        ("wtree", 2**22, "sgd"): 2423728, ("wtree", 2**22, "adam"): 3871976,
        ("dense", 2**20, "sgd"): 785804, ("dtree", 2**20, "sgd"): 978852, ("wtree", 2**20, "sgd"): 869240,
    }
    for (method, m, opt), kb in measured_kb.items():
        est = memory.estimate_bytes(method, 8, m, 32, optimizer=opt)
        assert kb * 1024 <= est <= 3 * kb * 1024, (method, m, opt, est / 1024 / kb)


def test_max_width_is_the_boundary():
    avail = 8 * 2**30
    m = memory.max_width("dtree", 8, 32, avail)
    assert 0 < m < memory.MAX_WIDTH
    assert memory.estimate_bytes("dtree", 8, m, 32) <= avail < memory.estimate_bytes("dtree", 8, m + 1, 32)
    assert memory.max_width("dtree", 8, 32, 1) == 0


def test_check_refuses_with_one_line_naming_everything():
    with pytest.raises(MemoryError) as e:
        memory.check("dtree", 8, 2**28, 32, available=(4 * 2**30, "cgroup memory limit"))
    msg = str(e.value)
    assert "\n" not in msg
    for w in ("--m 268435456", "does not fit", "GiB", "4.0 GiB is available (cgroup memory limit)", "at most --m"):
        assert w in msg, msg
    fits = int(msg.split("at most --m ")[1].split()[0])
    assert memory.check("dtree", 8, fits, 32, available=(4 * 2**30, "x"))["estimate"] <= 4 * 2**30
    with pytest.raises(ValueError, match="2\\^30"):
        memory.check("dense", 8, 3_000_000_000, 32)
    assert memory.check("dense", 8, 2**10, 32, available=(None, "unknown"))["available"] is None


def test_available_bytes_reads_this_machine():
    avail, source = memory.available_bytes()
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
    avail, source = memory.available_bytes()
    assert source == "cgroup memory limit" and avail == 2 * 2**30 - (2**30 - 2**28)
    (root / "memory.max").write_text("max\n")
    assert memory.available_bytes() == (64 * 2**30, "MemAvailable")
    assert real("/nonexistent", 2) == []
