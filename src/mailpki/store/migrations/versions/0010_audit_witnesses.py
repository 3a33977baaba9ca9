"""ML-DSA signatures on audit checkpoints; the recovery service's checkpoint witness

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("audit_checkpoints") as batch_op:
        batch_op.add_column(sa.Column("pq_signature", sa.LargeBinary(), nullable=True))
    op.create_table(
        "krs_witnessed_instances",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("audit_key", sa.Text(), nullable=False),
        sa.Column("mldsa_key", sa.Text(), nullable=True),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "krs_witnessed_checkpoints",
        sa.Column("instance_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column("time", sa.String(length=40), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("pq_signature", sa.LargeBinary(), nullable=True),
        sa.Column("received_at", sa.String(length=40), nullable=False),
        sa.Column("countersignature", sa.LargeBinary(), nullable=False),
        sa.ForeignKeyConstraint(["instance_id"], ["krs_witnessed_instances.id"]),
        sa.PrimaryKeyConstraint("instance_id", "seq"),
    )


def downgrade() -> None:
    op.drop_table("krs_witnessed_checkpoints")
    op.drop_table("krs_witnessed_instances")
    with op.batch_alter_table("audit_checkpoints") as batch_op:
        batch_op.drop_column("pq_signature")
