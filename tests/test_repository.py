"""The repository's own machinery: README from index.ipynb, nbdev_clean keeping the papermill tag,
and the install step's choice of torch build."""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _load_tool(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "tools" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


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
    shutil.copy(ROOT / "nbs" / "08_training.ipynb", nb)
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
        cells = json.loads((ROOT / "nbs" / f"{s}.ipynb").read_text())["cells"]
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
