"""A real headless Chromium (Debian ``chromium`` + ``chromium-driver``) driven by Selenium.

Skips, saying so, only where Chromium or its driver is not installed (CI installs both). Selenium
is given both paths, so it never tries to download a browser."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
DRIVER = shutil.which("chromedriver")


@pytest.fixture
def browser(tmp_path: Path):
    if CHROMIUM is None or DRIVER is None:
        pytest.skip("needs Chromium and its driver (Debian: apt-get install chromium chromium-driver); not installed here")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400",
                f"--user-data-dir={tmp_path / 'chromium-profile'}", "--no-first-run", "--disable-extensions"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def page_errors(driver) -> list[str]:
    """The page's JavaScript errors (SEVERE console entries), so a broken script fails the test.
    An HTTP error status the page asked for (a refused change it then shows) is not one."""
    return [e["message"] for e in driver.get_log("browser")
            if e.get("level") == "SEVERE" and "Failed to load resource" not in e["message"]]
