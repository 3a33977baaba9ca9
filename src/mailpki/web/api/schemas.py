"""The JSON shapes of the API, as pydantic models (they make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mailpki.ca.listing import CertificateInfo
from mailpki.ca.serials import show_serial
from mailpki.directory.entry import DirectoryEntry
from mailpki.enrollment.requests import RequestView
from mailpki.instance.expiry import ExpiringCertificate as ExpiringRow


class ErrorDetail(BaseModel):
    code: str = Field(description="A stable, machine-readable code, e.g. not_found.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorBody(BaseModel):
    """Every error of the API has this shape."""

    error: ErrorDetail


class Person(BaseModel):
    login: str
    directory: str
    mail: str | None
    display_name: str | None
    given_name: str | None
    surname: str | None
    organisation: str | None
    site: str | None
    enabled: bool

    @classmethod
    def of(cls, entry: DirectoryEntry) -> Person:
        return cls(
            login=entry.login,
            directory=entry.directory,
            mail=entry.mail,
            display_name=entry.display_name,
            given_name=entry.given_name,
            surname=entry.surname,
            organisation=entry.organisation,
            site=entry.site,
            enabled=entry.enabled,
        )


class Certificate(BaseModel):
    serial: str = Field(
        description="Upper-case hex zero-padded to 32 digits, as `mailpki certs list` prints it."
    )
    subject: str
    email: str | None
    profile: str
    status: Literal["valid", "revoked", "expired"]
    not_before: datetime
    not_after: datetime
    revoked_at: datetime | None
    reason: str | None

    @classmethod
    def of(cls, info: CertificateInfo) -> Certificate:
        return cls(
            serial=show_serial(info.serial),
            subject=info.subject,
            email=info.email,
            profile=info.profile,
            status=info.status,  # type: ignore[arg-type]
            not_before=info.not_before,
            not_after=info.not_after,
            revoked_at=info.revoked_at,
            reason=info.reason,
        )


class CertificatePage(BaseModel):
    items: list[Certificate]
    total: int = Field(description="How many match, over all pages.")
    offset: int
    limit: int


class ExpiringCertificate(BaseModel):
    """A certificate that expires soon, as `mailpki certs expiring` lists it."""

    serial: str = Field(description="Hex, as `mailpki certs list` prints it (32 digits).")
    email: str
    profile: str
    not_after: datetime
    days_left: int = Field(description="Whole days until not_after (0: less than a day).")
    renewed: bool = Field(description="Already renewed: a successor supersedes it.")
    renewed_by: str | None = Field(description="The successor's serial, if renewed.")

    @classmethod
    def of(cls, row: ExpiringRow, now: datetime) -> ExpiringCertificate:
        return cls(
            serial=show_serial(row.serial),
            email=row.email,
            profile=row.profile,
            not_after=row.not_after,
            days_left=max(0, (row.not_after - now).days),
            renewed=row.renewed_by is not None,
            renewed_by=show_serial(row.renewed_by) if row.renewed_by else None,
        )


class ExpiringPage(BaseModel):
    items: list[ExpiringCertificate] = Field(description="Soonest first.")
    within: int = Field(description="The days from now this page looks ahead.")
    total: int = Field(description="How many match, over all pages.")
    offset: int
    limit: int


class RenewalNotice(BaseModel):
    """The renewal notice queued for a person (no key, no certificate, no password)."""

    serial: str = Field(
        description="The certificate the person's renewal replaces (for a dual-key pair, "
        "its encryption half), as `mailpki certs list` prints it."
    )
    email: str = Field(description="Where the notice goes.")
    not_after: datetime
    days_left: int
    link: bool = Field(
        description="The notice carries a one-time renewal link (false: it points at the "
        "portal, as no directory entry could be found to bind a link to)."
    )
    queued: bool = Field(description="The mail waits in the outbox, which sends it.")
    note: str | None


class Revocation(BaseModel):
    model_config = ConfigDict(extra="forbid")

    reason: str = Field(
        default="unspecified",
        max_length=40,
        description="RFC 5280 reason: keyCompromise, affiliationChanged, superseded, …",
    )


Login = Annotated[str, StringConstraints(min_length=1, max_length=320, pattern=r"\S")]


class InvitationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    logins: list[Login] = Field(
        min_length=1,
        max_length=50_000,
        description="Directory logins (or mail addresses) of the people to invite.",
    )
    resend: bool = Field(default=False, description="Replace an open invitation link.")


class InvitationReport(BaseModel):
    invited: int
    queued: int = Field(
        description="Invitation mails queued by this call; the server's outbox sends them."
    )
    errors: list[str] = Field(description="One line per person who was not invited, and why.")
    notes: list[str]


class EnrollmentRequest(BaseModel):
    id: int
    login: str
    directory: str
    mail: str | None
    state: str
    reasons: list[str]
    created_at: datetime
    decided_at: datetime | None
    decided_by: str | None
    note: str | None

    @classmethod
    def of(cls, view: RequestView) -> EnrollmentRequest:
        return cls(
            id=view.id,
            login=view.login,
            directory=view.directory,
            mail=view.mail,
            state=view.state,
            reasons=list(view.reasons),
            created_at=view.created_at,
            decided_at=view.decided_at,
            decided_by=view.decided_by,
            note=view.note,
        )


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(default="", max_length=1000)


class Recovery(BaseModel):
    """One key recovery, as the recovery service reports it."""

    model_config = ConfigDict(extra="allow")


class Witness(BaseModel):
    name: str
    location: str
    independent: bool = Field(
        description="False when the instance's administrator could rewrite it."
    )
    last_seq: int = Field(description="The last record this witness saw sealed.")


class AuditStatus(BaseModel):
    checked_at: datetime
    intact: bool
    records: int
    checkpoints: int
    problems: list[str]
    witnesses: list[Witness]
