"""SMTP AUTH attempts per client IP and window, shared by workers and MX hosts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def upgrade() -> None:
    op.create_table(
        "auth_attempt",
        sa.Column("client_ip", sa.Text(), nullable=False),
        sa.Column("window_no", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("client_ip", "window_no", name=op.f("pk_auth_attempt")),
    )
    with op.batch_alter_table("auth_attempt", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_auth_attempt_window_no"), ["window_no"], unique=False)


def downgrade() -> None:
    op.drop_table("auth_attempt")
