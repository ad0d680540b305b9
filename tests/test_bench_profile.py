"""bench/profile.py's summary of py-spy's collapsed stacks: self and inclusive shares, and self time
by layer (whose code the sampled leaf frame is)."""
from __future__ import annotations

from bench import profile

SITE = "/v/lib/python3.11/site-packages"
RAW = "\n".join([
    f"process 1:\"gunicorn\";handle ({SITE}/gunicorn/workers/base_async.py:55);"
    f"wsgi_app ({SITE}/flask/app.py:1);run (/w/app/tenancy/gateway.py:60) 5",
    f"process 1:\"gunicorn\";handle ({SITE}/gunicorn/workers/base_async.py:55);"
    f"send ({SITE}/requests/adapters.py:600);begin (http/client.py:300) 3",
    f"process 1:\"gunicorn\";handle ({SITE}/gunicorn/workers/base_async.py:55) 1",
    "process 1:\"gunicorn\";release (threading.py:176) 1",
    f"process 1:\"gunicorn\";thing ({SITE}/somepkg/mod.py:3) 2",
]) + "\n"


def test_layers_sum_self_time_by_whose_code_the_leaf_is(tmp_path):
    raw = tmp_path / "raw.txt"
    raw.write_text(RAW)
    summary = profile.summarize(str(raw))
    assert summary["samples"] == 12
    assert {r["layer"]: r["share"] for r in summary["layers"]} == {
        "flowcall: app/, nodes/": round(5 / 12, 4),
        "HTTP client: requests, urllib3, http.client, email, urllib": 0.25,
        "other packages": round(2 / 12, 4),
        "server: gunicorn": round(1 / 12, 4),
        "Python: the rest of the standard library": round(1 / 12, 4),
    }
    inclusive = {r["function"]: r["share"] for r in summary["inclusive"]}
    assert inclusive["handle (gunicorn/workers/base_async.py)"] == 0.75
