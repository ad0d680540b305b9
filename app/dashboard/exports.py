"""A table as CSV for a spreadsheet. A text cell that a spreadsheet would run as a formula (it
starts with =, +, -, @, a tab or a carriage return: a model name or an error message is caller-
controlled) is prefixed with an apostrophe, OWASP's advice against CSV injection."""
from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Iterator, Sequence

_FORMULA = ("=", "+", "-", "@", "\t", "\r")
_FORMULA_FIRST = frozenset(_FORMULA)
CHUNK_ROWS = 500                     # rows encoded per piece of a streamed CSV


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


def _guarded(row: Sequence) -> list:
    """`cell` over a row, inlined: one comprehension per row is most of a large export's cost."""
    return [("'" + v) if v.__class__ is str and v[:1] in _FORMULA_FIRST else v for v in row]


def csv_pieces(rows: Iterable[Sequence], columns: Sequence[str]) -> Iterator[str]:
    """Rows (tuples in `columns` order) as CSV, CHUNK_ROWS rows a piece: a response can stream
    them, so the first bytes leave at once and the text is never held whole. Same text as to_csv
    (csv writes None as an empty cell, as `cell` does)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(columns)
    batch: list = []
    for row in rows:
        batch.append(_guarded(row))
        if len(batch) >= CHUNK_ROWS:
            writer.writerows(batch)
            batch.clear()
            yield out.getvalue()
            out.seek(0)
            out.truncate()
    writer.writerows(batch)
    yield out.getvalue()
