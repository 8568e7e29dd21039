"""The operator's views of a real cloud after one round: the dashboard page in headless Chromium, and
`fedlora status --watch` in a terminal.

A cloud and two edges run as processes; the test plays four hospitals (real CKKS uploads), records an
evaluation of adapter version 1 as the demo launcher does, and reads what a person would see.
Chromium and its driver are Debian's (`make chromium`); Selenium is pointed at them, so it never tries to
download a browser or a driver (this machine is offline).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from fedlora.launcher import Cluster
from protocol.messages import CentralDPConfig, PrivacyReport
from tests.e2e.conftest import CloudProcess, EdgeProcess, as_from_a_terminal, poll
from tests.e2e.helpers import FID, create_federation, make_spec, round_status, start_round

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
MISSING = [str(p) for p in (CHROMIUM, CHROMEDRIVER) if not p.exists()]
ACCURACY = 0.8
WAIT_S = 30


@dataclass
class AfterOneRound:
    cloud: CloudProcess
    epsilon: float  # client-level, after round 0, as the cloud's ledger says


@pytest.fixture(scope="module")
def after_one_round(tmp_path_factory, tiny_model_dir) -> Iterator[AfterOneRound]:
    """Round 0 closed (four hospitals, cloud-added Gaussian noise z = 1), round 1 open and waiting, and
    version 1 evaluated."""
    tmp_path = tmp_path_factory.mktemp("dashboard")
    cluster = Cluster(tmp_path / "logs")
    try:
        cloud = CloudProcess(cluster, tmp_path, tiny_model_dir)
        spec = make_spec(
            rounds=2,
            central_dp=CentralDPConfig(noise_multiplier=1.0),
            round_deadline_s=600,  # round 1 stays open (and its per-edge progress at 0/2) for the test
            upload_deadline_s=540,
        )
        created = create_federation(cloud, spec)
        edges = [EdgeProcess(cluster, tmp_path, cloud, edge_id, FID) for edge_id in ("edge-1", "edge-2")]
        placement = {"h-a": "edge-1", "h-b": "edge-1", "h-c": "edge-2", "h-d": "edge-2"}
        fed = start_round(cloud, created, edges, placement, cluster=cluster, seed=3)
        for client_id, edge_id in placement.items():
            fed.upload_accepted(client_id, next(e for e in edges if e.edge_id == edge_id))
        fed.wait_closed(timeout_s=90)
        poll(lambda: round_status(cloud, 1).state.value == "open", timeout_s=30, what="round 1 to open")
        evaluation = {"metrics": {"accuracy": ACCURACY, "loss": 0.45}, "examples": 200, "dataset": "rt:test"}
        recorded = cloud.admin.put(f"/federations/{FID}/adapters/1/evaluation", json=evaluation)
        assert recorded.status_code == 200, recorded.text
        privacy = PrivacyReport.model_validate_json(cloud.admin.get(f"/federations/{FID}/privacy").content)
        epsilon = privacy.central_rounds[0].epsilon_after
        assert epsilon is not None
        yield AfterOneRound(cloud, epsilon)
    finally:
        cluster.stop()


@pytest.fixture
def browser(tmp_path, monkeypatch):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extras")
    from selenium.webdriver.chrome.service import Service

    monkeypatch.setenv("SE_OFFLINE", "true")  # Selenium Manager must not reach for the network
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,2200"):
        options.add_argument(argument)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    service = Service(executable_path=str(CHROMEDRIVER), log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.mark.slow
@pytest.mark.skipif(
    bool(MISSING),
    reason=f"{', '.join(MISSING)} not installed: `make chromium` installs Debian's packages chromium and "
    "chromium-driver",
)
def test_the_dashboard_shows_the_round_its_accuracy_and_epsilon(after_one_round, browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    cloud = after_one_round.cloud
    wait = WebDriverWait(browser, WAIT_S)

    # Each read is one script: the page re-renders on its refresh timer, and a WebElement found before a
    # re-render would be stale when read after it.
    def text(selector: str) -> str:
        script = "const n = document.querySelector(arguments[0]); return n ? n.textContent.trim() : '';"
        return str(browser.execute_script(script, selector))

    def attribute(selector: str, name: str) -> str | None:
        script = "const n = document.querySelector(arguments[0]); return n && n.getAttribute(arguments[1]);"
        return browser.execute_script(script, selector, name)

    def sign_in(token: str) -> None:
        field = browser.find_element(By.ID, "token")
        field.clear()
        field.send_keys(token)
        browser.find_element(By.ID, "connect").click()

    browser.get(f"{cloud.url}/dashboard")
    assert browser.title == "fedlora dashboard"

    # A wrong token is refused and forgotten; the page says so.
    sign_in("not-the-admin-token")
    wait.until(lambda _: "refused the token" in text("#status"))
    assert browser.execute_script("return sessionStorage.getItem('fedlora.adminToken')") is None

    sign_in(cloud.admin_token)
    round_0 = '#rounds-table tr[data-round="0"]'
    wait.until(lambda _: text(f'{round_0} td[data-col="state"]') == "closed")
    browser.save_screenshot(str(tmp_path / "dashboard.png"))

    federation = f'#federations-table tr[data-fid="{FID}"]'
    cells = [text(f"{federation} td:nth-child({i})") for i in range(1, 5)]
    assert cells == [FID, "active", "1", "1"]  # id, state, current round, adapter version
    assert text(f'{round_0} td[data-col="clients"]') == "4"
    assert text(f'{round_0} td[data-col="accuracy"]') == f"{ACCURACY:.3f}"
    assert text(f'{round_0} td[data-col="epsilon"]') == f"{after_one_round.epsilon:.3f}"
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", text(f'{round_0} td[data-col="closed"]'))
    assert text('#rounds-table tr[data-round="1"] td[data-col="state"]') == "open"
    assert text("#latest-accuracy") == f"{ACCURACY:.3f} (v1)"
    assert text("#central-epsilon") == f"{after_one_round.epsilon:.3f}"
    # The charts: version 1 is the adapter after round 0, so its accuracy is plotted at round 0.
    assert float(attribute('#accuracy-chart circle[data-round="0"]', "data-value") or "nan") == ACCURACY
    epsilon_point = attribute('#epsilon-chart circle[data-round="0"]', "data-value")
    assert float(epsilon_point or "nan") == pytest.approx(after_one_round.epsilon)
    # Round 1 is current: each edge expects its two hospitals and has none yet.
    assert "Round 1: open" in text("#current-round")
    for edge_id in ("edge-1", "edge-2"):
        row = f'#edges-table tr[data-edge="{edge_id}"]'
        assert (text(f'{row} td[data-col="accepted"]'), text(f'{row} td[data-col="expected"]')) == ("0", "2")
    # The page ran under its own Content-Security-Policy without a single refusal or script error.
    errors = [e["message"] for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not [e for e in errors if "401" not in e], errors  # the wrong token's 401 is expected


@pytest.mark.slow
def test_status_watch_redraws_the_tables_until_interrupted(after_one_round, tmp_path):
    cloud = after_one_round.cloud
    log = tmp_path / "watch.log"
    env = {
        **os.environ,
        "FEDLORA_CLOUD_URL": cloud.url,
        "FEDLORA_ADMIN_TOKEN": cloud.admin_token,
        "FORCE_COLOR": "1",  # a terminal for rich: Live draws each read as it comes
        "COLUMNS": "200",
        "LINES": "200",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "fedlora.cli", "status", "--watch", "--interval", "0.5"],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=as_from_a_terminal,
        )
    try:

        def shown() -> str:
            plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", log.read_text(errors="replace"))
            return plain if plain.count(f"UTC from {cloud.url}") >= 2 else ""  # redrawn at least once

        screen = poll(shown, timeout_s=WAIT_S, what="two redraws of fedlora status --watch")
        assert f"{FID}: round 1 (open) per edge" in screen
        assert f"{ACCURACY:.3f}" in screen and f"client-level epsilon {after_one_round.epsilon:.3f}" in screen
        process.send_signal(signal.SIGINT)  # Ctrl-C
        assert process.wait(timeout=WAIT_S) == 0
        assert "stopped watching" in log.read_text(errors="replace")
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
