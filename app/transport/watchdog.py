"""The deadline watchdog of every outbound exchange (provider calls, streams, image downloads,
job callbacks): one deadline over connect, TLS, status line, headers and body.

Socket timeouts bound each recv, not their sum: a server that sends its status line and headers
one byte at a time resets them with every byte, inside http.client where nobody can look at the
clock. A `Cutoff` is a timer that, when the deadline passes, shuts down every socket the exchange
has used, so whatever read is blocked returns at once and `expired` says why.

Sockets join the exchange that is current in this thread (greenlet, under gevent) through
`watch_current`: the Watched connections register their socket when they dial (before a TLS
handshake, which a server can drip too) and a reused keep-alive connection when it sends a
request; `WatchedHTTPAdapter` gives a requests session such connections.
"""
from __future__ import annotations

import contextlib
import socket
import threading

from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

_local = threading.local()


class Cutoff:
    """`with Cutoff(seconds):` - sockets watched inside are shut down when `seconds` have passed."""

    def __init__(self, seconds: float):
        self.expired = False
        self._sockets: list = []
        self._lock = threading.Lock()
        self._disarmed = False
        self._timer = threading.Timer(max(seconds, 0.0), self._fire)
        self._timer.daemon = True
        self._previous = None

    def __enter__(self) -> Cutoff:
        self._previous = getattr(_local, "cutoff", None)
        _local.cutoff = self
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.disarm()
        _local.cutoff = self._previous

    def disarm(self) -> None:
        """No socket is shut after this returns: call it before a connection goes back to the pool,
        where another exchange may pick it up."""
        self._timer.cancel()
        with self._lock:
            self._disarmed = True

    def watch(self, sock) -> None:
        with self._lock:
            self._sockets.append(sock)
            if self.expired and not self._disarmed:
                _shut(sock)

    def _fire(self) -> None:
        with self._lock:        # held while shutting, so disarm() waits for a firing timer
            if self._disarmed:
                return
            self.expired = True
            for sock in self._sockets:
                _shut(sock)


def watch_current(sock) -> None:
    """Put `sock` under the exchange running in this thread, if any."""
    cutoff = getattr(_local, "cutoff", None)
    if cutoff is not None and sock is not None:
        cutoff.watch(sock)


def _shut(sock) -> None:
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
