"""The SQL schema as SQLAlchemy models. Every change here needs an Alembic revision
(see README.md): the database is only ever changed by migrations, never `create_all`.

Portable types only, so one schema serves SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Double, Integer, MetaData, Text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Alembic's version table; named for us because the PostgreSQL database may be shared
# with other tools (SpamAssassin's userpref lives there too).
VERSION_TABLE = "mailguard_alembic_version"

# Deterministic constraint names: migrations can then drop/alter them by name, which
# SQLite's batch mode (copy-and-move) needs.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# 64-bit ids on PostgreSQL (a busy log passes 2**31 rows); SQLite needs the exact type
# INTEGER for an autoincrementing rowid primary key.
BigId = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    """Base of all mailguard tables."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class MessageLog(Base):
    """One row per SMTP transaction (see records.MessageRecord).

    `ts` is epoch seconds as a double: it is what Clock.now() returns, compares and
    purges identically on both backends, and needs no time-zone handling.
    `rcpts` is the recipients joined by "," (see repo.join_rcpts for escaping);
    `rcpt_count` lets reports count recipients without splitting text.
    """

    __tablename__ = "message_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Double(), index=True)
    session_id: Mapped[str] = mapped_column(Text())
    client_ip: Mapped[str] = mapped_column(Text())
    helo: Mapped[str] = mapped_column(Text())
    mail_from: Mapped[str] = mapped_column(Text())
    rcpts: Mapped[str] = mapped_column(Text())
    rcpt_count: Mapped[int] = mapped_column(Integer())
    size: Mapped[int] = mapped_column(BigInteger())  # SIZE= is client-controlled
    outcome: Mapped[str] = mapped_column(Text(), index=True)
    reply_code: Mapped[int] = mapped_column(Integer())
    queue_id: Mapped[str] = mapped_column(Text())
    duration_ms: Mapped[int] = mapped_column(Integer())
    verdicts: Mapped[str] = mapped_column(Text())
