"""Perplexity's Agent API (`POST {base}/v1/agent`, Responses-shaped), which replaced Sonar Chat
Completions on 2026-09-27 (../shared/specs/providers.md §0.1, §2.6).

Wire facts relied on, beyond providers.md, from Perplexity's own migration guide
(perplexityai/api-platform-developers, skills/migrate-sonar-to-agent-api/references/
request-mapping.md, models-and-presets.md, response-and-streaming.md) and the perplexity-py SDK
types (src/perplexity/types/response_create_params.py, input_item_param.py,
shared_params/response_format.py, json_schema_format.py, responses_usage.py):
- the API is strict: any unknown field is a 400, so `stop` (and `detail` on images) is never sent;
- input items are `{"type": "message", "role", "content"}`, content a string or parts
  `{"type": "input_text", "text"}` / `{"type": "input_image", "image_url": "<https or data URI>"}`;
- `response_format` is top-level and its only type is `json_schema` {name (1-64 of [A-Za-z0-9_-]),
  schema, strict}, so json_object mode is sent as an open object schema;
- search is not automatic with `model`: the `web_search` tool must be offered. A preset bundles
  its own tuned web_search, and a listed tool of the same type would replace it, so presets get no
  `tools`; likewise `instructions` REPLACES a preset's system prompt, so with a preset the
  caller's system messages travel as system input items instead;
- `max_output_tokens` is required for `anthropic/*` models and has a floor of 16;
- failed and cancelled runs come back as HTTP 200 with `status` and `error`;
- usage: `input_tokens_details.cache_read_input_tokens`; `usage.cost.total_cost` (USD) includes
  search fees; errors are `{"error": {"message", "type", "code": <int>, "param"?}}`, a bad model
  slug is a 400 `invalid_model`;
- function tools (perplexity-py types function_tool_param.py, input_item_param.py,
  function_call_output_item.py, response_create_params.py): a tool is `{"type": "function", "name",
  "description", "parameters", "strict"}`; the model's call is an output item `{"type":
  "function_call", "call_id", "name", "arguments": "<JSON>", "status", "thought_signature"?}` and goes
  back as an input item of the same shape, its result as `{"type": "function_call_output", "call_id",
  "output", "name"}`; the create params have no `tool_choice` or `parallel_tool_calls` (unknown
  fields are a 400), so only `auto` can be said, and `none` is said by not offering the functions.
  Presets are not offered function tools: a listed tool replaces a preset's own (catalog: `tools`
  false on preset models).
"""
from __future__ import annotations

import json
import re

from app import model_defaults, reasoning
from app.calls import Call, Completion, Message, TextPart, ToolCall, ToolCallPart, ToolResultPart, Usage
from app.errors import (CapabilityMissing, InvalidProviderResponse, ModelNotFound, ProviderError,
                      from_upstream_status, redact)
from app.http import HttpRequest, HttpResponse, Plan, retry_after_seconds
from app import strict_schema
from app.providers.common import int_or_zero, json_object, split_system

MIN_OUTPUT_TOKENS = 16
WEB_SEARCH_TOOL = {"type": "web_search"}
OPEN_OBJECT_SCHEMA = {"type": "object"}
_SCHEMA_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")
_INCOMPLETE = {"max_output_tokens": "length", "content_filter": "content_filter"}
_UNFINISHED = ("queued", "in_progress", "requires_action")
SAID = "Perplexity said: "


# -- build_request -----------------------------------------------------------------------------------
def _model_or_preset(model) -> dict:
    """Catalog entries name a `preset` or an Agent-API `model` slug; a pass-through name is a slug."""
    preset = model.params.get("preset")
    if preset:
        return {"preset": preset}
    return {"model": model.params.get("model") or model.name}


def _part(part, warnings: list[str]) -> dict:
    if isinstance(part, TextPart):
        return {"type": "input_text", "text": part.text}
    if part.detail is not None:
        warnings.append("Perplexity takes no image detail level; the image's detail setting was ignored.")
    return {"type": "input_image", "image_url": part.url}


def _item(message: Message, warnings: list[str]) -> dict:
    content = [_part(p, warnings) for p in message.parts] if message.has_images else message.text
    return {"type": "message", "role": message.role, "content": content}


def _function_items(message: Message) -> list[dict]:
    """A tool turn's results, or an assistant turn's calls (after its text, if any)."""
    items = []
    if message.role == "assistant" and message.text:
        items.append({"type": "message", "role": "assistant", "content": message.text})
    for part in message.parts:
        if isinstance(part, ToolCallPart):
            item = {"type": "function_call", "call_id": part.call.id, "name": part.call.name,
                    "arguments": json.dumps(part.call.arguments, ensure_ascii=False)}
            signature = (part.call.state or {}).get("thought_signature")
            if isinstance(signature, str) and signature:
                item["thought_signature"] = signature
            items.append(item)
        elif isinstance(part, ToolResultPart):
            items.append({"type": "function_call_output", "call_id": part.call_id, "output": part.content,
                          **({"name": part.name} if part.name else {})})
    return items


def _input(messages: tuple[Message, ...], warnings: list[str]):
    """A bare string for the commonest case (one plain user turn), as Perplexity's examples send."""
    if len(messages) == 1 and messages[0].role == "user" and not messages[0].has_images:
        return messages[0].text
    items = []
    for m in messages:
        if m.role == "tool" or m.tool_calls:
            items.extend(_function_items(m))
        else:
            items.append(_item(m, warnings))
    return items


def _function_tools(call: Call, warnings: list[str]) -> list[dict]:
    if not call.tools:
        return []
    choice = call.tool_choice
    if choice is not None and choice.mode in ("required", "tool"):
        raise CapabilityMissing("Perplexity's Agent API cannot be made to call a tool: tool_choice may only be "
                                "auto or none with a perplexity.* model.", fields={"tool_choice": "auto or none only"})
    if call.parallel_tool_calls is False:
        warnings.append("Perplexity's Agent API has no switch for parallel tool calls: parallel_tool_calls false "
                        "was not sent.")
    if choice is not None and choice.mode == "none":
        return []
    return [{"type": "function", "name": t.name, **({"description": t.description} if t.description else {}),
             "parameters": t.parameters if t.parameters is not None else {"type": "object", "properties": {}},
             **({"strict": True} if t.strict else {})} for t in call.tools]


def _schema_name(name: str | None) -> str:
    return _SCHEMA_NAME_UNSAFE.sub("_", name or "")[:64] or "response"


def _response_format(call: Call, warnings: list[str]) -> dict | None:
    """`response_format` is "the same shape as OpenAI" (providers.md §2.6) and the models behind the
    Agent API include OpenAI's, so a strict schema goes in OpenAI's strict subset (app.strict_schema),
    or best-effort with strict false where the subset cannot express it."""
    fmt = call.response_format
    if fmt is None:
        return None
    if fmt.type == "json_schema" and fmt.schema is not None:
        schema, strict = fmt.schema, fmt.strict
        if strict:
            form = strict_schema.to_strict(fmt.schema)
            schema, strict = form.schema, form.strict
            if form.warning:
                warnings.append(form.warning)
        spec = {"name": _schema_name(fmt.name), "schema": schema, "strict": strict}
    else:   # json_object, or a schema-less json_schema: the API only knows json_schema
        spec = {"name": "json_object", "schema": OPEN_OBJECT_SCHEMA, "strict": False}
    return {"type": "json_schema", "json_schema": spec}


def _max_output_tokens(call: Call, uses_preset: bool, warnings: list[str]) -> int | None:
    """A preset carries its own token budget: override it only with a limit the caller chose."""
    if uses_preset and not call.options.max_tokens_set:
        return None
    requested = call.options.max_tokens
    if requested < MIN_OUTPUT_TOKENS:
        warnings.append(f"options.maxTokens {requested} is below Perplexity's minimum of "
                        f"{MIN_OUTPUT_TOKENS}; {MIN_OUTPUT_TOKENS} was sent.")
        return MIN_OUTPUT_TOKENS
    return requested


def _temperature(call: Call, target, uses_preset: bool, warnings: list[str]) -> float | None:
    """Perplexity's published Agent API request schema (docs.perplexity.ai "Create Response",
    `ResponsesRequest`) has no `temperature`, and the API rejects unknown fields: the catalog marks
    its models `temperature: false`, so none is sent. A preset would keep its own sampling anyway."""
    temperature, warning = model_defaults.temperature(target.model, call.options)
    if warning:
        warnings.append(warning)
    if uses_preset and call.options.temperature is None:
        return None
    return temperature


def build_request(call: Call, target) -> Plan:
    warnings: list[str] = []
    selector = _model_or_preset(target.model)
    uses_preset = "preset" in selector
    if uses_preset:
        instructions, messages = "", call.messages
    else:
        instructions, messages = split_system(call.messages)

    body: dict = {**selector, "input": _input(messages, warnings)}
    if instructions:
        body["instructions"] = instructions
    max_output_tokens = _max_output_tokens(call, uses_preset, warnings)
    if max_output_tokens is not None:
        body["max_output_tokens"] = max_output_tokens
    temperature = _temperature(call, target, uses_preset, warnings)
    if temperature is not None:
        body["temperature"] = temperature
    fmt = _response_format(call, warnings)
    if fmt is not None:
        body["response_format"] = fmt
    if not uses_preset:
        body["tools"] = [dict(WEB_SEARCH_TOOL), *_function_tools(call, warnings)]
    reasoning.wants(call, target.model, warnings)   # no Sonar model is marked reasoning: a warning
    if any(call.options.stop):
        warnings.append("Perplexity's Agent API has no stop sequences; they were enforced on the output instead.")

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    request = HttpRequest("POST", f"{target.base_url}/v1/agent", headers=headers, json=body,
                          secrets=target.secrets)
    return Plan(request=request, warnings=tuple(dict.fromkeys(warnings)))


# -- parse_response ----------------------------------------------------------------------------------
def _text(output: list) -> str:
    return "".join(
        part["text"]
        for item in output if isinstance(item, dict) and item.get("type") == "message"
        for part in (item.get("content") if isinstance(item.get("content"), list) else ())
        if isinstance(part, dict) and part.get("type") == "output_text" and isinstance(part.get("text"), str))


def _usage(raw) -> Usage:
    if not isinstance(raw, dict):
        return Usage(reported=False)
    details = raw.get("input_tokens_details")
    details = details if isinstance(details, dict) else {}
    reasoning = raw.get("output_tokens_details")   # Responses-style; absent in Perplexity's SDK today
    reasoning = int_or_zero(reasoning.get("reasoning_tokens")) if isinstance(reasoning, dict) else 0
    return Usage(input_tokens=int_or_zero(raw.get("input_tokens")),
                 output_tokens=int_or_zero(raw.get("output_tokens")),
                 reasoning_tokens=reasoning, cached_input_tokens=int_or_zero(details.get("cache_read_input_tokens")),
                 cache_write_tokens=int_or_zero(details.get("cache_creation_input_tokens")))


MAX_CALL_COST_USD = 10_000      # one call; past it (1e300, inf) the figure is broken, not a price


def _cost(raw) -> float | None:
    """Perplexity's own USD figure, search fees included; anything else is not a cost we can use."""
    cost = raw.get("cost") if isinstance(raw, dict) else None
    if not isinstance(cost, dict) or cost.get("currency", "USD") != "USD":
        return None
    total = cost.get("total_cost")
    if isinstance(total, (int, float)) and not isinstance(total, bool) and 0 <= total <= MAX_CALL_COST_USD:
        return float(total)
    return None                 # the catalog's price applies instead


def _status_code(code) -> int | None:
    """Error codes are HTTP statuses (ints) in Perplexity's envelope; the SDK types them as strings."""
    try:
        status = int(code)
    except (TypeError, ValueError):
        return None
    return status if 400 <= status <= 599 else None


def _run_failed(body: dict, status: str, target) -> ProviderError:
    """A run that failed (or was cancelled) after the request was accepted is the provider's own
    fault, like their 5xx (`internal_error`, `upstream_structured_output_failed`...): retryable,
    unless the error carries a status that says otherwise (a 400 stays a rejection)."""
    provider = target.provider.name
    err = body.get("error") if isinstance(body.get("error"), dict) else {}
    message = err.get("message") if isinstance(err.get("message"), str) else None
    text = redact(f"{SAID}the run {status}" + (f": {message}" if message else "."), target.secrets)
    code = _status_code(err.get("code"))
    mapped = _mapped(code or 500, text, err.get("type"), provider, None)
    mapped.upstream_status = 200
    return mapped


def _finish(status, details) -> str:
    if status in (None, "completed"):
        return "stop"
    if status == "incomplete":
        reason = details.get("reason") if isinstance(details, dict) else None
        return _INCOMPLETE.get(reason, "other")
    return "other"


def parse_response(resp: HttpResponse, call: Call, target) -> Completion:
    provider = target.provider.name
    body = json_object(resp, provider)
    status = body.get("status")
    if status in ("failed", "cancelled"):
        raise _run_failed(body, status, target)
    output = body.get("output")
    if not isinstance(output, list):
        if isinstance(body.get("error"), dict):
            raise parse_error(resp, target)
        raise InvalidProviderResponse(f"{provider} answered without an output list.", provider=provider,
                                      retryable=True, upstream_status=resp.status)
    tool_calls = _function_calls(output, provider) if call.tools else ()
    if status in _UNFINISHED and not tool_calls:   # no background runs: over, or paused for our calls
        raise InvalidProviderResponse(f"{provider} answered with an unfinished run (status {status!r}).",
                                      provider=provider, retryable=True, upstream_status=resp.status)
    text = _text(output)
    finish = "tool_calls" if tool_calls else _finish(status, body.get("incomplete_details"))
    usage = _usage(body.get("usage"))
    warnings = []
    if finish == "length" and not text:
        warnings.append("The answer is empty because the token limit was reached: raise options.maxTokens.")
    model = body.get("model")
    return Completion(text=text, finish_reason=finish, usage=usage,
                      model=model if isinstance(model, str) and model else target.model.name,
                      cost=_cost(body.get("usage")), warnings=tuple(warnings), tool_calls=tool_calls)


def _function_calls(output: list, provider: str) -> tuple[ToolCall, ...]:
    calls = []
    for item in output:
        if not (isinstance(item, dict) and item.get("type") == "function_call"):
            continue
        try:
            arguments = json.loads(item.get("arguments") or "{}")
        except (TypeError, ValueError):
            arguments = None
        if not isinstance(item.get("call_id"), str) or not item["call_id"] or not isinstance(item.get("name"), str) \
                or not isinstance(arguments, dict):
            raise InvalidProviderResponse(f"{provider} answered with a malformed function_call.", provider=provider,
                                          retryable=True)
        signature = item.get("thought_signature")
        state = {"thought_signature": signature} if isinstance(signature, str) and signature else None
        calls.append(ToolCall(item["call_id"], item["name"], arguments, state))
    return tuple(calls)


# -- parse_error -------------------------------------------------------------------------------------
def _mapped(status: int, text: str, kind, provider: str, retry_after: float | None) -> ProviderError:
    if kind == "invalid_model":   # a bad model slug is a 400 here, but for us a missing model
        return ModelNotFound(text, provider=provider, upstream_status=status)
    return from_upstream_status(status, text, provider=provider, retry_after=retry_after)


def parse_error(resp: HttpResponse, target) -> ProviderError:
    body = resp.json()
    err = body.get("error") if isinstance(body, dict) and isinstance(body.get("error"), dict) else {}
    message = err.get("message") if isinstance(err.get("message"), str) else None
    text = message or f"HTTP {resp.status}: {resp.text(200)}"
    text = redact(f"{SAID}{text}", target.secrets)
    # An error envelope inside a 2xx is classified by its own code (= the HTTP status it means).
    status = resp.status if resp.status >= 400 else _status_code(err.get("code")) or 500
    mapped = _mapped(status, text, err.get("type"), target.provider.name,
                     retry_after_seconds(resp.header("retry-after")))
    mapped.upstream_status = resp.status
    return mapped
