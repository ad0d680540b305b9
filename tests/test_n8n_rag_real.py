"""A real n8n 1.123 doing retrieval-augmented generation through flowcall: the guide's RAG workflow
(docs/examples/n8n-flowcall-rag-workflow.json), imported as it ships, run headless against flowcall
under gunicorn with the fake provider behind it (skipped, saying so, when n8n is not installed; see
tests/test_n8n_real.py).

One run (the Simple Vector Store lives in n8n's process, so insert and search share it): four
documents go through the Default Data Loader into the Simple Vector Store v1.3 (mode insert) with the
Embeddings OpenAI v1.2 sub-node at its defaults, so n8n asks for base64 and decodes it; the store in
mode load is searched with a question; and the AI Agent v3 (OpenAI Chat Model v1.3 on a Claude model)
has the store as a tool (mode retrieve-as-tool, Limit 1). The fake's vectors are bags of words
(tests/fake_answers.vector_for), so a query is nearest to the document sharing its words, and vectors
decoded as zeros would rank nothing. In its tool-loop mode the fake's model calls the first tool with
`{"input": "6 * 7"}` and then answers "The tool said: <the tool's result>.", so the agent's answer
holds the document the store found for that query.
"""
from __future__ import annotations

import json
import math

import pytest

from fake_answers import vector_for
from fake_provider import FakeProvider
from fake_tool_loop import ARGUMENTS
from service import ROOT, e2e_service
from test_n8n_real import CREDENTIAL, _n8n, output_of

pytestmark = pytest.mark.e2e
WORKFLOW = ROOT / "docs" / "examples" / "n8n-flowcall-rag-workflow.json"
CAPITAL = "The Eiffel Tower is in Paris, the capital of France."
DEEP_THOUGHT = "Deep Thought computed 6 * 7 = 42, the answer to everything."
DOCS = ["Flowcall routes chat requests to several model providers.", CAPITAL,
        "Bananas are yellow fruit rich in potassium.", DEEP_THOUGHT]     # the workflow's Code node, in order


def shipped_workflow() -> dict:
    flow = json.loads(WORKFLOW.read_text())
    flow["id"] = "flowcallRag01"        # `n8n execute --id` needs one; an export may not carry it
    for node in flow["nodes"]:
        if "credentials" in node:
            node["credentials"] = CREDENTIAL
    return flow


def parameters(node_name: str) -> dict:
    return next(n for n in shipped_workflow()["nodes"] if n["name"] == node_name)["parameters"]


@pytest.fixture(scope="module")
def rag_run(tmp_path_factory):
    tool = _n8n()
    tmp = tmp_path_factory.mktemp("n8n-rag")
    with FakeProvider(tool_loop=True) as fake, e2e_service(tmp, fake) as svc:
        creds = tmp / "credentials.json"
        creds.write_text(json.dumps([{**CREDENTIAL["openAiApi"], "type": "openAiApi",
                                      "data": {"apiKey": svc["key"], "url": f"{svc['url']}/v1"}}]))
        tool.credentials(str(creds))
        flow = shipped_workflow()
        path = tmp / "rag.json"
        path.write_text(json.dumps(flow))
        rc, runs, raw = tool.run(str(path), flow["id"])
        yield {"rc": rc, "runs": runs, "raw": raw, "fake": fake}


def items_of(rag_run, node: str) -> list[dict]:
    output_of(rag_run, node)           # asserts that the node ran and succeeded
    return [item["json"] for item in rag_run["runs"][node][-1]["data"]["main"][0]]


def _cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.mark.parametrize(("query", "right"), [(parameters("Search Documents")["prompt"], CAPITAL),
                                              (ARGUMENTS["input"], DEEP_THOUGHT)])
def test_each_query_has_one_right_document(query, right):
    """The premise of the run's checks, without n8n: under the fake's vectors each query is nearest to
    one document, by a margin."""
    code = parameters("Documents")["jsCode"]
    positions = [code.find(json.dumps(d)) for d in DOCS]
    assert -1 not in positions and positions == sorted(positions)
    scores = sorted(((_cosine(vector_for(query), vector_for(d)), d) for d in DOCS), reverse=True)
    assert scores[0][1] == right and scores[0][0] > scores[1][0] + 0.1


def test_the_workflow_runs_as_shipped(rag_run):
    assert rag_run["rc"] == 0, rag_run["raw"][-3000:]


def test_documents_then_each_query_are_embedded_through_flowcall(rag_run):
    """One batch of the four documents, then the search's prompt, then the agent tool's query: each one
    call of OpenAI's embeddings behind flowcall."""
    assert [item["pageContent"] for item in items_of(rag_run, "Insert Documents")] == DOCS
    sent = [r["body"] for r in rag_run["fake"].seen("/openai/v1/embeddings")]
    assert sent == [{"model": "text-embedding-3-small", "input": inputs, "encoding_format": "float"}
                    for inputs in (DOCS, [parameters("Search Documents")["prompt"]], [ARGUMENTS["input"]])]


def test_the_search_ranks_the_right_document_first(rag_run):
    """Vectors decoded as zeros would score every document alike (or not at all): the right one first,
    by a margin, with the very scores the fake's vectors give, shows that n8n got those vectors."""
    found = items_of(rag_run, "Search Documents")
    assert [f["document"]["pageContent"] for f in found][0] == CAPITAL
    scores = [f["score"] for f in found]
    assert len(found) == 3 and scores == sorted(scores, reverse=True) and scores[0] > scores[1] + 0.1
    query = vector_for(parameters("Search Documents")["prompt"])
    assert scores == pytest.approx([_cosine(query, vector_for(f["document"]["pageContent"])) for f in found])


def test_the_agent_answers_with_the_document_its_tool_found(rag_run):
    answer = json.loads(output_of(rag_run, "AI Agent"))["output"]
    assert answer.startswith("The tool said: ") and DEEP_THOUGHT in answer
    assert not any(doc in answer for doc in DOCS if doc != DEEP_THOUGHT)
    [call, result] = rag_run["fake"].seen("/anthropic/")
    assert [t["name"] for t in call["body"]["tools"]] == ["knowledge_base"]
    assert DEEP_THOUGHT in json.dumps(result["body"]["messages"])
