"""Request and answer examples for the OpenAPI document, taken from the seed API documents."""

CALL_REQUEST = {
    "model": "auto",
    "prompt": "What is the capital of France?",
    "messages": [{"role": "system", "content": "You are a helpful assistant"},
                 {"role": "user", "content": "Hello"}],
    "options": {"temperature": 0.7, "maxTokens": 4096, "stop": ["END"]},
    "context": {"task": "chat_general"},
    "response_format": {"type": "json_object"},
}

CALL_RESPONSE = {
    "success": True, "response": "The capital of France is Paris.", "data": None,
    "model": "gpt-4.1-nano", "provider": "openai", "finish_reason": "stop",
    "usage": {"input_tokens": 15, "output_tokens": 8, "total_tokens": 23},
    "cost": 0.00015, "latency_ms": 450,
    "routing": {"is_auto_routed": True, "model_chosen": "openai.gpt-4.1-nano", "confidence": 0.85,
                "reason": "Task chat_general: best balanced score among 4 configured candidates.",
                "fallbacks": ["anthropic.claude-haiku-4-5-20251001"], "attempts": 1},
    "warnings": [], "request_id": "6c1f0e3d2b8a4f0e9d7c5b3a1f2e4d6c", "tool_calls": [],
}

INVOKE_LLM_REQUEST = {"instructions": "What is an AI agent?", "llm_engine": "gpt4o"}
INVOKE_LLM_RESPONSE = {"status": 200, "response": "An AI agent is a software entity that performs tasks "
                                                  "autonomously using artificial intelligence techniques."}

TEST_CONNECTION_REQUEST = {"provider": "openai", "model": "gpt-4o"}
TEST_CONNECTION_RESPONSE = {"success": True, "provider": "openai", "model": "openai.gpt-4o", "latency_ms": 250,
                            "status": "connected", "message": "openai answered."}
