"""The web page in a real browser: Debian's headless Chromium, driven by Selenium through
Debian's chromedriver (nothing is downloaded), on a phone-sized window, against the real
`mailguard web` and the real daemon, clamd and spamd.

A mail user logs in, picks "strict" and "keep in quarantine", GTUBE is sent through the
daemon, the user finds it in the quarantine, releases it and it is delivered once.
Screenshots of the pages go to $MAILGUARD_SCREENSHOTS (default build/screenshots)."""

from __future__ import annotations

import smtplib
from collections.abc import Iterator
from email import message_from_bytes

import pytest
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import Select, WebDriverWait

from tests.e2e.browser_support import fits_the_screen, shoot, start_browser
from tests.e2e.web_site import PASSWORD, Site, run_site
from tests.scanner_helpers import gtube


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    yield from start_browser(tmp_path_factory)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, clamd_socket: str,
         spamd_addr: tuple[str, int]) -> Iterator[Site]:
    yield from run_site(tmp_path_factory.mktemp("browser"), clamd_socket, spamd_addr)


def wait_notice(driver: WebDriver, text: str) -> None:
    """Wait for the next page's notice to say `text` (the old page may still be shown)."""
    def says(d: WebDriver) -> bool:
        found = d.find_elements(By.CLASS_NAME, "notice")
        return bool(found) and text in found[0].text

    WebDriverWait(driver, 15, ignored_exceptions=(StaleElementReferenceException,)).until(says)


def log_in(driver: WebDriver, site: Site, user: str) -> None:
    driver.get(site.base + "/login")
    assert fits_the_screen(driver)
    driver.find_element(By.ID, "address").send_keys(user)
    driver.find_element(By.ID, "password").send_keys(PASSWORD)
    shoot(driver, "login")
    driver.find_element(By.CSS_SELECTOR, "form button[type=submit]").click()
    WebDriverWait(driver, 15).until(lambda d: "/login" not in d.current_url)


def test_phone_user_quarantines_gtube_and_releases_it_once(browser: WebDriver,
                                                           site: Site) -> None:
    d = site.daemon
    log_in(browser, site, "joe@example.com")
    assert "Spam settings for joe@example.com" in browser.find_element(By.TAG_NAME, "h1").text
    assert fits_the_screen(browser)
    # labels name every control (what a screen reader announces)
    for control in ("filtering", "sensitivity", "action", "language"):
        label = browser.find_element(By.CSS_SELECTOR, f"label[for={control}]")
        assert label.text.strip()
    Select(browser.find_element(By.ID, "sensitivity")).select_by_value("strict")
    Select(browser.find_element(By.ID, "action")).select_by_value("quarantine")
    browser.find_element(By.CSS_SELECTOR, "form[action='/settings'] button").click()
    wait_notice(browser, "applies to the next message")
    assert Select(browser.find_element(By.ID, "action")).first_selected_option \
        .get_attribute("value") == "quarantine"
    shoot(browser, "settings")

    with smtplib.SMTP(d.host, d.port, timeout=60) as smtp:
        smtp.sendmail("deals@spam.example", ["joe@example.com"],
                      "From: Deals <deals@spam.example>\r\nTo: joe@example.com\r\n"
                      f"Subject: You won\r\n\r\n{gtube()}\r\n")
    assert d.spooled("example.com", "joe") == []  # held, not delivered

    browser.get(site.base + "/quarantine")
    items = browser.find_elements(By.CSS_SELECTOR, "li.message")
    assert len(items) == 1
    text = items[0].text
    assert "You won" in text and "deals@spam.example" in text and "spam score" in text
    assert fits_the_screen(browser)
    shoot(browser, "quarantine")
    release = items[0].find_element(By.XPATH, ".//button[normalize-space()='Release']")
    form = release.find_element(By.XPATH, "./ancestor::form")
    action = form.get_attribute("action")
    token = form.find_element(By.NAME, "csrf").get_attribute("value")
    release.click()
    wait_notice(browser, "on its way")
    assert browser.find_elements(By.CSS_SELECTOR, "li.message") == []
    shoot(browser, "quarantine-released")
    # the same form posted again (a double click, a replayed request): nothing more
    browser.execute_script(
        "const f = document.createElement('form'); f.method = 'post'; f.action = arguments[0];"
        "const i = document.createElement('input'); i.type = 'hidden'; i.name = 'csrf';"
        "i.value = arguments[1]; f.appendChild(i); document.body.appendChild(f); f.submit();",
        action, token)
    wait_notice(browser, "no longer in the quarantine")
    delivered = d.spooled("example.com", "joe")
    assert len(delivered) == 1
    assert message_from_bytes(delivered[0])["Subject"] == "You won"


def test_admin_dashboard_shows_the_flow(browser: WebDriver, site: Site) -> None:
    """The server admin's mail-flow dashboard after the first test's mail: a graph (SVG
    drawn on the server) and the totals, readable on the phone-sized window."""
    from tests.e2e.web_site import cli  # noqa: PLC0415

    assert cli(site.daemon, "role", "grant", "boss@example.com", "*").returncode == 0
    browser.delete_all_cookies()
    log_in(browser, site, "boss@example.com")
    browser.get(site.base + "/stats?view=day")
    assert browser.find_elements(By.CSS_SELECTOR, "figure.chart svg")
    rows = {r.find_elements(By.TAG_NAME, "td")[0].text: r.find_elements(By.TAG_NAME, "td")[1].text
            for r in browser.find_elements(By.CSS_SELECTOR, "table tbody tr")
            if len(r.find_elements(By.TAG_NAME, "td")) == 3
            and r.find_elements(By.TAG_NAME, "td")[2].text.endswith("%")}
    assert rows["quarantined"] == "1"
    assert fits_the_screen(browser)
    shoot(browser, "dashboard")
    browser.get(site.base + "/stats/usage")
    assert "joe@example.com" in browser.find_element(By.TAG_NAME, "body").text
    shoot(browser, "usage")
