#!/usr/bin/env python3
"""Build the docs site, offline: `python tools/build_docs.py` writes `_build/docs/html/index.html`.

Every page comes from a file that already exists; nothing is typed twice:

- the landing page (getting started): README.md, itself rendered from nbs/index.ipynb;
- the guide: docs/*.md (rendered from nbs/docs/*.ipynb) and benchmarks/README.md;
- the tutorials: nbs/tutorials/*.ipynb with the outputs stored in them;
- the chapters: the executed notebooks of the demo run (`runs/demo/notebooks/`), the comparison chapter
  from `runs/compare/` (or the runs given with `--run DIR`); a chapter no run has completed is shown from
  nbs/chapters/ without outputs, and its page says so;
- the released models' cards: spectra_ml/released/*/card.md;
- the API reference: every module of spectra_ml, from its docstrings and its docments (the comment
  after each parameter; docs/site/_ext/docments.py).

The pages are laid out in a staging folder (`OUT/src`, beside a copy of docs/site/), links between
repository files become links between pages (a file that is not a page becomes a link to it in the
repository on GitHub; an image is copied in), and Sphinx with myst-nb writes `OUT/html`. Notebooks are
never executed (`nb_execution_mode = "off"`) and nothing is fetched. The exit status is 1 when a link
or an image inside the site is broken, or a module fails to import, with the list printed; Sphinx's
other warnings are counted and kept in `OUT/warnings.txt`.

    python tools/build_docs.py [--run runs/demo --run runs/compare] [--out _build/docs] [--jobs N]
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import posixpath
import re
import shutil
import subprocess
import sys
import time
from configparser import ConfigParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "docs" / "site"  # conf.py and the extension; everything else is generated
#: The guide's pages in reading order; any other docs/*.md follows, by name.
GUIDE_ORDER = ("demo", "running", "results", "models", "scale", "developing")
#: The runs whose executed chapters the site shows, each chapter from the first that completed it.
DEFAULT_RUNS = ("runs/demo", "runs/compare")
#: Warnings that mean a reader would meet a broken link, a missing image or a missing API page.
BROKEN = (
    "xref_missing",
    "Unknown target name",
    "image file not readable",
    "undefined label",
    "unknown document",
    "nonexisting document",
    "failed to import",
    "could not import",
    "without end-string",  # docutils marks the spot with a link to a message the page does not hold
)
WIDGET = "application/vnd.jupyter.widget-view+json"
_LINK = re.compile(r"(!?)\[((?:[^\[\]]|\[[^\]]*\])*)\]\(\s*<?([^)\s>]+)>?((?:\s+\"[^\"]*\")?)\s*\)")
_HTML = re.compile(r"(<(?:img|a|source)\b[^>]*?\b(?:src|href)=)([\"'])([^\"']+)\2", re.I)
_CODE_SPAN = re.compile(r"(`+)[^`]*?\1")
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")


def settings() -> dict:
    cfg = ConfigParser(delimiters=["="])
    cfg.read(ROOT / "settings.ini", encoding="utf-8")
    return dict(cfg["DEFAULT"])


def repo_files() -> set | None:
    "The files git tracks or would track (not ignored); None outside a git checkout."
    r = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        text=True,
    )
    return set(r.stdout.split("\n")) - {""} if r.returncode == 0 else None


class Site:
    "The staging folder: which repository file is which page, and the links rewritten between them."

    def __init__(self, src: Path):
        self.src = src
        self.pages = {}  # repository path (posix) -> site path (posix, relative to src)
        self.written = set()  # site paths written in this build
        self.broken = []  # (repository file, link) that lead nowhere
        self.files = repo_files()
        ini = settings()
        self.blob = f"{ini.get('git_url', '').rstrip('/')}/blob/{ini.get('branch', 'main')}/"
        self.tree = self.blob.replace("/blob/", "/tree/")

    # --- writing ---
    def write(self, rel: str, text: str):
        "Write a staged file only when it changed, so Sphinx rebuilds only what changed."
        p = self.src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if not p.exists() or p.read_text(encoding="utf-8") != text:
            p.write_text(text, encoding="utf-8")
        self.written.add(rel)

    def copy(self, source: Path, rel: str):
        p = self.src / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if (
            not p.exists()
            or p.stat().st_size != source.stat().st_size
            or p.read_bytes() != source.read_bytes()
        ):
            shutil.copyfile(source, p)
        self.written.add(rel)

    def prune(self):
        "Remove staged files this build did not write (a page that no longer exists)."
        keep = {"conf.py"}
        for p in sorted(self.src.rglob("*"), reverse=True):
            rel = p.relative_to(self.src).as_posix()
            if (
                p.is_file()
                and rel not in self.written
                and rel not in keep
                and not rel.startswith("_ext/")
            ):
                p.unlink()
            elif p.is_dir() and not any(p.iterdir()):
                p.rmdir()

    # --- links ---
    def tracked(self, repo_path: str) -> bool:
        if self.files is None:
            return (ROOT / repo_path).exists()
        return repo_path in self.files or any(f.startswith(repo_path + "/") for f in self.files)

    def resolve(self, target: str, source: str, page: str, image: bool) -> str:
        "The link `target`, written in repository file `source`, as seen from site page `page`."
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target) or target.startswith(("#", "//")):
            return target
        path, hash_, frag = target.partition("#")
        path = path.split("?", 1)[0]
        repo = posixpath.normpath(posixpath.join(posixpath.dirname(source), path))
        here = posixpath.dirname(page) or "."
        if repo.startswith("../") or repo == "..":
            self.broken.append((source, target))
            return target
        if repo in self.pages:
            return posixpath.relpath(self.pages[repo], here) + hash_ + frag
        f = ROOT / repo
        if (
            image and f.is_file()
        ):  # an image is copied in, tracked or not (published figures are ignored)
            rel = f"_assets/{repo}"
            self.copy(f, rel)
            return posixpath.relpath(rel, here)
        if f.exists() and self.tracked(repo):
            return (self.tree if f.is_dir() else self.blob) + repo + hash_ + frag
        self.broken.append((source, target))
        return target

    def rewrite(self, text: str, source: str, page: str) -> str:
        "Markdown `text` from repository file `source`, its links rewritten for site page `page`."
        out, fence = [], None
        for line in text.splitlines(keepends=True):
            m = _FENCE.match(line)
            if fence:
                out.append(line)
                if m and m.group(1)[0] == fence[0] and len(m.group(1)) >= len(fence):
                    fence = None
                continue
            if m:
                fence = m.group(1)
                out.append(line)
                continue
            out.append(self._rewrite_line(line, source, page))
        return "".join(out)

    def _rewrite_line(self, line: str, source: str, page: str) -> str:
        spans = []

        def hold(m):
            spans.append(m.group(0))
            return f"\x00{len(spans) - 1}\x00"

        line = _CODE_SPAN.sub(hold, line)
        line = _LINK.sub(
            lambda m: (
                f"{m.group(1)}[{m.group(2)}]({self.resolve(m.group(3), source, page, bool(m.group(1)))}{m.group(4)})"
            ),
            line,
        )
        line = _HTML.sub(
            lambda m: (
                m.group(1)
                + m.group(2)
                + self.resolve(
                    m.group(3), source, page, m.group(0).lower().startswith(("<img", "<source"))
                )
                + m.group(2)
            ),
            line,
        )
        return re.sub("\x00(\\d+)\x00", lambda m: spans[int(m.group(1))], line)


# --- pages -------------------------------------------------------------------------------------


def title_of(text: str, fallback: str) -> str:
    for line in text.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def with_title(text: str, title: str) -> str:
    "The text with a `# title` first heading when it has none (Sphinx needs one per page)."
    return text if any(l.startswith("# ") for l in text.splitlines()) else f"# {title}\n\n{text}"


def notebook(site: Site, source: Path, repo_path: str, page: str, note: str | None):
    """Stage one notebook: links rewritten, `note` (MyST markdown) placed under its title, `#| hide`
    cells removed from the page, widget outputs (no state in a saved file) reduced to their text."""
    nb = json.loads(source.read_text(encoding="utf-8"))
    nb.get("metadata", {}).pop("widgets", None)
    cells = nb.get("cells", [])
    for c in cells:
        text = "".join(c.get("source", []))
        if c["cell_type"] == "markdown":
            c["source"] = site.rewrite(text, repo_path, page)
        elif c["cell_type"] == "code":
            if re.match(r"^\s*#\s*\|\s*hide\b", text):
                tags = c.setdefault("metadata", {}).setdefault("tags", [])
                tags.append("remove-cell")
            outs = []
            for o in c.get("outputs", []):
                data = o.get("data")
                if data and WIDGET in data:
                    data.pop(WIDGET)
                    if not data:
                        continue
                outs.append(o)
            c["outputs"] = outs
    first = cells[0] if cells else None
    has_title = (
        first is not None
        and first["cell_type"] == "markdown"
        and "".join(first["source"]).lstrip().startswith("# ")
    )
    if not has_title:
        title = Path(repo_path).stem.replace("_", " ")
        cells.insert(0, {"cell_type": "markdown", "metadata": {}, "source": f"# {title}\n"})
    if note:
        head, _, rest = "".join(cells[0]["source"]).lstrip().partition("\n")
        cells[0]["source"] = f"{head}\n\n{note}\n\n{rest}"
    site.pages.setdefault(repo_path, page)
    site.write(page, json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def completed(nb_path: Path) -> dict | None:
    "papermill's record of an executed notebook when it ran to the end without an exception, else None."
    try:
        pm = json.loads(nb_path.read_text(encoding="utf-8"))["metadata"].get("papermill", {})
    except (OSError, ValueError, KeyError):
        return None
    return pm if pm.get("end_time") and not pm.get("exception") else None


def shown(path: Path) -> str:
    "A path as a reader would type it: relative to the repository when inside it."
    path = Path(path).resolve()
    return path.relative_to(ROOT).as_posix() if ROOT in path.parents else str(path)


def run_note(run_dir: Path, pm: dict) -> str:
    summary = {}
    try:
        summary = json.loads((run_dir / "summary.json").read_text()).get("pipeline", {})
    except (OSError, ValueError):
        pass
    rel = shown(run_dir)
    ident = f", run id `{summary['run_id']}`" if summary.get("run_id") else ""
    text = (
        f":::{{note}}\nThe outputs below are those of the run `{rel}`{ident}, executed by papermill "
        f"(finished {pm['end_time'][:19].replace('T', ' ')} UTC). `python3 tools/quickstart.py demo` "
        "makes the run; `python tools/build_docs.py` rebuilds this page from it.\n:::"
    )
    if summary.get("quick"):
        text += (
            "\n\n:::{warning}\nThis is a `--quick` smoke run: "
            + summary.get("quick_warning", "its numbers mean nothing.")
            + "\n:::"
        )
    return text


def not_run_note(run_dirs: list, stem: str) -> str:
    rel = " or ".join(f"`{shown(r / 'notebooks' / f'{stem}.ipynb')}`" for r in run_dirs)
    return (
        f":::{{warning}}\nNot executed: no completed {rel} was found when this site was built, so the "
        "code is shown without its outputs. Run `python3 tools/quickstart.py demo` (the comparison "
        "chapter: `spectra_ml run --name compare --compare`), then `python tools/build_docs.py --run "
        "runs/<name>`.\n:::"
    )


def modules() -> list:
    "`(module name, its file, first docstring line)` for every module of the package, the package first."
    pkg = ROOT / settings().get("lib_path", "spectra_ml")
    out = []
    for f in sorted(pkg.rglob("*.py")):
        rel = f.relative_to(pkg.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "_modidx" or "__pycache__" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
            if len(parts) > 1:  # a subpackage's __init__ holds nothing to document
                continue
        doc = ast.get_docstring(ast.parse(f.read_text(encoding="utf-8"))) or ""
        out.append((".".join(parts), f, doc.strip().splitlines()[0] if doc.strip() else ""))
    return sorted(out, key=lambda m: (m[0].count(".") > 0, m[0]))


def module_rst(name: str, path: Path) -> str:
    """The module's docstring, then each name of its `__all__` in order: functions and classes (with their
    methods) in full, constants with their description and no value in the heading (a long table's repr
    would bury it; the docments extension adds short values below)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    public, kinds = None, {}
    for n in tree.body:
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
            kinds[n.name] = "autofunction"
        elif isinstance(n, ast.ClassDef):
            kinds[n.name] = "autoclass"
        elif isinstance(n, (ast.Assign, ast.AnnAssign)):
            for tgt in n.targets if isinstance(n, ast.Assign) else [n.target]:
                if isinstance(tgt, ast.Name):
                    if tgt.id == "__all__":
                        public = ast.literal_eval(n.value)
                    else:
                        kinds.setdefault(tgt.id, "autodata")
    if public is None:  # no __all__: autodoc's own choice of members
        return f"```{{eval-rst}}\n.. automodule:: {name}\n```\n"
    rst = [f".. automodule:: {name}", "   :no-members:", ""]
    for p in public:
        kind = kinds.get(p, "autodata")
        rst += (
            [f".. {kind}:: {name}.{p}"] + (["   :no-value:"] if kind == "autodata" else []) + [""]
        )
    return "```{eval-rst}\n" + "\n".join(rst).rstrip() + "\n```\n"


def package_page(name: str, init: Path) -> str:
    "The package's page: its docstring, each function it defines, and where each lazily imported name lives."
    tree = ast.parse(init.read_text(encoding="utf-8"))
    defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))}
    public, lazy = [], {}
    for n in tree.body:
        if isinstance(n, ast.Assign) and len(n.targets) == 1 and isinstance(n.targets[0], ast.Name):
            if n.targets[0].id == "__all__":
                public = ast.literal_eval(n.value)
            elif n.targets[0].id == "_LAZY":
                lazy = ast.literal_eval(n.value)
    rst = [f".. automodule:: {name}", "   :no-members:", ""]
    rst += [f".. autofunction:: {name}.{p}" if p in defined else "" for p in public if p in defined]
    text = "```{eval-rst}\n" + "\n".join(rst).rstrip() + "\n```\n"
    moved = [f"`{name}.{p}` is {{py:obj}}`{lazy[p]}.{p}`" for p in public if p in lazy]
    if moved:
        text += "\n" + "; ".join(moved) + " (imported on first use).\n"
    return text


def module_notebooks() -> dict:
    "`{module name: notebook path}` from each notebook's `#| default_exp`."
    lib = settings().get("lib_name", "spectra_ml")
    out = {}
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        try:
            cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        except (OSError, ValueError, KeyError):
            continue
        for c in cells:
            m = re.search(r"^#\s*\|\s*default_exp\s+(\S+)", "".join(c.get("source", [])), re.M)
            if c["cell_type"] == "code" and m:
                out[f"{lib}.{m.group(1)}"] = nb.relative_to(ROOT).as_posix()
                break
    return out


def stage(site: Site, run_dirs: list) -> dict:
    "Lay every page out in the staging folder; returns what the landing page lists."
    lib = settings().get("lib_path", "spectra_ml")
    # 1. which repository file is which page (links are rewritten against this map)
    docs = sorted((ROOT / "docs").glob("*.md"))
    order = {n: i for i, n in enumerate(GUIDE_ORDER)}
    docs.sort(key=lambda p: (order.get(p.stem, len(order)), p.stem))
    site.pages["README.md"] = "index.md"
    site.pages["nbs/index.ipynb"] = "index.md"
    for p in docs:
        site.pages[f"docs/{p.name}"] = p.name
        if (ROOT / "nbs" / "docs" / f"{p.stem}.ipynb").exists():
            site.pages[f"nbs/docs/{p.stem}.ipynb"] = p.name
    bench = ROOT / "benchmarks" / "README.md"
    if bench.exists():
        site.pages["benchmarks/README.md"] = "benchmarks.md"
    chapters = sorted((ROOT / "nbs" / "chapters").glob("*.ipynb"))
    for c in chapters:
        site.pages[f"nbs/chapters/{c.name}"] = f"chapters/{c.name}"
    tutorials = sorted((ROOT / "nbs" / "tutorials").glob("*.ipynb"))
    for t in tutorials:
        site.pages[f"nbs/tutorials/{t.name}"] = f"tutorials/{t.name}"
    cards = sorted((ROOT / lib / "released").glob("*/card.md"))
    for c in cards:
        site.pages[c.relative_to(ROOT).as_posix()] = f"released/{c.parent.name}.md"
    mods = modules()
    for name, f, _ in mods:
        site.pages[f.relative_to(ROOT).as_posix()] = f"api/{name}.md"
    nbs_of = module_notebooks()
    for name, nb in nbs_of.items():
        site.pages.setdefault(nb, f"api/{name}.md")

    # 2. the pages
    for p in docs:
        site.write(p.name, site.rewrite(p.read_text(encoding="utf-8"), f"docs/{p.name}", p.name))
    if bench.exists():
        site.write(
            "benchmarks.md",
            site.rewrite(
                bench.read_text(encoding="utf-8"), "benchmarks/README.md", "benchmarks.md"
            ),
        )

    executed = {}  # chapter -> the run that shows it
    for c in chapters:
        for run_dir in run_dirs:
            pm = completed(run_dir / "notebooks" / c.name)
            if pm:
                note = run_note(run_dir, pm)
                notebook(
                    site,
                    run_dir / "notebooks" / c.name,
                    f"nbs/chapters/{c.name}",
                    f"chapters/{c.name}",
                    note,
                )
                executed[c.stem] = shown(run_dir)
                break
        else:
            note = not_run_note(run_dirs, c.stem)
            notebook(site, c, f"nbs/chapters/{c.name}", f"chapters/{c.name}", note)
    runs = ", ".join(f"`{r}`" for r in dict.fromkeys(executed.values())) or "none"
    status = (
        f"{len(executed)} of {len(chapters)} chapters are shown with the outputs of a run ({runs}); "
        + (
            "the others were not run to completion in "
            + ", ".join(f"`{shown(r)}`" for r in run_dirs)
            + " and are shown without outputs; each page says which."
            if len(executed) < len(chapters)
            else "each page names its run."
        )
    )
    site.write(
        "chapters/index.md",
        "# The demo run's chapters\n\n"
        "The pipeline is a sequence of notebooks (`nbs/chapters/`), each run by papermill with the run's "
        "parameters into `runs/<name>/notebooks/`: the executed notebook is the readable record of its "
        "stage, every table and figure inline. "
        + status
        + "\n\n```{toctree}\n:maxdepth: 1\n\n"
        + "".join(f"{c.stem}\n" for c in chapters)
        + "```\n",
    )

    for t in tutorials:
        stored = any(
            c.get("outputs")
            for c in json.loads(t.read_text(encoding="utf-8"))["cells"]
            if c["cell_type"] == "code"
        )
        note = (
            None
            if stored
            else (
                ":::{note}\nShown as stored in `nbs/tutorials/`, without outputs: open it in Jupyter "
                "(`jupyter lab " + f"nbs/tutorials/{t.name}`) and run it to see them.\n:::"
            )
        )
        notebook(site, t, f"nbs/tutorials/{t.name}", f"tutorials/{t.name}", note)

    for c in cards:
        name = c.parent.name
        rel = c.relative_to(ROOT).as_posix()
        text = with_title(c.read_text(encoding="utf-8"), f"Model card: {name}")
        site.write(f"released/{name}.md", site.rewrite(text, rel, f"released/{name}.md"))
    summary = ROOT / lib / "released" / "models.md"  # the releases' test metrics side by side
    summary_rel = summary.relative_to(ROOT).as_posix()
    site.write(
        "released/index.md",
        "# Released models\n\n"
        + (
            "Each released model ships inside the package (`spectra_ml/released/<name>/`: weights, JSON and "
            "its card); `spectra_ml models` lists them and `spectra_ml models show NAME` prints a card.\n\n"
            + (
                site.rewrite(summary.read_text(encoding="utf-8"), summary_rel, "released/index.md")
                + "\n"
                if summary.exists()
                else ""
            )
            + "```{toctree}\n:maxdepth: 1\n\n"
            + "".join(f"{c.parent.name}\n" for c in cards)
            + "```\n"
            if cards
            else "No released model is in this build: `spectra_ml/released/` holds no model card.\n"
        ),
    )

    api_pages = {"library": [], "analysis": []}
    for name, f, first in mods:
        page = f"api/{name}.md"
        layer = "analysis" if re.match(rf"{lib}\.(kane|studies)\b", name) else "library"
        api_pages[layer].append(name)
        nb = nbs_of.get(name)
        src = (
            f"[`{nb}`]({site.blob}{nb})"
            if nb
            else f"[`{f.relative_to(ROOT).as_posix()}`]({site.blob}{f.relative_to(ROOT).as_posix()})"
        )
        if name == lib:
            body = f"The package's public names. Source: {src}.\n\n" + package_page(name, f)
        else:
            body = (
                f"Source: {src} (the notebook is the source; the module is exported from it).\n\n"
                + (module_rst(name, f))
            )
        site.write(page, f"# `{name}`\n\n{body}")
    site.write(
        "api/index.md",
        "# API reference\n\n"
        "From the library's docstrings and docments: the comment written after each parameter in the "
        "notebooks is that parameter's description here. The library turns XP spectra into labels with "
        "σ and knows no paper's analysis; the analysis modules are Kane et al.'s paper and the studies "
        "beside it.\n\n"
        + "".join(
            f"```{{toctree}}\n:caption: {cap}\n:maxdepth: 1\n\n"
            + "".join(f"{n}\n" for n in api_pages[k])
            + "```\n\n"
            for k, cap in (("library", "Library"), ("analysis", "Analysis"))
            if api_pages[k]
        )
        + "| module | what it holds |\n|---|---|\n"
        + "".join(f"| [`{n}`]({n}.md) | {first.replace('|', '/')} |\n" for n, _, first in mods),
    )
    return {
        "docs": docs,
        "bench": bench.exists(),
        "tutorials": tutorials,
        "cards": cards,
        "executed": executed,
    }


def landing(site: Site, got: dict):
    "index.md: the README (getting started), then what the site holds and the navigation."
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    names = [p.stem for p in got["docs"]]
    titles = {p.stem: title_of(p.read_text(encoding="utf-8"), p.stem) for p in got["docs"]}
    lines = ["", "## On this site", "", "- **Getting started**: this page, the README."]
    guide = [n for n in names if n not in ("developing",)]
    if guide:
        lines.append("- **Guide**: " + "; ".join(f"[{titles[n]}]({n}.md)" for n in guide) + ".")
    if "running" in names:
        lines.append(
            "- **What happens when…** something is missing or wrong: [in Running](running.md#what-happens-when)."
        )
    if got["tutorials"]:
        lines.append(
            "- **Tutorial**: "
            + "; ".join(f"[{title_of_nb(t)}](tutorials/{t.name})" for t in got["tutorials"])
            + "."
        )
    lines.append(
        f"- **The demo run's chapters**, with their outputs: [chapters](chapters/index.md) "
        f"({len(got['executed'])} executed)."
    )
    lines.append(
        "- **Released models**: [their model cards](released/index.md)"
        + (f" ({len(got['cards'])})." if got["cards"] else " (none in this build).")
    )
    scale = next((n for n in names if n.startswith("scal")), None)  # scale.md, scaling.md
    if scale:
        lines.append(
            f"- **The route to scale**: [{titles[scale]}]({scale}.md)"
            + ("; measured rates in [the benchmarks](benchmarks.md)." if got["bench"] else ".")
        )
    elif got["bench"]:
        lines.append(
            "- **The route to scale**: [the benchmarks](benchmarks.md) (rates, memory, and the Dask / SLURM recipe)."
        )
    lines.append("- **API reference**, from the docstrings and docments: [API](api/index.md).")
    if "developing" in names:
        lines.append(f"- **Developing**: [{titles['developing']}](developing.md).")
    toc = [
        (
            "Guide",
            [n for n in names if n != "developing"]
            + [f"tutorials/{t.stem}" for t in got["tutorials"]],
        ),
        ("The demo run", ["chapters/index"]),
        ("Models", ["released/index"]),
        (
            "Reference",
            (["benchmarks"] if got["bench"] else [])
            + ["api/index"]
            + (["developing"] if "developing" in names else []),
        ),
    ]
    for cap, entries in toc:
        if entries:
            lines += ["", f"```{{toctree}}\n:hidden:\n:caption: {cap}\n", *entries, "```"]
    site.write(
        "index.md",
        site.rewrite(readme, "README.md", "index.md").rstrip() + "\n" + "\n".join(lines) + "\n",
    )


def title_of_nb(path: Path) -> str:
    for c in json.loads(path.read_text(encoding="utf-8"))["cells"]:
        if c["cell_type"] == "markdown":
            return title_of("".join(c["source"]), path.stem)
    return path.stem


def build(out: Path, run_dirs: list, jobs: int = 1, quiet: bool = True) -> dict:
    "Stage and build; returns the numbers the command prints (pages, warnings, broken links, seconds)."
    t0 = time.time()
    src, html = out / "src", out / "html"
    src.mkdir(parents=True, exist_ok=True)
    site = Site(src)
    shutil.copyfile(SITE / "conf.py", src / "conf.py")
    if (src / "_ext").exists():
        shutil.rmtree(src / "_ext")
    shutil.copytree(SITE / "_ext", src / "_ext", ignore=shutil.ignore_patterns("__pycache__"))
    got = stage(site, [Path(r) for r in run_dirs])
    landing(site, got)
    site.prune()
    warnings = out / "warnings.txt"
    env = dict(
        os.environ,
        SPECTRA_ML_SETTINGS=str(ROOT / "settings.ini"),
        PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        ),
        MPLBACKEND="Agg",
    )
    cmd = [
        sys.executable,
        "-m",
        "sphinx",
        "-b",
        "html",
        "-d",
        str(out / "doctrees"),
        "-w",
        str(warnings),
    ]
    cmd += ["-j", str(jobs)] + (["-q"] if quiet else []) + [str(src), str(html)]
    r = subprocess.run(cmd, env=env, cwd=ROOT)
    text = warnings.read_text(encoding="utf-8") if warnings.exists() else ""
    lines = [l for l in text.splitlines() if "WARNING" in l or "ERROR" in l]
    broken = [l for l in lines if any(b in l for b in BROKEN)]
    broken += [f"{s}: link to {t} leads to no file of the repository" for s, t in site.broken]
    pages = sorted(
        p.relative_to(html).as_posix()
        for p in html.rglob("*.html")
        if not p.relative_to(html).parts[0].startswith("_")
    )
    return {
        "returncode": r.returncode,
        "pages": pages,
        "warnings": lines,
        "broken": broken,
        "seconds": time.time() - t0,
        "html": html,
        "warnings_file": warnings,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--run",
        action="append",
        default=None,
        help="a run whose executed chapters are shown, repeatable: each chapter from the first run that "
        "completed it (default: runs/demo, then runs/compare)",
    )
    ap.add_argument(
        "--out", default="_build/docs", help="build folder: src/ (staged pages), html/ (the site)"
    )
    ap.add_argument("--jobs", type=int, default=1, help="Sphinx processes (default 1)")
    ap.add_argument("--verbose", action="store_true", help="Sphinx's own progress output")
    a = ap.parse_args(argv)
    out = (ROOT / a.out) if not Path(a.out).is_absolute() else Path(a.out)
    runs = [ROOT / r if not Path(r).is_absolute() else Path(r) for r in a.run or DEFAULT_RUNS]
    r = build(out, runs, a.jobs, quiet=not a.verbose)
    for l in r["broken"]:
        print("BROKEN:", l, file=sys.stderr)
    print(
        f"docs: {len(r['pages'])} pages in {r['seconds']:.0f} s -> {r['html'] / 'index.html'}; "
        f"{len(r['warnings'])} Sphinx warnings ({r['warnings_file']}), {len(r['broken'])} broken links or images"
    )
    if r["returncode"] != 0:
        print(f"sphinx-build failed (exit {r['returncode']})", file=sys.stderr)
        return 1
    return 1 if r["broken"] else 0


if __name__ == "__main__":
    sys.exit(main())
