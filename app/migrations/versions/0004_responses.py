"""Stored Responses of the OpenAI Responses API (app/openai_api/response_store.py).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""
# The tables are spelled out here, not imported from app/tenancy/db.py, on purpose: a migration is frozen history,
# so its column lists repeat db.py's and each other's (the `duplicates` pairs between these files).
import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "responses",
        sa.Column("tenant_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
        sa.Column("response", sa.Text, nullable=False),
        sa.Column("input_items", sa.Text, nullable=False),
        sa.Column("context", sa.Text, nullable=False),
    )
    op.create_index("ix_responses_expires", "responses", ["expires_at"])


def downgrade() -> None:
    op.drop_table("responses")
