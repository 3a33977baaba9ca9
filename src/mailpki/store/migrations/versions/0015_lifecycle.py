"""certificate succession (renewal) and the lifecycle's once-only marks

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.add_column(sa.Column("superseded_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("superseded_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index("ix_certificates_superseded_by", ["superseded_by"], unique=False)
        batch_op.create_index(
            "ix_certificates_status_not_after", ["status", "not_after"], unique=False
        )
    op.create_table(
        "lifecycle_marks",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=320), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("kind", "subject", name="uq_lifecycle_marks"),
    )


def downgrade() -> None:
    op.drop_table("lifecycle_marks")
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_index("ix_certificates_status_not_after")
        batch_op.drop_index("ix_certificates_superseded_by")
        batch_op.drop_column("superseded_at")
        batch_op.drop_column("superseded_by")
