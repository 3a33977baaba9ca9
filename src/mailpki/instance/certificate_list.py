"""`mailpki certs list`: the certificates of an instance, read without opening it whole."""

from __future__ import annotations

from pathlib import Path

from mailpki.ca.listing import CertificateInfo, list_certificates_quick
from mailpki.instance.layout import load_initialised
from mailpki.store.quick_read import sqlite_file


def list_certificates(
    home: Path,
    *,
    limit: int | None = None,
    email: str | None = None,
    include_ca: bool = False,
) -> tuple[list[CertificateInfo], int]:
    """Newest first; returns (page, total). An instance on a plain SQLite file is read in
    plain SQL (no SQLAlchemy, no key: the command starts in a fraction of a second); any
    other database through `Instance.list_certificates` (its replica while healthy)."""
    config = load_initialised(home)
    database = sqlite_file(config.database_url)
    if database is not None and not config.get("database.read_url"):
        return list_certificates_quick(database, limit=limit, email=email, include_ca=include_ca)
    from mailpki.instance.instance import Instance

    return Instance(config).list_certificates(limit=limit, email=email, include_ca=include_ca)
