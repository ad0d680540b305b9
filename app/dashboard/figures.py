"""Pure sums over rollup cells: the overview's days, the breakdowns' groups, failures by code.

The same cells give every figure, so a page's totals, its table and its chart always agree, and
they agree with `GET /api/v3/llm/usage` (tests/test_dashboard_equality.py).
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import date, timedelta

from app.dashboard import histogram
from app.dashboard.rollups import Cell

BREAKDOWNS = ("model", "provider", "endpoint", "agent", "key")
FIELD = {"model": "model", "provider": "provider", "endpoint": "endpoint", "agent": "agent_id", "key": "key_id"}
SORTABLE = ("group", "calls", "errors", "error_rate", "input_tokens", "output_tokens", "total_tokens", "cost")


def _totals(cells: Iterable[Cell], percentiles: bool = False) -> dict:
    out = {"calls": 0, "errors": 0, "input_tokens": 0, "output_tokens": 0, "cost": 0.0}
    members = []
    for cell in cells:
        out["calls"] += cell.calls
        out["errors"] += cell.errors
        out["input_tokens"] += cell.input_tokens
        out["output_tokens"] += cell.output_tokens
        out["cost"] += cell.cost
        members.append(cell)
    out["total_tokens"] = out["input_tokens"] + out["output_tokens"]
    out["cost"] = round(out["cost"], 8)
    out["error_rate"] = round(out["errors"] / out["calls"], 4) if out["calls"] else 0.0
    if percentiles:                     # the cells must have been read with their histograms
        for name in ("latency", "upstream", "overhead"):
            hist = histogram.total([getattr(c, name) for c in members if getattr(c, name)[-1]])
            out[f"{name}_p50"] = histogram.percentile(hist, 0.50)
            out[f"{name}_p95"] = histogram.percentile(hist, 0.95)
    return out


def totals(cells: list[Cell]) -> dict:
    return _totals(cells)


def daily(cells: list[Cell], first: date, last: date) -> list[dict]:
    """One entry per day first..last, zeros included (a chart without gaps)."""
    by_day: dict[str, list[Cell]] = {}
    for cell in cells:
        by_day.setdefault(cell.day, []).append(cell)
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    return [{"day": d.isoformat(), **_totals(by_day.get(d.isoformat(), []))} for d in days]


def breakdown(cells: list[Cell], by: str, sort: str = "cost", descending: bool = True) -> list[dict]:
    field = FIELD[by]
    groups: dict[str | None, list[Cell]] = {}
    for cell in cells:
        groups.setdefault(getattr(cell, field), []).append(cell)
    rows = [{"group": group, **_totals(members, percentiles=True)} for group, members in groups.items()]
    if sort == "group":
        rows.sort(key=lambda r: (r["group"] is None, r["group"] or ""), reverse=descending)
    else:
        rows.sort(key=lambda r: (r[sort], r["group"] or ""), reverse=descending)
    return rows


def failures_by_code(cells: list[Cell], first: date, last: date) -> tuple[list[dict], list[str]]:
    """(per day: {"day", "errors", "by_code": {code: count}}, the codes, most frequent first)."""
    counts: dict[str, int] = {}
    per_day: dict[tuple[str, str], int] = {}
    for cell in cells:
        if cell.errors:
            code = cell.error_code or "unknown"
            counts[code] = counts.get(code, 0) + cell.errors
            per_day[(cell.day, code)] = per_day.get((cell.day, code), 0) + cell.errors
    codes = sorted(counts, key=lambda c: (-counts[c], c))
    days = [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]
    out = []
    for d in days:
        by_code = {code: per_day.get((d, code), 0) for code in codes}
        out.append({"day": d, "errors": sum(by_code.values()), "by_code": by_code})
    return out, codes
