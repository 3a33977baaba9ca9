"""What a listing of certificates shows, and the quick listing of the embedded database.

Kept free of cryptography and SQLAlchemy: `mailpki certs list` on an SQLite instance
reads through `list_certificates_quick` (plain SQL, `store.quick_read`), the server and
other databases through `authority.list_certificates` (SQLAlchemy). Both answer with
`CertificateInfo`, and a test holds them to the same answers.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mailpki.store.quick_read import select_rows

if TYPE_CHECKING:
    from mailpki.store.models import CertificateRecord

ROOT, ISSUING = "root", "issuing"
SELF_SIGNED = "self"  # the issuer column of a root certificate
OCSP_PROFILE = "ocsp-responder"

# Stored revocation reasons (cryptography's ReasonFlags names) in the RFC 5280 spelling
# people type and read; ca.crl holds the same table against ReasonFlags (a test checks).
RFC_REASON_NAMES: dict[str, str] = {
    "unspecified": "unspecified",
    "key_compromise": "keyCompromise",
    "ca_compromise": "cACompromise",
    "affiliation_changed": "affiliationChanged",
    "superseded": "superseded",
    "cessation_of_operation": "cessationOfOperation",
    "certificate_hold": "certificateHold",
    "remove_from_crl": "removeFromCRL",
    "privilege_withdrawn": "privilegeWithdrawn",
    "aa_compromise": "aACompromise",
}


def utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; everything mailpki stores is UTC."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def rfc_reason(stored: str | None) -> str | None:
    """A stored revocation reason as RFC 5280 names it (anything unknown as stored)."""
    return RFC_REASON_NAMES.get(stored or "", stored)


@dataclass(frozen=True)
class CertificateInfo:
    serial: str
    subject: str
    email: str | None
    profile: str
    status: str  # valid | revoked | expired
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    reason: str | None
    issuer: str
    superseded_by: str | None = None  # renewed: the serial of its successor

    @classmethod
    def from_record(cls, record: CertificateRecord, now: datetime) -> CertificateInfo:
        return cls.from_values(
            serial=record.serial,
            subject=record.subject,
            email=record.email,
            profile=record.profile,
            status=record.status,
            not_before=record.not_before,
            not_after=record.not_after,
            revoked_at=record.revoked_at,
            revocation_reason=record.revocation_reason,
            issuer=record.issuer,
            superseded_by=record.superseded_by,
            now=now,
        )

    @classmethod
    def from_values(
        cls,
        *,
        serial: str,
        subject: str,
        email: str | None,
        profile: str,
        status: str,
        not_before: datetime,
        not_after: datetime,
        revoked_at: datetime | None,
        revocation_reason: str | None,
        issuer: str,
        superseded_by: str | None,
        now: datetime,
    ) -> CertificateInfo:
        """From the stored columns: a valid certificate past its not-after is expired."""
        if status == "valid" and utc(not_after) < now:
            status = "expired"
        return cls(
            serial=serial,
            subject=subject,
            email=email,
            profile=profile,
            status=status,
            not_before=utc(not_before),
            not_after=utc(not_after),
            revoked_at=utc(revoked_at) if revoked_at else None,
            reason=rfc_reason(revocation_reason),
            issuer=issuer,
            superseded_by=superseded_by,
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "serial": self.serial,
            "subject": self.subject,
            "email": self.email,
            "profile": self.profile,
            "status": self.status,
            "not_before": self.not_before.isoformat(),
            "not_after": self.not_after.isoformat(),
            "revoked_at": self.revoked_at.isoformat() if self.revoked_at else None,
            "reason": self.reason,
            "issuer": self.issuer,
            "superseded_by": self.superseded_by,
        }


_COLUMNS = (
    "serial, subject, email, profile, status, not_before, not_after, revoked_at, "
    "revocation_reason, issuer, superseded_by"
)


def list_certificates_quick(
    database: Path,
    *,
    limit: int | None = None,
    email: str | None = None,
    include_ca: bool = False,
    offset: int = 0,
) -> tuple[list[CertificateInfo], int]:
    """`authority.list_certificates` on an SQLite file, in plain SQL: newest first, from
    `offset`; returns (page, total)."""
    conditions: list[str] = []
    params: list[object] = []
    if not include_ca:
        conditions.append("issuer NOT IN (?, ?) AND profile != ?")
        params += [ROOT, SELF_SIGNED, OCSP_PROFILE]
    if email:
        conditions.append("email = ?")
        params.append(email.lower())
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    # Only the constant fragments above are joined into the text; every value is bound.
    counted, rows = select_rows(
        database,
        (f"SELECT count(*) FROM certificates{where}", params),  # noqa: S608
        (
            f"SELECT {_COLUMNS} FROM certificates{where} "  # noqa: S608
            "ORDER BY id DESC LIMIT ? OFFSET ?",
            [*params, limit or -1, offset],
        ),
    )
    total = int(counted[0][0])
    now = datetime.now(UTC)
    return [_info(row, now) for row in rows], total


def _info(row: tuple[Any, ...], now: datetime) -> CertificateInfo:
    (serial, subject, email, profile, status, not_before, not_after, revoked_at, reason,
     issuer, superseded_by) = row  # fmt: skip
    return CertificateInfo.from_values(
        serial=serial,
        subject=subject,
        email=email,
        profile=profile,
        status=status,
        not_before=datetime.fromisoformat(not_before),
        not_after=datetime.fromisoformat(not_after),
        revoked_at=datetime.fromisoformat(revoked_at) if revoked_at else None,
        revocation_reason=reason,
        issuer=issuer,
        superseded_by=superseded_by,
        now=now,
    )
