"""Refactoring regression: the quick demo run with seed 42 reproduces the stored digest of its
test-split predictions (tests/builders/prediction_digest.py). A change that alters results on purpose
regenerates tests/data/quick_demo_seed42_digest.json in the same commit and says why:

    spectra_ml run --quick --name quick42 --runs-root /tmp/r --figures-dir ''
    python tests/builders/prediction_digest.py /tmp/r/quick42 tests/data/quick_demo_seed42_digest.json
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd
from conftest import load_tool
import pytest

pytestmark = pytest.mark.slow  # the session's quick pipeline run

ROOT = Path(__file__).resolve().parent.parent
DIGEST = ROOT / "tests" / "data" / "quick_demo_seed42_digest.json"


def _digest_module():
    return load_tool("prediction_digest")


def test_quick_demo_seed42_predictions_match_the_stored_digest(quick_run):
    root, _ = quick_run
    want = json.loads(DIGEST.read_text())
    got = _digest_module().prediction_digest(
        pd.read_parquet(root / "products" / "predictions.parquet")
    )
    assert got["n_test"] == want["n_test"] and got["ids_sha256"] == want["ids_sha256"]
    assert got["rows_source_id"] == want["rows_source_id"]
    assert sorted(got["columns"]) == sorted(want["columns"])
    for col, w in want["columns"].items():
        g = got["columns"][col]
        # identical on one machine (sha256); a different CPU may round the last float32 bit differently
        if g["sha256"] == w["sha256"]:
            continue
        for k in ("mean", "std", "min", "max"):
            np.testing.assert_allclose(g[k], w[k], rtol=1e-5, err_msg=f"{col} {k}")
        np.testing.assert_allclose(g["rows"], w["rows"], rtol=1e-5, err_msg=f"{col} rows")


def test_digest_detects_a_changed_prediction():
    """The digest is not blind: one changed value in one row changes it."""
    mod = _digest_module()
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"source_id": np.arange(50), "split": "test", "mu_teff": rng.normal(size=50)})
    a = mod.prediction_digest(df)
    df.loc[7, "mu_teff"] += 1e-3
    b = mod.prediction_digest(df)
    assert a["columns"]["mu_teff"]["sha256"] != b["columns"]["mu_teff"]["sha256"]
    assert a["columns"]["mu_teff"]["mean"] != b["columns"]["mu_teff"]["mean"]
