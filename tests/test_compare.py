"""The boosting baseline (one fit, one predict for the 08 and 15 stages) and the comparison itself,
on real demo giants with few epochs."""

import numpy as np
import pandas as pd
import pytest

from spectra_ml.compare import acceptance, compare_models
from spectra_ml.core import DEMO_LABELS, ParameterError
from spectra_ml.samples import build_demo_sample
from spectra_ml.training import fit_baseline, predict_baseline

LABELS = list(DEMO_LABELS)


@pytest.fixture(scope="module")
def sample():
    return build_demo_sample(LABELS, max_stars=600)[0]


def test_baseline_fits_on_train_and_validation_and_predicts_every_row(sample):
    s = sample.copy()
    s.loc[s.index[3], "flux_100"] = np.nan
    gbr, info = fit_baseline(s, LABELS, max_iter=60, progress=False)
    assert set(gbr) == set(LABELS) and set(info["n_iter"]) == set(LABELS)
    assert all(m.n_features_in_ == 343 for m in gbr.values())  # the spectrum alone
    pb = predict_baseline(gbr, s, LABELS)
    assert list(pb.columns) == [f"gbr_{l}" for l in LABELS] and len(pb) == len(s)
    assert pb.gbr_teff.isna().sum() == 1 and np.isnan(pb.gbr_teff.iloc[3])
    te = (s.split == "test").to_numpy()
    rmse = np.sqrt(np.nanmean((pb.gbr_teff[te] - s.teff[te]) ** 2))
    assert rmse < 0.8 * s.teff[te].std()  # it learned something from the spectra


def test_baseline_never_sees_the_test_rows(sample):
    a, _ = fit_baseline(sample, ["teff"], max_iter=30, progress=False)
    s = sample.copy()
    te = s.split == "test"
    s.loc[te, "teff"] = 1e6  # poisoned test labels: a fit that used them would change
    b, _ = fit_baseline(s, ["teff"], max_iter=30, progress=False)
    pd.testing.assert_frame_equal(
        predict_baseline(a, sample, ["teff"]), predict_baseline(b, s, ["teff"])
    )


def test_compare_models_on_real_rows(sample, tmp_path):
    opts = {"guiglion_cnn": {"n_seeds": 1, "n_split_states": 1}}
    res = compare_models(
        sample,
        LABELS,
        ["kane_mlp", "guiglion_cnn"],
        epochs=1,
        patience=1,
        options=opts,
        baseline_max_iter=20,
        tsne=False,
        save_dir=tmp_path,
    )
    t = res["table"]
    assert list(t.model.unique()) == ["kane_mlp", "guiglion_cnn", "boosting_baseline"]
    assert len(t) == 3 * len(LABELS) and (t.n == (sample.split == "test").sum()).all()
    nets = t[t.model != "boosting_baseline"]
    assert nets[["rmse", "z_std", "z_std_calibrated"]].notna().all().all()
    assert t[t.model == "boosting_baseline"].z_std.isna().all()  # no σ: not invented
    # calibrated on validation: there the calibrated z-std is one by construction
    for name, p in res["preds"].items():
        v = p[(p.split == "validation") & ~p.flag_ood & ~p.flag_bad_input]
        z = (v.mu_teff - v.teff) / v.sigma_cal_teff
        assert abs(np.std(z) - 1) < 1e-6, name
        assert (tmp_path / name / "calibration.json").exists()
    assert "flag_boundary" in res["preds"]["guiglion_cnn"] and res["flag_summary"] is None
    a = acceptance(t)
    assert res["summary"]["best_model_vs_kane"]["labels_with_10pct_lower_rmse"] == a["n_better"]
    assert res["summary"]["calibrated_z_std_within_0.9_1.1"] == a["calibrated_ok"]
    assert set(res["attention"]) == {"kane_mlp", "guiglion_cnn"}


def test_unknown_model_fails_before_any_training(sample):
    with pytest.raises(ParameterError, match="registered models are kane_mlp"):
        compare_models(sample, LABELS, ["kane_mlp", "resnet"], epochs=1)
