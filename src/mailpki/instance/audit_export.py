"""`mailpki audit export`: the log, its checkpoints, public keys and witness copy, as a
folder an auditor verifies on another machine (`mailpki audit verify --bundle`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select

from mailpki.audit.bundle import RECORD_FIELDS, write_bundle
from mailpki.audit.log import HEAD_ID
from mailpki.audit.witness import SignedCheckpoint
from mailpki.errors import MailPKIError
from mailpki.instance.audit_witnesses import krs_copy_rows
from mailpki.instance.instance import Instance
from mailpki.store.models import AuditCheckpoint, AuditHead, AuditRecord

__all__ = ["export_audit"]

_BATCH = 1000


def export_audit(instance: Instance, out: Path) -> int:
    """Write the bundle folder ``out``; returns the number of records written."""
    keys = instance.audit_keys()
    try:
        krs: list[dict[str, Any]] | None = krs_copy_rows(instance, keys)
    except MailPKIError:
        krs = None  # unreachable: the auditor brings their own copies anyway
    with instance.db.session() as session:
        head_row = session.get(AuditHead, HEAD_ID)
        head = None if head_row is None else (int(head_row.seq), head_row.hash)
        checkpoints = [
            SignedCheckpoint.of(row)
            for row in session.scalars(select(AuditCheckpoint).order_by(AuditCheckpoint.seq))
        ]

        def records() -> Iterator[dict[str, Any]]:
            query = select(*(getattr(AuditRecord, f) for f in RECORD_FIELDS)).order_by(
                AuditRecord.seq
            )
            for row in session.execute(query.execution_options(yield_per=_BATCH)):
                yield dict(zip(RECORD_FIELDS, row, strict=True))

        return write_bundle(
            out,
            keys=keys,
            head=head,
            records=records(),
            checkpoints=checkpoints,
            krs_copy=krs,
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
