"""A real n8n 1.123 as the client: its OpenAI node, OpenAI Chat Model and AI Agent against flowcall.

`../shared/tools/n8n/n8n.py` installs n8n (about 6 minutes, once per machine) and runs a workflow
headless with `n8n execute`. These tests skip, saying so, when that n8n is not installed. One
workflow runs every case at once (one n8n start, about a minute): for each of an OpenAI, an Anthropic
and a Gemini model behind flowcall,

- the OpenAI node v2.1 "Message a model" (Responses API),
- a Basic LLM Chain with the OpenAI Chat Model v1.3 at its defaults (Responses API on),
- the AI Agent v3 with the Calculator tool, the Chat Model v1.3 with the Responses API on, and off,

with one n8n credential of type OpenAI whose base URL is flowcall's `/v1`; then the guide's importable
agent workflow (docs/examples/n8n-flowcall-agent-workflow.json) as it ships. The provider behind flowcall
is tests/fake_provider.py in its tool-loop mode, which asks for the calculator and then reports the tool's result, so an
agent's answer holds 42 only if the whole loop went through flowcall and back on that provider's wire.
"""
from __future__ import annotations

import importlib.util
import json
import os

import pytest

from fake_provider import FakeProvider
from fake_tool_loop import SIGNATURE
from service import ROOT, e2e_service

pytestmark = pytest.mark.e2e
N8N_TOOL = ROOT.parent / "shared" / "tools" / "n8n" / "n8n.py"
MODELS = {"openai": "openai.gpt-4o", "anthropic": "anthropic.claude-sonnet-4-6", "gemini": "google.gemini-3.5-flash"}
QUESTION = "What is the capital of France?"
CREDENTIAL = {"openAiApi": {"id": "flowcallcred01", "name": "flowcall"}}


def _n8n():
    """The n8n tool module when n8n is installed, else a skip that says how to install it."""
    if not N8N_TOOL.exists():
        pytest.skip(f"{N8N_TOOL} is absent (it comes with ../shared)")
    spec = importlib.util.spec_from_file_location("n8n_tool", N8N_TOOL)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    if not os.path.exists(tool.BIN):
        pytest.skip(f"n8n is not installed at {tool.BIN}: run `python {N8N_TOOL} setup` (about 6 minutes)")
    return tool


def _node(name: str, kind: str, version: float, parameters: dict, credentials: bool = False) -> dict:
    node = {"id": name.lower().replace(" ", "-"), "name": name, "type": kind, "typeVersion": version,
            "position": [0, 0], "parameters": parameters}
    if kind != "n8n-nodes-base.manualTrigger":
        node["onError"] = "continueRegularOutput"      # one failing branch must not hide the others
    if credentials:
        node["credentials"] = CREDENTIAL
    return node


def chat_model(name: str, model: str, responses_api: bool | None) -> dict:
    """OpenAI Chat Model v1.3; `responses_api=None` leaves the option at its default (on)."""
    parameters = {"model": {"__rl": True, "mode": "id", "value": model}, "options": {}}
    if responses_api is not None:
        parameters["responsesApiEnabled"] = responses_api
    return _node(name, "@n8n/n8n-nodes-langchain.lmChatOpenAi", 1.3, parameters, credentials=True)


def workflow() -> dict:
    """Every case as a branch of one manually triggered workflow (importable into n8n as it is)."""
    nodes = [_node("Start", "n8n-nodes-base.manualTrigger", 1, {})]
    main, ai = [], {}
    for provider, model in MODELS.items():
        nodes.append(_node(f"OpenAI node {provider}", "@n8n/n8n-nodes-langchain.openAi", 2.1, {
            "resource": "text", "operation": "response",
            "modelId": {"__rl": True, "mode": "id", "value": model},
            "responses": {"values": [{"type": "text", "role": "user", "content": QUESTION}]},
            "simplify": True, "options": {}}, credentials=True))
        main.append(f"OpenAI node {provider}")
        nodes.append(_node(f"Chain {provider}", "@n8n/n8n-nodes-langchain.chainLlm", 1.7,
                           {"promptType": "define", "text": QUESTION}))
        nodes.append(chat_model(f"Model chain {provider}", model, None))
        main.append(f"Chain {provider}")
        ai[f"Model chain {provider}"] = ("ai_languageModel", f"Chain {provider}")
        for api, flag in (("responses", None), ("chat", False)):
            agent = f"Agent {api} {provider}"
            nodes.append(_node(agent, "@n8n/n8n-nodes-langchain.agent", 3,
                               {"promptType": "define", "text": "What is 6 times 7? Use the calculator.",
                                "options": {}}))
            nodes.append(chat_model(f"Model {api} {provider}", model, flag))
            # n8n names a tool after its node, and tool names are [A-Za-z0-9_-] on every provider
            nodes.append(_node(f"calculator_{api}_{provider}", "@n8n/n8n-nodes-langchain.toolCalculator", 1, {}))
            main.append(agent)
            ai[f"Model {api} {provider}"] = ("ai_languageModel", agent)
            ai[f"calculator_{api}_{provider}"] = ("ai_tool", agent)
    for i, node in enumerate(nodes):
        node["position"] = [300 * (i % 6), 200 * (i // 6)]
    connections = {"Start": {"main": [[{"node": n, "type": "main", "index": 0} for n in main]]}}
    for source, (kind, target) in ai.items():
        connections[source] = {kind: [[{"node": target, "type": kind, "index": 0}]]}
    return {"id": "flowcallAgents01", "name": "flowcall: OpenAI node, chain and agent", "active": False,
            "settings": {"executionOrder": "v1"}, "nodes": nodes, "connections": connections}


@pytest.fixture(scope="module")
def n8n_run(tmp_path_factory):
    tool = _n8n()
    tmp = tmp_path_factory.mktemp("n8n-real")
    with FakeProvider(tool_loop=True) as fake, e2e_service(tmp, fake) as svc:
        creds = tmp / "credentials.json"
        creds.write_text(json.dumps([{**CREDENTIAL["openAiApi"], "type": "openAiApi",
                                      "data": {"apiKey": svc["key"], "url": f"{svc['url']}/v1"}}]))
        tool.credentials(str(creds))
        flow = tmp / "workflow.json"
        flow.write_text(json.dumps(workflow()))
        rc, run_data, raw = tool.run(str(flow), workflow()["id"])
        guide = json.loads((ROOT / "docs" / "examples" / "n8n-flowcall-agent-workflow.json").read_text())
        guide["id"] = "flowcallGuide01"        # `n8n execute --id` needs one; an export may not carry it
        for node in guide["nodes"]:
            if "credentials" in node:
                node["credentials"] = CREDENTIAL
        guide_path = tmp / "guide.json"
        guide_path.write_text(json.dumps(guide))
        guide_rc, guide_runs, guide_raw = tool.run(str(guide_path), guide["id"])
        yield {"rc": rc, "runs": run_data, "raw": raw, "fake": fake, "svc": svc,
               "guide": {"rc": guide_rc, "runs": guide_runs, "raw": guide_raw}}


def output_of(n8n_run, node: str) -> str:
    runs = n8n_run["runs"].get(node)
    assert runs, f"{node} did not run: {n8n_run['raw'][-3000:]}"
    run = runs[-1]
    assert run["executionStatus"] == "success", json.dumps(run.get("error"), indent=1)[:3000]
    out = run["data"]["main"][0][0]["json"]
    assert "error" not in out, json.dumps(out)[:3000]
    return json.dumps(out)


@pytest.mark.parametrize("provider", MODELS)
def test_openai_node_v21_messages_a_model_through_the_responses_api(n8n_run, provider):
    assert f"Echo: {QUESTION}" in output_of(n8n_run, f"OpenAI node {provider}")


@pytest.mark.parametrize("provider", MODELS)
def test_basic_llm_chain_with_the_default_chat_model(n8n_run, provider):
    assert json.loads(output_of(n8n_run, f"Chain {provider}"))["text"] == f"Echo: {QUESTION}"


@pytest.mark.parametrize("api", ["responses", "chat"])
@pytest.mark.parametrize("provider", MODELS)
def test_ai_agent_reaches_the_calculator_result(n8n_run, provider, api):
    """The agent's answer carries 42: the provider asked for the tool on its own wire, n8n ran it, and
    the result went back through flowcall to that provider."""
    assert "The tool said: 42." in json.loads(output_of(n8n_run, f"Agent {api} {provider}"))["output"]


def test_each_provider_received_the_tool_result_in_its_native_form(n8n_run):
    fake = n8n_run["fake"]
    openai_results = [m for r in fake.seen("/openai/") for m in r["body"]["messages"] if m["role"] == "tool"]
    assert openai_results and all("42" in json.dumps(m["content"]) for m in openai_results)
    anthropic_blocks = [b for r in fake.seen("/anthropic/") for m in r["body"]["messages"]
                        if isinstance(m["content"], list) for b in m["content"]]
    assert any(b["type"] == "tool_result" and "42" in json.dumps(b.get("content")) for b in anthropic_blocks)
    gemini_parts = [p for r in fake.seen("/gemini/") for c in r["body"]["contents"] for p in c["parts"]]
    assert any("functionResponse" in p for p in gemini_parts)
    # Gemini 3's thought signature went out to n8n inside the OpenAI-shaped call and came back
    assert all(p.get("thoughtSignature") == SIGNATURE for p in gemini_parts if "functionCall" in p)
    assert any("functionCall" in p for p in gemini_parts)


def test_the_guides_agent_workflow_runs_as_shipped(n8n_run):
    """docs/examples/n8n-flowcall-agent-workflow.json, imported as the guide says: the agent reaches
    the calculator's result, and the OpenAI node that checks it gets the agent's answer."""
    guide = n8n_run["guide"]
    assert guide["rc"] == 0, guide["raw"][-3000:]
    agent = json.loads(output_of(guide, "AI Agent"))["output"]
    assert "The tool said: 42." in agent
    assert f"Echo: Check this answer in one sentence: {agent}" in output_of(guide, "OpenAI (flowcall)")
