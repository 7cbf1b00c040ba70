"""`spectra_ml predict` for a user with a real archive XP file and no training: the default released model, each
output format read back by astropy and pandas (same rows, units, the model card), flag_domain on a star pushed outside
the card's domain, one writer per output folder, and the one-line error for a file that is not XP.

The "released" model here is a stand-in: a tiny kane_mlp trained 3 epochs on 600 real embedded giants, sealed, with
a card.json / card.md written by this test (domain chosen by the test) in a temporary RELEASED_DIR. Plumbing only: no
number from it is reported. Inputs are the mirror's real archive XP files ($SPECTRA_ML_LOCAL_DATA/gaia_xp).
"""

import contextlib
import io
import json
import subprocess
import warnings

import numpy as np
import pandas as pd
import pytest

from spectra_ml.cli import LOCK_FILE, main
from spectra_ml.core import DEMO_LABELS

pytestmark = pytest.mark.slow  # trains the stand-in model (~30 s) and converts real XP files

RAW_CSV = "XP_CONTINUOUS_RAW_with_missing_BP.csv"  # 3 real stars, one without BP
WIDE = [-1e9, 1e9]  # a label range that flags nothing: only the inputs' domain is tested


def _run(argv) -> tuple:
    "main(argv) -> (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def released(demo_data, tmp_path_factory):
    "A stand-in release folder 'giants' (tiny model + card) in a temporary RELEASED_DIR; (root, embedded rows)."
    from spectra_ml.checkpoint import MANIFEST
    from spectra_ml.data.samples import assign_split, flux_columns
    from spectra_ml.training import train_model

    meta, flux, eflux = demo_data
    giants = np.flatnonzero((meta.logg < 3.0).to_numpy() & (meta.teff < 5200).to_numpy())[:600]

    def table(idx):
        df = meta.iloc[idx].reset_index(drop=True)
        fl = pd.DataFrame(flux[idx], columns=flux_columns(343))
        return pd.concat([df, fl], axis=1)

    sample = table(giants)
    sample["split"] = assign_split(sample.source_id.to_numpy())
    root = tmp_path_factory.mktemp("released")
    folder = root / "giants"
    train_model(sample, DEMO_LABELS, progress=False, max_epochs=3, seed=0).save(folder)
    fp = json.loads((folder / MANIFEST).read_text())["fingerprint"]
    domain = {
        "labels": {l: WIDE for l in DEMO_LABELS},
        "inputs": {"bp_rp": [-5.0, 10.0], "phot_g_mean_mag": [3.0, 17.65]},
    }
    card = {
        "description": "stand-in for tests (tiny, 3 epochs)",
        "fingerprint": fp,
        "domain": domain,
    }
    (folder / "card.json").write_text(json.dumps(card))
    (folder / "card.md").write_text("# giants (test stand-in)\n\nNot a model to use.\n")
    return root, table(giants[:5])


@pytest.fixture
def release_dir(released, monkeypatch):
    "RELEASED_DIR pointed at the stand-in release, which is the default model here."
    from spectra_ml import release

    monkeypatch.setattr(release, "RELEASED_DIR", released[0])
    monkeypatch.setattr(release, "DEFAULT_MODEL", "giants")  # the stand-in's name
    return released[0]


def test_models_and_models_show_and_an_unknown_name(release_dir, tmp_path):
    rc, out, err = _run(["models"])
    assert rc == 0 and out.splitlines() == ["giants  stand-in for tests (tiny, 3 epochs) (default)"]
    rc, out, err = _run(["models", "show", "giants"])
    assert rc == 0 and out.startswith("# giants (test stand-in)")
    rc, out, err = _run(["models", "show", "nope"])
    assert rc == 2 and err.count("\n") == 1 and "released: giants" in err
    xp = tmp_path / "x.csv"  # an input that exists, so that the model is what is wrong
    xp.write_text("source_id\n1\n")
    rc, out, err = _run(
        ["predict", "--model", "nope", "--input", str(xp), "--output", str(tmp_path / "o")]
    )
    assert rc == 2 and err.count("\n") == 1 and "released: giants" in err


@pytest.mark.parametrize("fmt", ["parquet", "fits", "votable", "csv"])
def test_each_format_round_trips_with_units_and_the_card(release_dir, local_data, tmp_path, fmt):
    """No --model: the default released model, named with its domain on the first line; the file read back by
    astropy (and pandas) has the rows, the units (logg: dex, cm s-2 in its description) and the model record."""
    from astropy.table import Table

    out_dir = tmp_path / "out"
    argv = ["predict", "--input", str(local_data / "gaia_xp" / RAW_CSV), "--output", str(out_dir)]
    rc, out, err = _run(argv + ["--format", fmt, "--single-file", "--passes", "3"])
    assert rc == 0, err
    lines = [l for l in out.splitlines() if l.startswith(("released model", "wrote "))]
    assert (
        lines[0].startswith("released model giants: domain: teff")
        and "phot_g_mean_mag 3..17.65" in lines[0]
    )
    f = out_dir / f"labels.{dict(parquet='parquet', fits='fits', votable='vot', csv='csv')[fmt]}"
    assert (
        lines[-1].startswith(f"wrote 3 stars to {f}; ")
        and "(flag_domain); quote sigma_" in lines[-1]
    )
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [f.name, "predict_summary.json"]
    )  # no .tmp, no lock
    fp = json.loads((release_dir / "giants" / "card.json").read_text())["fingerprint"]
    with warnings.catch_warnings():
        warnings.simplefilter(
            "ignore"
        )  # astropy: 'dex' is neither a FITS nor a VOUnit unit (written as text)
        if fmt == "parquet":
            import pyarrow.parquet as pq

            s = pq.read_schema(f)
            unit = {n: (s.field(n).metadata or {}).get(b"unit", b"").decode() for n in s.names}
            model = json.loads(s.metadata[b"spectra_ml_model"])
            t = pd.read_parquet(f)
            assert unit["mu_logg"] == "dex(cm s-2)"
        elif fmt == "fits":
            from astropy.io import fits

            with fits.open(f) as h:
                head, cols = h["LABELS"].header, h["LABELS"].columns
                assert h[0].header["MODEL"] == "giants" and h[0].header["MODELFP"] == fp
                assert "Not a model to use." in str(h[0].header["COMMENT"])
                model = json.loads(h["MODEL_CARD"].data["record_json"][0])
                unit = {c.name: c.unit or "" for c in cols}
                i = cols.names.index("mu_logg") + 1
                assert "cm s-2" in head[f"TCOMM{i}"]
            t = Table.read(f, hdu="LABELS").to_pandas()
        elif fmt == "votable":
            from astropy.io.votable import parse

            vt = parse(str(f))
            info = {i.name: i.value for i in vt.resources[0].infos}
            model = json.loads(info["model_record"])
            fields = {x.name: x for x in vt.get_first_table().fields}
            unit = {n: str(x.unit or "") for n, x in fields.items()}
            assert "cm s-2" in fields["mu_logg"].description
            t = vt.get_first_table().to_table().to_pandas()
        else:
            a = Table.read(f, format="ascii.ecsv")
            model = json.loads(a.meta["spectra_ml_model"])
            unit = {c: str(a[c].unit or "") for c in a.colnames}
            assert "cm s-2" in a["mu_logg"].description
            t = pd.read_csv(f, comment="#")  # the plain table for pandas
    assert len(t) == 3 and sorted(t.source_id) == sorted(
        pd.read_csv(local_data / "gaia_xp" / RAW_CSV).source_id
    )
    assert model["name"] == "giants" and model["fingerprint"] == fp
    assert model["card"]["domain"]["inputs"]["phot_g_mean_mag"] == [3.0, 17.65]
    assert model["domain_checked"]["inputs"] == {"bp_rp": "xp_bp_rp", "phot_g_mean_mag": "xp_g_mag"}
    assert unit["mu_teff"] == "K" and unit["sigma_fe_h"] == "dex" and unit["xp_g_mag"] == "mag"
    assert unit["mu_logg"] in ("dex", "dex(cm s-2)")
    assert (
        t.flag_any.astype(bool).sum() >= t.flag_missing_bp.astype(bool).sum() == 1
    )  # the star without BP
    s = json.loads((out_dir / "predict_summary.json").read_text())
    assert s["format"] == fmt and s["written"] == [str(f)] and s["closing_line"] == lines[-1]


def test_flag_domain_on_a_star_pushed_outside_the_domain(release_dir, released, tmp_path):
    """Real embedded stars with their catalogue G: one star's G set to 19 (beyond the card's 17.65) is the only
    star with flag_domain (and flag_any from it); rows in = rows out; the catalogue G is what was checked."""
    _, rows = released
    rows = rows.drop(columns=["bp_rp", "phot_bp_mean_mag", "phot_rp_mean_mag"], errors="ignore")
    rows["phot_g_mean_mag"] = 12.0
    rows.loc[2, "phot_g_mean_mag"] = 19.0  # pushed outside the domain
    (tmp_path / "in").mkdir()
    rows.to_parquet(tmp_path / "in" / "part-0.parquet", index=False)
    rc, out, err = _run(
        ["predict", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    )
    assert rc == 0, err
    p = pd.read_parquet(tmp_path / "o" / "part-0.parquet")
    assert len(p) == len(rows) and p.flag_domain.tolist() == [False, False, True, False, False]
    assert (
        p.flag_any == p[[c for c in p if c.startswith("flag_") and c != "flag_any"]].any(axis=1)
    ).all()
    assert "; 1 outside the model's domain (flag_domain)" in out.splitlines()[-1]
    assert (
        "domain inputs not in the input, not checked: bp_rp" in out.splitlines()[-1]
    )  # no colour here
    import pyarrow.parquet as pq

    model = json.loads(
        pq.read_schema(tmp_path / "o" / "part-0.parquet").metadata[b"spectra_ml_model"]
    )
    assert model["domain_checked"]["inputs"] == {
        "phot_g_mean_mag": "phot_g_mean_mag"
    }  # the catalogue's G


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(release_dir, local_data, tmp_path):
    import os
    import socket

    out_dir = tmp_path / "o"
    out_dir.mkdir()
    lock = out_dir / LOCK_FILE
    lock.write_text(
        json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "time": "T0"})
    )  # alive
    argv = ["predict", "--input", str(local_data / "gaia_xp" / RAW_CSV), "--output", str(out_dir)]
    rc, out, err = _run(argv + ["--passes", "2"])
    assert rc == 2 and err.count("\n") == 1
    assert f"pid {os.getpid()} on {socket.gethostname()} since T0" in err and str(lock) in err
    assert not list(out_dir.glob("*.parquet"))  # nothing written by the refused run
    gone = subprocess.Popen(["true"])
    gone.wait()
    lock.write_text(
        json.dumps({"pid": gone.pid, "host": socket.gethostname(), "time": "T0"})
    )  # stale
    rc, out, err = _run(argv + ["--passes", "2"])
    assert rc == 0, err
    assert not lock.exists()  # released at the end


def test_a_file_that_is_not_xp_is_one_line_and_a_folder_names_what_it_skips(
    release_dir, local_data, tmp_path
):
    bad = tmp_path / "my_table.csv"
    bad.write_text("ra,dec\n1,2\n")
    rc, out, err = _run(["predict", "--input", str(bad), "--output", str(tmp_path / "o1")])
    assert rc == 2 and err.count("\n") == 1
    assert str(bad) in err and "source_id" in err and "bp_coefficients" in err
    src = tmp_path / "mixed"
    src.mkdir()
    (src / RAW_CSV).symlink_to(local_data / "gaia_xp" / RAW_CSV)
    (src / "my_table.csv").write_text("ra,dec\n1,2\n")
    (src / "notes.txt").write_text("hello")
    rc, out, err = _run(
        ["predict", "--input", str(src), "--output", str(tmp_path / "o2"), "--passes", "2"]
    )
    assert rc == 0, err
    last = out.splitlines()[-1]
    assert (
        "skipped 2 input file(s): " in last
        and "my_table.csv (" in last
        and "bp_coefficients" in last
    )
    assert "notes.txt (not an XP continuous file" in last
    s = json.loads((tmp_path / "o2" / "predict_summary.json").read_text())
    assert sorted(x["file"].split("/")[-1] for x in s["skipped"]) == ["my_table.csv", "notes.txt"]
    assert s["files_hold"]["n_rows"] == 3  # the XP file's stars, all of them


def test_label_stars_is_the_cli_from_python(release_dir, local_data, tmp_path):
    """label_stars on the file path and on the same rows as an in-memory astropy table: the CLI's numbers, the
    model record and units in attrs."""
    from astropy.table import Table

    import spectra_ml

    f = local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits"
    t = Table.read(f)[:6]
    t.write(
        tmp_path / "stars.fits"
    )  # the name label_stars gives an in-memory table: same partition seed
    rc, out, err = _run(
        ["predict", "--input", str(tmp_path / "stars.fits"), "--output", str(tmp_path / "o")]
    )
    assert rc == 0, err
    cli = pd.concat([pd.read_parquet(p) for p in sorted((tmp_path / "o").glob("*.parquet"))])
    for given in (tmp_path / "stars.fits", t):
        df = spectra_ml.label_stars(given)
        assert df.source_id.tolist() == cli.source_id.tolist()
        np.testing.assert_allclose(df.mu_teff, cli.mu_teff, rtol=1e-6)
        assert df.attrs["model"]["name"] == "giants" and df.attrs["units"]["mu_teff"] == "K"


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_discard_inputs_leaves_only_the_output(release_dir, local_data, tmp_path, fmt):
    """--discard-inputs: the converted spectra (and, for a non-Parquet output, its Parquet copy) are deleted once the
    output is written, and the summary names them; without it they stay in OUTPUT_inputs/ for a rerun."""
    src = str(local_data / "gaia_xp" / RAW_CSV)
    for discard in (False, True):
        out_dir = tmp_path / f"out_{discard}"
        argv = [
            "predict",
            "--input",
            src,
            "--output",
            str(out_dir),
            "--format",
            fmt,
            "--passes",
            "2",
        ]
        rc, out, err = _run(argv + (["--discard-inputs"] if discard else []))
        assert rc == 0, err
        work = tmp_path / f"out_{discard}_inputs"
        assert work.exists() != discard
        summary = json.loads((out_dir / "predict_summary.json").read_text())
        assert ("discarded" in summary) == discard
        if discard:
            assert str(work) in summary["discarded"]
        labels = [p for p in out_dir.iterdir() if p.name != "predict_summary.json"]
        assert (
            labels
            and sum(
                len(pd.read_csv(p, comment="#")) if fmt == "csv" else len(pd.read_parquet(p))
                for p in labels
            )
            == 3
        )
