"""The validation stage as library functions, on the real embedded APOGEE labels and errors."""

import numpy as np
import pandas as pd
import pytest

from spectra_ml.metrics import (
    apply_calibration,
    baseline_comparison,
    fit_calibration,
    validation_summary,
    validation_tables,
)
from spectra_ml.data.samples import assign_split

LABELS = ["teff", "logg", "fe_h"]


@pytest.fixture
def predictions(demo_data):
    """A 'predictor' made from real APOGEE labels: μ = truth + N(0, err), σ = 2 err (twice too wide, so
    the calibration has something to find), and a baseline three times as noisy. Not a network."""
    rng = np.random.default_rng(0)
    meta = demo_data[0].iloc[:6000].reset_index(drop=True)
    pred = meta[["source_id", *LABELS]].copy()
    pred["split"] = assign_split(pred.source_id.to_numpy())
    for l in LABELS:
        err = meta[f"{l}_err"].to_numpy(float).clip(1e-3)
        pred[f"mu_{l}"] = pred[l] + rng.normal(0, err)
        pred[f"sigma_{l}"] = 2 * err
        pred[f"gbr_{l}"] = pred[l] + rng.normal(0, 3 * err)
    pred["flag_ood"] = False
    pred.loc[pred.index[pred.split == "test"][:7], "flag_ood"] = True
    return pred


def test_calibrated_tables_find_the_factor_two(predictions):
    cal = fit_calibration(predictions, LABELS)
    assert all(abs(cal[l] - 0.5) < 0.05 for l in LABELS)  # fitted on validation rows only
    mlp, gbr = validation_tables(predictions, LABELS, cal, "test")
    assert list(mlp.index) == LABELS
    assert (abs(mlp.z_std - 0.5) < 0.06).all() and (abs(mlp.z_std_calibrated - 1) < 0.12).all()
    assert (mlp.n_flagged == 7).all() and (mlp.sigma_scale == pd.Series(cal)).all()
    assert (mlp.z_std_calibrated_unflagged > 0).all()
    assert int(mlp.loc["teff", "n"]) == int((predictions.split == "test").sum())
    cmp = baseline_comparison(mlp, gbr)
    assert cmp.mlp_better.all() and (cmp.gbr_rmse > 2 * cmp.mlp_rmse).all()
    assert "sigma_cal_teff" not in predictions  # the tables do not touch the caller's table


def test_no_baseline_without_its_columns(predictions):
    pred = predictions.drop(columns=["gbr_logg"])
    mlp, gbr = validation_tables(pred, LABELS, fit_calibration(pred, LABELS))
    assert gbr is None
    s = validation_summary(pred, LABELS, mlp, gbr, "test", "demo")
    assert s["baseline_gbr"] is None and s["mlp_beats_baseline_on"] == []


def test_summary_keys_and_notes(predictions):
    cal = fit_calibration(predictions, LABELS)
    mlp, gbr = validation_tables(predictions, LABELS, cal)
    s = validation_summary(predictions, LABELS, mlp, gbr, "test", "demo")
    assert set(s) == {
        "split",
        "n_test",
        "mlp",
        "baseline_gbr",
        "mlp_beats_baseline_on",
        "published_rmse_other_data",
        "notes",
    }
    assert s["n_test"] == int((predictions.split == "test").sum()) and s["split"] == "test"
    assert s["mlp_beats_baseline_on"] == LABELS and s["mlp"]["teff"] == mlp.loc["teff"].to_dict()
    assert any("n_o" in n for n in s["notes"])  # the profile says what it lacks
    full = validation_summary(predictions, LABELS + ["n_o", "al_fe"], mlp, None, "test", "full")
    assert not any("n_o" in n for n in full["notes"])


def test_apply_calibration_scales_sigma(predictions):
    out = apply_calibration(predictions.copy(), {"teff": 0.5, "fe_h": 2.0})
    np.testing.assert_allclose(out.sigma_cal_teff, predictions.sigma_teff * 0.5)
    np.testing.assert_allclose(out.sigma_cal_fe_h, predictions.sigma_fe_h * 2.0)
    assert "sigma_cal_logg" not in out


# --- per-bin metrics, Kane §3.1's offset, Kane Figs 4 / B1-B4 rows -------------------


def test_binned_metrics_match_a_direct_computation_on_real_labels(predictions):
    from spectra_ml.core import FEH_BIN_EDGES
    from spectra_ml.metrics import binned_metrics

    b = binned_metrics(predictions, LABELS, sigma="sigma_")
    te = predictions[predictions.split == "test"]
    for lo, hi in zip(FEH_BIN_EDGES[:-1], FEH_BIN_EDGES[1:]):
        m = (te.fe_h >= lo) & ((te.fe_h < hi) | ((te.fe_h == hi) & (hi == FEH_BIN_EDGES[-1])))
        for l in LABELS:
            r = (te[f"mu_{l}"] - te[l])[m].to_numpy()
            row = b[(b.lo == lo) & (b.hi == hi) & (b.label == l)].iloc[0]
            assert row.n == m.sum()
            if m.sum():
                assert np.isclose(row.bias, r.mean()) and np.isclose(
                    row.rmse, np.sqrt((r**2).mean())
                )
                z = r / te[f"sigma_{l}"][m].to_numpy()
                assert np.isclose(row.z_std, z.std())
    # the metal-poor study's wider -3...-2 bin is the two 0.5-dex bins together
    f = b[b.label == "fe_h"].set_index(["lo", "hi"])
    parts = f.loc[[(-3.0, -2.5), (-2.5, -2.0)]]
    wide = f.loc[(-3.0, -2.0)]
    assert wide.n == parts.n.sum() and wide.n > 0
    assert np.isclose(wide.bias, (parts.bias * parts.n).sum() / parts.n.sum())


def test_per_bin_z_std_uses_the_calibrated_sigma(predictions):
    from spectra_ml.metrics import per_bin_tables

    cal = fit_calibration(predictions, LABELS)  # σ is twice too wide: scales near 0.5
    raw = per_bin_tables(predictions, LABELS)["fe_h"]  # no calibration: no z-std at all
    assert raw.z_std.isna().all()
    t = per_bin_tables(predictions, LABELS, cal)["fe_h"]
    full = t[t.n >= 200]  # the well-populated bins
    assert len(full) >= 2 * len(LABELS) and np.allclose(full.z_std, 1.0, atol=0.15)
    assert "sigma_cal_teff" not in predictions  # the caller's table is untouched
    teff = per_bin_tables(predictions, LABELS, cal)["teff"]
    te = predictions[predictions.split == "test"]
    inside = ((te.teff >= 3000) & (te.teff <= 5250)).sum()  # the fixture has dwarfs too (no bin)
    assert teff[teff.label == "teff"].n.sum() == inside > 0


def test_feh_offset_is_kanes_mean_residual_below_minus_one(predictions):
    from spectra_ml.metrics import feh_offset, per_bin_summary, per_bin_tables

    p = predictions.copy()
    p["mu_fe_h"] = p.fe_h + np.where(p.fe_h < -1, 0.07, -0.3)  # the paper's offset, and noise above
    o = feh_offset(p)
    te = p[p.split == "test"]
    assert o["n"] == (te.fe_h < -1).sum() > 0 and np.isclose(o["mean_residual"], 0.07)
    assert o["paper"] == 0.07 and o["feh_max"] == -1.0
    s = per_bin_summary(per_bin_tables(p, LABELS, fit_calibration(p, LABELS)), pred=p)
    assert s["feh_offset_below_-1"] == o and set(s["fe_h"][0]) >= {"lo", "hi", "n", "bias", "rmse"}
    goal = s["feh_goal_metal_poor"]
    assert set(goal) == {"-2.5..-2.0", "-2.0..-1.5", "-1.5..-1.0", "all_pass", "goal"}
    assert all(v["pass"]["bias"] is False for k, v in goal.items() if k[0] == "-")  # +0.07 > 0.05


def test_kane_sigma_figures_draw_the_papers_rows(predictions):
    import matplotlib.pyplot as plt
    from spectra_ml.core import MissingColumnError
    from spectra_ml.metrics import plot_sigma_vs_labels, sigma_column, sigma_figure_plan

    p = predictions.copy()
    p["n_o"], p["al_fe"], p["mu_al_fe"] = 0.1, 0.0, 0.01  # stand-in columns: only the panels' count
    p["sigma_al_fe"], p["ebv_sfd"] = 0.05, 0.1
    plan = sigma_figure_plan(p, ["teff", "al_fe"])
    b1, b4 = plan["fig4_sigma_teff.png"], plan["fig4_sigma_al_fe.png"]
    assert b1["kane_figure"] == "Fig. B1" and b4["kane_figure"] == "Fig. B4"
    assert b1["rows_top_down"] == ["teff", "logg", "fe_h", "n_o", "residual", "ebv_sfd"]
    assert b4["rows_top_down"] == ["teff", "logg", "fe_h", "n_o", "al_fe", "residual", "ebv_sfd"]
    assert b1["missing_rows"] == [] and b1["sigma"] == "sigma_teff"  # no sigma_alea_: the total
    fig = plot_sigma_vs_labels(p, "teff", b1["against"])
    assert len([a for a in fig.axes if a.get_label() != "<colorbar>"]) == 6
    assert "total" in fig.axes[0].get_ylabel()
    plt.close(fig)
    demo = sigma_figure_plan(predictions, LABELS)["fig4_sigma_fe_h.png"]
    assert demo["missing_rows"] == ["n_o", "ebv_sfd"]  # the demo names what it lacks
    with pytest.raises(MissingColumnError, match="sigma_alea_teff"):
        sigma_column(predictions, "teff", "alea")
    p["sigma_alea_teff"] = p.sigma_teff / 2
    assert sigma_column(p, "teff") == "sigma_alea_teff"
