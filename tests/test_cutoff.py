"""The whole-exchange deadline (app/transport/watchdog.py) on the transports outside a provider call: a job
callback receiver that drips its status line is cut off at the attempt's timeout. (Provider calls
and streams are proven through gunicorn in test_e2e_deadlines.py; image downloads in
test_image_fetch.py.) The dripping server records whether we hung up on it: no stopwatch."""
from __future__ import annotations

import socket
import threading
import time

import pytest

from app.batch import callbacks
from app.transport.watchdog import Cutoff


class DrippingReceiver:
    """Accepts one connection, reads the request, then sends its head 1 byte per 0.3 s (bounded)."""

    HEAD = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nX-Padding: " + b"p" * 60 + b"\r\n\r\nok"

    def __init__(self, limit_s: float = 8.0):
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.limit_s = limit_s
        self.done = threading.Event()
        self.outcome = "running"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"

    def _serve(self):
        conn, _ = self.listener.accept()
        with conn:
            conn.recv(65536)
            started = time.monotonic()
            try:
                for i in range(len(self.HEAD)):
                    if time.monotonic() - started > self.limit_s:
                        conn.sendall(self.HEAD[i:])
                        break
                    conn.sendall(self.HEAD[i:i + 1])
                    time.sleep(0.3)       # the drip itself, not synchronisation
                self.outcome = "completed"
            except OSError:
                self.outcome = "client_left"
        self.done.set()

    def close(self):
        self.listener.close()


@pytest.fixture
def receiver():
    r = DrippingReceiver()
    yield r
    r.close()


def test_a_callback_receiver_dripping_its_status_line_is_cut_at_the_timeout(receiver):
    with pytest.raises(callbacks.CallbackFailed) as failed:
        callbacks.post(receiver.url, b"{}", secret="s" * 32, job_id="j", allow_private=["127.0.0.1"],
                       timeout_s=1.0)
    assert failed.value.retryable is True
    assert "did not answer within 1 s" in str(failed.value)
    assert receiver.done.wait(30) and receiver.outcome == "client_left"


def test_a_cutoff_disarmed_in_time_shuts_nothing():
    left, right = socket.socketpair()
    with left, right:
        with Cutoff(60.0) as cutoff:
            cutoff.watch(left)
            cutoff.disarm()
            cutoff._fire()              # a timer that was already firing when disarm() was called
        right.sendall(b"x")
        assert cutoff.expired is False and left.recv(1) == b"x"


def test_an_expired_cutoff_shuts_a_socket_watched_late():
    left, right = socket.socketpair()
    with left, right, Cutoff(60.0) as cutoff:
        cutoff._fire()              # the timer's own call, made here so nothing races
        cutoff.watch(left)
        assert cutoff.expired is True and left.recv(1) == b""


def _blocked_read_ends(sock, within_s: float = 10.0) -> bool:
    """True when a read on `sock` returns (shut down) rather than timing out after `within_s`."""
    sock.settimeout(within_s)
    try:
        return sock.recv(1) == b""
    except TimeoutError:
        return False


def test_the_watchdog_fires_an_armed_cutoff_at_its_deadline():
    left, right = socket.socketpair()
    with left, right, Cutoff(0.05) as cutoff:
        cutoff.watch(left)
        assert _blocked_read_ends(left) and cutoff.expired is True


def test_a_nearer_deadline_armed_later_wakes_the_watchdog():
    left, right = socket.socketpair()
    with left, right, Cutoff(60.0) as far:
        with Cutoff(0.05) as near:
            near.watch(left)
            assert _blocked_read_ends(left) and near.expired is True
        assert far.expired is False


def test_disarmed_cutoffs_do_not_pile_up_in_the_watchdog():
    from app.transport.watchdog import _watchdog
    for _ in range(5 * _watchdog._COMPACT_MIN):
        with Cutoff(60.0):
            pass
    assert len(_watchdog._due) <= 2 * _watchdog._COMPACT_MIN
