"""Budget reservations: holds of calls in flight, and the per-scope lock rows (app/tenancy/budgets.py).

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""
# The tables are spelled out here, not imported from app/tenancy/db.py, on purpose: a migration is frozen history,
# so its column lists repeat db.py's and each other's (the `duplicates` pairs between these files).
import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "budget_holds",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("tenant_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(32), nullable=True),
        sa.Column("amount", sa.Float, nullable=False),
        sa.Column("expires_at", sa.Float, nullable=False),
    )
    op.create_index("ix_budget_holds_tenant_id", "budget_holds", ["tenant_id"])
    op.create_index("ix_budget_holds_key_id", "budget_holds", ["key_id"])
    op.create_index("ix_budget_holds_expires_at", "budget_holds", ["expires_at"])
    op.create_table(
        "budget_locks",
        sa.Column("scope", sa.String(128), primary_key=True),
        sa.Column("version", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("budget_locks")
    op.drop_table("budget_holds")
