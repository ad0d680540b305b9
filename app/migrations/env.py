"""Alembic environment: runs against the engine flowcall hands it (see app/tenancy/db.py)."""
from alembic import context

from app.tenancy.db import make_engine, metadata

config = context.config
engine = config.attributes.get("engine") or make_engine(config.get_main_option("sqlalchemy.url"))

with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=metadata,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
