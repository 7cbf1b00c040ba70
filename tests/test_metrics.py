"""The validation stage as library functions, on the real embedded APOGEE labels and errors."""

import numpy as np
import pandas as pd
import pytest

from spectra_ml.metrics import (
    apply_calibration,
    baseline_comparison,
    fit_calibration,
    validation_summary,
    validation_tables,
)
from spectra_ml.samples import assign_split

LABELS = ["teff", "logg", "fe_h"]


@pytest.fixture
def predictions(demo_data):
    """A 'predictor' made from real APOGEE labels: μ = truth + N(0, err), σ = 2 err (twice too wide, so
    the calibration has something to find), and a baseline three times as noisy. Not a network."""
    rng = np.random.default_rng(0)
    meta = demo_data[0].iloc[:6000].reset_index(drop=True)
    pred = meta[["source_id", *LABELS]].copy()
    pred["split"] = assign_split(pred.source_id.to_numpy())
    for l in LABELS:
        err = meta[f"{l}_err"].to_numpy(float).clip(1e-3)
        pred[f"mu_{l}"] = pred[l] + rng.normal(0, err)
        pred[f"sigma_{l}"] = 2 * err
        pred[f"gbr_{l}"] = pred[l] + rng.normal(0, 3 * err)
    pred["flag_ood"] = False
    pred.loc[pred.index[pred.split == "test"][:7], "flag_ood"] = True
    return pred


def test_calibrated_tables_find_the_factor_two(predictions):
    cal = fit_calibration(predictions, LABELS)
    assert all(abs(cal[l] - 0.5) < 0.05 for l in LABELS)  # fitted on validation rows only
    mlp, gbr = validation_tables(predictions, LABELS, cal, "test")
    assert list(mlp.index) == LABELS
    assert (abs(mlp.z_std - 0.5) < 0.06).all() and (abs(mlp.z_std_calibrated - 1) < 0.12).all()
    assert (mlp.n_flagged == 7).all() and (mlp.sigma_scale == pd.Series(cal)).all()
    assert (mlp.z_std_calibrated_unflagged > 0).all()
    assert int(mlp.loc["teff", "n"]) == int((predictions.split == "test").sum())
    cmp = baseline_comparison(mlp, gbr)
    assert cmp.mlp_better.all() and (cmp.gbr_rmse > 2 * cmp.mlp_rmse).all()
    assert "sigma_cal_teff" not in predictions  # the tables do not touch the caller's table


def test_no_baseline_without_its_columns(predictions):
    pred = predictions.drop(columns=["gbr_logg"])
    mlp, gbr = validation_tables(pred, LABELS, fit_calibration(pred, LABELS))
    assert gbr is None
    s = validation_summary(pred, LABELS, mlp, gbr, "test", "demo")
    assert s["baseline_gbr"] is None and s["mlp_beats_baseline_on"] == []


def test_summary_keys_and_notes(predictions):
    cal = fit_calibration(predictions, LABELS)
    mlp, gbr = validation_tables(predictions, LABELS, cal)
    s = validation_summary(predictions, LABELS, mlp, gbr, "test", "demo")
    assert set(s) == {
        "split",
        "n_test",
        "mlp",
        "baseline_gbr",
        "mlp_beats_baseline_on",
        "published_rmse_other_data",
        "notes",
    }
    assert s["n_test"] == int((predictions.split == "test").sum()) and s["split"] == "test"
    assert s["mlp_beats_baseline_on"] == LABELS and s["mlp"]["teff"] == mlp.loc["teff"].to_dict()
    assert any("n_o" in n for n in s["notes"])  # the profile says what it lacks
    full = validation_summary(predictions, LABELS + ["n_o", "al_fe"], mlp, None, "test", "full")
    assert not any("n_o" in n for n in full["notes"])


def test_apply_calibration_scales_sigma(predictions):
    out = apply_calibration(predictions.copy(), {"teff": 0.5, "fe_h": 2.0})
    np.testing.assert_allclose(out.sigma_cal_teff, predictions.sigma_teff * 0.5)
    np.testing.assert_allclose(out.sigma_cal_fe_h, predictions.sigma_fe_h * 2.0)
    assert "sigma_cal_logg" not in out
