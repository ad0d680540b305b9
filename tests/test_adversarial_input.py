"""Hostile and malformed input, property-based: every answer is our JSON envelope, never a 500.

Bodies are generated valid and invalid (wrong types at every field, huge and deeply nested values,
unicode edge cases, raw-text NaN/Infinity/1e309, duplicate keys, wrong content types, compressed
and non-UTF-8 bytes, long and many headers) and sent through the Flask test client. Valid bodies
must succeed on mock.echo, and must reach OpenAI (mocked with `responses`) translated faithfully.

The bugs this file found were fixed; each keeps the test that found it (SECURITY.md lists them).
"""
from __future__ import annotations

import datetime
import decimal
import gzip
import itertools
import json
import threading
import uuid
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import responses
from conftest import make_jwt
from fake_answers import openai_answer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.images import to_data_uri

CALL = "/api/v3/llm/public/call"
OPENAI_URL = "https://api.openai.com/v1/chat/completions"
OPENAI_KEY = "sk-adversarial-openai-0123456789abcdef"
PNG = b"\x89PNG\r\n\x1a\n" + bytes(32)
ERROR_KEYS = {"code", "message", "fields", "provider", "retryable"}
SUCCESS_KEYS = {"success", "response", "data", "model", "provider", "finish_reason", "usage", "cost",
                "latency_ms", "routing", "warnings", "request_id", "tool_calls"}
FINISH_REASONS = {"stop", "length", "content_filter", "tool_calls", "other"}

PROPERTY = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large])
SMALL_PROPERTY = settings(PROPERTY, max_examples=60)


# -- what every answer must look like -----------------------------------------------------------
def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")


def strict_json(raw: bytes):
    """RFC 8259 JSON only: a body with NaN or Infinity in it is not JSON to n8n or Zapier."""
    return json.loads(raw.decode("utf-8"), parse_constant=_reject_constant)


def assert_envelope(resp, allowed=(200, 400)):
    """Our JSON, in our shape, with an allowed status; returns the parsed body."""
    raw = resp.get_data()
    assert resp.status_code in allowed, (resp.status_code, raw[:500])
    assert resp.mimetype == "application/json", resp.mimetype
    body = strict_json(raw)
    assert resp.headers.get("X-Request-Id")
    if resp.status_code >= 400:
        assert set(body) == {"success", "error", "request_id"}, body
        assert body["success"] is False and body["request_id"] == resp.headers["X-Request-Id"]
        err = body["error"]
        assert set(err) == ERROR_KEYS, err
        assert isinstance(err["code"], str) and err["code"]
        assert isinstance(err["message"], str) and err["message"]
        assert isinstance(err["retryable"], bool)
        assert err["provider"] is None or isinstance(err["provider"], str)
        assert isinstance(err["fields"], dict)
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in err["fields"].items())
    return body


def assert_call_success(body):
    assert set(body) == SUCCESS_KEYS and body["success"] is True and "error" not in body
    assert isinstance(body["response"], str) and body["finish_reason"] in FINISH_REASONS
    assert set(body["usage"]) == {"input_tokens", "output_tokens", "total_tokens", "cached_input_tokens",
                                  "cache_write_tokens", "reasoning_tokens"}
    assert all(isinstance(v, int) for v in body["usage"].values())
    assert isinstance(body["warnings"], list) and isinstance(body["latency_ms"], int)


def post_raw(client, raw: bytes, headers: dict, path: str = CALL, content_type="application/json"):
    return client.post(path, data=raw, headers=headers, content_type=content_type)


def post_json(client, body, headers, path: str = CALL):
    # ensure_ascii: lone surrogates travel as \ud800 escapes, which is valid JSON text
    return post_raw(client, json.dumps(body, ensure_ascii=True).encode(), headers, path)


@pytest.fixture
def key_headers(api_key):
    return {"X-Api-Key": api_key}


# -- strategies -----------------------------------------------------------------------------------
EDGE_PIECES = ["\x00", "\u202e", "\u200f", "\u200b", "\u2028", "\ufeff", "\U0001F469\u200d\U0001F4BB",
               "\U0001F1EB\U0001F1F7", "a\u0301", "\U0010ffff", "\ud800", "\udfff", "\n\r\t", "\\", '"',
               "</script>", "{{7*7}}", "' OR 1=1 --", "%s%n", "\u0000\u0000", "\ufffd"]
edge_text = st.lists(st.one_of(st.sampled_from(EDGE_PIECES), st.text(max_size=6)), max_size=10).map("".join)
any_text = st.one_of(st.text(max_size=40), edge_text)
nonempty_text = any_text.filter(bool)


def plain_decimal(value) -> str:
    """A number as a person types it into Zapier: digits and a point, never an exponent."""
    return format(decimal.Decimal(repr(value)), "f") if isinstance(value, float) else str(value)


def numeric_or_string(values):
    """Numbers, or the same numbers as plain decimal strings (Zapier sends every field as a string)."""
    return st.one_of(values, values.map(plain_decimal))


temperatures = numeric_or_string(st.one_of(st.floats(0, 1, allow_nan=False), st.integers(0, 1)))
max_tokens = st.one_of(numeric_or_string(st.integers(1, 1_000_000)),
                       st.integers(1, 100_000).map(float))             # 250.0 is a whole number
timeouts = numeric_or_string(st.integers(100, 3_600_000))
stops = st.lists(st.text(min_size=1, max_size=12), max_size=16)
# With structured output a stop sequence found inside the JSON cuts it (as providers do natively),
# and the cut answer is rightly a 502; such bodies get stops that cannot occur in the answer.
json_safe_stops = st.lists(st.sampled_from(["<<\u00a7STOP\u00a7>>", "\u27e6END\u27e7", "###\u00b6###"]), max_size=6)

image_urls = st.one_of(
    st.sampled_from(["https://example.com/a.png", "https://cdn.example.org/x/y.jpg?sig=a%20b&v=1",
                     "http://example.com:8080/img"]),
    st.just(to_data_uri("image/png", PNG)))


@st.composite
def parts(draw, images_allowed: bool):
    n = draw(st.integers(1, 3))
    out = []
    for _ in range(n):
        if images_allowed and draw(st.booleans()):
            image = {"url": draw(image_urls)}
            detail = draw(st.sampled_from([None, "auto", "low", "high"]))
            if detail:
                image["detail"] = detail
            out.append({"type": "image_url", "image_url": image})
        else:
            out.append({"type": "text", "text": draw(any_text)})
    return out


@st.composite
def messages(draw, need_user: bool):
    items = []
    for _ in range(draw(st.integers(0, 3))):
        role = draw(st.sampled_from(["system", "developer", "user", "assistant"]))
        content = draw(st.one_of(any_text, parts(images_allowed=role == "user")))
        message = {"role": role, "content": content}
        if draw(st.booleans()) and draw(st.booleans()):
            message["name"] = draw(st.text(max_size=64))
        items.append(message)
    if need_user and not any(m["role"] == "user" for m in items):
        items.append({"role": "user", "content": draw(st.one_of(any_text, parts(images_allowed=True)))})
    return items


# Schemas mock.echo and the fake can satisfy (example_for), so strict validation passes ($ref,
# minItems and out-of-range numbers have their own tests below).
schema_leaves = st.sampled_from([{"type": "string"}, {"type": "integer"}, {"type": "number"},
                                 {"type": "boolean"}, {"enum": ["a", "b"]},
                                 {"type": "array", "items": {"type": "string"}},
                                 {"type": ["string", "null"]}])
safe_schemas = st.dictionaries(st.from_regex(r"[a-z_]{1,8}", fullmatch=True), schema_leaves, max_size=4).map(
    lambda props: {"type": "object", "properties": props, "required": sorted(props),
                   "additionalProperties": False})


@st.composite
def response_formats(draw):
    kind = draw(st.sampled_from(["text", "json_object", "json_schema"]))
    if kind != "json_schema":
        return {"type": kind}
    spec = {"schema": draw(safe_schemas)}
    if draw(st.booleans()):
        spec["name"] = draw(st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True))
    if draw(st.booleans()):
        spec["strict"] = draw(st.booleans())
    if draw(st.booleans()):
        spec["description"] = draw(any_text)
    return {"type": kind, "json_schema": spec}


@st.composite
def call_bodies(draw, models=("mock.echo",), fallbacks=("mock.echo", "openai.gpt-4o", "gpt4o")):
    body = {"model": draw(st.sampled_from(models))}
    prompt_field = draw(st.sampled_from([None, "prompt", "query", "both"]))
    msgs = draw(messages(need_user=prompt_field is None))
    if msgs or prompt_field is None:
        body["messages"] = msgs
    if prompt_field:
        text = draw(nonempty_text)
        if prompt_field == "both":
            body["prompt"] = body["query"] = text
        else:
            body[prompt_field] = text
    rf = draw(st.one_of(st.none(), response_formats()))
    if rf is not None:
        body["response_format"] = rf
    structured = rf is not None and rf["type"] != "text"
    options = draw(st.fixed_dictionaries({}, optional={
        "temperature": temperatures, "maxTokens": max_tokens, "stop": json_safe_stops if structured else stops,
        "timeoutMs": timeouts}))
    if options or draw(st.booleans()):
        body["options"] = options
    if draw(st.booleans()):
        body["context"] = draw(st.fixed_dictionaries({}, optional={"task": st.text(min_size=1, max_size=64)}))
    if draw(st.booleans()):
        body["fallbacks"] = draw(st.lists(st.sampled_from(fallbacks), max_size=5))
    return body


json_scalars = st.one_of(st.none(), st.booleans(), st.integers(-10**400, 10**400),
                         st.floats(allow_nan=False, allow_infinity=False), any_text)
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)), max_leaves=20)
deeply_nested = st.integers(50, 400).map(lambda depth: json.loads("[" * depth + "]" * depth))
wrong_values = st.one_of(json_values, deeply_nested, st.text(min_size=2000, max_size=5000))

FIELD_PATHS = [
    ("model",), ("prompt",), ("query",), ("messages",), ("messages", 0), ("messages", 0, "role"),
    ("messages", 0, "content"), ("messages", 0, "name"), ("messages", 0, "content", 0),
    ("messages", 0, "content", 0, "type"), ("messages", 0, "content", 0, "text"),
    ("messages", 0, "content", 0, "image_url"), ("messages", 0, "content", 0, "image_url", "url"),
    ("messages", 0, "content", 0, "image_url", "detail"),
    ("options",), ("options", "temperature"), ("options", "maxTokens"), ("options", "stop"),
    ("options", "stop", 0), ("options", "timeoutMs"), ("context",), ("context", "task"),
    ("response_format",), ("response_format", "type"), ("response_format", "json_schema"),
    ("response_format", "json_schema", "name"), ("response_format", "json_schema", "strict"),
    ("response_format", "json_schema", "schema"), ("fallbacks",), ("fallbacks", 0),
]


def set_path(body, path, value):
    """Put `value` at `path`, creating the containers on the way (a list index means a 1-item list)."""
    node = body
    for key, nxt in itertools.pairwise(path):
        empty = [] if isinstance(nxt, int) else {}
        if isinstance(node, list):
            while len(node) <= key:
                node.append(empty)
            if not isinstance(node[key], type(empty)):
                node[key] = empty
            node = node[key]
        else:
            if not isinstance(node.get(key), type(empty)):
                node[key] = [] if isinstance(nxt, int) else {}
            node = node[key]
    last = path[-1]
    if isinstance(node, list):
        while len(node) <= last:
            node.append(None)
    node[last] = value


@st.composite
def mutated_bodies(draw):
    body = draw(call_bodies())
    action = draw(st.sampled_from(["wrong", "wrong", "wrong", "delete", "unknown"]))
    if action == "wrong":
        value = draw(wrong_values)
        path = draw(st.sampled_from(FIELD_PATHS))
        if path == ("model",) and isinstance(value, str):
            value = [value]          # a model string could name a real, unconfigured provider (503)
        set_path(body, path, value)
    elif action == "delete":
        body.pop(draw(st.sampled_from(sorted(body))), None)
    else:
        where = draw(st.sampled_from([(), ("options",), ("context",), ("messages", 0), ("response_format",)]))
        set_path(body, (*where, draw(st.text(min_size=1, max_size=12))), draw(json_scalars))
    return body


# -- properties -------------------------------------------------------------------------------------
@PROPERTY
@given(body=call_bodies())
def test_valid_bodies_succeed_on_mock_echo(client, key_headers, body):
    assert_call_success(assert_envelope(post_json(client, body, key_headers), allowed=(200,)))


@PROPERTY
@given(body=mutated_bodies())
def test_mutated_bodies_get_the_envelope_never_a_500(client, key_headers, body):
    assert_envelope(post_json(client, body, key_headers), allowed=(200, 400))


@SMALL_PROPERTY
@given(value=json_values)
def test_any_json_document_as_a_body(client, key_headers, value):
    assert_envelope(post_json(client, value, key_headers), allowed=(400,))


@SMALL_PROPERTY
@given(raw=st.one_of(st.binary(max_size=300), st.binary(max_size=50).map(lambda b: b'{"model": "' + b + b'"}')))
def test_arbitrary_bytes_as_a_body(client, key_headers, raw):
    assert_envelope(post_raw(client, raw, key_headers), allowed=(400,))


@SMALL_PROPERTY
@given(text=edge_text.filter(lambda t: t.strip() and " " not in t))
def test_unicode_edge_cases_round_trip_exactly(client, key_headers, text):
    """NUL, RTL marks, emoji sequences, BOMs and lone surrogates come back as they were sent."""
    body = assert_envelope(post_json(client, {"model": "mock.echo", "prompt": text}, key_headers), allowed=(200,))
    assert body["response"] == text


@SMALL_PROPERTY
@given(body=st.fixed_dictionaries({}, optional={"instructions": st.one_of(nonempty_text, json_values),
                                                "llm_engine": st.one_of(st.just("mock.echo"), json_values),
                                                "extra": json_scalars}))
def test_agent_ai_bodies(client, api_key, body):
    resp = post_json(client, body, {"Authorization": f"Bearer {api_key}"}, path="/v1/action/invoke_llm")
    # without llm_engine the default gpt4o is asked for, and no OpenAI key is configured here: a 503
    out = assert_envelope(resp, allowed=(200, 400) if body.get("llm_engine") == "mock.echo" else (200, 400, 503))
    if resp.status_code == 200:
        assert set(out) == {"status", "response"} and out["status"] == 200


@SMALL_PROPERTY
@given(body=st.one_of(json_values, st.fixed_dictionaries({"provider": st.one_of(st.just("mock"), json_values)},
                                                         optional={"model": json_values})))
def test_test_connection_bodies(client, jwt_headers, body):
    resp = post_json(client, body, jwt_headers, path="/api/v3/llm/test-connection")
    out = assert_envelope(resp, allowed=(200, 400))
    if resp.status_code == 200:
        assert out["status"] in ("connected", "auth_failed", "unreachable", "rate_limited", "model_not_found",
                                 "not_configured", "error")


OFFSETS = [None, *(datetime.timezone(datetime.timedelta(hours=h)) for h in (-14, -5, 0, 5, 14))]
query_values = st.one_of(
    st.text(max_size=30),
    st.dates().map(str),
    st.datetimes(min_value=datetime.datetime(1, 1, 1), max_value=datetime.datetime(9999, 12, 31),
                 timezones=st.sampled_from(OFFSETS)).map(lambda d: d.isoformat()),
    st.sampled_from(["model", "agent", "day", "provider", "key", "true", "false", "vision", "openai", "mock"]))


@SMALL_PROPERTY
@given(params=st.dictionaries(st.sampled_from(["from", "to", "group_by", "limit", "provider", "capability",
                                               "include_retired", ""]), query_values, max_size=4),
       path=st.sampled_from(["/api/v3/llm/usage", "/api/v3/llm/models"]))
def test_read_endpoints_query_strings(client, key_headers, params, path):
    assert_envelope(client.get(path, query_string=params, headers=key_headers), allowed=(200, 400))


header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
                      max_size=300)


@SMALL_PROPERTY
@given(headers=st.fixed_dictionaries({}, optional={
    "X-Api-Key": header_text, "Authorization": st.one_of(header_text, header_text.map("Bearer {}".format)),
    "X-Request-Id": header_text, "Idempotency-Key": header_text, "x-tenant-id": header_text,
    "x-agent-id": header_text}),
    path=st.sampled_from([CALL, "/api/v3/llm/call", "/v1/action/invoke_llm", "/api/v3/llm/usage",
                          "/api/v3/llm/me", "/v1/me", "/api/v3/llm/models"]))
def test_hostile_header_values(client, headers, path):
    body = ({"instructions": "hi", "llm_engine": "mock.echo"} if "invoke" in path
            else {"model": "mock.echo", "prompt": "hi"})
    if path in (CALL, "/api/v3/llm/call", "/v1/action/invoke_llm"):
        resp = post_json(client, body, headers, path=path)
    else:
        resp = client.get(path, headers=headers)
    assert_envelope(resp, allowed=(200, 400, 401, 403))


# -- raw JSON text the generators cannot express ------------------------------------------------------
@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e309", "-1e309", "1E400"])
@pytest.mark.parametrize("template", [
    '{"model": "mock.echo", "prompt": "hi", "options": {"temperature": %s}}',
    '{"model": "mock.echo", "prompt": "hi", "options": {"maxTokens": %s}}',
    '{"model": "mock.echo", "prompt": "hi", "options": {"timeoutMs": %s}}',
    '{"model": "mock.echo", "prompt": %s}',
    '{"model": "mock.echo", "prompt": "hi", "fallbacks": [%s]}',
    '{"model": "mock.echo", "prompt": "hi", "surprise": %s}',
    '[%s]',
])
def test_non_finite_numbers_in_raw_json(client, key_headers, template, literal):
    err = assert_envelope(post_raw(client, (template % literal).encode(), key_headers), allowed=(400,))["error"]
    if literal in ("NaN", "Infinity", "-Infinity"):
        assert err["code"] == "invalid_json"


@pytest.mark.parametrize("raw", [
    b'{"model": "mock.echo", "prompt": "hi", "options": {"stop": ["a"], "stop": ["b"]}}',
    b'{"model": "mock.echo", "messages": [{"role": "user", "role": "system", "content": "x"}]}',
    b'{"model": "mock.echo", "prompt": "hi", "response_format": {"type": "json_object", "type": "text"}}',
    b'{"model": "mock.echo", "model": "mock.echo", "prompt": "hi"}',
])
def test_duplicate_keys_at_any_depth(client, key_headers, raw):
    assert assert_envelope(post_raw(client, raw, key_headers), allowed=(400,))["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("raw, status", [
    (b"", 400), (b"   \r\n\t ", 400), (b"null", 400), (b"{}", 400), (b"\x00", 400),
    ('{"model": "mock.echo", "prompt": "hi"}'.encode("utf-16"), 400),                 # UTF-16 with its BOM
    ('{"model": "mock.echo", "prompt": "hi"}'.encode("utf-32"), 400),
    (b'{"model": "mock.echo", "prompt": "\xed\xa0\x80"}', 400),                        # a surrogate as raw bytes
    (b'{"model": "mock.echo", "prompt": "caf\xe9"}', 400),                             # Latin-1, not UTF-8
    (b'{"model": "mock.echo", "prompt": "\xc0\xaf"}', 400),                            # overlong encoding
    (b"\xef\xbb\xbf" + b'{"model": "mock.echo", "prompt": "hi"}', 200),               # UTF-8 BOM is tolerated
    (b'{"model": "mock.echo", "prompt": "hi"} trailing', 400),
    (b'{"model": "mock.echo", "prompt": "hi"}{"model": "mock.echo"}', 400),
    (b"{'model': 'mock.echo', 'prompt': 'hi'}", 400),
])
def test_malformed_and_misencoded_bodies(client, key_headers, raw, status):
    assert_envelope(post_raw(client, raw, key_headers), allowed=(status,))


@pytest.mark.parametrize("content_type", [
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=xyz", "application/xml",
    "application/json; charset=utf-16", "application/octet-stream", ""])
def test_content_type_never_changes_how_the_body_is_read(client, key_headers, content_type):
    """The body is read as JSON bytes whatever the label: no form parsing, no charset games."""
    raw = json.dumps({"model": "mock.echo", "prompt": "hi"}).encode()
    resp = client.post(CALL, data=raw, headers={**key_headers, "Content-Type": content_type})
    assert assert_envelope(resp, allowed=(200,))["response"] == "hi"


@pytest.mark.parametrize("encoding, compress", [("gzip", gzip.compress), ("deflate", zlib.compress),
                                                ("x-gzip", gzip.compress)])
def test_compressed_bodies_are_never_decompressed(client, key_headers, encoding, compress):
    """Werkzeug does not decode Content-Encoding, and neither do we: no zip bombs, a clean 4xx."""
    raw = compress(json.dumps({"model": "mock.echo", "prompt": "hi"}).encode())
    resp = post_raw(client, raw, {**key_headers, "Content-Encoding": encoding})
    assert 400 <= resp.status_code < 500
    assert_envelope(resp, allowed=(400, 415))


def test_a_gzip_bomb_is_refused_without_being_inflated(client, key_headers):
    bomb = gzip.compress(b"{" + b" " * (50 * 1024 * 1024) + b"}")        # 50 MB of JSON in ~50 kB
    assert len(bomb) < 200_000
    assert_envelope(post_raw(client, bomb, {**key_headers, "Content-Encoding": "gzip"}), allowed=(400, 415))


@pytest.mark.parametrize("encoding", ["gzip", "br"])
def test_a_declared_content_encoding_is_refused_with_415(client, key_headers, encoding):
    raw = json.dumps({"model": "mock.echo", "prompt": "hi"}).encode()
    resp = post_raw(client, raw, {**key_headers, "Content-Encoding": encoding})
    assert assert_envelope(resp, allowed=(415,))["error"]["code"]


# -- size: huge strings, many items, long and many headers -----------------------------------------
def test_a_5_mb_prompt_round_trips(client, key_headers):
    prompt = "\U0001F600" * (5 * 1024 * 1024 // 4)
    body = assert_envelope(post_json(client, {"model": "mock.echo", "prompt": prompt}, key_headers), allowed=(200,))
    assert body["response"] == prompt


def test_five_thousand_messages(client, key_headers):
    msgs = [{"role": "user" if i % 2 == 0 else "assistant", "content": f"m{i}"} for i in range(5000)]
    body = assert_envelope(post_json(client, {"model": "mock.echo", "messages": msgs}, key_headers), allowed=(200,))
    assert body["response"] == "m4998"


@pytest.mark.parametrize("body, field", [
    ({"model": "m" * 100_000, "prompt": "hi"}, "model"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"stop": ["x" * 501]}}, "options.stop.0"),
    ({"model": "mock.echo", "prompt": "hi", "options": {"stop": ["x"] * 17}}, "options.stop"),
    ({"model": "mock.echo", "prompt": "hi", "fallbacks": ["mock.echo"] * 6}, "fallbacks"),
    ({"model": "mock.echo", "prompt": "hi", "context": {"task": "t" * 65}}, "context.task"),
    ({"model": "mock.echo", "messages": [{"role": "user", "content": "x", "name": "n" * 65}]}, "messages.0.name"),
])
def test_oversized_fields_name_the_field(client, key_headers, body, field):
    err = assert_envelope(post_json(client, body, key_headers), allowed=(400,))["error"]
    assert field in err["fields"], err["fields"]


def test_a_megabyte_of_request_id_is_replaced_not_echoed(client, key_headers):
    resp = post_json(client, {"model": "mock.echo", "prompt": "hi"}, {**key_headers, "X-Request-Id": "a" * 1_000_000})
    body = assert_envelope(resp, allowed=(200,))
    assert len(resp.headers["X-Request-Id"]) == 32 and body["request_id"] == resp.headers["X-Request-Id"]


@pytest.mark.parametrize("path, headers, status, code", [
    (CALL, {"X-Api-Key": "fc_" + "a" * 1_000_000}, 401, "invalid_api_key"),
    ("/v1/action/invoke_llm", {"Authorization": "Bearer " + "a" * 1_000_000}, 401, "invalid_api_key"),
    ("/api/v3/llm/call", {"Authorization": "Bearer " + "a" * 1_000_000}, 401, "invalid_token"),
])
def test_a_megabyte_credential_is_refused_cheaply(client, path, headers, status, code):
    body = {"instructions": "hi"} if "invoke" in path else {"model": "mock.echo", "prompt": "hi"}
    assert assert_envelope(post_json(client, body, headers, path), allowed=(status,))["error"]["code"] == code


@pytest.mark.parametrize("name", ["Idempotency-Key", "x-tenant-id", "x-agent-id"])
def test_a_megabyte_header_value_is_a_400(client, key_headers, name):
    token = make_jwt(str(uuid.uuid4()))
    headers = {**key_headers, "Authorization": f"Bearer {token}", "x-tenant-id": str(uuid.uuid4()),
               "x-agent-id": str(uuid.uuid4()), name: "b" * 1_000_000}
    path = CALL if name == "Idempotency-Key" else "/api/v3/llm/call"
    err = assert_envelope(post_json(client, {"model": "mock.echo", "prompt": "hi"}, headers, path), allowed=(400,))
    assert name in err["error"]["fields"]


def test_two_thousand_headers(client, key_headers):
    headers = {**key_headers, **{f"X-Noise-{i}": "v" * 50 for i in range(2000)}}
    assert_envelope(post_json(client, {"model": "mock.echo", "prompt": "hi"}, headers), allowed=(200,))


# -- every valid body reaches the provider correctly translated --------------------------------------
def expected_openai_messages(body: dict) -> list[dict]:
    """What the Chat Completions adapter must send for a validated body (README + adapter contract)."""
    out = []
    for m in body.get("messages") or []:
        role = "system" if m["role"] == "developer" else m["role"]
        content = m["content"]
        if isinstance(content, list) and all(p["type"] == "text" for p in content):
            content = "\n".join(p["text"] for p in content)
        elif isinstance(content, list):
            content = [{"type": "text", "text": p["text"]} if p["type"] == "text" else
                       {"type": "image_url", "image_url": p["image_url"]} for p in content]
        out.append({"role": role, "content": content})
    prompt = body.get("prompt") or body.get("query")
    if prompt:
        out.append({"role": "user", "content": prompt})
    rf = body.get("response_format") or {}
    texts = [m["content"] if isinstance(m["content"], str) else
             "\n".join(p["text"] for p in m["content"] if p["type"] == "text") for m in out]
    if rf.get("type") == "json_object" and not any("json" in t.lower() for t in texts):
        out.insert(0, {"role": "system", "content": "Respond with a JSON object."})
    return out


def expected_response_format(body: dict):
    rf = body.get("response_format") or {}
    if rf.get("type") == "json_object":
        return {"type": "json_object"}
    if rf.get("type") == "json_schema":
        spec = rf["json_schema"]
        schema = spec["schema"]
        if spec.get("strict"):
            # strict schemas go out in OpenAI's strict subset (tests/test_strict_schema.py checks that
            # transformation against the openai SDK's own); this test checks that they go out at all
            from app.strict_schema import to_strict
            schema = to_strict(schema).schema
        return {"type": "json_schema", "json_schema": {"name": spec.get("name", "response"),
                                                       "schema": schema, "strict": spec.get("strict", False)}}
    return None


def _number(value):
    return float(value.strip()) if isinstance(value, str) else value


class TestTranslationToOpenAI:
    @pytest.fixture
    def config(self, config):
        return {**config, "OPENAI_API_KEY": OPENAI_KEY}

    @PROPERTY
    @given(body=call_bodies(models=("openai.gpt-4o", "gpt4o", "gpt-4o"), fallbacks=("mock.echo",)))
    def test_every_valid_body_reaches_openai_as_it_said(self, client, key_headers, body):
        sent = []

        def answer(request):
            sent.append((dict(request.headers), json.loads(request.body)))
            return 200, {"Content-Type": "application/json"}, json.dumps(openai_answer(sent[-1][1]))

        with responses.RequestsMock() as rsps:
            rsps.add_callback(responses.POST, OPENAI_URL, callback=answer)
            resp = post_json(client, body, key_headers)
        assert_call_success(assert_envelope(resp, allowed=(200,)))
        assert len(sent) == 1
        headers, out = sent[0]
        options = body.get("options") or {}
        assert headers["Authorization"] == f"Bearer {OPENAI_KEY}"
        assert out["model"] == "gpt-4o"
        assert out["messages"] == expected_openai_messages(body)
        prompt = body.get("prompt") or body.get("query")
        if prompt:
            assert out["messages"][-1] == {"role": "user", "content": prompt}
        assert out["temperature"] == _number(options.get("temperature", 0.7))
        assert out["max_completion_tokens"] == int(_number(options.get("maxTokens", 1000)))
        assert "max_tokens" not in out
        if options.get("stop"):
            assert out["stop"] == options["stop"][:4]
        else:
            assert "stop" not in out
        assert out.get("response_format") == expected_response_format(body)
        assert set(out) <= {"model", "messages", "temperature", "max_completion_tokens", "stop", "response_format"}


# -- bugs: kept visible as strict xfails ---------------------------------------------------------
@pytest.mark.parametrize("field", ["temperature", "maxTokens", "timeoutMs"])
def test_an_integer_beyond_float_range_is_a_400(client, key_headers, field):
    raw = f'{{"model": "mock.echo", "prompt": "hi", "options": {{"{field}": 1{"0" * 400}}}}}'.encode()
    assert assert_envelope(post_raw(client, raw, key_headers), allowed=(400,))["error"]["fields"]


@pytest.mark.parametrize("schema", [
    {"const": 1e309},
    {"type": "object", "properties": {"n": {"enum": [-1e309]}}},
    {"type": "number", "minimum": 1e309},
    {"type": "integer", "minimum": 1e309},
])
def test_out_of_range_numbers_in_a_schema_never_make_invalid_json(client, key_headers, schema):
    raw = json.dumps({"model": "mock.echo", "prompt": "hi", "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}).replace("Infinity", "1e309")
    assert_envelope(post_raw(client, raw.encode(), key_headers), allowed=(200, 400))


def test_a_lone_surrogate_with_an_idempotency_key(client, key_headers):
    resp = post_raw(client, b'{"model": "mock.echo", "prompt": "\\ud800"}', {**key_headers, "Idempotency-Key": "k-1"})
    assert assert_envelope(resp, allowed=(200, 400)).get("success") is not None


class TestLoggedContent:
    @pytest.fixture
    def config(self, config):
        return {**config, "FLOWCALL_LOG_CONTENT": "1"}

    def test_a_lone_surrogate_prompt_still_gets_its_ledger_row(self, app, client, key_headers):
        resp = post_raw(client, b'{"model": "mock.echo", "prompt": "a\\udfffb"}', key_headers)
        assert_envelope(resp, allowed=(200,))
        with app.extensions["flowcall"].store.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT count(*) FROM ledger").scalar_one() == 1


class _RefServer:
    """Counts GETs: a JSON Schema `$ref` must never make flowcall fetch anything."""

    def __init__(self):
        self.hits = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.hits.append(self.path)
                raw = b'{"type": "string"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ref_server():
    server = _RefServer()
    yield server
    server.close()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")      # jsonschema warns, then fetches anyway
def test_a_remote_ref_in_a_strict_schema_is_never_fetched(client, key_headers, ref_server):
    schema = {"$ref": f"{ref_server.url}/latest/meta-data/iam/security-credentials/"}
    resp = post_json(client, {"model": "mock.echo", "prompt": "hi", "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}}, key_headers)
    assert ref_server.hits == []
    assert_envelope(resp, allowed=(400,))


@pytest.mark.parametrize("schema", [{"$ref": "#/$defs/missing"},
                                    {"type": "object", "properties": {"a": {"$ref": "#/nope"}}}])
def test_an_unresolvable_local_ref_is_a_400(client, key_headers, schema):
    resp = post_json(client, {"model": "mock.echo", "prompt": "hi", "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "strict": True, "schema": schema}}}, key_headers)
    assert_envelope(resp, allowed=(400,))


def test_a_tiny_schema_cannot_make_a_huge_answer(client, key_headers):
    schema = {"type": "array", "minItems": 300,
              "items": {"type": "array", "minItems": 300, "items": {"type": "string"}}}
    request = {"model": "mock.echo", "prompt": "hi", "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": schema}}}
    resp = post_json(client, request, key_headers)
    assert len(json.dumps(request)) < 300
    assert resp.status_code == 400 or len(resp.get_data()) < 64 * 1024


@pytest.mark.parametrize("query", ["from=9999-12-31T23:59:59-14:00", "to=0001-01-01T00:00:00%2B14:00"])
def test_usage_dates_at_the_edge_of_time(client, key_headers, query):
    assert_envelope(client.get(f"/api/v3/llm/usage?{query}", headers=key_headers), allowed=(200, 400))

