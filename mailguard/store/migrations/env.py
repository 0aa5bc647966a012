"""Alembic environment for mailguard.

Two ways in:
- programmatically (mailguard.store.migrate): the caller has opened a connection
  through our async engine and passes its sync facade in `config.attributes["connection"]`;
- the `alembic` command (developers, see ../README.md): the URL comes from
  `-x url=...`, `MAILGUARD_STORE_URL` or `sqlalchemy.url`, and we run our async engine here.
"""

from __future__ import annotations

import asyncio
import os
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from mailguard.store.engine import create_engine
from mailguard.store.models import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection | None = None, url: str | None = None) -> None:
    context.configure(
        connection=connection,
        url=url,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        # SQLite cannot ALTER most things: autogenerate emits batch (copy-and-move) ops.
        render_as_batch=True,
        # Offline (--sql) output only.
        literal_binds=url is not None,
        dialect_opts={"paramstyle": "named"} if url is not None else None,
    )


def _url() -> str:
    url = (
        context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("MAILGUARD_STORE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit("no database: pass -x url=sqlite:///path or set MAILGUARD_STORE_URL")
    return url


def _run(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def _run_standalone() -> None:
    engine = create_engine(_url())
    try:
        async with engine.begin() as conn:
            await conn.run_sync(_run)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    # `alembic upgrade head --sql`: SQL text for a DBA, no connection.
    _configure(url=_url())
    with context.begin_transaction():
        context.run_migrations()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:
    # Only the standalone CLI configures logging; the daemon owns its own.
    if config.config_file_name is not None:
        fileConfig(config.config_file_name, disable_existing_loggers=False)
    asyncio.run(_run_standalone())
