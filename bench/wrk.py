"""The wrk backend for closed-loop phases (Debian's `wrk`, a C event loop: far cheaper per request
than any Python client, so more of the 2 cores are left to the gateway).

A generated Lua script sets the POST body and headers (optionally one header with a fresh value on
every request, as a platform's Idempotency-Key), counts statuses, keeps the
X-Flowcall-Overhead-Ms values, stops each thread after its share of the request budget, and prints
one JSON line from `done()` with wrk's own latency percentiles (from send to last byte).
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile

LUA = r"""
local threads = {}
wrk.method = "POST"
do
  local f = assert(io.open(%(body_file)s, "rb")); wrk.body = f:read("*a"); f:close()
end
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Connection"] = "keep-alive"
%(headers)s

function setup(thread) table.insert(threads, thread); thread:set("tid", #threads) end

function init(args)
  ov = {}; nov = 0; codes = {}; seen = 0; limit = %(per_thread)d; sent = 0
end
%(unique)s
function response(status, headers, body)
  seen = seen + 1
  codes[status] = (codes[status] or 0) + 1
  local v = headers["X-Flowcall-Overhead-Ms"] or headers["x-flowcall-overhead-ms"]
  if v and status < 300 and nov < 200000 then nov = nov + 1; ov[nov] = tonumber(v) end
  if seen >= limit then wrk.thread:stop() end
end

function done(summary, latency, requests)
  local codes_all, ovs = {}, {}
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("codes")) do codes_all[tostring(k)] = (codes_all[tostring(k)] or 0) + n end
    for _, x in ipairs(t:get("ov")) do ovs[#ovs + 1] = x end
  end
  local parts = {}
  for k, n in pairs(codes_all) do parts[#parts + 1] = string.format('"%%s":%%d', k, n) end
  local ovp = {}
  for i, x in ipairs(ovs) do ovp[i] = string.format("%%.3f", x) end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%%d,"duration_us":%%d,"bytes":%%d,' ..
    '"errors":{"connect":%%d,"read":%%d,"write":%%d,"status":%%d,"timeout":%%d},' ..
    '"latency_us":{"p50":%%d,"p95":%%d,"p99":%%d,"max":%%d,"mean":%%.1f},"statuses":{%%s},"overhead_ms":[%%s]}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max, latency.mean,
    table.concat(parts, ","), table.concat(ovp, ",")))
end
"""


def available() -> bool:
    return shutil.which("wrk") is not None


def _lua_string(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


UNIQUE = r"""
function request()
  sent = sent + 1
  wrk.headers[%(name)s] = %(prefix)s .. tid .. "-" .. sent
  return wrk.format()
end
"""


def run(url: str, headers: dict, body_file: str, connections: int, duration_s: float, timeout_s: float,
        max_requests: int, threads: int = 2, unique_header: str = "") -> dict:
    """One wrk run; returns the same shape of totals as bench.loadgen (percentiles instead of samples).
    `unique_header`: a header sent with a fresh value (unique to this run) on every request."""
    if not url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("the bench load generator only targets loopback addresses")
    threads = max(1, min(threads, connections))
    per_thread = max(1, -(-max_requests // threads))
    hdrs = "\n".join(f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items())
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as f:
        unique = UNIQUE % {"name": _lua_string(unique_header), "prefix": _lua_string(f"wrk-{os.urandom(6).hex()}-")} \
            if unique_header else ""
        f.write(LUA % {"headers": hdrs, "per_thread": per_thread, "body_file": _lua_string(body_file),
                       "unique": unique})
        script = f.name
    cmd = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{max(1, int(round(duration_s)))}s",
           "--timeout", f"{max(1, int(round(timeout_s)))}s", "-s", script, url]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    finally:
        os.unlink(script)
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("WRKJSON ")), None)
    if proc.returncode != 0 or line is None:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr[-2000:]} {proc.stdout[-2000:]}")
    raw = json.loads(line[len("WRKJSON "):])
    statuses = raw["statuses"]
    errors = {k: v for k, v in raw["errors"].items() if v and k != "status"}
    for code, n in statuses.items():
        if not code.startswith("2"):
            errors[f"http_{code}"] = errors.get(f"http_{code}", 0) + n
    ok = sum(n for code, n in statuses.items() if code.startswith("2"))
    lat = {k: v / 1000 for k, v in raw["latency_us"].items()}
    return {"ok": ok, "statuses": statuses, "errors": errors, "overhead_ms": raw["overhead_ms"],
            "latency_ms": lat, "wall_s": raw["duration_us"] / 1e6, "first_error": "", "tool": "wrk"}
