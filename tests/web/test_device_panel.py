"""The device's control panel in a real headless Chromium, against a running agent streaming real
frames through real tiers: the slider re-splits the device, the cloud's registry and the next
frames follow, no frame is lost or answered twice; bad input shows an error and the stream goes on.

``ECD_WRITE_SCREENSHOTS=1`` saves the page to ``docs/device_panel.png`` (the README shows it)."""

from __future__ import annotations

import os
from pathlib import Path

from selenium.common.exceptions import StaleElementReferenceException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait

from harness import StreamingAgent, Tiers, recommended
from web.conftest import page_errors

DOCS = Path(__file__).resolve().parents[2] / "docs"


def text(driver, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def set_floor(driver, value: str) -> None:
    """Type a floor and press "set floor", so that the answer seen next is this click's: the error
    line is emptied first (an earlier click's answer cannot pass for it), and the box is focused
    while typing (the page's 1 s refresh rewrites the box only when it is not focused, which made
    "3" then "1" read "31" under load)."""
    driver.execute_script("document.getElementById('error').textContent = ''")
    box = driver.find_element(By.ID, "min_split")
    box.click()
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(Keys.DELETE)
    if value:
        box.send_keys(value)
    driver.find_element(By.ID, "set_floor").click()


def test_slider_resplits_the_running_agent(browser, tiers: Tiers, tmp_path: Path) -> None:
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0, panel=True)
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))  # the page redraws each second
    try:
        browser.get(s.panel.url)
        device_id = s.agent.assignment.device_id
        wait.until(lambda d: text(d, "device_id") == device_id and text(d, "split") == "0")
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#splits tbody tr")) == 7)
        wait.until(lambda d: int(text(d, "answered")) > 0)
        assert browser.execute_script("return Chart.getChart('curve').data.datasets.length") == 4
        rec = browser.find_element(By.CSS_SELECTOR, "#splits tbody tr.rec")
        assert rec.get_attribute("data-split") == "0"

        # the user moves the slider from 0 (energy saving) to 1 (privacy protection)
        slider = browser.find_element(By.ID, "w_privacy")
        slider.send_keys(Keys.END)
        high = recommended(1.0)
        wait.until(lambda d: text(d, "split") == str(high))
        s.wait_for(lambda a: a.tally.snapshot()["per_split"].get(high, 0) >= 10)
        device = tiers.cloud.registry.device(device_id)
        assert (device.split_device, device.w_privacy) == (high, 1.0)
        wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#splits tbody tr.rec").get_attribute("data-split") == str(high))
        wait.until(lambda d: text(d, "resplits") == "1")  # the next redraw after the stream re-split (slow under load)
        assert text(browser, "error") == ""

        # bad input from the page: lowering the floor mid-stream, a floor above the model's blocks
        for value, expected in (("99", "min_split: expected an integer in 0..6"), ("", "min_split: expected an integer")):
            set_floor(browser, value)
            wait.until(lambda d: expected in text(d, "error"))
        set_floor(browser, "3")
        wait.until(lambda d: text(d, "floor") == "3" and text(d, "error") == "")
        set_floor(browser, "1")
        wait.until(lambda d: "min_split: the floor can only be raised" in text(d, "error"))
        assert s.agent.core.prefs.min_split == 3 and tiers.cloud.registry.device(device_id).min_split == 3
        answered = s.agent.tally.frames
        s.wait_for(lambda a: a.tally.frames >= answered + 10)  # the agent kept streaming
        assert page_errors(browser) == []
        if os.environ.get("ECD_WRITE_SCREENSHOTS") == "1":
            browser.execute_script("document.getElementById('error').textContent = ''")
            browser.save_screenshot(str(DOCS / "device_panel.png"))
    finally:
        outcomes = s.stop()
    assert [o.frame_id for o in outcomes] == list(range(1, s.agent.status().sent + 1)), "a frame was lost"
    assert s.agent.status().duplicates_dropped == 0 and all(o.result.ok for o in outcomes)
    splits = [o.result.split.device for o in outcomes]
    high = recommended(1.0)
    first = splits.index(high)
    assert set(splits[:first]) == {0} and set(splits[first:]) == {high}


def test_the_panel_fits_a_phone_screen(browser, tiers: Tiers, tmp_path: Path) -> None:
    """At 390 x 844 CSS pixels (a current phone), nothing runs off the right edge: no horizontal
    scrolling of the page, every element inside the viewport's width (the per-split table may
    scroll inside its own box)."""
    browser.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {"width": 390, "height": 844, "deviceScaleFactor": 1,
                                                                    "mobile": True})
    s = StreamingAgent(tiers, tmp_path, w_privacy=0.0, panel=True)
    wait = WebDriverWait(browser, 30, ignored_exceptions=(StaleElementReferenceException,))
    try:
        browser.get(s.panel.url)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#splits tbody tr")) == 7 and int(text(d, "answered")) > 0)
        width = browser.execute_script("return window.innerWidth")
        assert width == 390
        scroll = browser.execute_script("return document.documentElement.scrollWidth")
        beyond = browser.execute_script("""
            const scrolls = e => { for (let a = e.parentElement; a; a = a.parentElement)
                                     if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) return true;
                                   return false; };
            return [...document.querySelectorAll('body *')]
              .filter(e => e.getClientRects().length && !scrolls(e)
                           && e.getBoundingClientRect().right > window.innerWidth + 0.5)
              .map(e => e.tagName.toLowerCase() + (e.id ? '#' + e.id : '') + ' ' + Math.round(e.getBoundingClientRect().right))""")
        assert scroll <= width and beyond == [], (scroll, beyond)
        assert page_errors(browser) == []
        if os.environ.get("ECD_WRITE_SCREENSHOTS") == "1":
            browser.save_screenshot(str(DOCS / "device_panel_phone.png"))
    finally:
        s.stop()
