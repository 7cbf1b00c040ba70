"""The reference-catalogue readers on the real files of the local mirror, and their errors on bad input."""

import numpy as np
import pytest

from spectra_ml.data import references as cat
from spectra_ml.core import DataError, MissingInputError


def test_harris_and_vb21_readers(local_data):
    h = cat.read_harris_feh(local_data / "clusters" / "harris2010_mwgc.dat")
    assert 150 <= len(h) <= 157 and h.key.is_unique
    feh = dict(zip(h.key, h.feh_harris))
    assert (
        feh["ngc104"] == -0.72 and feh["ngc6205"] == -1.53 and feh["pal5"] == -1.41
    )  # published values
    ebv = dict(zip(h.key, h.ebv_harris))
    assert ebv["ngc104"] == 0.04 and ebv["ngc6205"] == 0.02  # the fixed-width E(B-V) column
    mem = cat.read_vb21_members(local_data / "vb21_members" / "catalogues")
    assert (mem.memberprob >= 0.5).all() and mem.source_id.dtype == np.int64
    assert mem.cluster.nunique() > 100
    assert mem.key.isin(h.key).mean() > 0.9  # the names of both catalogues meet in `gc_key`


def test_vb21_member_probability_cut_is_applied(local_data):
    folder = local_data / "vb21_members" / "catalogues"
    every = cat.read_vb21_members(folder, 0.0)
    cut = cat.read_vb21_members(folder, 0.5)
    assert every.cluster.nunique() == 146  # the mirror's 146 cluster files
    assert len(cut) == (every.memberprob >= 0.5).sum() and len(cut) < len(every)


def test_occam_and_meszaros_readers(local_data, demo_data):
    mem, cls = cat.read_occam(local_data / "apogee" / "occam_member-DR17.fits")
    assert (mem.pm_prob >= 0.5).all() and (mem.rv_prob >= 0.5).all() and cls.n_occam.min() >= 1
    assert cls.n_occam.sum() == len(mem) and cls.cluster.is_unique
    m15 = cat.read_meszaros2015(local_data / "clusters" / "meszaros2015_gc_szabolcs.dat")
    assert len(m15) == 428 and m15.n_fe.notna().sum() == 134 and m15.al_fe.notna().sum() == 427
    joined = demo_data[0].drop_duplicates("apogee_id").merge(m15, on="apogee_id")
    assert len(joined) == 43  # as the data README says
    assert set(m15["pop"].dropna().unique()) <= {1, 2, 4}
    assert not (m15.select_dtypes("number") == 9999).any().any()  # the missing-value code is gone


def test_omega_cen_giants(local_data, demo_data):
    om = cat.read_omegacen_giants(local_data / "clusters" / "omegacen_giants_na_al.fits")
    assert len(om) == 180 and om.source_id.is_unique and om.source_id.dtype == np.int64
    assert -1.9 < om.fe_h_ocen.median() < -1.4  # omega Cen's metallicity
    assert om.source_id.isin(demo_data[0].source_id).sum() == 4


def test_vb21_orbits_and_galpy_clusters(local_data):
    vb = cat.read_vb21_orbits(local_data / "clusters" / "vb21_gaiatools_result_orbits.txt")
    assert len(vb) == 170 and (vb.peri_16 <= vb.peri).all() and (vb.peri <= vb.peri_84).all()
    assert (vb.peri <= vb.apo).all() and (vb.E < 0).all()  # bound orbits
    gcs = cat.load_galpy_gcs()
    assert len(gcs) == 161 and gcs.name.is_unique
    matched = gcs.name.map(cat.gc_key).isin(vb.name.map(cat.gc_key))
    assert matched.sum() >= 150  # galpy's names and VB21's meet in `gc_key`


def test_sgr_members_distance_and_parallax_note(local_data):
    from spectra_ml.kane.dynamics import distance_from_parallax

    sgr, info = cat.load_sgr_members(local_data / "apogee" / "apogee_dr16_sgr_members.fits")
    assert len(sgr) == 400 and info["distance_kpc"] == 26.67 and "uninformative" in info["note"]
    assert (sgr.distance == 26.67).all() and sgr.rv.notna().all()
    _, low = distance_from_parallax(sgr.parallax, sgr.parallax_error)
    assert info["frac_low_parallax_snr"] == low.mean()  # the same flag as the dynamics module's
    moved, _ = cat.load_sgr_members(local_data / "apogee" / "apogee_dr16_sgr_members.fits", 20.0)
    assert (moved.distance == 20.0).all()


def test_gc_key_across_catalogue_spellings():
    assert cat.gc_key("NGC_104_47Tuc") == cat.gc_key("NGC 104") == cat.gc_key("NGC104") == "ngc104"
    assert cat.gc_key("NGC_6205_M_13") == "ngc6205" and cat.gc_key("Pal_5") == "pal5"
    assert cat.gc_key("Terzan5-missingvlos") == "terzan5"


def test_missing_files_name_the_source(tmp_path):
    with pytest.raises(MissingInputError, match="harris2010"):
        cat.read_harris_feh(tmp_path / "mwgc.dat")
    with pytest.raises(
        FileNotFoundError, match="vb21_members"
    ):  # callers of the built-in still work
        cat.read_vb21_members(tmp_path)
    with pytest.raises(MissingInputError, match="SPECTRA_ML_LOCAL_DATA"):
        cat.read_omegacen_giants(tmp_path / "omegacen.fits")


def test_bad_files_name_the_file_and_row(tmp_path):
    (tmp_path / "NGC_1.txt").write_text("1 2 3\n")
    with pytest.raises(DataError, match=r"NGC_1\.txt: data row 1"):
        cat.read_vb21_members(tmp_path)
    (tmp_path / "NGC_1.txt").write_text("not_an_id 2 3\n")
    with pytest.raises(DataError, match=r"NGC_1\.txt: not a VB21 member file"):
        cat.read_vb21_members(tmp_path)
    orbits = tmp_path / "orbits.txt"
    orbits.write_text("# header\nNGC104 " + " ".join(["1"] * 17) + " x\n")
    with pytest.raises(DataError, match=r"line 2, column 'E': not a number"):
        cat.read_vb21_orbits(orbits)
    harris = tmp_path / "mwgc.dat"
    harris.write_text("a table without the part II header\n")
    with pytest.raises(DataError, match="part II header"):
        cat.read_harris_feh(harris)
    mz = tmp_path / "gc.dat"
    mz.write_text("id cl teff\n2M1 M13 4500\n")
    with pytest.raises(DataError, match="header lacks"):
        cat.read_meszaros2015(mz)


def test_fits_reader_refuses_the_wrong_table(local_data):
    with pytest.raises(DataError, match="APOGEE_ID"):
        cat.read_occam(local_data / "clusters" / "omegacen_giants_na_al.fits")
