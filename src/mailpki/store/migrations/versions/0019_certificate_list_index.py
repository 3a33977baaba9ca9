"""an index on (issuer, profile): counting the subscribers' certificates reads the index

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-05
"""

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_issuer_profile", "certificates", ["issuer", "profile"])


def downgrade() -> None:
    op.drop_index("ix_certificates_issuer_profile", table_name="certificates")
