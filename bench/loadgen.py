"""The Python load generator: asyncio raw HTTP/1.1 keep-alive, run in its own process(es).

Three modes, all bounded by a request count and a wall-clock deadline:
    closed  N connections, each sends its next request as soon as the previous answer is in
            (maximum throughput; latency is per request, from send to last byte)
    open    a fixed arrival rate (requests/s) whatever the server does; latency is measured from
            the *intended* send time, so a stalled server shows up as latency instead of hiding
            behind fewer requests (no coordinated omission)
    burst   B requests at once on B connections, wait for all, repeat (a batch of calls)

A spec may name several bodies (`body_files`): each connection sends them in turn, as a client
does a conversation's turns (a tool call, then its result), and the time of each whole sequence is
kept (`rounds_ms`). With `ttft` (a regular expression over the raw answer bytes) the answer is read
as it arrives and the time to the first match is kept too (`ttft_ms`: a streamed answer's first token).

`run(spec, procs)` splits the load over `procs` forked child processes started together and merges
their samples (`python -m bench.loadgen SPEC_JSON` runs one generator alone). Everything stays on 127.0.0.1.
"""
from __future__ import annotations

import asyncio
import json
import multiprocessing
import re
import os
import resource
import sys
import time
from urllib.parse import urlsplit

HARD_SLACK_S = 15.0            # a child that overruns duration + timeout + this is killed
IDLE_REOPEN_S = 1.5            # a keep-alive connection idle longer than this is reopened before use:
                               # servers close idle ones (gunicorn's keepalive is 2-5 s) and a POST
                               # sent into that race would fail as no real client's would
OVERHEAD_HEADER = b"x-flowcall-overhead-ms"


class HttpError(Exception):
    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind


def build_request(url: str, headers: dict, body: bytes) -> bytes:
    parts = urlsplit(url)
    host = parts.netloc
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", "Content-Type: application/json",
             f"Content-Length: {len(body)}", "Connection: keep-alive"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


class Conn:
    """One keep-alive client connection: request bytes in, (status, overhead header, time of the first
    `ttft` match or None) out."""

    def __init__(self, host: str, port: int, expect: bytes = b"", ttft: re.Pattern | None = None):
        self.host, self.port = host, port
        self.expect = expect              # a 2xx body must contain this (e.g. a batch's '"failed":0')
        self.ttft = ttft                  # the answer bytes that mark its first token
        self.reader = self.writer = None
        self.last_used = 0.0

    async def open(self, timeout: float):
        try:
            self.reader, self.writer = await asyncio.wait_for(
                asyncio.open_connection(self.host, self.port, limit=256 * 1024), timeout)
        except TimeoutError:
            raise HttpError("connect_timeout") from None
        except OSError as exc:
            raise HttpError("connect", str(exc)) from None

    def close(self):
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(self, payload: bytes, timeout: float):
        if self.writer is not None and time.monotonic() - self.last_used > IDLE_REOPEN_S:
            self.close()
        if self.writer is None:
            await self.open(timeout)
        try:
            result = await asyncio.wait_for(self._exchange(payload), timeout)
            self.last_used = time.monotonic()
            return result
        except TimeoutError:
            self.close()
            raise HttpError("timeout") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            self.close()
            raise HttpError("read", type(exc).__name__) from None

    async def _exchange(self, payload: bytes):
        self.writer.write(payload)
        await self.writer.drain()
        head = await self.reader.readuntil(b"\r\n\r\n")
        lines = head.split(b"\r\n")
        status = int(lines[0].split(b" ", 2)[1])
        length, chunked, close, overhead = 0, False, False, None
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = value.strip().lower() == b"close"
            elif name == OVERHEAD_HEADER:
                overhead = float(value)
        body = b""
        first = None
        if chunked:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0], 16)
                start = max(0, len(body) - 256)         # a match may straddle two chunks
                body += (await self.reader.readexactly(size + 2))[:-2]
                if first is None and self.ttft is not None and self.ttft.search(body, start):
                    first = time.perf_counter()
                if size == 0:
                    break
        elif length:
            body = await self.reader.readexactly(length)
        if first is None and self.ttft is not None and self.ttft.search(body):
            first = time.perf_counter()
        if close:
            self.close()
        if self.expect and 200 <= status < 300 and self.expect not in body:
            raise HttpError("body_mismatch", f"2xx answer without {self.expect!r}")
        if self.ttft is not None and 200 <= status < 300 and first is None:
            raise HttpError("no_first_token", "2xx answer without its first token")
        return status, overhead, first


class Recorder:
    def __init__(self):
        self.latencies: list[float] = []     # ms, successful (2xx) requests only
        self.overheads: list[float] = []
        self.statuses: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.bursts: list[float] = []         # ms, burst mode: wall time of each whole batch
        self.ttft: list[float] = []           # ms, send to the first token (spec `ttft`), 2xx only
        self.rounds: list[float] = []         # ms, several bodies: one whole sequence, all 2xx
        self.first_error = ""
        self.in_flight = 0
        self.peak_in_flight = 0

    def ok(self, status: int, overhead, ms: float, ttft_ms: float | None = None) -> bool:
        self.statuses[str(status)] = self.statuses.get(str(status), 0) + 1
        if 200 <= status < 300:
            self.latencies.append(ms)
            if ttft_ms is not None:
                self.ttft.append(ttft_ms)
            if overhead is not None:
                self.overheads.append(overhead)
        else:
            self.errors[f"http_{status}"] = self.errors.get(f"http_{status}", 0) + 1
            self.first_error = self.first_error or f"HTTP {status}"
        return 200 <= status < 300

    def fail(self, err: HttpError):
        self.errors[err.kind] = self.errors.get(err.kind, 0) + 1
        self.first_error = self.first_error or str(err)


class UniquePayload:
    """Request bytes whose header `name` carries a value no other request of the run carries (each
    call a fresh Idempotency-Key, as a platform sends): `head` ends just before that header's value."""

    def __init__(self, head: bytes, tail: bytes, prefix: str):
        self.head, self.tail, self.prefix, self.n = head, tail, prefix, 0

    def __call__(self) -> bytes:
        self.n += 1
        return self.head + f"{self.prefix}-{self.n}".encode() + self.tail


async def _one(conn: Conn, payload, timeout: float, rec: Recorder, started: float | None = None) -> bool:
    """One request (bytes, or a UniquePayload making them), recorded; -> whether it succeeded."""
    started = time.perf_counter() if started is None else started
    rec.in_flight += 1
    rec.peak_in_flight = max(rec.peak_in_flight, rec.in_flight)
    try:
        status, overhead, first = await conn.request(payload() if callable(payload) else payload, timeout)
        return rec.ok(status, overhead, (time.perf_counter() - started) * 1000,
                      None if first is None else (first - started) * 1000)
    except HttpError as err:
        rec.fail(err)
        return False
    finally:
        rec.in_flight -= 1


def _conn(spec: dict, host: str, port: int) -> Conn:
    ttft = re.compile(spec["ttft"].encode()) if spec.get("ttft") else None
    return Conn(host, port, (spec.get("expect") or "").encode(), ttft)


async def closed_loop(spec: dict, host: str, port: int, payloads: list[bytes], rec: Recorder, deadline: float):
    budget = [spec["max_requests"]]
    timeout = spec["timeout_s"]

    async def worker():
        conn = _conn(spec, host, port)
        turn, round_ok, round_started = 0, True, time.perf_counter()
        try:
            while budget[0] > 0 and time.perf_counter() < deadline:
                budget[0] -= 1
                round_ok = await _one(conn, payloads[turn], timeout, rec) and round_ok
                turn = (turn + 1) % len(payloads)
                if turn == 0:
                    if round_ok and len(payloads) > 1:
                        rec.rounds.append((time.perf_counter() - round_started) * 1000)
                    round_ok, round_started = True, time.perf_counter()
        finally:
            conn.close()
    await asyncio.gather(*(worker() for _ in range(spec["connections"])))


async def open_loop(spec: dict, host: str, port: int, payloads: list[bytes], rec: Recorder, deadline: float):
    rate, total, timeout = spec["rate"], spec["max_requests"], spec["timeout_s"]
    max_conns = spec.get("connections") or 1000
    idle: list[Conn] = []
    opened = [0]
    slots = asyncio.Semaphore(max_conns)
    tasks = set()

    async def fire(intended: float, payload: bytes):
        # Waiting for a free connection counts as latency, and the timeout runs from the intended
        # send time: a server far slower than the rate times requests out instead of piling up a
        # queue that would outlast the phase.
        try:
            await asyncio.wait_for(slots.acquire(), max(0.001, intended + timeout - time.perf_counter()))
        except TimeoutError:
            rec.fail(HttpError("timeout", "no free connection before the timeout"))
            return
        try:
            conn = idle.pop() if idle else None
            if conn is None:
                conn, opened[0] = _conn(spec, host, port), opened[0] + 1
            await _one(conn, payload, max(0.001, intended + timeout - time.perf_counter()), rec, started=intended)
            idle.append(conn)
        finally:
            slots.release()

    t0 = time.perf_counter()
    for i in range(total):
        intended = t0 + i / rate
        if intended >= deadline:
            break
        delay = intended - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.ensure_future(fire(intended, payloads[i % len(payloads)]))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()


async def bursts(spec: dict, host: str, port: int, payloads: list[bytes], rec: Recorder, deadline: float):
    size, timeout = spec["burst"], spec["timeout_s"]
    payload = payloads[0]
    conns = [_conn(spec, host, port) for _ in range(size)]
    try:
        for _ in range(max(1, spec["max_requests"] // size)):
            if time.perf_counter() >= deadline:
                break
            started = time.perf_counter()
            before = sum(rec.errors.values())
            await asyncio.gather(*(_one(c, payload, timeout, rec) for c in conns))
            if sum(rec.errors.values()) == before:
                rec.bursts.append((time.perf_counter() - started) * 1000)
    finally:
        for c in conns:
            c.close()


MODES = {"closed": closed_loop, "open": open_loop, "burst": bursts}


async def _run_child(spec: dict) -> dict:
    parts = urlsplit(spec["url"])
    host, port = parts.hostname, parts.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the bench load generator only targets loopback addresses")
    payloads = []
    for name in spec.get("body_files") or [spec["body_file"]]:
        with open(name, "rb") as f:
            body = f.read()
        payload = build_request(spec["url"], spec.get("headers") or {}, body)
        if spec.get("unique_header"):        # e.g. Idempotency-Key: a fresh value per request
            marker = "\x00UNIQUE\x00"
            head, _, tail = build_request(spec["url"], {**(spec.get("headers") or {}), spec["unique_header"]: marker},
                                          body).partition(marker.encode("latin-1"))
            payload = UniquePayload(head, tail, f"{os.getpid()}-{time.time_ns()}-{len(payloads)}")
        payloads.append(payload)
    rec = Recorder()
    wait = spec.get("start_at", 0) - time.time()
    if wait > 0:
        await asyncio.sleep(wait)
    start = time.perf_counter()
    deadline = start + spec["duration_s"]
    await MODES[spec["mode"]](spec, host, port, payloads, rec, deadline)
    wall = time.perf_counter() - start
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"latencies_ms": rec.latencies, "overhead_ms": rec.overheads, "statuses": rec.statuses,
            "errors": rec.errors, "bursts_ms": rec.bursts, "ttft_ms": rec.ttft, "rounds_ms": rec.rounds,
            "first_error": rec.first_error,
            "wall_s": wall, "cpu_s": ru.ru_utime + ru.ru_stime, "peak_in_flight": rec.peak_in_flight}


def _split(spec: dict, procs: int) -> list[dict]:
    """Share connections, rate and request budget out over `procs` children."""
    def share(total, i):
        return total // procs + (1 if i < total % procs else 0)
    out = []
    for i in range(procs):
        s = dict(spec)
        s["max_requests"] = share(spec["max_requests"], i)
        if spec["mode"] == "closed":
            s["connections"] = share(spec["connections"], i)
        elif spec["mode"] == "open":
            s["rate"] = spec["rate"] / procs
            s["connections"] = max(1, share(spec.get("connections") or 1000, i))
        if s["max_requests"] > 0 and s.get("connections", 1) > 0:
            out.append(s)
    return out


def _child(spec: dict, conn) -> None:
    """A forked load-generator process: its own event loop, results back over a pipe."""
    try:
        _raise_nofile()
        limit = spec["duration_s"] + spec["timeout_s"] + HARD_SLACK_S / 2
        conn.send(("ok", asyncio.run(asyncio.wait_for(_run_child(spec), limit))))
    except BaseException as exc:  # noqa: BLE001 - whatever it was, the parent reports it
        conn.send(("error", repr(exc)))
    finally:
        conn.close()
        os._exit(0)


def run(spec: dict, procs: int = 1) -> dict:
    """Run `spec` in `procs` forked child processes started together; merged raw samples + totals.

    Forked rather than spawned: a child starts in milliseconds with nothing to import, which keeps
    many short phases (the smoke test) quick. spec: url, headers, body_file (or body_files), mode
    (closed|open|burst), connections, rate, burst, max_requests, duration_s, timeout_s, expect, ttft,
    and optionally unique_header (a header given a fresh value on every request).
    """
    procs = 1 if spec["mode"] == "burst" else max(1, procs)
    start_at = time.time() + 0.3 + 0.1 * procs if procs > 1 else 0   # several children start together
    parts = _split({**spec, "start_at": start_at}, procs)
    hard = spec["duration_s"] + spec["timeout_s"] + HARD_SLACK_S
    ctx = multiprocessing.get_context("fork")
    children = []
    for part in parts:
        reader, writer = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_child, args=(part, writer), daemon=True)
        proc.start()
        writer.close()
        children.append((proc, reader))
    outs = []
    try:
        deadline = time.monotonic() + hard
        for _proc, reader in children:
            if not reader.poll(max(0.0, deadline - time.monotonic())):
                raise RuntimeError("load generator overran its deadline")
            status, payload = reader.recv()
            if status != "ok":
                raise RuntimeError(f"load generator failed: {payload}")
            outs.append(payload)
    finally:
        for proc, reader in children:
            reader.close()
            proc.join(timeout=5)
            if proc.is_alive():
                proc.kill()
                proc.join()
    merged = {"latencies_ms": [], "overhead_ms": [], "bursts_ms": [], "ttft_ms": [], "rounds_ms": [],
              "statuses": {}, "errors": {},
              "first_error": "", "wall_s": 0.0, "cpu_s": 0.0, "peak_in_flight": 0, "procs": len(outs)}
    for o in outs:
        for key in ("latencies_ms", "overhead_ms", "bursts_ms", "ttft_ms", "rounds_ms"):
            merged[key] += o[key]
        for key in ("statuses", "errors"):
            for k, v in o[key].items():
                merged[key][k] = merged[key].get(k, 0) + v
        merged["first_error"] = merged["first_error"] or o["first_error"]
        merged["wall_s"] = max(merged["wall_s"], o["wall_s"])
        merged["cpu_s"] += o["cpu_s"]
        merged["peak_in_flight"] += o["peak_in_flight"]
    return merged


def _raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main() -> int:
    """`python -m bench.loadgen SPEC_JSON`: one generator in this process, JSON totals on stdout."""
    spec = json.loads(sys.argv[1])
    _raise_nofile()
    limit = spec["duration_s"] + spec["timeout_s"] + HARD_SLACK_S / 2
    result = asyncio.run(asyncio.wait_for(_run_child(spec), limit))
    sys.stdout.write(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
