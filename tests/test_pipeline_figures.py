"""The figures show what they say: their drawn data are checked against the tables they are drawn from
(a test that only sees a PNG appear cannot fail). Real predictions of the quick demo run."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spectra_ml.core import DEMO_LABELS
from spectra_ml.metrics import binned_metrics, plot_feh_bins, plot_pred_vs_truth
from spectra_ml.kane.tagging import confusion, plot_confusion, plot_purity_completeness

pytestmark = pytest.mark.slow  # the figures of the session's quick pipeline run


@pytest.fixture(scope="module")
def pred(quick_run):
    return pd.read_parquet(quick_run[0] / "products" / "predictions.parquet")


def test_fig3_holds_every_test_star_and_titles_the_summarys_rmse(pred, quick_run):
    fig = plot_pred_vs_truth(pred, DEMO_LABELS)
    top = fig.axes[: len(DEMO_LABELS)]
    test = pred[pred.split == "test"]
    v = quick_run[1]["validate"]["mlp"]
    for ax, lab in zip(top, DEMO_LABELS):
        ok = np.isfinite(test[lab]) & np.isfinite(test[f"mu_{lab}"])
        counts = np.nansum(ax.collections[0].get_array())  # the 2D histogram's stars
        assert counts == ok.sum(), lab  # every one, those beyond the axes at the edges
        res_ax = fig.axes[len(DEMO_LABELS) + list(DEMO_LABELS).index(lab)]
        assert np.nansum(res_ax.collections[0].get_array()) == ok.sum(), lab
        assert (
            f"RMSE {v[lab]['rmse']:.3g}" in ax.get_title() and f"N = {ok.sum()}" in ax.get_title()
        )
        x, y = ax.lines[0].get_data()  # the one-to-one line
        assert list(x) == list(y)
    plt.close(fig)


def test_fig5_cells_are_the_confusion_matrix():
    rng = np.random.default_rng(0)
    truth, sel = rng.random(300) < 0.1, rng.random(300) < 0.08
    c = confusion(truth, sel)
    fig = plot_confusion(c)
    cells = {
        (round(t.get_position()[1]), round(t.get_position()[0])): int(t.get_text())
        for t in fig.axes[0].texts
    }
    assert cells == {(0, 0): c["tn"], (0, 1): c["fp"], (1, 0): c["fn"], (1, 1): c["tp"]}
    assert sum(cells.values()) == 300 and fig.axes[0].get_ylabel() == "APOGEE truth"
    plt.close(fig)


def test_feh_bin_figure_draws_the_tables_bias_and_rmse(pred):
    t = binned_metrics(pred, DEMO_LABELS, by="fe_h")
    fig = plot_feh_bins({"kane_mlp": t})
    for j, lab in enumerate(DEMO_LABELS):
        d = t[(t.label == lab) & (t.hi - t.lo == 0.5)]
        d = d[d.lo.isin(sorted(set(d.lo)))]
        bias_ax, rmse_ax = fig.axes[j], fig.axes[len(DEMO_LABELS) + j]
        bx, by = bias_ax.lines[0].get_data()
        rx, ry = rmse_ax.lines[0].get_data()
        np.testing.assert_allclose(by, d.bias.to_numpy(), equal_nan=True)
        np.testing.assert_allclose(ry, d.rmse.to_numpy(), equal_nan=True)
        np.testing.assert_allclose(bx, ((d.lo + d.hi) / 2).to_numpy())
        assert [int(a.get_text()) for a in rmse_ax.texts] == [int(n) for n in d.n if n > 0]
    plt.close(fig)


def test_purity_completeness_figure_draws_the_curve():
    curve = pd.DataFrame(
        {"no_min": [0.4, 0.5, 0.6], "purity": [0.5, 0.7, 0.9], "completeness": [0.9, 0.6, 0.3]}
    )
    fig = plot_purity_completeness(curve, marker=0.5)
    (p, c) = fig.axes[0].lines[:2]
    assert list(p.get_ydata()) == [0.5, 0.7, 0.9] and list(c.get_ydata()) == [0.9, 0.6, 0.3]
    assert fig.axes[0].lines[2].get_xdata()[0] == 0.5  # the adopted threshold
    plt.close(fig)
