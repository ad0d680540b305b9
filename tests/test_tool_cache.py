"""The per-process cache of checked tool lists (app/tool_cache.py): a hit answers what checking the
same JSON would, distinct lists never share an entry, the bounds hold, and nothing a caller or later
code holds can change a kept entry."""
import copy

import pytest
from marshmallow import ValidationError as MarshmallowError

from app import tool_cache
from app import tools as tooling
from app.calls import Tool

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city", "strict": True,
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                   "additionalProperties": False}}}


def weather(**changes) -> dict:
    tool = copy.deepcopy(WEATHER)
    tool["function"]["parameters"].update(changes)
    return tool


@pytest.fixture(autouse=True)
def empty_cache():
    tool_cache.clear()
    yield
    tool_cache.clear()


def load(tools):
    return tooling.ToolsField().deserialize(tools)


def test_a_resent_list_is_answered_from_the_cache_with_what_checking_it_gives(monkeypatch):
    checked = load([copy.deepcopy(WEATHER)])
    assert len(tool_cache.MEMO.keys()) == 1

    def unchecked(_item):
        raise AssertionError("checked again")
    monkeypatch.setattr(tooling, "_tool", unchecked)
    again = load([copy.deepcopy(WEATHER)])
    assert again == checked
    assert again == (Tool("get_weather", "Current weather in a city",
                          {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"],
                           "additionalProperties": False}, True),)


def test_the_cached_form_is_the_checked_form_not_the_input():
    sent = {"name": "lookup", "description": "", "parameters": {
        "$schema": "http://json-schema.org/draft-07/schema#", "type": "object",
        "properties": {"q": {"type": "string"}}}}
    first = load([sent])
    second = load([copy.deepcopy(sent)])
    assert first == second
    assert second[0].description is None and "$schema" not in second[0].parameters


def test_lists_that_differ_anywhere_do_not_share_an_entry():
    base = load([weather()])
    loose = load([weather(additionalProperties=True)])
    renamed = load([{"type": "function", "function": {**WEATHER["function"], "name": "get_forecast"}}])
    two = load([weather(), {"name": "other"}])
    assert loose[0].parameters["additionalProperties"] is True
    assert base[0].parameters["additionalProperties"] is False
    assert renamed[0].name == "get_forecast" and base[0].name == "get_weather"
    assert [t.name for t in two] == ["get_weather", "other"]
    assert len(tool_cache.MEMO.keys()) == 4
    assert load([weather()]) == base


def test_a_refused_list_is_not_kept_and_is_refused_every_time():
    bad = [weather(type="array")]
    for _ in range(2):
        with pytest.raises(MarshmallowError):
            load(copy.deepcopy(bad))
    assert not tool_cache.MEMO.keys()


def test_changing_the_request_body_or_an_answer_cannot_change_the_next_hit():
    sent = [copy.deepcopy(WEATHER)]
    first = load(sent)
    sent[0]["function"]["parameters"]["properties"]["city"]["type"] = "integer"     # the caller's body
    first[0].parameters["properties"]["city"]["type"] = "boolean"                    # code downstream
    hit = load([copy.deepcopy(WEATHER)])
    assert hit[0].parameters["properties"]["city"] == {"type": "string"}
    hit[0].parameters["required"].append("country")
    assert load([copy.deepcopy(WEATHER)])[0].parameters["required"] == ["city"]


def test_the_entry_and_character_bounds_hold(monkeypatch):
    monkeypatch.setattr(tool_cache.MEMO, "max_entries", 5)
    for n in range(20):
        load([weather(description=f"variant {n}")])
    assert len(tool_cache.MEMO.keys()) == 5
    assert tool_cache.MEMO.chars == sum(len(k) + len(v) for k, v in tool_cache.MEMO._entries.items())
    newest = load([weather(description="variant 19")])                    # kept: the most recent
    assert newest[0].parameters["description"] == "variant 19"

    tool_cache.clear()
    monkeypatch.setattr(tool_cache.MEMO, "max_entries", 1000)
    load([weather(description="variant 00")])
    one_entry = tool_cache.MEMO.chars                      # every variant below is the same size
    monkeypatch.setattr(tool_cache.MEMO, "max_chars", one_entry * 3 + one_entry // 2)
    for n in range(10, 40):
        load([weather(description=f"variant {n}")])
    assert 0 < tool_cache.MEMO.chars <= tool_cache.MEMO.max_chars
    assert len(tool_cache.MEMO.keys()) == 3


def test_a_list_larger_than_an_entry_may_be_is_checked_and_not_kept(monkeypatch):
    monkeypatch.setattr(tool_cache, "MAX_ENTRY_CHARS", 100)
    tools = load([weather(description="x" * 200)])
    assert tools[0].parameters["description"] == "x" * 200
    assert not tool_cache.MEMO.keys()


def test_the_least_recently_used_list_goes_first(monkeypatch):
    monkeypatch.setattr(tool_cache.MEMO, "max_entries", 2)
    a, b, c = (weather(description=d) for d in "abc")
    load([a])
    load([b])
    load([copy.deepcopy(a)])              # a used again: b is now the oldest
    load([c])
    kept = tool_cache.MEMO.keys()
    assert kept == [tool_cache.key_of([a]), tool_cache.key_of([c])]


