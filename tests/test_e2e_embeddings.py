"""Embeddings end to end: flowcall under gunicorn, the fake provider behind it, and in front the
official `openai` package (`embeddings.create`, float and its default base64, which it decodes) and
n8n's own requests (../shared/specs/fixtures/n8n/embeddings_*.json, replayed as sent). Every vector
that comes back is checked against the fake's (tests/fake_answers.vector_for): never zeros, never
garbage from a wrong encoding."""
from __future__ import annotations

import base64
import json
import struct

import pytest
import requests

from fake_answers import EMBEDDING_SIZE, vector_for
from service import SDK_ENV, e2e_service, openai_client, received, script, usage_totals
from specs import FIXTURES as SPEC_FIXTURES

pytestmark = pytest.mark.e2e
FIXTURES = sorted((SPEC_FIXTURES / "n8n").glob("embeddings_*.json"))     # none without ../shared: skipped
DOCS = ["Flowcall routes chat requests to several model providers.",
        "The Eiffel Tower is in Paris, the capital of France."]


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("e2e-embeddings"), fake, extra_env=SDK_ENV) as svc:
        yield svc


@pytest.fixture
def client(service):
    with openai_client(service) as sdk:
        yield sdk


def test_sdk_float(client, fake):
    answer = client.embeddings.create(model="text-embedding-3-small", input=DOCS, encoding_format="float")
    assert [d.embedding for d in answer.data] == [vector_for(t) for t in DOCS]
    assert answer.model == "openai.text-embedding-3-small" and answer.usage.prompt_tokens == 6
    [sent] = received(fake)
    assert sent["path"] == "/openai/v1/embeddings"
    assert sent["headers"]["Authorization"] == "Bearer sk-e2e-openai-0123456789"
    assert sent["body"] == {"model": "text-embedding-3-small", "input": DOCS, "encoding_format": "float"}


def test_sdk_default_base64_is_decoded_to_the_right_vectors(client):
    answer = client.embeddings.create(model="text-embedding-3-small", input="Which city is the capital of France?",
                                      dimensions=8)
    assert answer.data[0].embedding == vector_for("Which city is the capital of France?", 8)


def test_sdk_gemini_model_through_batch_embed_contents(client, fake):
    answer = client.embeddings.create(model="google.gemini-embedding-001", input=DOCS, encoding_format="float")
    assert [d.embedding for d in answer.data] == [vector_for(t) for t in DOCS]
    [sent] = received(fake)
    assert sent["path"] == "/gemini/v1beta/models/gemini-embedding-001:batchEmbedContents"
    assert sent["headers"]["x-goog-api-key"] == "AIzaE2E-0123456789abcdefghijklmn"
    assert [r["taskType"] for r in sent["body"]["requests"]] == ["RETRIEVAL_DOCUMENT"] * 2


def test_sdk_ollama_model_through_its_openai_compatible_embeddings(client, fake):
    answer = client.embeddings.create(model="ollama.nomic-embed-text", input="hello", encoding_format="float")
    assert answer.data[0].embedding == vector_for(["hello"][0])
    [sent] = received(fake)
    assert sent["path"] == "/ollama/v1/embeddings" and "Authorization" not in sent["headers"]
    assert sent["body"] == {"model": "nomic-embed-text", "input": ["hello"], "encoding_format": "float"}


@pytest.mark.parametrize("fixture", FIXTURES, ids=lambda p: p.stem)
def test_n8n_requests_replayed(service, fake, fixture):
    sent = json.loads(fixture.read_text())["request"]
    headers = {k: v for k, v in sent["headers"].items() if k not in ("connection", "accept-encoding")}
    r = requests.post(f"{service['url']}{sent['path']}", json=sent["body"], timeout=30,
                      headers={**headers, "Authorization": f"Bearer {service['key']}"})
    assert r.status_code == 200, r.text
    body = sent["body"]
    inputs = [body["input"]] if isinstance(body["input"], str) else body["input"]
    size = body.get("dimensions") or EMBEDDING_SIZE
    out = r.json()
    assert [d["index"] for d in out["data"]] == list(range(len(inputs)))
    for item, text in zip(out["data"], inputs, strict=True):
        vector = item["embedding"]
        if body.get("encoding_format") == "base64":
            raw = base64.b64decode(vector)
            vector = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        assert vector == vector_for(text, size) and all(v != 0 for v in vector)
    assert received(fake)[0]["body"]["encoding_format"] == "float"


def test_v3_node_splits_gemini_batches_and_writes_one_ledger_row(service, fake):
    before = usage_totals(service)["calls"]
    texts = [f"document {i}" for i in range(130)]
    r = requests.post(f"{service['url']}/api/v3/llm/embeddings", headers={"X-Api-Key": service["key"]},
                      json={"model": "gemini-embedding-001", "input": texts}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["embeddings"] == [vector_for(t) for t in texts] and r.json()["provider"] == "google"
    assert [len(s["body"]["requests"]) for s in received(fake)] == [100, 30]
    assert usage_totals(service)["calls"] == before + 1


def test_fallback_serves_every_vector_from_one_model(service, fake):
    unavailable = {"status": 503, "body": {"error": {"code": 503, "message": "busy", "status": "UNAVAILABLE"}}}
    script(fake, [{"status": 200, "body": {"embeddings": [{"values": [9.0]}] * 100}}, unavailable, unavailable,
                  unavailable])
    texts = [f"document {i}" for i in range(130)]
    r = requests.post(f"{service['url']}/v1/embeddings", headers={"Authorization": f"Bearer {service['key']}"},
                      json={"model": "gemini-embedding-001", "input": texts, "encoding_format": "float",
                            "fallbacks": ["text-embedding-3-small"]}, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["model"] == "openai.text-embedding-3-small"
    assert [d["embedding"] for d in out["data"]] == [vector_for(t) for t in texts]
    assert [s["path"].split("/")[1] for s in received(fake)] == ["gemini"] * 4 + ["openai"]
