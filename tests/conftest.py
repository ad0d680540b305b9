"""Fixtures built from the app factory; no test sees the developer's own provider keys."""
from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from pathlib import Path

import jwt
import pytest

from fake_provider import FakeProvider
from nodes import create_app

JWT_SECRET = "test-secret-for-hs256-signing-0123456789"
_TEMPLATE: Path | None = None


class FakeClock:
    """A monotonic clock and sleep that only move when told: retries and deadlines without waiting."""

    def __init__(self):
        self.now = 1000.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def migrated_db_url(directory: Path) -> str:
    """A fresh SQLite database at the current migration, copied from one migrated once per session."""
    global _TEMPLATE
    if _TEMPLATE is None:
        from app.tenancy.db import make_engine, upgrade
        template = Path(tempfile.mkdtemp(prefix="flowcall-template-")) / "template.db"
        engine = make_engine(f"sqlite:///{template}")
        upgrade(engine)
        engine.dispose()
        _TEMPLATE = template
    target = Path(directory) / "flowcall.db"
    shutil.copyfile(_TEMPLATE, target)
    return f"sqlite:///{target}"


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch):
    for name in list(os.environ):
        if name.startswith("FLOWCALL_") or name.endswith(("_API_KEY", "_BASE_URL")):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def tenant_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def agent_id() -> str:
    return str(uuid.uuid4())


@pytest.fixture
def config(tmp_path) -> dict:
    return {"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_JWT_SECRET": JWT_SECRET}


@pytest.fixture
def app(config):
    app = create_app(config)
    app.config["TESTING"] = True
    yield app
    app.extensions["flowcall"].store.close()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def api_key(app, tenant_id) -> str:
    _, plain = app.extensions["flowcall"].store.create_key(tenant_id, name="test")
    return plain


def make_jwt(tenant_id: str | None, *, secret: str = JWT_SECRET, algorithm: str = "HS256",
             exp_in: int = 300, **claims) -> str:
    payload = {"sub": "user-1", "exp": int(time.time()) + exp_in, **claims}
    if tenant_id is not None:
        payload.setdefault("tenant_id", tenant_id)
    return jwt.encode(payload, secret, algorithm=algorithm)


@pytest.fixture
def jwt_headers(tenant_id, agent_id) -> dict:
    return {"Authorization": f"Bearer {make_jwt(tenant_id)}", "x-tenant-id": tenant_id,
            "x-agent-id": agent_id}


@pytest.fixture(scope="module")
def fake():
    """The module's fake provider (tests/fake_provider.py); a module that needs other options defines its own."""
    with FakeProvider() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_fake(request):
    """Each test that uses a fake provider finds it as it was made: no script, requests or mode left over."""
    if "fake" in request.fixturenames:
        fake = request.getfixturevalue("fake")
        if isinstance(fake, FakeProvider):
            fake.reset()
