"""2MASS J, H, Ks and AllWISE W1, W2 from the Gaia archive's DR3 best-neighbour tables (Fallows & Sanders §2's
colours; AllWISE stands in for their unWISE), offline.

The Gaia archive is replaced by `TapStandIn`, a LOOPBACK STAND-IN for TAP: a callable with the signature of
astroquery's `launch_job_async(query, upload_resource=..., upload_table_name=...)` that reads the ids from the
uploaded VOTable and answers with HAND-MADE rows in the shapes the archive's LEFT OUTER JOINs give (a star with both
neighbours, one with 2MASS only, one with none, one whose AllWISE join gives two rows, one whose 2MASS clean oid
fans out to two PSC duplicates). Its magnitudes are made up for the test: none is an archive value. The mirror test
uses the SYNTHETIC mirror of tests/builders/synthetic_mirror.py (made-up rows too)."""

import numpy as np
import pandas as pd
import pytest
from astropy.table import MaskedColumn, Table

from spectra_ml.data import sources

#: made-up source_ids of the stand-in's stars (valid ids: positive 64-bit integers)
BOTH, TMASS_ONLY, NONE, TWO_WISE, TWO_TMASS, UNKNOWN = 1001, 1002, 1003, 1004, 1005, 1006
NUMERIC = ["j", "j_err", "h", "h_err", "k", "k_err", "w1", "w1_err", "w2", "w2_err"]
# hand-made 2MASS rows: designation, the best neighbour's original_ext_source_id, J, σJ, H, σH, Ks, σKs, ph_qual
TM_BOTH = ("00000001+0000001", "00000001+0000001", 10.1, 0.021, 9.8, 0.022, 9.7, 0.019, "AAA")
TM_ONLY = ("00000002+0000002", "00000002+0000002", 11.1, 0.031, 10.8, 0.032, 10.7, 0.029, "AAB")
TM_D = ("00000004+0000004", "00000004+0000004", 12.1, 0.041, 11.8, 0.042, 11.7, 0.039, "ABA")
TM_E_DUP = ("00000005+0000005B", "00000005+0000005", 13.9, 0.09, 13.6, 0.09, 13.5, 0.09, "CCC")
TM_E_BEST = ("00000005+0000005", "00000005+0000005", 13.1, 0.051, 12.8, 0.052, 12.7, 0.049, "BAA")
# hand-made AllWISE rows: allwise_oid, angular distance (arcsec), W1, σW1, W2, σW2, ph_qual
AW_BOTH = (11, 0.12, 9.6, 0.023, 9.65, 0.02, "AAUU")
AW_D_FAR = (41, 0.9, 12.9, 0.09, 12.95, 0.09, "BBUU")
AW_D_NEAR = (40, 0.2, 11.6, 0.043, 11.65, 0.04, "AAUU")
AW_E = (51, 0.3, 12.6, 0.053, 12.65, 0.05, "AAUU")
#: the rows the archive's LEFT OUTER JOINs give per star: (2MASS part, AllWISE part), None = NULLs
ANSWERS = {
    BOTH: [(TM_BOTH, AW_BOTH)],
    TMASS_ONLY: [(TM_ONLY, None)],
    NONE: [(None, None)],
    TWO_WISE: [(TM_D, AW_D_FAR), (TM_D, AW_D_NEAR)],
    TWO_TMASS: [(TM_E_DUP, AW_E), (TM_E_BEST, AW_E)],
}
TM_COLS = ["tmass_designation", "tmass_best_id", *NUMERIC[:6], "tmass_ph_qual"]
AW_COLS = ["allwise_oid", "allwise_distance", *NUMERIC[6:], "allwise_ph_qual"]


def _phot(tm, aw) -> list:
    "Expected numbers of one star: 2MASS then AllWISE magnitudes and errors (NaN where None)."
    return [*(tm[2:8] if tm else [np.nan] * 6), *(aw[2:6] if aw else [np.nan] * 4)]


class TapStandIn:
    """Loopback stand-in for the Gaia archive's TAP service (no network): records each query and uploaded id list,
    answers cross-match queries with ANSWERS' hand-made rows and gaia_source queries with made-up rows."""

    def __init__(self, fail_calls=(), gaia_ids=None, bad=False):
        self.queries, self.uploads, self.calls = [], [], 0
        self.fail_calls = set(
            fail_calls
        )  # call numbers (0-based) that raise, as a dropped connection would
        self.gaia_ids = gaia_ids  # the ids gaia_source holds (answered in reverse order); None: all
        self.bad = bad  # answer the cross-match without its columns (a wrong table)

    def __call__(self, query, upload_resource=None, upload_table_name=None):
        k, self.calls = self.calls, self.calls + 1
        self.queries.append(query)
        ids = [int(i) for i in Table.read(upload_resource, format="votable")["source_id"]]
        self.uploads.append(ids)
        if k in self.fail_calls:
            raise ConnectionError("stand-in: connection reset")
        t = (
            self._gaia_source(query, ids)
            if "gaiadr3.gaia_source" in query
            else self._crossmatch(ids)
        )
        return type("Job", (), {"get_results": lambda self: t})()

    def _gaia_source(self, query, ids):
        cols = [c.strip()[2:] for c in query.split("SELECT", 1)[1].split(" FROM ")[0].split(",")]
        have = [i for i in ids if self.gaia_ids is None or i in self.gaia_ids][::-1]
        t = Table({"source_id": np.asarray(have, np.int64)})
        for c in cols[1:]:
            t[c] = np.asarray([i % 97 + 0.5 for i in have], float)  # made up: a function of the id
        return t

    def _crossmatch(self, ids):
        if self.bad:
            return Table({"source_id": np.asarray(ids, np.int64)})
        rows = [(i, tm, aw) for i in ids for tm, aw in ANSWERS.get(i, [(None, None)])]
        t = Table({"source_id": np.asarray([r[0] for r in rows], np.int64)})
        for cols, part, fill in ((TM_COLS, 1, "x"), (AW_COLS, 2, 0)):
            for n, c in enumerate(cols):
                v = [r[part][n] if r[part] else None for r in rows]
                is_text = c.endswith(("designation", "best_id", "ph_qual"))
                data = [x if x is not None else ("" if is_text else fill) for x in v]
                t[c] = MaskedColumn(data, mask=[x is None for x in v])
        return t


def test_adql_names_the_real_tables_and_never_the_ids(monkeypatch):
    """The query joins the uploaded ids to the archive's real DR3 best-neighbour tables by the documented path
    (clean oid -> join table -> PSC designation; allwise_oid), with LEFT OUTER JOINs; the ids go only in the upload."""
    q = sources.crossmatch_photometry_adql()
    for table in (
        "gaiadr3.tmass_psc_xsc_best_neighbour",
        "gaiadr3.tmass_psc_xsc_join",
        "gaiadr1.tmass_original_valid",
        "gaiadr3.allwise_best_neighbour",
        "gaiadr1.allwise_original_valid",
    ):
        assert f"LEFT OUTER JOIN {table} AS" in q
    assert "FROM tap_upload.ids AS u" in q and q.count("LEFT OUTER JOIN") == 5
    assert " JOIN " not in q.replace("LEFT OUTER JOIN", "")  # no inner join drops a star
    assert "xj.clean_tmass_psc_xsc_oid = xt.clean_tmass_psc_xsc_oid" in q
    assert (
        "tm.designation = xj.original_psc_source_id" in q and "aw.allwise_oid = xw.allwise_oid" in q
    )
    for col in ("j_m", "j_msigcom", "h_m", "h_msigcom", "ks_m", "ks_msigcom", "ph_qual"):
        assert f"tm.{col} AS" in q
    for col in ("w1mpro", "w1mpro_error", "w2mpro", "w2mpro_error", "ph_qual"):
        assert f"aw.{col} AS" in q
    with pytest.raises(ValueError):
        sources.crossmatch_photometry_adql("ids; DROP TABLE x")
    ids = [BOTH, TWO_TMASS, NONE]
    tap = TapStandIn()
    sources.crossmatch_photometry_tap(ids, launch=tap, progress=False)
    assert tap.uploads == [ids] and tap.queries == [q]
    assert not any(str(i) in q for i in ids)
    monkeypatch.setenv("SPECTRA_ML_OFFLINE", "1")
    with pytest.raises(sources.SourceUnavailable, match="gaia_dr3.*downloads are disabled"):
        sources.crossmatch_photometry_tap(
            ids
        )  # no stand-in, offline: refused, never a network call


def test_one_row_per_requested_id_in_order_with_nan_where_no_neighbour():
    """Rows in equal rows out, in the request's order, whatever the answer's fan-out: NaN where a star has no
    neighbour (or the answer omits it); of two AllWISE rows the nearer, of 2MASS duplicates the best neighbour's."""
    ids = [TWO_TMASS, NONE, BOTH, UNKNOWN, TWO_WISE, TMASS_ONLY]
    tap = TapStandIn()
    p = sources.crossmatch_photometry_tap(ids, launch=tap, progress=False)
    assert sum(len(ANSWERS.get(i, [0])) for i in ids) == 8  # the stand-in answered 8 rows for 6 ids
    assert p.source_id.tolist() == ids and list(p.columns) == [
        "source_id",
        *sources.CROSSMATCH_COLUMNS,
    ]
    a = p.set_index("source_id")
    np.testing.assert_allclose(a.loc[BOTH, NUMERIC].to_numpy(float), _phot(TM_BOTH, AW_BOTH))
    np.testing.assert_allclose(a.loc[TMASS_ONLY, NUMERIC].to_numpy(float), _phot(TM_ONLY, None))
    np.testing.assert_allclose(a.loc[TWO_WISE, NUMERIC].to_numpy(float), _phot(TM_D, AW_D_NEAR))
    np.testing.assert_allclose(a.loc[TWO_TMASS, NUMERIC].to_numpy(float), _phot(TM_E_BEST, AW_E))
    for i in (NONE, UNKNOWN):
        assert a.loc[i, NUMERIC].isna().all() and a.loc[i, "tmass_ph_qual"] is None
    assert (
        a.loc[TWO_TMASS, "tmass_ph_qual"] == "BAA" and a.loc[TWO_WISE, "allwise_ph_qual"] == "AAUU"
    )
    assert (
        a.loc[TMASS_ONLY, "allwise_ph_qual"] is None and a.loc[TMASS_ONLY, "tmass_ph_qual"] == "AAB"
    )
    assert all(p[c].dtype == float for c in NUMERIC)
    assert sources.crossmatch_photometry_tap([], launch=tap).columns.tolist() == p.columns.tolist()


def test_gaia_loader_merges_the_photometry_and_keeps_gaia_sources_rows(tmp_path):
    """gaia_archive_loaders' gaia_loader: gaia_source's rows (number and order: the archive's, a star it lacks is
    not added) with the cross-match columns merged on source_id; crossmatch off: the same columns, NaN."""
    ids = [BOTH, TMASS_ONLY, NONE, TWO_WISE, TWO_TMASS]
    held = {
        BOTH,
        NONE,
        TWO_WISE,
        TWO_TMASS,
    }  # gaia_source lacks TMASS_ONLY; answers in reverse order
    tap = TapStandIn(gaia_ids=held)
    _, gaia_loader = sources.gaia_archive_loaders(
        tmp_path, load=lambda ids: "", launch=tap, crossmatch=True
    )
    g = gaia_loader(ids)
    assert g.source_id.tolist() == [
        TWO_TMASS,
        TWO_WISE,
        NONE,
        BOTH,
    ]  # gaia_source's rows, unchanged
    assert list(g.columns) == [*sources.GAIA_SOURCE_COLUMNS, *sources.CROSSMATCH_COLUMNS]
    assert np.allclose(g.parallax, [i % 97 + 0.5 for i in g.source_id])
    phot = sources.crossmatch_photometry_tap(ids, launch=TapStandIn(), progress=False)
    want = phot.set_index("source_id").loc[g.source_id, NUMERIC].to_numpy(float)
    np.testing.assert_array_equal(g[NUMERIC].to_numpy(float), want)
    assert g.set_index("source_id").loc[NONE, NUMERIC].isna().all()
    assert any("tmass_psc_xsc_best_neighbour" in q for q in tap.queries)
    for crossmatch in (
        None,
        False,
    ):  # an injected stand-in without crossmatch=True: gaia_source only
        tap = TapStandIn(gaia_ids=held)
        _, gl = sources.gaia_archive_loaders(
            tmp_path / str(crossmatch), load=lambda ids: "", launch=tap, crossmatch=crossmatch
        )
        g2 = gl(ids)
        assert list(g2.columns) == list(g.columns) and g2.source_id.tolist() == g.source_id.tolist()
        assert g2[NUMERIC].isna().all().all() and len(tap.queries) == 1


def test_chunks_resume_from_the_cache(tmp_path):
    """chunk=2: three uploads; a failed chunk is reported and the rerun asks only for it; a third run is served
    from the cache alone (the TAP callable is never called)."""
    ids = [BOTH, TMASS_ONLY, NONE, TWO_WISE, TWO_TMASS]
    tap = TapStandIn(fail_calls={1})
    with pytest.raises(sources.SourceUnavailable, match="rerun to resume"):
        sources.crossmatch_photometry_tap(ids, launch=tap, cache=tmp_path, chunk=2, retries=0)
    assert tap.uploads == [[BOTH, TMASS_ONLY], [NONE, TWO_WISE], [TWO_TMASS]]
    assert len(list(tmp_path.glob("tmass_allwise_*.parquet"))) == 2
    tap2 = TapStandIn()
    p = sources.crossmatch_photometry_tap(ids, launch=tap2, cache=tmp_path, chunk=2, progress=False)
    assert tap2.uploads == [[NONE, TWO_WISE]] and p.source_id.tolist() == ids

    def refuse(*a, **k):
        raise AssertionError("the cache should have answered")

    again = sources.crossmatch_photometry_tap(ids, launch=refuse, cache=tmp_path, chunk=2)
    pd.testing.assert_frame_equal(again, p)
    whole = sources.crossmatch_photometry_tap(ids, launch=TapStandIn(), progress=False)
    pd.testing.assert_frame_equal(whole, p)  # chunked and whole give the same table


def test_a_wrong_answer_is_refused_and_not_cached(tmp_path):
    "An answer without the cross-match columns (another table) is an error after the retries; nothing is cached."
    tap = TapStandIn(bad=True)
    with pytest.raises(sources.SourceUnavailable, match="lacks"):
        sources.crossmatch_photometry_tap([BOTH, NONE], launch=tap, cache=tmp_path, retries=1)
    assert tap.calls == 2 and not list(tmp_path.glob("tmass_allwise_*.parquet"))


def test_mirror_route_gives_the_same_columns_as_nan(tmp_path, monkeypatch):
    """On the SYNTHETIC mirror (bulk gaia_source folders: no best-neighbour tables) gaia_loader returns the
    cross-match columns as NaN / None, with the archive route's column list and dtypes."""
    from conftest import load_tool

    builder = load_tool("synthetic_mirror")
    root = builder.write_synthetic_mirror(tmp_path / "synthetic", n_stars=200)
    ids = builder.synthetic_stars(200, 7).source_id.tolist()[:6]
    _, mirror_loader = sources.mirror_gaia_loaders(root, cache=tmp_path / "cache")
    m = mirror_loader(ids)
    assert sorted(m.source_id) == sorted(ids)
    assert m[NUMERIC].isna().all().all()
    assert all(v is None for c in sources.CROSSMATCH_FLAGS for v in m[c])
    monkeypatch.setenv("SPECTRA_ML_LOCAL_DATA", str(root))
    _, default_loader = sources.gaia_archive_loaders(
        tmp_path / "c"
    )  # the mirror is taken: no archive
    assert list(default_loader(ids).columns) == list(m.columns)
    _, archive_loader = sources.gaia_archive_loaders(
        tmp_path / "a", load=lambda ids: "", launch=TapStandIn(), crossmatch=True
    )
    a = archive_loader([BOTH, NONE])
    assert list(a.columns) == list(m.columns)
    assert [a[c].dtype for c in sources.CROSSMATCH_COLUMNS] == [
        m[c].dtype for c in sources.CROSSMATCH_COLUMNS
    ]
