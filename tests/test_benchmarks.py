"""The benchmark scripts still point at the library: every `from spectra_ml... import ...` they hold
(including the code they hand to child processes as strings) names a module and names that exist.
A module rename that forgets benchmarks/ fails here, not on the day someone benchmarks a GPU."""

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
IMPORT = re.compile(r"^\s*from (spectra_ml[\w.]*) import ([\w, ]+)$", re.M)
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))


def test_there_are_benchmark_scripts():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_every_library_import_of_a_benchmark_resolves(script):
    found = IMPORT.findall(script.read_text())
    for module, names in found:
        mod = importlib.import_module(module)
        for name in (n.split(" as ")[0].strip() for n in names.split(",")):
            if not hasattr(mod, name):  # a submodule (`from spectra_ml.kane import dynamics`)
                importlib.import_module(f"{module}.{name}")


def test_the_check_catches_a_renamed_module():
    bad = "from spectra_ml.catalogue import predict_catalogue\n"
    ((module, names),) = IMPORT.findall(bad)
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(module)
