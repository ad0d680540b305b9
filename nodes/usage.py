"""GET /api/v3/llm/usage: the caller's own tenant's totals (never another tenant's)."""
from __future__ import annotations

from datetime import datetime

from flask import Blueprint, jsonify

from app.errors import ValidationError
from app.tenancy.ledger import GROUPS, default_range, parse_day
from app.openapi import doc
from app.answer_schemas import UsageResponseSchema

from ._common import either_auth, one_of, query, services

bp = Blueprint("usage", __name__)


@bp.get("/api/v3/llm/usage")
@doc(summary="The caller's tenant usage totals from the ledger", tags=("account",), auth="either",
     response=UsageResponseSchema, errors=(400, 401, 403), params=(
         {"in": "query", "name": "from", "schema": {"type": "string"}, "required": False,
          "description": "YYYY-MM-DD or ISO timestamp, inclusive (default: first of this month, UTC)"},
         {"in": "query", "name": "to", "schema": {"type": "string"}, "required": False,
          "description": "exclusive (default: tomorrow)"},
         {"in": "query", "name": "group_by", "schema": {"type": "string", "enum": list(GROUPS)}, "required": False}))
def usage():
    principal = either_auth(require_agent=False)
    first, last = default_range()
    args = query(group_by=one_of(*GROUPS),
                 **{"from": lambda v: parse_day(v, first), "to": lambda v: parse_day(v, last)})
    start = args.get("from") or parse_day(None, first)
    end = args.get("to") or parse_day(None, last)
    group_by = args.get("group_by")
    if end <= start:
        raise ValidationError("to must be after from.", fields={"to": "must be after from"})
    result = services().ledger.usage(principal.tenant_id, start, end, group_by)
    return jsonify({"success": True, "tenant_id": principal.tenant_id, "from": _iso(start), "to": _iso(end),
                    "group_by": group_by, **result})


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")
