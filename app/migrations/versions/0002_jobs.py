"""Asynchronous jobs: the job records and the results of finished batch items (app/batch/jobs.py).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""
# The tables are spelled out here, not imported from app/tenancy/db.py, on purpose: a migration is frozen history,
# so its column lists repeat db.py's and each other's (the `duplicates` pairs between these files).
import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "jobs",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("agent_id", sa.String(64), nullable=True),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("kind", sa.String(8), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("request", sa.Text, nullable=False),
        sa.Column("request_id", sa.String(128), nullable=True),
        sa.Column("status_url", sa.Text, nullable=True),
        sa.Column("items_total", sa.Integer, nullable=False),
        sa.Column("result", sa.Text, nullable=True),
        sa.Column("result_status", sa.Integer, nullable=True),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("lease_until", sa.Float, nullable=True),
        sa.Column("callback_url", sa.Text, nullable=True),
        sa.Column("callback_state", sa.String(16), nullable=True),
        sa.Column("callback_attempts", sa.Integer, nullable=False),
        sa.Column("callback_next_at", sa.Float, nullable=True),
        sa.Column("callback_error", sa.String(500), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_jobs_tenant_created", "jobs", ["tenant_id", "created_at"])
    op.create_index("ix_jobs_status_lease", "jobs", ["status", "lease_until"])
    op.create_index("ix_jobs_callback", "jobs", ["callback_state", "callback_next_at"])
    op.create_table(
        "job_items",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("idx", sa.Integer, primary_key=True),
        sa.Column("result", sa.Text, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_items")
    op.drop_table("jobs")
