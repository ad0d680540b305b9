"""The `flowcall` command: keys are created (shown once), listed without secrets, revoked."""
from __future__ import annotations

import uuid

import pytest

from app.cli import main
from app.store import Store


@pytest.fixture
def db(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.setenv("FLOWCALL_DATABASE_URL", url)
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
    assert store.verify_key(key) is None
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
