"""POST /v1/action/invoke_llm: the agent.ai "Use GenAI (LLM)" action, with its body and answer shape."""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from app.auth import api_key_from_bearer, authenticate_api_key
from app.schemas import AgentAiSchema

from ._common import body_with, execute, services

bp = Blueprint("agentai", __name__)
_schema = AgentAiSchema()


@bp.post("/v1/action/invoke_llm")
def invoke_llm():
    principal = authenticate_api_key(api_key_from_bearer(request.headers), services().store)
    data = body_with(_schema)
    answer = execute({"model": data["llm_engine"], "prompt": data["instructions"]}, principal)
    return jsonify({"status": 200, "response": answer.text})
