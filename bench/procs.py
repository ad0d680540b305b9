"""Process accounting from /proc: a process tree's CPU seconds and memory, sampled while a run goes.

RSS summed over the gunicorn master and its workers is what the issue's memory target names; it
counts pages shared after fork once per process, so PSS (proportional set size, from
/proc/<pid>/smaps_rollup) is reported beside it as the closer figure for "memory this costs".
"""
from __future__ import annotations

import os
import resource
import threading
import time

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2:].split()     # fields from `state` on (the name may hold spaces)


def children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            fields = _stat_fields(int(name))
            if fields:
                kids.setdefault(int(fields[1]), []).append(int(name))
    return kids


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants that are alive now."""
    kids = children_map()
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def cpu_seconds(pids) -> float:
    total = 0
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            total += int(fields[11]) + int(fields[12])     # utime, stime
    return total / CLK_TCK


def children_cpu_seconds() -> float:
    """CPU of this process's finished, waited-for children (wrk, load generator processes)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent not idle since boot (/proc/stat), to spot other load on the box."""
    with open("/proc/stat") as f:
        values = [int(x) for x in f.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)     # idle + iowait
    return (sum(values[:8]) - idle) / CLK_TCK


def rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE
    except OSError:
        return 0


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class Sampler(threading.Thread):
    """Samples the memory of a process tree every `interval` s; peaks are kept per labelled phase."""

    def __init__(self, root_pid: int, interval: float = 0.1):
        super().__init__(daemon=True)
        self.root_pid = root_pid
        self.interval = interval
        self.phase = "idle"
        self.peaks: dict[str, dict] = {}
        self._halt = threading.Event()
        self._pids = tree(root_pid)
        self._pids_at = time.monotonic()

    def pids(self) -> list[int]:
        if time.monotonic() - self._pids_at > 1.0:       # workers are re-listed once a second
            self._pids, self._pids_at = tree(self.root_pid), time.monotonic()
        return self._pids

    def sample(self) -> dict:
        pids = self.pids()
        return {"rss_mb": sum(rss_bytes(p) for p in pids) / 2**20,
                "pss_mb": sum(pss_bytes(p) for p in pids) / 2**20, "processes": len(pids)}

    def record(self, label: str | None = None) -> None:
        """One sample into a phase's peak (also taken at each phase's start and end, so a phase
        shorter than the interval still has a figure)."""
        s = self.sample()
        peak = self.peaks.setdefault(label or self.phase, {"rss_mb": 0.0, "pss_mb": 0.0, "processes": 0})
        for k in peak:
            peak[k] = max(peak[k], s[k])

    def run(self):
        deadline = time.monotonic() + 6 * 3600          # bounded, whatever happens to the caller
        while not self._halt.is_set() and time.monotonic() < deadline:
            self.record()
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=5)
