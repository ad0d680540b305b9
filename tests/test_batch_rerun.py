"""A batch stopped between paying for an answer and saving it is resumed without paying twice:
the rerun calls only the rows whose answer never arrived, and the ledger holds one row per call."""
from __future__ import annotations

import csv
import re
import uuid

import pytest
from sqlalchemy import select

from app.batch import writer as batch_output, runner as batch_run
from app import cli
from app.tenancy.db import ledger, make_engine
from batch_fakes import FakeLLM
from conftest import migrated_db_url

TEMPLATE = "Classify this ticket: {text}"


@pytest.fixture
def fake():
    server = FakeLLM().start()
    yield server
    server.stop()


@pytest.fixture
def env(tmp_path, fake, monkeypatch) -> dict:
    values = {"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), **fake.env()}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return values


class Killed(BaseException):
    """Stands for kill -9 between the ledger write and OUTPUT's append (nothing after it runs)."""


def _write_input(path, n: int) -> None:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "text"])
        writer.writerows([f"T{i}", f"ticket {i}"] for i in range(n))


def _ledger(env, tenant) -> list:
    engine = make_engine(env["FLOWCALL_DATABASE_URL"])
    with engine.connect() as conn:
        rows = conn.execute(select(ledger.c.request_id, ledger.c.status).where(ledger.c.tenant_id == tenant)).all()
    engine.dispose()
    return rows


def test_a_row_answered_but_not_saved_is_not_called_again(tmp_path, env, fake, monkeypatch, capsys):
    source, out, tenant = tmp_path / "in.csv", tmp_path / "out.csv", str(uuid.uuid4())
    _write_input(source, 10)
    args = ["batch", str(source), "-o", str(out), "--prompt", TEMPLATE, "--model", "openai.gpt-4o",
            "--id-column", "id", "--concurrency", "1", "--tenant", tenant]
    real_append = batch_output.Output.append

    def append_until_the_kill(self, record):
        if record.startswith("T5,"):
            raise Killed()
        real_append(self, record)

    monkeypatch.setattr(batch_output.Output, "append", append_until_the_kill)
    with pytest.raises(Killed):
        cli.main(args)
    assert len(_ledger(env, tenant)) == 6                   # T0..T5 answered and recorded; T5 not in OUTPUT
    monkeypatch.setattr(batch_output.Output, "append", real_append)

    assert cli.main(args) == batch_run.EXIT_FAILED_ROWS
    assert "1 row(s) were answered and billed" in capsys.readouterr().err
    with open(out, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [r["id"] for r in rows] == [f"T{i}" for i in range(10)]
    assert [r["id"] for r in rows if r["success"] != "true"] == ["T5"] and rows[5]["error_code"] == "answer_lost"
    calls = {int(re.search(r"ticket (\d+)", p).group(1)): n for p, n in fake.prompts.items()}
    assert calls == {i: 1 for i in range(10)}               # no row reached the provider twice
    recorded = _ledger(env, tenant)
    assert len(recorded) == 10 and len({r.request_id for r in recorded}) == 10   # one ledger row per call


def test_a_new_output_does_not_inherit_an_old_runs_answers(tmp_path, env, fake):
    source, out, tenant = tmp_path / "in.csv", tmp_path / "out.csv", str(uuid.uuid4())
    _write_input(source, 3)
    args = ["batch", str(source), "-o", str(out), "--prompt", TEMPLATE, "--model", "openai.gpt-4o",
            "--id-column", "id", "--tenant", tenant]
    assert cli.main(args) == batch_run.EXIT_OK
    out.unlink()                                            # the operator starts over: every row is called
    assert cli.main(args) == batch_run.EXIT_OK
    assert set(fake.prompts.values()) == {2}
    with open(out, newline="", encoding="utf-8") as f:
        assert all(r["success"] == "true" for r in csv.DictReader(f))


def test_kill_9_at_concurrency_8_then_rerun_one_ledger_row_per_provider_call(tmp_path, env, fake):
    """The issue's run: `kill -9` with 8 rows in flight, then the same command again."""
    import subprocess
    import sys
    import time
    from service import ROOT, clean_env

    source, out, tenant = tmp_path / "in.csv", tmp_path / "out.csv", str(uuid.uuid4())
    _write_input(source, 40)
    command = [sys.executable, "-m", "app.cli", "batch", str(source), "-o", str(out), "--prompt", TEMPLATE,
               "--model", "openai.gpt-4o", "--id-column", "id", "--concurrency", "8", "--tenant", tenant]
    fake.hold = lambda prompt: int(re.search(r"ticket (\d+)", prompt).group(1)) >= 20
    proc = subprocess.Popen(command, cwd=ROOT, env=clean_env(env), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (fake.held == 8 and out.exists() and out.read_text().count("\n") == 21):
            assert time.monotonic() < deadline and proc.poll() is None, "20 rows written and 8 held"
            time.sleep(0.02)
        proc.kill()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    fake.hold = None
    fake.release.set()                                      # answers nobody will read
    rerun = subprocess.run(command, cwd=ROOT, env=clean_env(env), capture_output=True, text=True, timeout=120)
    assert rerun.returncode == batch_run.EXIT_OK, rerun.stderr
    assert "8 row(s) were in flight" in rerun.stderr
    calls = {int(re.search(r"ticket (\d+)", p).group(1)): n for p, n in fake.prompts.items()}
    assert [i for i, n in sorted(calls.items()) if n == 2] == list(range(20, 28))   # only those in flight
    assert set(calls) == set(range(40)) and sum(calls.values()) == 48
    recorded = _ledger(env, tenant)
    assert len(recorded) == sum(calls.values())             # one ledger row per provider call
    assert sorted(r.status for r in recorded).count(499) == 8 and sum(r.status == 200 for r in recorded) == 40
