"""CRL entry DER stored at revocation; pre-signed OCSP responses

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04

Rows revoked before this revision have no stored entry: the next CRL run encodes
each of them once and stores it (CertificateAuthority.generate_issuing_crl).
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.add_column(sa.Column("crl_entry_der", sa.LargeBinary(), nullable=True))
    op.create_table(
        "ocsp_responses",
        sa.Column("serial", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("this_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("next_update", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("serial"),
    )
    with op.batch_alter_table("ocsp_responses") as batch_op:
        batch_op.create_index(
            batch_op.f("ix_ocsp_responses_next_update"), ["next_update"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_ocsp_responses_updated_at"), ["updated_at"], unique=False
        )


def downgrade() -> None:
    op.drop_table("ocsp_responses")
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.drop_column("crl_entry_der")
