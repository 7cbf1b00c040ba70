"""Benchmark: streaming an archive XP CSV.gz into Parquet partitions (throughput, peak memory).

SYNTHETIC SIZE: the input is the real 3-row archive CSV (XP_CONTINUOUS_RAW_with_missing_BP.csv from
the local data mirror) repeated to N rows with new source_ids, gzipped like the bulk
`XpContinuousMeanSpectrum_*.csv.gz` files. It measures speed and memory only.

    SPECTRA_ML_LOCAL_DATA=../shared/data python benchmarks/bench_xp_ingest.py [--rows 100000]
"""

import argparse, gzip, json, resource, subprocess, sys, tempfile, time
from pathlib import Path

CHILD = """
import json, resource, sys, time
from spectra_ml.data.xp_files import ingest_xp_csv, read_xp
t0 = time.time(); read_xp(sys.argv[4]); warm = time.time() - t0  # one-off: loading the compiled parser (numba cache)
t0 = time.time(); files = ingest_xp_csv(sys.argv[1], sys.argv[2], rows_per_partition=int(sys.argv[3]))
print(json.dumps({"seconds": time.time() - t0, "warm_up_s": warm, "partitions": len(files),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def main():
    from spectra_ml.core import local_data_path

    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--rows", type=int, nargs="+", default=[5_000, 20_000])
    ap.add_argument("--rows-per-partition", type=int, default=5_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "xp_ingest.json"))
    a = ap.parse_args()
    src = local_data_path(required=True) / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    header, *rows = src.read_text().splitlines()
    res = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in a.rows:
            f = Path(tmp) / f"XpContinuousMeanSpectrum_synthetic_{n}.csv.gz"
            with gzip.open(f, "wt", compresslevel=1) as g:
                g.write(header + "\n")
                for i in range(n):
                    r = rows[i % len(rows)]
                    g.write(f"{i}{r[r.index(',') :]}\n")
            out = (
                subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(f),
                        str(Path(tmp) / f"p{n}"),
                        str(a.rows_per_partition),
                        str(src),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                .stdout.strip()
                .splitlines()[-1]
            )
            r = {"rows": n, "gz_mb": f.stat().st_size / 2**20, **json.loads(out)}
            r["rows_per_s"] = n / r["seconds"]
            res.append(r)
            print(r, flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
