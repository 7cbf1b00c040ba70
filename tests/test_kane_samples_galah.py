"""Kane §3.3's GALAH sample and Figs 6-8 on the real GALAH DR3 rows of the data mirror.

The cuts are checked against counts computed here with numpy on the FITS file's own (mixed-case) columns. For
Figs 7 and 8 GALAH's own [Al/Fe] stands in for the network's μ[Al/Fe] (the `oracle_galah_predictions` fixture):
a perfect network, so the numbers are properties of GALAH and of the code, not of a model."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from spectra_ml.kane import clusters as cl
from spectra_ml.core import MissingColumnError
from spectra_ml.kane.samples import (
    build_demo_galah,
    galah_sample,
    galah_validation_cuts,
    read_galah,
)

GALAH_FILE = "galah/Galah_data_filtered_1061.fits"


@pytest.fixture(scope="module")
def galah_raw(request):
    from spectra_ml.core import local_data_path

    p = local_data_path()
    if p is None or not (p / GALAH_FILE).exists():
        pytest.skip("set SPECTRA_ML_LOCAL_DATA to the data mirror (CI: ../shared/data)")
    return p / GALAH_FILE, Table.read(p / GALAH_FILE).to_pandas()


@pytest.fixture(scope="module")
def vb21(galah_raw):
    from spectra_ml.data.references import read_vb21_members

    return read_vb21_members(galah_raw[0].parent.parent / "vb21_members" / "catalogues")


@pytest.fixture(scope="module")
def oracle_galah_predictions(galah_raw, vb21):
    """ORACLE: the real GALAH rows after the §3.3 quality cuts, with GALAH's own [Al/Fe] as μ[Al/Fe]."""
    from spectra_ml.kane.samples import vb21_membership

    g, _ = galah_sample(read_galah(galah_raw[0]))
    return vb21_membership(g.assign(mu_al_fe=g.al_fe), vb21)


def quality(t):
    "Kane §3.3 quality cuts, independently, on the survey's own columns."
    return (
        (
            (t.teff < 5200)
            & (t.logg < 3)
            & (t.flag_sp == 0)
            & (t.flag_fe_h == 0)
            & (t.snr_c3_iraf > 30)
        ).to_numpy()
        & (t.dr3_source_id > 0).to_numpy()
        & ~t.dr3_source_id.duplicated().to_numpy()
    )


def test_galah_quality_cuts_match_numpy_on_real_rows(galah_raw):
    path, t = galah_raw
    raw = read_galah(path)
    assert {"na_fe", "flag_na_fe", "o_fe", "al_fe", "ra_dr2", "ebv"} <= set(
        raw
    )  # read case-insensitively
    g, flow = galah_sample(raw)
    q = quality(t)
    assert len(g) == q.sum() == flow.remaining.iloc[-1] and 0 < len(g) < len(t)
    assert g.source_id.tolist() == t.dr3_source_id[q].tolist()  # rows kept in order
    for e, col in (("na", "Na"), ("o", "O"), ("al", "Al"), ("mg", "Mg"), ("ca", "Ca")):
        assert g[f"ok_{e}"].sum() == (t[f"flag_{col}_fe"][q] == 0).sum()
    r = flow.iloc[1:]
    assert (flow.remaining.shift(1).iloc[1:] - r.remaining == r.removed).all()  # the flow adds up


def test_galah_validation_cuts_continue_the_flow(galah_raw):
    from spectra_ml.data.sources import ebv_sfd

    path, t = galah_raw
    g, flow = galah_sample(read_galah(path))
    g["ebv_sfd"] = ebv_sfd(g.ra_dr2, g.dec_dr2)[0]
    fit = g.source_id.iloc[
        ::7
    ].to_numpy()  # stand-in training + validation ids (real ids of this file)
    has = np.arange(len(g)) % 3 != 0  # stand-in XP availability
    v, vflow = galah_validation_cuts(g, flow, exclude_ids=fit, has_xp=has, gaia=False)
    keep = (g.ebv_sfd < 0.2).to_numpy() & has & ~g.source_id.isin(fit).to_numpy()
    assert len(v) == keep.sum() and v.source_id.tolist() == g.source_id[keep].tolist()
    rows = vflow.set_index("cut")
    assert rows.loc["E(B-V) < 0.2 (SFD)", "removed"] == (g.ebv_sfd >= 0.2).sum()
    assert "not applied" in rows.loc["§2.1 Gaia cuts", "note"]
    assert rows.loc["flag_na_fe == 0 (ok_na) (a flag, not a cut)", "remaining"] == v.ok_na.sum()
    with pytest.raises(KeyError, match="ruwe"):  # the Gaia cuts need gaia_source columns
        galah_validation_cuts(g, flow, gaia=True)


def test_read_galah_names_a_missing_column(galah_raw, tmp_path):
    path, t = galah_raw
    Table.from_pandas(t[["sobject_id", "dr3_source_id", "teff"]].head(3)).write(tmp_path / "g.fits")
    with pytest.raises(MissingColumnError, match="logg"):
        read_galah(tmp_path / "g.fits")


def test_demo_galah_sample_takes_xp_from_the_embedded_set(galah_raw, vb21, demo_data, tmp_path):
    from spectra_ml.data.sources import ebv_sfd

    path, t = galah_raw
    meta, flux, _ = demo_data
    g, flow, notes = build_demo_galah(tmp_path, path, demo_data, [], vb21)
    q = quality(t)
    e = ebv_sfd(t.ra_dr2, t.dec_dr2)[0]
    keep = q & (e < 0.2) & t.dr3_source_id.isin(meta.source_id).to_numpy()
    assert len(g) == keep.sum() and set(g.source_id) == set(t.dr3_source_id[keep])
    row = meta.drop_duplicates("source_id").set_index("source_id").row
    np.testing.assert_array_equal(
        g[[f"flux_{i:03d}" for i in range(343)]].to_numpy(), flux[row[g.source_id]]
    )
    back = pd.read_parquet(tmp_path / "galah.parquet")
    assert len(back) == len(g) and (tmp_path / "cut_flow_galah.csv").exists()
    assert {"ebv_sfd", "gc_cluster", "ra", "bp_rp"} <= set(back) and "Gaia cuts" in notes[0]


def test_fig6_contours_and_members_on_real_galah(oracle_galah_predictions, vb21):
    g = oracle_galah_predictions
    bg = g.ok_na & g.ok_o & (g.fe_h < -0.5)
    H, xe, ye, lv = cl.density_levels(g.o_fe[bg], g.na_fe[bg], (0.3, 0.5, 0.9), bins=30)
    for f, level in zip((0.3, 0.5, 0.9), lv):  # each contour holds its fraction of the background
        assert H[H >= level].sum() / bg.sum() >= f > H[H > level].sum() / bg.sum()
    members = g.gc_cluster.notna().to_numpy()
    n_shown = int((members & g.ok_na & g.ok_o).sum())
    assert members.sum() == g.source_id.isin(vb21.source_id).sum() > 0
    fig = cl.plot_na_o(g, members)
    labels = [x.get_text() for x in fig.axes[0].get_legend().get_texts()]
    assert labels == [f"GC members ({n_shown})"] and len(fig.axes[0].collections) >= 2
    plt.close(fig)


def test_fig7_fig8_with_galah_al_as_oracle(oracle_galah_predictions):
    g = oracle_galah_predictions
    res = cl.na_al_split(g)
    m_na = g.ok_na & np.isfinite(g.na_fe) & np.isfinite(g.al_fe) & (g.fe_h < -0.5)
    a, b = np.polyfit(g.al_fe[m_na], g.na_fe[m_na], 1)  # Fig. 8 keeps flag_Na_fe == 0
    assert res["metal_poor"]["n"] == m_na.sum() > 100 and np.isclose(res["metal_poor"]["slope"], a)
    assert np.isclose(res["metal_poor"]["intercept"], b) and res["metal_poor"]["pearson_r"] > 0
    fig = cl.plot_al_vs_galah(g)
    meshes = [ax.collections[0] for ax in fig.axes[:6]]
    assert len({id(q.norm) for q in meshes}) == 1  # one colour scale for the six panels
    al = meshes[0].get_array()
    assert (
        np.nansum(al) == (g.ok_al & np.isfinite(g.al_fe)).sum()
    )  # the Al panel keeps flag_Al_fe == 0
    plt.close(fig)
    plt.close(cl.plot_na_split(g))


def test_galah_summary_without_nitrogen_names_the_full_profile(oracle_galah_predictions):
    out, figs, notes = cl.galah_figures(oracle_galah_predictions)
    assert (
        set(figs) == {"fig6_na_o.png", "fig7_al_vs_galah.png", "fig8_na_split.png"}
        and "incidence" not in out
    )
    assert out["paper"] == 30604 and out["n"] == len(oracle_galah_predictions)
    assert any("12.8%" in n and "full profile" in n for n in notes)
    for f in figs.values():
        plt.close(f)


def test_galah_incidence_wilson_intervals():
    sel = np.r_[np.ones(3, bool), np.zeros(17, bool), np.ones(1, bool), np.zeros(999, bool)]
    mem = np.r_[np.ones(20, bool), np.zeros(1000, bool)]
    r = cl.galah_incidence(sel, mem, relaxed=sel | (np.arange(1020) % 2 == 0))
    k, n, z = 3, 20, 1.0
    p = k / n
    centre = (p + z**2 / (2 * n)) / (1 + z**2 / n)
    half = z * np.sqrt(p * (1 - p) / n + z**2 / (4 * n**2)) / (1 + z**2 / n)
    m = r["selection"]["members"]
    assert (m["k"], m["n"]) == (3, 20) and np.isclose(m["fraction"], 0.15)
    assert np.isclose(m["lo"], centre - half) and np.isclose(m["hi"], centre + half)
    assert r["selection"]["field"]["k"] == 1 and r["paper"] == {"members": 0.128, "field": 0.00046}
    assert r["n_candidates_relaxed"] > r["n_candidates"] == 4


def test_galah_table_falls_back_to_the_real_rows(galah_raw, vb21, tmp_path):
    from spectra_ml.data.sources import ebv_sfd

    path, t = galah_raw
    g, notes = cl.galah_table(tmp_path / "galah_predictions", path, vb21)
    e = ebv_sfd(t.ra_dr2, t.dec_dr2)[0]
    assert len(g) == (quality(t) & (e < 0.2)).sum() and "no Gaia cuts" in notes[0]
    none, why = cl.galah_table(tmp_path / "missing", None)
    assert none is None and "skipped" in why[0]


def test_galah_selections_use_the_papers_sigma_and_the_relaxed_cut():
    """Hand-made prediction rows: the §3.2 cut with Kane §2.2's σ (sigma_alea_*) by default, and §3.3's relaxed
    μ[N/O] > 0.55, μ[Al/Fe] > −0.1 without σ terms."""
    df = pd.DataFrame(
        {
            "mu_n_o": [0.9, 0.6, 0.6, 0.3],
            "sigma_alea_n_o": 0.1,
            "sigma_n_o": [
                2.0,
                0.1,
                0.1,
                0.1,
            ],  # the total σ: the pass-to-pass spread makes row 0 fail
            "mu_al_fe": [0.3, 0.0, -0.2, 0.5],
            "sigma_alea_al_fe": 0.1,
            "sigma_al_fe": 0.1,
            "mu_teff": 4500.0,
            "mu_fe_h": -1.2,
            "na_fe": [0.5, 0.4, 0.0, 0.1],
            "o_fe": [0.0, 0.1, 0.3, 0.4],
            "fe_h": -1.2,
            "gc_cluster": pd.array(["NGC_5272_M_3", None, None, None], dtype="string"),
        }
    )
    sel, relaxed = cl.galah_selections(df)
    assert sel.tolist() == [True, False, False, False] and relaxed.tolist() == [
        True,
        True,
        False,
        False,
    ]
    assert cl.galah_selections(df, sigma="total")[0].tolist() == [False] * 4
    out, figs, notes = cl.galah_figures(df)
    inc = out["incidence"]
    assert inc["selection"]["members"]["fraction"] == 1.0 and inc["selection"]["field"]["k"] == 0
    assert inc["relaxed"]["field"]["k"] == 1 and inc["sigma"] == "alea"
    assert {
        "fig6_na_o.png",
        "fig6_na_o_relaxed.png",
        "fig7_al_vs_galah.png",
        "fig8_na_split.png",
    } == set(figs) and notes == []
    for f in figs.values():
        plt.close(f)


def test_full_profile_galah_build_with_gaia_and_xp(
    galah_raw, vb21, tmp_path, monkeypatch, standin_source
):
    """build_galah_sample's archive path, offline. The real GALAH rows stand in for the 588,571-row main catalogue
    (served through a mirror). gaia_source: their real DR2 position, parallax, G and RUWE, with SYNTHETIC
    bp_chi_squared = dof = 1 (no such column here). XP: the 4 real VOTable stars' coefficients given to the first
    4 GALAH ids (a SYNTHETIC pairing, plumbing only: no number from it is reported)."""
    from spectra_ml.data import sources
    from spectra_ml.kane.samples import build_galah_sample
    from spectra_ml.data.xp_files import read_xp

    path, t = galah_raw
    mirror = tmp_path / "mirror"
    (mirror / "galah").mkdir(parents=True)
    (mirror / "galah" / "GALAH_DR3_main_allstar_v2.fits").symlink_to(path)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(mirror))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    standin_source("galah_dr3")
    q = quality(t)
    first4 = t.dr3_source_id[q].to_numpy()[:4]
    xp = read_xp(path.parent.parent / "gaia_xp" / "xp_continuous_combined_weiler2023_examples.vot")
    xp["source_id"] = first4  # SYNTHETIC pairing
    gaia = pd.DataFrame(
        {
            "source_id": t.dr3_source_id,
            "ra": t.ra_dr2,
            "dec": t.dec_dr2,
            "parallax": t.parallax_dr2,
            "parallax_error": t.parallax_error_dr2,
            "ruwe": t.ruwe_dr2,
            "phot_g_mean_mag": t.phot_g_mean_mag,
            "bp_chi_squared": 1.0,  # SYNTHETIC
            "bp_degrees_of_freedom": 1.0,  # SYNTHETIC
        }
    )
    fit = first4[3:]  # one of them is a "training" star
    g, flow = build_galah_sample(
        tmp_path / "out",
        fit,
        lambda ids: xp,
        lambda ids: gaia[gaia.source_id.isin(ids)],
        False,
        None,
        vb21,
    )
    from spectra_ml.data.sources import ebv_sfd

    gq = t[q]
    gaia_ok = (
        (gq.phot_g_mean_mag < 16)
        & (gq.parallax_dr2 > 0)
        & (gq.parallax_dr2 / gq.parallax_error_dr2 > 3)
        & (gq.ruwe_dr2 < 1.4)
    ).to_numpy()
    ebv_ok = ebv_sfd(gq.ra_dr2, gq.dec_dr2)[0] < 0.2
    keep = gaia_ok & ebv_ok & np.isin(gq.dr3_source_id, first4[:3])
    assert set(g.source_id) == set(gq.dr3_source_id[keep]) and len(g) == keep.sum()
    assert np.isfinite(g[[f"xp_{i:03d}" for i in range(108)]].to_numpy()).all()
    rows = flow.set_index("cut")
    assert rows.loc["Gaia XP available (both bands)", "remaining"] == (gaia_ok & ebv_ok)[:4].sum()
    assert "note" not in flow  # every cut applied: none says "not applied"
    assert (tmp_path / "out" / "galah.parquet").exists()
