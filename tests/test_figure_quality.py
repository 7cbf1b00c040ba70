"""Every figure a run saves is fit to publish: a vector twin beside the PNG, and no axis, colour bar or
legend that `core.figure_problems` finds wanting (the verdict `save_figure` stores in each PNG)."""

import json
import warnings

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import pytest
from PIL import Image

from spectra_ml.core import figure_problems, figure_style, save_figure


def _pngs(root):
    return sorted(p for p in (root / "figures").rglob("*.png"))


def test_every_saved_figure_has_a_vector_twin_and_labelled_axes(quick_run):
    pngs = _pngs(quick_run[0])
    assert len(pngs) >= 10, "the quick run saved too few figures to judge"
    bad = {}
    for p in pngs:
        assert p.with_suffix(".pdf").is_file(), f"{p.name}: no vector twin"
        verdict = Image.open(p).text.get("spectra_ml:figure_problems")
        assert verdict is not None, f"{p.name} was not saved through core.save_figure"
        if json.loads(verdict):
            bad[p.name] = json.loads(verdict)
    assert not bad, "figures not fit to publish:\n" + "\n".join(f"{k}: {v}" for k, v in bad.items())


def test_the_stored_verdict_is_the_checks(tmp_path):
    with (
        figure_style()
    ):  # as every plot_* function draws (GaiaXPy, imported by other tests, sets usetex)
        f, ax = plt.subplots()
        sc = ax.scatter([0, 1], [1, 2], c=[3, 4])
        f.colorbar(sc)
        ax.set_xlabel("Teff [K]")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        p = save_figure(f, tmp_path / "bad.png", close=False, show=False)
    assert any("y axis without a label" in str(w.message) for w in seen)
    stored = json.loads(Image.open(p).text["spectra_ml:figure_problems"])
    assert stored == figure_problems(f) and len(stored) == 2  # the y axis and the colour bar
    assert Image.open(p).info.get("dpi", (0,))[0] == pytest.approx(200, abs=1)
    plt.close(f)
