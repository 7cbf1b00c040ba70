"""One reading of Kane's "training and validation data", and the full profile's split parameters.

Kane §2.1 trains on 80% of the APOGEE x BP/RP cross-match and withholds 20% "upon which to validate"
(§3.1: our test split). "Training and validation" is therefore the whole cross-match: every split. The
hand-made tables here put known rows in the test split, so an 80% (train + validation) reading fails."""

import numpy as np
import pandas as pd
import pytest

from spectra_ml.kane import samples as ks


def test_the_reading_is_every_split_the_withheld_test_split_included():
    from spectra_ml.kane.constants import KANE_TRAINING_AND_VALIDATION

    assert set(KANE_TRAINING_AND_VALIDATION) == {"train", "validation", "test"}
    got = ks.kane_training_and_validation(pd.Series(["train", "validation", "test", None]))
    assert got.tolist() == [True, True, True, False]


def test_no_kane_module_reads_train_plus_validation_as_kane_s_data():
    "The library's Kane modules and the samples chapter use the one helper, not their own split lists."
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    files = list((root / "spectra_ml" / "kane").glob("*.py")) + [
        root / "nbs/chapters/05_samples.ipynb"
    ]
    for f in files:
        text = f.read_text()
        for bad in ('isin(["train", "validation"])', 'splits=("train", "validation")'):
            assert bad not in text.replace('\\"', '"'), (f.name, bad)


def _apogee_rows():
    "Hand-made APOGEE rows: 2 true 2P stars in train, 3 in test; halo, non-members."
    n_o = [0.9, 0.9, 0.0, 0.9, 0.9, 0.9, 0.0, 0.0]
    return pd.DataFrame(
        {
            "source_id": np.arange(8) + 1,
            "split": ["train", "train", "validation", "test", "test", "test", "test", "train"],
            "n_o": n_o,
            "n_o_err": [0.05] * 8,
            "al_fe": [0.3] * 8,
            "fe_h": [-1.5] * 8,
            "gc_memberprob": [np.nan] * 8,
        }
    )


def test_apogee_truth_incidence_counts_the_withheld_stars():
    from spectra_ml.kane.tagging import apogee_truth_incidence

    d = _apogee_rows()
    r = apogee_truth_incidence(d, halo=np.ones(len(d), bool))
    assert r["n_true_2p"]["value"] == 5  # 2 in train + 3 in test; the 80% reading gives 2
    assert r["field"]["n"] == 8 and r["field"]["k"] == 5


def test_fig12_apogee_curve_counts_the_withheld_stars():
    from spectra_ml.kane.dynamics import apogee_fraction_curve

    d = _apogee_rows()
    t = d.assign(
        flag_halo=True, flag_gc_member=False, truth_2p=ks.apogee_2p_truth(d.n_o, d.n_o_err, d.al_fe)
    )
    cur = apogee_fraction_curve(t, [-2.0, -1.0])
    assert cur.n.tolist() == [8] and cur.k.tolist() == [5]


def test_fig1_right_histogram_uses_the_whole_cross_match(monkeypatch, tmp_path):
    d = _apogee_rows().assign(bp_rp=1.2, phot_g_mean_mag=14.0)
    seen = {}

    def fake_hist(n_o, is_member, labels=None):
        import matplotlib.pyplot as plt

        seen["n"] = len(n_o)
        return plt.figure()

    monkeypatch.setattr(ks, "plot_no_hist", fake_hist)
    monkeypatch.setattr(
        ks, "plot_sample_cmd", lambda *a, **k: __import__("matplotlib.pyplot").pyplot.figure()
    )
    out, _ = ks.draw_sample_figures(d, tmp_path, named=(np.array([]), None, None, None))
    assert "fig1_no_hist" in out and seen["n"] == 8  # the 80% reading draws 5


def test_full_profile_passes_split_parameters_and_excludes_every_split_from_galah(
    monkeypatch, tmp_path
):
    "build_sample('full') hands the split parameters to the training table and all its ids to the GALAH exclusion."
    got = {}

    def fake_training(products, **kw):
        got["training"] = kw
        return _apogee_rows(), pd.DataFrame({"cut": ["all"], "removed": [0], "remaining": [8]})

    def fake_app(products, ids, xp_route="bulk"):
        got["application"] = sorted(ids)
        return None, [{"cut": "all", "remaining": 1}]

    def fake_galah(products, fit_ids):
        got["galah"] = sorted(fit_ids)
        return None, [{"cut": "all", "remaining": 1}]

    monkeypatch.setattr(ks, "build_full_training", fake_training)
    monkeypatch.setattr(ks, "build_application", fake_app)
    monkeypatch.setattr(ks, "build_galah_sample", fake_galah)
    fr = {"train": 0.8, "test": 0.2}
    ks.build_sample(tmp_path, "full", None, fr, "random", 7)
    assert got["training"] == {"split_fractions": fr, "split_scheme": "random", "seed": 7}
    assert (
        got["galah"] == got["application"] == list(range(1, 9))
    )  # the 3 test-split stars removed too


def _synthetic_mirror(tmp_path, monkeypatch):
    from conftest import load_tool

    root = load_tool("synthetic_mirror").write_synthetic_mirror(tmp_path / "synthetic", n_stars=400)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(root))
    monkeypatch.setenv("SPECTRA_ML_CACHE", str(tmp_path / "cache"))
    return root


@pytest.mark.parametrize(
    "fractions, scheme",
    [
        ({"train": 0.8, "test": 0.2}, "random"),
        ({"train": 0.5, "validation": 0.25, "test": 0.25}, "hash"),
    ],
)
def test_full_training_honours_split_scheme_and_fractions(tmp_path, monkeypatch, fractions, scheme):
    """On the SYNTHETIC mirror (plumbing only): the full profile's training table takes the split
    parameters; it used to make the 70/10/20 hash split whatever was asked."""
    from spectra_ml.data.samples import assign_split

    _synthetic_mirror(tmp_path, monkeypatch)
    t, _ = ks.build_full_training(
        tmp_path / "products",
        allow_download=False,
        split_fractions=fractions,
        split_scheme=scheme,
        seed=3,
    )
    assert set(t.split) == set(fractions)
    want = assign_split(t.source_id.to_numpy(), fractions, scheme, seed=3)
    assert (t.split.to_numpy() == want).all()
