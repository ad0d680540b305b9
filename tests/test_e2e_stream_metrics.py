"""Streamed calls are counted in /metrics like whole ones: provider attempts and tokens."""
from __future__ import annotations

import re

import pytest
import requests

from conftest import migrated_db_url
from service import e2e_service

pytestmark = pytest.mark.e2e


def _sample(text: str, pattern: str) -> float:
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_streamed_call_records_provider_metrics(fake, tmp_path):
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    with e2e_service(tmp_path, fake, workers=1, database_url=migrated_db_url(tmp_path),
                     extra_env={"PROMETHEUS_MULTIPROC_DIR": str(prom_dir)}) as svc:
        resp = requests.post(f"{svc['url']}/v1/chat/completions", timeout=30,
                             headers={"Authorization": f"Bearer {svc['key']}"},
                             json={"model": "openai.gpt-4o", "stream": True,
                                   "messages": [{"role": "user", "content": "What is the capital of France?"}]})
        assert resp.status_code == 200 and "[DONE]" in resp.text
        text = requests.get(f"{svc['url']}/metrics", timeout=10).text
        attempts = _sample(text, r'^flowcall_provider_calls_total\{model="openai.gpt-4o",outcome="ok",'
                                 r'provider="openai"\} (\S+)$')
        tokens_out = _sample(text, r'^flowcall_tokens_total\{direction="output",provider="openai"\} (\S+)$')
        assert attempts == 1
        assert tokens_out > 0
