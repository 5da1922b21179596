"""The live dashboard in Debian's headless Chromium (selenium) during a real Downpour run."""

import os
import shutil
import tempfile
import threading
import time
import urllib.error
import urllib.request

import pytest

from sparkdownpour import Downpour
from sparkdownpour.callbacks import LambdaCallback
from sparkdownpour.examples import build_digits_mlp
from sparkdownpour.observe.dashboard import dashboard_link

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
# This machine's closed network makes Chromium hang on background connections without these.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1200,1400")

pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)),
    reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
           "chromium-driver; .ci/run installs them)")


@pytest.fixture()
def browser(monkeypatch):
    monkeypatch.setenv("SE_OFFLINE", "true")  # selenium-manager must never download anything
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="sdp-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS + (f"--user-data-dir={profile}",):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(20)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def snapshot(driver):
    """What the charts show: each section's markup (the SVG text) and the page's pixels."""
    sections = driver.execute_script(
        "var out = {}; document.querySelectorAll('section').forEach("
        "function (s) { out[s.id] = s.innerHTML; }); return out;")
    return sections, driver.get_screenshot_as_png()


def points(driver, section):
    return int(driver.execute_script(
        f"var s = document.querySelector('#{section} svg');"
        "return s ? s.getAttribute('data-points') : 0;") or 0)


def wait_for(condition, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.mark.timeout(240)
def test_dashboard_in_chromium_during_a_downpour_run(digits, browser):
    frame, _ = digits
    started, done, outcome = threading.Event(), threading.Event(), {}
    trainer = Downpour(build_digits_mlp, epochs=40, verbose=0)
    on_start = lambda server: (outcome.update(server=server), started.set())

    def train():
        try:
            # Runs until the browser part is over, then stops at the end of that epoch.
            outcome["result"] = trainer.fit(frame, stop_when=lambda record: done.is_set(),
                                            callbacks=[LambdaCallback(on_server_start=on_start)])
        except BaseException as e:  # reported by the test thread below
            outcome["error"] = e
            started.set()

    thread = threading.Thread(target=train, daemon=True)
    thread.start()
    try:
        assert started.wait(120), "the server did not start"
        assert "error" not in outcome, outcome.get("error")
        server = outcome["server"]
        link, url = dashboard_link(server), server.url
        t0 = time.monotonic()

        # Nothing without the token or the cookie.
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(server.url + "/", timeout=10)
        assert refused.value.code == 401
        browser.get(server.url + "/")
        assert "unauthorized" in browser.page_source and "<svg" not in browser.page_source

        # The one-time link logs in and leaves the address bar without the code.
        browser.get(link)
        assert browser.current_url == server.url + "/"
        assert "<svg" in browser.page_source and server.token not in browser.page_source
        cookie = next(c for c in browser.get_cookies() if c["name"].startswith("sdp_session_"))
        assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        assert browser.execute_script("return document.cookie") == ""  # HttpOnly: not for JS

        # Charts fill in as the replicas push, via the bundled poller (no reload).
        wait_for(lambda: points(browser, "loss") >= 2 and points(browser, "rate") >= 2
                 and points(browser, "staleness") >= 1, 60, "non-empty loss/rate/staleness")
        first_sections, first_png = snapshot(browser)
        assert "<td>" in first_sections["replicas"]  # per-replica progress rows
        wait_for(lambda: snapshot(browser)[0]["summary"] != first_sections["summary"], 30,
                 "the numbers to change")
        second_sections, second_png = snapshot(browser)
        assert second_png != first_png
        assert second_sections["loss"] != first_sections["loss"]
        assert points(browser, "loss") > 2
        assert "server not answering" not in browser.page_source

        # A spent code is refused, in a fresh browser session as anywhere else.
        browser.delete_all_cookies()
        browser.get(link)
        assert "already used" in browser.page_source
        browser.get(server.url + "/v1/dashboard")
        assert "unauthorized" in browser.page_source
        assert time.monotonic() - t0 < 60, "the browser part must stay bounded"
    finally:
        done.set()
        thread.join(180)
    assert "error" not in outcome, outcome.get("error")
    history = outcome["result"].history
    assert history.info["dashboard"].startswith(url + "/login?code=")
    assert history.info["dashboard"] != link  # each link is its own one-time code
