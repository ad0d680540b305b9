"""`flowcall batch`'s input: reading a CSV or JSONL file, identifying its rows across runs, and the
plan that turns a row into a call body (a prompt template, one column, or the row itself)."""
from __future__ import annotations

import csv
import hashlib
import json
import re
from dataclasses import dataclass
from pathlib import Path

from app.batch.items import prepare_item
from app.errors import ValidationError

_PLACEHOLDER = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_ .\-]*)\}")


class UsageError(Exception):
    """A problem with the command line or the files: nothing was called."""


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
