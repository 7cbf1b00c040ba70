"""What the figures, constants and published files say they are: nothing is credited to Kane that Kane did
not do, a stand-in says it is one, and a run on the synthetic mirror is never published."""

import re

import pandas as pd
import pytest


def test_figures_not_in_kane_are_not_captioned_as_kane_figures():
    from spectra_ml.pipeline import FIGURE_CAPTIONS

    # the [N/O]-[Al/Fe] plane is not in the paper (Kane Fig. 3 is predicted against APOGEE per label)
    plane = FIGURE_CAPTIONS["fig3_no_alfe_plane"]
    assert "Kane Fig. 3" not in plane and "not a figure of Kane" in plane
    # Kane Fig. 10 shows field stars; the GC/Sgr E-L_z plot is a check of the classification
    gcs = FIGURE_CAPTIONS["fig10_elz_gcs_sgr"]
    assert "Kane Fig. 10" not in gcs and "not a figure of Kane" in gcs
    # the Fig. 12 APOGEE curve is read on Kane's "training and validation" data: every split
    assert "train + validation" not in FIGURE_CAPTIONS["fig12_fraction_feh"]


def test_the_no_alfe_plane_title_does_not_claim_kane_fig3(tmp_path):
    import matplotlib.pyplot as plt
    import numpy as np

    from spectra_ml.kane.tagging import plot_no_alfe_plane

    d = pd.DataFrame(
        {"n_o": [0.1, 0.8], "al_fe": [0.0, 0.2], "mu_n_o": [0.1, 0.7], "mu_al_fe": [0.0, 0.1]}
    )
    fig = plot_no_alfe_plane(d, np.array([False, True]), np.array([False, True]))
    title = fig._suptitle.get_text()
    plt.close(fig)
    assert "Kane Fig. 3" not in title and "not a figure of Kane" in title


def test_the_vb21_membership_cut_is_ours_not_kane_s_or_aspgap_s():
    """Neither Kane §3.3 nor AspGap §4.4 states p >= 0.5: the constant and every parameter say it is ours."""
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    text = (root / "spectra_ml" / "data" / "references.py").read_text()
    comment = text.split("VB21_MEMBER_PROB_MIN = 0.5")[0].rsplit("\n\n", 1)[-1]
    assert "#: Ours" in comment and "state no probability cut" in comment
    files = [*root.glob("spectra_ml/**/*.py"), *root.glob("nbs/**/*.ipynb")]
    for f in files:
        t = f.read_text()
        for claim in (
            "Kane §3.3 / AspGap §4.4",
            "Kane §3.3 / VB21",
            "which Kane §3.3 and AspGap §4.4 adopt",
        ):
            assert claim not in t, (f.name, claim)
        assert not re.search(r"member_prob_min = 0\.5 .*\(Kane §3\.3\)", t), f.name


def test_the_demo_catalogue_says_it_is_a_stand_in(tmp_path):
    import json

    import pyarrow.parquet as pq
    from test_kane_catalogue import _synthetic_predictions

    from spectra_ml.core import DEMO_LABELS, KANE_LABELS
    from spectra_ml.kane.catalogue import write_appendix_a

    _synthetic_predictions(tmp_path / "demo_pred", 1, 5, DEMO_LABELS)
    r = write_appendix_a(tmp_path / "demo_pred", tmp_path / "demo", DEMO_LABELS)
    meta = json.loads(pq.read_schema(r["parquet"]).metadata[b"spectra_ml"])
    assert meta["catalogue"] != "Kane et al. Appendix A" and "stand-in" in meta["catalogue"]
    assert "no" in meta["catalogue"] and "alfe" in meta["catalogue"]
    _synthetic_predictions(tmp_path / "kane_pred", 1, 5, KANE_LABELS)
    r = write_appendix_a(tmp_path / "kane_pred", tmp_path / "kane", KANE_LABELS)
    meta = json.loads(pq.read_schema(r["parquet"]).metadata[b"spectra_ml"])
    assert (
        meta["catalogue"] == "Kane et al. Appendix A"
    )  # the five labels and ebv: the paper's layout


def test_a_synthetic_mirror_run_is_refused_when_publishing(tmp_path, monkeypatch):
    """Published runs feed the README: a plumbing run on the synthetic mirror is refused before any stage,
    and `publish_figures` refuses a finished synthetic run (its summary says so) without touching dest."""
    from spectra_ml.core import ParameterError, RunDir
    from spectra_ml.pipeline import publish_figures, run_pipeline

    synth = tmp_path / "synthetic"
    synth.mkdir()
    (synth / "SYNTHETIC.md").write_text("made-up files\n")
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(synth))
    with pytest.raises(ParameterError, match="SYNTHETIC mirror"):
        run_pipeline("demo", "demo", runs_root=tmp_path / "runs", figures_dir=tmp_path / "figures")
    assert not (tmp_path / "runs" / "demo").exists()  # refused before any stage

    run = RunDir(tmp_path / "runs2" / "demo")
    run.update_summary("pipeline", {"synthetic_mirror": True, "status": "complete"})
    (run.figures / "fig1_cmd.png").write_bytes(b"png")
    with pytest.raises(ParameterError, match="not published"):
        publish_figures(run, tmp_path / "figures" / "demo")
    assert not (tmp_path / "figures" / "demo").exists()
    run.update_summary("pipeline", {"synthetic_mirror": False, "status": "complete"})
    assert len(publish_figures(run, tmp_path / "figures" / "demo")) == 2  # a real run is published
