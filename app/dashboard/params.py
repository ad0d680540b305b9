"""A dashboard page's query parameters, checked: a bad one is a BadParam (the page answers 400 and
names it), never a 500 and never a query the database sees unchecked. Pure: it reads a Mapping."""
from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, UTC

from app.dashboard.figures import BREAKDOWNS, SORTABLE

DEFAULT_DAYS = 30
MAX_DAYS = 366
MAX_PAGE = 10_000
_AGENT = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class BadParam(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(f"{name}: {message}")
        self.name = name


@dataclass(frozen=True)
class View:
    first: date                  # first day shown (UTC)
    last: date                   # last day shown, inclusive
    agent: str | None = None
    by: str = "model"
    sort: str = "cost"
    descending: bool = True
    page: int = 1

    def query(self, **changes) -> dict:
        """The query string of this view with `changes`, for links and forms (defaults left out)."""
        values = {"from": self.first.isoformat(), "to": self.last.isoformat(), "agent": self.agent or None,
                  "by": self.by, "sort": self.sort, "dir": "desc" if self.descending else "asc",
                  "page": self.page if self.page != 1 else None}
        values.update(changes)
        return {k: v for k, v in values.items() if v is not None}


def _day(args: Mapping, name: str, default: date) -> date:
    raw = args.get(name)
    if raw in (None, ""):
        return default
    if not _DAY.match(raw):
        raise BadParam(name, "must be a date as YYYY-MM-DD")
    try:
        value = date.fromisoformat(raw)
    except ValueError:
        raise BadParam(name, "is not a real date") from None
    if value.year < 2000:
        raise BadParam(name, "must be in the year 2000 or later")
    return value


def _choice(args: Mapping, name: str, choices: tuple[str, ...], default: str) -> str:
    raw = args.get(name) or default
    if raw not in choices:
        raise BadParam(name, f"must be one of {', '.join(choices)}")
    return raw


def parse(args: Mapping, today: date | None = None) -> View:
    today = today or datetime.now(UTC).date()
    last = _day(args, "to", today)
    first = _day(args, "from", last - timedelta(days=DEFAULT_DAYS - 1))
    if last < first:
        raise BadParam("to", "must not be before from")
    if (last - first).days + 1 > MAX_DAYS:
        raise BadParam("from", f"a range is at most {MAX_DAYS} days")
    if last > today + timedelta(days=1):
        raise BadParam("to", "must not be in the future")
    agent = args.get("agent") or None
    if agent is not None and not _AGENT.match(agent):
        raise BadParam("agent", "must be an agent id (letters, digits, ._:-, at most 64)")
    raw_page = args.get("page") or "1"
    if len(raw_page) > 5 or not raw_page.isascii() or not raw_page.isdigit() or not 1 <= int(raw_page) <= MAX_PAGE:
        raise BadParam("page", f"must be a whole number from 1 to {MAX_PAGE}")
    return View(first=first, last=last, agent=agent, by=_choice(args, "by", BREAKDOWNS, "model"),
                sort=_choice(args, "sort", SORTABLE, "cost"),
                descending=_choice(args, "dir", ("asc", "desc"), "desc") == "desc", page=int(raw_page))
