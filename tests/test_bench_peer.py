"""The bench's pure parts that no smoke run exercises: the LiteLLM peer's config and comparison
lines (the peer itself needs a network install, so it is never started here), and the fake
provider's streamed and tool-calling answers, which must look like OpenAI's for the comparison to hold."""
from __future__ import annotations

import json

import pytest

from bench import fake_provider, peer

FAKE = "http://127.0.0.1:9999"


def test_litellm_config_points_every_model_at_the_fake_and_needs_no_database():
    cfg = peer.litellm_config(FAKE, master_key="sk-master")
    models = {m["model_name"]: m["litellm_params"] for m in cfg["model_list"]}
    assert set(models) == set(peer.MODELS)
    for name, params in models.items():
        assert params["model"] == f"openai/{name}"
        assert params["api_base"] == f"{FAKE}/openai/v1"
    assert cfg["general_settings"]["master_key"] == "sk-master"
    assert "database_url" not in cfg["general_settings"]
    assert cfg["litellm_settings"]["callbacks"] == [] and cfg["litellm_settings"]["success_callback"] == []
    assert json.loads(json.dumps(cfg)) == cfg          # written as JSON, which LiteLLM's YAML loader reads


@pytest.mark.parametrize("version", sorted(peer.COMPROMISED))
def test_compromised_litellm_releases_are_refused(version, tmp_path):
    with pytest.raises(SystemExit, match="compromised"):
        peer.install(version, root=tmp_path)
    assert not any(tmp_path.iterdir())                 # refused before anything was made
    assert peer.LITELLM_VERSION not in peer.COMPROMISED


def test_peer_routes_are_the_fake_paths_without_its_prefix():
    assert peer.route_for("/openai/v1/chat/completions") == "/v1/chat/completions"
    assert peer.route_for("/openai/v1/embeddings") == "/v1/embeddings"
    assert peer.route_for("/v1/other") == "/v1/other"


def _side(rps, cpu, rss, errors=0):
    return {"rps": rps, "errors": errors, "cpu_ms_per_request": cpu, "peak_rss_mb": rss, "peak_pss_mb": rss - 10}


def _scenario(gateway, peer_side, added, peer_added, **extra):
    g = {"rps": gateway["rps"], "errors": gateway["errors"], "gunicorn": gateway}
    p = {"rps": peer_side["rps"], "errors": peer_side["errors"], "server": peer_side}
    scn = {"gateway": g, "peer": p, "added_ms": {"p50": added[0], "p99": added[1]},
           "peer_added_ms": {"p50": peer_added[0], "p99": peer_added[1]}, **extra}
    scn["vs_peer"] = peer.compare(scn)
    return scn


def test_comparison_gives_ratios_and_prints_n_a_with_its_reason():
    chat = _scenario(_side(1400.0, 1.1, 230.0), _side(200.0, 9.9, 1300.0), (30.0, 80.0), (240.0, 400.0))
    stream = _scenario(_side(100.0, 2.0, 231.0), _side(100.0, 12.0, 1310.0), (1.5, 9.0), (20.0, 90.0),
                       added_ttft_ms={"p50": 1.2}, peer_added_ttft_ms={"p50": 18.0})
    c = chat["vs_peer"]
    assert c["rps"] == {"flowcall": 1400.0, "peer": 200.0, "ratio": 7.0}
    assert c["cpu_ms_per_request"]["ratio"] == 9.0            # the peer's CPU per call ÷ flowcall's
    assert c["added_p99_ms"] == {"flowcall": 80.0, "peer": 400.0}
    assert c["peak_rss_mb"] == {"flowcall": 230.0, "peer": 1300.0}
    assert stream["vs_peer"]["added_ttft_p50_ms"] == {"flowcall": 1.2, "peer": 18.0}

    lines = peer.comparison_lines("litellm", {"f_chat": chat, "g_stream": stream, "a_rate": {"gateway": {}},
                                              "i_responses": {"peer": {"na": "no Responses route here"}}})
    assert lines[0].startswith("flowcall vs litellm")
    assert len(lines) == 4                                     # a_rate (no peer phase) is left out
    assert "f_chat" in lines[1] and "(x7.0)" in lines[1] and "1400.0 vs 200.0" in lines[1]
    assert "added first token p50 1.2 vs 18.0 ms" in lines[2]
    assert lines[3].split() == ["i_responses", "n/a:", "no", "Responses", "route", "here"]


def _events(groups):
    return [e for group in groups for e in group]


def _data(event: bytes):
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    raw = event[len(b"data: "):-2]
    return raw.decode() if raw == b"[DONE]" else json.loads(raw)


def test_fake_streams_chat_completion_chunks_as_openai_does():
    body = {"model": "gpt-4o", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": "Hello there"}]}
    groups = fake_provider.openai_stream_events(body)
    events = [_data(e) for e in _events(groups)]
    assert events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": "", "refusal": None}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == "Echo: Hello there"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] == 19
    assert len(groups[0]) == 2                     # the role chunk leaves with the first word
    assert len(groups) == 3                        # then one group a word: "Echo: ", "Hello ", "there"

    pieces = fake_provider.stream_pieces(groups, keep_alive=True)
    assert pieces[0].startswith(b"HTTP/1.1 200 OK\r\n") and b"Transfer-Encoding: chunked" in pieces[0]
    assert pieces[-1].endswith(b"0\r\n\r\n") and len(pieces) == len(groups)


def test_fake_calls_the_first_tool_until_it_has_a_result():
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
    asked = {"model": "gpt-4o", "tools": [tool], "messages": [{"role": "user", "content": "Weather?"}]}
    message = fake_provider.openai_answer(asked)["choices"][0]
    assert message["finish_reason"] == "tool_calls"
    call = message["message"]["tool_calls"][0]
    assert call["function"]["name"] == "get_weather"
    assert json.loads(call["function"]["arguments"]) == {"city": "example"}

    answered = {**asked, "messages": asked["messages"] + [
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": call["id"], "content": "sunny"}]}
    assert fake_provider.openai_answer(answered)["choices"][0]["finish_reason"] == "stop"
    assert fake_provider.openai_answer({**asked, "tool_choice": "none"})["choices"][0]["finish_reason"] == "stop"

    streamed = [_data(e) for e in _events(fake_provider.openai_stream_events({**asked, "stream": True}))]
    first = streamed[0]["choices"][0]["delta"]["tool_calls"][0]
    assert first["id"] == call["id"] and first["function"] == {"name": "get_weather", "arguments": ""}
    assert streamed[-2]["choices"][0]["finish_reason"] == "tool_calls"
