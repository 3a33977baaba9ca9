"""a recovery request for a person's whole key history

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("krs_requests") as batch_op:
        batch_op.add_column(
            sa.Column("key_count", sa.Integer(), nullable=False, server_default="1")
        )
    op.create_table(
        "krs_request_keys",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("request_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("target_serial", sa.String(length=64), nullable=False),
        sa.Column("target_cert", sa.LargeBinary(), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["request_id"], ["krs_requests.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("request_id", "position", name="uq_krs_request_keys_position"),
    )
    with op.batch_alter_table("krs_request_keys") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_krs_request_keys_request_id"), ["request_id"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("krs_request_keys") as batch_op:
        batch_op.drop_index(batch_op.f("ix_krs_request_keys_request_id"))
    op.drop_table("krs_request_keys")
    with op.batch_alter_table("krs_requests") as batch_op:
        batch_op.drop_column("key_count")
