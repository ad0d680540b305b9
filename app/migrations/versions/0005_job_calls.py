"""Jobs' calls noted before they are made, so a retaken job records the ones that died in flight
(app/batch/job_calls.py).

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""
# The tables are spelled out here, not imported from app/tenancy/db.py, on purpose: a migration is frozen history,
# so its column lists repeat db.py's and each other's (the `duplicates` pairs between these files).
import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "job_calls",
        sa.Column("job_id", sa.String(36), primary_key=True),
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("starts", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("job_calls")
