"""OpenAI Chat Completions, spoken by flowcall: the request body in, our answer out, errors in
OpenAI's shape. Pure translation (no Flask, no I/O) for nodes/chat_completions.py; the body is
validated by app/openai_api/chat_completions_schema.py.

Shapes from ../shared/specs/openai/openapi.yaml: CreateChatCompletionRequest,
CreateChatCompletionResponse, CreateChatCompletionStreamResponse, ErrorResponse, ListModelsResponse.

What happens to each request field (anything not listed is a 400 naming the field):

| field | |
|---|---|
| `model` | honoured: `provider.model`, an alias, a bare catalog name, or `auto` |
| `messages` | honoured: roles system, developer (as system), user, assistant, tool; content a string or `text` / `image_url` parts (`prompt_cache_breakpoint` on a part is ignored); an assistant's `tool_calls` and a tool message's `tool_call_id` honoured (a result must answer a call made earlier, every call must have its result, `arguments` must be a JSON object: else 400); `name` and an assistant's `refusal` ignored; the `function` role, `function_call`, `audio` and other part types: 400 |
| `temperature` | honoured, 0..2: values above 1 are sent as 1, with a warning (flowcall takes 0..1 on every provider; Anthropic rejects more); absent: flowcall's default 0.7 |
| `max_completion_tokens`, `max_tokens` | honoured as the output limit and sent as is (`max_completion_tokens` wins when both differ, with a warning); absent: 4096 plus the model's thinking allowance (as the node endpoints add it to their default; capped at the model's output limit), because OpenAI's own default is "the model's maximum", which not every provider has |
| `stop` | honoured: a string or up to 16 strings, native where the model takes them, else enforced on the output (streams too) |
| `response_format` | honoured: `text`, `json_object`, `json_schema` {name, schema, strict}; `message.content` is then the parsed JSON re-serialised (fences and chatter removed); streamed, the JSON text goes out as the model writes it and is checked at the end |
| `stream`, `stream_options.include_usage` | honoured (`include_obfuscation` ignored: no obfuscation is added) |
| `n` | 1 or null; more: 400 (one answer per call) |
| `user`, `metadata`, `store`, `seed`, `service_tier`, `prompt_cache_key`, `prompt_cache_options`, `prompt_cache_retention`, `safety_identifier` | ignored silently: bookkeeping or hints that do not change the answer's shape |
| `reasoning_effort` | honoured: `minimal`, `low`, `medium`, `high` (other values: 400), mapped onto each provider's own setting on models the catalog marks `reasoning` (OpenAI, xAI, Groq `reasoning_effort`; Anthropic thinking; Gemini `thinkingConfig`); elsewhere not sent, with a warning; null or absent: the model's default |
| `top_p`, `presence_penalty`, `frequency_penalty`, `logit_bias`, `verbosity`, `prediction`, `moderation` | ignored, with a warning unless null or the default (1, 0, 0, empty): not every provider has them |
| `tools`, `tool_choice`, `parallel_tool_calls` | honoured: function tools on every provider that can call tools (the catalog's `tools` capability; `auto` and fallbacks pick only such models); the answer's `message.tool_calls` carry ids that may fold in provider state (send them back unchanged); streamed, tool calls arrive as `delta.tool_calls` pieces taken from the provider's own stream (id, type and name first, then argument text, by `index`) |
| `functions` (unless empty), `function_call` (unless none/auto) | 400: the deprecated function-calling fields; send `tools` and `tool_choice` |
| `logprobs: true`, `top_logprobs` > 0, `audio`, `modalities` other than text, `web_search_options` | 400: they ask for an answer flowcall cannot give |
| `fallbacks` | flowcall extension: model specs tried in order when the chosen one fails (as on /api/v3/llm/call) |
| `flowcall` | flowcall extension: `{"task": "<routing hint for auto>", "timeoutMs": <deadline>}` |

Answers: `model` is the catalog id that served the call (`openai.gpt-4o`), which can be sent back
as `model` and says which provider a fallback or `auto` chose; the provider's own version string,
cost, routing and warnings are under the extra top-level key `flowcall`. Our finish reason `other`
is reported as `stop` (OpenAI has no such value), the original under `flowcall.finish_reason`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace

from app import tool_ids
from app.calls import ToolCall
from app.openai_api.chat_completions_schema import IGNORED_UNLESS, REJECTED_UNLESS, load_request
from app.errors import FlowcallError, ValidationError
from app.answer_schemas import answer_to_dict

COMPAT_DEFAULT_MAX_TOKENS = 4096
MAX_TEMPERATURE = 1.0

FINISH = {"stop": "stop", "length": "length", "content_filter": "content_filter", "tool_calls": "tool_calls",
          "other": "stop"}


# -- the request ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ChatRequest:
    body: dict                          # a flowcall call body (CallSchema's shape) for call_from_body
    stream: bool
    include_usage: bool
    warnings: tuple[str, ...] = ()
    default_max_tokens: bool = False    # the caller set no output limit: a thinking model gets room on top


def with_default_limit(call, chat: ChatRequest):
    """`call` with our 4096 marked as a default when the caller set no limit, so a model that thinks by
    default gets its thinking allowance on top (app/model_defaults.py), as on the node endpoints."""
    if not chat.default_max_tokens:
        return call
    return replace(call, options=replace(call.options, max_tokens_set=False))



def is_one_of(value, allowed) -> bool:
    """Equality that never takes a boolean for a number (True == 1 in Python)."""
    return any(value is None if a is None else
               (isinstance(value, bool) == isinstance(a, bool) and value == a) for a in allowed)


def _apply_policy(data: dict) -> list[str]:
    """Refuse what flowcall cannot answer; say what it ignores. Returns the warnings."""
    errors = {name: why for name, (allowed, why) in REJECTED_UNLESS.items()
              if name in data and not is_one_of(data[name], allowed)}
    if errors:
        summary = "; ".join(f"{k}: {v}" for k, v in errors.items())
        raise ValidationError(f"Unsupported request: {summary}", fields=errors)
    return [f"{name} is not supported by flowcall and was ignored." for name, allowed in IGNORED_UNLESS.items()
            if name in data and not is_one_of(data[name], allowed)]


def _message(m: dict) -> dict:
    content = m.get("content")
    message = {"role": m["role"], "content": "" if content is None else content}
    if m.get("tool_calls"):
        message["tool_calls"] = m["tool_calls"]
    if m["role"] == "tool":
        message["tool_call_id"] = m["tool_call_id"]
    return message


def _options(data: dict, warnings: list[str]) -> dict:
    options: dict = {}
    temperature = data.get("temperature")
    if temperature is not None:
        if temperature > MAX_TEMPERATURE:
            warnings.append(f"temperature {temperature} was sent as {MAX_TEMPERATURE:g}: flowcall takes 0..1 on "
                            "every provider.")
            temperature = MAX_TEMPERATURE
        options["temperature"] = temperature
    limit, legacy = data.get("max_completion_tokens"), data.get("max_tokens")
    if limit is not None and legacy is not None and limit != legacy:
        warnings.append(f"max_tokens {legacy} and max_completion_tokens {limit} differ; max_completion_tokens "
                        "was used.")
    options["maxTokens"] = next((v for v in (limit, legacy) if v is not None), COMPAT_DEFAULT_MAX_TOKENS)
    if data.get("stop"):
        options["stop"] = data["stop"]
    if data.get("reasoning_effort") is not None:
        options["reasoningEffort"] = data["reasoning_effort"]
    extension = data.get("flowcall") or {}
    if "timeoutMs" in extension:
        options["timeoutMs"] = extension["timeoutMs"]
    return options


def _response_format(rf: dict | None) -> dict | None:
    if not rf or rf["type"] == "text":
        return None
    if rf["type"] == "json_object":
        return {"type": "json_object"}
    spec = rf["json_schema"]
    return {"type": "json_schema", "json_schema": {"name": spec.get("name") or "response",
                                                   "strict": bool(spec.get("strict")), "schema": spec["schema"]}}


def parse_request(body: dict) -> ChatRequest:
    """A Chat Completions body -> a flowcall call body, plus what was changed on the way."""
    data = load_request(body)
    warnings = _apply_policy(data)
    flowcall_body: dict = {"model": data["model"], "messages": [_message(m) for m in data["messages"]],
                           "options": _options(data, warnings)}
    task = (data.get("flowcall") or {}).get("task")
    if task:
        flowcall_body["context"] = {"task": task}
    fmt = _response_format(data.get("response_format"))
    if fmt:
        flowcall_body["response_format"] = fmt
    if data.get("fallbacks"):
        flowcall_body["fallbacks"] = data["fallbacks"]
    if data.get("tools"):       # without tools, tool_choice auto/none and parallel_tool_calls say nothing
        flowcall_body["tools"] = data["tools"]
        for name in ("tool_choice", "parallel_tool_calls"):
            if data.get(name) is not None:
                flowcall_body[name] = data[name]
    elif data.get("tool_choice") is not None and data["tool_choice"].mode in ("required", "tool"):
        raise ValidationError("tool_choice asks for a tool call, but no tools were sent.",
                              fields={"tool_choice": "needs tools"})
    stream = bool(data.get("stream"))
    include_usage = stream and bool((data.get("stream_options") or {}).get("include_usage"))
    return ChatRequest(body=flowcall_body, stream=stream, include_usage=include_usage, warnings=tuple(warnings),
                       default_max_tokens=data.get("max_completion_tokens") is None and data.get("max_tokens") is None)


# -- the answer -------------------------------------------------------------------------------------
def completion_id(request_id: str | None) -> str:
    return f"chatcmpl-{request_id or 'unknown'}"


def usage_body(usage) -> dict | None:
    """OpenAI's usage shape (`cache_write_tokens` is OpenAI's own prompt_tokens_details field); null
    when the provider reported none, since zeros would read as a free call."""
    if not usage.reported:
        return None
    return {"prompt_tokens": usage.input_tokens, "completion_tokens": usage.output_tokens,
            "total_tokens": usage.total_tokens,
            "prompt_tokens_details": {"cached_tokens": usage.cached_input_tokens,
                                      "cache_write_tokens": usage.cache_write_tokens},
            "completion_tokens_details": {"reasoning_tokens": usage.reasoning_tokens}}


def extension(answer, warnings=()) -> dict:
    """What OpenAI's shape has no place for, under one extra key."""
    flat = answer_to_dict(answer)
    return {"request_id": flat["request_id"], "provider": flat["provider"], "provider_model": flat["model"],
            "finish_reason": flat["finish_reason"], "cost": flat["cost"], "latency_ms": flat["latency_ms"],
            "routing": flat["routing"], "warnings": list(dict.fromkeys([*warnings, *flat["warnings"]]))}


def tool_calls_body(calls) -> list[dict]:
    """ChatCompletionMessageToolCall: arguments a JSON string; ids may fold in provider state."""
    return [{"id": tool_ids.public_id(c), "type": "function",
             "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
            for c in calls]


def completion_body(answer, *, created: int, structured: bool, warnings=()) -> dict:
    """CreateChatCompletionResponse. With response_format, the content is the parsed JSON itself;
    a tool-calling answer has `tool_calls` and its text (null when there is none)."""
    if answer.tool_calls:
        content = answer.text or None
    else:
        content = json.dumps(answer.data, ensure_ascii=False) if structured else answer.text
    message = {"role": "assistant", "content": content, "refusal": None, "annotations": []}
    if answer.tool_calls:
        message["tool_calls"] = tool_calls_body(answer.tool_calls)
    return {"id": completion_id(answer.request_id), "object": "chat.completion", "created": created,
            "model": answer.routing.model_chosen,
            "choices": [{"index": 0, "message": message,
                         "logprobs": None, "finish_reason": FINISH.get(answer.finish_reason, "stop")}],
            "usage": usage_body(answer.usage), "flowcall": extension(answer, warnings)}


def sse(payload) -> str:
    """One event. ASCII JSON, as jsonify sends: a lone surrogate in model text (a JSON escape split
    by a provider) then cannot break the stream's UTF-8 encoding halfway through."""
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return f"data: {data}\n\n"


DONE = sse("[DONE]")


class ChunkWriter:
    """CreateChatCompletionStreamResponse events for one streamed answer, as `data:` lines: a first
    chunk with the role, content chunks, a chunk with finish_reason, the usage chunk when
    stream_options.include_usage asked for it (then every other chunk has `usage: null`, as OpenAI
    sends), then [DONE]. The `flowcall` extension rides on the last chunk before [DONE]."""

    def __init__(self, completion_id_: str, created: int, model: str, include_usage: bool):
        self.base = {"id": completion_id_, "object": "chat.completion.chunk", "created": created, "model": model}
        self.include_usage = include_usage

    def _chunk(self, choices: list, **extra) -> str:
        body = {**self.base, "choices": choices}
        if self.include_usage:
            body["usage"] = None
        body.update(extra)
        return sse(body)

    @staticmethod
    def _choice(delta: dict, finish_reason=None) -> dict:
        return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}

    def role(self) -> str:
        return self._chunk([self._choice({"role": "assistant", "content": "", "refusal": None})])

    def content(self, text: str) -> str:
        return self._chunk([self._choice({"content": text})])

    def tool_call(self, piece) -> str:
        """A piece of a tool call (`app.providers.streams.ToolCallDelta`), as OpenAI streams them: id,
        type and name with the first piece, then argument text by `index`."""
        call: dict = {"index": piece.index}
        if piece.id is not None:
            call["id"] = tool_ids.public_id(ToolCall(piece.id, piece.name or "", {}, piece.state))
            call["type"] = "function"
        function = {"arguments": piece.arguments}
        if piece.name is not None:
            function = {"name": piece.name, **function}
        call["function"] = function
        return self._chunk([self._choice({"tool_calls": [call]})])

    def finish(self, finish_reason: str, flowcall: dict) -> str:
        extra = {} if self.include_usage else {"flowcall": flowcall}
        return self._chunk([self._choice({}, FINISH.get(finish_reason, "stop"))], **extra)

    def usage(self, usage, flowcall: dict) -> str:
        return self._chunk([], usage=usage_body(usage), flowcall=flowcall)

    def answer(self, answer, warnings=()) -> list[str]:
        """The closing events of a finished answer: finish, usage if asked for, [DONE]."""
        ext = extension(answer, warnings)
        events = [self.finish(answer.finish_reason, ext)]
        if self.include_usage:
            events.append(self.usage(answer.usage, ext))
        return [*events, DONE]


def replay_events(stored: dict, include_usage: bool) -> list[str]:
    """A whole completion (stored for idempotency, or a call with tools) as chunks: the role, the
    content in one chunk, each tool call as one delta (id, name and all its arguments), finish."""
    writer = ChunkWriter(stored["id"], stored["created"], stored["model"], include_usage)
    choice = stored["choices"][0]
    events = [writer.role()]
    if choice["message"]["content"]:
        events.append(writer.content(choice["message"]["content"]))
    for index, call in enumerate(choice["message"].get("tool_calls") or ()):
        events.append(writer._chunk([writer._choice({"tool_calls": [{"index": index, **call}]})]))
    extra = {} if include_usage else {"flowcall": stored.get("flowcall")}
    events.append(writer._chunk([writer._choice({}, choice["finish_reason"])], **extra))
    if include_usage:
        events.append(writer._chunk([], usage=stored["usage"], flowcall=stored.get("flowcall")))
    return [*events, DONE]


# -- errors -----------------------------------------------------------------------------------------
_ERROR_TYPES = {401: "authentication_error", 402: "insufficient_quota", 403: "permission_error",
                404: "not_found_error", 409: "conflict_error", 429: "rate_limit_error"}


def error_type(status: int) -> str:
    if status in _ERROR_TYPES:
        return _ERROR_TYPES[status]
    return "invalid_request_error" if status < 500 else "server_error"


def error_body(err: FlowcallError, request_id: str | None = None) -> dict:
    """ErrorResponse: {"error": {message, type, param, code}}; `param` is the first field at fault.
    SDKs keep the whole object, so flowcall's own details ride along under `flowcall`."""
    return {"error": {"message": err.message, "type": error_type(err.status),
                      "param": next(iter(err.fields), None), "code": err.code,
                      "flowcall": {"retryable": err.retryable, "provider": err.provider, "fields": err.fields,
                                   "request_id": request_id}}}


def error_headers(err: FlowcallError) -> dict:
    """`x-should-retry` is what OpenAI's SDKs obey before their own status rules, so a 502 that
    retrying cannot fix (a provider's auth failure) is not sent again."""
    headers = {"x-should-retry": "true" if err.retryable else "false"}
    if err.retry_after is not None and err.status in (409, 429, 503):
        headers["Retry-After"] = str(max(1, int(round(err.retry_after))))
    return headers


# -- models -----------------------------------------------------------------------------------------
AUTO_MODEL = {"id": "auto", "object": "model", "created": 0, "owned_by": "flowcall", "shutdown_date": None}


def model_object(model) -> dict:
    """Model: `created` is 0 (the catalog records no release dates)."""
    return {"id": model.id, "object": "model", "created": 0, "owned_by": model.provider,
            "shutdown_date": model.shutdown}


def model_list(catalog, settings) -> dict:
    """ListModelsResponse: `auto` and every model that is not retired, of providers configured here."""
    models = [model_object(m) for m in catalog.models.values()
              if m.status != "retired" and settings.is_configured(catalog.providers[m.provider])]
    return {"object": "list", "data": [AUTO_MODEL, *models]}
