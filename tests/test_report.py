"""The run report as a reader sees it, the figures' vector twins, the calibration figure, LICENSE and CITATION.cff."""

import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from spectra_ml.core import RunDir, figure_style, save_figure

ROOT = Path(__file__).resolve().parents[1]


def _fig():
    with figure_style():
        fig, ax = plt.subplots()
        ax.plot([0, 1], [1, 0])
        ax.set_xlabel(r"$T_\mathrm{eff}$ [K]")
    return fig


def test_save_figure_writes_a_valid_pdf_twin_even_with_usetex_on_globally(tmp_path):
    """GaiaXPy turns text.usetex on when imported; the twin is still written (no LaTeX needed)
    and is a whole PDF, next to the PNG the report and the published figures use."""
    with matplotlib.rc_context({"text.usetex": True}):
        out = save_figure(_fig(), tmp_path / "sub" / "fig3_pred_vs_truth.png", show=False)
    assert out == tmp_path / "sub" / "fig3_pred_vs_truth.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pdf = (tmp_path / "sub" / "fig3_pred_vs_truth.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and pdf.rstrip().endswith(b"%%EOF") and b"/Page" in pdf
    save_figure(_fig(), tmp_path / "only.png", show=False, vector=False)
    assert not (tmp_path / "only.pdf").exists()


def _run(tmp_path) -> RunDir:
    run = RunDir(tmp_path / "r")
    run.update_summary(
        "validate",
        {
            "split": "test",
            "n_test": 653,
            "mlp": {
                "teff": {
                    "n": 653.0,
                    "rmse": 256.123456,
                    "z_std": 0.7581,
                    "z_std_calibrated": 1.0312,
                },
                "logg": {"n": 653.0, "rmse": 0.57312345, "z_std": 0.97, "z_std_calibrated": 1.0071},
            },
            "published_rmse_other_data": {"Kane et al.": {"teff": 62.4, "logg": 0.162}},
        },
    )
    run.update_summary(
        "candidates",
        {
            "alpha_threshold": 0.17499999999999985,
            "scan": [{"mu_alpha_threshold": 0.09499999999999985, "tp": 558}],
        },
    )
    run.update_summary("samples", {"cut_flow": [{"cut": "input rows", "remaining": 40226}]})
    for stem in (
        "training_loss",
        "zz_unlisted",
        "fig4_sigma_teff",
        "fig3_pred_vs_truth",
        "fig1_cmd",
    ):
        save_figure(_fig(), run.figures / f"{stem}.png", show=False)
    return run


def test_report_reads_top_down_headline_figures_in_paper_order_glossary_details(tmp_path):
    from spectra_ml.pipeline import FIGURE_CAPTIONS, REPORT_GLOSSARY, write_report

    page = write_report(_run(tmp_path)).read_text()
    at = page.index
    assert at("class='abstract'") < at("Headline numbers</h2>") < at("Contents</h2>")
    assert at("Contents</h2>") < at("Figures (5)</h2>") < at("Glossary</h2>") < at("<details>")
    head = page[at("Headline numbers</h2>") : at("Contents</h2>")]
    assert re.search(r">256<.*>62\.4<", head, re.DOTALL) and ">1.03<" in head and ">1.01<" in head
    shown = re.findall(r"alt='(\w+)\.png'", page)
    assert shown == [
        "fig1_cmd",
        "fig3_pred_vs_truth",
        "fig4_sigma_teff",
        "training_loss",
        "zz_unlisted",
    ]
    assert page.count("<figcaption>") == 5 and FIGURE_CAPTIONS["fig1_cmd"] in page
    assert page.count("data:image/png;base64,") == 5 and ".pdf" not in page  # PNGs embedded
    for term in REPORT_GLOSSARY:
        assert f"<dt>{term}</dt>" in page
    assert "1.4826" in page and "Eq. 5" in page
    assert "0.17499999999999985" not in page and ">0.175<" in page  # sensible precision
    assert "'remaining'" not in page and ">40226<" in page  # lists of dicts as tables
    details = page[at("<h2 id='details'>") :]
    assert details.count("<details>") >= 3 and "<img" not in details


def test_report_stays_within_its_width(tmp_path):
    "A max-width page whose tables scroll inside their own box rather than widening the page."
    from spectra_ml.pipeline import REPORT_TEMPLATE, write_report

    page = write_report(_run(tmp_path)).read_text()
    assert "max-width:1100px" in REPORT_TEMPLATE and "img{max-width:100%" in page
    boxed = re.findall(r"<div class='tw[^']*'><table", page)
    assert len(boxed) == page.count("<table") >= 4  # every table in its own scrolling box


def test_calibration_histograms_draw_raw_and_calibrated_z_without_units():
    from spectra_ml.metrics import plot_z_histograms

    rng = np.random.default_rng(1)
    d = pd.DataFrame({"split": "test", "teff": rng.normal(4600, 300, 400)})
    d["mu_teff"] = d.teff + rng.normal(0, 80, 400)
    d["sigma_teff"], d["sigma_cal_teff"] = 160.0, 80.0
    fig = plot_z_histograms(d, ["teff"])
    ax = fig.axes[0]
    assert len(ax.patches) == 2 and "[K]" not in ax.get_xlabel() and "z" in ax.get_xlabel()
    raw, cal = (
        float(s)
        for s in re.findall(
            r"std (\d\.\d\d)", " ".join(t.get_text() for t in ax.get_legend().get_texts())
        )
    )
    assert raw == pytest.approx(0.5, abs=0.06) and cal == pytest.approx(1.0, abs=0.1)
    plt.close(fig)
    fig = plot_z_histograms(d.drop(columns="sigma_cal_teff"), ["teff"])
    assert len(fig.axes[0].patches) == 1
    plt.close(fig)


def test_license_and_citation():
    import yaml

    lic = (ROOT / "LICENSE").read_text()
    assert "Apache License" in lic and "Version 2.0, January 2004" in lic
    assert (
        "END OF TERMS AND CONDITIONS" in lic
        and "Copyright 2026 onwards, spectra_ml developers" in lic
    )
    assert "license = apache2" in (ROOT / "settings.ini").read_text()
    cff = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert cff["cff-version"] == "1.2.0" and cff["license"] == "Apache-2.0"
    titles = [r["title"] for r in cff["references"]]
    assert any(t.startswith("The Ones That Got Away") for t in titles) and any(
        "AspGap" in t for t in titles
    )
    assert [r["authors"][0]["family-names"] for r in cff["references"]] == [
        "Kane",
        "Fallows",
        "Li",
        "Guiglion",
    ]


def test_report_escapes_the_file_names_it_did_not_write(tmp_path):
    "A figure or notebook named with markup is shown as text: the report never runs what a file name holds."
    from spectra_ml.pipeline import write_report

    run = _run(tmp_path)
    hostile = "x'><img src=y onerror=alert(1)>"
    save_figure(_fig(), run.figures / f"{hostile}.png", show=False)
    run.notebooks.mkdir(parents=True, exist_ok=True)
    (run.notebooks / f"{hostile}.ipynb").write_text("{}")
    page = write_report(run).read_text()
    assert "<img src=y" not in page and "onerror=alert(1)>" not in page
    assert page.count("&lt;img src=y onerror=alert(1)&gt;") >= 3  # caption, contents, notebook list


def test_a_quick_run_says_its_numbers_mean_nothing(tmp_path, capsys):
    "The report's banner and the terminal's first line, only for a quick run."
    import html

    from spectra_ml.cli import print_run_summary
    from spectra_ml.pipeline import QUICK_WARNING, write_report

    run = _run(tmp_path)
    assert html.escape(QUICK_WARNING) not in write_report(run).read_text()
    print_run_summary({"pipeline": {"status": "complete"}}, run.root)
    assert "QUICK RUN" not in capsys.readouterr().out
    quick = {"status": "complete", "quick": True, "quick_warning": QUICK_WARNING}
    run.update_summary("pipeline", quick)
    assert html.escape(QUICK_WARNING) in write_report(run).read_text()
    print_run_summary({"pipeline": quick}, run.root)
    assert capsys.readouterr().out.startswith("QUICK RUN: ")


@pytest.mark.slow
def test_the_quick_pipeline_run_carries_the_warning(quick_run):
    root, summary = quick_run
    assert summary["pipeline"]["quick"] and "QUICK RUN" in (root / "report.html").read_text()
