"""The `flowcall` command: keys are created (shown once), listed without secrets, revoked."""
from __future__ import annotations

import uuid

import pytest

from app.cli import main
from app.tenancy.store import Store


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("FLOWCALL_DATABASE_URL", url)
    assert main(["db", "upgrade"]) == 0
    return url


def test_create_list_revoke(db, capsys):
    tenant, agent = str(uuid.uuid4()), str(uuid.uuid4())
    assert main(["keys", "create", "--tenant", tenant, "--agent", agent, "--name", "n8n prod"]) == 0
    out = capsys.readouterr()
    key = out.out.strip().splitlines()[-1]
    assert key.startswith("fc_") and "shown only once" in out.err
    store = Store(db)
    record = store.verify_key(key)
    assert record.tenant_id == tenant and record.agent_id == agent and record.name == "n8n prod"

    assert main(["keys", "list"]) == 0
    listing = capsys.readouterr().out
    assert record.id in listing and tenant in listing and "active" in listing
    assert key.split("_", 2)[2] not in listing

    assert main(["keys", "revoke", record.id]) == 0
    assert Store(db).verify_key(key) is None
    main(["keys", "list", "--tenant", tenant])
    assert "revoked" in capsys.readouterr().out
    assert main(["keys", "revoke", "0" * 16]) == 1
    store.close()


def test_create_without_tenant_makes_one(db, capsys):
    assert main(["keys", "create"]) == 0
    out = capsys.readouterr()
    assert "(new)" in out.err and out.out.strip().startswith("fc_")


def test_bad_tenant_is_refused(db, capsys):
    with pytest.raises(SystemExit) as info:
        main(["keys", "create", "--tenant", "acme"])
    assert info.value.code == 2 and "not a UUID" in capsys.readouterr().err


def test_revocation_reaches_other_processes_within_the_cache_window(db, capsys):
    now = [100.0]
    worker = Store(db, clock=lambda: now[0])            # a gunicorn worker's store
    main(["keys", "create"])
    key = capsys.readouterr().out.strip().splitlines()[-1]
    assert worker.verify_key(key) is not None           # now cached in that worker
    main(["keys", "revoke", key.split("_")[1]])          # revoked from another process
    assert worker.verify_key(key) is not None           # still inside the 5 s window
    now[0] += 5.1
    assert worker.verify_key(key) is None
    worker.close()


def test_limits_on_keys_and_tenants(db, capsys):
    tenant = str(uuid.uuid4())
    main(["keys", "create", "--tenant", tenant, "--rpm", "60", "--tpm", "100000", "--budget-usd", "50"])
    key = capsys.readouterr().out.strip().splitlines()[-1]
    store = Store(db)
    limits = store.verify_key(key).limits
    assert (limits.rpm, limits.tpm, limits.budget_usd) == (60, 100000, 50.0)
    assert main(["tenants", "set", tenant, "--rpm", "600"]) == 0
    assert store.tenant_limits(tenant).rpm == 600 and store.tenant_limits(tenant).budget_usd is None
    main(["tenants", "list"])
    assert tenant in capsys.readouterr().out
    assert main(["keys", "set", key.split("_")[1], "--rpm", "5"]) == 0
    assert Store(db).verify_key(key).limits.rpm == 5
    store.close()


def test_unmigrated_database_is_refused_with_a_clear_message(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("FLOWCALL_DATABASE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    assert main(["keys", "create"]) == 1
    assert "flowcall db upgrade" in capsys.readouterr().err
    assert main(["db", "current"]) == 1
    assert main(["db", "upgrade"]) == 0 and main(["db", "current"]) == 0
