"""app/readable.py: the readability check before a pooled connection is reused (provider pools and
PostgreSQL's) tells a closed connection from an idle one, works above select's 1,024 descriptors,
and under gevent answers without yielding to the hub."""
from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from app.readable import readable_now
from app.transport.watchdog import WatchedHTTPConnection

ROOT = Path(__file__).resolve().parents[1]


def test_idle_is_not_readable_and_data_or_a_close_is():
    a, b = socket.socketpair()
    with a, b:
        assert readable_now(a.fileno()) is False
        b.sendall(b"x")
        assert readable_now(a.fileno()) is True
        a.recv(1)
        assert readable_now(a.fileno()) is False
        b.close()
        assert readable_now(a.fileno()) is True                 # EOF: the peer closed


def test_a_descriptor_above_selects_limit_is_checked():
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft <= 1100:
        pytest.skip(f"RLIMIT_NOFILE is {soft}: no descriptor above 1,024 to try")
    a, b = socket.socketpair()
    high = os.dup2(a.fileno(), 1100)
    try:
        assert readable_now(high) is False
        b.sendall(b"x")
        assert readable_now(high) is True
    finally:
        os.close(high)
        a.close()
        b.close()


def test_a_pooled_provider_connection_closed_by_the_server_is_not_reused():
    a, b = socket.socketpair()
    conn = WatchedHTTPConnection("127.0.0.1", 80)
    assert conn.is_connected is False                            # never dialled
    conn.sock = a
    assert conn.is_connected is True
    b.close()
    assert conn.is_connected is False
    a.close()
    assert conn.is_connected is False                            # a closed socket (fileno -1)


def test_under_gevent_the_check_does_not_yield_to_other_greenlets():
    """gevent's patched poll, even with a 0 timeout, runs the hub (so a spawned greenlet would run);
    the check uses the OS's poll, which returns at once."""
    code = (
        "from gevent import monkey; monkey.patch_all()\n"
        "import gevent, select, socket\n"
        "from app.readable import readable_now\n"
        "a, b = socket.socketpair()\n"
        "ran = []\n"
        "gevent.spawn(ran.append, 1)\n"
        "readable_now(a.fileno())\n"
        "mine = bool(ran)\n"
        "p = select.poll(); p.register(a.fileno(), select.POLLIN); p.poll(0)\n"
        "print(mine, bool(ran))\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True"]             # ours did not yield; gevent's did
