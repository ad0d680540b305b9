"""The embeddings wire formats as pure functions: the request each builds (URL, headers, body) and
what each makes of answers, good and malformed. Payloads are shaped like the real ones
(../shared/specs/openai/openapi.yaml CreateEmbeddingResponse, gemini/generative_service.proto
BatchEmbedContentsResponse)."""
from __future__ import annotations

import json

import pytest

from app.calls import Embed
from app.catalog import Catalog
from app.errors import InvalidProviderResponse, ModelNotFound, ProviderRateLimited
from app.http import HttpResponse
from app.providers import Target, embedder_for, gemini_embeddings, openai_embeddings

CATALOG = Catalog.load()


def target(spec: str, base_url: str, key: str | None) -> Target:
    model = CATALOG.resolve(spec).model
    return Target(model=model, provider=CATALOG.providers[model.provider], base_url=base_url, api_key=key)


def reply(status: int, body) -> HttpResponse:
    return HttpResponse(status, json.dumps(body).encode(), {"content-type": "application/json"})


def test_ollama_is_the_openai_format_without_a_key_and_with_its_own_model_names():
    t = target("ollama.nomic-embed-text", "http://localhost:11434/v1", None)
    request = openai_embeddings.build_request(Embed(texts=("a",), query=True), t).request
    assert request.url == "http://localhost:11434/v1/embeddings" and "Authorization" not in request.headers
    assert request.json == {"model": "nomic-embed-text", "input": ["a"], "encoding_format": "float"}
    assert embedder_for("openai_chat").max_inputs == 2048 and embedder_for("anthropic") is None


def test_openai_token_arrays_go_as_they_came():
    t = target("text-embedding-3-small", "https://api.openai.com/v1", "sk-x-0123456789")
    request = openai_embeddings.build_request(Embed(tokens=((1, 2), (3,))), t).request
    assert request.json["input"] == [[1, 2], [3]]


@pytest.mark.parametrize("body", [
    {"data": [{"index": 0, "embedding": [0.1]}]},                       # one vector for two inputs
    {"data": [{"index": 0, "embedding": [0.1]}, {"index": 0, "embedding": [0.2]}]},  # the same index twice
    {"data": [{"index": 0, "embedding": [0.1]}, {"index": 1, "embedding": "AAAA"}]},  # base64 we did not ask for
    {"data": [{"index": 0, "embedding": []}, {"index": 1, "embedding": [0.2]}]},
])
def test_openai_malformed_answers_are_the_providers_fault(body):
    t = target("text-embedding-3-small", "https://api.openai.com/v1", "sk-x-0123456789")
    with pytest.raises(InvalidProviderResponse):
        openai_embeddings.parse_response(reply(200, body), Embed(texts=("a", "b")), t)


def test_openai_errors_are_chat_completions_errors():
    t = target("text-embedding-3-small", "https://api.openai.com/v1", "sk-x-0123456789")
    err = openai_embeddings.parse_error(reply(404, {"error": {"message": "The model does not exist",
                                                             "code": "model_not_found"}}), t)
    assert isinstance(err, ModelNotFound)


def test_gemini_answers_and_errors():
    t = target("gemini-embedding-001", "https://generativelanguage.googleapis.com", "AIza-0123456789")
    done = gemini_embeddings.parse_response(reply(200, {"embeddings": [{"values": [0.5, 1]}]}),
                                            Embed(texts=("a",)), t)
    assert done.vectors == ([0.5, 1.0],) and not done.usage.reported
    with pytest.raises(InvalidProviderResponse):
        gemini_embeddings.parse_response(reply(200, {"embeddings": []}), Embed(texts=("a",)), t)
    err = gemini_embeddings.parse_error(reply(429, {"error": {"code": 429, "message": "Quota exceeded",
                                                              "status": "RESOURCE_EXHAUSTED"}}), t)
    assert isinstance(err, ProviderRateLimited)
