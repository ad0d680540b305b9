"""A malformed setting stops the start with the variable's name; it never fails a request later."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nodes import create_app
from app.config import Settings
from conftest import migrated_db_url
from service import ROOT, clean_env, create_key, free_port


def _bad_routing_file(tmp_path) -> str:
    path = tmp_path / "routing.json"
    path.write_text('{"tasks": ')
    return str(path)


def _routing_file_without_tasks(tmp_path) -> str:
    path = tmp_path / "routing.json"
    path.write_text(json.dumps({"default_task": "x"}))
    return str(path)


def _routing_file_without_a_scoring_weight(tmp_path) -> str:
    """Parses and passes the policy's own checks, but routing reads this weight."""
    from importlib import resources
    policy = json.loads(resources.files("app").joinpath("data/routing.json").read_text("utf-8"))
    del policy["scoring"]["cost_ceiling_per_1m"]
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(policy))
    return str(path)


def _routing_file_whose_embed_task_names_an_unknown_model(tmp_path) -> str:
    """Only an embeddings call routes through the `embed` task: the start probes it as one."""
    from importlib import resources
    policy = json.loads(resources.files("app").joinpath("data/routing.json").read_text("utf-8"))
    policy["tasks"]["embed"]["models"][0]["id"] = "openai.no-such-embedding"
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(policy))
    return str(path)


def _models_file_with_an_unread_key_variable(tmp_path) -> str:
    """A provider whose key variable Settings would never keep (not *_API_KEY)."""
    path = tmp_path / "models.json"
    path.write_text(json.dumps({"providers": {"custom": {"format": "openai", "key_env": ["CUSTOM_TOKEN"],
                                                         "default_base_url": "https://llm.example/v1"}}}))
    return str(path)


def _routing_file_with_another_local_model_variable(tmp_path) -> str:
    from importlib import resources
    policy = json.loads(resources.files("app").joinpath("data/routing.json").read_text("utf-8"))
    policy["local_model"]["env"] = "MY_OLLAMA_MODEL"
    path = tmp_path / "routing.json"
    path.write_text(json.dumps(policy))
    return str(path)


LATE_SETTINGS = [
    ("FLOWCALL_BATCH_MAX_ITEMS", lambda tmp: "abc"),
    ("FLOWCALL_BATCH_MAX_CONCURRENCY", lambda tmp: "0"),
    ("FLOWCALL_BATCH_MAX_BODY_BYTES", lambda tmp: "1e9x"),
    ("FLOWCALL_JOB_WORKERS", lambda tmp: "four"),
    ("FLOWCALL_JOB_LEASE_S", lambda tmp: "soon"),
    ("FLOWCALL_CALLBACK_ATTEMPTS", lambda tmp: "0"),
    ("FLOWCALL_JOB_RETENTION_DAYS", lambda tmp: "7d"),
    ("FLOWCALL_PROVIDER_POOL_SIZE", lambda tmp: "many"),
    ("FLOWCALL_ROUTING_FILE", _bad_routing_file),
    ("FLOWCALL_ROUTING_FILE", _routing_file_without_tasks),
    ("FLOWCALL_ROUTING_FILE", lambda tmp: str(tmp / "missing.json")),
    ("FLOWCALL_ROUTING_FILE", _routing_file_without_a_scoring_weight),
    ("FLOWCALL_ROUTING_FILE", _routing_file_whose_embed_task_names_an_unknown_model),
    ("FLOWCALL_ROUTING_FILE", _routing_file_with_another_local_model_variable),
    ("FLOWCALL_LOG_CONTENT", lambda tmp: "maybe"),
    ("FLOWCALL_MODELS_FILE", _models_file_with_an_unread_key_variable),
    ("FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS", lambda tmp: "10.0.0.0/33"),
    ("FLOWCALL_RESPONSE_RETENTION_DAYS", lambda tmp: "0"),
    ("FLOWCALL_ROUTING_PREFERENCE", lambda tmp: "fast"),
]


@pytest.mark.parametrize("name,value", LATE_SETTINGS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(LATE_SETTINGS)])
def test_a_malformed_setting_stops_create_app_naming_it(tmp_path, name, value):
    config = {"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), name: value(tmp_path)}
    with pytest.raises(SystemExit) as info:
        create_app(config)
    assert name in str(info.value.code)


@pytest.mark.parametrize("raw,expected", [("True", True), ("TRUE", True), ("yes", True), (" 1 ", True),
                                          ("On", True), ("False", False), ("0", False), ("", False)])
def test_log_content_is_read_in_any_case(raw, expected):
    assert Settings.from_env({"FLOWCALL_LOG_CONTENT": raw}).log_content is expected


def test_the_provider_pool_size_reaches_the_transport(tmp_path):
    app = create_app({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path), "FLOWCALL_PROVIDER_POOL_SIZE": "7"})
    assert app.extensions["flowcall"].dispatcher.transport._pool_size == 7
    app.extensions["flowcall"].store.close()


@pytest.mark.e2e
@pytest.mark.parametrize("name,value", [("FLOWCALL_BATCH_MAX_ITEMS", "abc"), ("FLOWCALL_ROUTING_FILE", None)])
def test_gunicorn_refuses_to_start_with_a_malformed_setting(tmp_path, name, value):
    """Under gunicorn the worker's SystemExit must stop the whole server with the message, not leave
    a server that answers /healthz and then fails the first batch or `auto` call."""
    env = clean_env({"FLOWCALL_DATABASE_URL": migrated_db_url(tmp_path)})
    create_key(env)
    env[name] = value if value is not None else _bad_routing_file(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "gunicorn", "-w", "2", "-b", f"127.0.0.1:{free_port()}",
                           "wsgi:app"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0
    assert name in proc.stderr


@pytest.mark.parametrize("argv", [["keys", "list"], ["db", "purge"], ["batch", "in.csv", "-o", "out.csv", "--dry-run"]])
def test_every_cli_command_refuses_a_malformed_setting(tmp_path, monkeypatch, capsys, argv):
    from app.cli import main
    monkeypatch.setenv("FLOWCALL_DATABASE_URL", migrated_db_url(tmp_path))
    monkeypatch.setenv("FLOWCALL_JOB_WORKERS", "four")
    assert main(argv) == 2
    assert "FLOWCALL_JOB_WORKERS" in capsys.readouterr().err


def _readme_settings() -> set[str]:
    """The variable names of the README's Configuration table."""
    import re
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return {name for line in table.splitlines() if line.startswith("| `")
            for name in re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1])}


def test_the_readme_table_and_settings_name_the_same_variables():
    """Every variable the README lists is read by Settings (gunicorn's own by gunicorn.conf.py; the
    providers' through the catalog), and Settings reads no variable the README does not list."""
    import re
    config = (ROOT / "app" / "config.py").read_text(encoding="utf-8")
    gunicorn = (ROOT / "gunicorn.conf.py").read_text(encoding="utf-8")
    read = set(re.findall(r'"((?:FLOWCALL|PROMETHEUS)_[A-Z0-9_]+)"', config))
    listed = _readme_settings()
    providers = {name for name in listed if name.endswith(("_API_KEY", "_BASE_URL"))}
    assert {name for name in listed - providers - read if name not in gunicorn} == set()
    assert read - listed == set()
