"""Latency histograms with fixed buckets: what lets a day's percentiles be stored in one rollup row
and days be added up. A percentile is then the upper bound of the bucket it falls in (the pages
say so), never an interpolated guess.

A histogram is a tuple of cumulative counts, one per bound (values <= bound), then the count of
values it holds; it is stored as that tuple's comma-separated text.
"""
from __future__ import annotations

from sqlalchemy import case, func

BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
EMPTY = (0,) * (len(BOUNDS_MS) + 1)


def sql_columns(value, prefix: str) -> list:
    """SUM(CASE ...) columns that build the histogram of `value` (NULLs are left out) in one GROUP BY."""
    columns = [func.sum(case((value <= bound, 1), else_=0)).label(f"{prefix}{i}") for i, bound in enumerate(BOUNDS_MS)]
    columns.append(func.sum(case((value.is_not(None), 1), else_=0)).label(f"{prefix}n"))
    return columns


def from_row(row, prefix: str) -> tuple[int, ...]:
    return tuple(int(row[f"{prefix}{i}"] or 0) for i in range(len(BOUNDS_MS))) + (int(row[f"{prefix}n"] or 0),)


def encode(hist: tuple[int, ...]) -> str:
    return ",".join(str(n) for n in hist)


def decode(text: str) -> tuple[int, ...]:
    values = tuple(map(int, text.split(","))) if text else EMPTY
    return values if len(values) == len(EMPTY) else EMPTY


def total(texts: list[str]) -> tuple[int, ...]:
    """The sum of many stored histograms (column by column, in one pass)."""
    decoded = [decode(t) for t in texts if t]
    return tuple(map(sum, zip(*decoded, strict=True))) if decoded else EMPTY


def add(a: tuple[int, ...], b: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(x + y for x, y in zip(a, b, strict=True))


def percentile(hist: tuple[int, ...], p: float) -> str | None:
    """`<= N ms` for the bucket holding the p-th percentile, `> 120000 ms` past the last bound, None if empty."""
    total = hist[-1]
    if total == 0:
        return None
    needed = p * total
    for bound, cumulative in zip(BOUNDS_MS, hist[:-1], strict=True):
        if cumulative >= needed:
            return f"<= {bound} ms"
    return f"> {BOUNDS_MS[-1]} ms"
