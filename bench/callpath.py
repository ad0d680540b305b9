"""The path of one call through flowcall's own modules: `python -m bench.callpath`.

One `POST /api/v3/llm/public/call` to `openai.gpt-4o`, in process (Flask's test client, a fresh
SQLite database, the benchmark's fake provider in a subprocess as the upstream), traced with
`sys.setprofile` in the calling thread. It prints the project modules in the order the call first
enters them and counts the climbs back up: calls into a module that is already further up the
stack (a lower layer calling back into a higher one, such as the gateway calling a node's renderer).
The README's Architecture section and issue notes quote its output.
"""
from __future__ import annotations

import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("app", "nodes")


def _module_of(frame) -> str | None:
    name = frame.f_globals.get("__name__", "")
    return name if name.split(".")[0] in PACKAGES else None


def trace(fn) -> tuple[list[str], list[tuple[str, str]], set[tuple[str, str]]]:
    """Run `fn`; return (modules in first-entry order, climbs as (from, back into), module-to-module
    edges crossed)."""
    order: list[str] = []
    edges: set[tuple[str, str]] = set()
    climbs: list[tuple[str, str]] = []
    stack: list[str] = []          # project modules of the project frames now on the stack

    def profiler(frame, event, _arg):
        if event not in ("call", "return"):
            return
        module = _module_of(frame)
        if module is None:
            return
        if event == "call":
            if module not in order:
                order.append(module)
            if stack and stack[-1] != module:
                edges.add((stack[-1], module))
                if module in stack:
                    climbs.append((stack[-1], module))
            stack.append(module)
        elif stack:
            stack.pop()

    sys.setprofile(profiler)
    try:
        fn()
    finally:
        sys.setprofile(None)
    return order, climbs, edges


def start_fake() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "bench.fake_provider", "--port", "0"], cwd=ROOT,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()
    if not line.startswith("READY "):
        proc.kill()
        raise SystemExit(f"the fake provider did not start: {line!r}")
    return proc, f"http://127.0.0.1:{line.split()[1]}"


def client_and_key(fake_url: str, name: str):
    """Flask's test client of an app on a fresh, migrated SQLite store whose OpenAI is the fake, and
    an API key for it."""
    from app.tenancy.db import make_engine, upgrade
    from nodes import create_app

    url = f"sqlite:///{Path(tempfile.mkdtemp(prefix=f'flowcall-{name}-')) / 'flowcall.db'}"
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    app = create_app({"FLOWCALL_DATABASE_URL": url, "FLOWCALL_LOG_LEVEL": "WARNING",
                      "OPENAI_API_KEY": f"sk-{name}", "OPENAI_BASE_URL": f"{fake_url}/openai/v1"})
    _, key = app.extensions["flowcall"].store.create_key(str(uuid.uuid4()), name=name)
    return app.test_client(), key


def one_call(fake_url: str):
    """A built app, a key and one warm-up call; returns the traced call's function."""
    client, key = client_and_key(fake_url, "callpath")
    body = {"model": "openai.gpt-4o", "prompt": "hello"}

    def call():
        answer = client.post("/api/v3/llm/public/call", json=body, headers={"X-Api-Key": key})
        assert answer.status_code == 200, answer.get_data(as_text=True)

    call()                          # warm-up: first-use imports and caches are not the call path
    return call


def main() -> None:
    fake, fake_url = start_fake()
    try:
        order, climbs, edges = trace(one_call(fake_url))
    finally:
        fake.kill()
    print(f"{len(order)} modules visited by one call, {len(edges)} distinct module-to-module calls, "
          f"{len(climbs)} climbs back up")
    for module in order:
        print(f"  {module}")
    for lower, upper in climbs:
        print(f"  climb: {lower} -> {upper}")


if __name__ == "__main__":
    main()
