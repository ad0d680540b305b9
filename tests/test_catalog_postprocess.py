"""The catalog (data, merging, retirements, prices) and the shared post-processing."""
from __future__ import annotations

import json

import pytest

from app.calls import Completion, ResponseFormat, Usage
from app.catalog import Catalog
from app.errors import InvalidStructuredOutput, UnknownModel
from app.postprocess import enforce_stop, parse_structured
from app.providers.mock import example_for


def test_builtin_catalog_is_consistent():
    catalog = Catalog.load()
    for model in catalog.models.values():
        assert model.id == f"{model.provider}.{model.name}"
        if model.status == "retired":
            assert model.successor, model.id
            assert catalog.resolve(model.id).model.status != "retired"
        if model.price_input is not None:
            assert model.price_input >= 0 and model.price_output >= 0


@pytest.mark.parametrize("spec, served", [
    ("gpt4o", "openai.gpt-4o"), ("GPT4O", "openai.gpt-4o"), ("openai.gpt-4o", "openai.gpt-4o"), ("gpt-4o", "openai.gpt-4o"),
    ("claude_opus", "anthropic.claude-opus-4-8"), ("gemini_15_flash", "google.gemini-3.5-flash"),
    ("gemini.gemini-2.5-pro", "google.gemini-2.5-pro"), ("grok.grok-4.3", "xai.grok-4.3"),
    ("perplexity", "perplexity.sonar"), ("gemma2-9b-it", "groq.openai/gpt-oss-20b"),
])
def test_resolution(spec, served):
    assert Catalog.load().resolve(spec).model.id == served


def test_override_file_adds_models_and_corrects_prices(tmp_path):
    override = tmp_path / "models.json"
    override.write_text(json.dumps({"models": [
        {"id": "openai.gpt-4o", "price": {"input": 1.0, "output": 2.0}},
        {"id": "ollama.llama3.2", "label": "Llama 3.2 (local)", "aliases": ["local"], "price": {"input": 0, "output": 0},
         "capabilities": {"vision": False}},
    ]}))
    catalog = Catalog.load(str(override))
    gpt = catalog.resolve("gpt4o").model
    assert (gpt.price_input, gpt.price_output) == (1.0, 2.0) and gpt.capabilities.json_schema
    local = catalog.resolve("local").model
    assert local.id == "ollama.llama3.2" and local.known and not local.capabilities.vision
    assert local.capabilities.temperature     # unspecified capabilities come from the provider defaults
    assert local.cost(Usage(1000, 1000)) == 0


def test_cost_from_usage():
    model = Catalog.load().resolve("openai.gpt-4o").model
    assert model.cost(Usage(input_tokens=1_000_000, output_tokens=100_000)) == pytest.approx(2.5 + 1.0)
    assert Catalog.load().lookup("openai.gpt-4.1-mini").cost(Usage(1, 1)) is None     # no price on OpenAI's page yet


def test_unknown_specs():
    catalog = Catalog.load()
    with pytest.raises(UnknownModel) as info:
        catalog.resolve("acme.model")
    assert info.value.code == "unknown_provider"
    with pytest.raises(UnknownModel):
        catalog.resolve("mock.other")


@pytest.mark.parametrize("text, stops, expected", [
    ("1\n2\nDONE\n3", ("DONE",), ("1\n2\n", True)),
    ("abc", ("x", "b"), ("a", True)),
    ("abc", (), ("abc", False)),
    ("END at start", ("END",), ("", True)),
])
def test_enforce_stop(text, stops, expected):
    assert enforce_stop(text, stops) == expected


def completion(text, finish="stop", data=None):
    return Completion(text=text, finish_reason=finish, usage=Usage(), model="m", data=data)


@pytest.mark.parametrize("text, data", [
    ('{"a": 1}', {"a": 1}),
    ('```json\n{"a": 1}\n```', {"a": 1}),
    ('```\n{"a": 1}\n```', {"a": 1}),
    ('Here you go: {"a": 1} Hope it helps!', {"a": 1}),
])
def test_parse_structured_tolerates_wrappers(text, data):
    assert parse_structured(completion(text), ResponseFormat("json_object"), "p") == data


def test_parse_structured_failures():
    with pytest.raises(InvalidStructuredOutput, match="token limit"):
        parse_structured(completion('{"a": ', "length"), ResponseFormat("json_object"), "p")
    with pytest.raises(InvalidStructuredOutput, match="JSON object"):
        parse_structured(completion("[1, 2]"), ResponseFormat("json_object"), "p")
    schema = {"type": "object", "properties": {"age": {"type": "integer"}}, "required": ["age"]}
    with pytest.raises(InvalidStructuredOutput, match="age"):
        parse_structured(completion('{"age": "old"}'), ResponseFormat("json_schema", "x", schema, True), "p")
    # not strict: returned as parsed, not validated
    assert parse_structured(completion('{"age": "old"}'), ResponseFormat("json_schema", "x", schema, False), "p") == {"age": "old"}
    # native structured data (a tool input) wins over the text
    assert parse_structured(completion("", data={"age": 3}), ResponseFormat("json_schema", "x", schema, True), "p") == {"age": 3}


@pytest.mark.parametrize("schema", [
    {"type": "object", "properties": {"name": {"type": "string"}, "tags": {"type": "array", "items": {"type": "string"}},
                                      "kind": {"enum": ["a", "b"]}, "n": {"type": ["integer", "null"]}},
     "required": ["name", "tags", "kind", "n"], "additionalProperties": False},
    {"type": "object", "properties": {"items": {"type": "array", "minItems": 2, "items": {"type": "object", "properties": {
        "x": {"type": "number", "minimum": 3}}, "required": ["x"]}}}, "required": ["items"]},
])
def test_mock_examples_satisfy_their_schemas(schema):
    import jsonschema
    jsonschema.validate(example_for(schema), schema)


def test_the_validator_cache_shared_by_tenants_is_bounded_by_bytes():
    """One tenant's distinct, large schemas cannot grow the per-process validator cache without end:
    a schema over the per-entry size is not kept, and the total stays under the byte bound."""
    from app import postprocess
    big = json.dumps({"type": "object", "description": "x" * (postprocess._VALIDATOR_ENTRY_MAX_BYTES + 1)})
    postprocess.validator_for(big)
    assert all(size <= postprocess._VALIDATOR_ENTRY_MAX_BYTES for size, _ in postprocess._VALIDATORS.values())
    for i in range(40):
        postprocess.validator_for(json.dumps({"type": "object", "description": f"{i}" + "y" * 600_000}))
    assert postprocess._validators_bytes <= postprocess._VALIDATORS_MAX_BYTES
    assert postprocess._validators_bytes == sum(size for size, _ in postprocess._VALIDATORS.values())
    assert len(postprocess._VALIDATORS) <= postprocess._VALIDATORS_MAX
