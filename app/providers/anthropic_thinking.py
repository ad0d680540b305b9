"""Anthropic extended thinking, as a pure translation: a call's reasoning effort as `thinking`
(a manual budget or adaptive), and the signed thinking blocks that a tool loop must send back,
carried in the state of the answer's first tool call.

Wire facts: ../shared/specs/anthropic/ (thinking.md), ../shared/specs/providers.md §2.2.
"""
from __future__ import annotations

from app import reasoning
from app.calls import Call, ToolCall
from app.providers.anthropic_structured import Structured

def thinking_blocks(state: dict | None) -> list[dict]:
    """The thinking blocks kept in a tool call's state (see with_thinking), rebuilt from their known
    fields only: the state came back through a client, and Anthropic checks each signature itself."""
    blocks = state.get("thinking") if isinstance(state, dict) else None
    out = []
    for b in blocks if isinstance(blocks, list) else ():
        if not isinstance(b, dict):
            continue
        if b.get("type") == "thinking" and isinstance(b.get("thinking"), str) and isinstance(b.get("signature"), str):
            out.append({"type": "thinking", "thinking": b["thinking"], "signature": b["signature"]})
        elif b.get("type") == "redacted_thinking" and isinstance(b.get("data"), str):
            out.append({"type": "redacted_thinking", "data": b["data"]})
    return out


def with_thinking(blocks: list, calls: tuple[ToolCall, ...]) -> tuple[ToolCall, ...]:
    """An answer's thinking blocks ride on its first tool call's state: in a tool loop Anthropic
    needs them back, unchanged, before the tool_use blocks of that assistant turn."""
    kept = thinking_blocks({"thinking": blocks})
    if not kept or not calls:
        return calls
    first = calls[0]
    return (ToolCall(first.id, first.name, first.arguments, {**(first.state or {}), "thinking": kept}),) + calls[1:]


def _thinking_blocker(call: Call, structured: Structured, manual: bool) -> str | None:
    """Why thinking cannot be turned on for this request, or None (thinking.md, providers.md §2.2)."""
    if manual and (structured.tool is not None or (call.tools and call.tool_choice is not None
                                                   and call.tool_choice.mode in ("required", "tool"))):
        return "Anthropic does not take a forced tool choice with extended thinking"
    if call.messages and call.messages[-1].role == "assistant":
        return "Anthropic does not take a final assistant message (prefill) with thinking"
    last_assistant = next((m for m in reversed(call.messages) if m.role == "assistant"), None)
    if last_assistant is not None and last_assistant.tool_calls and not any(
            thinking_blocks(c.state) for c in last_assistant.tool_calls):
        return ("the assistant turn that called the tools carries no thinking block (the conversation began "
                "without thinking, elsewhere, or its state was not kept), which Anthropic requires with thinking")
    return None


def add_thinking(call: Call, model, structured: Structured, body: dict, warnings: list[str]) -> None:
    """Reasoning effort as Anthropic thinking. Models the catalog marks `params.thinking: adaptive`
    (manual budgets are a 400 there) get adaptive thinking with `output_config.effort`; the others
    `thinking.type: enabled` with a budget from the effort, added to max_tokens (which must exceed
    it). Thinking counts toward max_tokens, so an adaptive model that does not think by default (no
    catalog thinking allowance) gets the same headroom. Thinking text is omitted from answers
    (`display: omitted`): it is not part of `response`, and the signed blocks stay small enough to
    travel inside a tool call id."""
    effort = reasoning.wants(call, model, warnings)
    if effort is None:
        return
    adaptive = model.params.get("thinking") == "adaptive"
    blocker = _thinking_blocker(call, structured, manual=not adaptive)
    total = body["max_tokens"] + (reasoning.ANTHROPIC_BUDGETS[effort] if not adaptive
                                  else reasoning.anthropic_headroom(model, effort))
    if model.max_output_tokens:
        total = max(body["max_tokens"], min(total, model.max_output_tokens))
    budget = min(reasoning.ANTHROPIC_BUDGETS[effort], total - 1)
    if blocker is None and not adaptive and budget < reasoning.ANTHROPIC_MIN_BUDGET:
        blocker = f"{model.id}'s output limit leaves no room for a thinking budget"
    if blocker:
        warnings.append(f"Reasoning effort {effort!r} was not sent: {blocker}.")
        return
    if adaptive:
        body["thinking"] = {"type": "adaptive", "display": "omitted"}
        body["max_tokens"] = total
        output_config = body.setdefault("output_config", {})
        output_config["effort"] = "low" if effort == "minimal" else effort
    else:
        body["max_tokens"] = total
        body["thinking"] = {"type": "enabled", "budget_tokens": budget, "display": "omitted"}
    if "temperature" in body:
        del body["temperature"]
        if call.options.temperature is not None:
            warnings.append("Anthropic takes no temperature with thinking: options.temperature was not sent.")
