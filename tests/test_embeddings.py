"""Embeddings: the request read as tables, splitting and the answer's encodings (pure); routing that
keeps embedding and chat models apart; dispatch splitting, merging, retrying and falling back on a fake
clock; and both endpoints over HTTP (Flask's test client, providers mocked with `responses`): shapes,
errors, the ledger, idempotency and the model lists. Shapes are OpenAI's (../shared/specs/openai/
openapi.yaml CreateEmbeddingRequest/Response)."""
from __future__ import annotations

import base64
import json
import struct

import pytest
import responses
from sqlalchemy import select

from app import embeddings
from app.transport.provider import MAX_RESPONSE_BYTES
from app.breaker import CircuitBreaker
from app.calls import Embed
from app.catalog import Catalog
from app.config import Settings
from app.tenancy.db import ledger
from app.dispatch import Dispatcher
from app.embedding_mode import Embedding
from app.errors import CapabilityMissing, ProviderOverloaded, ProviderTimeout, ValidationError
from app.routing.resolve import route
from app.tenancy.store import Limits
from conftest import FakeClock

CATALOG = Catalog.load()
KEYS = {"OPENAI_API_KEY": "sk-test-openai-0123456789", "GEMINI_API_KEY": "AIza-test-0123456789abcdef"}
OPENAI = "https://api.openai.com/v1/embeddings"
GEMINI = "https://generativelanguage.googleapis.com/v1beta/models/gemini-embedding-001:batchEmbedContents"


def vec(i: int, size: int = 3) -> list[float]:
    return [float(i + 1)] + [0.5] * (size - 1)


def openai_ok(inputs, start: int = 0, tokens_each: int = 2) -> dict:
    return {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": i, "embedding": vec(start + i)} for i in range(len(inputs))],
            "usage": {"prompt_tokens": tokens_each * len(inputs), "total_tokens": tokens_each * len(inputs)}}


def gemini_ok(count: int, start: int = 0) -> dict:
    return {"embeddings": [{"values": vec(start + i)} for i in range(count)]}


# -- the request (pure) ---------------------------------------------------------------------------
@pytest.mark.parametrize("raw, texts, tokens, query", [
    ({"input": "hello", "model": "m"}, ("hello",), (), True),
    ({"input": ["a", "b"], "model": "m"}, ("a", "b"), (), False),
    ({"input": [1, 2, 3], "model": "m"}, (), ((1, 2, 3),), False),
    ({"input": [[1, 2], [3]], "model": "m"}, (), ((1, 2), (3,)), False),
])
def test_inputs(raw, texts, tokens, query):
    r = embeddings.parse_request(raw)
    assert (r.embed.texts, r.embed.tokens, r.embed.query, r.model, r.encoding, r.fallbacks, r.task) == (
        texts, tokens, query, "m", "float", (), None)


@pytest.mark.parametrize("raw, field", [
    ({"model": "m"}, "input"),
    ({"input": "", "model": "m"}, "input"),
    ({"input": [], "model": "m"}, "input"),
    ({"input": ["a", ""], "model": "m"}, "input.1"),
    ({"input": ["a", 1], "model": "m"}, "input"),
    ({"input": [[1], []], "model": "m"}, "input.1"),
    ({"input": [True], "model": "m"}, "input"),
    ({"input": ["a"] * 2049, "model": "m"}, "input"),
    ({"input": "a"}, "model"),
    ({"input": "a", "model": "m", "encoding_format": "int8"}, "encoding_format"),
    ({"input": "a", "model": "m", "dimensions": 0}, "dimensions"),
    ({"input": "a", "model": "m", "dimensions": True}, "dimensions"),
    ({"input": "a", "model": "m", "fallbacks": "x"}, "fallbacks"),
    ({"input": "a", "model": "m", "temperature": 1}, "temperature"),
])
def test_bad_requests_name_the_field(raw, field):
    with pytest.raises(ValidationError) as err:
        embeddings.parse_request(raw)
    assert field in err.value.fields


def test_base64_is_little_endian_float32_as_openai_encodes_it():
    assert embeddings.base64_vector([1.0, -2.0]) == base64.b64encode(struct.pack("<2f", 1.0, -2.0)).decode()
    assert embeddings.base64_vector([1.0]) == "AACAPw=="


@pytest.mark.parametrize("sizes, max_inputs, max_tokens, ranges", [
    ([1] * 5, 2, None, [(0, 2), (2, 4), (4, 5)]),
    ([1] * 4, 4, None, [(0, 4)]),
    ([3, 3, 3], 10, 6, [(0, 2), (2, 3)]),
    ([9, 1], 10, 6, [(0, 1), (1, 2)]),          # one input over the request bound still goes, alone
])
def test_parts(sizes, max_inputs, max_tokens, ranges):
    embed = Embed(tokens=tuple((1,) * n for n in sizes))
    assert embeddings.parts(embed, max_inputs, max_tokens) == ranges


def test_a_part_holds_no_more_vectors_than_an_answer_under_the_transports_cap():
    per_part = embeddings.PART_VALUES // 1536
    assert embeddings.PART_VALUES * embeddings.ANSWER_BYTES_PER_VALUE <= MAX_RESPONSE_BYTES
    embed = Embed(texts=("t",) * 1000)
    assert embeddings.parts(embed, 2048, None, 1536) == [(0, per_part), (per_part, 2 * per_part),
                                                          (2 * per_part, 1000)]
    assert embeddings.parts(embed, 2048, None, 10 ** 9) == [(i, i + 1) for i in range(1000)]   # one at the least


def test_one_calls_vectors_are_bounded_before_any_provider_is_paid():
    large = CATALOG.resolve("text-embedding-3-large").model
    embeddings.check_inputs(Embed(texts=("a",) * 512), large)                  # n8n's default batch, 3072 dims
    with pytest.raises(ValidationError, match="at most 2,097,152") as err:
        embeddings.check_inputs(Embed(texts=("a",) * 2048), large)
    assert err.value.fields == {"input": err.value.fields["input"]}
    embeddings.check_inputs(Embed(texts=("a",) * 2048, dimensions=1024), large)   # fewer dimensions: fits


def test_input_limits_per_model():
    small = CATALOG.resolve("text-embedding-3-small").model
    gemini = CATALOG.resolve("gemini-embedding-001").model
    embeddings.check_inputs(Embed(texts=("x" * 8192 * 8,)), small)
    with pytest.raises(ValidationError, match="limit of 8192 tokens"):
        embeddings.check_inputs(Embed(texts=("ok", "x" * (8192 * 8 + 1))), small)
    with pytest.raises(ValidationError, match="limit of 8192 tokens"):
        embeddings.check_inputs(Embed(tokens=((1,) * 8193,)), small)
    with pytest.raises(CapabilityMissing, match="token arrays"):
        embeddings.check_inputs(Embed(tokens=((1, 2),)), gemini)
    with pytest.raises(CapabilityMissing, match="fixed vector size"):
        embeddings.check_inputs(Embed(texts=("a",), dimensions=256), CATALOG.resolve("text-embedding-ada-002").model)
    with pytest.raises(ValidationError, match="at most 1536"):
        embeddings.check_inputs(Embed(texts=("a",), dimensions=2000), small)


# -- routing --------------------------------------------------------------------------------------
def embed_call(model="text-embedding-3-small", texts=("a",), task=None, **kw):
    embed = Embed(texts=texts, query=len(texts) == 1, **kw.pop("embed", {}))
    return embeddings.embedding_call(embeddings.EmbeddingRequest(embed, model, "float", tuple(kw.pop("fallbacks", ())),
                                                                 task), request_id="r-1", **kw)


def test_a_chat_model_cannot_embed_and_the_error_names_embedding_models():
    with pytest.raises(CapabilityMissing) as err:
        route(embed_call("openai.gpt-4o"), CATALOG, Settings.from_env(KEYS))
    assert "openai.text-embedding-3-small" in err.value.message and "google.gemini-embedding-001" in err.value.message


def test_an_embedding_model_cannot_chat_and_is_never_a_chat_fallback():
    from app.calls import Call, Message, TextPart
    chat = Call(messages=(Message("user", (TextPart("hi"),)),), model="text-embedding-3-small")
    with pytest.raises(CapabilityMissing, match="embedding model"):
        route(chat, CATALOG, Settings.from_env(KEYS))
    chat = Call(messages=chat.messages, model="openai.gpt-4o", fallbacks=("text-embedding-3-small",))
    assert [c.model.id for c in route(chat, CATALOG, Settings.from_env(KEYS)).candidates] == ["openai.gpt-4o"]
    auto = Call(messages=chat.messages, model="auto", fallbacks=("text-embedding-3-small",))
    assert all(not c.model.capabilities.embeddings for c in route(auto, CATALOG, Settings.from_env(KEYS)).candidates)


def test_chat_models_are_not_embedding_fallbacks_and_auto_picks_the_cheapest_embedding_model():
    r = route(embed_call(fallbacks=("openai.gpt-4o", "gemini-embedding-001")), CATALOG, Settings.from_env(KEYS))
    assert [c.model.id for c in r.candidates] == ["openai.text-embedding-3-small", "google.gemini-embedding-001"]
    r = route(embed_call("auto"), CATALOG, Settings.from_env({"GEMINI_API_KEY": "AIza-test-0123456789abcdef"}))
    assert [c.model.id for c in r.candidates] == ["google.gemini-embedding-001"] and r.is_auto


# -- dispatch: split, merge, retry, fall back ----------------------------------------------------
def make():
    clock = FakeClock()
    return Dispatcher(Settings.from_env(KEYS), CATALOG, sleep=clock.sleep, clock=clock,
                      breaker=CircuitBreaker(clock=clock))


@responses.activate
def test_openai_inputs_over_2048_are_split_and_merged_in_order():
    texts = tuple(f"t{i}" for i in range(2100))
    responses.post(OPENAI, json=openai_ok(texts[:2048]))
    responses.post(OPENAI, json=openai_ok(texts[2048:], start=2048))
    answer = make().run(embed_call(texts=texts, embed={"dimensions": 256}), Embedding())    # 2048 a part fit the cap
    sent = [json.loads(c.request.body) for c in responses.calls]
    assert [len(s["input"]) for s in sent] == [2048, 52] and sent[1]["input"][0] == "t2048"
    assert [v[0] for v in answer.vectors] == [float(i + 1) for i in range(2100)]
    assert answer.usage.input_tokens == 4200 and answer.cost == pytest.approx(4200 * 0.02 / 1e6)


@responses.activate
def test_a_retry_resends_only_the_part_that_failed():
    texts = tuple(f"t{i}" for i in range(150))
    responses.post(GEMINI, json=gemini_ok(100))
    responses.post(GEMINI, status=503, json={"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}})
    responses.post(GEMINI, json=gemini_ok(50, start=100))
    answer = make().run(embed_call("gemini-embedding-001", texts=texts), Embedding())
    assert [len(json.loads(c.request.body)["requests"]) for c in responses.calls] == [100, 50, 50]
    assert [v[0] for v in answer.vectors] == [float(i + 1) for i in range(150)]
    assert answer.routing.attempts == 2 and not answer.usage.reported


@responses.activate
def test_a_later_part_failing_restarts_the_whole_call_on_the_fallback_model():
    texts = tuple(f"t{i}" for i in range(150))
    unavailable = {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}
    responses.post(GEMINI, json=gemini_ok(100, start=1000))
    for _ in range(3):
        responses.post(GEMINI, status=503, json=unavailable)
    responses.post(OPENAI, json=openai_ok(texts))
    answer = make().run(embed_call("gemini-embedding-001", texts=texts, fallbacks=("text-embedding-3-small",)),
                        Embedding())
    assert answer.routing.model_chosen == "openai.text-embedding-3-small" and answer.provider == "openai"
    assert [v[0] for v in answer.vectors] == [float(i + 1) for i in range(150)]      # none from gemini
    assert len(json.loads(responses.calls[-1].request.body)["input"]) == 150
    assert any("Fell back from google.gemini-embedding-001" in w for w in answer.warnings)


@responses.activate
def test_exhausted_without_fallbacks_is_the_providers_error():
    for _ in range(3):
        responses.post(OPENAI, status=503, json={"error": {"message": "busy", "type": "server_error"}})
    with pytest.raises(ProviderOverloaded):
        make().run(embed_call(), Embedding())


@responses.activate
def test_the_parts_share_the_calls_deadline():
    dispatcher = make()
    texts = tuple(f"t{i}" for i in range(150))

    def slow_first_part(request):
        dispatcher.clock.now += 61          # past the default 60 s deadline
        return 200, {}, json.dumps(gemini_ok(100))

    responses.add_callback(responses.POST, GEMINI, callback=slow_first_part)
    with pytest.raises(ProviderTimeout, match="embedded 1 of 2 parts"):
        dispatcher.run(embed_call("gemini-embedding-001", texts=texts), Embedding())
    assert len(responses.calls) == 1


# -- over HTTP ------------------------------------------------------------------------------------
@pytest.fixture
def config(config):
    return {**config, **KEYS}


@pytest.fixture
def store(app):
    return app.extensions["flowcall"].store


def ledger_rows(store) -> list[dict]:
    with store.engine.connect() as conn:
        return [dict(r) for r in conn.execute(select(ledger).order_by(ledger.c.id)).mappings()]


def bearer(key: str) -> dict:
    return {"Authorization": f"Bearer {key}"}


@responses.activate
def test_v1_embeddings_in_openai_shape_base64_and_float(client, api_key, store):
    responses.post(OPENAI, json=openai_ok(["a", "b"]))
    body = {"model": "text-embedding-3-small", "input": ["a", "b"], "encoding_format": "base64", "dimensions": 3,
            "user": "u-1"}
    r = client.post("/v1/embeddings", json=body, headers=bearer(api_key))
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["object"] == "list" and out["model"] == "openai.text-embedding-3-small"
    assert out["usage"] == {"prompt_tokens": 4, "total_tokens": 4}
    decoded = [list(struct.unpack("<3f", base64.b64decode(d["embedding"]))) for d in out["data"]]
    assert decoded == [vec(0), vec(1)] and [d["index"] for d in out["data"]] == [0, 1]
    sent = responses.calls[0].request
    assert sent.headers["Authorization"] == "Bearer sk-test-openai-0123456789"
    assert json.loads(sent.body) == {"model": "text-embedding-3-small", "input": ["a", "b"],
                                     "encoding_format": "float", "dimensions": 3, "user": "u-1"}
    [row] = ledger_rows(store)
    assert (row["endpoint"], row["model_served"], row["input_tokens"], row["status"]) == (
        "openai_embeddings", "openai.text-embedding-3-small", 4, 200)
    responses.post(OPENAI, json=openai_ok(["a"]))
    r = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"}, headers=bearer(api_key))
    assert r.get_json()["data"][0]["embedding"] == vec(0)


def test_v1_embeddings_errors_are_openai_shaped(client, api_key):
    r = client.post("/v1/embeddings", json={"model": "gpt-4o", "input": "a"}, headers=bearer(api_key))
    assert r.status_code == 400
    assert r.get_json()["error"]["code"] == "capability_missing"
    assert "text-embedding-3-small" in r.get_json()["error"]["message"]
    r = client.post("/v1/embeddings", json={"model": "gemini-embedding-001", "input": [[1, 2]]},
                    headers=bearer(api_key))
    assert r.status_code == 400 and "OpenAI" in r.get_json()["error"]["message"]
    r = client.post("/v1/embeddings", json={"model": "text-embedding-3-small", "input": "a"})
    assert r.status_code == 401 and r.get_json()["error"]["code"] == "missing_api_key"


@responses.activate
def test_v3_embeddings_flat_with_jwt_and_idempotency(client, jwt_headers, store):
    responses.post(GEMINI, json=gemini_ok(2))
    headers = {**jwt_headers, "Idempotency-Key": "embed-1"}
    body = {"model": "gemini-embedding-001", "input": ["doc one", "doc two"], "dimensions": 3}
    r = client.post("/api/v3/llm/embeddings", json=body, headers=headers)
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    assert out["success"] and out["embeddings"] == [vec(0), vec(1)] and out["provider"] == "google"
    assert out["model"] == "google.gemini-embedding-001" and out["usage"] is None and out["cost"] is None
    assert out["request_id"] and isinstance(out["latency_ms"], int)
    assert any("no token usage" in w for w in out["warnings"])
    sent = responses.calls[0].request
    assert sent.headers["x-goog-api-key"] == "AIza-test-0123456789abcdef" and "key=" not in sent.url
    assert json.loads(sent.body) == {"requests": [
        {"model": "models/gemini-embedding-001", "content": {"parts": [{"text": t}]}, "taskType": "RETRIEVAL_DOCUMENT",
         "outputDimensionality": 3} for t in ("doc one", "doc two")]}
    again = client.post("/api/v3/llm/embeddings", json=body, headers=headers)
    assert again.headers["Idempotent-Replay"] == "true" and again.get_json() == out
    assert len(responses.calls) == 1
    [row] = ledger_rows(store)
    assert row["endpoint"] == "embeddings" and row["cost"] is not None      # the estimate budgets are charged


def test_limits_and_budgets_apply(client, store, tenant_id):
    _, limited = store.create_key(tenant_id, limits=Limits(rpm=1))
    _, broke = store.create_key(tenant_id, limits=Limits(budget_usd=0.00000001))
    body = {"model": "text-embedding-3-small", "input": "a"}
    with responses.RequestsMock() as mocked:
        mocked.post(OPENAI, json=openai_ok(["a"]))
        mocked.post(OPENAI, json=openai_ok(["a"]))
        assert client.post("/v1/embeddings", json=body, headers=bearer(limited)).status_code == 200
        assert client.post("/api/v3/llm/embeddings", json=body, headers={"X-Api-Key": broke}).status_code == 200
    r = client.post("/v1/embeddings", json=body, headers=bearer(limited))
    assert r.status_code == 429
    r = client.post("/api/v3/llm/embeddings", json=body, headers={"X-Api-Key": broke})
    assert r.status_code == 402 and r.get_json()["error"]["code"].startswith("budget")


def test_model_lists_show_embedding_models(client, api_key):
    v1 = {m["id"] for m in client.get("/v1/models", headers=bearer(api_key)).get_json()["data"]}
    assert {"openai.text-embedding-3-small", "google.gemini-embedding-001"} <= v1
    listed = client.get("/api/v3/llm/models?capability=embeddings", headers={"X-Api-Key": api_key}).get_json()
    by_id = {m["id"]: m for m in listed["models"]}
    assert set(by_id) == {"openai.text-embedding-3-small", "openai.text-embedding-3-large",
                          "openai.text-embedding-ada-002", "google.gemini-embedding-001"}
    assert by_id["openai.text-embedding-3-small"]["embedding_dimensions"] == 1536
    assert by_id["google.gemini-embedding-001"]["max_input_tokens"] == 2048
