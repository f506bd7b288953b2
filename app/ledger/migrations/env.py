"""Alembic environment: migrates the ledger named by DATABASE_URL (or the URL the caller set)."""

from __future__ import annotations

from alembic import context

from app.ledger.models import Base
from app.ledger.session import make_engine
from config.settings import load_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or load_settings().database_url


def run_migrations_offline() -> None:
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(url)
    with engine.connect() as connection:
        sqlite = connection.dialect.name == "sqlite"
        if sqlite:
            # A batch operation on SQLite rebuilds the table (copy, DROP, rename): with foreign keys
            # enforced, dropping a table other rows point at (events, from the timeline) fails. Off
            # for the migration only (the pragma works outside a transaction), checked at the end.
            connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
        context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
            if sqlite:
                broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise RuntimeError(
                        f"the migration left {len(broken)} row(s) pointing at nothing: {broken[:5]}"
                    )
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
