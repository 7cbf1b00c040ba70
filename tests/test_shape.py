"""The shape of the house (the two layers): the library never imports the analysis,
no import cycle, one model registry, models that predict themselves, thin chapter cells, fine-grained
export cells, notebooks named after their modules, whole-sentence module descriptions.

The checks read the code (the import graph, the notebooks' cells), not line counts alone: each reader
is itself tested on a small made-up case, so a broken reader fails instead of passing vacuously."""

import ast
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "spectra_ml"
NBS = ROOT / "nbs"
#: The analysis layer: Kane et al.'s analysis and the comparison study. Everything else is the library.
ANALYSIS = ("spectra_ml.kane", "spectra_ml.studies")
#: "about 15 lines" per chapter cell, counted as statements (ruff spreads one call over many lines)
STAGE_CELL_MAX_STATEMENTS = 15
#: "no export cell over about 60 lines" (a cell of named constants only is exempt: a table, not logic)
EXPORT_CELL_MAX_LINES = 70


# --- the import graph -----------------------------------------------------------------------------


def module_files(pkg: Path) -> dict:
    """Every module of the package at `pkg`, recursively, by dotted name (a package's `__init__.py`
    is the package itself); nbdev's `_modidx.py` is an index, not a module, and is left out."""
    out = {}
    for p in sorted(pkg.rglob("*.py")):
        if p.name == "_modidx.py":
            continue
        parts = (pkg.name, *p.relative_to(pkg).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _known_prefix(name: str, known) -> str | None:
    "The longest dotted prefix of `name` that is a known module (`a.b.c` -> `a.b` if only that exists)."
    parts = name.split(".")
    for k in range(len(parts), 0, -1):
        if ".".join(parts[:k]) in known:
            return ".".join(parts[:k])
    return None


def module_imports(name: str, path: Path, known) -> set:
    """The modules of `known` that module `name` (file `path`) imports, at any depth: top-level and
    function-level imports, absolute (`from spectra_ml.core import x`, `import spectra_ml.core`) and
    relative (`from .core import x`, `from ..kane.constants import y`, `from . import core`)."""
    is_pkg = path.name == "__init__.py"
    package = name if is_pkg else name.rpartition(".")[0]
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            for a in node.names:  # `from pkg import module` names a module; else the target itself
                m = _known_prefix(f"{target}.{a.name}", known) if a.name != "*" else None
                m = m or _known_prefix(target, known)
                if m:
                    out.add(m)
        elif isinstance(node, ast.Import):
            out |= {m for a in node.names if (m := _known_prefix(a.name, known))}
    out.discard(name)
    return out


def import_graph(pkg: Path) -> dict:
    "Module -> the set of the package's modules it imports (module_imports for each module)."
    files = module_files(pkg)
    return {m: module_imports(m, p, files) for m, p in files.items()}


def in_analysis(module: str, analysis=ANALYSIS) -> bool:
    return any(module == a or module.startswith(a + ".") for a in analysis)


def layer_violations(graph: dict, analysis=ANALYSIS) -> list:
    "The (library module, analysis module) pairs where the library imports the analysis."
    return sorted(
        (m, d)
        for m, deps in graph.items()
        if not in_analysis(m, analysis)
        for d in deps
        if in_analysis(d, analysis)
    )


def find_cycle(graph: dict):
    "A list of modules forming a cycle, or None."
    state, stack = {}, []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph.get(n, ())):
            if state.get(m) == 1:
                return stack[stack.index(m) :] + [m]
            if m not in state:
                c = visit(m)
                if c:
                    return c
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state:
            c = visit(n)
            if c:
                return c
    return None


GRAPH = import_graph(PKG)
MODULES = sorted(m for m, p in module_files(PKG).items() if p.name != "__init__.py")


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def _fake_package(root: Path) -> Path:
    "A small package with a library part and an analysis part, imported every way the reader must see."
    files = {
        "__init__.py": "",
        "core.py": "X = 1\n",
        "lib/__init__.py": "",
        "lib/a.py": "from ..core import X\n\ndef f():\n    from ..ana.consts import Y  # the violation\n",
        "lib/b.py": "from . import a\nimport fake.core\n",
        "lib/c.py": "from fake.ana import consts\n",  # a module named through its package
        "lib/d.py": "from .a import f\nfrom fake.lib import b\n",
        "ana/__init__.py": "",
        "ana/consts.py": "from ..lib.d import f\nY = 2\n",
        "_modidx.py": "import fake.ana.consts\n",  # nbdev's index: not a module
    }
    for rel, src in files.items():
        (root / "fake" / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / "fake" / rel).write_text(src)
    return root / "fake"


def test_import_reader_and_layer_check_on_a_fake_package(tmp_path):
    g = import_graph(_fake_package(tmp_path))
    assert set(g) == {"fake", "fake.core", "fake.lib", "fake.lib.a", "fake.lib.b", "fake.lib.c"} | {
        "fake.lib.d",
        "fake.ana",
        "fake.ana.consts",
    }
    assert g["fake.lib.a"] == {"fake.core", "fake.ana.consts"}  # relative, function-level
    assert g["fake.lib.b"] == {"fake.lib.a", "fake.core"}  # `from . import a`, `import fake.core`
    assert g["fake.lib.c"] == {"fake.ana.consts"}
    assert g["fake.lib.d"] == {"fake.lib.a", "fake.lib.b"}
    assert g["fake.ana.consts"] == {"fake.lib.d"}  # the analysis may import the library
    analysis = ("fake.ana",)
    assert layer_violations(g, analysis) == [
        ("fake.lib.a", "fake.ana.consts"),
        ("fake.lib.c", "fake.ana.consts"),
    ]
    assert find_cycle(g) == ["fake.ana.consts", "fake.lib.d", "fake.lib.a", "fake.ana.consts"]


def test_import_reader_sees_the_real_package():
    assert {"spectra_ml.data.sources", "spectra_ml.models.kane", "spectra_ml.kane.clusters"} <= set(
        GRAPH
    )
    assert "spectra_ml._modidx" not in GRAPH
    # relative imports inside a subpackage and up from it, absolute and function-level imports
    assert "spectra_ml.models.kane" in GRAPH["spectra_ml.models.aspgap"]
    assert {"spectra_ml.training", "spectra_ml.prediction"} <= GRAPH["spectra_ml.studies.compare"]
    assert {"spectra_ml.core", "spectra_ml.models.registry"} <= GRAPH["spectra_ml.prediction"]
    assert "spectra_ml.kane.constants" in GRAPH["spectra_ml.kane.tagging"]
    assert any(GRAPH[m] & set(GRAPH) for m in GRAPH if in_analysis(m)), "the reader is broken"


def test_the_library_never_imports_the_analysis():
    assert [m for m in GRAPH if not in_analysis(m)] and [m for m in GRAPH if in_analysis(m)]
    bad = layer_violations(GRAPH)
    assert not bad, "the library imports the analysis layer: " + "; ".join(
        f"{a} -> {b}" for a, b in bad
    )


def test_module_import_graph_has_no_cycle():
    assert find_cycle(GRAPH) is None, f"import cycle: {' -> '.join(find_cycle(GRAPH))}"


# --- models ---------------------------------------------------------------------------------------


def test_one_registry_of_models():
    from spectra_ml import core
    from spectra_ml.models import registry as models

    for name in ("MODEL_NAMES", "MODEL_DEFAULTS", "MODEL_PASSES"):
        assert not hasattr(core, name), f"core.{name}: the registry lives in models only"
    assert not hasattr(models, "MODELS") or models.MODELS is models.REGISTRY
    assert set(models.model_names()) == set(models.REGISTRY)
    with pytest.raises(core.ParameterError, match="kane_mlp"):
        models.model_spec("no_such_model")


def model_classes() -> set:
    "The network classes (torch modules) defined in spectra_ml/models/*.py."
    import importlib

    import torch

    out = set()
    for name in GRAPH:
        if name.startswith("spectra_ml.models."):
            mod = importlib.import_module(name)
            out |= {
                k
                for k, v in vars(mod).items()
                if isinstance(v, type) and v.__module__ == name and issubclass(v, torch.nn.Module)
            }
    return out


@pytest.mark.parametrize("module", ["prediction", "streaming"])
def test_models_predict_themselves(module):
    "Prediction and streaming go through the registry: they name no model class (no per-model branch)."
    classes = model_classes()
    assert {"HeteroscedasticMLP", "UncertainNN", "AspGapNet", "GuiglionEnsemble"} <= classes
    src = (PKG / f"{module}.py").read_text()
    used = {c for c in classes if re.search(rf"\b{c}\b", src)}
    assert not used, f"{module} names model classes {sorted(used)}: models own their prediction"


# --- notebooks ------------------------------------------------------------------------------------


def _cells(nb: Path) -> list:
    return json.loads(nb.read_text())["cells"]


def _src(cell) -> str:
    return "".join(cell["source"])


def _code(src: str) -> str:
    "A cell's Python, without its IPython magics and shell lines."
    return "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))


def _statements(src: str) -> int:
    "Statements at any depth, imports not counted (a chapter says what it calls)."
    tree = ast.parse(_code(src))
    return sum(
        isinstance(n, ast.stmt) and not isinstance(n, (ast.Import, ast.ImportFrom))
        for n in ast.walk(tree)
    )


def chapter_cells(nb: Path) -> list:
    """A chapter's working cells: every code cell but the papermill `parameters` cell and cells made
    only of imports."""
    out = []
    for c in _cells(nb):
        if c["cell_type"] != "code" or "parameters" in c.get("metadata", {}).get("tags", []):
            continue
        body = ast.parse(_code(_src(c))).body
        if body and not all(isinstance(n, (ast.Import, ast.ImportFrom)) for n in body):
            out.append(_src(c))
    return out


def _chapters():
    return sorted((NBS / "chapters").glob("*.ipynb"))


def test_chapter_cell_reader_on_a_made_up_chapter(tmp_path):
    def cell(src, tags=()):
        return {"cell_type": "code", "metadata": {"tags": list(tags)}, "source": [src]}

    nb = tmp_path / "01_x.ipynb"
    cells = [
        {"cell_type": "markdown", "metadata": {}, "source": ["# X"]},
        cell("import json\nfrom spectra_ml.core import RunDir"),
        cell("run_dir = 'a'\nn = 3", ["parameters"]),
        cell("from spectra_ml.core import RunDir\n\nrun = RunDir(run_dir)"),
        cell("%time x = 1\n" + "\n".join(f"y{i} = {i}" for i in range(16))),
    ]
    nb.write_text(json.dumps({"cells": cells}))
    found = chapter_cells(nb)
    assert len(found) == 2
    assert [_statements(s) for s in found] == [1, 16]


def test_chapter_cells_are_thin():
    assert _chapters(), "no chapter notebooks found in nbs/chapters"
    fat = []
    for nb in _chapters():
        cells = chapter_cells(nb)
        assert cells, f"{nb.name}: no working cells found: the check would pass vacuously"
        fat += [
            f"{nb.name}: {_statements(s)} statements"
            for s in cells
            if _statements(s) > STAGE_CELL_MAX_STATEMENTS
        ]
    assert not fat, (
        "chapter cells over about 15 statements (move the logic into a tested function): "
        + "; ".join(fat)
    )


def _export_cells(nb: Path) -> list:
    return [
        _src(c)
        for c in _cells(nb)
        if c["cell_type"] == "code" and _src(c).lstrip().startswith("#| export")
    ]


def constants_only(src: str) -> bool:
    "A cell of named constants alone (UPPER_CASE assignments): a table, exempt from the line limit."
    body = ast.parse(_code(src)).body

    def named_constant(n):
        targets = n.targets if isinstance(n, ast.Assign) else [n.target]
        names = [e for t in targets for e in (t.elts if isinstance(t, ast.Tuple) else [t])]
        return all(isinstance(t, ast.Name) and t.id.isupper() for t in names)

    return bool(body) and all(
        isinstance(n, (ast.Assign, ast.AnnAssign)) and named_constant(n) for n in body
    )


def test_constants_only_sees_logic():
    assert constants_only("#| export\nA = 1\nB_C: int = 2\nD = {'x': 1}\nE, F = 1, 2")
    assert not constants_only("#| export\nA = 1\ndef f():\n    return A")
    assert not constants_only("#| export\nA = 1\nb = 2")
    assert not constants_only("#| export\nA, b = 1, 2")
    assert not constants_only("#| export\nimport os\nA = 1")


def test_export_cells_are_fine_grained():
    notebooks = sorted((NBS / "lib").glob("*.ipynb")) + sorted((NBS / "kane").glob("*.ipynb"))
    notebooks += sorted((NBS / "studies").glob("*.ipynb"))
    big, seen = [], 0
    for nb in notebooks:
        for src in _export_cells(nb):
            seen += 1
            n = len(src.splitlines())
            if n > EXPORT_CELL_MAX_LINES and not constants_only(src):
                big.append(f"{nb.relative_to(NBS)}: {n} lines")
    assert seen > 100, f"only {seen} export cells found: the reader is broken"
    assert not big, "export cells over about 60 lines: " + "; ".join(big)


def _default_exp(nb: Path):
    for c in _cells(nb):
        m = re.search(r"^#\|\s*default_exp\s+([\w.]+)", _src(c), re.M)
        if c["cell_type"] == "code" and m:
            return m.group(1)
    return None


def expected_module(nb: Path) -> str | None:
    """The module a notebook's name says it exports: nbs/lib/NN_a_b -> a.b (written with `_` for
    `.`), nbs/kane/NN_x -> kane.x, nbs/studies/NN_x -> studies.x; None for the chapters and index."""
    layer, stem = nb.parent.name, nb.stem.split("_", 1)[-1]
    return {"lib": stem, "kane": f"kane.{stem}", "studies": f"studies.{stem}"}.get(layer)


def test_notebook_name_is_module_name():
    exported = {}
    for nb in sorted(NBS.rglob("*.ipynb")):
        exp, want = _default_exp(nb), expected_module(nb)
        where = nb.relative_to(NBS)
        if want is None:
            assert exp is None and not _export_cells(nb), f"{where} exports: chapters do not"
            continue
        assert re.match(r"\d\d_", nb.name), f"{where}: NN_<module>.ipynb"
        assert exp, f"{where}: no default_exp"
        if nb.parent.name == "lib":
            assert exp.replace(".", "_") == want, f"{where} exports {exp}"
            assert not in_analysis(f"spectra_ml.{exp}"), f"{where}: nbs/lib exports the analysis"
        else:
            assert exp == want, f"{where} exports {exp}, its name says {want}"
        assert exp not in exported, f"{where} and {exported.get(exp)} both export {exp}"
        exported[exp] = where
    # every module has its notebook, and every notebook its module
    assert {f"spectra_ml.{m}" for m in exported} == set(MODULES)


@pytest.mark.parametrize("module", MODULES)
def test_module_description_is_one_whole_sentence(module):
    path = module_files(PKG)[module]
    doc = ast.get_docstring(ast.parse(path.read_text()))
    assert doc and doc.rstrip().endswith((".", ".)")), f"{path.relative_to(ROOT)}: {doc!r}"
    assert doc[0].isupper() and "\n\n" not in doc.strip(), f"{path.relative_to(ROOT)}: {doc!r}"
