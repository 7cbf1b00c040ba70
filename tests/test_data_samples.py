"""The embedded real data, the sample cuts and splits, and bad inputs: clear errors or per-row flags."""

import json
import shutil
import numpy as np
import pandas as pd
import pytest
import torch

from spectra_ml.core import DEMO_LABELS, check_labels
from spectra_ml.features import XP_WAVELENGTH_NM
from spectra_ml.models.kane import mc_dropout_predict, mc_dropout_predict_loop
from spectra_ml.prediction import predict_table
from spectra_ml.data.samples import assign_split
from spectra_ml.kane.samples import select_giants
from spectra_ml.checkpoint import CheckpointMismatchError, load_checkpoint, seal_checkpoint
from spectra_ml.features import PercentileScaler, check_features


def test_embedded_library_is_what_its_readme_says(demo_data):
    meta, flux, eflux = demo_data
    assert len(meta) == 40226 and flux.shape == eflux.shape == (40226, 343) == (
        40226,
        len(XP_WAVELENGTH_NM),
    )
    assert np.isfinite(flux).all() and (eflux > 0).mean() > 0.99
    # flux is divided by medflux: the median of each spectrum is close to one
    assert abs(np.median(np.median(flux, axis=1)) - 1) < 0.05
    assert meta["source_id"].duplicated().sum() == 375  # exact repeats in the library


def test_giant_selection_counts_every_cut(demo_data):
    meta, _, _ = demo_data
    keep, flow = select_giants(meta, DEMO_LABELS)
    assert 20000 < keep.sum() < 22200  # ~22k giants before the SNR and error cuts
    sel = meta[keep]
    assert (sel.teff < 5200).all() and (sel.logg < 3).all() and (sel.snr > 20).all()
    assert sel.source_id.is_unique
    removed = sum(c["removed"] for c in flow if c.get("removed") is not None)
    assert (
        flow[0]["remaining"] - removed == keep.sum() == flow[-1]["remaining"]
    )  # nothing lost silently


def test_hash_split_is_stable_and_sized(demo_data):
    ids = demo_data[0]["source_id"].drop_duplicates().to_numpy()
    s = assign_split(ids)
    frac = pd.Series(s).value_counts(normalize=True)
    assert abs(frac["test"] - 0.2) < 0.01 and abs(frac["validation"] - 0.1) < 0.01
    perm = np.random.default_rng(0).permutation(len(ids))
    assert (assign_split(ids[perm]) == s[perm]).all()  # independent of order and of the other stars
    assert not (assign_split(ids, salt="other") == s).all()
    with pytest.raises(ValueError):
        assign_split(ids, {"train": 0.5, "test": 0.2})


def test_scaler_is_fitted_on_training_rows_only(demo_data):
    _, flux, _ = demo_data
    tr = flux[:5000]
    sc = PercentileScaler().fit(tr)
    z = sc.transform(tr)
    np.testing.assert_allclose(np.percentile(z, [1, 99], axis=0), [[0] * 343, [1] * 343], atol=1e-5)
    back = PercentileScaler.from_dict(json.loads(json.dumps(sc.to_dict())))
    np.testing.assert_allclose(
        back.inverse_transform(back.transform(flux[5000:5100])),
        flux[5000:5100],
        rtol=1e-5,
        atol=1e-6,
    )
    with pytest.raises(ValueError, match="343"):
        sc.transform(flux[:10, :100])


def test_wrong_shapes_raise_and_nan_rows_are_flagged():
    with pytest.raises(ValueError, match="2-D"):
        check_features(np.ones(343))
    with pytest.raises(ValueError, match="expects 343"):
        check_features(np.ones((4, 342)), 343)
    x = np.ones((3, 343))
    x[1, 7] = np.nan
    x[2, 0] = np.inf
    _, ok = check_features(x, 343)
    assert ok.tolist() == [True, False, False]


def test_unknown_label_is_refused():
    with pytest.raises(ValueError, match="available"):
        check_labels(["teff", "n_o"], "demo")
    with pytest.raises(ValueError, match="unknown profile"):
        check_labels(["teff"], "laptop")


@pytest.fixture
def checkpoint(quick_run, tmp_path):
    root, _ = quick_run
    dst = tmp_path / "model"
    shutil.copytree(root / "model", dst)
    return dst


def test_nan_flux_rows_flagged_not_dropped(checkpoint, demo_data):
    model, meta, fs, ls = load_checkpoint(checkpoint)
    x = demo_data[1][:50].copy()
    x[[3, 17], 100] = np.nan
    out = predict_table(
        model, fs, ls, meta["train_config"]["labels"], x, n_passes=10, progress=False
    )
    assert len(out) == 50 and out.flag_bad_input.tolist().count(True) == 2
    assert (
        out.loc[[3, 17], "mu_teff"].isna().all()
        and out.drop(index=[3, 17])["mu_teff"].notna().all()
    )
    with pytest.raises(ValueError, match="expects 343"):
        predict_table(model, fs, ls, meta["train_config"]["labels"], x[:, :300], progress=False)


def test_mismatched_checkpoint_is_refused(checkpoint):
    with pytest.raises(CheckpointMismatchError, match="labels"):
        load_checkpoint(checkpoint, expect={"labels": ["teff", "logg"]})
    with pytest.raises(CheckpointMismatchError, match="n_in"):
        load_checkpoint(checkpoint, expect={"n_in": 108})
    cfg = json.loads((checkpoint / "config.json").read_text())
    cfg["train_config"]["hidden"] = [64, 64]
    (checkpoint / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointMismatchError, match="config.json differs from the checkpoint's"):
        load_checkpoint(checkpoint)  # the manifest refuses the edit...
    seal_checkpoint(
        checkpoint
    )  # ...and behind it, sealed as if released so, the weights do not fit
    with pytest.raises(CheckpointMismatchError, match="do not fit"):
        load_checkpoint(checkpoint)


def test_corrupt_checkpoint_is_refused(checkpoint):
    data = (checkpoint / "model.pt").read_bytes()
    (checkpoint / "model.pt").write_bytes(data[: len(data) // 2])  # a partial download
    with pytest.raises(CheckpointMismatchError, match="model.pt differs from the checkpoint's"):
        load_checkpoint(checkpoint)  # the manifest refuses it first
    seal_checkpoint(checkpoint)  # behind the manifest, each file is still checked as it is read
    with pytest.raises(CheckpointMismatchError, match="corrupt"):
        load_checkpoint(checkpoint)
    (checkpoint / "config.json").write_text("{not json")
    seal_checkpoint(checkpoint)
    with pytest.raises(CheckpointMismatchError, match="JSON"):
        load_checkpoint(checkpoint)


def test_vectorised_mc_dropout_matches_the_loop_in_distribution(checkpoint, demo_data):
    """Same model, different mask streams: the two estimators must agree statistically."""
    model, meta, fs, ls = load_checkpoint(checkpoint)
    x = fs.transform(demo_data[1][:400])
    a = mc_dropout_predict(model, x, n_passes=100, progress=False)
    b = mc_dropout_predict_loop(model, x, n_passes=100)
    # the MC error of the mean is sqrt(var_epistemic/100); allow 5 of those
    tol = 5 * np.sqrt(a["var_epistemic"] / 100) + 1e-6
    assert (np.abs(a["mu"] - b["mu"]) < tol).mean() > 0.99
    np.testing.assert_allclose(
        np.median(a["var_epistemic"], 0), np.median(b["var_epistemic"], 0), rtol=0.15
    )


def test_training_is_deterministic_under_a_seed(demo_data):
    """Identical seeds give identical weights and predictions on CPU; another seed does not."""
    from spectra_ml.checkpoint import LabelScaler, TrainConfig
    from spectra_ml.training import fit

    meta, flux, _ = demo_data
    keep, _ = select_giants(meta, DEMO_LABELS)
    idx = np.flatnonzero(keep)[:1500]
    sc = PercentileScaler().fit(flux[idx[:1200]])
    x = sc.transform(flux[idx])
    ls = LabelScaler().fit(meta[list(DEMO_LABELS)].to_numpy()[idx[:1200]])
    y = ls.transform(meta[list(DEMO_LABELS)].to_numpy()[idx])

    def run(seed):
        cfg = TrainConfig(labels=list(DEMO_LABELS), n_in=343, max_epochs=3, patience=3, seed=seed)
        m, h, _ = fit(x[:1200], y[:1200], x[1200:], y[1200:], cfg, progress=False)
        return m, h

    (m1, h1), (m2, h2), (m3, _) = run(3), run(3), run(4)
    assert h1 == [dict(d) for d in h2]
    for a, b in zip(m1.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert not all(
        torch.equal(a, b) for a, b in zip(m1.state_dict().values(), m3.state_dict().values())
    )
    p1 = mc_dropout_predict(m1, x[1200:], n_passes=10, progress=False)
    p2 = mc_dropout_predict(m2, x[1200:], n_passes=10, progress=False)
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)


def test_shared_mask_formulation_has_the_loop_distribution(checkpoint, demo_data):
    """The fast catalogue path (one mask per pass per block, folded into the weights) on real spectra."""
    model, meta, fs, ls = load_checkpoint(checkpoint)
    x = fs.transform(demo_data[1][:400])
    a = mc_dropout_predict(
        model, x, n_passes=200, progress=False, shared_masks=True, batch_size=64, seed=11
    )
    b = mc_dropout_predict_loop(model, x, n_passes=200)
    tol = 5 * np.sqrt(b["var_epistemic"] / 200) + 1e-6
    assert (np.abs(a["mu"] - b["mu"]) < tol).mean() > 0.98
    np.testing.assert_allclose(
        np.median(a["var_epistemic"], 0), np.median(b["var_epistemic"], 0), rtol=0.15
    )
    np.testing.assert_allclose(
        np.median(a["var_aleatoric"], 0), np.median(b["var_aleatoric"], 0), rtol=0.05
    )
    again = mc_dropout_predict(
        model, x, n_passes=200, progress=False, shared_masks=True, batch_size=64, seed=11
    )
    assert all(np.array_equal(a[k], again[k]) for k in a)  # fixed seed, fixed result


def test_uncertain_nn_input_variance_matches_finite_differences(demo_data):
    """Fallows & Sanders' σ²_input on real spectra and their real flux errors: autograd vs finite differences."""
    from spectra_ml.models.registry import build_model
    from spectra_ml.models.fallows_sanders import input_variance

    meta, flux, eflux = demo_data
    sc = PercentileScaler().fit(flux[:5000])
    x = torch.as_tensor(sc.transform(flux[:3]), dtype=torch.float64)
    var_x = torch.as_tensor(
        (eflux[:3] / (sc.hi - sc.lo)) ** 2, dtype=torch.float64
    )  # errors in scaled units
    torch.manual_seed(0)
    m = build_model({"model": "uncertain_nn", "n_in": 343, "n_labels": 4}).double().eval()
    v = input_variance(m, x, var_x=var_x).detach().numpy()
    eps = 1e-6
    J = np.zeros((3, 4, 343))
    with torch.no_grad():
        for i in range(343):
            d = torch.zeros_like(x)
            d[:, i] = eps
            J[:, :, i] = ((m(x + d)[0] - m(x - d)[0]) / (2 * eps)).numpy()
    np.testing.assert_allclose(v, (J**2 * var_x.numpy()[:, None, :]).sum(-1), rtol=1e-5)
    assert (v > 0).all()
