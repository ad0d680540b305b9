"""The CreateChatCompletionRequest body as flowcall validates it: the fields it honours with their
bounds, and the fields it ignores or refuses (declared too, so that only fields OpenAI does not have
are unknown). What each field then does is the table in app/openai_api/chat_completions.py.
"""
from __future__ import annotations

from marshmallow import RAISE, Schema, fields, validate, validates_schema
from marshmallow import ValidationError as MarshmallowError

from app import reasoning, tool_ids
from app import tools as tooling
from app.schemas import (MAX_FALLBACKS, MAX_STOP_SEQUENCES, Content, JsonSchemaSpec, Number, PartSchema,
                      ResponseFormatSchema, StrictString, WholeNumber, load)

IGNORED = frozenset({"user", "metadata", "store", "seed", "service_tier", "prompt_cache_key",
                     "prompt_cache_options", "prompt_cache_retention", "safety_identifier"})
# Ignored with a warning unless the value is one of these (None: the field was sent as null).
IGNORED_UNLESS = {"top_p": (None, 1), "presence_penalty": (None, 0), "frequency_penalty": (None, 0),
                  "logit_bias": (None, {}), "verbosity": (None,),
                  "prediction": (None,), "moderation": (None,)}
_NO_FUNCTIONS = ("functions and function_call are OpenAI's deprecated function calling; send tools and "
                 "tool_choice (and tool_calls / role tool messages) instead.")
# Rejected unless the value is one of these; the message says why.
REJECTED_UNLESS = {
    "functions": ((None, []), _NO_FUNCTIONS), "function_call": ((None, "none", "auto"), _NO_FUNCTIONS),
    "n": ((None, 1), "flowcall returns one choice per call: n must be 1."),
    "logprobs": ((None, False), "flowcall does not return log probabilities."),
    "top_logprobs": ((None, 0), "flowcall does not return log probabilities."),
    "audio": ((None,), "flowcall answers with text only."),
    "modalities": ((None, ["text"]), "flowcall answers with text only: modalities must be [\"text\"]."),
    "web_search_options": ((None,), "flowcall does not add web search; use a perplexity.* model for answers "
                                    "with search."),
}


class CompatPartSchema(PartSchema):
    prompt_cache_breakpoint = fields.Raw(allow_none=True)   # a caching hint: accepted, not forwarded


class MessageContent(Content):
    """A string, or a non-empty list of text / image_url parts (OpenAI's part may carry a cache hint)."""
    part_schema = CompatPartSchema()

    def clean(self, part: dict) -> dict:
        part.pop("prompt_cache_breakpoint", None)
        return part


class ChatMessageSchema(Schema):
    class Meta:
        unknown = RAISE
    role = StrictString(required=True)
    content = MessageContent(allow_none=True)
    name = StrictString()                                   # ignored
    refusal = StrictString(allow_none=True)                 # ignored: the previous answer's refusal
    tool_calls = tooling.ToolCallsField(allow_none=True)
    function_call = fields.Raw(allow_none=True)
    audio = fields.Raw(allow_none=True)
    tool_call_id = StrictString(allow_none=True, validate=validate.Length(min=1, max=tool_ids.MAX_ID_CHARS))

    @validates_schema
    def _supported(self, data, **kwargs):
        role = data.get("role")
        if role == "function":
            raise MarshmallowError({"role": [f"'function' messages are not supported: {_NO_FUNCTIONS}"]})
        if role not in ("system", "developer", "user", "assistant", "tool"):
            raise MarshmallowError({"role": ["Must be one of: system, developer, user, assistant, tool."]})
        if data.get("function_call"):
            raise MarshmallowError({"function_call": [_NO_FUNCTIONS]})
        if data.get("tool_calls") and role != "assistant":
            raise MarshmallowError({"tool_calls": ["Only an assistant message carries tool_calls."]})
        if role == "tool" and not data.get("tool_call_id"):
            raise MarshmallowError({"tool_call_id": ["Required for a tool message: the id of the call it answers."]})
        if role != "tool" and data.get("tool_call_id") is not None:
            raise MarshmallowError({"tool_call_id": ["Only a tool message carries tool_call_id."]})
        if data.get("audio") is not None:
            raise MarshmallowError({"audio": ["flowcall takes text and images only."]})
        if data.get("content") is None and role != "assistant":
            raise MarshmallowError({"content": ["Required (only an assistant message may omit it)."]})


_PLAIN_ROLES = frozenset({"system", "developer", "user", "assistant"})
_TOOL_CALLS = tooling.ToolCallsField()


def _plain_message(message):
    """The loaded form of a message in one of the shapes nearly every request carries (a role and
    string content; a tool result; an assistant's tool calls) when it is valid, else None. Loading
    these through ChatMessageSchema costs a marshmallow pass over its eight fields each (a tool
    round trip sends three messages where a chat sends one); anything else, and every invalid
    message, still goes through the schema, so what is accepted and every error are unchanged."""
    if not isinstance(message, dict):
        return None
    role, content = message.get("role"), message.get("content")
    if len(message) == 2 and role in _PLAIN_ROLES and isinstance(content, str):
        return {"role": role, "content": content}
    if role == "tool" and len(message) == 3 and isinstance(content, str):
        call_id = message.get("tool_call_id")
        if isinstance(call_id, str) and 0 < len(call_id) <= tool_ids.MAX_ID_CHARS:
            return {"role": role, "content": content, "tool_call_id": call_id}
        return None
    if role == "assistant" and isinstance(message.get("tool_calls"), list) \
            and message.keys() <= {"role", "content", "tool_calls"} and (content is None or isinstance(content, str)):
        try:
            calls = _TOOL_CALLS.deserialize(message["tool_calls"])
        except MarshmallowError:
            return None
        return {"role": role, **({"content": content} if "content" in message else {}), "tool_calls": calls}
    return None


class ChatMessages(fields.List):
    """`messages`: the common valid shapes loaded directly (_plain_message), the rest by ChatMessageSchema."""

    def __init__(self, **kwargs):
        super().__init__(fields.Nested(ChatMessageSchema), **kwargs)

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            return super()._deserialize(value, attr, data, **kwargs)
        plain = [_plain_message(m) for m in value]
        if None not in plain:
            return plain
        loaded, errors = [], {}
        for i, (message, fast) in enumerate(zip(value, plain, strict=True)):
            if fast is not None:
                loaded.append(fast)
                continue
            try:
                loaded.append(self.inner.deserialize(message, **kwargs))
            except MarshmallowError as err:
                if err.valid_data is not None:
                    loaded.append(err.valid_data)
                errors[i] = err.messages
        if errors:
            raise MarshmallowError(errors, valid_data=loaded)
        return loaded


class Stop(fields.Field):
    """OpenAI's `stop`: one string or a list of them; empty strings say nothing and are dropped."""

    def _deserialize(self, value, attr, data, **kwargs):
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
            raise MarshmallowError("Must be a string or a list of strings.")
        items = [s for s in items if s]
        if len(items) > MAX_STOP_SEQUENCES:
            raise MarshmallowError(f"At most {MAX_STOP_SEQUENCES} stop sequences.")
        if any(len(s) > 500 for s in items):
            raise MarshmallowError("Each stop sequence may have at most 500 characters.")
        return items


class StreamOptionsSchema(Schema):
    class Meta:
        unknown = RAISE
    include_usage = fields.Boolean(allow_none=True, truthy={True}, falsy={False})
    include_obfuscation = fields.Boolean(allow_none=True, truthy={True}, falsy={False})


class CompatJsonSchemaSpec(JsonSchemaSpec):
    description = StrictString(allow_none=True)
    strict = fields.Boolean(allow_none=True, truthy={True}, falsy={False})


class CompatResponseFormatSchema(ResponseFormatSchema):
    json_schema = fields.Nested(CompatJsonSchemaSpec)


class FlowcallOptionsSchema(Schema):
    class Meta:
        unknown = RAISE
    task = StrictString(validate=validate.Length(min=1, max=64))
    timeoutMs = WholeNumber(validate=validate.Range(min=100, max=3_600_000))


class _HonouredFields(Schema):
    class Meta:
        unknown = RAISE
    model = StrictString(required=True, validate=validate.Length(min=1, max=200))
    messages = ChatMessages(required=True, validate=validate.Length(min=1))
    temperature = Number(allow_none=True, validate=validate.Range(min=0, max=2))
    max_tokens = WholeNumber(allow_none=True, validate=validate.Range(min=1, max=1_000_000))
    max_completion_tokens = WholeNumber(allow_none=True, validate=validate.Range(min=1, max=1_000_000))
    stop = Stop(allow_none=True)
    stream = fields.Boolean(allow_none=True, truthy={True}, falsy={False})
    stream_options = fields.Nested(StreamOptionsSchema, allow_none=True)
    response_format = fields.Nested(CompatResponseFormatSchema, allow_none=True)
    fallbacks = fields.List(StrictString(validate=validate.Length(min=1, max=200)),
                            validate=validate.Length(max=MAX_FALLBACKS), allow_none=True)
    flowcall = fields.Nested(FlowcallOptionsSchema, allow_none=True)
    tools = tooling.ToolsField(allow_none=True)
    tool_choice = tooling.ToolChoiceField(allow_none=True)
    parallel_tool_calls = fields.Boolean(allow_none=True, truthy={True}, falsy={False})
    reasoning_effort = StrictString(allow_none=True,
                                    validate=validate.OneOf(reasoning.EFFORTS, error=reasoning.INVALID))


# The fields flowcall ignores or refuses are declared too (checked by _apply_policy), so that only
# fields OpenAI does not have are unknown.
ChatCompletionRequestSchema = type("ChatCompletionRequestSchema", (_HonouredFields,), {
    "__doc__": "POST /v1/chat/completions; the module docstring's table says what happens to each field.",
    **{name: fields.Raw(allow_none=True) for name in sorted({*IGNORED, *IGNORED_UNLESS, *REJECTED_UNLESS})}})


UNKNOWN_FIELD = "Unknown field: not an OpenAI Chat Completions field flowcall accepts."


_SCHEMA = ChatCompletionRequestSchema()      # built once: a marshmallow schema's construction copies every field


def load_request(body: dict) -> dict:
    """The body validated by its schema; errors are a 400 with dotted field paths. flowcall's hints
    are not given: they point at flowcall's own body (`task` -> "use context.task")."""
    return load(_SCHEMA, body, unknown_field=lambda path: UNKNOWN_FIELD)
