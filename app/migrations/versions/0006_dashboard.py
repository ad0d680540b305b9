"""The dashboard (issue 17): what a call's ledger row says about its routing and its time at the
provider, the dashboard's server-side sessions, and the daily rollups its pages read.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29
"""
# The tables are spelled out here, not imported from app/tenancy/db.py, on purpose: a migration is frozen history.
import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("ledger") as batch:
        batch.add_column(sa.Column("routing_reason", sa.String(500), nullable=True))
        batch.add_column(sa.Column("fallbacks", sa.String(1000), nullable=True))
        batch.add_column(sa.Column("upstream_ms", sa.Integer, nullable=True))
        batch.add_column(sa.Column("error_message", sa.String(500), nullable=True))
    op.create_table(
        "dashboard_sessions",
        sa.Column("token_hash", sa.String(64), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("subject", sa.String(200), nullable=True),
        sa.Column("csrf", sa.String(64), nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])
    op.create_table(
        "ledger_days",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("day", sa.String(13), primary_key=True),        # YYYY-MM-DD, or YYYY-MM-DDTHH for an hour
    )
    op.create_table(
        "ledger_daily",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("day", sa.String(10), nullable=False),
        sa.Column("hour_start", sa.String(13), nullable=True),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("model", sa.String(200), nullable=True),
        sa.Column("provider", sa.String(32), nullable=True),
        sa.Column("endpoint", sa.String(64), nullable=False),
        sa.Column("error_code", sa.String(64), nullable=True),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("errors", sa.Integer, nullable=False),
        sa.Column("input_tokens", sa.BigInteger, nullable=False),
        sa.Column("output_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost", sa.Float, nullable=False),
        # latency histograms (app/dashboard/histogram.py): 13 cumulative buckets and a count, for the
        # call's latency (lat), the provider's time (up) and flowcall's own (oh)
        *[sa.Column(f"{kind}_{i}", sa.Integer, nullable=False, server_default="0")
          for kind in ("lat", "up", "oh") for i in [*range(13), "n"]],
    )
    op.create_index("ix_ledger_daily_tenant_day", "ledger_daily", ["tenant_id", "day"])


def downgrade() -> None:
    op.drop_table("ledger_daily")
    op.drop_table("ledger_days")
    op.drop_table("dashboard_sessions")
    with op.batch_alter_table("ledger") as batch:
        batch.drop_column("error_message")
        batch.drop_column("upstream_ms")
        batch.drop_column("fallbacks")
        batch.drop_column("routing_reason")
