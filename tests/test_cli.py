"""`spectra_ml predict` on a user's own stars: archive XP files converted on the fly, and source_ids or a cone
fetched from a loopback stand-in of the Gaia archive (DataLink data-server and TAP async, spoken to by astroquery
itself) that serves recorded real rows.

Recorded rows: the mirror's real archive XP CSV (3 stars, one without BP, verbatim lines) and two real stars of the
mirror's XP FITS file that are also in the embedded set, written in the same CSV layout (no correlations in that file:
zero correlations and standard deviation 1, the convention of `xp_io.gaiaxpy_input_from_columns`). gaia_source rows:
the embedded set's real G/BP/RP of those two stars, and the real Gaia EDR3 astrometry of the 95 Montalban DR17 giants
(which have no recorded XP). The stand-in has no `has_xp_continuous` column: a cone returns every recorded star in it.
The model is a tiny kane_mlp trained for a few epochs on embedded giants: plumbing and agreement checks only, no
number from it is reported.
"""

import contextlib
import http.server
import io
import json
import re
import threading
import zipfile
from urllib.parse import parse_qs

import numpy as np
import pandas as pd
import pytest
from astropy.table import Table

from spectra_ml.cli import main
from spectra_ml.core import DEMO_LABELS


class GaiaArchiveStandIn(http.server.BaseHTTPRequestHandler):
    """Loopback stand-in for the Gaia archive's DataLink (data-server/data) and TAP async (tap-server/tap/async)."""

    def log_message(self, *a):
        pass

    def _send(self, code, body=b"", ctype="text/plain", headers=()):
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _form(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        ctype = self.headers.get("Content-Type", "")
        if ctype.startswith("multipart/"):
            boundary = ctype.split("boundary=")[1].strip('"').encode()
            form, files = {}, {}
            for part in body.split(b"--" + boundary)[1:-1]:
                head, _, data = part.strip(b"\r\n").partition(b"\r\n\r\n")
                name = re.search(rb'name="([^"]+)"', head)[1].decode()
                if b"filename=" in head:
                    files[name] = data
                else:
                    form[name] = data.decode()
            return form, files
        return {k: v[0] for k, v in parse_qs(body.decode()).items()}, {}

    def do_POST(self):
        s = self.server
        form, files = self._form()
        s.log.append((self.path, form, files))
        if self.path.startswith("/data-server/data"):
            ids = [int(x) for x in form["ID"].split(",")]
            lines = [s.xp_rows[i] for i in ids if i in s.xp_rows]
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, "w") as z:
                z.writestr("XP_CONTINUOUS_RAW.csv", s.xp_header + "".join(lines))
            return self._send(200, buf.getvalue(), "application/zip")
        if self.path.rstrip("/").endswith("/tap/async"):
            job = str(len(s.jobs))
            s.jobs[job] = s.answer(form["QUERY"], files)
            loc = f"http://127.0.0.1:{s.server_address[1]}/tap-server/tap/async/{job}"
            return self._send(303, b"", headers=[("Location", loc)])
        if self.path.endswith("/phase"):
            return self._send(200, b"COMPLETED")
        self._send(404)

    def do_GET(self):
        m = re.search(r"/tap/async/(\d+)/(phase|results/result)", self.path)
        if not m or m[1] not in self.server.jobs:
            return self._send(404)
        if m[2] == "phase":
            return self._send(200, b"COMPLETED")
        self._send(200, self.server.jobs[m[1]], "text/xml")


def _serve_archive(xp_header, xp_rows, gaia: Table):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), GaiaArchiveStandIn)
    srv.xp_header, srv.xp_rows, srv.gaia, srv.jobs, srv.log = xp_header, xp_rows, gaia, {}, []

    def answer(query, files):
        cols = [
            c.split(".")[-1]
            for c in re.match(r"SELECT (?:TOP \d+ )?(.*?) FROM", query)[1].split(", ")
        ]
        g = srv.gaia
        if "ids" in files:
            up = Table.read(io.BytesIO(files["ids"]), format="votable")
            rows = np.isin(g["source_id"], np.asarray(up["source_id"]))
        else:
            ra, dec, r = (
                float(x)
                for x in re.search(r"CIRCLE\('ICRS', ([^,]+), ([^,]+), ([^)]+)\)", query).groups()
            )
            from astropy.coordinates import SkyCoord
            import astropy.units as u

            sep = SkyCoord(g["ra"] * u.deg, g["dec"] * u.deg).separation(
                SkyCoord(ra * u.deg, dec * u.deg)
            )
            rows = sep.deg < r
        out = g[rows][[c for c in cols if c in g.colnames]]
        b = io.BytesIO()
        # BINARY, not TABLEDATA: astropy's C TABLEDATA writer writes one byte past its buffer
        # (astropy issue #20419), which corrupted the heap of this test process
        out.write(b, format="votable", tabledata_format="binary")
        return b.getvalue()

    srv.answer = answer
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


COMMON = [223411314459392, 303744382219776]  # in the mirror's XP FITS and in the embedded set
RAW_CSV = "XP_CONTINUOUS_RAW_with_missing_BP.csv"
NO_BP = 5405570973190252288  # the star of that CSV without BP


@pytest.fixture(scope="module")
def tiny_model(demo_data, tmp_path_factory):
    "A kane_mlp trained 3 epochs on 600 embedded giants, plus the two COMMON stars' embedded rows."
    from spectra_ml.data.samples import assign_split, flux_columns
    from spectra_ml.training import train_model

    meta, flux, eflux = demo_data
    giants = np.flatnonzero((meta.logg < 3.0).to_numpy() & (meta.teff < 5200).to_numpy())[:600]
    common = np.flatnonzero(meta.source_id.isin(COMMON).to_numpy())

    def table(idx):
        df = meta.iloc[idx].reset_index(drop=True)
        fl = pd.DataFrame(flux[idx], columns=flux_columns(343))
        er = pd.DataFrame(eflux[idx], columns=flux_columns(343, "eflux_"))
        return pd.concat([df, fl, er], axis=1)

    sample = table(giants)
    sample["split"] = assign_split(sample.source_id.to_numpy())
    root = tmp_path_factory.mktemp("tiny")
    train_model(sample, DEMO_LABELS, progress=False, max_epochs=3, seed=0).save(root / "model")
    return root / "model", table(common)


def _run(argv) -> tuple:
    "main(argv) -> (exit code, stdout, stderr)."
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _predictions(folder) -> pd.DataFrame:
    return pd.concat(
        [pd.read_parquet(f) for f in sorted(folder.rglob("*.parquet"))], ignore_index=True
    )


def _summary(folder) -> dict:
    "The JSON summary `predict` writes in its output folder (the terminal gets one line)."
    return json.loads((folder / "predict_summary.json").read_text())


def _reference(model, rows, tmp_path) -> pd.DataFrame:
    "Predictions of the COMMON stars from their embedded flux (the representation the model was trained on)."
    from spectra_ml.streaming import predict_catalogue

    (tmp_path / "ref_in").mkdir()
    rows.to_parquet(tmp_path / "ref_in" / "part-0.parquet", index=False)
    predict_catalogue(model, tmp_path / "ref_in", tmp_path / "ref_out", 20, progress=False)
    return _predictions(tmp_path / "ref_out").set_index("source_id")


def _agree(pred: pd.DataFrame, ref: pd.DataFrame):
    "Same stars from archive coefficients and from the embedded flux: μ within a quarter of σ for every label."
    p = pred.set_index("source_id").loc[COMMON]
    for l in DEMO_LABELS:
        d = np.abs(p[f"mu_{l}"] - ref.loc[COMMON, f"mu_{l}"])
        assert (d < 0.25 * ref.loc[COMMON, f"sigma_{l}"]).all(), (l, d.tolist())


def test_xp_input_table_reproduces_the_embedded_flux_by_name(local_data, demo_data, tmp_path):
    """The conversion against an independent reference: the embedded set's flux (GaiaXPy, divided by medflux) of the
    same real stars; columns come out by name in any order, unknown input names are refused."""
    from spectra_ml.core import MissingColumnError
    from spectra_ml.features import xp_input_table
    from spectra_ml.data.xp_files import read_xp

    meta, flux, _ = demo_data
    t = Table.read(local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits")
    t[np.isin(np.asarray(t["source_id"]), COMMON)].write(
        tmp_path / "two.fits"
    )  # real rows (tmp only)
    xp = read_xp(tmp_path / "two.fits")
    names = [f"flux_{i:03d}" for i in range(343)]
    t = xp_input_table(xp, names[::-1])
    assert list(t.columns[1:344]) == names[::-1]
    for _, r in t.iterrows():
        i = int(np.flatnonzero(meta.source_id.to_numpy() == r.source_id)[0])
        assert np.median(np.abs(r[names].to_numpy(float) / flux[i] - 1)) < 2e-3  # README: 0.08%
        assert abs(r.medflux / meta.medflux.iloc[i] - 1) < 5e-3
    assert not t.flag_xp_unconvertible.any()
    with pytest.raises(MissingColumnError, match="flux_343"):
        xp_input_table(xp, ["flux_000", "flux_343", "parallax"])


@pytest.mark.slow  # a few seconds: the full suite runs it
def test_cli_predicts_archive_xp_files_of_every_format(local_data, tiny_model, tmp_path):
    """CSV, VOTable and FITS files in one folder: every star a row, the star without BP kept and flagged, and the
    two stars also in the embedded set predicted as from their embedded flux."""
    model, common = tiny_model
    src = tmp_path / "xp"
    src.mkdir()
    t = Table.read(local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits")
    keep = np.isin(np.asarray(t["source_id"]), COMMON)
    keep[:6] = True
    t[keep].write(src / "chunk0_subset.fits")  # real rows, a subset (tmp only)
    for name in (RAW_CSV, "xp_continuous_combined_weiler2023_examples.vot"):
        (src / name).symlink_to(local_data / "gaia_xp" / name)
    rc, out, err = _run(
        ["predict", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "out")]
        + ["--passes", "20"]
    )
    assert rc == 0, err
    r = _summary(tmp_path / "out")
    assert r["prepared"]["input"] == "xp_files" and r["prepared"]["n_unconvertible"] == 1
    p = _predictions(tmp_path / "out")
    assert len(p) == int(keep.sum()) + 3 + 4 and p.source_id.is_unique  # rows in = rows out
    bad = p.source_id == NO_BP
    assert p.loc[bad, "flag_bad_input"].all() and p.loc[bad, "mu_teff"].isna().all()
    assert np.isfinite(p.loc[~bad, [f"mu_{l}" for l in DEMO_LABELS]]).all().all()
    _agree(p, _reference(model, common, tmp_path))
    rc, out, err = _run(
        ["predict", "--model", str(model), "--input", str(src), "--output", str(tmp_path / "out")]
        + ["--passes", "20"]
    )
    assert rc == 0 and _summary(tmp_path / "out")["n_computed"] == 0  # a rerun reuses all
    rc, _, err = _run(
        ["predict", "--model", str(model), "--input", str(src / "chunk0_subset.fits")]
        + ["--output", str(src)]
    )
    assert rc == 2 and err.count("\n") == 1 and "overlap" in err
    (tmp_path / "notes.txt").write_text("hello")
    rc, _, err = _run(
        ["predict", "--model", str(model), "--input", str(tmp_path / "notes.txt")]
        + ["--output", str(tmp_path / "o2")]
    )
    assert rc == 2 and err.count("\n") == 1 and "not an XP continuous file" in err


@pytest.fixture
def archive(local_data, demo_data, tmp_path, monkeypatch):
    "The loopback Gaia archive stand-in with the recorded real rows (see the module docstring)."
    from spectra_ml.data import sources

    lines = (local_data / "gaia_xp" / RAW_CSV).read_text().splitlines(keepends=True)
    header, rows = lines[0], {int(l.split(",")[0]): l for l in lines[1:]}
    fits = Table.read(local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits")
    for r in fits[np.isin(np.asarray(fits["source_id"]), COMMON)]:
        rows[int(r["source_id"])] = _csv_line(header, r)
    meta = demo_data[0].set_index("source_id").loc[COMMON]
    m = Table.read(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    gaia = pd.concat(
        [
            pd.DataFrame(
                {
                    "source_id": COMMON,
                    **{c: meta[c].to_numpy(float) for c in ("phot_g_mean_mag", "phot_bp_mean_mag")},
                }
            ),
            pd.DataFrame(
                {
                    "source_id": np.asarray(m["GAIAEDR3_SOURCE_ID"], np.int64),
                    "ra": np.asarray(m["RA"], float),
                    "dec": np.asarray(m["DEC"], float),
                    "parallax": np.asarray(m["GAIAEDR3_PARALLAX"], float),
                    "pmra": np.asarray(m["GAIAEDR3_PMRA"], float),
                    "pmdec": np.asarray(m["GAIAEDR3_PMDEC"], float),
                    "phot_g_mean_mag": np.asarray(m["GAIAEDR3_PHOT_G_MEAN_MAG"], float),
                }
            ),
        ],
        ignore_index=True,
    )
    srv, url = _serve_archive(header, rows, Table.from_pandas(gaia))
    monkeypatch.setenv("SPECTRA_ML_GAIA_ARCHIVE", url)
    monkeypatch.delenv("SPECTRA_ML_OFFLINE")  # only the loopback server is reached
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path / "cache")
    yield srv, gaia
    srv.shutdown()


def _csv_line(header: str, r) -> str:
    "One FITS row (one column per coefficient) in the archive's RAW CSV layout."
    vals = []
    for h in header.strip().split(","):
        band, _, what = h.partition("_")
        if h == "source_id":
            vals.append(str(int(r["source_id"])))
        elif what in ("coefficients", "coefficient_errors"):
            f = "{b}_coeff_{i}" if what == "coefficients" else "e_{b}_coeff_{i}"
            v = [repr(float(r[f.format(b=band, i=i)])) for i in range(55)]
            vals.append('"(' + ", ".join(v) + ')"')
        elif what == "coefficient_correlations":
            vals.append('"(' + ", ".join(["0.0"] * 1485) + ')"')
        elif what == "standard_deviation":
            vals.append("1.0")
        elif what == "n_relevant_bases":
            vals.append(str(int(r[h])))
        else:
            vals.append("")
    return ",".join(vals) + "\n"


def test_cli_predicts_source_ids_through_datalink_and_tap(archive, tiny_model, tmp_path):
    """One command from a list of ids: XP by DataLink (one request, ids in the form, never more than 5,000),
    gaia_source by TAP (ids uploaded, not in the ADQL), every id a row; a rerun asks the archive nothing."""
    srv, gaia = archive
    model, common = tiny_model
    montalban = int(gaia.source_id.iloc[-1])  # real gaia_source row, no XP recorded
    ids = COMMON + [5853498713190525696, NO_BP, 5762406957886626816, montalban]
    (tmp_path / "ids.txt").write_text("# my stars\n" + "\n".join(map(str, ids)) + "\n")
    argv = ["predict", "--model", str(model), "--source-ids", str(tmp_path / "ids.txt")]
    argv += ["--output", str(tmp_path / "out"), "--passes", "20"]
    rc, out, err = _run(argv)
    assert rc == 0, err
    assert (
        "DataLink XP_CONTINUOUS" in err and "/1 " in err
    )  # the bar across the (1) DataLink chunk(s)
    # the match report: 6 requested, montalban has no XP (flag_no_xp below)
    assert out.splitlines()[-1].endswith("; ids: 6 requested, 5 with XP, 1 without XP (flag_no_xp)")
    dl = [f for p, f, _ in srv.log if p.startswith("/data-server")]
    tap = [(f, u) for p, f, u in srv.log if p.endswith("/tap/async")]
    assert len(dl) == 1 and sorted(map(int, dl[0]["ID"].split(","))) == sorted(ids)
    assert dl[0]["RETRIEVAL_TYPE"] == "XP_CONTINUOUS" and dl[0]["DATA_STRUCTURE"] == "RAW"
    assert len(tap) == 1 and "ids" in tap[0][1] and str(ids[0]) not in tap[0][0]["QUERY"]
    work = _predictions(tmp_path / "out_inputs")
    assert work.source_id.tolist() == ids  # the user's order, every id
    assert work.flag_no_xp.tolist() == [False] * 5 + [True]
    assert work.flag_xp_unconvertible.tolist() == [False, False, False, True, False, True]
    assert work.flag_no_gaia_source.tolist() == [False, False, True, True, True, False]
    assert np.allclose(work.phot_g_mean_mag[:2], gaia.phot_g_mean_mag[:2])  # gaia_source carried
    p = _predictions(tmp_path / "out")
    assert sorted(p.source_id) == sorted(ids)
    assert p.set_index("source_id").loc[[NO_BP, montalban], "flag_bad_input"].all()
    _agree(p, _reference(model, common, tmp_path))
    n_log = len(srv.log)
    rc, out, err = _run(argv)
    assert rc == 0 and len(srv.log) == n_log  # DataLink and TAP answers cached: nothing asked again
    assert _summary(tmp_path / "out")["n_computed"] == 0
    rc, out, err = _run(
        argv[:4] + [",".join(map(str, ids[:2])), "--output", str(tmp_path / "o2"), "--passes", "5"]
    )
    w = _summary(tmp_path / "o2")["prepared"]["work"]
    assert rc == 0 and _predictions(tmp_path / "o2_inputs").source_id.tolist() == ids[:2]
    assert len(srv.log) == n_log + 2  # a new id list: one DataLink and one TAP request
    assert w.startswith(str(tmp_path / "o2_inputs" / "ids_"))  # in its own keyed folder
    rc, _, err = _run(argv[:4] + ["5.853498713190526e+18"] + argv[5:])
    assert rc == 2 and err.count("\n") == 1 and "source_id" in err


def test_cli_predicts_a_cone(archive, tiny_model, tmp_path):
    """A cone on the Kepler field: the stand-in's stars inside it (checked with astropy's separation), each a row,
    flagged without XP (none recorded for them); too many stars or a bad cone is one line and exit 2."""
    from astropy.coordinates import SkyCoord
    import astropy.units as u

    srv, gaia = archive
    model, _ = tiny_model
    g = gaia.dropna(subset=["ra"])
    ra, dec = float(g.ra.median()), float(g.dec.median())
    sep = SkyCoord(g.ra.to_numpy() * u.deg, g.dec.to_numpy() * u.deg).separation(
        SkyCoord(ra * u.deg, dec * u.deg)
    )
    inside = set(g.source_id[sep.deg < 3.0])
    assert 5 < len(inside) < len(g)
    argv = ["predict", "--model", str(model), "--cone", str(ra), str(dec), "3.0"]
    rc, _, err = _run(argv + ["--output", str(tmp_path / "out"), "--passes", "5"])
    assert rc == 0, err
    q = [f["QUERY"] for p, f, _ in srv.log if p.endswith("/tap/async")]
    assert len(q) == 1 and "CONTAINS(POINT('ICRS', g.ra, g.dec)" in q[0]
    p = _predictions(tmp_path / "out")
    assert set(p.source_id) == inside and len(p) == len(inside)
    assert p.flag_bad_input.all()
    assert _predictions(tmp_path / "out_inputs").flag_no_xp.all()
    rc, _, err = _run(argv + ["--output", str(tmp_path / "o2"), "--max-stars", "3"])
    assert rc == 2 and err.count("\n") == 1 and "more than 3 stars" in err
    rc, _, err = _run(argv[:4] + [str(ra), "95", "1", "--output", str(tmp_path / "o3")])
    assert rc == 2 and err.count("\n") == 1 and "DEC" in err


def test_user_star_partitions_chunk_resume_and_refuse_large_chunks(local_data, tmp_path):
    """In-process stand-ins (the recorded real CSV rows): requests never exceed the chunk, finished chunks are not
    asked again, and a chunk above DataLink's 5,000 is refused."""
    from spectra_ml.data import sources
    from spectra_ml.core import ParameterError

    lines = (local_data / "gaia_xp" / RAW_CSV).read_text().splitlines(keepends=True)
    rows = {int(l.split(",")[0]): l for l in lines[1:]}
    asked = []

    def load(ids):
        asked.append(list(ids))
        return lines[0] + "".join(rows[i] for i in ids if i in rows)

    ids = list(rows) + [42]
    gaia = pd.DataFrame({"source_id": ids[:2], "parallax": [1.0, 2.0]})
    names = [f"flux_{i:03d}" for i in range(343)]
    r = sources.user_star_partitions(
        ids, tmp_path / "w", names, cache=tmp_path / "c", gaia=gaia, load=load, chunk=2
    )
    assert [len(a) for a in asked] == [2, 2] and len(r["partitions"]) == 2
    t = pd.concat([pd.read_parquet(f) for f in r["partitions"]], ignore_index=True)
    assert t.source_id.tolist() == ids and t.flag_no_xp.tolist() == [False, False, False, True]
    assert t.parallax[:2].tolist() == [1.0, 2.0] and t.flag_no_gaia_source.tolist() == [
        False,
        False,
        True,
        True,
    ]
    sources.user_star_partitions(
        ids, tmp_path / "w", names, cache=tmp_path / "c", gaia=gaia, load=load, chunk=2
    )
    assert len(asked) == 2  # resumed from the cached DataLink chunks
    with pytest.raises(ParameterError, match="5000"):
        sources.user_star_partitions(ids, tmp_path / "w", names, gaia=gaia, load=load, chunk=5001)


def test_version_and_an_examples_epilog_in_every_help():
    """`--version` prints the package version; every subcommand's --help ends with runnable examples of itself,
    laid out as written (RawDescriptionHelpFormatter keeps one example per line)."""
    import spectra_ml
    from spectra_ml.cli import build_parser

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and out.getvalue().strip() == f"spectra_ml {spectra_ml.__version__}"
    subs = build_parser()._subparsers._group_actions[0].choices
    assert set(subs) == {"run", "stages", "sources", "models", "predict"}
    for name in subs:
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            main([name, "--help"])
        text = out.getvalue()
        tail = text[text.index("\nexamples:\n") :].splitlines()[2:]
        examples = [l for l in tail if l.startswith("  spectra_ml ")]
        assert examples and examples[0].split()[1] == name, (name, tail)  # its own use first


def test_stages_lists_each_parameter_with_type_default_and_description():
    """Every parameter papermill finds in each stage's parameters cell is listed with the type of its default, the
    default, and the comment after it in the chapter; no raw dict of texts."""
    import ast
    from spectra_ml.cli import stage_parameter_docs
    from spectra_ml.pipeline import COMPARE_STAGES, DEMO_STAGES, stage_parameters

    rc, out, err = _run(["stages"])
    assert rc == 0, err
    assert "{'run_dir'" not in out and "': '" not in out
    lines = out.splitlines()
    for stage in DEMO_STAGES + COMPARE_STAGES[1:]:
        docs = {r["name"]: r for r in stage_parameter_docs(stage)}
        assert set(docs) == set(stage_parameters(stage))  # papermill's own reading of the cell
        for name, text in stage_parameters(stage).items():
            value = ast.literal_eval(text)
            want = "optional" if value is None else type(value).__name__
            assert docs[name]["type"] == want and ast.literal_eval(docs[name]["default"]) == value
        assert stage in lines
    i = lines.index("  epochs (int, default 300)")
    assert lines[i + 1].strip().startswith("maximum epochs")


def test_sources_fits_100_columns_and_shows_no_nan(local_data):
    """The real source table (no network asked): every line within 100 columns, every source named, no NaN or None
    shown (a missing value is '—'), every address complete once its wrapped lines are joined."""
    from spectra_ml.data.sources import source_status

    t = source_status(check=False)
    assert t.isna().any().any()  # the table has gaps to show
    rc, out, err = _run(["sources"])
    assert rc == 0, err
    lines = out.splitlines()
    assert max(map(len, lines)) <= 100
    assert not re.search(r"\bnan\b|\bNaN\b|\bNone\b", out)
    heads = [l.split()[0] for l in lines if not l.startswith(" ")]
    assert heads == t.source.tolist()
    joined = "".join(l.strip() for l in lines if l.startswith("    "))
    assert all(a.replace(" ", "") in joined.replace(" ", "") for a in t.address)


@pytest.mark.parametrize("offline", [True, False])
def test_source_ids_and_cone_without_network_name_the_offline_fix(
    tiny_model, tmp_path, monkeypatch, offline
):
    """Without network (downloads forbidden, or the archive address refusing connections) --source-ids and --cone
    are one line and exit 2 that say how to get the XP files by hand and pass them with --input; no dict of
    connection errors."""
    from spectra_ml.data import sources

    model, _ = tiny_model
    if (
        not offline
    ):  # a closed loopback port: the real connection error path, nothing leaves the machine
        monkeypatch.delenv(sources.ENV_OFFLINE, raising=False)
        monkeypatch.setenv(sources.ENV_GAIA_ARCHIVE, "http://127.0.0.1:9")
    else:
        monkeypatch.setenv(sources.ENV_OFFLINE, "1")
    for how in (["--source-ids", "223411314459392"], ["--cone", "56.75", "24.12", "0.5"]):
        argv = ["predict", "--model", str(model), *how, "--output", str(tmp_path / "out")]
        argv += ["--cache", str(tmp_path / "cache")]
        rc, out, err = _run(argv)
        assert rc == 2 and err.count("\n") == 1, err
        assert "no network: download the XP continuous files" in err and "with --input" in err
        assert "DataLink XP_CONTINUOUS" in err and "xp_continuous_mean_spectrum" in err
        assert "{" not in err and "urllib3" not in err and "Max retries" not in err
    assert "CIRCLE('ICRS', 56.75, 24.12, 0.5)" in err  # the cone's own query, ready to paste


def test_predict_writes_units_and_ends_with_one_summary_line(local_data, tiny_model, tmp_path):
    """On the mirror's real archive XP CSV: each mu_/sigma_ column carries its label's unit in the Parquet field
    metadata (K for teff, dex of cm s^-2 for logg, dex for abundances, '' for flags); the terminal gets one line
    with counts that match the written flags, and the JSON summary is a file in the output folder."""
    import pyarrow.parquet as pq
    from spectra_ml.prediction import LABEL_UNITS

    model, _ = tiny_model
    out_dir = tmp_path / "out"
    xp = local_data / "gaia_xp" / RAW_CSV
    rc, out, err = _run(
        ["predict", "--model", str(model), "--input", str(xp), "--output", str(out_dir)]
        + ["--passes", "5"]
    )
    assert rc == 0, err
    p = _predictions(out_dir)
    assert len(p) == 3  # the file's 3 real stars, the one without BP flagged
    part = next(out_dir.glob("*.parquet"))
    want = (
        f"wrote 3 stars to {part}; {int(p.flag_domain.sum())} outside the model's domain (flag_domain); "
        "quote sigma_"
    )
    first, last = out.splitlines()[0], out.splitlines()[-1]  # GaiaXPy's progress bars between them
    assert first.startswith(f"checkpoint {model}: domain (its training label ranges): teff ")
    assert last.startswith(want) and "{" not in out, out
    calibrated = any(c.startswith("sigma_cal_") for c in p)
    assert ("quote sigma_cal_<label> (calibrated)" in last) == calibrated
    assert ("NO sigma calibration in this model" in last) == (not calibrated)
    assert (
        p.flag_domain == p.flag_label_range
    ).all()  # a checkpoint without card: its label ranges
    s = _summary(out_dir)
    assert s["prepared"]["input"] == "xp_files" and s["files_hold"]["n_rows"] == 3
    schema = pq.read_schema(next(out_dir.glob("*.parquet")))
    unit = {f.name: (f.metadata or {}).get(b"unit", b"?").decode() for f in schema}
    assert LABEL_UNITS["teff"] == "K" and LABEL_UNITS["logg"] == "dex(cm s-2)"
    for l in DEMO_LABELS:
        for c in [
            c
            for c in schema.names
            if c == f"mu_{l}" or (c.startswith("sigma_") and c.endswith(f"_{l}"))
        ]:
            assert unit[c] == {"teff": "K", "logg": "dex(cm s-2)"}.get(l, "dex"), (c, unit[c])
    assert unit["sigma_teff"] == "K" and unit["sigma_fe_h"] == "dex"
    assert all(unit[c] == "" for c in schema.names if c.startswith("flag_"))
    assert unit["source_id"] == "?"  # no unit for ids


def test_predict_help_ends_with_the_column_table():
    """`predict --help` lists every output column with its unit and meaning, and says which σ to quote."""
    from spectra_ml.prediction import OUTPUT_COLUMNS

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = out.getvalue()
    table = text[text.index("\ncolumns (quote sigma_cal_<label>") :]
    for name, unit, meaning in OUTPUT_COLUMNS:
        line = next(l for l in table.splitlines() if l.strip().startswith(name + " "))
        assert meaning in line and (unit.replace("<label>", "label") or "-") in line, line
    assert "dex(cm s-2)" in table and "THE SIGMA TO QUOTE" in table


def test_no_released_models_is_one_line(tmp_path, monkeypatch):
    """An install without released models: `models` and `predict` without --model say so in one line and name the
    way out (a checkpoint folder)."""
    from spectra_ml import release

    monkeypatch.setattr(release, "RELEASED_DIR", tmp_path / "none")
    rc, out, err = _run(["models"])
    assert rc == 2 and err.count("\n") == 1 and "no released models" in err
    (tmp_path / "in").mkdir()
    rc, out, err = _run(
        ["predict", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "o")]
    )
    assert rc == 2 and err.count("\n") == 1 and "--model CHECKPOINT_FOLDER" in err


def test_output_lock_refuses_a_live_holder_and_takes_over_a_dead_one(tmp_path):
    """The lock names its holder (pid, host, time); a lock whose pid is gone on this host is stale and taken over;
    the lock file goes when the holder ends."""
    import os
    import socket
    import subprocess

    from spectra_ml.cli import LOCK_FILE, OutputLockedError, output_lock

    with output_lock(tmp_path / "o") as lock:
        held = json.loads(lock.read_text())
        assert held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(
            OutputLockedError, match=f"pid {os.getpid()} on {socket.gethostname()} since"
        ):
            with output_lock(tmp_path / "o"):
                pass
        assert lock.exists()  # the refused writer left the holder's lock alone
    assert not (tmp_path / "o" / LOCK_FILE).exists()
    gone = subprocess.Popen(["true"])
    gone.wait()
    (tmp_path / "o" / LOCK_FILE).write_text(
        json.dumps({"pid": gone.pid, "host": socket.gethostname()})
    )
    with output_lock(tmp_path / "o") as lock:
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    (tmp_path / "o" / LOCK_FILE).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(OutputLockedError, match="on elsewhere"):  # another host: never taken over
        with output_lock(tmp_path / "o"):
            pass


@pytest.mark.parametrize("fmt", ["parquet", "fits", "votable", "csv"])
def test_write_table_file_round_trips_units_and_the_model_record(tmp_path, fmt):
    """A synthetic 3-row prediction table (plumbing only) written in each format and read back with astropy:
    same rows and values, units (logg as dex with cm s-2 in its description outside Parquet), the model record; no
    temporary file left."""
    import warnings

    from spectra_ml.cli import FORMATS, write_table_file

    df = pd.DataFrame(
        {
            "source_id": np.array([1, 2, 3], np.int64),
            "mu_teff": [4500.0, 4600.0, np.nan],
            "sigma_cal_teff": [50.0, 60.0, np.nan],
            "mu_logg": [2.1, 2.2, np.nan],
            "sigma_cal_logg": [0.1, 0.2, np.nan],
            "flag_domain": [False, True, False],
            "flag_any": [False, True, True],
            "xp_g_mag": [12.0, 13.0, np.nan],
        }
    )
    model = {
        "name": "synthetic",
        "fingerprint": "0123abcd",
        "card": {"text": "# a card\nline two: [α/M] with σ"},  # FITS headers are ASCII
        "domain": {"labels": {"teff": [4000, 5000]}, "inputs": {}},
        "domain_checked": {"labels": ["teff"], "inputs": {}, "inputs_missing": []},
        "calibration": {"teff": 1.2, "logg": 1.1},
        "sigma_to_quote": "sigma_cal_<label>",
    }
    f = write_table_file(df, fmt, tmp_path / f"t{FORMATS[fmt]}", model, ["teff", "logg"])
    assert [p.name for p in tmp_path.iterdir()] == [f.name]
    from astropy.table import Table

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 'dex' is neither a FITS nor a VOUnit unit: kept as text
        kw = {
            "parquet": {},
            "fits": {"hdu": "LABELS"},
            "votable": {},
            "csv": {"format": "ascii.ecsv"},
        }[fmt]
        t = Table.read(f, **kw)
    assert list(t.colnames) == list(df.columns) and len(t) == 3
    np.testing.assert_array_equal(np.asarray(t["flag_any"], bool), df.flag_any)
    np.testing.assert_allclose(np.asarray(t["mu_teff"], float)[:2], [4500.0, 4600.0])
    unit = {c: (str(t[c].unit) if t[c].unit is not None else "") for c in t.colnames}
    if fmt == "parquet":  # Arrow field metadata (astropy reads only its own)
        import pyarrow.parquet as pq

        unit = {x.name: (x.metadata or {}).get(b"unit", b"").decode() for x in pq.read_schema(f)}
    assert unit["mu_teff"] == "K" and unit["xp_g_mag"] == "mag"
    assert unit["mu_logg"] == ("dex(cm s-2)" if fmt == "parquet" else "dex")
    if fmt == "parquet":
        import pyarrow.parquet as pq

        rec = json.loads(pq.read_schema(f).metadata[b"spectra_ml_model"])
    elif fmt == "fits":
        from astropy.io import fits

        with fits.open(f) as h:
            rec = json.loads(h["MODEL_CARD"].data["record_json"][0])
            assert h[0].header["MODEL"] == "synthetic" and h[0].header["CALIB"] is True
            assert list(h[0].header["COMMENT"]) == ["# a card", "line two: [alpha/M] with sigma"]
            assert "cm s-2" in h["LABELS"].header["TCOMM4"]
    elif fmt == "votable":
        from astropy.io.votable import parse

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            vt = parse(str(f))
        rec = json.loads({i.name: i.value for i in vt.resources[0].infos}["model_record"])
        assert "cm s-2" in vt.get_first_table().get_field_by_id("mu_logg").description
    else:
        rec = json.loads(
            t.meta["spectra_ml_model"]
        )  # JSON text in the YAML header (keeps newlines)
        assert "cm s-2" in t["mu_logg"].description
        assert len(pd.read_csv(f, comment="#")) == 3
    assert rec == model
