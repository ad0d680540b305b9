"""Start and stop what a bench run measures: the fake provider and flowcall under gunicorn.

gunicorn is started exactly as the README says (`gunicorn wsgi:app` from the repository root, so
./gunicorn.conf.py supplies the serving model), with only environment variables added: HOST/PORT,
a temporary SQLite store, provider base URLs pointing at the fake, and the serving knobs the
bench was asked to try (WEB_CONCURRENCY, FLOWCALL_WORKER_CLASS, FLOWCALL_THREADS, ...).
"""
from __future__ import annotations

import json
import os
import runpy
import select
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_KEYS = {"OPENAI_API_KEY": "sk-bench-openai-0123456789",
                 "ANTHROPIC_API_KEY": "sk-ant-bench-0123456789",
                 "GEMINI_API_KEY": "AIzaBench-0123456789abcdefghijklmn"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(method: str, url: str, body: dict | None = None, timeout: float = 10.0, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as err:
        raw = err.read()
        try:
            return err.code, json.loads(raw)
        except ValueError:
            return err.code, raw.decode("utf-8", "replace")


class FakeProvider:
    """The bench fake in its own process. It starts in the background: `wait_ready()` before use."""

    def __init__(self, latency_ms: int = 0):
        port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_provider", "--port", str(port), "--latency-ms", str(latency_ms)],
            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT)})
        self.url = f"http://127.0.0.1:{port}"
        self.pid = self.proc.pid

    def wait_ready(self) -> FakeProvider:
        self._ready_line(15.0)
        return self

    def _ready_line(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.2)
            if ready:
                line = self.proc.stdout.readline().decode()
                if line.startswith("READY "):
                    return line
            if self.proc.poll() is not None:
                break
        self.stop()
        raise RuntimeError(f"fake provider did not start: {self.proc.stderr.read().decode()[-2000:]}")

    def configure(self, latency_ms: int, stream_gap_ms: int = 0) -> None:
        http_json("POST", f"{self.url}/_fake/config", {"latency_ms": latency_ms, "stream_gap_ms": stream_gap_ms})

    def seen(self) -> list:
        """The distinct request bodies the fake was sent since the last reset (up to 16 small ones)."""
        return http_json("GET", f"{self.url}/_fake/seen")[1]["bodies"]

    def reset(self) -> None:
        http_json("POST", f"{self.url}/_fake/reset", {})

    def stats(self) -> dict:
        return http_json("GET", f"{self.url}/_fake/stats")[1]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            stream.close()


def gateway_env(fake_url: str, tmp: Path, serving: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("FLOWCALL_", "GUNICORN_")) or k.endswith(("_API_KEY", "_BASE_URL"))
                   or k in ("WEB_CONCURRENCY", "HOST", "PORT"))}
    env.update(PROVIDER_KEYS)
    env.update({"OPENAI_BASE_URL": f"{fake_url}/openai/v1", "ANTHROPIC_BASE_URL": f"{fake_url}/anthropic",
                "GEMINI_BASE_URL": f"{fake_url}/gemini",
                "FLOWCALL_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}", "PYTHONPATH": str(ROOT),
                "FLOWCALL_LOG_LEVEL": os.environ.get("FLOWCALL_LOG_LEVEL", "INFO")})
    env.update({k: str(v) for k, v in serving.items() if v not in (None, "")})
    return env


class ServerProcess:
    """A server the bench started (`proc`), logging to `log_path` through `_log`: its log's tail, and
    stopping it (SIGTERM, then SIGKILL after 30 s)."""
    proc: subprocess.Popen
    log_path: Path

    def log_tail(self, n: int = 4000) -> str:
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class Gateway(ServerProcess):
    """gunicorn + flowcall on a fresh SQLite store (`python -m app.cli db upgrade`); `pid` is the master,
    `key` an API key made with `python -m app.cli keys create`."""

    def __init__(self, fake_url: str, tmp: Path, serving: dict, extra_args: tuple = (), fake=None,
                 wsgi: str = "wsgi:app"):
        self.port = free_port()
        self.env = gateway_env(fake_url, tmp, {**serving, "HOST": "127.0.0.1", "PORT": self.port})
        migrated = subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=ROOT, env=self.env,
                                  capture_output=True, text=True, timeout=120)
        if migrated.returncode != 0:
            raise RuntimeError(f"db upgrade failed: {migrated.stderr[-2000:]}")
        created = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--tenant", str(uuid.uuid4()),
                                  "--name", "bench"], cwd=ROOT, env=self.env, capture_output=True, text=True,
                                 timeout=60)
        if created.returncode != 0:
            raise RuntimeError(f"keys create failed: {created.stderr[-2000:]}")
        self.key = created.stdout.strip().splitlines()[-1]
        if fake is not None:
            fake.wait_ready()
        self.log_path = tmp / "gunicorn.log"
        self._log = open(self.log_path, "wb")     # noqa: SIM115 - gunicorn's log for its whole life, closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "gunicorn", *extra_args, wsgi], cwd=ROOT,
                                     env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        self.pid = self.proc.pid
        self.url = f"http://127.0.0.1:{self.port}"
        self._wait_ready(60.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if http_json("GET", f"{self.url}/readyz", timeout=1)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        log = self.log_tail()
        self.stop()
        raise RuntimeError(f"gunicorn did not become ready:\n{log}")



def serving_config(env: dict) -> dict:
    """What ./gunicorn.conf.py resolves to under `env` (executed here with `env` as the environment)."""
    keys = ("worker_class", "workers", "threads", "worker_connections", "bind", "timeout", "graceful_timeout",
            "keepalive", "accesslog", "preload_app")
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update(env)
        conf = runpy.run_path(str(ROOT / "gunicorn.conf.py"))
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a bad setting included
        return {"error": repr(exc)}
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return {k: conf.get(k) for k in keys}
