"""Fixtures shared by the end-to-end tests that drive flowcall with the official `openai` package:
a streaming fake provider (tests/fake_stream_provider.py), reset before each test, and an SDK client
of the module's own `service` fixture (see tests/service.py: gunicorn, sdk_env, openai_client)."""
from __future__ import annotations

import pytest

from fake_stream_provider import FakeStreamProvider
from service import openai_client, reset


@pytest.fixture(scope="module")
def fake():
    server = FakeStreamProvider().start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _reset(fake):
    reset(fake)


@pytest.fixture
def client(service):
    sdk = openai_client(service)
    yield sdk
    sdk.close()
