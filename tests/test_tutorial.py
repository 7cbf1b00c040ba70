"""The tutorial "Label your own stars" (nbs/tutorials/label_your_stars.ipynb) runs as a user would run it, with the
default released model and no parameter but where its figure goes: the mirror's real archive XP files
($SPECTRA_ML_LOCAL_DATA/gaia_xp, CI: ../shared/data) are refused in one line naming the photometry the model needs
beside them (the released models take four colours), then the real test-split stars of the embedded APOGEE x XP
library are labelled; the figure is shown inline and passes the project's figure checks."""

import json
from pathlib import Path

import pytest

TUTORIAL = Path(__file__).resolve().parents[1] / "nbs" / "tutorials" / "label_your_stars.ipynb"

pytestmark = pytest.mark.slow  # labels 8,056 real stars (~45 s on two shared cores)


def _outputs(nb: dict, kind: str) -> list:
    return [o for c in nb["cells"] for o in c.get("outputs", []) if o["output_type"] == kind]


def test_tutorial_labels_the_mirror_xp_files_with_the_released_model(local_data, tmp_path):
    import papermill as pm
    from PIL import Image

    from spectra_ml import release

    if release.DEFAULT_MODEL not in release.released_models():
        pytest.skip(f"no released model {release.DEFAULT_MODEL!r} in {release.RELEASED_DIR} yet")
    out = tmp_path / "executed.ipynb"
    pm.execute_notebook(
        str(TUTORIAL),
        str(out),
        parameters={"figures_dir": str(tmp_path / "fig")},
        cwd=str(tmp_path),
        progress_bar=False,
    )
    nb = json.loads(out.read_text())
    assert not _outputs(nb, "error")
    text = "".join("".join(o["text"]) for o in _outputs(nb, "stream"))
    needs = "needs bp_rp, g_k, j_h, h_k beside the XP spectrum"
    assert (
        "refused: " in text and needs in text
    ) or f"model {release.DEFAULT_MODEL} needs, beside the spectrum: nothing" in text
    closing = next(l for l in text.splitlines() if l.startswith("wrote "))
    assert (
        "outside the model's domain (flag_domain); quote sigma_cal_<label> (calibrated)" in closing
    )
    images = [o for o in _outputs(nb, "display_data") if "image/png" in o["data"]]
    assert len(images) == 1
    png = tmp_path / "fig" / "label_your_stars_cmd.png"
    assert json.loads(Image.open(png).text["spectra_ml:figure_problems"]) == []
