"""Group commit: the ledger rows of concurrent calls commit in one transaction.

Every call still returns only after its own row is committed (or its write has failed), exactly as
with one transaction per row; what changes is that calls ending while a transaction is being
written queue, and the next transaction takes all of them (up to `max_batch`). There is no
background thread and no timer: the first caller finding no write in progress writes (it leads),
the others wait on an event, and a finished leader appoints the oldest waiter as the next leader.
So a lone call is written at once, and under load one BEGIN/COMMIT serves many rows.

The waiting uses `threading` primitives, which gevent's monkey patching (the gunicorn workers)
makes cooperative; without gevent (the CLI, the in-process tests) they are ordinary thread locks.

A failed batch hides no failure and spreads none: when the batch failed before its COMMIT was sent
(nothing of it is committed), each of its items is written again in a transaction of its own, so
only the item that cannot be written fails, and each caller gets its own item's outcome. A failed
COMMIT is reported to every caller of the batch (the rows may or may not be in: retrying could
write them twice), as a failed write always was.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

from sqlalchemy.engine import Connection, Engine

from app.tenancy.db import transaction

T = TypeVar("T")

MAX_BATCH = 128
MAX_QUEUE = 4096

_WAITING, _LEAD, _DONE = 0, 1, 2


class CommitFailed(Exception):
    """The COMMIT of a batch failed: the items may or may not be committed (never retried)."""


class _Pending(Generic[T]):
    __slots__ = ("item", "state", "error", "wake")

    def __init__(self, item: T):
        self.item = item
        self.state = _WAITING
        self.error: BaseException | None = None
        self.wake = threading.Event()


class GroupCommitter(Generic[T]):
    """`submit(item)` returns once `write(conn, items)` has committed a transaction holding `item`.

    `write` gets the items of one batch in arrival order and must do nothing but database work in
    `conn` (it is also called with a single item when a batch is retried item by item)."""

    def __init__(self, engine: Engine, write: Callable[[Connection, Sequence[T]], None], *,
                 max_batch: int = MAX_BATCH, max_queue: int = MAX_QUEUE):
        self.engine = engine
        self.write = write
        self.max_batch = max_batch
        self.max_queue = max_queue
        self._lock = threading.Lock()
        self._queue: list[_Pending[T]] = []
        self._writing = False

    def submit(self, item: T) -> None:
        """Commit `item` with whatever else is waiting; raises the exception its write ended with."""
        pending = _Pending(item)
        with self._lock:
            if len(self._queue) >= self.max_queue:
                full = True              # bounded: past the bound a caller writes alone, as without grouping
            else:
                full = False
                self._queue.append(pending)
                lead = not self._writing
                self._writing = True
        if full:
            self._write_alone(item)
            return
        try:
            while not lead:
                pending.wake.wait()
                if pending.state == _DONE:
                    break
                lead = True              # appointed: the previous leader is done, this is the oldest waiter
        except BaseException:            # killed while waiting (a greenlet's kill): leave, never stall the rest
            self._withdraw(pending)
            raise
        if lead:
            self._lead()
        if pending.error is not None:
            raise pending.error

    def _withdraw(self, pending: _Pending[T]) -> None:
        """A caller stops waiting: its item leaves the queue unwritten (it raises, as a write that was
        interrupted always did), and if it had just been appointed to lead, the next waiter is."""
        with self._lock:
            if pending.state == _DONE or pending not in self._queue:
                return                   # already written (or being written) by a leader
            self._queue.remove(pending)
            if pending.state == _LEAD:
                self._appoint_next()

    def _appoint_next(self) -> None:
        """Under the lock: the oldest waiter leads next, or nobody is writing."""
        if self._queue:
            nxt = self._queue[0]
            nxt.state = _LEAD
            nxt.wake.set()
        else:
            self._writing = False

    def _lead(self) -> None:
        with self._lock:
            batch = self._queue[:self.max_batch]
            del self._queue[:self.max_batch]
        try:
            self._write_batch(batch)
        finally:                         # even if this greenlet is killed: nobody waits forever
            for pending in batch:
                if pending.state != _DONE:
                    pending.error = pending.error or CommitFailed("the batch's writer stopped before it finished")
                    pending.state = _DONE
                pending.wake.set()
            with self._lock:
                self._appoint_next()

    def _write_batch(self, batch: list[_Pending[T]]) -> None:
        try:
            self._commit([p.item for p in batch])
        except CommitFailed as exc:      # the rows may be in: never written again
            for pending in batch:
                pending.error = exc
                pending.state = _DONE
            return
        except Exception as exc:  # noqa: BLE001 - nothing committed; handed to the callers below
            if len(batch) == 1:
                batch[0].error = exc
                batch[0].state = _DONE
                return
            for pending in batch:        # each item on its own, so one bad row fails alone
                try:
                    self._write_alone(pending.item)
                except Exception as single:  # noqa: BLE001 - that caller's own failure
                    pending.error = single
                pending.state = _DONE
            return
        for pending in batch:
            pending.state = _DONE

    def _commit(self, items: list[T]) -> None:
        """One transaction of `items`. A failure of its COMMIT is raised as CommitFailed (the rows may
        be in); any other failure left nothing committed and is raised as it is."""
        sent_commit = False

        def work(conn: Connection) -> None:
            nonlocal sent_commit
            self.write(conn, items)
            sent_commit = True           # `transaction` commits right after work returns

        try:
            transaction(self.engine, work)
        except Exception as exc:
            if sent_commit:
                raise CommitFailed(f"COMMIT failed ({type(exc).__name__}: {exc}); the rows may or may not "
                                   f"be committed") from exc
            raise

    def _write_alone(self, item: T) -> None:
        self._commit([item])
