"""GET /api/v3/llm/usage: the caller's own tenant's totals (never another tenant's)."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, jsonify, request

from app.errors import ValidationError
from app.ledger import GROUPS, default_range, parse_day

from ._common import either_auth, services

bp = Blueprint("usage", __name__)


@bp.get("/api/v3/llm/usage")
def usage():
    principal = either_auth()
    unknown = set(request.args) - {"from", "to", "group_by"}
    if unknown:
        raise ValidationError(f"Unknown query parameters: {', '.join(sorted(unknown))}.",
                              fields={name: "unknown parameter" for name in sorted(unknown)})
    first, last = default_range()
    try:
        start = parse_day(request.args.get("from"), first)
        end = parse_day(request.args.get("to"), last)
    except ValueError:
        raise ValidationError("from/to must be dates (YYYY-MM-DD) or ISO timestamps.",
                              fields={"from": "YYYY-MM-DD", "to": "YYYY-MM-DD"}) from None
    group_by = request.args.get("group_by") or None
    if group_by is not None and group_by not in GROUPS:
        raise ValidationError(f"group_by must be one of {', '.join(GROUPS)}.", fields={"group_by": "unknown grouping"})
    if end <= start:
        raise ValidationError("to must be after from.", fields={"to": "must be after from"})
    result = services().ledger.usage(principal.tenant_id, start, end, group_by)
    return jsonify({"success": True, "tenant_id": principal.tenant_id, "from": _iso(start), "to": _iso(end),
                    "group_by": group_by, **result})


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
