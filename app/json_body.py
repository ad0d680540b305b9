"""A request body's bytes as a JSON object, strictly: no NaN or Infinity, no duplicate keys (which
would silently drop a value), its size bounded before and after parsing (app/body_bounds.py).
"""
from __future__ import annotations

import json
import math

from app.body_bounds import check_body_bytes, check_body_values
from app.errors import InvalidJSON


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text[:20]} is out of range")
    return value


def _no_duplicates(pairs):
    obj = dict(pairs)                   # in C; the loop below runs only when a key repeats
    if len(obj) != len(pairs):
        seen = set()
        for key, _ in pairs:
            if key in seen:
                raise ValueError(f"duplicate key {key!r}")
            seen.add(key)
    return obj


def parse_json_body(raw: bytes) -> dict:
    """Strict JSON: no NaN/Infinity, no duplicate keys (which would silently drop a value); its size
    bounded before and after parsing (app/body_bounds.py), so no later step costs more than that."""
    if not raw or not raw.strip():
        raise InvalidJSON("The request body is empty: send a JSON object.")
    check_body_bytes(raw)
    try:
        text = raw.decode("utf-8-sig")
        body = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float,
                          object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidJSON(f"The request body is not valid JSON: {detail}.") from None
    if not isinstance(body, dict):
        raise InvalidJSON("The request body must be a JSON object.")
    check_body_values(body)
    return body
