"""Quarantine, web roles, a domain's "users may override" switch, alerts, qmail queue
readings, mail-flow statistics (message_log gains host, direction, dispositions).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | None = None
depends_on: str | None = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "quarantine",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("expires_ts", sa.Double(), nullable=False),
        sa.Column("rcpt", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("mail_from", sa.Text(), nullable=False),
        sa.Column("from_header", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.Column("score", sa.Double(), nullable=True),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), nullable=False),
        sa.Column("status_ts", sa.Double(), nullable=True),
        sa.Column("status_by", sa.Text(), nullable=False),
        sa.Column("queue_id", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_quarantine")),
    )
    with op.batch_alter_table("quarantine", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_quarantine_ts"), ["ts"], unique=False)
        batch_op.create_index(batch_op.f("ix_quarantine_expires_ts"), ["expires_ts"],
                              unique=False)
        # a page is "this scope's held entries, newest (highest id) first"
        batch_op.create_index("ix_quarantine_rcpt_status_id", ["rcpt", "status", "id"],
                              unique=False)
        batch_op.create_index("ix_quarantine_domain_status_id", ["domain", "status", "id"],
                              unique=False)
    op.create_table(
        "web_role",
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("user", "domain", name=op.f("pk_web_role")),
    )
    with op.batch_alter_table("mail_domain", schema=None) as batch_op:
        batch_op.add_column(sa.Column("users_may_override", sa.Boolean(), nullable=False,
                                      server_default=sa.true()))
    op.create_table(
        "alert",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("first_ts", sa.Double(), nullable=False),
        sa.Column("last_ts", sa.Double(), nullable=False),
        sa.Column("last_sent_ts", sa.Double(), nullable=True),
        sa.Column("sent", sa.Integer(), nullable=False),
        sa.Column("resolved_ts", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_alert")),
    )
    with op.batch_alter_table("alert", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_alert_first_ts"), ["first_ts"], unique=False)
        batch_op.create_index("ix_alert_key_resolved", ["key", "resolved_ts"], unique=False)
    op.create_table(
        "qmail_queue_reading",
        sa.Column("id", BigId, autoincrement=True, nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("unprocessed", sa.Integer(), nullable=False),
        sa.Column("local", sa.Integer(), nullable=False),
        sa.Column("remote", sa.Integer(), nullable=False),
        sa.Column("oldest_age_s", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_qmail_queue_reading")),
    )
    with op.batch_alter_table("qmail_queue_reading", schema=None) as batch_op:
        batch_op.create_index("ix_qmail_queue_reading_host_ts", ["host", "ts"], unique=False)


    with op.batch_alter_table("message_log", schema=None) as batch_op:
        for column in ("host", "direction", "dispositions"):
            batch_op.add_column(sa.Column(column, sa.Text(), nullable=False,
                                          server_default=""))
    flow_keys = ("host", "domain", "direction", "outcome", "reason")
    op.create_table(
        "flow_bucket",
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("start_ts", sa.Double(), nullable=False),
        *(sa.Column(k, sa.Text(), nullable=False) for k in flow_keys),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("rcpts", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resolution", "start_ts", *flow_keys,
                                name=op.f("pk_flow_bucket")),
    )
    op.create_table(
        "usage_bucket",
        sa.Column("resolution", sa.Integer(), nullable=False),
        sa.Column("start_ts", sa.Double(), nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("messages", sa.BigInteger(), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("caught", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("resolution", "start_ts", "host", "kind", "key",
                                name=op.f("pk_usage_bucket")),
    )
    with op.batch_alter_table("usage_bucket", schema=None) as batch_op:
        batch_op.create_index("ix_usage_bucket_kind_key",
                              ["kind", "key", "resolution", "start_ts"], unique=False)


def downgrade() -> None:
    op.drop_table("usage_bucket")
    op.drop_table("flow_bucket")
    with op.batch_alter_table("message_log", schema=None) as batch_op:
        for column in ("dispositions", "direction", "host"):
            batch_op.drop_column(column)
    op.drop_table("qmail_queue_reading")
    op.drop_table("alert")
    with op.batch_alter_table("mail_domain", schema=None) as batch_op:
        batch_op.drop_column("users_may_override")
    op.drop_table("web_role")
    op.drop_table("quarantine")
