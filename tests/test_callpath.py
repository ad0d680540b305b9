"""`python -m bench.callpath` and `python -m bench.inprocess` run: one real-provider call traced, CPU per call."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e          # starts the benchmark's fake provider as a subprocess
ROOT = Path(__file__).resolve().parent.parent


def test_callpath_lists_the_modules_one_call_visits():
    done = subprocess.run([sys.executable, "-m", "bench.callpath"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert re.fullmatch(r"\d+ modules visited by one call, \d+ distinct module-to-module calls, \d+ climbs back up",
                        lines[0]), lines[0]
    visited = {line.strip() for line in lines[1:] if not line.strip().startswith("climb:")}
    assert {"app.tenancy.gateway", "app.tenancy.ledger", "app.providers.openai_chat"} <= visited, visited


def test_inprocess_prints_cpu_per_call():
    done = subprocess.run([sys.executable, "-m", "bench.inprocess", "20"], cwd=ROOT, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    expected = r"\d+\.\d{3} ms CPU per call \(best of 3 rounds of 20; rounds: .*\)\n"
    assert re.fullmatch(expected, done.stdout), done.stdout
