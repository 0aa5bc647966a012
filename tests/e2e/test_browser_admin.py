"""The admin pages in a real browser on a phone-sized window (Debian's headless
Chromium through chromedriver, nothing downloaded), against the real `mailguard web`:
the server admin logs in and walks every admin page; nothing needs sideways
scrolling, every form control has a label, the keyboard reaches the controls, and a
domain's defaults are saved by typing and pressing keys only (no JavaScript on the
pages). Screenshots go to $MAILGUARD_SCREENSHOTS (default build/screenshots)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.remote.webdriver import WebDriver

from mailguard.store.prefs import PrefsStore
from tests.e2e.browser_support import PHONE, screenshots, start_browser
from tests.e2e.test_web_admin import on_store
from tests.e2e.web_harness import PASSWORD, Web

PAGES = ["/", "/domains", "/domains/example.com", "/domains/example.com/users", "/admin",
         "/admin/roles", "/admin/accounts", "/admin/overrides", "/admin/greylist",
         "/admin/suspended"]


@pytest.fixture(scope="module")
def web(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Web]:
    w = Web(tmp_path_factory.mktemp("browseradmin"), users=("admin@example.com",))
    try:
        assert w.cli("role", "grant", "admin@example.com", "*").returncode == 0
        assert w.cli("override", "add", "192.0.2.0/24", "--deny", "--reason",
                     "a rather long reason that has to wrap on a narrow screen").returncode == 0
        yield w
    finally:
        w.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[WebDriver]:
    yield from start_browser(tmp_path_factory)


def unlabelled(driver: WebDriver) -> list[str]:
    """Visible form controls without a <label for=…> or an aria-label."""
    script = """
      return [...document.querySelectorAll('input:not([type=hidden]), select, button')]
        .filter(e => !(e.getAttribute('aria-label') ||
                       (e.tagName === 'BUTTON' && e.textContent.trim()) ||
                       (e.id && document.querySelector('label[for="' + e.id + '"]'))))
        .map(e => e.outerHTML);
    """
    return list(driver.execute_script(script))


def test_admin_pages_on_a_phone(web: Web, browser: WebDriver) -> None:
    shots = screenshots()
    base = f"http://127.0.0.1:{web.port}"
    browser.get(base + "/login")
    browser.find_element(By.ID, "address").send_keys("admin@example.com")
    browser.find_element(By.ID, "password").send_keys(PASSWORD + Keys.ENTER)
    assert browser.find_element(By.CSS_SELECTOR, "nav.site a[href='/admin']")
    for path in PAGES:
        browser.set_window_size(*PHONE)
        browser.get(base + path)
        assert "forbidden" not in browser.page_source, path
        width = browser.execute_script("return document.documentElement.scrollWidth")
        assert width <= browser.execute_script("return window.innerWidth"), path
        assert unlabelled(browser) == [], path
        height = browser.execute_script("return document.documentElement.scrollHeight")
        browser.set_window_size(PHONE[0], max(PHONE[1], int(height) + 100))
        name = "admin" + (path.replace("/", "-").replace(".", "_") if path != "/" else "-home")
        browser.save_screenshot(str(shots / f"{name}.png"))
    # the keyboard alone: tab through the defaults form, choose by typing, Enter on Save
    browser.set_window_size(*PHONE)
    browser.get(base + "/domains/example.com")
    browser.find_element(By.TAG_NAME, "body").send_keys(Keys.TAB)
    reached = set()
    for _ in range(40):
        el = browser.switch_to.active_element
        reached.add(el.get_attribute("id") or el.get_attribute("href") or el.tag_name)
        if el.get_attribute("id") == "filtering":
            el.send_keys("on")  # typing picks the option, as a keyboard user would
        if el.get_attribute("id") == "users_may_override":
            el.send_keys("no")
        if el.tag_name == "button" and el.text == "Save":
            el.send_keys(Keys.ENTER)
            break
        el.send_keys(Keys.TAB)
    assert {"filtering", "sensitivity", "action", "users_may_override"} <= reached
    assert "Saved." in browser.find_element(By.CSS_SELECTOR, "p.notice").text
    dom = on_store(web, lambda db: PrefsStore(db).domain("example.com"))
    assert dom is not None and dom.spam_enabled and not dom.users_may_override
