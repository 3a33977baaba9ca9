"""Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from mailpki.store.db import Database
from mailpki.store.models import Base


def test_migrated_schema_matches_models(database_url: str) -> None:
    db = Database(database_url)
    assert not db.is_initialised()
    db.migrate()
    db.migrate()  # idempotent
    assert db.is_initialised()
    with db.engine.connect() as connection:
        assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    db.dispose()


def test_0013_encodes_the_crl_entries_of_certificates_revoked_before_it(
    database_url: str,
) -> None:
    """Rows revoked under 0012 get their CRL entry DER, the same bytes revoke() stores."""
    from datetime import UTC, datetime

    from alembic import command
    from alembic.config import Config
    from cryptography import x509
    from sqlalchemy import text

    from mailpki.base.crl_entry import encode_entry
    from mailpki.store.db import MIGRATIONS_DIR

    db = Database(database_url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    revoked_at = datetime(2026, 5, 1, 8, 30, 15, 250_000, tzinfo=UTC)
    rows = [("A1", "key_compromise"), ("FF00", None), ("B2", "unspecified"), ("C3", "valid")]
    with db.engine.begin() as connection:
        cfg.attributes["connection"] = connection
        command.upgrade(cfg, "0012")
        for i, (serial, reason) in enumerate(rows):
            status = "valid" if reason == "valid" else "revoked"
            connection.execute(
                text(
                    "INSERT INTO serials (serial, issuer, reserved_at) VALUES (:s, 'issuing', :t)"
                ),
                {"s": serial, "t": revoked_at},
            )
            connection.execute(
                text(
                    "INSERT INTO certificates (serial, issuer, subject, profile, not_before,"
                    " not_after, fingerprint, der, status, revoked_at, revocation_reason,"
                    " crl_partition, created_at) VALUES (:s, 'issuing', 'CN=x', 'p', :t, :t,"
                    " :f, :d, :st, :r, :reason, 0, :t)"
                ),
                {
                    "s": serial,
                    "t": revoked_at,
                    "f": f"{i:064x}",
                    "d": b"\x30\x00",
                    "st": status,
                    "r": revoked_at if status == "revoked" else None,
                    "reason": None if status == "valid" else reason,
                },
            )
    db.migrate()
    with db.engine.connect() as connection:
        stored = dict(
            connection.execute(text("SELECT serial, crl_entry_der FROM certificates")).all()
        )
    flags = {flag.name: flag for flag in x509.ReasonFlags}
    for serial, reason in rows:
        if reason == "valid":
            assert stored[serial] is None
        else:
            expected = encode_entry(int(serial, 16), revoked_at, flags.get(reason or ""))
            assert bytes(stored[serial]) == expected
    db.dispose()
