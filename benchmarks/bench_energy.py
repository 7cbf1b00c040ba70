"""Benchmark: vectorised E and L_z for 10^6 stars against a per-star Python loop.

Both paths run in one process. The loop (astropy transform + gala energy per star) is timed on a
small subset and its per-star rate compared with the vectorised path on the full set, so the ratio
is of rates (stars/s). The inputs are synthetic positions and velocities (a benchmark of speed only;
no science result comes from them), drawn in a realistic range: distances 0.1-30 kpc.

    python benchmarks/bench_energy.py [--n 1000000] [--n-loop 300]
"""

import argparse, json, time
from pathlib import Path
import numpy as np
import astropy.units as u

from spectra_ml.kane import dynamics as dyn
from spectra_ml.core import library_versions


def synthetic_astrometry(n, seed=0):
    rng = np.random.default_rng(seed)
    return dict(
        ra=rng.uniform(0, 360, n),
        dec=np.degrees(np.arcsin(rng.uniform(-1, 1, n))),
        distance=rng.uniform(0.1, 30, n),
        pmra=rng.normal(0, 5, n),
        pmdec=rng.normal(0, 5, n),
        rv=rng.normal(0, 100, n),
    )


def main():
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--n-loop", type=int, default=300)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "energy.json"))
    a = ap.parse_args()
    pot = dyn.mw_potential()
    s = synthetic_astrometry(a.n)
    t0 = time.perf_counter()
    g = dyn.to_galactocentric(**s)
    t1 = time.perf_counter()
    e = dyn.orbital_energy(g, pot)
    lz = g.Lz.to_numpy()
    t2 = time.perf_counter()
    sub = {k: v[: a.n_loop] for k, v in s.items()}
    t3 = time.perf_counter()
    e_loop = []
    for i in range(a.n_loop):
        gi = dyn.to_galactocentric(
            *[[sub[k][i]] for k in ("ra", "dec", "distance", "pmra", "pmdec", "rv")]
        )
        e_loop.append(dyn.orbital_energy(gi, pot)[0])
    t4 = time.perf_counter()
    assert np.allclose(e_loop, e[: a.n_loop], rtol=1e-10)  # same numbers, different speed
    res = {
        "n": a.n,
        "n_loop": a.n_loop,
        "vectorised_s": t2 - t0,
        "vectorised_transform_s": t1 - t0,
        "vectorised_energy_s": t2 - t1,
        "vectorised_stars_per_s": a.n / (t2 - t0),
        "loop_stars_per_s": a.n_loop / (t4 - t3),
        "versions": {k: library_versions()[k] for k in ("python", "numpy", "astropy", "gala")},
    }
    res["speedup"] = res["vectorised_stars_per_s"] / res["loop_stars_per_s"]
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
