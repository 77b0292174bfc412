"""The built book in a real browser: every page of the table of contents loads in headless Chromium,
its figures decode to a non-zero size, the scoreboard is there and every value on it links to a run
record that loads too, and no page reports an error (apart from CDN requests, which are blocked).

It reuses the smoke book of the session (``smoke_book`` in conftest.py) and serves ``build/html`` on
127.0.0.1. Chromium runs as a plain subprocess (``--dump-dom`` / ``--screenshot``), no driver: the
test server injects a small probe script at the top of every HTML page it serves. The probe records
script exceptions, failed resource loads, ``console.error`` calls and unhandled rejections from the
start of the page, and after the load event decodes every ``<img>`` of the article (synchronously, by
drawing it on a canvas), then writes its findings as JSON into a ``<pre id="gat-probe">`` that ``--dump-dom`` prints.

Every host but 127.0.0.1 resolves to nothing (``--host-resolver-rules``), so CDN scripts (MathJax,
thebe, ...) fail fast and the same way on every machine; their failures are ignored. One screenshot
per page lands in ``_build/screenshots/``.

Without Chromium the test is skipped locally (``apt-get install chromium``), and fails when
``CI=true``: CI must run it (``.ci/run`` installs Chromium first).
"""
import functools
import http.server
import io
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from gatlib import runbook

ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = ROOT / "_build" / "screenshots"
CANDIDATES = ("chromium", "/usr/bin/chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1"]
# Errors of the Jupyter Book 1.x stack itself, the same on every page of any jupyter-book<2 build;
# each is matched exactly, anything else fails the test.
KNOWN_STACK_ERRORS = {
    # sphinx-thebe 0.3.1 adds its inline `const THEBE_JS_URL = ...` config script on every
    # `env-before-read-docs`, i.e. twice when Sphinx reads the sources twice: the second one throws
    ("exception", "Uncaught SyntaxError: Identifier 'THEBE_JS_URL' has already been declared"),
    # pydata-sphinx-theme on a first visit (empty localStorage, as in a fresh profile) logs this and
    # falls back to the "auto" mode (pydata/pydata-sphinx-theme#1635)
    ("console", "Got invalid theme mode: . Resetting to auto."),
}

PROBE = r"""<script>(function () {
  var errors = [];
  function text(x) { try { return String(x); } catch (e) { return "?"; } }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) errors.push({kind: "resource", url: text(t.src || t.href)});
    else errors.push({kind: "exception", message: text(e.message), url: text(e.filename || "")});
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push({kind: "rejection", message: text(e.reason && e.reason.message || e.reason)});
  });
  var consoleError = console.error;
  console.error = function () {
    errors.push({kind: "console", message: Array.prototype.map.call(arguments, text).join(" ")});
    return consoleError.apply(console, arguments);
  };
  // after the load event, or 4 s after DOMContentLoaded when a blocked CDN request (e.g. the
  // widgets' embed script) keeps the load event from firing. Everything is synchronous: with
  // --virtual-time-budget Chromium dumps the DOM as soon as virtual time runs out, and an asynchronous
  // img.decode() (decoded off the main thread, invisible to virtual time) lost that race on a page
  // with many figures. drawImage on a canvas decodes the image synchronously instead.
  var probed = false;
  function probe() {
    if (probed) { return; }
    probed = true;
    var article = document.querySelector("article") || document.querySelector("main");
    var images = article ? Array.prototype.slice.call(article.querySelectorAll("img")) : [];
    var sizes = images.map(function (img) {
      var out = {src: img.currentSrc || img.src, width: img.naturalWidth, height: img.naturalHeight,
                 complete: img.complete, painted: false};
      if (!(img.complete && img.naturalWidth > 0 && img.naturalHeight > 0)) { return out; }
      try {
        var canvas = document.createElement("canvas");
        canvas.width = 16; canvas.height = 16;
        var context = canvas.getContext("2d");
        context.drawImage(img, 0, 0, 16, 16);   // forces a full decode of the pixel data
        var pixels = context.getImageData(0, 0, 16, 16).data;
        for (var i = 3; i < pixels.length; i += 4) { if (pixels[i] > 0) { out.painted = true; break; } }
      } catch (err) { out.error = text(err); }
      return out;
    });
    var h1 = article && article.querySelector("h1");
    var tables = article ? Array.prototype.map.call(article.querySelectorAll("table"), function (table) {
      return {
        headers: Array.prototype.map.call(table.querySelectorAll("thead th"), function (th) { return th.textContent.trim(); }),
        rows: Array.prototype.map.call(table.querySelectorAll("tbody tr"), function (tr) {
          return Array.prototype.map.call(tr.children, function (td) {
            var a = td.querySelector("a");
            return {text: td.textContent.trim(), href: a ? a.href : null};
          });
        })
      };
    }) : [];
    var out = {title: document.title, article: !!document.querySelector("article"),
               h1: h1 ? h1.textContent.replace(/#$/, "").trim() : null,
               text: article ? article.textContent.length : 0, images: sizes, tables: tables, errors: errors};
    var pre = document.createElement("pre");
    pre.id = "gat-probe";
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }
  window.addEventListener("load", probe);
  document.addEventListener("DOMContentLoaded", function () { setTimeout(probe, 4000); });
})();</script>"""


def find_chromium() -> str | None:
    explicit = os.environ.get("GAT_CHROMIUM")
    if explicit:
        return shutil.which(explicit)
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


@pytest.fixture(scope="session")
def chromium():
    """Set up before ``smoke_book`` (same scope, listed first), so that a machine without Chromium
    skips before the smoke runs and the build."""
    path = find_chromium()
    if path is None:
        reason = ("Chromium is not installed (Debian: apt-get install chromium; or set GAT_CHROMIUM): "
                  "the real-browser check of the book was not run")
        if os.environ.get("CI") == "true":
            pytest.fail(f"CI=true but {reason}; .ci/run installs it before `make test`", pytrace=False)
        pytest.skip(reason)
    return path


class _ProbeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files of the build; HTML pages get the probe as the first element of <head>."""

    def log_message(self, *args):   # quiet
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir() and (path / "index.html").is_file() and self.path.endswith("/"):
            path = path / "index.html"
        if path.suffix == ".html" and path.is_file():
            body = path.read_bytes()
            body = body.replace(b"<head>", b"<head>" + PROBE.encode(), 1)
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            return io.BytesIO(body)
        return super().send_head()


@pytest.fixture(scope="module")
def site(chromium, smoke_book):
    """``(base url, html dir, chromium)``: the smoke book served on 127.0.0.1 at a free port."""
    completed = smoke_book.completed
    assert completed.returncode == 0, "the smoke book did not build:\n" + completed.stderr[-3000:]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             functools.partial(_ProbeHandler, directory=str(smoke_book.html)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", smoke_book.html, chromium
    finally:
        server.shutdown()
        server.server_close()


def run_chromium(chromium: str, *args: str, timeout: int = 240) -> subprocess.CompletedProcess:
    with tempfile.TemporaryDirectory(prefix="gat-chromium-") as profile:
        return subprocess.run([chromium, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                              text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def load(site, page: str) -> dict:
    """What the probe saw on ``page`` (a path relative to the html dir) after the load event."""
    base, _, chromium = site
    # a page with many figures on a busy machine may need more than 5 s of virtual time to load and
    # decode every image: retry with longer budgets before calling the probe missing (a CI run beside
    # another heavy process once missed it on chapter 02's page at 60 s and found it on a rerun)
    for budget in (5000, 20000, 60000, 120000, 120000):
        completed = run_chromium(chromium, f"--virtual-time-budget={budget}", "--dump-dom", f"{base}/{page}")
        found = re.search(r'<pre id="gat-probe"[^>]*>(.*?)</pre>', completed.stdout, flags=re.S)
        if found:
            break
    assert found, (f"{page}: no probe result in Chromium's DOM (exit {completed.returncode})\n"
                   f"{completed.stdout[-1500:]}\n{completed.stderr[-1500:]}")
    import html as html_module

    return json.loads(html_module.unescape(found.group(1)))


def page_errors(report: dict) -> list[dict]:
    """Errors that are ours: not a blocked request to another host, not a known stack error."""
    out = []
    for error in report["errors"]:
        if error["kind"] == "resource" and urlparse(error["url"]).hostname not in ("127.0.0.1", None):
            continue   # a CDN request (MathJax, thebe, ...): blocked on purpose
        if (error["kind"], error.get("message")) in KNOWN_STACK_ERRORS:
            continue
        out.append(error)
    return out


def toc_pages() -> list[str]:
    """Docnames of the repository's table of contents (the root first)."""
    return runbook.toc_files(yaml.safe_load((ROOT / "_toc.yml").read_text()))


def _docname(entry: str) -> str:
    return str(Path(entry).with_suffix("")) if Path(entry).suffix in (".md", ".ipynb") else entry


def check_page(site, page: str) -> dict:
    report = load(site, page)
    assert report["article"] and report["h1"], f"{page}: no article with a title in the DOM"
    assert report["title"].startswith(report["h1"]), f"{page}: <title> {report['title']!r} vs h1 {report['h1']!r}"
    assert report["text"] > 200, f"{page}: the article is (nearly) empty"
    broken = [image for image in report["images"]
              if not (image["width"] > 0 and image["height"] > 0 and image["painted"])]
    assert not broken, f"{page}: images that do not decode to a non-zero size with visible pixels: {broken}"
    assert not page_errors(report), f"{page}: errors in the page: {page_errors(report)}"
    return report


@pytest.mark.browser
@pytest.mark.parametrize("entry", toc_pages())
def test_toc_page_loads_with_figures_and_no_errors(site, entry):
    page = f"{_docname(entry)}.html"
    report = check_page(site, page)
    if entry.startswith("notebooks/"):
        assert report["images"], f"{page}: an executed chapter shows its figures"
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{_docname(entry).replace('/', '__')}.png"
    shot.unlink(missing_ok=True)
    base, _, chromium = site
    completed = run_chromium(chromium, "--virtual-time-budget=5000", f"--screenshot={shot}",
                             "--window-size=1280,2000", f"{base}/{page}")
    assert shot.is_file(), f"no screenshot of {page}: {completed.stderr[-1500:]}"
    from PIL import Image

    with Image.open(shot) as image:
        assert image.size == (1280, 2000)
        low, high = image.convert("L").getextrema()
        assert low < high, f"{shot} is blank"


@pytest.mark.browser
def test_the_index_redirects_to_the_root_page(site):
    report = load(site, "index.html")
    root = _docname(toc_pages()[0])
    assert report["h1"] and not page_errors(report), f"index.html does not reach {root}: {report}"


@pytest.mark.browser
def test_scoreboard_values_link_to_run_records_that_load(site):
    base, html, _ = site
    report = check_page(site, "book/reproduction.html")
    boards = [t for t in report["tables"] if {"Paper", "Ours", "Source"} <= set(t["headers"])]
    assert len(boards) == 1, f"one scoreboard table on the page, found {len(boards)}"
    board = boards[0]
    ours = board["headers"].index("Ours")
    from gatlib.scoreboard import NOT_COMPARABLE, NOT_YET, paper_entries

    assert len(board["rows"]) == len(paper_entries()), "every paper number has a row"
    values = [row[ours] for row in board["rows"] if row[ours]["text"] not in (NOT_YET, NOT_COMPARABLE)]
    assert values, "the smoke runs put at least one value on the scoreboard (00_setup's Table 3)"
    unlinked = [v["text"] for v in values if not v["href"]]
    assert not unlinked, f"values on the scoreboard without a run record: {unlinked}"
    records = sorted({urlparse(v["href"]).path for v in values})
    for path in records:
        found = re.fullmatch(r"/book/runs/([\w.-]+)-(smoke-[0-9a-f]{10})\.html", path)
        assert found, f"{path} is not a run record page book/runs/<stem>-<run id>.html"
        run_id = found.group(2)
        record = check_page(site, path.lstrip("/"))
        assert record["h1"].startswith("Run record"), record["h1"]
        fields = {row[0]["text"]: row[1]["text"] for t in record["tables"] if t["headers"][:2] == ["Field", "Value"]
                  for row in t["rows"]}
        assert fields["Run id"] == run_id and fields["Profile"] == "smoke"
        for name in ("Git commit", "Device", "Wall time", "Seed"):
            assert fields[name] and fields[name] != "not recorded", (name, fields)
        # the record's own numbers are the ones the scoreboard shows
        linked = {v["text"] for v in values if urlparse(v["href"]).path == path}
        shown = {row[4]["text"] for t in record["tables"] if "Recorded key" in t["headers"] for row in t["rows"]}
        assert linked <= shown, (linked, shown)


@pytest.mark.browser
def test_the_probe_tells_a_corrupt_figure_from_a_good_one(chromium, tmp_path):
    """The probe itself can fail: a PNG whose header is fine but whose pixel data is garbage has a
    natural size, yet does not paint, and a missing file has no size at all."""
    from PIL import Image

    Image.new("RGB", (40, 30), (200, 30, 30)).save(tmp_path / "good.png")
    good = (tmp_path / "good.png").read_bytes()
    (tmp_path / "corrupt.png").write_bytes(good[:33] + b"\x00" * (len(good) - 33))   # IHDR kept, data zeroed
    text = "A paragraph long enough to count as an article body. " * 8
    (tmp_path / "page.html").write_text(
        "<html><head><title>Probe check</title></head><body><article><h1>Probe check</h1>"
        f"<p>{text}</p><img src='good.png'><img src='corrupt.png'><img src='missing.png'></article></body></html>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_ProbeHandler, directory=str(tmp_path)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        report = load((f"http://127.0.0.1:{server.server_address[1]}", tmp_path, chromium), "page.html")
    finally:
        server.shutdown()
        server.server_close()
    by_name = {Path(urlparse(image["src"]).path).name: image for image in report["images"]}
    assert by_name["good.png"]["painted"] and by_name["good.png"]["width"] == 40
    assert not by_name["corrupt.png"]["painted"]
    assert by_name["missing.png"]["width"] == 0
    assert any(e["kind"] == "resource" and e["url"].endswith("missing.png") for e in report["errors"])
