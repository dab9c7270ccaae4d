"""What a person sees: headless Chromium (Debian's chromium and chromium-driver, driven by Selenium) opens the
built documentation site and a report made on a tiny model, served on localhost, and checks that every page
loads without console errors, its images load, its internal links resolve, and the circuitsvis views mount.

Skipped, saying why, where Chromium is not installed (``scripts/setup.sh`` installs it when it runs as root,
as in CI)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlparse

import pytest

from anchorlens.cli import main as cli
from tests.helpers import tiny_reproduce
from tests.test_docs import ROOT, build

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="no Chromium: install Debian's chromium and chromium-driver (scripts/setup.sh does when run as root)",
)
webdriver = pytest.importorskip("selenium.webdriver", reason="selenium comes with the dev set-up")

#: Flags for a machine without network: no background connections, no sandbox (root in CI), no GPU.
FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
)

#: How many circuitsvis views mounted on this page, and whether each has rendered elements.
CIRCUITSVIS = """
const views = [...document.querySelectorAll('[id^="circuits-vis-"]')];
return views.map(v => v.childElementCount > 0 && v.getBoundingClientRect().height > 20);
"""
#: Every image on the page: loaded with a size (a missing file has naturalWidth 0).
IMAGES = "return [...document.images].map(i => [i.currentSrc || i.src, i.complete && i.naturalWidth > 0]);"
LINKS = "return [...document.querySelectorAll('a[href]')].map(a => a.href);"


def serve(folder: Path) -> tuple[str, http.server.ThreadingHTTPServer]:
    handler = functools.partial(QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://127.0.0.1:{server.server_address[1]}/", server


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*FLAGS, f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    folder = tmp_path_factory.mktemp("site")
    done = build(ROOT / "mkdocs.yml", folder)
    assert done.returncode == 0, done.stderr[-3000:]
    url, server = serve(folder)
    yield url, folder
    server.shutdown()


def open_page(driver: Any, url: str) -> list[str]:
    """Load ``url``; the console's errors while it loaded (warnings and messages are fine)."""
    driver.get_log("browser")  # drop what earlier pages logged
    driver.get(url)
    driver.execute_script("return document.readyState")
    return [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]


def check_page(driver: Any, url: str) -> dict[str, Any]:
    errors = open_page(driver, url)
    assert not errors, f"{url}: console errors {errors}"
    images = driver.execute_script(IMAGES)
    broken = [src for src, ok in images if not ok]
    assert not broken, f"{url}: images that did not load {broken}"
    return {
        "images": len(images),
        "views": driver.execute_script(CIRCUITSVIS),
        "links": driver.execute_script(LINKS),
    }


def test_every_page_of_the_site_loads_cleanly_and_its_links_resolve(
    browser: Any, site: tuple[str, Path]
) -> None:
    base, folder = site
    pages = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.html") if p.name != "404.html")
    seen: dict[str, dict[str, Any]] = {}
    for page in pages:
        seen[page] = check_page(browser, urljoin(base, page))
    dead = []
    for page, found in seen.items():
        for link in found["links"]:
            parsed = urlparse(link)
            if parsed.netloc != urlparse(base).netloc or not parsed.path.strip("/"):
                continue  # other sites (not fetched offline) and the root
            if not (folder / parsed.path.lstrip("/")).is_file():
                dead.append(f"{page} -> {parsed.path}")
    assert not dead, f"internal links to nothing: {dead}"
    assert seen["index.html"]["links"] and seen["paper.html"]["images"] >= 4
    assert seen["experiments/saliency.html"]["images"] >= 1
    views = seen["notebooks/01_saliency.html"]["views"]
    assert views and all(views), "the circuitsvis view in notebook 01 did not mount"


def test_screenshots_show_the_quickstart_and_a_flow_view(
    browser: Any, site: tuple[str, Path], tmp_path: Path
) -> None:
    base, _ = site
    open_page(browser, urljoin(base, "index.html"))
    assert "Quickstart" in browser.find_element("tag name", "body").text
    shot = tmp_path / "quickstart.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    open_page(browser, urljoin(base, "notebooks/01_saliency.html"))
    view = browser.find_element("css selector", '[id^="circuits-vis-"]')
    browser.execute_script("arguments[0].scrollIntoView()", view)
    assert view.screenshot(str(tmp_path / "flow.png")) and (tmp_path / "flow.png").stat().st_size > 2_000


def test_a_report_made_on_a_tiny_model_shows_its_figures_and_views(
    browser: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "report"
    args = [*tiny_reproduce(tmp_path, monkeypatch), "--n", "8", "--seeds", "1", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    url, server = serve(out)
    try:
        found = check_page(browser, urljoin(url, "report.html"))
    finally:
        server.shutdown()
    assert found["images"] >= 4, found["images"]
    assert found["views"] and all(found["views"]), "the report's circuitsvis view did not mount"
