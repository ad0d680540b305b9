"""Schemathesis against the live app: no 500 and no answer that contradicts /openapi.json.

Every response check runs (documented status, content type, body schema, headers, rejection of
schema-violating input) except `positive_data_acceptance`: some rules cannot be written in JSON
Schema (prompt vs query, model names checked against the live catalog), so a schema-valid body may
still earn a documented 400.

No provider is configured and every outbound HTTP request is intercepted, so generated calls end in
our own documented answers (400s, 401s, 503 no provider) or in mock.echo; nothing leaves the machine.
A heavier run: FLOWCALL_FUZZ_EXAMPLES=500 python -m pytest tests/test_api_fuzz.py
"""
from __future__ import annotations

import os

import pytest
import responses
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

EXAMPLES = int(os.environ.get("FLOWCALL_FUZZ_EXAMPLES", "12"))


@pytest.fixture
def api_schema(app):
    return schemathesis.openapi.from_wsgi("/openapi.json", app)


schema = schemathesis.pytest.from_fixture("api_schema")


def no_internal_error(ctx, response, case):
    """502/503/504 are documented gateway answers; a 500 is always our bug."""
    assert response.status_code != 500, f"500 from {case.method} {case.path}: {response.text[:300]}"


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
def test_live_app_matches_its_document(case, api_key):
    headers = {"X-Api-Key": api_key, "Authorization": f"Bearer {api_key}"}
    with responses.RequestsMock(assert_all_requests_are_fired=False):     # any outbound request fails
        case.call_and_validate(headers=headers, excluded_checks=[not_a_server_error, positive_data_acceptance],
                               additional_checks=[no_internal_error])
