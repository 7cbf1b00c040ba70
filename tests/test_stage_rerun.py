"""Rerunning stages inside an existing run: recorded parameters inherited, later stages marked stale,
nothing written outside the run folder."""

import json
import os
import shutil
from pathlib import Path

import pytest

from spectra_ml.core import ENV_RUN_ID, RunDir, repo_root, write_json
from spectra_ml.pipeline import received_parameters
from spectra_ml.pipeline import (
    DEMO_STAGES,
    QUICK_PARAMS,
    merge_parameters,
    run_pipeline,
    stale_after,
)


def test_stale_stages_after_a_rerun():
    """Stages after the earliest rerun stage go stale unless rerun; a stage rerun after a still-stale
    one stays stale; rerunning every stale stage clears them."""
    later = ["12_clusters", "13_tagging", "14_dynamics"]
    assert stale_after(DEMO_STAGES, ["11_metrics"]) == later
    assert stale_after(DEMO_STAGES, ["05_samples"]) == list(DEMO_STAGES[1:])
    assert stale_after(DEMO_STAGES, ["14_dynamics"]) == []
    after_08 = stale_after(DEMO_STAGES, ["08_training"])
    assert after_08 == list(DEMO_STAGES[2:])
    assert stale_after(DEMO_STAGES, ["11_metrics"], after_08) == after_08  # 09 is still stale
    assert stale_after(DEMO_STAGES, ["09_inference", "11_metrics"], after_08) == later
    assert stale_after(DEMO_STAGES, after_08, after_08) == []
    assert stale_after(DEMO_STAGES, ["12_clusters"], later) == ["13_tagging", "14_dynamics"]
    with pytest.raises(ValueError, match="15_compare"):
        stale_after(DEMO_STAGES, ["15_compare"])


def test_parameter_merge_keeps_the_recorded_ones():
    rec = {**QUICK_PARAMS, "seed": 42, "epochs": 10}
    merged = merge_parameters(rec, {"split": "validation"})
    assert merged == {**rec, "split": "validation"}
    assert merge_parameters(rec, {"epochs": 50})["epochs"] == 50  # the override wins
    assert merge_parameters(rec, {}, quick=True)["epochs"] == 10  # --quick again keeps the record
    assert merge_parameters(None, {"seed": 1}, quick=True) == {**QUICK_PARAMS, "seed": 1}
    assert merge_parameters(None, {"seed": 1}) == {"seed": 1}


def test_stage_alone_takes_the_recorded_parameters_and_marks_later_stages(tmp_path, monkeypatch):
    """A chapter run alone (papermill) in a recorded run: names papermill did not inject take the
    recorded values, the injected ones are recorded over them, and the stages after it are stale."""
    monkeypatch.delenv(ENV_RUN_ID, raising=False)
    run = RunDir(tmp_path / "r")
    rec = {"run_id": "r1", "profile": "demo", "stages": list(DEMO_STAGES), "parameters": {"k": 0.3}}
    write_json(run.record_path, rec)
    write_json(run.summary_path, {"pipeline": {"name": "r", "run_id": "r1", "stale_stages": []}})
    cell = "# Parameters\nrun_dir = " + repr(str(run.root)) + "\nsplit = 'validation'\n"
    ns = {"run_dir": str(run.root), "split": "validation", "k": 0.19, "In": ["", cell]}
    got = received_parameters(ns, "13_tagging")
    assert got["k"] == ns["k"] == 0.3 and got["split"] == "validation"  # recorded, and injected
    after = run.read_record()
    assert after["parameters"] == {"k": 0.3, "split": "validation"}
    assert after["history"][-1]["stages"] == ["13_tagging"] and len(after["history"]) == 2
    assert run.read_summary()["pipeline"]["stale_stages"] == ["14_dynamics"]
    assert run.read_summary()["pipeline"]["run_id"] == "r1"  # the section stays the run's


def test_rerun_of_a_later_stage_needs_an_existing_run(tmp_path):
    from spectra_ml.core import MissingInputError

    with pytest.raises(MissingInputError, match=r"spectra_ml run --name fresh"):
        run_pipeline("fresh", stages=("11_metrics",), runs_root=tmp_path, progress=False)
    assert not (tmp_path / "fresh").exists()


def _listing(root: Path, skip=(".venv", ".git", "__pycache__", "runs")) -> dict:
    "Relative path -> (size, mtime) of every file under root, outside the skipped folders."
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in skip]
        for f in filenames:
            p = Path(dirpath) / f
            st = p.stat()
            out[str(p.relative_to(root))] = (st.st_size, st.st_mtime_ns)
    return out


@pytest.mark.slow
def test_rerun_one_stage_inside_a_quick_run(quick_run, tmp_path):
    """`spectra_ml run --name X --stages 11_metrics -p split=validation` in a quick run: the recorded
    parameters stay, 12-14 are stale in summary.json and the report, and nothing is written outside the run."""
    from spectra_ml.cli import main

    root, summary = quick_run
    copy = tmp_path / "runs" / "rerun"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("run.lock"))
    recorded = json.loads((copy / "run_parameters.json").read_text())["parameters"]
    repo_before, parent_before = _listing(repo_root()), sorted(os.listdir(copy.parent))
    args = ["run", "--name", "rerun", "--runs-root", str(copy.parent), "--stages", "11_metrics"]
    assert main([*args, "-p", "split=validation"]) == 0
    assert _listing(repo_root()) == repo_before  # no figures/<name>, nothing in the repository
    assert sorted(os.listdir(copy.parent)) == parent_before == ["rerun"]
    rec = json.loads((copy / "run_parameters.json").read_text())
    assert rec["parameters"] == {**recorded, "split": "validation"}
    assert rec["parameters"]["max_stars"] == QUICK_PARAMS["max_stars"]
    assert rec["parameters"]["epochs"] == QUICK_PARAMS["epochs"] and rec["quick"] is True
    assert rec["stages"] == list(DEMO_STAGES)  # the run's stage list, not just the rerun one
    stages = [h["stages"] for h in rec["history"]]  # the shared quick run may hold other reruns
    assert stages[0] == list(DEMO_STAGES) and stages[-1] == ["11_metrics"]
    assert rec["history"][-1]["given"] == {"split": "validation"}
    nb = json.loads((copy / "notebooks" / "11_metrics.ipynb").read_text())
    injected = [
        "".join(c["source"])
        for c in nb["cells"]
        if "injected-parameters" in c["metadata"].get("tags", [])
    ]
    assert len(injected) == 1 and 'split = "validation"' in injected[0]
    assert str(copy) in injected[0]
    s = json.loads((copy / "summary.json").read_text())
    assert s["validate"]["split"] == "validation" and s["validate"]["run_id"] == rec["run_id"]
    assert s["pipeline"]["stale_stages"] == ["12_clusters", "13_tagging", "14_dynamics"]
    assert s["pipeline"]["rerun_stages"] == ["11_metrics"]
    before = summary["pipeline"]["stage_seconds"]  # the other stages keep their recorded times
    assert list(s["pipeline"]["stage_seconds"]) == list(DEMO_STAGES)
    assert all(
        s["pipeline"]["stage_seconds"][k] == before[k] for k in DEMO_STAGES if k != "11_metrics"
    )
    page = (copy / "report.html").read_text()
    banner = page[page.index("Stale stages:") :].split("</p>")[0]
    for stage in ("12_clusters", "13_tagging", "14_dynamics"):
        assert stage in banner
    for stage in ("05_samples", "08_training", "09_inference", "11_metrics"):
        assert stage not in banner.split("<code>")[0]
        assert stage not in s["pipeline"]["stale_stages"]
    assert "--stages 12_clusters 13_tagging 14_dynamics" in banner
    assert f"--runs-root {copy.parent}" in banner and "--name rerun" in banner
