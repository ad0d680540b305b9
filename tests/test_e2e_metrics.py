"""/metrics counts every gunicorn worker's requests, not just the one that answers the scrape."""
from __future__ import annotations

import os
import re

import pytest
import requests

from conftest import migrated_db_url
from service import clean_env, gunicorn

pytestmark = pytest.mark.e2e


def _calls(url: str, key: str, n: int) -> None:
    """n calls, each on a fresh connection so that gunicorn spreads them over its workers."""
    for _ in range(n):
        r = requests.post(f"{url}/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": "hi"},
                          headers={"X-Api-Key": key, "Connection": "close"}, timeout=30)
        assert r.status_code == 200


def test_metrics_aggregate_all_workers(tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = clean_env({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(prom_dir)})
    with gunicorn(env, workers=2) as svc:
        _calls(svc["url"], svc["key"], 40)
        worker_files = {m.group(1) for f in os.listdir(prom_dir) if (m := re.search(r"_(\d+)\.db$", f))}
        assert len(worker_files) == 2, f"both workers should have answered: {os.listdir(prom_dir)}"
        totals = []
        for _ in range(6):                  # scrapes land on either worker; each must see all 40 calls
            text = requests.get(f"{svc['url']}/metrics", headers={"Connection": "close"}, timeout=10).text
            match = re.search(r'^flowcall_requests_total\{endpoint="/api/v3/llm/public/call",status="200"\} (\S+)$',
                              text, re.M)
            totals.append(float(match.group(1)))
        assert totals == [40.0] * 6
