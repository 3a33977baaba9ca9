"""an expression index on lower(email): case-insensitive lookups by mail address

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_certificates_email_lower", "certificates", [sa.text("lower(email)")])


def downgrade() -> None:
    op.drop_index("ix_certificates_email_lower", table_name="certificates")
