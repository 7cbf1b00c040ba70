"""Sphinx configuration of the docs site: MyST markdown and the notebooks' stored outputs (myst-nb), with
an API reference from the library's docstrings and docments.

Do not run sphinx-build on this folder directly: `python tools/build_docs.py` lays the pages out (README,
docs/*.md, the executed chapters, the tutorial, the model cards, the API pages) in a staging folder beside
this file's copy, and builds there, offline.
"""

from configparser import ConfigParser
import os
from pathlib import Path
import sys

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE / "_ext"))

# settings.ini (the nbdev settings) is the one place the project's name, author and URL live;
# build_docs.py passes its path in the environment of the build.
_ini = ConfigParser(delimiters=["="])
_ini.read(os.environ.get("SPECTRA_ML_SETTINGS", HERE / "settings.ini"), encoding="utf-8")
_c = _ini["DEFAULT"]

project = _c.get("title", "spectra_ml")
author = _c.get("author", "")
copyright = _c.get("copyright", "")
release = version = _c.get("version", "")
_git_url = _c.get("git_url", "")

extensions = [
    "myst_nb",  # MyST markdown and .ipynb pages (it loads myst_parser itself)
    "sphinx.ext.autodoc",
    "docments",  # the comment after each parameter, as the parameter's description (_ext/docments.py)
]

# --- notebooks: never executed here; the pages show the outputs stored in the .ipynb files ---
nb_execution_mode = "off"
nb_merge_streams = True  # one block per stream, not one per print
# widget outputs (tqdm bars) have no state in a saved notebook: their text/plain form is shown instead
nb_mime_priority_overrides = [("html", "application/vnd.jupyter.widget-view+json", None)]

# --- MyST ---
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3  # [x](running.md#what-happens-when) resolves to the heading
suppress_warnings = [
    "myst.header",  # the generated pages start some sections one level deeper than the last
]

# --- autodoc ---
# build_docs.py lists each module's __all__ (constants with :no-value:; short values go below their
# description, _ext/docments.py); a class's methods, nbdev's @patch ones included, in source order
autodoc_default_options = {"members": True, "member-order": "bysource"}
autodoc_typehints = "signature"
autodoc_inherit_docstrings = False  # torch.nn.Module.forward's reST docstring is not ours
autodoc_preserve_defaults = True  # defaults as written (DEFAULT_SEED, not 42)
default_role = "code"  # `name` in a docstring is code, as in the notebooks' markdown

# --- HTML: everything the pages need is in the build folder (no CDN, no web fonts) ---
html_theme = "pydata_sphinx_theme"
html_title = f"{project} {version}"
html_theme_options = {
    "navigation_with_keys": False,
    "show_toc_level": 2,
    "icon_links": [{"name": "Source", "url": _git_url, "icon": "fa-brands fa-github"}]
    if _git_url
    else [],
}
html_static_path = []
html_show_sourcelink = (
    False  # the sources are the repository's notebooks and markdown, linked from each page
)
html_last_updated_fmt = None
smartquotes_action = "qe"  # quotes and ellipses only: `--quick` and `-p` stay as typed
exclude_patterns = ["_build", "**.ipynb_checkpoints", "_ext"]
