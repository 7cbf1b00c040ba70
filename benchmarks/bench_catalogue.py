"""Benchmark: peak memory of the catalogue step (predict + write Appendix A) at 10⁶ rows, against a
10⁵-row ratio baseline measured in the same run.

SYNTHETIC DATA: one Parquet file shaped like 05_samples' `application.parquet` (row groups of 50,000
rows): source_id, flux_000..flux_342 (float32) drawn around the real library's median spectrum,
and synthetic ebv_sfd, flag_high_reliability, ra, dec. It measures memory and throughput only; no
science number comes from it.

Each size runs in a fresh subprocess (so its peak RSS is its own): `catalogue.predict_catalogue`
(the file is split into partitions of whole row groups, streamed chunk by chunk) and then
`catalogue.write_appendix_a` (Parquet + FITS + pass table, streamed). Peak memory is bounded when
the 10⁶-row peak is close to the 10⁵-row one (ratio ≈ 1, not ≈ 10).

    python benchmarks/bench_catalogue.py [--checkpoint runs/demo/model] [--sizes 100000 1000000] [--passes 100]

Without --checkpoint a kane_mlp is trained for one epoch on 400 real demo giants (its numbers do not
matter here, only the shapes).
"""

import argparse, json, subprocess, sys, tempfile
from pathlib import Path
import numpy as np

ROW_GROUP = 50_000


def make_synthetic(path: Path, n: int, seed: int = 0):
    "SYNTHETIC application sample: one file, written row group by row group (never all in memory)."
    import pyarrow as pa, pyarrow.parquet as pq
    from spectra_ml.data.samples import flux_columns, load_demo

    med = np.median(load_demo()[1][:5000], axis=0).astype(np.float32)
    rng = np.random.default_rng(seed)
    noise = rng.normal(0, 0.01, (ROW_GROUP, med.size)).astype(np.float32)  # drawn once, reshuffled
    writer = None
    for start in range(0, n, ROW_GROUP):
        m = min(ROW_GROUP, n - start)
        flux = med * rng.lognormal(0, 0.05, (m, 1)).astype(np.float32)
        flux += noise[rng.permutation(ROW_GROUP)[:m]]
        cols = {"source_id": np.arange(start, start + m, dtype=np.int64)}
        cols |= {c: flux[:, j] for j, c in enumerate(flux_columns(med.size))}
        ebv = rng.uniform(0, 1, m)
        cols |= {"ebv_sfd": ebv, "flag_high_reliability": ebv < 0.2}
        cols |= {"ra": rng.uniform(0, 360, m), "dec": rng.uniform(-90, 90, m)}
        t = pa.table(cols)
        writer = writer or pq.ParquetWriter(path, t.schema)
        writer.write_table(t, row_group_size=ROW_GROUP)
    writer.close()


CHILD = """
import json, resource, sys, time
import pandas as pd
from spectra_ml.streaming import predict_catalogue
from spectra_ml.kane.catalogue import write_appendix_a
from spectra_ml.checkpoint import open_checkpoint
model, inp, out, passes = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
t0 = time.time()
r = predict_catalogue(model, inp, out + "/pred", n_passes=passes, progress=False)
t1 = time.time()
flags = lambda df: pd.DataFrame({"flag_high_reliability": df.flag_high_reliability.astype(bool)})
a = write_appendix_a(out + "/pred", out + "/appendix_a", open_checkpoint(model).labels, flags)
res = {"predict_s": t1 - t0, "appendix_s": time.time() - t1, "stars_per_s": r["stars_per_s"],
       "n_partitions": r["n_partitions"], "n_rows": a["n_rows"],
       "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
print(json.dumps(res))
"""


def run_child(model, inp, out, passes):
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(inp), str(out), str(passes)],
        capture_output=True,
        text=True,
    )
    if p.returncode:
        raise SystemExit(p.stderr[-3000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def tiny_checkpoint(folder: Path) -> Path:
    from spectra_ml.core import DEMO_LABELS
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.training import train_model

    s = build_demo_sample(list(DEMO_LABELS), max_stars=400)[0]
    train_model(s, list(DEMO_LABELS), "kane_mlp", progress=False, max_epochs=1).save(folder)
    return folder


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--passes", type=int, default=100)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "catalogue.json"))
    a = ap.parse_args()
    res = {"row_group": ROW_GROUP, "passes": a.passes, "synthetic": True, "sizes": []}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model = a.checkpoint or tiny_checkpoint(tmp / "model")
        for n in a.sizes:
            make_synthetic(tmp / f"application{n}.parquet", n)
            r = run_child(model, tmp / f"application{n}.parquet", tmp / f"out{n}", a.passes)
            res["sizes"].append({"n": n, **r})
            print(res["sizes"][-1], flush=True)
            for p in sorted((tmp / f"out{n}").rglob("*"), reverse=True):
                p.unlink() if p.is_file() else p.rmdir()
            (tmp / f"application{n}.parquet").unlink()
    base, big = res["sizes"][0], res["sizes"][-1]
    res["peak_ratio"] = big["peak_rss_mb"] / base["peak_rss_mb"]
    res["rows_ratio"] = big["n"] / base["n"]
    print(
        f"peak RSS {big['peak_rss_mb']:.0f} MB at {big['n']:,} rows vs {base['peak_rss_mb']:.0f} MB "
        f"at {base['n']:,}: ratio {res['peak_ratio']:.2f} for {res['rows_ratio']:.0f}x the rows"
    )
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
