"""Benchmark: parsing an archive XP CSV, our vectorised reader against GaiaXPy's own reader.

The file is the real archive CSV (XP_CONTINUOUS_RAW.csv, with correlations) repeated to N rows with new
source_ids (SYNTHETIC SIZE, real row format). Both readers parse the same file in the same process:
ours (`spectra_ml.data.xp_files.read_xp`: file read, coefficients, errors, correlations, standard deviations) and
GaiaXPy's `InputReader` (what `calibrate`/`convert` use), best of 3. Our reader is compiled by numba on
its first call (cached on disk afterwards); that one-off time is reported separately and excluded.

    SPECTRA_ML_LOCAL_DATA=../shared/data python benchmarks/bench_xp_parse.py [--rows 2000]
"""

import argparse, contextlib, io, json, tempfile, time, warnings
from pathlib import Path

from common import best_of  # benchmarks/common.py


def main():
    from spectra_ml.core import local_data_path
    from spectra_ml.data.xp_files import read_xp
    from gaiaxpy import calibrate
    from gaiaxpy.input_reader.input_reader import InputReader

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, default=2000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "xp_parse.json"))
    a = ap.parse_args()
    src = local_data_path(required=True) / "gaia_xp" / "XP_CONTINUOUS_RAW.csv"
    header, *rows = src.read_text().splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        f = Path(tmp) / "XP_CONTINUOUS_synthetic.csv"
        with open(f, "w") as g:
            g.write(header + "\n")
            for i in range(a.rows):
                r = rows[i % len(rows)]
                g.write(f"{i + 1}{r[r.index(',') :]}\n")
        t0 = time.perf_counter()
        read_xp(f)
        first = time.perf_counter() - t0  # includes numba compilation (or loading its cache)
        ours = best_of(lambda: read_xp(f), 5)
        from spectra_ml.data.xp_files import read_xp_csv_chunks

        ours_nocorr = best_of(lambda: list(read_xp_csv_chunks(f, with_correlations=False)))

        def theirs():
            with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")
                InputReader(str(f), calibrate, False).read()

        gx = best_of(theirs, 5)
    res = {
        "rows": a.rows,
        "ours_s": ours,
        "gaiaxpy_s": gx,
        "ours_rows_per_s": a.rows / ours,
        "gaiaxpy_rows_per_s": a.rows / gx,
        "ratio": gx / ours,
        "ours_first_call_s": first,
        "numba_threads": __import__("numba").get_num_threads(),
        "ours_without_correlations_s": ours_nocorr,
        "ratio_without_correlations": gx / ours_nocorr,
    }
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
