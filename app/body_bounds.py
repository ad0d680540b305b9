"""Bounds on a request body, checked before the work that grows with it.

The total size is capped by `FLOWCALL_MAX_BODY_BYTES` while the body is read (nodes/_common.py).
Within it, images are the big payloads: a `data:` URI is one JSON string that the C parser copies
at memory speed, so image bytes are counted apart from the rest. What costs CPU per item in Python
(the parser building keys and objects, marshmallow walking them) is everything else, so that part
is capped twice: by its bytes before parsing, and by its number of JSON values after.
"""
from __future__ import annotations

import re

from app.errors import PayloadTooLarge, ValidationError

MB = 1024 * 1024

# Everything that is not an image data URI. A 1M-token context is about 4 MB of English text; a
# 5 MB prompt in a non-Latin script, \u-escaped as JSON encoders do by default, is 15 MB of JSON.
# Parsing is C code at memory speed except per key and per value, which the value cap bounds.
MAX_NON_IMAGE_BYTES = 16 * MB
# JSON values (objects, arrays, strings, numbers, ...) in one body: a conversation of thousands of
# messages plus a structured-output schema at the providers' limits stays well under it.
MAX_BODY_VALUES = 100_000

_DATA_URI = re.compile(rb'"data:[^"]*"')


def non_image_bytes(raw: bytes) -> int:
    """The body's size without its `data:` URI strings (base64 images)."""
    return len(raw) - sum(m.end() - m.start() for m in _DATA_URI.finditer(raw))


def check_body_bytes(raw: bytes) -> None:
    """413 when the body, images aside, is larger than any real request (before it is parsed)."""
    size = non_image_bytes(raw)
    if size > MAX_NON_IMAGE_BYTES:
        raise PayloadTooLarge(f"The request body has {size} bytes besides images, more than the limit of "
                              f"{MAX_NON_IMAGE_BYTES}. Images (data: URIs) are counted apart, up to "
                              f"FLOWCALL_MAX_BODY_BYTES in all.")


def check_body_values(body) -> None:
    """400 when a parsed body holds more JSON values than any real request; the count stops at the
    limit, so refusing costs no more than accepting the largest allowed body."""
    count, stack = 0, [body]
    while stack:
        node = stack.pop()
        count += 1
        if count > MAX_BODY_VALUES:
            raise ValidationError(f"The request body holds more than {MAX_BODY_VALUES} JSON values (keys, "
                                  f"strings, numbers, objects, lists): no real request needs that many.",
                                  fields={"body": f"more than {MAX_BODY_VALUES} JSON values"})
        if isinstance(node, dict):
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)


MAX_UNKNOWN_FIELDS = 20


def check_unknown_fields(schema, body) -> None:
    """A body with many top-level fields its schema does not know is refused naming the first few,
    before marshmallow builds (and we send back) one error per field."""
    if not isinstance(body, dict) or len(body) <= MAX_UNKNOWN_FIELDS:
        return
    known = {field.data_key or name for name, field in schema.load_fields.items()}
    unknown = [key for key in body if key not in known]
    if len(unknown) > MAX_UNKNOWN_FIELDS:
        shown = unknown[:MAX_UNKNOWN_FIELDS]
        raise ValidationError(f"Invalid request: {len(unknown)} unknown fields, the first: "
                              f"{', '.join(repr(k[:40]) for k in shown[:5])}.",
                              fields={k[:200]: "Unknown field." for k in shown})
