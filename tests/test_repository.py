"""The repository's own machinery: README from index.ipynb, nbdev_clean keeping the papermill tag,
and the install step's choice of torch build."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent


def _load_tool(name):
    return load_tool(name)


def test_readme_is_generated_from_index_notebook():
    r = subprocess.run(
        [sys.executable, str(ROOT / "tools" / "make_readme.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    text = (ROOT / "README.md").read_text()
    quick = text.split("## Quickstart", 1)[1]
    block = quick.split("```bash", 1)[1].split("```", 1)[0]
    commands = [l.split("#")[0].strip() for l in block.splitlines() if l.split("#")[0].strip()]
    assert commands == ["python3 tools/quickstart.py demo", "python3 tools/quickstart.py test"]


def test_nbdev_clean_keeps_the_parameters_tag(tmp_path):
    nb = tmp_path / "08_training.ipynb"
    shutil.copy(ROOT / "nbs" / "chapters" / "08_training.ipynb", nb)
    d = json.loads(nb.read_text())
    d["cells"][0]["metadata"]["collapsed"] = True  # something nbdev_clean must remove
    nb.write_text(json.dumps(d))
    exe = Path(sys.executable).parent / "nbdev_clean"
    subprocess.run([str(exe), "--fname", str(nb)], cwd=ROOT, check=True, capture_output=True)
    cells = json.loads(nb.read_text())["cells"]
    assert "collapsed" not in cells[0]["metadata"]
    assert sum("parameters" in c["metadata"].get("tags", []) for c in cells) == 1


def test_every_stage_has_one_parameters_cell():
    from spectra_ml.pipeline import DEMO_STAGES, stage_parameters

    for s in DEMO_STAGES:
        cells = json.loads((ROOT / "nbs" / "chapters" / f"{s}.ipynb").read_text())["cells"]
        assert sum("parameters" in c["metadata"].get("tags", []) for c in cells) == 1, s
        params = stage_parameters(s)
        assert "run_dir" in params, s


def test_install_step_picks_the_local_cpu_torch_wheel(tmp_path, monkeypatch):
    q = _load_tool("quickstart")
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / f"torch-2.13.0+cpu-{tag}-{tag}-manylinux_2_28_x86_64.whl").write_bytes(b"")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))
    monkeypatch.delenv("SPECTRA_ML_TORCH", raising=False)
    assert q.torch_plan(Path(sys.executable)) == ["torch==2.13.0"]
    monkeypatch.setenv("SPECTRA_ML_TORCH", "torch==2.5.1")
    monkeypatch.setenv("SPECTRA_ML_TORCH_INDEX", "https://example.invalid/cpu")
    assert q.torch_plan(Path(sys.executable)) == [
        "torch==2.5.1",
        "--index-url",
        "https://example.invalid/cpu",
    ]


def test_install_step_elsewhere_never_asks_for_a_bare_cuda_build_without_a_gpu(
    tmp_path, monkeypatch
):
    q = _load_tool("quickstart")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path))  # an empty folder: no local wheel
    monkeypatch.delenv("SPECTRA_ML_TORCH", raising=False)
    monkeypatch.setattr(q, "find_links", lambda py: [str(tmp_path)])
    monkeypatch.setattr(q.platform, "system", lambda: "Linux")
    monkeypatch.setattr(q.shutil, "which", lambda name: None)  # no nvidia-smi
    plan = q.torch_plan(Path(sys.executable))
    assert plan[:3] == ["torch", "--index-url", q.CPU_INDEX]
    monkeypatch.setattr(q.shutil, "which", lambda name: "/usr/bin/nvidia-smi")
    assert q.torch_plan(Path(sys.executable)) == ["torch"]


# --- README numbers come from files (tools/make_readme.py) -------------------------------------

OLD_NOTEBOOK_NAMES = (
    "02_xp",
    "03_samples",
    "04_models",
    "05_train",
    "06_predict",
    "07_validate",
    "08_clusters",
    "09_candidates",
    "10_dynamics",
    "11_compare",
)


def _index_cells():
    return {
        c["id"]: "".join(c["source"])
        for c in json.loads((ROOT / "nbs" / "index.ipynb").read_text())["cells"]
    }


def test_readme_placeholders_read_values_and_name_what_is_missing(tmp_path):
    mr = _load_tool("make_readme")
    f = tmp_path / "summary.json"
    f.write_text(
        json.dumps(
            {
                "validate": {
                    "mlp": {"teff": {"rmse": 85.04, "bias": -3.7312}},
                    "on": ["teff", "logg"],
                },
                "clusters": {"gc": {"frac_within_0.1": 0.2667}},
                "dyn": {"out": [{"name": "A", "peri": 0.2}, {"name": "B", "peri": 3.0}]},
                "nothing": None,
            }
        )
    )
    src = {"demo": (str(f), "spectra_ml run")}
    text = (
        "RMSE {{demo:validate.mlp.teff.rmse:.1f}} K, bias {{demo:validate.mlp.teff.bias:+.3g}}, "
        "{{demo:validate.on|len}} labels ({{demo:validate.on|join}}), "
        "{{demo:clusters.gc.frac_within_0.1:.2f}}, {{demo:validate.on.1}}, "
        "{{demo:dyn.out|where(peri<0.5)|len}} low, others {{demo:dyn.out|where(peri>=0.5)|pluck(name)|join}}, "
        "{{demo:nothing|dash:.1f}}"
    )
    assert mr.render_text(text, src) == (
        "RMSE 85.0 K, bias -3.73, 2 labels (teff, logg), 0.27, logg, 1 low, others B, —"
    )
    f.write_text(json.dumps({"validate": {"mlp": {"teff": {"rmse": 99.96}}}}))
    assert mr.render_text("{{demo:validate.mlp.teff.rmse:.1f}}", src) == "100.0"  # read, not typed
    with pytest.raises(mr.TemplateError, match=r"no key 'logg\.rmse' under validate\.mlp"):
        mr.render_text("{{demo:validate.mlp.logg.rmse}}", src)
    f.write_text(json.dumps({"nothing": None}))
    with pytest.raises(mr.TemplateError, match="null"):
        mr.render_text("{{demo:nothing}}", src)
    missing = {"demo": (str(tmp_path / "nope.json"), "spectra_ml run")}
    with pytest.raises(
        mr.MissingSource, match=r"nope\.json is missing.*'validate\.n_test'.*spectra_ml run"
    ):
        mr.render_text("{{demo:validate.n_test}}", missing)
    with pytest.raises(mr.TemplateError, match="unknown source"):
        mr.render_text("{{nosuch:a.b}}", src)


def test_readme_render_fails_loudly_on_a_missing_source(tmp_path):
    "No number falls back to a typed one: a missing summary stops the render, naming file and keys."
    mr = _load_tool("make_readme")
    gone = {k: (str(tmp_path / f"{k}.json"), f"make {k}") for k in mr.SOURCES}
    with pytest.raises(mr.TemplateError) as e:
        mr.render(gone)  # the README
    msg = str(e.value)
    assert "demo.json is missing: make it with make demo" in msg and "validate.mlp.teff.rmse" in msg
    with pytest.raises(mr.TemplateError) as e:
        mr.render(gone, "docs/models.md")
    assert "compare.json is missing" in str(e.value)


def test_readme_result_tables_hold_no_typed_numbers():
    "Every number cell of the result tables (README, docs results and models pages) is a placeholder."
    mr = _load_tool("make_readme")
    sections = [
        "".join(c["source"])
        for page in ("nbs/docs/results.ipynb", "nbs/docs/models.ipynb", "nbs/index.ipynb")
        for c in json.loads((ROOT / page).read_text())["cells"]
        if c["cell_type"] == "markdown"
    ]
    sections = [
        s for s in sections if s.startswith(("# Results", "# The four papers", "## Results"))
    ]
    assert len(sections) == 3
    n_rows = 0
    for s in sections:
        assert "{{include:figures/compare/comparison.md}}" in s or "Results" in s
        for line in s.splitlines():
            if not line.startswith("|") or set(line) <= set("|-") or "label" in line.split("|")[1]:
                continue
            if "{{" not in line:
                continue  # a header row
            n_rows += 1
            text = mr.PLACEHOLDER.sub("", line)
            text = re.sub(r"\b(19|20)\d\d\b|DR\d+", "", text)  # years and data releases are names
            cols = text.strip("|").split("|")[1:]  # all but the first column
            assert not any(re.search(r"\d", c) for c in cols), (
                f"typed number in index.ipynb: {line!r}"
            )
    assert n_rows >= 20  # README 4; results 4, clusters 4, gains 4, published 4


def test_readme_module_map_has_one_line_per_module_in_two_layers():
    mr = _load_tool("make_readme")
    rows = [r for r in mr.module_map().splitlines()[2:]]
    lib = sorted((ROOT / "nbs" / "lib").glob("[0-9][0-9]_*.ipynb"))
    ana = sorted((ROOT / "nbs" / "kane").glob("[0-9][0-9]_*.ipynb")) + sorted(
        (ROOT / "nbs" / "studies").glob("[0-9][0-9]_*.ipynb")
    )
    assert len(rows) == len(lib) + len(ana) and len(lib) >= 15 and len(ana) >= 6
    assert [r.split("|")[1].strip() for r in rows] == ["library"] * len(lib) + ["analysis"] * len(
        ana
    )
    core = json.loads((ROOT / "nbs" / "lib" / "00_core.ipynb").read_text())["cells"][0]
    quote = [l[1:].strip() for l in "".join(core["source"]).splitlines() if l.startswith(">")]
    assert rows[0].endswith(" ".join(quote) + " |")
    assert "`spectra_ml.core`" in rows[0] and "`spectra_ml.kane.samples`" in mr.module_map()
    page = (ROOT / "docs" / "developing.md").read_text()
    assert mr.module_map() in page and mr.stage_map() in page


def test_chapter_calls_are_read_from_the_chapters_code(tmp_path):
    mr = _load_tool("make_readme")

    def cell(kind, src, tags=()):
        c = {
            "cell_type": kind,
            "id": str(abs(hash(src)))[:8],
            "metadata": {"tags": list(tags)},
            "source": src,
        }
        return {**c, "outputs": [], "execution_count": None} if kind == "code" else c

    nb = tmp_path / "42_thing.ipynb"
    cells = [
        cell("markdown", "# A chapter\n\nIts question."),
        cell(
            "code",
            "from spectra_ml.core import RunDir, write_json\nfrom spectra_ml.kane import tagging as T\n"
            "import spectra_ml.features as X",
        ),
        cell("code", "run_dir = 'runs/x'\nwrite_json(1)", tags=["parameters"]),
        cell(
            "code",
            "from spectra_ml.models.registry import REGISTRY as M\nrun = RunDir(run_dir)\n"
            "y = T.select_2p(X.check_features(1))\nrun.write_provenance('x', {})\nprint(M.get('a'), len(y))\n%time 1",
        ),
    ]
    nb.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    assert mr.stage_calls(nb) == [
        ("core", "RunDir"),
        ("features", "check_features"),
        ("kane.tagging", "select_2p"),
        ("models.registry", "REGISTRY.get"),
    ]


def test_readme_chapter_table_lists_every_pipeline_stage():
    from spectra_ml.pipeline import COMPARE_STAGES, DEMO_STAGES

    mr = _load_tool("make_readme")
    stages = [p.stem for p in mr.stage_notebooks()]
    assert stages == sorted(set(DEMO_STAGES) | set(COMPARE_STAGES))
    for p in mr.stage_notebooks():
        mods = {m for m, _ in mr.stage_calls(p)}
        assert mods - {"core"}, f"{p.stem} calls nothing but core: the call reader is broken"


def _saved_pngs(src: str) -> list[str]:
    "The .png file names a cell's code spells out (as string literals; `{x}` for an f-string field)."
    return re.findall(r"""f?["']([\w{}]+\.png)["']""", src)


def test_figures_readme_lists_every_figure_the_notebooks_save():
    "figures/README.md names each figure file the stage cells or exported functions name, and where."
    mr = _load_tool("make_readme")
    table = {}
    for line in (ROOT / "figures" / "README.md").read_text().splitlines():
        m = re.match(
            r"\| `([^`]+\.png)` \|.*\| `((?:chapters|kane|lib|studies)/\d\d_\w+)` \|$", line
        )
        if m:
            table[m.group(1)] = m.group(2)
    generic = {"l": "<label>", "name": "<model>"}
    saved = {}
    for p in mr.library_notebooks() + mr.stage_notebooks():
        chapter = p.parent.name == "chapters"
        where = p.relative_to(ROOT / "nbs").with_suffix("").as_posix()
        for c in mr._nb(p):
            src = mr._src(c)
            if c["cell_type"] != "code" or not (chapter or re.match(r"\s*#\|\s*export", src)):
                continue  # examples save nothing that counts
            for name in _saved_pngs(src):
                name = re.sub(r"\{(\w+)\}", lambda m: generic.get(m.group(1), "<x>"), name)
                saved.setdefault(name, set()).add(where)
    assert len(saved) >= 19
    for name, where in saved.items():
        assert len(where) == 1, f"{name} is saved by several notebooks: {sorted(where)}"
    assert {k: v.pop() for k, v in saved.items()} == table, (
        "figures/README.md is out of date with the notebooks' save_figure calls"
    )


def test_no_stale_text_in_the_docs():
    docs = {
        "README.md": (ROOT / "README.md").read_text(),
        "nbs/index.ipynb": (ROOT / "nbs" / "index.ipynb").read_text(),
        "data/README.md": (ROOT / "data" / "README.md").read_text(),
        "benchmarks/README.md": (ROOT / "benchmarks" / "README.md").read_text(),
        "figures/README.md": (ROOT / "figures" / "README.md").read_text(),
    }
    for where, text in docs.items():
        for old in OLD_NOTEBOOK_NAMES:
            assert not re.search(rf"\b{old}\b", text), f"{where} names the old notebook {old}"
        for phrase in ("later issue", "not yet automatic"):
            assert phrase not in text, f"{where}: {phrase!r}"


def test_readme_is_a_front_door_and_its_links_resolve():
    "About 150 lines: what it is, the two commands, labels for your stars, one table, the docs, the citation."
    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160, f"README.md has {len(text.splitlines())} lines"
    for heading in (
        "## Quickstart",
        "## Labels for your own stars",
        "## Documentation",
        "## Citing",
    ):
        assert heading in text, heading
    assert "The Ones That Got Away" in text and not re.search(r"\bseed 00\d\b", text)
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(pages) >= 6
    for page in pages:
        for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to a missing {target}"
