"""Tool calling end to end: the official `openai` package (as n8n's AI Agent and LangChain use it) and
the node endpoint against flowcall under gunicorn, with a local fake provider that answers with the
providers' recorded tool-call answers (../shared/specs/fixtures). Asserted: what the client gets,
streamed and not; what each provider receives; the ledger; idempotency; 400s that pay no provider.
"""
from __future__ import annotations

import json

import openai
import pytest
import requests
import yaml

from service import SDK_ENV, e2e_service, openai_client, received, script, usage_totals
from specs import fixture_file

pytestmark = pytest.mark.e2e
N8N_FIRST = json.loads(fixture_file("n8n/agent_calc_chat13_noresp_chat_1_tool_call.json").read_text())
CALCULATOR = N8N_FIRST["request"]["body"]["tools"]          # with n8n's $schema and additionalProperties
QUESTION = N8N_FIRST["request"]["body"]["messages"][0]["content"]


def _recorded(path: str, pick) -> dict:
    return next(pick(i) for i in yaml.safe_load(fixture_file(path).read_text())["interactions"] if pick(i))


ANTHROPIC_ANSWER = _recorded("test_anthropic/test_anthropic_text_output_function.yaml",
                             lambda i: i["response"]["parsed_body"] if i["response"]["parsed_body"]["stop_reason"]
                             == "tool_use" else None)
GEMINI_ANSWER = _recorded("test_google/test_thinking_with_tool_calls_from_other_model.yaml",
                          lambda i: i["response"]["parsed_body"] if "gemini-3" in i["request"]["uri"] else None)
ANTHROPIC_FINAL = _recorded("test_anthropic/test_anthropic_text_output_function.yaml",
                            lambda i: i["response"]["parsed_body"] if i["response"]["parsed_body"]["stop_reason"]
                            == "end_turn" else None)
GEMINI_FINAL = {"candidates": [{"content": {"parts": [{"text": "Mexico City."}], "role": "model"},
                                "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 120, "candidatesTokenCount": 4, "totalTokenCount": 124},
                "modelVersion": "gemini-3-pro-preview"}
FINALS = {"openai": json.loads(fixture_file("n8n/agent_calc_chat13_noresp_chat_2_tool_result.json").read_text())[
    "answer_given"], "anthropic": ANTHROPIC_FINAL, "gemini": GEMINI_FINAL}
GEMINI_SIGNATURE = GEMINI_ANSWER["candidates"][0]["content"]["parts"][0]["thoughtSignature"]
FINAL_RESULT = [{"type": "function", "function": {"name": "final_result", "description": "The final answer",
                                                  "parameters": {"type": "object", "properties": {
                                                      "city": {"type": "string"}, "country": {"type": "string"}},
                                                      "required": ["city", "country"]}}}]
COUNTRY = [{"type": "function", "function": {"name": "get_user_country", "description": "",
                                             "parameters": {"type": "object", "properties": {},
                                                            "additionalProperties": False}}}]
N8N_STREAMED = json.loads(fixture_file("n8n/agent_stream_webhook_chat_1_tool_call.json").read_text())
OPENAI_SSE = "".join(f"data: {json.dumps(e)}\n\n" for e in N8N_STREAMED["answer_given"]["sse"]) + "data: [DONE]\n\n"
GEMINI_STREAM = yaml.safe_load(fixture_file("test_google/test_google_streaming_tool_call_thought_signature.yaml")
                               .read_text())["interactions"][0]["response"]["body"]["string"]
GEMINI_STREAM_SIGNATURE = json.loads(GEMINI_STREAM.split("\r\n")[0][len("data: "):])[
    "candidates"][0]["content"]["parts"][0]["thoughtSignature"]
GET_COUNTRY = [{"type": "function", "function": {"name": "get_country", "description": "",
                                                 "parameters": {"type": "object", "properties": {}}}}]
# Streamed first turns: (tools, script for the fake, the call the client must see, the signature to keep).
# Anthropic's is the fake's own tool_use stream (tests/fake_provider.py), no script.
STREAMED = {
    "openai": (CALCULATOR, [{"sse_raw": OPENAI_SSE}], ("Calculator", {"input": "12 * 7"}), None),
    "anthropic": (COUNTRY, [], ("get_user_country", {}), None),
    "gemini": (GET_COUNTRY, [{"sse_raw": GEMINI_STREAM}], ("get_country", {}), GEMINI_STREAM_SIGNATURE),
}
# (model, tools, the provider's recorded answer, the call the client must see)
FAMILIES = {
    "openai": ("openai.gpt-4o", CALCULATOR, N8N_FIRST["answer_given"], ("Calculator", {"input": "12 * 7"})),
    "anthropic": ("anthropic.claude-sonnet-4-6", COUNTRY, ANTHROPIC_ANSWER, ("get_user_country", {})),
    "gemini": ("google.gemini-3.1-pro-preview", FINAL_RESULT, GEMINI_ANSWER,
               ("final_result", {"city": "Mexico City", "country": "Mexico"})),
}


@pytest.fixture(scope="module")
def service(fake, tmp_path_factory):
    with e2e_service(tmp_path_factory.mktemp("e2e-tools"), fake, extra_env=SDK_ENV,
                     target="tests.wsgi_compat:app") as svc:
        yield svc


@pytest.fixture
def client(service):
    with openai_client(service) as sdk:
        yield sdk


def streamed_message(chunks) -> tuple[str, list[dict], list[str]]:
    """(content, tool calls, finish reasons) reassembled from chunks the way the SDKs do."""
    text, calls, finishes = "", {}, []
    for c in chunks:
        if not c.choices:
            continue
        delta = c.choices[0].delta
        text += delta.content or ""
        for tc in delta.tool_calls or ():
            slot = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            slot["id"] += tc.id or ""
            slot["name"] += (tc.function.name or "") if tc.function else ""
            slot["arguments"] += (tc.function.arguments or "") if tc.function else ""
        if c.choices[0].finish_reason:
            finishes.append(c.choices[0].finish_reason)
    return text, [calls[i] for i in sorted(calls)], finishes


def native_tools_sent(family: str, body: dict) -> list[str]:
    if family == "openai":
        assert "$schema" not in json.dumps(body["tools"])
        return [t["function"]["name"] for t in body["tools"]]
    if family == "anthropic":
        return [t["name"] for t in body["tools"]]
    return [d["name"] for d in body["tools"][0]["functionDeclarations"]]


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("stream", [False, True])
def test_tool_loop_through_the_openai_sdk(client, fake, service, family, stream):
    model, tools, answer, (name, arguments) = FAMILIES[family]
    signature = GEMINI_SIGNATURE if family == "gemini" else None
    messages = [{"role": "user", "content": QUESTION}]
    if stream:
        tools, steps, (name, arguments), signature = STREAMED[family]
        script(fake, steps)
    else:
        script(fake, [{"status": 200, "body": answer}])
    before = usage_totals(service)
    if stream:
        chunks = list(client.chat.completions.create(model=model, messages=messages, tools=tools, stream=True,
                                                     stream_options={"include_usage": True}))
        text, calls, finishes = streamed_message(chunks)
        assert finishes == ["tool_calls"] and chunks[-1].usage.total_tokens > 0
        call = calls[0]
    else:
        completion = client.chat.completions.create(model=model, messages=messages, tools=tools)
        choice = completion.choices[0]
        assert choice.finish_reason == "tool_calls"
        text = choice.message.content or ""
        tc = choice.message.tool_calls[0]
        call = {"id": tc.id, "name": tc.function.name, "arguments": tc.function.arguments}
    assert (call["name"], json.loads(call["arguments"])) == (name, arguments)
    [sent] = received(fake)
    assert native_tools_sent(family, sent["body"]) == [t["function"]["name"] for t in tools]
    if stream:      # the provider's own stream was asked for
        assert sent["body"].get("stream") is True or sent["path"].endswith(":streamGenerateContent?alt=sse")
    after = usage_totals(service)
    assert after["calls"] == before["calls"] + 1 and after["input_tokens"] > before["input_tokens"]

    # second turn: the call and its result go back as the SDK gives them; the provider answers in text
    script(fake, [{"status": 200, "body": FINALS[family]}])
    messages += [{"role": "assistant", "content": text or None, "tool_calls": [
                     {"id": call["id"], "type": "function",
                      "function": {"name": call["name"], "arguments": call["arguments"]}}]},
                 {"role": "tool", "tool_call_id": call["id"], "content": "84"}]
    if stream:
        text, calls, finishes = streamed_message(client.chat.completions.create(
            model=model, messages=messages, tools=tools, stream=True))
        assert finishes == ["stop"] and not calls and text
    else:
        final = client.chat.completions.create(model=model, messages=messages, tools=tools)
        assert final.choices[0].finish_reason == "stop" and not final.choices[0].message.tool_calls
    second = received(fake)[1]["body"]
    if family == "openai":
        assert second["messages"][1]["tool_calls"][0]["id"] == call["id"]
        assert second["messages"][2] == {"role": "tool", "tool_call_id": call["id"], "content": "84"}
    elif family == "anthropic":
        assert second["messages"][1]["content"][-1] == {"type": "tool_use", "id": call["id"], "name": name,
                                                        "input": arguments}
        assert second["messages"][2]["content"] == [{"type": "tool_result", "tool_use_id": call["id"],
                                                     "content": "84"}]
    else:
        part = second["contents"][1]["parts"][0]
        assert part["thoughtSignature"] == signature                   # kept through the call id
        assert part["functionCall"]["name"] == name and part["functionCall"]["args"] == arguments
        assert second["contents"][2]["parts"][0]["functionResponse"]["response"] == {"result": "84"}


def test_a_streamed_answer_reassembles_to_the_same_answer_whole(client, fake):
    """The recorded Gemini stream, and the same answer whole (its chunks merged): same ids (the
    signature folded in), names and arguments."""
    chunks = [json.loads(line[len("data: "):]) for line in GEMINI_STREAM.split("\r\n") if line.startswith("data: ")]
    whole_answer = {**chunks[-1], "candidates": [{**chunks[-1]["candidates"][0], "content": {
        "role": "model", "parts": [p for c in chunks for p in c["candidates"][0]["content"]["parts"]]}}]}
    script(fake, [{"sse_raw": GEMINI_STREAM}, {"status": 200, "body": whole_answer}])
    kwargs = dict(model="google.gemini-3.1-pro-preview", messages=[{"role": "user", "content": QUESTION}],
                  tools=GET_COUNTRY)
    _, calls, finishes = streamed_message(client.chat.completions.create(stream=True, **kwargs))
    whole = client.chat.completions.create(**kwargs).choices[0]
    assert finishes == [whole.finish_reason] == ["tool_calls"]
    assert [(c["id"], c["name"], c["arguments"]) for c in calls] == \
        [(c.id, c.function.name, c.function.arguments) for c in whole.message.tool_calls]


def test_idempotent_tool_call_is_replayed_not_rerun(client, fake):
    model, tools, answer, _ = FAMILIES["openai"]
    script(fake, [{"status": 200, "body": answer}])
    kwargs = dict(model=model, messages=[{"role": "user", "content": QUESTION}], tools=tools,
                  extra_headers={"Idempotency-Key": "tools-idem-1"})
    first = client.chat.completions.create(**kwargs)
    again = client.chat.completions.create(**kwargs)
    assert again.choices[0].message.tool_calls == first.choices[0].message.tool_calls
    assert len(received(fake)) == 1


@pytest.mark.parametrize("messages, param", [
    ([{"role": "user", "content": QUESTION}, {"role": "tool", "tool_call_id": "call_nowhere", "content": "84"}],
     "messages.1.tool_call_id"),
    ([{"role": "user", "content": QUESTION}, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "Calculator", "arguments": "{12 * 7"}}]},
      {"role": "tool", "tool_call_id": "call_1", "content": "84"}], "messages.1.tool_calls.0.arguments"),
])
def test_malformed_tool_conversations_pay_no_provider(client, fake, service, messages, param):
    before = usage_totals(service)
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="openai.gpt-4o", messages=messages, tools=CALCULATOR)
    assert info.value.body["param"] == param
    assert received(fake) == []
    assert usage_totals(service)["cost"] == before["cost"]


def test_a_model_without_tools_is_refused_and_fallbacks_skip_it(client, fake):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="perplexity.sonar-pro", tools=CALCULATOR,
                                       messages=[{"role": "user", "content": QUESTION}])
    assert info.value.body["param"] == "model" and received(fake) == []
    script(fake, [{"status": 503, "body": {"error": {"message": "overloaded", "type": "server_error"}}},
                  {"status": 503, "body": {"error": {"message": "overloaded", "type": "server_error"}}},
                  {"status": 503, "body": {"error": {"message": "overloaded", "type": "server_error"}}},
                  {"status": 200, "body": ANTHROPIC_ANSWER}])
    completion = client.chat.completions.create(
        model="openai.gpt-4o", tools=COUNTRY, messages=[{"role": "user", "content": QUESTION}],
        extra_body={"fallbacks": ["perplexity.sonar-pro", "anthropic.claude-sonnet-4-6"]})
    assert completion.model == "anthropic.claude-sonnet-4-6"
    assert completion.choices[0].message.tool_calls[0].function.name == "get_user_country"
    assert not any(r["path"].startswith("/pplx") for r in received(fake))


def test_node_endpoint_runs_a_dry_tool_loop_on_mock_echo(service, fake):
    url, headers = f"{service['url']}/api/v3/llm/public/call", {"X-Api-Key": service["key"]}
    tool = {"name": "Calculator", "parameters": {"type": "object", "properties": {"input": {"type": "string"}},
                                                 "required": ["input"]}}
    body = {"model": "mock.echo", "messages": [{"role": "user", "content": QUESTION}], "tools": [tool]}
    first = requests.post(url, json=body, headers=headers, timeout=30).json()
    assert first["finish_reason"] == "tool_calls" and first["response"] == ""
    assert first["tool_calls"] == [{"id": "call_mock_0", "name": "Calculator", "arguments": {"input": "example"}}]
    body["messages"] += [{"role": "assistant", "content": None, "tool_calls": first["tool_calls"]},
                         {"role": "tool", "tool_call_id": "call_mock_0", "content": "84"}]
    final = requests.post(url, json=body, headers=headers, timeout=30).json()
    assert final["finish_reason"] == "stop" and final["response"] == "84" and final["tool_calls"] == []
    body["messages"][-1]["tool_call_id"] = "call_unknown"
    bad = requests.post(url, json=body, headers=headers, timeout=30)
    assert bad.status_code == 400 and "messages.2.tool_call_id" in bad.json()["error"]["fields"]
