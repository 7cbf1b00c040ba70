"""Benchmark: `spectra_ml predict` end to end (archive XP file -> labels) against inference only, same process.

REAL DATA: the mirror's 2,000-star `gaia_xp/xp_continuous_combined_chunk0.fits` (archive XP continuous
coefficients), read through $SPECTRA_ML_LOCAL_DATA. The model is the default released model (`giants-xp`,
XP spectrum only), with its own passes (Kane's 100 MC-dropout passes).

Measured in one process, in `--repeats` interleaved rounds (every step once per round, so a change of the
machine's load hits all alike), each step's best round reported (fresh output folders every time, so nothing
resumes):

- `end_to_end`: `spectra_ml.cli.main(["predict", "--input", FILE, "--output", OUT])`, i.e. input checks, model
  resolution and loading, the XP file converted to a Parquet partition of model inputs (with GaiaXPy synthetic
  photometry), the partition streamed through the model, the output partition written, the closing line;
- its parts: `convert_xp_files` alone, and inside it `read_xp`, `xp_input_table`, `xp_synthetic_photometry`;
  `predict_catalogue` alone on the converted partition;
- `inference_only`: `Predictor.predict` (100 passes, σ parts, flags) on the already-converted inputs in memory.

The ratio end-to-end / inference-only rate is the figure of merit (aim: at least 0.5). The disk footprint of
the output folder and of the converted-input folder `predict` leaves beside it is extrapolated linearly from
the 2,000 stars to 10⁶ stars (an extrapolation, not a measurement at 10⁶).

    SPECTRA_ML_LOCAL_DATA=/work/shared/data python benchmarks/bench_predict_end_to_end.py [--repeats 5]
"""

import argparse
import contextlib
import io
import json
import os
import platform
import shutil
import tempfile
import time
from pathlib import Path

from common import best_of  # benchmarks/common.py

XP_FILE = "gaia_xp/xp_continuous_combined_chunk0.fits"  # in the local data mirror


def folder_bytes(p: Path) -> int:
    "Total size of the files under `p` (0 when it does not exist)."
    return sum(f.stat().st_size for f in Path(p).rglob("*") if f.is_file())


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "predict_end_to_end.json")
    )
    a = ap.parse_args()
    import numpy as np
    import pandas as pd
    import torch

    from spectra_ml import cli
    from spectra_ml.core import library_versions
    from spectra_ml.data.xp_files import read_xp
    from spectra_ml.features import xp_input_table
    from spectra_ml.streaming import predict_catalogue

    root = os.environ.get("SPECTRA_ML_LOCAL_DATA")
    if not root or not (Path(root) / XP_FILE).exists():
        raise SystemExit(f"set SPECTRA_ML_LOCAL_DATA to the data mirror holding {XP_FILE}")
    xp_file = Path(root) / XP_FILE
    m = cli.resolve_model(None)
    predictor = cli.load_predictor(m, shared_masks=True, device="auto")
    names = cli.model_spectral_inputs(m["path"])
    tmp = Path(tempfile.mkdtemp(prefix="bench_predict_"))
    runs = iter(range(10_000))
    quiet = lambda: contextlib.redirect_stdout(io.StringIO())

    def end_to_end(fmt="parquet"):
        out = tmp / f"e2e_{next(runs)}"
        with quiet():
            rc = cli.main(
                ["predict", "--input", str(xp_file), "--output", str(out), "--format", fmt]
            )
        assert rc == 0, f"predict exited {rc}"
        return out

    end_to_end()  # warm-up: imports, GaiaXPy's filter files, torch kernels
    res = {
        "input": XP_FILE,
        "input_bytes": xp_file.stat().st_size,
        "model": m["name"],
        "passes": predictor.passes,
        "device": predictor.resolved_device(),
        "threads": torch.get_num_threads(),
        "repeats": a.repeats,
    }
    xp = read_xp(xp_file)
    n = len(xp["source_id"])
    res["n_stars"] = n
    conv = tmp / "converted"
    cli.convert_xp_files([xp_file], names, conv)
    part = min(conv.glob("*.parquet"))
    df = pd.read_parquet(part)  # inference only: the converted inputs, already in memory
    X = df[predictor.inputs].to_numpy(np.float32)
    ids = df.source_id.to_numpy()
    steps = {
        "end_to_end": end_to_end,
        "inference_only": lambda: predictor.predict(X, ids=ids, seed=42, table=df),
        "read_xp": lambda: read_xp(xp_file),
        "xp_input_table": lambda: xp_input_table(xp, names, where="bench"),
        "synthetic_photometry": lambda: cli.xp_synthetic_photometry(xp),
        "convert_xp_files": lambda: cli.convert_xp_files([xp_file], names, conv),
        "predict_catalogue": lambda: predict_catalogue(
            predictor, conv, tmp / f"pc_{next(runs)}", progress=False
        ),
    }
    # interleaved: every step once per round, so a change in the machine's load hits all of them alike
    times = {k: [] for k in steps}
    for _ in range(a.repeats):
        for k, fn in steps.items():
            times[k].append(best_of(fn, 1))
    for k, t in times.items():
        res[f"{k}_s"] = min(t)
    res["times_s"] = times
    rounds = [i / e for i, e in zip(times["inference_only"], times["end_to_end"])]
    res["ratio_per_round"] = rounds  # inference-only time / end-to-end time, each round
    res["ratio_per_round_median"] = float(np.median(rounds))
    for k in ("end_to_end", "convert_xp_files", "predict_catalogue", "inference_only"):
        res[f"{k}_stars_per_s"] = n / res[f"{k}_s"]
    res["ratio_end_to_end_to_inference"] = res["inference_only_s"] / res["end_to_end_s"]
    res["share_conversion"] = res["convert_xp_files_s"] / res["end_to_end_s"]
    res["share_synthetic_photometry"] = res["synthetic_photometry_s"] / res["end_to_end_s"]
    # disk: what predict leaves (default parquet; and fits), extrapolated to 10^6 stars
    per_m = lambda b: b / n * 1e6  # bytes per 10^6 stars, extrapolated linearly
    gb = lambda b: round(per_m(b) / 1e9, 3)  # the same in GB
    for fmt in ("parquet", "fits"):
        out = end_to_end(fmt)
        inputs = out.with_name(out.name + "_inputs")
        kept = folder_bytes(inputs)
        res[f"disk_{fmt}"] = {
            "output_bytes": folder_bytes(out),
            "inputs_kept_bytes": kept,
            "inputs_kept_files": sorted(
                str(f.relative_to(inputs)) for f in inputs.rglob("*") if f.is_file()
            ),
            "output_bytes_per_1e6_stars_extrapolated": per_m(folder_bytes(out)),
            "inputs_kept_bytes_per_1e6_stars_extrapolated": per_m(kept),
            "output_gb_per_1e6_stars_extrapolated": gb(folder_bytes(out)),
            "inputs_kept_gb_per_1e6_stars_extrapolated": gb(kept),
        }
    res["input_bytes_per_1e6_stars_extrapolated"] = per_m(res["input_bytes"])
    res["input_gb_per_1e6_stars_extrapolated"] = gb(res["input_bytes"])
    res["hours_per_1e6_stars_end_to_end"] = 1e6 / res["end_to_end_stars_per_s"] / 3600
    res["machine"] = {
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        **library_versions(),
    }
    res["date"] = time.strftime("%Y-%m-%d")
    shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1, default=str) + "\n")
    print(json.dumps(res, indent=1, default=str))


if __name__ == "__main__":
    main()
