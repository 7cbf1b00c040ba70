"""The Predictor and the public API: one object carries a checkpoint and its prediction options, gives
exactly the numbers of the loose-argument path, drives streaming, and no public function of the
library layer takes more than 10 parameters."""

import ast
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import spectra_ml
from spectra_ml.checkpoint import open_checkpoint, select_input_variances, select_inputs
from spectra_ml.core import DEMO_LABELS
from spectra_ml.prediction import Predictor, feature_ood, label_range_flag, predict_table
from spectra_ml.streaming import partition_seed, predict_partition

LABELS = list(DEMO_LABELS)
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A kane_mlp trained for one epoch on 400 real demo giants, saved; and the sample."""
    from spectra_ml.kane.samples import build_demo_sample
    from spectra_ml.training import train_model

    s = build_demo_sample(LABELS, max_stars=400)[0]
    folder = tmp_path_factory.mktemp("api") / "model"
    train_model(s, LABELS, "kane_mlp", progress=False, max_epochs=1).save(folder)
    return folder, s


def _loose(ck, X, ids, X_var, seed, **kw):
    "The loose-argument path as it was called before Predictor (predict_table, then the flags, written out)."
    p = predict_table(
        ck.model,
        ck.feature_scaler,
        ck.label_scaler,
        ck.labels,
        X,
        ids=ids,
        seed=seed,
        progress=False,
        X_var=X_var,
        **kw,
    )
    p["flag_ood"] = feature_ood(ck.ood_scaler, X, np.isfinite(X).all(axis=1))
    p["flag_label_range"] = label_range_flag(p, ck.label_ranges)
    p["flag_domain"] = label_range_flag(
        p, ck.label_ranges
    )  # no card: the domain is the label ranges
    p["flag_any"] = p.flag_bad_input | p.flag_ood | p.flag_label_range | p.flag_domain
    return p


def test_predictor_equals_the_loose_argument_path(saved):
    folder, s = saved
    pr = spectra_ml.load_model(folder, n_passes=7, seed=3, progress=False, shared_masks=True)
    ck = pr.ckpt
    X = select_inputs(s, pr.inputs).copy()
    X[5, 10] = np.nan  # a bad row stays a row, flagged
    V = select_input_variances(s, pr.inputs)
    ids = s.source_id.to_numpy()
    got = pr.predict(X, ids=ids, X_var=V)
    old = _loose(ck, X, ids, V, 3, n_passes=7, shared_masks=True, calibration=ck.calibration)
    pd.testing.assert_frame_equal(got, old)  # bit for bit: same seeds, passes, code path
    assert got.flag_bad_input.sum() == 1 and np.isnan(got.loc[5, "mu_teff"])
    assert not got.mu_teff.drop(index=5).isna().any()
    # another seed gives other numbers, so the equality above is not vacuous
    other = pr.predict(X, ids=ids, X_var=V, seed=4)
    assert not np.allclose(other.sigma_teff.drop(index=5), got.sigma_teff.drop(index=5))
    # options are the Predictor's: passes, calibration (an explicit {} turns it off)
    assert pr.passes == 7 and Predictor(ck).passes == ck.passes
    off = replace(pr, calibration={}).predict(X[:3])
    assert not any(c.startswith("sigma_cal_") for c in off.columns)
    scaled = replace(pr, calibration={l: 2.0 for l in LABELS}).predict(X[:3])
    np.testing.assert_allclose(scaled.sigma_cal_teff, 2 * scaled.sigma_teff)


def test_predict_sample_takes_a_predictor_or_a_checkpoint(saved):
    from spectra_ml.prediction import predict_sample

    folder, s = saved
    ck = open_checkpoint(folder)
    a, ia = predict_sample(Predictor(ck, n_passes=5, seed=9, progress=False), s)
    b, ib = predict_sample(ck, s, n_passes=5, seed=9, progress=False)
    pd.testing.assert_frame_equal(a, b)
    assert ia["n_passes"] == ib["n_passes"] == 5 and list(a.source_id) == list(s.source_id)


def test_predict_partition_equals_predict_table_on_the_same_rows(saved, tmp_path):
    folder, s = saved
    pr = Predictor.load(folder, n_passes=4, seed=11, progress=False, shared_masks=True)
    rows = s[["source_id"] + pr.inputs + ["split"]].iloc[:150].reset_index(drop=True)
    rows.to_parquet(tmp_path / "p.parquet", index=False, row_group_size=50)
    n = predict_partition(pr, tmp_path / "p.parquet", tmp_path / "o.parquet", chunk_rows=60)
    out = pd.read_parquet(tmp_path / "o.parquet")
    assert n == 150 and list(out.source_id) == list(rows.source_id)
    assert list(out.split) == list(rows.split)  # other input columns carried unchanged
    X = select_inputs(rows, pr.inputs)
    seed0 = partition_seed(11, "p.parquet")
    for j, lo in enumerate(range(0, 150, 60)):  # one seed per chunk, as streaming draws them
        sl = slice(lo, lo + 60)
        ref = _loose(
            pr.ckpt,
            X[sl],
            rows.source_id.to_numpy()[sl],
            None,
            seed0 + j,
            n_passes=4,
            shared_masks=True,
            calibration=pr.ckpt.calibration,
            batch_size=512,
        ).rename(columns={"id": "source_id"})
        got = out.iloc[sl][list(ref.columns)].reset_index(drop=True)
        pd.testing.assert_frame_equal(got, ref, check_dtype=False)


def test_public_api_is_short_and_documented():
    assert spectra_ml.__all__ == [
        "__version__",
        "load_model",
        "label_stars",
        "Predictor",
        "read_xp",
    ]
    assert spectra_ml.Predictor is Predictor and spectra_ml.__version__ == "0.1.0"
    from spectra_ml.cli import label_stars
    from spectra_ml.data.xp_files import read_xp

    assert spectra_ml.label_stars is label_stars and "label_stars(" in spectra_ml.__doc__

    assert spectra_ml.read_xp is read_xp and spectra_ml.load_model.__doc__
    with pytest.raises(AttributeError, match="no attribute 'predict_table'"):
        spectra_ml.predict_table


#: Public functions still over 10 parameters (excluding self/cls), with their counts. Predictor and
#: its helpers brought the prediction paths under the limit; these remain to be grouped the same way.
#: The test fails on any new offender, and on a listed one whose count rises.
ALLOWED = {
    "prediction.predict_table": 13,  # the loose-argument core under Predictor.predict
    "models.aspgap.aspgap_loss": 11,  # AspGap's loss terms and weights
}


def _public_signatures():
    "(module.qualname, n_params) of every public function and method of the library layer."
    lib = ROOT / "spectra_ml"
    files = [*lib.glob("*.py"), *(lib / "data").glob("*.py"), *(lib / "models").glob("*.py")]
    for f in files:
        if f.name.startswith("_"):
            continue
        mod = f.relative_to(lib).with_suffix("").as_posix().replace("/", ".")
        tree = ast.parse(f.read_text())
        for top in tree.body:
            defs = [(top.name, top)] if isinstance(top, ast.FunctionDef) else []
            if isinstance(top, ast.ClassDef) and not top.name.startswith("_"):
                defs += [
                    (f"{top.name}.{d.name}", d)
                    for d in top.body
                    if isinstance(d, ast.FunctionDef) and not d.name.startswith("_")
                ]
            for name, d in defs:
                if name.split(".")[-1].startswith("_"):
                    continue
                a = d.args
                params = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
                params += [p.arg for p in (a.vararg, a.kwarg) if p]
                yield f"{mod}.{name}", len([p for p in params if p not in ("self", "cls")])


def test_no_public_function_takes_more_than_ten_parameters():
    over = {name: n for name, n in _public_signatures() if n > 10}
    new = {k: v for k, v in over.items() if k not in ALLOWED or v > ALLOWED[k]}
    assert not new, (
        f"public functions with more than 10 parameters: {new}. Group options into a dataclass "
        "(as Predictor and streaming.Workers do) instead of adding parameters"
    )
    gone = sorted(set(ALLOWED) - set(over))
    assert not gone, f"{gone} no longer exceed 10 parameters: remove them from ALLOWED"
