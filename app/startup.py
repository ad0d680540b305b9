"""The start checks that need more than one variable's text: a malformed one stops the start.

`Settings.from_env` parses each variable on its own. What only makes sense against other modules
is checked here, once, when the process starts: the allow-lists' CIDRs, the provider variables a
models file names, and the routing policy (its file read now, and one call routed per task).
Without this a typo in one of them started fine and then failed a caller's request (the first
`"model": "auto"` call a 500). `check` raises SystemExit naming the variable.
"""
from __future__ import annotations

from dataclasses import replace

from app.calls import Call, Embed, Message, TextPart
from app.routing import auto_embedding
from app.routing.auto import LOCAL, ROUTING_FILE_ENV, choose, embeds, load_policy, local_model
from app.catalog import Catalog
from app.config import Settings, is_provider_variable
from app.errors import FlowcallError
from app.transport import parse_allow_list

LOCAL_MODEL_ENV = "FLOWCALL_OLLAMA_MODEL"


def check(settings: Settings, catalog: Catalog) -> None:
    """Parse every cross-module setting once; a malformed one stops the start with its name."""
    try:
        parse_allow_list(settings.jobs.allow_private_callback_hosts)
    except ValueError as exc:
        raise SystemExit(f"FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS: {exc}") from None
    _check_provider_variables(catalog)
    path = settings.routing_file
    try:
        policy = load_policy(path)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise SystemExit(f"{ROUTING_FILE_ENV}={path}: not a usable routing policy: {exc}") from None
    _probe_policy(policy, path, catalog, settings)
    if "local_model" in policy and policy["local_model"].get("env", LOCAL_MODEL_ENV) != LOCAL_MODEL_ENV:
        raise SystemExit(f"{ROUTING_FILE_ENV}={path}: local_model.env must be {LOCAL_MODEL_ENV}, the setting "
                         f"flowcall reads for the local model")
    if any(LOCAL in [entry["id"] for entry in task["models"]] for task in policy["tasks"].values()):
        try:
            local_model(policy, catalog, settings)
        except (FlowcallError, KeyError, TypeError, AttributeError) as exc:
            raise SystemExit(f"{LOCAL_MODEL_ENV} (or {ROUTING_FILE_ENV}'s local_model) is not usable: {exc}") from None


def _check_provider_variables(catalog: Catalog) -> None:
    """Settings keeps only provider variables named *_API_KEY or *_BASE_URL: a models file's provider
    naming another would silently never be configured."""
    for provider in catalog.providers.values():
        for name in (*provider.key_env, *([provider.base_url_env] if provider.base_url_env else [])):
            if not is_provider_variable(name):
                raise SystemExit(f"FLOWCALL_MODELS_FILE: provider {provider.name}'s variable {name} must end "
                                 f"in _API_KEY or _BASE_URL")


def _probe_policy(policy: dict, path: str | None, catalog: Catalog, settings: Settings) -> None:
    """Route one text call per task as if every provider were configured (pure: nothing is sent), so a
    policy that parses but lacks what routing reads (a scoring weight, a threshold) stops the start
    rather than failing the first `auto` call. A FlowcallError is a routing answer, not a defect."""
    provider_env = dict(settings.provider_env)
    for provider in catalog.providers.values():
        provider_env.update({name: provider_env.get(name) or "startup-probe" for name in provider.key_env})
        if provider.base_url_env:
            provider_env[provider.base_url_env] = (provider_env.get(provider.base_url_env)
                                                   or provider.default_base_url or "http://startup-probe.invalid")
    every_provider = replace(settings, provider_env=provider_env)
    for task in policy["tasks"]:
        call = Call(messages=(Message("user", (TextPart("ping"),)),), model="auto", task=task)
        route = choose
        if embeds(policy, task):              # an embeddings task: routed as an embeddings call is
            call, route = replace(call, embed=Embed(texts=("ping",))), auto_embedding.choose
        try:
            route(call, catalog, every_provider)
        except FlowcallError:
            pass
        except Exception as exc:  # noqa: BLE001 - any other failure is the policy's
            raise SystemExit(f"{ROUTING_FILE_ENV}={path or 'app/data/routing.json'}: routing task {task!r} "
                             f"fails: {type(exc).__name__}: {exc}") from None
