"""Answers are encoded by an encoder built once (nodes._JSONProvider): the text must be exactly what
Flask's own provider writes, for every setting it is asked for."""
from __future__ import annotations

import datetime
import decimal
import uuid

from flask import Flask
from flask.json.provider import DefaultJSONProvider

from nodes import _JSONProvider

VALUE = {"b": "é ☃", "a": [1, 2.5, None, True], "when": datetime.date(2026, 11, 30), "n": decimal.Decimal("1.10"),
         "id": uuid.UUID(int=7), "nested": {"z": {}, "y": []}}


def test_the_encoded_text_is_flasks_for_every_setting():
    ours, theirs = _JSONProvider(Flask("a")), DefaultJSONProvider(Flask("b"))
    for sort_keys in (False, True):
        for ensure_ascii in (True, False):
            for kwargs in ({}, {"separators": (",", ":")}, {"indent": 2}, {"indent": 2, "separators": (",", ": ")}):
                for provider in (ours, theirs):
                    provider.sort_keys, provider.ensure_ascii = sort_keys, ensure_ascii
                assert ours.dumps(VALUE, **kwargs) == theirs.dumps(VALUE, **kwargs), (sort_keys, ensure_ascii, kwargs)
    assert ours.dumps(VALUE, skipkeys=True) == theirs.dumps(VALUE, skipkeys=True)


def test_the_app_answers_through_it(app):
    assert isinstance(app.json, _JSONProvider)
    with app.app_context():
        assert app.json.response({"b": 1, "a": 2}).get_data() == b'{"b":1,"a":2}\n'
