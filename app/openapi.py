"""The OpenAPI 3.1 document, generated from the same marshmallow schemas that validate requests.

Each view declares what it takes and returns with `@doc(...)`; `build_spec(app)` walks Flask's URL
map, so a route without a declaration is a test failure, not a silent gap in the document.
"""
from __future__ import annotations

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin

from app.answer_schemas import ErrorResponseSchema

ERROR_TEXT = {
    400: "Invalid request: `error.fields` maps dotted paths to messages",
    401: "Missing or invalid credentials",
    402: "Monthly budget spent (refused before any provider call)",
    403: "The token does not cover this tenant",
    404: "Not found",
    409: "A request with this Idempotency-Key is still running",
    413: "Body larger than the configured limit",
    415: "A Content-Encoding other than identity (send JSON uncompressed)",
    422: "Idempotency-Key reused with another body, or content blocked by the provider",
    429: "Rate limit reached; see Retry-After",
    502: "The provider failed or its answer was unusable",
    503: "A setting this request needs is missing on the server",
    504: "The provider did not answer within the deadline",
}
CALL_ERRORS = (400, 401, 402, 403, 409, 413, 415, 422, 429, 502, 503, 504)
SECURITY = {
    "jwt": [{"Jwt": []}],
    "api_key": [{"ApiKey": []}],
    "bearer_key": [{"BearerApiKey": []}],
    "either": [{"ApiKey": []}, {"Jwt": []}],
    "none": [],
}
TENANT_HEADERS = [
    {"in": "header", "name": "x-tenant-id", "required": True, "schema": {"type": "string", "format": "uuid"},
     "description": "Tenant the JWT must grant (tenant_id or tenants claim)"},
    {"in": "header", "name": "x-agent-id", "required": True, "schema": {"type": "string", "format": "uuid"}},
]
IDEMPOTENCY_HEADER = {"in": "header", "name": "Idempotency-Key", "required": False,
                      "schema": {"type": "string", "maxLength": 255},
                      "description": "Run once per tenant and key for 24 h; repeats get the stored answer"}


def doc(*, summary: str, tags: tuple[str, ...], auth: str, request=None, response=None, errors=(),
        request_example=None, response_example=None, params=(), description: str | None = None,
        response_content_type: str = "application/json", idempotent: bool = False,
        error_schema: str = "Error", status: int = 200):
    """Declare a view's contract for the OpenAPI document (nothing changes at run time)."""
    def attach(view):
        view.__openapi__ = dict(summary=summary, tags=tags, auth=auth, request=request, response=response,
                                errors=tuple(errors), request_example=request_example,
                                response_example=response_example, params=tuple(params),
                                description=description, response_content_type=response_content_type,
                                idempotent=idempotent, error_schema=error_schema, status=status)
        return view
    return attach


def _schema_ref(schema) -> dict | str:
    return schema if isinstance(schema, dict) else schema.__class__ if not isinstance(schema, type) else schema


def build_spec(app) -> dict:
    spec = APISpec(title="flowcall", version="1.0.0", openapi_version="3.1.0",
                   plugins=[MarshmallowPlugin()],
                   info={"description": "One HTTP endpoint that calls any LLM provider the same way."})
    spec.components.security_scheme("ApiKey", {"type": "apiKey", "in": "header", "name": "X-Api-Key"})
    spec.components.security_scheme("BearerApiKey", {"type": "http", "scheme": "bearer",
                                                     "description": "A flowcall API key as the bearer token"})
    spec.components.security_scheme("Jwt", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                            "description": "HS256/RS256/ES256 JWT with exp and a tenant claim"})
    spec.components.schema("Error", schema=ErrorResponseSchema)
    spec.components.schema("OpenAIError", {
        "type": "object", "required": ["error"],
        "description": "OpenAI's error shape (the /v1 OpenAI-compatible routes)",
        "properties": {"error": {"type": "object", "required": ["message", "type"], "properties": {
            "message": {"type": "string"}, "type": {"type": "string"},
            "param": {"type": ["string", "null"]}, "code": {"type": ["string", "null"]}}}}})

    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.rule):
        view = app.view_functions.get(rule.endpoint)
        meta = getattr(view, "__openapi__", None)
        if meta is None:
            continue
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            spec.path(path=_openapi_path(rule.rule), operations={method.lower(): _operation(meta, rule, app)})
    return spec.to_dict()


def _openapi_path(rule: str) -> str:
    out = []
    for seg in rule.split("/"):
        if seg.startswith("<") and seg.endswith(">"):
            seg = "{" + seg[1:-1].split(":")[-1] + "}"
        out.append(seg)
    return "/".join(out)


def _operation(meta: dict, rule, app) -> dict:
    op: dict = {"summary": meta["summary"], "tags": list(meta["tags"]), "security": SECURITY[meta["auth"]]}
    if meta["description"]:
        op["description"] = meta["description"]
    params = [p(app) if callable(p) else p for p in meta["params"]]   # callables read the live catalog
    if meta["auth"] == "jwt":
        params += TENANT_HEADERS
    if meta["idempotent"]:
        params.append(IDEMPOTENCY_HEADER)
    params += [{"in": "path", "name": name, "required": True, "schema": {"type": "string"}}
               for name in rule.arguments]
    if params:
        op["parameters"] = params
    if meta["request"] is not None:
        content = {"schema": _schema_ref(meta["request"])}
        if meta["request_example"] is not None:
            content["example"] = meta["request_example"]
        op["requestBody"] = {"required": True, "content": {"application/json": content}}
    ok: dict = {"description": "Success"}
    if meta["response"] is not None:
        body = {"schema": _schema_ref(meta["response"])}
        if meta["response_example"] is not None:
            body["example"] = meta["response_example"]
        ok["content"] = {meta["response_content_type"]: body}
    responses = {str(meta["status"]): ok}
    for status in meta["errors"]:
        responses[str(status)] = {"description": ERROR_TEXT[status],
                                  "content": {"application/json": {"schema": meta["error_schema"]}}}
    op["responses"] = responses
    return op
