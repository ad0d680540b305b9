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
SCENARIOS = ("a_rate", "a_max", "a_idem", "b_hold", "c_batch", "d_image", "e_embed", "f_chat", "g_stream", "h_tools",
             "i_responses")
REQUESTS = 20
# Every phase ends at its REQUESTS; the duration is only a cap, kept well above what 20 requests take
# so a slow or busy machine (e_embed's 20 float-vector batches took over 5 s on a shared 2-core box)
# still finishes them: on a quiet machine the run is no longer for it.
PHASE_CAP_S = 20


def _number(value) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def test_quick_bench_runs_every_scenario_without_errors(tmp_path):
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--loadgen", "python", "--requests", str(REQUESTS),
         "--duration", str(PHASE_CAP_S), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
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
        assert scn["upstream_matches_direct"] is not False, name          # None: a body too large to keep
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

    for name in ("f_chat", "g_stream", "h_tools", "i_responses"):    # the direct path sends what flowcall sent
        assert result["scenarios"][name]["upstream_matches_direct"] is True, name
    stream = result["scenarios"]["g_stream"]
    for path in ("direct", "gateway"):                                  # every streamed answer had a first token
        assert stream[path]["ttft_ms"]["samples"] == REQUESTS, path
        assert stream[path]["ttft_ms"]["p50"] <= stream[path]["latency_ms"]["p50"], path
    assert all(_number(stream["added_ttft_ms"][p]) for p in ("p50", "p99"))
    tools = result["scenarios"]["h_tools"]
    assert tools["load"]["turns"] == 2 and tools["gateway"]["rounds_ms"]["rounds"] >= 1
    assert set(result["per_call"]) == {"f_chat", "h_tools", "i_responses"}
    assert all(_number(v["cpu_vs_f_chat"]) for v in result["per_call"].values())
    assert "batch_ms" in result["scenarios"]["c_batch"]["gateway"]
    assert result["scenarios"]["b_hold"]["gateway"]["fake"]["peak_in_flight"] >= 2   # calls really overlapped
    assert "c_batch" in proc.stdout and "peak RSS" in proc.stdout                    # the one-line summaries
