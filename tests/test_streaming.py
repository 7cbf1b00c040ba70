"""Catalogue-scale inference: partitions, resume after a kill, flags, and Dask identical to one process."""

import json
import numpy as np
import pandas as pd
import pytest

from spectra_ml.catalogue import partition_done, predict_catalogue
from spectra_ml.samples import flux_columns


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
    # a changed input partition is recomputed
    s.iloc[600:900].to_parquet(d / "part-002.parquet", index=False)
    assert not partition_done(d / "part-002.parquet", out / "part-002.parquet")


def test_dask_local_cluster_matches_single_process(catalogue, tmp_path):
    distributed = pytest.importorskip("distributed")
    model, d, _ = catalogue
    predict_catalogue(model, d, tmp_path / "one", n_passes=10, progress=False, threads=1)
    with (
        distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        r = predict_catalogue(
            model, d, tmp_path / "dask", n_passes=10, client=client, progress=False
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
    assert json.loads(capsys.readouterr().out)["n_rows_computed"] == 900
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


def test_catalogue_uses_the_models_own_passes_unless_told(tmp_path):
    """`predict_catalogue(n_passes=None)` (the CLI default): the checkpoint model's registry passes."""
    from spectra_ml.samples import build_demo_sample
    from spectra_ml.training import train_model

    s = build_demo_sample(["teff", "logg"], max_stars=300)[0]
    t = train_model(s, ["teff", "logg"], "uncertain_nn", progress=False, max_epochs=1)
    t.save(tmp_path / "model")
    d = tmp_path / "in"
    d.mkdir()
    s[["source_id"] + flux_columns(343)].iloc[:40].to_parquet(d / "part-000.parquet", index=False)
    r = predict_catalogue(tmp_path / "model", d, tmp_path / "own", progress=False)
    own = pd.read_parquet(tmp_path / "own" / "part-000.parquet")
    assert r["n_rows_computed"] == 40 and (own.n_passes == 50).all()  # Fallows & Sanders §3.1.1
    predict_catalogue(tmp_path / "model", d, tmp_path / "five", n_passes=5, progress=False)
    five = pd.read_parquet(tmp_path / "five" / "part-000.parquet")
    assert (five.n_passes == 5).all() and not np.allclose(
        five.sigma_model_teff, own.sigma_model_teff
    )
