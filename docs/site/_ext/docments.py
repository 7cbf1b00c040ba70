"""Sphinx extension for an nbdev library: its docstrings are markdown, and each parameter is described by
the comment after it in the signature (a docment), as nbdev's `show_doc` renders them.

- Each docstring (module, function, class, constant) is read as markdown: code spans stay code, lists
  stay lists, fenced blocks become code blocks, and every other character is literal (no reST markup
  in plain prose: `flux_` or `a*b` print as written).
- A constant's value is shown below its description when it is short.
- Each function, method and class gets a parameter list from `fastcore.docments.docments`: each
  parameter with its docment (the signature above it shows the defaults), and the return's docment
  where one is written.
"""

from __future__ import annotations

import re

_CODE = re.compile(r"(`+)(.+?)\1")
_ITEM = re.compile(r"^([-*+]|\d+[.)])\s+")
_SPECIAL = re.compile(r"([\\*_|`])")


def _plain(text: str) -> str:
    "Markdown prose as reST in which nothing is markup."
    return _SPECIAL.sub(r"\\\1", text)


def inline(text: str) -> str:
    "One line of markdown as reST: code spans as inline literals, everything else literal."
    out, pos = [], 0
    for m in _CODE.finditer(text):
        out.append(_plain(text[pos : m.start()]))
        code = m.group(2).strip()
        if not code or "``" in code:
            out.append(_plain(m.group(0)))
        else:
            before = text[m.start() - 1] if m.start() else " "
            after = text[m.end()] if m.end() < len(text) else " "
            # an inline literal must stand apart from word characters: `\ ` joins without a space
            out.append(
                ("\\ " if before.isalnum() else "")
                + f"``{code}``"
                + ("\\ " if after.isalnum() else "")
            )
        pos = m.end()
    out.append(_plain(text[pos:]))
    return "".join(out)


def markdown_lines(lines: list) -> list:
    "A docstring's markdown lines as reST lines: paragraphs, bullet and numbered lists, fenced code."
    out, indent, fence = [], 0, None
    for raw in lines:
        s = raw.strip()
        if fence is not None:
            if s.startswith(fence):
                out.append("")
                fence = None
            else:
                out.append("   " + raw)
            continue
        if s.startswith("```") or s.startswith("~~~"):
            fence = s[:3]
            lang = s[3:].strip() or "text"
            out += ["", f".. code-block:: {lang}", ""]
            indent = 0
            continue
        if not s:
            out.append("")
            indent = 0
            continue
        m = _ITEM.match(s)
        if m:
            if out and out[-1] != "" and not indent:
                out.append("")  # a list needs a blank line before it
            bullet = "-" if m.group(1) in "-*+" else "#."
            out.append(f"{bullet} {inline(s[m.end() :])}")
            indent = len(bullet) + 1
        else:
            out.append(" " * indent + inline(s))
    if fence is not None or indent:
        out.append("")
    return out


def docment_fields(obj) -> list:
    "`:param name: docment` lines for `obj`'s parameters that carry a docment (fastcore's reader)."
    try:
        from fastcore.docments import docments

        d = docments(obj, full=True)
    except Exception:  # a builtin, a C extension, a class without a readable __init__
        return []
    lines = []
    for name, info in d.items():
        doc = info.get("docment") if isinstance(info, dict) else None
        if name in ("self", "cls") or not doc:
            continue
        if name == "return":
            lines.append(f":returns: {inline(doc)}")
        else:
            lines.append(f":param {name}: {inline(doc)}")
    return lines


#: A constant's value is shown under its description when its repr is at most this long (conf.py sets
#: autodoc's `no-value`: a long table's repr in the heading hides the description).
VALUE_CHARS = 100


def value_line(obj) -> list:
    "`Value: ``repr``` for a short constant; nothing for a long one (its notebook shows it)."
    try:
        text = repr(obj)
    except Exception:
        return []
    if len(text) > VALUE_CHARS or "\n" in text or "``" in text or text.startswith("<"):
        return []
    return ["", f"Value: ``{text}``"]


def _words(text: str) -> str:
    return " ".join(text.split())


def process_docstring(app, what, name, obj, options, lines):
    "autodoc-process-docstring: markdown to reST, then the docments as the parameter list."
    source = list(lines)
    if what in ("data", "attribute") and _words("\n".join(source)) == _words(
        type(obj).__doc__ or ""
    ):
        source = []  # a constant without a `#:` comment: autodoc fell back to its type's docstring
    converted = markdown_lines(source)
    if what in ("data", "attribute"):
        converted += value_line(obj)
    if what in ("function", "method", "class", "staticmethod", "classmethod"):
        fields = docment_fields(obj)
        if fields:
            converted += ([""] if converted and converted[-1] != "" else []) + fields
    lines[:] = converted


def setup(app):
    app.connect("autodoc-process-docstring", process_docstring)
    return {"version": "1.0", "parallel_read_safe": True, "parallel_write_safe": True}
