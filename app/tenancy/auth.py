"""Who is calling: a JWT with tenant headers, or an API key. Raises; never builds responses.

JWT: HS256 with FLOWCALL_JWT_SECRET and/or RS256/ES256 with FLOWCALL_JWT_PUBLIC_KEY. The key is
chosen by the token's `alg` from an explicit allow-list, so `none` is impossible and an HS token
can never be verified with the public key as an HMAC secret (key confusion). `exp` is required, as
a JSON number of seconds no later than the year 9999 (PyJWT alone would take the string "9999999999",
and 1e308 as a token that never expires).
"""
from __future__ import annotations

import math
import uuid
from dataclasses import dataclass

import jwt

from app.config import Settings
from app.errors import Forbidden, ServiceUnavailable, Unauthorized, ValidationError
from app.tenancy.store import Limits, Store

HMAC_ALGORITHMS = ("HS256",)
PUBLIC_KEY_ALGORITHMS = ("RS256", "ES256")
MAX_TOKEN_BYTES = 8192
MAX_EXP = 253402300799            # 9999-12-31T23:59:59Z: the last second a date can name


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    agent_id: str | None
    method: str                  # "jwt" | "api_key"
    key_id: str | None = None
    key_name: str | None = None
    subject: str | None = None
    limits: Limits = Limits()          # the key's own limits (tenant limits live in the store)


def _uuid_header(headers, name: str) -> str:
    value = (headers.get(name) or "").strip()
    if not value:
        raise ValidationError(f"Header {name} is required with JWT authentication.", code="missing_header",
                              fields={name: "required"})
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise ValidationError(f"Header {name} must be a UUID.", code="invalid_header",
                              fields={name: "must be a UUID"}) from None


def _bearer(headers) -> str | None:
    raw = headers.get("Authorization") or ""
    scheme, _, token = raw.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authenticate_jwt(headers, settings: Settings, require_agent: bool = True) -> Principal:
    """The token's principal. `require_agent=False` (reads: /me, /models, /usage, test-connection)
    makes x-agent-id optional; calls, batches and jobs need it, since their ledger rows record it."""
    if not (settings.jwt_secret or settings.jwt_public_key):
        raise ServiceUnavailable("JWT authentication is not configured on this server: set "
                                 "FLOWCALL_JWT_SECRET or FLOWCALL_JWT_PUBLIC_KEY, or use the "
                                 "X-Api-Key endpoint /api/v3/llm/public/call.", code="auth_not_configured")
    token = _bearer(headers)
    if token is None:
        raise Unauthorized("Send Authorization: Bearer <jwt>.", code="missing_token")
    if len(token) > MAX_TOKEN_BYTES:
        raise Unauthorized("Token too large.", code="invalid_token")
    try:
        alg = jwt.get_unverified_header(token).get("alg")
    except jwt.PyJWTError:
        raise Unauthorized("Malformed token.", code="invalid_token") from None
    if alg in HMAC_ALGORITHMS and settings.jwt_secret:
        key, algorithms = settings.jwt_secret, list(HMAC_ALGORITHMS)
    elif alg in PUBLIC_KEY_ALGORITHMS and settings.jwt_public_key:
        key, algorithms = settings.jwt_public_key, list(PUBLIC_KEY_ALGORITHMS)
    else:
        raise Unauthorized(f"Token algorithm {alg!r} is not accepted.", code="invalid_token")
    try:
        claims = jwt.decode(token, key, algorithms=algorithms, issuer=settings.jwt_issuer,
                            audience=settings.jwt_audience,
                            options={"require": ["exp"], "verify_aud": settings.jwt_audience is not None})
    except jwt.ExpiredSignatureError:
        raise Unauthorized("Token has expired.", code="token_expired") from None
    except jwt.PyJWTError as exc:
        raise Unauthorized(f"Token rejected: {exc}.", code="invalid_token") from None
    _check_exp(claims["exp"])

    tenant_id = _uuid_header(headers, "x-tenant-id")
    agent_id = _uuid_header(headers, "x-agent-id") if require_agent or (headers.get("x-agent-id") or "").strip() \
        else None
    allowed = set()
    if isinstance(claims.get("tenant_id"), str):
        allowed.add(claims["tenant_id"].lower())
    if isinstance(claims.get("tenants"), list):
        allowed.update(t.lower() for t in claims["tenants"] if isinstance(t, str))
    if tenant_id.lower() not in allowed:
        raise Forbidden("The token does not grant access to this x-tenant-id.", code="tenant_forbidden")
    return Principal(tenant_id=tenant_id, agent_id=agent_id, method="jwt",
                     subject=claims.get("sub") if isinstance(claims.get("sub"), str) else None)


def _check_exp(exp) -> None:
    """`exp` as RFC 7519 defines it (a NumericDate: a JSON number), and a real date."""
    if isinstance(exp, bool) or not isinstance(exp, (int, float)):
        raise Unauthorized("Token rejected: exp must be a number of seconds, not a string.", code="invalid_token")
    if not math.isfinite(exp) or exp > MAX_EXP:
        raise Unauthorized("Token rejected: exp is not a real date (a token must expire).", code="invalid_token")


def authenticate_api_key(presented: str | None, store: Store) -> Principal:
    if not presented:
        raise Unauthorized("Send your API key in the X-Api-Key header.", code="missing_api_key")
    key = store.verify_key(presented.strip())
    if key is None:
        raise Unauthorized("Invalid or revoked API key.", code="invalid_api_key")
    return Principal(tenant_id=key.tenant_id, agent_id=key.agent_id, method="api_key", key_id=key.id,
                     key_name=key.name, limits=key.limits)


def api_key_from_header(headers) -> str | None:
    return headers.get("X-Api-Key")


def api_key_from_bearer(headers) -> str | None:
    return _bearer(headers)
