"""Anthropic Messages (`POST {base}/v1/messages`).

Wire facts relied on (../shared/specs/providers.md §0.2-0.4, §2.2, §3 and ../shared/specs/anthropic/):
`anthropic-version` is pinned to 2023-06-01 (what the SDK's newer version changes is unverified);
system text is a top-level field; Opus 4.7+ and the 5 family reject any non-default `temperature`
(the catalog marks them `temperature: false`) and we never send `top_p`/`top_k`; structured output
is GA as `output_config.format` on the models the catalog marks `structured: "native"`, and a forced
tool everywhere else; thinking tokens are already inside `output_tokens`; a tier spend-cap 429 has
no `retry-after` and keeps failing until the month ends; 529 means overloaded.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

from .. import model_defaults, reasoning
from ..calls import (Call, Completion, ImagePart, Message, TextPart, ToolCall, ToolCallPart, ToolChoice,
                     ToolResultPart, Usage)
from ..errors import (ContentBlocked, InvalidProviderResponse, ProviderError, ProviderRateLimited,
                      from_upstream_status, redact)
from ..http import HttpRequest, HttpResponse, Plan, drop_none, retry_after_seconds
from ..images import split_data_uri
from ..json_schema import reachable_refs, resolve_local
from .common import int_or_zero, json_object, merge_consecutive, split_system

API_VERSION = "2023-06-01"
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter",
           "tool_use": "tool_calls", "model_context_window_exceeded": "length", "pause_turn": "other"}
# errors.md: the status each error type comes with, for an error body that arrives inside a 200.
_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                 "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                 "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


# -- structured output ------------------------------------------------------------------------------
# structured-outputs.md "JSON Schema limitations": what output_config.format cannot express. A schema
# using any of these goes the forced-tool way instead, where the model sees the schema whole.
_UNSUPPORTED_KEYWORDS = frozenset({
    "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "minLength", "maxLength",
    "maxItems", "uniqueItems", "contains", "minContains", "maxContains", "minProperties", "maxProperties",
    "patternProperties", "propertyNames", "dependentRequired", "dependentSchemas", "unevaluatedProperties",
    "unevaluatedItems", "prefixItems", "oneOf", "not", "if", "then", "else"})
_SUPPORTED_FORMATS = frozenset({"date-time", "time", "date", "duration", "email", "hostname", "uri", "ipv4",
                                "ipv6", "uuid"})
_SCHEMA_MAPS = ("properties", "$defs", "definitions")
_SCHEMA_LISTS = ("anyOf", "allOf")


class _NotNative(Exception):
    """A schema feature Anthropic's native structured output rejects with a 400."""


@dataclass(frozen=True)
class _Structured:
    """How a call's structured output is asked for. build_request sends it, parse_response recomputes
    it (it is a pure function of the call and the model) to know which tool_use block is the answer."""
    native_schema: dict | None = None   # output_config.format.schema
    tool: dict | None = None            # the single forced tool whose input is the answer
    wrapped: bool = False               # a non-object schema sits under "value" (tool input must be an object)
    warning: str | None = None

    def request_fields(self) -> dict:
        if self.native_schema is not None:
            return {"output_config": {"format": {"type": "json_schema", "schema": self.native_schema}}}
        if self.tool is not None:
            return {"tools": [self.tool], "tool_choice": {"type": "tool", "name": self.tool["name"]}}
        return {}


def _close_objects(node):
    """The schema as output_config needs it: every object `additionalProperties: false` (required;
    anything else is a 400). Raises _NotNative for what the grammar compiler cannot take."""
    if isinstance(node, list):
        return [_close_objects(n) for n in node]
    if not isinstance(node, dict):
        return node
    unsupported = sorted(_UNSUPPORTED_KEYWORDS & node.keys())
    if unsupported:
        raise _NotNative(", ".join(unsupported))
    if node.get("minItems", 0) not in (0, 1):
        raise _NotNative("minItems above 1")
    if "format" in node and node["format"] not in _SUPPORTED_FORMATS:
        raise _NotNative(f"format {node['format']!r}")
    if node.get("additionalProperties", False) is not False:
        raise _NotNative("additionalProperties other than false")
    if node.get("type") == "object" and not node.get("properties") and "additionalProperties" not in node:
        # closing it would turn "any object" into "only {}": the forced tool keeps it open
        raise _NotNative("an object with no listed properties")
    ref = node.get("$ref")
    if isinstance(ref, str) and not ref.startswith("#/"):
        raise _NotNative("a recursive or external $ref")
    if any(isinstance(sub, dict) and "$ref" in sub for sub in node.get("allOf") or ()):
        raise _NotNative("allOf with $ref")
    closed = {}
    for key, value in node.items():
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            closed[key] = {name: _close_objects(sub) for name, sub in value.items()}
        elif key in _SCHEMA_LISTS or key == "items":
            closed[key] = _close_objects(value)
        else:
            closed[key] = value                 # enum, const, default, description...: data, not schemas
    types = node.get("type")
    if (types == "object" or isinstance(types, list) and "object" in types or "properties" in node) \
            and "additionalProperties" not in node:
        closed["additionalProperties"] = False
    return closed


def _check_not_recursive(schema: dict) -> None:
    """Recursive schemas are unsupported: refuse any $ref the schema uses that can reach itself
    (definitions it does not use do not count). A `#` ref is not followed: _close_objects refuses it."""
    def target(ref: str):
        return resolve_local(schema, ref) if ref.startswith("#/") else None

    used = reachable_refs({k: v for k, v in schema.items() if k not in ("$defs", "definitions")}, target)
    if any(ref in reachable_refs(target(ref), target) for ref in used):
        raise _NotNative("a recursive schema")


# structured-outputs.md "Schema complexity limits": totals across the request's strict schemas.
MAX_OPTIONAL_PARAMETERS = 24
MAX_UNION_PARAMETERS = 16


def _check_complexity(schema: dict) -> None:
    """A schema past the explicit limits is a 400 ("Schema is too complex"): the forced tool, which
    is not compiled into a grammar, takes it instead."""
    optional = unions = 0
    stack = [schema]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
            continue
        if not isinstance(node, dict):
            continue
        properties = node.get("properties")
        if isinstance(properties, dict):
            required = set(node.get("required") or ())
            optional += sum(1 for name in properties if name not in required)
            unions += sum(1 for sub in properties.values()
                          if isinstance(sub, dict) and ("anyOf" in sub or isinstance(sub.get("type"), list)))
        stack.extend(v for k, v in node.items() if k not in ("enum", "const", "default", "examples"))
    if optional > MAX_OPTIONAL_PARAMETERS:
        raise _NotNative(f"more than {MAX_OPTIONAL_PARAMETERS} optional properties")
    if unions > MAX_UNION_PARAMETERS:
        raise _NotNative(f"more than {MAX_UNION_PARAMETERS} properties with union types")


def native_schema(schema: dict) -> dict:
    """The schema rewritten for output_config.format; raises _NotNative when it cannot be."""
    _check_not_recursive(schema)
    _check_complexity(schema)
    return _close_objects(schema)


def _answer_tool(call: Call, schema: dict | None) -> tuple[dict, bool]:
    """The forced tool: its input_schema must be an object, so other schemas are wrapped."""
    if schema is None:
        input_schema, wrapped = {"type": "object"}, False      # json_object: an open object
    elif schema.get("type") == "object":
        input_schema, wrapped = schema, False
    else:
        input_schema, wrapped = {"type": "object", "properties": {"value": schema}, "required": ["value"]}, True
    name = (call.response_format.name if call.response_format else None) or "response"
    return {"name": name, "description": "Give your final answer by calling this tool; its input is the answer.",
            "input_schema": input_schema}, wrapped


def structured_output(call: Call, model) -> _Structured:
    """Native output_config where the model has it and the schema fits the supported subset; else a
    forced tool. json_object always takes the tool: output_config requires `additionalProperties:
    false` on every object, so "any object" cannot be said natively (structured-outputs.md)."""
    fmt = call.response_format
    if fmt is None:
        return _Structured()
    schema = fmt.schema if fmt.type == "json_schema" and fmt.schema is not None else None
    warning = None
    if schema is not None and model.capabilities.structured == "native":
        try:
            return _Structured(native_schema=native_schema(schema))
        except _NotNative as why:
            warning = (f"Anthropic's native structured output does not support this schema ({why}): it was "
                       "sent as a forced tool instead.")
    tool, wrapped = _answer_tool(call, schema)
    return _Structured(tool=tool, wrapped=wrapped, warning=warning)


# -- the conversation -------------------------------------------------------------------------------
_VERSION = re.compile(r"^claude-(?:[a-z]+-)?(\d+)(?:-(\d{1,2}))?(?=-|$)")


def rejects_prefill(model) -> bool:
    """errors.md "Prefill not supported": Claude 4.6 and later and Mythos Preview answer a final
    assistant message with a 400. The version in the name decides (claude-3-haiku still takes
    prefill); a name without one falls back on the catalog's `temperature: false`, which marks
    Opus 4.7+, the 5 family and, restrictively, models the catalog does not know."""
    if "mythos" in model.name:
        return True
    match = _VERSION.match(model.name)
    if match:
        return (int(match.group(1)), int(match.group(2) or 0)) >= (4, 6)
    return not model.capabilities.temperature


def _without_blanks(messages: tuple[Message, ...], warnings: list[str]) -> tuple[Message, ...]:
    """The API rejects empty and whitespace-only text blocks; such parts and messages are dropped."""
    kept = []
    for m in messages:
        parts = tuple(p for p in m.parts if not (isinstance(p, TextPart) and not p.text.strip()))
        if parts:
            kept.append(Message(m.role, parts))
    if len(kept) < len(messages):
        warnings.append("Messages with no text and no image were not sent (Anthropic rejects empty messages).")
    return tuple(kept)


def _without_prefill(messages: tuple[Message, ...], call: Call, model, warnings: list[str]) -> tuple[Message, ...]:
    """A final assistant message asks the model to continue it ("prefill").

    We drop it, with a warning, where it would fail: on models that reject prefill, and with
    structured output (output_config is documented as incompatible with prefill, and the forced
    answer tool must open the turn itself). Dropping keeps a workflow working when its model is
    changed or a retired model is served by its successor (Sonnet 4 -> 4.6 rejects prefill): a hard
    400 for a hint about how to start the answer would be the worse failure. Elsewhere it is sent.
    """
    if len(messages) < 2 or messages[-1].role != "assistant":
        return messages
    if rejects_prefill(model):
        why = f"{model.id} does not accept a final assistant message (prefill)"
    elif call.response_format is not None:
        why = "a final assistant message (prefill) cannot be combined with structured output"
    else:
        return messages
    warnings.append(f"The final assistant message was not sent: {why}.")
    return messages[:-1]


def _image_block(part: ImagePart) -> dict:
    if part.is_data_uri:
        media_type, data = split_data_uri(part.url)
        return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
    return {"type": "image", "source": {"type": "url", "url": part.url}}


_TOOL_ID_BAD = re.compile(r"[^A-Za-z0-9_-]")


def tool_use_id(call_id: str) -> str:
    """Anthropic takes ids of letters, digits, _ and - only; an id from another provider is mapped
    the same way in the call and in its result, so they still match."""
    return _TOOL_ID_BAD.sub("_", call_id)[:128] or "call"


def _block(part) -> dict:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ToolCallPart):
        return {"type": "tool_use", "id": tool_use_id(part.call.id), "name": part.call.name,
                "input": part.call.arguments}
    if isinstance(part, ToolResultPart):
        block = {"type": "tool_result", "tool_use_id": tool_use_id(part.call_id), "content": part.content}
        if part.is_error:
            block["is_error"] = True
        return block
    return _image_block(part)


def _content(message: Message):
    if all(isinstance(p, TextPart) for p in message.parts):
        return message.text
    parts = message.parts
    if any(isinstance(p, ToolResultPart) for p in parts):   # results must open the user turn
        parts = tuple(sorted(parts, key=lambda p: not isinstance(p, ToolResultPart)))
    thinking = [b for c in message.tool_calls for b in thinking_blocks(c.state)]
    return thinking + [_block(p) for p in parts]    # a turn's thinking comes back first, unchanged


# -- thinking ---------------------------------------------------------------------------------------
def thinking_blocks(state: dict | None) -> list[dict]:
    """The thinking blocks kept in a tool call's state (see _with_thinking), rebuilt from their known
    fields only: the state came back through a client, and Anthropic checks each signature itself."""
    blocks = state.get("thinking") if isinstance(state, dict) else None
    out = []
    for b in blocks if isinstance(blocks, list) else ():
        if not isinstance(b, dict):
            continue
        if b.get("type") == "thinking" and isinstance(b.get("thinking"), str) and isinstance(b.get("signature"), str):
            out.append({"type": "thinking", "thinking": b["thinking"], "signature": b["signature"]})
        elif b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
            out.append({"type": "redacted_thinking", "data": b["data"]})
    return out


def _with_thinking(blocks: list, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
    """An answer's thinking blocks ride on its first tool call's state: in a tool loop Anthropic
    needs them back, unchanged, before the tool_use blocks of that assistant turn."""
    kept = thinking_blocks({"thinking": blocks})
    if not kept or not calls:
        return calls
    first = calls[0]
    return (ToolCall(first.id, first.name, first.arguments, {**(first.state or {}), "thinking": kept}),) + calls[1:]


def _thinking_blocker(call: Call, structured: "_Structured", manual: bool) -> str | None:
    """Why thinking cannot be turned on for this request, or None (thinking.md, providers.md §2.2)."""
    if manual and (structured.tool is not None or (call.tools and call.tool_choice is not None
                                                   and call.tool_choice.mode in ("required", "tool"))):
        return "Anthropic does not take a forced tool choice with extended thinking"
    if call.messages and call.messages[-1].role == "assistant":
        return "Anthropic does not take a final assistant message (prefill) with thinking"
    last_assistant = next((m for m in reversed(call.messages) if m.role == "assistant"), None)
    if last_assistant is not None and last_assistant.tool_calls and not any(
            thinking_blocks(c.state) for c in last_assistant.tool_calls):
        return ("the assistant turn that called the tools carries no thinking block (the conversation began "
                "without thinking, elsewhere, or its state was not kept), which Anthropic requires with thinking")
    return None


def _thinking(call: Call, model, structured: "_Structured", body: dict, warnings: list[str]) -> None:
    """Reasoning effort as Anthropic thinking. Models the catalog marks `params.thinking: adaptive`
    (manual budgets are a 400 there) get adaptive thinking with `output_config.effort`; the others
    `thinking.type: enabled` with a budget from the effort, added to max_tokens (which must exceed
    it). Thinking counts toward max_tokens, so an adaptive model that does not think by default (no
    catalog thinking allowance) gets the same headroom. Thinking text is omitted from answers
    (`display: omitted`): it is not part of `response`, and the signed blocks stay small enough to
    travel inside a tool call id."""
    effort = reasoning.wants(call, model, warnings)
    if effort is None:
        return
    adaptive = model.params.get("thinking") == "adaptive"
    blocker = _thinking_blocker(call, structured, manual=not adaptive)
    total = body["max_tokens"] + (reasoning.ANTHROPIC_BUDGETS[effort] if not adaptive
                                  else reasoning.anthropic_headroom(model, effort))
    if model.max_output_tokens:
        total = max(body["max_tokens"], min(total, model.max_output_tokens))
    budget = min(reasoning.ANTHROPIC_BUDGETS[effort], total - 1)
    if blocker is None and not adaptive:
        if budget < reasoning.ANTHROPIC_MIN_BUDGET:
            blocker = f"{model.id}'s output limit leaves no room for a thinking budget"
    if blocker:
        warnings.append(f"Reasoning effort {effort!r} was not sent: {blocker}.")
        return
    if adaptive:
        body["thinking"] = {"type": "adaptive", "display": "omitted"}
        body["max_tokens"] = total
        output_config = body.setdefault("output_config", {})
        output_config["effort"] = "low" if effort == "minimal" else effort
    else:
        body["max_tokens"] = total
        body["thinking"] = {"type": "enabled", "budget_tokens": budget, "display": "omitted"}
    if "temperature" in body:
        del body["temperature"]
        if call.options.temperature is not None:
            warnings.append("Anthropic takes no temperature with thinking: options.temperature was not sent.")


def _as_user(message: Message) -> Message:
    """A `tool` turn is a user turn of tool_result blocks, merged with its neighbours."""
    return Message("user", message.parts) if message.role == "tool" else message


def _conversation(call: Call, model, warnings: list[str]) -> tuple[str, list[dict]]:
    system, turns = split_system(call.messages)
    turns = tuple(_as_user(m) for m in turns)
    turns = merge_consecutive(_without_blanks(turns, warnings))
    turns = _without_prefill(turns, call, model, warnings)
    return system, [{"role": m.role, "content": _content(m)} for m in turns]


# -- the request ------------------------------------------------------------------------------------
def _stop_sequences(call: Call, caps, warnings: list[str]) -> list[str]:
    stops = [s for s in call.options.stop if s.strip()]
    if len(stops) < len(call.options.stop):
        warnings.append("Anthropic rejects empty or whitespace-only stop sequences: they were not sent, "
                        "and were enforced on the output instead.")
    if stops and not caps.stop:
        warnings.append("This model does not accept stop sequences; they were enforced on the output instead.")
        return []
    return stops[:caps.stop_limit] if caps.stop_limit else stops


def messages_url(base_url: str) -> str:
    """The base is the host (`https://api.anthropic.com`, as the SDK's ANTHROPIC_BASE_URL); a base
    that already ends in /v1 is accepted too rather than turned into /v1/v1."""
    base = base_url.rstrip("/")
    return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"


def build_request(call: Call, target) -> Plan:
    model = target.model
    caps = model.capabilities
    warnings: list[str] = []
    structured = structured_output(call, model)
    if structured.warning:
        warnings.append(structured.warning)
    system, messages = _conversation(call, model, warnings)

    body: dict = {"model": model.name, "max_tokens": model_defaults.max_tokens(model, call.options)}
    if system:
        body["system"] = system
    body["messages"] = messages
    temperature, warning = model_defaults.temperature(model, call.options)
    if temperature is not None:
        body["temperature"] = temperature
    if warning:
        warnings.append(warning)
    stops = _stop_sequences(call, caps, warnings)
    if stops:
        body["stop_sequences"] = stops
    body.update(structured.request_fields())
    body.update(_tools(call, structured, model, warnings))
    _thinking(call, model, structured, body, warnings)

    headers = {"anthropic-version": API_VERSION, "content-type": "application/json"}
    if target.api_key:
        headers["x-api-key"] = target.api_key
    request = HttpRequest("POST", messages_url(target.base_url), headers=headers, json=body,
                          secrets=target.secrets)
    return Plan(request=request, warnings=tuple(warnings))


def _tool(tool, model, warnings: list[str]) -> dict:
    """A caller's tool. `strict` becomes strict tool use where the model has native structured
    output and the schema fits its subset (closed objects, as output_config needs); elsewhere the
    tool goes without it, with a warning."""
    schema = tool.parameters if tool.parameters is not None else {"type": "object"}
    out = drop_none({"name": tool.name, "description": tool.description, "input_schema": schema})
    if not tool.strict:
        return out
    if model.capabilities.structured != "native":
        warnings.append(f"{model.id} has no strict tool use: tool {tool.name!r} was sent without strict.")
        return out
    try:
        out["input_schema"] = native_schema(schema)
    except _NotNative as why:
        warnings.append(f"Anthropic's strict tool use does not support tool {tool.name!r}'s schema ({why}): it "
                        "was sent without strict.")
        return out
    out["strict"] = True
    return out


def _tools(call: Call, structured: _Structured, model, warnings: list[str]) -> dict:
    """The caller's tools (`input_schema`), tool_choice (auto / any / tool / none) and
    `disable_parallel_tool_use`. With a forced answer tool for structured output, the answer tool
    joins the caller's tools and the model must call one of them: a caller's tool to go on, the
    answer tool to finish."""
    if not call.tools:
        return {}
    tools = [_tool(t, model, warnings) for t in call.tools]
    choice = call.tool_choice or ToolChoice("auto")
    native = {"auto": {"type": "auto"}, "required": {"type": "any"}, "none": {"type": "none"},
              "tool": {"type": "tool", "name": choice.name}}[choice.mode]
    if structured.tool is not None:
        tools.append(structured.tool)
        if choice.mode in ("auto", "required"):
            native = {"type": "any"}
        elif choice.mode == "none":
            native = {"type": "tool", "name": structured.tool["name"]}
    if call.parallel_tool_calls is False and native["type"] in ("auto", "any", "tool"):
        native = {**native, "disable_parallel_tool_use": True}
    return {"tools": tools, "tool_choice": native}


# -- the answer -------------------------------------------------------------------------------------
def _usage(raw) -> Usage:
    """Total input is input + cache writes + cache reads (messages_create.md `usage`); writes are
    billed by TTL, so the 1-hour part (`cache_creation.ephemeral_1h_input_tokens`) is kept apart."""
    if not isinstance(raw, dict):
        return Usage(reported=False)
    cache_read = int_or_zero(raw.get("cache_read_input_tokens"))
    cache_write = int_or_zero(raw.get("cache_creation_input_tokens"))
    creation = raw.get("cache_creation")
    write_1h = int_or_zero(creation.get("ephemeral_1h_input_tokens")) if isinstance(creation, dict) else 0
    details = raw.get("output_tokens_details")
    thinking = int_or_zero(details.get("thinking_tokens")) if isinstance(details, dict) else 0
    return Usage(input_tokens=int_or_zero(raw.get("input_tokens")) + cache_write + cache_read,
                 output_tokens=int_or_zero(raw.get("output_tokens")),
                 reasoning_tokens=thinking, cached_input_tokens=cache_read,
                 cache_write_tokens=cache_write, cache_write_1h_tokens=min(write_1h, cache_write))


def _text(blocks: list) -> str:
    """Only text blocks are the answer: thinking, tool and server-tool blocks are not."""
    return "".join(b["text"] for b in blocks
                   if isinstance(b, dict) and b.get("type") == "text" and isinstance(b.get("text"), str))


def _tool_calls(blocks: list, answer_tool: str | None, provider: str) -> tuple[ToolCall, ...]:
    calls = []
    for b in blocks:
        if not (isinstance(b, dict) and b.get("type") == "tool_use") or b.get("name") == answer_tool:
            continue
        if not isinstance(b.get("id"), str) or not isinstance(b.get("name"), str) or not isinstance(b.get("input"), dict):
            raise InvalidProviderResponse(f"{provider} answered with a malformed tool_use block.", provider=provider,
                                          retryable=True)
        calls.append(ToolCall(b["id"], b["name"], b["input"]))
    return tuple(calls)


def _answer_tool_input(blocks: list, name: str):
    for b in blocks:
        if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == name:
            return b.get("input")
    return None


def _refusal(body: dict, model_id: str, provider: str) -> ContentBlocked:
    details = body.get("stop_details") if isinstance(body.get("stop_details"), dict) else {}
    why = details.get("explanation") or (f"category {details['category']}" if details.get("category") else
                                         "no explanation given")
    return ContentBlocked(f"{model_id} refused: {why}", provider=provider)


def parse_response(resp: HttpResponse, call: Call, target) -> Completion:
    provider = target.provider.name
    body = json_object(resp, provider)
    if body.get("type") == "error":
        raise parse_error(resp, target)
    blocks = body.get("content")
    if not isinstance(blocks, list):
        raise InvalidProviderResponse(f"{provider} answered without a content list.", provider=provider,
                                      retryable=True)
    text = _text(blocks)
    raw_finish = body.get("stop_reason")
    finish = _FINISH.get(raw_finish, "other")
    data = None
    structured = structured_output(call, target.model)
    answer_tool = structured.tool["name"] if structured.tool is not None else None
    tool_calls = _with_thinking(blocks, _tool_calls(blocks, answer_tool, provider)) if call.tools else ()
    if structured.tool is not None and raw_finish == "tool_use" and not tool_calls:
        data = _answer_tool_input(blocks, structured.tool["name"])
        if data is not None:
            finish = "stop"     # our own answer tool: the model finished, no tool call for the caller
            if structured.wrapped and isinstance(data, dict):
                data = data.get("value")
            text = text or json.dumps(data, ensure_ascii=False)
    if raw_finish == "refusal" and not text:
        raise _refusal(body, target.model.id, provider)
    usage = _usage(body.get("usage"))
    warnings = []
    if finish == "length" and not text:
        warnings.append("The answer is empty because the token limit was reached"
                        + (" while the model was thinking" if usage.reasoning_tokens else "")
                        + ": raise options.maxTokens.")
    return Completion(text=text, finish_reason=finish, usage=usage,
                      model=body.get("model") if isinstance(body.get("model"), str) else target.model.name,
                      data=data, warnings=tuple(warnings), tool_calls=tool_calls)


# -- errors -----------------------------------------------------------------------------------------
def _error_fields(body) -> tuple[str | None, str | None, str | None, str | None]:
    """(message, type, details.error_code, request_id) from `{"type": "error", "error": {...}}`."""
    if not isinstance(body, dict) or not isinstance(body.get("error"), dict):
        return None, None, None, None
    err = body["error"]
    details = err.get("details") if isinstance(err.get("details"), dict) else {}
    return (_str_or_none(err.get("message")), _str_or_none(err.get("type")),
            _str_or_none(details.get("error_code")), _str_or_none(body.get("request_id")))


def _str_or_none(value) -> str | None:
    return value if isinstance(value, str) else None


def parse_error(resp: HttpResponse, target) -> ProviderError:
    """Mapped by HTTP status, which every answer has (a 413 comes from Cloudflare as HTML), refined
    by the error body: spend caps and billing problems are quotas that retrying cannot clear."""
    provider = target.provider.name
    message, kind, error_code, request_id = _error_fields(resp.json())
    status = resp.status if resp.status >= 400 else _ERROR_STATUS.get(kind, 502)   # an error inside a 200
    text = message or f"HTTP {resp.status}: {resp.text(200)}"
    if request_id:
        text += f" (request_id {request_id})"
    text = redact(f"{target.provider.label} said: {text}", target.secrets)
    retry_after = retry_after_seconds(resp.header("retry-after"))
    if _is_quota(status, kind, error_code, message, retry_after, http_status=resp.status):
        # 402 billing_error is a quota too, not an auth failure: the key is fine, the account cannot
        # pay; like OpenAI's insufficient_quota it keeps failing until someone acts, so no retry.
        return ProviderRateLimited(text, provider=provider, code="provider_quota_exceeded", retryable=False,
                                   upstream_status=status)
    return from_upstream_status(status, text, provider=provider, retry_after=retry_after)


def _is_quota(status: int, kind, error_code, message, retry_after, *, http_status: int) -> bool:
    """rate-limits.md: the tier spend-cap 429 has no retry-after (and error_code
    enforced_spend_limit_reached); a spend limit the customer set is a 400 whose message begins
    "You have reached your specified ... API usage limits". A rate_limit_error inside a 200 or a
    stream has no headers of its own, so a missing retry-after says nothing there: it is an
    ordinary (retryable) rate limit unless its error_code names the spend cap."""
    if status == 402 or kind == "billing_error" or error_code == "enforced_spend_limit_reached":
        return True
    if status == 429:
        return http_status == 429 and retry_after is None
    return status == 400 and (message or "").startswith("You have reached your specified")
