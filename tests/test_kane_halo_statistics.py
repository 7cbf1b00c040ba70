"""Kane §4.1–§4.2 put together, on hand-made halo populations whose answers are known by construction.

A wrong assembly fails here: the K–S tests run on every candidate instead of those in the μ[Fe/H] window,
the window or the Teff cut dropped from the chemical groups, Fig. 12 without its ×3.6, Fig. 11's ratios over
the wrong denominators, or the in-situ ratio's band computed as if candidates and in-situ stars were separate."""

import numpy as np
import pandas as pd
import pytest
from scipy.stats import ks_2samp

from spectra_ml.kane import dynamics as dyn


def _rows(n, fe_h, al, cand, e_mean, r, teff=4500.0, halo=True, rng=None):
    return pd.DataFrame(
        {
            "mu_fe_h": fe_h,
            "mu_teff": teff,
            "mu_al_fe": al,
            "v_phi": 0.0 if halo else 250.0,
            "flag_halo_hr": halo,
            "flag_2p_candidate": cand,
            "E": rng.normal(e_mean, 1e4, n),
            "r": np.full(n, r, float),
            "bk23": "in-situ",
        }
    )


@pytest.fixture(scope="module")
def population():
    """Known groups (μ[Fe/H] window −1.4 < μ < −1.1, E in km²/s², r in kpc):
    - A: 10 window candidates with μ[Al/Fe] 0.3 (also in situ), E ~ −1.7e5, r = 2
    - B: 20 window candidates with μ[Al/Fe] 0.1 (candidates only), E ~ −1.7e5, r = 2 (10) and 8 (10)
    - C: 40 in-situ non-candidates (μ[Al/Fe] 0.3), E ~ −1.7e5, r = 2 (20) and 8 (20)
    - D: 50 accreted (μ[Al/Fe] −0.3), E ~ −1.1e5, r = 2 (10) and 8 (40)
    - E: 25 candidates OUTSIDE the window (μ[Fe/H] −1.8), E ~ −1.1e5 (accreted-like), r = 2
    - F: 15 window stars with μ[Al/Fe] 0.3 but μ Teff 5200 (not in situ: Teff ≥ 5000), r = 8
    - G: 30 window candidates on disc orbits (not in the high-reliability halo)
    - H: 60 window non-candidates, μ[Al/Fe] 0.0 (neither group), r = 8"""
    rng = np.random.default_rng(11)
    w = -1.25
    parts = [
        _rows(10, w, 0.3, True, -1.7e5, 2, rng=rng),
        _rows(10, w, 0.1, True, -1.7e5, 2, rng=rng),
        _rows(10, w, 0.1, True, -1.7e5, 8, rng=rng),
        _rows(20, w, 0.3, False, -1.7e5, 2, rng=rng),
        _rows(20, w, 0.3, False, -1.7e5, 8, rng=rng),
        _rows(10, w, -0.3, False, -1.1e5, 2, rng=rng),
        _rows(40, w, -0.3, False, -1.1e5, 8, rng=rng),
        _rows(25, -1.8, 0.3, True, -1.1e5, 2, rng=rng),
        _rows(15, w, 0.3, False, -1.7e5, 8, teff=5200.0, rng=rng),
        _rows(30, w, 0.3, True, -1.7e5, 2, halo=False, rng=rng),
        _rows(60, w, 0.0, False, -1.4e5, 8, rng=rng),
    ]
    h = pd.concat(parts, ignore_index=True)
    st = dyn.halo_statistics(h, [1, 5, 20], [-2.0, -1.5, -1.0])
    return h, st


def test_chemical_groups_take_the_window_teff_and_halo_cuts(population):
    _, st = population
    g = st["groups"]
    assert len(g["candidates"]) == 30  # A + B: not E (outside the window), not G (not halo)
    assert len(g["in-situ"]) == 10 + 40  # A + C: not F (Teff), not E (outside the window)
    assert len(g["accreted"]) == 50


def test_ks_tests_compare_the_window_candidates_with_each_group(population):
    h, st = population
    hr = h[h.flag_halo_hr]
    win = hr.mu_fe_h.between(-1.4, -1.1, inclusive="neither")
    cand = hr.E[hr.flag_2p_candidate & win]
    ins = hr.E[win & (hr.mu_al_fe > 0.2) & (hr.mu_teff < 5000)]
    acc = hr.E[win & (hr.mu_al_fe < -0.2)]
    for key, other in (("in-situ", ins), ("accreted", acc)):
        ref = ks_2samp(cand, other)
        got = st["ks"][key]
        assert got["n"] == [30, len(other)]
        assert np.isclose(got["statistic"], ref.statistic) and np.isclose(got["pvalue"], ref.pvalue)
    # with every candidate (the 25 accreted-like ones outside the window too) the in-situ test would differ
    wrong = ks_2samp(hr.E[hr.flag_2p_candidate], ins)
    assert not np.isclose(st["ks"]["in-situ"]["statistic"], wrong.statistic)
    assert st["ks"]["in-situ"]["pvalue"] > 0.01 > st["ks"]["accreted"]["pvalue"]


def test_fig12_candidate_fraction_carries_the_3_6_factor(population):
    h, st = population
    ((name, t),) = st["fig12"].items()
    assert "3.6" in name
    hr = h[h.flag_halo_hr]
    # bin [-1.5, -1.0) holds every window star of the high-reliability halo, 30 of them candidates
    inb = hr.mu_fe_h.between(-1.5, -1.0, inclusive="left")
    k, n = int((hr.flag_2p_candidate & inb).sum()), int(inb.sum())
    assert t.n[1] == n and t.k[1] == k == 30
    assert np.isclose(t.fraction[1], 3.6 * k / n)
    assert t.k[0] == 25 and np.isclose(t.fraction[0], 3.6)  # the out-of-window bin: 25 of 25


def test_fig11_numerators_and_denominators(population):
    _, st = population
    f = st["fig11"]
    halo = f["candidates / halo"]  # window candidates over every window halo star
    assert halo.k.tolist() == [20, 10] and halo.n.tolist() == [20 + 20 + 10, 10 + 20 + 40 + 15 + 60]
    ins = f["candidates / in situ"]  # window candidates over the in-situ group; A is in both
    assert (
        ins.k.tolist() == [20, 10] and ins.m.tolist() == [30, 20] and ins.shared.tolist() == [10, 0]
    )
    assert np.allclose(ins.fraction, [20 / 30, 10 / 20])
    acc = f["candidates / accreted"]
    assert acc.k.tolist() == [20, 10] and acc.m.tolist() == [10, 40]
    assert np.allclose(acc.fraction, [2.0, 0.25])
    # Fig. 11 is not scaled by Fig. 12's completeness factor
    assert np.isclose(halo.fraction[0], 20 / 50)


def test_overlapping_ratio_reduces_to_the_disjoint_one_without_shared_rows():
    x = np.r_[np.full(10, 0.5), np.full(40, 0.5), np.full(3, 1.5)]
    num = np.r_[np.ones(10, bool), np.zeros(40, bool), np.ones(3, bool)]
    o = dyn.overlapping_ratio(x, num, ~num, [0, 1, 2])
    d = dyn.disjoint_ratio(x[num], x[~num], [0, 1, 2])
    for col in ("k", "m", "fraction", "fraction_lo", "fraction_hi"):
        assert np.allclose(o[col], d[col], equal_nan=True), col


@pytest.mark.slow  # a few seconds: the full suite runs it
def test_overlapping_ratio_band_covers_68_percent_where_the_disjoint_band_does_not():
    """Halo stars in one bin, multinomial: 4% candidates only, 12% both, 8% in situ only, the rest neither.
    The ratio (a + b)/(b + c) is 0.16/0.20 = 0.8. The z = 1 band must cover it ~68% of the time; the
    band for separate sets, ignoring the shared stars, covers ~92% (too wide)."""
    rng = np.random.default_rng(7)
    truth = 0.16 / 0.20
    cover_o = cover_d = 0
    n_draw = 1500
    for counts in rng.multinomial(1000, [0.04, 0.12, 0.08, 0.76], n_draw):
        a, b, c, _ = counts
        x = np.zeros(a + b + c)
        num = np.r_[np.ones(a + b, bool), np.zeros(c, bool)]
        den = np.r_[np.zeros(a, bool), np.ones(b + c, bool)]
        o = dyn.overlapping_ratio(x, num, den, [-1, 1])
        d = dyn.disjoint_ratio(x[num], x[den], [-1, 1])
        cover_o += o.fraction_lo[0] <= truth <= o.fraction_hi[0]
        cover_d += d.fraction_lo[0] <= truth <= d.fraction_hi[0]
    assert 0.63 < cover_o / n_draw < 0.73
    assert cover_d / n_draw > 0.85
