"""Policy state (overrides, greylist, per-user counters), SpamAssassin userpref, domains, users.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "greylist",
        sa.Column("client_key", sa.Text(), nullable=False),
        sa.Column("sender", sa.Text(), nullable=False),
        sa.Column("rcpt", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.Column("passed_ts", sa.Double(), nullable=True),
        sa.Column("deferrals", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client_key", "sender", "rcpt", name=op.f("pk_greylist")),
    )
    with op.batch_alter_table("greylist", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_greylist_last_seen"), ["last_seen"], unique=False)

    op.create_table(
        "greylist_client",
        sa.Column("client_key", sa.Text(), nullable=False),
        sa.Column("passes", sa.Integer(), nullable=False),
        sa.Column("first_seen", sa.Double(), nullable=False),
        sa.Column("last_seen", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("client_key", name=op.f("pk_greylist_client")),
    )
    with op.batch_alter_table("greylist_client", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_greylist_client_last_seen"), ["last_seen"], unique=False
        )

    op.create_table(
        "ip_override",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("network", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("expires_ts", sa.Double(), nullable=True),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ip_override")),
    )
    with op.batch_alter_table("ip_override", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ip_override_network"), ["network"], unique=False)

    op.create_table(
        "mail_domain",
        sa.Column("domain", sa.Text(), nullable=False),
        sa.Column("spam_enabled", sa.Boolean(), nullable=False),
        sa.Column("spam_action", sa.Text(), nullable=False),
        sa.Column("spam_box", sa.Text(), nullable=False),
        sa.Column("language", sa.Text(), nullable=False),
        sa.Column("updated_ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("domain", name=op.f("pk_mail_domain")),
    )
    op.create_table(
        "mail_user",
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("password_hash", sa.Text(), nullable=True),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.Column("spam_enabled", sa.Boolean(), nullable=True),
        sa.Column("spam_action", sa.Text(), nullable=True),
        sa.Column("spam_box", sa.Text(), nullable=True),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("address", name=op.f("pk_mail_user")),
    )
    op.create_table(
        "mailguard_setting",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_ts", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_mailguard_setting")),
    )
    op.create_table(
        "user_event",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("ts", sa.Double(), nullable=False),
        sa.Column("messages", sa.Integer(), nullable=False),
        sa.Column("rcpts", sa.Integer(), nullable=False),
        sa.Column("rcpt_domains", sa.Text(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_user_event")),
    )
    with op.batch_alter_table("user_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_user_event_ts"), ["ts"], unique=False)
        batch_op.create_index("ix_user_event_user_ts", ["user", "ts"], unique=False)

    op.create_table(
        "user_state",
        sa.Column("user", sa.Text(), nullable=False),
        sa.Column("suspended", sa.Boolean(), nullable=False),
        sa.Column("suspended_ts", sa.Double(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("last_alert_ts", sa.Double(), nullable=True),
        sa.Column("alerts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("user", name=op.f("pk_user_state")),
    )
    op.create_table(
        "userpref",
        sa.Column(
            "prefid",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.String(length=100), nullable=False),
        sa.Column("preference", sa.String(length=50), nullable=False),
        sa.Column("value", sa.String(length=100), nullable=False),
        sa.PrimaryKeyConstraint("prefid", name=op.f("pk_userpref")),
    )
    with op.batch_alter_table("userpref", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_userpref_username"), ["username"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("userpref", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_userpref_username"))

    op.drop_table("userpref")
    op.drop_table("user_state")
    with op.batch_alter_table("user_event", schema=None) as batch_op:
        batch_op.drop_index("ix_user_event_user_ts")
        batch_op.drop_index(batch_op.f("ix_user_event_ts"))

    op.drop_table("user_event")
    op.drop_table("mailguard_setting")
    op.drop_table("mail_user")
    op.drop_table("mail_domain")
    with op.batch_alter_table("ip_override", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ip_override_network"))

    op.drop_table("ip_override")
    with op.batch_alter_table("greylist_client", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_greylist_client_last_seen"))

    op.drop_table("greylist_client")
    with op.batch_alter_table("greylist", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_greylist_last_seen"))

    op.drop_table("greylist")
