"""The ledger's group commit (app/tenancy/group_commit.py) with real threads and a real database:
each caller returns only after its own item is committed, concurrent items share a transaction in
arrival order, a failure reaches exactly the callers it concerns, and nobody waits forever."""
from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import Column, Integer, MetaData, Table, create_engine, event, select, text

from app.tenancy.group_commit import CommitFailed, GroupCommitter

WAIT_S = 10.0           # a bound for a hang, never a synchronisation


class Poison(Exception):
    pass


class Killed(BaseException):
    """Stands for a greenlet killed (GreenletExit) while it writes a batch."""


@pytest.fixture
def engine(tmp_path):
    eng = create_engine(f"sqlite:///{tmp_path / 'gc.db'}", connect_args={"check_same_thread": False, "timeout": 30})
    meta = MetaData()
    Table("items", meta, Column("x", Integer, nullable=False))
    meta.create_all(eng)
    yield eng
    eng.dispose()


def committed(engine) -> list[int]:
    with engine.connect() as conn:
        return [r[0] for r in conn.execute(text("SELECT x FROM items ORDER BY rowid"))]


class Writer:
    """`write` for the committer: inserts the items; `gate` holds the first batch inside it until opened."""

    def __init__(self, gate: threading.Event | None = None, poison: int | None = None, kill_first: bool = False):
        self.batches: list[list[int]] = []
        self.gate = gate
        self.entered = threading.Event()
        self.poison = poison
        self.kill_first = kill_first

    def __call__(self, conn, items):
        self.batches.append(list(items))
        if self.gate is not None and len(self.batches) == 1:
            self.entered.set()
            assert self.gate.wait(WAIT_S)
        if self.kill_first and len(self.batches) == 1:
            raise Killed()
        if self.poison in items:
            raise Poison(f"item {self.poison} cannot be written")
        for x in items:
            conn.execute(text("INSERT INTO items (x) VALUES (:x)"), {"x": x})


def spin_until(predicate) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"


def start(committer, item, outcomes: dict, engine=None) -> threading.Thread:
    """A caller thread; records the exception (or None) and whether its row was visible on return."""
    def run():
        try:
            committer.submit(item)
            outcomes[item] = None
        except BaseException as exc:  # noqa: BLE001 - the outcome under test
            outcomes[item] = exc
        if engine is not None:
            outcomes[("visible", item)] = item in committed(engine)
    t = threading.Thread(target=run)
    t.start()
    return t



def queued_behind_the_leader(committer, writer, outcomes: dict, followers: int) -> list[threading.Thread]:
    """Caller 0 leads and is held inside its write (at the writer's gate); callers 1..followers
    queue behind it, in this order."""
    threads = [start(committer, 0, outcomes)]
    assert writer.entered.wait(WAIT_S)
    for i in range(1, followers + 1):
        threads.append(start(committer, i, outcomes))
        spin_until(lambda i=i: len(committer._queue) == i)
    return threads

def test_a_lone_item_is_written_at_once_in_its_own_transaction(engine):
    writer = Writer()
    committer = GroupCommitter(engine, writer)
    committer.submit(7)
    assert writer.batches == [[7]] and committed(engine) == [7]


def test_items_arriving_during_a_write_commit_together_in_order_and_each_caller_sees_its_row(engine):
    gate = threading.Event()
    writer = Writer(gate)
    committer = GroupCommitter(engine, writer)
    outcomes: dict = {}
    leader = start(committer, 0, outcomes, engine)
    assert writer.entered.wait(WAIT_S)                       # 0 is being written, its transaction open
    followers = []
    for i in range(1, 6):
        followers.append(start(committer, i, outcomes, engine))
        spin_until(lambda i=i: len(committer._queue) == i)   # queued in this order
    assert 0 not in outcomes                                 # nobody returned before its commit
    gate.set()
    for t in [leader, *followers]:
        t.join(WAIT_S)
    assert writer.batches == [[0], [1, 2, 3, 4, 5]]           # two transactions for six rows
    assert committed(engine) == [0, 1, 2, 3, 4, 5]
    assert all(outcomes[i] is None and outcomes[("visible", i)] for i in range(6))


def test_a_row_that_fails_fails_alone_and_its_batch_mates_are_written(engine):
    gate = threading.Event()
    writer = Writer(gate, poison=3)
    committer = GroupCommitter(engine, writer)
    outcomes: dict = {}
    threads = queued_behind_the_leader(committer, writer, outcomes, 4)
    gate.set()
    for t in threads:
        t.join(WAIT_S)
    assert isinstance(outcomes[3], Poison)
    assert [outcomes[i] for i in (0, 1, 2, 4)] == [None] * 4
    assert sorted(committed(engine)) == [0, 1, 2, 4]
    assert writer.batches[1] == [1, 2, 3, 4]                 # tried together, then one by one
    assert writer.batches[2:] == [[1], [2], [3], [4]]


def test_a_failed_commit_is_reported_to_every_caller_of_the_batch_and_never_retried(engine):
    gate = threading.Event()
    writer = Writer(gate)
    committer = GroupCommitter(engine, writer)
    outcomes: dict = {}
    threads = queued_behind_the_leader(committer, writer, outcomes, 3)

    def fail_second_commit(_conn):
        if len(writer.batches) == 2:
            raise RuntimeError("connection lost during COMMIT")
    event.listen(engine, "commit", fail_second_commit)
    gate.set()
    for t in threads:
        t.join(WAIT_S)
    assert outcomes[0] is None
    assert all(isinstance(outcomes[i], CommitFailed) for i in (1, 2, 3))
    assert all(isinstance(outcomes[i].__cause__, RuntimeError) for i in (1, 2, 3))
    assert writer.batches == [[0], [1, 2, 3]]                # a commit that may have happened: no retry


def test_the_then_callback_commits_with_its_row_or_neither_does(tmp_path):
    from conftest import migrated_db_url
    from app.tenancy.db import idempotency, make_engine
    from app.tenancy.idempotency import Idempotency
    from app.tenancy.ledger import Ledger, Row
    engine = make_engine(migrated_db_url(tmp_path))
    ledger, keys = Ledger(engine), Idempotency(engine)
    keys.begin("t1", "k-ok", "h", lock_seconds=60)
    keys.begin("t1", "k-bad", "h", lock_seconds=60)
    ledger.write(Row(tenant_id="t1", endpoint="call", status=200, request_id="ok"),
                 then=lambda conn: keys.finish_in(conn, "t1", "k-ok", 200, {"answer": 1}))

    def failing(conn):
        keys.finish_in(conn, "t1", "k-bad", 200, {"answer": 2})
        raise Poison("the callback failed")
    with pytest.raises(Poison):
        ledger.write(Row(tenant_id="t1", endpoint="call", status=200, request_id="bad"), then=failing)
    with engine.connect() as conn:
        states = dict(conn.execute(select(idempotency.c.key, idempotency.c.state)).all())
        request_ids = [r[0] for r in conn.execute(text("SELECT request_id FROM ledger"))]
    assert states == {"k-ok": "done", "k-bad": "running"} and request_ids == ["ok"]
    engine.dispose()


def test_past_the_queue_bound_a_caller_writes_alone_without_waiting(engine):
    gate = threading.Event()
    writer = Writer(gate)
    committer = GroupCommitter(engine, writer, max_queue=1)
    outcomes: dict = {}
    leader = start(committer, 0, outcomes)
    assert writer.entered.wait(WAIT_S)
    queued = start(committer, 1, outcomes)
    spin_until(lambda: len(committer._queue) == 1)
    committer.submit(2)                                      # the queue is full: written now, alone
    assert 2 in committed(engine) and 0 not in outcomes and 1 not in outcomes
    gate.set()
    leader.join(WAIT_S)
    queued.join(WAIT_S)
    assert outcomes == {0: None, 1: None} and sorted(committed(engine)) == [0, 1, 2]
    assert writer.batches == [[0], [2], [1]]


def test_a_leader_killed_mid_write_leaves_nobody_waiting_and_the_next_batch_is_written(engine):
    gate = threading.Event()
    writer = Writer(gate, kill_first=True)
    committer = GroupCommitter(engine, writer, max_batch=2)
    outcomes: dict = {}
    threads = queued_behind_the_leader(committer, writer, outcomes, 3)
    gate.set()
    for t in threads:
        t.join(WAIT_S)
        assert not t.is_alive()
    assert isinstance(outcomes[0], Killed)
    assert [outcomes[i] for i in (1, 2, 3)] == [None] * 3     # max_batch 2: [1, 2] then [3]
    assert writer.batches == [[0], [1, 2], [3]] and committed(engine) == [1, 2, 3]
    committer.submit(4)                                       # and the committer still works
    assert committed(engine) == [1, 2, 3, 4]


def test_a_batch_killed_mid_write_fails_its_waiting_callers_instead_of_hanging(engine):
    gate = threading.Event()
    writer = Writer(gate, kill_first=True)
    committer = GroupCommitter(engine, writer)
    outcomes: dict = {}
    # the first batch holds 0 alone; make it hold 0 and 1 by queueing 1 before 0's leader takes it
    with committer._lock:
        committer._writing = True                            # as if a write were in progress
    threads = [start(committer, 0, outcomes), start(committer, 1, outcomes)]
    spin_until(lambda: len(committer._queue) == 2)
    with committer._lock:                                    # that write ends: 0, the oldest, is appointed
        committer._queue[0].state = 1
        committer._queue[0].wake.set()
    assert writer.entered.wait(WAIT_S)
    gate.set()
    for t in threads:
        t.join(WAIT_S)
    assert isinstance(outcomes[0], Killed)
    assert isinstance(outcomes[1], CommitFailed)
    assert committed(engine) == [] and committer._writing is False


def test_a_caller_killed_while_it_waits_leaves_the_queue_and_stalls_nobody(engine, monkeypatch):
    gate = threading.Event()
    writer = Writer(gate)
    committer = GroupCommitter(engine, writer)
    outcomes: dict = {}
    leader = start(committer, 0, outcomes)
    assert writer.entered.wait(WAIT_S)

    class KilledWhileWaiting(threading.Event):
        def wait(self, timeout=None):
            raise Killed()
    import app.tenancy.group_commit as group_commit
    monkeypatch.setattr(group_commit.threading, "Event", KilledWhileWaiting)
    with pytest.raises(Killed):
        committer.submit(1)
    monkeypatch.undo()
    assert committer._queue == []                            # withdrawn: no leader will wait on it
    gate.set()
    leader.join(WAIT_S)
    assert outcomes == {0: None} and committer._writing is False
    committer.submit(2)
    assert committed(engine) == [0, 2] and writer.batches == [[0], [2]]


def test_a_batch_runs_each_kind_of_statement_once_for_all_its_rows(tmp_path):
    """Two calls' rows, budget-hold releases and idempotency answers: three executemany, not six
    statements (on psycopg each executemany is one pipelined round trip)."""
    from conftest import migrated_db_url
    from app.tenancy.budgets import BudgetHolds, Scope
    from app.tenancy.db import budget_holds, idempotency, make_engine, transaction
    from app.tenancy.idempotency import Idempotency
    from app.tenancy.ledger import Ledger, Row
    engine = make_engine(migrated_db_url(tmp_path))
    ledger, keys, holds = Ledger(engine), Idempotency(engine), BudgetHolds(engine)
    hold_ids = [holds.reserve([Scope("tenant", "t1", 10.0)], tenant_id="t1", key_id=None, amount=0.1, seconds=60)
                for _ in range(2)]
    for k in ("k1", "k2"):
        keys.begin("t1", k, "h", lock_seconds=60)
    items = []
    for i, (hold, k) in enumerate(zip(hold_ids, ("k1", "k2"), strict=True)):
        row = Row(tenant_id="t1", endpoint="call", status=200, request_id=f"r{i}")
        values = {**row.__dict__, "created_at": "2026-11-30 00:00:00"}
        items.append((ledger._insert.params(values),
                      (holds.release_statement(hold), keys.finish_statement("t1", k, 200, {"n": i})), None))
    sent = []
    event.listen(engine, "before_cursor_execute",
                 lambda _c, _cur, statement, _p, _ctx, many: sent.append((statement.split()[0], many)))
    transaction(engine, lambda conn: ledger._write_batch(conn, items))
    assert sent == [("INSERT", True), ("DELETE", True), ("UPDATE", True)]
    with engine.connect() as conn:
        assert conn.execute(select(budget_holds.c.id)).all() == []
        assert dict(conn.execute(select(idempotency.c.key, idempotency.c.state)).all()) == {"k1": "done", "k2": "done"}
        assert sorted(conn.execute(text("SELECT request_id FROM ledger")).scalars()) == ["r0", "r1"]
    engine.dispose()
