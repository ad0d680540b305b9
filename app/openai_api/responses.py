"""OpenAI's Responses API, spoken by flowcall: a request body in, a `Call` out; an `Answer` in, a
Response object (or its event stream) out. Pure translation (no Flask, no I/O) for nodes/responses.py;
the stored conversation a `previous_response_id` continues is passed in by the caller. The input
items, tools and text format are checked in app/openai_api/responses_input.py; answers are shaped in
app/openai_api/responses_output.py.

Shapes from ../shared/specs/openai/openapi.yaml: CreateResponse, Response, the input items
(EasyInputMessage, InputMessage, FunctionToolCall, FunctionCallOutputItemParam), the output items
(OutputMessage, FunctionToolCall) and the ResponseStreamEvent family.

What happens to each request field (anything not listed is a 400 naming the field):

| field | |
|---|---|
| `model` | honoured as on /v1/chat/completions: `provider.model`, an alias, a catalog name, or `auto` |
| `input` | a string (one user message) or a list of items: messages (roles user, system, developer, assistant; content a string or `input_text` / `input_image` (URL or data URI) / `output_text` / `refusal` parts), `function_call` (arguments a JSON object as a string), `function_call_output` (for a call earlier in the conversation); `reasoning` items are dropped; other item types: 400 |
| `instructions` | a system message before the conversation (not carried over by `previous_response_id`, as OpenAI's) |
| `previous_response_id` | the stored conversation of that response (this tenant's, not expired) goes before `input` |
| `tools` | `function` tools; built-in tools (web search, file search, code interpreter, MCP, ...) are a 400 naming the tool: flowcall cannot run them. A top-level `$schema` in `parameters` is dropped |
| `tool_choice` | `auto`, `none`, `required`, `{"type": "function", "name"}`; other forms: 400 |
| `parallel_tool_calls` | passed on to the provider |
| `text.format` | `text`, `json_object`, `json_schema` {name, schema, strict}; the output text is then the parsed JSON; `text.verbosity` ignored with a warning unless null |
| `max_output_tokens` | the output limit, sent as is; absent: 4096 plus the model's thinking allowance (as /v1/chat/completions) |
| `temperature` | 0..2; above 1 sent as 1 with a warning (as /v1/chat/completions) |
| `reasoning` | `effort` (`minimal`, `low`, `medium`, `high`; other values: 400) is mapped onto each provider's own setting on models the catalog marks `reasoning` (OpenAI, xAI, Groq `reasoning_effort`; Anthropic thinking; Gemini `thinkingConfig`), elsewhere not sent, with a warning; null: the model's default. `summary` is ignored with a warning unless null: no reasoning summary or reasoning item is returned |
| `top_p`, `max_tool_calls`, `top_logprobs` | ignored, with a warning unless null or the default: not every provider has an equivalent |
| `store` | default true: the response is kept for this tenant (FLOWCALL_RESPONSE_RETENTION_DAYS) |
| `stream` | honoured: the spec's event sequence (`stream_options` accepted; no obfuscation is added) |
| `metadata`, `user`, `truncation`, `include`, `service_tier`, `prompt_cache_key`, `prompt_cache_retention`, `safety_identifier`, `background: false` | echoed or ignored: bookkeeping that does not change the answer |
| `background: true`, `conversation`, `prompt` | 400: flowcall answers in the request and keeps no conversations or prompt templates |
| `fallbacks`, `flowcall` | flowcall extensions, as on /v1/chat/completions |
"""
from __future__ import annotations

from dataclasses import dataclass, field

from app.calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart, Tool, ToolCall, ToolCallPart, \
    ToolChoice, ToolResultPart
from app import reasoning
from app.errors import ValidationError
from app.openai_api.chat_completions import COMPAT_DEFAULT_MAX_TOKENS, MAX_TEMPERATURE, is_one_of
from app.openai_api.responses_input import (check_tool_choice, fail, function_tools, input_items, parse_arguments,
                                            text_format_of)
from app.schemas import MAX_FALLBACKS, content_parts
from app.tool_ids import decode as decode_call_id

HONOURED = {"model", "input", "instructions", "previous_response_id", "tools", "tool_choice", "parallel_tool_calls",
            "text", "max_output_tokens", "temperature", "store", "stream", "stream_options", "fallbacks",
            "flowcall", "reasoning"}
ECHOED = {"metadata", "user", "truncation", "include", "service_tier", "prompt_cache_key", "prompt_cache_retention",
          "safety_identifier", "background"}
IGNORED_UNLESS = {"top_p": (None, 1), "max_tool_calls": (None,), "top_logprobs": (None, 0)}
REJECTED_UNLESS = {
    "background": ((None, False), "flowcall answers in the request: background must be false."),
    "conversation": ((None,), "flowcall keeps no conversations; use previous_response_id."),
    "prompt": ((None,), "flowcall has no stored prompt templates; send instructions and input."),
}


# -- the request ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ResponsesRequest:
    """A validated CreateResponse: the items in Responses form (stored and listed as such) plus what
    the Call and the Response object need."""
    model: str
    input_items: tuple[dict, ...]          # this request's input, normalised, each with an `id`
    instructions: str | None
    tools: tuple[dict, ...]                # as sent (echoed in the Response)
    tool_choice: object
    parallel_tool_calls: bool | None
    text_format: dict                      # {"type": "text"} or the json_schema / json_object format
    max_output_tokens: int | None
    temperature: float | None
    stream: bool
    store: bool
    previous_response_id: str | None
    echo: dict                             # metadata, user, truncation, top_p, reasoning as the Response shows them
    fallbacks: tuple[str, ...] = ()
    task: str | None = None
    timeout_ms: int | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    reasoning_effort: str | None = None


def parse_request(body: dict) -> ResponsesRequest:
    """Validate a CreateResponse body (shape only: conversation rules are checked by `build_call`)."""
    try:
        return _parse_request(body)
    except RecursionError:
        raise ValidationError("The request body is nested too deeply.") from None


def _parse_request(body: dict) -> ResponsesRequest:
    if not isinstance(body, dict):
        fail("body", "Must be a JSON object.")
    unknown = sorted(set(body) - HONOURED - ECHOED - set(IGNORED_UNLESS) - set(REJECTED_UNLESS))
    if unknown:
        raise ValidationError(f"Invalid request: unknown field {unknown[0]!r}",
                              fields={k: "Unknown field: not a Responses API field flowcall accepts." for k in unknown})
    for name, (allowed, why) in REJECTED_UNLESS.items():
        if name in body and not is_one_of(body[name], allowed):
            fail(name, why)
    warnings = [f"{name} is not supported by flowcall and was ignored." for name, allowed in IGNORED_UNLESS.items()
                if name in body and not is_one_of(body[name], allowed)]
    effort = _reasoning_effort(body.get("reasoning"), warnings)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        fail("model", "Required: a model id (provider.model), an alias, or auto.")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        fail("instructions", "Must be a string.")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        fail("previous_response_id", "Must be a response id.")
    items = input_items(body.get("input"))
    if not items and previous is None:
        fail("input", "Required: a string or a non-empty list of input items.")
    tools = function_tools(body.get("tools"))
    check_tool_choice(body.get("tool_choice"), tools)
    text_format = text_format_of(body.get("text"), warnings)
    limit = _int_or_none(body, "max_output_tokens", 1, 1_000_000)
    temperature = body.get("temperature")
    if temperature is not None and (isinstance(temperature, bool) or not isinstance(temperature, (int, float))
                                    or not 0 <= temperature <= 2):
        fail("temperature", "Must be a number from 0 to 2.")
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            fail(name, "Must be true or false.")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and
                                     all(isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                                         for k, v in metadata.items())):
        fail("metadata", "At most 16 string values, keys up to 64 and values up to 512 characters.")
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        fail("truncation", "Must be auto or disabled.")
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(x, str) for x in include)):
        fail("include", "Must be a list of strings.")
    fallbacks = body.get("fallbacks") or []
    if not (isinstance(fallbacks, list) and len(fallbacks) <= MAX_FALLBACKS and
            all(isinstance(f, str) and f for f in fallbacks)):
        fail("fallbacks", f"Must be a list of at most {MAX_FALLBACKS} model specs.")
    extension_ = body.get("flowcall") or {}
    if not isinstance(extension_, dict) or set(extension_) - {"task", "timeoutMs"}:
        fail("flowcall", "Must be {\"task\": ..., \"timeoutMs\": ...}.")
    timeout_ms = _int_or_none(extension_, "timeoutMs", 100, 3_600_000, where="flowcall.timeoutMs")
    return ResponsesRequest(
        model=model.strip(), input_items=tuple(items), instructions=instructions, tools=tuple(tools),
        tool_choice=body.get("tool_choice") or "auto", parallel_tool_calls=body.get("parallel_tool_calls"),
        text_format=text_format, max_output_tokens=limit, temperature=temperature, stream=bool(body.get("stream")),
        store=body.get("store") is not False, previous_response_id=previous,
        echo={"metadata": metadata or {}, "user": body.get("user"), "truncation": truncation or "disabled",
              "top_p": body.get("top_p") if body.get("top_p") is not None else 1.0,
              "reasoning": {"effort": effort, "summary": None}},
        fallbacks=tuple(fallbacks), task=extension_.get("task"), timeout_ms=timeout_ms,
        warnings=tuple(warnings), reasoning_effort=effort)


_REASONING_FIELDS = ("effort", "summary", "generate_summary")


def _reasoning_effort(value, warnings: list[str]) -> str | None:
    """`reasoning.effort` (validated); a summary asked for is ignored with a warning (none is made)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        fail("reasoning", "Must be an object: {\"effort\": ..., \"summary\": ...}.")
    for name in sorted(set(value) - set(_REASONING_FIELDS)):
        fail(f"reasoning.{name}", "Unknown field: not a Responses API reasoning field flowcall accepts.")
    why = reasoning.problem(value.get("effort"))
    if why:
        fail("reasoning.effort", why)
    for name in ("summary", "generate_summary"):
        if value.get(name) is not None:
            warnings.append(f"reasoning.{name} is not supported by flowcall and was ignored: no reasoning summary "
                            "is returned.")
    return value.get("effort")


def _int_or_none(body: dict, name: str, low: int, high: int, where: str | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        fail(where or name, f"Must be a whole number from {low} to {high}.")
    return value


# -- items -> Call ------------------------------------------------------------------------------------
def build_call(request: ResponsesRequest, history: tuple[dict, ...] = (), *, request_id=None, tenant_id=None,
               agent_id=None, key_id=None, max_image_bytes: int = 20 * 1024 * 1024) -> Call:
    """The Call for this request: instructions, the stored conversation (`history`, items of earlier
    turns), then this input. Each function_call_output must answer a function_call before it."""
    messages: list[Message] = []
    if request.instructions:
        messages.append(Message("system", (TextPart(request.instructions),)))
    calls: dict[str, str] = {}                 # call_id -> function name, as the conversation goes
    items = [("history", i, item) for i, item in enumerate(history)] + \
            [("input", i, item) for i, item in enumerate(request.input_items)]
    for origin, i, item in items:
        path = f"{origin}.{i}" if origin == "input" else "previous_response_id"
        kind = item["type"]
        if kind == "message":
            role = "system" if item["role"] == "developer" else item["role"]
            parts = _call_parts(item["content"], f"{path}.content", max_image_bytes)
            _append(messages, role, parts)
        elif kind == "function_call":
            arguments = parse_arguments(item["arguments"], f"{path}.arguments")
            calls[item["call_id"]] = item["name"]
            provider_id, state = decode_call_id(item["call_id"], f"{path}.call_id")
            _append(messages, "assistant", (ToolCallPart(ToolCall(provider_id, item["name"], arguments, state)),))
        elif kind == "function_call_output":
            if item["call_id"] not in calls:
                fail(f"{path}.call_id", f"No function_call with call_id {item['call_id']!r} comes before this "
                                         "output in the conversation.")
            provider_id, _ = decode_call_id(item["call_id"], f"{path}.call_id")
            messages.append(Message("tool", (ToolResultPart(provider_id, item["output"],
                                                            name=calls[item["call_id"]]),)))
    if not any(m.role == "user" for m in messages):
        fail("input", "The conversation needs at least one user message.")
    fmt = None
    tf = request.text_format
    if tf["type"] == "json_object":
        fmt = ResponseFormat("json_object")
    elif tf["type"] == "json_schema":
        fmt = ResponseFormat("json_schema", name=tf["name"], schema=tf["schema"], strict=tf["strict"])
    temperature = request.temperature
    if temperature is not None:
        temperature = min(float(temperature), MAX_TEMPERATURE)
    options = Options(temperature=temperature, max_tokens=request.max_output_tokens or COMPAT_DEFAULT_MAX_TOKENS,
                      max_tokens_set=request.max_output_tokens is not None, timeout_ms=request.timeout_ms,
                      reasoning_effort=request.reasoning_effort)
    return Call(messages=tuple(messages), model=request.model, options=options, response_format=fmt,
                task=request.task, fallbacks=request.fallbacks, tools=tuple(_tool(t) for t in request.tools),
                tool_choice=_choice(request.tool_choice) if request.tools else None,
                parallel_tool_calls=request.parallel_tool_calls if request.tools else None,
                tenant_id=tenant_id, agent_id=agent_id, key_id=key_id, request_id=request_id)


def _append(messages: list[Message], role: str, parts: tuple) -> None:
    """Consecutive assistant items (text, then its calls) are one assistant turn."""
    if role == "assistant" and messages and messages[-1].role == "assistant":
        messages[-1] = Message("assistant", messages[-1].parts + parts)
    else:
        messages.append(Message(role, parts))


def _call_parts(content: list[dict], path: str, max_image_bytes: int) -> tuple:
    parts = []
    for j, part in enumerate(content):
        if part["type"] == "input_image":
            [image] = content_parts([{"type": "image_url", "image_url": {"url": part["image_url"],
                                                                  "detail": part.get("detail")}}],
                             f"{path}.{j}", max_image_bytes)
            parts.append(ImagePart(image.url, part.get("detail") if part.get("detail") != "auto" else None))
        else:
            parts.append(TextPart(part.get("text", part.get("refusal", ""))))
    return tuple(parts)


def _tool(tool: dict) -> Tool:
    params = tool.get("parameters")
    if params is not None:
        params = {k: v for k, v in params.items() if k != "$schema"}
    return Tool(name=tool["name"], description=tool.get("description"), parameters=params,
                strict=bool(tool.get("strict")))


def _choice(raw) -> ToolChoice | None:
    if raw in (None, "auto"):
        return ToolChoice("auto")
    if raw in ("none", "required"):
        return ToolChoice(raw)
    return ToolChoice("tool", raw["name"])


# -- input item lists -------------------------------------------------------------------------------------
def item_page(items: list[dict], args) -> dict:
    """ResponseItemList: a page of `items` by `limit`, `order` (desc by default), `after`, `before`."""
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        fail("limit", "Must be a whole number from 1 to 100.")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        fail("order", "Must be asc or desc.")
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item.get("id") for item in ordered]
    for name in ("after", "before"):
        if name in args and args[name] not in ids:
            fail(name, f"No item with id {args[name]!r} in this response's input.")
    start = ids.index(args["after"]) + 1 if "after" in args else 0
    end = ids.index(args["before"]) if "before" in args else len(ordered)
    window = ordered[start:end]
    page = window[:int(raw_limit)]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(window) > len(page)}
