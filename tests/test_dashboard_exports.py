"""The CSV exports: the streamed calls export is the same text as the whole-table writer, piece by
piece, and neither lets a spreadsheet run a caller's text as a formula."""
from __future__ import annotations

import csv
import io
from datetime import datetime, timedelta, UTC

from app.dashboard import exports
from app.dashboard.queries import CALL_COLUMNS
from dashboard_seed import seed, sign_in

COLUMNS = ("id", "model", "cost", "message")
ROWS = [(1, "openai.gpt-4o", 0.00012, None), (2, "=HYPERLINK(\"x\")", 1.5e-05, "-1+2"),
        (3, "@SUM(A1)", None, "\tlead"), (4, "plain", 0.0, "a, \"quoted\"\nline"), (5, "+x", 2.0, "\rr")]


def test_the_pieces_join_to_the_whole_tables_text(monkeypatch):
    monkeypatch.setattr(exports, "CHUNK_ROWS", 2)
    pieces = list(exports.csv_pieces(ROWS, COLUMNS))
    assert len(pieces) == 3                                              # 2 + 2 + 1 rows, the header in the first
    assert "".join(pieces) == exports.to_csv([dict(zip(COLUMNS, r, strict=True)) for r in ROWS], COLUMNS)
    cells = list(csv.reader(io.StringIO("".join(pieces))))
    assert [r[1] for r in cells[1:]] == ["openai.gpt-4o", "'=HYPERLINK(\"x\")", "'@SUM(A1)", "plain", "'+x"]
    assert [r[3] for r in cells[1:]] == ["", "'-1+2", "'\tlead", "a, \"quoted\"\nline", "'\rr"]


def test_the_calls_export_streams_the_newest_calls_guarded(app, client, api_key, tenant_id):
    engine = app.extensions["flowcall"].store.engine
    now = datetime.now(UTC)
    for i in range(3):
        seed(engine, now - timedelta(minutes=i), tenant_id=tenant_id, request_id=f"r-{i}", model_served=f"m.{i}",
             cost=0.25 * i)
    seed(engine, now - timedelta(minutes=5), tenant_id=tenant_id, request_id="r-formula",
         model_served="=HYPERLINK(\"x\")", status=502, error_code="provider_error", error_message="+evil")
    assert sign_in(client, api_key).status_code == 303
    response = client.get("/dashboard/export/calls.csv")
    assert response.status_code == 200 and response.is_streamed
    assert response.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert response.headers["Content-Security-Policy"].startswith("default-src 'none'")
    rows = list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))
    assert tuple(rows[0]) == CALL_COLUMNS
    assert [r["request_id"] for r in rows] == ["r-0", "r-1", "r-2", "r-formula"]          # newest first
    assert [float(r["cost"]) for r in rows[:3]] == [0.0, 0.25, 0.5]
    assert rows[0]["created_at"].endswith("Z") and rows[0]["error_code"] == ""
    assert rows[3]["model_served"] == "'=HYPERLINK(\"x\")" and rows[3]["error_message"] == "'+evil"
