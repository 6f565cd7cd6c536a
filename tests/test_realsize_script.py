"""`python -m benchmarks.realsize` as docs/real-size.md tells a newcomer to run it, on a fresh work dir: the tiny
preset takes seconds where the real one takes hours (tests/test_realsize.py, `-m slow`)."""

from __future__ import annotations

import json


def test_the_realsize_script_runs_on_a_fresh_work_dir_and_reports_what_ran(tmp_path):
    from benchmarks import realsize

    work = tmp_path / "fresh"
    assert realsize.main(["--work", str(work), "--preset", "tiny", "--only", "sources", "init_folder"]) == 0
    stages = json.loads((work / "report.json").read_text())
    assert set(stages) == {"sources", "init_folder"}
    assert "ImageProj" in stages["init_folder"]["adapter"]
    report = (work / "report.md").read_text()
    assert "| sources |" in report and "| init_folder |" in report
    assert "Export matrix" not in report, "no section for stages that did not run"


def test_the_export_matrix_runs_only_when_asked(tmp_path, monkeypatch):
    # Each matrix row is about an hour at real size here: a plain run (docs/real-size.md's first command) leaves
    # them out; --matrix or naming a row runs them.
    import subprocess
    from types import SimpleNamespace

    from benchmarks import realsize

    ran = []

    def fake_run(cmd, *args, **kwargs):
        ran.append(cmd[cmd.index("--stage") + 1])
        return SimpleNamespace(returncode=0)

    monkeypatch.setattr(subprocess, "run", fake_run)
    monkeypatch.setattr(realsize, "_capped", lambda stage, work, mib, cmd: ran.append(stage))
    matrix = [f"matrix_{row}" for row in realsize.MATRIX]
    for argv, expected in (([], [s for s in realsize.STAGES if s not in matrix]), (["--matrix"], list(realsize.STAGES)),
                           (["--only", "matrix_fp16"], ["matrix_fp16"])):  # fmt: skip
        ran.clear()
        assert realsize.main(["--work", str(tmp_path / "w"), *argv]) == 0
        assert ran == expected, argv
