"""The error tree, and the one place any exception becomes the JSON envelope.

    FlowcallError                     500 internal_error
    ├── ValidationError               400 validation_error (fields: dotted path -> message)
    │   ├── InvalidJSON               400 invalid_json
    │   ├── UnknownModel              400 unknown_model / unknown_provider
    │   ├── CapabilityMissing         400 capability_missing
    │   └── ImageRejected             400 image_rejected
    ├── Unauthorized                  401 unauthorized
    ├── Forbidden                     403 forbidden
    ├── NotFound                      404 not_found
    ├── MethodNotAllowed              405 method_not_allowed
    ├── BudgetExceeded                402 budget_exceeded_key / budget_exceeded_tenant
    ├── IdempotencyConflict           409 idempotency_in_progress   retryable
    ├── IdempotencyMismatch           422 idempotency_key_reused
    ├── PayloadTooLarge               413 payload_too_large
    ├── UnsupportedMediaType          415 unsupported_content_encoding
    ├── RateLimited                   429 rpm_exceeded_* / tpm_exceeded_* (retry_after)
    ├── ServiceUnavailable            503 (no_provider_configured, auth_not_configured, ...)
    ├── DeadlineExceeded              504 deadline_exceeded
    └── ProviderError                 502 provider_error (provider, upstream_status, retry_after)
        ├── ProviderTimeout           504 provider_timeout          retryable
        ├── ProviderUnreachable       502 provider_unreachable      retryable
        ├── ProviderRateLimited       502 provider_rate_limited     retryable unless a quota
        ├── ProviderOverloaded        502 provider_overloaded       retryable (5xx, 529)
        ├── ProviderAuthFailed        502 provider_auth_failed
        ├── ProviderRejected          502 provider_rejected_request (their 400: our translation or the input)
        ├── ModelNotFound             502 model_not_found
        ├── ContentBlocked            422 content_blocked
        ├── InvalidProviderResponse   502 invalid_provider_response
        └── InvalidStructuredOutput   502 invalid_structured_output

`retryable` tells the caller (and our own dispatcher) whether the same request may succeed later.
"""
from __future__ import annotations

import logging
import re

log = logging.getLogger(__name__)

# Anything that looks like a credential is replaced before text leaves the process: provider
# error messages sometimes echo the key ("Incorrect API key provided: xai-abc***").
_SECRET_PATTERNS = [
    (re.compile(r"\b(?:sk|pk|rk|xai|gsk|pplx|fc)[-_][A-Za-z0-9_\-*.]{6,}"), "[redacted]"),
    (re.compile(r"\bAIza[0-9A-Za-z_\-]{20,}"), "[redacted]"),
    (re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9_\-.=]{8,}"), r"\1[redacted]"),
    (re.compile(r"(?i)(api[_-]?key[\"'=:\s]+)[A-Za-z0-9_\-*.]{8,}"), r"\1[redacted]"),
]


def redact(text: str, secrets: tuple[str, ...] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 6:
            text = text.replace(secret, "[redacted]")
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class FlowcallError(Exception):
    status = 500
    code = "internal_error"
    retryable = False
    attempts = 0            # set by dispatch: provider attempts made before this error
    model_id: str | None = None

    def __init__(self, message: str, *, code: str | None = None, fields: dict | None = None,
                 provider: str | None = None, retryable: bool | None = None, status: int | None = None,
                 retry_after: float | None = None, upstream_status: int | None = None):
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        if status is not None:
            self.status = status
        self.fields = fields or {}
        self.provider = provider
        self.retry_after = retry_after
        self.upstream_status = upstream_status

    def to_dict(self) -> dict:
        return {
            "code": self.code,
            "message": self.message,
            "fields": self.fields,
            "provider": self.provider,
            "retryable": self.retryable,
        }


# The tree in the module docstring, one class per error so that callers catch by kind. The
# declarations below share one shape by design (a status, a code, whether retrying may help): they
# are data, not repeated logic, and are kept as plain classes so that every tool can read them.
class ValidationError(FlowcallError):
    status = 400
    code = "validation_error"


class InvalidJSON(ValidationError):
    code = "invalid_json"


class UnknownModel(ValidationError):
    code = "unknown_model"


class CapabilityMissing(ValidationError):
    code = "capability_missing"


class ImageRejected(ValidationError):
    code = "image_rejected"


class Unauthorized(FlowcallError):
    status = 401
    code = "unauthorized"


class Forbidden(FlowcallError):
    status = 403
    code = "forbidden"


class NotFound(FlowcallError):
    status = 404
    code = "not_found"


class MethodNotAllowed(FlowcallError):
    status = 405
    code = "method_not_allowed"


class BudgetExceeded(FlowcallError):
    status = 402
    code = "budget_exceeded"


class IdempotencyConflict(FlowcallError):
    status = 409
    code = "idempotency_in_progress"
    retryable = True


class IdempotencyMismatch(FlowcallError):
    status = 422
    code = "idempotency_key_reused"


class PayloadTooLarge(FlowcallError):
    status = 413
    code = "payload_too_large"


class UnsupportedMediaType(FlowcallError):
    status = 415
    code = "unsupported_media_type"


class RateLimited(FlowcallError):
    status = 429
    code = "rate_limited"
    retryable = True


class ServiceUnavailable(FlowcallError):
    status = 503
    code = "service_unavailable"


class DeadlineExceeded(FlowcallError):
    status = 504
    code = "deadline_exceeded"
    retryable = True


class ProviderError(FlowcallError):
    status = 502
    code = "provider_error"


class ProviderTimeout(ProviderError):
    status = 504
    code = "provider_timeout"
    retryable = True


class ProviderUnreachable(ProviderError):
    code = "provider_unreachable"
    retryable = True


class ProviderRateLimited(ProviderError):
    code = "provider_rate_limited"
    retryable = True


class ProviderOverloaded(ProviderError):
    code = "provider_overloaded"
    retryable = True


class ProviderAuthFailed(ProviderError):
    code = "provider_auth_failed"


class ProviderRejected(ProviderError):
    code = "provider_rejected_request"


class ModelNotFound(ProviderError):
    code = "model_not_found"


class ContentBlocked(ProviderError):
    status = 422
    code = "content_blocked"


class InvalidProviderResponse(ProviderError):
    code = "invalid_provider_response"


class InvalidStructuredOutput(ProviderError):
    code = "invalid_structured_output"


def from_upstream_status(status: int, message: str, *, provider: str,
                         retry_after: float | None = None) -> ProviderError:
    """Default status -> error mapping shared by every provider; adapters refine it (quota 429s...)."""
    if status == 429:
        cls = ProviderRateLimited
    elif status in (401, 403):
        cls = ProviderAuthFailed
    elif status == 404:
        cls = ModelNotFound
    elif status in (408, 504):
        cls = ProviderTimeout
    elif status >= 500:
        cls = ProviderOverloaded
    elif 400 <= status < 500:
        cls = ProviderRejected
    else:
        cls = InvalidProviderResponse
    return cls(message, provider=provider, retry_after=retry_after, upstream_status=status)


def from_http_exception(err, max_body_bytes: int | None) -> FlowcallError:
    """Werkzeug's HTTPException (a 404, 405, 413 before any view ran) as our error."""
    mapping = {
        404: NotFound("No such endpoint. See the README for the endpoint list."),
        405: MethodNotAllowed(f"Method not allowed here; allowed: "
                              f"{', '.join(sorted(getattr(err, 'valid_methods', None) or []))}"),
        413: PayloadTooLarge(f"Request body is larger than the limit of {max_body_bytes} bytes "
                             f"(FLOWCALL_MAX_BODY_BYTES)."),
    }
    mapped = mapping.get(err.code)
    if mapped is None:
        mapped = FlowcallError(err.description or err.name, status=err.code or 500,
                               code=(err.name or "error").lower().replace(" ", "_"))
    return mapped


def http_exception_headers(err) -> dict[str, str]:
    """The headers an HTTPException's answer must keep: a 405's Allow (RFC 9110 §15.5.6)."""
    if err.code == 405 and getattr(err, "valid_methods", None):
        return {"Allow": ", ".join(sorted(err.valid_methods))}
    return {}


def init_app(app) -> None:
    """Register the single handler: every error, expected or not, leaves as the JSON envelope."""
    from flask import g, jsonify
    from werkzeug.exceptions import HTTPException

    def envelope(err: FlowcallError):
        g.error_code = err.code
        body = {"success": False, "error": err.to_dict(), "request_id": getattr(g, "request_id", None)}
        resp = jsonify(body)
        resp.status_code = err.status
        if err.retry_after is not None and err.status in (409, 429, 503):
            resp.headers["Retry-After"] = str(max(1, int(round(err.retry_after))))
        return resp

    @app.errorhandler(FlowcallError)
    def _flowcall(err):
        return envelope(err)

    @app.errorhandler(HTTPException)
    def _http(err):
        resp = envelope(from_http_exception(err, app.config.get("MAX_CONTENT_LENGTH")))
        resp.headers.update(http_exception_headers(err))
        return resp

    @app.errorhandler(Exception)
    def _unexpected(err):
        log.exception("unhandled error")
        return envelope(FlowcallError("Internal error; the request id identifies it in our logs."))
