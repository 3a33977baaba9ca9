"""The console's people and certificates: search, a person's page, revocation.

Search text goes to the directories as data (their adapters escape LDAP filters and SQL
LIKE patterns) and to the certificate store as a bound parameter: a serial (hex), a
mail address or the start of a name, login or mail all work, and no character of it is
ever read as syntax.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from sqlalchemy import func, or_, select

from mailpki.ca.crl import parse_reason
from mailpki.ca.listing import CertificateInfo
from mailpki.ca.serials import parse_serial
from mailpki.directory.entry import DirectoryEntry
from mailpki.errors import InputError, MailPKIError, NotFoundError
from mailpki.instance.console_access import ConsoleUser, require
from mailpki.instance.console_overview import forget_certificate_figures
from mailpki.instance.instance import Instance
from mailpki.policy.operator_roles import Permission
from mailpki.store.models import AuditRecord, EscrowedKey, Invitation

__all__ = [
    "AuditLine",
    "InvitationLine",
    "PersonPage",
    "SearchResult",
    "certificate",
    "owner_login",
    "person_page",
    "revoke",
    "search",
]

MAX_QUERY = 100
PEOPLE_LIMIT = 50
CERTIFICATE_LIMIT = 100
TRAIL_LIMIT = 50
# A person's page searches the newest TRAIL_WINDOW records of the log for their trail
# (the search reads the records' text, which no index serves); the whole log is searched
# when asked (`whole_log`), which takes about a second per million records.
TRAIL_WINDOW = 20_000
_SERIAL_RE = re.compile(r"(0x)?[0-9A-Fa-f:]{8,64}")
_MAIL_RE = re.compile(r"[^@\s]{1,64}@[^@\s]{1,255}")


@dataclass(frozen=True)
class SearchResult:
    query: str
    people: list[DirectoryEntry]
    certificates: list[CertificateInfo]
    notes: list[str]


def _clean_query(text: str) -> str:
    query = text.strip()
    if not query:
        raise InputError("type a name, mail address, login or serial number to search for")
    if len(query) > MAX_QUERY:
        raise InputError(f"the search text is longer than {MAX_QUERY} characters")
    if any(ord(c) < 32 or ord(c) == 127 for c in query):
        raise InputError("the search text has control characters")
    return query


def search(instance: Instance, user: ConsoleUser | None, text: str) -> SearchResult:
    """People whose name, login or mail starts with `text`; certificates whose serial or
    mail address is `text`."""
    require(user, Permission.READ_PEOPLE)
    query = _clean_query(text)
    notes: list[str] = []
    certificates: list[CertificateInfo] = []
    if _SERIAL_RE.fullmatch(query):
        with contextlib.suppress(InputError, NotFoundError):  # hex-looking, but no serial
            certificates.append(instance.ca.get(parse_serial(query)))
    if _MAIL_RE.fullmatch(query):
        page, _ = instance.ca.list_certificates(limit=CERTIFICATE_LIMIT, email=query)
        certificates.extend(c for c in page if c.serial not in {x.serial for x in certificates})
    try:
        people = instance.directories.search(query, limit=PEOPLE_LIMIT)
    except InputError:
        raise
    except MailPKIError as exc:  # one directory down: say so, show the certificates
        people = []
        notes.append(f"the directory did not answer: {_first_line(exc)}")
    return SearchResult(query, people, certificates, notes)


@dataclass(frozen=True)
class InvitationLine:
    created_at: datetime
    expires_at: datetime
    state: str  # used, revoked, expired, open


@dataclass(frozen=True)
class AuditLine:
    seq: int
    time: str
    event: str
    actor: str
    data: str


@dataclass(frozen=True)
class PersonPage:
    entry: DirectoryEntry
    certificates: list[CertificateInfo]
    escrow: dict[str, str]  # serial -> escrow state
    invitations: list[InvitationLine]
    trail: list[AuditLine]
    # The lowest record searched: 1 when the whole log was, else where the window began.
    trail_from: int = 1


def person_page(
    instance: Instance, user: ConsoleUser | None, login: str, *, whole_log: bool = False
) -> PersonPage:
    require(user, Permission.READ_PEOPLE)
    if not login or len(login) > 256 or any(ord(c) < 32 for c in login):
        raise NotFoundError("no such person")
    entry = instance.directories.find_by_login(login)
    if entry is None:
        raise NotFoundError(f"no person with the login {login!r} in the directories")
    mail = (entry.mail or "").strip()
    certificates: list[CertificateInfo] = []
    if mail:
        certificates, _ = instance.ca.list_certificates(limit=CERTIFICATE_LIMIT, email=mail)
    with instance.db.session() as session:
        escrow = {
            serial: state
            for serial, state in session.execute(
                select(EscrowedKey.serial, EscrowedKey.state).where(
                    EscrowedKey.serial.in_([c.serial for c in certificates])
                )
            )
        }
        rows = session.scalars(
            select(Invitation)
            .where(Invitation.login == entry.login, Invitation.directory == entry.directory)
            .order_by(Invitation.id.desc())
            .limit(20)
        ).all()
        invitations = [_invitation_line(row) for row in rows]
        # The person's trail: records they caused, and records naming their mail or login.
        wanted = [AuditRecord.actor.endswith(f":{entry.login}", autoescape=True)]
        if mail:
            wanted.append(AuditRecord.data.contains(json.dumps(mail), autoescape=True))
        wanted.append(AuditRecord.data.contains(json.dumps(entry.login), autoescape=True))
        newest = int(session.scalar(select(func.max(AuditRecord.seq))) or 0)
        trail_from = 1 if whole_log else max(1, newest - TRAIL_WINDOW + 1)
        trail = [
            AuditLine(r.seq, r.time, r.event, r.actor, r.data)
            for r in session.scalars(
                select(AuditRecord)
                .where(AuditRecord.seq >= trail_from, or_(*wanted))
                .order_by(AuditRecord.seq.desc())
                .limit(TRAIL_LIMIT)
            )
        ]
    return PersonPage(entry, certificates, escrow, invitations, trail, trail_from)


def _invitation_line(row: Invitation) -> InvitationLine:
    if row.used_at is not None:
        state = "used"
    elif row.revoked_at is not None:
        state = "replaced"
    elif row.expires_at <= datetime.now(UTC):
        state = "expired"
    else:
        state = "open"
    return InvitationLine(row.created_at, row.expires_at, state)


def certificate(instance: Instance, user: ConsoleUser | None, serial: str) -> CertificateInfo:
    require(user, Permission.READ_CERTIFICATES)
    return instance.ca.get(parse_serial(serial))


def owner_login(instance: Instance, info: CertificateInfo) -> str | None:
    """The login of the person a certificate belongs to, when the directory knows them."""
    if not info.email:
        return None
    try:
        entry = instance.directories.find_by_mail(info.email)
    except MailPKIError:
        return None
    return entry.login if entry is not None else None


def revoke(
    instance: Instance, user: ConsoleUser | None, serial: str, reason: str
) -> CertificateInfo:
    """Revoke a certificate for `reason` (OCSP answers at once; the next CRL carries it);
    audited with the operator's name. Nobody revokes their own certificate here."""
    operator = require(user, Permission.REVOKE)
    number = parse_serial(serial)
    flag = parse_reason(reason)
    if flag in (x509.ReasonFlags.remove_from_crl, x509.ReasonFlags.certificate_hold):
        raise InputError(f"the reason {reason!r} is not used for S/MIME certificates")
    info = instance.ca.get(number)
    if operator.mail and info.email and info.email.lower() == operator.mail.lower():
        raise InputError("you cannot revoke your own certificate here: another operator must")
    revoked = instance.ca.revoke(number, flag, actor=operator.actor)
    forget_certificate_figures(instance)  # the dashboard counts it at once
    instance.publish_pending()
    instance.seal()
    return revoked


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]
