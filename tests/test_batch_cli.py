"""`flowcall batch`: a file through the core in-process, resumable, line-atomic, in order, with the
exit code telling whether any row failed."""
from __future__ import annotations

import csv
import io
import json
import re
import signal
import subprocess
import sys
import time
import uuid

import pytest

from app.batch import runner as batch_run
from app import cli as flowcall_cli
from app.batch.reader import fill_template, row_keys
from app.batch.writer import Output
from app.batch.runner import Progress
from app.errors import ValidationError
from batch_fakes import FakeLLM
from conftest import migrated_db_url
from service import ROOT, clean_env

TEMPLATE = "Classify this ticket: {text}"
FAULTS = {3: "[429]", 7: "[500]", 11: "[malformed]"}     # by row number modulo 20
CODES = {"[429]": "provider_rate_limited", "[500]": "provider_overloaded", "[malformed]": "invalid_provider_response"}


@pytest.fixture
def fake():
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path, fake, monkeypatch) -> dict:
    values = {"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_BREAKER_THRESHOLD": "1000",
              **fake.env()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


@pytest.fixture
def tenant() -> str:
    return str(uuid.uuid4())


def ticket_text(i: int, faults: bool = True) -> str:
    marker = FAULTS.get(i % 20, "") if faults else ""
    return f"ticket {i} {marker}".strip()


def write_csv(path, n: int = 200, faults: bool = True) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        for i in range(n):
            writer.writerow([f"T{i:03d}", ticket_text(i, faults)])


def read_csv(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def ticket_no(prompt: str) -> int:
    return int(re.search(r"ticket (\d+)", prompt).group(1))


def cli(*argv) -> int:
    return flowcall_cli.main(["batch", *map(str, argv)])


# -- the acceptance run -----------------------------------------------------------------------------
def test_200_rows_with_provider_faults(tmp_path, env, fake, tenant, capsys):
    source, out = tmp_path / "tickets.csv", tmp_path / "results.csv"
    write_csv(source)
    args = (source, "-o", out, "--prompt", TEMPLATE, "--model", "openai.gpt-4o", "--concurrency", 8,
            "--tenant", tenant)
    assert cli(*args) == batch_run.EXIT_FAILED_ROWS
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [f"T{i:03d}" for i in range(200)]             # every row once, in order
    for i, row in enumerate(rows):
        marker = FAULTS.get(i % 20)
        assert row["text"] == ticket_text(i)
        if marker:
            assert (row["success"], row["error_code"], row["response"]) == ("false", CODES[marker], "")
            assert row["error"] and row["provider"] == "openai"
        else:
            assert row["success"] == "true" and row["error_code"] == row["error"] == ""
            assert row["response"] == f"Echo: Classify this ticket: {ticket_text(i)}"
            assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == ("12", "7", "19")
            assert float(row["cost"]) == pytest.approx((12 * 2.5 + 7 * 10) / 1e6)
    for prompt, count in fake.prompts.items():
        assert count == (3 if ("[429]" in prompt or "[500]" in prompt) else 1), prompt   # retried like any call
    assert len(fake.prompts) == 200
    err = capsys.readouterr().err
    assert "done: 200 of 200 rows" in err and "(170 succeeded, 30 failed)" in err
    assert re.search(r"progress: 200/200 100%", err)                                 # plain lines off a TTY

    from app.tenancy.store import Store
    with Store(env["FLOWCALL_DATABASE_URL"]).engine.connect() as conn:
        ledger = conn.exec_driver_sql("SELECT endpoint, count(*) FROM ledger WHERE tenant_id = ? GROUP BY endpoint",
                                      (tenant,)).all()
    assert [tuple(r) for r in ledger] == [("cli_batch", 200)]

    calls_before = sum(fake.prompts.values())
    assert cli(*args, "--allow-failures") == batch_run.EXIT_OK                       # nothing left to do
    assert sum(fake.prompts.values()) == calls_before
    assert "resuming: 200 of 200 rows" in capsys.readouterr().err
    assert cli(*args) == batch_run.EXIT_FAILED_ROWS                                  # the file still has failures


def _run_cli(tmp_path, env: dict, source, out, log):
    return subprocess.Popen([sys.executable, "-m", "app.cli", "batch", str(source), "-o", str(out),
                             "--prompt", TEMPLATE, "--model", "openai.gpt-4o", "--concurrency", "4",
                             "--tenant", str(uuid.uuid4())],
                            cwd=ROOT, env=clean_env(env), stdout=subprocess.DEVNULL, stderr=log)


def _records(path) -> int:
    try:
        return max(0, path.read_text(encoding="utf-8").count("\n") - 1)
    except FileNotFoundError:
        return 0


def _until(predicate, what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("how", ["ctrl-c", "kill -9"])
def test_stopped_halfway_and_run_again_no_row_twice_none_missing(tmp_path, env, fake, how):
    source, out, log_path = tmp_path / "tickets.csv", tmp_path / "results.csv", tmp_path / "stderr.txt"
    write_csv(source, faults=False)
    fake.hold = lambda prompt: ticket_no(prompt) >= 100            # the second half waits for `release`
    with open(log_path, "wb") as log:
        proc = _run_cli(tmp_path, env, source, out, log)
        try:
            _until(lambda: _records(out) == 100 and fake.held == 4, "the first half, and 4 rows in flight")
            if how == "ctrl-c":
                proc.send_signal(signal.SIGINT)
                _until(lambda: "stopping:" in log_path.read_text(), "the CLI to stop taking rows")
                fake.release.set()                                 # the calls in flight finish ...
                assert proc.wait(timeout=60) == batch_run.EXIT_INTERRUPTED
                assert _records(out) == 104                        # ... and are kept
            else:
                proc.kill()
                proc.wait(timeout=60)
                fake.release.set()                                 # answers nobody will read
                with open(out, "a", encoding="utf-8") as f:
                    f.write("T999,half a line wit")               # what a crash mid-write would leave
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    before = {r["id"] for r in read_csv(out) if r.get("row_id")}
    fake.hold = None
    with open(log_path, "ab") as log:
        assert _run_cli(tmp_path, env, source, out, log).wait(timeout=120) == batch_run.EXIT_OK
    rows = read_csv(out)
    assert [r["id"] for r in rows] == [f"T{i:03d}" for i in range(200)]
    assert all(r["success"] == "true" for r in rows)
    answered_before = {ticket_no(p) for p in fake.prompts if f"T{ticket_no(p):03d}" in before}
    for prompt, count in fake.prompts.items():
        if ticket_no(prompt) in answered_before:
            assert count == 1, prompt                              # a row in OUTPUT is never called again
    if how == "ctrl-c":
        assert set(fake.prompts.values()) == {1} and len(fake.prompts) == 200
    else:                                                          # in flight at the kill: called, unanswered
        assert sorted(ticket_no(p) for p, c in fake.prompts.items() if c == 2) == [100, 101, 102, 103]
    assert "resuming:" in log_path.read_text()


# -- inputs and outputs -----------------------------------------------------------------------------
def test_jsonl_call_bodies_to_jsonl(tmp_path, env, fake, tenant):
    source, out = tmp_path / "calls.jsonl", tmp_path / "out.jsonl"
    lines = [{"id": "a", "prompt": "first", "options": {"maxTokens": 20}},
             {"id": "b", "model": "mock.echo", "prompt": "second"},
             {"id": "c", "prompt": "third", "temprature": 0.3},
             {"id": "d", "messages": [{"role": "user", "content": "fourth \u2028 line"}]}]
    source.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n", encoding="utf-8")
    assert cli(source, "-o", out, "--model", "openai.gpt-4o", "--max-tokens", 50, "--tenant", tenant) == 1
    records = [json.loads(x) for x in out.read_text(encoding="utf-8").split("\n") if x]
    assert [r["input"] for r in records] == lines
    assert [(r["success"], r["provider"]) for r in records] == [(True, "openai"), (True, "mock"),
                                                                 (False, None), (True, "openai")]
    assert records[2]["error"]["code"] == "validation_error" and "temprature" in records[2]["error"]["fields"]
    assert records[0]["usage"] == {"input_tokens": 12, "output_tokens": 7, "total_tokens": 19,
                                  "cached_input_tokens": 0, "cache_write_tokens": 0, "reasoning_tokens": 0}
    assert records[3]["response"] == "Echo: fourth \u2028 line"
    sent = {b["messages"][-1]["content"]: b.get("max_tokens", b.get("max_completion_tokens")) for b in fake.bodies}
    assert sent == {"first": 20, "fourth \u2028 line": 50}
    assert flowcall_cli.main(["batch", str(source), "-o", str(out), "--model", "openai.gpt-4o", "--tenant", tenant,
                           "--max-tokens", "50"]) == 1
    assert len(fake.bodies) == 2                                   # resumed: nothing called again


def test_response_schema_fields_become_csv_columns(tmp_path, env, tenant):
    schema = {"type": "object", "additionalProperties": False,
              "required": ["category", "urgency", "meta", "tags"],
              "properties": {"category": {"type": "string", "enum": ["billing", "bug"]},
                             "urgency": {"type": "integer"},
                             "meta": {"type": "object", "additionalProperties": False, "required": ["lang"],
                                      "properties": {"lang": {"type": "string"}}},
                             "tags": {"type": "array", "items": {"type": "string"}}}}
    (tmp_path / "ticket.schema.json").write_text(json.dumps(schema))
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("id,prompt,model\n1,my invoice is wrong,whatever\n", encoding="utf-8")
    assert cli(source, "-o", out, "--model", "openai.gpt-4o", "--response-format", tmp_path / "ticket.schema.json",
               "--tenant", tenant) == 0
    [row] = read_csv(out)
    assert list(row)[:3] == ["id", "prompt", "model"] and "result_model" in row    # no input column is lost
    assert (row["model"], row["result_model"]) == ("whatever", "gpt-4o")
    assert (row["data.category"], row["data.urgency"], row["data.meta.lang"], row["data.tags"]) == (
        "billing", "0", "example", '["example"]')


def test_dry_run_estimates_and_spends_nothing(tmp_path, env, fake, capsys):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, n=10, faults=False)
    assert cli(source, "-o", out, "--prompt", TEMPLATE, "--model", "openai.gpt-4o", "--max-tokens", 100,
               "--dry-run") == 0
    text = capsys.readouterr().out
    tokens = sum(batch_run.estimate_tokens(f"Classify this ticket: {ticket_text(i, False)}") + 4 for i in range(10))
    assert "dry run: 10 rows to call" in text
    assert f"openai.gpt-4o: 10 rows, ~{tokens} input tokens, at most 1000 output tokens" in text
    assert f"${tokens * 2.5 / 1e6:.4f} for the input, up to ${(tokens * 2.5 + 1000 * 10) / 1e6:.4f}" in text
    assert not fake.bodies and not out.exists()


def test_dry_run_counts_a_thinking_models_allowance(tmp_path, env, fake, capsys):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    write_csv(source, n=2, faults=False)
    assert cli(source, "-o", out, "--prompt", TEMPLATE, "--model", "openai.gpt-5.6-sol", "--dry-run") == 0
    assert "at most 10000 output tokens" in capsys.readouterr().out     # 2 rows x (1000 + 4000 thinking)
    assert not fake.bodies


@pytest.mark.parametrize("argv, message", [
    (["--column", "body"], "no column 'body'"),
    (["--prompt", "Hi {name}"], "names name"),
    (["--prompt", "{text}", "--column", "text"], "not both"),
    ([], "no column 'prompt'"),
    (["--column", "text", "--id-column", "dup"], "share the id"),
    (["--column", "text", "--concurrency", "0"], "--concurrency"),
])
def test_usage_errors_exit_2_before_any_call(tmp_path, env, fake, tenant, capsys, argv, message):
    source = tmp_path / "in.csv"
    source.write_text("text,dup\nhello,1\nworld,1\n", encoding="utf-8")
    assert cli(source, "-o", tmp_path / "out.csv", "--tenant", tenant, *argv) == batch_run.EXIT_USAGE
    assert message in capsys.readouterr().err and not fake.bodies


def test_who_pays_is_required_and_a_key_works(tmp_path, env, capsys):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("prompt\nhello\n", encoding="utf-8")
    assert cli(source, "-o", out, "--model", "mock.echo") == batch_run.EXIT_USAGE
    assert "--tenant UUID, or --key" in capsys.readouterr().err
    assert cli(source, "-o", out, "--model", "mock.echo", "--key", "fc_wrong") == batch_run.EXIT_USAGE
    from app.tenancy.store import Store
    _, key = Store(env["FLOWCALL_DATABASE_URL"]).create_key(str(uuid.uuid4()))
    assert cli(source, "-o", out, "--model", "mock.echo", "--key", key) == 0
    assert read_csv(out)[0]["response"] == "hello"


def test_an_output_with_other_columns_is_refused(tmp_path, env, tenant, capsys):
    source, out = tmp_path / "in.csv", tmp_path / "out.csv"
    source.write_text("prompt\nhello\n", encoding="utf-8")
    out.write_text("something,else\n1,2\n", encoding="utf-8")
    assert cli(source, "-o", out, "--model", "mock.echo", "--tenant", tenant) == batch_run.EXIT_USAGE
    assert "other columns" in capsys.readouterr().err and out.read_text() == "something,else\n1,2\n"


# -- the pieces -------------------------------------------------------------------------------------
@pytest.mark.parametrize("template, row, expected", [
    ("Classify: {text}", {"text": "late"}, "Classify: late"),
    ("{a}{b}", {"a": 1, "b": None}, "1"),
    ('Answer as {"label": "x"} for {text}', {"text": "t"}, 'Answer as {"label": "x"} for t'),
    ("Literal {{text}} and {text}", {"text": "v"}, "Literal {text} and v"),
    ("{ticket body}", {"ticket body": "spaces ok"}, "spaces ok"),
])
def test_fill_template(template, row, expected):
    assert fill_template(template, row) == expected


def test_fill_template_names_the_missing_column():
    with pytest.raises(ValidationError) as info:
        fill_template("{nope}", {"text": "x"})
    assert info.value.fields == {"prompt": "no column nope"}


def test_row_keys_hash_content_or_use_the_id_column():
    rows = [{"t": "a"}, {"t": "b"}, {"t": "a"}]
    keys = row_keys(rows, None)
    assert keys[0] != keys[1] and keys[2] == keys[0] + "#2" and row_keys(rows, None) == keys
    assert row_keys([{"id": "7", "t": "x"}], "id") == ["id:7"]


@pytest.mark.parametrize("fmt, torn", [("csv", 'h:3,"par'), ("csv", "h:3,false"), ("jsonl", '{"row_id": "h:3", "succ')])
def test_a_torn_last_record_is_dropped_and_the_file_repaired(tmp_path, fmt, torn):
    path = tmp_path / f"out.{fmt}"
    output = Output(str(path), fmt, ["text"], ["data"])
    output.open()
    output.append(output.render("h:1", {"text": "a"}, {"success": True, "response": "A"}))
    output.append(output.render("h:2", {"text": "b,\n\"quoted\""}, {"success": False, "error": {"code": "x"}}))
    output.close()
    with open(path, "a", encoding="utf-8") as f:
        f.write(torn)
    existing = output.load()
    assert list(existing.records) == ["h:1", "h:2"] and existing.failed == {"h:2"} and existing.repaired
    assert path.read_text(encoding="utf-8").endswith("\n") and torn not in path.read_text(encoding="utf-8")
    assert not output.load().repaired


def test_progress_bar_on_a_terminal():
    now = [0.0]
    stream = io.StringIO()
    bar = Progress(4, stream, tty=True, clock=lambda: now[0])
    now[0] = 1.0
    bar.add(True, 0.5)
    now[0] = 2.0
    bar.add(False, None)
    assert stream.getvalue().endswith("\r[############------------] 2/4  50%  1.0 rows/s  ETA 0:00:02  "
                                      "$0.500000  1 error\x1b[K")
