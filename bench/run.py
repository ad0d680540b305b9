"""`python -m bench`: one run = fake provider + flowcall under gunicorn + every scenario, both paths.

See bench/README.md for what each number means. Exit status: 0 when the run completed (targets
missed are reported, not failures), 1 when a phase could not run, 3 with --strict and any error.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import datetime, UTC
from pathlib import Path

from . import loadgen, peer, procs, profile, scenarios, wrk
from .service import ROOT, FakeProvider, Gateway, http_json, serving_config

RESULTS = ROOT / "bench" / "results"
ALL = ("a_rate", "a_max", "a_idem", "b_hold", "c_batch", "d_image", "e_embed", "f_chat", "g_stream", "h_tools",
       "i_responses")
PG_BENCH_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/flowcall_bench"
REDIS_BENCH_URL = "redis://127.0.0.1:6379/12"
DISTURBED_CORES = 0.25     # CPU used by processes outside the run (cores) above which a phase is flagged


# -- numbers ------------------------------------------------------------------------------------------
def pct(values, p: float):
    """Nearest-rank percentile; None for no samples."""
    if not values:
        return None
    xs = sorted(values)
    k = max(0, min(len(xs) - 1, int(round(p / 100 * len(xs) + 0.5)) - 1))
    return xs[k]


def _r(x, nd=3):
    return None if x is None else round(x, nd)


def summarize(raw: dict, tool: str) -> dict:
    errors = sum(raw["errors"].values())
    if tool == "wrk":
        ok, lat = raw["ok"], raw["latency_ms"]
    else:
        ok = len(raw["latencies_ms"])
        xs = raw["latencies_ms"]
        lat = {"p50": pct(xs, 50), "p95": pct(xs, 95), "p99": pct(xs, 99), "max": max(xs) if xs else None,
               "mean": sum(xs) / len(xs) if xs else None}
    ov = raw["overhead_ms"]
    out = {"tool": tool, "ok": ok, "errors": errors, "error_kinds": raw["errors"],
           "first_error": raw.get("first_error", ""), "wall_s": _r(raw["wall_s"]),
           "rps": _r(ok / raw["wall_s"], 1) if raw["wall_s"] else 0.0,
           "latency_ms": {k: _r(v) for k, v in lat.items()},
           "overhead_header_ms": {"p50": _r(pct(ov, 50)), "p95": _r(pct(ov, 95)), "p99": _r(pct(ov, 99)),
                                  "samples": len(ov)},
           "loadgen_cpu_s": _r(raw.get("cpu_s")), "loadgen_peak_in_flight": raw.get("peak_in_flight")}
    if raw.get("bursts_ms"):
        b = raw["bursts_ms"]
        out["batch_ms"] = {"p50": _r(pct(b, 50)), "p95": _r(pct(b, 95)), "p99": _r(pct(b, 99)), "batches": len(b)}
    for key, count in (("ttft_ms", "samples"), ("rounds_ms", "rounds")):
        if raw.get(key):
            xs = raw[key]
            out[key] = {"p50": _r(pct(xs, 50)), "p95": _r(pct(xs, 95)), "p99": _r(pct(xs, 99)), count: len(xs)}
    return out


def tool_for(load: scenarios.Load, choice: str, python_only: bool = False) -> str:
    """wrk for duration-bound closed loops (wrk's run always lasts its -d, so a request-capped phase,
    whose wall time matters, goes to the Python generator); Python for everything else, and for what
    only it does (time to first token, several bodies in turn)."""
    if load.mode != "closed" or choice == "python" or load.max_requests < 10**6 or python_only:
        return "python"
    if wrk.available():
        return "wrk"
    if choice == "wrk":
        raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install -y wrk)")
    return "python"


def run_load(url: str, headers: dict, body_file: str | list[str], load: scenarios.Load, tool: str, py_procs: int,
             ttft: str = "") -> dict:
    body_files = body_file if isinstance(body_file, list) else [body_file]
    body_file = body_files[0]
    if tool == "wrk":
        raw = wrk.run(url, headers, body_file, load.connections, load.duration_s, load.timeout_s,
                      load.max_requests, unique_header=load.unique_header)
        raw["cpu_s"] = None
        return raw
    spec = {"url": url, "headers": headers, "body_file": body_file, "mode": load.mode,
            "connections": load.connections, "rate": load.rate, "burst": load.burst,
            "max_requests": load.max_requests, "duration_s": load.duration_s, "timeout_s": load.timeout_s,
            "expect": load.expect, "body_files": body_files, "ttft": ttft, "unique_header": load.unique_header}
    return loadgen.run(spec, py_procs)


# -- one phase, one scenario --------------------------------------------------------------------------
class Bench:
    def __init__(self, args, tmp: Path, fake: FakeProvider, gw: Gateway, sampler: procs.Sampler):
        self.args, self.tmp, self.fake, self.gw, self.sampler = args, tmp, fake, gw, sampler
        self.server_pid, self.server_key = gw.pid, "gunicorn"     # whose CPU and memory a phase measures

    def phase(self, label: str, url: str, headers: dict, body_file, load, tool: str, ttft: str = "") -> dict:
        gw_pids = procs.tree(self.server_pid)
        self.fake.reset()
        cpu0, fake0 = procs.cpu_seconds(gw_pids), self.fake.stats()["cpu_s"]
        kids0, busy0 = procs.children_cpu_seconds(), procs.machine_busy_seconds()
        self.sampler.phase = label
        self.sampler.record(label)
        started = time.monotonic()
        raw = run_load(url, headers, body_file, load, tool, self.args.loadgen_procs, ttft)
        wall = time.monotonic() - started
        self.sampler.record(label)
        self.sampler.phase = "idle"
        fstats = self.fake.stats()
        gw_cpu = procs.cpu_seconds(gw_pids) - cpu0
        fake_cpu = fstats["cpu_s"] - fake0
        loadgen_cpu = procs.children_cpu_seconds() - kids0
        busy = procs.machine_busy_seconds() - busy0
        s = summarize(raw, tool)
        s["loadgen_cpu_s"] = _r(loadgen_cpu)
        requests = s["ok"] + s["errors"]
        s[self.server_key] = {"cpu_s": _r(gw_cpu),
                              "cpu_ms_per_request": _r(gw_cpu / requests * 1000) if requests else None,
                              "cpu_util_cores": _r(gw_cpu / wall, 2),
                              "peak_rss_mb": _r(self.sampler.peaks.get(label, {}).get("rss_mb"), 1),
                              "peak_pss_mb": _r(self.sampler.peaks.get(label, {}).get("pss_mb"), 1),
                              "processes": self.sampler.peaks.get(label, {}).get("processes")}
        fake_cpu = fstats["cpu_s"] - fake0
        # CPU used on this machine by anything but the gateway, the fake and the load generator
        # (another job running beside the benchmark): when this is not ~0 the figures are disturbed.
        s["machine"] = {"busy_cores": _r(busy / wall, 2), "load_avg_1m": round(os.getloadavg()[0], 2),
                        "others_cores": _r(max(0.0, busy - gw_cpu - fake_cpu - loadgen_cpu) / wall, 2)}
        s["fake"] = {"requests": fstats["requests"], "peak_in_flight": fstats["peak_in_flight"],
                     "peak_connections": fstats["peak_connections"], "cpu_s": _r(fake_cpu),
                     "cpu_util_cores": _r(fake_cpu / wall, 2),
                     "cpu_ms_per_request": _r(fake_cpu / fstats["requests"] * 1000) if fstats["requests"] else None}
        return s

    def warm(self, scn: scenarios.Scenario, url: str, headers: dict, body_file) -> None:
        if not scn.warmup:
            return
        conns = max(1, min(scn.warmup, scn.load.connections or scn.load.burst or 1))
        load = scenarios.Load("closed", connections=conns, max_requests=scn.warmup,
                              duration_s=max(5.0, scn.upstream_ms / 1000 * 3), timeout_s=scn.load.timeout_s)
        run_load(url, headers, body_file, load, "python", 1)

    def body_files(self, scn: scenarios.Scenario) -> tuple[list[str], list[str]]:
        direct, gateway = scn.bodies()
        return ([scenarios.write_body(self.tmp, f"{scn.name}-direct-{i}", b) for i, b in enumerate(direct)],
                [scenarios.write_body(self.tmp, f"{scn.name}-gateway-{i}", b) for i, b in enumerate(gateway)])

    def upstream_matches_direct(self, scn: scenarios.Scenario) -> bool | None:
        """Did the gateway phase send the provider exactly the direct path's bodies (None: too large
        for the fake to keep)? A drifted direct body would compare flowcall with the wrong baseline."""
        direct, _ = scn.bodies()
        if any(len(json.dumps(b)) > 16 * 1024 for b in direct):
            return None
        seen = self.fake.seen()
        return all(b in seen for b in direct)

    def scenario(self, scn: scenarios.Scenario) -> dict:
        print(f"-- {scn.name}: {scn.title}", flush=True)
        self.fake.configure(scn.upstream_ms, scn.stream_gap_ms)
        d_file, g_file = self.body_files(scn)
        d_load = scn.direct_load or scn.load
        d_url = self.fake.url + scn.direct_path
        g_url = self.gw.url + scn.gateway_path
        g_headers = {"Authorization": f"Bearer {self.gw.key}"} if scn.bearer else {"X-Api-Key": self.gw.key}
        special = bool(scn.ttft or scn.turns)
        d_tool, g_tool = tool_for(d_load, self.args.loadgen, special), tool_for(scn.load, self.args.loadgen, special)
        direct = self.phase(f"{scn.name}:direct", d_url, {}, d_file, d_load, d_tool, scn.ttft)
        self.warm(scn, g_url, g_headers, g_file)
        gateway = self.phase(f"{scn.name}:gateway", g_url, g_headers, g_file, scn.load, g_tool, scn.ttft)
        matches = self.upstream_matches_direct(scn)
        if scn.gateway_path == scenarios.BATCH_PATH:     # one request is one whole batch
            gateway["batch_ms"] = {p: gateway["latency_ms"][p] for p in ("p50", "p95", "p99")}
            gateway["batch_ms"]["batches"] = gateway["ok"]
        result = {"name": scn.name, "title": scn.title, "upstream_ms": scn.upstream_ms,
                  "load": {**vars(scn.load), "gateway_path": scn.gateway_path, "batch_size": scn.batch_size,
                           "turns": 1 + len(scn.turns), "stream_gap_ms": scn.stream_gap_ms},
                  "note": scn.note, "direct": direct, "gateway": gateway, "upstream_matches_direct": matches}
        result["added_ms"], result["ratio"] = {}, {}
        for p in ("p50", "p95", "p99"):
            d, g = direct["latency_ms"].get(p), gateway["latency_ms"].get(p)
            result["added_ms"][p] = _r(g - d) if d is not None and g is not None else None
            result["ratio"][p] = _r(g / d, 2) if d and g is not None else None
        for key in ("batch_ms", "ttft_ms", "rounds_ms"):
            if key in direct and key in gateway:
                result[f"added_{key}"] = {p: _r(gateway[key][p] - direct[key][p]) for p in ("p50", "p95", "p99")}
        if matches is False:
            print("   WARNING: the direct path's body is not what flowcall sent the provider", flush=True)
        result["errors"] = direct["errors"] + gateway["errors"]
        result["peak_rss_mb"] = gateway["gunicorn"]["peak_rss_mb"]
        result["targets"] = check_targets(scn, result)
        print(summary_line(result), flush=True)
        return result

    def peer_scenario(self, scn: scenarios.Scenario, result: dict, server) -> None:
        """The scenario's direct bodies, under the direct path's load, through the peer gateway;
        into `result` as "peer", "peer_added_ms" (peer − direct) and "vs_peer"."""
        if scn.peer_na:
            result["peer"] = {"na": scn.peer_na}
            return
        print(f"-- {scn.name} on {server.name}", flush=True)
        self.fake.configure(scn.upstream_ms, scn.stream_gap_ms)
        d_files, _ = self.body_files(scn)
        load = scn.direct_load or scn.load
        url, headers = server.url + peer.route_for(scn.direct_path), {"Authorization": f"Bearer {server.key}"}
        self.warm(scn, url, headers, d_files)
        s = self.phase(f"{scn.name}:{server.name}", url, headers, d_files, load,
                       tool_for(load, self.args.loadgen, bool(scn.ttft or scn.turns)), scn.ttft)
        direct = result["direct"]
        result["peer"] = s
        result["peer_added_ms"] = {p: _r(s["latency_ms"][p] - direct["latency_ms"][p])
                                   if s["latency_ms"].get(p) is not None and direct["latency_ms"].get(p) is not None
                                   else None for p in ("p50", "p95", "p99")}
        for key in ("batch_ms", "ttft_ms", "rounds_ms"):
            if key in direct and key in s:
                result[f"peer_added_{key}"] = {p: _r(s[key][p] - direct[key][p]) for p in ("p50", "p95", "p99")}
        result["vs_peer"] = peer.compare(result)

    def ceiling(self) -> dict:
        """How far the load generators and the fake go on their own (direct, upstream 0 ms)."""
        print("-- ceiling: load generator -> fake provider, upstream 0 ms, closed loop", flush=True)
        self.fake.configure(0)
        body = scenarios.write_body(self.tmp, "ceiling", scenarios.openai_request(scenarios.PROMPT))
        url = self.fake.url + scenarios.OPENAI_PATH
        load = scenarios.Load("closed", connections=self.args.a_concurrency,
                              max_requests=self.args.requests or 10**7, duration_s=min(self.args.duration, 5.0))
        out = {}
        tools = ["python"] + (["wrk"] if wrk.available() and self.args.loadgen != "python" else [])
        for tool in tools:
            s = self.phase(f"ceiling:{tool}", url, {}, body, load, tool)
            out[tool] = {"rps": s["rps"], "errors": s["errors"], "latency_ms": s["latency_ms"],
                         "loadgen_cpu_s": s["loadgen_cpu_s"], "fake_cpu_util_cores": s["fake"]["cpu_util_cores"],
                         "fake_cpu_ms_per_request": s["fake"]["cpu_ms_per_request"]}
            print(f"   {tool}: {s['rps']:.0f} requests/s, errors {s['errors']}, fake CPU "
                  f"{s['fake']['cpu_ms_per_request']} ms/request ({s['fake']['cpu_util_cores']} cores)", flush=True)
        return out

    def profile(self) -> dict | None:
        """A separate gateway run of scenario (a)'s max-throughput load under py-spy (never the figures)."""
        if not profile.available():
            return {"error": "py-spy is not installed (pip install py-spy)"}
        print("-- profile: py-spy on the gunicorn workers under scenario a_max's load", flush=True)
        self.fake.configure(0)
        body = scenarios.write_body(self.tmp, "profile", scenarios.gateway_call())
        out_path = str(self.tmp / "profile.raw")
        dur = self.args.profile
        load = scenarios.Load("closed", connections=self.args.a_concurrency, max_requests=10**7, duration_s=dur)
        spy = profile.start(self.gw.pid, dur, out_path)
        time.sleep(0.5)
        run_load(self.gw.url + scenarios.CALL_PATH, {"X-Api-Key": self.gw.key}, body, load,
                 tool_for(load, self.args.loadgen), self.args.loadgen_procs)
        try:
            _, err = spy.communicate(timeout=dur + 30)
        except subprocess.TimeoutExpired:
            spy.kill()
            _, err = spy.communicate()
        if not os.path.exists(out_path):
            return {"error": f"py-spy wrote nothing: {err.decode()[-1000:]}"}
        summary = profile.summarize(out_path)
        RESULTS.mkdir(parents=True, exist_ok=True)
        kept = RESULTS / f"profile-{self.args.stamp}.txt"
        shutil.copy(out_path, kept)
        summary["raw_file"] = str(kept.relative_to(ROOT))
        for row in summary["self"][:12]:
            print(f"   self {row['share'] * 100:5.1f}%  {row['function']}", flush=True)
        for row in summary["layers"]:
            print(f"   layer {row['share'] * 100:5.1f}%  {row['layer']}", flush=True)
        return summary


def check_targets(scn: scenarios.Scenario, r: dict) -> list[dict]:
    g = r["gateway"]
    measured = {"added_p50_ms": r["added_ms"]["p50"], "added_p99_ms": r["added_ms"]["p99"],
                "gateway_rps": g["rps"], "errors": r["errors"], "peak_rss_mb": r["peak_rss_mb"],
                "held": g["fake"]["peak_in_flight"], "added_ttft_p50_ms": r.get("added_ttft_ms", {}).get("p50")}
    out = []
    for name, target in scn.targets.items():
        value = measured[name]
        met = value is not None and (value >= target if name in ("gateway_rps", "held") else value <= target)
        out.append({"name": name, "target": target, "measured": value, "met": met})
    return out


def summary_line(r: dict) -> str:
    d, g = r["direct"], r["gateway"]
    lat = lambda s: f"p50 {s['latency_ms']['p50']} p99 {s['latency_ms']['p99']}"   # noqa: E731
    parts = [f"{r['name']:8s} gateway {g['rps']:.0f} rps ({lat(g)} ms) vs direct {d['rps']:.0f} rps ({lat(d)} ms)",
             f"added p50 {r['added_ms']['p50']} / p95 {r['added_ms']['p95']} / p99 {r['added_ms']['p99']} ms "
             f"(x{r['ratio']['p50']} / x{r['ratio']['p99']})",
             f"X-Flowcall-Overhead-Ms p50 {g['overhead_header_ms']['p50']} p99 {g['overhead_header_ms']['p99']}",
             f"gunicorn {g['gunicorn']['cpu_ms_per_request']} ms CPU/req, peak RSS {g['gunicorn']['peak_rss_mb']} MB",
             f"upstream in flight peak {g['fake']['peak_in_flight']}", f"errors {r['errors']}"]
    if "added_batch_ms" in r:
        parts.insert(2, f"batch p50 {g['batch_ms']['p50']} ms (added {r['added_batch_ms']['p50']})")
    if "added_ttft_ms" in r:
        parts.insert(2, f"first token p50 {g['ttft_ms']['p50']} p99 {g['ttft_ms']['p99']} ms "
                        f"(added p50 {r['added_ttft_ms']['p50']} / p99 {r['added_ttft_ms']['p99']})")
    if "added_rounds_ms" in r:
        parts.insert(2, f"round trip p50 {g['rounds_ms']['p50']} ms (added {r['added_rounds_ms']['p50']})")
    others = max(d["machine"]["others_cores"] or 0, g["machine"]["others_cores"] or 0)
    if others > DISTURBED_CORES:
        parts.append(f"DISTURBED: other jobs used {others} cores")
    missed = [t["name"] for t in r["targets"] if not t["met"]]
    if r["targets"]:
        parts.append("targets met" if not missed else "MISSED " + ",".join(missed))
    return "   " + "; ".join(parts)


# -- the run ------------------------------------------------------------------------------------------
def machine() -> dict:
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), "")
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    versions = {}
    for dist in ("gunicorn", "gevent", "flask", "sqlalchemy", "requests", "marshmallow"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = None
    wrk_v = None
    if wrk.available():
        wrk_v = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout.split("\n")[0].strip()
    return {"nproc": os.cpu_count(), "cpu_model": model, "mem_gb": round(mem, 1), "python": platform.python_version(),
            "kernel": platform.release(), "versions": versions, "wrk": wrk_v, "python_speed_us": python_speed_us()}


def python_speed_us() -> float:
    """Microseconds this machine's Python takes for `sum(range(1000))`, best of 5: a yardstick for
    comparing CPU-per-call figures across machines (the same code's figures scale with it)."""
    import timeit
    return round(min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) / 2000 * 1e6, 1)


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m bench", description="flowcall gateway benchmark (see bench/README.md)")
    ap.add_argument("--quick", action="store_true",
                    help="tiny run: 20 requests per phase, low concurrency, short upstream delays, no warm-up")
    ap.add_argument("--scenarios", default=",".join(ALL), help=f"comma list of {', '.join(ALL)} (default all)")
    ap.add_argument("--duration", type=float, default=None, help="seconds per phase (default 10; --quick 5)")
    ap.add_argument("--requests", type=int, default=None, help="request cap per phase (default: duration-bound)")
    ap.add_argument("--warmup", type=int, default=None, help="gateway warm-up requests per scenario (default 200)")
    ap.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto",
                    help="closed-loop phases use wrk when installed (auto); open-loop and batch use Python")
    ap.add_argument("--loadgen-procs", type=int, default=1, help="processes for the Python load generator")
    ap.add_argument("--rate", type=float, default=None, help="scenario a_rate: requests/s (default 200)")
    ap.add_argument("--rate-connections", type=int, default=256, help="a_rate: connection cap of the open loop")
    ap.add_argument("--a-concurrency", type=int, default=None, help="a_max: connections (default 64)")
    ap.add_argument("--b-concurrency", type=int, default=None, help="b_hold: concurrent clients (default 1000)")
    ap.add_argument("--b-latency-ms", type=int, default=None, help="b_hold: upstream delay (default 1000)")
    ap.add_argument("--c-size", type=int, default=20, help="c_batch: calls per batch")
    ap.add_argument("--c-latency-ms", type=int, default=0, help="c_batch: upstream delay")
    ap.add_argument("--c-mode", choices=("auto", "fanout", "endpoint"), default="auto",
                    help="c_batch: concurrent single calls, or POST /api/v3/llm/batch "
                         "(auto: the endpoint if it exists)")
    ap.add_argument("--d-image-mb", type=float, default=5.0, help="d_image: image size in MB")
    ap.add_argument("--d-concurrency", type=int, default=2, help="d_image: connections")
    ap.add_argument("--e-size", type=int, default=100, help="e_embed: inputs per embeddings request")
    ap.add_argument("--e-concurrency", type=int, default=None, help="e_embed: connections (default 4; --quick 2)")
    ap.add_argument("--v1-concurrency", type=int, default=None,
                    help="f_chat, h_tools, i_responses: connections (default 50; --quick 4)")
    ap.add_argument("--g-rate", type=float, default=100.0, help="g_stream: requests/s (default 100)")
    ap.add_argument("--g-gap-ms", type=int, default=None,
                    help="g_stream: the fake's pause between content events (default 5; --quick 1)")
    ap.add_argument("--i-store", action="store_true", help="i_responses: send store: true (default false)")
    ap.add_argument("--peer", choices=sorted(peer.PEERS),
                    help="also run the scenarios against this gateway (installed once into its own virtualenv "
                         "under ~/.cache/flowcall-bench) and print flowcall vs it; see bench/peer.py")
    ap.add_argument("--peer-workers", type=int, default=2, help="the peer's worker processes (default 2)")
    ap.add_argument("--workers", type=int, help="WEB_CONCURRENCY for this run")
    ap.add_argument("--worker-class", help="FLOWCALL_WORKER_CLASS for this run (gthread, gevent, sync)")
    ap.add_argument("--threads", type=int, help="FLOWCALL_THREADS for this run")
    ap.add_argument("--worker-connections", type=int, help="FLOWCALL_WORKER_CONNECTIONS for this run")
    ap.add_argument("--database-url", help="FLOWCALL_DATABASE_URL for this run (default: a fresh SQLite file); "
                                           "the database is migrated and gets one API key")
    ap.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite",
                    help="postgres: the store on PostgreSQL (--database-url, default " + PG_BENCH_URL + ", created "
                         "if missing) and the counters on Redis (--redis-url, default " + REDIS_BENCH_URL + ")")
    ap.add_argument("--redis-url", help="FLOWCALL_REDIS_URL for this run (rate counters; flushed first)")
    ap.add_argument("--wsgi", default="wsgi:app", help="the WSGI app gunicorn serves (default wsgi:app)")
    ap.add_argument("--gunicorn-args", default="", help="extra gunicorn command-line arguments (they win over "
                                                         "gunicorn.conf.py), e.g. \"--pythonpath tests\"")
    ap.add_argument("--profile", type=float, default=0, metavar="SECONDS",
                    help="also profile the workers with py-spy under a_max's load for SECONDS (a separate run)")
    ap.add_argument("--no-ceiling", action="store_true", help="skip the load generator ceiling measurement")
    ap.add_argument("--out", help="result file (default bench/results/<timestamp>.json)")
    ap.add_argument("--strict", action="store_true", help="exit 3 when any request failed")
    args = ap.parse_args(argv)
    q = args.quick
    args.duration = args.duration or (5.0 if q else 10.0)
    args.requests = args.requests if args.requests is not None else (20 if q else 0)
    args.warmup = args.warmup if args.warmup is not None else (0 if q else 200)
    args.rate = args.rate or (100.0 if q else 200.0)
    args.a_concurrency = args.a_concurrency or (4 if q else 64)
    args.b_concurrency = args.b_concurrency or (20 if q else 1000)
    args.b_latency_ms = args.b_latency_ms if args.b_latency_ms is not None else (100 if q else 1000)
    args.e_concurrency = args.e_concurrency or (2 if q else 4)
    args.v1_concurrency = args.v1_concurrency or (4 if q else 50)
    args.g_gap_ms = args.g_gap_ms if args.g_gap_ms is not None else (1 if q else 5)
    if q:
        args.c_size = min(args.c_size, 5)
        args.d_image_mb = min(args.d_image_mb, 1.0)
    args.scenarios = [s.strip() for s in args.scenarios.split(",") if s.strip()]
    unknown = set(args.scenarios) - set(ALL)
    if unknown:
        ap.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.store == "postgres":
        args.database_url = args.database_url or PG_BENCH_URL
        args.redis_url = args.redis_url or REDIS_BENCH_URL
    args.stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return args


def per_call_costs(results: dict) -> dict | None:
    """Tool calls and the Responses API against plain chat completions in the same run: CPU per call
    and added p50 of each, and the CPU ratio to f_chat's (the target: no more than 1)."""
    base = results.get("f_chat")
    if not base:
        return None
    base_cpu = base["gateway"]["gunicorn"]["cpu_ms_per_request"]
    out = {}
    for name in ("f_chat", "h_tools", "i_responses"):
        if name in results:
            cpu = results[name]["gateway"]["gunicorn"]["cpu_ms_per_request"]
            out[name] = {"cpu_ms_per_request": cpu, "added_p50_ms": results[name]["added_ms"]["p50"],
                         "cpu_vs_f_chat": _r(cpu / base_cpu, 2) if cpu is not None and base_cpu else None}
    if len(out) > 1:
        print("per call, against f_chat: " + "; ".join(
            f"{k} {v['cpu_ms_per_request']} ms CPU (x{v['cpu_vs_f_chat']}), added p50 {v['added_p50_ms']} ms"
            for k, v in out.items()), flush=True)
    return out


def run_peer(args, tmp: Path, fake: FakeProvider, bench: Bench, built: list, result: dict) -> dict:
    """Every built scenario against the peer gateway, measured as flowcall was; prints the comparison."""
    print(f"-- peer: {args.peer}, {args.peer_workers} workers", flush=True)
    server = peer.PEERS[args.peer](fake.url, tmp, workers=args.peer_workers)
    psampler = procs.Sampler(server.pid)
    psampler.start()
    saved = bench.server_pid, bench.server_key, bench.sampler
    bench.server_pid, bench.server_key, bench.sampler = server.pid, "server", psampler
    try:
        for scn in built:
            bench.peer_scenario(scn, result["scenarios"][scn.name], server)
        out = {"name": server.name, "version": server.version, "workers": server.workers,
               "idle_rss_mb": _r(psampler.peaks.get("idle", {}).get("rss_mb"), 1),
               "peak_rss_mb": _r(max((p["rss_mb"] for p in psampler.peaks.values()), default=0.0), 1),
               "peak_pss_mb": _r(max((p["pss_mb"] for p in psampler.peaks.values()), default=0.0), 1),
               "errors": sum(s["peer"].get("errors", 0) for s in result["scenarios"].values() if "peer" in s),
               "log_tail": server.log_tail(1500)}
    finally:
        bench.server_pid, bench.server_key, bench.sampler = saved
        psampler.stop()
        server.stop()
    for line in peer.comparison_lines(args.peer, result["scenarios"]):
        print(line, flush=True)
    print(f"   whole run: peak RSS flowcall {result['peak_rss_mb']} MB (PSS {result['peak_pss_mb']}) vs "
          f"{args.peer} {out['peak_rss_mb']} MB (PSS {out['peak_pss_mb']})", flush=True)
    return out


def ensure_database(url: str) -> None:
    """Create the PostgreSQL database of `url` when it does not exist (its server must answer)."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    target = make_url(url)
    admin = create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                  {"n": target.database}).first()
            if not exists:
                conn.execute(text(f'CREATE DATABASE "{target.database}"'))
    finally:
        admin.dispose()


def flush_redis(url: str) -> None:
    """Empty the run's Redis database: counters of an earlier run would rate-limit this one."""
    import redis
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def resolve_batch_mode(args, gw: Gateway) -> str:
    if args.c_mode != "auto":
        return args.c_mode
    status, _ = http_json("POST", gw.url + scenarios.BATCH_PATH, {"items": []}, headers={"X-Api-Key": gw.key})
    return "fanout" if status in (404, 405) else "endpoint"


def main(argv=None) -> int:
    args = parse_args(argv)
    serving = {"WEB_CONCURRENCY": args.workers, "FLOWCALL_WORKER_CLASS": args.worker_class,
               "FLOWCALL_THREADS": args.threads, "FLOWCALL_WORKER_CONNECTIONS": args.worker_connections,
               "FLOWCALL_DATABASE_URL": args.database_url, "FLOWCALL_REDIS_URL": args.redis_url}
    if args.database_url and args.database_url.startswith("postgresql"):
        ensure_database(args.database_url)      # the gateway then migrates it (flowcall db upgrade)
    if args.redis_url:
        flush_redis(args.redis_url)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="flowcall-bench-") as tmp_s:
        tmp = Path(tmp_s)
        fake = FakeProvider()
        gw = sampler = None
        try:
            gw = Gateway(fake.url, tmp, serving, extra_args=tuple(shlex.split(args.gunicorn_args)), fake=fake,
                         wsgi=args.wsgi)    # migrates and makes a key while the fake starts
            config = serving_config(gw.env)
            print(f"flowcall bench: gunicorn {config.get('worker_class')} workers={config.get('workers')} "
                  f"threads={config.get('threads')} worker_connections={config.get('worker_connections')}; "
                  f"fake provider {fake.url}; loadgen {args.loadgen}", flush=True)
            sampler = procs.Sampler(gw.pid)
            sampler.start()
            bench = Bench(args, tmp, fake, gw, sampler)
            args.c_mode_resolved = resolve_batch_mode(args, gw) if "c_batch" in args.scenarios else "fanout"
            result = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
                      "command": "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv),
                      "serving": config, "database": (args.database_url or "sqlite (temporary file)").split("@")[-1],
                      "redis": args.redis_url.split("@")[-1] if args.redis_url else None,
                      "batch_mode": args.c_mode_resolved, "ceiling": None,
                      "scenarios": {}, "profile": None}
            print(f"machine: {result['machine']['nproc']} x {result['machine']['cpu_model']}; Python "
                  f"sum(range(1000)) {result['machine']['python_speed_us']} us (the yardstick across machines)",
                  flush=True)
            if not args.no_ceiling:
                result["ceiling"] = bench.ceiling()
            built = scenarios.build(args)
            for scn in built:
                result["scenarios"][scn.name] = bench.scenario(scn)
            if args.profile:
                result["profile"] = bench.profile()
            result["idle_rss_mb"] = _r(sampler.peaks.get("idle", {}).get("rss_mb"), 1)
            result["peak_rss_mb"] = _r(max((p["rss_mb"] for p in sampler.peaks.values()), default=0.0), 1)
            result["peak_pss_mb"] = _r(max((p["pss_mb"] for p in sampler.peaks.values()), default=0.0), 1)
            result["per_call"] = per_call_costs(result["scenarios"])
            if args.peer:
                result["peer"] = run_peer(args, tmp, fake, bench, built, result)
            result["errors"] = sum(s["errors"] for s in result["scenarios"].values())
            result["elapsed_s"] = _r(time.monotonic() - started, 1)
            gunicorn_log = gw.log_tail(3000)
            result["gunicorn_log_tail"] = gunicorn_log[-1500:]
        finally:   # each stop on its own, so one failing never leaves a server running
            for stop in (sampler.stop if sampler else None, gw.stop if gw else None, fake.stop):
                try:
                    if stop is not None:
                        stop()
                except Exception as exc:  # noqa: BLE001 - report and go on stopping the rest
                    print(f"bench: cleanup step failed: {exc!r}", file=sys.stderr)
    out = Path(args.out) if args.out else RESULTS / f"{args.stamp}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))
    print(f"peak RSS (gunicorn master + workers) {result['peak_rss_mb']} MB; errors {result['errors']}; "
          f"{result['elapsed_s']} s; results in {out}", flush=True)
    return 3 if args.strict and result["errors"] else 0
