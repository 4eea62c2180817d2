"""report.html in a real browser: Debian's chromium, headless, driven by Selenium through
chromium-driver (.ci/run installs both), at a 1,280 px wide window: the page never scrolls
sideways (a wide table scrolls inside its box) and every picture loads."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import pytest

from conftest import SHARED, run_script

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium (the test extra)")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
LONG = SHARED / "pcaps" / "long"
LOCK, LOCK_LOG = LONG / "schlage-lock-01.pcap", LONG / "schlage-lock-01.android-events.csv"
LOCK_IP = "192.168.1.122"
WIDTH = 1280

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="chromium and chromium-driver are not installed (apt-get install chromium "
    "chromium-driver; .ci/run does)",
)


@pytest.fixture(scope="module")
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={WIDTH},900",
    ):
        options.add_argument(argument)
    # The driver named: Selenium Manager would otherwise look for (download) one.
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    # The page's own width exactly (a window's frame would take some of --window-size).
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": WIDTH, "height": 900, "deviceScaleFactor": 1, "mobile": False},
    )
    yield driver
    driver.quit()


def look_at(driver, page: Path) -> dict:
    driver.get(page.resolve().as_uri())
    driver.execute_async_script(  # every image decoded (data URIs: nothing is fetched)
        "const done = arguments[arguments.length - 1];"
        "Promise.all(Array.from(document.images, i => i.decode().catch(() => null)))"
        ".then(() => done(true));"
    )
    return driver.execute_script(
        "const d = document.documentElement;"
        "return {width: window.innerWidth, scroll: d.scrollWidth, client: d.clientWidth,"
        " images: Array.from(document.images, i => [i.alt, i.complete, i.naturalWidth]),"
        " wide: Array.from(document.querySelectorAll('body > *'))"
        "  .filter(e => e.getBoundingClientRect().right > d.clientWidth + 1)"
        "  .map(e => e.tagName + (e.id ? '#' + e.id : ''))};"
    )


def assert_fits_and_loads(found: dict) -> None:
    assert found["width"] == WIDTH
    assert found["scroll"] <= found["client"], f"the page scrolls sideways: {found['wide']}"
    assert len(found["images"]) >= 2
    for alt, complete, width in found["images"]:
        assert complete and width > 0, f"{alt} did not load"


def test_demo_report_fits_1280_px_and_its_figures_load(browser, plug_toggle):
    output, _ = plug_toggle
    assert_fits_and_loads(look_at(browser, output / "report.html"))


@pytest.fixture(scope="module")
def lock_week(tmp_path_factory) -> Path:
    """main.py on the Schlage lock's week with its log (lock and unlock as one event,
    'action': the traffic cannot tell them apart), the report included: its folder."""
    if not (LOCK.is_file() and LOCK_LOG.is_file()):
        pytest.skip(f"{LOCK} is absent (the shared captures beside the repository)")
    folder = tmp_path_factory.mktemp("lock-week")
    log = pd.read_csv(LOCK_LOG, header=None, dtype=str)
    log[2] = log[2].replace({"event_lock": "action", "event_unlock": "action"})
    actions = folder / "actions.csv"
    log.to_csv(actions, header=False, index=False)
    run_script(
        "main.py", "lock", LOCK_IP, LOCK, "--events", actions, "--event", "action",
        "--event-column", "3", "--device-column", "2", "--timezone", "America/New_York",
        "-o", folder / "out", "-q",
    )  # fmt: skip
    return folder / "out"


@pytest.mark.slow  # main.py on a week of traffic (15-20 s)
def test_lock_week_report_fits_1280_px_and_its_figures_load(browser, lock_week):
    assert_fits_and_loads(look_at(browser, lock_week / "report.html"))
    # main.py --events hands its listed times to the report's timeline (37 lines: 36
    # actions and a battery notice)
    page = (lock_week / "report.html").read_text()
    assert "37 listed event time(s) (--events; dotted lines)" in page
