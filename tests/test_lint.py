"""The code passes ruff as configured in pyproject.toml ([tool.ruff]), so `pytest` alone is the lint gate."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PATHS = ("app", "nodes", "tests", "bench", "wsgi.py", "gunicorn.conf.py")


def test_ruff_finds_nothing():
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", *PATHS], cwd=ROOT,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
