"""Latency histograms with fixed buckets: what lets a day's percentiles be stored in one rollup row
and days (and groups) be added up by the database's SUM. A percentile is then the upper bound of
the bucket it falls in (the pages say so), never an interpolated guess.

A histogram is a tuple of cumulative counts, one per bound (values <= bound), then the count of
values it holds. In `ledger_daily` each is one integer column per entry: `lat_0..lat_12, lat_n`
(the call's latency), `up_*` (time at the provider), `oh_*` (flowcall's own: latency minus that).
"""
from __future__ import annotations

from sqlalchemy import case, func

BOUNDS_MS = (10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 120000)
EMPTY = (0,) * (len(BOUNDS_MS) + 1)
KINDS = ("lat", "up", "oh")                     # latency, upstream (provider), overhead (flowcall)


def names(kind: str) -> list[str]:
    return [f"{kind}_{i}" for i in range(len(BOUNDS_MS))] + [f"{kind}_n"]


COLUMNS = [name for kind in KINDS for name in names(kind)]


def sql_columns(value, kind: str) -> list:
    """SUM(CASE ...) columns that build the histogram of `value` (NULLs are left out) in one GROUP BY."""
    labels = names(kind)
    columns = [func.sum(case((value <= bound, 1), else_=0)).label(label) for bound, label in
               zip(BOUNDS_MS, labels[:-1], strict=True)]
    columns.append(func.sum(case((value.is_not(None), 1), else_=0)).label(labels[-1]))
    return columns


def from_row(row, kind: str) -> tuple[int, ...]:
    return tuple(int(row[name] or 0) for name in names(kind))


def total(hists: list[tuple[int, ...]]) -> tuple[int, ...]:
    """The sum of many histograms, column by column."""
    return tuple(map(sum, zip(*hists, strict=True))) if hists else EMPTY


def percentile(hist: tuple[int, ...], p: float) -> str | None:
    """`<= N ms` for the bucket holding the p-th percentile, `> 120000 ms` past the last bound, None if empty."""
    count = hist[-1]
    if count == 0:
        return None
    needed = p * count
    for bound, cumulative in zip(BOUNDS_MS, hist[:-1], strict=True):
        if cumulative >= needed:
            return f"<= {bound} ms"
    return f"> {BOUNDS_MS[-1]} ms"
