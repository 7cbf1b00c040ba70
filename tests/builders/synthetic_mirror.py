#!/usr/bin/env python3
"""Write a SYNTHETIC local-data mirror for plumbing runs of the full profile.

    python tests/builders/synthetic_mirror.py OUT_DIR [--stars 2400] [--seed 7]
    SPECTRA_ML_LOCAL_DATA=OUT_DIR spectra_ml run --profile full --name plumbing ...

Every row in it is made up here from a seeded random generator: no real star, label or measurement
is copied, and no number from a run on it may be reported anywhere. It exists so that the full
profile's code paths (archive readers, Gaia mirror, cuts, training, streaming, tagging, dynamics,
figures) can run end to end offline. The layout and the file formats follow the real archives:

| path | format (as the archive) | rows |
|---|---|---|
| `SYNTHETIC.md` | the marker: spectra_ml verifies this mirror structurally and flags every run on it | - |
| `apogee/allStar-dr17-synspec_rev1.fits` | APOGEE DR17 allStar, FITS HDU 1, the columns spectra_ml reads | ~1,100 |
| `galah/GALAH_DR3_main_allstar_v2.fits` | GALAH DR3 main_allstar, the survey's column names and case | ~500 |
| `andrae2023/table_2_catwise.fits.gz` | Andrae+23 table 2 (gzipped FITS) | ~1,500 |
| `vb21_members/catalogues/*.txt` | VB21 per-cluster member files (tab-separated, '#' header) | 3 files |
| `gaia_dr3/gaia_source/GaiaSource_*.csv.gz` + `_MD5SUM.txt` | Gaia DR3 bulk gaia_source (ECSV header, CSV) | all stars |
| `gaia_dr3/xp_continuous_mean_spectrum/XpContinuousMeanSpectrum_*.csv.gz` + `_MD5SUM.txt` | Gaia DR3 bulk XP continuous (ECSV header, arrays in brackets; no correlations) | all but a few |

Not written (the stages skip them with a note): Harris 2010, VB21 orbits, OCCAM, Meszaros 2015,
the mirror-only omega Cen and Sgr files, the VB21 cluster means.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pandas as pd

MARKER = "SYNTHETIC.md"
#: Kane Fig. 2's three stars (spectra_ml.kane.constants.KANE_FIG2_STARS): given synthetic XP so Fig. 2 is drawn
FIG2_IDS = (1454785210768079744, 2259240659843862016, 2982933097213087616)
#: HEALPix level-8 ranges of the synthetic bulk partitions (the real CDN uses 3,386 smaller ones)
HP8_RANGES = ((0, 196607), (196608, 393215), (393216, 589823), (589824, 786431))
N_COEFF = 55

MARKER_TEXT = """# SYNTHETIC DATA: NOT REAL

Every file in this folder was made up by `tests/builders/synthetic_mirror.py` (seed {seed}) from a random
generator, in the layout and file formats of the real archives (APOGEE DR17 allStar, GALAH DR3,
Andrae+23, VB21, Gaia DR3 bulk gaia_source and XP continuous). No row is a real star.

It exists for plumbing runs of spectra_ml's full profile only: every stage runs and writes its
products and figures. **No number from a run on this folder may be reported anywhere.**

spectra_ml sees this file and (1) verifies these files structurally (columns, rows > 0), never as
the registered archive files, and (2) marks every run on them `"synthetic_mirror": true`.
"""


def _ids(rng, n: int) -> np.ndarray:
    "Unique positive Gaia-like source_ids (HEALPix-12 index in the top bits), sorted."
    hp12 = rng.integers(0, 12 * 4**12, n).astype(np.int64)
    ids = (hp12 << 35) + rng.integers(1, 2**34, n).astype(np.int64)
    ids = np.unique(ids)
    while len(ids) < n:
        ids = np.unique(np.concatenate([ids, _ids(rng, n - len(ids))]))
    return ids[:n]


def _kinematics(rng, n: int, halo_frac: float = 0.5) -> pd.DataFrame:
    "ra, dec, distance and Gaia proper motions / RV of a made-up disc + halo mix (astropy frames)."
    import astropy.units as u
    from astropy.coordinates import Galactic, Galactocentric, SkyCoord, CartesianDifferential

    d = rng.uniform(0.5, 4.0, n)
    l = rng.uniform(0, 360, n)
    low = rng.random(n) < 0.1  # a few low-latitude stars: E(B-V) above the cuts
    sinb = np.where(low, rng.uniform(-0.1, 0.1, n), rng.choice([-1, 1], n) * rng.uniform(0.3, 1, n))
    b = np.degrees(np.arcsin(sinb))
    gal = SkyCoord(l=l * u.deg, b=b * u.deg, distance=d * u.kpc, frame=Galactic)
    gc = gal.transform_to(Galactocentric())
    x, y, z = gc.x.to_value(u.kpc), gc.y.to_value(u.kpc), gc.z.to_value(u.kpc)
    halo = rng.random(n) < halo_frac
    vr = np.where(halo, rng.normal(0, 150, n), rng.normal(0, 35, n))
    vphi = np.where(halo, rng.normal(30, 100, n), rng.normal(220, 30, n))
    vz = np.where(halo, rng.normal(0, 100, n), rng.normal(0, 20, n))
    phi = np.arctan2(y, x)
    # astropy's Galactocentric is left-handed in phi: the disc rotates towards -phi
    vx = vr * np.cos(phi) + vphi * np.sin(phi)
    vy = vr * np.sin(phi) - vphi * np.cos(phi)
    c = SkyCoord(
        x=x * u.kpc,
        y=y * u.kpc,
        z=z * u.kpc,
        frame=Galactocentric(),
        differential_type=CartesianDifferential,
        v_x=vx * u.km / u.s,
        v_y=vy * u.km / u.s,
        v_z=vz * u.km / u.s,
    ).icrs
    return pd.DataFrame(
        {
            "ra": c.ra.deg,
            "dec": c.dec.deg,
            "distance_kpc": d,
            "pmra": c.pm_ra_cosdec.to_value(u.mas / u.yr),
            "pmdec": c.pm_dec.to_value(u.mas / u.yr),
            "radial_velocity": c.radial_velocity.to_value(u.km / u.s),
        }
    )


def synthetic_stars(n: int = 2400, seed: int = 7) -> pd.DataFrame:
    "The made-up star list every file is cut from: ids, astrometry, photometry, labels, abundances."
    rng = np.random.default_rng(seed)
    ids = _ids(rng, n)
    ids[: len(FIG2_IDS)] = FIG2_IDS  # so the full profile's Fig. 2 finds its three ids
    df = pd.DataFrame({"source_id": ids}).join(_kinematics(rng, n))
    df["teff"] = rng.uniform(3900, 5350, n)
    df["logg"] = np.clip(0.9 + (df.teff - 3900) / 1450 * 2.0 + rng.normal(0, 0.3, n), 0.2, 3.4)
    pop = rng.random(n)  # disc-like, metal-poor and very metal-poor (every [Fe/H] bin gets stars)
    df["fe_h"] = np.select(
        [pop < 0.1, pop < 0.35],
        [rng.uniform(-2.5, -1.9, n), rng.normal(-1.3, 0.35, n)],
        rng.normal(-0.3, 0.3, n),
    )
    df["mg_fe"] = np.clip(0.3 - 0.15 * (df.fe_h + 0.5), -0.1, 0.45) + rng.normal(0, 0.05, n)
    two_p = rng.random(n) < 0.08  # made-up "2P-like" stars: high [N/O] and [Al/Fe]
    df["o_fe"] = df.mg_fe + rng.normal(0, 0.08, n) - np.where(two_p, 0.3, 0.0)
    df["n_fe"] = df.o_fe + np.where(two_p, rng.normal(1.0, 0.15, n), rng.normal(-0.1, 0.15, n))
    df["al_fe"] = np.where(two_p, rng.normal(0.4, 0.15, n), rng.normal(0.0, 0.15, n))
    df["na_fe"] = 0.6 * df.al_fe + rng.normal(0, 0.1, n)
    df["c_fe"] = rng.normal(-0.1, 0.15, n) - np.where(two_p, 0.3, 0.0)
    df["ca_fe"] = 0.8 * df.mg_fe + rng.normal(0, 0.05, n)
    df["alpha_fe"] = 0.5 * (df.mg_fe + df.ca_fe)
    df["phot_g_mean_mag"] = rng.uniform(9.0, 16.3, n)
    df["bp_rp"] = 1.0 + (5300 - df.teff) / 1400 * 0.8 + rng.normal(0, 0.03, n)
    df["phot_bp_mean_mag"] = df.phot_g_mean_mag + 0.45 * df.bp_rp
    df["phot_rp_mean_mag"] = df.phot_bp_mean_mag - df.bp_rp
    df["parallax"] = 1.0 / df.distance_kpc + rng.normal(0, 0.02, n)
    df["parallax_error"] = rng.uniform(0.012, 0.03, n)
    df["pmra_error"] = rng.uniform(0.01, 0.03, n)
    df["pmdec_error"] = rng.uniform(0.01, 0.03, n)
    df["radial_velocity_error"] = rng.uniform(0.5, 3.0, n)
    df["ruwe"] = np.where(rng.random(n) < 0.03, 1.8, rng.normal(1.0, 0.05, n))
    df["bp_degrees_of_freedom"] = rng.integers(40, 80, n)
    df["bp_chi_squared"] = df.bp_degrees_of_freedom * rng.uniform(1.0, 4.0, n)
    df["has_xp"] = rng.random(n) > 0.03  # a few stars without XP: flagged downstream
    df.loc[: len(FIG2_IDS) - 1, "has_xp"] = True
    # made up, no draw (the seeded stream above is unchanged): ~1.2, a few redder than F&S's 3.0 cut
    df["phot_bp_rp_excess_factor"] = 1.18 + 0.02 * df.bp_rp + np.where(df.index % 97 == 5, 2.5, 0.0)
    return df


def _xp_coefficients(stars: pd.DataFrame, seed: int) -> dict:
    "Made-up BP/RP coefficients: a smooth template scaled by the G flux, linear in the labels, plus noise."
    rng = np.random.default_rng(seed + 1)
    n = len(stars)
    k = np.arange(N_COEFF)
    z = np.column_stack(
        [
            (stars.teff - 4600) / 400,
            (stars.logg - 2) / 0.7,
            (stars.fe_h + 0.6) / 0.5,
            (stars.n_fe - stars.o_fe) / 0.4,
            stars.al_fe / 0.2,
        ]
    )
    flux = 10 ** (-0.4 * (stars.phot_g_mean_mag.to_numpy() - 15.0)) * 2000.0
    out = {}
    for band, phase in (("bp", 0.0), ("rp", 1.3)):
        template = np.exp(-k / 7.0) * np.cos(0.9 * k + phase)
        template[0] = 1.0
        w = rng.normal(0, 0.08, (N_COEFF, z.shape[1])) * np.exp(-k / 12.0)[:, None]
        w[0] = 0.0
        rel = template[None, :] + z @ w.T
        c = flux[:, None] * rel
        err = flux[:, None] * (0.002 + 0.004 * np.exp(-k / 10.0))[None, :]
        out[f"{band}_coefficients"] = c + rng.normal(0, 1, c.shape) * err
        out[f"{band}_coefficient_errors"] = err
        out[f"{band}_n_relevant_bases"] = rng.integers(40, N_COEFF + 1, n)
        out[f"{band}_standard_deviation"] = rng.uniform(0.9, 1.3, n)
        out[f"{band}_chi_squared"] = rng.uniform(40, 200, n)
        out[f"{band}_degrees_of_freedom"] = rng.integers(40, 80, n)
    return out


def _array_text(a: np.ndarray) -> list:
    return ['"[' + ",".join(f"{v:.9g}" for v in row) + ']"' for row in a]


def _ecsv_header(names_types) -> str:
    "A minimal ECSV 1.0 header (the CDN files carry one before the CSV header line)."
    lines = ["# %ECSV 1.0", "# ---", "# delimiter: ','", "# datatype:"]
    lines += [f"# - {{name: {n}, datatype: {t}}}" for n, t in names_types]
    lines += ["# meta: {SYNTHETIC: 'made up by tests/builders/synthetic_mirror.py, not Gaia data'}"]
    return "\n".join(lines) + "\n"


def _partition_name(stem: str, lo: int, hi: int) -> str:
    return f"{stem}_{lo:06d}-{hi:06d}.csv.gz"


def _write_partitioned(folder: Path, stem: str, table: pd.DataFrame, text_rows, types) -> None:
    "One csv.gz per HEALPix-8 range (bulk layout) and the folder's `_MD5SUM.txt`."
    folder.mkdir(parents=True, exist_ok=True)
    hp8 = table.source_id.to_numpy(np.int64) >> 43
    md5 = []
    for lo, hi in HP8_RANGES:
        rows = np.flatnonzero((hp8 >= lo) & (hp8 <= hi))
        name = _partition_name(stem, lo, hi)
        body = _ecsv_header(types) + ",".join(n for n, _ in types) + "\n"
        body += "".join(text_rows[i] + "\n" for i in rows)
        data = gzip.compress(body.encode(), mtime=0)
        (folder / name).write_bytes(data)
        md5.append(f"{hashlib.md5(data).hexdigest()}  {name}")
    (folder / "_MD5SUM.txt").write_text("\n".join(md5) + "\n")


def write_gaia(root: Path, stars: pd.DataFrame, seed: int) -> None:
    "gaia_source and XP continuous bulk partitions (HEALPix-8 ranges, ECSV-headed csv.gz, MD5 lists)."
    from spectra_ml.data.sources import GAIA_SOURCE_COLUMNS

    g = stars.copy()
    g["has_xp_continuous"] = g.has_xp
    cols = list(GAIA_SOURCE_COLUMNS) + ["has_xp_continuous"]
    types = [(c, "int64" if c == "source_id" else "float64") for c in cols]
    types = [(c, "bool") if c == "has_xp_continuous" else (c, t) for c, t in types]
    types = [(c, "int16") if c == "bp_degrees_of_freedom" else (c, t) for c, t in types]
    rows = [
        ",".join(
            "True"
            if v is True
            else "False"
            if v is False
            else str(int(v))
            if c in ("source_id", "bp_degrees_of_freedom")
            else f"{float(v):.10g}"
            for c, v in zip(cols, r)
        )
        for r in g[cols].itertuples(index=False, name=None)
    ]
    _write_partitioned(root / "gaia_dr3" / "gaia_source", "GaiaSource", g, rows, types)
    xp_stars = stars[stars.has_xp].reset_index(drop=True)
    xp = _xp_coefficients(xp_stars, seed)
    cols = ["solution_id", "source_id"]
    text = {
        "solution_id": ["375316653866487564"] * len(xp_stars),
        "source_id": [str(int(v)) for v in xp_stars.source_id],
    }
    types = [("solution_id", "int64"), ("source_id", "int64")]
    for b in ("bp", "rp"):
        for what, t in (
            ("standard_deviation", "float32"),
            ("chi_squared", "float32"),
            ("degrees_of_freedom", "int16"),
            ("n_relevant_bases", "int16"),
        ):
            name = f"{b}_{what}"
            cols.append(name)
            types.append((name, t))
            v = xp[name]
            text[name] = [str(int(x)) if t == "int16" else f"{x:.7g}" for x in v]
        for what in ("coefficients", "coefficient_errors"):
            name = f"{b}_{what}"
            cols.append(name)
            types.append((name, "string"))
            text[name] = _array_text(xp[name])
    rows = [",".join(text[c][i] for c in cols) for i in range(len(xp_stars))]
    folder = root / "gaia_dr3" / "xp_continuous_mean_spectrum"
    _write_partitioned(folder, "XpContinuousMeanSpectrum", xp_stars, rows, types)


def _fits(table: dict, path: Path, gz: bool = False) -> None:
    from astropy.io import fits
    from astropy.table import Table

    path.parent.mkdir(parents=True, exist_ok=True)
    t = Table(table)
    t.meta["SYNTHET"] = (True, "synthetic: NOT REAL DATA")
    hdu = fits.BinTableHDU(t)
    if gz:
        import io

        buf = io.BytesIO()
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(buf)
        path.write_bytes(gzip.compress(buf.getvalue(), mtime=0))
    else:
        fits.HDUList([fits.PrimaryHDU(), hdu]).writeto(path, overwrite=True)


def write_allstar(root: Path, s: pd.DataFrame, rng) -> None:
    "APOGEE DR17 allStar rows (the columns spectra_ml reads), some failing each §2.1 cut."
    n = len(s)
    err = lambda lo, hi: rng.uniform(lo, hi, n).astype(np.float32)
    t = {
        "APOGEE_ID": np.array([f"2MSYN{i:08d}" for i in range(n)]),
        "GAIAEDR3_SOURCE_ID": s.source_id.to_numpy(np.int64).copy(),
        "RA": s.ra.to_numpy(),
        "DEC": s.dec.to_numpy(),
        "TEFF": s.teff.to_numpy(np.float32),
        "TEFF_ERR": err(8, 30),
        "LOGG": s.logg.to_numpy(np.float32),
        "LOGG_ERR": err(0.02, 0.06),
    }
    for c in ("fe_h", "mg_fe", "n_fe", "o_fe", "al_fe", "c_fe", "na_fe"):
        t[c.upper()] = s[c].to_numpy(np.float32)
        t[c.upper() + "_ERR"] = err(0.01, 0.06 if c != "na_fe" else 0.2)
    bad = rng.random(n) < 0.03
    t["N_FE_ERR"][bad] = 0.5  # above Kane's error cut
    t["ASPCAPFLAG"] = np.where(rng.random(n) < 0.02, np.int64(1 << 23), 0).astype(np.int64)
    t["STARFLAG"] = np.zeros(n, np.int64)
    t["EXTRATARG"] = np.where(rng.random(n) < 0.02, 16, 0).astype(np.int16)
    t["SNR"] = rng.uniform(15, 400, n).astype(np.float32)
    t["GAIAEDR3_SOURCE_ID"][rng.random(n) < 0.01] = 0  # no Gaia match, as some allStar rows
    _fits(t, root / "apogee" / "allStar-dr17-synspec_rev1.fits")


def write_galah(root: Path, s: pd.DataFrame, rng) -> None:
    "GALAH DR3 main_allstar rows in the survey's column names (Na_fe, flag_Na_fe, e_Na_fe, ...)."
    n = len(s)
    t = {
        "sobject_id": np.arange(n, dtype=np.int64) + 131216000000000,
        "dr3_source_id": s.source_id.to_numpy(np.int64),
        "teff": s.teff.to_numpy(np.float32),
        "logg": s.logg.to_numpy(np.float32),
        "fe_h": s.fe_h.to_numpy(np.float32),
        "flag_fe_h": np.where(rng.random(n) < 0.05, 1, 0).astype(np.int32),
        "flag_sp": np.where(rng.random(n) < 0.05, 1, 0).astype(np.int32),
        "snr_c3_iraf": rng.uniform(15, 150, n).astype(np.float32),
        "ra_dr2": s.ra.to_numpy(),
        "dec_dr2": s.dec.to_numpy(),
        "ebv": rng.uniform(0.0, 0.3, n).astype(np.float32),
    }
    for e, name in (
        ("na", "Na"),
        ("o", "O"),
        ("al", "Al"),
        ("mg", "Mg"),
        ("ca", "Ca"),
        ("alpha", "alpha"),
    ):
        t[f"{name}_fe"] = (s[f"{e}_fe"] + rng.normal(0, 0.05, n)).to_numpy(np.float32)
        t[f"e_{name}_fe"] = rng.uniform(0.03, 0.15, n).astype(np.float32)
        t[f"flag_{name}_fe"] = np.where(rng.random(n) < 0.1, 1, 0).astype(np.int32)
    _fits(t, root / "galah" / "GALAH_DR3_main_allstar_v2.fits")


def write_andrae(root: Path, s: pd.DataFrame, rng) -> None:
    "Andrae+23 table 2 rows (gzipped FITS): XGBoost Teff, log g, [M/H]; a few log g >= 3."
    n = len(s)
    t = {
        "source_id": s.source_id.to_numpy(np.int64),
        "ra": s.ra.to_numpy(),
        "dec": s.dec.to_numpy(),
        "teff_xgboost": (s.teff + rng.normal(0, 50, n)).to_numpy(np.float32),
        "logg_xgboost": (s.logg + rng.normal(0, 0.1, n)).to_numpy(np.float32),
        "mh_xgboost": (s.fe_h + rng.normal(0, 0.1, n)).to_numpy(np.float32),
    }
    _fits(t, root / "andrae2023" / "table_2_catwise.fits.gz", gz=True)


def write_vb21(root: Path, s: pd.DataFrame, rng, n_clusters: int = 3) -> None:
    "VB21-format member files of made-up clusters: sample stars (high probability) and field rows."
    from spectra_ml.data.references import VB21_COLUMNS

    folder = root / "vb21_members" / "catalogues"
    folder.mkdir(parents=True, exist_ok=True)
    for k, idx in enumerate(np.array_split(np.arange(len(s)), n_clusters)):
        part = s.iloc[idx]
        n = len(part)
        field = rng.random(n) < 0.25
        d = pd.DataFrame(
            {
                "source_id": part.source_id.to_numpy(np.int64),
                "ra": part.ra,
                "dec": part.dec,
                "x": rng.normal(0, 0.1, n),
                "y": rng.normal(0, 0.1, n),
                "plx": part.parallax,
                "pmra": part.pmra,
                "pmdec": part.pmdec,
                "plxe": part.parallax_error,
                "pmrae": part.pmra_error,
                "pmdece": part.pmdec_error,
                "pmcorr": rng.uniform(-0.2, 0.2, n),
                "g_mag": part.phot_g_mean_mag,
                "bp_rp": part.bp_rp,
                "Sigma": rng.uniform(1, 3, n),
                "qflag": rng.integers(0, 4, n),
                "memberprob": np.where(field, rng.uniform(0, 0.3, n), rng.uniform(0.7, 1, n)),
            }
        )[VB21_COLUMNS]
        with open(folder / f"Synthetic_GC_{k + 1}.txt", "w") as f:
            f.write("# " + "\t".join(VB21_COLUMNS) + "\n")
            d.to_csv(f, sep="\t", header=False, index=False, float_format="%.5f")


def write_synthetic_mirror(
    root,  # output folder (created; never inside the repository's tracked files)
    n_stars: int = 2400,  # size of the made-up star list the files are cut from
    seed: int = 7,  # everything is drawn from this seed
) -> Path:
    "Write the synthetic mirror; returns its root. Each table is a seeded random draw, in the archive's format."
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / MARKER).write_text(MARKER_TEXT.format(seed=seed))
    rng = np.random.default_rng(seed + 2)
    s = synthetic_stars(n_stars, seed)
    n = len(s)
    apogee = s.iloc[: int(0.45 * n)]  # the APOGEE part (training sample)
    andrae = s.iloc[int(0.37 * n) :]  # the RGB catalogue: overlaps APOGEE (removed as training)
    galah = pd.concat(
        [s.iloc[int(0.30 * n) : int(0.35 * n)], s.iloc[int(0.70 * n) : int(0.85 * n)]]
    )
    members = pd.concat(
        [s.iloc[int(0.40 * n) : int(0.42 * n)], s.iloc[int(0.80 * n) : int(0.84 * n)]]
    )
    write_allstar(root, apogee.reset_index(drop=True), rng)
    write_andrae(root, andrae.reset_index(drop=True), rng)
    write_galah(root, galah.reset_index(drop=True), rng)
    write_vb21(root, members.reset_index(drop=True), rng)
    write_gaia(root, s, seed)
    return root


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to write (e.g. runs/synthetic_mirror)")
    p.add_argument("--stars", type=int, default=2400)
    p.add_argument("--seed", type=int, default=7)
    a = p.parse_args(argv)
    print(write_synthetic_mirror(a.out, a.stars, a.seed))


if __name__ == "__main__":
    main()
