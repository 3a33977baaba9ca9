"""portal sessions (server side, id hashed) and one-time PKCS#12 downloads

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "portal_sessions",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("data", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("busy_until", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id_sha256"),
    )
    with op.batch_alter_table("portal_sessions") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portal_sessions_expires_at"), ["expires_at"], unique=False
        )
    op.create_table(
        "portal_downloads",
        sa.Column("id_sha256", sa.String(length=64), nullable=False),
        sa.Column("session_sha256", sa.String(length=64), nullable=False),
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("email", sa.String(length=320), nullable=False),
        sa.Column("filename", sa.String(length=200), nullable=False),
        sa.Column("blob", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id_sha256"),
    )
    with op.batch_alter_table("portal_downloads") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_portal_downloads_session_sha256"), ["session_sha256"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_portal_downloads_expires_at"), ["expires_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("portal_downloads")
    op.drop_table("portal_sessions")
