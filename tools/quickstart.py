#!/usr/bin/env python3
"""Install spectra_ml and run the demo pipeline or the test suite: the README's two commands.

    python tools/quickstart.py demo [spectra_ml run options...]
    python tools/quickstart.py test [pytest options...]

Needs only Python >= 3.10 with pip. It creates `.venv/` in the repository (unless it already runs
inside a virtual environment, or --no-venv is given), installs PyTorch first, choosing the build:

1. `$SPECTRA_ML_TORCH` (a pip requirement, e.g. "torch==2.5.1") and `$SPECTRA_ML_TORCH_INDEX`
   (an index URL) if set;
2. otherwise a CPU wheel lying in one of pip's find-links folders (machines that ship one, such as
   our CI, where a bare `torch` would download a multi-GB CUDA build);
3. otherwise, on Linux without an NVIDIA driver, the CPU wheel index of pytorch.org;
4. otherwise plain `torch` from PyPI (CUDA builds on Linux with a GPU; CPU/MPS on macOS and Windows).

Then it installs the project with every extra (`.[all,dev]`: the pipeline with its pinned tools,
nbdev 2, papermill, ...; Dask; the docs site's Sphinx; pytest and ruff), registers the `spectra_ml`
Jupyter kernel, and runs. Re-running skips installation when nothing changed. Labelling stars alone
needs only the core: `pip install .` (see settings.ini for what each extra adds).
"""

from __future__ import annotations
import glob, hashlib, os, platform, re, shutil, subprocess, sys, venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
#: The Quickstart installs everything: the core and every extra of setup.py, tests and docs included.
INSTALL_EXTRAS = "all,dev"
FONT_WARMUP = (
    "import io, matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt; "
    "f, a = plt.subplots(); a.set_title('warm-up'); f.savefig(io.BytesIO(), format='png')"
)


def sh(*cmd, **kw):
    print("+", " ".join(map(str, cmd)), flush=True)
    return subprocess.run([str(c) for c in cmd], check=True, **kw)


def target_python(use_venv: bool) -> Path:
    if not use_venv or sys.prefix != sys.base_prefix:
        return Path(sys.executable)
    py = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if not py.exists():
        print(f"creating virtual environment {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True).create(VENV)
    return py


def find_links(py: Path) -> list[str]:
    dirs = os.environ.get("PIP_FIND_LINKS", "").split()
    try:
        out = subprocess.run(
            [str(py), "-m", "pip", "config", "list"], capture_output=True, text=True
        ).stdout
        for line in out.splitlines():
            if "find-links" in line:
                dirs += line.split("=", 1)[1].strip().strip("'\"").split()
    except OSError:
        pass
    return [d for d in dirs if os.path.isdir(d)]


def torch_plan(py: Path) -> list[str]:
    """pip arguments that install the right torch build (see the module docstring)."""
    if os.environ.get("SPECTRA_ML_TORCH"):
        args = [os.environ["SPECTRA_ML_TORCH"]]
        if os.environ.get("SPECTRA_ML_TORCH_INDEX"):
            args += ["--index-url", os.environ["SPECTRA_ML_TORCH_INDEX"]]
        return args
    py_tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    for d in find_links(py):
        wheels = sorted(glob.glob(os.path.join(d, f"torch-*+cpu-{py_tag}-*.whl")))
        if wheels:
            version = re.match(r"torch-([^+-]+)", os.path.basename(wheels[-1])).group(1)
            return [f"torch=={version}"]
    if platform.system() == "Linux" and not shutil.which("nvidia-smi"):
        return ["torch", "--index-url", CPU_INDEX, "--extra-index-url", "https://pypi.org/simple"]
    return ["torch"]


def install(py: Path, force: bool = False):
    stamp_src = b"".join(
        (ROOT / f).read_bytes() for f in ("settings.ini", "setup.py", "tools/quickstart.py")
    )
    stamp = ROOT / ".spectra_ml-install-stamp"  # gitignored; keyed on the interpreter too
    digest = hashlib.sha256(stamp_src + str(py).encode()).hexdigest()
    if not force and stamp.exists() and stamp.read_text() == digest:
        print(
            "spectra_ml already installed (delete .venv or pass --reinstall to force)", flush=True
        )
        return
    if subprocess.run([str(py), "-c", "import torch"], capture_output=True).returncode != 0:
        sh(py, "-m", "pip", "install", *torch_plan(py))
    sh(py, "-m", "pip", "install", "-e", f"{ROOT}[{INSTALL_EXTRAS}]")
    sh(
        py,
        "-m",
        "ipykernel",
        "install",
        "--sys-prefix",
        "--name",
        "spectra_ml",
        "--display-name",
        "spectra_ml",
    )
    stamp.write_text(digest)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in ("demo", "test", "install"):
        print(__doc__)
        return 2
    cmd, rest = argv[0], argv[1:]
    use_venv = "--no-venv" not in rest
    force = "--reinstall" in rest
    rest = [a for a in rest if a not in ("--no-venv", "--reinstall")]
    py = target_python(use_venv)
    install(py, force)
    bindir = py.parent
    env = dict(os.environ, PATH=f"{bindir}{os.pathsep}{os.environ.get('PATH', '')}")
    shared = ROOT.parent / "shared" / "data"
    if "SPECTRA_ML_LOCAL_DATA" not in env and shared.is_dir():
        env["SPECTRA_ML_LOCAL_DATA"] = str(shared)
    if cmd == "install":
        return 0
    if cmd == "demo":
        exe = bindir / ("spectra_ml.exe" if os.name == "nt" else "spectra_ml")
        return subprocess.run([str(exe), "run", *rest], cwd=ROOT, env=env).returncode
    # test: the formatter, the notebooks' own examples, then the pytest suite
    ruff = bindir / ("ruff.exe" if os.name == "nt" else "ruff")
    f = subprocess.run([str(ruff), "format", "--check", "."], cwd=ROOT, env=env).returncode
    if f != 0:
        print(
            "the tree is not formatted: run `ruff format .`, then `nbdev_export`", file=sys.stderr
        )
    # Build matplotlib's font cache once, before two notebooks draw at the same time: on a fresh
    # machine both would build it concurrently, and one failed inside `draw` in CI (stop 19).
    subprocess.run([str(py), "-c", FONT_WARMUP], cwd=ROOT, env=env, check=True)
    r = subprocess.run(
        [str(bindir / "nbdev_test"), "--n_workers", "2", "--timing"], cwd=ROOT, env=env
    ).returncode
    if r != 0:
        print("nbdev_test failed", file=sys.stderr)
    # one pytest process for the whole suite; exit 5 (nothing collected) is a failure here
    p = subprocess.run([str(py), "-m", "pytest", "tests", *rest], cwd=ROOT, env=env).returncode
    if p == 5:
        print("pytest collected no tests: that is a failure here", file=sys.stderr)
    return f or r or p


if __name__ == "__main__":
    sys.exit(main())
