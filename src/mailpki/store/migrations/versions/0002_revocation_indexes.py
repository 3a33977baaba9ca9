"""revocation indexes: CRL staleness checks and CRL building as index seeks

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_index("ix_certificates_partition_status")
        batch_op.create_index(
            "ix_certificates_partition_revoked", ["crl_partition", "status", "revoked_at"]
        )
        batch_op.create_index("ix_certificates_issuer_revoked", ["issuer", "status", "revoked_at"])


def downgrade() -> None:
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_index("ix_certificates_issuer_revoked")
        batch_op.drop_index("ix_certificates_partition_revoked")
        batch_op.create_index("ix_certificates_partition_status", ["crl_partition", "status"])
