"""`python -m bench.callpath` traces one real-provider call through the project's modules."""
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
