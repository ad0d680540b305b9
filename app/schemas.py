"""The node request bodies: marshmallow schemas that validate them (unknown fields are errors), and
the translation of a validated body into a `Call`. Answers are app/answer_schemas.py; the bytes
become JSON in app/json_body.py.

Errors are reported per field as dotted paths (`options.maxTokens`, `messages.0.content.1.image_url.url`),
and the mistakes the seed warns about get a pointer to the right field.
"""
from __future__ import annotations

import math
import re
from collections.abc import Callable

from marshmallow import RAISE, Schema, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowError

from app import reasoning
from app import tools as tooling
from app.body_bounds import check_unknown_fields
from app.calls import DEFAULT_MAX_TOKENS, Call, ImagePart, Message, Options, ResponseFormat, TextPart
from app.errors import ImageRejected, ValidationError
from app.images import decode_data_uri, to_data_uri
from app.schema_bounds import caller_schema_problem

MAX_STOP_SEQUENCES = 16
MAX_FALLBACKS = 5

# The seed's own warnings ("use options.maxTokens, not max_tokens at root level"), and their cousins.
HINTS = {
    "max_tokens": "use options.maxTokens",
    "maxTokens": "use options.maxTokens",
    "max_completion_tokens": "use options.maxTokens",
    "temperature": "use options.temperature",
    "stop": "use options.stop",
    "task": "use context.task",
    "options.max_tokens": "use options.maxTokens",
    "options.max_completion_tokens": "use options.maxTokens",
    "options.timeout": "use options.timeoutMs (milliseconds)",
    "options.timeout_ms": "use options.timeoutMs",
    "context.task_type": "use context.task",
    "json_schema": "put it inside response_format: {\"type\": \"json_schema\", \"json_schema\": {...}}",
}


_DECIMAL = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")


class Number(fields.Field):
    """A finite number; numeric strings too (Zapier sends every field as a string), never booleans.
    A string must be plain decimal: ASCII digits, an optional sign and point (what Zapier sends);
    Python's float() would also take "1_000", "1e3", "inf" and other scripts' digits."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, bool):
            raise MarshmallowError("Must be a number, not a boolean.")
        if isinstance(value, str):
            text = value.strip(" \t\r\n")
            if not _DECIMAL.fullmatch(text):
                raise MarshmallowError("Must be a number (digits 0-9, an optional sign and decimal point).")
            value = float(text)
        try:
            finite = isinstance(value, (int, float)) and math.isfinite(value)
        except OverflowError:            # an integer with hundreds of digits
            finite = False
        if not finite:
            raise MarshmallowError("Must be a finite number.")
        return value


class WholeNumber(Number):
    def _deserialize(self, value, attr, data, **kwargs):
        value = super()._deserialize(value, attr, data, **kwargs)
        if value != int(value):
            raise MarshmallowError("Must be a whole number.")
        return int(value)


class StrictString(fields.String):
    """A string, never a number or object coerced into one."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, str):
            raise MarshmallowError("Must be a string.")
        return value


class ImageUrlSchema(Schema):
    class Meta:
        unknown = RAISE
    url = StrictString(required=True, validate=validate.Length(min=1, max=30_000_000))
    detail = StrictString(validate=validate.OneOf(["auto", "low", "high"]))


class PartSchema(Schema):
    class Meta:
        unknown = RAISE
    type = StrictString(required=True, validate=validate.OneOf(["text", "image_url"]))
    text = StrictString()
    image_url = fields.Nested(ImageUrlSchema)

    @validates_schema
    def _one_payload(self, data, **kwargs):
        if data.get("type") == "text" and "text" not in data:
            raise MarshmallowError({"text": ["Required for a text part."]})
        if data.get("type") == "image_url" and "image_url" not in data:
            raise MarshmallowError({"image_url": ["Required for an image_url part: {\"url\": \"https://...\"}."]})
        if data.get("type") == "text" and "image_url" in data or data.get("type") == "image_url" and "text" in data:
            raise MarshmallowError("A part carries either text or image_url, matching its type.")


class Content(fields.Field):
    """A message's content: a string, or a list of text / image_url parts."""
    part_schema = PartSchema()

    def clean(self, part: dict) -> dict:
        return part

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, str):
            return value
        if not isinstance(value, list) or not value:
            raise MarshmallowError("Must be a string or a non-empty list of parts.")
        parts, errors = [], {}
        for i, item in enumerate(value):
            if not isinstance(item, dict):
                errors[i] = ["Each part must be an object with a type."]
                continue
            try:
                parts.append(self.clean(self.part_schema.load(item)))
            except MarshmallowError as err:
                errors[i] = err.messages
        if errors:
            raise MarshmallowError(errors)
        return parts


class MessageSchema(Schema):
    class Meta:
        unknown = RAISE
    role = StrictString(required=True, validate=validate.OneOf(["system", "developer", "user", "assistant", "tool"]))
    content = Content(allow_none=True)
    name = StrictString(validate=validate.Length(max=64))
    tool_calls = tooling.ToolCallsField(allow_none=True, metadata={
        "type": "array", "items": {"type": "object"},
        "description": "An assistant turn's tool calls, as the answer gave them: [{id, name, arguments}]."})
    tool_call_id = StrictString(validate=validate.Length(min=1, max=tooling.tool_ids.MAX_ID_CHARS), metadata={
        "description": "A tool turn: the id of the call whose result `content` is."})

    @validates_schema
    def _tool_turns(self, data, **kwargs):
        role = data.get("role")
        if data.get("tool_calls") and role != "assistant":
            raise MarshmallowError({"tool_calls": ["Only an assistant message carries tool_calls."]})
        if "tool_call_id" in data and role != "tool":
            raise MarshmallowError({"tool_call_id": ["Only a tool message carries tool_call_id."]})
        if role == "tool" and "tool_call_id" not in data:
            raise MarshmallowError({"tool_call_id": ["Required for a tool message: the id of the call it answers."]})
        if data.get("content") is None and not (role == "assistant" and data.get("tool_calls")):
            raise MarshmallowError({"content": ["Required (only an assistant message with tool_calls may omit it)."]})


class OptionsSchema(Schema):
    class Meta:
        unknown = RAISE
    temperature = Number(validate=validate.Range(min=0, max=1))
    maxTokens = WholeNumber(validate=validate.Range(min=1, max=1_000_000))
    stop = fields.List(StrictString(validate=validate.Length(min=1, max=500)),
                       validate=validate.Length(max=MAX_STOP_SEQUENCES))
    timeoutMs = WholeNumber(validate=validate.Range(min=100, max=3_600_000))
    reasoningEffort = StrictString(allow_none=True, validate=validate.OneOf(reasoning.EFFORTS, error=reasoning.INVALID))


class ContextSchema(Schema):
    class Meta:
        unknown = RAISE
    task = StrictString(validate=validate.Length(min=1, max=64))


class JsonSchemaSpec(Schema):
    class Meta:
        unknown = RAISE
    name = StrictString(validate=validate.Regexp(r"^[A-Za-z0-9_-]{1,64}$",
                                                 error="Letters, digits, _ and - only, at most 64."))
    description = StrictString()
    strict = fields.Boolean(truthy={True}, falsy={False})
    schema = fields.Dict(required=True)

    @validates_schema
    def _valid_schema(self, data, **kwargs):
        schema = data.get("schema")
        if schema is None:
            return
        problem = caller_schema_problem(schema)
        if problem:
            raise MarshmallowError({"schema": [f"Not a valid JSON Schema: {problem}"]})


class ResponseFormatSchema(Schema):
    class Meta:
        unknown = RAISE
    type = StrictString(required=True, validate=validate.OneOf(["text", "json_object", "json_schema"]))
    json_schema = fields.Nested(JsonSchemaSpec)

    @validates_schema
    def _schema_when_needed(self, data, **kwargs):
        if data.get("type") == "json_schema" and "json_schema" not in data:
            raise MarshmallowError(
                {"json_schema": ["Required when type is json_schema: {\"name\", \"strict\", \"schema\"}."]})


class CallSchema(Schema):
    """POST /api/v3/llm/call and /api/v3/llm/public/call."""

    class Meta:
        unknown = RAISE
    model = StrictString(required=True, validate=validate.Length(min=1, max=200))
    prompt = StrictString(validate=validate.Length(min=1))
    query = StrictString(validate=validate.Length(min=1), metadata={"description": "Synonym of prompt."})
    messages = fields.List(fields.Nested(MessageSchema), validate=validate.Length(min=1))
    options = fields.Nested(OptionsSchema)
    context = fields.Nested(ContextSchema)
    response_format = fields.Nested(ResponseFormatSchema)
    fallbacks = fields.List(StrictString(validate=validate.Length(min=1, max=200)),
                            validate=validate.Length(max=MAX_FALLBACKS))
    tools = tooling.ToolsField(metadata={"type": "array", "items": {"type": "object"}, "maxItems": tooling.MAX_TOOLS,
                                         "description": "Functions the model may call: [{name, description, "
                                                        "parameters (JSON Schema), strict}]."})
    tool_choice = tooling.ToolChoiceField(metadata={
        "oneOf": [{"type": "string", "enum": list(tooling.CHOICES)}, {"type": "object"}],
        "description": "auto, none, required, or {\"name\": \"<tool>\"}."})
    parallel_tool_calls = fields.Boolean(truthy={True}, falsy={False})

    @validates_schema
    def _prompt_or_messages(self, data, **kwargs):
        if "prompt" in data and "query" in data and data["prompt"] != data["query"]:
            raise MarshmallowError({"query": ["query is a synonym of prompt: send one of them."]})
        if not any(k in data for k in ("prompt", "query", "messages")):
            raise MarshmallowError({"prompt": ["Send prompt (or query) or messages."]})


class AgentAiSchema(Schema):
    """POST /v1/action/invoke_llm (the agent.ai node)."""

    class Meta:
        unknown = RAISE
    instructions = StrictString(required=True, validate=validate.Length(min=1))
    llm_engine = StrictString(load_default="gpt4o", validate=validate.Length(min=1, max=200))


class TestConnectionSchema(Schema):
    __test__ = False    # not a pytest test class

    class Meta:
        unknown = RAISE
    provider = StrictString(required=True, validate=validate.Length(min=1, max=64))
    model = StrictString(validate=validate.Length(min=1, max=200))


# -- loading --------------------------------------------------------------------------------------
def hinted(path: str) -> str:
    """The message for an unknown field at `path`: a pointer to the right field for known mistakes."""
    return f"Unknown field: {HINTS[path]}." if path in HINTS else "Unknown field."


def flatten_errors(messages, prefix: str = "", unknown_field: Callable[[str], str] = hinted) -> dict[str, str]:
    """marshmallow's nested error dict -> {"dotted.path": "message"}; an unknown field's message is
    `unknown_field(path)`."""
    out: dict[str, str] = {}
    if isinstance(messages, dict):
        for key, value in messages.items():
            path = prefix if key == "_schema" else (f"{prefix}.{key}" if prefix else str(key))
            out.update(flatten_errors(value, path, unknown_field))
    elif isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            text = " ".join(messages)
            out[prefix or "body"] = unknown_field(prefix) if text == "Unknown field." else text
        else:
            for m in messages:
                out.update(flatten_errors(m, prefix, unknown_field))
    else:
        out[prefix or "body"] = str(messages)
    return out


def load(schema: Schema, body: dict, unknown_field: Callable[[str], str] = hinted) -> dict:
    """`body` validated by `schema`; errors are a 400 with dotted field paths."""
    check_unknown_fields(schema, body)
    try:
        return narrowed(schema, body).load(body)
    except MarshmallowError as err:
        fields_ = flatten_errors(err.messages, unknown_field=unknown_field)
        summary = "; ".join(f"{k}: {v}" for k, v in list(fields_.items())[:5])
        raise ValidationError(f"Invalid request: {summary}", fields=fields_) from None
    except RecursionError:
        raise ValidationError("The request body is nested too deeply.") from None


NARROWED_PER_SCHEMA = 64       # key sets kept per schema; past it, bodies load with the whole schema
_NARROWED_SCHEMAS = 16         # schemas narrowed (the module-level ones the nodes load with)


class _Narrowing:
    __slots__ = ("always", "names", "by_keys")

    def __init__(self, schema: Schema):
        fields_ = schema.load_fields
        # only the fields a body names, plus those that act when absent (required, defaulted)
        self.always = frozenset(name for name, f in fields_.items()
                                if f.required or f.load_default is not fields.missing_)
        plain = all(f.data_key in (None, name) for name, f in fields_.items())
        self.names = frozenset(fields_) if plain else frozenset()
        self.by_keys: dict[frozenset, Schema] = {}


_narrowings: dict[Schema, _Narrowing] = {}


def narrowed(schema: Schema, body) -> Schema:
    """`schema` loading only the top-level fields `body` has, and the required and defaulted ones.

    marshmallow visits every declared field on every load, present or not: the chat completions
    schema declares 39 (so that a field flowcall ignores is not an unknown one) where a body names
    two to five. The narrowed schema has copies of the same fields and the same schema validators, so
    a body loads to the same data or fails with the same errors. Bodies naming anything else (an
    unknown field) load with `schema` itself, which reports it. Kept per schema and bounded: once a
    schema has NARROWED_PER_SCHEMA key sets, other key sets load with the whole schema (as they all
    did before), so no body can make another pay for building schemas."""
    if not isinstance(body, dict):
        return schema
    narrowing = _narrowings.get(schema)
    if narrowing is None:
        if (len(_narrowings) >= _NARROWED_SCHEMAS or schema.only is not None or schema.exclude or schema.partial
                or schema.many or schema.load_only or schema.dump_only or schema.unknown != type(schema).opts.unknown):
            return schema
        narrowing = _narrowings.setdefault(schema, _Narrowing(schema))
    keys = frozenset(body)
    found = narrowing.by_keys.get(keys)
    if found is not None:
        return found
    if not keys <= narrowing.names or len(narrowing.by_keys) >= NARROWED_PER_SCHEMA:
        return schema
    return narrowing.by_keys.setdefault(keys, type(schema)(only=keys | narrowing.always))


def content_parts(content, where: str, max_image_bytes: int) -> tuple:
    if isinstance(content, str):
        return (TextPart(content),)
    parts = []
    for i, p in enumerate(content):
        if p["type"] == "text":
            parts.append(TextPart(p["text"]))
            continue
        url = p["image_url"]["url"].strip()
        field = f"{where}.{i}.image_url.url"
        if url.startswith("data:"):
            mime, raw = decode_data_uri(url, max_image_bytes, where=field)
            url = to_data_uri(mime, raw) if not url.startswith(f"data:{mime};base64,") else url
        elif not re.match(r"^https?://[^\s/]+", url, re.I) or len(url) > 8192:
            raise ImageRejected("Image URLs must be http(s) URLs or data:image/...;base64 URIs.",
                                fields={field: "not an http(s) or data URI"})
        parts.append(ImagePart(url, p["image_url"].get("detail")))
    return tuple(parts)


def call_from_body(data: dict, *, request_id: str | None = None, tenant_id: str | None = None,
                   agent_id: str | None = None, key_id: str | None = None,
                   max_image_bytes: int = 20 * 1024 * 1024) -> Call:
    """A validated body -> the internal Call. `messages` then `prompt` (the new user turn)."""
    messages, where = [], []
    for i, m in enumerate(data.get("messages") or []):
        role = "system" if m["role"] == "developer" else m["role"]
        content = m.get("content")
        parts = content_parts(content, f"messages.{i}.content", max_image_bytes) if content is not None else ()
        if role != "user" and any(isinstance(p, ImagePart) for p in parts):
            raise ValidationError("Images go in user messages.",
                                  fields={f"messages.{i}.content": "images only in user messages"})
        if role == "assistant" and m.get("tool_calls"):
            parts = tooling.assistant_parts(m, parts, f"messages.{i}")
        elif role == "tool":
            parts = (tooling.tool_result(m, Message(role, parts).text, f"messages.{i}"),)
        messages.append(Message(role, parts))
        where.append(f"messages.{i}")
    prompt = data.get("prompt") or data.get("query")
    if prompt:
        messages.append(Message("user", (TextPart(prompt),)))
        where.append("prompt")
    if not any(m.role == "user" for m in messages):
        raise ValidationError("The conversation needs at least one user message (or a prompt).",
                              fields={"messages": "no user message"})
    tool_list = tuple(data.get("tools") or ())
    tool_choice = data.get("tool_choice")
    messages = tooling.check_conversation(messages, tool_list, tool_choice, where)
    opts = data.get("options") or {}
    options = Options(temperature=opts.get("temperature"),
                      max_tokens=opts.get("maxTokens", DEFAULT_MAX_TOKENS),
                      max_tokens_set=opts.get("maxTokens") is not None,
                      stop=tuple(opts.get("stop") or ()), timeout_ms=opts.get("timeoutMs"),
                      reasoning_effort=opts.get("reasoningEffort"))
    fmt = None
    rf = data.get("response_format")
    if rf and rf["type"] == "json_object":
        fmt = ResponseFormat("json_object")
    elif rf and rf["type"] == "json_schema":
        spec = rf["json_schema"]
        fmt = ResponseFormat("json_schema", name=spec.get("name", "response"), schema=spec["schema"],
                             strict=bool(spec.get("strict", False)))
    return Call(messages=tuple(messages), model=data["model"], options=options, response_format=fmt,
                task=(data.get("context") or {}).get("task"), fallbacks=tuple(data.get("fallbacks") or ()),
                tools=tool_list, tool_choice=tool_choice, parallel_tool_calls=data.get("parallel_tool_calls"),
                tenant_id=tenant_id, agent_id=agent_id, key_id=key_id, request_id=request_id)
