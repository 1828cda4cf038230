"""Drive the service's page in headless Chromium (selenium + Debian's chromium-driver): the page's test
and the README screenshot (scripts/serve_screenshot.py) use the same steps."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any


def headless_chromium(width: int = 1100, height: int = 900) -> Any:
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    driver = shutil.which("chromedriver")
    if driver is None:
        raise RuntimeError("no chromedriver on PATH: install Debian's chromium and chromium-driver (make browser-packages)")
    options = webdriver.ChromeOptions()
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", f"--window-size={width},{height}"):
        options.add_argument(argument)
    options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    return webdriver.Chrome(service=Service(driver), options=options)


def ask_page(browser: Any, url: str, audio: Path, family: str = "fingerprint", wait_s: float = 60) -> dict[str, str]:
    """Open the page, pick `family`, upload `audio`, wait for the answer; what the page shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    if not browser.current_url.startswith(url):
        browser.get(url + "/")
    browser.find_element(By.CSS_SELECTOR, f"input[value={family}]").click()
    browser.find_element(By.ID, "file").send_keys(str(Path(audio).resolve()))
    browser.find_element(By.ID, "send").click()
    WebDriverWait(browser, wait_s).until(lambda b: b.find_element(By.ID, "model").text or b.find_element(By.ID, "error").text)
    WebDriverWait(browser, 10).until(ec.presence_of_element_located((By.CSS_SELECTOR, "#models td")))
    return {"answer": browser.find_element(By.ID, "result").text, "model": browser.find_element(By.ID, "model").text,
            "error": browser.find_element(By.ID, "error").text, "models": browser.find_element(By.ID, "models").text,
            "first": next((e.text for e in browser.find_elements(By.CSS_SELECTOR, "#answer td.ref")), ""),
            "notes": next((e.text for e in browser.find_elements(By.CSS_SELECTOR, "#answer .count")), "")}
