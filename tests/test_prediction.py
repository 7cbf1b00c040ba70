"""predict_sample, the one "predict → flag → calibrate" path of the 09_inference and 15_compare stages,
on real demo stars; and the prediction module's shape (no per-model branch)."""

import re
from pathlib import Path

import numpy as np
import pytest

from spectra_ml.checkpoint import CheckpointMismatchError
from spectra_ml.core import CheckpointError, DEMO_LABELS
from spectra_ml.prediction import predict_sample
from spectra_ml.models.registry import REGISTRY
from spectra_ml.kane.samples import build_demo_sample
from spectra_ml.training import train_model

LABELS = list(DEMO_LABELS)


@pytest.fixture(scope="module")
def sample():
    """600 real demo giants with their hash split."""
    return build_demo_sample(LABELS, max_stars=600)[0]


@pytest.fixture(scope="module")
def kane(sample):
    return train_model(sample, LABELS, "kane_mlp", progress=False, max_epochs=2, patience=1)


@pytest.fixture(scope="module")
def guiglion(sample):
    opts = {"n_seeds": 1, "n_split_states": 1}
    return train_model(
        sample, LABELS, "guiglion_cnn", progress=False, max_epochs=2, patience=1, options=opts
    )


def test_predict_sample_puts_truth_flags_and_calibration_beside_predictions(sample, kane):
    ck = kane.checkpoint()
    cal = {"teff": 2.0, "logg": 0.5, "fe_h": 1.0, "alpha_m": 1.0}
    pred, info = predict_sample(ck, sample, n_passes=7, seed=3, calibration=cal, progress=False)
    assert list(pred.source_id) == list(sample.source_id) and list(pred.split) == list(sample.split)
    np.testing.assert_array_equal(pred.teff, sample.teff)  # the truth, row for row
    assert info["n_passes"] == 7 and info["sigma_parts"] == ["alea", "epi"]
    np.testing.assert_allclose(pred.sigma_cal_teff, 2 * pred.sigma_teff)
    np.testing.assert_allclose(pred.sigma_cal_logg, 0.5 * pred.sigma_logg)
    outside = np.zeros(len(pred), bool)
    for lab, (lo, hi) in kane.info["label_ranges"].items():
        outside |= (pred[f"mu_{lab}"] < lo).to_numpy() | (pred[f"mu_{lab}"] > hi).to_numpy()
    assert (pred.flag_label_range.to_numpy() == outside).all()
    assert pred.flag_ood.dtype == bool and not pred.flag_bad_input.any()
    assert "flag_boundary" not in pred  # only models whose registry entry has it
    again, _ = predict_sample(ck, sample, n_passes=7, seed=3, calibration=cal, progress=False)
    assert again.equals(pred)  # seeded masks


def test_predict_sample_uses_the_models_own_passes_and_flags_bad_rows(sample, kane):
    s = sample.iloc[:80].copy()
    s.loc[s.index[4], "flux_010"] = np.nan
    pred, info = predict_sample(kane.checkpoint(), s, progress=False)
    assert info["n_passes"] == 100  # Kane §2.2
    assert pred.flag_bad_input.sum() == 1 and np.isnan(pred.mu_teff.iloc[4])
    assert not pred.flag_ood.iloc[4]  # a bad row carries flag_bad_input, not an OOD guess


def test_guiglion_flag_boundary_on_real_rows(sample, guiglion):
    pred, info = predict_sample(guiglion.checkpoint(), sample, progress=False)
    assert info["n_passes"] == 1 and info["sigma_parts"] == ["ensemble", "run"]
    fb = pred.flag_boundary.str
    assert (fb.len() == 8).all()
    # teff logg m_h alpha_m fe_h g parallax tsne: no [M/H] label, no parallax, no t-SNE asked for
    assert (fb[2] == "-").all() and (fb[6] == "-").all() and (fb[7] == "-").all()
    lo, hi = guiglion.info["label_ranges"]["teff"]
    assert ((fb[0] == "1") == ((pred.mu_teff < lo) | (pred.mu_teff > hi))).all()
    g, tr = sample.phot_g_mean_mag, sample.split == "train"
    g_out = (g < g[tr].min()) | (g > g[tr].max())
    assert ((fb[5] == "1") == g_out).all() and (fb[5][tr] == "0").all()


@pytest.mark.slow
def test_guiglion_tsne_digit_on_the_mapped_rows(sample, guiglion):
    rows = (sample.split == "test").to_numpy()
    pred, _ = predict_sample(
        guiglion.checkpoint(), sample, tsne=True, tsne_rows=rows, progress=False
    )
    last = pred.flag_boundary.str[7]
    assert set(last[rows]) <= {"0", "1"} and (last[~rows] == "0").all()


def test_a_sample_of_the_wrong_width_is_refused(sample, guiglion):
    s = sample.drop(columns="phot_bp_mean_mag")
    ck = guiglion.checkpoint()
    ck.inputs = None  # names derived from the config, as for a checkpoint that recorded none
    ck.config.aux = ["g", "rp"]  # a config that no longer matches the network's inputs
    try:
        with pytest.raises(CheckpointMismatchError, match="inputs") as e:
            predict_sample(ck, s, progress=False)
        assert isinstance(e.value, CheckpointError)
    finally:
        ck.config.aux = ["g", "bp", "rp"]


def test_prediction_has_no_per_model_branch():
    """Every model predicts through its own `predict_parts`; prediction names no model class."""
    src = (Path(__file__).resolve().parent.parent / "spectra_ml" / "prediction.py").read_text()
    classes = {s.cls.__name__ for s in REGISTRY.values()} | {"GuiglionCNN"}
    assert not [c for c in classes if re.search(rf"\b{c}\b", src)]
    # no branch on a network's type (an isinstance on the prediction API's own classes is fine)
    assert not re.search(r"isinstance\([^)]*\b(nn\.Module|" + "|".join(classes) + r")\b", src)
    assert not [n for n in REGISTRY if f'"{n}"' in src or f"'{n}'" in src]
