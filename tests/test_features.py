"""The XP coefficient toolkit on the real archive files: readers, covariance, the papers' normalisations."""

import numpy as np
import pytest

from spectra_ml import features as xp
from spectra_ml.data.xp_files import read_xp


@pytest.fixture
def xp_files(local_data):
    return local_data / "gaia_xp"


def test_covariance_matches_gaiaxpy(xp_files):
    from gaiaxpy.core.generic_functions import correlation_to_covariance

    d = read_xp(xp_files / "xp_continuous_combined_weiler2023_examples.vot")
    for b in ("bp", "rp"):
        ours = xp.xp_covariance(
            d[f"{b}_coefficient_errors"],
            d[f"{b}_coefficient_correlations"],
            d[f"{b}_standard_deviation"],
        )
        for i in range(len(ours)):
            ref = correlation_to_covariance(
                d[f"{b}_coefficient_correlations"][i].astype(float),
                d[f"{b}_coefficient_errors"][i].astype(float),
                float(d[f"{b}_standard_deviation"][i]),
            )
            np.testing.assert_allclose(ours[i], ref, rtol=1e-6, atol=1e-12 * np.abs(ref).max())
            assert np.all(
                np.linalg.eigvalsh(ours[i]) > -1e-8 * np.abs(ours[i]).max()
            )  # a covariance


def test_fallows_sanders_propagation_is_the_linearised_transform(xp_files):
    d = read_xp(xp_files / "XP_CONTINUOUS_RAW.csv")
    cov_rp = xp.xp_covariance(
        d["rp_coefficient_errors"], d["rp_coefficient_correlations"], d["rp_standard_deviation"]
    )
    cov_bp = xp.xp_covariance(
        d["bp_coefficient_errors"], d["bp_coefficient_correlations"], d["bp_standard_deviation"]
    )
    x, c_rp, c_bp = xp.fallows_sanders_features(
        d["bp_coefficients"], d["rp_coefficients"], cov_bp, cov_rp
    )
    assert x.shape == (2, 110) and np.allclose(x[:, 0], 1.0)
    # independent check: J S J^T with the analytic Jacobian of x_i = r_i / r_0 (RP block)
    for k in range(2):
        r = d["rp_coefficients"][k].astype(float)
        J = np.eye(55) / r[0]
        J[:, 0] -= r / r[0] ** 2
        np.testing.assert_allclose(c_rp[k], J @ cov_rp[k] @ J.T, rtol=1e-6, atol=1e-12)
        np.testing.assert_allclose(c_bp[k], cov_bp[k] / r[0] ** 2, rtol=1e-12)


def test_kane_guiglion_aspgap_features_and_snr(xp_files):
    d = read_xp(xp_files / "xp_continuous_combined_chunk0.fits")
    bp, rp = d["bp_coefficients"], d["rp_coefficients"]
    k = xp.kane_coefficient_features(bp, rp)
    g = xp.guiglion_features(bp, rp)
    assert k.shape == (2000, 108) and g.shape == (2000, 110) and np.allclose(g[:, [0, 55]], 1)
    np.testing.assert_allclose(
        k[:, :54], g[:, 1:55], rtol=1e-6
    )  # same normalisation, first dropped
    a = xp.aspgap_features(bp, rp, np.full(2000, 15.0))
    np.testing.assert_allclose(a[:, :55], bp, rtol=1e-6)  # G = 15: the factor is 1
    snr = xp.xp_snr(bp, d["bp_coefficient_errors"])
    assert (
        snr.shape == (2000, 2) and (snr[:, 0] > snr[:, 1]).mean() > 0.9
    )  # the first coefficients carry the signal
    tr, te = k[:1500], k[1500:]
    for S in (xp.MedianIQRScaler, xp.MinMaxScaler):
        s = S().fit(tr)
        z = s.transform(te)
        assert z.shape == te.shape and np.allclose(S.from_dict(s.to_dict()).transform(te), z)


@pytest.fixture(scope="module")
def converter():
    from spectra_ml.features import XPConverter

    return XPConverter()


def test_matrix_conversion_matches_gaiaxpy_calibrate(local_data, converter):
    """Our coefficient -> spectrum conversion against GaiaXPy's `calibrate` on 300 real stars: 1e-6 relative."""
    from astropy.table import Table
    from spectra_ml.data.xp_files import gaiaxpy_input_from_columns
    from spectra_ml.features import sampled_spectra, xp_covariance

    xp = Table.read(local_data / "gaia_xp" / "xp_continuous_combined_chunk0.fits")[:300]
    sid, wl, F, E = sampled_spectra(gaiaxpy_input_from_columns(xp))
    get = lambda fmt: np.column_stack([np.asarray(xp[fmt.format(i)], float) for i in range(55)])
    f = converter.flux(get("bp_coeff_{}"), get("rp_coeff_{}"))
    e = converter.flux_error(
        xp_covariance(get("e_bp_coeff_{}")), xp_covariance(get("e_rp_coeff_{}"))
    )
    j = np.searchsorted(sid, np.asarray(xp["source_id"]), sorter=np.argsort(sid))
    j = np.argsort(sid)[j]
    assert (sid[j] == np.asarray(xp["source_id"])).all()
    assert np.max(np.abs(f - F[j]) / np.abs(F[j]).max(1, keepdims=True)) < 1e-6
    big = np.abs(F[j]) > 1e-3 * np.abs(F[j]).max(
        1, keepdims=True
    )  # pixel by pixel where the flux is not ~0
    assert np.max(np.abs(f / F[j] - 1)[big]) < 1e-6
    assert np.max(np.abs(e / E[j] - 1)) < 1e-6
    assert np.array_equal(wl, converter.wavelength)


@pytest.mark.parametrize(
    "name",
    ["xp_continuous_combined_weiler2023_examples.vot", "XP_CONTINUOUS_RAW_with_missing_BP.csv"],
)
def test_matrix_conversion_with_correlations_and_missing_band(
    local_data, converter, name, tmp_path
):
    """Archive files with correlations (errors through the full covariance) and a star without BP."""
    import shutil
    from spectra_ml.features import sampled_spectra, xp_covariance

    path = local_data / "gaia_xp" / name
    d = read_xp(path)
    if path.suffix == ".vot":  # GaiaXPy reads VOTables only under the .xml extension
        path = shutil.copy(path, tmp_path / (path.stem + ".xml"))
    sid, wl, F, E = sampled_spectra(path)
    assert list(sid) == list(d["source_id"])
    f = converter.flux(d["bp_coefficients"], d["rp_coefficients"])
    cov = {
        b: xp_covariance(
            d[f"{b}_coefficient_errors"],
            d[f"{b}_coefficient_correlations"],
            d[f"{b}_standard_deviation"],
        )
        for b in ("bp", "rp")
    }
    e = converter.flux_error(
        cov["bp"], cov["rp"], d["bp_standard_deviation"], d["rp_standard_deviation"]
    )
    np.testing.assert_array_equal(
        np.isnan(f), np.isnan(F)
    )  # a missing band: NaN exactly where GaiaXPy has NaN
    ok = np.isfinite(F)
    scale = np.nanmax(np.abs(F), axis=1, keepdims=True)
    assert np.max((np.abs(f - F) / scale)[ok]) < 1e-6
    assert np.max(np.abs(e / E - 1)[ok]) < 1e-6
    if "missing" in name:
        assert (
            d["flag_missing_bp"].tolist() == [False, True, False]
            and np.isfinite(f[1][wl > 700]).all()
        )
