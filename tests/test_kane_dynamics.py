"""Dynamics: frame round trips, known values, the BK23 boundary, vectorisation, and real clusters."""

import numpy as np
import pandas as pd
import pytest
import astropy.units as u
from astropy.coordinates import SkyCoord

from spectra_ml.data import references as cat
from spectra_ml.kane import dynamics as dyn
from spectra_ml.kane.constants import BK23_ENERGY_SHIFT, GALCEN_V_SUN_KMS


def test_frame_is_pinned_not_defaulted():
    f = dyn.galactocentric_frame()
    assert f.galcen_distance == 8.122 * u.kpc and f.z_sun == 20.8 * u.pc
    assert np.allclose(f.galcen_v_sun.xyz.to_value(u.km / u.s), GALCEN_V_SUN_KMS)


def test_frame_round_trip():
    rng = np.random.default_rng(1)
    n = 200
    ra, dec = rng.uniform(0, 360, n), np.degrees(np.arcsin(rng.uniform(-1, 1, n)))
    d, pmra, pmdec, rv = (
        rng.uniform(0.1, 30, n),
        rng.normal(0, 5, n),
        rng.normal(0, 5, n),
        rng.normal(0, 100, n),
    )
    g = dyn.to_galactocentric(ra, dec, d, pmra, pmdec, rv)
    back = SkyCoord(
        x=g.x.values * u.kpc,
        y=g.y.values * u.kpc,
        z=g.z.values * u.kpc,
        v_x=g.vx.values * u.km / u.s,
        v_y=g.vy.values * u.km / u.s,
        v_z=g.vz.values * u.km / u.s,
        frame=dyn.galactocentric_frame(),
    ).icrs
    np.testing.assert_allclose(back.distance.to_value(u.kpc), d, rtol=1e-9)
    np.testing.assert_allclose(back.radial_velocity.to_value(u.km / u.s), rv, atol=1e-6)
    np.testing.assert_allclose(back.pm_dec.to_value(u.mas / u.yr), pmdec, atol=1e-8)
    # cylindrical/spherical pieces are consistent with the Cartesian ones
    np.testing.assert_allclose(
        g.v_R**2 + g.v_phi**2 + g.v_z**2, g.vx**2 + g.vy**2 + g.vz**2, rtol=1e-9
    )
    np.testing.assert_allclose(
        g.v_r**2 + g.v_theta**2 + g.v_phi**2, g.vx**2 + g.vy**2 + g.vz**2, rtol=1e-9
    )
    np.testing.assert_allclose(g.Lz, g.R * g.v_phi, rtol=1e-9)


def test_sun_and_halo_cut_sign_convention():
    sun = dyn.to_galactocentric([0.0], [0.0], [1e-9], [0.0], [0.0], [0.0]).iloc[0]
    assert abs(sun.v_phi - 245.6) < 0.01  # the Sun rotates prograde: v_phi > 0
    assert not dyn.halo_mask([sun.v_phi])[0]
    # a star at rest in the Galactocentric frame (v_phi = 0) and a counter-rotating one are halo
    assert dyn.halo_mask([0.0, -200.0, 159.9]).all() and not dyn.halo_mask([160.0, np.nan]).any()


def test_parallax_guard():
    d, flag = dyn.distance_from_parallax([1.0, 0.1, -0.2, 2.0], [0.1, 0.05, 0.1, np.nan])
    assert d[0] == 1.0 and np.isclose(d[1], 10) and np.isnan(d[2])
    assert flag.tolist() == [False, True, True, True]


def test_bk23_boundary_pieces_and_edges():
    b = lambda lz: dyn.bk23_boundary(lz, shift=0.0)
    assert (
        b(-2.0) == -1.316 and np.isclose(b(0.0), -1.416) and np.isclose(b(2.0), -1.341 + 0.075 * 4)
    )
    assert np.isclose(b(-0.58), -1.416 + 0.3 * 0.58**2) and np.isclose(
        b(0.58), -1.416 + 0.3 * 0.58**2
    )
    assert np.isclose(b(0.5801), -1.341 + 0.075 * 0.5801**2)
    assert np.isclose(dyn.bk23_boundary(0.0) - b(0.0), BK23_ENERGY_SHIFT)
    # exactly on the line counts as accreted (in situ is strictly below)
    e_line = dyn.bk23_boundary(1.0) * 1e5
    assert dyn.classify_bk23([e_line - 1, e_line, np.nan], [1e3, 1e3, 1e3]).tolist() == [
        "in-situ",
        "accreted",
        "",
    ]


def test_circular_orbit_lz_and_energy_vectorised_vs_loop():
    pot = dyn.mw_potential()
    vc = float(pot.circular_velocity([8.0, 0, 0] * u.kpc).to_value(u.km / u.s)[0])
    circ = pd.DataFrame({"x": [-8.0], "y": [0.0], "z": [0.0], "vx": [0.0], "vy": [vc], "vz": [0.0]})
    assert 200 < vc < 260
    rng = np.random.default_rng(2)
    g = dyn.to_galactocentric(
        rng.uniform(0, 360, 100),
        rng.uniform(-80, 80, 100),
        rng.uniform(0.5, 20, 100),
        rng.normal(0, 3, 100),
        rng.normal(0, 3, 100),
        rng.normal(0, 80, 100),
    )
    e_vec = dyn.orbital_energy(g, pot)
    e_loop = np.array(
        [
            float(pot.energy([r.x, r.y, r.z] * u.kpc).to_value(dyn.KMS2)[0])
            + 0.5 * (r.vx**2 + r.vy**2 + r.vz**2)
            for r in g.itertuples()
        ]
    )
    np.testing.assert_allclose(e_vec, e_loop, rtol=1e-12)
    orb = dyn.integrate_orbits(circ, pot, t_gyr=1.0)
    assert (
        abs(orb.peri[0] - 8) < 0.01
        and abs(orb.apo[0] - 8) < 0.01
        and not orb.flag_orbit_artefact[0]
    )


@pytest.fixture(scope="module")
def gc_table():
    """galpy's 161 real GCs through `gc_dynamics` (frame, energy, BK23 class, 5 Gyr orbits), once."""
    return dyn.gc_dynamics(cat.load_galpy_gcs())


def test_real_globular_clusters_bk23_and_orbits(gc_table):
    g = gc_table
    assert len(g) == 161 and list(g.columns[:7]) == [
        "name",
        "ra",
        "dec",
        "distance",
        "pmra",
        "pmdec",
        "vlos",
    ]
    cls = dict(zip(g.name, g.bk23))
    # disc/bulge clusters are in situ; NGC 3201 (retrograde) and Pal 3 (distant halo) are accreted
    for name in ("NGC104", "NGC6121", "NGC6752", "NGC6397"):
        assert cls[name] == "in-situ", name
    for name in ("NGC3201", "Pal3", "NGC2419"):
        assert cls[name] == "accreted", name
    sel = g[g.name.isin(["NGC104", "NGC3201", "NGC6752", "Pal5", "NGC5139"])]
    assert not sel.flag_orbit_artefact.any() and (sel.energy_drift < 1e-6).all()
    assert (sel.n_turning_points >= 2).all()  # real orbits turn around, repeatedly, in 5 Gyr
    counts = dyn.bk23_counts(g)
    assert counts["n"] == 161 and counts["n_in_situ"] + counts["n_accreted"] == 161
    assert counts["n_orbit_flagged"] == 0 and 80 < counts["n_in_situ"] < 130


def test_gc_orbits_agree_with_vb21(local_data, gc_table):
    vb = cat.read_vb21_orbits(local_data / "clusters" / "vb21_gaiatools_result_orbits.txt")
    s, m = dyn.gc_vs_vb21(gc_table, vb)
    assert s["n_galpy"] == 161 and s["n_matched"] == len(m) >= 150
    # L_z hardly depends on the potential: VB21's J_phi is -L_z in our prograde-positive convention
    assert s["median_abs_diff_Lz"] < 15 and s["frac_Lz_within_5pct_or_50"] > 0.85
    assert s["lz_sign_agreement"] > 0.95 and np.allclose(m.vb21_Lz, -m.vb21_Jphi)
    # the radii differ by the potential (McMillan17 vs MWP v1), but not by much
    assert s["median_abs_rel_diff_apo"] < 0.05 and s["median_abs_rel_diff_peri"] < 0.1
    out = {r["name"] for r in s["outliers"]}
    big = (m.d_peri.abs() > 0.3) | (m.d_apo.abs() > 0.3)
    assert out == set(m.name[big]) and 0 < len(out) < 0.2 * len(m)
    strict, _ = dyn.gc_vs_vb21(gc_table, vb, outlier_frac=0.1)
    assert len(strict["outliers"]) > len(out)


def test_sagittarius_members_are_accreted(local_data):
    sgr, info = cat.load_sgr_members(local_data / "apogee" / "apogee_dr16_sgr_members.fits")
    s, table = dyn.sgr_dynamics(sgr, info)
    assert s["n"] == 400 and s["accreted_fraction"] > 0.95 and s["distance_kpc"] == 26.67
    assert s["note"] == info["note"] and set(table.bk23) <= {"accreted", "in-situ"}
    assert (table.E < 0).mean() > 0.95  # bound to the Galaxy, but above the BK23 boundary
    groups = dyn.elz_groups(dyn.gc_dynamics(cat.load_galpy_gcs().iloc[:3], t_gyr=0.1), table)
    assert len(groups["Sgr members (APOGEE DR16)"][0]) == 400


def test_gala_vs_galpy_on_the_real_clusters(gc_table):
    r = dyn.gala_vs_galpy(gc_table)
    assert r["n"] == 161 and r["max_abs_rel_diff"] < 1e-6 and r["max_abs_diff_kms2"] < 1.0
    assert -7e4 < r["zero_point_offset_kms2"] < -6e4  # the constant offset of the two codes' bulge


def test_dynamics_summary_keys(gc_table):
    s = dyn.dynamics_summary(
        "v1", gc_table, None, {"n": 161}, None, [dyn.full_profile_note("demo")]
    )
    assert list(s) == ["frame", "potential", "gc", "gc_vs_vb21", "gala_vs_galpy", "sgr", "notes"]
    assert s["gc"] == dyn.bk23_counts(gc_table) and s["frame"]["galcen_distance_kpc"] == 8.122
    assert "full profile" in s["notes"][0] and "'demo'" in s["notes"][0]
    # on the full profile the note names only what did not run, from the data, never "full profile only"
    assert dyn.full_profile_note("full", {}) == ""
    note = dyn.full_profile_note("full", {"Fig. 9": "no halo rows"})
    assert "full profile" not in note and "Fig. 9: no halo rows" in note
    assert dyn.dynamics_summary("v1", gc_table, None, {}, None, ["", "x"])["notes"] == ["x"]
    groups = dyn.elz_groups(gc_table)
    assert sum(len(e) for e, _, _ in groups.values()) == 161


def test_gala_matches_galpy_on_the_same_potential():
    import gala.potential as gp
    from galpy.potential import MWPotential2014, evaluatePotentials

    pts = np.array([[8.0, 0.0], [2.0, 0.5], [20.0, 10.0], [0.5, 0.1], [50.0, -30.0]])
    ga = (
        gp.BovyMWPotential2014()
        .energy(np.vstack([pts[:, 0], 0 * pts[:, 0], pts[:, 1]]) * u.kpc)
        .to_value(dyn.KMS2)
    )
    gp_ = (
        np.array([evaluatePotentials(MWPotential2014, R / 8.0, z / 8.0) for R, z in pts]) * 220.0**2
    )
    # equal up to the zero point, which no orbit sees
    np.testing.assert_allclose(ga - ga[0], gp_ - gp_[0], atol=0.05)


def test_binned_fraction_and_groups():
    t = dyn.binned_fraction(
        np.r_[np.full(90, 0.5), np.full(10, 1.5)],
        np.r_[np.zeros(81), np.ones(9), np.ones(10)],
        [0, 1, 2],
    )
    assert (
        np.isclose(t.fraction[0], 0.1)
        and t.fraction_lo[0] < 0.1 < t.fraction_hi[0]
        and t.fraction[1] == 1
    )
    df = pd.DataFrame(
        {
            "mu_al_fe": [0.3, -0.3, 0.3, 0.0, 0.3],
            "mu_fe_h": [-1.2, -1.2, -1.0, -1.2, -1.2],
            "mu_teff": [4500, 4500, 4500, 4500, 5100],
            "v_phi": [0, 0, 0, 0, 0],
        }
    )
    assert dyn.chemo_dynamical_groups(df).tolist() == ["in-situ", "accreted", "", "", ""]
    ks = dyn.ks_energy_tests(
        np.random.default_rng(0).normal(size=500),
        {
            "same": np.random.default_rng(1).normal(size=500),
            "shifted": np.random.default_rng(2).normal(1, 1, 500),
        },
    )
    assert ks["same"]["pvalue"] > 0.01 and ks["shifted"]["pvalue"] < 1e-10


def test_science_figures_draw_on_real_clusters(tmp_path):
    """Figs 9-12 machinery on the real GC table (the field-star versions need the full profile)."""
    import matplotlib.pyplot as plt
    from astropy.coordinates import SkyCoord

    gcs = cat.load_galpy_gcs()
    g = pd.concat(
        [gcs, dyn.to_galactocentric(gcs.ra, gcs.dec, gcs.distance, gcs.pmra, gcs.pmdec, gcs.vlos)],
        axis=1,
    )
    g["E"] = dyn.orbital_energy(g)
    acc = dyn.classify_bk23(g.E, g.Lz) == "accreted"
    gal = SkyCoord(ra=g.ra.values * u.deg, dec=g.dec.values * u.deg).galactic
    t = dyn.binned_fraction(g.r, acc, [0, 2, 5, 10, 20, 50, 200])
    assert t.n.sum() == len(g) and t.k.sum() == acc.sum()
    # the accreted fraction of GCs grows outwards (a real, known property)
    assert t.fraction.iloc[0] < t.fraction.iloc[-2]
    for f in (
        dyn.plot_sky(
            gal.l.deg[acc], gal.b.deg[acc], background=(gal.l.deg, gal.b.deg), label="accreted GCs"
        ),
        dyn.plot_fraction({"accreted GCs": t}, "r [kpc]"),
        dyn.plot_elz({"GCs": (g.E, g.Lz, {})}, contours={"all GCs": (g.E, g.Lz)}),
    ):
        f.savefig(tmp_path / "x.png")
        plt.close(f)
