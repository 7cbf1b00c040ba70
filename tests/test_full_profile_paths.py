"""Full-profile code paths on real-schema fixtures.

The full profile's [N/O]/[Al/Fe] network does not exist on this machine, so the 2P stage is driven by
a *perfect-predictor fixture*: real APOGEE DR17 allStar rows (95 Kepler giants) whose "predictions"
are the APOGEE values themselves, with the APOGEE errors as σ. It exercises the stage's full-profile
branch end to end; it measures nothing about any network.
"""
import json
import numpy as np
import pandas as pd
import papermill as pm
from astropy.table import Table

from spectra_ml.core import KANE_LABELS, RunDir
from spectra_ml.pipeline import notebooks_dir, pick_kernel
from spectra_ml.samples import assign_split
from spectra_ml.tagging import apogee_n_o


def perfect_predictor_fixture(local_data) -> pd.DataFrame:
    t = Table.read(local_data / "apogee" / "Montalban2021_X_APOGEE_DR17.fits")
    n_o, n_o_err = apogee_n_o(t["N_FE"], t["O_FE"], t["N_FE_ERR"], t["O_FE_ERR"])
    df = pd.DataFrame({"source_id": np.asarray(t["GAIAEDR3_SOURCE_ID"], np.int64),
                       "apogee_id": np.char.strip(np.asarray(t["APOGEE_ID"]).astype(str)),
                       "teff": np.asarray(t["TEFF"], float), "logg": np.asarray(t["LOGG"], float),
                       "fe_h": np.asarray(t["FE_H"], float), "n_o": n_o, "al_fe": np.asarray(t["AL_FE"], float),
                       "teff_err": np.asarray(t["TEFF_ERR"], float), "logg_err": np.asarray(t["LOGG_ERR"], float),
                       "fe_h_err": np.asarray(t["FE_H_ERR"], float), "n_o_err": n_o_err, "al_fe_err": np.asarray(t["AL_FE_ERR"], float)})
    df["split"] = assign_split(df.source_id.to_numpy(), {"train": 0.5, "validation": 0.25, "test": 0.25})
    for l in KANE_LABELS:
        df[f"mu_{l}"], df[f"sigma_{l}"] = df[l], df[f"{l}_err"]
    df["flag_bad_input"] = False
    return df


def test_candidates_stage_full_profile_branch(local_data, tmp_path):
    run = RunDir(tmp_path / "full_fixture")
    df = perfect_predictor_fixture(local_data)
    df.to_parquet(run.products / "predictions.parquet", index=False)
    (run.model / "config.json").write_text(json.dumps({"train_config": {"labels": list(KANE_LABELS)}}))
    pm.execute_notebook(str(notebooks_dir() / "09_candidates.ipynb"), str(tmp_path / "09.ipynb"),
                        parameters={"run_dir": str(run.root), "k": None}, kernel_name=pick_kernel(), progress_bar=False)
    s = run.read_summary()["candidates"]
    assert s["selection"] == "kane_2p" and s["notes"] == []
    assert s["k_fit"]["n_used"] >= 3 and np.isfinite(s["k_fit"]["k"])
    c = s["confusion"]
    assert c["tp"] + c["fp"] + c["fn"] + c["tn"] == int((df.split == "test").sum())
    assert c["fp"] == 0  # a perfect predictor selects no false 2P star among Kepler field giants
    assert (run.products / "catalogue_2p.fits").exists() and (run.figures / "fig5_confusion.png").exists()
    assert len(s["curve"]) > 5
