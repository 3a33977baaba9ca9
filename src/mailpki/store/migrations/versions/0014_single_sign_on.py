"""single sign-on: Kerberos realm of a directory, OpenID providers, pending OIDC logons

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("directories") as batch_op:
        batch_op.add_column(
            sa.Column("kerberos_realm", sa.String(length=255), nullable=False, server_default="")
        )
    op.create_table(
        "oidc_providers",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=400), nullable=False),
        sa.Column("client_id", sa.String(length=400), nullable=False),
        sa.Column("client_secret_file", sa.Text(), nullable=False),
        sa.Column("claim_mail", sa.String(length=64), nullable=False),
        sa.Column("claim_groups", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "oidc_logons",
        sa.Column("state_sha256", sa.String(length=64), nullable=False),
        sa.Column("provider", sa.String(length=64), nullable=False),
        sa.Column("browser_sha256", sa.String(length=64), nullable=False),
        sa.Column("nonce", sa.String(length=128), nullable=False),
        sa.Column("code_verifier", sa.String(length=128), nullable=False),
        sa.Column("next_page", sa.String(length=32), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("state_sha256"),
    )
    with op.batch_alter_table("oidc_logons") as batch_op:
        batch_op.create_index(batch_op.f("ix_oidc_logons_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("oidc_logons") as batch_op:
        batch_op.drop_index(batch_op.f("ix_oidc_logons_expires_at"))
    op.drop_table("oidc_logons")
    op.drop_table("oidc_providers")
    with op.batch_alter_table("directories") as batch_op:
        batch_op.drop_column("kerberos_realm")
