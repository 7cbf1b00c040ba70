"""Each paper's inputs, built by name from real archive XP coefficients and wired through training and prediction.

Real data: the mirror's 2,000-star XP continuous chunk (coefficients and errors, no correlations) and the 4 archive
stars with correlations. The networks trained here learn SYNTHETIC labels (random numbers): they exist only to carry
the real inputs through training, the checkpoint and both prediction routes. No number they give is reported; the
tests check what the inputs, the covariance and σ²_input must be whatever the labels.
"""

import json

import numpy as np
import pandas as pd
import pytest

from spectra_ml.data.xp_files import read_xp
from spectra_ml.features import (
    PAPER_INPUTS,
    aspgap_snr_cuts,
    fallows_sanders_features,
    fs_input_covariance,
    paper_input_covariance,
    paper_input_names,
    paper_inputs,
    spectral_inputs,
    with_paper_inputs,
    xp_covariance,
    xp_from_table,
    xp_table_columns,
)

CHUNK = "gaia_xp/xp_continuous_combined_chunk0.fits"
WITH_CORR = "gaia_xp/xp_continuous_combined_weiler2023_examples.vot"


@pytest.fixture
def xp2000(local_data):
    return read_xp(local_data / CHUNK)


@pytest.fixture
def xp4(local_data):
    return read_xp(local_data / WITH_CORR)


def _table(xp, keep="coefficients", g=None):
    n = len(xp["source_id"])
    df = pd.DataFrame({"source_id": xp["source_id"], **xp_table_columns(xp, np.arange(n), keep)})
    if g is not None:
        df["phot_g_mean_mag"] = g
    return df


def test_fallows_sanders_covariance_matches_monte_carlo(xp4):
    """F&S Eq. 2 against an independent reference: draw coefficients from the DR3 covariance of a real star (with its
    correlations), normalise each draw by its own RP₀ (Eq. 1) and compare the draws' covariance with the propagated
    one. RP block: every term of Eq. 2. BP block: Eq. 2 as printed (Σ̃/x̃²_RP0), which is what the draws give when
    RP₀ is held fixed."""
    rng = np.random.default_rng(1)
    C = fs_input_covariance(xp4).astype(float)
    for s in range(4):
        cov = {
            b: xp_covariance(
                xp4[f"{b}_coefficient_errors"][[s]], xp4[f"{b}_coefficient_correlations"][[s]]
            )[0]
            for b in ("bp", "rp")
        }
        n = 40_000
        rp = rng.multivariate_normal(xp4["rp_coefficients"][s], cov["rp"], n, method="cholesky")
        bp = rng.multivariate_normal(xp4["bp_coefficients"][s], cov["bp"], n, method="cholesky")
        x_rp = fallows_sanders_features(bp, rp)[0][:, :55]
        emp = np.cov(x_rp[:, 1:], rowvar=False)
        prop = C[s, 1:55, 1:55]
        scale = np.sqrt(np.outer(np.diag(prop), np.diag(prop)))
        assert np.abs(emp - prop).max() / scale.max() < 0.05  # sampling noise of 40,000 draws
        assert np.allclose(np.diag(emp), np.diag(prop), rtol=0.05)
        # every term of Eq. 2: exactly J Σ̃ Jᵀ with J the Jacobian of x_RP = RP / RP₀ (by finite differences)
        c0, h = xp4["rp_coefficients"][s].astype(float), 1e-6
        J = np.stack(
            [
                (
                    fallows_sanders_features(np.ones((1, 55)), (c0 + h * np.eye(55)[k])[None])[0][
                        0, :55
                    ]
                    - fallows_sanders_features(np.ones((1, 55)), (c0 - h * np.eye(55)[k])[None])[0][
                        0, :55
                    ]
                )
                / (2 * h)
                for k in range(55)
            ],
            1,
        )
        np.testing.assert_allclose(
            C[s, :55, :55], J @ cov["rp"] @ J.T, rtol=1e-4, atol=1e-6 * prop.max()
        )
        x_bp_fixed = bp / xp4["rp_coefficients"][s, 0]
        assert np.allclose(
            np.diag(np.cov(x_bp_fixed, rowvar=False)), np.diag(C[s, 55:, 55:]), rtol=0.05
        )
        assert np.all(C[s, :55, 55:] == 0)  # DR3 has no BP-RP covariance


def test_rp0_zero_divides_by_its_error():
    "F&S §2.2: where RP₀ = 0, its uncertainty is the divisor (no division by zero, no NaN)."
    bp, rp = np.ones((1, 55)), np.ones((1, 55))
    rp[0, 0] = 0.0
    x = fallows_sanders_features(bp, rp, rp0_error=np.array([0.5]))[0]
    assert np.allclose(x[0, 1:55], 2.0) and np.allclose(x[0, 55:], 2.0) and x[0, 0] == 0
    assert not np.isfinite(
        fallows_sanders_features(bp, rp)[0][0, 1]
    )  # without the error: a flagged row


def test_each_papers_inputs_on_real_rows(xp2000):
    "Kane 108, F&S / RP₀ (RP first), AspGap / 10^{0.5(15−G)} (BP first), Guiglion BP/BP₀ and RP/RP₀, by name."
    bp, rp = xp2000["bp_coefficients"].astype(float), xp2000["rp_coefficients"].astype(float)
    g = np.linspace(12.0, 17.5, len(bp))  # magnitudes to divide by (any G checks the formula)
    df = with_paper_inputs(
        _table(xp2000, g=g), [n for k in PAPER_INPUTS for n in paper_input_names(k)]
    )
    fs = df[paper_input_names("fallows_sanders")].to_numpy()
    assert np.allclose(fs[:, :55], rp / rp[:, :1]) and np.allclose(fs[:, 55:], bp / rp[:, :1])
    ag = df[paper_input_names("aspgap")].to_numpy()
    f = 10 ** (0.5 * (15 - g))[:, None]
    assert np.allclose(ag, np.hstack([bp, rp]) / f, rtol=1e-5)
    gg = df[paper_input_names("guiglion")].to_numpy()
    assert np.allclose(gg[:, [0, 55]], 1) and np.allclose(
        gg[:, 1:55], bp[:, 1:] / bp[:, :1], rtol=1e-5
    )
    kane = df[paper_input_names("kane")].to_numpy()
    assert np.allclose(kane[:, :54], bp[:, 1:] / bp[:, :1], rtol=1e-5)
    with pytest.raises(Exception, match="phot_g_mean_mag"):
        with_paper_inputs(_table(xp2000), paper_input_names("aspgap"))


def test_raw_columns_round_trip_through_parquet(xp4, tmp_path):
    "The raw XP arrays a sample keeps come back bit for bit (float32) from Parquet, correlations included."
    df = _table(xp4, "covariance")
    df.to_parquet(tmp_path / "t.parquet")
    back = xp_from_table(pd.read_parquet(tmp_path / "t.parquet"))
    for k in ("bp_coefficients", "rp_coefficient_errors", "bp_coefficient_correlations"):
        np.testing.assert_array_equal(back[k], np.asarray(xp4[k], np.float32))
    C = paper_input_covariance(
        pd.read_parquet(tmp_path / "t.parquet"), paper_input_names("fallows_sanders")
    )
    np.testing.assert_allclose(C, fs_input_covariance(back))


def test_aspgap_snr_cuts_on_real_rows(xp2000):
    "AspGap §2's S/N cuts, recounted with numpy block by block: > 100 for coefficients 1–10 and > 1 for 11–55, BP and RP."
    flow = aspgap_snr_cuts(_table(xp2000))
    keep = np.ones(len(xp2000["source_id"]), bool)
    for b in ("bp", "rp"):
        c, e = (
            xp2000[f"{b}_coefficients"].astype(float),
            xp2000[f"{b}_coefficient_errors"].astype(float),
        )
        for lo, hi, smin in ((0, 10, 100), (10, 55, 1)):
            keep &= np.linalg.norm(c[:, lo:hi], axis=1) / np.linalg.norm(e[:, lo:hi], axis=1) > smin
    np.testing.assert_array_equal(flow.keep, keep)
    assert 0 < keep.sum() < len(keep)  # the cut bites on real stars
    assert "not applied" in aspgap_snr_cuts(pd.DataFrame({"source_id": [1]})).rows[-1]["note"]


def _synthetic_labels(df, seed=0):
    "SYNTHETIC labels (plumbing only) and a 70/10/20 split."
    rng = np.random.default_rng(seed)
    n = len(df)
    return df.assign(
        teff=rng.normal(4800, 300, n),
        logg=rng.normal(2.5, 0.5, n),
        teff_err=50.0,
        logg_err=0.1,
        split=np.where(
            np.arange(n) % 10 < 7, "train", np.where(np.arange(n) % 10 < 8, "validation", "test")
        ),
    )


@pytest.mark.slow
@pytest.mark.parametrize(
    "model,kind,kw",
    [
        ("uncertain_nn", "fallows_sanders", {"max_iterations": 20, "batch_size": 256}),
        ("aspgap", "aspgap", {"max_epochs": 2}),
        (
            "guiglion_cnn",
            "guiglion",
            {"max_epochs": 2, "options": {"n_seeds": 1, "n_split_states": 1}},
        ),
    ],
)
def test_training_takes_the_papers_inputs(xp2000, tmp_path, model, kind, kw):
    """train_model builds each model's paper inputs from the sample's raw XP columns and records them (names, kind)
    in the checkpoint; a reloaded checkpoint predicts the same table by name."""
    from spectra_ml.checkpoint import open_checkpoint
    from spectra_ml.prediction import predict_sample
    from spectra_ml.training import train_model

    g = np.linspace(12.0, 17.5, len(xp2000["source_id"]))
    df = _synthetic_labels(_table(xp2000, g=g)).assign(
        phot_bp_mean_mag=g + 0.5, phot_rp_mean_mag=g - 0.7
    )
    tr = train_model(df, ["teff", "logg"], model=model, progress=False, **kw)
    assert tr.info["input_kind"] == kind
    assert tr.info["input_columns"][:110] == paper_input_names(kind)
    # the sample keeps errors but no correlations: said, not hidden
    want = (
        "DR3 errors only (the sample keeps no correlations)" if kind == "fallows_sanders" else None
    )
    assert tr.info["input_covariance"] == want
    tr.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["input_columns"][:110] == paper_input_names(kind)
    assert meta["training"]["input_kind"] == kind
    pred, _ = predict_sample(open_checkpoint(tmp_path / "m"), df, n_passes=3, progress=False)
    assert len(pred) == len(df) and pred.mu_teff.notna().all()
    if (
        kind == "fallows_sanders"
    ):  # σ²_input from the propagated DR3 covariance: > 0 on every real row
        assert (pred.sigma_input_teff > 0).all() and (pred.sigma_input_logg > 0).all()


@pytest.mark.slow
def test_fs_sigma_input_from_an_archive_file(xp4, local_data, tmp_path):
    """The command line: an F&S checkpoint labels the 4 archive stars with correlations; σ_input > 0 for each, and
    equal to the sample route's on the same stars (one covariance, two routes)."""
    from spectra_ml.prediction import predict_sample
    from spectra_ml.checkpoint import open_checkpoint
    from spectra_ml.training import train_model

    train = _synthetic_labels(_table(read_xp(local_data / CHUNK), "coefficients"))
    tr = train_model(
        train,
        ["teff", "logg"],
        model="uncertain_nn",
        progress=False,
        max_iterations=20,
        batch_size=256,
    )
    tr.save(tmp_path / "m")
    out = tmp_path / "out"
    from spectra_ml.cli import main

    args = ["predict", "--model", str(tmp_path / "m"), "--input", str(local_data / WITH_CORR)]
    assert main(args + ["--output", str(out), "--passes", "4", "--format", "csv"]) in (0, None)
    got = pd.concat([pd.read_csv(f, comment="#") for f in sorted(out.rglob("*.csv"))])
    assert len(got) == 4 and (got.sigma_input_teff > 0).all()
    assert not [c for c in got.columns if "coefficient" in c]  # the raw arrays are not written out
    ref, _ = predict_sample(
        open_checkpoint(tmp_path / "m"),
        _synthetic_labels(_table(xp4, "covariance")),
        n_passes=4,
        progress=False,
    )
    got = got.set_index("source_id").loc[ref.source_id]
    np.testing.assert_allclose(got.sigma_input_teff, ref.sigma_input_teff, rtol=1e-3)


def test_demo_like_sample_names_what_it_lacks():
    "A sample of sampled spectra only (the demo) trains on them, and the note names the paper's inputs it lacked."
    df = pd.DataFrame({f"flux_{i:03d}": [1.0, 2.0] for i in range(3)})
    for kind in PAPER_INPUTS:
        names, note = spectral_inputs(kind, df)
        assert names == ["flux_000", "flux_001", "flux_002"] and paper_input_names(kind)[0] in note
    names, note = spectral_inputs(
        "fallows_sanders",
        _table(
            {
                "source_id": np.array([1]),
                "bp_coefficients": np.ones((1, 55)),
                "rp_coefficients": np.ones((1, 55)),
            }
        ),
    )
    assert names == paper_input_names("fallows_sanders") and note is None


@pytest.mark.slow
def test_predict_reads_ingested_bulk_partitions(local_data, tmp_path):
    """`spectra_ml predict` on a folder of ingested XP partitions (the bulk route's Parquet, raw coefficients): the
    default model's sampled-flux inputs are built from the arrays, identical to those of the archive file itself; rows
    in equal rows out; the star without BP is flagged; the raw arrays are not written out."""
    from spectra_ml.cli import main
    from spectra_ml.data.xp_files import ingest_xp_csv
    from spectra_ml.features import xp_input_table

    csv = local_data / "gaia_xp" / "XP_CONTINUOUS_RAW_with_missing_BP.csv"
    (part,) = ingest_xp_csv(csv, tmp_path / "ingest")
    names = [f"flux_{i:03d}" for i in range(343)]
    built = with_paper_inputs(pd.read_parquet(part), names)
    np.testing.assert_array_equal(built[names], xp_input_table(read_xp(csv), names)[names])
    out = tmp_path / "out"
    assert main(
        ["predict", "--input", str(tmp_path / "ingest"), "--output", str(out), "--format", "csv"]
    ) in (0, None)
    got = pd.concat([pd.read_csv(f, comment="#") for f in sorted(out.glob("*.csv"))])
    assert got.source_id.tolist() == read_xp(csv)["source_id"].tolist()
    assert got.flag_bad_input.tolist() == [False, True, False] and got.mu_teff.notna().sum() == 2
    assert not [c for c in got.columns if "coefficient" in c or c.startswith("flux_")]


def test_sigma_input_uses_the_whole_covariance_in_scaled_units():
    """diag(J Σ Jᵀ) from a 3-D var_x equals autograd's J with a non-diagonal Σ (the off-diagonal terms count), and
    σ²_input is the same whatever the feature scaling (Σ scaled by span_i span_j, the Jacobian by span_j)."""
    import torch
    from spectra_ml.features import scale_input_variance
    from spectra_ml.models.fallows_sanders import UncertainNN, input_variance, jacobian_variance

    torch.manual_seed(0)
    net = UncertainNN(6, 2).eval()
    x = torch.randn(5, 6, dtype=torch.float32)
    A = torch.randn(5, 6, 6)
    C = A @ A.transpose(1, 2) / 6  # synthetic: a full covariance per star
    J = torch.autograd.functional.jacobian(lambda z: net(z)[0].sum(0), x).permute(
        1, 0, 2
    )  # (N, L, D)
    ref = torch.einsum("nld,nde,nle->nl", J, C, J)
    got = jacobian_variance(J, C)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)
    diag_only = jacobian_variance(J, torch.diagonal(C, dim1=1, dim2=2))
    assert (
        got - diag_only
    ).abs().max() > 1e-3 * ref.abs().max()  # dropping the off-diagonals would show
    torch.testing.assert_close(input_variance(net, x, var_x=C), ref, rtol=1e-4, atol=1e-6)
    # a rescaled input x' = x / s: Σ' = Σ / s s^T and J' = J s give the same σ²_input
    s = np.array([2.0, 0.5, 3.0, 1.0, 4.0, 0.25], np.float32)
    Cs = torch.as_tensor(scale_input_variance(C.numpy(), s))
    torch.testing.assert_close(
        jacobian_variance(J * torch.as_tensor(s), Cs), ref, rtol=1e-4, atol=1e-6
    )
    np.testing.assert_allclose(scale_input_variance(np.ones((1, 6)), s)[0], 1 / s**2, rtol=1e-6)


def test_rp_halves_and_a_missing_cell(xp2000):
    "Kane's and Guiglion's RP halves are RP/RP₀; a table cell without XP (NaN from a merge) reads as a NaN row."
    bp, rp = xp2000["bp_coefficients"].astype(float), xp2000["rp_coefficients"].astype(float)
    t = _table(xp2000)
    df = with_paper_inputs(t, paper_input_names("guiglion") + paper_input_names("kane"))
    np.testing.assert_allclose(
        df[paper_input_names("guiglion")[56:]], rp[:, 1:] / rp[:, :1], rtol=1e-5
    )
    np.testing.assert_allclose(df[paper_input_names("kane")[54:]], rp[:, 1:] / rp[:, :1], rtol=1e-5)
    t.loc[3, "bp_coefficients"] = np.nan
    back = xp_from_table(t)
    assert (
        np.isnan(back["bp_coefficients"][3]).all() and np.isfinite(back["bp_coefficients"][4]).all()
    )
