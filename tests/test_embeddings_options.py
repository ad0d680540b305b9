"""Embeddings beyond the basic call (tests/test_embeddings.py): `auto` with `context.task: "embed"`
and the task kept from chat calls; the opt-in `truncate` for inputs over a model's limit; and the
connection test sending an embedding model an embeddings request (providers mocked with `responses`)."""
from __future__ import annotations

import json

import pytest
import responses

from app import embeddings
from app.calls import Call, Embed, Message, TextPart
from app.catalog import Catalog
from app.config import Settings
from app.errors import ValidationError
from app.routing import auto as autoroute
from app.routing.resolve import route

CATALOG = Catalog.load()
OPENAI_KEY = {"OPENAI_API_KEY": "sk-test-openai-0123456789"}
GEMINI_KEY = {"GEMINI_API_KEY": "AIza-test-0123456789abcdef"}
OPENAI = "https://api.openai.com/v1/embeddings"
SMALL = CATALOG.resolve("text-embedding-3-small").model           # 8192 tokens an input
LIMIT_BYTES = 8192 * embeddings.BYTES_PER_TOKEN_AT_MOST


def embed_call(model="auto", texts=("a",), task=None, **embed) -> Call:
    request = embeddings.EmbeddingRequest(Embed(texts=texts, **embed), model, "float", (), task)
    return embeddings.embedding_call(request, request_id="r-1")


def openai_ok(count: int) -> dict:
    return {"object": "list", "model": "text-embedding-3-small",
            "data": [{"object": "embedding", "index": i, "embedding": [0.5, 0.25]} for i in range(count)],
            "usage": {"prompt_tokens": count, "total_tokens": count}}


@pytest.fixture
def config(config):
    return {**config, **OPENAI_KEY, **GEMINI_KEY}


# -- auto with context.task: embed ----------------------------------------------------------------
@pytest.mark.parametrize("task", [None, "embed", "Embeddings", "embedding"])
def test_auto_embeds_with_the_cheapest_configured_model_of_the_embed_task(task):
    both = Settings.from_env({**OPENAI_KEY, **GEMINI_KEY})
    r = route(embed_call(task=task), CATALOG, both)
    assert [c.model.id for c in r.candidates] == ["openai.text-embedding-3-small"] and r.is_auto
    assert r.reason == "Task embed: openai.text-embedding-3-small is the cheapest configured embedding model."
    r = route(embed_call(task=task), CATALOG, Settings.from_env(GEMINI_KEY))
    assert [c.model.id for c in r.candidates] == ["google.gemini-embedding-001"]


def test_the_embed_task_lists_embedding_models_and_only_it_requires_embeddings():
    policy = autoroute.load_policy()
    models = [CATALOG.models[e["id"]] for e in policy["tasks"]["embed"]["models"]]
    assert models and all(m.capabilities.embeddings for m in models)
    assert [t for t in policy["tasks"] if autoroute.embeds(policy, t)] == ["embed"]
    for task, spec in policy["tasks"].items():
        if task != "embed":
            assert not any(CATALOG.models[e["id"]].capabilities.embeddings
                           for e in spec["models"] if e["id"] != autoroute.LOCAL), task


def test_an_embeddings_call_takes_no_chat_task_and_a_chat_call_not_the_embed_task():
    settings = Settings.from_env(OPENAI_KEY)
    with pytest.raises(ValidationError) as err:
        route(embed_call(task="code"), CATALOG, settings)
    assert "context.task" in err.value.fields and "embed" in err.value.message
    with pytest.raises(ValidationError) as err:
        route(embed_call(task="telepathy"), CATALOG, settings)
    assert "context.task" in err.value.fields
    chat = Call(messages=(Message("user", (TextPart("hi"),)),), model="auto", task="embed")
    with pytest.raises(ValidationError) as err:
        route(chat, CATALOG, settings)
    assert "context.task" in err.value.fields and "/v1/embeddings" in err.value.message


def test_a_policy_without_an_embed_task_leaves_auto_every_embedding_model(tmp_path):
    policy = autoroute.load_policy()
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({**policy, "tasks": {k: v for k, v in policy["tasks"].items() if k != "embed"},
                                "task_aliases": {}}))
    settings = Settings.from_env({**GEMINI_KEY, "FLOWCALL_ROUTING_FILE": str(path)})
    r = route(embed_call(), CATALOG, settings)
    assert [c.model.id for c in r.candidates] == ["google.gemini-embedding-001"]
    assert r.reason.startswith("auto: ")


@responses.activate
def test_the_node_endpoint_takes_context_task_and_v1_does_not(client, api_key):
    responses.post(OPENAI, json=openai_ok(1))
    body = {"model": "auto", "input": ["a"], "context": {"task": "embed"}}
    r = client.post("/api/v3/llm/embeddings", json=body, headers={"X-Api-Key": api_key})
    assert r.status_code == 200, r.get_json()
    assert r.get_json()["model"] == "openai.text-embedding-3-small"
    assert json.loads(responses.calls[0].request.body)["model"] == "text-embedding-3-small"
    r = client.post("/api/v3/llm/embeddings", json={**body, "context": {"task": "summarize"}},
                    headers={"X-Api-Key": api_key})
    assert r.status_code == 400 and "context.task" in r.get_json()["error"]["fields"]
    r = client.post("/api/v3/llm/embeddings", json={**body, "context": {"task": "embed", "x": 1}},
                    headers={"X-Api-Key": api_key})
    assert r.status_code == 400 and "context" in r.get_json()["error"]["fields"]
    r = client.post("/v1/embeddings", json=body, headers={"Authorization": f"Bearer {api_key}"})
    assert r.status_code == 400 and "context" in r.get_json()["error"]["message"]
    assert len(responses.calls) == 1


# -- truncate -------------------------------------------------------------------------------------
def test_without_truncate_an_over_long_input_is_left_to_the_400():
    embed = Embed(texts=("x" * (LIMIT_BYTES + 1),))
    assert embeddings.fitted(embed, SMALL) == (embed, ())
    with pytest.raises(ValidationError, match="truncate: true"):
        embeddings.check_inputs(embed, SMALL)


def test_truncate_cuts_only_over_long_inputs_to_the_limit_by_the_same_estimate():
    long, fits = "é" * LIMIT_BYTES, "y" * LIMIT_BYTES         # é: two UTF-8 bytes, never split
    cut, warnings = embeddings.fitted(Embed(texts=("a", long, fits), truncate=True), SMALL)
    assert cut.texts[0] == "a" and cut.texts[2] == fits and cut.texts[1] == "é" * (LIMIT_BYTES // 2)
    embeddings.check_inputs(cut, SMALL)
    assert warnings == ("truncate: inputs 1 cut to openai.text-embedding-3-small's limit of 8192 tokens an input "
                        "(estimated as 8 UTF-8 bytes a token).",)
    cut, _ = embeddings.fitted(Embed(texts=("é" * (LIMIT_BYTES // 2) + "xé",), truncate=True, query=True), SMALL)
    assert len(cut.texts[0].encode("utf-8")) == LIMIT_BYTES
    cut, warnings = embeddings.fitted(Embed(tokens=((1,) * 9000, (2,) * 3), truncate=True), SMALL)
    assert cut.tokens == ((1,) * 8192, (2,) * 3) and "inputs 0 cut" in warnings[0]
    unchanged = Embed(texts=("short",), truncate=True)
    assert embeddings.fitted(unchanged, SMALL) == (unchanged, ())


@pytest.mark.parametrize("path, auth", [("/v1/embeddings", "bearer"), ("/api/v3/llm/embeddings", "x-api-key")])
@responses.activate
def test_both_endpoints_truncate_when_asked_and_refuse_otherwise(client, api_key, path, auth):
    responses.post(OPENAI, json=openai_ok(2))
    headers = {"Authorization": f"Bearer {api_key}"} if auth == "bearer" else {"X-Api-Key": api_key}
    body = {"model": "text-embedding-3-small", "input": ["short", "z" * (LIMIT_BYTES + 100)],
            "encoding_format": "float"}
    r = client.post(path, json=body, headers=headers)
    assert r.status_code == 400 and "truncate" in json.dumps(r.get_json())
    assert not responses.calls
    r = client.post(path, json={**body, "truncate": True}, headers=headers)
    assert r.status_code == 200, r.get_json()
    out = r.get_json()
    warnings = out["flowcall"]["warnings"] if auth == "bearer" else out["warnings"]
    assert any(w.startswith("truncate: inputs 1 cut") for w in warnings)
    assert json.loads(responses.calls[0].request.body)["input"] == ["short", "z" * LIMIT_BYTES]
    r = client.post(path, json={**body, "truncate": "yes"}, headers=headers)
    assert r.status_code == 400 and "truncate" in json.dumps(r.get_json())


# -- the connection test --------------------------------------------------------------------------
@responses.activate
def test_the_connection_test_sends_an_embedding_model_one_input_to_embed(client, api_key):
    responses.post(OPENAI, json=openai_ok(1))
    r = client.post("/api/v3/llm/test-connection", json={"provider": "openai", "model": "text-embedding-3-small"},
                    headers={"X-Api-Key": api_key})
    assert r.status_code == 200 and r.get_json()["status"] == "connected", r.get_json()
    [sent] = responses.calls
    assert sent.request.url == OPENAI
    assert json.loads(sent.request.body) == {"model": "text-embedding-3-small", "input": ["ping"],
                                             "encoding_format": "float"}


@responses.activate
def test_the_connection_test_reports_an_embedding_models_auth_failure(client, api_key):
    responses.post(OPENAI, status=401, json={"error": {"message": "Incorrect API key provided",
                                                       "type": "invalid_request_error", "code": "invalid_api_key"}})
    r = client.post("/api/v3/llm/test-connection", json={"provider": "openai", "model": "text-embedding-3-small"},
                    headers={"X-Api-Key": api_key})
    assert r.status_code == 200 and r.get_json()["status"] == "auth_failed"
    assert len(responses.calls) == 1                  # one attempt, no retries
