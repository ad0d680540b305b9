"""Embeddings: the request read (OpenAI's CreateEmbeddingRequest, which both endpoints take), the
inputs split into provider-sized requests, and the answer written as OpenAI's or our flat JSON.

Pure: no I/O. The dispatch mode that sends the requests is app/embedding_mode.py; the wire formats are
app/providers/openai_embeddings.py and gemini_embeddings.py.
"""
from __future__ import annotations

import base64
import struct
from dataclasses import dataclass, replace

from app.calls import Answer, Call, Embed, Message, Options, TextPart
from app.catalog import ModelInfo
from app.errors import CapabilityMissing, ValidationError
from app.transport.provider import MAX_RESPONSE_BYTES

MAX_INPUTS = 2048           # OpenAI's maxItems for `input`; the same bound for every provider here
MAX_FALLBACKS = 5
# A rejection here must not refuse what the provider would take: tokens are estimated as UTF-8 bytes
# divided by this, more bytes a token than ordinary text averages, so for such text the estimate stays
# under the real count. Inputs over the limit that the estimate misses are refused by the provider.
BYTES_PER_TOKEN_AT_MOST = 8
# What one call's vectors may hold (inputs x dimensions), checked before any provider is paid: the
# vectors live in the worker's memory and are written as JSON on its event loop (about 0.25 us a value
# as floats), so one caller's call is bounded to a few hundred ms of a shared worker. 2**21 takes
# n8n's default batch of 512 documents at 3,072 dimensions; more is a 400 that says how to split.
MAX_VECTOR_VALUES = 2 ** 21
# A vector value in a provider's JSON answer takes at most this many bytes (Gemini indents its JSON),
# so a part is sized for its answer to stay under the transport's cap on one answer.
ANSWER_BYTES_PER_VALUE = 24
PART_VALUES = MAX_RESPONSE_BYTES // ANSWER_BYTES_PER_VALUE
UNKNOWN_DIMENSIONS = 4096     # a model the catalog does not list (an Ollama model): sized as a large one
ENCODINGS = ("float", "base64")


def _fail(field: str, message: str) -> ValidationError:
    return ValidationError(f"{field}: {message}", fields={field: message})


def _inputs(raw) -> tuple[tuple[str, ...], tuple[tuple[int, ...], ...], bool]:
    """`input` as (texts, token arrays, whether it was one string)."""
    def token_array(value, where: str) -> tuple[int, ...]:
        if not value or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in value):
            raise _fail(where, "must be a non-empty array of non-negative integers (tokens)")
        return tuple(value)

    if isinstance(raw, str):
        if not raw:
            raise _fail("input", "must not be empty")
        return (raw,), (), True
    if not isinstance(raw, list) or not raw:
        raise _fail("input", "must be a string, a non-empty array of strings, or token arrays")
    if len(raw) > MAX_INPUTS:
        raise _fail("input", f"at most {MAX_INPUTS} inputs a request (got {len(raw)})")
    if all(isinstance(x, str) for x in raw):
        empty = next((i for i, x in enumerate(raw) if not x), None)
        if empty is not None:
            raise _fail(f"input.{empty}", "must not be empty")
        return tuple(raw), (), False
    if all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        return (), (token_array(raw, "input"),), False
    if all(isinstance(x, list) for x in raw):
        return (), tuple(token_array(x, f"input.{i}") for i, x in enumerate(raw)), False
    raise _fail("input", "must be a string, an array of strings, an array of tokens or an array of token arrays")


@dataclass(frozen=True)
class EmbeddingRequest:
    """A read CreateEmbeddingRequest: what to embed, the model spec, the encoding, the fallbacks,
    and the routing task for `auto` (None: the embed task)."""
    embed: Embed
    model: str
    encoding: str
    fallbacks: tuple[str, ...]
    task: str | None = None


def _task(raw) -> str | None:
    if not isinstance(raw, dict) or set(raw) - {"task"}:
        raise _fail("context", 'must be an object with only "task", e.g. {"task": "embed"}')
    task = raw.get("task")
    if task is not None and (not isinstance(task, str) or not 1 <= len(task) <= 64):
        raise _fail("context.task", "must be a string of 1 to 64 characters")
    return task


def parse_request(raw: dict, *, context: bool = False) -> EmbeddingRequest:
    """CreateEmbeddingRequest, plus flowcall's `fallbacks` and `truncate`, and with `context` its
    `context: {"task": ...}` as the call endpoints take it. Unknown fields are a 400."""
    known = {"input", "model", "encoding_format", "dimensions", "user", "fallbacks", "truncate",
             *(("context",) if context else ())}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ValidationError(f"Unknown field(s): {', '.join(unknown)}.", fields={k: "unknown field" for k in unknown})
    if "input" not in raw:
        raise _fail("input", "is required")
    model = raw.get("model")
    if not isinstance(model, str) or not model.strip():
        raise _fail("model", "is required: an embedding model, e.g. text-embedding-3-small")
    encoding = raw.get("encoding_format", "float")
    if encoding not in ENCODINGS:
        raise _fail("encoding_format", "must be float or base64")
    dimensions = raw.get("dimensions")
    if dimensions is not None and (not isinstance(dimensions, int) or isinstance(dimensions, bool) or dimensions < 1):
        raise _fail("dimensions", "must be a positive integer")
    user = raw.get("user")
    if user is not None and not isinstance(user, str):
        raise _fail("user", "must be a string")
    truncate = raw.get("truncate", False)
    if not isinstance(truncate, bool):
        raise _fail("truncate", "must be true or false")
    fallbacks = raw.get("fallbacks") or []
    if not isinstance(fallbacks, list) or len(fallbacks) > MAX_FALLBACKS or \
            not all(isinstance(f, str) and f.strip() for f in fallbacks):
        raise _fail("fallbacks", f"must be a list of at most {MAX_FALLBACKS} model names")
    task = _task(raw["context"]) if "context" in raw else None
    texts, tokens, query = _inputs(raw["input"])
    embed = Embed(texts=texts, tokens=tokens, dimensions=dimensions, query=query, user=user, truncate=truncate)
    return EmbeddingRequest(embed, model.strip(), encoding, tuple(fallbacks), task)


def embedding_call(request: EmbeddingRequest, *, request_id=None, tenant_id=None, agent_id=None, key_id=None,
                   timeout_ms: int | None = None) -> Call:
    """The Call dispatch runs; its messages are the texts, so budgets estimate and the ledger keeps
    them as they do a prompt."""
    messages = tuple(Message("user", (TextPart(t),)) for t in request.embed.texts)
    return Call(messages=messages, model=request.model, options=Options(max_tokens=1, timeout_ms=timeout_ms),
                task=request.task, fallbacks=request.fallbacks, tenant_id=tenant_id, agent_id=agent_id,
                key_id=key_id, request_id=request_id, embed=request.embed)


# -- per model ----------------------------------------------------------------------------------
def estimated_tokens(text: str) -> int:
    return -(-len(text.encode("utf-8")) // BYTES_PER_TOKEN_AT_MOST)


def _cut(text: str, max_bytes: int) -> str:
    """`text` in at most `max_bytes` UTF-8 bytes, never splitting a character."""
    return text.encode("utf-8")[:max_bytes].decode("utf-8", "ignore")


def fitted(embed: Embed, model: ModelInfo) -> tuple[Embed, tuple[str, ...]]:
    """With `truncate`, every input that check_inputs would refuse as over `model`'s limit cut to
    that limit by the same estimate (token arrays exactly), and a warning naming them."""
    limit = model.max_input_tokens
    if not embed.truncate or limit is None:
        return embed, ()
    if embed.tokens:
        over = [i for i, t in enumerate(embed.tokens) if len(t) > limit]
        cut = replace(embed, tokens=tuple(t[:limit] for t in embed.tokens))
    else:
        over = [i for i, t in enumerate(embed.texts) if estimated_tokens(t) > limit]
        cut = replace(embed, texts=tuple(_cut(t, limit * BYTES_PER_TOKEN_AT_MOST) if i in over else t
                                         for i, t in enumerate(embed.texts)))
    if not over:
        return embed, ()
    which = "input" if embed.query else "inputs " + ", ".join(map(str, over[:10])) + (" ..." if len(over) > 10 else "")
    return cut, (f"truncate: {which} cut to {model.id}'s limit of {limit} tokens an input (estimated as "
                 f"{BYTES_PER_TOKEN_AT_MOST} UTF-8 bytes a token).",)


def check_inputs(embed: Embed, model: ModelInfo) -> None:
    """What `model` cannot take of this call is a 400 before anything is sent."""
    if embed.tokens and not model.capabilities.token_input:
        raise CapabilityMissing(f"{model.id} embeds text only: token arrays are taken by OpenAI's embedding "
                                "models alone. Send the text instead.", fields={"input": "token arrays"})
    if embed.dimensions is not None and model.known and not model.capabilities.dimensions:
        raise CapabilityMissing(f"{model.id} has a fixed vector size ({model.embedding_dimensions}): "
                                "`dimensions` cannot be set for it.", fields={"dimensions": "not supported"})
    if embed.dimensions is not None and model.embedding_dimensions and embed.dimensions > model.embedding_dimensions:
        raise _fail("dimensions", f"{model.id} makes vectors of at most {model.embedding_dimensions} dimensions")
    values = embed.count * dimensions_of(embed, model)
    if model.embedding_dimensions and values > MAX_VECTOR_VALUES:
        raise _fail("input", f"{embed.count} inputs of {dimensions_of(embed, model)} dimensions are {values:,} "
                             f"values; one call makes at most {MAX_VECTOR_VALUES:,}: send fewer inputs a call, "
                             "or fewer dimensions")
    limit = model.max_input_tokens
    if limit is None:
        return
    sizes = [len(t) for t in embed.tokens] if embed.tokens else [estimated_tokens(t) for t in embed.texts]
    over = next((i for i, n in enumerate(sizes) if n > limit), None)
    if over is not None:
        raise _fail("input" if embed.query else f"input.{over}",
                    f"longer than {model.id}'s limit of {limit} tokens an input; split the text, "
                    "or send truncate: true to cut it to the limit")


def dimensions_of(embed: Embed, model: ModelInfo) -> int:
    """The size of the vectors `model` makes for this call (asked for, the catalog's, or assumed large)."""
    return embed.dimensions or model.embedding_dimensions or UNKNOWN_DIMENSIONS


def parts(embed: Embed, max_inputs: int, max_tokens: int | None, dimensions: int = 1) -> list[tuple[int, int]]:
    """The (start, stop) ranges of inputs sent in one provider request each, in order: at most
    `max_inputs` inputs, no more vectors of `dimensions` than an answer under the transport's cap
    holds, and, when the provider caps a request's tokens, at most `max_tokens` of them (estimated
    from above here: a split too many costs a request, one too few a 400)."""
    max_inputs = max(1, min(max_inputs, PART_VALUES // dimensions))
    sizes = [len(t) for t in embed.tokens] if embed.tokens else [len(t.encode("utf-8")) for t in embed.texts]
    ranges, start, total = [], 0, 0
    for i, size in enumerate(sizes):
        full = i - start >= max_inputs or (max_tokens is not None and i > start and total + size > max_tokens)
        if full:
            ranges.append((start, i))
            start, total = i, 0
        total += size
    ranges.append((start, len(sizes)))
    return ranges


# -- the answer ---------------------------------------------------------------------------------
def base64_vector(vector: list[float]) -> str:
    """OpenAI's `encoding_format: base64`: the vector as little-endian float32, base64-encoded."""
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def openai_body(answer: Answer, encoding: str) -> dict:
    """CreateEmbeddingResponse, plus a `flowcall` object as /v1/chat/completions has."""
    encode = base64_vector if encoding == "base64" else (lambda v: v)
    tokens = answer.usage.input_tokens if answer.usage.reported else 0
    return {"object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": encode(v)} for i, v in enumerate(answer.vectors)],
            "model": answer.routing.model_chosen,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
            "flowcall": {"request_id": answer.request_id, "provider": answer.provider, "provider_model": answer.model,
                         "cost": answer.cost, "latency_ms": answer.latency_ms, "warnings": list(answer.warnings)}}


def flat_body(answer: Answer) -> dict:
    """Our envelope for HTTP-step users: the vectors as float lists."""
    tokens = answer.usage.input_tokens
    return {"success": True, "embeddings": list(answer.vectors), "model": answer.routing.model_chosen,
            "provider": answer.provider,
            "usage": {"input_tokens": tokens, "total_tokens": tokens} if answer.usage.reported else None,
            "cost": answer.cost, "latency_ms": answer.latency_ms, "warnings": list(answer.warnings),
            "request_id": answer.request_id}
