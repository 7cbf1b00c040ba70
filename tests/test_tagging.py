"""The selection stage as library functions: Kane's 2P selection and the AspGap alpha stand-in."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spectra_ml.core import ParameterError
from spectra_ml.samples import assign_split, select_giants
from spectra_ml.tagging import (
    alpha_figures,
    alpha_standin,
    alpha_threshold_scan,
    alpha_valley,
    catalogue_passes,
    kane_2p_tagging,
    select_2p,
)
from test_full_profile_paths import perfect_predictor_fixture


@pytest.fixture
def alpha_predictions(demo_data):
    """Real APOGEE [alpha/M] and [Fe/H] of the selected demo giants with a perfect 'predictor' (μ = APOGEE)."""
    meta = demo_data[0]
    keep, _ = select_giants(meta, ["teff", "logg", "fe_h", "alpha_m"])
    d = meta[keep].reset_index(drop=True)[["source_id", "fe_h", "alpha_m"]]
    d["split"] = assign_split(d.source_id.to_numpy())
    d["mu_fe_h"], d["mu_alpha_m"] = d.fe_h, d.alpha_m
    return d


def test_alpha_standin_on_real_apogee(alpha_predictions):
    r = alpha_standin(alpha_predictions, "test")
    s = r["summary"]
    tr = alpha_predictions[alpha_predictions.split == "train"]
    assert s["alpha_threshold"] == alpha_valley(
        tr.alpha_m, tr.fe_h
    )  # the line is the training one's
    assert s["selection"] == "aspgap_alpha_standin" and s["n_test_in_range"] > 1000
    for c in ("low", "high"):  # μ = truth: every class exact
        assert s["precision_recall"][c]["precision"] == 1 == s["precision_recall"][c]["recall"]
    assert s["confusion_high"]["fp"] == 0 == s["confusion_high"]["fn"]
    assert len(r["train"]) == len(tr) and (r["high"].split == "test").all()
    assert (r["high"].alpha_m > s["alpha_threshold"]).all()
    figs = alpha_figures(r)
    assert list(figs) == [
        "alpha_plane_train.png",
        "alpha_confusion.png",
        "alpha_purity_completeness.png",
    ]
    for f in figs.values():
        plt.close(f)


def test_threshold_scan_is_exact_at_the_line_and_degrades_away(alpha_predictions):
    a = alpha_predictions.alpha_m.to_numpy()
    scan = alpha_threshold_scan(a > 0.12, a, 0.12)
    assert len(scan) == 17 and np.isclose(scan.mu_alpha_threshold.iloc[8], 0.12)
    at = scan.iloc[8]
    assert at.fp == 0 and at.fn == 0
    assert (
        scan.completeness.is_monotonic_decreasing and scan.iloc[0].fp > 0 and scan.iloc[-1].fn > 0
    )


def test_kane_2p_on_real_allstar_rows(local_data):
    """The perfect-predictor fixture (95 real Kepler giants, μ = APOGEE): k fitted on validation when
    k=None, no false positives, and the catalogue rows are exactly the selected rows of the split."""
    df = perfect_predictor_fixture(local_data)
    r = kane_2p_tagging(df, "test", k=None)
    s = r["summary"]
    assert s["k_used"] == s["k_fit"]["k"] and s["k_fit"]["n_used"] >= 3
    c = s["confusion"]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == int((df.split == "test").sum()) and c["fp"] == 0
    assert len(r["curve"]) == len(s["curve"]) > 5
    sel = select_2p(df, k=s["k_used"]).selected & (df.split == "test")
    pd.testing.assert_frame_equal(r["selected"], df[sel])
    fixed = kane_2p_tagging(df, "test", k=0.19)["summary"]
    assert fixed["k_used"] == 0.19 and "purity" in fixed["kane_published"]
    with pytest.raises(ParameterError, match="n_o_err"):
        kane_2p_tagging(df.drop(columns="n_o_err"), "test", k=None)


def test_catalogue_passes_keep_every_pass(quick_run):
    """The saved model re-run on five catalogue stars: every pass kept, reproducible under the seed."""
    import json

    root, _ = quick_run
    sample = pd.read_parquet(root / "products" / "samples.parquet")
    labels = json.loads((root / "model" / "config.json").read_text())["train_config"]["labels"]
    ids = sample.source_id.to_numpy()[[10, 3, 7, 100, 42]]
    p = catalogue_passes(root / "model", sample, ids, labels, n_passes=6, seed=1)
    assert len(p) == 6 * 5 * len(labels) and p["pass"].nunique() == 6
    assert p.source_id.iloc[: len(labels)].tolist() == [ids[0]] * len(labels)  # the given order
    assert np.isfinite(p.mu).all() and (p["var"] > 0).all()
    again = catalogue_passes(root / "model", sample, ids, labels, n_passes=6, seed=1)
    pd.testing.assert_frame_equal(p, again)
    other = catalogue_passes(root / "model", sample, ids, labels, n_passes=6, seed=2)
    assert not np.array_equal(p.mu.to_numpy(), other.mu.to_numpy())
