"""The one JSON-Schema walker: subschemas by keyword (never data or names), refs, local pointers."""
from __future__ import annotations

from app.json_schema import reachable_refs, refs, resolve_local, subschemas

SCHEMA = {
    "type": "object",
    "properties": {
        "enum": {"$ref": "#/$defs/node"},                       # a property named like a keyword
        "tags": {"type": "array", "items": {"$ref": "#/$defs/tag"}},
        "kind": {"enum": [{"$ref": "https://example.com/data"}]},  # data, not a schema
    },
    "default": {"$ref": "#/not/a/schema"},
    "$defs": {
        "node": {"type": "object", "properties": {"children": {"type": "array", "items": {"$ref": "#/$defs/node"}}}},
        "tag": {"anyOf": [{"type": "string"}, {"$ref": "#/$defs/a~1b"}]},
        "a/b": {"type": "integer"},
    },
}


def test_subschemas_follow_keywords_not_data_or_names():
    pointers = {pointer for pointer, _ in subschemas(SCHEMA)}
    assert {"#", "#/properties/enum", "#/properties/tags/items", "#/$defs/tag/anyOf/1", "#/$defs/a~1b"} <= pointers
    assert not any(p.startswith("#/default") or "/enum/" in p for p in pointers)


def test_refs_are_the_schema_positions_only_each_once():
    assert sorted(refs(SCHEMA)) == ["#/$defs/a~1b", "#/$defs/node", "#/$defs/tag"]


def test_resolve_local_unescapes_and_refuses_what_names_nothing():
    assert resolve_local(SCHEMA, "#/$defs/a~1b") == {"type": "integer"}
    assert resolve_local(SCHEMA, "#") is SCHEMA
    assert resolve_local(SCHEMA, "#/$defs/missing") is None
    assert resolve_local(SCHEMA, "https://example.com/s.json#/a") is None


def test_reachable_refs_tell_a_recursive_ref():
    def target(ref):
        return resolve_local(SCHEMA, ref)

    assert "#/$defs/node" in reachable_refs(target("#/$defs/node"), target)
    assert "#/$defs/tag" not in reachable_refs(target("#/$defs/tag"), target)
    assert reachable_refs(SCHEMA["properties"]["tags"], target) == {"#/$defs/tag", "#/$defs/a~1b"}
