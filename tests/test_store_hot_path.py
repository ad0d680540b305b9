"""What one call costs the store, and that the cheaper path loses nothing: transactions per call
(an idempotent call settles its key in its ledger row's transaction), no pre-ping round trip, and
pooled PostgreSQL connections killed under the pool still lose no ledger row."""
from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, select, text

from nodes import create_app
from app.tenancy.db import idempotency, ledger, make_engine, transaction
from app.tenancy.ledger import Ledger, Row
from backends import DATABASES, PG_URL, fresh_database_url
from conftest import JWT_SECRET


@pytest.fixture(params=DATABASES)
def app(request, tmp_path):
    app = create_app({"FLOWCALL_DATABASE_URL": fresh_database_url(request.param, tmp_path),
                      "FLOWCALL_JWT_SECRET": JWT_SECRET})
    app.config["TESTING"] = True
    yield app
    app.extensions["flowcall"].store.close()


class Counter:
    """Statements sent and transactions committed on an engine, from SQLAlchemy's events."""

    def __init__(self, engine):
        self.statements: list[str] = []
        self.commits = 0
        event.listen(engine, "before_cursor_execute", self._statement)
        event.listen(engine, "commit", self._commit)

    def _statement(self, _conn, _cursor, statement, *_):
        self.statements.append(statement.split()[0].upper())

    def _commit(self, _conn):
        self.commits += 1

    def reset(self):
        self.statements, self.commits = [], 0


def _call(client, key, idem=None):
    headers = {"X-Api-Key": key, **({"Idempotency-Key": idem} if idem else {})}
    return client.post("/api/v3/llm/public/call", json={"model": "mock.echo", "prompt": "hi"}, headers=headers)


def test_a_call_is_one_transaction_and_an_idempotent_one_two(app):
    store = app.extensions["flowcall"].store
    _, key = store.create_key(str(uuid.uuid4()))
    client = app.test_client()
    assert _call(client, key).status_code == 200              # keys and tenant limits now cached
    counter = Counter(store.engine)
    assert _call(client, key).status_code == 200
    assert (counter.commits, counter.statements) == (1, ["INSERT"])   # the ledger row
    assert not store.engine.pool._pre_ping                   # whose SELECT 1 the events above would not see
    counter.reset()
    first = _call(client, key, idem="fold-1")
    assert first.status_code == 200
    # the key's claim before the call; after it, the ledger row and the key's answer in one transaction
    assert counter.commits == 2 and counter.statements == ["INSERT", "INSERT", "UPDATE"]
    replay = _call(client, key, idem="fold-1")
    assert replay.headers["Idempotent-Replay"] == "true" and replay.get_json() == first.get_json()


def test_concurrent_claims_commit_together_and_a_key_claimed_twice_in_one_batch_wins_once(app):
    """Claims arriving while one is being written queue and commit in one INSERT; of two claims of
    the same key in that batch only the first runs, and keys are per tenant. (Batched claims are
    PostgreSQL's default; SQLite runs the same statement when asked to.)"""
    import threading
    import time

    from app.errors import IdempotencyConflict
    from app.tenancy.idempotency import Idempotency
    engine = app.extensions["flowcall"].store.engine
    assert (Idempotency(engine).claims is not None) == (engine.dialect.name == "postgresql")
    idem = Idempotency(engine, batch_claims=True)            # PostgreSQL's default
    gate, entered, batches = threading.Event(), threading.Event(), []
    write = idem.claims.write

    def held_first(conn, claims):
        batches.append([(c.row["tenant_id"], c.row["key"]) for c in claims])
        if len(batches) == 1:
            entered.set()
            assert gate.wait(10)
        write(conn, claims)
    idem.claims.write = held_first
    t1, t2 = str(uuid.uuid4()), str(uuid.uuid4())
    outcomes: dict = {}

    def claim(n, tenant_id, key):
        try:
            outcomes[n] = idem.begin(tenant_id, key, "h", lock_seconds=60)
        except IdempotencyConflict:
            outcomes[n] = "conflict"
    order = [(t1, "k0"), (t1, "k1"), (t1, "k2"), (t1, "k1"), (t2, "k1")]
    threads = [threading.Thread(target=claim, args=(0, *order[0]))]
    threads[0].start()
    assert entered.wait(10)
    for n, (tenant_id, key) in enumerate(order[1:], start=1):
        threads.append(threading.Thread(target=claim, args=(n, tenant_id, key)))
        threads[-1].start()
        deadline = time.monotonic() + 10
        while len(idem.claims._queue) < n:                     # queued in this order
            assert time.monotonic() < deadline, "claim not queued"
    counter = Counter(idem.engine)
    gate.set()
    for t in threads:
        t.join(10)
    assert batches == [order[:1], order[1:]]
    assert outcomes == {0: None, 1: None, 2: None, 3: "conflict", 4: None}
    # the held claim, then the four queued ones in one INSERT; the loser then reads the row it lost to
    assert counter.statements == ["INSERT", "INSERT", "SELECT"]
    with idem.engine.connect() as conn:
        stored = conn.execute(select(idempotency.c.tenant_id, idempotency.c.key, idempotency.c.state)).all()
    assert sorted(stored) == sorted([(t1, "k0", "running"), (t1, "k1", "running"), (t1, "k2", "running"),
                                     (t2, "k1", "running")])


def test_when_the_keys_statement_fails_the_row_is_still_written_once_and_the_key_settled_alone(app, monkeypatch):
    """The record of a paid call never depends on the idempotency key's statement: the row is written
    again without it (nothing was committed), and the key is finished on its own afterwards."""
    flowcall = app.extensions["flowcall"]
    _, key = flowcall.store.create_key(str(uuid.uuid4()))
    client = app.test_client()
    keys = flowcall.gateway.idempotency
    real = keys.finish_statement

    calls = []

    def broken(*args):                  # the first use (in the row's transaction) cannot be bound
        statement, params = real(*args)
        calls.append(args)
        return (statement, {**params, "w_tenant": object()}) if len(calls) == 1 else (statement, params)
    monkeypatch.setattr(keys, "finish_statement", broken)
    first = _call(client, key, idem="statement-fails-1")
    assert first.status_code == 200
    assert not any("could not be written" in w for w in first.get_json().get("warnings", []))
    assert len(calls) == 2                                     # in the row's transaction, then alone
    replay = _call(client, key, idem="statement-fails-1")      # finished on its own after the row
    assert replay.headers["Idempotent-Replay"] == "true" and replay.get_json() == first.get_json()
    with flowcall.store.engine.connect() as conn:
        assert conn.execute(select(idempotency.c.state)).scalar_one() == "done"
        assert len(conn.execute(select(ledger.c.id)).all()) == 1


def test_an_unrecorded_row_still_stores_the_idempotent_answer_with_its_warning(app, monkeypatch):
    flowcall = app.extensions["flowcall"]
    _, key = flowcall.store.create_key(str(uuid.uuid4()))
    client = app.test_client()

    def failing(conn, items):
        raise RuntimeError("disk full (test)")
    monkeypatch.setattr(flowcall.ledger.committer, "write", failing)
    first = _call(client, key, idem="unrecorded-1")
    assert first.status_code == 200
    assert any("could not be written to the usage ledger" in w for w in first.get_json()["warnings"])
    replay = _call(client, key, idem="unrecorded-1")          # the key was finished on its own
    assert replay.headers["Idempotent-Replay"] == "true" and replay.get_json() == first.get_json()
    with flowcall.store.engine.connect() as conn:
        assert conn.execute(select(idempotency.c.state)).scalar_one() == "done"
        assert conn.execute(select(ledger.c.id)).first() is None


@pytest.mark.skipif(not PG_URL, reason="FLOWCALL_TEST_DATABASE_URL is not set (no PostgreSQL to test against)")
def test_pooled_connections_killed_by_the_server_lose_no_ledger_row(tmp_path):
    engine = make_engine(fresh_database_url("postgresql", tmp_path))
    book = Ledger(engine)
    tenant = str(uuid.uuid4())
    conns = [engine.connect() for _ in range(5)]              # fill the pool with live connections
    pids = [c.exec_driver_sql("SELECT pg_backend_pid()").scalar_one() for c in conns]
    for c in conns:
        c.rollback()
        c.close()
    admin = make_engine(PG_URL)
    with admin.connect() as conn:
        for pid in pids:
            assert conn.execute(text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar_one()
    for i in range(20):                                       # every pooled connection is dead now
        book.write(Row(tenant_id=tenant, endpoint="call", status=200, request_id=f"after-kill-{i}"))
    with admin.connect() as conn:
        ids = conn.execute(select(ledger.c.request_id).where(ledger.c.tenant_id == tenant)).scalars().all()
    assert sorted(ids) == sorted(f"after-kill-{i}" for i in range(20))
    admin.dispose()
    engine.dispose()


@pytest.mark.skipif(not PG_URL, reason="FLOWCALL_TEST_DATABASE_URL is not set (no PostgreSQL to test against)")
def test_a_connection_dead_before_commit_is_retried_once_and_a_failed_commit_never(tmp_path):
    engine = make_engine(fresh_database_url("postgresql", tmp_path))
    admin = make_engine(PG_URL)
    attempts = []

    def work_killing_its_first_connection(conn):
        attempts.append(conn.exec_driver_sql("SELECT pg_backend_pid()").scalar_one())
        if len(attempts) == 1:             # the server ends this connection before our INSERT is sent
            with admin.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:p)"), {"p": attempts[0]})
        conn.execute(ledger.insert().values(tenant_id="t-retry", endpoint="call", status=200,
                                            created_at=text("now()")))
    transaction(engine, work_killing_its_first_connection)
    assert len(attempts) == 2 and attempts[0] != attempts[1]
    with admin.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM ledger WHERE tenant_id = 't-retry'")).scalar_one() == 1

    commits = []

    def fail_commit(_conn):
        commits.append(1)
        raise ConnectionError("connection lost during COMMIT (test)")
    event.listen(engine, "commit", fail_commit)
    with pytest.raises(ConnectionError):
        transaction(engine, lambda conn: conn.exec_driver_sql("SELECT 1"))
    assert len(commits) == 1                                  # never sent twice
    admin.dispose()
    engine.dispose()
