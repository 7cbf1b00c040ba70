#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (the nbdev readme_nb) and the docs pages from nbs/docs/, with their numbers read from files.

`nbdev_readme` does the same through Quarto, which is a separate binary download; this uses
nbconvert, which the project already depends on, so it runs anywhere the project installs.

    python tools/make_readme.py           # write README.md
    python tools/make_readme.py --check   # exit 1 if README.md is out of date
    python tools/make_readme.py --source demo=runs/demo/summary.json --stdout  # render from a run

The markdown of index.ipynb may hold placeholders, replaced here (never typed by hand):

- `{{SOURCE:KEY|FILTER:FORMAT}}`: one value of a JSON file. SOURCE is a name in `SOURCES`
  (`demo`, `compare`, `ablation`) or `bench/NAME` (benchmarks/results/NAME.json); KEY a dotted path into it
  (list items by index; a key that itself holds dots is matched whole); FILTERs (optional, any
  number) are those in `FILTERS`; FORMAT (optional) a Python format spec (`.1f`, `+.3g`, `,`, `.1%`).
  `{{demo:validate.mlp.teff.rmse:.1f}}` is the demo run's test-split Teff RMSE with one decimal.
- `{{include:PATH}}`: a committed file (e.g. `figures/compare/comparison.md`), verbatim.
- `{{modules}}`: the module map, one row per notebook, from each notebook's `> ` description line.
- `{{stage_calls}}`: for each stage notebook, the library functions its stage cells (the cells after
  the `## Stage` heading) call, read from their code.

A missing file or key is an error naming the file, the key and how to make it: no number falls
back to a typed one.
"""

from __future__ import annotations

import ast
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"

#: Where each placeholder source lives, and how to make it when it is missing.
SOURCES = {
    "demo": ("figures/demo/summary.json", "spectra_ml run --publish  (publishes figures/demo/)"),
    "compare": (
        "figures/compare/summary.json",
        "spectra_ml run --name compare --compare --publish  (publishes figures/compare/)",
    ),
    "compare_guiglion": (
        "figures/compare_guiglion/summary.json",
        "spectra_ml run --name compare_guiglion --compare --publish -p 'models=[]' "
        '-p \'config_runs={"guiglion_cnn": ["guiglion_halving"]}\' -p baseline=False '
        "-p tsne=False -p 'cv_models=[]'  (publishes figures/compare_guiglion/)",
    ),
    "ablation": (
        "figures/ablation/ablation.json",
        "python -m spectra_ml.studies.ablation --out runs/ablation/products --publish figures/ablation",
    ),
}
BENCH = ("benchmarks/results/{}.json", "python benchmarks/bench_{}.py  (see benchmarks/README.md)")

#: Filters a placeholder may apply to a value, in order, before its format. `where(F<X)` keeps the
#: items of a list of records whose field F compares so with X (<, <=, >, >=, ==, !=; X a number
#: or a word), `pluck(F)` takes field F of each record, `dash` turns a null into "—".
FILTERS = {
    "len": len,
    "sum": lambda v: sum(v.values() if isinstance(v, dict) else v),
    "min": lambda v: min(v.values() if isinstance(v, dict) else v),
    "max": lambda v: max(v.values() if isinstance(v, dict) else v),
    "join": lambda v: ", ".join(map(str, v)),
    "yesno": lambda v: "yes" if v else "no",
    "abs": abs,
    "dash": lambda v: v,
}
_OPS = {
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
    "!=": lambda a, b: a != b,
    "==": lambda a, b: a == b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
}
_CALL = re.compile(r"^(\w+)\((.*)\)$")


def _apply(f: str, value, spec: str):
    "One filter of a placeholder, plain (`len`) or with an argument (`where(x<1)`, `pluck(name)`)."
    m = _CALL.match(f)
    if m and m.group(1) == "pluck":
        return [r[m.group(2).strip()] for r in value]
    if m and m.group(1) == "where":
        cond = m.group(2)
        op = next((o for o in _OPS if o in cond), None)
        if op is None:
            raise TemplateError(f"{{{{{spec}}}}}: where() needs a comparison, e.g. where(x<1)")
        field, x = (t.strip() for t in cond.split(op, 1))
        try:
            x = float(x)
        except ValueError:
            pass
        return [r for r in value if r.get(field) is not None and _OPS[op](r[field], x)]
    if f not in FILTERS:
        raise TemplateError(
            f"{{{{{spec}}}}}: unknown filter {f!r}; known: {sorted(FILTERS)}, where(...), pluck(...)"
        )
    return FILTERS[f](value)


PLACEHOLDER = re.compile(r"\{\{\s*([^{}]+?)\s*\}\}")
STAGE_HEADING = re.compile(r"^##\s+Stage\b", re.M)


class TemplateError(Exception):
    "A placeholder that cannot be filled: a missing file or key, or a bad filter or format."


class MissingSource(TemplateError):
    "The file a placeholder reads does not exist."

    def __init__(self, rel, key: str, how: str):
        self.rel, self.key, self.how = str(rel), key, how
        super().__init__(f"{rel} is missing (needed for key {key!r}): make it with {how}")


def _source_file(name: str, sources: dict) -> tuple[Path, str]:
    if name in sources:
        path, how = sources[name]
    elif name.startswith("bench/"):
        b = name.split("/", 1)[1]
        path, how = BENCH[0].format(b), BENCH[1].format(b)
    else:
        raise TemplateError(
            f"unknown source {name!r}: use one of {sorted(sources)} or bench/NAME (tools/make_readme.py SOURCES)"
        )
    path = Path(path)
    return (path if path.is_absolute() else ROOT / path), how


def lookup(data, key: str, where: str):
    "The value at dotted `key` in `data`; a key holding dots (`a.b_0.9`) is matched whole."
    parts = key.split(".")
    cur, i, seen = data, 0, []
    while i < len(parts):
        for j in range(len(parts), i, -1):  # longest key first
            k = ".".join(parts[i:j])
            if isinstance(cur, dict) and k in cur:
                cur, i = cur[k], j
                seen.append(k)
                break
            if isinstance(cur, list) and k.lstrip("-").isdigit() and -len(cur) <= int(k) < len(cur):
                cur, i = cur[int(k)], j
                seen.append(k)
                break
        else:
            have = sorted(cur)[:12] if isinstance(cur, dict) else f"a {type(cur).__name__}"
            raise TemplateError(
                f"{where}: no key {'.'.join(parts[i:])!r} under {'.'.join(seen) or 'the top level'} "
                f"(there: {have}); was what writes it changed?"
            )
    return cur


def fill(spec: str, sources: dict = SOURCES, cache: dict | None = None) -> str:
    "The text of one placeholder `SOURCE:KEY|FILTER:FORMAT` (or `include:PATH`)."
    cache = {} if cache is None else cache
    name, sep, rest = spec.partition(":")
    if not sep:
        raise TemplateError(f"placeholder {{{{{spec}}}}}: expected SOURCE:KEY")
    if name == "include":
        path = ROOT / rest
        if not path.exists():
            raise TemplateError(f"{rest} is missing (needed by {{{{include:{rest}}}}})")
        return path.read_text().strip()
    key, _, fmt = rest.partition(":")
    key, *filters = [s.strip() for s in key.split("|")]
    path, how = _source_file(name, sources)
    rel = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    if path not in cache:
        if not path.exists():
            raise MissingSource(rel, key, how)
        cache[path] = json.loads(path.read_text())
    value = lookup(cache[path], key, str(rel))
    for f in filters:
        value = _apply(f, value, spec)
    if value is None and "dash" in filters:
        return "—"
    if value is None:
        raise TemplateError(f"{rel}: key {key!r} is null (the stage did not compute it)")
    try:
        return format(value, fmt)
    except (TypeError, ValueError) as e:
        raise TemplateError(f"{{{{{spec}}}}}: cannot format {value!r} with {fmt!r} ({e})") from None


def _nb(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def _src(cell) -> str:
    s = cell["source"]
    return "".join(s) if isinstance(s, list) else s


def notebook_header(path: Path) -> dict:
    "Module name, title and one-sentence description (`> ` lines) of a library notebook."
    cells = _nb(path)
    first = next(_src(c) for c in cells if c["cell_type"] == "markdown")
    title = first.splitlines()[0].lstrip("# ").strip()
    quote, started = [], False
    for line in first.splitlines()[1:]:
        if line.startswith(">"):
            quote.append(line[1:].strip())
            started = True
        elif started:
            break
    m = next(
        (
            re.search(r"^#\|\s*default_exp\s+(\S+)", _src(c), re.M)
            for c in cells
            if "default_exp" in _src(c)
        ),
        None,
    )
    return {
        "notebook": path.stem,
        "module": m.group(1) if m else None,
        "title": title.split(":", 1)[1].strip() if ":" in title else title,
        "description": " ".join(quote),
    }


#: The two layers and where their notebooks live (the import direction is tested in tests/test_shape.py).
LAYERS = (
    ("library", "nbs/lib", "XP to labels with σ: reusable, knows no paper's analysis"),
    (
        "analysis",
        "nbs/kane",
        "Kane et al.'s paper: sample cuts, tagging, clusters, GALAH, halo dynamics",
    ),
    ("analysis", "nbs/studies", "studies beside the paper: the four-model comparison"),
)


def library_notebooks() -> list[Path]:
    "Every notebook that exports a module, library first, then the analysis layer."
    out = []
    for _, folder, _ in LAYERS:
        out += sorted((ROOT / folder).glob("[0-9][0-9]_*.ipynb"))
    return out


def _layer(path: Path) -> str:
    rel = path.parent.relative_to(ROOT).as_posix()
    return next(layer for layer, folder, _ in LAYERS if folder == rel)


def module_map() -> str:
    "The two-layer map: one row per module, its layer, its notebook and its one-sentence description."
    rows = ["| layer | module | notebook | what it holds |", "|---|---|---|---|"]
    for p in library_notebooks():
        h = notebook_header(p)
        desc = h["description"].replace("|", "\\|")
        nb = p.relative_to(ROOT / "nbs").with_suffix("").as_posix()
        rows.append(f"| {_layer(p)} | `spectra_ml.{h['module']}` | `{nb}` | {desc} |")
    return "\n".join(rows)


def _code(src: str) -> str:
    "A cell's Python without nbdev directives, magics and shell lines."
    keep = ["" if l.lstrip().startswith(("#|", "%", "!")) else l for l in src.splitlines()]
    return "\n".join(keep)


def _parse(src: str):
    try:
        return ast.parse(_code(src))
    except SyntaxError:
        return None


def _imported_names(cells) -> dict:
    "Local name -> (module, name) for every spectra_ml import in the cells ('' name: a module)."
    names = {}
    for c in cells:
        if c["cell_type"] != "code" or (tree := _parse(_src(c))) is None:
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spectra_ml"):
                mod = node.module.removeprefix("spectra_ml").lstrip(".")
                for a in node.names:
                    full = f"{mod}.{a.name}".strip(".")
                    path = ROOT / "spectra_ml" / full.replace(".", "/")
                    is_module = path.is_dir() or path.with_suffix(".py").exists()
                    names[a.asname or a.name] = (full, "") if is_module else (mod, a.name)
            elif isinstance(node, ast.Import):
                for a in node.names:
                    if a.name.startswith("spectra_ml."):
                        names[a.asname or a.name] = (a.name.removeprefix("spectra_ml."), "")
    return names


def stage_calls(path: Path) -> list[tuple]:
    "`(module, name)` of every spectra_ml function or class a chapter's code cells call."
    cells = _nb(path)
    names = _imported_names(cells)
    calls: list[tuple] = []
    for c in cells:
        if c["cell_type"] != "code" or "parameters" in c["metadata"].get("tags", []):
            continue
        tree = _parse(_src(c))
        for node in ast.walk(tree) if tree else []:
            if not isinstance(node, ast.Call):
                continue
            f, chain = node.func, []
            while isinstance(f, ast.Attribute):
                chain.insert(0, f.attr)
                f = f.value
            if isinstance(f, ast.Name) and f.id in names:
                mod, name = names[f.id]
                target = (mod, ".".join([n for n in [name, *chain] if n][:2]))
                if target[1] and target not in calls:
                    calls.append(target)
    calls.sort()
    return calls


def stage_notebooks() -> list[Path]:
    "The chapters: the notebooks papermill runs as pipeline stages."
    return sorted((ROOT / "nbs" / "chapters").glob("[0-9][0-9]_*.ipynb"))


def stage_map() -> str:
    "For each chapter, the library and analysis functions it calls, by module."
    rows = ["| chapter | what it calls, by module |", "|---|---|"]
    for p in stage_notebooks():
        by_module: dict[str, list] = {}
        for mod, name in stage_calls(p):
            by_module.setdefault(mod, []).append(name)
        calls = "; ".join(
            f"`{m}`: " + ", ".join(f"`{n}`" for n in names) for m, names in by_module.items()
        )
        rows.append(f"| `chapters/{p.stem}` | {calls} |")
    return "\n".join(rows)


BLOCKS = {"modules": module_map, "stage_calls": stage_map}


def render_text(text: str, sources: dict = SOURCES, errors: list | None = None, cache=None) -> str:
    "Fill every placeholder of one markdown text; collect failures in `errors` (or raise the first)."
    cache = {} if cache is None else cache

    def sub(m):
        spec = m.group(1)
        try:
            return BLOCKS[spec]() if spec in BLOCKS else fill(spec, sources, cache)
        except TemplateError as e:
            if errors is None:
                raise
            errors.append(e)
            return m.group(0)

    return PLACEHOLDER.sub(sub, text)


def _report(errors: list) -> list[str]:
    "One line per missing file (with every key it was needed for), then each other failure once."
    missing: dict[str, list] = {}
    for e in errors:
        if isinstance(e, MissingSource):
            missing.setdefault(e.rel, [e.how]).append(e.key)
    lines = []
    for rel, (how, *keys) in missing.items():
        keys = list(dict.fromkeys(keys))
        lines.append(
            f"{rel} is missing: make it with {how}; it is needed for {len(keys)} key(s): "
            + ", ".join(keys)
        )
    return lines + list(dict.fromkeys(str(e) for e in errors if not isinstance(e, MissingSource)))


#: The generated pages: the README (the front door) and the docs pages, each from its notebook.
PAGES = {
    "README.md": "nbs/index.ipynb",
    "docs/demo.md": "nbs/docs/demo.ipynb",
    "docs/results.md": "nbs/docs/results.ipynb",
    "docs/models.md": "nbs/docs/models.ipynb",
    "docs/running.md": "nbs/docs/running.ipynb",
    "docs/scale.md": "nbs/docs/scale.ipynb",
    "docs/developing.md": "nbs/docs/developing.ipynb",
}


def render(sources: dict = SOURCES, page: str = "README.md") -> str:
    "A page's text (README.md or a docs page): its notebook's markdown with every placeholder filled (TemplateError lists failures)."
    import nbformat
    from nbconvert import MarkdownExporter

    nb = nbformat.read(ROOT / PAGES[page], as_version=4)
    nb.cells = [c for c in nb.cells if not c.source.lstrip().startswith("#|")]  # nbdev directives
    errors, cache = [], {}
    for c in nb.cells:
        if c.cell_type == "markdown":
            c.source = render_text(c.source, sources, errors, cache)
    if errors:
        raise TemplateError("README placeholders not filled:\n  " + "\n  ".join(_report(errors)))
    body, _ = MarkdownExporter(
        exclude_output_prompt=True, exclude_input_prompt=True
    ).from_notebook_node(nb)
    return HEADER.replace("nbs/index.ipynb", PAGES[page]) + body.strip() + "\n"


def main(argv):
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="exit 1 if README.md is out of date")
    ap.add_argument("--stdout", action="store_true", help="print the render instead of writing it")
    ap.add_argument(
        "--source",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="read a source from another file, e.g. demo=runs/demo/summary.json",
    )
    a = ap.parse_args(argv)
    sources = dict(SOURCES)
    for s in a.source:
        name, _, path = s.partition("=")
        sources[name] = (str(Path(path).resolve()), f"the file given by --source {name}=...")
    try:
        texts = {page: render(sources, page) for page in PAGES}
    except TemplateError as e:
        print(e, file=sys.stderr)
        return 1
    if a.stdout:
        sys.stdout.write(texts["README.md"])
        return 0
    stale = [p for p, t in texts.items() if not (ROOT / p).exists() or (ROOT / p).read_text() != t]
    if a.check:
        if stale:
            print(
                f"{', '.join(stale)} out of date: run python tools/make_readme.py", file=sys.stderr
            )
            return 1
        return 0
    for page, text in texts.items():
        (ROOT / page).parent.mkdir(parents=True, exist_ok=True)
        (ROOT / page).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
