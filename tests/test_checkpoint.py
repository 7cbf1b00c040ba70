"""Checkpoints: every registered model saved, reopened and rebuilt to the same predictions; mismatches
and missing files refused with errors of the core family; the fingerprint follows the weights."""

import json

import numpy as np
import pandas as pd
import pytest
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
from spectra_ml.inference import predict_table
from spectra_ml.models import model_names
from spectra_ml.samples import build_demo_sample, model_inputs
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
    (tmp_path / "calibration.json").write_text(
        json.dumps({"sigma_scale": dict.fromkeys(LABELS, 1.5)})
    )
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
