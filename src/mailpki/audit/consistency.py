"""The log agrees with the state: every row that an action leaves has its audit record.

Deleting a record and fixing the chain around it is one thing; the certificate, the
revocation or the escrowed key that record described is still in its table. Each row
without its record is a finding:

- every certificate row: ``cert.issued`` (or, for the CA's own, ``ca.initialised`` /
  ``ca.issuing_renewed`` / ``ca.issuing_rolled_over``) naming its fingerprint;
- every revoked certificate: ``cert.revoked`` naming its serial;
- every escrowed key: ``key.escrowed`` naming its serial;
- every recovery on the Key Recovery Service: ``key.recovered`` in the service's log and
  ``key.recovered`` (or ``recovery.failed``) in the instance's log, and the reverse.

An empty or short log on an instance whose tables show activity is the extreme case.
Read-only; memory grows with the number of certificates (one fingerprint each).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailpki.audit.verify import Problem
from mailpki.store.models import AuditRecord, CertificateRecord, EscrowedKey, RecoveryRequestRecord

__all__ = ["check_instance_state", "check_recoveries"]

MAX_NAMED = 10
_BATCH = 1000


def _data(session: Session, *events: str) -> Iterator[dict[str, Any]]:
    query = select(AuditRecord.data).where(AuditRecord.event.in_(events))
    for (text,) in session.execute(query.execution_options(yield_per=_BATCH)):
        try:
            value = json.loads(text)
        except ValueError:
            continue  # a mangled record is the chain verifier's finding
        if isinstance(value, dict):
            yield value


def _finding(what: str, missing: list[str], total: int, record: str) -> Problem:
    shown = ", ".join(missing[:MAX_NAMED]) + (" …" if len(missing) > MAX_NAMED else "")
    return Problem(
        None, "unrecorded",
        f"{len(missing)} of {total} {what} have no {record} record in the audit log ({shown}): "
        "their records were deleted, or the rows were written behind the log's back",
    )  # fmt: skip


def check_instance_state(session: Session) -> list[Problem]:
    """Certificates, revocations and escrowed keys against the instance's log."""
    problems: list[Problem] = []
    records = int(session.scalar(select(func.count()).select_from(AuditRecord)) or 0)
    certificates = int(session.scalar(select(func.count()).select_from(CertificateRecord)) or 0)
    if certificates and not records:
        problems.append(
            Problem(
                None,
                "empty-log",
                f"the audit log is empty but the instance holds {certificates} certificates: "
                "the log was wiped",
            )
        )

    fingerprints: set[str] = set()
    for data in _data(session, "cert.issued", "ca.issuing_renewed"):
        fingerprints.add(str(data.get("fingerprint", "")))
    for data in _data(session, "ca.initialised", "ca.issuing_rolled_over"):
        fingerprints.update(str(v) for k, v in data.items() if k.endswith("_fingerprint"))
    missing: list[str] = []
    rows = select(CertificateRecord.serial, CertificateRecord.fingerprint).order_by(
        CertificateRecord.id
    )
    for serial, fingerprint in session.execute(rows.execution_options(yield_per=_BATCH)):
        if fingerprint not in fingerprints:
            missing.append(serial)
    del fingerprints
    if missing:
        problems.append(_finding("certificates", missing, certificates, "cert.issued"))

    revoked_serials = {str(d.get("serial", "")).upper() for d in _data(session, "cert.revoked")}
    revoked = session.scalars(
        select(CertificateRecord.serial).where(CertificateRecord.status == "revoked")
    ).all()
    missing = [s for s in revoked if s.upper() not in revoked_serials]
    if missing:
        problems.append(_finding("revocations", missing, len(revoked), "cert.revoked"))

    escrowed_serials = {str(d.get("serial", "")).upper() for d in _data(session, "key.escrowed")}
    escrowed = session.scalars(select(EscrowedKey.serial)).all()
    missing = [s for s in escrowed if s.upper() not in escrowed_serials]
    if missing:
        problems.append(_finding("escrowed keys", missing, len(escrowed), "key.escrowed"))
    return problems


def check_recoveries(instance: Session, service: Session) -> list[Problem]:
    """Every recovery the service released is recorded on both sides, and the reverse."""
    problems: list[Problem] = []
    released = set(
        service.scalars(
            select(RecoveryRequestRecord.id).where(RecoveryRequestRecord.state == "recovered")
        )
    )
    in_service_log = {str(d.get("request_id", "")) for d in _data(service, "key.recovered")}
    in_instance_log = {
        str(d.get("request_id", "")) for d in _data(instance, "key.recovered", "recovery.failed")
    }
    instance_recovered = {str(d.get("request_id", "")) for d in _data(instance, "key.recovered")}
    for label, missing, record in (
        ("recoveries released by the recovery service", released - in_service_log,
         "key.recovered record in the service's"),
        ("recoveries released by the recovery service", released - in_instance_log,
         "key.recovered (or recovery.failed) record in the instance's"),
        ("recoveries in the instance's log", instance_recovered - released,
         "released request on the recovery service, nor its"),
    ):  # fmt: skip
        if missing:
            names = sorted(missing)
            total = (
                len(released)
                if label.startswith("recoveries released")
                else len(instance_recovered)
            )
            problems.append(_finding(label, names, total, record))
    return problems
