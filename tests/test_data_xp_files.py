"""XP file input on the real archive files: the compiled CSV parser, the readers, Parquet ingest."""

import gzip
import shutil

import numpy as np
import pytest

from spectra_ml.data import xp_files as xp
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
        assert (
            not d["flag_parse"].any() and (d["parse_problem"] == "").all()
        )  # real files read clean
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


# --- a field the reader could not read completely is flagged per row, never read


def _real_last_row(xp_files):
    raw = (xp_files / "XP_CONTINUOUS_RAW.csv").read_bytes()
    last = raw.rstrip(b"\n").rfind(b"\n") + 1
    return raw, last


def test_a_row_cut_inside_its_55th_rp_coefficient_is_flagged_not_read_as_zero(xp_files, tmp_path):
    """The issue's case: the real archive CSV cut inside the last RP coefficient ('0.0' of '0.0347...')."""
    raw, last = _real_last_row(xp_files)
    full = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW.csv")
    row = raw[last:]
    names = raw[: raw.index(b"\n")].decode().split(",")
    fields = next(__import__("csv").reader([row.decode()]))
    text = fields[names.index("rp_coefficients")]
    start = row.index(text.encode())
    c55 = start + text.rindex(", ") + 2  # the 55th coefficient begins here
    assert float(text[text.rindex(", ") + 2 : -1]) != 0  # a real, non-zero last coefficient
    f = tmp_path / "cut55.csv"
    f.write_bytes(raw[: last + c55 + 2])  # '0.' or the first two characters of the 55th number
    with pytest.warns(UserWarning, match="1 row.* could not be read completely"):
        d = xp.read_xp(f)
    assert len(d["source_id"]) == 2 and d["flag_parse"].tolist() == [False, True]
    assert d["source_id"][1] == full["source_id"][1]  # the id was complete
    assert np.isnan(d["rp_coefficients"][1]).all() and d["flag_missing_rp"][1]  # never a 0.0
    np.testing.assert_array_equal(
        d["bp_coefficients"][1], full["bp_coefficients"][1]
    )  # BP is whole
    assert d["parse_problem"][1].startswith("rp_coefficients cut short")
    assert "the row ends before rp_coefficient_errors" in d["parse_problem"][1]
    for k in full:  # the complete first row is untouched
        np.testing.assert_array_equal(d[k][0], full[k][0])


def test_every_cut_of_a_real_row_is_flagged_and_no_value_is_wrong(xp_files):
    """536 cuts of the real last row (every byte of its first 60 and last 80, 400 at random), parsed as
    rows of one block: a row is flagged exactly when it lost a field the reader keeps, and every value
    of a cut row is either the full row's value or NaN / -1 (never a shortened number)."""
    raw, last = _real_last_row(xp_files)
    full = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW.csv")
    row = raw[last:].rstrip(b"\n")
    layout = xp._csv_layout(raw[: raw.index(b"\n") + 1], "XP_CONTINUOUS_RAW.csv", True, None)
    rng = np.random.default_rng(1)
    cuts = np.unique(
        np.r_[
            np.arange(1, 60), rng.integers(1, len(row), 400), np.arange(len(row) - 80, len(row) + 1)
        ]
    )
    d = xp._parse_csv_block(b"\n".join(row[:c] for c in cuts) + b"\n", layout)
    assert len(d["source_id"]) == len(cuts)  # rows in = rows out
    # up to its last comma a cut row lacks the unused last field (rp_relative_shrinking) or more
    np.testing.assert_array_equal(d["flag_parse"], cuts <= row.rfind(b","))
    assert (d["parse_problem"] != "").tolist() == d["flag_parse"].tolist()
    for k, v in d.items():
        if k.startswith("flag_") or k == "parse_problem":
            continue
        ref = full[k][1]
        for j in range(len(cuts)):
            same = np.array_equal(v[j], ref, equal_nan=True)
            blank = np.isnan(v[j]).all() if v.dtype.kind == "f" else v[j] == -1
            assert same or blank, (k, int(cuts[j]))
    whole = cuts == len(row)
    assert not d["flag_parse"][whole].any() and not d["flag_missing_rp"][whole].any()


def test_float_zero_and_overlong_source_ids_are_flagged(xp_files, tmp_path):
    """`5.853498713190526e+18` used to be read as 5. A float, zero, negative, overlong or empty id is
    -1 and flagged with the text it had; the row's spectra are still read."""
    raw = (xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv").read_bytes()
    full = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    head, *rows = raw.rstrip(b"\n").split(b"\n")
    sid = [r.split(b",", 1)[0] for r in rows]
    bad = [b"%.15e" % int(sid[0]), b"0", b"-" + sid[2], b"9" * 20, b"", b"5405570973190252288x"]
    body = [b + r[len(s) :] for b, r, s in zip(bad, rows * 2, sid * 2)]
    f = tmp_path / "ids.csv"
    f.write_bytes(head + b"\n" + b"\n".join(body) + b"\n")
    with pytest.warns(UserWarning, match="6 row"):
        d = xp.read_xp(f)
    assert d["source_id"].tolist() == [-1] * 6 and d["flag_parse"].all()
    p = d["parse_problem"]
    assert (
        p[0]
        == f"source_id not a positive integer ({bad[0].decode()!r}, a float: the id lost its last digits)"
    )
    assert p[1].startswith("source_id out of range") and p[3].startswith("source_id out of range")
    assert p[2] == f"source_id not a positive integer ('-{sid[2].decode()}')"
    assert p[4] == "source_id missing ('')"
    assert p[5] == "source_id not a positive integer ('5405570973190252288x')"
    for k in ("bp_coefficients", "rp_coefficients", "rp_coefficient_correlations"):
        np.testing.assert_array_equal(d[k], np.concatenate([full[k], full[k]]))
    assert 5 not in d["source_id"]


def test_a_malformed_number_inside_a_vector_keeps_the_next_fields_in_place(xp_files, tmp_path):
    """A word inside the real BP vector: BP is NaN and flagged, and the fields after it (RP, the counts)
    are read from their own columns, not from the rest of the broken vector."""
    raw = (xp_files / "XP_CONTINUOUS_RAW.csv").read_bytes()
    full = xp.read_xp(xp_files / "XP_CONTINUOUS_RAW.csv")
    i = raw.index(b'"(', raw.index(b"\n")) + 2
    j = raw.index(b",", i)
    f = tmp_path / "word.csv"
    f.write_bytes(raw[:i] + b"1.2.3" + raw[j:])  # the first BP coefficient of the first row
    with pytest.warns(UserWarning):
        d = xp.read_xp(f)
    assert d["flag_parse"].tolist() == [True, False] and d["flag_missing_bp"].tolist() == [
        True,
        False,
    ]
    assert d["parse_problem"][0] == "bp_coefficients holds something that is not a number"
    assert np.isnan(d["bp_coefficients"][0]).all()
    for k in (
        "rp_coefficients",
        "bp_coefficient_errors",
        "bp_n_relevant_bases",
        "rp_standard_deviation",
    ):
        np.testing.assert_array_equal(d[k], full[k])


@pytest.mark.parametrize("kind", ["csv.gz", "fits", "fits_header", "vot", "parquet", "empty_csv"])
def test_truncated_files_raise_data_error_naming_the_file(xp_files, tmp_path, kind):
    """A cut .gz, FITS or VOTable (a partial download), a corrupt Parquet partition and an empty CSV are
    DataError naming the file and the fix, never a reshape error or a traceback from the parser."""
    from spectra_ml.core import SpectraMLError

    src = {
        "csv.gz": "XP_CONTINUOUS_RAW.csv",
        "fits": "xp_continuous_combined_chunk0.fits",
        "fits_header": "xp_continuous_combined_chunk0.fits",
        "vot": "xp_continuous_combined_weiler2023_examples.vot",
    }
    f = tmp_path / f"cut.{kind.split('_')[0]}"
    if kind == "csv.gz":
        data = gzip.compress((xp_files / src[kind]).read_bytes())
        f.write_bytes(data[: len(data) // 2])
    elif kind == "fits_header":
        f.write_bytes(
            (xp_files / src[kind]).read_bytes()[: 2880 + 1000]
        )  # inside the table's header
    elif kind in src:
        data = (xp_files / src[kind]).read_bytes()
        f.write_bytes(data[: len(data) * 3 // 4])
    elif kind == "parquet":
        parts = xp.ingest_xp_csv(xp_files / "XP_CONTINUOUS_RAW.csv", tmp_path / "parts")
        data = parts[0].read_bytes()
        parts[0].write_bytes(data[: len(data) // 2])
        f = parts[0]
    else:
        f = tmp_path / "empty.csv"
        f.write_bytes(b"")
    with pytest.raises(DataError, match=f"{f.name}.*(download it again|again)") as e:
        xp.read_xp_parquet([f]) if kind == "parquet" else xp.read_xp(f)
    assert isinstance(e.value, SpectraMLError) and "\n" not in str(e.value)  # one line from the CLI


def test_a_missing_file_or_an_empty_folder_is_a_clear_error(xp_files, tmp_path):
    from spectra_ml.core import MissingInputError

    with pytest.raises(MissingInputError, match="nope.csv does not exist"):
        xp.read_xp(tmp_path / "nope.csv")
    with pytest.raises(MissingInputError, match="holds no XP continuous files"):
        xp.xp_files(tmp_path)
    with pytest.raises(MissingInputError, match="read_xp_files"):
        xp.read_xp(tmp_path)
    d = xp.read_xp_files(xp_files)  # the mirror's four real files in three formats
    assert len(d["source_id"]) == 2 + 3 + 2000 + 4 and not d["flag_parse"].any()
    assert sorted(set(d["xp_file"])) == sorted(p.name for p in xp_files.iterdir())
    assert "bp_coefficient_correlations" not in d  # the FITS file has none: only shared keys


def test_an_interrupted_ingest_is_refused_until_it_is_run_again(xp_files, tmp_path, monkeypatch):
    """Ingest writes `<stem>.ingest.json` 'incomplete' first and 'complete' last: partitions of an
    interrupted ingest are refused by the reader; a rerun removes them and completes."""
    f = shutil.copy(xp_files / "XP_CONTINUOUS_RAW_with_missing_BP.csv", tmp_path / "xp.csv")
    out = tmp_path / "parts"
    real = xp.read_xp_csv_chunks

    def killed(*a, **k):  # Ctrl-C after the first partition
        gen = real(*a, **k)
        yield next(gen)
        raise KeyboardInterrupt

    monkeypatch.setattr(xp, "read_xp_csv_chunks", killed)
    with pytest.raises(KeyboardInterrupt):
        xp.ingest_xp_csv(f, out, rows_per_partition=1)
    left = sorted(out.glob("xp-*.parquet"))
    assert [p.name for p in left] == ["xp-00000.parquet"]
    assert '"state": "incomplete"' in (out / "xp.ingest.json").read_text()
    with pytest.raises(
        DataError, match="xp-00000.parquet: the ingest of .*xp.csv.* did not finish"
    ):
        xp.read_xp_parquet(left)
    monkeypatch.setattr(xp, "read_xp_csv_chunks", real)
    files = xp.ingest_xp_csv(f, out, rows_per_partition=2)
    assert [p.name for p in files] == ["xp-00000.parquet", "xp-00001.parquet"]
    m = __import__("json").loads((out / "xp.ingest.json").read_text())
    assert m["state"] == "complete" and m["rows"] == 3 and m["flag_parse_rows"] == 0
    assert len(xp.read_xp_parquet(files)["source_id"]) == 3
    (out / "xp-00007.parquet").write_bytes(files[0].read_bytes())  # a stray file beside the ingest
    with pytest.raises(DataError, match="xp-00007.parquet: not a partition of the finished ingest"):
        xp.read_xp_parquet(sorted(out.glob("*.parquet")))
