"""Google Gemini `generateContent` (Generative Language API v1beta).

Wire facts relied on (../shared/specs/providers.md §2.3, §0.6-0.7, gemini/*.proto, and the real
pydantic-ai recordings in fixtures/test_google): the key goes in `x-goog-api-key` (never the URL,
where proxies and logs would keep it); roles are `user`/`model` with system text in
`systemInstruction`; `stopSequences` takes at most 5; thinking tokens (`thoughtsTokenCount`) are
counted outside `candidatesTokenCount`; a candidate's `content` may have no `parts` at all when a
thinking model hits the token limit; a blocked prompt is a 200 with `promptFeedback.blockReason` and
no candidates; errors are `{"error": {code, message, status, details[]}}` with google.rpc details
(`RetryInfo.retryDelay`, `QuotaFailure.violations`, `ErrorInfo.reason`).
"""
from __future__ import annotations

import hashlib
import json
import re
from urllib.parse import quote

from app import model_defaults, reasoning
from app.calls import Call, Completion, ImagePart, Message, TextPart, ToolCall, ToolCallPart, ToolResultPart, Usage
from app.errors import (ContentBlocked, ImageRejected, InvalidProviderResponse, ModelNotFound,
                      ProviderAuthFailed, ProviderError, ProviderOverloaded, ProviderRateLimited,
                      ProviderTimeout, from_upstream_status, redact)
from app.http import HttpRequest, HttpResponse, Plan, retry_after_seconds
from app.images import split_data_uri
from app.providers import gemini_schema
from app.providers.common import empty_answer_warnings, int_or_zero, json_object, merge_consecutive, split_system

GEMINI_STOP_LIMIT = 5

_ROLES = {"user": "user", "assistant": "model", "tool": "user"}
# The documented stand-in signature for a function call Gemini did not make itself (a conversation
# begun on another provider, or a call whose state did not survive): Gemini 3 accepts it where a
# missing thoughtSignature is a 400 (fixtures/test_google/test_thinking_with_tool_calls_from_other_model).
STANDIN_SIGNATURE = "Y29udGV4dF9lbmdpbmVlcmluZ19pc190aGVfd2F5X3RvX2dv"   # base64 "context_engineering_is_the_way_to_go"
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length"}
# Finish reasons that mean a filter (safety, recitation, blocklists, Model Armor) withheld the text.
_FILTERED = frozenset({"SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY",
                       "IMAGE_PROHIBITED_CONTENT", "IMAGE_RECITATION", "MODEL_ARMOR"})
_AUTH_REASONS = frozenset({"API_KEY_INVALID", "API_KEY_EXPIRED"})
_PER_DAY = re.compile(r"per_?day", re.I)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")


# -- request ----------------------------------------------------------------------------------------
def _function_response(part: ToolResultPart) -> dict:
    """`response` must be an object: a result that is a JSON object goes as is, anything else under
    "result" (or "error" for a failed call, as the proto suggests)."""
    try:
        parsed = json.loads(part.content)
    except ValueError:
        parsed = None
    response = parsed if isinstance(parsed, dict) else {"error" if part.is_error else "result": part.content}
    return {"functionResponse": {"id": part.call_id, "name": part.name or "", "response": response}}


def _part(part, where: str) -> dict:
    if isinstance(part, TextPart):
        return {"text": part.text}
    if isinstance(part, ToolCallPart):
        return {"functionCall": {"id": part.call.id, "name": part.call.name, "args": part.call.arguments}}
    if isinstance(part, ToolResultPart):
        return _function_response(part)
    if isinstance(part, ImagePart) and part.is_data_uri:
        mime, data = split_data_uri(part.url)
        return {"inlineData": {"mimeType": mime, "data": data}}
    # Dispatch inlines URL images for providers with image_urls=false; reaching here is our bug.
    raise ImageRejected("Gemini takes images only as inline data; this image URL was not downloaded first.",
                        fields={where: "image URL not inlined before building the Gemini request"})


def _signed(message: Message, parts: list[dict]) -> list[dict]:
    """A model turn's function calls carry their thoughtSignature back; the first call of a turn
    that has none gets the stand-in (only the first call of a turn is signed, per Gemini 3)."""
    calls = message.tool_calls
    if not calls:
        return parts
    signatures = iter(c.state.get("thoughtSignature") if c.state else None for c in calls)
    first = True
    for part in parts:
        if "functionCall" not in part:
            continue
        signature = next(signatures)
        if isinstance(signature, str) and signature:
            part["thoughtSignature"] = signature
        elif first:
            part["thoughtSignature"] = STANDIN_SIGNATURE
        first = False
    return parts


def _contents(messages: tuple[Message, ...]) -> list[dict]:
    contents: list[dict] = []
    for i, m in enumerate(messages):
        parts = _signed(m, [_part(p, f"messages.{i}.content") for p in m.parts]) or [{"text": ""}]
        role = _ROLES[m.role]
        if contents and contents[-1]["role"] == role:   # tool results and a user turn are one user turn
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": role, "parts": parts})
    return contents


def _tools(call: Call, model, warnings: list[str]) -> dict:
    """`tools: [{functionDeclarations}]` with parameter schemas translated like structured output's,
    and `toolConfig.functionCallingConfig` (AUTO / ANY / NONE, allowedFunctionNames for one tool)."""
    if not call.tools:
        return {}
    declarations, dropped = [], set()
    for t in call.tools:
        declaration = {"name": t.name, "description": t.description or ""}
        if t.parameters is not None and t.parameters.get("properties"):
            translated = gemini_schema.to_response_json_schema(t.parameters)
            dropped.update(translated.dropped)
            declaration["parametersJsonSchema"] = translated.schema
        declarations.append(declaration)
    if dropped:
        warnings.append("Gemini does not support these JSON Schema keywords, which were left out of the tool "
                        "parameters sent: " + ", ".join(sorted(dropped)) + ".")
    fields: dict = {"tools": [{"functionDeclarations": declarations}]}
    choice = call.tool_choice
    strict = any(t.strict for t in call.tools)
    if choice is not None or strict:
        # VALIDATED: the model may answer in text, but its calls are constrained to the schemas
        # (the `strict` of the other providers; as pydantic-ai sends in fixtures/test_google).
        auto = "VALIDATED" if strict else "AUTO"
        mode = {"auto": auto, "none": "NONE", "required": "ANY", "tool": "ANY"}[choice.mode if choice else "auto"]
        config: dict = {"mode": mode}
        if choice is not None and choice.mode == "tool":
            config["allowedFunctionNames"] = [choice.name]
        fields["toolConfig"] = {"functionCallingConfig": config}
    if call.parallel_tool_calls is False:
        warnings.append("Gemini has no switch for parallel tool calls: parallel_tool_calls false was not sent.")
    return fields


def _stop_sequences(call: Call, model, warnings: list[str]) -> list[str] | None:
    stops = [s for s in call.options.stop if s]
    if not stops:
        return None
    if not model.capabilities.stop:
        warnings.append(f"{model.id} does not accept stop sequences; they were enforced on the output instead.")
        return None
    limit = min(GEMINI_STOP_LIMIT, model.capabilities.stop_limit or GEMINI_STOP_LIMIT)
    if len(stops) > limit:
        warnings.append(f"Gemini accepts at most {limit} stop sequences: the first {limit} were sent and "
                        "the others enforced on the output.")
    return stops[:limit]


def _thinking_config(call: Call, model, warnings: list[str]) -> dict | None:
    """Reasoning effort as `generationConfig.thinkingConfig`: `thinkingLevel` on Gemini 3 and later
    (Pro has no "minimal"), `thinkingBudget` on 2.5 (0 turns thinking off on Flash and Flash-Lite;
    Pro cannot turn it off). The two fields together are a 400, so only one is sent. Levels go as
    the enum's names (MINIMAL, LOW, MEDIUM, HIGH: ../shared/specs/providers.md, "Thinking"), which
    every proto3 JSON parser accepts."""
    effort = reasoning.wants(call, model, warnings)
    if effort is None:
        return None
    pro = "-pro" in model.name
    if model.name.startswith("gemini-2.5"):
        budget = reasoning.GEMINI_25_BUDGETS[effort]
        if pro:
            budget = max(budget, reasoning.GEMINI_25_PRO_MIN_BUDGET)
        return {"thinkingBudget": budget}
    if effort == "minimal" and pro:
        warnings.append(f"{model.id} has no 'minimal' thinking level: 'low' was sent.")
        effort = "low"
    return {"thinkingLevel": effort.upper()}


def build_request(call: Call, target) -> Plan:
    model = target.model
    warnings: list[str] = []
    structured, instruction = gemini_schema.structured_config(call, model, warnings)
    system, rest = split_system(call.messages)
    system = "\n\n".join(t for t in (system, instruction) if t)

    config: dict = {}
    temperature, warning = model_defaults.temperature(model, call.options)
    if temperature is not None:
        config["temperature"] = temperature
    if warning:
        warnings.append(warning)
    config["maxOutputTokens"] = model_defaults.max_tokens(model, call.options)
    stops = _stop_sequences(call, model, warnings)
    if stops:
        config["stopSequences"] = stops
    config.update(structured)
    thinking = _thinking_config(call, model, warnings)
    if thinking:
        config["thinkingConfig"] = thinking

    body: dict = {"contents": _contents(merge_consecutive(rest))}
    if system:
        body["systemInstruction"] = {"parts": [{"text": system}]}
    body.update(_tools(call, model, warnings))
    body["generationConfig"] = config

    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if target.api_key:
        headers["x-goog-api-key"] = target.api_key
    url = f"{target.base_url}/v1beta/models/{quote(model.name, safe='-._~')}:generateContent"
    request = HttpRequest("POST", url, headers=headers, json=body, secrets=target.secrets)
    return Plan(request=request, warnings=tuple(warnings))


# -- answer -----------------------------------------------------------------------------------------
def parse_usage(raw) -> Usage:
    """Gemini counts thinking outside `candidatesTokenCount`; ours includes it in output."""
    if not isinstance(raw, dict):
        return Usage(reported=False)
    thoughts = int_or_zero(raw.get("thoughtsTokenCount"))
    return Usage(
        input_tokens=int_or_zero(raw.get("promptTokenCount")) + int_or_zero(raw.get("toolUsePromptTokenCount")),
        output_tokens=int_or_zero(raw.get("candidatesTokenCount")) + thoughts,
        reasoning_tokens=thoughts,
        cached_input_tokens=int_or_zero(raw.get("cachedContentTokenCount")))


def candidate_text(candidate: dict) -> str:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ""
    return "".join(p["text"] for p in parts
                   if isinstance(p, dict) and isinstance(p.get("text"), str) and not p.get("thought"))


def function_calls(candidate: dict, response_id: str, provider: str, first: int = 0) -> tuple[ToolCall, ...]:
    """`functionCall` parts -> ours, each keeping its thoughtSignature as state. Gemini gives no id
    unless asked, so one is derived from the answer id, the call's place among the answer's calls
    (from `first` on, for a stream's later chunks) and the call itself: a streamed answer and the
    same answer whole get the same ids."""
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    if not isinstance(parts, list):
        return ()
    calls = []
    for p in parts:
        fc = p.get("functionCall") if isinstance(p, dict) else None
        if fc is None:
            continue
        if not isinstance(fc, dict) or not isinstance(fc.get("name"), str) or not isinstance(fc.get("args", {}), dict):
            raise InvalidProviderResponse(f"{provider} answered with a malformed functionCall.", provider=provider,
                                          retryable=True)
        args = fc.get("args") or {}
        seed = f"{response_id}/{first + len(calls)}/{fc['name']}/{json.dumps(args, sort_keys=True)}"
        call_id = fc["id"] if isinstance(fc.get("id"), str) and fc["id"] else \
            "call_" + hashlib.sha256(seed.encode()).hexdigest()[:24]
        signature = p.get("thoughtSignature")
        state = {"thoughtSignature": signature} if isinstance(signature, str) and signature else None
        calls.append(ToolCall(call_id, fc["name"], args, state))
    return tuple(calls)


def finish_of(raw) -> str:
    if raw is None:
        return "stop"
    if raw in _FILTERED:
        return "content_filter"
    return _FINISH.get(raw, "other")


def blocked_prompt_error(body: dict, target, status: int) -> ProviderError:
    feedback = body.get("promptFeedback") if isinstance(body.get("promptFeedback"), dict) else {}
    reason = feedback.get("blockReason")
    if not reason:
        return InvalidProviderResponse(f"{target.provider.name} answered without candidates.",
                                       provider=target.provider.name, retryable=True, upstream_status=status)
    detail = feedback.get("blockReasonMessage")
    return ContentBlocked(f"Google Gemini blocked the prompt ({reason})" + (f": {detail}" if detail else "."),
                          provider=target.provider.name, upstream_status=status)


def parse_response(resp: HttpResponse, call: Call, target) -> Completion:
    provider = target.provider.name
    body = json_object(resp, provider)
    candidates = body.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        if isinstance(body.get("error"), dict):
            raise parse_error(resp, target)
        raise blocked_prompt_error(body, target, resp.status)
    candidate = candidates[0]
    if not isinstance(candidate, dict):
        raise InvalidProviderResponse(f"{provider} answered with a malformed candidate.", provider=provider,
                                      retryable=True, upstream_status=resp.status)
    text = candidate_text(candidate)
    raw_finish = candidate.get("finishReason")
    finish = finish_of(raw_finish)
    tool_calls = function_calls(candidate, str(body.get("responseId") or ""), provider) if call.tools else ()
    if tool_calls and finish == "stop":     # Gemini says STOP after a function call
        finish = "tool_calls"
    # A filtered candidate with no text is a refusal, not an answer: an empty 200 would flow on
    # through a workflow as if the model had said nothing (OpenAI refusals are treated the same way).
    if finish == "content_filter" and not text:
        detail = candidate.get("finishMessage")
        raise ContentBlocked(f"Google Gemini withheld the answer ({raw_finish})" + (f": {detail}" if detail else "."),
                             provider=provider, upstream_status=resp.status)
    usage = parse_usage(body.get("usageMetadata"))
    warnings = empty_answer_warnings(finish, text, usage)
    if finish == "content_filter":
        warnings.append(f"Gemini stopped the answer early ({raw_finish}); the text is what came before.")
    model_version = body.get("modelVersion")
    return Completion(text=text, finish_reason=finish, usage=usage,
                      model=model_version if isinstance(model_version, str) and model_version else target.model.name,
                      warnings=tuple(warnings), tool_calls=tool_calls)


# -- errors -----------------------------------------------------------------------------------------
def _error_object(body) -> dict:
    if isinstance(body, list) and body and isinstance(body[0], dict):   # some Google fronts wrap it
        body = body[0]
    err = body.get("error") if isinstance(body, dict) else None
    return err if isinstance(err, dict) else {}


def _details(err: dict, type_suffix: str) -> list[dict]:
    details = err.get("details")
    return [d for d in details if isinstance(d, dict) and str(d.get("@type", "")).endswith(type_suffix)] \
        if isinstance(details, list) else []


def _retry_delay(err: dict) -> float | None:
    for info in _details(err, "google.rpc.RetryInfo"):
        match = _DURATION.match(str(info.get("retryDelay", "")))
        if match:
            return float(match.group(1))
    return None


def _quota_wont_clear(err: dict, message: str) -> bool:
    """A per-day quota (or a free tier with limit 0) stays exhausted for hours: retrying is waste."""
    for failure in _details(err, "google.rpc.QuotaFailure"):
        for v in failure.get("violations") or []:
            if isinstance(v, dict) and (_PER_DAY.search(str(v.get("quotaId", "")))
                                        or _PER_DAY.search(str(v.get("quotaMetric", "")))):
                return True
    return "limit: 0," in message


def parse_error(resp: HttpResponse, target) -> ProviderError:
    provider = target.provider.name
    err = _error_object(resp.json())
    message = err.get("message") if isinstance(err.get("message"), str) else None
    rpc_status = err.get("status") if isinstance(err.get("status"), str) else None
    text = message or f"HTTP {resp.status}: {resp.text(200)}"
    text = redact(f"{target.provider.label} said: {text}", target.secrets)
    retry_after = _retry_delay(err)
    if retry_after is None:
        retry_after = retry_after_seconds(resp.header("retry-after"))
    reasons = {str(d.get("reason")) for d in _details(err, "google.rpc.ErrorInfo")}
    error = _classify(resp.status, rpc_status, reasons, err, message or "", text, provider, retry_after)
    if _status_disagrees(resp.status, error):
        error = from_upstream_status(resp.status, text, provider=provider, retry_after=retry_after)
    return error


def _status_disagrees(status: int, error: ProviderError) -> bool:
    """The HTTP status decides retrying where the body's rpc status says otherwise: a 400/401/404
    whose body says INTERNAL is not an overload to retry, and a 5xx whose body says NOT_FOUND may
    clear. A 429 keeps the body's verdict (a per-day quota is a 429 that retrying cannot clear), and
    an error inside a 200 has no HTTP verdict at all."""
    if status < 400 or status == 429:
        return False
    return error.retryable != (status in (408, 429) or status >= 500)


def _classify(status: int, rpc_status: str | None, reasons: set[str], err: dict, message: str, text: str,
              provider: str, retry_after: float | None) -> ProviderError:
    kw = dict(provider=provider, upstream_status=status)
    if status == 429 or rpc_status == "RESOURCE_EXHAUSTED":
        if _quota_wont_clear(err, message):
            return ProviderRateLimited(text, code="provider_quota_exceeded", retryable=False,
                                       retry_after=retry_after, **kw)
        return ProviderRateLimited(text, retry_after=retry_after, **kw)
    if reasons & _AUTH_REASONS or "api key not valid" in message.lower():
        return ProviderAuthFailed(text, **kw)
    if rpc_status in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return ProviderAuthFailed(text, **kw)
    if rpc_status == "NOT_FOUND":
        return ModelNotFound(text, **kw)
    if rpc_status == "DEADLINE_EXCEEDED":
        return ProviderTimeout(text, **kw)
    if rpc_status in ("INTERNAL", "UNAVAILABLE"):
        return ProviderOverloaded(text, retry_after=retry_after, **kw)
    return from_upstream_status(status, text, provider=provider, retry_after=retry_after)
