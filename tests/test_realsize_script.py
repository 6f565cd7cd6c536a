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
