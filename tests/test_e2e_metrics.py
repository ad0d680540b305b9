"""/metrics counts every gunicorn worker's requests, not just the one that answers the scrape."""
from __future__ import annotations

import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from conftest import migrated_db_url
from fake_provider import FakeProvider
from service import e2e_service

pytestmark = pytest.mark.e2e
CALLS = 6


def test_metrics_aggregate_all_workers(tmp_path):
    """Two sync workers and a provider that takes 300 ms: six concurrent calls cannot all fit in one
    worker, so both answer some, and every scrape, whichever worker serves it, must count all six."""
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    with FakeProvider(latency_ms=300) as fake, e2e_service(
            tmp_path, fake, workers=2, extra_args=("-k", "sync"), database_url=migrated_db_url(tmp_path),
            extra_env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}) as svc:
        def one(_):
            return requests.post(f"{svc['url']}/api/v3/llm/public/call",
                                 json={"model": "openai.gpt-4o", "prompt": "hi"},
                                 headers={"X-Api-Key": svc["key"]}, timeout=30).status_code
        with ThreadPoolExecutor(CALLS) as pool:
            assert list(pool.map(one, range(CALLS))) == [200] * CALLS
        worker_files = {m.group(1) for f in os.listdir(prom_dir) if (m := re.search(r"_(\d+)\.db$", f))}
        assert len(worker_files) == 2, f"both workers should have answered: {os.listdir(prom_dir)}"
        for _ in range(4):          # scrapes land on either worker; each must see every call
            text = requests.get(f"{svc['url']}/metrics", timeout=10).text
            calls = re.search(r'^flowcall_requests_total\{endpoint="/api/v3/llm/public/call",status="200"\} (\S+)$',
                              text, re.M)
            attempts = re.search(r'^flowcall_provider_calls_total\{model="openai.gpt-4o",outcome="ok",'
                                 r'provider="openai"\} (\S+)$', text, re.M)
            assert float(calls.group(1)) == CALLS and float(attempts.group(1)) == CALLS
