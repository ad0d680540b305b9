"""/v1/chat/completions messages: the common valid shapes are loaded without marshmallow
(chat_completions_schema._plain_message) and must come out exactly as ChatMessageSchema loads them;
everything else, and every error, stays the schema's."""
import copy

import pytest

from app.openai_api.chat_completions_schema import ChatMessageSchema, _plain_message, load_request

CALL = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
COMMON = [
    {"role": "user", "content": "hi"}, {"role": "system", "content": ""}, {"role": "developer", "content": "be brief"},
    {"role": "assistant", "content": "hello"}, {"role": "tool", "tool_call_id": "call_1", "content": "18 C"},
    {"role": "assistant", "content": None, "tool_calls": [CALL]}, {"role": "assistant", "tool_calls": [CALL]},
    {"role": "assistant", "content": "let me look", "tool_calls": [CALL, {**CALL, "id": "call_2"}]},
]


@pytest.mark.parametrize("message", COMMON)
def test_a_common_message_loads_as_the_schema_loads_it(message):
    assert _plain_message(copy.deepcopy(message)) == ChatMessageSchema().load(copy.deepcopy(message))


@pytest.mark.parametrize("message", [
    {"role": "user", "content": None}, {"role": "user", "content": 3}, {"role": "function", "content": "x"},
    {"role": "robot", "content": "x"}, {"role": "tool", "content": "x"},
    {"role": "tool", "tool_call_id": "", "content": "x"},
    {"role": "tool", "tool_call_id": "c", "content": "x", "name": "n"},
    {"role": "user", "content": "x", "tool_call_id": "c"},
    {"role": "user", "tool_calls": [CALL], "content": "x"}, {"role": "assistant", "tool_calls": [{"id": "c"}]},
    {"role": "assistant", "tool_calls": None}, {"role": "assistant", "content": 1, "tool_calls": [CALL]},
    {"role": "user", "content": [{"type": "text", "text": "x"}]}, ["user", "x"],
])
def test_any_other_message_is_left_to_the_schema(message):
    assert _plain_message(message) is None


def test_errors_keep_the_message_index_when_common_messages_come_first():
    from app.errors import ValidationError
    body = {"model": "openai.gpt-4o", "messages": [{"role": "user", "content": "hi"},
                                                   {"role": "tool", "content": "x"}]}
    with pytest.raises(ValidationError) as err:
        load_request(body)
    assert list(err.value.fields) == ["messages.1.tool_call_id"]
