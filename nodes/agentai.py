"""POST /v1/action/invoke_llm: the agent.ai "Use GenAI (LLM)" action, with its body and answer shape."""
from __future__ import annotations

from flask import Blueprint, request

from app import examples
from app.tenancy.auth import api_key_from_bearer, authenticate_api_key
from app.openapi import CALL_ERRORS, doc
from app.answer_schemas import AgentAiResponseSchema
from app.schemas import AgentAiSchema

from ._common import body_with, run_call, services

bp = Blueprint("agentai", __name__)
_schema = AgentAiSchema()


@bp.post("/v1/action/invoke_llm")
@doc(summary="Use GenAI (LLM): the agent.ai action", tags=("calls",), auth="bearer_key",
     request=AgentAiSchema, response=AgentAiResponseSchema, errors=CALL_ERRORS, idempotent=True,
     request_example=examples.INVOKE_LLM_REQUEST, response_example=examples.INVOKE_LLM_RESPONSE)
def invoke_llm():
    principal = authenticate_api_key(api_key_from_bearer(request.headers), services().store)
    data = body_with(_schema)
    return run_call(principal, "invoke_llm", {"model": data["llm_engine"], "prompt": data["instructions"]},
                    lambda answer: {"status": 200, "response": answer.text})
