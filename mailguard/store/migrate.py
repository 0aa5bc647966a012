"""Schema migrations driven from code: what `mailguard db upgrade|status` and the daemon's
start-up check call. No alembic.ini is needed in the admin's working directory.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util.exc import CommandError
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

from mailguard.store.engine import (
    SQLITE_BEGIN,
    create_engine,
    normalise_url,
    safe_url,
    sqlite_path,
    translate_errors,
)
from mailguard.store.errors import SchemaOutOfDate
from mailguard.store.models import VERSION_TABLE

__all__ = [
    "SchemaOutOfDate",
    "alembic_config",
    "current_revision",
    "ensure_current",
    "head_revision",
    "upgrade",
]

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

# Any constant: serialises `upgrade` across MX hosts sharing one PostgreSQL database.
_PG_MIGRATION_LOCK = 0x6D61696C  # "mail"


def alembic_config() -> Config:
    """An Alembic Config pointing at the migrations shipped inside this package."""
    cfg = Config()
    # ConfigParser interpolation: a literal "%" in the install path must be doubled.
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR).replace("%", "%%"))
    return cfg


def head_revision() -> str:
    """The revision this mailguard's code needs."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:  # only if the versions directory is missing from the install
        raise RuntimeError(f"no Alembic revisions found in {MIGRATIONS_DIR}")
    return head


def _revision_of(conn: Connection) -> str | None:
    ctx = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return ctx.get_current_revision()


def _upgrade_on(conn: Connection) -> tuple[str | None, str]:
    if conn.dialect.name == "postgresql":
        # Released at commit; a second host waits, then finds nothing left to do.
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _PG_MIGRATION_LOCK})
    before = _revision_of(conn)
    cfg = alembic_config()
    cfg.attributes["connection"] = conn
    command.upgrade(cfg, "head")
    after = _revision_of(conn)
    if after is None:  # cannot happen after a successful upgrade; keeps the type honest
        raise RuntimeError("upgrade left no revision stamped")
    return before, after


async def upgrade(url: str) -> tuple[str | None, str]:
    """Bring the schema to head, creating the database file for SQLite.

    Returns (revision before, revision after); equal when there was nothing to do.
    Raises TemporaryError when the database is unreachable.
    """
    engine = create_engine(url)
    try:
        with translate_errors("schema upgrade", url):
            # IMMEDIATE: concurrent upgraders of one SQLite file queue up on the write
            # lock instead of both creating the version table.
            async with engine.execution_options(**{SQLITE_BEGIN: "IMMEDIATE"}).begin() as conn:
                return await conn.run_sync(_upgrade_on)
    except CommandError as e:
        # e.g. the database carries a revision newer than this code knows.
        raise SchemaOutOfDate(
            f"cannot upgrade {safe_url(url)}: {e} (is the database newer than this mailguard?)",
            current=None,
            head=head_revision(),
        ) from e
    finally:
        await engine.dispose()


async def revision_on(engine: AsyncEngine, url: str) -> str | None:
    """The revision stamped in the database behind `engine` (None: not initialised)."""
    if missing_sqlite_file(url):
        return None
    with translate_errors("reading schema revision", url):
        async with engine.connect() as conn:
            return await conn.run_sync(_revision_of)


def missing_sqlite_file(url: str) -> bool:
    """True for a SQLite URL whose file does not exist (so the schema is not initialised)."""
    # Reading the revision must not leave an empty database file (or directory) behind.
    path = sqlite_path(normalise_url(url))
    return path is not None and not path.exists()


async def current_revision(url: str) -> str | None:
    """The revision the database is at; None when it has never been upgraded."""
    if missing_sqlite_file(url):
        return None
    engine = create_engine(url)
    try:
        return await revision_on(engine, url)
    finally:
        await engine.dispose()


def _known(revision: str) -> bool:
    try:
        return ScriptDirectory.from_config(alembic_config()).get_revision(revision) is not None
    except CommandError:
        return False


def check_revision(current: str | None, url: str) -> None:
    """Raise SchemaOutOfDate unless `current` is head; the message says what to run."""
    head = head_revision()
    if current == head:
        return
    run = f'run "mailguard db upgrade --store {safe_url(url)}"'
    if current is None:
        message = f"database is not initialised: {run}"
    elif not _known(current):
        message = (
            f"database schema is at revision {current}, newer than this mailguard knows "
            f"(it needs {head}): upgrade mailguard on this host"
        )
    else:
        message = f"database schema is at revision {current}, mailguard needs {head}: {run}"
    raise SchemaOutOfDate(message, current=current, head=head)


async def ensure_current(url: str) -> None:
    """Refuse to run against a schema other than head (raises SchemaOutOfDate)."""
    check_revision(await current_revision(url), url)
