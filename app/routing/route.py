"""What routing decided for a call: the models to try, in order, and why (explicit or `auto`)."""
from __future__ import annotations

from dataclasses import dataclass

from app.catalog import Resolved


@dataclass(frozen=True)
class Route:
    candidates: tuple[Resolved, ...]      # first is the choice; the rest are fallbacks in order
    is_auto: bool
    confidence: float
    reason: str
