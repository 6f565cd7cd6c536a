"""OpenVINO's compiled-model cache is bounded (issue 38): least recently used entries go over the cap, entries in use
by any process never do, a build can drop what its own gate runs cached, and `acsdk cache` lists and prunes."""

import os
import subprocess
import sys
import textwrap
import time

import pytest

from acsdk.apps.cli import main
from runtime import model_cache
from runtime.model_cache import GIB, CacheSizeError

MIB = 1 << 20


def _entry(root, name, mib, age_s, source=None):
    """An entry of `mib` MiB last used `age_s` seconds ago, made for the engine dir `source`."""
    lease = model_cache.use(root / name, source=source, cap=1 << 60)
    (root / name / "blob.blob").write_bytes(b"\0" * (mib * MIB))
    lease.close()
    t = time.time() - age_s
    os.utime(root / name / model_cache.USED_FILE, (t, t))
    return root / name


def _names(root):
    return sorted(e.name for e in model_cache.entries(root))


def test_entries_are_listed_least_recently_used_first_with_size_and_engine_dir(tmp_path):
    root = tmp_path / "openvino"
    _entry(root, "b", 2, 100, source=tmp_path / "engines-b")
    _entry(root, "a", 1, 300)
    listed = model_cache.entries(root)
    assert [e.name for e in listed] == ["a", "b"]
    assert listed[1].bytes >= 2 * MIB and listed[1].source == str((tmp_path / "engines-b").resolve())
    assert listed[0].source is None and listed[0].last_used < listed[1].last_used
    assert model_cache.entries(tmp_path / "absent") == []


def test_opening_an_entry_evicts_the_least_recently_used_others_over_the_cap(tmp_path):
    root = tmp_path / "openvino"
    for name, age in (("old", 300), ("mid", 200), ("new", 100)):
        _entry(root, name, 2, age)
    lease = model_cache.use(root / "mine", cap=5 * MIB)  # 6 MiB held: the oldest goes, then it fits
    assert _names(root) == ["mid", "mine", "new"]
    model_cache.use(root / "mid", cap=5 * MIB).close()  # a use makes it the most recent
    model_cache.use(root / "mine", cap=3 * MIB).close()
    assert _names(root) == ["mid", "mine"], "'new' was the least recently used"
    lease.close()
    assert not any(p.name.startswith(".") and p.is_dir() for p in root.iterdir()), "evictions leave nothing aside"


def test_the_entry_in_use_is_never_evicted_even_over_the_cap(tmp_path):
    root = tmp_path / "openvino"
    big = _entry(root, "big", 3, 10)
    lease = model_cache.use(big, cap=1 << 60)
    other = model_cache.use(root / "other", cap=0)  # cap 0: every entry not in use goes
    assert _names(root) == ["big", "other"] and model_cache.in_use(big)
    assert model_cache.prune(root, 0) == [] and not model_cache.remove(big)
    lease.close()
    assert not model_cache.in_use(big)
    assert [e.name for e in model_cache.prune(root, 0)] == ["big"]
    other.close()
    assert [e.name for e in model_cache.prune(root, 0)] == ["other"] and _names(root) == []


@pytest.mark.skipif(sys.platform == "win32", reason="cross-process protection needs flock")
def test_an_entry_another_process_uses_is_never_evicted(tmp_path):
    root = tmp_path / "openvino"
    code = textwrap.dedent(f"""
        import sys
        from runtime import model_cache
        lease = model_cache.use({str(root / "theirs")!r}, cap=1 << 60)
        print("held", flush=True)
        sys.stdin.readline()
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        os.utime(root / "theirs" / model_cache.USED_FILE, (0, 0))  # the oldest entry
        model_cache.use(root / "mine", cap=0).close()
        assert _names(root) == ["mine", "theirs"] and model_cache.in_use(root / "theirs")
    finally:
        holder.communicate("\n", timeout=60)
    assert [e.name for e in model_cache.prune(root, 0)] == ["theirs", "mine"], "let go: the oldest first"


def test_a_process_waiting_on_an_entry_being_evicted_gets_a_fresh_one(tmp_path):
    root = tmp_path / "openvino"
    entry = _entry(root, "e", 1, 10)
    assert model_cache.remove(entry) and not entry.exists()
    lease = model_cache.use(entry, source=tmp_path / "engines", cap=1 << 60)
    assert entry.is_dir() and model_cache.in_use(entry) and (entry / model_cache.ENTRY_FILE).is_file()
    lease.close()


def test_a_build_removes_the_entries_its_gate_runs_made(tmp_path):
    root = tmp_path / "openvino"
    build = tmp_path / ".engines.x.tmp"
    for i in range(3):
        _entry(root, f"gate{i}", 1, 10 + i, source=build)
    _entry(root, "other", 1, 10, source=tmp_path / "engines")
    held = model_cache.use(root / "gate0", cap=1 << 60)
    removed = model_cache.remove_entries_for(build, root)
    assert sorted(e.name for e in removed) == ["gate1", "gate2"]
    assert _names(root) == ["gate0", "other"], "the one in use stays, other engine dirs' entries stay"
    held.close()


def test_the_cap_comes_from_the_environment_and_bad_values_are_named(monkeypatch):
    monkeypatch.delenv(model_cache.MAX_GB_ENV, raising=False)
    assert model_cache.max_bytes() == 20 * GIB
    monkeypatch.setenv(model_cache.MAX_GB_ENV, "1.5")
    assert model_cache.max_bytes() == int(1.5 * GIB)
    for bad in ("-1", "lots", "nan", "inf"):
        monkeypatch.setenv(model_cache.MAX_GB_ENV, bad)
        with pytest.raises(CacheSizeError) as err:
            model_cache.max_bytes()
        assert err.value.argument == model_cache.MAX_GB_ENV and bad in str(err.value) and err.value.exit_code == 2


def test_acsdk_cache_lists_and_prunes(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(model_cache.MAX_GB_ENV, raising=False)
    root = tmp_path / "cache" / "openvino"
    engines = tmp_path / "engines"
    engines.mkdir()
    (engines / "manifest.json").write_text("{}")
    _entry(root, "old", 2, 300, source=tmp_path / "gone")
    _entry(root, "mid", 2, 200, source=engines)
    _entry(root, "new", 1, 100)
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "3 entries" in out and "cap 20.0 GiB" in out
    lines = [line for line in out.splitlines() if line.startswith("  ")]
    assert [line.split()[4] for line in lines] == ["new", "mid", "old"], "most recently used first"
    assert "engine dir gone" in lines[2] and "engine dir rebuilt since" in lines[1] and str(engines) in lines[1]
    assert main(["cache", "--prune", "--max-gb", str(3.5 * MIB / GIB)]) == 0
    assert "removed old" in capsys.readouterr().out and _names(root) == ["mid", "new"]
    held = model_cache.use(root / "mid", cap=1 << 60)
    assert main(["cache", "--prune", "--all"]) == 0
    assert "(in use" in capsys.readouterr().out and _names(root) == ["mid"]
    held.close()
    assert main(["cache", "--prune", "--all"]) == 0 and _names(root) == []


@pytest.mark.parametrize(
    "argv, flag",
    [
        (["cache", "--prune", "--max-gb", "-2"], "--max-gb"),
        (["cache", "--prune", "--max-gb", "ten"], "--max-gb"),
        (["cache", "--max-gb", "3"], "--max-gb"),
        (["cache", "--all"], "--all"),
        (["cache", "--prune", "--all", "--max-gb", "3"], "--max-gb"),
    ],
)
def test_acsdk_cache_bad_values_exit_2_naming_the_flag(argv, flag, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("ACSDK_CACHE", str(tmp_path / "cache"))
    _entry(tmp_path / "cache" / "openvino", "kept", 1, 10)
    assert main(argv) == 2
    assert f"error: {flag}:" in capsys.readouterr().err
    assert _names(tmp_path / "cache" / "openvino") == ["kept"], "nothing removed on a bad value"
