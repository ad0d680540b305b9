"""The deadline watchdog of every outbound exchange (provider calls, streams, image downloads,
job callbacks): one deadline over connect, TLS, status line, headers and body.

Socket timeouts bound each recv, not their sum: a server that sends its status line and headers
one byte at a time resets them with every byte, inside http.client where nobody can look at the
clock. A `Cutoff` is a deadline that, when it passes, shuts down every socket the exchange has
used, so whatever read is blocked returns at once and `expired` says why. One watchdog thread per
process (a greenlet under gevent) fires every armed Cutoff, instead of a timer thread per exchange.

Sockets join the exchange that is current in this thread (greenlet, under gevent) through
`watch_current`: the Watched connections register their socket when they dial (before a TLS
handshake, which a server can drip too) and a reused keep-alive connection when it sends a
request; `WatchedHTTPAdapter` gives a requests session such connections.
"""
from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import os
import socket
import threading
import time

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

from app.readable import readable_now

_local = threading.local()
log = logging.getLogger(__name__)


class Cutoff:
    """`with Cutoff(seconds):` - sockets watched inside are shut down when `seconds` have passed."""

    def __init__(self, seconds: float):
        self.expired = False
        self.disarmed = False
        self._seconds = seconds
        self._sockets: list = []
        self._lock = threading.Lock()
        self._previous = None

    def __enter__(self) -> Cutoff:
        self._previous = getattr(_local, "cutoff", None)
        _local.cutoff = self
        _watchdog.arm(self, time.monotonic() + self._seconds)
        return self

    def __exit__(self, *exc) -> None:
        self.disarm()
        _local.cutoff = self._previous

    def disarm(self) -> None:
        """No socket is shut after this returns: call it before a connection goes back to the pool,
        where another exchange may pick it up."""
        with self._lock:
            self.disarmed = True
            self._sockets.clear()

    def watch(self, sock: socket.socket) -> None:
        with self._lock:
            if self.disarmed:
                return
            self._sockets.append(sock)
            if self.expired:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:        # held while shutting, so disarm() waits for a firing watchdog
            if self.disarmed:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


class _Watchdog:
    """Fires each armed Cutoff at its deadline: a heap of deadlines and one thread waiting for the
    earliest. A disarmed Cutoff stays in the heap until it comes up or the heap is compacted (when
    it has doubled since the last compaction), so disarming costs no lock but the Cutoff's own."""

    _COMPACT_MIN = 1024

    def __init__(self):
        self._start_over()
        os.register_at_fork(after_in_child=self._start_over)   # the thread and lock stay behind

    def _start_over(self) -> None:
        self._wake = threading.Condition()
        self._due: list[tuple[float, int, Cutoff]] = []
        self._order = itertools.count()
        self._compact_at = self._COMPACT_MIN
        self._running = False

    def arm(self, cutoff: Cutoff, at: float) -> None:
        with self._wake:
            if not self._running:       # first use in this process, after any gevent patching
                threading.Thread(target=self._run, name="flowcall-cutoff-watchdog", daemon=True).start()
                self._running = True
            if len(self._due) >= self._compact_at:
                self._due = [entry for entry in self._due if not entry[2].disarmed]
                heapq.heapify(self._due)
                self._compact_at = max(self._COMPACT_MIN, 2 * len(self._due))
            heapq.heappush(self._due, (at, next(self._order), cutoff))
            if self._due[0][2] is cutoff:
                self._wake.notify()

    def _run(self) -> None:
        while True:
            with self._wake:
                cutoff = self._next_due()
            try:
                cutoff._fire()
            except Exception:  # noqa: BLE001 - one failed shutdown must not stop every later cutoff
                log.exception("a cutoff failed to fire")

    def _next_due(self) -> Cutoff:
        """The next Cutoff whose deadline has passed, waiting for it (called with the lock held)."""
        while True:
            while self._due and self._due[0][2].disarmed:
                heapq.heappop(self._due)
            if not self._due:
                self._wake.wait()
                continue
            wait = self._due[0][0] - time.monotonic()
            if wait <= 0:
                return heapq.heappop(self._due)[2]
            self._wake.wait(wait)


_watchdog = _Watchdog()


def watch_current(sock: socket.socket | None) -> None:
    """Put `sock` under the exchange running in this thread, if any."""
    cutoff = getattr(_local, "cutoff", None)
    if cutoff is not None and sock is not None:
        cutoff.watch(sock)


def _shut(sock: socket.socket) -> None:
    # the base-class call: SSLSocket.shutdown would drop TLS state the reader still uses
    with contextlib.suppress(OSError, TypeError, ValueError):
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


class _Watched:
    def _new_conn(self):
        sock = super()._new_conn()
        watch_current(sock)          # before the TLS handshake
        return sock

    def request(self, *args, **kwargs):
        watch_current(self.sock)     # a reused keep-alive connection (None when not yet dialled)
        return super().request(*args, **kwargs)

    @property
    def is_connected(self) -> bool:
        """urllib3's check before a pooled connection is reused (a closed one is readable), asked
        of the OS's poll without yielding to gevent's hub (app/readable.py)."""
        fd = self.sock.fileno() if self.sock is not None else -1
        return fd >= 0 and not readable_now(fd)


class WatchedHTTPConnection(_Watched, HTTPConnection):
    pass


class WatchedHTTPSConnection(_Watched, HTTPSConnection):
    pass


class _WatchedHTTPPool(HTTPConnectionPool):
    ConnectionCls = WatchedHTTPConnection


class _WatchedHTTPSPool(HTTPSConnectionPool):
    ConnectionCls = WatchedHTTPSConnection


class WatchedHTTPAdapter(HTTPAdapter):
    """An HTTPAdapter whose connections join the current Cutoff."""

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        self.poolmanager.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
