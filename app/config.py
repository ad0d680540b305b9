"""Every setting flowcall reads, typed, bounded and documented in one place (the README table mirrors it).

`Settings` is the only reader of the environment: each entry point calls `Settings.load` once at
start (with the overrides tests pass to `create_app`) and passes the result down, so a running
process never changes behaviour because someone edited its environment, and a malformed value
stops the start with the variable's name instead of failing a caller's request later. Settings whose parsing needs
another module (the routing policy, the allow-lists' CIDRs, the catalog) are checked by
app/startup.py at the same moment. gunicorn.conf.py, gunicorn's own file, reads its FLOWCALL_WORKER_*.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from collections.abc import Mapping

from sqlalchemy.engine import make_url

from app.errors import PayloadTooLarge

MB = 1024 * 1024
DEFAULT_BATCH_MAX_ITEMS = 100
DEFAULT_BATCH_MAX_CONCURRENCY = 8
DEFAULT_RESPONSE_RETENTION_DAYS = 30          # OpenAI keeps stored responses 30 days


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


def _choice(env: Mapping, name: str, default: str, choices: tuple[str, ...]) -> str:
    value = env.get(name) or default
    if value not in choices:
        raise SystemExit(f"{name} must be {', '.join(choices[:-1])} or {choices[-1]}, got {value!r}")
    return value


def is_provider_variable(name: str) -> bool:
    """Provider keys and base URLs (the catalog's `key_env` / `base_url_env`, a models file's too)."""
    return name.endswith(("_API_KEY", "_BASE_URL"))


def default_queue_path(database_url: str) -> str:
    """`flowcall-jobs.db` beside the SQLite store (or in the working directory)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        return os.path.join(os.path.dirname(url.database), "flowcall-jobs.db")
    return "flowcall-jobs.db"


@dataclass(frozen=True)
class BatchLimits:
    """The caps a batch (or a batch job) must fit, from FLOWCALL_BATCH_* settings."""
    max_items: int = DEFAULT_BATCH_MAX_ITEMS
    max_concurrency: int = DEFAULT_BATCH_MAX_CONCURRENCY
    max_body_bytes: int = 20 * MB

    def describe(self) -> str:
        return (f"at most {self.max_items} items (FLOWCALL_BATCH_MAX_ITEMS) and {self.max_body_bytes} bytes "
                f"(FLOWCALL_BATCH_MAX_BODY_BYTES)")

    def body_too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"The batch body is too large: a batch may have {self.describe()}.",
                               fields={"body": f"at most {self.max_body_bytes} bytes"})

    def workers(self, requested: int | None, items: int) -> int:
        """Threads for one batch: what the caller asked, within the server cap, never more than items."""
        return max(1, min(requested or self.max_concurrency, self.max_concurrency, items))


@dataclass(frozen=True)
class JobSettings:
    """The job queue and its callbacks (FLOWCALL_JOB*, FLOWCALL_CALLBACK_*)."""
    queue_path: str = "flowcall-jobs.db"
    redis_url: str | None = None
    lease_s: float = 60.0
    workers: int = 4
    callback_secret: str | None = None
    callback_attempts: int = 8
    callback_delay_s: float = 10.0
    allow_private_callback_hosts: tuple[str, ...] = ()
    retention_days: int = 7


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
    routing_file: str | None = None               # None: app/data/routing.json
    ollama_model: str | None = None               # the routing policy's local model; None: its default
    breaker_threshold: int = 5
    breaker_cooldown_s: float = 30.0
    log_level: str | None = None                  # None: the entry point's own (INFO; WARNING for `flowcall batch`)
    batch: BatchLimits = BatchLimits()
    jobs: JobSettings = JobSettings()
    response_retention_days: int = DEFAULT_RESPONSE_RETENTION_DAYS
    dashboard_session_minutes: int = 480          # a dashboard sign-in lasts this long (8 h), then signs in again
    # A roller keeps the dashboard's sums (gunicorn.conf.py starts one beside the workers and says so
    # here): pages then leave a tenant's unsummed history to it instead of reading it themselves.
    dashboard_roller: bool = False
    prometheus_multiproc_dir: str | None = None   # set by gunicorn.conf.py: metrics aggregate across workers
    cli_key: str | None = None                    # FLOWCALL_KEY: `flowcall batch`'s default --key
    # Keep-alive connections per provider per worker: as many as calls a worker holds at once
    # (gunicorn.conf.py: 1,000 gevent connections), else every call past it opens a new TLS connection.
    http_pool_size: int = 1000
    provider_env: Mapping = field(default_factory=dict)   # only the variables `is_provider_variable` names

    @classmethod
    def load(cls, overrides: Mapping | None = None) -> Settings:
        """This process's environment, `overrides` winning by name (tests and the CLI pass settings here)."""
        overrides = {k: str(v) for k, v in (overrides or {}).items() if isinstance(v, (str, int, float))}
        return cls.from_env({**os.environ, **overrides})

    @classmethod
    def from_env(cls, env: Mapping | None = None) -> Settings:
        env = dict(os.environ if env is None else env)
        database_url = env.get("FLOWCALL_DATABASE_URL") or "sqlite:///flowcall.db"
        redis_url = env.get("FLOWCALL_REDIS_URL") or None
        max_body_bytes = _int(env, "FLOWCALL_MAX_BODY_BYTES", 20 * MB, 1024)
        return cls(
            database_url=database_url,
            redis_url=redis_url,
            log_content=env_flag(env, "FLOWCALL_LOG_CONTENT"),
            jwt_secret=env.get("FLOWCALL_JWT_SECRET") or None,
            jwt_public_key=env.get("FLOWCALL_JWT_PUBLIC_KEY") or None,
            jwt_issuer=env.get("FLOWCALL_JWT_ISSUER") or None,
            jwt_audience=env.get("FLOWCALL_JWT_AUDIENCE") or None,
            max_body_bytes=max_body_bytes,
            max_image_bytes=_int(env, "FLOWCALL_MAX_IMAGE_BYTES", 20 * MB, 1024),
            allow_private_image_hosts=_list(env, "FLOWCALL_ALLOW_PRIVATE_IMAGE_HOSTS"),
            default_timeout_ms=_int(env, "FLOWCALL_DEFAULT_TIMEOUT_MS", 60_000, 100),
            max_timeout_ms=_int(env, "FLOWCALL_MAX_TIMEOUT_MS", 300_000, 100),
            connect_timeout_s=_int(env, "FLOWCALL_CONNECT_TIMEOUT_MS", 5_000, 10) / 1000,
            models_file=env.get("FLOWCALL_MODELS_FILE") or None,
            routing_preference=_choice(env, "FLOWCALL_ROUTING_PREFERENCE", "balanced",
                                       ("balanced", "cost", "quality")),
            routing_file=env.get("FLOWCALL_ROUTING_FILE") or None,
            ollama_model=env.get("FLOWCALL_OLLAMA_MODEL") or None,
            breaker_threshold=_int(env, "FLOWCALL_BREAKER_THRESHOLD", 5, 1),
            breaker_cooldown_s=_int(env, "FLOWCALL_BREAKER_COOLDOWN_MS", 30_000, 0) / 1000,
            http_pool_size=_int(env, "FLOWCALL_PROVIDER_POOL_SIZE", 1000, 1),
            log_level=(env.get("FLOWCALL_LOG_LEVEL") or "").upper() or None,
            batch=BatchLimits(
                max_items=_int(env, "FLOWCALL_BATCH_MAX_ITEMS", DEFAULT_BATCH_MAX_ITEMS, 1),
                max_concurrency=_int(env, "FLOWCALL_BATCH_MAX_CONCURRENCY", DEFAULT_BATCH_MAX_CONCURRENCY, 1),
                max_body_bytes=_int(env, "FLOWCALL_BATCH_MAX_BODY_BYTES", max_body_bytes, 1024)),
            jobs=JobSettings(
                queue_path=env.get("FLOWCALL_JOBS_PATH") or default_queue_path(database_url),
                redis_url=redis_url,
                lease_s=env_number(env, "FLOWCALL_JOB_LEASE_S", 60.0, 1.0),
                workers=_int(env, "FLOWCALL_JOB_WORKERS", 4, 1),
                callback_secret=env.get("FLOWCALL_CALLBACK_SECRET") or None,
                callback_attempts=_int(env, "FLOWCALL_CALLBACK_ATTEMPTS", 8, 1),
                callback_delay_s=env_number(env, "FLOWCALL_CALLBACK_RETRY_DELAY_S", 10.0, 0.0),
                allow_private_callback_hosts=_list(env, "FLOWCALL_ALLOW_PRIVATE_CALLBACK_HOSTS"),
                retention_days=_int(env, "FLOWCALL_JOB_RETENTION_DAYS", 7, 1)),
            response_retention_days=_int(env, "FLOWCALL_RESPONSE_RETENTION_DAYS", DEFAULT_RESPONSE_RETENTION_DAYS, 1),
            dashboard_session_minutes=_int(env, "FLOWCALL_DASHBOARD_SESSION_MINUTES", 480, 1),
            dashboard_roller=env.get("FLOWCALL_DASHBOARD_ROLLER_RUNNING", "") == "1",
            prometheus_multiproc_dir=env.get("PROMETHEUS_MULTIPROC_DIR") or None,
            cli_key=env.get("FLOWCALL_KEY") or None,
            provider_env={k: v for k, v in env.items() if is_provider_variable(k)},
        )

    def credentials(self, provider) -> tuple[str | None, str | None]:
        """(base URL, API key) for a provider config, or (None, None) when it is not configured.

        A provider is configured when its key is set; a keyless one (Ollama) when its base URL is
        set explicitly, so `auto` never routes to a localhost server nobody started. The mock is
        always there.
        """
        key = next((self.provider_env[k] for k in provider.key_env if self.provider_env.get(k)), None)
        base = self.provider_env.get(provider.base_url_env) if provider.base_url_env else None
        if provider.format == "mock":
            return "mock://", None
        if provider.requires_key and not key:
            return None, None
        if not provider.requires_key and not base:
            return None, None
        return (base or provider.default_base_url).rstrip("/"), key

    def is_configured(self, provider) -> bool:
        return self.credentials(provider)[0] is not None
