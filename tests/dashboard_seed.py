"""Ledger rows for the dashboard tests: written through Ledger.write (the call path's own insert),
then moved to the day a test needs (Ledger.write always stamps the current time)."""
from __future__ import annotations

import re
from datetime import datetime

from sqlalchemy import update

from app.tenancy.db import ledger
from app.tenancy.ledger import Ledger, Row


def seed(engine, when: datetime, **fields) -> None:
    fields.setdefault("endpoint", "public_call")
    fields.setdefault("status", 200)
    row = Row(**fields)
    Ledger(engine).write(row)
    with engine.begin() as conn:
        conn.execute(update(ledger).where(ledger.c.request_id == row.request_id).values(created_at=when))


def sign_in(client, api_key: str, base_url: str = "http://localhost"):
    """Sign the test client in with `api_key` through the real form -> the POST's response."""
    page = client.get("/dashboard/signin", base_url=base_url).get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    return client.post("/dashboard/signin", data={"csrf": csrf, "api_key": api_key}, base_url=base_url)


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)
