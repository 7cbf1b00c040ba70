"""The selection stage as library functions: Kane's 2P selection and the AspGap alpha stand-in."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
from test_kane_samples_full_profile import perfect_predictor_fixture

from spectra_ml.core import ParameterError
from spectra_ml.kane.samples import apogee_n_o, select_giants
from spectra_ml.data.samples import assign_split
from spectra_ml.kane.tagging import (
    alpha_figures,
    alpha_standin,
    alpha_threshold_scan,
    alpha_valley,
    catalogue_passes,
    fit_error_slope,
    kane_2p_tagging,
    kane_figures,
    select_2p,
)


@pytest.fixture
def alpha_predictions(demo_data):
    """Real APOGEE [alpha/M] and [Fe/H] of the selected demo giants with a perfect 'predictor' (μ = APOGEE)."""
    meta = demo_data[0]
    keep, _ = select_giants(meta, ["teff", "logg", "fe_h", "alpha_m"])
    d = meta[keep].reset_index(drop=True)[["source_id", "fe_h", "alpha_m"]]
    d["split"] = assign_split(d.source_id.to_numpy())
    d["mu_fe_h"], d["mu_alpha_m"] = d.fe_h, d.alpha_m
    return d


def test_alpha_standin_on_real_apogee(alpha_predictions):
    r = alpha_standin(alpha_predictions, "test")
    s = r["summary"]
    tr = alpha_predictions[alpha_predictions.split == "train"]
    assert s["alpha_threshold"] == alpha_valley(
        tr.alpha_m, tr.fe_h
    )  # the line is the training one's
    assert s["selection"] == "aspgap_alpha_standin" and s["n_test_in_range"] > 1000
    for c in ("low", "high"):  # μ = truth: every class exact
        assert s["precision_recall"][c]["precision"] == 1 == s["precision_recall"][c]["recall"]
    assert s["confusion_high"]["fp"] == 0 == s["confusion_high"]["fn"]
    assert len(r["train"]) == len(tr) and (r["high"].split == "test").all()
    assert (r["high"].alpha_m > s["alpha_threshold"]).all()
    figs = alpha_figures(r)
    assert list(figs) == [
        "alpha_plane_train.png",
        "alpha_confusion.png",
        "alpha_purity_completeness.png",
    ]
    for f in figs.values():
        plt.close(f)


def test_threshold_scan_is_exact_at_the_line_and_degrades_away(alpha_predictions):
    a = alpha_predictions.alpha_m.to_numpy()
    scan = alpha_threshold_scan(a > 0.12, a, 0.12)
    assert len(scan) == 17 and np.isclose(scan.mu_alpha_threshold.iloc[8], 0.12)
    at = scan.iloc[8]
    assert at.fp == 0 and at.fn == 0
    assert (
        scan.completeness.is_monotonic_decreasing and scan.iloc[0].fp > 0 and scan.iloc[-1].fn > 0
    )


def test_kane_2p_on_real_allstar_rows(local_data):
    """The perfect-predictor fixture (95 real Kepler giants, μ = APOGEE): k fitted on validation when
    k=None, no false positives, and the catalogue rows are exactly the selected rows of the split."""
    df = perfect_predictor_fixture(local_data)
    for l in ("n_o", "al_fe"):  # the fixture's σ is the APOGEE error: here as the paper's σ
        df[f"sigma_alea_{l}"] = df[f"sigma_{l}"]
    r = kane_2p_tagging(df, "test", k=None)
    s = r["summary"]
    assert s["k_used"] == s["k_fit"]["k"] and s["k_fit"]["n_used"] >= 3
    c = s["confusion"]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == int((df.split == "test").sum()) and c["fp"] == 0
    assert len(r["curve"]) == len(s["curve"]) > 5
    sel = select_2p(df, k=s["k_used"]).selected & (df.split == "test")
    pd.testing.assert_frame_equal(r["selected"], df[sel])
    assert s["sigma"] == "alea" and s["k_fit"]["method"] == "drop_highest"
    fixed = kane_2p_tagging(df, "test", k=0.19)["summary"]
    assert fixed["k_used"] == 0.19 and "purity" in fixed["kane_published"]
    with pytest.raises(ParameterError, match="n_o_err"):
        kane_2p_tagging(df.drop(columns="n_o_err"), "test", k=None)
    with pytest.raises(
        ParameterError, match="sigma_alea_n_o"
    ):  # no silent fall-back to the total σ
        kane_2p_tagging(df.drop(columns="sigma_alea_n_o"), "test", k=None)


def test_catalogue_passes_keep_every_pass(quick_run):
    """The saved model re-run on five catalogue stars: every pass kept, reproducible under the seed."""
    import json

    root, _ = quick_run
    sample = pd.read_parquet(root / "products" / "samples.parquet")
    labels = json.loads((root / "model" / "config.json").read_text())["train_config"]["labels"]
    ids = sample.source_id.to_numpy()[[10, 3, 7, 100, 42]]
    p = catalogue_passes(root / "model", sample, ids, labels, n_passes=6, seed=1)
    assert len(p) == 6 * 5 * len(labels) and p["pass"].nunique() == 6
    assert p.source_id.iloc[: len(labels)].tolist() == [ids[0]] * len(labels)  # the given order
    assert np.isfinite(p.mu).all() and (p["var"] > 0).all()
    again = catalogue_passes(root / "model", sample, ids, labels, n_passes=6, seed=1)
    pd.testing.assert_frame_equal(p, again)
    other = catalogue_passes(root / "model", sample, ids, labels, n_passes=6, seed=2)
    assert not np.array_equal(p.mu.to_numpy(), other.mu.to_numpy())


# --- Kane §3.1-§3.3 on real APOGEE DR17 halo giants, with APOGEE's own values as oracle predictions ---

HALO_GIANTS = "apogee/Apogee_data_filtered_1612.fits"


def _col(t, c):
    return np.asarray(t[c], float)


@pytest.fixture
def oracle_halo_giants(local_data):
    """The 1,612 real APOGEE DR17 halo giants as an *oracle*: mu_<l> = APOGEE's value, sigma_alea_<l> =
    APOGEE's error (sigma_<l>, the 'total', = six times that), every row kept (bad flags -> NaN abundances, as a
    flagged row). It measures nothing about a network; it checks the selection logic on real abundances."""
    from astropy.table import Table

    t = Table.read(local_data / HALO_GIANTS)
    clean = np.ones(len(t), bool)
    for e in ("n_fe", "o_fe", "al_fe"):
        clean &= np.asarray(t[f"{e}_flag"]) == 0
    nan = np.where(clean, 1.0, np.nan)
    n_o = (_col(t, "n_fe") - _col(t, "o_fe")) * nan
    n_o_err = np.hypot(_col(t, "n_fe_err"), _col(t, "o_fe_err")) * nan
    d = pd.DataFrame(
        {
            "source_id": np.asarray(t["dr3_source_id"], np.int64),
            "ra": _col(t, "ra"),
            "dec": _col(t, "dec"),
            "teff": _col(t, "teff"),
            "logg": _col(t, "logg"),
            "fe_h": _col(t, "fe_h"),
            "n_o": n_o,
            "n_o_err": n_o_err,
            "al_fe": _col(t, "al_fe") * nan,
            "al_fe_err": _col(t, "al_fe_err") * nan,
        }
    )
    d["split"] = assign_split(d.source_id.to_numpy())
    for l, e in (
        ("teff", "teff_err"),
        ("logg", "logg_err"),
        ("fe_h", "fe_h_err"),
        ("n_o", "n_o_err"),
        ("al_fe", "al_fe_err"),
    ):
        err = _col(t, e) if e in t.colnames else d[e].to_numpy()
        d[f"mu_{l}"], d[f"sigma_alea_{l}"] = d[l], err
        d[f"sigma_epi_{l}"] = np.sqrt(35.0) * err
        d[f"sigma_{l}"] = 6.0 * err  # total² = alea² + epi²
    d["flag_bad_input"] = False
    return d, t, clean


def test_truth_and_selection_counts_on_real_halo_giants(oracle_halo_giants):
    """Counts from the library against counts computed here with plain numpy from the FITS columns."""
    from spectra_ml.kane.samples import apogee_2p_truth

    d, t, clean = oracle_halo_giants
    assert len(d) == 1612 and clean.sum() == 1186  # the data README
    n = _col(t, "n_fe") - _col(t, "o_fe")
    err = np.sqrt(_col(t, "n_fe_err") ** 2 + _col(t, "o_fe_err") ** 2)
    al, al_err = _col(t, "al_fe"), _col(t, "al_fe_err")
    assert ((n > 0.55) & (al > -0.1) & clean).sum() == 20  # the README's 20 2P-like stars
    truth_np = clean & (n - err > 0.55) & (al > -0.1)
    truth = apogee_2p_truth(d.n_o, d.n_o_err, d.al_fe)
    assert (truth == truth_np).all() and 0 < truth.sum() < 20  # the error term removes some
    cuts = (_col(t, "teff") < 5000) & (_col(t, "fe_h") > -2)
    sel_np = clean & (n - 0.19 * err > 0.65) & (al - al_err > 0) & cuts
    s = select_2p(d)
    assert (s.selected.to_numpy() == sel_np).all() and sel_np.sum() > 0
    assert (s.flag_incomplete.to_numpy() == ~clean).all()  # rows in = rows out, flagged
    tot_np = clean & (n - 0.19 * 6 * err > 0.65) & (al - 6 * al_err > 0) & cuts
    assert (select_2p(d, sigma="total").selected.to_numpy() == tot_np).all()
    assert tot_np.sum() < sel_np.sum()  # the larger total σ selects fewer: the σ kind matters


def test_kane_confusion_and_k_fit_on_real_halo_giants(oracle_halo_giants):
    d, _, _ = oracle_halo_giants
    r = kane_2p_tagging(d, "test", k=None)
    s = r["summary"]
    te = (d.split == "test").to_numpy()
    n_o, err, al = d.n_o.to_numpy(), d.n_o_err.to_numpy(), d.al_fe.to_numpy()
    with np.errstate(invalid="ignore"):
        truth = (n_o - err > 0.55) & (al > -0.1)
        cuts = (d.teff.to_numpy() < 5000) & (d.fe_h.to_numpy() > -2)
        sel = (n_o - s["k_used"] * err > 0.65) & (al - d.al_fe_err.to_numpy() > 0) & cuts
    c = s["confusion"]
    assert (c["tp"], c["fp"], c["fn"]) == tuple(
        int(x.sum()) for x in (te & truth & sel, te & ~truth & sel, te & truth & ~sel)
    )
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == te.sum()
    v = s["vs_paper"]
    assert v["n_selected"] == {"value": c["tp"] + c["fp"], "paper": 103}
    assert v["false_positives"]["paper"] == 7 and v["n_not_2p"]["paper"] == 39468
    assert v["false_negative_rate"]["paper"] == 0.72
    # σ = the APOGEE error exactly, so the Fig. 4 line is err = 1·σ + 0 (fitted on validation only)
    assert np.isclose(s["k_fit"]["k"], 1.0) and abs(s["k_fit"]["intercept"]) < 1e-9
    val = (d.split == "validation") & d.n_o_err.notna()
    assert s["k_fit"]["n_used"] == val.sum() - 1 and s["k_fit"]["paper"] == {
        "k": 0.19,
        "intercept": 0.013,
    }
    assert s["k_used"] == s["k_fit"]["k"] and s["k_fit_split"] == "validation"
    assert (r["selected"].split == "test").all() and len(r["selected"]) == c["tp"] + c["fp"]
    figs = kane_figures(r)
    assert set(figs) == {
        "fig3_no_alfe_plane.png",
        "fig4_sigma_no_vs_err.png",
        "fig5_confusion.png",
        "purity_completeness.png",
    }
    for f in figs.values():
        plt.close(f)


def test_k_fit_leaves_out_exactly_the_highest_sigma_star():
    """Kane §3.2: least squares with the single highest-σ star removed (hand-made points, known line)."""
    x = np.array([0.10, 0.15, 0.20, 0.30, 0.40, 0.50, 0.90])
    y = 0.19 * x + 0.013
    y_out = y.copy()
    y_out[-1] = 1.0  # an outlier at the highest σ: left out, the line is exact
    f = fit_error_slope(x, y_out)
    assert (
        np.isclose(f["k"], 0.19) and np.isclose(f["intercept"], 0.013) and f["dropped_sigma"] == 0.9
    )
    y_mid = y.copy()
    y_mid[2] = 1.0  # an outlier elsewhere is kept: the paper drops one star, the highest-σ one
    g = fit_error_slope(x, y_mid)
    assert g["n_used"] == 6 and g["n_rejected"] == 1 and not np.isclose(g["k"], 0.19)
    k_np, c_np = np.polyfit(x[:-1], y_mid[:-1], 1)
    assert np.isclose(g["k"], k_np) and np.isclose(g["intercept"], c_np)
    assert np.isclose(
        fit_error_slope(x, y_mid, method="clip")["k"], 0.19
    )  # the old fit, still reachable
    with pytest.raises(ParameterError, match="drop_highest"):
        fit_error_slope(x, y, method="median")


def test_gc_incidence_against_hand_wilson_values():
    from spectra_ml.kane.tagging import gc_incidence

    sel = np.r_[np.ones(3), np.zeros(17), np.ones(1), np.zeros(399), np.ones(4)].astype(bool)
    mem = np.r_[np.ones(20), np.zeros(404)].astype(bool)
    field = np.r_[np.zeros(20), np.ones(400), np.zeros(4)].astype(
        bool
    )  # 4 selected stars without 6D
    r = gc_incidence(sel, mem, field, paper=(0.315, 0.0043))
    m, f = r["members"], r["field"]
    assert (m["k"], m["n"], f["k"], f["n"]) == (3, 20, 1, 400) and r["n_neither"] == 4
    # Wilson (z = 1) by hand: 3/20 -> (0.15 + 1/40)/(1.05) ± sqrt(0.15·0.85/20 + 1/1600)/1.05
    lo, hi = (
        (0.175 - np.sqrt(0.006375 + 0.000625)) / 1.05,
        (0.175 + np.sqrt(0.006375 + 0.000625)) / 1.05,
    )
    assert np.isclose(m["lo"], lo) and np.isclose(m["hi"], hi) and np.isclose(m["fraction"], 0.15)
    assert np.isclose(r["ratio"], 0.15 / 0.0025) and m["paper"] == 0.315 and f["paper"] == 0.0043
    both = gc_incidence(sel, mem, np.ones(424, bool))  # a member is never a field star
    assert both["field"]["n"] == 404 and both["members"]["n"] == 20


def _kepler_oracle(local_data):
    """The 95 real Kepler giants (full DR17 allStar rows with Gaia EDR3 astrometry and APOGEE RVs) as
    oracle application predictions: real 6D ([Fe/H] −1.6…−0.55, α-rich: thick disc and halo)."""
    from astropy.table import Table

    t = Table.read(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    n_o, err = apogee_n_o(t["N_FE"], t["O_FE"], t["N_FE_ERR"], t["O_FE_ERR"])
    d = pd.DataFrame(
        {
            "source_id": np.asarray(t["GAIAEDR3_SOURCE_ID"], np.int64),
            "ra": _col(t, "RA"),
            "dec": _col(t, "DEC"),
            "parallax": _col(t, "GAIAEDR3_PARALLAX"),
            "pmra": _col(t, "GAIAEDR3_PMRA"),
            "pmdec": _col(t, "GAIAEDR3_PMDEC"),
            "radial_velocity": _col(t, "VHELIO_AVG"),
            "mu_teff": _col(t, "TEFF"),
            "mu_logg": _col(t, "LOGG"),
            "mu_fe_h": _col(t, "FE_H"),
            "mu_n_o": n_o,
            "mu_al_fe": _col(t, "AL_FE"),
        }
    )
    for l, e in (
        ("teff", err * 0 + 50.0),
        ("logg", err * 0 + 0.1),
        ("fe_h", _col(t, "FE_H_ERR")),
        ("n_o", err),
        ("al_fe", _col(t, "AL_FE_ERR")),
    ):
        d[f"sigma_alea_{l}"], d[f"sigma_epi_{l}"], d[f"sigma_{l}"] = e, 0.0 * e, e
    d["ebv_sfd"] = np.linspace(0.05, 0.4, len(d))  # a named stand-in column: both sides of 0.2
    d["flag_high_reliability"] = d.ebv_sfd < 0.2
    d["gc_cluster"], d["gc_memberprob"] = pd.array([None] * len(d), "string"), np.nan
    return d


def test_halo_vphi_on_real_kepler_giants(local_data):
    """v_φ against an independent astropy computation (its v4.0 frame defaults, cylindrical v_φ)."""
    import astropy.units as u
    from astropy.coordinates import Galactocentric, SkyCoord, galactocentric_frame_defaults

    from spectra_ml.kane.tagging import halo_vphi

    d = _kepler_oracle(local_data)
    h = halo_vphi(d)
    ok = d.parallax.to_numpy() > 0
    assert (h.has_6d.to_numpy() == ok).all() and ok.sum() > 80
    with galactocentric_frame_defaults.set("v4.0"):
        g = SkyCoord(
            ra=d.ra.to_numpy()[ok] * u.deg,
            dec=d.dec.to_numpy()[ok] * u.deg,
            distance=(1 / d.parallax.to_numpy()[ok]) * u.kpc,
            pm_ra_cosdec=d.pmra.to_numpy()[ok] * u.mas / u.yr,
            pm_dec=d.pmdec.to_numpy()[ok] * u.mas / u.yr,
            radial_velocity=d.radial_velocity.to_numpy()[ok] * u.km / u.s,
        ).transform_to(Galactocentric())
    cyl = g.represent_as(
        "cylindrical", "cylindrical"
    )  # d_phi is positive counter-clockwise seen from +z
    vphi_ref = -(cyl.differentials["s"].d_phi * cyl.rho).to_value(
        u.km / u.s, u.dimensionless_angles()
    )
    assert np.allclose(h.v_phi.to_numpy()[ok], vphi_ref, atol=1e-6)
    assert (h.halo.to_numpy()[ok] == (vphi_ref < 160)).all() and not h.halo.to_numpy()[~ok].any()
    # Montalbán et al. (2021) chose metal-poor, α-rich giants: thick disc and halo, both present
    assert 0.2 * ok.sum() < h.halo.sum() < 0.8 * ok.sum()


def test_application_candidates_stream_every_row(local_data, tmp_path):
    """Partitions of real rows: candidate_flags has every input row in order, candidates only the
    selected rows with all their columns, counts beside the paper's; members from the real VB21 join."""
    from spectra_ml.kane.tagging import application_candidates, halo_vphi

    d = _kepler_oracle(local_data)
    d.loc[:4, "gc_memberprob"], d.loc[:4, "gc_cluster"] = (
        0.9,
        "NGC_6791_standin",
    )  # named stand-in members
    d.loc[0:1, "mu_n_o"] = 1.2  # two hand-raised [N/O] values so that the selection picks real rows
    d.loc[10:12, "mu_n_o"] = 1.2
    parts = tmp_path / "application_predictions"
    parts.mkdir()
    for i, lo in enumerate(range(0, len(d), 40)):
        d.iloc[lo : lo + 40].to_parquet(parts / f"part-{i:05d}.parquet", index=False)
    s = application_candidates(parts, tmp_path, sigma="alea")
    flags = pd.read_parquet(tmp_path / "candidate_flags.parquet")
    assert list(flags) == ["source_id", "flag_2p_candidate", "flag_incomplete"]
    assert flags.source_id.tolist() == d.source_id.tolist() and s["n_partitions"] == 3
    sel_np = select_2p(d).selected.to_numpy()
    assert (flags.flag_2p_candidate.to_numpy() == sel_np).all() and sel_np.sum() >= 2
    cand = pd.read_parquet(tmp_path / "candidates.parquet")
    assert cand.source_id.tolist() == d.source_id[sel_np].tolist() and "radial_velocity" in cand
    assert s["n_candidates"] == sel_np.sum() and s["n_application"]["paper"] == 6878665
    hr = d.flag_high_reliability.to_numpy()
    assert s["n_candidates_high_reliability"] == (sel_np & hr).sum()
    halo = halo_vphi(d).halo.to_numpy() & d.gc_memberprob.isna().to_numpy()
    assert s["n_halo_candidates_not_gc"] == {"value": int((sel_np & halo).sum()), "paper": 1432}
    inc = s["incidence_network"]
    assert inc["members"]["n"] == 5 and inc["members"]["k"] == int(sel_np[:5].sum())
    assert inc["field"]["n"] == halo.sum() and inc["members"]["paper"] == 0.0982


def test_apogee_truth_incidence_on_real_halo_giants(oracle_halo_giants, local_data):
    """(b) on the real halo giants joined to the real VB21 member files; the file's own halo selection
    (ecc ≥ 0.85) stands in for the v_φ cut (it has no proper motions or RVs): a named stand-in."""
    from spectra_ml.data.references import read_vb21_members
    from spectra_ml.kane.samples import vb21_membership
    from spectra_ml.kane.tagging import apogee_truth_incidence

    d, _, _ = oracle_halo_giants
    d = vb21_membership(d, read_vb21_members(local_data / "vb21_members" / "catalogues"))
    r = apogee_truth_incidence(d, halo=np.ones(len(d), bool))
    # Kane's "training and validation data" is the whole APOGEE x XP cross-match (§2.1: 80% trained on, 20%
    # withheld = our test split), so every split counts, the test split included
    tv = d.split.notna().to_numpy()
    assert (d.split == "test").any() and r["splits"] == ["train", "validation", "test"]
    with np.errstate(invalid="ignore"):
        truth = (d.n_o - d.n_o_err > 0.55).to_numpy() & (d.al_fe > -0.1).to_numpy()
    mem = (d.gc_memberprob >= 0.5).to_numpy()
    assert r["n_true_2p"] == {"value": int((truth & tv).sum()), "paper": 1755}
    assert r["members"]["n"] == (mem & tv).sum() and r["field"]["n"] == (~mem & tv).sum()
    assert r["field"]["k"] == (truth & ~mem & tv).sum() and r["field"]["paper"] == 0.0043
    with pytest.raises(
        KeyError, match="radial_velocity"
    ):  # without the stand-in it needs 6D columns
        apogee_truth_incidence(d)
