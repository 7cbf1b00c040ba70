"""Checkpoints: every registered model saved, reopened and rebuilt to the same predictions; mismatches
and missing files refused with errors of the core family; the fingerprint follows the weights."""

import json

import numpy as np
import pandas as pd
import pytest
from spectra_ml.checkpoint import seal_checkpoint, write_calibration
import torch

from spectra_ml.checkpoint import (
    CheckpointMismatchError,
    TrainConfig,
    checkpoint_fingerprint,
    load_checkpoint,
    open_checkpoint,
    rebuild_model,
)
from spectra_ml.core import CheckpointError, DEMO_LABELS, MissingInputError, ParameterError
from spectra_ml.prediction import predict_table
from spectra_ml.models.registry import model_names
from spectra_ml.kane.samples import build_demo_sample
from spectra_ml.features import model_inputs
from spectra_ml.training import train_model

LABELS = list(DEMO_LABELS)
OPTS = {"uncertain_nn": {"warmup_epochs": 0}, "guiglion_cnn": {"n_seeds": 1, "n_split_states": 2}}


@pytest.fixture(scope="module")
def sample():
    return build_demo_sample(LABELS, max_stars=400)[0]


@pytest.fixture(scope="module")
def trained(sample):
    """Every registered model, one epoch on 400 real giants."""
    return {
        m: train_model(sample, LABELS, m, progress=False, max_epochs=1, options=OPTS.get(m))
        for m in model_names()
    }


@pytest.mark.parametrize("name", model_names())
def test_round_trip_gives_the_same_predictions(trained, sample, tmp_path, name):
    t = trained[name]
    t.save(tmp_path)
    write_calibration(tmp_path, dict.fromkeys(LABELS, 1.5))  # sealed into the checkpoint
    ck = open_checkpoint(tmp_path, expect={"model": name, "labels": LABELS})
    assert ck.label_ranges == t.info["label_ranges"] and ck.calibration["teff"] == 1.5
    assert ck.passes == {"kane_mlp": 100, "uncertain_nn": 50, "aspgap": 1, "guiglion_cnn": 1}[name]
    X, V = model_inputs(sample.iloc[:60], t.config.aux, with_variance=True)
    kw = dict(n_passes=4, seed=5, progress=False, X_var=V)
    a = predict_table(t.model, t.feature_scaler, t.label_scaler, LABELS, X, **kw)
    b = predict_table(ck.model, ck.feature_scaler, ck.label_scaler, LABELS, X, **kw)
    pd.testing.assert_frame_equal(a, b)
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    meta = json.loads((tmp_path / "config.json").read_text())
    c = predict_table(
        rebuild_model(state, meta), ck.feature_scaler, ck.label_scaler, LABELS, X, **kw
    )
    pd.testing.assert_frame_equal(a, c)  # the Dask task's rebuild: the same network


def test_mismatches_are_checkpoint_errors(trained, tmp_path):
    trained["kane_mlp"].save(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="labels") as e:
        load_checkpoint(tmp_path, expect={"labels": ["teff"]})
    assert isinstance(e.value, CheckpointError) and isinstance(e.value, ValueError)
    meta = json.loads((tmp_path / "config.json").read_text())
    meta["train_config"]["hidden"] = [64]
    with pytest.raises(CheckpointMismatchError, match="do not fit"):
        rebuild_model(torch.load(tmp_path / "model.pt", weights_only=True), meta)
    (tmp_path / "model.pt").unlink()
    with pytest.raises(MissingInputError, match="model.pt") as e:
        open_checkpoint(tmp_path)
    assert isinstance(e.value, FileNotFoundError)  # callers catching the built-in still work


def test_fingerprint_follows_the_weights(trained, tmp_path):
    t = trained["aspgap"]
    t.save(tmp_path)
    f0 = checkpoint_fingerprint(tmp_path)
    assert checkpoint_fingerprint(tmp_path) == f0 and len(f0) == 16
    with torch.no_grad():
        next(t.model.parameters()).add_(1e-3)
    try:
        t.save(tmp_path)
        assert checkpoint_fingerprint(tmp_path) != f0
    finally:
        with torch.no_grad():
            next(t.model.parameters()).sub_(1e-3)


def test_config_defaults_come_from_the_registry():
    c = TrainConfig.for_model("aspgap", LABELS, 343, options={"latent": 64}, dropout=None)
    assert c.scaler == "median_iqr" and c.hidden == [256] and c.dropout == 0.0
    assert c.options["latent"] == 64 and c.options["alpha"] == 0.6
    assert TrainConfig.for_model("aspgap", LABELS, 343).options["latent"] == 1024  # not mutated
    with pytest.raises(ParameterError, match="kane_mlp, uncertain_nn, aspgap, guiglion_cnn"):
        TrainConfig.for_model("resnet", LABELS, 343)


def test_checkpoint_records_its_input_names_in_order(trained, sample, tmp_path):
    """config.json names the inputs (spectrum, then aux); old checkpoints get them from the feature kind."""
    from spectra_ml.checkpoint import input_columns, select_inputs
    from spectra_ml.data.samples import flux_columns

    t = trained["guiglion_cnn"]
    t.save(tmp_path)
    meta = json.loads((tmp_path / "config.json").read_text())
    assert meta["input_columns"] == flux_columns(343) + ["g", "bp", "rp"]
    ck = open_checkpoint(tmp_path)
    assert input_columns(ck) == meta["input_columns"] == input_columns(meta)
    X = select_inputs(sample.iloc[:30], input_columns(ck), "sample")
    np.testing.assert_array_equal(
        X, model_inputs(sample.iloc[:30], ck.config.aux)
    )  # training's own
    del meta["input_columns"]  # a checkpoint written before names were recorded
    (tmp_path / "config.json").write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointMismatchError, match="config.json differs from the checkpoint's manifest"
    ):
        open_checkpoint(tmp_path)  # an edit is refused...
    seal_checkpoint(tmp_path)  # ...so an older checkpoint is stood in for by sealing it as it is
    assert open_checkpoint(tmp_path).inputs is None
    assert input_columns(open_checkpoint(tmp_path)) == flux_columns(343) + ["g", "bp", "rp"]
    meta["train_config"]["aux"] = ["g"]  # 346 inputs, one aux: 345 spectral, no known kind
    with pytest.raises(CheckpointMismatchError, match="345 spectral inputs"):
        input_columns(meta)


def test_select_inputs_by_name_refuses_missing_and_ignores_extras(sample):
    from spectra_ml.checkpoint import select_inputs
    from spectra_ml.core import MissingColumnError
    from spectra_ml.data.samples import flux_columns

    names = flux_columns(343)
    s = sample.iloc[:20]
    a = select_inputs(s, names, "a.parquet")
    b = select_inputs(
        s[["teff"] + names[::-1]], names, "a.parquet"
    )  # reversed, with an extra column
    np.testing.assert_array_equal(a, b)
    xp = s[names].rename(columns=lambda c: c.replace("flux_", "xp_"))
    with pytest.raises(
        MissingColumnError, match=r"x.parquet lacks 343 of the model's 343 input columns"
    ):
        select_inputs(xp, names, "x.parquet")
    with pytest.raises(MissingColumnError, match=r"g \(needs 'phot_g_mean_mag'\)"):
        select_inputs(s.drop(columns="phot_g_mean_mag"), names + ["g"], "x.parquet")
