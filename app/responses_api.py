"""OpenAI's Responses API, spoken by flowcall: a request body in, a `Call` out; an `Answer` in, a
Response object (or its event stream) out. Pure translation (no Flask, no I/O) for nodes/responses.py;
the stored conversation a `previous_response_id` continues is passed in by the caller.

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

import json
import re
import secrets
from dataclasses import dataclass, field

from .calls import Call, ImagePart, Message, Options, ResponseFormat, TextPart, Tool, ToolCall, ToolCallPart, \
    ToolChoice, ToolResultPart
from . import reasoning
from .errors import ValidationError
from .openai_compat import COMPAT_DEFAULT_MAX_TOKENS, MAX_TEMPERATURE, extension, sse
from .schema_bounds import caller_schema_problem
from .schemas import MAX_FALLBACKS, _parts
from .tool_ids import decode as decode_call_id
from .tool_ids import public_id

MAX_ITEMS = 2000
MAX_TOOLS = 128
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

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
def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def _fail(path: str, why: str):
    raise ValidationError(f"Invalid request: {path}: {why}", fields={path: why})


def _same(value, allowed) -> bool:
    """Equality that never takes a boolean for a number (True == 1 in Python)."""
    return any(value is None if a is None else
               (isinstance(value, bool) == isinstance(a, bool) and value == a) for a in allowed)


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
        _fail("body", "Must be a JSON object.")
    unknown = sorted(set(body) - HONOURED - ECHOED - set(IGNORED_UNLESS) - set(REJECTED_UNLESS))
    if unknown:
        raise ValidationError(f"Invalid request: unknown field {unknown[0]!r}",
                              fields={k: "Unknown field: not a Responses API field flowcall accepts." for k in unknown})
    for name, (allowed, why) in REJECTED_UNLESS.items():
        if name in body and not _same(body[name], allowed):
            _fail(name, why)
    warnings = [f"{name} is not supported by flowcall and was ignored." for name, allowed in IGNORED_UNLESS.items()
                if name in body and not _same(body[name], allowed)]
    effort = _reasoning_effort(body.get("reasoning"), warnings)
    model = body.get("model")
    if not isinstance(model, str) or not model.strip():
        _fail("model", "Required: a model id (provider.model), an alias, or auto.")
    instructions = body.get("instructions")
    if instructions is not None and not isinstance(instructions, str):
        _fail("instructions", "Must be a string.")
    previous = body.get("previous_response_id")
    if previous is not None and (not isinstance(previous, str) or not previous):
        _fail("previous_response_id", "Must be a response id.")
    items = _input_items(body.get("input"))
    if not items and previous is None:
        _fail("input", "Required: a string or a non-empty list of input items.")
    tools = _tools(body.get("tools"))
    _tool_choice(body.get("tool_choice"), tools)
    text_format = _text_format(body.get("text"), warnings)
    limit = _int_or_none(body, "max_output_tokens", 1, 1_000_000)
    temperature = body.get("temperature")
    if temperature is not None:
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2:
            _fail("temperature", "Must be a number from 0 to 2.")
    for name in ("stream", "store", "parallel_tool_calls", "background"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            _fail(name, "Must be true or false.")
    metadata = body.get("metadata")
    if metadata is not None and not (isinstance(metadata, dict) and len(metadata) <= 16 and
                                     all(isinstance(v, str) and len(k) <= 64 and len(v) <= 512
                                         for k, v in metadata.items())):
        _fail("metadata", "At most 16 string values, keys up to 64 and values up to 512 characters.")
    truncation = body.get("truncation")
    if truncation not in (None, "auto", "disabled"):
        _fail("truncation", "Must be auto or disabled.")
    include = body.get("include")
    if include is not None and not (isinstance(include, list) and all(isinstance(x, str) for x in include)):
        _fail("include", "Must be a list of strings.")
    fallbacks = body.get("fallbacks") or []
    if not (isinstance(fallbacks, list) and len(fallbacks) <= MAX_FALLBACKS and
            all(isinstance(f, str) and f for f in fallbacks)):
        _fail("fallbacks", f"Must be a list of at most {MAX_FALLBACKS} model specs.")
    extension_ = body.get("flowcall") or {}
    if not isinstance(extension_, dict) or set(extension_) - {"task", "timeoutMs"}:
        _fail("flowcall", "Must be {\"task\": ..., \"timeoutMs\": ...}.")
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
        _fail("reasoning", "Must be an object: {\"effort\": ..., \"summary\": ...}.")
    for name in sorted(set(value) - set(_REASONING_FIELDS)):
        _fail(f"reasoning.{name}", "Unknown field: not a Responses API reasoning field flowcall accepts.")
    why = reasoning.problem(value.get("effort"))
    if why:
        _fail("reasoning.effort", why)
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
        _fail(where or name, f"Must be a whole number from {low} to {high}.")
    return value


def _text(value, path: str) -> str:
    if not isinstance(value, str):
        _fail(path, "Must be a string.")
    return value


def _input_items(raw) -> list[dict]:
    """The input as a list of normalised items: messages with a list of typed parts, calls, results."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_message_item("user", [{"type": "input_text", "text": raw}])]
    if not isinstance(raw, list):
        _fail("input", "Must be a string or a list of input items.")
    if len(raw) > MAX_ITEMS:
        _fail("input", f"At most {MAX_ITEMS} items.")
    return [_item(item, f"input.{i}") for i, item in enumerate(raw)]


def _message_item(role: str, content: list[dict], item_id: str | None = None) -> dict:
    return {"type": "message", "id": item_id or new_id("msg"), "role": role, "content": content,
            "status": "completed"}


def _item(item, path: str) -> dict:
    if not isinstance(item, dict):
        _fail(path, "Must be an input item object.")
    kind = item.get("type", "message")
    if kind == "message":
        return _message(item, path)
    if kind == "function_call":
        _only(item, {"type", "id", "call_id", "name", "arguments", "status"}, path)
        call_id = _text(item.get("call_id"), f"{path}.call_id")
        name = _text(item.get("name"), f"{path}.name")
        arguments = _text(item.get("arguments"), f"{path}.arguments")
        parse_arguments(arguments, f"{path}.arguments")
        return {"type": "function_call", "id": item.get("id") or new_id("fc"), "call_id": call_id, "name": name,
                "arguments": arguments, "status": "completed"}
    if kind == "function_call_output":
        _only(item, {"type", "id", "call_id", "output", "status"}, path)
        call_id = _text(item.get("call_id"), f"{path}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            if not all(isinstance(p, dict) and p.get("type") == "input_text" and isinstance(p.get("text"), str)
                       for p in output):
                _fail(f"{path}.output", "Only text outputs (input_text parts) are supported.")
            output = "".join(p["text"] for p in output)
        output = _text(output, f"{path}.output")
        return {"type": "function_call_output", "id": item.get("id") or new_id("fco"), "call_id": call_id,
                "output": output, "status": "completed"}
    if kind == "reasoning":
        return {"type": "reasoning", "id": item.get("id") or new_id("rs"), "summary": []}
    _fail(f"{path}.type", f"Input items of type {kind!r} are not supported (message, function_call, "
                          "function_call_output).")


def _only(item: dict, allowed: set, path: str) -> None:
    extra = sorted(set(item) - allowed)
    if extra:
        _fail(f"{path}.{extra[0]}", "Unknown field for this item type.")


_PART_TYPES = ("input_text", "output_text", "refusal", "input_image")


def _message(item: dict, path: str) -> dict:
    _only(item, {"type", "id", "role", "content", "status"}, path)
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        _fail(f"{path}.role", "Must be one of: user, system, developer, assistant.")
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return _message_item(role, [{"type": text_type, "text": content}], item.get("id"))
    if not isinstance(content, list) or not content:
        _fail(f"{path}.content", "Must be a string or a non-empty list of content parts.")
    parts = []
    for j, part in enumerate(content):
        where = f"{path}.content.{j}"
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            kind = part.get("type") if isinstance(part, dict) else None
            _fail(f"{where}.type", f"Content parts of type {kind!r} are not supported (input_text, input_image, "
                                   "output_text, refusal).")
        if part["type"] == "input_image":
            if role != "user":
                _fail(where, "Images go in user messages.")
            if not isinstance(part.get("image_url"), str):
                _fail(f"{where}.image_url", "Required: an http(s) URL or a data:image/...;base64 URI (file_id is "
                                            "not supported).")
            parts.append({"type": "input_image", "image_url": part["image_url"], "detail": part.get("detail") or "auto"})
        elif part["type"] == "refusal":
            parts.append({"type": "refusal", "refusal": _text(part.get("refusal"), f"{where}.refusal")})
        else:
            parts.append({"type": part["type"], "text": _text(part.get("text"), f"{where}.text")})
    return _message_item(role, parts, item.get("id"))


def parse_arguments(arguments: str, path: str) -> dict:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        _fail(path, "Must be a JSON object as a string.")
    if not isinstance(value, dict):
        _fail(path, "Must be a JSON object as a string.")
    return value


def _tools(raw) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        _fail("tools", f"Must be a list of at most {MAX_TOOLS} tools.")
    tools = []
    for i, tool in enumerate(raw):
        path = f"tools.{i}"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            if isinstance(kind, str):
                _fail(f"{path}.type", f"The built-in tool {kind!r} is not supported: flowcall runs no tools; "
                                      "declare function tools and run them yourself.")
            _fail(path, "Must be a tool object with a type.")
        _only(tool, {"type", "name", "description", "parameters", "strict"}, path)
        if not isinstance(tool.get("name"), str) or not _TOOL_NAME.match(tool["name"]):
            _fail(f"{path}.name", "Required: letters, digits, _ and - only, at most 64.")
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            _fail(f"{path}.description", "Must be a string.")
        params = tool.get("parameters")
        if params is not None:
            if not isinstance(params, dict) or params.get("type", "object") != "object":
                _fail(f"{path}.parameters", "Must be a JSON Schema of an object.")
            problem = caller_schema_problem({k: v for k, v in params.items() if k != "$schema"})
            if problem:
                _fail(f"{path}.parameters", f"Not a usable JSON Schema: {problem}")
        if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
            _fail(f"{path}.strict", "Must be true, false or null.")
        tools.append(tool)
    names = [t["name"] for t in tools]
    if len(set(names)) != len(names):
        _fail("tools", "Tool names must be unique.")
    return tools


def _tool_choice(raw, tools: list[dict]):
    if raw is None or raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            _fail("tool_choice", "required needs at least one tool.")
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        if raw.get("name") not in {t["name"] for t in tools}:
            _fail("tool_choice.name", "Must name one of the tools.")
        return raw
    _fail("tool_choice", "Must be auto, none, required, or {\"type\": \"function\", \"name\": ...}.")


def _text_format(raw, warnings: list[str]) -> dict:
    if raw is None:
        return {"type": "text"}
    if not isinstance(raw, dict) or set(raw) - {"format", "verbosity"}:
        _fail("text", "Must be {\"format\": {...}}.")
    if raw.get("verbosity") not in (None, "medium"):
        warnings.append("text.verbosity is not supported by flowcall and was ignored.")
    fmt = raw.get("format")
    if fmt is None:
        return {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        _fail("text.format.type", "Must be text, json_object or json_schema.")
    _only(fmt, {"type", "name", "schema", "strict", "description"}, "text.format")
    name = fmt.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        _fail("text.format.name", "Required: letters, digits, _ and - only, at most 64.")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        _fail("text.format.schema", "Required: a JSON Schema object.")
    problem = caller_schema_problem(schema)
    if problem:
        _fail("text.format.schema", f"Not a usable JSON Schema: {problem}")
    if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
        _fail("text.format.strict", "Must be true, false or null.")
    return {"type": "json_schema", "name": name, "schema": schema, "strict": bool(fmt.get("strict")),
            **({"description": fmt["description"]} if isinstance(fmt.get("description"), str) else {})}


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
                _fail(f"{path}.call_id", f"No function_call with call_id {item['call_id']!r} comes before this "
                                         "output in the conversation.")
            provider_id, _ = decode_call_id(item["call_id"], f"{path}.call_id")
            messages.append(Message("tool", (ToolResultPart(provider_id, item["output"],
                                                            name=calls[item["call_id"]]),)))
    if not any(m.role == "user" for m in messages):
        _fail("input", "The conversation needs at least one user message.")
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
            [image] = _parts([{"type": "image_url", "image_url": {"url": part["image_url"],
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


# -- Answer -> Response ---------------------------------------------------------------------------------
def usage_body(usage) -> dict:
    return {"input_tokens": usage.input_tokens, "input_tokens_details": {"cached_tokens": usage.cached_input_tokens},
            "output_tokens": usage.output_tokens,
            "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
            "total_tokens": usage.total_tokens}


def output_text(answer, structured: bool) -> str:
    """The answer's text; with a JSON format, the parsed JSON re-serialised (fences and chatter gone)."""
    if structured and answer.data is not None:
        return json.dumps(answer.data, ensure_ascii=False)
    return answer.text


def message_output(text: str, item_id: str, status: str = "completed") -> dict:
    return {"type": "message", "id": item_id, "status": status, "role": "assistant",
            "content": [{"type": "output_text", "text": text, "annotations": [], "logprobs": []}]}


def function_call_output_item(call: ToolCall, item_id: str | None = None) -> dict:
    return {"type": "function_call", "id": item_id or new_id("fc"), "call_id": public_id(call),
            "name": call.name,
            "arguments": json.dumps(call.arguments, ensure_ascii=False), "status": "completed"}


def output_items(answer, structured: bool) -> list[dict]:
    items = []
    text = output_text(answer, structured)
    if text or not answer.tool_calls:
        items.append(message_output(text, new_id("msg")))
    items.extend(function_call_output_item(c) for c in answer.tool_calls)
    return items


_INCOMPLETE = {"length": "max_output_tokens", "content_filter": "content_filter"}


def response_object(request: ResponsesRequest, response_id: str, created_at: int, *, model: str,
                    status: str = "completed", output=(), answer=None, usage=None, incomplete: str | None = None,
                    warnings=()) -> dict:
    """The Response object; `answer` None gives the in-progress shell the stream opens with."""
    body = {"id": response_id, "object": "response", "created_at": created_at, "status": status,
            "background": False, "error": None,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "instructions": request.instructions, "max_output_tokens": request.max_output_tokens,
            "model": model, "output": list(output), "parallel_tool_calls": request.parallel_tool_calls is not False,
            "previous_response_id": request.previous_response_id, "reasoning": request.echo["reasoning"],
            "store": request.store, "temperature": request.temperature if request.temperature is not None else 1.0,
            "text": {"format": request.text_format}, "tool_choice": request.tool_choice,
            "tools": list(request.tools), "top_p": request.echo["top_p"], "truncation": request.echo["truncation"],
            "user": request.echo["user"], "metadata": request.echo["metadata"],
            "usage": usage_body(usage) if usage is not None else None}
    if answer is not None:
        body["flowcall"] = extension(answer, warnings)
    return body


def completed_response(request: ResponsesRequest, response_id: str, created_at: int, answer, output=None) -> dict:
    structured = request.text_format["type"] != "text"
    incomplete = _INCOMPLETE.get(answer.finish_reason)
    return response_object(request, response_id, created_at, model=answer.routing.model_chosen,
                           status="incomplete" if incomplete else "completed",
                           output=output if output is not None else output_items(answer, structured),
                           answer=answer, usage=answer.usage, incomplete=incomplete,
                           warnings=request.warnings)


# -- the event stream -----------------------------------------------------------------------------------
class EventWriter:
    """ResponseStreamEvent `data:` lines for one streamed answer, each with its `event:` name and a
    sequence number: created, in_progress, the message item opened at its first text, text deltas,
    then (at the end) the text's done events, one item per function call with its arguments, and
    response.completed (or response.incomplete) with the whole Response."""

    def __init__(self, request: ResponsesRequest, response_id: str, created_at: int, model: str):
        self.request, self.response_id, self.created_at, self.model = request, response_id, created_at, model
        self.sequence = 0
        self.message_id: str | None = None
        self.text: list[str] = []

    def event(self, kind: str, **payload) -> str:
        body = {"type": kind, "sequence_number": self.sequence, **payload}
        self.sequence += 1
        return f"event: {kind}\n{sse(body)}"

    def opening(self) -> list[str]:
        shell = response_object(self.request, self.response_id, self.created_at, model=self.model,
                                status="in_progress")
        return [self.event("response.created", response=shell), self.event("response.in_progress", response=shell)]

    def delta(self, text: str) -> list[str]:
        events = []
        if self.message_id is None:
            self.message_id = new_id("msg")
            item = {"type": "message", "id": self.message_id, "status": "in_progress", "role": "assistant",
                    "content": []}
            events.append(self.event("response.output_item.added", output_index=0, item=item))
            events.append(self.event("response.content_part.added", item_id=self.message_id, output_index=0,
                                     content_index=0, part={"type": "output_text", "text": "", "annotations": []}))
        self.text.append(text)
        events.append(self.event("response.output_text.delta", item_id=self.message_id, output_index=0,
                                 content_index=0, delta=text, logprobs=[]))
        return events

    def closing(self, answer) -> tuple[list[str], dict]:
        """The closing events and the finished Response (stored by the caller)."""
        events, output = [], []
        structured = self.request.text_format["type"] != "text"
        text = "".join(self.text) if self.message_id is not None else output_text(answer, structured)
        if self.message_id is None and (text or not answer.tool_calls):
            events.extend(self.delta(text) if text else self._empty_message())
        if self.message_id is not None:
            message = message_output(text, self.message_id)
            part = message["content"][0]
            events.append(self.event("response.output_text.done", item_id=self.message_id, output_index=0,
                                     content_index=0, text=text, logprobs=[]))
            events.append(self.event("response.content_part.done", item_id=self.message_id, output_index=0,
                                     content_index=0, part=part))
            events.append(self.event("response.output_item.done", output_index=0, item=message))
            output.append(message)
        for call in answer.tool_calls:
            index = len(output)
            item = function_call_output_item(call)
            events.append(self.event("response.output_item.added", output_index=index,
                                     item={**item, "arguments": "", "status": "in_progress"}))
            events.append(self.event("response.function_call_arguments.delta", item_id=item["id"],
                                     output_index=index, delta=item["arguments"]))
            events.append(self.event("response.function_call_arguments.done", item_id=item["id"],
                                     output_index=index, arguments=item["arguments"]))
            events.append(self.event("response.output_item.done", output_index=index, item=item))
            output.append(item)
        final = completed_response(self.request, self.response_id, self.created_at, answer, output)
        kind = "response.completed" if final["status"] == "completed" else "response.incomplete"
        events.append(self.event(kind, response=final))
        return events, final

    def _empty_message(self) -> list[str]:
        self.message_id = new_id("msg")
        item = {"type": "message", "id": self.message_id, "status": "in_progress", "role": "assistant", "content": []}
        return [self.event("response.output_item.added", output_index=0, item=item),
                self.event("response.content_part.added", item_id=self.message_id, output_index=0, content_index=0,
                           part={"type": "output_text", "text": "", "annotations": []})]

    def error(self, body: dict) -> str:
        """A failure after the first event: the spec's `error` event, carrying the whole error object
        under `error` as well (what OpenAI's SDKs look for to raise APIError)."""
        err = body["error"]
        return self.event("error", code=err.get("code"), message=err.get("message"), param=err.get("param"),
                          error=err)


def replay_events(request: ResponsesRequest, stored: dict) -> list[str]:
    """A stored (idempotent) Response streamed again: its items whole, then response.completed."""
    writer = EventWriter(request, stored["id"], stored["created_at"], stored["model"])
    events = writer.opening()
    for index, item in enumerate(stored["output"]):
        events.append(writer.event("response.output_item.added", output_index=index, item=item))
        events.append(writer.event("response.output_item.done", output_index=index, item=item))
    kind = "response.completed" if stored["status"] == "completed" else "response.incomplete"
    events.append(writer.event(kind, response=stored))
    return events


# -- input item lists -------------------------------------------------------------------------------------
def item_page(items: list[dict], args) -> dict:
    """ResponseItemList: a page of `items` by `limit`, `order` (desc by default), `after`, `before`."""
    raw_limit = args.get("limit", "20")
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= 100:
        _fail("limit", "Must be a whole number from 1 to 100.")
    order = args.get("order", "desc")
    if order not in ("asc", "desc"):
        _fail("order", "Must be asc or desc.")
    ordered = list(items) if order == "asc" else list(reversed(items))
    ids = [item.get("id") for item in ordered]
    for name in ("after", "before"):
        if name in args and args[name] not in ids:
            _fail(name, f"No item with id {args[name]!r} in this response's input.")
    start = ids.index(args["after"]) + 1 if "after" in args else 0
    end = ids.index(args["before"]) if "before" in args else len(ordered)
    window = ordered[start:end]
    page = window[:int(raw_limit)]
    return {"object": "list", "data": page, "first_id": page[0]["id"] if page else None,
            "last_id": page[-1]["id"] if page else None, "has_more": len(window) > len(page)}
