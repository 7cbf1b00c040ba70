"""tools/mutation_check.py stays in step with the code: every mutation still finds its text exactly
once (module, and notebook cell where the stage runs it) and names tests that exist. Running the
mutants themselves takes ~20 minutes: `python tools/mutation_check.py --baseline`."""

import re

import pytest

from conftest import ROOT, load_tool

mc = load_tool("mutation_check")


@pytest.mark.parametrize("m", mc.MUTATIONS, ids=lambda m: m["name"])
def test_mutation_applies_once_and_its_tests_exist(m):
    files = mc.mutated_files(ROOT, m)
    assert m["file"] in files and m["new"] in files[m["file"]]
    assert files[m["file"]] != (ROOT / m["file"]).read_text()  # not a no-op
    if m.get("in_notebook"):
        assert any(p.startswith("nbs/") for p in files)
    for node in m["tests"]:
        path, _, name = node.partition("::")
        func = re.sub(r"\[.*\]$", "", name)
        assert re.search(rf"^def {func}\(", (ROOT / path).read_text(), re.M), node


def test_a_stale_mutation_is_refused():
    m = {**mc.MUTATIONS[0], "old": "text that is in no module"}
    with pytest.raises(SystemExit, match="occurs 0 times"):
        mc.mutated_files(ROOT, m)
