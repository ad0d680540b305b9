"""The one body read of every outbound exchange (whole provider answers, streams, image downloads):
capped in bytes and bounded by a deadline.

Each read takes what one recv brings (`read1`): reading n bytes would wait for all n, which is
exactly what a server that drips a byte at a time exploits. Before each read the socket's timeout
becomes the time left (or the per-read timeout, if shorter), and the clock is checked after it, so
a slow drip cannot outlive the deadline even when no watchdog is armed (a stream's body).
"""
from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Callable, Iterator

READ_SIZE = 64 * 1024      # one read (and 1,000 calls in flight per worker may each hold one)


class CappedRead:
    """The chunks of one body: at most `max_bytes` in all, none read after `deadline` (monotonic).

    `read(n)` returns up to n bytes, b"" at the end; `too_large()` and `late()` make the caller's
    own errors. `deadline` may be moved while reading (a stream's deadline is the call's)."""

    def __init__(self, read: Callable[[int], bytes], *, max_bytes: int, deadline: float,
                 too_large: Callable[[], Exception], late: Callable[[], Exception],
                 sock: socket.socket | None = None, read_timeout: float = float("inf"),
                 declared_length: str | None = None):
        self.read = read
        self.max_bytes = max_bytes
        self.deadline = deadline
        self.too_large = too_large
        self.late = late
        self.sock = sock
        self.read_timeout = read_timeout
        self.declared_length = declared_length

    def __iter__(self) -> Iterator[bytes]:
        declared = (self.declared_length or "").strip()
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self.too_large()
        total = 0
        while True:
            remaining = self.deadline - time.monotonic()
            if remaining <= 0:
                raise self.late()
            _bound_next_read(self.sock, min(self.read_timeout, remaining))
            try:
                chunk = self.read(min(READ_SIZE, self.max_bytes - total + 1))
            except Exception:
                if time.monotonic() >= self.deadline:
                    raise self.late() from None
                raise
            if not chunk:
                return
            total += len(chunk)
            if total > self.max_bytes:
                raise self.too_large()
            if time.monotonic() > self.deadline:
                raise self.late()
            yield chunk

    def whole(self) -> bytes:
        return b"".join(self)


def _bound_next_read(sock: socket.socket | None, seconds: float) -> None:
    """The socket's timeout for the next recv. No socket: a test double, or a connection urllib3 no
    longer holds; a closed one (http.client closes it after the last byte) has nothing left to bound."""
    if sock is not None:
        with contextlib.suppress(OSError):      # the socket is closing: the read reports it
            sock.settimeout(max(seconds, 0.001))
