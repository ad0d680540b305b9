"""Anthropic Messages (`POST {base}/v1/messages`).

Wire facts relied on (../shared/specs/providers.md §0.2-0.4, §2.2, §3 and ../shared/specs/anthropic/):
`anthropic-version` is pinned to 2023-06-01 (what the SDK's newer version changes is unverified);
system text is a top-level field; Opus 4.7+ and the 5 family reject any non-default `temperature`
(the catalog marks them `temperature: false`) and we never send `top_p`/`top_k`; structured output
is GA as `output_config.format` on the models the catalog marks `structured: "native"`, and a forced
tool everywhere else; thinking tokens are already inside `output_tokens`; a tier spend-cap 429 has
no `retry-after` and keeps failing until the month ends; 529 means overloaded.

Structured output is translated in anthropic_structured.py, extended thinking in anthropic_thinking.py.
"""
from __future__ import annotations

import json
import re

from app import model_defaults
from app.calls import (Call, Completion, ImagePart, Message, TextPart, ToolCall, ToolCallPart, ToolChoice,
                     ToolResultPart, Usage)
from app.errors import (ContentBlocked, InvalidProviderResponse, ProviderError, ProviderRateLimited,
                      from_upstream_status, redact)
from app.http import HttpRequest, HttpResponse, Plan, drop_none, retry_after_seconds
from app.images import split_data_uri
from app.providers.anthropic_structured import NotNative, Structured, native_schema, structured_output
from app.providers.anthropic_thinking import add_thinking, thinking_blocks, with_thinking
from app.providers.common import empty_answer_warnings, int_or_zero, json_object, merge_consecutive, split_system

API_VERSION = "2023-06-01"
FINISH_REASONS = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter",
           "tool_use": "tool_calls", "model_context_window_exceeded": "length", "pause_turn": "other"}
# errors.md: the status each error type comes with, for an error body that arrives inside a 200.
_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "billing_error": 402,
                 "permission_error": 403, "not_found_error": 404, "request_too_large": 413,
                 "rate_limit_error": 429, "api_error": 500, "timeout_error": 504, "overloaded_error": 529}


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
    add_thinking(call, model, structured, body, warnings)

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
    except NotNative as why:
        warnings.append(f"Anthropic's strict tool use does not support tool {tool.name!r}'s schema ({why}): it "
                        "was sent without strict.")
        return out
    out["strict"] = True
    return out


def _tools(call: Call, structured: Structured, model, warnings: list[str]) -> dict:
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
def parse_usage(raw) -> Usage:
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
        if not (isinstance(b.get("id"), str) and isinstance(b.get("name"), str) and isinstance(b.get("input"), dict)):
            raise InvalidProviderResponse(f"{provider} answered with a malformed tool_use block.", provider=provider,
                                          retryable=True)
        calls.append(ToolCall(b["id"], b["name"], b["input"]))
    return tuple(calls)


def _answer_tool_input(blocks: list, name: str):
    for b in blocks:
        if isinstance(b, dict) and b.get("type") == "tool_use" and b.get("name") == name:
            return b.get("input")
    return None


def refusal_error(body: dict, model_id: str, provider: str) -> ContentBlocked:
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
    finish = FINISH_REASONS.get(raw_finish, "other")
    data = None
    structured = structured_output(call, target.model)
    answer_tool = structured.tool["name"] if structured.tool is not None else None
    tool_calls = with_thinking(blocks, _tool_calls(blocks, answer_tool, provider)) if call.tools else ()
    if structured.tool is not None and raw_finish == "tool_use" and not tool_calls:
        data = _answer_tool_input(blocks, structured.tool["name"])
        if data is not None:
            finish = "stop"     # our own answer tool: the model finished, no tool call for the caller
            if structured.wrapped and isinstance(data, dict):
                data = data.get("value")
            text = text or json.dumps(data, ensure_ascii=False)
    if raw_finish == "refusal" and not text:
        raise refusal_error(body, target.model.id, provider)
    usage = parse_usage(body.get("usage"))
    warnings = empty_answer_warnings(finish, text, usage)
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
