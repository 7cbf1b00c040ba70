"""kane.abundances on the real files of the local data mirror: counts recomputed independently."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from spectra_ml.core import DataError, MissingColumnError, MissingInputError, local_data_path
from spectra_ml.kane import abundances as ab

DATA = local_data_path()
pytestmark = pytest.mark.skipif(
    DATA is None, reason="needs $SPECTRA_ML_LOCAL_DATA (the real data mirror)"
)
HALO = "apogee/Apogee_data_filtered_1612.fits"


@pytest.fixture(scope="module")
def library():
    from spectra_ml.data.samples import load_demo

    return load_demo()[0]


@pytest.fixture(scope="module")
def built(library):
    return ab.abundance_labels(library, DATA)


def _lib_ids():
    "The library's Gaia DR3 ids and APOGEE ids, read with astropy alone."
    from spectra_ml.data.samples import demo_data_path

    t = Table.read(demo_data_path())
    return np.asarray(t["gaiaedr3_source_id"], np.int64), np.char.strip(
        np.asarray(t["apogee_id"]).astype(str)
    )


@pytest.mark.slow
def test_cut_flow_counts_recomputed(built):
    table, flow = built
    sid, aid = _lib_ids()
    h = Table.read(DATA / HALO)
    inlib = np.isin(np.asarray(h["dr3_source_id"], np.int64), sid)
    clean = inlib & (h["n_fe_flag"] == 0) & (h["o_fe_flag"] == 0) & (h["al_fe_flag"] == 0)
    assert (inlib.sum(), clean.sum()) == (261, 185)  # hand-counted on the real file
    s = Table.read(DATA / "apogee/apogee_dr16_sgr_members.fits")
    s = s[(np.asarray(s["EXTRATARG"]) & 16) == 0]
    n_sgr = np.isin(np.char.strip(np.asarray(s["APOGEE_ID"]).astype(str)), aid).sum()
    mo = Table.read(DATA / "apogee/Montalban2021_X_APOGEE_DR17.fits")
    n_mo = np.isin(np.asarray(mo["GAIAEDR3_SOURCE_ID"], np.int64), sid).sum()
    m = Table.read(DATA / "clusters/meszaros2015_gc_szabolcs.dat", format="ascii.basic")
    mid, first = np.unique(np.asarray(m["id"]).astype(str), return_index=True)
    any_m = np.array(
        [(m["nfe"][i] != 9999) or (m["ofe"][i] != 9999) or (m["alfe"][i] != 9999) for i in first]
    )
    n_mes_match, n_mes_any = np.isin(mid, aid).sum(), (np.isin(mid, aid) & any_m).sum()
    with fits.open(DATA / "clusters/omegacen_giants_na_al.fits") as o:
        n_oc = np.isin(np.asarray(o[1].data["Source"], np.int64), sid).sum()
    assert (n_sgr, n_mo, n_mes_match, n_mes_any, n_oc) == (6, 9, 43, 42, 4)

    def rem(source, cut):
        return int(flow[(flow.source == source) & flow.cut.str.startswith(cut)].remaining.iloc[0])

    assert rem("dr17_halo", "in the library") == inlib.sum()
    assert rem("dr17_halo", "training label: their flags") == clean.sum()
    assert rem("dr16_sgr", "in the library") == n_sgr
    assert rem("dr17_montalban", "in the library") == n_mo
    assert rem("meszaros2015", "in the library") == n_mes_match
    assert rem("meszaros2015", "has any") == n_mes_any
    assert rem("omegacen", "in the library") == n_oc
    assert (
        len(table) == inlib.sum() + n_sgr + n_mo + n_mes_any + n_oc == rem("all", "stars with any")
    )


@pytest.mark.slow
def test_one_row_per_star_and_training_rules(built, library):
    table, _ = built
    assert table.source_id.is_unique and table.source_id.isin(library.source_id).all()
    assert set(table.apogee_id) <= set(library.apogee_id)
    flags = table[["n_fe_flag", "o_fe_flag", "al_fe_flag"]]
    assert not table.training_label[
        (flags != 0).any(axis=1)
    ].any()  # a nonzero flag is never a label
    assert (table.scale[table.training_label] == "DR17").all()
    assert table.validation_only[table.scale.isin(["DR16", "meszaros2015", "omegacen"])].all()
    assert int(table.training_label.sum()) == 185 + 1  # halo clean + the one clean Montalbán star
    mes = table[table.label_source == "meszaros2015"]
    assert set(mes.meszaros2015__meszaros_pop.unique()) <= {1, 2, 4}


def test_n_o_and_error_recomputed():
    h = Table.read(DATA / HALO)
    n, o = np.asarray(h["n_fe"], float), np.asarray(h["o_fe"], float)
    sn, so = np.asarray(h["n_fe_err"], float), np.asarray(h["o_fe_err"], float)
    ids = np.asarray(h["dr3_source_id"], np.int64)
    per = {
        "dr17_halo": ab.match_source(
            __import__("pandas").DataFrame(
                {"source_id": ids, "apogee_id": np.asarray(h["apogee_id"]).astype(str)}
            ),
            "dr17_halo",
            ab.read_abundance_source("dr17_halo", DATA),
        )[0]
    }
    lab = ab._label_block(per, per["dr17_halo"].index)
    order = np.searchsorted(ids, lab.index.to_numpy(), sorter=np.argsort(ids))
    k = np.argsort(ids)[order]
    np.testing.assert_allclose(lab.n_o, n[k] - o[k], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lab.n_o_err, np.sqrt(sn[k] ** 2 + so[k] ** 2), rtol=0, atol=1e-12)
    assert (lab.label_source == "dr17_halo").all() and len(lab) == 1612


def test_missing_file_names_it(tmp_path):
    with pytest.raises(MissingInputError, match="Apogee_data_filtered_1612.fits"):
        ab.read_abundance_source("dr17_halo", tmp_path)


def test_missing_column_names_file_and_column(tmp_path):
    (tmp_path / "apogee").mkdir()
    t = Table.read(DATA / HALO)
    t.remove_column("o_fe_flag")
    t.write(tmp_path / HALO)
    with pytest.raises(MissingColumnError, match=r"Apogee_data_filtered_1612.fits.*o_fe_flag"):
        ab.read_abundance_source("dr17_halo", tmp_path)


def test_meszaros_bad_header_names_file(tmp_path):
    (tmp_path / "clusters").mkdir()
    src = DATA / "clusters/meszaros2015_gc_szabolcs.dat"
    lines = src.read_text().splitlines()
    (tmp_path / "clusters/meszaros2015_gc_szabolcs.dat").write_text(
        "\n".join([lines[0].replace("nfe", "nxx"), *lines[1:]])
    )
    with pytest.raises(DataError, match="meszaros2015_gc_szabolcs.dat"):
        ab.read_abundance_source("meszaros2015", tmp_path)


def test_library_without_columns_is_refused():
    import pandas as pd

    with pytest.raises(MissingColumnError, match="apogee_id"):
        ab.abundance_labels(pd.DataFrame({"source_id": [1]}), DATA)


@pytest.mark.slow
def test_scale_offsets_measured():
    t = ab.scale_offsets(DATA).set_index(["source", "element"])
    assert (t.loc["dr16_sgr"].n == 0).all()  # no DR16 Sgr star is in the DR17 files
    assert (t.loc["meszaros2015"].n == 2).all()
    assert not t.on_dr17_scale.any()
