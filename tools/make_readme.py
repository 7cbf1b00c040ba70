#!/usr/bin/env python3
"""Write README.md from nbs/index.ipynb (the nbdev readme_nb).

`nbdev_readme` does the same through Quarto, which is a separate binary download; this uses
nbconvert, which the project already depends on, so it runs anywhere the project installs.

    python tools/make_readme.py           # write README.md
    python tools/make_readme.py --check   # exit 1 if README.md is out of date
"""

import sys
from pathlib import Path

import nbformat
from nbconvert import MarkdownExporter

ROOT = Path(__file__).resolve().parent.parent
HEADER = "<!-- Generated from nbs/index.ipynb by tools/make_readme.py: edit the notebook, not this file. -->\n\n"


def render() -> str:
    nb = nbformat.read(ROOT / "nbs" / "index.ipynb", as_version=4)
    nb.cells = [
        c for c in nb.cells if not c.source.lstrip().startswith("#|")
    ]  # drop nbdev directive cells
    body, _ = MarkdownExporter(
        exclude_output_prompt=True, exclude_input_prompt=True
    ).from_notebook_node(nb)
    return HEADER + body.strip() + "\n"


def main(argv):
    text, out = render(), ROOT / "README.md"
    if "--check" in argv:
        if not out.exists() or out.read_text() != text:
            print("README.md is out of date: run python tools/make_readme.py", file=sys.stderr)
            return 1
        return 0
    out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
