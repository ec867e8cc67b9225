"""The cockpit page in a real browser (Debian's Chromium driven by Playwright) on the real
stack: Kafka, Redis, the worker and the API started as in test_walking_skeleton.

One walk through the page, a screenshot of each state under the test's folder:
loads with no console errors → a replay started from the page moves the slider → pause →
a random active user's live list → a new user clicks an item and the list follows within
2 s, the interest chart with it → keyboard slider, labels → phone width.
"""

from __future__ import annotations

import secrets
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pyarrow.parquet as pq
import pytest
from playwright.sync_api import Browser, ConsoleMessage, expect, sync_playwright

from streamrec.infra.lag import wait_until_caught_up
from streamrec.infra.processes import run_streamrec, streamrec_process
from streamrec.paths import dataset_events
from streamrec.settings import Settings
from tests.support import api_ready, wait_until

NEW_USER = "cockpit-new-user"
LOG = "synthetic"
# 90 days of 6,000 events; the first half is replayed by the CLI before the page opens.
SPEC = "synthetic:users=200,items=120,events=6000,seed=11"


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        raise RuntimeError("Debian's chromium is not installed: run `make install`")
    return path


@pytest.fixture
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=_chromium(), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


def test_the_cockpit_replays_follows_a_user_and_their_clicks(
    live_settings: Settings, tmp_path: Path, browser: Browser
) -> None:
    key = secrets.token_hex(16)
    settings = live_settings.model_copy(update={"api_key": key})
    base = f"http://127.0.0.1:{settings.api_port}"
    shots = tmp_path / "screenshots"
    shots.mkdir()
    run_streamrec(settings, "data", "prepare", SPEC)
    run_streamrec(settings, "features", "apply")
    times = pq.read_table(dataset_events(settings.data_dir, LOG))["event_time"]
    first_ms, last_ms = times[0].as_py(), times[-1].as_py()
    middle_s = (first_ms + last_ms) / 2000
    worker_log, api_log = tmp_path / "worker.log", tmp_path / "api.log"
    with (
        streamrec_process(settings, "worker", log=worker_log) as worker,
        streamrec_process(settings, "serve", log=api_log) as api,
        httpx.Client(base_url=base, timeout=30) as http,
    ):
        run_streamrec(settings, "replay", LOG, "--speed", "max", "--until", str(middle_s))

        wait_until(api_ready(str(http.base_url)), 120, "the API to be ready", proc=api, log=api_log)
        wait_until_caught_up(settings.bootstrap_servers, f"{settings.topic_prefix}worker", 120)

        page = browser.new_page(viewport={"width": 1280, "height": 800})
        problems: list[str] = []
        page.on("console", lambda m: _console_error(m, problems))
        page.on("pageerror", lambda error: problems.append(f"page error: {error}"))

        # 1. The page loads: slider over the log's range, health, trending, no errors.
        page.goto(f"{base}/ui")
        slider = page.get_by_label("Event time")
        expect(slider).to_have_attribute("min", str(first_ms))
        expect(slider).to_have_attribute("max", str(last_ms))
        expect(page.locator("#health-model")).to_contain_text("baseline")
        # The API refreshes its item table in the background and the page polls every 5 s.
        expect(page.locator("#trending-list li").first).not_to_have_text(
            "nothing folded yet", timeout=60_000
        )
        expect(page.locator("#trending-list li").first).to_contain_text("in the last hour")
        expect(page.locator("#health-freshness")).to_contain_text("to features")
        page.screenshot(path=shots / "1-loaded.png", full_page=True)

        # 2. A replay started from the page (second half of the log) moves the slider.
        page.get_by_label("Admin key").fill(key)
        page.get_by_label("Admin key").dispatch_event("change")
        slider.fill(str(int(middle_s * 1000)))  # the next Play starts here
        slider.dispatch_event("change")
        page.get_by_label("Speed").select_option("604800")  # a week of log per second
        page.get_by_role("button", name="Play").click()
        expect(page.locator("#replay")).to_have_attribute("data-state", "running")
        start = int(slider.input_value())
        wait_until(
            lambda: int(slider.input_value()) > start + 86_400_000 or None,
            10,
            "the slider to move a day",
            proc=api,
            log=api_log,
        )
        page.screenshot(path=shots / "2-replaying.png", full_page=True)
        page.get_by_role("button", name="Pause").click()
        expect(page.locator("#replay")).to_have_attribute("data-state", "paused")
        status = http.get("/admin/replay", headers={"X-API-Key": key}).json()
        assert status["state"] == "paused" and status["events_sent"] > 0, status
        # A second start is refused, naming the running one.
        again = http.post(
            "/admin/replay", headers={"X-API-Key": key}, json={"source": LOG, "speed": "max"}
        )
        assert again.status_code == 409 and status["run_id"] in again.json()["detail"]

        # 3. A random active user's live top 10, with titles, stages and reasons.
        page.get_by_role("button", name="Random active user").click()
        items = page.locator("#recs li")
        expect(items).to_have_count(10)
        expect(items.first.locator(".why")).not_to_be_empty()
        expect(page.locator("#recent li").first).to_be_visible()
        page.screenshot(path=shots / "3-active-user.png", full_page=True)

        # 4. Be a new user: a click on the list changes it within 2 s; the chart follows.
        search = page.get_by_label("User id")
        search.fill(NEW_USER)
        search.press("Enter")
        expect(items).to_have_count(10)
        chart = page.locator("#interest-chart")
        expect(chart).to_have_attribute("data-points", "1")
        listed = page.locator("#recs")
        request_id = listed.get_attribute("data-request-id")
        clicked = items.first.get_attribute("data-item-id")
        clicked_category = items.first.locator(".tag").first.inner_text()
        started = time.monotonic()
        items.first.locator("button.item").click()
        expect(listed).not_to_have_attribute("data-request-id", request_id or "", timeout=2_000)
        expect(page.locator(f'#recs li[data-item-id="{clicked}"]')).to_have_count(0, timeout=2_000)
        assert time.monotonic() - started < 2.0
        expect(chart).not_to_have_attribute("data-points", "1")
        expect(chart).to_have_attribute("data-top", clicked_category)
        expect(chart.locator("canvas")).to_have_count(1)
        expect(page.locator("#recs li.new").first).to_be_visible()
        page.screenshot(path=shots / "4-after-click.png", full_page=True)

        # 5. Accessibility basics: every control has a label; the slider moves by keyboard.
        unlabelled = page.evaluate(
            """() => [...document.querySelectorAll('input, select')]
                 .filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label'))
                 .map((el) => el.id)"""
        )
        assert unlabelled == []
        before = int(slider.input_value())
        slider.focus()
        page.keyboard.press("ArrowLeft")
        assert int(slider.input_value()) < before

        # 6. Phone width: one column, nothing wider than the screen.
        page.set_viewport_size({"width": 390, "height": 844})
        expect(items).to_have_count(10)
        # The chart is redrawn at its box's new width, not clipped by it.
        page.wait_for_function(
            """() => {
                const box = document.getElementById('interest-chart');
                const plot = box.querySelector('.uplot');
                return plot !== null && plot.offsetWidth <= box.clientWidth;
            }""",
            timeout=2_000,
        )
        too_wide = page.evaluate(
            """() => [...document.querySelectorAll('body *')]
                 .filter((el) => el.getBoundingClientRect().right > window.innerWidth + 0.5)
                 .map((el) => `${el.tagName.toLowerCase()}#${el.id}.${el.className}`)"""
        )
        width = page.evaluate("() => document.documentElement.scrollWidth")
        assert width <= 390 and too_wide == [], (width, too_wide[:10])
        page.screenshot(path=shots / "5-phone.png", full_page=True)

        assert problems == [], problems
        stopped = http.post("/admin/replay/stop", headers={"X-API-Key": key}).json()
        assert stopped["state"] == "stopped"
        assert worker.poll() is None and api.poll() is None


def _console_error(message: ConsoleMessage, problems: list[str]) -> None:
    if message.type == "error":
        problems.append(f"console: {message.text} ({message.location})")
