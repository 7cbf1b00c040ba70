"""Kane's heteroscedastic loss masked for missing labels, and train_model's `missing_labels` option:
a hand computation of the loss, the rows each choice trains on (real demo giants), and no change at
all where no label is missing."""

import numpy as np
import pytest
import torch

from spectra_ml.core import DEMO_LABELS, ParameterError
from spectra_ml.kane.samples import build_demo_sample
from spectra_ml.models.kane import heteroscedastic_nll
from spectra_ml.training import train_model, usable_label_rows

LABELS = list(DEMO_LABELS)


@pytest.fixture(scope="module")
def sample():
    return build_demo_sample(LABELS, max_stars=300)[0]


def test_a_star_without_n_contributes_no_n_o_term():
    """Two stars, labels ([Fe/H], [N/O]); the second has no [N/O]. By hand (Kane §2.2 term
    (μ − y)² e^(−s) + s): star 1 gives 0.2² e^(−0.5) + 0.5 and 0.4² e^(0.3) − 0.3, star 2 gives
    0.1² e^(0) + 0 and nothing for [N/O]; the mean is over the 3 terms present."""
    mu = torch.tensor([[0.2, 0.4], [0.1, 9.0]], requires_grad=True)
    lv = torch.tensor([[0.5, -0.3], [0.0, 2.0]], requires_grad=True)
    y = torch.tensor([[0.0, 0.0], [0.0, float("nan")]])
    terms = [0.04 * np.exp(-0.5) + 0.5, 0.16 * np.exp(0.3) - 0.3, 0.01]
    loss = heteroscedastic_nll(mu, lv, y)
    assert float(loss.detach()) == pytest.approx(sum(terms) / 3, rel=1e-6)
    assert float(heteroscedastic_nll(mu, lv, y, "sum").detach()) == pytest.approx(
        sum(terms), rel=1e-6
    )
    none = heteroscedastic_nll(mu, lv, y, "none").detach()
    assert float(none[1, 1]) == 0.0
    loss.backward()
    # the missing term gets no gradient, and nothing is NaN (μ = 9 would otherwise dominate)
    assert mu.grad[1, 1] == 0 and lv.grad[1, 1] == 0
    assert torch.isfinite(mu.grad).all() and torch.isfinite(lv.grad).all()


def test_without_missing_labels_the_loss_is_kanes_bit_for_bit():
    g = torch.Generator().manual_seed(0)
    mu, lv, y = (torch.randn(50, 4, generator=g) for _ in range(3))
    assert torch.equal(heteroscedastic_nll(mu, lv, y), ((mu - y) ** 2 * torch.exp(-lv) + lv).mean())


def test_usable_rows_per_choice_and_refusals():
    Y = np.array([[1.0, 2.0], [np.nan, 1.0], [np.nan, np.nan]])
    assert usable_label_rows(Y, "drop").tolist() == [True, False, False]
    assert usable_label_rows(Y, "mask").tolist() == [True, True, False]
    with pytest.raises(ParameterError, match="missing_labels"):
        usable_label_rows(Y, "impute")
    from spectra_ml.models.fallows_sanders import UncertainNN

    with pytest.raises(ParameterError, match="kane_mlp"):
        usable_label_rows(Y, "mask", UncertainNN)


@pytest.mark.slow
def test_masked_training_keeps_stars_with_some_labels(sample):
    d = sample.copy()
    tr = np.flatnonzero(d.split.to_numpy() == "train")
    d.loc[tr[:40], "alpha_m"] = np.nan  # real giants, [α/M] removed: as an APOGEE flag would
    kw = dict(progress=False, max_epochs=2, seed=0)
    drop = train_model(d, LABELS, **kw)
    mask = train_model(d, LABELS, config="kane_masked", **kw)
    assert drop.info["n_train"] == len(tr) - 40
    assert mask.info["n_train"] == len(tr)
    assert mask.info["n_train_per_label"]["alpha_m"] == len(tr) - 40
    assert mask.info["n_train_per_label"]["teff"] == len(tr)
    assert all(np.isfinite(h["train_loss"]) for h in mask.history)


@pytest.mark.slow
def test_mask_changes_nothing_when_no_label_is_missing(sample):
    """Backward compatible: with every label present, `missing_labels='mask'` trains the same weights bit for bit."""
    kw = dict(progress=False, max_epochs=2, seed=3)
    a = train_model(sample, LABELS, **kw).model.state_dict()
    b = train_model(sample, LABELS, missing_labels="mask", **kw).model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_each_profile_trains_with_its_own_default_config():
    """08_training's `config=None` takes the profile's: the demo keeps Kane's drop (its run unchanged),
    the full profile masks (APOGEE flags remove [N/O] or [Al/Fe] star by star); a given config wins,
    and a model without Kane's masked loss keeps Kane's drop instead of failing."""
    from pathlib import Path

    from spectra_ml.core import PROFILES, declared_defaults
    from spectra_ml.training import PROFILE_TRAIN_CONFIG, named_config, stage_config

    nb = Path(__file__).resolve().parent.parent / "nbs" / "chapters" / "08_training.ipynb"
    default = declared_defaults(nb)["config"]
    assert default is None
    missing = lambda profile, model="kane_mlp": named_config(stage_config(default, profile, model))[
        1
    ]["missing_labels"]
    assert stage_config(default, "demo") == "kane" and missing("demo") == "drop"
    assert stage_config(default, "full") == "kane_masked" and missing("full") == "mask"
    assert missing("full", "uncertain_nn") == "drop"
    assert stage_config("metal_poor", "full") == "metal_poor"
    assert set(PROFILE_TRAIN_CONFIG) == set(PROFILES)
    with pytest.raises(ParameterError, match="profile"):
        stage_config(None, "nope")
