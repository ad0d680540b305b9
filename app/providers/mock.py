"""`mock.echo`: answers offline, instantly and for free, so a workflow can be built and dry-run
before anyone has a provider key. It echoes the last user message; with `response_format` it
returns an example object that satisfies the schema. With tools it calls the first tool (or the
one tool_choice names) with example arguments that fit its schema, and once a tool result comes
back it echoes that result, so a tool loop can be dry-run end to end. It is a stand-in, never a model.
"""
from __future__ import annotations

import json

from ..calls import Call, Completion, ToolCall, ToolResultPart, Usage
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


def _tool_call(call: Call) -> ToolCall | None:
    """The call mock.echo makes: none after a tool result (the loop ends) or with tool_choice none."""
    if not call.tools or call.messages[-1].role == "tool":
        return None
    choice = call.tool_choice
    if choice is not None and choice.mode == "none":
        return None
    tool = next((t for t in call.tools if t.name == choice.name), call.tools[0]) \
        if choice is not None and choice.mode == "tool" else call.tools[0]
    arguments = example_for(tool.parameters or {"type": "object"})
    turn = sum(1 for m in call.messages if m.role == "assistant")
    return ToolCall(f"call_mock_{turn}", tool.name, arguments if isinstance(arguments, dict) else {})


def _last_tool_result(call: Call) -> str | None:
    last = call.messages[-1]
    if last.role != "tool":
        return None
    return "\n".join(p.content for p in last.parts if isinstance(p, ToolResultPart))


def complete(call: Call, target) -> Completion:
    tool_call = _tool_call(call)
    if tool_call is not None:
        prompt = "\n".join(m.text for m in call.messages)
        return Completion(text="", finish_reason="tool_calls", model="echo", cost=0.0, tool_calls=(tool_call,),
                          usage=Usage(input_tokens=_estimate_tokens(prompt), output_tokens=1),
                          warnings=("mock.echo is an offline stand-in: it called the first tool with example "
                                    "arguments.",))
    last_user = _last_tool_result(call)
    if last_user is None:
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
