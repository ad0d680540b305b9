"""Tool call ids that carry provider state through clients that know nothing about it.

Gemini 3 answers a function call with a `thoughtSignature` that must come back on the next turn,
and OpenAI-shaped clients only echo the call id. So a call with state is handed out as
`fcs1.<base64url(JSON {"i": provider id, "s": state})>` and decoded when it comes back; a call without
state keeps the provider's own id. Stateless: nothing is stored, so no tenant can reach another's.
The state is not signed: it is the provider's own opaque token, which the provider verifies itself
(a tampered signature is the provider's 400, as a tampered history would be).
"""
from __future__ import annotations

import base64
import binascii
import json

from app.calls import ToolCall
from app.errors import ValidationError

PREFIX = "fcs1."
MAX_ID_CHARS = 16_384       # a Gemini thoughtSignature is ~1 KB; anything far larger is not ours


def public_id(call: ToolCall) -> str:
    """The id a client sees: the provider's id, with the call's state folded in when it has some.
    State too large to fold in is dropped (the next turn then goes without it, as a conversation
    moved from another provider does)."""
    if not call.state:
        return call.id
    payload = json.dumps({"i": call.id, "s": call.state}, separators=(",", ":"), sort_keys=True)
    encoded = PREFIX + base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    return encoded if len(encoded) <= MAX_ID_CHARS else call.id


def decode(public: str, where: str) -> tuple[str, dict | None]:
    """(provider id, state) from an id handed out by public_id; other ids come back unchanged."""
    if not public.startswith(PREFIX):
        return public, None
    problem = "not a tool call id flowcall handed out (it was changed or truncated)"
    if len(public) > MAX_ID_CHARS:
        raise ValidationError(f"{where}: {problem}.", fields={where: problem})
    body = public[len(PREFIX):]
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError):
        raise ValidationError(f"{where}: {problem}.", fields={where: problem}) from None
    if not (isinstance(data, dict) and isinstance(data.get("i"), str) and data["i"]
            and isinstance(data.get("s"), dict)):
        raise ValidationError(f"{where}: {problem}.", fields={where: problem})
    return data["i"], data["s"]
