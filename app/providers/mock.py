"""`mock.echo`: answers offline, instantly and for free, so a workflow can be built and dry-run
before anyone has a provider key. It echoes the last user message; with `response_format` it
returns an example object that satisfies the schema. It is a stand-in, never a model.
"""
from __future__ import annotations

import json

from ..calls import Call, Completion, Usage
from ..errors import ValidationError

EXAMPLE_BUDGET = 10_000        # values in one example: a 250-byte schema must not build gigabytes


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def example_for(schema: dict | None, depth: int = 0, budget: list | None = None):
    """A small value that satisfies a JSON schema (the subset structured outputs use)."""
    budget = [EXAMPLE_BUDGET] if budget is None else budget
    budget[0] -= 1
    if budget[0] < 0:
        raise ValidationError("mock.echo will not build an example this large: lower the schema's minItems.",
                              fields={"response_format.json_schema.schema": "example too large"})
    if not isinstance(schema, dict) or depth > 8:
        return {}
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for(schema[key][0], depth + 1, budget)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: example_for(sub, depth + 1, budget) for name, sub in props.items()}
    if kind == "array":
        n = max(schema.get("minItems", 1), 1)
        if n > budget[0]:
            budget[0] = -1
            return example_for(None, depth, budget)
        return [example_for(schema.get("items") or {}, depth + 1, budget) for _ in range(n)]
    if kind == "integer":
        return max(int(schema.get("minimum", 0)), 0) if "minimum" in schema else 0
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return "example"


def complete(call: Call, target) -> Completion:
    last_user = next((m.text for m in reversed(call.messages) if m.role == "user"), "")
    fmt = call.response_format
    if fmt is not None:
        text = json.dumps(example_for(fmt.schema) if fmt.type == "json_schema" else {"echo": last_user})
    else:
        text = last_user
    words = text.split(" ")
    truncated = False
    limit = call.options.max_tokens
    if len(words) > limit and fmt is None:
        text, truncated = " ".join(words[:limit]), True
    prompt = "\n".join(m.text for m in call.messages)
    return Completion(
        text=text, finish_reason="length" if truncated else "stop",
        usage=Usage(input_tokens=_estimate_tokens(prompt), output_tokens=_estimate_tokens(text)),
        model="echo", cost=0.0,
        warnings=("mock.echo is an offline stand-in: it echoes your input and calls no model.",),
    )
