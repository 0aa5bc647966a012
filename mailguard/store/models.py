"""The SQL schema as SQLAlchemy models. Every change here needs an Alembic revision
(see README.md): the database is only ever changed by migrations, never `create_all`.

Portable types only, so one schema serves SQLite and PostgreSQL.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    true,
)
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
    # the MX host that wrote it, "in"/"out"/"relay", and what happened per recipient of
    # an accepted message ("delivered=2,quarantined=1"): what the statistics count
    host: Mapped[str] = mapped_column(Text(), default="", server_default="")
    direction: Mapped[str] = mapped_column(Text(), default="", server_default="")
    dispositions: Mapped[str] = mapped_column(Text(), default="", server_default="")


# --- SMTP-time policy (issue 3) -----------------------------------------------------------


class IpOverride(Base):
    """Per-IP/network override of the SMTP-time policy: "allow" beats every DNS blocklist
    (and greylisting where configured), "deny" blocks. `network` is a canonical CIDR."""

    __tablename__ = "ip_override"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    network: Mapped[str] = mapped_column(Text(), index=True)
    action: Mapped[str] = mapped_column(Text())  # "allow" | "deny"
    reason: Mapped[str] = mapped_column(Text(), default="")
    created_ts: Mapped[float] = mapped_column(Double())
    expires_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)
    created_by: Mapped[str] = mapped_column(Text(), default="")


class GreylistEntry(Base):
    """One greylisting triplet (Postgrey's model): `client_key` is the client's net (/24,
    /64), exact IP or SPF-validated domain, `sender` is normalised."""

    __tablename__ = "greylist"

    client_key: Mapped[str] = mapped_column(Text(), primary_key=True)
    sender: Mapped[str] = mapped_column(Text(), primary_key=True)
    rcpt: Mapped[str] = mapped_column(Text(), primary_key=True)
    first_seen: Mapped[float] = mapped_column(Double())
    last_seen: Mapped[float] = mapped_column(Double(), index=True)
    passed_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)
    deferrals: Mapped[int] = mapped_column(Integer(), default=0)


class GreylistClient(Base):
    """A client key's successful retries, for the auto-whitelist."""

    __tablename__ = "greylist_client"

    client_key: Mapped[str] = mapped_column(Text(), primary_key=True)
    passes: Mapped[int] = mapped_column(Integer(), default=0)
    first_seen: Mapped[float] = mapped_column(Double())
    last_seen: Mapped[float] = mapped_column(Double(), index=True)


class UserEvent(Base):
    """Outbound activity of a sending identity (AUTH name, relay sender or client IP):
    sliding-window counters are sums over these rows."""

    __tablename__ = "user_event"
    __table_args__ = (Index("ix_user_event_user_ts", "user", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    user: Mapped[str] = mapped_column(Text())
    ts: Mapped[float] = mapped_column(Double(), index=True)
    messages: Mapped[int] = mapped_column(Integer(), default=0)
    rcpts: Mapped[int] = mapped_column(Integer(), default=0)
    rcpt_domains: Mapped[str] = mapped_column(Text(), default="")  # comma-separated
    subject: Mapped[str] = mapped_column(Text(), default="")


class UserState(Base):
    """Suspension and alert state of a sending identity."""

    __tablename__ = "user_state"

    user: Mapped[str] = mapped_column(Text(), primary_key=True)
    suspended: Mapped[bool] = mapped_column(Boolean(), default=False)
    suspended_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)
    reason: Mapped[str] = mapped_column(Text(), default="")
    last_alert_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)
    alerts: Mapped[int] = mapped_column(Integer(), default=0)


class Setting(Base):
    """Global switches shared by every MX host (e.g. the outbound "panic" switch)."""

    __tablename__ = "mailguard_setting"

    key: Mapped[str] = mapped_column(Text(), primary_key=True)
    value: Mapped[str] = mapped_column(Text())
    updated_ts: Mapped[float] = mapped_column(Double())


# --- content scanning and users (issues 4, 5) -----------------------------------------------


class Userpref(Base):
    """SpamAssassin's own user preference table: spamd started with `user_scores_dsn`
    pointing at this database reads what mailguard (and its web page) writes. Rows for
    `@GLOBAL`, `@~domain` (domain defaults, via user_scores_sql_custom_query) and users."""

    __tablename__ = "userpref"

    prefid: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    username: Mapped[str] = mapped_column(String(100), index=True, default="")
    preference: Mapped[str] = mapped_column(String(50), default="")
    value: Mapped[str] = mapped_column(String(100), default="")


class MailDomain(Base):
    """Per-domain settings: spam filtering is off until the admin enables it."""

    __tablename__ = "mail_domain"

    domain: Mapped[str] = mapped_column(Text(), primary_key=True)
    spam_enabled: Mapped[bool] = mapped_column(Boolean(), default=False)
    spam_action: Mapped[str] = mapped_column(Text(), default="tag")
    spam_box: Mapped[str] = mapped_column(Text(), default="")
    language: Mapped[str] = mapped_column(Text(), default="")
    updated_ts: Mapped[float] = mapped_column(Double())
    # may the domain's users choose their own filtering on/off, action and score?
    users_may_override: Mapped[bool] = mapped_column(Boolean(), default=True,
                                                     server_default=true())


class MailUser(Base):
    """A mail user: credentials (SMTP AUTH, web page) and own settings; NULL settings
    fall back to the domain's."""

    __tablename__ = "mail_user"

    address: Mapped[str] = mapped_column(Text(), primary_key=True)
    password_hash: Mapped[str | None] = mapped_column(Text(), nullable=True)
    disabled: Mapped[bool] = mapped_column(Boolean(), default=False)
    spam_enabled: Mapped[bool | None] = mapped_column(Boolean(), nullable=True)
    spam_action: Mapped[str | None] = mapped_column(Text(), nullable=True)
    spam_box: Mapped[str | None] = mapped_column(Text(), nullable=True)
    language: Mapped[str | None] = mapped_column(Text(), nullable=True)
    created_ts: Mapped[float] = mapped_column(Double())


class WebSession(Base):
    """A logged-in web session, server-side so any web host of the store can serve it.
    Only a hash of the cookie's token is stored: a leaked table logs nobody in."""

    __tablename__ = "web_session"

    token_hash: Mapped[str] = mapped_column(Text(), primary_key=True)
    user: Mapped[str] = mapped_column(Text(), index=True)
    csrf: Mapped[str] = mapped_column(Text())
    created_ts: Mapped[float] = mapped_column(Double())
    last_seen_ts: Mapped[float] = mapped_column(Double(), index=True)


class WebLoginAttempt(Base):
    """A login attempt counted before its password is checked (per IP and per account:
    `key` is "ip:<addr>" or "user:<address>"); failures stay for the window."""

    __tablename__ = "web_login_attempt"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text())
    ts: Mapped[float] = mapped_column(Double())

    __table_args__ = (Index("ix_web_login_attempt_key_ts", "key", "ts"),)


# --- quarantine, roles, alerts, qmail watch (issues 8, 9) ----------------------------------


class Quarantine(Base):
    """A message kept in mailguard's quarantine for one recipient: the file (under
    `[quarantine] directory`, name `path`) holds the copy as it would have been
    delivered; the row is what the pages list. `status`: "held", "released", "deleted";
    a held row past `expires_ts` is purged with its file. `kind` "virus" is never
    released by its recipient, only by an admin."""

    __tablename__ = "quarantine"
    __table_args__ = (Index("ix_quarantine_rcpt_status_id", "rcpt", "status", "id"),
                      Index("ix_quarantine_domain_status_id", "domain", "status", "id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Double(), index=True)
    expires_ts: Mapped[float] = mapped_column(Double(), index=True)
    rcpt: Mapped[str] = mapped_column(Text())  # lower-case address it was meant for
    domain: Mapped[str] = mapped_column(Text())  # rcpt's domain (domain admins' view)
    mail_from: Mapped[str] = mapped_column(Text())  # envelope sender
    from_header: Mapped[str] = mapped_column(Text(), default="")  # decoded From:
    subject: Mapped[str] = mapped_column(Text(), default="")  # decoded Subject:
    score: Mapped[float | None] = mapped_column(Double(), nullable=True)
    size: Mapped[int] = mapped_column(BigInteger())
    kind: Mapped[str] = mapped_column(Text())  # "spam" | "virus"
    reason: Mapped[str] = mapped_column(Text(), default="")  # virus name / spam tests
    path: Mapped[str] = mapped_column(Text())  # file name relative to the directory
    status: Mapped[str] = mapped_column(Text(), default="held")
    status_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)
    status_by: Mapped[str] = mapped_column(Text(), default="")
    queue_id: Mapped[str] = mapped_column(Text(), default="")  # of the release


class WebRole(Base):
    """A web role granted to a login: `domain` "*" is the server admin, any other value
    makes the user an admin of that domain. Anyone who can log in is a mail user."""

    __tablename__ = "web_role"

    user: Mapped[str] = mapped_column(Text(), primary_key=True)
    domain: Mapped[str] = mapped_column(Text(), primary_key=True)
    created_ts: Mapped[float] = mapped_column(Double())


class Alert(Base):
    """One incident (`key`, e.g. "scanner:clamd"): opened once, reminded every interval
    while it lasts, resolved when the condition clears."""

    __tablename__ = "alert"
    __table_args__ = (Index("ix_alert_key_resolved", "key", "resolved_ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(Text())
    kind: Mapped[str] = mapped_column(Text())
    host: Mapped[str] = mapped_column(Text(), default="")
    message: Mapped[str] = mapped_column(Text(), default="")
    first_ts: Mapped[float] = mapped_column(Double(), index=True)
    last_ts: Mapped[float] = mapped_column(Double())
    last_sent_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)
    sent: Mapped[int] = mapped_column(Integer(), default=0)
    resolved_ts: Mapped[float | None] = mapped_column(Double(), nullable=True)


class QmailQueueReading(Base):
    """One reading of a qmail queue by `mailguard qmail-watch` (kept for 24 hours)."""

    __tablename__ = "qmail_queue_reading"
    __table_args__ = (Index("ix_qmail_queue_reading_host_ts", "host", "ts"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    host: Mapped[str] = mapped_column(Text())
    ts: Mapped[float] = mapped_column(Double())
    messages: Mapped[int] = mapped_column(Integer())
    unprocessed: Mapped[int] = mapped_column(Integer())
    local: Mapped[int] = mapped_column(Integer())
    remote: Mapped[int] = mapped_column(Integer())
    oldest_age_s: Mapped[float] = mapped_column(Double())


class FlowBucket(Base):
    """Mail flow counters: transactions, recipients and bytes per time bucket
    (`resolution` seconds: 300, 3600, 86400, each with its own retention), host,
    direction, outcome and reason. `domain` "" is the total; a row per local domain
    concerned splits it (a message to two domains counts once in each)."""

    __tablename__ = "flow_bucket"

    resolution: Mapped[int] = mapped_column(Integer(), primary_key=True)
    start_ts: Mapped[float] = mapped_column(Double(), primary_key=True)
    host: Mapped[str] = mapped_column(Text(), primary_key=True)
    domain: Mapped[str] = mapped_column(Text(), primary_key=True)
    direction: Mapped[str] = mapped_column(Text(), primary_key=True)
    outcome: Mapped[str] = mapped_column(Text(), primary_key=True)
    reason: Mapped[str] = mapped_column(Text(), primary_key=True)
    messages: Mapped[int] = mapped_column(BigInteger(), default=0)
    rcpts: Mapped[int] = mapped_column(BigInteger(), default=0)
    bytes: Mapped[int] = mapped_column(BigInteger(), default=0)


class UsageBucket(Base):
    """Usage per sender, recipient and local domain (Isoqlog's tables) per hour and per
    day: accepted messages and bytes, and what was caught (refused, quarantined,
    deleted) for them."""

    __tablename__ = "usage_bucket"
    __table_args__ = (Index("ix_usage_bucket_kind_key", "kind", "key", "resolution",
                            "start_ts"),)

    resolution: Mapped[int] = mapped_column(Integer(), primary_key=True)
    start_ts: Mapped[float] = mapped_column(Double(), primary_key=True)
    host: Mapped[str] = mapped_column(Text(), primary_key=True)
    kind: Mapped[str] = mapped_column(Text(), primary_key=True)  # sender | rcpt | domain
    key: Mapped[str] = mapped_column(Text(), primary_key=True)
    messages: Mapped[int] = mapped_column(BigInteger(), default=0)
    bytes: Mapped[int] = mapped_column(BigInteger(), default=0)
    caught: Mapped[int] = mapped_column(BigInteger(), default=0)


class AuthAttempt(Base):
    """SMTP AUTH attempts per client IP and fixed window (`window_no` = epoch seconds //
    window length): failed ones plus those being verified now, shared by every worker
    and MX host on the database (mailguard.store.auth_attempts). Rows older than the
    previous window are deleted."""

    __tablename__ = "auth_attempt"

    client_ip: Mapped[str] = mapped_column(Text(), primary_key=True)
    window_no: Mapped[int] = mapped_column(BigInteger(), primary_key=True, index=True)
    n: Mapped[int] = mapped_column(Integer(), default=0)
