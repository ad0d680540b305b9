"""What a call sends when the caller left an option out: the catalog says, per model.

Our documented defaults (temperature 0.7, maxTokens 1000) suit plain chat models; they hurt models
that think by default (the thinking eats the 1000 tokens: recorded answers spend 768-1,001 thinking
tokens on trivial prompts, providers.md §0.7) and models whose vendor asks that temperature be left
alone (Gemini 3). Adapters ask here instead of reading `Options` defaults themselves.
"""
from __future__ import annotations

from app.calls import DEFAULT_TEMPERATURE, Options


def temperature(model, options: Options) -> tuple[float | None, str | None]:
    """(temperature to send or None, warning or None).

    A temperature the caller set is sent wherever the model accepts one; otherwise the model's
    `temperature_default` decides: "ours" sends 0.7, "provider" sends nothing, a number is sent.
    """
    if not model.capabilities.temperature:
        if options.temperature is not None:
            return None, f"{model.id} accepts only its default temperature; options.temperature was not sent."
        return None, None
    if options.temperature is not None:
        return options.temperature, None
    default = model.temperature_default
    if default == "provider":
        return None, None
    if isinstance(default, (int, float)) and not isinstance(default, bool):
        return float(default), None
    return DEFAULT_TEMPERATURE, None


def max_tokens(model, options: Options) -> int:
    """The output limit to send: the caller's own, or our default plus the model's thinking
    allowance (never above the model's documented output limit)."""
    if options.max_tokens_set or not model.thinking_allowance:
        return options.max_tokens
    limit = options.max_tokens + model.thinking_allowance
    if model.max_output_tokens:
        limit = min(limit, max(model.max_output_tokens, options.max_tokens))
    return limit


def thinking_only_warning(model_id: str, text: str, finish_reason: str, reasoning_tokens: int) -> str | None:
    """A call that thought and answered nothing, though it did not hit the limit, says so (the
    adapters already explain an empty answer cut at the limit)."""
    if text or not reasoning_tokens or finish_reason in ("length", "tool_calls"):
        return None
    return f"{model_id} returned only thinking ({reasoning_tokens} tokens) and no answer."
