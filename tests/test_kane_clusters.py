"""The cluster stage's comparisons on the real reference catalogues.

The "predictions" here are the embedded library's own APOGEE DR17 labels (μ = APOGEE value, σ unused):
a perfect network. The numbers that come out are then properties of the catalogues and of the joins,
and can be checked against the data README and against the published cluster values."""

import numpy as np
import pandas as pd
import pytest

from spectra_ml.data import references as cat
from spectra_ml.kane import clusters as cl
from spectra_ml.kane.constants import GIANT_LOGG_MAX, GIANT_TEFF_MAX


@pytest.fixture(scope="module")
def apogee_as_predictions(demo_data):
    """Every star of the embedded library with its APOGEE labels as μ; one star in five in the test split."""
    meta = demo_data[0]
    pred = meta.assign(
        split=np.where(np.arange(len(meta)) % 5 == 0, "test", "train"),
        mu_teff=meta.teff,
        mu_logg=meta.logg,
        mu_fe_h=meta.fe_h,
    )
    return pred


def giants(pred):
    return pred[(pred.teff < GIANT_TEFF_MAX) & (pred.logg < GIANT_LOGG_MAX)]


def test_gc_members_against_harris(local_data, apogee_as_predictions):
    members = cat.read_vb21_members(local_data / "vb21_members" / "catalogues")
    harris = cat.read_harris_feh(local_data / "clusters" / "harris2010_mwgc.dat")
    res, table = cl.gc_feh_vs_harris(apogee_as_predictions, members, harris)
    # the data README: 198 library stars are VB21 members (p >= 0.5) in 31 clusters
    assert res["all"]["n_stars"] == 198 and res["all"]["n_clusters"] == 31 and len(table) == 31
    assert res["test"]["n_stars"] < res["all"]["n_stars"] and res["test"]["n_clusters"] <= 31
    ref = dict(zip(table.key, table.ref))
    assert ref["ngc1851"] == -1.18 and ref["ngc1904"] == -1.60  # Harris (2010) values
    assert table.n.sum() == 198 and (table["mean"].between(-2.5, 0)).all()
    # APOGEE's [Fe/H] of members agrees with Harris to ~0.1 dex, cluster by cluster and star by star
    assert abs(res["all"]["bias"]) < 0.1 and res["all"]["frac_within_0.2"] > 0.6
    assert abs(res["apogee_vs_harris_star_level"]["bias"]) < 0.1
    # at least two stars per cluster: fewer clusters, none with one member
    two, t2 = cl.gc_feh_vs_harris(apogee_as_predictions, members, harris, min_members=2)
    assert two["all"]["n_clusters"] < 31 and (t2.n >= 2).all()


def test_vb21_coverage_note(local_data):
    assert "not in the mirror" in cl.vb21_coverage(
        local_data / "vb21_members" / "catalogues", local_data
    )
    assert (
        cl.vb21_coverage(local_data / "vb21_members", None) == "VB21 Zenodo release, all clusters"
    )


def test_open_clusters_against_occam(local_data, apogee_as_predictions):
    path = local_data / "apogee" / "occam_member-DR17.fits"
    members, clusters = cat.read_occam(path)
    every, _ = cat.read_occam(path, 0.0)
    lib = apogee_as_predictions.apogee_id
    res, table = cl.oc_feh_vs_occam(giants(apogee_as_predictions), members, clusters, every, lib)
    flow = res["cut_flow"]
    assert (
        flow["occam_rows_in_embedded_library"] == 1883
        and flow["members_pm_rv_prob_in_library"] == 77
    )
    assert (
        flow["members_in_giant_sample"] == res["all"]["n_stars"] == 44
    )  # the dwarfs are not predicted
    assert res["all"]["n_clusters"] == len(table) == 24 and table.ref.notna().all()
    # the same survey's [Fe/H]: the library's member means agree with OCCAM's over all members
    assert res["all"]["frac_within_0.2"] == 1.0 and abs(res["all"]["bias"]) < 0.05
    assert "prob >= 0.5" in res["reference"] and "66 of 67" in res["aspgap_other_data"]


def test_meszaros_giants(local_data, apogee_as_predictions):
    mz = cat.read_meszaros2015(local_data / "clusters" / "meszaros2015_gc_szabolcs.dat")
    res, joined = cl.meszaros2015_comparison(apogee_as_predictions, mz)
    # the data README: 43 join the embedded set on APOGEE id, 20 with N, 42 with Al
    assert (res["n_joined"], res["n_with_n"], res["n_with_al"]) == (43, 20, 42) and len(
        joined
    ) == 43
    assert sum(res["pop_counts"].values()) == 43 and set(res["pop_counts"]) <= {1, 2, 4}
    # APOGEE DR17 against the DR12 values of Meszaros et al.: [Fe/H] close, Teff within ~200 K
    assert abs(res["[Fe/H]"]["bias"]) < 0.05 and res["[Fe/H]"]["frac_within_0.2"] > 0.9
    assert res["Teff"]["n"] == 43 and abs(res["Teff"]["bias"]) < 200
    crit = res["criterion_on_their_abundances"]
    assert (crit["tp"], crit["fp"], crit["fn"], crit["tn"]) == (48, 4, 22, 60)
    assert "network_population_check" not in res and "full profile" in res["note"]
    # with [N/O] and [Al/Fe] "predictions" the network's own 1P/2P check appears
    with_no = apogee_as_predictions.merge(
        cl.meszaros_as_predictions(mz).assign(apogee_id=mz.apogee_id)[
            [
                "apogee_id",
                "mu_n_o",
                "sigma_n_o",
                "sigma_alea_n_o",
                "mu_al_fe",
                "sigma_al_fe",
                "sigma_alea_al_fe",
            ]
        ],
        on="apogee_id",
        how="left",
    )
    r2, _ = cl.meszaros2015_comparison(with_no, mz)
    assert (
        r2["network_population_check"]["n"] == 43
        and r2["network_population_check"]["n_complete"] <= 20
    )


def test_omega_cen_giants(local_data, apogee_as_predictions):
    om = cat.read_omegacen_giants(local_data / "clusters" / "omegacen_giants_na_al.fits")
    r = cl.omega_cen_comparison(apogee_as_predictions, om, apogee_as_predictions.source_id)
    assert (r["n_giants"], r["n_in_embedded_library"], r["n_in_sample"]) == (180, 4, 4)
    assert r["fe_h"]["n"] == 4 and r["fe_h"]["frac_within_0.1"] == 1.0  # APOGEE vs the ω Cen study
    none = cl.omega_cen_comparison(
        apogee_as_predictions.iloc[:0], om, apogee_as_predictions.source_id
    )
    assert none["n_in_sample"] == 0 and none["fe_h"] is None


def test_cluster_references_found_in_the_mirror(local_data, monkeypatch):
    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    notes = []
    refs = cl.cluster_references(notes)
    assert list(refs) == list(cl.CLUSTER_REFERENCES) and notes == []
    assert refs["harris2010"].name == "harris2010_mwgc.dat" and refs["vb21_members"].is_dir()


def test_full_profile_notes():
    assert cl.full_profile_notes(("teff", "logg", "fe_h", "n_o", "al_fe")) == []
    (note,) = cl.full_profile_notes(("teff", "logg", "fe_h", "alpha_m"))
    assert "full profile" in note and "9.82%" in note


def test_cluster_feh_agreement_splits():
    stars = pd.DataFrame(
        {
            "key": ["a", "a", "b", "b", "c"],
            "split": ["test", "train", "test", "train", "test"],
            "mu_fe_h": [-1.0, -1.2, -0.4, -0.6, 0.0],
        }
    )
    ref = pd.DataFrame({"key": ["a", "b"], "feh": [-1.0, -0.6]})
    res, table = cl.cluster_feh_agreement(stars, ref, "key", "feh")
    assert res["all"]["n_stars"] == 5 and res["all"]["n_clusters"] == 2  # c has no reference
    assert np.isclose(res["all"]["bias"], 0.0) and np.isclose(res["test"]["bias"], 0.1)
    assert np.isclose(table.set_index("key").loc["a", "mean"], -1.1) and table.ref.isna().sum() == 1
