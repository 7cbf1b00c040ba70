"""Kane et al. Appendix A: the candidate catalogue written from prediction partitions, its columns and
units in the paper's order, FITS equal to Parquet, missing labels omitted, and bounded memory."""

import numpy as np
import pandas as pd
import pytest

from conftest import KANE_APPENDIX_A


def _read(out):
    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))], ignore_index=True)


def _synthetic_predictions(folder, n_parts, rows, labels, seed=0):
    """SYNTHETIC prediction partitions in predict_catalogue's schema (shapes and bookkeeping only)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_parts):
        d = pd.DataFrame({"source_id": np.arange(i * rows, (i + 1) * rows, dtype=np.int64)})
        for lab in labels:
            d[f"mu_{lab}"] = rng.normal(size=rows)
            d[f"sigma_alea_{lab}"] = rng.uniform(0.1, 0.2, rows)
            d[f"sigma_epi_{lab}"] = rng.uniform(0.01, 0.05, rows)
            d[f"sigma_{lab}"] = np.hypot(d[f"sigma_alea_{lab}"], d[f"sigma_epi_{lab}"])
        d["ebv_sfd"] = rng.uniform(0, 1, rows)
        d["flag_bad_input"] = False
        d.to_parquet(folder / f"part-{i:05d}.parquet", index=False)


def test_appendix_a_columns_units_fits_equals_parquet(tmp_path):
    from astropy.io import fits
    from astropy.table import Table
    import pyarrow.parquet as pq
    from spectra_ml.kane.catalogue import write_appendix_a
    from spectra_ml.core import KANE_LABELS

    _synthetic_predictions(tmp_path / "pred", 3, 50, KANE_LABELS)
    flags = lambda df: pd.DataFrame(
        {
            "flag_high_reliability": df.ebv_sfd < 0.2,  # noqa: E731
            "flag_2p_candidate": df.mu_n_o - df.sigma_alea_n_o > 0.65,
        }
    )
    r = write_appendix_a(tmp_path / "pred", tmp_path / "cat" / "appendix_a", KANE_LABELS, flags)
    paper = list(KANE_APPENDIX_A)  # Kane Appendix A, in this order
    assert r["columns"] == paper and r["missing"] == {} and r["n_rows"] == 150
    p = pd.read_parquet(r["parquet"])
    assert list(p.columns) == paper + ["flag_high_reliability", "flag_2p_candidate"]
    src = _read(tmp_path / "pred")
    np.testing.assert_array_equal(p.no_stdev, src.sigma_alea_n_o)  # the paper's σ (Kane §2.2)
    np.testing.assert_array_equal(p.ebv, src.ebv_sfd)
    np.testing.assert_array_equal(p.flag_2p_candidate, src.mu_n_o - src.sigma_alea_n_o > 0.65)
    schema = pq.read_schema(r["parquet"])
    assert (
        schema.field("teff").metadata[b"unit"] == b"K"
        and schema.field("ebv").metadata[b"unit"] == b"mag"
    )
    assert b"2.2" in schema.field("feh_stdev").metadata[b"description"]
    with fits.open(r["fits"]) as h:
        head = h[1].header
        assert head["TUNIT2"] == "K" and head["TTYPE12"] == "ebv" and "Sec. 2.2" in head["TCOMM7"]
        assert head["NAXIS2"] == 150
    t = Table.read(r["fits"]).to_pandas()
    pd.testing.assert_frame_equal(
        t, p, check_dtype=False
    )  # FITS and Parquet hold the same catalogue
    passes = pd.read_parquet(r["passes"])
    assert list(passes.columns) == ["source_id"] + [f"{c}_pass_stdev" for c in paper[1:6]]
    np.testing.assert_array_equal(passes.alfe_pass_stdev, src.sigma_epi_al_fe)
    tot = write_appendix_a(tmp_path / "pred", tmp_path / "tot", KANE_LABELS, sigma="total")
    np.testing.assert_array_equal(pd.read_parquet(tot["parquet"]).teff_stdev, src.sigma_teff)


def test_appendix_a_demo_labels_omit_what_is_missing(tmp_path):
    from spectra_ml.kane.catalogue import write_appendix_a
    from spectra_ml.core import DEMO_LABELS, MissingColumnError

    _synthetic_predictions(tmp_path / "pred", 2, 10, DEMO_LABELS)
    r = write_appendix_a(tmp_path / "pred", tmp_path / "demo", DEMO_LABELS)
    assert r["columns"] == [
        "source_id",
        "teff",
        "logg",
        "feh",
        "teff_stdev",
        "logg_stdev",
        "feh_stdev",
        "ebv",
    ]
    assert sorted(r["missing"]) == ["alfe", "no"]  # omitted, not filled
    with pytest.raises(MissingColumnError, match="n_o"):
        write_appendix_a(tmp_path / "pred", tmp_path / "bad", ["teff", "n_o"])


@pytest.mark.slow
def test_appendix_a_streams_with_bounded_memory(tmp_path):
    """Peak Python memory while writing 40 synthetic partitions stays near one chunk, far below the table."""
    import tracemalloc
    from spectra_ml.kane.catalogue import write_appendix_a
    from spectra_ml.core import KANE_LABELS

    _synthetic_predictions(
        tmp_path / "pred", 40, 5000, KANE_LABELS
    )  # 200,000 rows, ~36 MB in memory
    whole = 200_000 * (1 + 4 * len(KANE_LABELS) + 2) * 8
    tracemalloc.start()
    r = write_appendix_a(tmp_path / "pred", tmp_path / "cat", KANE_LABELS, chunk_rows=2000)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert r["n_rows"] == 200_000 and r["n_partitions"] == 40
    assert peak < whole / 10, (peak, whole)


def test_appendix_a_takes_no_alfe_from_another_model_by_source_id(tmp_path):
    """The demo's [N/O], [Al/Fe] come from the real-abundance model (13_tagging), joined by source_id:
    Kane's 12 columns, the values of the right stars, NaN (not invented) for stars it does not label."""
    from spectra_ml.kane.catalogue import write_appendix_a
    from spectra_ml.core import DEMO_LABELS

    _synthetic_predictions(tmp_path / "pred", 2, 10, DEMO_LABELS)
    ids = np.arange(0, 20, 2, dtype=np.int64)[::-1]  # every other star, in another order
    extra = pd.DataFrame({"source_id": ids, "mu_n_o": ids * 0.1, "sigma_alea_n_o": 0.2})
    extra["mu_al_fe"], extra["sigma_alea_al_fe"] = -ids * 0.01, 0.1
    r = write_appendix_a(
        tmp_path / "pred", tmp_path / "demo", [*DEMO_LABELS, "n_o", "al_fe"], extra=extra
    )
    assert r["columns"] == list(KANE_APPENDIX_A) and not r["missing"]
    cat = pd.read_parquet(r["parquet"]).set_index("source_id")
    assert np.allclose(cat.loc[ids, "no"], ids * 0.1) and np.allclose(
        cat.loc[ids, "alfe"], -ids * 0.01
    )
    assert cat.loc[ids + 1, ["no", "no_stdev", "alfe", "alfe_stdev"]].isna().all().all()
