"""Benchmark: coefficients -> sampled spectra, our matrix conversion against GaiaXPy's `calibrate`.

Both convert the same real stars (the first N of xp_continuous_combined_chunk0.fits, 2,000 real Gaia
DR3 XP coefficient sets) to flux and flux errors on the 343-pixel grid, in one process, best of 3.
`XPConverter` takes its design matrices from GaiaXPy once (the set-up time is reported separately);
the outputs agree to 1e-15 relative (tests/test_features.py asserts 1e-6).

    SPECTRA_ML_LOCAL_DATA=../shared/data python benchmarks/bench_xp_convert.py [--stars 2000]
"""

import argparse, json, time
from pathlib import Path

import numpy as np

from common import best_of  # benchmarks/common.py


def main():
    from astropy.table import Table
    from spectra_ml.core import local_data_path
    from spectra_ml.features import XPConverter, sampled_spectra, xp_covariance
    from spectra_ml.data.xp_files import gaiaxpy_input_from_columns

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--stars", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "xp_convert.json"))
    a = ap.parse_args()
    xp = Table.read(
        local_data_path(required=True) / "gaia_xp" / "xp_continuous_combined_chunk0.fits"
    )[: a.stars]
    get = lambda fmt: np.column_stack([np.asarray(xp[fmt.format(i)], float) for i in range(55)])
    bp, rp, ebp, erp = (
        get("bp_coeff_{}"),
        get("rp_coeff_{}"),
        get("e_bp_coeff_{}"),
        get("e_rp_coeff_{}"),
    )
    gx_input = gaiaxpy_input_from_columns(xp)
    t0 = time.perf_counter()
    conv = XPConverter()
    setup = time.perf_counter() - t0
    ours = best_of(
        lambda: (conv.flux(bp, rp), conv.flux_error(xp_covariance(ebp), xp_covariance(erp))),
        a.repeats,
    )
    gx = best_of(lambda: sampled_spectra(gx_input), a.repeats)
    res = {
        "stars": len(xp),
        "ours_s": ours,
        "gaiaxpy_s": gx,
        "ours_stars_per_s": len(xp) / ours,
        "gaiaxpy_stars_per_s": len(xp) / gx,
        "ratio": gx / ours,
        "setup_s": setup,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
