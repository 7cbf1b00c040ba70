"""Catalogue-scale inference: partitions, resume after a kill, flags, and Dask identical to one process."""

import json
import numpy as np
import pandas as pd
import pytest

from spectra_ml.streaming import Workers, partition_done, predict_catalogue
from spectra_ml.data.samples import flux_columns


@pytest.fixture
def catalogue(quick_run, tmp_path):
    """Three real partitions cut from the quick run's sample, with one NaN spectrum and one repeated id."""
    root, _ = quick_run
    s = pd.read_parquet(root / "products" / "samples.parquet")
    cols = ["source_id"] + flux_columns(343)
    s = s[cols].iloc[:900].copy()
    s.iloc[5, 10] = np.nan  # a broken spectrum
    s.iloc[700, 0] = s.iloc[650, 0]  # a duplicate id inside partition 3
    d = tmp_path / "in"
    d.mkdir()
    for i in range(3):
        s.iloc[300 * i : 300 * (i + 1)].to_parquet(d / f"part-{i:03d}.parquet", index=False)
    return root / "model", d, s


def _read(out):
    return pd.concat([pd.read_parquet(p) for p in sorted(out.glob("*.parquet"))], ignore_index=True)


def test_stream_resume_and_flags(catalogue, tmp_path):
    model, d, s = catalogue
    out = tmp_path / "out"
    r = predict_catalogue(model, d, out, n_passes=10, progress=False)
    assert (
        r["n_computed"] == 3 and r["n_rows_computed"] == 900 and r["device"] == "cpu"
    )  # no GPU here
    res = _read(out)
    assert (res.source_id.to_numpy() == s.source_id.to_numpy()).all()  # every row, in order
    assert res.flag_bad_input.sum() == 1 and np.isnan(res.loc[5, "mu_teff"])
    assert res.flag_duplicate_id.sum() == 2 and res.model_fingerprint.nunique() == 1
    cal = json.loads((model / "calibration.json").read_text())["sigma_scale"]
    np.testing.assert_allclose(
        res.sigma_cal_teff, res.sigma_teff * cal["teff"]
    )  # the saved calibration is applied
    assert not res.flag_ood[~res.flag_bad_input].all()
    # a rerun recomputes nothing
    assert predict_catalogue(model, d, out, n_passes=10, progress=False)["n_computed"] == 0
    # a killed run: one output missing, one truncated, one stale .tmp left behind
    (out / "part-000.parquet").unlink()
    data = (out / "part-001.parquet").read_bytes()
    (out / "part-001.parquet").write_bytes(data[: len(data) // 2])
    (out / "part-002.parquet.tmp").write_bytes(b"partial")
    assert not partition_done(d / "part-001.parquet", out / "part-001.parquet")
    r = predict_catalogue(model, d, out, n_passes=10, progress=False)
    assert r["n_computed"] == 2 and r["n_skipped"] == 1
    pd.testing.assert_frame_equal(_read(out), res)  # same numbers as the uninterrupted run
    # the same rows rewritten: the input digest is of the content, still done; other rows: not done
    s.iloc[600:900].to_parquet(d / "part-002.parquet", index=False)
    assert partition_done(d / "part-002.parquet", out / "part-002.parquet")
    s.iloc[300:600].to_parquet(d / "part-002.parquet", index=False)
    assert not partition_done(d / "part-002.parquet", out / "part-002.parquet")


def test_dask_local_cluster_matches_single_process(catalogue, tmp_path):
    distributed = pytest.importorskip("distributed")
    model, d, _ = catalogue
    predict_catalogue(
        model, d, tmp_path / "one", n_passes=10, progress=False, workers=Workers(threads=1)
    )
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        r = predict_catalogue(
            model, d, tmp_path / "dask", n_passes=10, workers=Workers(client=client), progress=False
        )
    assert r["n_computed"] == 3
    pd.testing.assert_frame_equal(_read(tmp_path / "dask"), _read(tmp_path / "one"))


def test_cli_predict(catalogue, tmp_path, capsys):
    from spectra_ml.cli import main

    model, d, _ = catalogue
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--input",
                str(d),
                "--output",
                str(tmp_path / "o"),
                "--passes",
                "5",
            ]
        )
        == 0
    )
    assert (
        json.loads((tmp_path / "o" / "predict_summary.json").read_text())["n_rows_computed"] == 900
    )
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("wrote 900 stars to")
    assert (
        main(
            [
                "predict",
                "--model",
                str(model),
                "--input",
                str(tmp_path / "empty"),
                "--output",
                str(tmp_path / "o"),
            ]
        )
        == 2
    )


def test_notebook_streams_a_catalogue(catalogue, tmp_path):
    import shutil
    import papermill as pm
    from spectra_ml.core import RunDir
    from spectra_ml.pipeline import notebooks_dir, pick_kernel

    model, d, _ = catalogue
    run = RunDir(tmp_path / "run")
    shutil.copytree(model.parent / "model", run.model, dirs_exist_ok=True)
    shutil.copy(model.parent / "products" / "samples.parquet", run.products / "samples.parquet")
    pm.execute_notebook(
        str(notebooks_dir() / "09_inference.ipynb"),
        str(tmp_path / "06.ipynb"),
        parameters={
            "run_dir": str(run.root),
            "n_passes": 5,
            "catalogue_in": str(d),
            "catalogue_out": str(tmp_path / "cat"),
        },
        kernel_name=pick_kernel(),
        progress_bar=False,
    )
    s = run.read_summary()["predict_catalogue"]
    assert s["n_rows_computed"] == 900 and len(list((tmp_path / "cat").glob("*.parquet"))) == 3


@pytest.mark.slow  # a few seconds: the full suite runs it
def test_catalogue_uses_the_models_own_passes_unless_told(tmp_path):
    """`predict_catalogue(n_passes=None)` (the CLI default): the checkpoint model's registry passes."""
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.training import train_model

    s = build_demo_sample(["teff", "logg"], max_stars=300)[0]
    t = train_model(s, ["teff", "logg"], "uncertain_nn", progress=False, max_epochs=1)
    t.save(tmp_path / "model")
    d = tmp_path / "in"
    d.mkdir()
    phot = ["phot_bp_mean_mag", "phot_rp_mean_mag", "j", "h"]  # F&S's BP - RP and J - H inputs
    s[["source_id"] + flux_columns(343) + phot].iloc[:40].to_parquet(
        d / "part-000.parquet", index=False
    )
    r = predict_catalogue(tmp_path / "model", d, tmp_path / "own", progress=False)
    own = pd.read_parquet(tmp_path / "own" / "part-000.parquet")
    assert r["n_rows_computed"] == 40 and (own.n_passes == 50).all()  # Fallows & Sanders §3.1.1
    predict_catalogue(tmp_path / "model", d, tmp_path / "five", n_passes=5, progress=False)
    five = pd.read_parquet(tmp_path / "five" / "part-000.parquet")
    assert (five.n_passes == 5).all() and not np.allclose(
        five.sigma_model_teff, own.sigma_model_teff
    )


# --- keyed resume, partitions, carried columns, named inputs, Appendix A

LABELS4 = ["teff", "logg", "fe_h", "alpha_m"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A kane_mlp trained one epoch on 400 real demo giants, saved; and 120 real rows of its inputs."""
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.training import train_model

    root = tmp_path_factory.mktemp("tiny")
    s = build_demo_sample(LABELS4, max_stars=400)[0]
    train_model(s, LABELS4, "kane_mlp", progress=False, max_epochs=1).save(root / "model")
    rows = s[["source_id"] + flux_columns(343)].iloc[:120].reset_index(drop=True)
    return root / "model", rows, s.iloc[:120].reset_index(drop=True)


def _run(model, inp, out, shared_masks=None, **kw):
    if shared_masks is not None:  # a Predictor option: the folder opened as predict_catalogue does
        from spectra_ml.prediction import Predictor

        model = Predictor.load(model, shared_masks=shared_masks, device="auto")
    return predict_catalogue(model, inp, out, n_passes=3, progress=False, **kw)


@pytest.mark.slow
def test_resume_is_keyed_and_refuses_what_differs(tiny, tmp_path):
    from spectra_ml.streaming import ResumeMismatchError
    from spectra_ml.core import DataError

    model, rows, _ = tiny
    d = tmp_path / "in"
    d.mkdir()
    rows.iloc[:60].to_parquet(d / "a.parquet", index=False)
    out = tmp_path / "out"
    first = _run(model, d, out)
    assert first["files_hold"]["seed"] == [42] and first["files_hold"]["n_passes"] == [3]
    assert _run(model, d, out)["n_skipped"] == 1  # the same key: reused
    for kw, what in (
        ({"seed": 7}, "seed"),
        ({"batch_size": 64}, "batch_size"),
        ({"shared_masks": False}, "shared_masks"),
    ):
        with pytest.raises(ResumeMismatchError, match=what) as e:
            _run(model, d, out, **kw)
        assert isinstance(e.value, DataError) and "overwrite" in str(e.value)
    with pytest.raises(ResumeMismatchError, match="n_passes"):
        predict_catalogue(model, d, out, n_passes=4, progress=False)
    rows.iloc[60:].to_parquet(d / "a.parquet", index=False)  # another input under the same name
    with pytest.raises(ResumeMismatchError, match="input_digest"):
        _run(model, d, out)
    r = _run(model, d, out, seed=7, overwrite=True)
    assert r["n_overwritten"] == 1 and r["files_hold"]["seed"] == [
        7
    ]  # the summary says what the files hold
    res = pd.read_parquet(out / "a.parquet")
    assert list(res.source_id) == list(rows.source_id.iloc[60:])
    # another model (other weights) into the finished folder: refused, then overwritten on request
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.training import train_model

    other = tmp_path / "other_model"
    s = build_demo_sample(LABELS4, max_stars=400)[0]
    train_model(s, LABELS4, "kane_mlp", progress=False, max_epochs=1, seed=3).save(other)
    with pytest.raises(ResumeMismatchError, match="model_fingerprint") as e:
        _run(other, d, out, seed=7)
    assert "overwrite" in str(e.value)
    r2 = _run(other, d, out, seed=7, overwrite=True)
    assert r2["files_hold"]["model_fingerprint"] != r["files_hold"]["model_fingerprint"]
    assert len(r2["files_hold"]["model_fingerprint"]) == 1


def test_partitions_recursive_empty_corrupt_and_duplicates(tiny, tmp_path):
    from spectra_ml.core import DataError

    model, rows, _ = tiny
    d = tmp_path / "in"
    (d / "hp=1").mkdir(parents=True)
    (d / "hp=2").mkdir()
    rows.iloc[:40].to_parquet(d / "hp=1" / "part-0.parquet", index=False)
    dup = rows.iloc[40:80].copy()
    dup.iloc[0, 0] = rows.source_id.iloc[3]  # an id also in hp=1
    dup.to_parquet(d / "hp=2" / "part-0.PARQUET", index=False)  # upper-case suffix
    rows.iloc[:0].to_parquet(d / "empty.parquet", index=False)
    (d / "broken.parquet").write_bytes(b"PAR1 this is not a parquet file")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="broken.parquet") as e:
        _run(model, d, out)
    s = e.value.summary
    assert (
        s["n_partitions"] == 3
        and s["n_failed"] == 1
        and s["failed"][0]["file"].endswith("broken.parquet")
    )
    assert "parquet" in s["failed"][0]["reason"].lower(), s["failed"][0]  # why, not only which file
    assert sorted(s["partitions"]) == [
        "empty.parquet",
        "hp=1/part-0.parquet",
        "hp=2/part-0.PARQUET",
    ]
    one, two = (
        pd.read_parquet(out / "hp=1" / "part-0.parquet"),
        pd.read_parquet(out / "hp=2" / "part-0.PARQUET"),
    )
    assert len(one) == 40 and len(two) == 40  # the others completed
    assert one.flag_duplicate_id.sum() == 1 and one.flag_duplicate_id.iloc[3]  # across partitions
    assert two.flag_duplicate_id.iloc[0] and two.flag_duplicate_id.sum() == 1
    empty = pd.read_parquet(out / "empty.parquet")
    assert len(empty) == 0 and list(empty.columns) == list(one.columns)


def test_one_big_file_is_split_and_every_input_column_carried(tiny, tmp_path):
    import pyarrow.parquet as pq

    model, rows, _ = tiny
    a = rows.copy()
    a["ebv_sfd"] = np.linspace(0, 1.2, len(a))
    a["flag_high_reliability"] = a.ebv_sfd < 0.2
    a["vb21_cluster"] = ["NGC_104" if i % 7 == 0 else None for i in range(len(a))]
    a["eflux_000"] = 0.01
    a.to_parquet(tmp_path / "application.parquet", index=False, row_group_size=25)
    r = _run(
        model,
        tmp_path / "application.parquet",
        tmp_path / "out",
        workers=Workers(partition_rows=50),
    )
    parts = sorted((tmp_path / "out").glob("part-*.parquet"))
    assert [p.name for p in parts] == [f"part-0000{i}.parquet" for i in range(3)]  # 50, 50, 20 rows
    assert [pq.ParquetFile(p).metadata.num_rows for p in parts] == [50, 50, 20] and r[
        "n_rows_computed"
    ] == 120
    res = _read(tmp_path / "out")
    assert list(res.source_id) == list(a.source_id)  # rows in = rows out, in order
    for c in ("ebv_sfd", "flag_high_reliability", "vb21_cluster"):
        assert res[c].equals(a[c]), c  # carried unchanged
    assert not [
        c for c in res if c.startswith(("flux_", "eflux_"))
    ]  # inputs and their errors are not
    for lab in LABELS4:
        np.testing.assert_allclose(
            res[f"sigma_{lab}"] ** 2,
            res[f"sigma_alea_{lab}"] ** 2 + res[f"sigma_epi_{lab}"] ** 2,
            rtol=1e-5,
        )


def test_inputs_are_selected_by_name(tiny, tmp_path):
    """reversed flux columns give identical predictions; `xp_###` columns for a flux model are refused."""
    from spectra_ml.checkpoint import open_checkpoint, input_columns
    from spectra_ml.core import DataError, MissingColumnError
    from spectra_ml.prediction import predict_sample

    model, rows, s = tiny
    ck = open_checkpoint(model)
    assert input_columns(ck) == flux_columns(343)  # recorded in config.json at save time
    fwd, rev = tmp_path / "fwd", tmp_path / "rev"
    fwd.mkdir()
    rev.mkdir()
    rows.to_parquet(fwd / "p.parquet", index=False)
    rows[["source_id"] + flux_columns(343)[::-1]].to_parquet(rev / "p.parquet", index=False)
    r = _run(model, fwd, tmp_path / "o1")
    assert r["input_columns_source"] == "recorded"  # train_model passes the sample's column names
    _run(model, rev, tmp_path / "o2")
    pd.testing.assert_frame_equal(
        _read(tmp_path / "o1"), _read(tmp_path / "o2")
    )  # identical predictions
    a, _ = predict_sample(ck, s, n_passes=3, progress=False)
    b, _ = predict_sample(ck, s[s.columns[::-1]], n_passes=3, progress=False)
    pd.testing.assert_frame_equal(a, b)
    xp = tmp_path / "xp"
    xp.mkdir()
    rows.rename(columns={f: f.replace("flux_", "xp_") for f in flux_columns(343)}).to_parquet(
        xp / "p.parquet", index=False
    )
    with pytest.raises(
        DataError,
        match=r"p.parquet: MissingColumnError: .*lacks 343 of the model's 343 input columns: flux_000",
    ):
        _run(model, xp, tmp_path / "o3")
    with pytest.raises(MissingColumnError, match="flux_000"):
        predict_sample(ck, s.drop(columns="flux_000"), n_passes=3, progress=False)
