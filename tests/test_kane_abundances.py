"""kane.abundances on the real files of the local data mirror: counts recomputed independently."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from spectra_ml.core import DataError, MissingColumnError, MissingInputError, local_data_path
from spectra_ml.kane import abundances as ab

DATA = local_data_path()
pytestmark = pytest.mark.skipif(
    DATA is None, reason="needs $SPECTRA_ML_LOCAL_DATA (the real data mirror)"
)
HALO = "apogee/Apogee_data_filtered_1612.fits"


@pytest.fixture(scope="module")
def library():
    from spectra_ml.data.samples import load_demo

    return load_demo()[0]


@pytest.fixture(scope="module")
def built(library):
    return ab.abundance_labels(library, DATA)


def _lib_ids():
    "The library's Gaia DR3 ids and APOGEE ids, read with astropy alone."
    from spectra_ml.data.samples import demo_data_path

    t = Table.read(demo_data_path())
    return np.asarray(t["gaiaedr3_source_id"], np.int64), np.char.strip(
        np.asarray(t["apogee_id"]).astype(str)
    )


@pytest.mark.slow
def test_cut_flow_counts_recomputed(built):
    table, flow = built
    sid, aid = _lib_ids()
    h = Table.read(DATA / HALO)
    inlib = np.isin(np.asarray(h["dr3_source_id"], np.int64), sid)
    clean = inlib & (h["n_fe_flag"] == 0) & (h["o_fe_flag"] == 0) & (h["al_fe_flag"] == 0)
    assert (inlib.sum(), clean.sum()) == (261, 185)  # hand-counted on the real file
    s = Table.read(DATA / "apogee/apogee_dr16_sgr_members.fits")
    s = s[(np.asarray(s["EXTRATARG"]) & 16) == 0]
    n_sgr = np.isin(np.char.strip(np.asarray(s["APOGEE_ID"]).astype(str)), aid).sum()
    mo = Table.read(DATA / "apogee/Montalban2021_X_APOGEE_DR17.fits")
    n_mo = np.isin(np.asarray(mo["GAIAEDR3_SOURCE_ID"], np.int64), sid).sum()
    m = Table.read(DATA / "clusters/meszaros2015_gc_szabolcs.dat", format="ascii.basic")
    mid, first = np.unique(np.asarray(m["id"]).astype(str), return_index=True)
    any_m = np.array(
        [(m["nfe"][i] != 9999) or (m["ofe"][i] != 9999) or (m["alfe"][i] != 9999) for i in first]
    )
    n_mes_match, n_mes_any = np.isin(mid, aid).sum(), (np.isin(mid, aid) & any_m).sum()
    with fits.open(DATA / "clusters/omegacen_giants_na_al.fits") as o:
        n_oc = np.isin(np.asarray(o[1].data["Source"], np.int64), sid).sum()
    assert (n_sgr, n_mo, n_mes_match, n_mes_any, n_oc) == (6, 9, 43, 42, 4)

    def rem(source, cut):
        return int(flow[(flow.source == source) & flow.cut.str.startswith(cut)].remaining.iloc[0])

    assert rem("dr17_halo", "in the library") == inlib.sum()
    assert rem("dr17_halo", "training label: their flags") == clean.sum()
    assert rem("dr16_sgr", "in the library") == n_sgr
    assert rem("dr17_montalban", "in the library") == n_mo
    assert rem("meszaros2015", "in the library") == n_mes_match
    assert rem("meszaros2015", "has any") == n_mes_any
    assert rem("omegacen", "in the library") == n_oc
    assert (
        len(table) == inlib.sum() + n_sgr + n_mo + n_mes_any + n_oc == rem("all", "stars with any")
    )


@pytest.mark.slow
def test_one_row_per_star_and_training_rules(built, library):
    table, _ = built
    assert table.source_id.is_unique and table.source_id.isin(library.source_id).all()
    assert set(table.apogee_id) <= set(library.apogee_id)
    flags = table[["n_fe_flag", "o_fe_flag", "al_fe_flag"]]
    assert not table.training_label[
        (flags != 0).any(axis=1)
    ].any()  # a nonzero flag is never a label
    assert (table.scale[table.training_label] == "DR17").all()
    assert table.validation_only[table.scale.isin(["DR16", "meszaros2015", "omegacen"])].all()
    assert int(table.training_label.sum()) == 185 + 1  # halo clean + the one clean Montalbán star
    mes = table[table.label_source == "meszaros2015"]
    assert set(mes.meszaros2015__meszaros_pop.unique()) <= {1, 2, 4}


def test_n_o_and_error_recomputed():
    h = Table.read(DATA / HALO)
    n, o = np.asarray(h["n_fe"], float), np.asarray(h["o_fe"], float)
    sn, so = np.asarray(h["n_fe_err"], float), np.asarray(h["o_fe_err"], float)
    ids = np.asarray(h["dr3_source_id"], np.int64)
    per = {
        "dr17_halo": ab.match_source(
            __import__("pandas").DataFrame(
                {"source_id": ids, "apogee_id": np.asarray(h["apogee_id"]).astype(str)}
            ),
            "dr17_halo",
            ab.read_abundance_source("dr17_halo", DATA),
        )[0]
    }
    lab = ab._label_block(per, per["dr17_halo"].index)
    order = np.searchsorted(ids, lab.index.to_numpy(), sorter=np.argsort(ids))
    k = np.argsort(ids)[order]
    np.testing.assert_allclose(lab.n_o, n[k] - o[k], rtol=0, atol=1e-12)
    np.testing.assert_allclose(lab.n_o_err, np.sqrt(sn[k] ** 2 + so[k] ** 2), rtol=0, atol=1e-12)
    assert (lab.label_source == "dr17_halo").all() and len(lab) == 1612


def test_missing_file_names_it(tmp_path):
    with pytest.raises(MissingInputError, match="Apogee_data_filtered_1612.fits"):
        ab.read_abundance_source("dr17_halo", tmp_path)


def test_missing_column_names_file_and_column(tmp_path):
    (tmp_path / "apogee").mkdir()
    t = Table.read(DATA / HALO)
    t.remove_column("o_fe_flag")
    t.write(tmp_path / HALO)
    with pytest.raises(MissingColumnError, match=r"Apogee_data_filtered_1612.fits.*o_fe_flag"):
        ab.read_abundance_source("dr17_halo", tmp_path)


def test_meszaros_bad_header_names_file(tmp_path):
    (tmp_path / "clusters").mkdir()
    (tmp_path / "SYNTHETIC.md").write_text("a made-up file: the real one with a broken header\n")
    src = DATA / "clusters/meszaros2015_gc_szabolcs.dat"
    lines = src.read_text().splitlines()
    (tmp_path / "clusters/meszaros2015_gc_szabolcs.dat").write_text(
        "\n".join([lines[0].replace("nfe", "nxx"), *lines[1:]])
    )
    with pytest.raises(DataError, match="meszaros2015_gc_szabolcs.dat"):
        ab.read_abundance_source("meszaros2015", tmp_path)


def test_library_without_columns_is_refused():
    import pandas as pd

    with pytest.raises(MissingColumnError, match="apogee_id"):
        ab.abundance_labels(pd.DataFrame({"source_id": [1]}), DATA)


@pytest.mark.slow
def test_scale_offsets_measured():
    t = ab.scale_offsets(DATA).set_index(["source", "element"])
    assert (t.loc["dr16_sgr"].n == 0).all()  # no DR16 Sgr star is in the DR17 files
    assert (t.loc["meszaros2015"].n == 2).all()
    assert not t.on_dr17_scale.any()


# --- the tagging study's folds, out-of-fold coverage and metrics ---------------------------------


def _toy_study(n_field=40, seed=0):
    """A SYNTHETIC abundance table (shapes only, no number reported): two 'clusters' of made-up
    2MASS-style ids a few arcmin apart, field stars elsewhere, and an untrained tiny Kane network."""
    import pandas as pd
    import torch

    from spectra_ml.checkpoint import LabelScaler
    from spectra_ml.models.kane import HeteroscedasticMLP

    rng = np.random.default_rng(seed)
    ids = [f"2M0024{i:02d}00-72050{i % 10}0" for i in range(8)]  # near 47 Tuc
    ids += [f"2M1641{i:02d}00+36270{i % 10}0" for i in range(6)]  # near M13
    ids += [f"2M{(3 + i) % 24:02d}000000+{i:02d}000000" for i in range(n_field)]
    n = len(ids)
    t = pd.DataFrame({"source_id": np.arange(n) + 10, "apogee_id": ids})
    t["gc_cluster"] = ["NGC_104"] * 4 + [None] * 4 + ["NGC_6205"] * 6 + [None] * n_field
    t["meszaros2015__meszaros_cluster"] = [None] * 4 + ["M47Tuc"] * 4 + [None] * (6 + n_field)
    for c in ab.FOUR_LABELS:
        t[c] = rng.normal(size=n)
    for c in ab.TAG_LABELS:
        t[c], t[f"{c}_err"] = rng.normal(size=n), 0.05
    t["n_o_err"] = 0.05
    t["training_label"] = np.arange(n) % 7 != 0
    torch.manual_seed(seed)
    net = HeteroscedasticMLP(12, 4, hidden=(16, 16))
    X = rng.normal(size=(n, 12)).astype(np.float32)
    Xf = rng.normal(size=(60, 12)).astype(np.float32)
    Yf = rng.normal(size=(60, 4)).astype(np.float32)
    ls = LabelScaler().fit(rng.normal(size=(60, 4)))
    ctx = ab.TagContext(net, ls, Xf[:40], Yf[:40], Xf[40:], Yf[40:])
    return t, X, ctx


def test_groups_join_a_cluster_named_by_either_source():
    t, _, _ = _toy_study()
    g = ab.cv_groups(t)
    assert len(set(g[:8])) == 1 and g[0].startswith("gc:")  # VB21 and Mészáros names, one cluster
    assert len(set(g[8:14])) == 1 and g[8] != g[0]
    assert (g[14:] == [f"field:{s}" for s in t.source_id[14:]]).all()


def test_grouped_folds_never_split_a_cluster():
    t, _, _ = _toy_study()
    g = ab.cv_groups(t)
    for seed in range(5):
        f = ab.grouped_folds(g, 5, seed)
        assert set(f) == set(range(5))
        for k in set(g):
            assert len(set(f[g == k])) == 1, k
    with pytest.raises(ab.ParameterError, match="groups"):
        ab.grouped_folds(["a", "a", "b"], 3)


@pytest.mark.slow
@pytest.mark.parametrize("methods", [("head",), ("masked", "head")])
def test_oof_covers_every_star_exactly_once_per_repeat(methods):
    t, X, ctx = _toy_study()
    cv = ab.tagging_cv(t, X, ctx, methods=methods, n_folds=4, n_repeats=2, seed=1)
    oof = cv["oof"]
    assert cv["choice"]["chosen"] in methods
    for r, d in oof.groupby("repeat"):
        assert sorted(d.source_id) == sorted(t.source_id)  # every star once, none twice
        g = pd_series(cv["groups"], t.source_id).loc[d.source_id].to_numpy()
        for k in set(g):  # a cluster is held out whole
            assert d.fold.to_numpy()[g == k].min() == d.fold.to_numpy()[g == k].max()
    assert set(oof.repeat) == {0, 1}
    assert np.isfinite(oof[[c for c in oof if c.startswith(("mu_", "sigma_"))]].to_numpy()).all()


def pd_series(values, index):
    import pandas as pd

    return pd.Series(values, index=np.asarray(index))


@pytest.mark.slow
def test_a_held_out_star_never_trains_its_own_prediction():
    """Changing one star's label changes no prediction of its own fold's stars (they never saw it)."""
    t, X, ctx = _toy_study()
    a = ab.tagging_cv(t, X, ctx, methods=("head",), n_folds=4, n_repeats=1, seed=2)["oof"]
    t2 = t.copy()
    i = int(np.flatnonzero(t2.training_label)[0])
    t2.loc[i, "n_o"] += 5.0
    b = ab.tagging_cv(t2, X, ctx, methods=("head",), n_folds=4, n_repeats=1, seed=2)["oof"]
    f = int(a.set_index("source_id").loc[t.source_id[i], "fold"])
    same = (a.fold == f).to_numpy()
    assert np.array_equal(a.mu_n_o[same], b.mu_n_o[same])
    assert not np.array_equal(a.mu_n_o[~same], b.mu_n_o[~same])


def test_bootstrap_metrics_against_hand_values():
    y = np.array([0.0, 0.5, 1.0, 1.5])
    mu = y + np.array([0.1, -0.3, 0.2, 0.0])
    m = ab.bootstrap_metrics(y, mu, sigma=np.full(4, 0.2), base=y + 0.4, n_boot=200)
    assert m["rmse"]["value"] == pytest.approx(np.sqrt((0.01 + 0.09 + 0.04) / 4))
    assert m["bias"]["value"] == pytest.approx(0.0)
    assert m["z_std"]["value"] == pytest.approx(np.std([0.5, -1.5, 1.0, 0.0]))
    assert m["rmse_baseline"]["value"] == pytest.approx(0.4)
    assert m["skill_vs_baseline"]["value"] == pytest.approx(1 - 0.035 / 0.16)
    assert m["rmse"]["lo"] <= m["rmse"]["value"] <= m["rmse"]["hi"]


def test_the_report_confusion_matches_a_hand_count():
    """tagging_report's confusion matrix against the APOGEE truth, counted by hand on a small table."""
    import pandas as pd

    t, _, _ = _toy_study(n_field=6)
    t["training_label"] = True
    n = len(t)
    t["n_o"] = 0.0
    t["al_fe"] = -0.5
    t.loc[[0, 1, 2], ["n_o", "al_fe"]] = [0.9, 0.2]  # true 2P (0.9 - 0.05 > 0.55, 0.2 > -0.1)
    mu_no = np.zeros(n)
    mu_no[[1, 2, 5]] = 1.2  # selected: 1, 2 (true) and 5 (false); 0 missed
    oof = pd.DataFrame({"source_id": t.source_id, "repeat": 0, "fold": np.arange(n) % 4})
    oof["mu_n_o"], oof["sigma_alea_n_o"], oof["sigma_n_o"] = mu_no, 0.1, 0.1
    oof["mu_al_fe"], oof["sigma_alea_al_fe"], oof["sigma_al_fe"] = 0.3, 0.05, 0.05
    four = pd.DataFrame({f"mu_{c}": t[c] for c in ab.FOUR_LABELS})
    four["mu_teff"], four["mu_fe_h"] = 4500.0, -1.0
    cv = {"oof": oof, "choice": {"chosen": "head"}, "groups": ab.cv_groups(t)}
    sel = ab.tagging_report(t, cv, four, n_boot=20)["summary"]["selection"]
    c, ci = sel["confusion"], sel["intervals"]
    assert (c["tp"], c["fp"], c["fn"], c["tn"]) == (2, 1, 1, n - 4)
    assert (ci["purity"]["k"], ci["purity"]["n"]) == (2, 3)  # tp / (tp + fp)
    assert (ci["completeness"]["k"], ci["completeness"]["n"]) == (2, 3)  # tp / (tp + fn)


def _kfit_stars(n, seed):
    "Synthetic: APOGEE err = 0.2 σ + 0.01 plus scatter (Kane Fig. 4's form)."
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.05, 0.3, n)
    return s, 0.2 * s + 0.01 + rng.normal(0, 0.01, n)


def test_kfit_interval_holds_the_estimate_and_shrinks_with_more_stars():
    from spectra_ml.kane.tagging import fit_error_slope

    widths = []
    for n in (40, 640):
        s, e = _kfit_stars(n, 5)
        f = ab.kfit_bootstrap(s, e, n_boot=300, seed=1)
        b = f["bootstrap"]
        assert f["k"] == pytest.approx(fit_error_slope(s, e)["k"])  # the point is the paper's fit
        assert b["k"]["lo"] <= f["k"] <= b["k"]["hi"]
        assert b["intercept"]["lo"] <= f["intercept"] <= b["intercept"]["hi"]
        assert (b["n_groups"], b["n_draws"]) == (n, 300)
        widths.append(b["k"]["hi"] - b["k"]["lo"])
    assert widths[1] < widths[0] / 2  # 16x the stars: about a quarter of the width


def test_kfit_bootstrap_resamples_whole_groups():
    """Two groups whose slopes differ: resampling the groups whole spreads k far wider than the stars."""
    s, e = _kfit_stars(200, 6)
    e[100:] = 0.6 * s[100:] + 0.01  # the second group follows another line
    g = np.array(["gc:a"] * 100 + ["gc:b"] * 100)
    by_star = ab.kfit_bootstrap(s, e, n_boot=200)["bootstrap"]
    by_group = ab.kfit_bootstrap(s, e, groups=g, n_boot=200)["bootstrap"]
    assert by_group["n_groups"] == 2
    w = lambda b: b["k"]["hi"] - b["k"]["lo"]
    assert w(by_group) > 3 * w(by_star)


def test_confusion_intervals_against_hand_wilson():
    # Wilson (1927), z = 1, k = 3, n = 10: centre (0.3 + 0.05)/1.1, half-width sqrt(0.021 + 0.0025)/1.1
    ci = ab.confusion_intervals({"tp": 3, "fp": 7, "fn": 1, "tn": 9})
    assert ci["purity"]["value"] == pytest.approx(0.3)
    assert ci["purity"]["lo"] == pytest.approx(0.178820821, abs=1e-8)
    assert ci["purity"]["hi"] == pytest.approx(0.457542816, abs=1e-8)
    assert ci["completeness"]["n"] == 4 and ci["completeness"]["value"] == pytest.approx(0.75)
    none = ab.confusion_intervals({"tp": 0, "fp": 0, "fn": 6, "tn": 180})
    assert none["purity"] == {"k": 0, "n": 0, "value": None, "lo": None, "hi": None, "z": 1.0}
    assert none["completeness"]["value"] == 0.0 and 0 < none["completeness"]["hi"] < 0.3


def test_gc_incidence_says_where_each_member_prediction_comes_from():
    """Members that never trained the abundance heads are counted as such, not as a bare 0 out of fold."""
    import pandas as pd

    L = pd.DataFrame({"source_id": np.arange(6, dtype=np.int64)})
    L["in_sample"] = True
    L["selected_2p"] = [True, False, False, False, True, False]
    L["out_of_fold"] = [True, False, False, True, False, False]  # star 0 (a member) trained a fold
    L["prediction_source"] = np.where(
        L.out_of_fold, "out_of_fold", "final_model_never_trained_on_it"
    )
    L["four_label_trained"] = [True, True, False, True, False, False]
    members = pd.DataFrame({"source_id": [0, 1, 2], "cluster": "NGC_104", "memberprob": 0.9})
    L2, s = ab._gc_incidence_summary(L, members)
    assert len(L2) == len(L)
    assert (s["members"]["n"], s["members"]["k"], s["field"]["n"], s["field"]["k"]) == (3, 1, 3, 1)
    assert s["n_members_in_abundance_training"] == 1
    assert s["n_members_in_four_label_training"] == 2
    assert s["member_prediction_source"] == {"final_model_never_trained_on_it": 2, "out_of_fold": 1}
