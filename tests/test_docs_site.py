"""The docs site: `python tools/build_docs.py` builds it offline from the repository's files, and headless
Chromium opens the index and every page, following each internal link and loading each image.

The link rewriting of the build is checked on its own first (fast); the build and the browser are slow."""

import html
import http.server
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import load_tool

ROOT = Path(__file__).resolve().parent.parent


def _chromium():
    return (
        shutil.which("chromium")
        or shutil.which("chromium-browser")
        or shutil.which("google-chrome")
    )


# --- the link rewriting (no Sphinx, no browser) -------------------------------------------------


def test_links_between_repository_files_become_links_between_pages(tmp_path):
    bd = load_tool("build_docs")
    site = bd.Site(tmp_path)
    site.pages.update({"README.md": "index.md", "docs/running.md": "running.md"})
    site.pages["nbs/chapters/09_inference.ipynb"] = "chapters/09_inference.ipynb"
    text = (
        "See [running](running.md#what-happens-when), [the chapter](../nbs/chapters/09_inference.ipynb), "
        "[back](../README.md), [the tool](../tools/quickstart.py), [nowhere](gone.md) and "
        "[the web](https://example.org/x.md).\n"
        "```bash\n[not a link](running.md)\n```\n"
        "Code `[x](gone_too.md)` stays.\n"
    )
    out = site.rewrite(text, "docs/results.md", "results.md")
    assert "[running](running.md#what-happens-when)" in out
    assert "[the chapter](chapters/09_inference.ipynb)" in out
    assert "[back](index.md)" in out
    assert (
        f"[the tool]({site.blob}tools/quickstart.py)" in out
    )  # a file that is no page: the repository
    assert "[the web](https://example.org/x.md)" in out
    assert "```bash\n[not a link](running.md)\n```" in out  # code is not rewritten
    assert "`[x](gone_too.md)`" in out
    assert site.broken == [("docs/results.md", "gone.md")]  # the one real broken link is named

    # seen from a page one folder down, the same targets are one folder up
    site.broken.clear()
    out = site.rewrite(
        "[r](../../docs/running.md) ![f](../../LICENSE)", "nbs/chapters/x.ipynb", "chapters/x.ipynb"
    )
    assert "[r](../running.md)" in out
    assert (tmp_path / "_assets" / "LICENSE").read_bytes() == (ROOT / "LICENSE").read_bytes()
    assert "![f](../_assets/LICENSE)" in out  # an image is copied into the site
    assert site.broken == []


def test_the_docments_extension_reads_markdown_and_parameter_comments():
    sys.path.insert(0, str(ROOT / "docs" / "site" / "_ext"))
    try:
        import docments as ext
    finally:
        sys.path.pop(0)

    def f(
        path,  # an XP file (`*.fits`), never flux_
        n: int = 3,  # how many
    ):
        "Read `path` as a table: flux_### columns, a*b."

    lines = ["Read `path` as a table: flux_### columns, a*b.", "", "- one", "  more", "- two"]
    ext.process_docstring(None, "function", "f", f, {}, lines)
    # code spans stay code; reST markup characters in prose are literal
    assert lines[0] == r"Read ``path`` as a table: flux\_### columns, a\*b."
    assert lines[2:5] == ["- one", "  more", "- two"]
    assert (
        ":param path: an XP file (\\ ``*.fits``), never flux\\_" not in lines
    )  # only after a word
    assert ":param path: an XP file (``*.fits``), never flux\\_" in lines
    assert ":param n: how many" in lines


# --- the build and the browser ------------------------------------------------------------------


def _executed_run(request) -> Path:
    """The run whose executed chapters the site shows: runs/demo when the demo has completed every stage
    here, else the session's quick run (a real run, labelled a smoke run on every chapter page)."""
    from spectra_ml.pipeline import DEMO_STAGES

    bd = load_tool("build_docs")
    demo = ROOT / "runs" / "demo"
    if all(bd.completed(demo / "notebooks" / f"{s}.ipynb") for s in DEMO_STAGES):
        return demo
    root, _ = request.getfixturevalue("quick_run")
    return root


@pytest.fixture(scope="module")
def built(tmp_path_factory, request):
    for mod in ("sphinx", "myst_nb", "pydata_sphinx_theme"):
        pytest.importorskip(
            mod, reason=f"the docs extra is not installed (pip install -e '.[docs]'): no {mod}"
        )
    run = _executed_run(request)
    out = tmp_path_factory.mktemp("docs")
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "tools" / "build_docs.py"),
            "--out",
            str(out),
            "--run",
            str(run),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=1200,
    )
    return out, r, run


@pytest.mark.slow
def test_the_docs_build_offline_with_every_part(built):
    out, r, run = built
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "0 broken links or images" in r.stdout
    site = out / "html"
    pages = {p.relative_to(site).as_posix() for p in site.rglob("*.html")}
    expected = {"index.html", "chapters/index.html", "released/index.html", "api/index.html"}
    expected |= {f"{p.stem}.html" for p in (ROOT / "docs").glob("*.md")}
    expected |= {f"chapters/{p.stem}.html" for p in (ROOT / "nbs" / "chapters").glob("*.ipynb")}
    expected |= {f"tutorials/{p.stem}.html" for p in (ROOT / "nbs" / "tutorials").glob("*.ipynb")}
    expected |= {
        f"released/{p.parent.name}.html"
        for p in (ROOT / "spectra_ml" / "released").glob("*/card.md")
    }
    bd = load_tool("build_docs")
    expected |= {f"api/{name}.html" for name, _, _ in bd.modules()}
    assert expected <= pages, sorted(expected - pages)
    # offline: no page loads a script, a style sheet or an image from the network
    for p in pages:
        text = (site / p).read_text(encoding="utf-8")
        for tag in ("<script", "<link", "<img"):
            for chunk in text.split(tag)[1:]:
                head = chunk.split(">", 1)[0]
                assert 'src="http' not in head and 'href="http' not in head, (p, head)
    # every chapter page says where its outputs come from: the run, or that it was not executed; the
    # run's stages are shown executed, with their figures
    from spectra_ml.pipeline import DEMO_STAGES

    for p in (ROOT / "nbs" / "chapters").glob("*.ipynb"):
        text = (site / "chapters" / f"{p.stem}.html").read_text(encoding="utf-8")
        assert ("executed by papermill" in text) != ("Not executed" in text), p.name
        assert ("executed by papermill" in text) == (p.stem in DEMO_STAGES), p.name
    # every figure the run's chapters drew is an image of the site
    drawn = {
        o["data"]["image/png"]
        if isinstance(o["data"]["image/png"], str)
        else "".join(o["data"]["image/png"])
        for s in DEMO_STAGES
        for c in json.loads((run / "notebooks" / f"{s}.ipynb").read_text())["cells"]
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    }
    assert len(drawn) >= 5 and len(list((site / "_images").glob("*.png"))) >= len(drawn)


@pytest.mark.slow
def test_the_api_reference_carries_the_docments(built):
    from fastcore.docments import docments
    import spectra_ml.features as mod

    out, r, run = built
    assert r.returncode == 0, r.stderr[-3000:]
    page = html.unescape(
        (out / "html" / "api" / "spectra_ml.features.html").read_text(encoding="utf-8")
    )
    checked = 0
    for name in mod.__all__:
        obj = getattr(mod, name)
        if not callable(obj) or isinstance(obj, type):
            continue
        for p, info in docments(obj, full=True).items():
            doc = info.get("docment")
            # Sphinx sets quotes and dashes typographically and code spans as code: compare plain prose
            if p == "return" or not doc or any(c in doc for c in "`*_|'\"-<>&.\\"):
                continue
            assert doc in page, (name, p, doc)
            checked += 1
    assert checked >= 5  # enough plain docments to mean something


CHECK_JS = """
<!doctype html><html><body><iframe id="f" width="1200" height="900"></iframe><pre id="result"></pre>
<script>
const pages = %s;
async function run() {
  const res = {pages: 0, images: 0, links: 0, broken_links: [], broken_images: [], missing_anchors: []};
  const seen = new Map();
  const load = (url) => {
    if (!seen.has(url)) seen.set(url, fetch(url).then(async r => r.ok
        ? new DOMParser().parseFromString(await r.text(), "text/html") : null).catch(() => null));
    return seen.get(url);
  };
  const frame = document.getElementById("f");
  for (const p of pages) {
    await new Promise(ok => { frame.onload = ok; frame.src = p; });
    const doc = frame.contentDocument;
    const imgs = [...doc.images];
    imgs.forEach(i => { i.loading = "eager"; });
    await Promise.all(imgs.map(i => (i.complete && i.naturalWidth) ? null
        : new Promise(ok => { i.onload = ok; i.onerror = ok; setTimeout(ok, 10000); })));
    for (const i of imgs) {
      res.images++;
      if (!i.naturalWidth || !i.naturalHeight) res.broken_images.push([p, i.getAttribute("src")]);
    }
    for (const a of doc.querySelectorAll("a[href]")) {
      const u = new URL(a.getAttribute("href"), frame.contentWindow.location.href);
      if (u.origin !== location.origin) continue;
      res.links++;
      const target = await load(u.href.split("#")[0]);
      if (!target) { res.broken_links.push([p, a.getAttribute("href")]); continue; }
      const id = decodeURIComponent(u.hash.slice(1));
      if (id && !target.getElementById(id) && !target.getElementsByName(id).length)
        res.missing_anchors.push([p, a.getAttribute("href")]);
    }
    res.pages++;
  }
  document.getElementById("result").textContent = "RESULT" + JSON.stringify(res) + "END";
}
run();
</script></body></html>
"""


def browser_check(site: Path, pages: list, timeout: int = 300) -> dict:
    """Open each page of `site` (served on 127.0.0.1) in headless Chromium, in an iframe of a check page:
    every image must load with a non-zero size, every same-site link must answer, and its #anchor exist."""
    (site / "_check.html").write_text(CHECK_JS % json.dumps(pages), encoding="utf-8")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *a):
            pass

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), lambda *a, **k: Quiet(*a, directory=str(site), **k)
    )
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        out = subprocess.run(
            [
                _chromium(),
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={site.parent / '.chromium'}",
                f"--virtual-time-budget={timeout * 1000}",
                "--dump-dom",
                f"http://127.0.0.1:{server.server_address[1]}/_check.html",
            ],
            capture_output=True,
            text=True,
            timeout=timeout + 60,
        ).stdout
    finally:
        server.shutdown()
        (site / "_check.html").unlink()
    assert "RESULT" in out, "the check page did not finish: " + out[-2000:]
    return json.loads(html.unescape(out.split("RESULT", 1)[1].split("END", 1)[0]))


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)"
)
def test_the_browser_check_finds_a_broken_link_a_missing_anchor_and_a_missing_image(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "a.html").write_text(
        '<h1 id="top">A</h1><a href="b.html#here">ok</a> <a href="b.html#gone">anchor</a> '
        '<a href="missing.html">broken</a> <img src="nothing.png"> <a href="https://example.org">out</a>'
    )
    (site / "b.html").write_text('<h2 id="here">B</h2><a href="a.html#top">back</a>')
    r = browser_check(site, ["a.html", "b.html"], timeout=60)
    assert r["pages"] == 2 and r["links"] == 4  # the external link is not followed
    assert r["broken_links"] == [["a.html", "missing.html"]]
    assert r["missing_anchors"] == [["a.html", "b.html#gone"]]
    assert r["broken_images"] == [["a.html", "nothing.png"]]


@pytest.mark.slow
@pytest.mark.skipif(
    _chromium() is None, reason="no Chromium here (.ci/run installs Debian's chromium)"
)
def test_every_page_opens_in_chromium_with_no_broken_link_or_image(built):
    out, r, run = built
    assert r.returncode == 0, r.stderr[-3000:]
    site = out / "html"
    pages = sorted(
        p.relative_to(site).as_posix()
        for p in site.rglob("*.html")
        if not p.relative_to(site).parts[0].startswith("_")
    )
    assert "index.html" in pages
    res = browser_check(site, pages)
    assert res["pages"] == len(pages)
    assert res["broken_links"] == [], res["broken_links"][:20]
    assert res["missing_anchors"] == [], res["missing_anchors"][:20]
    assert res["broken_images"] == [], res["broken_images"][:20]
    assert res["links"] > 10 * len(pages)  # the navigation alone links every page to many others
    n_figures = len(list(site.glob("_images/*")))
    assert res["images"] >= n_figures  # every figure of the site was loaded on some page
