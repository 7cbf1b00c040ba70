"""Fallows & Sanders' training schedule (§3) as uncertain_nn's default: an iteration budget,
batches in one fixed order, 2,500 warm-up iterations without σ²_input, no early stopping; a caller's
epochs cap it (as 15_compare's `epochs` does) and the warm-up keeps its share. Real demo giants."""

import numpy as np
import pandas as pd
import pytest
import torch

import spectra_ml.training as tr
from spectra_ml.checkpoint import TrainConfig
from spectra_ml.core import DEMO_LABELS, ParameterError
from spectra_ml.kane.samples import build_demo_sample
from spectra_ml.features import model_inputs
from spectra_ml.training import iteration_schedule, named_config, train_model

LABELS = list(DEMO_LABELS)


@pytest.fixture(scope="module")
def sample():
    return build_demo_sample(LABELS, max_stars=400)[0]


def test_the_registry_default_is_the_papers_schedule():
    c = TrainConfig.for_model("uncertain_nn", LABELS, 343)
    assert (c.lr, c.weight_decay, c.batch_size) == (5e-4, 1e-5, 10_000)  # §3
    assert (c.max_iterations, c.max_epochs, c.lr_patience) == (20_000, None, 0)
    assert c.fixed_order and not c.early_stopping and c.options["warmup_iterations"] == 2_500
    # uncapped on the paper's 3.8M stars: 385 batches per epoch, 20,000 steps = 52 epochs
    full = iteration_schedule(3_845_370, c, 2_500)
    assert (full["steps_per_epoch"], full["epochs"], full["iterations"]) == (385, 52, 20_000)
    assert full["warmup_iterations"] == 2_500 and not full["capped"]
    # the demo's ~28k training stars, capped by the comparison's 300 epochs: 3 x 300 steps, 1/8 warm-up
    c.max_epochs = 300
    demo = iteration_schedule(28_000, c, 2_500)
    assert demo["iterations"] == 900 and demo["capped"] and demo["warmup_iterations"] == 112
    kane = TrainConfig.for_model("kane_mlp", LABELS, 343)
    k = iteration_schedule(28_000, kane, 0)  # Kane: epochs alone, unchanged
    assert (k["epochs"], k["iterations"], k["capped"]) == (300, 300 * 219, False)
    with pytest.raises(ParameterError, match="needs a bound"):
        iteration_schedule(100, TrainConfig(LABELS, 343, max_epochs=None), 0)


def _spy(monkeypatch):
    """Record every training batch's row order and every loss call's warm-up phase."""
    seen = {"perms": [], "phase": []}
    orig_epoch = tr._train_epoch

    def epoch(model, opt, train, perm, *a, **k):
        seen["perms"].append(perm.clone())
        loss = model.loss

        def spy_loss(*la, **lk):
            seen["phase"].append((model.training, lk.get("warmup")))
            return loss(*la, **lk)

        model.loss = spy_loss
        try:
            return orig_epoch(model, opt, train, perm, *a, **k)
        finally:
            del model.loss

    monkeypatch.setattr(tr, "_train_epoch", epoch)
    return seen


def test_fixed_order_budget_warmup_and_no_early_stop_on_real_rows(sample, monkeypatch):
    seen = _spy(monkeypatch)
    t = train_model(
        sample,
        LABELS,
        "uncertain_nn",
        progress=False,
        batch_size=64,
        max_iterations=30,
        patience=1,  # would stop at once if early stopping were on
        options={"warmup_iterations": 10},
    )
    n_tr = t.info["n_train"]
    spe = -(-n_tr // 64)
    assert t.info["iterations_run"] == 30 and t.info["epochs_run"] == -(-30 // spe)
    assert all(torch.equal(p, seen["perms"][0]) for p in seen["perms"])  # one order, every epoch
    assert sorted(seen["perms"][0].tolist()) == list(range(n_tr))  # a permutation of the rows
    train_phase = [w for training, w in seen["phase"] if training]
    assert train_phase == [True] * 10 + [False] * 20  # σ²_input off for the first 10 steps only
    assert t.info["best_epoch"] == t.info["epochs_run"] - 1  # the last weights are kept
    assert t.info["schedule"]["early_stopping"] is False and t.info["schedule"]["fixed_order"]


def test_reshuffled_and_early_stopped_variant_stays_available(sample, monkeypatch):
    seen = _spy(monkeypatch)
    t = train_model(
        sample, LABELS, "uncertain_nn", progress=False, config="fs_early_stop", max_epochs=4
    )
    assert t.config.early_stopping and not t.config.fixed_order and t.config.batch_size == 128
    assert t.config.options["warmup_epochs"] == 10 and t.config.options["warmup_iterations"] == 0
    assert not torch.equal(seen["perms"][0], seen["perms"][1])  # a new shuffle per epoch
    assert all(w is None for _, w in seen["phase"])  # the epoch rule decides the warm-up


def test_epochs_cap_the_iteration_budget_through_train_model(sample):
    """15_compare passes `epochs` as max_epochs: the paper's budget is capped, the warm-up scaled."""
    t = train_model(sample, LABELS, "uncertain_nn", progress=False, max_epochs=2, batch_size=50)
    sch = t.info["schedule"]
    spe = -(-t.info["n_train"] // 50)
    assert sch["capped"] and t.info["iterations_run"] == sch["iterations"] == 2 * spe
    assert sch["warmup_iterations"] == round(2_500 * 2 * spe / 20_000)
    o, _ = named_config("fs_affordable", max_epochs=300)
    assert o["batch_size"] == 128 and o["max_iterations"] == 20_000


def test_fallows_sanders_inputs_are_theirs_where_the_demo_has_them(sample):
    """F&S §2's colours and pseudo-absolute magnitude are uncertain_nn's inputs where the sample has
    them: on the demo BP − RP and J − H; W1 − W2, H − W2 (no unWISE) and ϖ 10^{0.2 G_RP} (no parallax)
    are named as missing. Guiglion's photometry branch misses the parallax the same way."""
    t = train_model(sample, LABELS, "uncertain_nn", progress=False, max_epochs=1, max_iterations=2)
    assert t.config.aux == ["bp_rp", "j_h"]
    assert t.info["paper_inputs_missing"] == ["w1_w2", "h_w2", "pmag"]
    # the demo keeps sampled spectra, not coefficients: the RP₀-normalised inputs are named as lacking
    assert (
        t.info["input_kind"] is None and "fs_000..fs_109" in t.info["paper_spectral_inputs_missing"]
    )
    assert t.info["input_columns"][0] == "flux_000"
    assert t.info["input_columns"][-2:] == ["bp_rp", "j_h"]
    cuts = t.info["paper_training_cuts"][1:]  # F&S §2's cuts: none of their columns in the demo
    assert len(cuts) == 5 and all(c["removed"] is None and "not applied" in c["note"] for c in cuts)
    X = model_inputs(sample, t.config.aux)
    np.testing.assert_allclose(
        X[:, -2], sample.phot_bp_mean_mag - sample.phot_rp_mean_mag, rtol=1e-6
    )
    np.testing.assert_allclose(X[:, -1], sample.j - sample.h, rtol=1e-6)
    own = train_model(
        sample, LABELS, "uncertain_nn", progress=False, max_epochs=1, max_iterations=2, aux=[]
    )
    assert own.config.aux == [] and own.info["paper_inputs_missing"] == []  # the caller's aux wins
    with_plx = sample.assign(parallax=1.0 + 0.0 * sample.j)  # a made-up constant: plumbing only
    g = train_model(
        with_plx,
        LABELS,
        "guiglion_cnn",
        progress=False,
        max_epochs=1,
        options={"n_seeds": 1, "n_split_states": 1},
    )
    assert g.config.aux == ["g", "bp", "rp", "parallax"] and g.config.options["n_phot"] == 4
    assert g.info["paper_inputs_missing"] == []


def test_fallows_sanders_cuts_on_real_apogee_flags(local_data):
    """F&S §2's flag cuts on 400 real APOGEE DR16 allStar rows (the Sgr members), against the bits
    counted with numpy: ASPCAPFLAG 23, STARFLAG 3, 4, 9, 12, 13, 16, EXTRATARG 4."""
    from astropy.table import Table

    from spectra_ml.features import fallows_sanders_cuts

    t = Table.read(local_data / "apogee" / "apogee_dr16_sgr_members.fits")
    df = pd.DataFrame(
        {c.lower(): np.asarray(t[c]) for c in ("ASPCAPFLAG", "STARFLAG", "EXTRATARG")}
    )
    f = fallows_sanders_cuts(df)
    bit = lambda col, b: (df[col].to_numpy().astype(np.int64) >> b) & 1 == 1
    bad = bit("aspcapflag", 23) | bit("extratarg", 4)
    for b in (3, 4, 9, 12, 13, 16):
        bad |= bit("starflag", b)
    assert (f.keep == ~bad).all() and 0 < bad.sum() < len(df)
    rows = {r["cut"].split()[0]: r for r in f.rows[1:]}
    assert (
        rows["starflag"]["removed"]
        == (
            bit("starflag", 3)
            | bit("starflag", 4)
            | bit("starflag", 9)
            | bit("starflag", 12)
            | bit("starflag", 13)
            | bit("starflag", 16)
        ).sum()
    )
    assert (
        "not applied" in rows["phot_bp_rp_excess_factor"]["note"]
        and "not applied" in rows["ruwe"]["note"]
    )
