"""report.html in a real browser: headless Chromium (Debian's ``chromium`` + ``chromium-driver``) opens it offline,
every image loads, the console stays clean, and a screenshot is taken.

Skipped, with the reason, only where Chromium or its driver is not installed (``apt-get install chromium
chromium-driver``; nothing is ever downloaded).
"""

from __future__ import annotations

import shutil

import pytest

from test_report_html import tiny_run

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser")) if p), None)
DRIVER = shutil.which("chromedriver")
# No network here: without these Chromium keeps trying to reach Google's services.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,1000",
]


@pytest.fixture
def browser(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install selenium)")
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("Chromium or chromedriver not found (apt-get install chromium chromium-driver)")
    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must never download a browser or a driver
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=DRIVER))
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_report_opens_offline_with_every_image_and_no_console_error(browser, tmp_path):
    report = tiny_run() / "report.html"
    browser.get(report.resolve().as_uri())
    assert browser.title.startswith("distill report")
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth, i.naturalHeight]);"
    )
    assert len(images) >= 9
    broken = [alt for alt, complete, w, h in images if not (complete and w > 0 and h > 0)]
    assert not broken, f"images that did not load: {broken}"
    sections = browser.execute_script("return Array.from(document.querySelectorAll('section')).map(s => s.id);")
    assert {"accuracy", "pareto", "calibration", "temperature"} <= set(sections)

    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    assert not errors, f"console errors: {errors}"

    height = browser.execute_script("return document.documentElement.scrollHeight;")
    browser.set_window_size(1280, min(int(height), 12000))
    shot = tmp_path / "report.png"
    assert browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 50_000  # a page with figures, not a blank one

    browser.execute_script("console.error('probe')")  # the console check above can see errors at all
    assert any("probe" in e["message"] for e in browser.get_log("browser"))
