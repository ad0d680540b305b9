"""Logging: one JSON object per line to stdout, where gunicorn and log shippers expect it.

Every request leaves one `request` line (request id, tenant, agent, key id, model, provider, status,
latency, overhead, tokens, cost, attempts, error code). Prompts, answers and credentials are never
logged: the fields are chosen here, not passed through.
"""
from __future__ import annotations

import json
import logging
import sys
import time

ACCESS = logging.getLogger("flowcall.access")
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}
_ENCODER = json.JSONEncoder(default=str, ensure_ascii=False)   # what json.dumps would build per line
_second = (None, "")   # (whole second, its "%Y-%m-%dT%H:%M:%S"): every line of one second shares the prefix


def _timestamp(created: float, msecs: float) -> str:
    global _second
    whole = int(created)
    if _second[0] != whole:
        _second = (whole, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)))
    return f"{_second[1]}.{int(msecs):03d}Z"


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"ts": _timestamp(record.created, record.msecs), "level": record.levelname, "logger": record.name,
                "msg": record.getMessage()}
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and k[:1] != "_"})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return _ENCODER.encode(line)


def init(level: str = "INFO") -> None:
    root = logging.getLogger()
    if not any(getattr(h, "_flowcall", False) for h in root.handlers):
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(JsonFormatter())
        handler._flowcall = True
        root.addHandler(handler)
    root.setLevel(getattr(logging, level, logging.INFO))


def access(*, request_id, method, path, status, latency_ms, overhead_ms, principal=None, answer=None,
           error_code=None) -> None:
    """The request line: built only when INFO is on, and handed to the handlers directly (the same
    record as `ACCESS.info("request", extra=fields)` but for the caller's file and line, which are
    never logged: finding them walked the stack on every request)."""
    if not ACCESS.isEnabledFor(logging.INFO):
        return
    fields = {"request_id": request_id, "method": method, "path": path, "status": status,
              "latency_ms": round(latency_ms, 3), "overhead_ms": round(overhead_ms, 3)}
    if principal is not None:
        fields.update(tenant_id=principal.tenant_id, agent_id=principal.agent_id, key_id=principal.key_id)
    if answer is not None:
        fields.update(model=answer.routing.model_chosen, provider=answer.provider,
                      input_tokens=answer.usage.input_tokens, output_tokens=answer.usage.output_tokens,
                      cost=answer.cost, attempts=answer.routing.attempts)
    if error_code:
        fields["error_code"] = error_code
    ACCESS.handle(ACCESS.makeRecord(ACCESS.name, logging.INFO, "(access)", 0, "request", (), None, extra=fields))
