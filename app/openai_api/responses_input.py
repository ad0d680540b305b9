"""The parts of a CreateResponse body that carry content, validated and normalised: the input items
(messages, function calls, their outputs), the function tools, tool_choice and text.format. Pure
(no Flask, no I/O); app/openai_api/responses.py says what happens to each field.
"""
from __future__ import annotations

import json
import re
import secrets
from typing import NoReturn

from app.errors import ValidationError
from app.schema_bounds import caller_schema_problem

MAX_ITEMS = 2000
MAX_TOOLS = 128
_TOOL_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

def new_id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(16)}"


def fail(path: str, why: str) -> NoReturn:
    raise ValidationError(f"Invalid request: {path}: {why}", fields={path: why})


def _text(value, path: str) -> str:
    if not isinstance(value, str):
        fail(path, "Must be a string.")
    return value


def input_items(raw) -> list[dict]:
    """The input as a list of normalised items: messages with a list of typed parts, calls, results."""
    if raw is None:
        return []
    if isinstance(raw, str):
        return [_message_item("user", [{"type": "input_text", "text": raw}])]
    if not isinstance(raw, list):
        fail("input", "Must be a string or a list of input items.")
    if len(raw) > MAX_ITEMS:
        fail("input", f"At most {MAX_ITEMS} items.")
    return [_item(item, f"input.{i}") for i, item in enumerate(raw)]


def _message_item(role: str, content: list[dict], item_id: str | None = None) -> dict:
    return {"type": "message", "id": item_id or new_id("msg"), "role": role, "content": content,
            "status": "completed"}


def _item(item, path: str) -> dict:
    if not isinstance(item, dict):
        fail(path, "Must be an input item object.")
    kind = item.get("type", "message")
    if kind == "message":
        return _message(item, path)
    if kind == "function_call":
        _only(item, {"type", "id", "call_id", "name", "arguments", "status"}, path)
        call_id = _text(item.get("call_id"), f"{path}.call_id")
        name = _text(item.get("name"), f"{path}.name")
        arguments = _text(item.get("arguments"), f"{path}.arguments")
        parse_arguments(arguments, f"{path}.arguments")
        return {"type": "function_call", "id": item.get("id") or new_id("fc"), "call_id": call_id, "name": name,
                "arguments": arguments, "status": "completed"}
    if kind == "function_call_output":
        _only(item, {"type", "id", "call_id", "output", "status"}, path)
        call_id = _text(item.get("call_id"), f"{path}.call_id")
        output = item.get("output")
        if isinstance(output, list):
            if not all(isinstance(p, dict) and p.get("type") == "input_text" and isinstance(p.get("text"), str)
                       for p in output):
                fail(f"{path}.output", "Only text outputs (input_text parts) are supported.")
            output = "".join(p["text"] for p in output)
        output = _text(output, f"{path}.output")
        return {"type": "function_call_output", "id": item.get("id") or new_id("fco"), "call_id": call_id,
                "output": output, "status": "completed"}
    if kind == "reasoning":
        return {"type": "reasoning", "id": item.get("id") or new_id("rs"), "summary": []}
    fail(f"{path}.type", f"Input items of type {kind!r} are not supported (message, function_call, "
                          "function_call_output).")


def _only(item: dict, allowed: set, path: str) -> None:
    extra = sorted(set(item) - allowed)
    if extra:
        fail(f"{path}.{extra[0]}", "Unknown field for this item type.")


_PART_TYPES = ("input_text", "output_text", "refusal", "input_image")


def _message(item: dict, path: str) -> dict:
    _only(item, {"type", "id", "role", "content", "status"}, path)
    role = item.get("role")
    if role not in ("user", "system", "developer", "assistant"):
        fail(f"{path}.role", "Must be one of: user, system, developer, assistant.")
    content = item.get("content")
    text_type = "output_text" if role == "assistant" else "input_text"
    if isinstance(content, str):
        return _message_item(role, [{"type": text_type, "text": content}], item.get("id"))
    if not isinstance(content, list) or not content:
        fail(f"{path}.content", "Must be a string or a non-empty list of content parts.")
    parts = []
    for j, part in enumerate(content):
        where = f"{path}.content.{j}"
        if not isinstance(part, dict) or part.get("type") not in _PART_TYPES:
            kind = part.get("type") if isinstance(part, dict) else None
            fail(f"{where}.type", f"Content parts of type {kind!r} are not supported (input_text, input_image, "
                                   "output_text, refusal).")
        if part["type"] == "input_image":
            if role != "user":
                fail(where, "Images go in user messages.")
            if not isinstance(part.get("image_url"), str):
                fail(f"{where}.image_url", "Required: an http(s) URL or a data:image/...;base64 URI (file_id is "
                                            "not supported).")
            parts.append({"type": "input_image", "image_url": part["image_url"],
                          "detail": part.get("detail") or "auto"})
        elif part["type"] == "refusal":
            parts.append({"type": "refusal", "refusal": _text(part.get("refusal"), f"{where}.refusal")})
        else:
            parts.append({"type": part["type"], "text": _text(part.get("text"), f"{where}.text")})
    return _message_item(role, parts, item.get("id"))


def parse_arguments(arguments: str, path: str) -> dict:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except (ValueError, RecursionError):
        fail(path, "Must be a JSON object as a string.")
    if not isinstance(value, dict):
        fail(path, "Must be a JSON object as a string.")
    return value


def function_tools(raw) -> list[dict]:
    if raw is None:
        return []
    if not isinstance(raw, list) or len(raw) > MAX_TOOLS:
        fail("tools", f"Must be a list of at most {MAX_TOOLS} tools.")
    tools = []
    for i, tool in enumerate(raw):
        path = f"tools.{i}"
        kind = tool.get("type") if isinstance(tool, dict) else None
        if kind != "function":
            if isinstance(kind, str):
                fail(f"{path}.type", f"The built-in tool {kind!r} is not supported: flowcall runs no tools; "
                                      "declare function tools and run them yourself.")
            fail(path, "Must be a tool object with a type.")
        _only(tool, {"type", "name", "description", "parameters", "strict"}, path)
        if not isinstance(tool.get("name"), str) or not _TOOL_NAME.match(tool["name"]):
            fail(f"{path}.name", "Required: letters, digits, _ and - only, at most 64.")
        if tool.get("description") is not None and not isinstance(tool["description"], str):
            fail(f"{path}.description", "Must be a string.")
        params = tool.get("parameters")
        if params is not None:
            if not isinstance(params, dict) or params.get("type", "object") != "object":
                fail(f"{path}.parameters", "Must be a JSON Schema of an object.")
            problem = caller_schema_problem({k: v for k, v in params.items() if k != "$schema"})
            if problem:
                fail(f"{path}.parameters", f"Not a usable JSON Schema: {problem}")
        if tool.get("strict") is not None and not isinstance(tool["strict"], bool):
            fail(f"{path}.strict", "Must be true, false or null.")
        tools.append(tool)
    names = [t["name"] for t in tools]
    if len(set(names)) != len(names):
        fail("tools", "Tool names must be unique.")
    return tools


def check_tool_choice(raw, tools: list[dict]):
    if raw is None or raw in ("auto", "none", "required"):
        if raw == "required" and not tools:
            fail("tool_choice", "required needs at least one tool.")
        return raw
    if isinstance(raw, dict) and raw.get("type") == "function":
        if raw.get("name") not in {t["name"] for t in tools}:
            fail("tool_choice.name", "Must name one of the tools.")
        return raw
    fail("tool_choice", "Must be auto, none, required, or {\"type\": \"function\", \"name\": ...}.")


def text_format_of(raw, warnings: list[str]) -> dict:
    if raw is None:
        return {"type": "text"}
    if not isinstance(raw, dict) or set(raw) - {"format", "verbosity"}:
        fail("text", "Must be {\"format\": {...}}.")
    if raw.get("verbosity") not in (None, "medium"):
        warnings.append("text.verbosity is not supported by flowcall and was ignored.")
    fmt = raw.get("format")
    if fmt is None:
        return {"type": "text"}
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return {"type": "text"}
    if kind == "json_object":
        return {"type": "json_object"}
    if kind != "json_schema":
        fail("text.format.type", "Must be text, json_object or json_schema.")
    _only(fmt, {"type", "name", "schema", "strict", "description"}, "text.format")
    name = fmt.get("name")
    if not isinstance(name, str) or not _TOOL_NAME.match(name):
        fail("text.format.name", "Required: letters, digits, _ and - only, at most 64.")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        fail("text.format.schema", "Required: a JSON Schema object.")
    problem = caller_schema_problem(schema)
    if problem:
        fail("text.format.schema", f"Not a usable JSON Schema: {problem}")
    if fmt.get("strict") is not None and not isinstance(fmt["strict"], bool):
        fail("text.format.strict", "Must be true, false or null.")
    return {"type": "json_schema", "name": name, "schema": schema, "strict": bool(fmt.get("strict")),
            **({"description": fmt["description"]} if isinstance(fmt.get("description"), str) else {})}
