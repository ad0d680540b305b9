"""`readable_now(fd)`: whether a socket has something to read, asked of the OS without waiting.

A pooled connection (to a provider, or to PostgreSQL) that the server has closed is readable: its
farewell or EOF, where an idle healthy one has nothing to read. The check runs before every reuse.
Under gevent, the patched `select.poll`, even with a 0 timeout, yields to the hub first: a greenlet
switch on every reuse for a check that never waits. The OS's own poll answers at once; poll, not
select, because a worker holding 1,000 connections has descriptors above select's limit of 1,024.
"""
from __future__ import annotations

import select
import sys


def _os_poll():
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("select"):
        return monkey.get_original("select", "poll")
    return select.poll


def readable_now(fd: int) -> bool:
    """True when `fd` has data, EOF or an error pending (poll with a 0 timeout)."""
    poller = _os_poll()()
    poller.register(fd, select.POLLIN)
    return bool(poller.poll(0))
