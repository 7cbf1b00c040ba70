"""XP file input on the real archive files: the compiled CSV parser, the readers, Parquet ingest."""

import gzip
import shutil

import numpy as np
import pytest

from spectra_ml import xp_io as xp
from spectra_ml.core import DataError


@pytest.fixture
def xp_files(local_data):
    return local_data / "gaia_xp"


def test_every_real_format_reads_to_the_same_layout(xp_files):
    for name, n, corr in [
        ("XP_CONTINUOUS_RAW.csv", 2, True),
        ("XP_CONTINUOUS_RAW_with_missing_BP.csv", 3, True),
        ("xp_continuous_combined_weiler2023_examples.vot", 4, True),
        ("xp_continuous_combined_chunk0.fits", 2000, False),
    ]:
        d = xp.read_xp(xp_files / name)
        assert (
            len(d["source_id"]) == n
            and d["bp_coefficients"].shape == (n, 55) == d["rp_coefficient_errors"].shape
        )
        assert d["bp_coefficients"].dtype == np.float32
        assert ("bp_coefficient_correlations" in d) == corr
    d = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    assert d["flag_missing_bp"].tolist() == [False, True, False] and not d["flag_missing_rp"].any()
    assert np.isnan(d["bp_coefficients"][1]).all() and d["bp_n_relevant_bases"][1] == -1
    with pytest.raises(DataError, match="unknown XP format"):
        xp.read_xp(xp_files.parent / "clusters" / "harris2010_mwgc.dat")


def test_csv_number_parser_against_python_float(tmp_path):
    """The compiled CSV parser on SYNTHETIC numbers (a pure unit test): 55 × 400 random doubles over 60
    decades, written as repr (shortest round trip), %.17g, %.6e and %.3f, with signs, against Python's
    float(). Arrays are float32: equal to float32(float(s)) up to 1 float32 ulp (double rounding); the
    float64 scalar column within 1 double ulp."""
    rng = np.random.default_rng(7)
    vals = rng.standard_normal(55 * 400) * 10.0 ** rng.integers(-30, 30, 55 * 400)
    fmts = [
        lambda v: repr(float(v)),
        lambda v: "%.17g" % v,
        lambda v: "%.6e" % v,
        lambda v: "%.3f" % v,
    ]
    strs = [fmts[i % 4](v) for i, v in enumerate(vals)]
    rows = [f'{i + 1},"({", ".join(strs[55 * i : 55 * i + 55])})",{strs[i]},' for i in range(400)]
    f = tmp_path / "synthetic_numbers.csv"
    f.write_text(
        "source_id,bp_coefficients,bp_standard_deviation,rp_coefficients\n" + "\n".join(rows) + "\n"
    )
    d = next(xp.read_xp_csv_chunks(f, with_errors=False, with_correlations=True))
    ref = np.array([float(s) for s in strs])
    got = d["bp_coefficients"].ravel()
    assert np.all(np.abs(got.view(np.int32) - ref.astype(np.float32).view(np.int32)) <= 1)
    sd_ref = ref[:400]
    assert np.all(np.abs(d["bp_standard_deviation"] - sd_ref) <= 2.3e-16 * np.abs(sd_ref))
    assert (
        d["flag_missing_rp"].all() and not d["flag_missing_bp"].any()
    )  # empty RP: flagged, nothing dropped


def test_truncated_csv_download_keeps_every_row_and_flags_the_cut_one(xp_files, tmp_path):
    """A partial download (the real archive CSV cut in the middle of its last row's BP correlations) reads
    without a crash: the complete rows are exact, the cut row is kept with its vectors flagged."""
    raw = (xp_files / "XP_CONTINUOUS_RAW.csv").read_bytes()
    full = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW.csv")
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    cut = last + (len(raw) - last) // 3  # inside the last row, in its BP correlations
    f = tmp_path / "partial.csv"
    f.write_bytes(raw[:cut])
    d = xp.read_xp(f)
    assert d["source_id"].tolist() == full["source_id"].tolist()
    np.testing.assert_array_equal(d["bp_coefficients"][0], full["bp_coefficients"][0])
    assert d["flag_missing_rp"][-1] and np.isnan(d["rp_coefficients"][-1]).all()  # RP never arrived
    assert np.isnan(
        d["bp_coefficient_correlations"][-1]
    ).all()  # its BP correlations were cut short


def test_csv_reader_is_safe_from_several_threads(xp_files):
    """Threaded callers (a threaded Dask worker) share numba's thread pool: the reader serialises its kernel."""
    from concurrent.futures import ThreadPoolExecutor

    ref = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    with ThreadPoolExecutor(4) as pool:
        outs = list(
            pool.map(
                lambda _: xp.read_xp(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv"), range(12)
            )
        )
    for d in outs:
        np.testing.assert_array_equal(
            d["rp_coefficient_correlations"], ref["rp_coefficient_correlations"]
        )


def test_gz_and_plain_files_give_the_same_line_blocks(xp_files, tmp_path):
    """The two block sources (memory map, ISA-L inflate) cut the real file at line ends into the same bytes."""
    raw = (xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv").read_bytes()
    start = raw.index(b"\n") + 1
    gz = tmp_path / "x.csv.gz"
    gz.write_bytes(gzip.compress(raw))
    plain = [
        bytes(b)
        for b in xp._csv_line_blocks(
            xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv", start, 4096
        )
    ]
    packed = [bytes(b) for b in xp._csv_line_blocks(gz, start, 4096)]
    assert b"".join(plain) == b"".join(packed) == raw[start:]
    assert (
        len(plain) == 3
    )  # each row is longer than a block: a block is stretched, never cut mid-line
    assert all(b.endswith(b"\n") for b in plain + packed)
    a = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    b = xp.read_xp(gz)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_small_blocks_and_chunks_give_the_whole_file(xp_files):
    """Rows regrouped across blocks and chunks: the same arrays as one pass, in the file's order."""
    f = xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    whole = xp.read_xp(f)
    parts = list(xp.read_xp_csv_chunks(f, chunk_rows=2, with_correlations=None, block_bytes=20_000))
    assert [len(p["source_id"]) for p in parts] == [2, 1]
    d = xp._concat(parts)
    for k in whole:
        np.testing.assert_array_equal(d[k], whole[k])


def test_layout_refuses_a_csv_that_is_not_xp(tmp_path):
    f = tmp_path / "not_xp.csv"
    f.write_text("source_id,ra,dec\n1,2,3\n")
    with pytest.raises(KeyError, match="not an XP continuous CSV"):
        next(xp.read_xp_csv_chunks(f))


def test_ingest_to_parquet_round_trip(xp_files, tmp_path):
    """Real archive CSV -> Parquet partitions -> the reader's dictionary, row selection by source_id."""
    f = shutil.copy(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv", tmp_path / "xp.csv")
    files = xp.ingest_xp_csv(f, tmp_path / "parts", rows_per_partition=2)
    assert [p.name for p in files] == ["xp-00000.parquet", "xp-00001.parquet"]
    assert not list((tmp_path / "parts").glob("*.tmp"))  # atomic writes leave no temporary file
    ref = next(xp.read_xp_csv_chunks(f))
    back = xp.read_xp_parquet(files)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k])
    one = xp.read_xp_parquet(files, ids=ref["source_id"][[2]])
    assert one["source_id"].tolist() == [ref["source_id"][2]]
    np.testing.assert_array_equal(
        xp.coefficients_from_parquet(files[0], "rp"), ref["rp_coefficients"][:2]
    )
    with pytest.raises(DataError, match="no XP Parquet partitions"):
        xp.read_xp_parquet([])


def test_fits_columns_become_gaiaxpy_input(xp_files):
    from astropy.table import Table

    t = Table.read(xp_files / "xp_continuous_combined_chunk0.fits")[:5]
    g = xp.gaiaxpy_input_from_columns(t)
    assert g.bp_coefficients.iloc[3].tolist() == [float(t[f"bp_coeff_{i}"][3]) for i in range(55)]
    assert len(g.rp_coefficient_correlations.iloc[0]) == 1485 and (g.rp_n_parameters == 55).all()
    with pytest.raises(KeyError, match="missing RP"):
        xp.gaiaxpy_input_from_columns(t[[c for c in t.colnames if not c.startswith("rp_")]])
