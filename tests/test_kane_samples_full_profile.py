"""Full-profile code paths on real-schema fixtures.

The full profile's [N/O]/[Al/Fe] network does not exist on this machine, so the 2P stage is driven by
a *perfect-predictor fixture*: real APOGEE DR17 allStar rows (95 Kepler giants) whose "predictions"
are the APOGEE values themselves, with the APOGEE errors as σ. It exercises the stage's full-profile
branch end to end; it measures nothing about any network.
"""

import json
import numpy as np
import pandas as pd
import papermill as pm
import pytest
from astropy.table import Table

from spectra_ml.core import KANE_LABELS, RunDir
from spectra_ml.pipeline import notebooks_dir, pick_kernel
from spectra_ml.data.samples import assign_split
from spectra_ml.kane.samples import apogee_n_o
from conftest import load_tool


def perfect_predictor_fixture(local_data) -> pd.DataFrame:
    t = Table.read(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    n_o, n_o_err = apogee_n_o(t["N_FE"], t["O_FE"], t["N_FE_ERR"], t["O_FE_ERR"])
    df = pd.DataFrame(
        {
            "source_id": np.asarray(t["GAIAEDR3_SOURCE_ID"], np.int64),
            "apogee_id": np.char.strip(np.asarray(t["APOGEE_ID"]).astype(str)),
            "teff": np.asarray(t["TEFF"], float),
            "logg": np.asarray(t["LOGG"], float),
            "fe_h": np.asarray(t["FE_H"], float),
            "n_o": n_o,
            "al_fe": np.asarray(t["AL_FE"], float),
            "teff_err": np.asarray(t["TEFF_ERR"], float),
            "logg_err": np.asarray(t["LOGG_ERR"], float),
            "fe_h_err": np.asarray(t["FE_H_ERR"], float),
            "n_o_err": n_o_err,
            "al_fe_err": np.asarray(t["AL_FE_ERR"], float),
        }
    )
    df["split"] = assign_split(
        df.source_id.to_numpy(), {"train": 0.5, "validation": 0.25, "test": 0.25}
    )
    for l in KANE_LABELS:
        df[f"mu_{l}"], df[f"sigma_{l}"] = df[l], df[f"{l}_err"]
    df["flag_bad_input"] = False
    return df


@pytest.mark.slow
def test_candidates_stage_full_profile_branch(local_data, tmp_path):
    run = RunDir(tmp_path / "full_fixture")
    df = perfect_predictor_fixture(local_data)
    for (
        l
    ) in KANE_LABELS:  # the fixture's σ (APOGEE's error) as Kane §2.2's σ; no pass-to-pass spread
        df[f"sigma_alea_{l}"], df[f"sigma_epi_{l}"] = df[f"sigma_{l}"], 0.0
    df.to_parquet(run.products / "predictions.parquet", index=False)
    samples = df.assign(
        parallax=np.nan, pmra=np.nan, pmdec=np.nan, radial_velocity=np.nan, ra=np.nan, dec=np.nan
    )
    samples.assign(gc_memberprob=np.nan).to_parquet(run.products / "samples.parquet", index=False)
    app = (
        run.products / "application_predictions"
    )  # the same real rows as a one-partition application sample
    app.mkdir()
    samples.assign(gc_memberprob=np.nan, ebv_sfd=0.1).to_parquet(
        app / "part-00000.parquet", index=False
    )
    (run.model / "config.json").write_text(
        json.dumps({"train_config": {"labels": list(KANE_LABELS)}})
    )
    pm.execute_notebook(
        str(notebooks_dir() / "13_tagging.ipynb"),
        str(tmp_path / "13.ipynb"),
        parameters={"run_dir": str(run.root), "k": None},
        kernel_name=pick_kernel(),
        progress_bar=False,
    )
    s = run.read_summary()["candidates"]
    assert s["selection"] == "kane_2p" and s["notes"] == [] and s["sigma"] == "alea"
    assert s["k_fit"]["n_used"] >= 3 and np.isfinite(s["k_fit"]["k"])
    c = s["confusion"]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == int((df.split == "test").sum())
    assert c["fp"] == 0  # a perfect predictor selects no false 2P star among Kepler field giants
    assert s["vs_paper"]["n_selected"]["paper"] == 103 and len(s["curve"]) > 5
    for f in (
        "fig3_no_alfe_plane",
        "fig4_sigma_no_vs_err",
        "fig5_confusion",
        "purity_completeness",
    ):
        assert (run.figures / f"{f}.png").exists()
    flags = pd.read_parquet(run.products / "candidate_flags.parquet")
    assert len(flags) == len(df) and s["application"]["n_rows"] == len(df)
    assert (run.products / "catalogue_appendix_a.fits").exists() and s["products"][
        "needs_full_profile"
    ] == []


def test_application_cuts_on_real_kepler_giants_standing_in_for_andrae(local_data):
    """Kane §2.3 cut logic on 95 real stars: the Montalban allStar rows stand in for the Andrae et al.
    catalogue (their APOGEE LOG g plays log g_XGBOOST: a named stand-in, not Andrae data), E(B-V) from the
    real SFD map at their real positions (the Kepler field, E(B-V) ~ 0.1-0.3: both sides of 0.2)."""
    from spectra_ml.kane.samples import application_cuts
    from spectra_ml.data.sources import ebv_sfd

    t = Table.read(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    cat = pd.DataFrame(
        {
            "source_id": np.asarray(t["GAIAEDR3_SOURCE_ID"], np.int64),
            "logg_xgboost": np.asarray(t["LOGG"], float),
            "ra": np.asarray(t["RA"], float),
            "dec": np.asarray(t["DEC"], float),
        }
    )
    cat = pd.concat(
        [cat, cat.iloc[:2]], ignore_index=True
    )  # two duplicated ids: reported as a cut, not merged silently
    ebv, how = ebv_sfd(cat.ra, cat.dec)
    training = cat.source_id.iloc[10:20].to_numpy()
    app, flow = application_cuts(cat, training, ebv, gaia=False, ebv_map=how)
    assert how in flow.cut.iloc[-2]  # the flow says which map gave E(B-V)
    removed = flow.removed.fillna(0).astype(int).tolist()
    assert flow.remaining.iloc[0] == 97 and removed[1] == 2 and removed[2] == 10
    assert (
        flow.remaining.iloc[-2] == len(app) == 97 - sum(removed)
    )  # no row lost without a line in the flow
    assert (
        (app.logg_xgboost < 3).all()
        and not app.source_id.isin(training).any()
        and app.source_id.is_unique
    )
    assert (app.flag_high_reliability == (app.ebv_sfd < 0.2)).all()
    assert 0 < app.flag_high_reliability.sum() < len(app)  # the Kepler field straddles E(B-V) = 0.2
    assert flow.remaining.iloc[-1] == app.flag_high_reliability.sum()
    with pytest.raises(KeyError, match="ruwe|parallax"):
        application_cuts(
            cat, training, ebv, gaia=True
        )  # the Gaia cuts need gaia_source columns: said, not skipped
    with pytest.raises(ValueError):
        application_cuts(cat, training, ebv[:-1], gaia=False)


def test_gaia_tap_loader_uploads_only_validated_ids(tmp_path, monkeypatch):
    """The TAP path: the ids travel only in the uploaded VOTable, never in the ADQL text; offline it stops clearly."""
    from astropy.table import Table as T
    from spectra_ml.data import sources

    seen = {}

    class Job:
        def get_results(self):
            return T({"SOURCE_ID": seen["ids"], "PARALLAX": np.ones(len(seen["ids"]))})

    def launch(query, upload_resource, upload_table_name):
        seen["query"] = query
        seen["ids"] = np.asarray(T.read(upload_resource, format="votable")["source_id"])
        assert upload_table_name == "ids"
        return Job()

    ids = [5853498713190525696, 4472832130942575872]
    df = sources.gaia_source_tap(ids, launch=launch)
    assert (
        seen["ids"].tolist() == ids
        and "5853498713190525696" not in seen["query"]
        and "tap_upload.ids" in seen["query"]
    )
    assert list(df.columns) == ["source_id", "parallax"]
    calls = []

    def launch_counted(query, upload_resource, upload_table_name):
        calls.append(1)
        return launch(query, upload_resource, upload_table_name)

    df2 = sources.gaia_source_tap(
        ids, launch=launch_counted, cache=tmp_path / "tap", chunk=1, progress=False
    )
    assert (
        len(calls) == 2 and df2.source_id.tolist() == ids
    )  # one uploaded table per chunk, in order
    sources.gaia_source_tap(
        ids, launch=launch_counted, cache=tmp_path / "tap", chunk=1, progress=False
    )
    assert len(calls) == 2  # resumed from the cached chunks
    with pytest.raises(ValueError):
        sources.gaia_source_tap(["1 OR 1=1"], launch=launch)
    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    with pytest.raises(sources.SourceUnavailable, match="gaia_dr3"):
        sources.gaia_source_tap(ids)
    xp_loader, _ = sources.gaia_archive_loaders(tmp_path)
    with pytest.raises(sources.SourceUnavailable, match="gaia_dr3"):
        xp_loader(ids)


def test_apogee_cut_flow_on_the_real_allstar_rows(local_data):
    """The cut-flow table shown in 05_samples for the 95 Montalban DR17 rows, cut by cut."""
    from spectra_ml.kane.samples import apogee_training_table, read_allstar

    t, f = apogee_training_table(
        read_allstar(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    )
    tab = f.table().set_index("cut")
    assert tab.remaining.iloc[0] == 95
    assert (
        tab.loc["ASPCAPFLAG STAR_BAD, TEFF_BAD, LOGG_BAD unset", "removed"] == 1
    )  # the one STAR_BAD row
    assert tab.loc["log g < 3", "removed"] == 12 and tab.loc["N_FE_ERR < 0.1", "removed"] == 6
    assert tab.removed.fillna(0).sum() == 95 - 76 and len(t) == 76 == tab.remaining.iloc[-1]
    assert int(t.truth_2p.sum()) == 0  # Kepler field giants: no 2P star by Kane's APOGEE criterion


def test_galah_sample_cut_flow_and_offline_stop(tmp_path, monkeypatch, standin_source):
    """Kane §3.3 GALAH selection on a HAND-MADE table in the DR3 main_allstar schema (no GALAH file is available
    here: this checks the cut logic, the reader and the flow, not GALAH data), served through a mirror."""
    from astropy.table import Table as T
    from spectra_ml.data import sources
    from spectra_ml.kane.samples import GALAH_COLUMNS, build_galah_sample, galah_sample

    n = 7
    cols = {c: np.zeros(n) for c in GALAH_COLUMNS}
    cols.update(
        {
            "sobject_id": np.arange(n),
            "dr3_source_id": np.array([11, 12, 12, 0, 15, 16, 17]),
            "teff": np.array([4800, 4800, 4800, 4800, 5600, 4800, 4800.0]),
            "logg": np.full(n, 2.5),
            "snr_c3_iraf": np.array([50, 50, 50, 50, 50, 10, 50.0]),
            "flag_sp": np.array([0, 0, 0, 0, 0, 0, 1]),
            "flag_na_fe": np.array([0, 1, 0, 0, 0, 0, 0]),
        }
    )
    g, flow = galah_sample(pd.DataFrame(cols))
    assert flow.remaining.tolist() == [
        7,
        6,
        5,
        4,
        4,
        3,
        3,
        2,
    ]  # id 0, duplicate 12, hot star, flag_sp, low S/N
    assert g.source_id.tolist() == [11, 12] and g.ok_na.tolist() == [True, False]
    mirror = tmp_path / "mirror" / "galah"
    mirror.mkdir(parents=True)
    T(cols).write(mirror / "GALAH_DR3_main_allstar_v2.fits")
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(tmp_path / "mirror"))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    standin_source("galah_dr3")  # a 7-row hand-made file, not the registered 588,571-row edition
    g2, flow2 = build_galah_sample(tmp_path / "out")
    assert (tmp_path / "out" / "galah.parquet").exists() and g2.source_id.tolist() == [11, 12]
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(tmp_path / "empty"))
    with pytest.raises(sources.SourceUnavailable, match="galah_dr3"):
        build_galah_sample(tmp_path / "out2")
    with pytest.raises(KeyError):
        galah_sample(pd.DataFrame(cols).drop(columns="flag_sp"))


def test_xp_feature_frame_on_real_coefficients(local_data):
    """Kane's features per sample row from real XP files: rows follow the sample, absent or one-band stars get NaN
    and has=False, a duplicated XP row is used once."""
    from spectra_ml.kane.samples import xp_feature_frame
    from spectra_ml.features import kane_coefficient_features
    from spectra_ml.data.xp_files import read_xp

    xp = read_xp(
        local_data / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    )  # star 1 has no BP
    xp2 = {k: np.concatenate([v, v[:1]]) for k, v in xp.items()}  # the first star twice
    ids = [int(xp["source_id"][2]), 12345, int(xp["source_id"][0]), int(xp["source_id"][1])]
    frame, has = xp_feature_frame(ids, xp2)
    feats = frame[[f"xp_{i:03d}" for i in range(108)]]
    assert len(frame) == 4 and has.tolist() == [True, False, True, False]
    # the raw coefficients ride along, row for row, for the other papers' inputs (NaN for the absent star)
    np.testing.assert_array_equal(
        np.asarray(frame.rp_coefficients[2]), xp["rp_coefficients"][0].astype(np.float32)
    )
    assert np.isnan(np.asarray(frame.rp_coefficients[1])).all()
    np.testing.assert_array_equal(
        feats.iloc[0].to_numpy(),
        kane_coefficient_features(xp["bp_coefficients"][2:3], xp["rp_coefficients"][2:3])[0],
    )
    np.testing.assert_array_equal(
        feats.iloc[2].to_numpy(),
        kane_coefficient_features(xp["bp_coefficients"][:1], xp["rp_coefficients"][:1])[0],
    )
    assert feats.iloc[[1, 3]].isna().all().all()


def test_build_application_writes_in_chunks_and_loses_no_row(local_data, tmp_path, monkeypatch):
    """build_application end to end, offline. The Montalban allStar rows stand in for the Andrae catalogue (APOGEE
    TEFF/LOGG/M_H as the *_xgboost columns: a named stand-in) and their real Gaia EDR3 astrometry and photometry
    for gaia_source; ruwe, bp_chi_squared and bp_degrees_of_freedom do not exist for them and are SYNTHETIC
    constants that pass the §2.1 cuts (plumbing only). These stars have no XP coefficients here, so one real XP row
    of the archive CSV is given, as SYNTHETIC, to the first star to exercise the feature path. The real SFD map
    and the real VB21 files are used."""
    from spectra_ml.data import sources
    from spectra_ml.kane.samples import build_application
    from spectra_ml.data.xp_files import read_xp

    t = Table.read(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    sid = np.asarray(t["GAIAEDR3_SOURCE_ID"], np.int64)
    andrae = Table(
        {
            "source_id": sid,
            "teff_xgboost": np.asarray(t["TEFF"], float),
            "logg_xgboost": np.asarray(t["LOGG"], float),
            "mh_xgboost": np.asarray(t["M_H"], float),
        }
    )
    mirror = tmp_path / "mirror"
    (mirror / "andrae2023").mkdir(parents=True)
    andrae.write(mirror / "andrae2023" / "table_2_catwise.fits.gz")
    (mirror / "vb21_members").symlink_to(local_data / "vb21_members")
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(mirror))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    g = pd.DataFrame(
        {
            "source_id": sid,
            "ra": np.asarray(t["RA"], float),
            "dec": np.asarray(t["DEC"], float),
            "parallax": np.asarray(t["GAIAEDR3_PARALLAX"], float),
            "parallax_error": np.asarray(t["GAIAEDR3_PARALLAX_ERROR"], float),
            "phot_g_mean_mag": np.asarray(t["GAIAEDR3_PHOT_G_MEAN_MAG"], float),
            "ruwe": 1.0,
            "bp_chi_squared": 1.0,
            "bp_degrees_of_freedom": 1.0,
        }
    )  # the last three: SYNTHETIC
    real = read_xp(local_data / "gaia_xp" / "XP_CONTINUOUS_RAW.csv")
    synthetic_xp = {k: v[:1] for k, v in real.items()}
    synthetic_xp["source_id"] = sid[:1]  # SYNTHETIC pairing
    calls = []

    def xp_loader(ids):
        calls.append(len(ids))
        return synthetic_xp

    training = sid[10:20]
    paths = {}
    for chunk in (7, 10_000):
        out = tmp_path / f"out{chunk}"
        paths[chunk], flow = build_application(
            out,
            training,
            gaia_loader=lambda ids: g[g.source_id.isin(ids)],
            xp_loader=xp_loader,
            allow_download=False,
            chunk_stars=chunk,
        )
    a, b = pd.read_parquet(paths[7]), pd.read_parquet(paths[10_000])
    pd.testing.assert_frame_equal(a, b)  # chunking changes nothing
    n = int(flow.remaining.iloc[-2])
    assert (
        30 < len(a) == n
        and a.source_id.is_monotonic_increasing
        and not a.source_id.isin(training).any()
    )
    assert sum(calls[:-1]) == n and max(calls[:-1]) <= 7  # XP asked chunk by chunk
    assert a.flag_no_xp.sum() == n - int(sid[0] in set(a.source_id))
    if sid[0] in set(a.source_id):
        assert np.isfinite(a.loc[a.source_id == sid[0], "xp_000"]).all()
    assert {"gc_cluster", "gc_memberprob", "ebv_sfd", "flag_high_reliability"} <= set(a.columns)


def _synthetic_mirror(tmp_path, monkeypatch, n_stars=400):
    """A small SYNTHETIC mirror (tests/builders/synthetic_mirror.py: made-up rows in the archives' formats) as
    $SPECTRA_ML_LOCAL_DATA. Plumbing only: no number from it is a result."""
    mod = load_tool("synthetic_mirror")
    root = mod.write_synthetic_mirror(tmp_path / "synthetic", n_stars=n_stars)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(root))
    monkeypatch.setenv("SPECTRA_ML_CACHE", str(tmp_path / "cache"))  # not the repository's cache
    return root, mod


def test_synthetic_mirror_is_verified_structurally_never_as_the_registered_file(
    local_data, tmp_path, monkeypatch
):
    from spectra_ml.data import sources

    real = sources.verify_source(
        sources.SOURCES["meszaros2015"], local_data / "clusters/meszaros2015_gc_szabolcs.dat"
    )
    assert real == "sha256"  # the real mirror's check is unchanged
    root, _ = _synthetic_mirror(tmp_path, monkeypatch)
    assert sources.synthetic_mirror() and not sources.synthetic_mirror(local_data)
    for name in ("apogee_allstar", "galah_dr3", "andrae2023_rgb", "vb21_members"):
        got = sources.verify_source(
            sources.SOURCES[name], sources.fetch(name, allow_download=False)
        )
        assert got.startswith("SYNTHETIC mirror (not the registered file)"), (name, got)
    # GALAH's registered 588,571 rows are not asked of the synthetic file, but rows > 0 and the columns are
    assert "columns" in sources.verify_source(
        sources.SOURCES["galah_dr3"], root / sources.SOURCES["galah_dr3"].mirror
    )
    # a synthetic copy of a hash-registered file never passes its hash silently
    f = root / sources.SOURCES["meszaros2015"].mirror
    f.parent.mkdir(exist_ok=True)
    f.write_text("# made up\n1 2\n")
    assert sources.verify_source(sources.SOURCES["meszaros2015"], f).startswith("SYNTHETIC")
    f.write_text("# no rows\n")
    with pytest.raises(sources.SourceMismatchError, match="no rows"):
        sources.verify_source(sources.SOURCES["meszaros2015"], f)


def test_mirror_gaia_loaders_read_the_bulk_layout(tmp_path, monkeypatch):
    from spectra_ml.data import sources

    root, mod = _synthetic_mirror(tmp_path, monkeypatch)
    stars = mod.synthetic_stars(400)  # the same seeded draw the files were cut from
    monkeypatch.setenv("SPECTRA_ML_CACHE", str(tmp_path / "cache"))
    xp_loader, gaia_loader = sources.gaia_archive_loaders()  # the mirror wins: no archive asked
    ids = np.r_[stars.source_id[stars.has_xp][:5], stars.source_id[~stars.has_xp][:2]]
    xp = xp_loader(ids)
    assert sorted(xp["source_id"]) == sorted(stars.source_id[stars.has_xp][:5])  # no XP: no row
    assert xp["bp_coefficients"].shape == (5, 55) and np.isfinite(xp["rp_coefficients"]).all()
    g = gaia_loader(ids)
    assert sorted(g.source_id) == sorted(ids) and set(sources.GAIA_SOURCE_COLUMNS) <= set(g)
    want = stars.set_index("source_id").loc[g.source_id, "parallax"].to_numpy()
    assert np.allclose(g.parallax, want, rtol=1e-8)  # the file's values, row for row
    # a partition that is not the one its _MD5SUM.txt lists is refused, naming the file
    part = sorted((root / "gaia_dr3" / "gaia_source").glob("GaiaSource_*.csv.gz"))[0]
    part.write_bytes(part.read_bytes()[:-10])
    with pytest.raises(sources.SourceMismatchError, match=part.name):
        gaia_loader(stars.source_id.to_numpy())
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(tmp_path))  # no gaia_dr3/ there
    assert sources.mirror_gaia_loaders() is None


def test_full_training_keeps_gaia_positions_beside_apogee_ones(tmp_path, monkeypatch):
    """allStar's RA/DEC and gaia_source's ra/dec used to collide in the merge (ra_x, ra_y): the
    §4 halo cut of the APOGEE comparison then had no ra/dec. Gaia's keep the plain names."""
    from spectra_ml.data import sources
    from spectra_ml.kane.samples import build_full_training

    root, mod = _synthetic_mirror(tmp_path, monkeypatch)
    monkeypatch.setenv("SPECTRA_ML_CACHE", str(tmp_path / "cache"))
    t, flow = build_full_training(tmp_path / "products", allow_download=False)
    stars = mod.synthetic_stars(400).set_index("source_id")
    assert {"ra", "dec", "ra_apogee", "dec_apogee", "parallax", "radial_velocity"} <= set(t)
    assert not {"ra_x", "ra_y"} & set(t)
    assert np.allclose(t.ra, stars.loc[t.source_id, "ra"], rtol=1e-9)
    assert flow.remaining.iloc[-1] == len(t) > 0 and t.split.notna().all()
    assert (t.ebv_sfd >= 0).all()  # SFD at the Gaia position: Kane Fig. 4 / B1-B4's E(B-V) row
