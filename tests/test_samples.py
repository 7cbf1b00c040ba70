"""The samples stage as library functions: the build for a profile, its summary, and Kane Figs 1-2."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spectra_ml.core import DEMO_LABELS, ParameterError
from spectra_ml.samples import (
    assign_split,
    build_demo_sample,
    build_sample,
    draw_sample_figures,
    library_xp_spectra,
    plot_sample_cmd,
    sample_summary,
)


def test_build_sample_is_the_demo_build_and_its_summary(demo_data):
    sample, flow, more = build_sample(None, "demo", None, max_stars=800, seed=3)
    ref, ref_flow = build_demo_sample(list(DEMO_LABELS), max_stars=800, seed=3)
    pd.testing.assert_frame_equal(
        sample, ref
    )  # the profile's labels by default, same rows and order
    assert flow == ref_flow and more == {}
    s = sample_summary(sample, flow, "demo")
    assert s["n_selected"] == 800 == sum(s["splits"].values())
    assert s["splits"] == sample.split.value_counts().to_dict()
    assert s["cut_flow"][-1]["remaining"] == 800 and any("N" in m for m in s["profile_lacks"])
    with pytest.raises(ParameterError, match="n_o"):
        build_sample(
            None, "demo", ["n_o"]
        )  # the embedded set has no N/O: refused, with the choices


def test_cmd_highlights_the_members_it_is_given(demo_data):
    meta = demo_data[0]
    sample = meta.iloc[:2000]
    members = meta.source_id.iloc[[3, 5, 7, 30000]]  # the last one is outside the sample
    fig = plot_sample_cmd(sample, meta, members)
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "VB21 GC members (3)"
    plt.close(fig)


def test_sample_figures_on_the_real_library_and_xp_file(local_data, demo_data, tmp_path):
    """Fig. 1 over the whole embedded library, and Fig. 2 from the real archive coefficients of the stars
    the local XP file shares with it (the figures the cluster stage used to draw)."""
    meta = demo_data[0]
    sample = meta.iloc[:3000].assign(split=lambda d: assign_split(d.source_id.to_numpy()))
    xp_file = local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits"
    out, notes = draw_sample_figures(sample, tmp_path, meta, None, xp_file)
    assert sorted(p.name for p in tmp_path.glob("*.png")) == ["fig1_cmd.png", "fig2_xp_spectra.png"]
    sid, wl, flux, names = library_xp_spectra(xp_file, meta)
    assert out["fig2_stars"] == [int(s) for s in sid] and len(sid) >= 1
    assert set(sid) <= set(meta.source_id) and flux.shape == (len(sid), len(wl))
    assert np.isfinite(flux).all() and all(n.startswith(f"{s}: Teff") for s, n in zip(sid, names))
    assert any("N/O" in n for n in notes)  # Fig. 1 (right) needs N and O: said, not drawn


def test_no_histogram_drawn_where_the_sample_has_n_o(local_data, tmp_path):
    """The full profile's sample carries [N/O] and VB21 membership: Fig. 1 (right) is drawn, Fig. 2 is
    skipped with a note without the XP file. Real allStar rows (95 Kepler giants) stand in for it."""
    from spectra_ml.samples import apogee_training_table, read_allstar

    t, _ = apogee_training_table(
        read_allstar(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    )
    t = t.assign(
        split=assign_split(t.source_id.to_numpy()),
        phot_g_mean_mag=12.0 + np.arange(len(t)) * 0.01,  # photometry is not in allStar: a ramp
        phot_bp_mean_mag=12.6 + np.arange(len(t)) * 0.01,
        phot_rp_mean_mag=11.4 + np.arange(len(t)) * 0.01,
        gc_cluster=pd.array(["stand-in"] * 10 + [None] * (len(t) - 10), dtype="string"),
    )
    out, notes = draw_sample_figures(t, tmp_path)
    assert set(out) == {"fig1_cmd", "fig1_no_hist"}
    assert (tmp_path / "fig1_no_hist.png").exists() and any("Fig. 2 skipped" in n for n in notes)
