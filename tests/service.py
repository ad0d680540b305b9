"""Start the real service under gunicorn for end-to-end tests, pointed at a fake provider
(tests/fake_provider.py): `e2e_service` is the one way every end-to-end module starts it."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    from fake_provider import FakeProvider

ROOT = Path(__file__).resolve().parent.parent
JWT_SECRET = "e2e-secret-0123456789-abcdefghijkl"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def provider_env(fake_url: str) -> dict:
    """Every provider configured, each under its own path prefix on the fake."""
    return {
        "OPENAI_API_KEY": "sk-e2e-openai-0123456789", "OPENAI_BASE_URL": f"{fake_url}/openai/v1",
        "XAI_API_KEY": "xai-e2e-0123456789", "XAI_BASE_URL": f"{fake_url}/xai/v1",
        "GROQ_API_KEY": "gsk_e2e0123456789", "GROQ_BASE_URL": f"{fake_url}/groq/openai/v1",
        "OLLAMA_BASE_URL": f"{fake_url}/ollama/v1",
        "ANTHROPIC_API_KEY": "sk-ant-e2e-0123456789", "ANTHROPIC_BASE_URL": f"{fake_url}/anthropic",
        "GEMINI_API_KEY": "AIzaE2E-0123456789abcdefghijklmn", "GEMINI_BASE_URL": f"{fake_url}/gemini",
        "PERPLEXITY_API_KEY": "pplx-e2e-0123456789", "PERPLEXITY_BASE_URL": f"{fake_url}/pplx",
    }


def clean_env(extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith("FLOWCALL_") or k.endswith(("_API_KEY", "_BASE_URL")))}
    env.update(extra)
    env["PYTHONPATH"] = str(ROOT)
    return env


def _wait_ready(url: str, proc: subprocess.Popen, errors: Callable[[], str] | None = None,
                timeout: float = 60.0) -> None:
    """Poll the health route until the server answers (readiness, bounded by a deadline). If the
    server exits first, the error says the end of what `errors` returns (default: its piped stderr)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            said = errors() if errors else proc.stderr.read().decode()
            raise RuntimeError(f"gunicorn exited: {said[-2000:]}")
        try:
            if requests.get(f"{url}/healthz", timeout=2).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):
            pass                  # not listening yet, or the worker is still booting
        time.sleep(0.05)
    raise RuntimeError("gunicorn did not become ready")


def create_key(env: dict, tenant: str | None = None, *limits: str) -> tuple[str, str]:
    tenant = tenant or str(uuid.uuid4())
    subprocess.run([sys.executable, "-m", "app.cli", "db", "upgrade"], cwd=ROOT, env=env, capture_output=True,
                   check=True)
    created = subprocess.run([sys.executable, "-m", "app.cli", "keys", "create", "--tenant", tenant, "--name", "e2e",
                              *limits], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return created.stdout.strip().splitlines()[-1], tenant


@contextmanager
def gunicorn(env: dict, workers: int = 2, extra_args: tuple = (), target: str = "wsgi:app",
             log_dir: Path | None = None) -> Iterator[dict]:
    """A running gunicorn with `env`; yields {"url", "key", "tenant", "env", "proc"}. With `log_dir`, the
    workers' stdout (our JSON logs) and gunicorn's stderr are kept in files there, named in the answer
    as "stdout" and "stderr", so a test can read every line the service wrote."""
    key, tenant = create_key(env)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with ExitStack() as files:
        if log_dir is None:
            out, err, logs = subprocess.DEVNULL, subprocess.PIPE, {}
        else:
            logs = {"stdout": log_dir / "stdout.log", "stderr": log_dir / "stderr.log"}
            out, err = (files.enter_context(open(logs[name], "wb")) for name in ("stdout", "stderr"))
        proc = subprocess.Popen([sys.executable, "-m", "gunicorn", "-w", str(workers), "-b", f"127.0.0.1:{port}",
                                 *extra_args, target], cwd=ROOT, env=env, stdout=out, stderr=err)
        try:
            _wait_ready(url, proc, (lambda: logs["stderr"].read_text()) if logs else None)
            yield {"url": url, "key": key, "tenant": tenant, "env": env, "proc": proc, **logs}
        finally:
            proc.terminate()
            proc.wait(timeout=30)
            if proc.stderr:
                proc.stderr.close()


@contextmanager
def e2e_service(tmp: Path, fake: FakeProvider | None = None, *, workers: int = 2,
                extra_env: dict | None = None, database_url: str | None = None, **gunicorn_options) -> Iterator[dict]:
    """flowcall under gunicorn (see `gunicorn`) with every provider pointed at `fake` (a running
    tests/fake_provider.py; none when None), its database `database_url` or a SQLite file in `tmp`, and
    `extra_env` over that: the one way the end-to-end modules start the service."""
    env = clean_env({"FLOWCALL_DATABASE_URL": database_url or f"sqlite:///{tmp / 'flowcall.db'}",
                     **(provider_env(fake.url) if fake is not None else {}), **(extra_env or {})})
    with gunicorn(env, workers=workers, **gunicorn_options) as svc:
        yield svc


# -- for end-to-end tests with an OpenAI SDK client in front
SDK_ENV = {"FLOWCALL_DEFAULT_TIMEOUT_MS": "20000"}        # a deadline that a loaded CI keeps


def openai_client(service: dict, key: str | None = None):
    import openai
    return openai.OpenAI(base_url=f"{service['url']}/v1", api_key=key or service["key"], max_retries=0,
                         timeout=30, http_client=openai.DefaultHttpxClient(trust_env=False))


def received(fake: FakeProvider) -> list[dict]:
    """What the fake provider was sent since its last reset."""
    return requests.get(f"{fake.url}/_fake/requests", timeout=5).json()


def script(fake: FakeProvider, steps: list[dict]) -> None:
    requests.post(f"{fake.url}/_fake/script", json=steps, timeout=5)


def usage_totals(service: dict) -> dict:
    r = requests.get(f"{service['url']}/api/v3/llm/usage", headers={"X-Api-Key": service["key"]}, timeout=10)
    return r.json()["totals"]
