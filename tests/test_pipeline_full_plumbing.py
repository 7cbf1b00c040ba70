"""The plumbing run: the full profile end to end on a SYNTHETIC mirror.

`tests/builders/synthetic_mirror.py` writes made-up files in the archives' formats and layout (allStar, GALAH
DR3, Andrae+23, VB21, the Gaia DR3 bulk gaia_source and XP continuous folders) with a SYNTHETIC.md
marker. One `run_pipeline(..., "full")` over it (the function `spectra_ml run --profile full` calls)
with tiny parameters checks plumbing only: every stage runs and writes its products and figures, the
catalogue has Kane's 12 columns, every paper number has its `paper` value beside it, and the run is
flagged synthetic. **No number from this run is reported anywhere**; nothing here checks a value.
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KANE_APPENDIX_A, load_tool

#: the whole full-profile pipeline on the synthetic mirror (about a minute)
pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parent.parent
#: tiny parameters: 2 epochs, 3 dropout passes, a short GC orbit integration
PARAMS = {
    "epochs": 2,
    "patience": 1,
    "n_passes": 3,
    "baseline_max_iter": 5,
    "n_passes_catalogue": 3,
    "orbit_t_gyr": 0.5,
}
#: the paper's figures (Figs 1-12, B1-B4, Fig 5, purity-completeness), as the stages name them
PAPER_FIGURES = (
    "fig1_cmd",
    "fig1_no_hist",
    "fig2_xp_spectra",
    "fig3_pred_vs_truth",
    "fig3_no_alfe_plane",
    "fig4_sigma_no_vs_err",
    "fig4_sigma_n_o",
    "fig4_sigma_teff",  # B1
    "fig4_sigma_logg",  # B2
    "fig4_sigma_fe_h",  # B3
    "fig4_sigma_al_fe",  # B4
    "fig5_confusion",
    "purity_completeness",
    "fig6_na_o",
    "fig6_na_o_relaxed",
    "fig7_al_vs_galah",
    "fig8_na_split",
    "fig9_sky",
    "fig10_elz",
    "fig10_energy",
    "fig11_ratios_r",
    "fig12_fraction_feh",
    "fig12_feh_distributions",
)
#: summary entries that carry a paper number: each must hold a `paper` value beside ours
PAPER_KEYS = (
    "samples/application",
    "samples/galah",
    "predict_samples/application_predictions/n_rows",
    "predict_samples/galah_predictions/n_rows",
    "validate/per_bin/feh_offset_below_-1",
    "clusters/galah/incidence",
    "candidates/k_fit",
    "candidates/vs_paper/n_selected",
    "candidates/vs_paper/false_positives",
    "candidates/vs_paper/n_not_2p",
    "candidates/vs_paper/false_negative_rate",
    "candidates/incidence_apogee_truth/members",
    "candidates/incidence_apogee_truth/field",
    "candidates/application/n_application",
    "candidates/application/incidence_network/members",
    "candidates/application/incidence_network/field",
    "candidates/application/n_halo_candidates_not_gc",
    "candidates/application/n_halo_candidates_not_gc_high_reliability",
    "halo/counts/candidates_high_reliability",
    "halo/counts/candidates_full",
    "halo/apogee/n_2p_halo_not_gc",
    "halo/statistics/ks/in-situ",
    "halo/statistics/ks/accreted",
)


def synthetic_mirror_tool():
    return load_tool("synthetic_mirror")


@pytest.fixture(scope="module")
def plumbing_run(tmp_path_factory):
    from spectra_ml.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("plumbing")
    mirror = synthetic_mirror_tool().write_synthetic_mirror(root / "synthetic_mirror")
    mp = pytest.MonkeyPatch()
    mp.setenv("SPECTRA_ML_LOCAL_DATA", str(mirror))  # the stage kernels inherit it
    mp.setenv(
        "SPECTRA_ML_CACHE", str(root / "cache")
    )  # provenance and ingests: not the repo's cache
    try:
        summary = run_pipeline(
            "plumbing", "full", PARAMS, runs_root=root / "runs", progress=False, figures_dir=None
        )
    finally:
        mp.undo()
    return root / "runs" / "plumbing", summary


def _get(d: dict, path: str):
    for k in path.split("/"):
        assert isinstance(d, dict) and k in d, f"summary has no {path!r} (stops at {k!r})"
        d = d[k]
    return d


def _strings(o):
    if isinstance(o, dict):
        for v in o.values():
            yield from _strings(v)
    elif isinstance(o, list):
        for v in o:
            yield from _strings(v)
    elif isinstance(o, str):
        yield o


def test_every_stage_ran_and_the_run_says_synthetic(plumbing_run):
    from spectra_ml.pipeline import DEMO_STAGES, SYNTHETIC_WARNING

    run, summary = plumbing_run
    p = summary["pipeline"]
    assert p["profile"] == "full" and p["stages"] == list(DEMO_STAGES)
    assert set(p["stage_seconds"]) == set(DEMO_STAGES)
    assert all((run / "notebooks" / f"{s}.ipynb").exists() for s in DEMO_STAGES)
    for section in ("samples", "train", "predict", "predict_samples", "validate", "clusters"):
        assert section in summary, section
    assert {"candidates", "dynamics", "halo"} <= set(summary)
    assert p["synthetic_mirror"] is True and p["warning"] == SYNTHETIC_WARNING
    assert summary["samples"]["synthetic_mirror"] is True
    assert "SYNTHETIC MIRROR" in (run / "report.html").read_text()


def test_every_paper_figure_is_drawn(plumbing_run):
    from spectra_ml.pipeline import FIGURE_CAPTIONS

    run, _ = plumbing_run
    missing = [f for f in PAPER_FIGURES if not (run / "figures" / f"{f}.png").is_file()]
    assert missing == []
    assert all((run / "figures" / f"{f}.png").stat().st_size > 1000 for f in PAPER_FIGURES)
    assert [f for f in PAPER_FIGURES if f not in FIGURE_CAPTIONS] == []


def test_appendix_a_catalogue_and_pass_table(plumbing_run):
    from astropy.table import Table

    run, summary = plumbing_run
    products = run / "products"
    cat = pd.read_parquet(products / "catalogue_appendix_a.parquet")
    flags = [c for c in cat.columns if c not in KANE_APPENDIX_A]
    assert tuple(cat.columns[: len(KANE_APPENDIX_A)]) == KANE_APPENDIX_A
    assert flags and all(c.startswith("flag_") for c in flags)
    assert {"flag_2p_candidate", "flag_high_reliability"} <= set(flags)
    app = pd.read_parquet(products / "application.parquet", columns=["source_id"])
    assert len(cat) == len(app) and set(cat.source_id) == set(app.source_id)  # rows in = rows out
    fits = Table.read(products / "catalogue_appendix_a.fits")
    assert fits.colnames == list(cat.columns) and len(fits) == len(cat)
    assert str(fits["teff"].unit) == "K"
    passes = pd.read_parquet(products / "catalogue_appendix_a_passes.parquet")
    assert "source_id" in passes and len(passes) > 0
    cand = pd.read_parquet(products / "candidate_flags.parquet")
    assert len(cand) == len(app) and cand.flag_2p_candidate.dtype == bool


def test_other_products_cover_every_row(plumbing_run):
    run, _ = plumbing_run
    products = run / "products"
    for sample in ("application", "galah"):
        src = pd.read_parquet(products / f"{sample}.parquet", columns=["source_id"])
        pred = pd.read_parquet(products / f"{sample}_predictions")
        assert len(pred) == len(src) and {"mu_n_o", "sigma_alea_n_o", "sigma_epi_n_o"} <= set(pred)
        assert pred.ebv_sfd.notna().all()
    halo = pd.read_parquet(products / "halo.parquet")
    assert {"v_phi", "E", "Lz"} <= set(halo)
    pred = pd.read_parquet(products / "predictions.parquet")
    assert pred.ebv_sfd.notna().all()  # Kane Fig. 4 / B1-B4's E(B-V) row on the full profile
    samples = pd.read_parquet(products / "samples.parquet")
    assert {"ra", "dec", "parallax", "radial_velocity"} <= set(samples)  # Gaia's, not ra_x / ra_y
    assert np.isfinite(samples.ra).all()


def test_every_paper_number_has_the_paper_beside_it(plumbing_run):
    _, summary = plumbing_run
    no_paper = [k for k in PAPER_KEYS if _get(summary, k).get("paper") is None]
    assert no_paper == []


def test_no_full_profile_only_note_on_the_full_profile(plumbing_run):
    _, summary = plumbing_run
    said = [
        s
        for s in _strings(summary)
        if "full profile" in s.lower() and ("only" in s.lower() or "need" in s.lower())
    ]
    assert said == []
    assert summary["candidates"]["products"]["needs_full_profile"] == []
    assert summary["halo"]["not_run"] == {}
    assert not [
        n for n in summary["validate"]["notes"] if "ebv_sfd" in n
    ]  # Fig. 4 / B1-B4 complete


def test_the_full_profile_trains_with_the_masked_loss(plumbing_run):
    """08_training's default on the full profile is `kane_masked` (training.PROFILE_TRAIN_CONFIG): a star
    whose APOGEE flags remove [N/O] or [Al/Fe] keeps the labels it has instead of being dropped."""
    run, summary = plumbing_run
    prov = json.loads((run / "provenance" / "08_training.json").read_text())
    assert prov["parameters"]["config"] == "kane_masked"
    assert summary["train"]["train_options"]["missing_labels"] == "mask"


def test_the_full_profile_sample_gives_every_papers_inputs(plumbing_run):
    """The full profile's sample keeps the raw XP columns (correlations where the source has them), so each model
    trains on its paper's inputs; Fallows & Sanders' σ²_input then comes from the propagated covariance (> 0 on
    every row with XP).
    Plumbing only: the mirror's rows are synthetic and nothing here is a result."""
    from spectra_ml.features import PAPER_INPUTS, paper_input_names
    from spectra_ml.prediction import predict_sample
    from spectra_ml.training import train_model

    run, summary = plumbing_run
    sample = pd.read_parquet(run / "products" / "samples.parquet")
    raw = {"bp_coefficients", "rp_coefficients", "bp_coefficient_errors", "rp_coefficient_errors"}
    assert raw <= set(sample)
    assert "bp_coefficient_correlations" not in sample  # the bulk files have none: none are made up
    meta = json.loads((run / "model" / "config.json").read_text())
    assert meta["training"]["input_kind"] == "kane"  # the pipeline's default model: Kane's xp_###
    assert meta["input_columns"][:108] == paper_input_names("kane")
    labels = ["teff", "logg"]
    tr = train_model(sample, labels, model="uncertain_nn", progress=False, max_iterations=3)
    assert tr.info["input_kind"] == "fallows_sanders" and tr.info["input_covariance"]
    assert tr.info["input_columns"][: PAPER_INPUTS["fallows_sanders"][1]] == paper_input_names(
        "fallows_sanders"
    )
    pred, _ = predict_sample(tr.checkpoint(), sample, n_passes=2, progress=False)
    ok = ~pred.flag_bad_input
    assert ok.any() and (pred.loc[ok, f"sigma_input_{labels[0]}"] > 0).all()
