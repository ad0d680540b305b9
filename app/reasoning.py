"""One reasoning-effort option, mapped onto each provider's own knob.

Callers say how hard a model should think (`minimal`, `low`, `medium`, `high`); providers each take
that differently: OpenAI, xAI and Groq a `reasoning_effort` string, Anthropic a thinking budget in
tokens (or adaptive thinking plus `output_config.effort` on models without manual budgets), Gemini
`thinkingConfig` (a level on Gemini 3, a budget on 2.5). Only models the catalog marks `reasoning`
get it; everywhere else it is left out with a warning. Pure functions: adapters call them.
"""
from __future__ import annotations

EFFORTS = ("minimal", "low", "medium", "high")
INVALID = "Must be one of " + ", ".join(EFFORTS) + " (or null for the model's default)."

# Anthropic extended thinking: budget_tokens must be >= 1024 and below max_tokens.
ANTHROPIC_MIN_BUDGET = 1024
ANTHROPIC_BUDGETS = {"minimal": 1024, "low": 2048, "medium": 8192, "high": 16384}

# Gemini 2.5 thinkingBudget per effort; 0 turns thinking off where the model allows it (Flash,
# Flash-Lite); Pro cannot turn it off and takes 128 at least (providers.md §2.3).
GEMINI_25_BUDGETS = {"minimal": 0, "low": 1024, "medium": 8192, "high": 24576}
GEMINI_25_PRO_MIN_BUDGET = 128


def anthropic_headroom(model, effort: str) -> int:
    """Output tokens Anthropic thinking adds to max_tokens for this effort: the budget, except on a
    model that thinks by default (its catalog thinking allowance already widened the limit)."""
    adaptive = model.params.get("thinking") == "adaptive"
    return 0 if adaptive and model.thinking_allowance else ANTHROPIC_BUDGETS[effort]


def output_headroom(model, options) -> int:
    """What reasoning effort may add to the output limit sent, for budgets to reserve (at most:
    the adapter may still leave thinking off, with a warning)."""
    effort = options.reasoning_effort
    if effort is None or not model.capabilities.reasoning or model.provider != "anthropic":
        return 0
    return anthropic_headroom(model, effort)


def problem(value) -> str | None:
    """Why a caller's effort is not acceptable, or None (None itself means the provider's default)."""
    if value is None or value in EFFORTS:
        return None
    return INVALID


def not_supported_warning(model_id: str, effort: str) -> str:
    return f"{model_id} has no reasoning-effort setting: reasoning effort {effort!r} was not sent."


def wants(call, model, warnings: list[str]) -> str | None:
    """The effort to map for this call on this model, or None (with a warning when one was asked
    for and the model does not reason)."""
    effort = call.options.reasoning_effort
    if effort is None:
        return None
    if not model.capabilities.reasoning:
        warnings.append(not_supported_warning(model.id, effort))
        return None
    return effort
