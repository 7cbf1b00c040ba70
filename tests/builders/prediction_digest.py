#!/usr/bin/env python3
"""A small digest of a run's test-split predictions, for the refactoring regression test.

    python tests/builders/prediction_digest.py RUN_DIR [OUT.json]

The digest holds, for every `mu_*` and `sigma_*` column of `products/predictions.parquet` on the test
split (rows in source_id order): the mean, standard deviation, minimum and maximum, and the values of
ten fixed rows, plus the SHA-256 of the exact bytes. `tests/test_pipeline_regression.py` compares a fresh
quick demo run (seed 42) with the stored digest. A change that alters results on purpose regenerates
the digest in the same commit and says why.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd

N_ROWS = 10


def prediction_digest(pred: pd.DataFrame) -> dict:
    "Digest of the test-split `mu_*` / `sigma_*` columns of a predictions table."
    test = pred[pred["split"] == "test"].sort_values("source_id")
    cols = sorted(c for c in test.columns if c.startswith(("mu_", "sigma_")))
    rows = np.linspace(0, len(test) - 1, N_ROWS).astype(int)
    ids = test["source_id"].to_numpy()
    out = {
        "n_test": len(test),
        "ids_sha256": hashlib.sha256(ids.astype(np.int64).tobytes()).hexdigest(),
        "rows_source_id": [int(i) for i in ids[rows]],
        "columns": {},
    }
    for c in cols:
        v = test[c].to_numpy(np.float64)
        out["columns"][c] = {
            "mean": float(np.nanmean(v)),
            "std": float(np.nanstd(v)),
            "min": float(np.nanmin(v)),
            "max": float(np.nanmax(v)),
            "rows": [float(x) for x in v[rows]],
            "sha256": hashlib.sha256(v.tobytes()).hexdigest(),
        }
    return out


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(__doc__)
        return 2
    pred = pd.read_parquet(Path(argv[0]) / "products" / "predictions.parquet")
    text = json.dumps(prediction_digest(pred), indent=1)
    if len(argv) > 1:
        Path(argv[1]).write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
