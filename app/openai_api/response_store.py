"""Stored Responses (`store: true`), per tenant, for a retention period.

A row keeps the Response object as answered, this request's input items, and the conversation
before them (`context`: the items of the responses it continued), so `previous_response_id` needs
one read. Every read is by (tenant, id): another tenant's id is simply not found. Rows past their
expiry are invisible at once and deleted by `purge` (run at most hourly, on a write).
"""
from __future__ import annotations

import json
import time

from sqlalchemy import Column, Float, Index, String, Table, Text, delete, insert, select

from app.config import DEFAULT_RESPONSE_RETENTION_DAYS
from app.tenancy.db import metadata

PURGE_EVERY_S = 3600.0

responses = Table(
    "responses", metadata,
    Column("tenant_id", String(64), primary_key=True),
    Column("id", String(64), primary_key=True),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=False),
    Column("response", Text, nullable=False),
    Column("input_items", Text, nullable=False),
    Column("context", Text, nullable=False),
    Index("ix_responses_expires", "expires_at"),
)


class ResponseStore:
    def __init__(self, engine, retention_days: int = DEFAULT_RESPONSE_RETENTION_DAYS, clock=time.time):
        self.engine = engine
        self.retention_s = retention_days * 86400.0
        self.clock = clock
        self._last_purge = float("-inf")

    def save(self, tenant_id: str, response: dict, input_items, context) -> None:
        now = self.clock()
        with self.engine.begin() as conn:
            conn.execute(insert(responses).values(
                tenant_id=tenant_id, id=response["id"], created_at=now, expires_at=now + self.retention_s,
                response=json.dumps(response), input_items=json.dumps(list(input_items)),
                context=json.dumps(list(context))))
        if now - self._last_purge >= PURGE_EVERY_S:
            self._last_purge = now
            self.purge()

    def _row(self, tenant_id: str, response_id: str):
        with self.engine.connect() as conn:
            return conn.execute(select(responses).where(
                responses.c.tenant_id == tenant_id, responses.c.id == response_id,
                responses.c.expires_at > self.clock())).first()

    def get(self, tenant_id: str, response_id: str) -> dict | None:
        row = self._row(tenant_id, response_id)
        return json.loads(row.response) if row else None

    def input_items(self, tenant_id: str, response_id: str) -> list[dict] | None:
        row = self._row(tenant_id, response_id)
        return json.loads(row.input_items) if row else None

    def conversation(self, tenant_id: str, response_id: str) -> list[dict] | None:
        """Every item up to and including that response's output: what continuing it starts from."""
        row = self._row(tenant_id, response_id)
        if row is None:
            return None
        return [*json.loads(row.context), *json.loads(row.input_items), *json.loads(row.response)["output"]]

    def delete(self, tenant_id: str, response_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(delete(responses).where(
                responses.c.tenant_id == tenant_id, responses.c.id == response_id,
                responses.c.expires_at > self.clock())).rowcount > 0

    def purge(self) -> int:
        """Delete every expired row; returns how many."""
        with self.engine.begin() as conn:
            return conn.execute(delete(responses).where(responses.c.expires_at <= self.clock())).rowcount
