"""`flowcall batch`'s run: every row not yet in OUTPUT through the gateway, as the service would
call it, each finished row appended at once, progress on stderr; and the dry run's estimate.

The output is the unit of progress. Every finished row is appended at once, one write per record,
so a crash leaves at most a torn last line, which the next run drops; rows already in OUTPUT are
skipped (matched by --id-column, or by a hash of the row), so a run killed halfway calls again
only the rows that were in flight (app/batch/resume.py: never a row whose answer was received). Rows
finish out of order under concurrency; once every row is in, the file is put back in input order
with an atomic rename.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from app import model_defaults
from app.tenancy.auth import Principal, authenticate_api_key
from app.batch.items import ItemContext, error_body, execute_item, run_bounded
from app.batch.reader import Plan, UsageError, file_format, make_plan, read_rows, row_keys
from app.batch.writer import Existing, Output, data_columns
from app.calls import Usage
from app.catalog import Catalog
from app.config import Settings
from app.errors import FlowcallError, ValidationError
from app.batch.resume import answer_lost, record_interrupted, recorded
from app.routing.resolve import route
from app.schemas import call_from_body
from app.services import Services
from app.tenancy.store import Store

EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130


# -- progress ---------------------------------------------------------------------------------------
class Progress:
    """A bar with rate, ETA, running cost and errors on a terminal; a plain line every few seconds
    otherwise (cron mails, CI logs)."""

    def __init__(self, total: int, stream, tty: bool, interval_s: float = 10.0, clock=time.monotonic):
        self.total, self.stream, self.tty, self.interval_s, self.clock = total, stream, tty, interval_s, clock
        self.started = self.last = clock()
        self.done = self.failed = 0
        self.cost = 0.0

    def add(self, ok: bool, cost: float | None) -> None:
        self.done += 1
        self.failed += 0 if ok else 1
        self.cost += cost or 0.0
        now = self.clock()
        if now - self.last >= (0.1 if self.tty else self.interval_s) or self.done == self.total:
            self.last = now
            self.show()

    def line(self) -> str:
        elapsed = max(self.clock() - self.started, 1e-9)
        rate = self.done / elapsed
        eta = (self.total - self.done) / rate if rate > 0 else None
        pct = 100 * self.done / self.total if self.total else 100.0
        eta_text = _duration(eta) if eta is not None else "?"
        return (f"{self.done}/{self.total} {pct:3.0f}%  {rate:.1f} rows/s  ETA {eta_text}  "
                f"${self.cost:.6f}  {self.failed} error{'s' if self.failed != 1 else ''}")

    def show(self) -> None:
        if self.tty:
            width = 24
            filled = int(width * self.done / self.total) if self.total else width
            self.stream.write(f"\r[{'#' * filled}{'-' * (width - filled)}] {self.line()}\x1b[K")
        else:
            self.stream.write(f"progress: {self.line()}\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.total:
            self.stream.write("\n")
            self.stream.flush()


def _duration(seconds: float) -> str:
    seconds = round(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


# -- the run ----------------------------------------------------------------------------------------
@dataclass
class Prepared:
    input_path: str
    output: Output
    plan: Plan
    rows: list[dict]
    keys: list[str]
    existing: Existing


def prepare(args, repair: bool = True) -> Prepared:
    in_fmt = file_format(args.input, args.input_format)
    out_fmt = args.format or (file_format(args.output, None) if Path(args.output).suffix else in_fmt)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        raise UsageError("OUTPUT must not be the INPUT file")
    columns, rows = read_rows(args.input, in_fmt)
    plan = make_plan(args, columns, in_fmt)
    keys = row_keys(rows, args.id_column)
    output = Output(args.output, out_fmt, columns, data_columns(plan.defaults))
    return Prepared(args.input, output, plan, rows, keys, output.load(repair=repair))


def principal_of(args, settings: Settings, store: Store) -> Principal:
    """Whose calls these are: --key (or FLOWCALL_KEY)'s key, else --tenant/--agent."""
    key = args.key or settings.cli_key
    if key:
        try:
            return authenticate_api_key(key, store)
        except FlowcallError as err:
            raise UsageError(f"--key: {err.message}") from None
    if args.tenant:
        return Principal(tenant_id=args.tenant, agent_id=args.agent, method="cli")
    raise UsageError("say whose calls these are: --tenant UUID, or --key (or FLOWCALL_KEY) with an API key; "
                     "the ledger, limits and budgets use it")


class _StopOnSignal:
    """First Ctrl-C (or SIGTERM): stop taking rows, let the calls in flight finish and be written.
    A second Ctrl-C quits at once; every row already written stays."""

    def __init__(self, stream):
        self.stream = stream
        self.event = threading.Event()
        self._previous: dict = {}

    def _handle(self, signum, frame):
        if self.event.is_set():
            os._exit(EXIT_INTERRUPTED)
        self.event.set()
        self.stream.write("\nstopping: finishing the calls in flight (Ctrl-C again to quit now)\n")
        self.stream.flush()

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self.event

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


RUN_ID_SUFFIX = ".flowcall-run"


class RunJournal:
    """OUTPUT.flowcall-run, beside OUTPUT: the id of OUTPUT's lifetime on its first line, then one
    `started <request id>` line written before each row's call. Every row's ledger request id derives
    from the id, so a resumed run finds the answers it already paid for, and the started lines tell
    it which calls were in flight when the last run died (app/batch/resume.py). A new OUTPUT (none there
    yet) gets a new id, so an old run's ledger rows never match it."""

    def __init__(self, output_path: str):
        self.path = output_path + RUN_ID_SUFFIX
        self.output_path = output_path
        self._fd: int | None = None

    def open(self) -> tuple[str, set[str]]:
        """(run id, request ids started by earlier runs into this OUTPUT)."""
        if os.path.exists(self.output_path):
            try:
                lines = Path(self.path).read_text(encoding="ascii").split("\n")
            except (OSError, UnicodeDecodeError):
                lines = []
            if lines and re.fullmatch(r"[0-9a-f]{32}", lines[0]):
                self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
                return lines[0], {x[len("started "):] for x in lines[1:] if x.startswith("started ")}
        run_id = uuid.uuid4().hex
        temp = f"{self.path}.tmp-{os.getpid()}"
        with open(temp, "w", encoding="ascii") as f:
            f.write(run_id + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        return run_id, set()

    def started(self, request_id: str) -> None:
        os.write(self._fd, f"started {request_id}\n".encode("ascii"))     # one write: never half a line

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def row_request_id(run_id: str, key: str) -> str:
    """The ledger's request id for one row of one OUTPUT: the same on every run into that OUTPUT."""
    return f"cli-{run_id}.{hashlib.sha256(key.encode('utf-8', 'surrogatepass')).hexdigest()[:24]}"


def run(args, p: Prepared, services: Services, principal: Principal, stderr) -> int:
    todo = [(i, row) for i, row in enumerate(p.rows) if p.keys[i] not in p.existing.records]
    if len(todo) < len(p.rows):
        print(f"resuming: {len(p.rows) - len(todo)} of {len(p.rows)} rows are already in {args.output}",
              file=stderr)
    journal = RunJournal(p.output.path)
    run_id, started_before = journal.open()
    request_ids = {i: row_request_id(run_id, p.keys[i]) for i, _ in todo}
    statuses = recorded(services.store.engine, principal.tenant_id, "cli_batch", request_ids.values()) if todo else {}
    lost = {rid for rid, seen in statuses.items() if 200 in seen}
    if lost:
        print(f"{len(lost)} row(s) were answered and billed by the run that stopped, but their answers were "
              f"not saved: they are not called again (error answer_lost)", file=stderr)
    in_flight = [rid for rid in request_ids.values() if rid in started_before and rid not in statuses]
    for rid in in_flight:
        record_interrupted(services.ledger, principal, "cli_batch", rid, p.plan.defaults.get("model"))
    if in_flight:
        print(f"{len(in_flight)} row(s) were in flight when the last run stopped: recorded in the ledger as "
              f"interrupted, and called again", file=stderr)
    ctx = ItemContext(services.gateway, principal, "cli_batch", f"cli-{run_id}", services.settings.max_image_bytes)
    progress = Progress(len(todo), stderr, tty=stderr.isatty())
    tokens = {"input_tokens": 0, "output_tokens": 0}
    failed_now: set[str] = set()
    started = time.monotonic()

    def call(index: int, row: dict) -> dict:
        rid = request_ids[index]
        if rid in lost:
            return error_body(answer_lost(rid), rid)
        journal.started(rid)
        try:
            data = p.plan.prepare(row)
        except ValidationError as err:
            return error_body(err, rid)
        return execute_item(ctx, data, rid)[1]

    p.output.open()
    try:
        with _StopOnSignal(stderr) as stop:
            for index, result in run_bounded(todo, call, args.concurrency, stop):
                key = p.keys[index]
                p.output.append(p.output.render(key, p.rows[index], result))
                if not result.get("success"):
                    failed_now.add(key)
                for k in tokens:
                    tokens[k] += int((result.get("usage") or {}).get(k) or 0)
                progress.add(bool(result.get("success")), result.get("cost"))
            interrupted = stop.is_set()
    finally:
        p.output.close()
        journal.close()
        progress.close()
    final = p.output.load()
    complete = all(k in final.records for k in p.keys)
    if complete:
        _put_in_order(p, final)
    failed_total = len(final.failed & set(p.keys))
    _summary(stderr, p, final, progress, tokens, failed_now, time.monotonic() - started, interrupted, args.output)
    if interrupted and not complete:
        return EXIT_INTERRUPTED
    return EXIT_FAILED_ROWS if failed_total and not args.allow_failures else EXIT_OK


def _put_in_order(p: Prepared, final: Existing) -> None:
    position = {k: i for i, k in enumerate(p.keys)}
    written = list(final.records)
    ordered = sorted(written, key=lambda k: position.get(k, len(position)))
    if ordered != written:
        p.output.rewrite([final.records[k] for k in ordered])


def _summary(stream, p: Prepared, final: Existing, progress: Progress, tokens: dict, failed_now: set,
             elapsed: float, interrupted: bool, output: str) -> None:
    in_file = sum(1 for k in p.keys if k in final.records)
    failed = len(final.failed & set(p.keys))
    state = "stopped" if interrupted and in_file < len(p.keys) else "done"
    print(f"{state}: {in_file} of {len(p.rows)} rows in {output} ({in_file - failed} succeeded, {failed} failed); "
          f"this run: {progress.done} rows, {len(failed_now)} failed, {tokens['input_tokens']} input + "
          f"{tokens['output_tokens']} output tokens, ${progress.cost:.6f}, {_duration(elapsed)}", file=stream)
    if state == "stopped":
        print(f"run the same command again to do the {len(p.keys) - in_file} rows left", file=stream)
    stream.flush()


# -- dry run ----------------------------------------------------------------------------------------
def estimate_tokens(text: str) -> int:
    """About four characters a token (English); good enough to size a bill before paying it."""
    return (len(text) + 3) // 4


def dry_run(p: Prepared, settings: Settings, out) -> int:
    catalog = Catalog.load(settings.models_file)
    per_model: dict[str, dict] = {}
    invalid = 0
    todo = [row for key, row in zip(p.keys, p.rows, strict=False) if key not in p.existing.records]
    for row in todo:
        try:
            call = call_from_body(p.plan.prepare(row))
            model = route(call, catalog, settings).candidates[0].model
        except FlowcallError:
            invalid += 1
            continue
        schema_text = json.dumps(call.response_format.schema) if call.response_format and \
            call.response_format.schema else ""
        tokens_in = sum(estimate_tokens(m.text) + 4 for m in call.messages) + estimate_tokens(schema_text)
        entry = per_model.setdefault(model.id, {"rows": 0, "input": 0, "output": 0, "model": model})
        entry["rows"] += 1
        entry["input"] += tokens_in
        entry["output"] += model_defaults.max_tokens(model, call.options)   # what is sent, thinking room included
    print(f"dry run: {len(todo)} rows to call ({len(p.rows) - len(todo)} already in the output, "
          f"{invalid} that would fail before any call); nothing is called or written", file=out)
    total_in = total_out = 0.0
    unpriced = []
    for model_id, e in sorted(per_model.items()):
        model = e["model"]
        cost_in = model.cost(Usage(input_tokens=e["input"]))
        cost_out = model.cost(Usage(output_tokens=e["output"]))
        if cost_in is None:
            unpriced.append(model_id)
            price = "no known price"
        else:
            total_in += cost_in
            total_out += cost_out
            price = f"${cost_in:.4f} input + up to ${cost_out:.4f} output"
        print(f"  {model_id}: {e['rows']} rows, ~{e['input']} input tokens, at most {e['output']} output "
              f"tokens (maxTokens); {price}", file=out)
    print(f"estimated cost: ${total_in:.4f} for the input, up to ${total_in + total_out:.4f} if every answer "
          f"used its maxTokens" + (f" (not counting {', '.join(unpriced)}: no price)" if unpriced else ""), file=out)
    return EXIT_OK
