"""A table as CSV for a spreadsheet. A text cell that a spreadsheet would run as a formula (it
starts with =, +, -, @, a tab or a carriage return: a model name or an error message is caller-
controlled) is prefixed with an apostrophe, OWASP's advice against CSV injection."""
from __future__ import annotations

import csv
import io

_FORMULA = ("=", "+", "-", "@", "\t", "\r")


def cell(value) -> object:
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(_FORMULA):
        return "'" + value
    return value


def to_csv(rows: list[dict], columns: tuple[str, ...] | list[str]) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([cell(row.get(name)) for name in columns])
    return out.getvalue()
