"""The request line and the metrics take shortcuts on the call path (issue 16): the line's record is
handed to the handlers directly and its timestamp prefix reused within a second; metric children are
looked up once per label tuple. Each must give exactly what the long way gives."""
from __future__ import annotations

import json
import logging
from types import SimpleNamespace

from prometheus_client import CollectorRegistry, Counter

from app.telemetry import logs, metrics

PRINCIPAL = SimpleNamespace(tenant_id="t-1", agent_id="a-1", key_id="k-1")
ANSWER = SimpleNamespace(routing=SimpleNamespace(model_chosen="openai.gpt-4o", attempts=2), provider="openai",
                         usage=SimpleNamespace(input_tokens=11, output_tokens=7), cost=0.000125)


class Keep(logging.Handler):
    def __init__(self):
        super().__init__()
        self.records = []

    def emit(self, record):
        self.records.append(record)


def test_the_request_line_is_what_logger_info_with_the_fields_as_extra_writes(monkeypatch):
    keep = Keep()
    logs.ACCESS.addHandler(keep)
    monkeypatch.setattr(logs.ACCESS, "level", logging.INFO)
    try:
        logs.access(request_id="r-é", method="POST", path="/v1/chat/completions", status=429, latency_ms=12.34567,
                    overhead_ms=0.4444, principal=PRINCIPAL, answer=ANSWER, error_code="rate_limited")
        [fast] = keep.records
        fields = {k: v for k, v in vars(fast).items() if k not in logs._STANDARD}
        logs.ACCESS.info("request", extra=fields)
        [_, slow] = keep.records
    finally:
        logs.ACCESS.removeHandler(keep)
    slow.created, slow.msecs = fast.created, fast.msecs
    formatter = logs.JsonFormatter()
    assert formatter.format(fast) == formatter.format(slow)
    line = json.loads(formatter.format(fast))
    assert list(line)[:4] == ["ts", "level", "logger", "msg"] and line["error_code"] == "rate_limited"
    assert (line["latency_ms"], line["overhead_ms"], line["attempts"]) == (12.346, 0.444, 2)


def test_the_request_line_is_not_built_when_info_is_off(monkeypatch):
    monkeypatch.setattr(logs.ACCESS, "level", logging.WARNING)
    monkeypatch.setattr(logs.ACCESS, "makeRecord", lambda *a, **k: (_ for _ in ()).throw(AssertionError("built")))
    logs.ACCESS.manager._clear_cache()
    try:
        logs.access(request_id="r", method="GET", path="/", status=200, latency_ms=1.0, overhead_ms=1.0)
    finally:
        logs.ACCESS.manager._clear_cache()


def test_the_timestamp_follows_each_record_across_seconds():
    formatter = logs.JsonFormatter()
    stamps = []
    for created, msecs in ((1.5, 500), (1.999, 999), (2.25, 250), (86_401.007, 7)):
        record = logging.makeLogRecord({"created": created, "msecs": msecs, "msg": "m"})
        stamps.append(json.loads(formatter.format(record))["ts"])
    assert stamps == ["1970-01-01T00:00:01.500Z", "1970-01-01T00:00:01.999Z", "1970-01-01T00:00:02.250Z",
                      "1970-01-02T00:00:01.007Z"]


def test_a_metric_child_is_the_one_labels_gives_and_the_cache_stays_under_its_cap(monkeypatch):
    counter = Counter("fast_path_test", "test", ["provider", "outcome"], registry=CollectorRegistry())
    assert metrics.child(counter, "openai", "ok") is counter.labels("openai", "ok")
    assert metrics.child(counter, "openai", "ok") is counter.labels("openai", "ok")
    monkeypatch.setattr(metrics, "_children", {})
    monkeypatch.setattr(metrics, "_CHILDREN_CAP", 1)
    metrics.child(counter, "a", "x").inc()
    metrics.child(counter, "b", "y").inc(2)
    metrics.child(counter, "b", "y").inc(3)
    assert len(metrics._children) == 1
    assert counter.labels("b", "y")._value.get() == 5 and counter.labels("a", "x")._value.get() == 1


def test_a_streamed_answers_request_line_is_written_once_when_its_stream_ends(app, client, api_key, monkeypatch):
    """Not before the first byte (where it would delay the first token) and not at all until the
    stream is sent; then once, with the whole stream's latency."""
    keep = Keep()
    logs.ACCESS.addHandler(keep)
    monkeypatch.setattr(logs.ACCESS, "level", logging.INFO)
    try:
        streamed = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {api_key}"},
                               json={"model": "mock.echo", "stream": True,
                                     "messages": [{"role": "user", "content": "hi"}]}, buffered=False)
        assert streamed.status_code == 200 and keep.records == []         # headers out, body not yet
        body = streamed.get_data(as_text=True)
        assert body.rstrip().endswith("data: [DONE]") and keep.records == []
        streamed.close()
        assert len(keep.records) == 1
        line = keep.records[0]
        assert (line.path, line.status, line.tenant_id) == ("/v1/chat/completions", 200, PRINCIPAL_OF(app, api_key))
        assert line.latency_ms >= line.overhead_ms >= 0
        whole = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {api_key}"},
                            json={"model": "mock.echo", "messages": [{"role": "user", "content": "hi"}]})
        assert whole.status_code == 200 and len(keep.records) == 2        # a whole answer's: at once
    finally:
        logs.ACCESS.removeHandler(keep)


def PRINCIPAL_OF(app, api_key):  # noqa: N802 - reads as the value it stands for
    return app.extensions["flowcall"].store.verify_key(api_key).tenant_id
