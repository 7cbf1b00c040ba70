"""Guiglion §3's ensemble: 7 re-splits (75/25) x 4 seeds = 28 members, each early-stopped on its own 25%,
trained as one batched model (stacked parameters, vmapped forward and backward) that follows the member
loop step for step. Real demo giants (build_demo_sample), small and few epochs."""

import copy

import numpy as np
import pytest
import torch

from spectra_ml.checkpoint import TrainConfig
from spectra_ml.core import DEMO_LABELS, ParameterError, set_seed
from spectra_ml.models.guiglion import GuiglionCNN
from spectra_ml.models.registry import build_model
from spectra_ml.kane.samples import build_demo_sample
from spectra_ml.features import model_inputs
from spectra_ml.training import (
    fit,
    fit_ensemble,
    fit_members_batched,
    member_splits,
    adam_step_per_member,
    stacked_adam,
)
from spectra_ml.features import SCALERS
from spectra_ml.checkpoint import LabelScaler

LABELS = list(DEMO_LABELS)


@pytest.fixture(scope="module")
def arrays():
    s = build_demo_sample(LABELS, max_stars=900)[0]
    X = model_inputs(s, ["g", "bp", "rp"])
    X = SCALERS["minmax"]().fit(X).transform(X).astype(np.float32)
    Y = LabelScaler().fit(s[LABELS].to_numpy(float)).transform(s[LABELS].to_numpy(float))
    return X, Y.astype(np.float32)


def _config(**kw):
    c = TrainConfig.for_model("guiglion_cnn", LABELS, 346)  # 343 XP pixels + G, BP, RP
    c.options = {**c.options, "n_phot": 3}
    for k, v in kw.items():
        setattr(c, k, v)
    return c


def test_the_default_is_the_papers_28_members_on_their_own_re_splits():
    c = TrainConfig.for_model("guiglion_cnn", LABELS, 346)
    c.options["n_phot"] = 3
    ens = build_model(c.model_config())
    assert (ens.n_seeds, ens.n_split_states, len(ens.members)) == (4, 7, 28)
    assert c.patience == 20 and c.ensemble_training == "batched"
    assert (c.lr_patience, c.lr_factor) == (10, 0.1)  # §3: Keras ReduceLROnPlateau's defaults
    assert TrainConfig.for_model("kane_mlp", LABELS, 343).lr_factor == 0.5  # our option's halving
    sp = member_splits(1000, 7, 0.75, seed=42)
    assert len(sp) == 7 and len({tuple(f[:20]) for f, _ in sp}) == 7  # seven different draws
    for f, s in sp:
        assert len(f) == 750 and len(s) == 250
        assert not set(f) & set(s) and len(set(f) | set(s)) == 1000  # 75/25 of every training row
    with pytest.raises(ParameterError, match="member_train_fraction"):
        member_splits(3, 1, 0.1)


@pytest.mark.parametrize("patience, differs", [(3, "stop"), (4, "lr")])
def test_batched_members_equal_the_member_loop(arrays, patience, differs):
    """Own early stopping (members stop at different epochs and leave the stack), a per-member plateau
    schedule (their lrs differ) and Adam: each batched member equals the one trained alone by `fit`."""
    X, Y = arrays
    cfg = _config(max_epochs=16, patience=patience, lr_patience=1, lr=1e-2)
    set_seed(3)
    members = [
        GuiglionCNN(X.shape[1], len(LABELS), (32, 16), 0.0, n_phot=3, xp_width=16) for _ in range(4)
    ]
    alone = copy.deepcopy(members)
    sp = [member_splits(len(X), 2, 0.75, seed=9)[k] for k in (0, 0, 1, 1)]
    seeds = [11, 12, 11, 12]
    hist = fit_members_batched(members, X, Y, sp, seeds, cfg, progress=False)
    runs = []
    for j in range(4):
        c = copy.copy(cfg)
        c.seed = seeds[j]
        f, s = sp[j]
        _, h, info = fit(X[f], Y[f], X[s], Y[s], c, False, model=alone[j])
        runs.append(len(h))
        assert [e["val_loss"] for e in hist[j]] == pytest.approx(
            [e["val_loss"] for e in h], rel=2e-3
        )
        assert [e["lr"] for e in hist[j]] == [e["lr"] for e in h]
        with torch.no_grad():  # the same function (up to rounding, amplified a little by training)
            xs = torch.as_tensor(X[s])
            d = members[j].eval()(xs)[0] - alone[j].eval()(xs)[0]
        assert float(d.pow(2).mean().sqrt()) < 1e-2, j  # standardised units: 1% of each label's std
    assert [len(h) for h in hist] == runs
    if differs == "stop":
        assert len(set(runs)) > 1, "the members should stop at different epochs in this check"
    else:
        assert len({h[-1]["lr"] for h in hist}) > 1, "their plateau schedules should differ here"


def test_adam_with_a_learning_rate_per_member_is_torch_adam_per_member():
    w = torch.nn.Parameter(torch.randn(3, 5))
    ref = [torch.nn.Parameter(w[j].detach().clone()) for j in range(3)]
    lrs = [1e-2, 1e-3, 3e-4]
    opts = [torch.optim.Adam([ref[j]], lr=lrs[j], weight_decay=1e-3) for j in range(3)]
    opt = stacked_adam([w], 1e-2, weight_decay=1e-3)
    for t in range(6):
        g = torch.randn(3, 5)
        w.grad = g.clone()
        adam_step_per_member(opt, lrs if t else [1e-2] * 3)  # one lr first, then one each
        for j in range(3):
            ref[j].grad = g[j].clone()
            if t == 0:
                opts[j].param_groups[0]["lr"] = 1e-2
            opts[j].step()
            opts[j].param_groups[0]["lr"] = lrs[j]
    for j in range(3):
        assert torch.allclose(w[j], ref[j], atol=1e-6)


@pytest.mark.parametrize("mode", ["batched", "loop"])
def test_no_member_sees_the_pipelines_validation_split(arrays, mode):
    """Members fit and stop on the training split alone: another validation split gives the same members."""
    X, Y = arrays
    cfg = _config(max_epochs=3, patience=2, ensemble_training=mode)
    cfg.options.update(n_seeds=1, n_split_states=2)
    a, _, ia = fit_ensemble(X[:600], Y[:600], X[600:], Y[600:], cfg, progress=False)
    b, _, ib = fit_ensemble(X[:600], Y[:600], X[600:][::-1] * 0.5, Y[600:], cfg, progress=False)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
    assert ia["validation_mse_of_mean"] != ib["validation_mse_of_mean"]
    assert ia["ensemble_training"] == mode and [m["n_stop"] for m in ia["members"]] == [150, 150]
    assert {m["split_state"] for m in ia["members"]} == {0, 1}


def test_batched_refuses_what_it_does_not_do(arrays):
    X, Y = arrays
    with pytest.raises(ParameterError, match="loop"):
        fit_ensemble(
            X[:100], Y[:100], X[100:150], Y[100:150], _config(), progress=False, augment=0.5
        )
    with pytest.raises(ParameterError, match="ensemble_training"):
        fit_ensemble(
            X[:100], Y[:100], X[100:150], Y[100:150], _config(ensemble_training="x"), progress=False
        )
