"""A real browser for the web page's tests: Debian's headless Chromium driven through
Debian's chromedriver by Selenium (nothing is downloaded), on a phone-sized window, and
the screenshots the test run writes ($MAILGUARD_SCREENSHOTS, default build/screenshots).
Used by test_browser.py and test_browser_admin.py."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.remote.webdriver import WebDriver

ROOT = Path(__file__).resolve().parents[2]
PHONE = (390, 844)  # CSS pixels of a common phone in portrait
CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def screenshots() -> Path:
    path = Path(os.environ.get("MAILGUARD_SCREENSHOTS", ROOT / "build" / "screenshots"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def start_browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    """The driver (for a module-scoped fixture: `yield from start_browser(...)`); a
    missing Chromium fails the test, never skips it."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    if missing:
        pytest.fail(f"{', '.join(missing)} not installed: apt-get install chromium "
                    "chromium-driver (contrib/install-deps.sh does)")
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--no-first-run", "--disable-background-networking", "--disable-sync",
                "--disable-component-update", f"--window-size={PHONE[0]},{PHONE[1]}",
                f"--user-data-dir={tmp_path_factory.mktemp('chromium')}"):
        opts.add_argument(arg)
    service = Service(CHROMEDRIVER)
    driver = webdriver.Chrome(service=service, options=opts)
    driver.set_window_size(*PHONE)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    if service.process is not None:  # selenium stops chromedriver without waiting for it
        service.process.wait(10)


def fits_the_screen(driver: WebDriver) -> bool:
    """Nothing wider than the window: no sideways scrolling on a phone."""
    width = driver.execute_script("return document.documentElement.scrollWidth")
    inner = driver.execute_script("return window.innerWidth")
    return bool(width <= inner)


def shoot(driver: WebDriver, name: str) -> None:
    """A screenshot of the whole page (the window stretched to its height)."""
    height = driver.execute_script("return document.documentElement.scrollHeight")
    driver.set_window_size(PHONE[0], max(PHONE[1], int(height) + 100))
    driver.save_screenshot(str(screenshots() / f"{name}.png"))
    driver.set_window_size(*PHONE)
