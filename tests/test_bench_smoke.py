"""`python -m bench` end to end with tiny numbers, so the benchmark cannot rot between real runs.

It starts the bench's fake provider and gunicorn (with ./gunicorn.conf.py) exactly as a full run
does, drives every scenario on both paths with the Python load generator (no wrk needed), and
checks the result file has what bench/README.md promises.
"""
from __future__ import annotations

import json
import numbers
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = ("a_rate", "a_max", "a_idem", "b_hold", "c_batch", "d_image", "e_embed")
REQUESTS = 20


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def test_quick_bench_runs_every_scenario_without_errors(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--loadgen", "python", "--requests", str(REQUESTS),
         "--duration", "5", "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(out.read_text())

    assert set(result["scenarios"]) == set(SCENARIOS)
    assert result["errors"] == 0
    assert _number(result["peak_rss_mb"]) and result["peak_rss_mb"] > 0
    assert result["serving"]["worker_class"] in ("gevent", "gthread")
    assert _number(result["ceiling"]["python"]["rps"]) and result["ceiling"]["python"]["rps"] > 0

    for name in SCENARIOS:
        scn = result["scenarios"][name]
        assert scn["errors"] == 0, (name, scn["direct"]["first_error"], scn["gateway"]["first_error"])
        batch_endpoint = name == "c_batch" and result["batch_mode"] == "endpoint"
        for path in ("direct", "gateway"):
            s = scn[path]
            expected = REQUESTS // scn["load"]["batch_size"] if batch_endpoint and path == "gateway" else REQUESTS
            assert s["ok"] == expected and s["errors"] == 0, (name, path, s["error_kinds"])
            assert _number(s["rps"]) and s["rps"] > 0
            assert all(_number(s["latency_ms"][p]) for p in ("p50", "p95", "p99")), (name, path)
            assert _number(s["gunicorn"]["cpu_s"]) and _number(s["fake"]["cpu_s"])
        assert all(_number(scn["added_ms"][p]) for p in ("p50", "p95", "p99")), name
        assert all(_number(scn["ratio"][p]) for p in ("p50", "p99")), name
        gw = scn["gateway"]
        assert gw["overhead_header_ms"]["samples"] == gw["ok"]            # every answer carried it
        assert _number(gw["overhead_header_ms"]["p50"]) and _number(gw["overhead_header_ms"]["p99"])
        assert _number(gw["gunicorn"]["cpu_ms_per_request"]) and _number(gw["gunicorn"]["peak_rss_mb"])
        assert gw["fake"]["requests"] == REQUESTS                          # each call reached the provider once

    assert "batch_ms" in result["scenarios"]["c_batch"]["gateway"]
    assert result["scenarios"]["b_hold"]["gateway"]["fake"]["peak_in_flight"] >= 2   # calls really overlapped
    assert "c_batch" in proc.stdout and "peak RSS" in proc.stdout                    # the one-line summaries
