"""The shape of the house (issue #12): no import cycle, one model registry, models that predict
themselves, thin stage cells, fine-grained export cells, whole-sentence module descriptions."""

import ast
import json
import re
from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "spectra_ml"
MODULES = sorted(p.stem for p in PKG.glob("*.py") if not p.name.startswith("_"))
#: "about 15 lines" per stage cell, counted as statements (ruff spreads one call over many lines)
STAGE_CELL_MAX_STATEMENTS = 15
#: "no export cell over about 60 lines"
EXPORT_CELL_MAX_LINES = 70


def module_imports(name: str) -> set:
    "Every spectra_ml module that `name` imports, at any depth (function-level imports included)."
    tree = ast.parse((PKG / f"{name}.py").read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                mods = [node.module] if node.module else [a.name for a in node.names]
            elif node.module and node.module.startswith("spectra_ml"):
                rest = node.module.split(".", 1)[1] if "." in node.module else None
                mods = [rest] if rest else [a.name for a in node.names]
            else:
                continue
            out |= {m.split(".")[0] for m in mods if m.split(".")[0] in MODULES}
        elif isinstance(node, ast.Import):
            for a in node.names:
                parts = a.name.split(".")
                if parts[0] == "spectra_ml" and len(parts) > 1 and parts[1] in MODULES:
                    out.add(parts[1])
    return out


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


def test_find_cycle_sees_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_module_import_graph_has_no_cycle():
    graph = {m: module_imports(m) for m in MODULES}
    assert graph["inference"], "the import reader found nothing: it is broken"
    assert find_cycle(graph) is None, f"import cycle: {' -> '.join(find_cycle(graph))}"


def test_one_registry_of_models():
    from spectra_ml import core
    from spectra_ml.models import registry as models

    for name in ("MODEL_NAMES", "MODEL_DEFAULTS", "MODEL_PASSES"):
        assert not hasattr(core, name), f"core.{name}: the registry lives in models only"
    assert not hasattr(models, "MODELS") or models.MODELS is models.REGISTRY
    assert set(models.model_names()) == set(models.REGISTRY)
    with pytest.raises(core.ParameterError, match="kane_mlp"):
        models.model_spec("no_such_model")


def test_inference_has_no_per_model_branch():
    src = (PKG / "inference.py").read_text()
    from spectra_ml.models import registry as models

    classes = {
        n.name
        for n in ast.parse((PKG / "models.py").read_text()).body
        if isinstance(n, ast.ClassDef)
    }
    model_classes = {
        c
        for c in classes
        if isinstance(getattr(models, c, None), type)
        and issubclass(getattr(models, c), models.nn.Module)
    }
    assert model_classes, "no model classes found: the check is broken"
    used = {c for c in model_classes if re.search(rf"\b{c}\b", src)}
    assert not used, f"inference names model classes {sorted(used)}: models own their prediction"


def _notebooks():
    return sorted((ROOT / "nbs").rglob("*.ipynb"))


def _stage_cells(nb_path):
    "The stage cells, as tools/nbtools.py finds them (one definition for the tool and the test)."
    return load_tool("nbtools").stage_cells(nb_path)


def _statements(src: str) -> int:
    body = "\n".join(l for l in src.splitlines() if not l.lstrip().startswith(("%", "!")))
    return sum(isinstance(n, ast.stmt) for n in ast.walk(ast.parse(body)))


def test_stage_cells_are_thin():
    fat = [
        f"{nb.name}: {_statements(s)} statements"
        for nb in _notebooks()
        for s in _stage_cells(nb)
        if _statements(s) > STAGE_CELL_MAX_STATEMENTS
    ]
    assert not fat, (
        "stage cells over about 15 lines (move the logic into a tested function): " + "; ".join(fat)
    )


def test_export_cells_are_fine_grained():
    big = []
    for nb in _notebooks():
        for c in json.loads(nb.read_text())["cells"]:
            src = "".join(c["source"])
            if c["cell_type"] == "code" and src.lstrip().startswith("#| export"):
                if len(src.splitlines()) > EXPORT_CELL_MAX_LINES:
                    big.append(f"{nb.name}: {len(src.splitlines())} lines")
    assert not big, "export cells over about 60 lines: " + "; ".join(big)


@pytest.mark.parametrize("module", MODULES)
def test_module_description_is_one_whole_sentence(module):
    doc = ast.get_docstring(ast.parse((PKG / f"{module}.py").read_text()))
    assert doc and doc.rstrip().endswith((".", ".)")), f"spectra_ml/{module}.py: {doc!r}"


def test_notebook_name_is_module_name():
    for nb in _notebooks():
        m = re.search(r"#\|\s*default_exp\s+(\w+)", nb.read_text())
        if m:
            assert nb.stem.split("_", 1)[1] == m.group(1), nb.name
