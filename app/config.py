"""Every setting flowcall reads, typed and documented in one place (the README table mirrors it).

Settings are read once at start from the environment (plus overrides passed to `create_app`), so
a running process never changes behaviour because someone edited its environment.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Mapping

MB = 1024 * 1024


def env_number(env: Mapping, name: str, default, minimum=0, cast=int):
    """A numeric setting: `default` when unset, and a clear exit at start when it is not a number
    or is below `minimum` (a typo in a setting must never surface as a failed call)."""
    raw = env.get(name)
    if raw in (None, ""):
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SystemExit(f"{name} must be {'an integer' if cast is int else 'a number'}, got {raw!r}") from None
    if value < minimum:
        raise SystemExit(f"{name} must be >= {minimum}, got {raw}")
    return value


_int = env_number

_TRUE = ("1", "true", "yes", "on")
_FALSE = ("", "0", "false", "no", "off")


def env_flag(env: Mapping, name: str, default: bool = False) -> bool:
    """A yes/no setting, in any case (`True`, `yes`, `1`); anything else is a clear exit at start."""
    raw = env.get(name)
    if raw is None:
        return default
    value = raw.strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    raise SystemExit(f"{name} must be one of {', '.join(_TRUE + _FALSE[1:])}, got {raw!r}")


def _list(env: Mapping, name: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in (env.get(name) or "").split(",") if x.strip())


@dataclass(frozen=True)
class Settings:
    database_url: str = "sqlite:///flowcall.db"
    redis_url: str | None = None
    log_content: bool = False
    jwt_secret: str | None = None
    jwt_public_key: str | None = None
    jwt_issuer: str | None = None
    jwt_audience: str | None = None
    max_body_bytes: int = 20 * MB
    max_image_bytes: int = 20 * MB
    allow_private_image_hosts: tuple[str, ...] = ()
    default_timeout_ms: int = 60_000
    max_timeout_ms: int = 300_000
    connect_timeout_s: float = 5.0
    models_file: str | None = None
    routing_preference: str = "balanced"
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    log_level: str = "INFO"
    # Keep-alive connections per provider per worker: as many as calls a worker holds at once
    # (gunicorn.conf.py: 1,000 gevent connections), else every call past it opens a new TLS connection.
    http_pool_size: int = 1000
    environ: Mapping = field(default_factory=dict)   # snapshot for provider keys and base URLs

    @classmethod
    def from_env(cls, env: Mapping | None = None) -> "Settings":
        env = dict(os.environ if env is None else env)
        preference = env.get("FLOWCALL_ROUTING_PREFERENCE", "balanced")
        if preference not in ("balanced", "cost", "quality"):
            raise SystemExit("FLOWCALL_ROUTING_PREFERENCE must be balanced, cost or quality")
        return cls(
            database_url=env.get("FLOWCALL_DATABASE_URL") or "sqlite:///flowcall.db",
            redis_url=env.get("FLOWCALL_REDIS_URL") or None,
            log_content=env_flag(env, "FLOWCALL_LOG_CONTENT"),
            jwt_secret=env.get("FLOWCALL_JWT_SECRET") or None,
            jwt_public_key=env.get("FLOWCALL_JWT_PUBLIC_KEY") or None,
            jwt_issuer=env.get("FLOWCALL_JWT_ISSUER") or None,
            jwt_audience=env.get("FLOWCALL_JWT_AUDIENCE") or None,
            max_body_bytes=_int(env, "FLOWCALL_MAX_BODY_BYTES", 20 * MB, 1024),
            max_image_bytes=_int(env, "FLOWCALL_MAX_IMAGE_BYTES", 20 * MB, 1024),
            allow_private_image_hosts=_list(env, "FLOWCALL_ALLOW_PRIVATE_IMAGE_HOSTS"),
            default_timeout_ms=_int(env, "FLOWCALL_DEFAULT_TIMEOUT_MS", 60_000, 100),
            max_timeout_ms=_int(env, "FLOWCALL_MAX_TIMEOUT_MS", 300_000, 100),
            connect_timeout_s=_int(env, "FLOWCALL_CONNECT_TIMEOUT_MS", 5_000, 10) / 1000,
            models_file=env.get("FLOWCALL_MODELS_FILE") or None,
            routing_preference=preference,
            breaker_threshold=_int(env, "FLOWCALL_BREAKER_THRESHOLD", 5, 1),
            breaker_cooldown_s=_int(env, "FLOWCALL_BREAKER_COOLDOWN_MS", 30_000, 0) / 1000,
            log_level=env.get("FLOWCALL_LOG_LEVEL", "INFO").upper(),
            http_pool_size=_int(env, "FLOWCALL_PROVIDER_POOL_SIZE", 1000, 1),
            environ=env,
        )

    def credentials(self, provider) -> tuple[str | None, str | None]:
        """(base URL, API key) for a provider config, or (None, None) when it is not configured.

        A provider is configured when its key is set; a keyless one (Ollama) when its base URL is
        set explicitly, so `auto` never routes to a localhost server nobody started. The mock is
        always there.
        """
        key = next((self.environ[k] for k in provider.key_env if self.environ.get(k)), None)
        base = self.environ.get(provider.base_url_env) if provider.base_url_env else None
        if provider.format == "mock":
            return "mock://", None
        if provider.requires_key and not key:
            return None, None
        if not provider.requires_key and not base:
            return None, None
        return (base or provider.default_base_url).rstrip("/"), key

    def is_configured(self, provider) -> bool:
        return self.credentials(provider)[0] is not None
