"""POST /api/v3/llm/batch (many calls, one answer), POST /api/v3/llm/jobs (a call or a batch, run
later by `flowcall worker`) and GET /api/v3/llm/jobs/<id>. API key or JWT."""
from __future__ import annotations

import math
import time

from flask import Blueprint, g, jsonify, request, url_for
from marshmallow import INCLUDE, Schema, fields
from werkzeug.exceptions import RequestEntityTooLarge

from app.batch.items import EnvelopeSchema, ItemContext, batch_body, parse_envelope, run_envelope
from app.config import BatchLimits
from app.errors import NotFound, PayloadTooLarge, ServiceUnavailable
from app.tenancy.idempotency import body_hash
from app.batch.jobs import Jobs
from app.openapi import doc
from app.answer_schemas import UsageOut
from app.json_body import parse_json_body

from ._common import either_auth, idempotency_key, read_body, services

bp = Blueprint("batch", __name__)

BATCH_EXAMPLE = {"items": [{"id": "t-1", "prompt": "Classify: my invoice is wrong"},
                           {"id": "t-2", "prompt": "Classify: the app crashes", "options": {"maxTokens": 50}}],
                 "defaults": {"model": "openai.gpt-4o-mini", "options": {"temperature": 0}}, "concurrency": 4}
JOB_EXAMPLE = {**BATCH_EXAMPLE, "callback_url": "https://hooks.zapier.com/hooks/catch/123/abc/"}


class BatchResponseSchema(Schema):
    success = fields.Boolean()
    total = fields.Integer()
    succeeded = fields.Integer()
    failed = fields.Integer()
    usage = fields.Nested(UsageOut)
    cost = fields.Float()
    latency_ms = fields.Integer()
    results = fields.List(fields.Dict(), metadata={
        "description": "One per item, in input order: the single-call success or error body plus "
                       "`index` and the item's `id` (null when it sent none)."})
    warnings = fields.List(fields.String())
    request_id = fields.String(allow_none=True)


class JobRequestSchema(EnvelopeSchema):
    """A call body (as /api/v3/llm/public/call) or a batch envelope (as /api/v3/llm/batch), plus an
    optional callback_url."""

    class Meta:
        unknown = INCLUDE            # a call body's fields are welcome here too
    items = fields.List(fields.Raw(allow_none=True))
    callback_url = fields.String(metadata={"description": "POSTed the finished job, signed "
                                                          "(X-Flowcall-Signature); needs FLOWCALL_CALLBACK_SECRET"})


class JobResponseSchema(Schema):
    success = fields.Boolean()
    job_id = fields.String()
    kind = fields.String(metadata={"enum": ["call", "batch"]})
    status = fields.String(metadata={"enum": ["queued", "running", "done", "failed"]})
    status_url = fields.String(allow_none=True)
    created_at = fields.String()
    started_at = fields.String(allow_none=True)
    finished_at = fields.String(allow_none=True)
    progress = fields.Dict()
    result = fields.Dict(allow_none=True, metadata={"description": "When done or failed: the synchronous "
                                                                   "endpoint's body (call or batch)"})
    request_id = fields.String(allow_none=True)
    callback = fields.Dict(allow_none=True)


def _read_body(limits: BatchLimits) -> dict:
    """The JSON body, refused with the batch limits in the 413 when it is over the size cap."""
    request.max_content_length = limits.max_body_bytes
    try:
        raw = read_body()
    except (RequestEntityTooLarge, PayloadTooLarge):
        raise limits.body_too_large() from None
    return parse_json_body(raw)


def _answer(body: dict, status: int, replayed: bool):
    response = jsonify(body)
    response.status_code = status
    if replayed:
        response.headers["Idempotent-Replay"] = "true"
    return response


@bp.post("/api/v3/llm/batch")
@doc(summary="Run many calls at once; one result per item, in order", tags=("batch",), auth="either",
     request=EnvelopeSchema, response=BatchResponseSchema, errors=(400, 401, 403, 409, 413, 422, 503),
     idempotent=True, request_example=BATCH_EXAMPLE)
def batch():
    principal = either_auth()
    svc = services()
    limits = svc.settings.batch
    body = _read_body(limits)
    key = idempotency_key()
    envelope = parse_envelope(body, limits)
    if key:
        rounds = math.ceil(len(envelope.items) / limits.workers(envelope.concurrency, len(envelope.items)))
        replay = svc.gateway.idempotency.begin(principal.tenant_id, key, body_hash("batch", body),
                                               lock_seconds=rounds * svc.settings.max_timeout_ms / 1000)
        if replay is not None:
            return _answer(replay.body, replay.status, True)
    ctx = ItemContext(svc.gateway, principal, "batch", g.request_id, svc.settings.max_image_bytes)
    started = time.perf_counter()
    try:
        results = run_envelope(ctx, envelope, limits)
    except BaseException:
        if key:
            svc.gateway.idempotency.release(principal.tenant_id, key)
        raise
    elapsed = time.perf_counter() - started
    g.upstream_ms = elapsed * 1000                # the items' time; what is left is ours
    answer = batch_body(results, g.request_id, int(elapsed * 1000))
    if key:
        svc.gateway.idempotency.finish(principal.tenant_id, key, 200, answer)
    return _answer(answer, 200, False)


def jobs_service() -> Jobs:
    """This process's Jobs; None at start (the queue could not be opened) is a 503, not a 500."""
    jobs = services().jobs
    if jobs is None:
        raise ServiceUnavailable("The job queue is not reachable.", code="queue_unavailable", retryable=True)
    return jobs


@bp.post("/api/v3/llm/jobs")
@doc(summary="Queue a call or a batch; answers at once with the job's status URL", tags=("batch",),
     auth="either", request=JobRequestSchema, response=JobResponseSchema,
     errors=(400, 401, 403, 409, 413, 422, 503), idempotent=True, request_example=JOB_EXAMPLE, status=202,
     description="Answers 202 with status `queued`. Poll `status_url`, or send `callback_url` to be POSTed "
                 "the same document when the job ends (signed; see the README's Batch jobs section).")
def submit_job():
    principal = either_auth()
    body = _read_body(services().settings.batch)
    status, answer, replayed = jobs_service().submit(
        principal, body, request_id=g.request_id, idempotency_key=idempotency_key(),
        status_url_for=lambda job_id: url_for("batch.job_status", job_id=job_id, _external=True))
    response = _answer(answer, status, replayed)
    response.headers["Location"] = answer["status_url"]
    return response


@bp.get("/api/v3/llm/jobs/<job_id>")
@doc(summary="A job's status, and its result once it has ended", tags=("batch",), auth="either",
     response=JobResponseSchema, errors=(400, 401, 403, 404, 503))
def job_status(job_id: str):
    principal = either_auth()
    answer = jobs_service().status(job_id, principal.tenant_id)
    if answer is None:
        raise NotFound("No such job for this tenant.", code="job_not_found")
    return jsonify(answer)
