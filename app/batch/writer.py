"""`flowcall batch`'s OUTPUT: each row's result as one CSV line or JSONL record, appended in one
write, read back on the next run (a torn last line dropped) and rewritten atomically."""
from __future__ import annotations

import csv
import io
import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

from app.batch.reader import UsageError

RESULT_FIELDS = ("row_id", "success", "response", "data", "model", "provider", "finish_reason", "input_tokens",
                 "output_tokens", "total_tokens", "cost", "latency_ms", "error_code", "error")


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
        for column, path in zip(self.data_cols, self._data_paths, strict=False):
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
