"""`python -m bench.dashboard`: how fast the dashboard's pages answer with many ledger rows.

Bulk-seeds `--rows` ledger rows for one tenant, spread evenly over the `--days` days up to now
(executemany on SQLite, COPY on PostgreSQL), signs in through the real form with Flask's test
client, runs the scheduled roll (what `flowcall worker` does every 5 minutes) and times it, then
times each page: the first overview after the roll, then each page `--repeat` times (median, max),
and last the roll that completes a day. Prints a table; bench/README.md has the figures of a run on each database.

    python -m bench.dashboard                                  # SQLite in a temporary directory
    python -m bench.dashboard --database-url postgresql+psycopg://postgres@127.0.0.1:5432/dash_bench
"""
from __future__ import annotations

import argparse
import sys
import random
import re
import statistics
import tempfile
import time
import uuid
from datetime import datetime, timedelta, UTC
from pathlib import Path

from app.dashboard.rollups import GRACE_S, Rollups
from app.tenancy.db import ledger, make_engine, upgrade
from app.tenancy.store import Store
from bench.run import ensure_database

MODELS = [("openai.gpt-4o", "openai"), ("openai.gpt-4o-mini", "openai"), ("anthropic.claude-sonnet-4-6", "anthropic"),
          ("google.gemini-2.5-flash", "google"), ("groq.llama-3.3-70b-versatile", "groq")]
ENDPOINTS = ("public_call", "call", "chat_completions")
ERRORS = ("provider_error", "timeout", "rate_limited")
CHUNK = 50_000


def _rows(n: int, days: int, tenant: str, agents: list[str], keys: list[str], sqlite: bool):
    now = datetime.now(UTC)
    rng = random.Random(17)
    span = days * 86400
    for i in range(n):
        when = now - timedelta(seconds=span * (i / n))          # steady traffic up to now
        model, provider = MODELS[i % len(MODELS)]
        failed = rng.random() < 0.05
        latency = int(rng.lognormvariate(6.2, 0.8))
        upstream = max(0, latency - rng.randint(1, 15))
        created = when.replace(tzinfo=None).isoformat(" ") if sqlite else when
        yield {"created_at": created, "tenant_id": tenant, "agent_id": agents[i % len(agents)],
               "key_id": keys[i % len(keys)], "request_id": uuid.UUID(int=rng.getrandbits(128)).hex,
               "endpoint": ENDPOINTS[i % len(ENDPOINTS)], "model_requested": model, "model_served": model,
               "provider": provider, "input_tokens": rng.randint(10, 2000), "output_tokens": rng.randint(1, 800),
               "cost": round(rng.random() / 1000, 8), "latency_ms": latency, "status": 502 if failed else 200,
               "error_code": ERRORS[i % len(ERRORS)] if failed else None, "attempts": 1, "prompt": None, "answer": None,
               "routing_reason": f"{model} was requested.", "fallbacks": None, "upstream_ms": upstream,
               "error_message": "The provider failed." if failed else None}


def seed(engine, rows: int, days: int, tenant: str, agents: list[str], keys: list[str]) -> float:
    """Insert the rows as fast as the database takes them -> seconds taken."""
    columns = [c.name for c in ledger.columns if c.name != "id"]
    started = time.perf_counter()
    sqlite = engine.dialect.name == "sqlite"
    batch: list[tuple] = []
    raw = engine.raw_connection()
    try:
        cur = raw.cursor()
        if sqlite:
            sql = f"INSERT INTO ledger ({', '.join(columns)}) VALUES ({', '.join('?' for _ in columns)})"
            for row in _rows(rows, days, tenant, agents, keys, True):
                batch.append(tuple(row[c] for c in columns))
                if len(batch) >= CHUNK:
                    cur.executemany(sql, batch)
                    batch.clear()
            if batch:
                cur.executemany(sql, batch)
        else:
            with cur.copy(f"COPY ledger ({', '.join(columns)}) FROM STDIN") as copy:
                for row in _rows(rows, days, tenant, agents, keys, False):
                    copy.write_row(tuple(row[c] for c in columns))
        raw.commit()
    finally:
        raw.close()
    if not sqlite:
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE ledger")
    return time.perf_counter() - started


def _timed(client, path: str) -> tuple[float, int]:
    started = time.perf_counter()
    response = client.get(path)
    elapsed = (time.perf_counter() - started) * 1000
    assert response.status_code == 200, (path, response.status_code)
    return elapsed, len(response.data)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", help="default: a new SQLite file in a temporary directory")
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    url = args.database_url or f"sqlite:///{Path(tempfile.mkdtemp(prefix='flowcall-dash-bench-')) / 'bench.db'}"
    if url.startswith("postgresql"):
        ensure_database(url)            # created if missing
    engine = make_engine(url)
    upgrade(engine)
    store = Store(url)
    tenant = str(uuid.uuid4())
    agents = [str(uuid.uuid4()) for _ in range(4)]
    key, plain = store.create_key(tenant, name="bench")
    keys = [key.id, store.create_key(tenant, name="bench-2")[0].id]
    seconds = seed(engine, args.rows, args.days, tenant, agents, keys)
    sys.stdout.reconfigure(line_buffering=True)
    print(f"seeded {args.rows:,} rows over {args.days} days on {engine.dialect.name} in {seconds:.1f} s")

    from nodes import create_app
    app = create_app({"FLOWCALL_DATABASE_URL": url, "FLOWCALL_LOG_LEVEL": "WARNING"})   # no access lines
    client = app.test_client()
    page = client.get("/dashboard/signin").get_data(as_text=True)
    csrf = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
    assert client.post("/dashboard/signin", data={"csrf": csrf, "api_key": plain}).status_code == 303
    with engine.connect() as conn:
        some_id = conn.exec_driver_sql("SELECT max(id) FROM ledger").scalar_one()
    pages = ["/dashboard", "/dashboard/breakdowns?by=model", "/dashboard/breakdowns?by=agent&sort=calls",
             "/dashboard/breakdowns?by=key", "/dashboard/failures", "/dashboard/calls", "/dashboard/calls?page=20",
             f"/dashboard/calls/{some_id}", "/dashboard/jobs", f"/dashboard?agent={agents[0]}",
             "/dashboard/export/daily.csv", "/dashboard/export/breakdown.csv", "/dashboard/export/calls.csv"]
    rollups = Rollups(engine)
    started = time.perf_counter()
    done = rollups.roll(days=args.days + 1)
    print(f"scheduled roll, first ({done['units_stored']} days and hours stored; flowcall worker or "
          f"flowcall db rollup, in their own process): {(time.perf_counter() - started) * 1000:,.0f} ms")
    started = time.perf_counter()
    rollups.roll(days=args.days + 1)
    print(f"scheduled roll, next (nothing new): {(time.perf_counter() - started) * 1000:,.0f} ms")
    cold, size = _timed(client, pages[0])
    print(f"first overview after the roll: {cold:,.0f} ms")
    live = args.rows / (args.days * 24) * (datetime.now(UTC).minute + 5) / 60
    print(f"rows read live by each page (this hour so far, and the 5 min grace): about {live:,.0f}")
    print(f"{'page':<48} {'median ms':>10} {'max ms':>8} {'bytes':>9}")
    for path in pages:
        times = []
        for _ in range(args.repeat):
            elapsed, size = _timed(client, path)
            times.append(elapsed)
        shown = path.replace(agents[0], "<agent>")
        print(f"{shown:<48} {statistics.median(times):>10.1f} {max(times):>8.1f} {size:>9,}")
    tomorrow = datetime.now(UTC) + timedelta(days=1, seconds=GRACE_S + 60)
    started = time.perf_counter()
    done = rollups.roll(now=tomorrow, days=2)
    print(f"the roll after midnight (today's last hours from the ledger, then the day from its hours; "
          f"{done['units_stored']} stored): {(time.perf_counter() - started) * 1000:,.0f} ms")
    store.close()
    engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
