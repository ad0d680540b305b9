"""The fake provider's fault modes (tests/fake_provider.py): answers that break HTTP itself.

Where a scripted step answers a well-formed status and body, a fault mode resets connections
mid-body, drips its answer a byte at a time, truncates JSON, answers HTML, streams 80 MB, storms
429s, echoes the caller's API key back in its errors. Each mode is a function of the request's
handler (its `head`, `send` and `reset`), the fake (its drip and size settings, `stopping`), the
request body and the request's number. Answers are shaped like the real recorded Chat Completions
answers (tests/fake_answers.py).
"""
from __future__ import annotations

import json
import time

from fake_answers import openai_answer

OVERLOADED = {"error": {"message": "The server had an error while processing your request. Sorry about that!",
                        "type": "server_error", "param": None, "code": None}}
RATE_LIMITED = {"error": {"message": "Rate limit reached for gpt-4o in organization org-fake on requests per "
                                     "min (RPM): Limit 500, Used 500, Requested 1.",
                          "type": "requests", "param": None, "code": "rate_limit_exceeded"}}


def _bearer(headers) -> str:
    value = headers.get("Authorization") or ""
    return value.partition(" ")[2]


def _drip(handler, fake, raw: bytes) -> None:
    """`raw` one byte per `drip_interval_s`, bounded: after `drip_limit_s` (or at stop) the rest at once."""
    started = time.monotonic()
    for i in range(len(raw)):
        if fake.stopping.is_set() or time.monotonic() - started > fake.drip_limit_s:
            handler.wfile.write(raw[i:])
            break
        handler.wfile.write(raw[i:i + 1])
        handler.wfile.flush()
        time.sleep(fake.drip_interval_s)


def ok(handler, fake, body, n):                  # a normal answer
    handler.send(200, openai_answer(body))


def quarter_500(handler, fake, body, n):         # every 4th request (by the fake's counter) 500, the rest normal
    if n % 4 == 0:
        return handler.send(500, OVERLOADED)
    handler.send(200, openai_answer(body))


def reset_mid_body(handler, fake, body, n):      # headers + part of the body, then a TCP RST (SO_LINGER 0)
    raw = json.dumps(openai_answer(body)).encode()
    handler.head(200, "application/json", len(raw) + 1000)
    handler.wfile.write(raw[: len(raw) // 2])
    handler.wfile.flush()
    time.sleep(0.05)          # let the client start reading the body
    handler.reset()


def slow_drip(handler, fake, body, n):           # headers at once, then the body 1 byte per `drip_interval_s`
    raw = json.dumps(openai_answer(body)).encode()
    handler.head(200, "application/json", len(raw))
    _drip(handler, fake, raw)
    handler.wfile.flush()


def drip_head(handler, fake, body, n):           # the status line and headers 1 byte per `drip_interval_s`
    raw = json.dumps(openai_answer(body)).encode()
    head = (f"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {len(raw)}\r\n"
            f"X-Padding: {'p' * 40}\r\n\r\n").encode()
    _drip(handler, fake, head)
    handler.wfile.write(raw)
    handler.wfile.flush()


def truncated_json(handler, fake, body, n):      # a complete HTTP message whose JSON body is cut in half
    raw = json.dumps(openai_answer(body)).encode()
    handler.send(200, raw[: len(raw) // 2])


def error_body_200(handler, fake, body, n):      # 200 with {"error": {...}} instead of choices
    handler.send(200, OVERLOADED)


def html_json_200(handler, fake, body, n):       # 200 text/html whose text is the normal JSON answer
    handler.send(200, json.dumps(openai_answer(body)), "text/html; charset=utf-8")


def html_200(handler, fake, body, n):            # 200 text/html with an HTML page
    handler.send(200, "<!DOCTYPE html><html><head><title>502 Bad Gateway</title></head>"
                      "<body><h1>Bad Gateway</h1></body></html>", "text/html")


def enormous(handler, fake, body, n):            # 200 with an `enormous_bytes` JSON body, streamed
    head = b'{"id":"chatcmpl-huge","object":"chat.completion","model":"gpt-4o","choices":' \
           b'[{"index":0,"finish_reason":"stop","message":{"role":"assistant","content":"'
    tail = b'"}}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}'
    handler.head(200, "application/json", fake.enormous_bytes)
    handler.wfile.write(head)
    chunk = b"a" * (1024 * 1024)
    left = fake.enormous_bytes - len(head) - len(tail)
    while left > 0 and not fake.stopping.is_set():
        piece = chunk[:left]
        handler.wfile.write(piece)
        left -= len(piece)
    handler.wfile.write(tail)
    handler.wfile.flush()


def rate_limit_storm(handler, fake, body, n):    # every request 429, Retry-After: 0
    handler.send(429, RATE_LIMITED, extra={"Retry-After": "0", "x-ratelimit-remaining-requests": "0"})


def status_500(handler, fake, body, n):          # every request 500 (OpenAI server_error shape)
    handler.send(500, OVERLOADED)


def echo_key_401(handler, fake, body, n):        # 401 whose message echoes the Authorization key, as OpenAI's does
    key = _bearer(handler.headers)
    handler.send(401, {"error": {
        "message": f"Incorrect API key provided: {key}. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}})


def echo_key_500_text(handler, fake, body, n):   # 500 text/plain that dumps the request headers, key included
    dump = "\n".join(f"{k}: {v}" for k, v in handler.headers.items())
    handler.send(500, f"upstream exploded; request was:\n{dump}", "text/plain")


def echo_key_html_200(handler, fake, body, n):   # 200 text/html (a proxy's page) that shows the Authorization header
    handler.send(200, f"<html><body><pre>Authorization: {handler.headers.get('Authorization')}</pre>"
                      "<p>Session expired, please log in.</p></body></html>", "text/html")


def nan_json(handler, fake, body, n):            # 200 whose content is the JSON-looking text {"score": NaN}
    answer = openai_answer(body)
    answer["choices"][0]["message"]["content"] = '{"score": NaN, "rank": Infinity}'
    handler.send(200, answer)


MODES = {f.__name__: f for f in (ok, reset_mid_body, slow_drip, drip_head, truncated_json, error_body_200,
                                 html_json_200, html_200, enormous, rate_limit_storm, status_500, quarter_500,
                                 echo_key_401, echo_key_500_text, echo_key_html_200, nan_json)}


def unknown_mode(handler, fake, body, n):
    handler.send(400, {"error": {"message": f"fake provider: no such mode; modes: {', '.join(MODES)}",
                                 "type": "invalid_request_error"}})
