"""`mock.echo`: answers offline, instantly and for free, so a workflow can be built and dry-run
before anyone has a provider key. It echoes the last user message; with `response_format` it
returns an example object that satisfies the schema. With tools it calls the first tool (or the
one tool_choice names) with example arguments that fit its schema, and once a tool result comes
back it echoes that result, so a tool loop can be dry-run end to end. It is a stand-in, never a model.
"""
from __future__ import annotations

import json
import math

from app import reasoning
from app.json_schema import resolve_local
from app.calls import Call, Completion, ToolCall, ToolResultPart, Usage
from app.errors import CapabilityMissing, ValidationError

EXAMPLE_BUDGET = 10_000        # values in one example: a 250-byte schema must not build gigabytes
MAX_EXAMPLE_STRING = 100_000   # characters in one example string (minLength)
SCHEMA_FIELD = "response_format.json_schema.schema"


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def example_for(schema: dict | None, depth: int = 0, budget: list | None = None, root: dict | None = None):
    """A small value meant to satisfy a JSON schema (the subset structured outputs use); `complete`
    checks that it does."""
    budget = [EXAMPLE_BUDGET] if budget is None else budget
    root = schema if root is None else root
    budget[0] -= 1
    if budget[0] < 0:
        raise ValidationError("mock.echo will not build an example this large: lower the schema's minItems.",
                              fields={SCHEMA_FIELD: "example too large"})
    if not isinstance(schema, dict) or depth > 8:
        return {}
    if isinstance(schema.get("$ref"), str) and schema["$ref"].startswith("#"):
        target = resolve_local(root, schema["$ref"])
        if target is not None:
            rest = {k: v for k, v in schema.items() if k != "$ref"}
            return example_for({**target, **rest} if isinstance(target, dict) else target, depth + 1, budget, root)
    if isinstance(schema.get("allOf"), list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged = _merge(merged, part)
        return example_for(merged, depth + 1, budget, root)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return example_for(schema[key][0], depth + 1, budget, root)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties") or {}
        required = schema.get("required") or []
        # Deep down a recursive schema, only what is required: the example must end somewhere.
        keep = props if depth < 4 else {k: v for k, v in props.items() if k in required}
        return {name: example_for(sub, depth + 1, budget, root) for name, sub in keep.items()}
    if kind == "array":
        least = schema.get("minItems", 0)
        n = max(least, 1) if depth < 4 else least
        if not isinstance(n, int) or n > budget[0]:
            budget[0] = -1
            return example_for(None, depth, budget, root)
        return [example_for(schema.get("items") or {}, depth + 1, budget, root) for _ in range(n)]
    if kind in ("integer", "number"):
        return _number(schema, kind)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return _string(schema, budget)


def _merge(a: dict, b: dict) -> dict:
    """allOf's parts as one schema: properties and required joined, other keywords from the last."""
    merged = {**a, **b}
    merged["properties"] = {**(a.get("properties") or {}), **(b.get("properties") or {})}
    merged["required"] = list(dict.fromkeys([*(a.get("required") or []), *(b.get("required") or [])]))
    if not merged["properties"]:
        del merged["properties"]
    if not merged["required"]:
        del merged["required"]
    return merged


def _number(schema: dict, kind: str):
    """0, moved into the schema's range."""
    value = 0
    low, high = schema.get("minimum"), schema.get("maximum")
    low_x, high_x = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if _is_number(low) and value < low:
        value = math.ceil(low) if kind == "integer" else low
    if _is_number(high) and value > high:
        value = math.floor(high) if kind == "integer" else high
    if _is_number(low_x) and value <= low_x:
        value = math.floor(low_x) + 1
    if _is_number(high_x) and value >= high_x:
        value = math.ceil(high_x) - 1
    return int(value) if kind == "integer" else float(value)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string(schema: dict, budget: list) -> str:
    text = "example"
    least = schema.get("minLength", 0)
    if isinstance(least, int) and least > len(text):
        if least > MAX_EXAMPLE_STRING:
            budget[0] = -1
            raise ValidationError(f"mock.echo will not build a string of {least} characters (minLength): at most "
                                  f"{MAX_EXAMPLE_STRING}.", fields={SCHEMA_FIELD: "example too large"})
        text = text + "x" * (least - len(text))
    most = schema.get("maxLength")
    if isinstance(most, int) and most < len(text):
        text = text[:most]
    return text


def _unsatisfied(schema: dict, example) -> str | None:
    """Why the example fails its schema (None if it does not): mock.echo then answers as a model
    constrained to the schema cannot, with the reason, instead of an answer that fails validation."""
    import jsonschema

    from app.postprocess import validator_for
    try:
        error = jsonschema.exceptions.best_match(validator_for(json.dumps(schema, sort_keys=True)).iter_errors(example))
    except RecursionError:
        return "the schema nests too deeply"
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path) or "(root)"
    return f"at {where}: {error.message[:200]}"


def _example(schema):
    """An example that satisfies the schema, or a 400 saying why mock.echo cannot build one (a
    pattern it cannot generate, contradictory allOf parts): never an answer that fails the schema,
    which would be a 502 that says "retry" when retrying can never help."""
    example = example_for(schema)
    why = _unsatisfied(schema, example) if isinstance(schema, dict) else None
    if why:
        raise CapabilityMissing(f"mock.echo cannot build an example that satisfies this schema ({why}). It builds "
                                "simple examples only: try the schema with a real model (if no value can satisfy "
                                "it, a real model's answer will fail it too).",
                                fields={SCHEMA_FIELD: f"no mock example: {why}"})
    return example


def _tool_call(call: Call) -> ToolCall | None:
    """The call mock.echo makes: none after a tool result (the loop ends) or with tool_choice none."""
    if not call.tools or call.messages[-1].role == "tool":
        return None
    choice = call.tool_choice
    if choice is not None and choice.mode == "none":
        return None
    tool = next((t for t in call.tools if t.name == choice.name), call.tools[0]) \
        if choice is not None and choice.mode == "tool" else call.tools[0]
    parameters = tool.parameters or {"type": "object"}
    arguments = example_for(parameters, root=parameters)
    turn = sum(1 for m in call.messages if m.role == "assistant")
    return ToolCall(f"call_mock_{turn}", tool.name, arguments if isinstance(arguments, dict) else {})


def _last_tool_result(call: Call) -> str | None:
    last = call.messages[-1]
    if last.role != "tool":
        return None
    return "\n".join(p.content for p in last.parts if isinstance(p, ToolResultPart))


def complete(call: Call, target) -> Completion:
    effort = call.options.reasoning_effort        # mock.echo does not reason: a warning, if asked
    ignored = (reasoning.not_supported_warning("mock.echo", effort),) if effort else ()
    tool_call = _tool_call(call)
    if tool_call is not None:
        prompt = "\n".join(m.text for m in call.messages)
        return Completion(text="", finish_reason="tool_calls", model="echo", cost=0.0, tool_calls=(tool_call,),
                          usage=Usage(input_tokens=_estimate_tokens(prompt), output_tokens=1),
                          warnings=("mock.echo is an offline stand-in: it called the first tool with example "
                                    "arguments.", *ignored))
    last_user = _last_tool_result(call)
    if last_user is None:
        last_user = next((m.text for m in reversed(call.messages) if m.role == "user"), "")
    fmt = call.response_format
    if fmt is not None:
        text = json.dumps(_example(fmt.schema) if fmt.type == "json_schema" else {"echo": last_user})
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
        warnings=("mock.echo is an offline stand-in: it echoes your input and calls no model.", *ignored),
    )
