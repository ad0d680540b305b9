"""`flowcall batch INPUT -o OUTPUT`: a CSV or JSONL file through the same core as the service
(providers, retries, limits, budgets, ledger), in this process; and `flowcall worker`, the job
queue's consumers.

The output is the unit of progress. Every finished row is appended at once, one write per record,
so a crash leaves at most a torn last line, which the next run drops; rows already in OUTPUT are
skipped (matched by --id-column, or by a hash of the row), so a run killed halfway calls again
only the rows that were in flight (app/resume.py: never a row whose answer was received). Rows
finish out of order under concurrency; once every row is in, the file is put back in input order
with an atomic rename.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import re
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from . import model_defaults
from .batch import ItemContext, error_body, execute_item, prepare_item, run_bounded
from .errors import FlowcallError, ValidationError

MAX_CONCURRENCY = 64
RESULT_FIELDS = ("row_id", "success", "response", "data", "model", "provider", "finish_reason", "input_tokens",
                 "output_tokens", "total_tokens", "cost", "latency_ms", "error_code", "error")
_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_ .\-]*)\}")
EXIT_OK, EXIT_FAILED_ROWS, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
BATCH_DESCRIPTION = """Run every row of INPUT as a call, in this process, through the same core as the service
(providers, retries, rate limits, budgets, the usage ledger), and write OUTPUT with the input columns
plus each row's result.

Resumable: rows already in OUTPUT are skipped, so rerunning the same command after a crash, a kill
or Ctrl-C calls only the rows left. The first Ctrl-C stops taking rows and waits for the calls in
flight; a second one quits at once. Exit status: 0 all rows succeeded, 1 some failed (0 with
--allow-failures), 2 a usage error (nothing called), 130 stopped before the end."""


class UsageError(Exception):
    """A problem with the command line or the files: nothing was called."""


# -- input ------------------------------------------------------------------------------------------
def file_format(path: str, explicit: str | None) -> str:
    if explicit:
        return explicit
    suffix = Path(path).suffix.lower()
    if suffix == ".csv":
        return "csv"
    if suffix in (".jsonl", ".ndjson", ".json"):
        return "jsonl"
    raise UsageError(f"cannot tell the format of {path} from its name: pass --format/--input-format csv|jsonl")


def read_rows(path: str, fmt: str) -> tuple[list[str], list[dict]]:
    """(column names in order, rows) of a CSV file (header line) or a JSONL file (one object a line)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if fmt == "csv":
                reader = csv.DictReader(f)
                rows = [{k: (v if v is not None else "") for k, v in r.items() if k is not None} for r in reader]
                return list(reader.fieldnames or []), rows
            rows = []
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise UsageError(f"{path} line {number} is not JSON") from None
                if not isinstance(row, dict):
                    raise UsageError(f"{path} line {number} is not a JSON object")
                rows.append(row)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    return list(dict.fromkeys(k for r in rows for k in r)), rows


def fill_template(template: str, row: dict) -> str:
    """`{column}` -> the row's value; `{{` and `}}` are literal braces; anything else (JSON in the
    prompt) is left alone."""
    def replace(match):
        token = match.group(0)
        if token in ("{{", "}}"):
            return token[0]
        name = match.group(1)
        if name not in row:
            raise ValidationError(f"The prompt template names {{{name}}}, which this row does not have.",
                                  fields={"prompt": f"no column {name}"})
        return _text(row[name])
    return _PLACEHOLDER.sub(replace, template)


def template_columns(template: str) -> list[str]:
    return [m.group(1) for m in _PLACEHOLDER.finditer(template) if m.group(1)]


def _text(value) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value, ensure_ascii=False)


def row_keys(rows: list[dict], id_column: str | None) -> list[str]:
    """What identifies each row across runs: its --id-column, or a hash of its content (with the
    occurrence number when identical rows repeat)."""
    keys, seen, repeats = [], {}, {}
    for number, row in enumerate(rows, 1):
        if id_column:
            if row.get(id_column) in (None, ""):
                raise UsageError(f"row {number} has no value in the id column {id_column!r}")
            key = f"id:{_text(row[id_column])}"
            if key in seen:
                raise UsageError(f"rows {seen[key]} and {number} share the id {row[id_column]!r} (--id-column)")
        else:
            digest = hashlib.sha256(json.dumps(row, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:16]
            key = f"h:{digest}"
            repeats[key] = repeats.get(key, 0) + 1
            key = key if repeats[key] == 1 else f"{key}#{repeats[key]}"
        seen[key] = number
        keys.append(key)
    return keys


# -- what to send for a row -------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """How a row becomes a call body: a template, one column, or the row itself (JSONL call bodies)."""
    mode: str                      # template | column | body
    defaults: dict
    template: str | None = None
    column: str | None = None

    def raw_item(self, row: dict) -> dict:
        if self.mode == "template":
            return {"prompt": fill_template(self.template, row)}
        if self.mode == "column":
            return {"prompt": _text(row.get(self.column))}
        return row

    def prepare(self, row: dict) -> dict:
        """The validated call body; ValidationError for a row that cannot become a call."""
        return prepare_item(self.raw_item(row), self.defaults)[1]


def load_response_format(path: str) -> dict:
    """A file with a response_format object, or a bare JSON Schema (then strict json_schema)."""
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UsageError(f"cannot read the response format {path}: {exc}") from None
    if not isinstance(spec, dict):
        raise UsageError(f"{path} must hold a JSON object")
    if spec.get("type") in ("json_object", "json_schema", "text") and "properties" not in spec:
        return spec
    name = re.sub(r"[^A-Za-z0-9_-]", "_", Path(path).stem)[:64] or "response"
    return {"type": "json_schema", "json_schema": {"name": name, "strict": True, "schema": spec}}


def make_plan(args, columns: list[str], fmt: str) -> Plan:
    defaults: dict = {}
    options = {k: v for k, v in (("maxTokens", args.max_tokens), ("temperature", args.temperature))
               if v is not None}
    if options:
        defaults["options"] = options
    if args.task:
        defaults["context"] = {"task": args.task}
    if args.response_format:
        defaults["response_format"] = load_response_format(args.response_format)
    if args.system:
        defaults["messages"] = [{"role": "system", "content": args.system}]
    if args.prompt and args.column:
        raise UsageError("pass --prompt TEMPLATE or --column NAME, not both")
    if args.prompt or args.column or fmt == "csv":
        column = args.column or (None if args.prompt else "prompt")
        if column and column not in columns:
            raise UsageError(f"the input has no column {column!r}: pass --column NAME or --prompt TEMPLATE "
                             f"(columns: {', '.join(columns) or 'none'})")
        if args.prompt and fmt == "csv":
            missing = [c for c in template_columns(args.prompt) if c not in columns]
            if missing:
                raise UsageError(f"the prompt template names {', '.join(missing)}, not in the input's columns "
                                 f"({', '.join(columns)})")
        defaults["model"] = args.model or "auto"
        return Plan("template" if args.prompt else "column", defaults, template=args.prompt, column=column)
    if args.model:
        defaults["model"] = args.model
    return Plan("body", defaults)


# -- output -----------------------------------------------------------------------------------------
def data_columns(defaults: dict) -> list[str]:
    """`data.<field>` per property of the response schema (nested objects flattened), else `data`."""
    schema = ((defaults.get("response_format") or {}).get("json_schema") or {}).get("schema")
    paths: list[str] = []

    def walk(node: dict, prefix: str) -> None:
        for name, sub in (node.get("properties") or {}).items():
            if isinstance(sub, dict) and sub.get("type") == "object" and sub.get("properties"):
                walk(sub, f"{prefix}{name}.")
            else:
                paths.append(f"{prefix}{name}")
    if isinstance(schema, dict):
        walk(schema, "data.")
    return paths or ["data"]


def outcome_fields(result: dict) -> dict:
    """An item result (success or error body) reduced to what a row records."""
    ok = bool(result.get("success"))
    error = result.get("error") or {}
    return {"success": ok, "response": result.get("response") if ok else None,
            "data": result.get("data") if ok else None, "model": result.get("model"),
            "provider": result.get("provider") or error.get("provider"),
            "finish_reason": result.get("finish_reason"), "usage": result.get("usage"),
            "cost": result.get("cost"), "latency_ms": result.get("latency_ms"),
            "error": error or None}


def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def _dig(data, dotted: str):
    for part in dotted.split("."):
        if not isinstance(data, dict) or part not in data:
            return None
        data = data[part]
    return data


@dataclass
class Existing:
    """What OUTPUT already holds: each row's record (for reordering) and whether it succeeded."""
    records: dict = field(default_factory=dict)       # key -> serialized record (str, newline included)
    failed: set = field(default_factory=set)
    repaired: bool = False


class Output:
    """OUTPUT as a sequence of records, appended one write each."""

    def __init__(self, path: str, fmt: str, input_columns: list[str], data_cols: list[str]):
        self.path = path
        self.fmt = fmt
        self.input_columns = input_columns
        taken = set(input_columns)
        self.names = {f: (f"result_{f}" if f in taken else f) for f in RESULT_FIELDS if f != "data"}
        self.data_cols = [f"result_{c}" if c in taken else c for c in data_cols]
        self._data_paths = [c[len("data."):] if c.startswith("data.") else None for c in data_cols]
        self.columns = (input_columns + [self.names["row_id"], self.names["success"], self.names["response"]]
                        + self.data_cols + [self.names[f] for f in RESULT_FIELDS[4:]])
        self._fd: int | None = None
        self._lock = threading.Lock()

    # serialization
    def render(self, key: str, row: dict, result: dict) -> str:
        out = outcome_fields(result)
        if self.fmt == "jsonl":
            return json.dumps({"row_id": key, "input": row, **out}, ensure_ascii=False) + "\n"
        usage = out["usage"] or {}
        error = out["error"] or {}
        values = {c: _cell(row.get(c)) for c in self.input_columns}
        values.update({self.names["row_id"]: key, self.names["success"]: _cell(out["success"]),
                       self.names["response"]: _cell(out["response"])})
        for column, path in zip(self.data_cols, self._data_paths):
            values[column] = _cell(out["data"] if path is None else _dig(out["data"], path))
        values.update({self.names[f]: _cell(out[f]) for f in ("model", "provider", "finish_reason", "cost",
                                                             "latency_ms")})
        values.update({self.names[f]: _cell(usage.get(f)) for f in ("input_tokens", "output_tokens", "total_tokens")})
        values.update({self.names["error_code"]: _cell(error.get("code")),
                       self.names["error"]: _cell(error.get("message"))})
        return self._csv_line([values[c] for c in self.columns])

    @staticmethod
    def _csv_line(cells: list[str]) -> str:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\n").writerow(cells)
        return buffer.getvalue()

    # reading back
    def load(self, repair: bool = True) -> Existing:
        """The records already written; a torn or foreign line is dropped (and the file rewritten)."""
        existing = Existing()
        try:
            text = Path(self.path).read_text(encoding="utf-8")
        except FileNotFoundError:
            return existing
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read the existing output {self.path}: {exc}") from None
        self._parse(text, existing)
        existing.repaired = existing.repaired or bool(text) and not text.endswith("\n")
        if repair and existing.repaired:
            self.rewrite(list(existing.records.values()))
        return existing

    def _parse(self, text: str, existing: Existing) -> None:
        if not text:
            return
        if self.fmt == "jsonl":
            # split on "\n" only: answers may hold U+2028 and friends, which splitlines() breaks on
            for line in (x for x in text.split("\n") if x):
                try:
                    record = json.loads(line)
                    key, ok = record["row_id"], record["success"]
                except (ValueError, KeyError, TypeError):
                    existing.repaired = True
                    continue
                existing.records[key] = line + "\n"
                if not ok:
                    existing.failed.add(key)
            return
        header_line = self._csv_line(self.columns)
        if not text.startswith(header_line):
            if "\n" in text or not header_line.startswith(text):
                raise UsageError(f"{self.path} was written with other columns; choose a new OUTPUT "
                                 f"(or the same options as the run that wrote it)")
            existing.repaired = True            # a header torn by a crash: nothing else is in the file
            return
        reader = csv.reader(io.StringIO(text[len(header_line):]), strict=True)
        key_at, ok_at = self.columns.index(self.names["row_id"]), self.columns.index(self.names["success"])
        try:
            for cells in reader:
                if len(cells) != len(self.columns) or cells[ok_at] not in ("true", "false") or not cells[key_at]:
                    existing.repaired = True
                    continue
                existing.records[cells[key_at]] = self._csv_line(cells)
                if cells[ok_at] == "false":
                    existing.failed.add(cells[key_at])
        except csv.Error:
            existing.repaired = True            # a quoted field cut short by a crash

    # writing
    def rewrite(self, records: list[str]) -> None:
        """Replace OUTPUT atomically (temp file + rename): a crash leaves the old or the new file."""
        temp = f"{self.path}.tmp-{os.getpid()}"
        with open(temp, "w", encoding="utf-8", newline="") as f:
            if self.fmt == "csv":
                f.write(self._csv_line(self.columns))
            f.writelines(records)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, self.path)

    def open(self) -> None:
        if not os.path.exists(self.path) or os.path.getsize(self.path) == 0:
            self.rewrite([])
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def append(self, record: str) -> None:
        """One record, one write: a reader never sees half of it, unless the process dies mid-call."""
        data = memoryview(record.encode("utf-8"))
        with self._lock:
            while data:
                data = data[os.write(self._fd, data):]

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


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


def _principal(args, store):
    from .auth import Principal, authenticate_api_key
    key = args.key or os.environ.get("FLOWCALL_KEY")
    if key:
        try:
            return authenticate_api_key(key, store)
        except FlowcallError as err:
            raise UsageError(f"--key: {err.message}") from None
    if args.tenant:
        return Principal(tenant_id=args.tenant, agent_id=args.agent, method="cli")
    raise UsageError("say whose calls these are: --tenant UUID, or --key (or FLOWCALL_KEY) with an API key; "
                     "the ledger, limits and budgets use it")


def _services():
    from . import create_app
    app = create_app({"FLOWCALL_LOG_LEVEL": os.environ.get("FLOWCALL_LOG_LEVEL") or "WARNING"})
    return app.extensions["flowcall"]


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


def cmd_batch(args, services=None, stderr=None) -> int:
    stderr = stderr or sys.stderr
    try:
        if not 1 <= args.concurrency <= MAX_CONCURRENCY:
            raise UsageError(f"--concurrency must be between 1 and {MAX_CONCURRENCY}")
        prepared = prepare(args, repair=not args.dry_run)
        if args.dry_run:
            return dry_run(prepared, services, sys.stdout)
        services = services or _services()
        principal = _principal(args, services.store)
    except UsageError as exc:
        print(f"flowcall batch: {exc}", file=stderr)
        return EXIT_USAGE
    return _run(args, prepared, services, principal, stderr)


RUN_ID_SUFFIX = ".flowcall-run"


class RunJournal:
    """OUTPUT.flowcall-run, beside OUTPUT: the id of OUTPUT's lifetime on its first line, then one
    `started <request id>` line written before each row's call. Every row's ledger request id derives
    from the id, so a resumed run finds the answers it already paid for, and the started lines tell
    it which calls were in flight when the last run died (app/resume.py). A new OUTPUT (none there
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


def _run(args, p: Prepared, services, principal, stderr) -> int:
    from .resume import answer_lost, record_interrupted, recorded
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


def dry_run(p: Prepared, services, out) -> int:
    from .calls import Usage
    from .catalog import Catalog
    from .config import Settings
    from .routing import route
    from .schemas import call_from_body
    if services is not None:
        settings, catalog = services.settings, services.catalog
    else:
        settings = Settings.from_env()
        catalog = Catalog.load(settings.models_file)
    per_model: dict[str, dict] = {}
    invalid = 0
    todo = [row for key, row in zip(p.keys, p.rows) if key not in p.existing.records]
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


# -- the worker -------------------------------------------------------------------------------------
def cmd_worker(args) -> int:
    from . import create_app
    from .jobs import Jobs
    jobs = Jobs(create_app().extensions["flowcall"])
    where = "Redis" if jobs.settings.redis_url else jobs.settings.queue_path
    print(f"flowcall worker: queue {where}, {args.workers or jobs.settings.workers} threads", file=sys.stderr)
    jobs.work(args.workers)
    return EXIT_OK


# -- the command line -------------------------------------------------------------------------------
def _uuid(value: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r} is not a UUID") from None


def register(subparsers) -> None:
    """Add `batch` and `worker` to the `flowcall` command."""
    b = subparsers.add_parser(
        "batch", help="run every row of a CSV/JSONL file as a call (in-process; resumable)",
        description=BATCH_DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("input", help="CSV (header line) or JSONL (one object a line)")
    b.add_argument("-o", "--output", required=True, help="CSV or JSONL; rows already in it are skipped")
    what = b.add_argument_group("what to send")
    what.add_argument("--prompt", metavar="TEMPLATE",
                      help='template with {column} placeholders, e.g. "Classify this ticket: {text}"')
    what.add_argument("--column", metavar="NAME", help="the column that holds the prompt (CSV default: prompt)")
    what.add_argument("--system", help="a system message for every row")
    what.add_argument("--model", help="model spec (default auto; for JSONL call bodies, a default)")
    what.add_argument("--task", help="context.task, the routing hint for auto")
    what.add_argument("--response-format", metavar="SCHEMA_JSON",
                      help="a JSON Schema file (strict structured output) or a response_format object")
    what.add_argument("--max-tokens", type=int, help="options.maxTokens")
    what.add_argument("--temperature", type=float, help="options.temperature")
    run = b.add_argument_group("how to run")
    run.add_argument("--concurrency", type=int, default=4, help="calls at once (default 4)")
    run.add_argument("--id-column", metavar="NAME",
                     help="column that identifies a row across runs (default: a hash of the row)")
    run.add_argument("--input-format", choices=["csv", "jsonl"], help="default: from INPUT's name")
    run.add_argument("--format", choices=["csv", "jsonl"], help="OUTPUT's format (default: from its name)")
    run.add_argument("--tenant", type=_uuid, help="tenant the calls are billed to (or use --key)")
    run.add_argument("--agent", type=_uuid, help="agent UUID for the ledger (with --tenant)")
    run.add_argument("--key", help="an API key: its tenant, limits and budget apply (default: $FLOWCALL_KEY)")
    run.add_argument("--allow-failures", action="store_true", help="exit 0 even when rows failed")
    run.add_argument("--dry-run", action="store_true",
                     help="estimate tokens and cost from the catalog prices; call and write nothing")
    b.set_defaults(func=cmd_batch)

    w = subparsers.add_parser("worker", help="run the job queue's consumers (start it beside gunicorn)")
    w.add_argument("--workers", type=int, help="jobs at once (default FLOWCALL_JOB_WORKERS, 4)")
    w.set_defaults(func=cmd_worker)


def main(argv: list[str] | None = None) -> int:
    """`python -m app.batch_cli ...` is `flowcall ...` (kept for running from a checkout)."""
    from .cli import main as flowcall_main
    return flowcall_main(argv)


if __name__ == "__main__":
    sys.exit(main())
