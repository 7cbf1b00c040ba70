"""The executed chapters read as the paper: every figure a stage saves is shown inline, and each
executed notebook is valid and already in nbformat's normal form (JupyterLab opens it unmodified)."""

import copy
import json

import nbformat
import pytest
from nbformat.validator import normalize


def image_outputs(nb: dict) -> list:
    "The image outputs of a notebook (display_data or execute_result with image/png)."
    return [
        o
        for c in nb["cells"]
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if o["output_type"] in ("display_data", "execute_result") and "image/png" in o["data"]
    ]


def undisplayed_figures(nb: dict, figures: list) -> list:
    "The figures (run-relative paths) of a stage's provenance that its notebook does not display."
    shown = [o.get("metadata", {}).get("spectra_ml", {}).get("figure") for o in image_outputs(nb)]
    missing = [f for f in figures if f.split("/")[-1] not in shown]
    return missing if missing or len(image_outputs(nb)) >= len(figures) else ["(too few images)"]


def normal_form_changes(nb: dict) -> int:
    "How many changes nbformat's normalisation makes (0: JupyterLab has nothing to rewrite)."
    changes, new = normalize(copy.deepcopy(nb))
    return changes + (new != nb)


#: What must not fill an executed chapter: tqdm's bar updates and astropy's notes on a FITS file's metadata
NOISE = ("it/s]", "epoch/s", "star/s]", "did not parse as fits unit", "IProgress not found")


def noisy_outputs(nb: dict) -> list:
    "The stderr outputs of a notebook that carry progress bars or file-metadata warnings (first 80 characters)."
    return [
        "".join(o["text"])[:80]
        for c in nb["cells"]
        for o in c.get("outputs", [])
        if o.get("name") == "stderr" and any(n in "".join(o["text"]) for n in NOISE)
    ]


@pytest.mark.slow
def test_every_saved_figure_is_displayed(quick_run):
    run_root, _ = quick_run
    chapters = sorted((run_root / "notebooks").glob("*.ipynb"))
    assert chapters
    n_figures = 0
    for path in chapters:
        stage = path.stem
        prov = json.loads((run_root / "provenance" / f"{stage}.json").read_text())
        figures = prov["figures"]  # recorded by the pipeline: figures the stage wrote
        assert all((run_root / f).exists() for f in figures), stage
        nb = json.loads(path.read_text())
        assert undisplayed_figures(nb, figures) == [], stage
        n_figures += len(figures)
    written = {f"figures/{p.name}" for p in (run_root / "figures").glob("*.png")}
    assert n_figures == len(written)  # every figure of the run is attributed to one stage


@pytest.mark.slow
def test_executed_chapters_are_valid_and_normal(quick_run):
    run_root, _ = quick_run
    for path in sorted((run_root / "notebooks").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        nbformat.validate(nbformat.from_dict(nb))
        assert normal_form_changes(nb) == 0, path.name
        assert (nb["nbformat"], nb["nbformat_minor"]) >= (4, 5), path.name
        assert all("id" in c for c in nb["cells"]), path.name
        spec = nb["metadata"]["kernelspec"]  # the kernel it ran on, as JupyterLab names it
        from jupyter_client.kernelspec import KernelSpecManager

        assert (
            spec["display_name"] == KernelSpecManager().get_kernel_spec(spec["name"]).display_name
        )


def test_checks_can_fail():
    "A stage that saves a figure without displaying it, or a notebook out of normal form, is caught."
    img = {"output_type": "display_data", "data": {"image/png": "x"}, "metadata": {}}
    named = {**img, "metadata": {"spectra_ml": {"figure": "a.png"}}}
    cell = {"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": 1, "source": ""}
    nb = {"cells": [{**cell, "outputs": [named]}]}
    assert undisplayed_figures(nb, ["figures/a.png"]) == []
    assert undisplayed_figures(nb, ["figures/a.png", "figures/b.png"]) == ["figures/b.png"]
    assert undisplayed_figures({"cells": [{**cell, "outputs": []}]}, ["figures/a.png"])
    assert undisplayed_figures({"cells": [{**cell, "outputs": [img]}]}, ["figures/a.png"])
    full = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [{**cell, "outputs": []}]}
    assert normal_form_changes(full) == 0
    no_id = copy.deepcopy(full)
    del no_id["cells"][0]["id"]
    assert normal_form_changes(no_id) > 0


@pytest.mark.slow
def test_executed_chapters_hold_no_progress_bars_or_metadata_warnings(quick_run):
    """The stage kernels run without tqdm bars and without astropy's notes on the FITS files' own units and column
    names (pipeline.stage_environment), so the chapters read as text; the check fails on a hand-made noisy output."""
    run_root, _ = quick_run
    for f in sorted((run_root / "notebooks").glob("*.ipynb")):
        assert noisy_outputs(json.loads(f.read_text())) == [], f.name
    bar = {
        "cells": [
            {"outputs": [{"name": "stderr", "text": ["training: 10%| 3/30 [00:01, 2.1epoch/s]"]}]}
        ]
    }
    assert noisy_outputs(bar)
