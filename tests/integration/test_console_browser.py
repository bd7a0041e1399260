"""The console in a real browser: Debian's headless Chromium driven by Selenium.

Uploads a file through the page, watches it reach its outcome, opens its page and sees its
rejected rows, then redrives a dead letter by clicking and sees the queue empty. Every page is
photographed at 1280 px and 390 px wide into build/console/, and at 390 px no page may be wider
than the screen (wide tables scroll inside their own box).

Chromium comes from Debian (``apt-get install chromium chromium-driver``; .ci/run installs it).
Outside CI a machine without it skips this test; in CI its absence fails.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.ops.event_messages import ObjectVersion, s3_event_body
from tests.integration.console_kit import ingest_dlq, running_worker, serve_console

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "console"
WIDE, NARROW = (1280, 1000), (390, 844)


def _chromium() -> tuple[str, str] | None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver") or (
        "/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None
    )
    return (browser, driver) if browser and driver else None


@pytest.fixture
def browser() -> Iterator[Any]:
    found = _chromium()
    if found is None:
        message = "Chromium not found: apt-get install -y chromium chromium-driver"
        if os.environ.get("CI"):
            pytest.fail(f"{message} (.ci/run installs it; CI must run the browser test)")
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={WIDE[0]},{WIDE[1]}")
    driver = webdriver.Chrome(service=Service(executable_path=found[1]), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def _shoot(driver: Any, name: str) -> None:
    """The page at both widths; at the narrow one the page itself must not scroll sideways."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    for label, (width, height) in (("1280", WIDE), ("390", NARROW)):
        driver.set_window_size(width, height)
        inner = driver.execute_script("return window.innerWidth")
        driver.set_window_size(width + (width - inner), height)  # the viewport, not the window
        full = driver.execute_script("return document.documentElement.scrollHeight")
        driver.set_window_size(width + (width - inner), min(max(full, height), 2400))
        driver.save_screenshot(str(SHOTS / f"{name}-{label}.png"))
        overflow = driver.execute_script(
            "return document.documentElement.scrollWidth - document.documentElement.clientWidth"
        )
        assert overflow <= 0, f"{name} is {overflow}px wider than a {width}px screen"
    driver.set_window_size(*WIDE)


def _wait(driver: Any, condition: Any, timeout_s: float = 40) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(condition)


def test_upload_outcome_rows_and_redrive_in_a_browser(
    browser: Any, stack: Any, fixtures_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec

    driver = browser
    with running_worker(stack, monkeypatch), serve_console(stack) as console:
        driver.get(console.login_url)
        assert "token=" not in driver.current_url  # traded for a cookie at once
        _shoot(driver, "files-empty")

        # Upload through the page and watch the outcome arrive.
        driver.find_element(By.LINK_TEXT, "Upload").click()
        driver.find_element(By.ID, "files").send_keys(str(fixtures_dir / "test_data1.csv"))
        driver.find_element(By.CSS_SELECTOR, "#upload-form button[type=submit]").click()
        _wait(driver, ec.presence_of_element_located((By.ID, "all-final")))
        status = driver.find_element(By.CSS_SELECTOR, "#uploads .status").text
        assert status == "partly accepted"
        _shoot(driver, "upload")

        # Its page: the rejected rows, read from the rejects CSV in the bucket.
        driver.find_element(By.LINK_TEXT, "incoming/test_data1.csv").click()
        rows = driver.find_elements(By.CSS_SELECTOR, "table.rejects tbody tr")
        assert rows, "no rejected rows on the file page"
        assert driver.find_elements(By.CSS_SELECTOR, "table.bars meter")
        _shoot(driver, "file")
        driver.set_window_size(1024, 760)  # the top of the page, as docs/console.png shows it
        driver.save_screenshot(str(SHOTS / "file-top.png"))
        driver.set_window_size(*WIDE)

        # Replay shows its dry run first and sends nothing until confirmed.
        driver.find_element(By.LINK_TEXT, "Replay…").click()
        assert "dry run" in driver.find_element(By.TAG_NAME, "h1").text
        assert driver.find_elements(By.XPATH, "//button[text()='Replay now']")
        _shoot(driver, "replay-preview")

        driver.find_element(By.LINK_TEXT, "Files").click()
        _wait(driver, ec.presence_of_element_located((By.LINK_TEXT, "incoming/test_data1.csv")))
        _shoot(driver, "files")

        # A dead letter, redriven by clicking.
        s3 = stack.clients.s3
        put = s3.put_object(Bucket=stack.settings.bucket, Key="incoming/late.csv", Body=b"x\n")
        etag = put["ETag"].strip('"')
        obj = ObjectVersion(
            stack.settings.bucket, "incoming/late.csv", f"etag:{etag}", etag, 2,
            "2026-12-04T09:00:00.000Z",
        )  # fmt: skip
        dlq = ingest_dlq(stack)
        stack.clients.sqs.send_message(
            QueueUrl=dlq.url, MessageBody=s3_event_body(obj, source="test")
        )
        driver.find_element(By.LINK_TEXT, "Dead letters").click()
        assert "1 message(s)" in driver.find_element(By.ID, "dlq-count").text
        _shoot(driver, "deadletters")
        driver.find_element(By.LINK_TEXT, "detail").click()
        assert "incoming/late.csv" in driver.find_element(By.TAG_NAME, "main").text
        _shoot(driver, "deadletter")
        driver.back()
        driver.find_element(By.CSS_SELECTOR, 'input[name="ids"]').click()
        driver.find_element(By.ID, "redrive-selected").click()
        notice = _wait(driver, ec.presence_of_element_located((By.ID, "notice")))
        assert "moved 1 message(s)" in notice.text
        assert "0 message(s)" in driver.find_element(By.ID, "dlq-count").text
        assert dlq.depth() == 0

        driver.find_element(By.LINK_TEXT, "Health").click()
        assert driver.find_elements(By.CSS_SELECTOR, ".card")
        _shoot(driver, "health")
