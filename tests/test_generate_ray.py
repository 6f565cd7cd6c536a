"""`acsdk generate --ray`: a local Ray cluster of 2 CPU workers writes the bytes of a single-process run, survives a
killed worker, and a killed driver loses nothing that --resume does not finish. Every Ray run is its own process,
started in its own session so whatever Ray leaves behind after a SIGKILL is reaped with it."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from acsdk import InputError
from acsdk.data import make_mvtec_like

PER_TYPE = 6
DEFECTS = ("hole", "scratch")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("mvtec")
    make_mvtec_like(root, "plate", n_good=4, n_per_defect=6, defects=DEFECTS)
    return root


def _args(engine_dir, data, out, *extra, per_type=PER_TYPE):
    return [
        sys.executable, "-m", "acsdk", "generate", "--engines", str(engine_dir), "--backend", "onnxruntime",
        "--device", "cpu", "--data", str(data), "--category", "plate", "--per-type", str(per_type), "--out", str(out),
        "--seed", "5", "--steps", "10", "--asea-steps", "2", "-q", *extra,
    ]  # fmt: skip


RAY2 = ("--ray", "auto", "--workers", "2", "--cpus-per-worker", "1")
ENV = dict(os.environ, HF_HUB_OFFLINE="1", RAY_DISABLE_USAGE_STATS="1")


def _start(args) -> subprocess.Popen:
    return subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str]:
    try:
        out, _ = proc.communicate(timeout=timeout)
    finally:
        _reap(proc)
    return proc.returncode, out.decode(errors="replace")


def _session(sid: int) -> list[int]:
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[3]) == sid:  # stat fields after the command: state ppid pgrp session ...
            pids.append(int(stat.parent.name))
    return pids


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def _reap(proc: subprocess.Popen) -> None:
    """Kill what is left of a run's session: Ray's processes, and its workers (each in its own process group),
    outlive a SIGKILLed driver for a while."""
    for _ in range(50):
        pids = [p for p in _session(proc.pid) if p != os.getpid()]
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    proc.wait()


def _run(args, timeout: float = 300) -> tuple[int, str]:
    return _finish(_start(args), timeout)


def _pairs(out: Path) -> dict[str, bytes]:
    root = out / "plate"
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.glob("*/*/*.png"))}


def _metadata(out: Path) -> dict[str, list[dict]]:
    recs = {}
    for d in DEFECTS:
        lines = (out / "plate" / d / "metadata.jsonl").read_text().splitlines()
        recs[d] = [{k: v for k, v in json.loads(x).items() if k != "run"} for x in lines]
    return recs


def _wait_for(predicate, proc, timeout=240):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None and not predicate():
        time.sleep(0.05)
    assert proc.poll() is None, f"the run ended before it could be interrupted: {proc.communicate()[0][-2000:]!r}"


def _records(out: Path, defect: str = "hole") -> list[Path]:
    d = out / "plate" / defect / "records"
    return sorted(d.glob("*.json")) if d.is_dir() else []


@contextmanager
def _one_thread():
    """Ray workers here run 1 thread each, and torch's CPU reductions (ASEA) round by thread count."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def reference(engine_dir, data, tmp_path_factory):
    """The single-process run (no Ray) the distributed runs must equal."""
    import acsdk
    from acsdk.data.generate import generate

    out = tmp_path_factory.mktemp("local") / "out"
    with _one_thread():
        synth = acsdk.Synthesizer(engine_dir, backend="onnxruntime", device="cpu")
        generate(None, data, "plate", PER_TYPE, out, synthesizer=synth, seed=5, num_inference_steps=10, asea_steps=2,
                 progress=False)  # fmt: skip
    assert len(_pairs(out)) == 2 * PER_TYPE * len(DEFECTS)
    return out


def test_a_killed_worker_is_restarted_and_a_killed_driver_loses_nothing(reference, engine_dir, data, tmp_path, capsys):
    """One run, two faults: a worker process SIGKILLed (Ray restarts it and retries its chunk), then the driver
    SIGKILLed; --resume (here in this process, without Ray: the records on disk are the whole state) finishes the
    set, and it equals the single-process run with no item twice."""
    from acsdk.apps.cli import main

    out, many = tmp_path / "ray", 10 * PER_TYPE  # enough work to outlast a worker's restart
    proc = _start(_args(engine_dir, data, out, *RAY2, per_type=many))
    _wait_for(lambda: _records(out), proc)
    first = {p for p in _session(proc.pid) if b"MapWorker" in _cmdline(p)}
    victim = int(json.loads(_records(out)[0].read_text())["run"]["worker"].split(":")[1])
    assert victim in first
    os.kill(victim, signal.SIGKILL)
    makers = lambda: {int(json.loads(p.read_text())["run"]["worker"].split(":")[1]) for p in _records(out)}  # noqa: E731
    _wait_for(lambda: makers() - first, proc)  # the replacement process has finished an item
    _wait_for(lambda: len(_records(out)) >= 3, proc)
    os.kill(proc.pid, signal.SIGKILL)  # the driver alone, as a crash would
    _finish(proc)
    finished = {d: len(_records(out, d)) for d in DEFECTS}
    assert 3 <= finished["hole"] and sum(finished.values()) < many * len(DEFECTS), finished
    with _one_thread():
        assert main(_args(engine_dir, data, out, "--resume", per_type=many)[3:]) == 0
    log = capsys.readouterr().out
    for d in DEFECTS:
        assert f"plate/{d}: {many} pairs ({many - finished[d]} new)" in log
        assert len(_records(out, d)) == many
    assert "images/h)" in log, "the per-worker summary is printed"
    # an index's bytes do not depend on how many are made: the reference's indices must match exactly
    assert {k: v for k, v in _pairs(out).items() if int(k[-8:-4]) < PER_TYPE} == _pairs(reference)
    assert {d: recs[:PER_TYPE] for d, recs in _metadata(out).items()} == _metadata(reference)
    assert all([r["index"] for r in recs] == list(range(many)) for recs in _metadata(out).values())
    assert not list(out.rglob("*.tmp"))
    runs = json.loads((out / "plate" / "generate.json").read_text())["runs"]
    assert [r["mode"] for r in runs] == ["ray", "local"] and "workers" not in runs[0], "the killed run's entry stays"


def _refused(engine_dir, data, out, **kwargs) -> InputError:
    from acsdk.data.generate import generate

    common = dict(seed=5, num_inference_steps=10, asea_steps=2, backend="onnxruntime", progress=False, workers=2)
    with pytest.raises(InputError) as err:
        generate(engine_dir, data, "plate", PER_TYPE, out, **{**common, **kwargs})
    return err.value


def test_resume_with_other_settings_is_refused_before_ray_starts(reference, engine_dir, data):
    err = _refused(engine_dir, data, reference, seed=6, resume=True, ray="auto")
    assert err.argument == "out" and "other settings" in str(err) and "seed" in str(err)


def test_without_ray_installed_the_error_says_how_to_get_it(engine_dir, data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    err = _refused(engine_dir, data, tmp_path / "out", ray="auto")
    assert err.argument == "ray" and 'pip install "acsdk[ray]"' in str(err)
    assert not (tmp_path / "out").exists()


def test_an_unreachable_address_is_refused_with_nothing_written(engine_dir, data, tmp_path):
    err = _refused(engine_dir, data, tmp_path / "out", ray="127.0.0.1:9")
    assert err.argument == "ray" and "a reachable Ray cluster" in str(err) and "127.0.0.1:9" in str(err)
    assert _refused(engine_dir, data, tmp_path / "out", ray="nohost").expected.startswith("auto, or the HOST:PORT")
    assert not (tmp_path / "out").exists()


def test_one_cluster_two_workers_write_the_local_bytes_and_bad_workers_are_refused(
    reference, engine_dir, data, tmp_path
):
    """One local Ray cluster, three runs: 2 CPU workers writing the single-process bytes; a GPU request the cluster
    cannot hold; workers whose engine dir is not the driver's (the driver's digest is faked, so the workers' real
    one differs). The refused runs leave nothing behind."""
    script = f"""
import ray
import acsdk.data.generate as g, acsdk.data.runs as runs
from acsdk import InputError
ray.init(num_cpus=2, include_dashboard=False, logging_level="ERROR")
common = dict(engines={str(engine_dir)!r}, data={str(data)!r}, category="plate", per_type={PER_TYPE}, seed=5,
              num_inference_steps=10, asea_steps=2, backend="onnxruntime", progress=False, ray="auto")
s = g.generate(out={str(tmp_path)!r} + "/ray", workers=2, cpus_per_worker=1, **common)
print("ray ->", s.total)
for name, kwargs in (("gpu", dict(gpus_per_worker=1)), ("digest", {{}})):
    if name == "digest":
        runs.manifest_digest = lambda path: "0" * 64
    try:
        g.generate(out={str(tmp_path)!r} + "/" + name, workers=1, **common, **kwargs)
    except InputError as e:
        print(name, "->", e.argument, "|", e)
    else:
        print(name, "-> no error")
"""
    rc, log = _run([sys.executable, "-c", script])
    assert rc == 0, log
    out = tmp_path / "ray"
    assert f"ray -> {{'hole': {PER_TYPE}, 'scratch': {PER_TYPE}}}" in log, log
    assert _pairs(out) == _pairs(reference)
    assert _metadata(out) == _metadata(reference)
    run = json.loads((out / "plate" / "generate.json").read_text())["runs"][-1]
    assert run["mode"] == "ray" and run["workers_requested"] == 2 and run["cpus_per_worker"] == 1
    assert sum(w["items"] for w in run["workers"]) == PER_TYPE * len(DEFECTS)
    assert all(w["device"] == "cpu, 1 thread (onnxruntime)" and w["images_per_hour"] > 0 for w in run["workers"])
    made_by = {json.loads(p.read_text())["run"]["worker"] for d in DEFECTS for p in _records(out, d)}
    assert made_by == {w["worker"] for w in run["workers"] if w["items"]}
    assert "gpu -> gpus_per_worker | gpus_per_worker: expected 1 worker(s) x 1 GPU in the cluster" in log
    assert "digest -> engines | engines: expected the same engine dir on every worker (manifest sha256 0000" in log
    assert not (tmp_path / "gpu").exists() and not (tmp_path / "digest").exists(), "nothing left behind"


def test_typed_errors_cross_process_boundaries_typed():
    err = pickle.loads(pickle.dumps(InputError("engines", "one dir", "another")))
    assert (
        isinstance(err, InputError)
        and err.argument == "engines"
        and str(err) == "engines: expected one dir, got another"
    )


def test_the_acsdk_error_is_found_inside_ray_wrappers():
    from acsdk.data.generate_ray import _acsdk_cause

    inner = InputError("engines", "x", "y")

    class Wrapper(Exception):
        def __init__(self, cause):
            super().__init__("wrapped")
            self.cause = cause

    try:
        try:
            raise Wrapper(inner)
        except Wrapper as w:
            raise RuntimeError("dataset failed") from w
    except RuntimeError as e:
        assert _acsdk_cause(e) is inner
    assert _acsdk_cause(RuntimeError("plain")) is None


def test_a_failed_start_removes_only_what_it_created_and_still_owns(tmp_path):
    """Two categories started together into a new --out: the one that fails removes its own category and no other's
    (the parent stays while another run's files are in it; it goes once it is empty)."""
    from types import SimpleNamespace

    from acsdk.data.runs import undo_start as _undo_start

    out = tmp_path / "new_out"
    mine, theirs = out / "plate", out / "tile"
    (mine / "hole" / "image").mkdir(parents=True)
    (mine / "generate.json").write_text("{}")
    (theirs / "hole" / "records").mkdir(parents=True)
    (theirs / "hole" / "records" / "000000.json").write_text("{}")
    _undo_start(SimpleNamespace(root=mine), created=out)  # both runs saw `out` missing: both "created" it
    assert not mine.exists() and (theirs / "hole" / "records" / "000000.json").is_file()
    _undo_start(SimpleNamespace(root=theirs), created=out)
    assert (theirs / "hole" / "records" / "000000.json").is_file(), "a run with finished items keeps them"
    (theirs / "hole" / "records" / "000000.json").unlink()
    _undo_start(SimpleNamespace(root=theirs), created=out)
    assert not out.exists(), "the last run out removes the parent it created, now empty"
    assert tmp_path.is_dir(), "never above what the run created"
