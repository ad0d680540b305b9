"""Every setting read outside `Settings` is parsed here, when the process starts.

Batch limits, job settings and the routing policy are used deep inside a
request; without this check a typo in one of them started fine and then failed a caller's request
(a batch raising SystemExit, the first `"model": "auto"` call a 500). `check` raises SystemExit
naming the variable, so the start fails instead and says why.
"""
from __future__ import annotations

from dataclasses import replace

from .calls import Call, Message, TextPart
from .catalog import Catalog
from .config import Settings
from .errors import FlowcallError


def check(settings: Settings, catalog: Catalog) -> None:
    """Parse every late-read setting once; a malformed one stops the start with its name."""
    from .autoroute import ROUTING_FILE_ENV, LOCAL, load_policy, local_model
    from .batch import BatchLimits
    from .jobs import JobSettings

    BatchLimits.from_settings(settings)
    JobSettings.from_settings(settings)
    path = settings.environ.get(ROUTING_FILE_ENV) or None
    try:
        policy = load_policy(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"{ROUTING_FILE_ENV}={path}: not a usable routing policy: {exc}") from None
    _probe_policy(policy, path, catalog, settings)
    if any(LOCAL in [entry["id"] for entry in task["models"]] for task in policy["tasks"].values()):
        try:
            local_model(policy, catalog, settings)
        except (FlowcallError, KeyError, TypeError, AttributeError) as exc:
            env = (policy.get("local_model") or {}).get("env", "local_model")
            raise SystemExit(f"{env} (or {ROUTING_FILE_ENV}'s local_model) is not usable: {exc}") from None


def _probe_policy(policy: dict, path: str | None, catalog: Catalog, settings: Settings) -> None:
    """Route one text call per task as if every provider were configured (pure: nothing is sent), so a
    policy that parses but lacks what routing reads (a scoring weight, a threshold) stops the start
    rather than failing the first `auto` call. A FlowcallError is a routing answer, not a defect."""
    from .autoroute import ROUTING_FILE_ENV, choose
    environ = dict(settings.environ)
    for provider in catalog.providers.values():
        environ.update({name: environ.get(name) or "startup-probe" for name in provider.key_env})
        if provider.base_url_env:
            environ[provider.base_url_env] = (environ.get(provider.base_url_env) or provider.default_base_url
                                              or "http://startup-probe.invalid")
    every_provider = replace(settings, environ=environ)
    for task in policy["tasks"]:
        call = Call(messages=(Message("user", (TextPart("ping"),)),), model="auto", task=task)
        try:
            choose(call, catalog, every_provider)
        except FlowcallError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other failure is the policy's
            raise SystemExit(f"{ROUTING_FILE_ENV}={path or 'app/data/routing.json'}: routing task {task!r} "
                             f"fails: {type(exc).__name__}: {exc}") from None
