"""The dashboard in a real browser: Debian's Chromium driven by Selenium (no browser download),
against flowcall under gunicorn. It signs in, reads the overview, filters by agent, opens a failed
call, exports a CSV, signs out, and checks a second tenant's key sees none of the first's data.

With FLOWCALL_SCREENSHOTS=1 the screenshots of each page are written to docs/dashboard/ (the
README shows them); otherwise to a temporary directory, so a CI run leaves the tree clean.
Skipped, saying why, when chromium or chromedriver is not installed (.ci/run installs them where
it can)."""
from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import time
import uuid
from datetime import datetime, timedelta, UTC
from pathlib import Path

import pytest
import requests

import dashboard_history
from service import ROOT, create_key, e2e_service

pytestmark = pytest.mark.e2e

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SCREENSHOTS = os.environ.get("FLOWCALL_SCREENSHOTS") == "1"      # read at import: the fixtures clean FLOWCALL_*
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage")
HOSTILE_MODEL = "<b>bold</b>.model"

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
    pytest.skip(f"no browser: {CHROMIUM} or {CHROMEDRIVER} is missing (apt-get install chromium chromium-driver)",
                allow_module_level=True)

from selenium import webdriver                          # noqa: E402 - only once a browser is known to exist
from selenium.webdriver.chrome.service import Service   # noqa: E402
from selenium.webdriver.common.by import By             # noqa: E402
from selenium.webdriver.support import expected_conditions as EC   # noqa: E402
from selenium.webdriver.support.ui import Select, WebDriverWait      # noqa: E402


@pytest.fixture(scope="module")
def service(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dashboard")
    with e2e_service(tmp) as svc:
        yield svc


@pytest.fixture(scope="module")
def shots(tmp_path_factory) -> Path:
    target = ROOT / "docs" / "dashboard" if SCREENSHOTS else tmp_path_factory.mktemp("shots")
    target.mkdir(parents=True, exist_ok=True)
    return target


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    options.add_argument("--window-size=1280,1400")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def _cli(env: dict, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "app.cli", *args], cwd=ROOT, env=env, capture_output=True, check=True)


def _key_id(key: str) -> str:
    return key.split("_")[1]                                             # fc_<id>_<secret>


@pytest.fixture(scope="module")
def tenant(service):
    """The first tenant: a month of priced history by two agents (agent-scoped keys) and the tenant's
    own key, a monthly budget and RPM/TPM limits on the tenant and its key; then today's calls through
    the service: by the two agents, failures, a hostile model name."""
    env, tenant_id = service["env"], service["tenant"]
    agents = [str(uuid.uuid4()), str(uuid.uuid4())]
    keys = [create_key(env, tenant_id, "--agent", agent)[0] for agent in agents]
    _cli(env, "tenants", "set", tenant_id, "--rpm", "600", "--tpm", "2000000", "--budget-usd", "10")
    _cli(env, "keys", "set", _key_id(service["key"]), "--rpm", "120", "--tpm", "400000", "--budget-usd", "3")
    history = dashboard_history.rows(tenant_id, [(agents[0], _key_id(keys[0])), (agents[1], _key_id(keys[1])),
                                                 (None, _key_id(service["key"]))])
    dashboard_history.write(env["FLOWCALL_DATABASE_URL"], history)
    url = f"{service['url']}/api/v3/llm/public/call"
    request_ids = []
    for i, body in enumerate([{"model": "mock.echo", "prompt": "hello"}] * 3 + [{"model": "mock.echo", "prompt": "x"}]
                             + [{"model": "nope.model", "prompt": "fails"}, {"model": HOSTILE_MODEL, "prompt": "y"}]):
        r = requests.post(url, json=body, headers={"X-Api-Key": keys[i % 2]}, timeout=30)
        request_ids.append(r.headers["X-Request-Id"])
    return {"agents": agents, "keys": keys, "request_ids": request_ids, "history": history}


def _submit(browser, element, arrived) -> None:
    """Click what submits a form, then wait (bounded) until the browser is on the page `arrived`
    accepts: a click returns when the navigation has begun, not when the next page is there."""
    old = browser.find_element(By.TAG_NAME, "html")
    element.click()
    WebDriverWait(browser, 15).until(EC.staleness_of(old))
    WebDriverWait(browser, 15).until(lambda b: arrived(b.current_url))


def _sign_in(browser, service, key: str) -> None:
    browser.delete_all_cookies()
    browser.get(f"{service['url']}/dashboard")
    assert browser.current_url.endswith("/dashboard/signin")
    browser.find_element(By.ID, "api_key").send_keys(key)
    _submit(browser, browser.find_element(By.ID, "signin"), lambda url: url.endswith("/dashboard"))


def _shot(browser, shots: Path, name: str) -> None:
    assert browser.save_screenshot(str(shots / f"{name}.png"))


def _usage(service, key: str, **params) -> dict:
    """The usage endpoint over the dashboard's default range (the last 30 UTC days; `to` is exclusive)."""
    today = datetime.now(UTC).date()
    params = {"from": (today - timedelta(days=29)).isoformat(), "to": (today + timedelta(days=1)).isoformat(),
              **params}
    r = requests.get(f"{service['url']}/api/v3/llm/usage", params=params, headers={"X-Api-Key": key}, timeout=10)
    assert r.status_code == 200
    return r.json()


def test_a_tenant_signs_in_reads_filters_opens_a_failure_exports_and_signs_out(browser, service, tenant, shots):
    browser.get(f"{service['url']}/dashboard/signin")
    _shot(browser, shots, "signin")
    _sign_in(browser, service, service["key"])
    history = tenant["history"]
    totals = _usage(service, service["key"])["totals"]
    assert (int(browser.find_element(By.ID, "total-calls").text.replace(",", "")) == totals["calls"]
            == len(history) + 6)
    assert (int(browser.find_element(By.ID, "total-errors").text.replace(",", "")) == totals["errors"]
            == sum(r["status"] >= 400 for r in history) + 2)
    assert int(browser.find_element(By.ID, "total-tokens").text.replace(",", "")) == totals["total_tokens"]
    _shot(browser, shots, "overview")

    # filter by agent: the overview's figures become that agent's
    Select(browser.find_element(By.ID, "agent-filter")).select_by_value(tenant["agents"][0])
    _submit(browser, browser.find_element(By.ID, "apply"), lambda url: tenant["agents"][0] in url)
    per_agent = {g["group"]: g for g in _usage(service, service["key"], group_by="agent")["groups"]}
    assert (int(browser.find_element(By.ID, "total-calls").text.replace(",", ""))
            == per_agent[tenant["agents"][0]]["calls"]
            == sum(r["agent_id"] == tenant["agents"][0] for r in history) + 3)

    browser.get(f"{service['url']}/dashboard/breakdowns?by=model&sort=calls")
    table = browser.find_element(By.ID, "breakdown").text
    assert HOSTILE_MODEL in table                                        # shown as text, not markup
    assert not browser.find_elements(By.CSS_SELECTOR, "#breakdown b")
    _shot(browser, shots, "breakdowns")

    browser.get(f"{service['url']}/dashboard/failures")
    _shot(browser, shots, "failures")
    failed = browser.find_elements(By.CSS_SELECTOR, "#latest-failures a.call-link")
    history_failed = {r["request_id"] for r in history if r["status"] >= 400}
    assert len(failed) == min(20, len(history_failed) + 2)
    assert {a.text for a in failed[:2]} == {tenant["request_ids"][4], tenant["request_ids"][5]}   # the newest
    assert {a.text for a in failed[2:]} <= history_failed
    _submit(browser, next(a for a in failed if a.text == tenant["request_ids"][4]),
            lambda url: "/dashboard/calls/" in url)
    assert browser.find_element(By.ID, "request-id").text == tenant["request_ids"][4]
    assert browser.find_element(By.ID, "error-code").text == "unknown_provider"
    assert "nope" in browser.find_element(By.ID, "error-message").text
    _shot(browser, shots, "call")

    browser.get(f"{service['url']}/dashboard/calls")
    _shot(browser, shots, "calls")
    href = browser.find_element(By.ID, "export-calls").get_attribute("href")
    cookie = browser.get_cookie("flowcall_dashboard")
    exported = requests.get(href, cookies={"flowcall_dashboard": cookie["value"]}, timeout=10)
    assert exported.status_code == 200 and exported.headers["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.text)))
    assert sorted(r["request_id"] for r in rows) == sorted(tenant["request_ids"] + [r["request_id"] for r in history])

    done, queued = _jobs(service)
    browser.get(f"{service['url']}/dashboard/jobs")
    table = browser.find_element(By.ID, "jobs")
    rows = {row.find_element(By.TAG_NAME, "code").text: row.text
            for row in table.find_elements(By.CSS_SELECTOR, "tbody tr")}
    assert " done " in rows[done] and "8 / 8" in rows[done]
    assert " queued " in rows[queued] and "0 / 3" in rows[queued]
    _shot(browser, shots, "jobs")
    browser.set_window_size(390, 1400)                                   # a phone-sized screen
    browser.get(f"{service['url']}/dashboard")
    assert browser.find_element(By.ID, "total-calls").is_displayed()
    # the page itself never scrolls sideways (wide tables scroll inside their box)
    assert browser.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
    _shot(browser, shots, "overview-phone")
    browser.set_window_size(1280, 1400)

    _submit(browser, browser.find_element(By.CSS_SELECTOR, "form.signout button"),
            lambda url: url.endswith("/dashboard/signin"))
    browser.get(f"{service['url']}/dashboard")
    assert browser.current_url.endswith("/dashboard/signin")
    stale = requests.get(href, cookies={"flowcall_dashboard": cookie["value"]}, timeout=10, allow_redirects=False)
    assert stale.status_code == 303                                      # the signed-out session is gone


def _jobs(service) -> tuple[str, str]:
    """Two batch jobs through the jobs API: one run to its end by `flowcall worker` (started here and
    stopped), one submitted after it and left queued -> their ids."""
    url, headers = f"{service['url']}/api/v3/llm/jobs", {"X-Api-Key": service["key"]}

    def submit(n: int) -> str:
        body = {"items": [{"id": f"ticket-{i}", "prompt": f"Classify ticket {i}"} for i in range(n)],
                "defaults": {"model": "mock.echo"}}
        r = requests.post(url, json=body, headers=headers, timeout=10)
        assert r.status_code == 202, r.text
        return r.json()["job_id"]

    done = submit(8)
    worker = subprocess.Popen([sys.executable, "-m", "app.cli", "worker", "--workers", "1"], cwd=ROOT,
                              env=service["env"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while requests.get(f"{url}/{done}", headers=headers, timeout=10).json()["status"] != "done":
            assert time.monotonic() < deadline and worker.poll() is None, "the worker did not finish the job"
            time.sleep(0.1)                                              # poll the job's state, bounded
    finally:
        worker.terminate()
        worker.wait(timeout=30)
    return done, submit(3)


def test_a_second_tenant_sees_none_of_the_first_tenants_data(browser, service, tenant):
    other_key, _ = create_key(service["env"])
    _sign_in(browser, service, other_key)
    assert browser.find_element(By.ID, "total-calls").text == "0"
    for page in ("/dashboard", "/dashboard/breakdowns?by=model", "/dashboard/breakdowns?by=agent",
                 "/dashboard/failures", "/dashboard/calls", "/dashboard/jobs"):
        browser.get(f"{service['url']}{page}")
        source = browser.page_source
        for secret in (*tenant["request_ids"], *tenant["agents"], "nope.model", "mock.echo", service["tenant"]):
            assert secret not in source, (page, secret)
