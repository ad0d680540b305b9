"""`python -m bench --peer litellm`: the same scenarios against LiteLLM's proxy in the same run.

LiteLLM is never a dependency of flowcall: it is installed, at the pinned version, into a
virtualenv of its own under the cache directory (`~/.cache/flowcall-bench/litellm-<version>`, or
`$FLOWCALL_BENCH_CACHE`), once, and started from there with 2 workers on 127.0.0.1, its config
pointing `openai/<model>` at the bench's fake provider with a dummy key, a master key, no database
and no logging callbacks. Each scenario the peer can run gets the direct path's body (the exact
body the provider receives, so the model names are the provider's) on LiteLLM's OpenAI-shaped
route, under the direct path's load, measured as flowcall's gunicorn is (/proc CPU and memory of
the process tree). What it cannot run is printed as n/a with the reason.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from .service import ServerProcess, free_port, http_json

# The newest release whose `litellm[proxy]` installed from the package index this bench was run
# against on 2026-11-29: the later ones checked (1.108.8, 1.108.9, 1.108.11-14, 1.109.3, 1.110.2)
# pin litellm-proxy, litellm-proxy-extras or litellm-enterprise releases that index did not serve.
# 1.82.7 and 1.82.8 were compromised releases (March 2026) and are refused whatever is asked.
LITELLM_VERSION = "1.108.7"
COMPROMISED = frozenset({"1.82.7", "1.82.8"})
MASTER_KEY = "sk-bench-litellm-master-0123456789"
UPSTREAM_KEY = "sk-bench-openai-0123456789"          # the fake takes any key
MODELS = ("gpt-4o", "text-embedding-3-small")        # the provider's names, as the direct bodies carry them
OPENAI_PREFIX = "/openai"                            # the fake serves OpenAI under /openai/v1


def cache_dir() -> Path:
    return Path(os.environ.get("FLOWCALL_BENCH_CACHE") or Path.home() / ".cache" / "flowcall-bench")


def litellm_config(fake_url: str, master_key: str = MASTER_KEY) -> dict:
    """The proxy's config (LiteLLM reads YAML, and JSON is YAML): every model the scenarios name, as
    `openai/<model>` at the fake; the master key; nothing that needs a database or logs requests."""
    return {
        "model_list": [{"model_name": m, "litellm_params": {"model": f"openai/{m}",
                                                             "api_base": f"{fake_url}{OPENAI_PREFIX}/v1",
                                                             "api_key": UPSTREAM_KEY}} for m in MODELS],
        "litellm_settings": {"drop_params": False, "turn_off_message_logging": True, "callbacks": [],
                             "success_callback": [], "failure_callback": [], "telemetry": False},
        "general_settings": {"master_key": master_key, "disable_spend_logs": True,
                             "disable_error_logs": True, "allow_requests_on_db_unavailable": True},
    }


def route_for(direct_path: str) -> str:
    """The peer's route for a direct path at the fake: /openai/v1/chat/completions -> /v1/chat/completions."""
    return direct_path[len(OPENAI_PREFIX):] if direct_path.startswith(OPENAI_PREFIX + "/") else direct_path


def check_version(version: str) -> str:
    if version in COMPROMISED:
        raise SystemExit(f"litellm {version} was a compromised release: refusing to install it")
    return version


def install(version: str = LITELLM_VERSION, root: Path | None = None, log=print) -> Path:
    """The `litellm` executable of a virtualenv holding `litellm[proxy]==version`, made once."""
    check_version(version)
    venv = (root or cache_dir()) / f"litellm-{version}"
    exe, marker = venv / "bin" / "litellm", venv / ".installed"
    if marker.exists() and exe.exists():
        return exe
    log(f"   installing litellm[proxy]=={version} into {venv} (once)")
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True)
    done = subprocess.run([str(venv / "bin" / "pip"), "install", "-q", f"litellm[proxy]=={version}"],
                          capture_output=True, text=True, timeout=1800)
    if done.returncode != 0 or not exe.exists():
        raise RuntimeError(f"installing litellm[proxy]=={version} failed: {done.stderr[-2000:]}")
    marker.write_text(version + "\n")
    return exe


class LiteLLMProxy(ServerProcess):
    """LiteLLM's proxy with `workers` workers on 127.0.0.1; `pid` the process whose tree is measured.

    Served by gunicorn with uvicorn workers (`--run_gunicorn`, LiteLLM's option for several workers):
    under uvicorn's own multi-process mode, on a busy 2-core box, workers still importing the proxy
    missed uvicorn's 5 s liveness ping and were killed and restarted over and over."""

    name = "litellm"

    def __init__(self, fake_url: str, tmp: Path, workers: int = 2, version: str = LITELLM_VERSION):
        exe = install(version)
        self.version, self.workers, self.key = version, workers, MASTER_KEY
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = tmp / "litellm-config.yaml"
        config.write_text(json.dumps(litellm_config(fake_url), indent=1))
        env = {k: v for k, v in os.environ.items()
               if not (k.startswith(("LITELLM_", "DATABASE_", "REDIS_")) or k.endswith(("_API_KEY", "_BASE_URL")))}
        env.update({"LITELLM_LOCAL_MODEL_COST_MAP": "True",     # no fetch of the cost map at start
                    "LITELLM_LOG": "ERROR", "LITELLM_MODE": "PRODUCTION", "NO_DOCS": "True"})
        self.log_path = tmp / "litellm.log"
        self._log = open(self.log_path, "wb")     # noqa: SIM115 - the proxy's log for its whole life
        self.proc = subprocess.Popen([str(exe), "--config", str(config), "--host", "127.0.0.1",
                                      "--port", str(self.port), "--num_workers", str(workers), "--run_gunicorn"],
                                     cwd=tmp, env=env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self._wait_ready(300.0)

    def _wait_ready(self, timeout: float) -> None:
        """Ready when a chat completion goes through (every worker answers /health/liveliness early)."""
        deadline = time.monotonic() + timeout
        body = {"model": MODELS[0], "messages": [{"role": "user", "content": "ready?"}]}
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                status, _ = http_json("POST", f"{self.url}/v1/chat/completions", body, timeout=5,
                                      headers={"Authorization": f"Bearer {self.key}"})
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.5)
        tail = self.log_tail()
        self.stop()
        raise RuntimeError(f"litellm did not become ready:\n{tail}")


PEERS = {"litellm": LiteLLMProxy}


# -- the comparison --------------------------------------------------------------------------------
def _ratio(a, b, nd=2):
    return round(a / b, nd) if a is not None and b else None


def compare(scn: dict) -> dict:
    """flowcall against the peer in one scenario's result: throughput ratio (flowcall ÷ peer, above 1
    is flowcall ahead), added latency of each, CPU per call and peak memory of each."""
    g, p = scn["gateway"], scn["peer"]
    gs, ps = g["gunicorn"], p["server"]
    out = {"rps": {"flowcall": g["rps"], "peer": p["rps"], "ratio": _ratio(g["rps"], p["rps"])},
           "added_p50_ms": {"flowcall": scn["added_ms"]["p50"], "peer": scn["peer_added_ms"]["p50"]},
           "added_p99_ms": {"flowcall": scn["added_ms"]["p99"], "peer": scn["peer_added_ms"]["p99"]},
           "cpu_ms_per_request": {"flowcall": gs["cpu_ms_per_request"], "peer": ps["cpu_ms_per_request"],
                                  "ratio": _ratio(ps["cpu_ms_per_request"], gs["cpu_ms_per_request"])},
           "peak_rss_mb": {"flowcall": gs["peak_rss_mb"], "peer": ps["peak_rss_mb"]},
           "peak_pss_mb": {"flowcall": gs["peak_pss_mb"], "peer": ps["peak_pss_mb"]},
           "errors": {"flowcall": g["errors"], "peer": p["errors"]}}
    if "added_ttft_ms" in scn and "peer_added_ttft_ms" in scn:
        out["added_ttft_p50_ms"] = {"flowcall": scn["added_ttft_ms"]["p50"], "peer": scn["peer_added_ttft_ms"]["p50"]}
    return out


def comparison_lines(peer_name: str, scenarios: dict) -> list[str]:
    """One line a scenario: flowcall vs the peer, and the ratio; n/a with the reason where it did not run."""
    lines = [f"flowcall vs {peer_name} (same run, same fake provider, same load):"]
    for name, scn in scenarios.items():
        if "peer" not in scn:
            continue
        if scn["peer"].get("na"):
            lines.append(f"   {name:11s} n/a: {scn['peer']['na']}")
            continue
        c = scn["vs_peer"]

        def pair(key, c=c):
            return f"{c[key]['flowcall']} vs {c[key]['peer']}"
        text = (f"   {name:11s} calls/s {pair('rps')} (x{c['rps']['ratio']}); added p50 {pair('added_p50_ms')} ms, "
                f"p99 {pair('added_p99_ms')} ms; CPU/call {pair('cpu_ms_per_request')} ms "
                f"(peer x{c['cpu_ms_per_request']['ratio']}); peak RSS {pair('peak_rss_mb')} MB "
                f"(PSS {pair('peak_pss_mb')}); errors {pair('errors')}")
        if "added_ttft_p50_ms" in c:
            text += f"; added first token p50 {pair('added_ttft_p50_ms')} ms"
        lines.append(text)
    return lines
