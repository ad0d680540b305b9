"""Chat Completions (`POST {base}/chat/completions`): OpenAI, xAI, Groq and any OpenAI-compatible
server (Ollama), which differ only in configuration (catalog `providers`) and error shapes.

Wire facts relied on (../shared/specs/providers.md §2.1, 2.4, 2.5, 2.7, §3): `stop` takes at most 4
strings; reasoning models (o-series, gpt-5 family, xAI grok-4 family) reject `stop` and a
non-default `temperature` and need `max_completion_tokens`; `json_object` mode needs the word
"JSON" in the messages; xAI errors are `{"code", "error": "<string>"}`, a bad xAI key is a 400, and
xAI counts reasoning tokens outside `completion_tokens`; `insufficient_quota` 429s never clear.
"""
from __future__ import annotations

import hashlib
import json

from app import model_defaults
from app.calls import Call, Completion, Message, TextPart, ToolCall, ToolResultPart, Usage
from app.errors import (ContentBlocked, InvalidProviderResponse, ModelNotFound, ProviderAuthFailed,
                      ProviderError, ProviderRateLimited, from_upstream_status, redact)
from app.http import HttpRequest, HttpResponse, Plan, drop_none, retry_after_seconds
from app import reasoning, strict_schema
from app.providers.common import empty_answer_warnings, int_or_zero, json_object, schema_instruction

FINISH_REASONS = {"stop": "stop", "length": "length", "content_filter": "content_filter",
           "tool_calls": "tool_calls", "function_call": "tool_calls"}


def _message(message: Message) -> dict:
    """One turn; tool turns in the native form: an assistant's `tool_calls` (arguments a JSON string)
    and one `role: tool` message per result."""
    calls = message.tool_calls
    if calls:
        text = message.text
        return {"role": "assistant", "content": text or None,
                "tool_calls": [{"id": c.id, "type": "function",
                                "function": {"name": c.name, "arguments": json.dumps(c.arguments, ensure_ascii=False)}}
                               for c in calls]}
    return {"role": message.role, "content": _content(message)}


def _messages(messages) -> list[dict]:
    out = []
    for m in messages:
        if m.role == "tool":
            out.extend({"role": "tool", "tool_call_id": p.call_id, "content": p.content}
                       for p in m.parts if isinstance(p, ToolResultPart))
        else:
            out.append(_message(m))
    return out


def _tools(call: Call, caps, warnings: list[str]) -> dict:
    """`tools`, `tool_choice` and `parallel_tool_calls` as Chat Completions takes them; a strict
    tool's parameters go in the strict subset exactly as a strict response_format's schema does
    (dispatch maps the arguments back to the caller's shape)."""
    if not call.tools:
        return {}
    specs = []
    for t in call.tools:
        parameters = t.parameters if t.parameters is not None else {"type": "object", "properties": {}}
        parameters, strict = _json_schema(parameters, t.strict, caps, warnings, f"tool {t.name}")
        specs.append({"type": "function", "function": drop_none({
            "name": t.name, "description": t.description, "parameters": parameters,
            "strict": True if strict else None})})
    fields: dict = {"tools": specs}
    choice = call.tool_choice
    if choice is not None:
        fields["tool_choice"] = ({"type": "function", "function": {"name": choice.name}} if choice.mode == "tool"
                                 else choice.mode)
    if call.parallel_tool_calls is not None:
        fields["parallel_tool_calls"] = call.parallel_tool_calls
    return fields


def _content(message: Message):
    if all(isinstance(p, TextPart) for p in message.parts):
        return message.text
    parts = []
    for p in message.parts:
        if isinstance(p, TextPart):
            parts.append({"type": "text", "text": p.text})
        else:
            parts.append({"type": "image_url", "image_url": drop_none({"url": p.url, "detail": p.detail})})
    return parts


def _response_format(call: Call, caps, warnings: list[str]) -> tuple[dict | None, str | None]:
    """(native response_format, extra system instruction) for the model's capabilities."""
    fmt = call.response_format
    if fmt is None:
        return None, None
    if fmt.type == "json_schema" and caps.json_schema:
        schema, strict = _json_schema(fmt.schema, fmt.strict, caps, warnings)
        return {"type": "json_schema", "json_schema": {"name": fmt.name, "schema": schema, "strict": strict}}, None
    if fmt.type == "json_schema":
        warnings.append("This model has no native JSON-schema mode: the schema was put in the prompt "
                        "and the answer validated against it.")
    if caps.json_object:
        instruction = schema_instruction(fmt) if fmt.type == "json_schema" else None
        mentions_json = any("json" in m.text.lower() for m in call.messages)
        if instruction is None and not mentions_json:
            instruction = "Respond with a JSON object."    # json_object mode requires the word JSON
        return {"type": "json_object"}, instruction
    warnings.append("This model has no JSON mode: JSON was asked for in the prompt.")
    return None, schema_instruction(fmt)


def _json_schema(schema: dict | None, strict: bool, caps, warnings: list[str],
                 what: str = "the response_format schema") -> tuple[dict | None, bool]:
    """(schema, strict) for a strict call, per the model's `strict_schema` capability.

    OpenAI's strict mode takes only its subset (every property required, objects closed): the
    caller's schema is rewritten into it, or sent with strict false where the subset cannot say it.
    Groq allows strict only on its gpt-oss models (console.groq.com/docs/structured-outputs.md,
    "Strict Mode" / "Supported Models"); elsewhere it is best-effort. The answer is validated
    against the caller's schema in every case (app.postprocess)."""
    if not strict or schema is None or caps.strict_schema == "any":
        return schema, strict
    if caps.strict_schema == "none":
        warnings.append(f"This model has no strict schema mode: {what} was sent best-effort (strict false) "
                        "and the answer validated against it.")
        return schema, False
    form = strict_schema.to_strict(schema)
    if form.warning:
        warnings.append(form.warning if what.startswith("the response") else f"{what}: {form.warning}")
    return form.schema, form.strict


def build_request(call: Call, target) -> Plan:
    model, provider = target.model, target.provider
    caps = model.capabilities
    warnings: list[str] = []
    fmt, instruction = _response_format(call, caps, warnings)
    messages = _messages(call.messages)
    if instruction:
        messages.insert(0, {"role": "system", "content": instruction})

    body: dict = {"model": model.name, "messages": messages}
    temperature, warning = model_defaults.temperature(model, call.options)
    if temperature is not None:
        body["temperature"] = temperature
    if warning:
        warnings.append(warning)
    body[provider.max_tokens_field] = model_defaults.max_tokens(model, call.options)   # Ollama: only max_tokens
    effort = _reasoning_effort(call, model, provider, warnings)
    if effort is not None:
        body["reasoning_effort"] = effort
    if model.reasoning_format:      # Groq: "parsed" keeps <think> text out of the answer (providers.md §2.5)
        body["reasoning_format"] = model.reasoning_format
    stops = [s for s in call.options.stop if s]
    if stops and caps.stop:
        limit = caps.stop_limit     # None: no documented limit (Ollama); OpenAI, xAI, Groq: 4
        if limit is not None and len(stops) > limit:
            warnings.append(f"{model.id} accepts at most {limit} stop sequences: the first {limit} were sent "
                            "and the others enforced on the output.")
        body["stop"] = stops[:limit]
    elif stops:
        warnings.append(f"{model.id} does not accept stop sequences; they were enforced on the output instead.")
    if fmt is not None:
        body["response_format"] = fmt
    body.update(_tools(call, caps, warnings))

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["Authorization"] = f"Bearer {target.api_key}"
    request = HttpRequest("POST", f"{target.base_url}/chat/completions", headers=headers, json=body,
                          secrets=target.secrets)
    return Plan(request=request, warnings=tuple(warnings))


# xAI (grok-4.3: none|low|medium|high, grok-4.5: low|medium|high) and Groq (gpt-oss: low|medium|high)
# have no "minimal" (providers.md §2.5, §3): the nearest level they take is sent.
_NO_MINIMAL = frozenset({"xai", "groq"})


def _reasoning_effort(call: Call, model, provider, warnings: list[str]) -> str | None:
    """`reasoning_effort` for a reasoning model (spec CreateChatCompletionRequest.reasoning_effort)."""
    effort = reasoning.wants(call, model, warnings)
    if effort == "minimal" and provider.name in _NO_MINIMAL:
        warnings.append(f"{model.id} has no 'minimal' reasoning effort: 'low' was sent.")
        return "low"
    return effort


def parse_usage(raw, reasoning_outside: bool) -> Usage:
    """`prompt_tokens` includes `prompt_tokens_details.cached_tokens` (reads) and `cache_write_tokens`
    (providers.md §2.1); no usage object at all is reported as such, never as a free call."""
    if not isinstance(raw, dict):
        return Usage(reported=False)
    completion = int_or_zero(raw.get("completion_tokens"))
    details = raw.get("completion_tokens_details") or {}
    reasoning = int_or_zero(details.get("reasoning_tokens")) if isinstance(details, dict) else 0
    prompt_details = raw.get("prompt_tokens_details")
    prompt_details = prompt_details if isinstance(prompt_details, dict) else {}
    output = completion + reasoning if reasoning_outside else completion
    return Usage(input_tokens=int_or_zero(raw.get("prompt_tokens")), output_tokens=output,
                 reasoning_tokens=reasoning, cached_input_tokens=int_or_zero(prompt_details.get("cached_tokens")),
                 cache_write_tokens=int_or_zero(prompt_details.get("cache_write_tokens")))


def parse_response(resp: HttpResponse, call: Call, target) -> Completion:
    provider = target.provider.name
    body = json_object(resp, provider)
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        if "error" in body:
            raise parse_error(resp, target)
        raise InvalidProviderResponse(f"{provider} answered without choices.", provider=provider, retryable=True)
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    content = message.get("content")
    if isinstance(content, list):   # some compatible servers answer with parts
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is not None and not isinstance(content, str):
        raise InvalidProviderResponse(f"{provider} answered with non-text content.", provider=provider)
    tool_calls = _tool_calls(message.get("tool_calls"), provider, str(body.get("id") or ""))
    refusal = message.get("refusal")
    if refusal and not content and not tool_calls:
        raise ContentBlocked(f"{target.model.id} refused: {refusal}", provider=provider)
    raw_finish = choice.get("finish_reason")
    if raw_finish == "content_filter" and not content and not message.get("tool_calls"):
        # The filter withheld the whole answer: a refusal, as Anthropic's `refusal` and Gemini's
        # SAFETY finishes are, not an empty success (spec CreateChatCompletionResponse
        # finish_reason: "content_filter if content was omitted due to a flag from our content filters").
        raise ContentBlocked(f"{target.model.id}'s answer was withheld by {target.provider.label}'s content "
                             "filter.", provider=provider, upstream_status=resp.status)
    finish = FINISH_REASONS.get(raw_finish, "other" if raw_finish else "stop")
    if tool_calls and finish == "stop":     # some compatible servers say stop after a tool call
        finish = "tool_calls"
    usage = parse_usage(body.get("usage"), target.provider.reasoning_tokens_outside_completion)
    warnings = empty_answer_warnings(finish, content, usage, doing="reasoning")
    return Completion(text=content or "", finish_reason=finish, usage=usage,
                      model=body.get("model") if isinstance(body.get("model"), str) else target.model.name,
                      warnings=tuple(warnings), tool_calls=tool_calls)


def derived_call_id(answer_id: str, index: int) -> str:
    return "call_" + hashlib.sha256(f"{answer_id}/{index}".encode()).hexdigest()[:24]


def _tool_calls(raw, provider: str, answer_id: str) -> tuple[ToolCall, ...]:
    """`message.tool_calls` -> ours, arguments parsed: a call whose arguments are not a JSON object is
    the model's malformed answer (retryable), not something to hand a workflow. Some compatible
    servers send `id: ""` (fixtures/test_openai/test_compatible_api_with_tool_calls_without_id): such
    a call gets an id derived from the answer's."""
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise InvalidProviderResponse(f"{provider} answered with malformed tool_calls.", provider=provider,
                                      retryable=True)
    calls = []
    for index, item in enumerate(raw):
        fn = item.get("function") if isinstance(item, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) \
                or not isinstance(item.get("id", ""), (str, type(None))):
            raise InvalidProviderResponse(f"{provider} answered with a malformed tool call.", provider=provider,
                                          retryable=True)
        arguments = fn.get("arguments")
        try:
            parsed = json.loads(arguments) if isinstance(arguments, str) and arguments.strip() else {}
        except ValueError:
            parsed = None
        if not isinstance(parsed, dict):
            raise InvalidProviderResponse(f"{provider} called {fn['name']} with arguments that are not a JSON "
                                          "object.", provider=provider, retryable=True)
        call_id = item.get("id") or derived_call_id(answer_id, index)
        calls.append(ToolCall(call_id, fn["name"], parsed))
    return tuple(calls)


def _error_fields(body) -> tuple[str | None, str | None, str | None]:
    """(message, code, type) from an OpenAI-style or xAI-style error body."""
    if not isinstance(body, dict):
        return None, None, None
    err = body.get("error")
    if isinstance(err, dict):   # OpenAI, Groq, Ollama
        code = err.get("code")
        return err.get("message"), str(code) if code is not None else None, err.get("type")
    if isinstance(err, str):    # xAI: {"code": "...", "error": "<message>"}
        code = body.get("code")
        return err, str(code) if code is not None else None, None
    return body.get("message") if isinstance(body.get("message"), str) else None, None, None


# An error object inside a 200 (some OpenAI-compatible servers and routers answer that way) has
# no status of its own: the status its code or type would come with decides, so it is retried, or
# not, like its HTTP twin. A numeric code is the status itself (OpenRouter); an unknown error is
# the server's failure (500), as OpenAI's own in-stream ErrorEvent is.
_TWIN_STATUS = {"rate_limit_exceeded": 429, "requests": 429, "tokens": 429, "rate_limit_error": 429,
                "insufficient_quota": 429, "invalid_request_error": 400, "invalid_api_key": 401,
                "authentication_error": 401, "permission_error": 403, "model_not_found": 404,
                "not_found_error": 404, "server_error": 500, "api_error": 500, "overloaded_error": 503,
                "timeout": 504}


def _twin_status(code: str | None, kind: str | None) -> int:
    if code is not None and code.isdigit() and 400 <= int(code) <= 599:
        return int(code)
    return _TWIN_STATUS.get(code or "") or _TWIN_STATUS.get(kind or "") or 500


def parse_error(resp: HttpResponse, target) -> ProviderError:
    provider = target.provider.name
    message, code, kind = _error_fields(resp.json())
    text = message or f"HTTP {resp.status}: {resp.text(200)}"
    text = redact(f"{target.provider.label} said: {text}", target.secrets)
    retry_after = retry_after_seconds(resp.header("retry-after"))
    if resp.status < 400:
        status = _twin_status(code, kind)
        err = parse_error(HttpResponse(status, resp.body, resp.headers), target)
        err.upstream_status = resp.status
        return err
    lowered = (message or "").lower()
    if resp.status == 429 and (code == "insufficient_quota" or kind == "insufficient_quota"
                               or "ran out of credits" in lowered or "quota" in lowered and "exceeded your" in lowered):
        return ProviderRateLimited(text, provider=provider, code="provider_quota_exceeded", retryable=False,
                                   upstream_status=429)
    if code in ("model_not_found", "model_decommissioned") or "decommissioned" in lowered:
        return ModelNotFound(text, provider=provider, upstream_status=resp.status)
    if resp.status == 400 and ("api key" in lowered and ("incorrect" in lowered or "invalid" in lowered)):
        return ProviderAuthFailed(text, provider=provider, upstream_status=400)
    return from_upstream_status(resp.status, text, provider=provider, retry_after=retry_after)
