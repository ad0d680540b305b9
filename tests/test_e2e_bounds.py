"""Oversized input through gunicorn: each shape gets its 4xx while a call already in flight on the
same (single) worker is held at the provider, and that call then finishes. Before the bounds, these
shapes held the event loop for seconds to minutes and gunicorn killed the worker (WORKER TIMEOUT)
with every call on it; here the worker timeout is 10 s, so a stall would show as a dropped call.
"""
from __future__ import annotations

import base64
import json
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from backends import fresh_database_url
from fake_answers import openai_answer
from service import e2e_service

pytestmark = pytest.mark.e2e
PNG = b"\x89PNG\r\n\x1a\n" + bytes(13 * 1024 * 1024)    # 13 MB: 17.3 MB as base64, over the non-image cap


class ArrivalGate(threading.Event):
    """The fake's release event, which also says when a held request has arrived."""

    def __init__(self):
        super().__init__()
        self.arrived = threading.Event()

    def wait(self, timeout=None):
        self.arrived.set()
        return super().wait(timeout)


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bounds")
    with e2e_service(tmp, fake, workers=1, database_url=fresh_database_url("sqlite", tmp),
                     extra_env={"FLOWCALL_TIMEOUT": "10", "FLOWCALL_WORKER_CLASS": "gevent"}) as svc:
        yield svc


def post(service, body=None, *, data=None, path="/api/v3/llm/public/call"):
    raw = data if data is not None else json.dumps(body).encode()
    return requests.post(f"{service['url']}{path}", data=raw, timeout=120,
                         headers={"X-Api-Key": service["key"], "Content-Type": "application/json"})


def schema_body(schema, model="openai.gpt-4o"):
    return {"model": model, "prompt": "hi", "response_format": {
        "type": "json_schema", "json_schema": {"name": "out", "strict": True, "schema": schema}}}


def nested_objects(levels):
    schema = {"type": "string"}
    for _ in range(levels):
        schema = {"type": "object", "properties": {"a": schema}, "required": ["a"], "additionalProperties": False}
    return schema


# (name, body bytes, status, error code, a field the error names, words in its message)
OVERSIZE = [
    ("100k-property schema, 2.5 MB", json.dumps(schema_body(
        {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(100_000)}})).encode(),
     400, "validation_error", "body", "JSON values"),
    ("17 MB of 700k unknown keys", json.dumps(
        {"model": "mock.echo", "prompt": "hi", **{f"unknown_key_{i}": 1 for i in range(700_000)}}).encode(),
     413, "payload_too_large", None, "besides images"),
    ("9 MB of 400k unknown keys", json.dumps(
        {"model": "mock.echo", "prompt": "hi", **{f"unknown_key_{i}": 1 for i in range(400_000)}}).encode(),
     400, "validation_error", "body", "JSON values"),
    ("17 MB of text", json.dumps({"model": "mock.echo", "prompt": "x" * (17 * 1024 * 1024)}).encode(),
     413, "payload_too_large", None, "besides images"),
    ("150k unknown keys under the byte cap", json.dumps(
        {"model": "mock.echo", "prompt": "hi", **{f"k{i}": 1 for i in range(150_000)}}).encode(),
     400, "validation_error", "body", "JSON values"),
    ("90k unknown keys under both caps", json.dumps(
        {"model": "mock.echo", "prompt": "hi", **{f"k{i}": 1 for i in range(90_000)}}).encode(),
     400, "validation_error", "k0", "unknown fields"),
    ("5001 properties", json.dumps(schema_body(
        {"type": "object", "properties": {f"p{i}": {"type": "string"} for i in range(5_001)}})).encode(),
     400, "validation_error", "response_format.json_schema.schema", "5000 object properties"),
    ("20k anyOf branches", json.dumps(schema_body({"anyOf": [{"type": "string"}] * 20_000})).encode(),
     400, "validation_error", "response_format.json_schema.schema", "10000 subschemas"),
    ("1001 enum values", json.dumps(schema_body({"enum": [f"v{i}" for i in range(1_001)]})).encode(),
     400, "validation_error", "response_format.json_schema.schema", "1000 enum values"),
    ("11 nested object levels", json.dumps(schema_body(nested_objects(12))).encode(),
     400, "validation_error", "response_format.json_schema.schema", "nested more than 10 levels"),
    ("121k characters of enum values", json.dumps(schema_body({"enum": ["x" * 1000] * 121})).encode(),
     400, "validation_error", "response_format.json_schema.schema", "120000 characters"),
]


def test_each_oversize_shape_is_refused_while_a_call_in_flight_finishes(service, fake):
    fake.release = gate = ArrivalGate()
    held = openai_answer({"model": "gpt-4o", "messages": [{"role": "user", "content": "the call in flight"}]})
    fake.script = [{"hang": 60, "body": held}]
    with ThreadPoolExecutor(max_workers=1) as pool:
        in_flight = pool.submit(post, service, {"model": "openai.gpt-4o", "prompt": "the call in flight"})
        assert gate.arrived.wait(30), "the call in flight never reached the provider"
        for name, raw, status, code, field, words in OVERSIZE:
            resp = post(service, data=raw)
            assert resp.status_code == status, (name, resp.text[:300])
            error = resp.json()["error"]
            assert error["code"] == code and words in error["message"] + json.dumps(error["fields"]), (name, error)
            assert field is None or field in error["fields"], (name, error["fields"])
        gate.set()
        finished = in_flight.result(timeout=60)
    assert finished.status_code == 200 and finished.json()["provider"] == "openai", finished.text[:300]
    calls = requests.get(f"{fake.url}/_fake/requests", timeout=10).json()
    assert [c["body"]["messages"][-1]["content"] for c in calls] == ["the call in flight"]


def test_image_bytes_are_counted_apart_from_the_rest(service, fake):
    """A 17.3 MB image passes where 17.3 MB of anything else is a 413."""
    uri = "data:image/png;base64," + base64.b64encode(PNG).decode()
    body = {"model": "openai.gpt-4o", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "what is this?"}, {"type": "image_url", "image_url": {"url": uri}}]}]}
    assert post(service, body).status_code == 200
    as_text = {"model": "openai.gpt-4o", "prompt": uri.replace("data:", "text:", 1)}
    refused = post(service, as_text)
    assert refused.status_code == 413 and refused.json()["error"]["code"] == "payload_too_large"
    sent = requests.get(f"{fake.url}/_fake/requests", timeout=10).json()
    assert len(sent) == 1 and uri in json.dumps(sent[0]["body"])


def test_a_schema_at_the_limits_is_checked_off_the_event_loop(fake, tmp_path):
    """Checking 9,999 subschemas takes seconds of CPU (0.25 ms each). In the event loop that is
    longer than a 2 s worker timeout and gunicorn kills the worker mid-request; in the hub's thread
    pool the heartbeat goes on and the call is answered."""
    schema = {"anyOf": [{"type": "string", "description": f"branch {i}"} for i in range(9_998)]}
    with e2e_service(tmp_path, fake, workers=1, database_url=fresh_database_url("sqlite", tmp_path),
                     extra_env={"FLOWCALL_TIMEOUT": "2", "FLOWCALL_WORKER_CLASS": "gevent"}) as svc:
        resp = post(svc, schema_body(schema, model="mock.echo"))
    assert resp.status_code == 200, resp.text[:300]
    assert resp.json()["data"] == "example"
