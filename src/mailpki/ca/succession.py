"""Certificate succession: a renewal supersedes the certificate it replaces.

The superseded certificate is NOT revoked (mail encrypted to it must stay readable and
its signatures valid): it is marked with its successor's serial and withdrawn from the
directory. Superseding is a conditional update in the transaction that stores the
successor, so of two renewals of one certificate exactly one wins; if the successor is
later revoked because its key was never delivered, `restore` undoes the mark.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog
from mailpki.ca.authority import ISSUED_BY_ISSUING, CertificateAuthority
from mailpki.ca.listing import OCSP_PROFILE, utc
from mailpki.errors import NotFoundError, RenewalRefused
from mailpki.policy.roles import ADMIN_PROFILE
from mailpki.store.models import CertificateRecord

# Certificates that are not a person's mail certificate: never renewed or noticed here.
NOT_RENEWED = (OCSP_PROFILE, ADMIN_PROFILE)


@dataclass(frozen=True)
class CurrentCertificate:
    """A certificate that may be renewed: valid, unexpired and not yet superseded."""

    serial: str
    email: str
    subject: str
    profile: str
    not_after: datetime
    der: bytes


# A person's mail certificates, as opposed to the CA's own and administrators'.
SUBSCRIBER = (
    ISSUED_BY_ISSUING,
    CertificateRecord.profile.not_in(NOT_RENEWED),
    CertificateRecord.email.is_not(None),
)


def current_certificates(session: Session, email: str, now: datetime) -> list[CurrentCertificate]:
    """The renewable certificates of a mail address (any case), newest first.

    Refuses with a reason a person can act on when there is nothing to renew: no
    certificate at all, or only revoked, expired or already renewed ones."""
    rows = session.scalars(
        select(CertificateRecord)
        .where(*SUBSCRIBER, func.lower(CertificateRecord.email) == email.strip().lower())
        .order_by(CertificateRecord.id.desc())
    ).all()
    if not rows:
        raise NotFoundError(f"{email} has no certificate in this instance")
    current = [
        CurrentCertificate(r.serial, str(r.email), r.subject, r.profile, utc(r.not_after), r.der)
        for r in rows
        if r.status == "valid" and r.superseded_by is None and utc(r.not_after) > now
    ]
    if current:
        return current
    newest = rows[0]
    if newest.superseded_by is not None:
        raise RenewalRefused(
            f"certificate {newest.serial} of {email} was already renewed "
            f"(by {newest.superseded_by}); renew that one instead"
        )
    if newest.status == "revoked":
        raise RenewalRefused(
            f"certificate {newest.serial} of {email} is revoked: a revoked certificate "
            "is not renewed (enroll again)"
        )
    raise RenewalRefused(
        f"certificate {newest.serial} of {email} expired on {utc(newest.not_after):%Y-%m-%d}: "
        "an expired certificate is not renewed (enroll again)"
    )


def supersede(
    ca: CertificateAuthority,
    audit: AuditLog,
    session: Session,
    *,
    old_serial: str,
    new_serial: str,
    now: datetime,
    actor: str,
) -> None:
    """Mark `old_serial` as renewed by `new_serial`, in the caller's transaction (the one
    that stores the successor). Refuses if it was renewed or revoked meanwhile."""
    result = session.execute(
        update(CertificateRecord)
        .where(
            CertificateRecord.serial == old_serial,
            CertificateRecord.status == "valid",
            CertificateRecord.superseded_by.is_(None),
        )
        .values(superseded_by=new_serial, superseded_at=now)
        .execution_options(synchronize_session=False)
    )
    if int(result.rowcount) != 1:  # type: ignore[attr-defined]
        raise RenewalRefused(
            f"certificate {old_serial} was renewed or revoked meanwhile; nothing was changed"
        )
    record = session.scalar(select(CertificateRecord).where(CertificateRecord.serial == old_serial))
    assert record is not None
    audit.append(
        session,
        "cert.superseded",
        actor=actor,
        data={"serial": old_serial, "by": new_serial, "email": record.email},
    )
    for listener in ca.supersede_listeners:
        listener(session, record)


def restore(
    ca: CertificateAuthority, audit: AuditLog, session: Session, *, successor: str, actor: str
) -> list[str]:
    """Undo `supersede` for the certificates `successor` replaced (it is being revoked
    because its key never reached the person): they are current again and published."""
    records = session.scalars(
        select(CertificateRecord).where(
            CertificateRecord.superseded_by == successor, CertificateRecord.status == "valid"
        )
    ).all()
    restored: list[str] = []
    for record in records:
        record.superseded_by = None
        record.superseded_at = None
        session.flush()
        audit.append(
            session,
            "cert.restored",
            actor=actor,
            data={"serial": record.serial, "failed_successor": successor, "email": record.email},
        )
        for listener in ca.restore_listeners:
            listener(session, record)
        restored.append(record.serial)
    return restored
