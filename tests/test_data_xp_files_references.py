"""Independent references from the local data mirror (CI: ../shared/data)."""

import numpy as np
import pytest
from astropy.table import Table

from spectra_ml.features import check_features, sampled_spectra
from spectra_ml.data.xp_files import gaiaxpy_input_from_columns


def test_embedded_flux_matches_gaiaxpy_on_real_coefficients(local_data, demo_data):
    """GaiaXPy's own calibration of the archive coefficients reproduces the embedded sampled flux."""
    meta, flux, _ = demo_data
    xp = Table.read(local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits")
    common = np.isin(np.asarray(xp["source_id"]), meta["source_id"].to_numpy())
    assert common.sum() >= 2
    sid, wl, ref, _ = sampled_spectra(gaiaxpy_input_from_columns(xp[common]))
    assert len(wl) == flux.shape[1]
    for s, r in zip(sid, ref):
        i = np.flatnonzero(meta["source_id"].to_numpy() == s)[0]
        ours = flux[i] * meta["medflux"].iloc[i]
        # the data README: flux x medflux matches GaiaXPy calibrate to 0.08%
        assert np.median(np.abs(ours / r - 1)) < 2e-3


def test_archive_csv_with_a_missing_band_is_flagged_not_dropped(local_data):
    sid, wl, f, e = sampled_spectra(
        local_data / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    )
    assert len(sid) == 3  # every row comes out
    _, ok = check_features(f, n_features=343)
    assert ok.tolist() == [True, False, True]  # the star without BP is flagged
    assert np.isfinite(f[1][wl > 700]).all()  # its RP half is still there


def test_xp_csv_ingest_matches_a_slow_reference_parser(local_data, tmp_path):
    """The vectorised ingest against Python's csv + literal_eval on the real archive CSVs, also gzipped."""
    import ast, csv, gzip, shutil
    from spectra_ml.data.xp_files import coefficients_from_parquet, ingest_xp_csv
    import pyarrow.parquet as pq

    src = local_data / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    gz = tmp_path / "XpContinuousMeanSpectrum_000000-000001.csv.gz"
    with open(src, "rb") as f, gzip.open(gz, "wb") as g:
        shutil.copyfileobj(f, g)
    files = ingest_xp_csv(gz, tmp_path / "parts", rows_per_partition=2)
    assert [f.name for f in files] == [
        "XpContinuousMeanSpectrum_000000-000001-00000.parquet",
        "XpContinuousMeanSpectrum_000000-000001-00001.parquet",
    ]
    ids = np.concatenate(
        [pq.read_table(f, columns=["source_id"]).column(0).to_numpy() for f in files]
    )
    got = {b: np.vstack([coefficients_from_parquet(f, b) for f in files]) for b in ("bp", "rp")}
    flags = np.concatenate(
        [pq.read_table(f, columns=["flag_missing_bp"]).column(0).to_numpy() for f in files]
    )
    rows = list(csv.DictReader(open(src)))
    assert ids.tolist() == [int(r["source_id"]) for r in rows]
    for i, r in enumerate(rows):
        for b in ("bp", "rp"):
            if r[f"{b}_coefficients"]:
                ref = np.array(
                    ast.literal_eval(r[f"{b}_coefficients"].replace("(", "[").replace(")", "]")),
                    np.float32,
                )
                np.testing.assert_array_equal(got[b][i], ref)
            else:
                assert np.isnan(got[b][i]).all() and flags[i] == (b == "bp")
    assert flags.tolist() == [False, True, False]


def test_xp_csv_ingest_refuses_a_non_xp_file(tmp_path):
    from spectra_ml.data.xp_files import ingest_xp_csv

    f = tmp_path / "x.csv"
    f.write_text("source_id,ra\n1,2\n")
    with pytest.raises(KeyError, match="not an XP continuous CSV"):
        ingest_xp_csv(f, tmp_path / "o")
