"""What happens to every answer after the provider, whoever it was: stops, then structured output.

Stop sequences are enforced here for all providers, so an adapter only chooses what it can send
natively; where the provider already stopped, there is nothing left to cut.
"""
from __future__ import annotations

import hashlib
import json
import re
import threading
from collections import OrderedDict

import jsonschema
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable
from referencing.jsonschema import DRAFT202012

from app.calls import Completion, ResponseFormat
from app.errors import InvalidStructuredOutput
from app.http import MAX_JSON_DEPTH, json_depth_exceeds
from app.strict_schema import strip_added_nulls

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(?P<body>.*?)\n?\s*```\s*$", re.S)


def enforce_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """Cut the text at the earliest stop sequence; (text, whether one was found)."""
    cut = min((i for i in (text.find(s) for s in stops if s) if i >= 0), default=-1)
    if cut < 0:
        return text, False
    return text[:cut], True


def _strip_wrappers(text: str) -> str:
    """Models wrap JSON in ``` fences or chatter around it; take the JSON itself."""
    match = _FENCE.match(text)
    if match:
        return match.group("body").strip()
    stripped = text.strip()
    if stripped[:1] in "{[":
        return stripped
    start = min((i for i in (stripped.find("{"), stripped.find("[")) if i >= 0), default=-1)
    end = max(stripped.rfind("}"), stripped.rfind("]"))
    if start >= 0 and end > start:
        return stripped[start:end + 1]
    return stripped


def _refuse_retrieval(uri: str):
    """Schemas come from callers: never fetch what they point at (SSRF)."""
    raise NoSuchResource(ref=uri)


def local_resolver(schema: dict):
    resource = Resource.from_contents(schema, default_specification=DRAFT202012)
    return Registry(retrieve=_refuse_retrieval).with_resource("", resource).resolver()


# Workflows send the same schema on every call, so validators are kept per process; the cache is
# shared by every tenant, so it is bounded by bytes as well as entries (a caller's schema may be
# megabytes), is keyed by digest rather than text, and a schema over the per-entry size is built
# for its call and not kept.
_VALIDATORS: OrderedDict[bytes, tuple[int, object]] = OrderedDict()
_VALIDATORS_MAX = 256
_VALIDATORS_MAX_BYTES = 16 * 1024 * 1024
_VALIDATOR_ENTRY_MAX_BYTES = 1024 * 1024
_validators_bytes = 0
_validators_lock = threading.Lock()


def validator_for(canonical_schema: str):
    global _validators_bytes
    size = len(canonical_schema)
    digest = hashlib.sha256(canonical_schema.encode("utf-8", "surrogatepass")).digest()
    with _validators_lock:
        hit = _VALIDATORS.get(digest)
        if hit is not None:
            _VALIDATORS.move_to_end(digest)
            return hit[1]
    schema = json.loads(canonical_schema)
    registry = Registry(retrieve=_refuse_retrieval).with_resource(
        "", Resource.from_contents(schema, default_specification=DRAFT202012))
    validator = jsonschema.Draft202012Validator(schema, registry=registry)
    if size <= _VALIDATOR_ENTRY_MAX_BYTES:
        with _validators_lock:
            if digest not in _VALIDATORS:
                _VALIDATORS[digest] = (size, validator)
                _validators_bytes += size
            while len(_VALIDATORS) > _VALIDATORS_MAX or _validators_bytes > _VALIDATORS_MAX_BYTES:
                _validators_bytes -= _VALIDATORS.popitem(last=False)[1][0]
    return validator


def without_added_nulls(data, schema: dict):
    """`data` (a structured answer or a tool call's arguments, asked for with `strict_schema.to_strict`)
    without the nulls that stand for optional properties left out: the caller's own shape."""
    try:
        return strip_added_nulls(data, schema, validator_for(json.dumps(schema, sort_keys=True)))
    except Unresolvable:
        return strip_added_nulls(data, schema)


_TOO_DEEP = object()


def _reject_constant(name: str):
    raise ValueError(f"{name} is not valid JSON")


def parse_structured(completion: Completion, fmt: ResponseFormat, provider: str) -> object:
    """The parsed JSON for a structured-output call; bad JSON or a strict-schema miss is a 502."""
    if completion.data is not None:
        data = completion.data
    else:
        text = _strip_wrappers(completion.text)
        if not text:
            hint = " (the answer was cut at the token limit: raise options.maxTokens)" \
                if completion.finish_reason == "length" else ""
            raise InvalidStructuredOutput(f"The model returned no JSON{hint}.", provider=provider,
                                          retryable=completion.finish_reason == "length")
        try:
            data = json.loads(text, parse_constant=_reject_constant)
        except RecursionError:
            data = _TOO_DEEP
        except ValueError as exc:
            hint = " The answer was cut at the token limit: raise options.maxTokens." \
                if completion.finish_reason == "length" else ""
            raise InvalidStructuredOutput(
                f"The model's answer is not valid JSON "
                f"({exc.msg if isinstance(exc, json.JSONDecodeError) else exc}).{hint}",
                provider=provider, retryable=True) from None
    if data is _TOO_DEEP or json_depth_exceeds(data):     # validating or rendering it would recurse too deep
        raise InvalidStructuredOutput(f"The model's JSON is nested deeper than {MAX_JSON_DEPTH} levels.",
                                      provider=provider, retryable=True)
    try:                                    # numbers JSON cannot carry (1e999, NaN in a tool input)
        json.dumps(data, allow_nan=False)
    except ValueError:
        raise InvalidStructuredOutput("The model's JSON holds a number out of range (NaN or Infinity).",
                                      provider=provider, retryable=True) from None
    if fmt.type == "json_object" and not isinstance(data, dict):
        raise InvalidStructuredOutput("response_format json_object asked for a JSON object; the model "
                                      f"returned a {type(data).__name__}.", provider=provider, retryable=True)
    if fmt.type == "json_schema" and fmt.strict and fmt.schema is not None:
        # Strict providers answer an optional property the caller's schema does not let be null
        # with null (app.strict_schema made it required and nullable): that null means "absent".
        # Then the answer is checked against the caller's own schema, whatever the provider.
        validator = validator_for(json.dumps(fmt.schema, sort_keys=True))
        try:
            data = strip_added_nulls(data, fmt.schema, validator)
            error = jsonschema.exceptions.best_match(validator.iter_errors(data))
        except Unresolvable as exc:
            raise InvalidStructuredOutput(f"The schema has a reference that does not resolve: {exc}",
                                          provider=provider) from None
        except RecursionError:          # app/schema_bounds.py refuses reference loops up front
            raise InvalidStructuredOutput("The model's JSON could not be checked against the schema: the check "
                                          "recursed too deeply (a reference cycle that matches nothing, or an "
                                          "answer nested too deeply).", provider=provider) from None
        if error is not None:
            where = "/".join(str(p) for p in error.absolute_path) or "(root)"
            raise InvalidStructuredOutput(
                f"The model's JSON does not match the schema at {where}: {error.message}",
                provider=provider, retryable=True)
    return data

