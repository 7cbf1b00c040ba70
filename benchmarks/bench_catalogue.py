"""Benchmark: streaming catalogue inference at synthetic size, and Dask with 1 and 2 workers.

SYNTHETIC DATA: the partitions hold random numbers in the real schema of the demo model's input
(source_id + flux_000..flux_342, float32), drawn around the real library's median spectrum. They
measure throughput and peak memory only; no science number comes from them.

Each size runs `spectra_ml.inference.predict_catalogue` (100 passes, shared masks) in a fresh
subprocess so that its peak RSS is its own.

    python benchmarks/bench_catalogue.py --checkpoint runs/demo/model [--sizes 100000 300000 1000000]
"""

import argparse, json, os, resource, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np
import pandas as pd

ROWS_PER_PARTITION = 50_000


def make_synthetic(folder: Path, n: int, seed: int = 0):
    from spectra_ml.samples import flux_columns, load_demo

    med = np.median(load_demo()[1][:5000], axis=0).astype(np.float32)
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i, start in enumerate(range(0, n, ROWS_PER_PARTITION)):
        m = min(ROWS_PER_PARTITION, n - start)
        flux = med * rng.lognormal(0, 0.05, (m, 1)).astype(np.float32) + rng.normal(
            0, 0.01, (m, med.size)
        ).astype(np.float32)
        df = pd.DataFrame(flux, columns=flux_columns(med.size))
        df.insert(0, "source_id", np.arange(start, start + m, dtype=np.int64))
        df.to_parquet(folder / f"synthetic-{i:05d}.parquet", index=False)


CHILD = """
import json, resource, sys, time
from spectra_ml.catalogue import predict_catalogue
model, inp, out, workers = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
client = cluster = None
if workers:
    from distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, dashboard_address=None); client = Client(cluster)
t0 = time.time(); r = predict_catalogue(model, inp, out, n_passes=100, client=client, progress=False)
r["wall_s"] = time.time() - t0
if client: client.close(); cluster.close()
r["peak_rss_mb_driver"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
r["peak_rss_mb_children"] = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps(r))
"""


def run_child(model, inp, out, workers=0):
    p = subprocess.run(
        [sys.executable, "-c", CHILD, str(model), str(inp), str(out), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--dask-size", type=int, default=200_000)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "catalogue.json"))
    a = ap.parse_args()
    res = {
        "rows_per_partition": ROWS_PER_PARTITION,
        "passes": 100,
        "synthetic": True,
        "scaling": [],
        "dask": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in a.sizes:
            make_synthetic(tmp / f"in{n}", n)
            r = run_child(a.checkpoint, tmp / f"in{n}", tmp / f"out{n}")
            res["scaling"].append(
                {
                    "n": n,
                    **{
                        k: r[k]
                        for k in ("wall_s", "stars_per_s", "peak_rss_mb_driver", "n_partitions")
                    },
                }
            )
            print(res["scaling"][-1], flush=True)
            if n != a.dask_size:
                import shutil

                shutil.rmtree(tmp / f"in{n}")
                shutil.rmtree(tmp / f"out{n}")
        if not (tmp / f"in{a.dask_size}").exists():
            make_synthetic(tmp / f"in{a.dask_size}", a.dask_size)
        for w in (1, 2):
            r = run_child(a.checkpoint, tmp / f"in{a.dask_size}", tmp / f"dask{w}", workers=w)
            res["dask"].append(
                {
                    "workers": w,
                    "n": a.dask_size,
                    **{k: r[k] for k in ("wall_s", "stars_per_s", "peak_rss_mb_children")},
                }
            )
            print(res["dask"][-1], flush=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
