"""CRL entry DER stored at revocation; pre-signed OCSP responses

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-04

Certificates revoked before this revision get their entry encoded here, once.
"""

from datetime import UTC

import sqlalchemy as sa
from alembic import op
from cryptography import x509

from mailpki.base.crl_entry import encode_entry

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None

_BATCH = 10_000
_CERTS = sa.table(
    "certificates",
    sa.column("id", sa.Integer),
    sa.column("serial", sa.String),
    sa.column("status", sa.String),
    sa.column("revoked_at", sa.DateTime(timezone=True)),
    sa.column("revocation_reason", sa.String),
    sa.column("crl_entry_der", sa.LargeBinary),
)
_FLAGS = {flag.name: flag for flag in x509.ReasonFlags}


def _backfill_entries() -> None:
    """Encode the CRL entry of every certificate revoked before this revision."""
    connection = op.get_bind()
    while True:
        rows = connection.execute(
            sa.select(_CERTS.c.id, _CERTS.c.serial, _CERTS.c.revoked_at, _CERTS.c.revocation_reason)
            .where(
                _CERTS.c.status == "revoked",
                _CERTS.c.revoked_at.is_not(None),
                _CERTS.c.crl_entry_der.is_(None),
            )
            .limit(_BATCH)
        ).all()
        if not rows:
            return
        connection.execute(
            sa.update(_CERTS).where(_CERTS.c.id == sa.bindparam("row_id")),
            [
                {
                    "row_id": row_id,
                    "crl_entry_der": encode_entry(
                        int(serial, 16),
                        revoked_at if revoked_at.tzinfo else revoked_at.replace(tzinfo=UTC),
                        _FLAGS.get(reason or ""),
                    ),
                }
                for row_id, serial, revoked_at, reason in rows
            ],
        )


def upgrade() -> None:
    with op.batch_alter_table("certificates") as batch_op:
        batch_op.add_column(sa.Column("crl_entry_der", sa.LargeBinary(), nullable=True))
    _backfill_entries()
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
