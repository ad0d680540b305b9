"""Tool calling in the node body: the `tools`, `tool_choice` and tool-turn fields, and the checks that
make a malformed tool conversation a 400 before any provider is paid.

Body shapes (OpenAI's nested forms are accepted too, so a body copied from an OpenAI example works):
    tools:        [{"name", "description"?, "parameters"?, "strict"?}]  or  [{"type": "function", "function": {...}}]
    tool_choice:  "auto" | "none" | "required" | {"name": "<tool>"}  or  {"type": "function", "function": {"name"}}
    an assistant message's tool_calls: [{"id", "name", "arguments"}]  (arguments an object or a JSON string)
    a tool message: {"role": "tool", "tool_call_id": "<id>", "content": "<result>"}
"""
from __future__ import annotations

import json
import re

from marshmallow import ValidationError as MarshmallowError
from marshmallow import fields

from app import tool_cache, tool_ids
from app.calls import Message, TextPart, Tool, ToolCall, ToolCallPart, ToolChoice, ToolResultPart
from app.errors import ValidationError

MAX_TOOLS = 128                     # OpenAI's own limit; every provider takes at least this many
MAX_TOOL_SCHEMA_BYTES = 65_536      # one tool's parameters, serialised (a byte cap until schema limits land)
MAX_TOOLS_SCHEMA_BYTES = 524_288    # all tools' parameters together
MAX_ARGUMENTS_BYTES = 1_048_576
NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
NAME_RULE = "Letters, digits, _ and - only, 1 to 64 characters (the rule every provider shares)."
CHOICES = ("auto", "none", "required")


def _function(value: dict) -> dict:
    """OpenAI's {"type": "function", "function": {...}} -> the flat form."""
    if "function" in value or value.get("type") is not None:
        if value.get("type") != "function" or not isinstance(value.get("function"), dict) or set(value) - {
                "type", "function"}:
            raise MarshmallowError('Must be {"name", ...} or {"type": "function", "function": {"name", ...}}.')
        return value["function"]
    return value


class ToolsField(fields.Field):
    """The functions the model may call."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise MarshmallowError("Must be a list of tools.")
        if len(value) > MAX_TOOLS:
            raise MarshmallowError(f"At most {MAX_TOOLS} tools.")
        key = tool_cache.key_of(value)          # bounded: the body was, and so is the number of tools
        cached = tool_cache.get(key) if key is not None else None
        if cached is not None:
            return cached
        tools = _checked_tools(value)
        if key is not None:
            tool_cache.put(key, tools)
        return tools


def _checked_tools(value: list) -> tuple[Tool, ...]:
    """Every tool of the list in the flat form, or the errors of all of them."""
    tools, errors, seen = [], {}, set()
    for i, item in enumerate(value):
        try:
            tool = _tool(item)
        except MarshmallowError as err:
            errors[i] = err.messages
            continue
        if tool.name in seen:
            errors[i] = {"name": [f"Tool {tool.name!r} is defined twice."]}
        seen.add(tool.name)
        tools.append(tool)
    if errors:
        raise MarshmallowError(errors)
    total = sum(len(json.dumps(t.parameters)) for t in tools if t.parameters is not None)
    if total > MAX_TOOLS_SCHEMA_BYTES:
        raise MarshmallowError(
            f"At most {MAX_TOOLS_SCHEMA_BYTES} bytes of parameter schemas for all tools together.")
    return tuple(tools)


def _tool(item) -> Tool:
    if not isinstance(item, dict):
        raise MarshmallowError("Each tool must be an object.")
    spec = _function(item)
    unknown = set(spec) - {"name", "description", "parameters", "strict"}
    if unknown:
        raise MarshmallowError({k: ["Unknown field."] for k in sorted(unknown)})
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise MarshmallowError({"name": [NAME_RULE]})
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise MarshmallowError({"description": ["Must be a string."]})
    strict = spec.get("strict")
    if strict is not None and not isinstance(strict, bool):
        raise MarshmallowError({"strict": ["Must be true, false or null."]})
    parameters = spec.get("parameters")
    if parameters is not None:
        parameters = _parameters(parameters)
    return Tool(name=name, description=description or None, parameters=parameters, strict=bool(strict))


def _parameters(schema) -> dict:
    from app.schema_bounds import caller_schema_problem
    if not isinstance(schema, dict):
        raise MarshmallowError({"parameters": ["Must be a JSON Schema object."]})
    canonical = json.dumps(schema, sort_keys=True)
    if len(canonical.encode()) > MAX_TOOL_SCHEMA_BYTES:
        raise MarshmallowError({"parameters": [f"At most {MAX_TOOL_SCHEMA_BYTES} bytes of JSON Schema per tool."]})
    if schema.get("type", "object") != "object":
        raise MarshmallowError({"parameters": ['Must describe an object ("type": "object"): arguments are named.']})
    problem = caller_schema_problem(schema)      # the same limits and checks as response_format's
    if problem:
        raise MarshmallowError({"parameters": [f"Not a usable JSON Schema: {problem}"]})
    # `$schema` only names the dialect (n8n sends draft-07's); Gemini and others refuse the keyword.
    return {k: v for k, v in schema.items() if k != "$schema"}


class ToolChoiceField(fields.Field):
    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            if value not in CHOICES:
                raise MarshmallowError('Must be "auto", "none", "required" or {"name": "<tool>"}.')
            return ToolChoice(value)
        if isinstance(value, dict):
            spec = _function(value)
            name = spec.get("name")
            if set(spec) - {"name"} or not isinstance(name, str) or not NAME.match(name):
                raise MarshmallowError('Must be "auto", "none", "required" or {"name": "<tool>"}.')
            return ToolChoice("tool", name)
        raise MarshmallowError('Must be "auto", "none", "required" or {"name": "<tool>"}.')


class ToolCallsField(fields.Field):
    """An assistant message's calls, as the model made them: [{"id", "name", "arguments"}]."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise MarshmallowError("Must be a list of tool calls.")
        calls, errors = [], {}
        for i, item in enumerate(value):
            try:
                calls.append(_tool_call(item))
            except MarshmallowError as err:
                errors[i] = err.messages
        if errors:
            raise MarshmallowError(errors)
        return calls


def _tool_call(item) -> dict:
    """-> {"id", "name", "arguments": dict}; the id is still as handed out (decoded later)."""
    if not isinstance(item, dict):
        raise MarshmallowError("Each tool call must be an object.")
    call_id = item.get("id")
    if "function" in item:     # OpenAI's {id, type: function, function: {name, arguments}}
        if set(item) - {"id", "type", "function"} or item.get("type", "function") != "function" \
                or not isinstance(item["function"], dict) or set(item["function"]) - {"name", "arguments"}:
            raise MarshmallowError('Must be {"id", "name", "arguments"} or OpenAI\'s {"id", "type": "function", '
                                   '"function": {"name", "arguments"}}.')
        spec = item["function"]
    else:
        unknown = set(item) - {"id", "name", "arguments"}
        if unknown:
            raise MarshmallowError({k: ["Unknown field."] for k in sorted(unknown)})
        spec = item
    if not isinstance(call_id, str) or not call_id or len(call_id) > tool_ids.MAX_ID_CHARS:
        raise MarshmallowError({"id": ["Required: the id the model gave this call."]})
    name = spec.get("name")
    if not isinstance(name, str) or not NAME.match(name):
        raise MarshmallowError({"name": [NAME_RULE]})
    return {"id": call_id, "name": name, "arguments": _arguments(spec.get("arguments"))}


def _arguments(value) -> dict:
    if value is None or value == "":
        return {}
    if isinstance(value, str):
        if len(value) > MAX_ARGUMENTS_BYTES:
            raise MarshmallowError({"arguments": [f"At most {MAX_ARGUMENTS_BYTES} bytes."]})
        try:
            value = json.loads(value)
        except ValueError as exc:
            raise MarshmallowError({"arguments": [f"Not valid JSON: {exc}."]}) from None
    if not isinstance(value, dict):
        raise MarshmallowError({"arguments": ["Must be a JSON object (or a string holding one)."]})
    return value


# -- the conversation -------------------------------------------------------------------------------
def assistant_parts(message: dict, text_parts: tuple, where: str) -> tuple:
    """An assistant turn's parts: its text (if any) then its tool calls, ids decoded."""
    calls = []
    for j, c in enumerate(message.get("tool_calls") or ()):
        provider_id, state = tool_ids.decode(c["id"], f"{where}.tool_calls.{j}.id")
        calls.append(ToolCallPart(ToolCall(provider_id, c["name"], c["arguments"], state)))
    text = tuple(p for p in text_parts if not (isinstance(p, TextPart) and not p.text))
    return text + tuple(calls)


def tool_result(message: dict, text: str, where: str) -> ToolResultPart:
    call_id = message.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise ValidationError(f"{where}: a tool message needs tool_call_id, the id of the call it answers.",
                              fields={f"{where}.tool_call_id": "required for a tool message"})
    provider_id, _ = tool_ids.decode(call_id, f"{where}.tool_call_id")
    return ToolResultPart(provider_id, text)


def check_conversation(messages: list[Message], tools: tuple[Tool, ...], choice: ToolChoice | None,
                       fields_of: list[str]) -> list[Message]:
    """Every tool result answers a call made earlier in the conversation (its name filled in from
    that call); a named tool_choice names a tool; `required` or a named tool needs tools."""
    calls: dict[str, ToolCall] = {}
    pending: dict[str, str] = {}      # call id -> where the call was made, until its result comes
    checked = []
    for m, where in zip(messages, fields_of, strict=False):
        if m.role != "tool" and pending:
            _unanswered(pending)
        for call in m.tool_calls:
            calls[call.id] = call
            pending[call.id] = where
        if m.role == "tool":
            parts = []
            for p in m.parts:
                if isinstance(p, ToolResultPart):
                    made = calls.get(p.call_id)
                    if made is None:
                        raise ValidationError(
                            f"{where}: this tool result answers no tool call made earlier in the conversation "
                            "(tool_call_id must be the id of a call in an earlier assistant message).",
                            fields={f"{where}.tool_call_id": "no earlier assistant tool call has this id"})
                    p = ToolResultPart(p.call_id, p.content, made.name, p.is_error)
                    pending.pop(p.call_id, None)
                parts.append(p)
            m = Message("tool", tuple(parts))
        checked.append(m)
    if pending:
        _unanswered(pending)
    names = {t.name for t in tools}
    if choice is not None and choice.mode == "tool" and choice.name not in names:
        raise ValidationError(f"tool_choice names {choice.name!r}, which is not among the tools.",
                              fields={"tool_choice": "not one of the tools"})
    if choice is not None and choice.mode in ("required", "tool") and not tools:
        raise ValidationError("tool_choice asks for a tool call, but no tools were sent.",
                              fields={"tool_choice": "needs tools"})
    return checked


def _unanswered(pending: dict[str, str]) -> None:
    call_id, where = next(iter(pending.items()))
    raise ValidationError(
        f"{where}: the tool call {call_id[:100]!r} has no result: every call in an assistant message must be "
        "answered by a tool message (tool_call_id) before the conversation goes on.",
        fields={f"{where}.tool_calls": "a call without a tool result"})


def tool_calls_out(calls) -> list[dict]:
    """The flat answer form: [{id, name, arguments}] with ids that carry provider state."""
    return [{"id": tool_ids.public_id(c), "name": c.name, "arguments": c.arguments} for c in calls]
