"""The session report page in a real headless Chromium (Debian's chromium + chromium-driver, installed by
.ci/install-chromium.sh): it loads from the file system with no console error, every image loads, and a
screenshot of it has a sane size. Skips, saying why, where Chromium or selenium is missing."""
import os
import shutil
import struct
import tempfile
import warnings

import pytest

pytest.importorskip("matplotlib")
from test_plots import session_log  # noqa: F401  (the module-scoped run + log fixture)

CHROME_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                "--window-size=1280,2400")


def _browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (dev extra)")
    chrome = next((p for p in (shutil.which("chromium"), "/usr/lib/chromium/chromium") if p and os.path.exists(p)),
                  None)
    driver_bin = shutil.which("chromedriver")
    if chrome is None or driver_bin is None:
        pytest.skip("Chromium or chromedriver is not installed (run .ci/install-chromium.sh)")
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="rating-edge-chromium-")
    opts = webdriver.ChromeOptions()
    opts.binary_location = chrome
    for f in CHROME_FLAGS + (f"--user-data-dir={profile}",):
        opts.add_argument(f)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    try:
        drv = webdriver.Chrome(service=Service(executable_path=driver_bin), options=opts)
    except Exception as e:  # noqa: BLE001 - a browser that cannot start is a skip with its reason
        shutil.rmtree(profile, ignore_errors=True)
        pytest.skip(f"Chromium did not start: {str(e).splitlines()[0]}")
    return drv, profile


def test_report_page_in_headless_chromium(session_log, tmp_path):  # noqa: F811
    from rating_edge.plots.report import write_report

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        page = write_report(session_log, tmp_path / "rep")
    drv, profile = _browser()
    try:
        drv.set_page_load_timeout(60)
        drv.get(page.as_uri())
        assert drv.execute_script("return document.readyState") == "complete"
        images = drv.execute_script(
            "return Array.from(document.images).map(i => [i.getAttribute('src'), i.complete, i.naturalWidth])")
        assert len(images) >= 6, images  # timeline, sections, latency + the snapshots
        broken = [src for src, done, w in images if not done or w == 0]
        assert not broken, f"images that did not load: {broken}"
        errors = [e for e in drv.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
        assert not errors, errors
        assert "rating-edge session" in drv.title
        shot = tmp_path / "page.png"
        assert drv.save_screenshot(str(shot))
        head = shot.read_bytes()[:24]
        w, h = struct.unpack(">II", head[16:24])
        assert head[:8] == b"\x89PNG\r\n\x1a\n" and w >= 1000 and h >= 1000, (w, h)
        assert shot.stat().st_size > 50_000  # a page with pictures, not a blank window
    finally:
        drv.quit()
        shutil.rmtree(profile, ignore_errors=True)
