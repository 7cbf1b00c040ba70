#!/usr/bin/env python3
"""Maintenance helpers for the notebooks (not part of the library).

    python tools/nbtools.py split NB.ipynb [...]   # one definition (or a small family) per export cell
    python tools/nbtools.py stats                  # export cells, their sizes, stage cells per notebook

`split` cuts each `#| export` cell at its top-level definitions: a private helper (`_name`) and the
constants and imports just before a definition stay with it, so a cell holds one public definition
and what only it needs. Cell ids are kept for the first piece and derived for the others.
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: `split` cuts a group further when it is longer than this
MAX_LINES = 60


def _directives(lines):
    n = 0
    while n < len(lines) and lines[n].startswith("#|"):
        n += 1
    return lines[:n], lines[n:]


def split_source(src: str) -> list[str]:
    "Split one export cell's source into pieces, one public definition each."
    lines = src.splitlines()
    head, body = _directives(lines)
    text = "\n".join(body)
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return [src]
    nodes = tree.body
    if sum(isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) for n in nodes) < 2:
        return [src]
    groups, cur = [], []
    for n in nodes:
        cur.append(n)
        is_def = isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        if is_def and not n.name.startswith("_"):
            groups.append(cur)
            cur = []
    if cur:
        if groups:
            groups[-1].extend(cur)
        else:
            groups.append(cur)
    # a group still over MAX_LINES is cut at each of its definitions
    out = []
    for g in groups:
        n = g[-1].end_lineno - g[0].lineno + 1
        defs = [
            k
            for k, x in enumerate(g)
            if isinstance(x, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
        ]
        if n <= MAX_LINES or len(defs) < 2:
            out.append(g)
            continue
        cuts = [0] + [
            k
            for k in defs[1:]
            if not any(
                isinstance(y, (ast.FunctionDef, ast.ClassDef))
                for y in g[defs[defs.index(k) - 1] + 1 : k]
            )
            or True
        ]
        start = 0
        for k in defs[1:]:
            j = k
            while j > start and not isinstance(
                g[j - 1], (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)
            ):
                j -= 1
            out.append(g[start:j])
            start = j
        out.append(g[start:])
    groups = [g for g in out if g]
    if any(isinstance(n, (ast.Import, ast.ImportFrom)) for n in groups[0]) and len(groups) > 1:
        pass
    starts = []
    for g in groups:
        first = g[0]
        line = min([first.lineno] + [d.lineno for d in getattr(first, "decorator_list", [])])
        starts.append(line - 1)
    starts[0] = 0
    # comments and blank lines just above a group's first statement belong to it
    for k in range(1, len(starts)):
        s = starts[k]
        while s > 0 and (body[s - 1].strip().startswith("#") or not body[s - 1].strip()):
            s -= 1
        starts[k] = max(s, starts[k - 1] + 1)
    ends = starts[1:] + [len(body)]
    pieces = []
    for a, b in zip(starts, ends):
        chunk = "\n".join(body[a:b]).strip("\n")
        if chunk:
            pieces.append("\n".join(head + [chunk]))
    return pieces


def _cell_id(base: str, k: int) -> str:
    return hashlib.sha1(f"{base}-{k}".encode()).hexdigest()[:8]


def split_notebook(path: Path) -> int:
    nb = json.loads(path.read_text())
    out, n_new = [], 0
    for c in nb["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] != "code" or not src.lstrip().startswith("#| export"):
            out.append(c)
            continue
        pieces = split_source(src)
        for k, p in enumerate(pieces):
            d = json.loads(json.dumps(c))
            d["source"] = p.splitlines(keepends=True)
            d["outputs"] = []
            d["execution_count"] = None
            if k:
                d["id"] = _cell_id(c.get("id", "x"), k)
                n_new += 1
            out.append(d)
    nb["cells"] = out
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
    return n_new


def stage_cells(nb_path: Path):
    "The sources of a notebook's stage cells: code after its `## Stage` heading, not `parameters`, not exported."
    stage = False
    for c in json.loads(Path(nb_path).read_text())["cells"]:
        src = "".join(c["source"])
        if c["cell_type"] == "markdown" and re.match(r"##\s+Stage\b", src.lstrip()):
            stage = True
        tags = c.get("metadata", {}).get("tags", [])
        exported = src.lstrip().startswith("#| export")
        if stage and c["cell_type"] == "code" and "parameters" not in tags and not exported:
            yield src


def stats():
    for nb in sorted((ROOT / "nbs").rglob("*.ipynb")):
        cells = json.loads(nb.read_text())["cells"]
        exp = ["".join(c["source"]) for c in cells if c["cell_type"] == "code"]
        exp = [s for s in exp if s.lstrip().startswith("#| export")]
        st = [
            sum(1 for ln in src.splitlines() if ln.strip() and not ln.strip().startswith("#"))
            for src in stage_cells(nb)
        ]
        big = max((len(s.splitlines()) for s in exp), default=0)
        print(f"{nb.name:24} export cells {len(exp):3}  largest {big:4}  stage cells {st}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "split":
        for a in args:
            print(a, split_notebook(Path(a)), "new cells")
    elif cmd == "stats":
        stats()
