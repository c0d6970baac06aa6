"""A real browser for the console's tests: Debian's chromium, headless, driven by Selenium through Debian's
chromium-driver (both found by tests/tools.py; nothing is downloaded). Waits are on conditions (``until``), never
sleeps; the implicit wait is short so that a missing element fails fast.

Screenshots: with ``ROUTER_SCREENSHOTS=docs/img`` in the environment, ``Browser.shot(name)`` saves
``console-NAME.png`` there (docs/img/make_screenshots.sh runs the browser tests that way); otherwise it does nothing.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tools import chromedriver, chromium

WIDE = (1280, 800)
NARROW = (400, 800)
WAIT = 20.0  # s: the longest a condition may take (a dashboard refresh is every 3 s)


class Browser:
    def __init__(self, base: str) -> None:
        options = Options()
        options.binary_location = chromium()
        for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--no-first-run", "--disable-extensions", f"--window-size={WIDE[0]},{WIDE[1]}"):  # fmt: skip
            options.add_argument(flag)
        self.driver = webdriver.Chrome(service=Service(executable_path=chromedriver()), options=options)
        self.driver.implicitly_wait(0.5)
        self.base = base
        self.screenshots = Path(os.environ["ROUTER_SCREENSHOTS"]) if os.environ.get("ROUTER_SCREENSHOTS") else None

    def close(self) -> None:
        self.driver.quit()

    def open(self, path: str) -> None:
        self.driver.get(self.base + path)

    def find(self, css: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, css)

    def all(self, css: str) -> list[WebElement]:
        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def texts(self, css: str) -> list[str] | None:
        """The texts of the elements ``css`` finds; None while htmx is swapping them (a stale element)."""
        try:
            return [str(e.text) for e in self.all(css)]
        except StaleElementReferenceException:
            return None

    def click(self, css: str) -> None:
        """Click the first element ``css`` finds, again if htmx swapped it meanwhile."""

        def clicked() -> bool:
            try:
                self.find(css).click()
            except StaleElementReferenceException:
                return False
            return True

        self.until(clicked, f"{css} to be clicked")

    def text(self) -> str:
        return str(self.find("body").text)

    def until(self, condition: Callable[[], Any], what: str, timeout: float = WAIT) -> Any:
        wait = WebDriverWait(
            self.driver, timeout, poll_frequency=0.2, ignored_exceptions=[StaleElementReferenceException]
        )  # htmx swapped it: look again
        return wait.until(lambda _d: condition(), what)

    def sign_in(self, user: str, password: str) -> None:
        self.driver.delete_all_cookies()
        self.open("/login")
        self.find("input[name=username]").send_keys(user)
        self.find("input[name=password]").send_keys(password)
        self.find("section.login button[type=submit]").click()
        self.until(lambda: self.all("header.top nav"), f"{user} to be signed in")

    def cookie(self, name: str) -> str:
        found = self.driver.get_cookie(name)
        return str(found["value"]) if found else ""

    def shot(self, name: str, size: tuple[int, int] = WIDE) -> None:
        if self.screenshots is None:
            return
        self.screenshots.mkdir(parents=True, exist_ok=True)
        self.driver.set_window_size(*size)
        try:
            self.driver.save_screenshot(str(self.screenshots / f"console-{name}.png"))
        finally:
            self.driver.set_window_size(*WIDE)
