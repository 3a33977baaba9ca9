"""the wrap format of each recovery block (rsa-oaep, hybrid-mlkem768)

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    for table in ("escrowed_keys", "key_pool"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.add_column(
                sa.Column("wrap", sa.String(length=32), nullable=False, server_default="rsa-oaep")
            )
    with op.batch_alter_table("escrowed_keys") as batch_op:
        batch_op.create_index("ix_escrowed_keys_krs_key_id", ["krs_key_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("escrowed_keys") as batch_op:
        batch_op.drop_index("ix_escrowed_keys_krs_key_id")
    for table in ("escrowed_keys", "key_pool"):
        with op.batch_alter_table(table) as batch_op:
            batch_op.drop_column("wrap")
