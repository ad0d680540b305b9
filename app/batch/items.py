"""Many calls as one unit of work: the batch endpoint, batch jobs and `flowcall batch` share this.

Each item is a call like any other: validated by the call schema (after the batch's `defaults` are
merged under it), admitted by the rate limits and budgets, routed, retried, fallen back and written
to the ledger by the gateway, one row per item. A bad or failed item is an error in its own slot,
never the batch's failure; only a malformed envelope (items not a list, too many of them, a bad
`concurrency`, invalid `defaults`) refuses the whole request.

Items run in a bounded thread pool. Worker threads see no Flask request: everything an item needs
travels in `ItemContext`.
"""
from __future__ import annotations

import logging
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import dataclass
from collections.abc import Callable, Iterable, Iterator, Mapping

from marshmallow import RAISE, Schema, fields, validate

from app.config import BatchLimits
from app.errors import FlowcallError, PayloadTooLarge, ValidationError
from app.schema_bounds import batch_schemas_problem
from app.answer_schemas import answer_to_dict
from app.schemas import CallSchema, WholeNumber, call_from_body, load

log = logging.getLogger(__name__)

MERGED_OBJECTS = ("options", "context")       # defaults merge into these key by key
MAX_CALLER_ID = 200
_call_schema = CallSchema()


class EnvelopeSchema(Schema):
    """`{"items": [...], "defaults": {...}, "concurrency": N}`; items are checked one by one later."""

    class Meta:
        unknown = RAISE
    items = fields.List(fields.Raw(allow_none=True), required=True, validate=validate.Length(min=1))
    defaults = fields.Dict(keys=fields.String(), values=fields.Raw(allow_none=True))
    concurrency = WholeNumber(validate=validate.Range(min=1, max=1000),
                              metadata={"description": "Items run at once (the server caps it)."})


_ENVELOPE_SCHEMA = EnvelopeSchema()


@dataclass(frozen=True)
class Envelope:
    items: list
    defaults: dict
    concurrency: int | None


def parse_envelope(body: dict, limits: BatchLimits) -> Envelope:
    """The whole request's shape: a 400 (or a 413 for too many items) before any item runs."""
    items = body.get("items")
    if isinstance(items, list) and len(items) > limits.max_items:
        raise PayloadTooLarge(f"The batch has {len(items)} items; a batch may have {limits.describe()}.",
                              fields={"items": f"at most {limits.max_items} items"})
    data = load(_ENVELOPE_SCHEMA, body)
    defaults = data.get("defaults") or {}
    _check_defaults(defaults)
    too_costly = batch_schemas_problem(data["items"], defaults)
    if too_costly:
        raise PayloadTooLarge(f"The batch is too large to check: {too_costly}.", fields={"items": too_costly})
    return Envelope(items=data["items"], defaults=defaults, concurrency=data.get("concurrency"))


def _check_defaults(defaults: dict) -> None:
    """Defaults are call fields: check them once, so a typo there is one 400, not N item errors."""
    probe = dict(defaults)
    probe.setdefault("model", "auto")
    if not any(k in probe for k in ("prompt", "query", "messages")):
        probe["prompt"] = "-"
    try:
        load(_call_schema, probe)
    except ValidationError as err:
        fields_ = {f"defaults.{k}": v for k, v in err.fields.items()}
        summary = "; ".join(f"{k}: {v}" for k, v in list(fields_.items())[:5])
        raise ValidationError(f"Invalid request: {summary}", fields=fields_) from None


def merge_defaults(defaults: dict, item: dict) -> dict:
    """The item wins; `options` and `context` merge key by key, so a default maxTokens survives an
    item that only sets its temperature."""
    merged = {**defaults, **item}
    for key in MERGED_OBJECTS:
        if isinstance(defaults.get(key), dict) and isinstance(item.get(key), dict):
            merged[key] = {**defaults[key], **item[key]}
    return merged


def prepare_item(raw, defaults: dict) -> tuple[object, dict]:
    """(the caller's id, the validated call body) for one item; ValidationError when it is bad."""
    if not isinstance(raw, dict):
        raise ValidationError("Each item must be a JSON object: a call body, with an optional id.",
                              fields={"item": "must be an object"})
    caller_id = raw.get("id")
    if caller_id is not None and (isinstance(caller_id, bool) or not isinstance(caller_id, (str, int))
                                  or len(str(caller_id)) > MAX_CALLER_ID):
        raise ValidationError("id must be a string or an integer (at most 200 characters).",
                              fields={"id": "must be a string or an integer"})
    body = {k: v for k, v in raw.items() if k != "id"}
    return caller_id, load(_call_schema, merge_defaults(defaults, body))


@dataclass(frozen=True)
class ItemContext:
    """What an item needs in a worker thread (no flask.g there)."""
    gateway: object
    principal: object
    endpoint: str                 # the ledger's endpoint label: "batch", "job", "cli_batch"
    request_id: str
    max_image_bytes: int
    before_call: Callable[[str], None] | None = None      # a job notes each call before making it


def item_request_id(request_id: str, index: int) -> str:
    """`<batch request id>.<index>`: each ledger row traces back to its batch."""
    return f"{request_id[:120]}.{index}"


def error_body(err: FlowcallError, request_id: str | None) -> dict:
    """The single-call error envelope."""
    return {"success": False, "error": err.to_dict(), "request_id": request_id}


def execute_item(ctx: ItemContext, data: dict, request_id: str) -> tuple[int, dict]:
    """One validated call through the gateway (limits, budget, dispatch, ledger), no idempotency key:
    (the HTTP status a single call would have had, its success or error body)."""
    p = ctx.principal

    def make_call():
        return call_from_body(data, request_id=request_id, tenant_id=p.tenant_id, agent_id=p.agent_id,
                              key_id=p.key_id, max_image_bytes=ctx.max_image_bytes)
    try:
        if ctx.before_call is not None:
            ctx.before_call(request_id)
        outcome = ctx.gateway.run(p, ctx.endpoint, data, make_call, answer_to_dict)
        return outcome.status, outcome.body
    except FlowcallError as err:
        return err.status, error_body(err, request_id)
    except Exception:  # noqa: BLE001 - one item's crash must not take the batch down
        log.exception("batch item %s failed unexpectedly", request_id)
        err = FlowcallError("Internal error; the request id identifies it in our logs.")
        return err.status, error_body(err, request_id)


def run_item(ctx: ItemContext, index: int, raw, defaults: dict) -> dict:
    """One envelope item -> its result: the single-call body plus `index` and the caller's `id`."""
    rid = item_request_id(ctx.request_id, index)
    caller_id = raw.get("id") if isinstance(raw, dict) else None
    try:
        caller_id, data = prepare_item(raw, defaults)
    except ValidationError as err:
        return {"index": index, "id": None if "id" in err.fields else caller_id, **error_body(err, rid)}
    return {"index": index, "id": caller_id, **execute_item(ctx, data, rid)[1]}


def run_bounded(items: Iterable[tuple[int, object]], fn: Callable[[int, object], dict], workers: int,
                stop=None) -> Iterator[tuple[int, dict]]:
    """Run `fn(index, item)` with at most `workers` in flight; yield (index, result) as each ends.

    Items are taken from the iterable only when a thread is free, so a huge input is never all in
    flight and `stop` (a threading.Event) stops new submissions while the calls in flight finish.
    """
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="flowcall-batch") as pool:
        source = iter(items)
        pending: dict = {}
        exhausted = False
        while True:
            while not exhausted and len(pending) < workers and not (stop is not None and stop.is_set()):
                try:
                    index, item = next(source)
                except StopIteration:
                    exhausted = True
                    break
                pending[pool.submit(fn, index, item)] = index
            if not pending:
                return
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                yield pending.pop(future), future.result()


def run_envelope(ctx: ItemContext, envelope: Envelope, limits: BatchLimits,
                 skip: Mapping[int, dict] | None = None,
                 on_result: Callable[[int, dict], None] | None = None) -> list[dict]:
    """Every item of the envelope, results in input order; `skip` holds results already known
    (a resumed job), `on_result` sees each new one as it ends."""
    results: dict[int, dict] = dict(skip or {})
    todo = [(i, item) for i, item in enumerate(envelope.items) if i not in results]
    workers = limits.workers(envelope.concurrency, max(1, len(todo)))
    for index, result in run_bounded(todo, lambda i, item: run_item(ctx, i, item, envelope.defaults), workers):
        results[index] = result
        if on_result is not None:
            on_result(index, result)
    return [results[i] for i in range(len(envelope.items))]


def summarize(results: list[dict]) -> dict:
    """Counts, tokens and cost over item results (items without a known price count as 0)."""
    ok = [r for r in results if r.get("success")]
    usage = {k: sum(int((r.get("usage") or {}).get(k) or 0) for r in ok)
             for k in ("input_tokens", "output_tokens", "total_tokens")}
    cost = round(sum(r.get("cost") or 0.0 for r in ok), 8)
    return {"total": len(results), "succeeded": len(ok), "failed": len(results) - len(ok), "usage": usage,
            "cost": cost}


def batch_body(results: list[dict], request_id: str | None, latency_ms: int) -> dict:
    """The batch's answer: always a success envelope (HTTP 200); `failed` says how many items did not."""
    summary = summarize(results)
    warnings = []
    unpriced = sum(1 for r in results if r.get("success") and r.get("cost") is None)
    if unpriced:
        warnings.append(f"{unpriced} item(s) have no known price; cost counts them as 0.")
    return {"success": True, **summary, "latency_ms": latency_ms, "results": results, "warnings": warnings,
            "request_id": request_id}
