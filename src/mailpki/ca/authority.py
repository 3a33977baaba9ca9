"""The certificate authority: issue, revoke, CRLs and OCSP status, all audited.

Every state change and its audit record are written in one transaction: if the
audit record cannot be written, the change does not happen.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import LargeBinary, String, bindparam, cast, func, literal, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from sqlalchemy.sql.expression import ColumnElement

from mailpki.audit import AuditLog
from mailpki.ca.crl import assemble_crl, encode_entry
from mailpki.ca.csr import load_csr
from mailpki.ca.lint import Linter
from mailpki.ca.listing import (
    ISSUING,
    OCSP_PROFILE,
    ROOT,
    SELF_SIGNED,
    CertificateInfo,
    rfc_reason,
    utc,
)
from mailpki.ca.ocsp import CertStatus, OCSPResponder, issuer_hashes
from mailpki.ca.presigned import PresignedResponses
from mailpki.ca.serials import new_serial, to_hex
from mailpki.ca.settings import (
    ROOT_CRL,
    CASettings,
    crl_scope,
    full_crl_name,
    issuing_label,
    partition_crl_name,
)
from mailpki.ca.signing import lint_for_signing
from mailpki.errors import (
    CAError,
    KeyStoreError,
    MailPKIError,
    NotFoundError,
    RevocationError,
    StoreError,
)
from mailpki.keystore.keys import CAPrivateKey, KeyStore
from mailpki.policy.certificate import build_certificate
from mailpki.policy.keys import check_public_key
from mailpki.policy.person import Person
from mailpki.policy.profile import Profile, load_profile
from mailpki.policy.roles import ADMIN_PROFILE
from mailpki.store.db import Database
from mailpki.store.models import CertificateRecord, CRLRecord, SerialReservation

log = logging.getLogger(__name__)


# Certificates signed by an issuing CA of any generation (not the root's, not the root).
_REASON_FLAGS = {flag.name: flag for flag in x509.ReasonFlags}  # stored name -> flag
ISSUED_BY_ISSUING = CertificateRecord.issuer.not_in((ROOT, SELF_SIGNED))


@dataclass(frozen=True)
class CAHierarchy:
    """The root, the current issuing CA (new certificates come from it) and its
    delegated OCSP responder; `earlier` holds the issuing CAs of older generations,
    oldest first, which still sign the CRLs of the certificates they issued."""

    root: x509.Certificate
    issuing: x509.Certificate
    ocsp: x509.Certificate
    earlier: tuple[x509.Certificate, ...] = ()
    earlier_ocsp: tuple[x509.Certificate, ...] = ()  # their responders, same order

    @property
    def generation(self) -> int:
        return len(self.earlier) + 1

    @property
    def label(self) -> str:
        """The label (key name, `issuer` value, CRL prefix) of the current issuing CA."""
        return issuing_label(self.generation)

    @property
    def generations(self) -> list[tuple[str, x509.Certificate]]:
        """(label, certificate) of every issuing CA, oldest first."""
        certificates = (*self.earlier, self.issuing)
        return [(issuing_label(n + 1), c) for n, c in enumerate(certificates)]

    def responder_of(self, label: str) -> x509.Certificate:
        """The delegated OCSP responder certificate signed by the issuing CA `label`."""
        responders = (*self.earlier_ocsp, self.ocsp)
        for (known, _), responder in zip(self.generations, responders, strict=True):
            if known == label:
                return responder
        raise NotFoundError(f"there is no issuing CA {label!r} in this instance")

    def issuer_of(self, certificate: x509.Certificate) -> x509.Certificate:
        """The issuing CA (of whichever generation) that signed `certificate`; the
        current one when none matches by name."""
        for _, issuing in reversed(self.generations):
            if issuing.subject == certificate.issuer:
                return issuing
        return self.issuing

    def chain_of(self, certificate: x509.Certificate) -> list[x509.Certificate]:
        """The CA certificates above `certificate`: its issuing CA, then the root."""
        return [self.issuer_of(certificate), self.root]

    def issuing_of(self, label: str) -> x509.Certificate:
        for known, certificate in self.generations:
            if known == label:
                return certificate
        raise NotFoundError(f"there is no issuing CA {label!r} in this instance")


@dataclass(frozen=True)
class IssuedCertificate:
    certificate: x509.Certificate
    serial: str
    profile: str
    partition: int


@dataclass(frozen=True)
class CRLInfo:
    name: str
    number: int
    entries: int
    this_update: datetime
    next_update: datetime
    der: bytes


def reserve_serial(db: Database, issuer: str) -> tuple[int, int]:
    """Persist a fresh serial (committed) before anything is signed with it."""
    for _ in range(5):
        serial = new_serial()
        try:
            with db.transaction() as session:
                reservation = SerialReservation(
                    serial=to_hex(serial), issuer=issuer, reserved_at=datetime.now(UTC)
                )
                session.add(reservation)
                session.flush()
                return serial, reservation.id
        except MailPKIError:
            continue  # a collision of 127 random bits: try another
    raise CAError("could not reserve a unique serial number")


_SHORT_NAMES = {
    NameOID.GIVEN_NAME: "GN",
    NameOID.SURNAME: "SN",
    NameOID.ORGANIZATION_IDENTIFIER: "organizationIdentifier",
    NameOID.PSEUDONYM: "pseudonym",
}


def display_name(name: x509.Name) -> str:
    """RFC 4514 with readable names for the attributes cryptography prints as OIDs."""
    return name.rfc4514_string(_SHORT_NAMES)


def certificate_record(
    certificate: x509.Certificate,
    *,
    issuer: str,
    profile: str,
    email: str | None,
    partition: int,
) -> CertificateRecord:
    der = certificate.public_bytes(Encoding.DER)
    return CertificateRecord(
        serial=to_hex(certificate.serial_number),
        issuer=issuer,
        subject=display_name(certificate.subject),
        email=email,
        profile=profile,
        not_before=certificate.not_valid_before_utc,
        not_after=certificate.not_valid_after_utc,
        fingerprint=hashlib.sha256(der).hexdigest(),
        der=der,
        status="valid",
        crl_partition=partition,
        created_at=datetime.now(UTC),
    )


def list_certificates(
    db: Database,
    *,
    limit: int | None = None,
    email: str | None = None,
    include_ca: bool = False,
    offset: int = 0,
) -> tuple[list[CertificateInfo], int]:
    """Newest first, from `offset`; returns (page, total). Needs no CA key: `certs list`
    and the API's list read through this (from the replica while it is healthy)."""
    query = select(CertificateRecord)
    count = select(func.count()).select_from(CertificateRecord)
    if not include_ca:
        subscribers = ISSUED_BY_ISSUING & (CertificateRecord.profile != OCSP_PROFILE)
        query = query.where(subscribers)
        count = count.where(subscribers)
    if email:
        query = query.where(CertificateRecord.email == email.lower())
        count = count.where(CertificateRecord.email == email.lower())
    query = query.order_by(CertificateRecord.id.desc())
    if limit:
        query = query.limit(limit)
    if offset:
        query = query.offset(offset)
    now = datetime.now(UTC)
    with db.lookup() as session:
        records = list(session.scalars(query))
        if (not limit or len(records) < limit) and (records or not offset):
            # The page holds the last row: it tells the total, and a lookup by mail (one
            # person's few certificates) is one query, not two.
            total = offset + len(records)
        else:
            total = session.scalar(count) or 0
        return [CertificateInfo.from_record(r, now) for r in records], total


# Built once: OCSP looks a status up on every request.
_STATUS_QUERY = select(
    CertificateRecord.status, CertificateRecord.revoked_at, CertificateRecord.revocation_reason
).where(
    CertificateRecord.serial == bindparam("serial"),
    CertificateRecord.issuer == bindparam("issuer"),
)


def _unindexed(column: Any) -> Any:
    """`column || ''`: the same value, but no index on the column can serve the
    condition. Used next to a selective one (a mail address): SQLite without planner
    statistics (never ANALYZEd) otherwise picks the status index and walks every valid
    certificate."""
    return column.op("||")(literal(""))


# Built once: the certificate directory looks a mail address up on every request.
_VALID_QUERY = (
    select(CertificateRecord.der)
    .where(
        func.lower(CertificateRecord.email) == bindparam("email", type_=String()),
        ISSUED_BY_ISSUING,
        CertificateRecord.profile.not_in((OCSP_PROFILE, ADMIN_PROFILE)),
        _unindexed(CertificateRecord.status) == "valid",
        _unindexed(CertificateRecord.superseded_by).is_(None),
        CertificateRecord.not_after > bindparam("now"),
    )
    .order_by(CertificateRecord.id.desc())
)


class CertificateAuthority:
    """The issuing CA (and the root's CRL) of one instance."""

    def __init__(
        self,
        *,
        db: Database,
        keys: KeyStore,
        hierarchy: CAHierarchy,
        settings: CASettings,
        audit: AuditLog,
        linter: Linter | None = None,
        read_db: Callable[[], Database] | None = None,
    ) -> None:
        self.db = db
        # Where reads that may lag a little go (OCSP lookups; the callers of the reading
        # methods below pass it as `db`): a replica while healthy (store/replica.py).
        self.read_db: Callable[[], Database] = read_db or (lambda: self.db)
        self.keys = keys
        self.hierarchy = hierarchy
        self.settings = settings
        self.audit = audit
        self._linter = linter
        self._issuing_keys: dict[str, CAPrivateKey] = {}
        self._responder: OCSPResponder | None = None
        self._later_responders: dict[str, OCSPResponder] = {}
        self._presigned: PresignedResponses | None = None
        self._profiles: dict[str, Profile] = {}
        # Called inside the transaction that stores an issued / revoked subscriber
        # certificate (the directory publisher queues its job there).
        self.issue_listeners: list[Callable[[Session, CertificateRecord], None]] = []
        self.revoke_listeners: list[Callable[[Session, CertificateRecord], None]] = []
        # Called when a renewal supersedes a certificate (it stays valid but is
        # withdrawn from the directory), and when a failed renewal restores it.
        self.supersede_listeners: list[Callable[[Session, CertificateRecord], None]] = []
        self.restore_listeners: list[Callable[[Session, CertificateRecord], None]] = []

    # -- keys and helpers -------------------------------------------------------------

    @property
    def linter(self) -> Linter:
        if self._linter is None:
            self._linter = Linter()
        return self._linter

    def prepare(self, profiles: Sequence[str | None]) -> None:
        """Load the issuing key and build the linters of `profiles` ahead of the first
        issue (a server does it at start-up, so no person waits for it)."""
        _ = self.issuing_key
        for name in profiles:
            self.linter.prepare(self.profile(name).lint_type)

    @property
    def issuing_key(self) -> CAPrivateKey:
        """The key of the current issuing CA (the one new certificates come from)."""
        return self.key_of(self.hierarchy.label)

    def key_of(self, label: str) -> CAPrivateKey:
        """The key of the issuing CA `label` (an older generation signs its own CRLs)."""
        if label not in self._issuing_keys:
            self._issuing_keys[label] = self.keys.load(label)
        return self._issuing_keys[label]

    def profile(self, name: str | None) -> Profile:
        """The named (or default) profile, read once per CA object: a long-running
        server picks up edited profile files when it restarts."""
        key = name or self.settings.default_profile
        if key not in self._profiles:
            self._profiles[key] = load_profile(key, self.settings.profile_dir)
        return self._profiles[key]

    def _refuse(self, error: MailPKIError, *, actor: str, **data: Any) -> MailPKIError:
        """Record a refusal in its own transaction; the caller raises the error."""
        with self.db.transaction() as session:
            self.audit.append(
                session, "cert.refused", actor=actor, data={**data, "reason": str(error)}
            )
        return error

    # -- issuing ------------------------------------------------------------------------

    def issue_from_csr(
        self, csr_data: bytes, person: Person, *, profile: str | None = None, actor: str
    ) -> IssuedCertificate:
        """Issue for the public key of a CSR; nothing else of the CSR is used."""
        try:
            csr = load_csr(csr_data)
        except MailPKIError as exc:
            raise self._refuse(exc, actor=actor, email=person.email, step="csr") from None
        return self.issue_for_key(csr.public_key(), person, profile=profile, actor=actor)

    def issue_for_key(
        self,
        public_key: CertificatePublicKeyTypes,
        person: Person,
        *,
        profile: str | None = None,
        actor: str,
        within: Callable[[Session, x509.Certificate, str], None] | None = None,
        extra_policy_oids: tuple[str, ...] = (),
    ) -> IssuedCertificate:
        """The numbered steps of one issuance; any failure leaves no certificate.

        `within(session, certificate, serial_hex)` runs inside the transaction that
        stores the certificate: the Key Manager writes the key recovery block there,
        so a certificate for a central key never exists without its escrow record.
        """
        # 1. The profile and the key must be acceptable before anything is reserved.
        try:
            chosen = self.profile(profile)
            if extra_policy_oids:  # e.g. an administrator's role (policy/roles.py)
                chosen = replace(chosen, policy_oids=chosen.policy_oids + extra_policy_oids)
            check_public_key(chosen, public_key)
        except MailPKIError as exc:
            raise self._refuse(
                exc, actor=actor, email=person.email, profile=profile or "", step="policy"
            ) from None
        # 2. Persist the serial before signing (it is never reused, even if we fail below).
        label = self.hierarchy.label
        serial, reservation_id = reserve_serial(self.db, label)
        partition = self.settings.partition_of(reservation_id)
        # 3. Shape the certificate from the profile alone.
        builder = build_certificate(
            chosen,
            person,
            public_key,
            issuer=self.hierarchy.issuing,
            serial=serial,
            now=datetime.now(UTC),
            urls=self.settings.urls_for_partition(partition, label),
        )
        # 4. Lint what would be signed; a finding refuses issuance.
        try:
            token = lint_for_signing(
                builder, key=self.issuing_key, linter=self.linter, lint_type=chosen.lint_type
            )
        except MailPKIError as exc:
            raise self._refuse(
                exc,
                actor=actor,
                email=person.email,
                profile=chosen.name,
                step="lint",
                serial=to_hex(serial),
            ) from None
        # 5. Sign with the single-use token, then store + audit in one transaction.
        certificate = token.sign(self.issuing_key)
        record = certificate_record(
            certificate,
            issuer=label,
            profile=chosen.name,
            email=person.email,
            partition=partition,
        )
        with self.db.transaction() as session:
            session.add(record)
            self.audit.append(
                session,
                "cert.issued",
                actor=actor,
                data={
                    "serial": record.serial,
                    "subject": record.subject,
                    "email": person.email,
                    "profile": chosen.name,
                    "fingerprint": record.fingerprint,
                    "not_after": record.not_after.isoformat(),
                },
            )
            if within is not None:
                within(session, certificate, record.serial)
            for listener in self.issue_listeners:
                listener(session, record)
        if self._responder is not None:
            self._responder.invalidate(serial)  # it may have cached "unknown" for this serial
        return IssuedCertificate(certificate, record.serial, chosen.name, partition)

    # -- reading ------------------------------------------------------------------------

    def get(self, serial: int) -> CertificateInfo:
        with self.db.session() as session:
            record = session.scalar(
                select(CertificateRecord).where(CertificateRecord.serial == to_hex(serial))
            )
            if record is None:
                raise NotFoundError(f"no certificate with serial {to_hex(serial)} in this instance")
            return CertificateInfo.from_record(record, datetime.now(UTC))

    def certificate_der(self, serial: int) -> bytes:
        with self.db.session() as session:
            der = session.scalar(
                select(CertificateRecord.der).where(CertificateRecord.serial == to_hex(serial))
            )
        if der is None:
            raise NotFoundError(f"no certificate with serial {to_hex(serial)} in this instance")
        return der

    def certificate_der_by_fingerprint(self, sha256_hex: str) -> bytes | None:
        """The certificate whose DER has this SHA-256 (hex), if this instance issued it."""
        with self.db.session() as session:
            return session.scalar(
                select(CertificateRecord.der).where(
                    CertificateRecord.fingerprint == sha256_hex.lower()
                )
            )

    def list_certificates(
        self,
        *,
        limit: int | None = None,
        email: str | None = None,
        include_ca: bool = False,
        offset: int = 0,
        db: Database | None = None,
    ) -> tuple[list[CertificateInfo], int]:
        """Newest first, from `offset`; returns (page, total). Read from `db` (a search
        may pass the replica, `read_db()`), else the primary."""
        return list_certificates(
            db or self.db, limit=limit, email=email, include_ca=include_ca, offset=offset
        )

    def valid_certificates(self, email: str, *, db: Database | None = None) -> list[bytes]:
        """DER of the unrevoked, unexpired, not superseded subscriber certificates of a
        mail address in any case, newest first: what the public certificate directory
        may publish. Read from `db` (the directory passes `read_db()`), else the primary:
        publishers acting on a change just made must see it.

        Admin certificates are left out: their policy OIDs name recovery roles.
        """
        # The local part is stored as given: match lower(email), which has an index.
        with (db or self.db).lookup() as session:
            return list(
                session.scalars(_VALID_QUERY, {"email": email.lower(), "now": datetime.now(UTC)})
            )

    def valid_certificates_of(self, emails: Iterable[str]) -> dict[str, list[bytes]]:
        """valid_certificates for many mail addresses at once, by lower-case address
        (addresses with none are left out): a query per thousand addresses."""
        wanted = sorted({email.lower() for email in emails if email})
        found: dict[str, list[bytes]] = {}
        now = datetime.now(UTC)
        with self.db.session() as session:
            for first in range(0, len(wanted), 1000):
                query = (
                    select(func.lower(CertificateRecord.email), CertificateRecord.der)
                    .where(
                        func.lower(CertificateRecord.email).in_(wanted[first : first + 1000]),
                        ISSUED_BY_ISSUING,
                        CertificateRecord.profile.not_in((OCSP_PROFILE, ADMIN_PROFILE)),
                        _unindexed(CertificateRecord.status) == "valid",
                        _unindexed(CertificateRecord.superseded_by).is_(None),
                        CertificateRecord.not_after > now,
                    )
                    .order_by(CertificateRecord.id.desc())
                )
                for email, der in session.execute(query):
                    found.setdefault(str(email), []).append(der)
        return found

    def subscriber_addresses(self) -> list[str]:
        """The mail addresses (lower case, sorted) that have a valid subscriber certificate."""
        query = (
            select(func.lower(CertificateRecord.email))
            .where(
                CertificateRecord.email.is_not(None),
                ISSUED_BY_ISSUING,
                CertificateRecord.profile.not_in((OCSP_PROFILE, ADMIN_PROFILE)),
                CertificateRecord.status == "valid",
                CertificateRecord.not_after > datetime.now(UTC),
            )
            .distinct()
        )
        with self.db.session() as session:
            return sorted(str(email) for email in session.scalars(query))

    # -- revocation ---------------------------------------------------------------------

    def revoke(
        self,
        serial: int,
        reason: x509.ReasonFlags,
        *,
        actor: str,
        within: Callable[[Session], None] | None = None,
    ) -> CertificateInfo:
        """Revoke; `within(session)` runs in the same transaction (e.g. the escrow state)."""
        serial_hex = to_hex(serial)
        now = datetime.now(UTC)
        with self.db.transaction() as session:
            record = session.scalar(
                select(CertificateRecord)
                .where(CertificateRecord.serial == serial_hex)
                .with_for_update()
            )
            if record is None:
                raise NotFoundError(f"no certificate with serial {serial_hex} in this instance")
            if record.status == "revoked":
                raise RevocationError(
                    f"certificate {serial_hex} was already revoked on "
                    f"{utc(record.revoked_at or now):%Y-%m-%d %H:%M} UTC "
                    f"({rfc_reason(record.revocation_reason)})"
                )
            record.status = "revoked"
            record.revoked_at = now
            record.revocation_reason = reason.name
            # Encoded once, here: every later CRL only copies these bytes.
            record.crl_entry_der = encode_entry(serial, now, reason)
            session.flush()
            self.audit.append(
                session,
                "cert.revoked",
                actor=actor,
                data={"serial": serial_hex, "reason": reason.name, "email": record.email},
            )
            if within is not None:
                within(session)
            for listener in self.revoke_listeners:
                listener(session, record)
            info = CertificateInfo.from_record(record, now)
            issuer = record.issuer
        if self._responder is not None:
            self._responder.invalidate(serial)
        if issuer == ISSUING:
            try:
                # The pre-signed "revoked" answer, at once (other servers load it).
                self.presigned.refresh(serial)
            except MailPKIError as exc:
                # Revoked all the same: the background pass signs it, and other
                # servers drop their "good" answer when they see the revocation.
                log.warning("pre-signing the OCSP answer of %s failed: %s", serial_hex, exc)
        return info

    # -- CRLs ---------------------------------------------------------------------------

    @staticmethod
    def _revoked_filter(issuer: str, partition: int | None) -> list[Any]:
        conditions = [
            CertificateRecord.issuer == issuer,
            CertificateRecord.status == "revoked",
            CertificateRecord.revoked_at.is_not(None),
        ]
        if partition is not None:
            conditions.append(CertificateRecord.crl_partition == partition)
        return conditions

    def _revoked_entry_ders(
        self, session: Session, issuer: str, partition: int | None
    ) -> tuple[bytes, int]:
        """(the stored entries concatenated, their number), joined by the database itself
        (SQLite group_concat, PostgreSQL string_agg): no Python object per entry."""
        column = CertificateRecord.crl_entry_der
        empty = literal(b"", LargeBinary)
        joined: ColumnElement[bytes] = (
            cast(func.group_concat(column, empty), LargeBinary)
            if self.db.is_sqlite
            else func.string_agg(column, empty, type_=LargeBinary)
        )
        der, total, stored = session.execute(
            select(joined, func.count(), func.count(column)).where(
                *self._revoked_filter(issuer, partition)
            )
        ).one()
        if stored != total:  # revoke() stores it; migration 0013 filled in older rows
            raise CAError(
                f"{total - stored} revoked certificates have no stored CRL entry: the "
                "database is older than this version: run 'mailpki upgrade' (it fills them in)"
            )
        return bytes(der or b""), int(total)

    def partitions(self, label: str | None = None) -> list[int]:
        """The CRL partitions of the issuing CA `label` (default: the current one);
        the current one also has the partition the next certificate falls into."""
        label = label or self.hierarchy.label
        with self.db.session() as session:
            found = session.scalars(
                select(CertificateRecord.crl_partition)
                .where(CertificateRecord.issuer == label)
                .distinct()
            ).all()
            newest = session.scalar(select(func.max(SerialReservation.id))) or 1
        if label != self.hierarchy.label:
            return sorted(set(found))
        return sorted(set(found) | {self.settings.partition_of(newest)})

    def live_labels(self) -> list[str]:
        """The issuing CAs whose CRLs are still needed: the current one, and each older
        one until its last certificate has expired."""
        now = datetime.now(UTC)
        with self.db.session() as session:
            alive = set(
                session.scalars(
                    select(CertificateRecord.issuer)
                    .where(ISSUED_BY_ISSUING, CertificateRecord.not_after > now)
                    .distinct()
                ).all()
            )
        return [
            label
            for label, _ in self.hierarchy.generations
            if label == self.hierarchy.label or label in alive
        ]

    def _sign_crl(
        self,
        name: str,
        *,
        issuer_cert: x509.Certificate,
        key: CAPrivateKey,
        scope: tuple[str, int | None],
        validity: timedelta,
        distribution_point: str | None,
        actor: str,
    ) -> CRLInfo:
        now = datetime.now(UTC).replace(microsecond=0)
        with self.db.transaction() as session:
            current = session.scalar(
                select(CRLRecord).where(CRLRecord.scope == name).with_for_update()
            )
            number = (current.number if current else 0) + 1
            # certificates.serial is UNIQUE: the entries need no duplicate check.
            entries, count = self._revoked_entry_ders(session, *scope)
            der = assemble_crl(
                issuer=issuer_cert,
                key=key,
                entry_ders=[entries] if count else [],
                number=number,
                this_update=now,
                next_update=now + validity,
                distribution_point=distribution_point,
            )
            del entries
            if current is None:
                session.add(
                    CRLRecord(
                        scope=name,
                        number=number,
                        this_update=now,
                        next_update=now + validity,
                        der=der,
                    )
                )
            else:
                current.number, current.this_update = number, now
                current.next_update, current.der = now + validity, der
            self.audit.append(
                session,
                "crl.generated",
                actor=actor,
                data={"crl": name, "number": number, "entries": count},
            )
        return CRLInfo(name, number, count, now, now + validity, der)

    @property
    def root_is_online(self) -> bool:
        """Whether the root key is in this instance (not taken offline)."""
        return self.keys.exists(ROOT)

    def generate_root_crl(self, *, actor: str) -> CRLInfo:
        try:
            root_key = self.keys.load(ROOT)
        except KeyStoreError:
            raise CAError(
                "the root key is offline (not in this instance); bring it back with "
                "'mailpki ca root import' to re-sign the root CRL"
            ) from None
        return self._sign_crl(
            ROOT_CRL,
            issuer_cert=self.hierarchy.root,
            key=root_key,
            scope=(ROOT, None),
            validity=self.settings.root_crl_validity,
            distribution_point=None,
            actor=actor,
        )

    def generate_issuing_crl(
        self, partition: int | None, *, actor: str, label: str | None = None
    ) -> CRLInfo:
        """The full CRL (partition None) or one partition of the issuing CA `label`
        (default: the current one), signed by that CA's own key."""
        label = label or self.hierarchy.label
        issuer_cert = self.hierarchy.issuing_of(label)
        if partition is None:
            name, point = full_crl_name(label), None
        else:
            name = partition_crl_name(partition, label)
            point = self.settings.crl_url(name)
        return self._sign_crl(
            name,
            issuer_cert=issuer_cert,
            key=self.key_of(label),
            scope=(label, partition),
            validity=self.settings.crl_validity,
            distribution_point=point,
            actor=actor,
        )

    def generate_all_crls(self, *, actor: str, root: bool = True) -> Iterator[CRLInfo]:
        """Full CRL and every partition of each live issuing CA, and the root CRL when
        the root key is here."""
        for label in self.live_labels():
            yield self.generate_issuing_crl(None, actor=actor, label=label)
            for partition in self.partitions(label):
                yield self.generate_issuing_crl(partition, actor=actor, label=label)
        if root:
            yield self.generate_root_crl(actor=actor)

    def stored_crl(self, name: str, *, db: Database | None = None) -> CRLInfo | None:
        """The CRL last signed under `name`, read from `db` (serving passes
        `read_db()`), else the primary."""
        with (db or self.db).session() as session:
            record = session.get(CRLRecord, name)
            if record is None:
                return None
            return CRLInfo(
                name,
                record.number,
                -1,
                utc(record.this_update),
                utc(record.next_update),
                record.der,
            )

    def crl_is_stale(self, name: str, *, db: Database | None = None) -> bool:
        """Stale when past half its validity, or a revocation happened after it was signed
        (both read from `db`, else the primary)."""
        stored = self.stored_crl(name, db=db)
        if stored is None:
            return True
        now = datetime.now(UTC)
        if now >= stored.this_update + (stored.next_update - stored.this_update) / 2:
            return True
        scope = crl_scope(name)
        if scope is None:
            raise NotFoundError(f"there is no CRL named {name!r}")
        issuer, partition = scope
        query = select(func.max(CertificateRecord.revoked_at)).where(
            CertificateRecord.issuer == issuer, CertificateRecord.status == "revoked"
        )
        if partition is not None:
            query = query.where(CertificateRecord.crl_partition == partition)
        with (db or self.db).session() as session:
            latest = session.scalar(query)
        return latest is not None and utc(latest) >= stored.this_update

    # -- OCSP ---------------------------------------------------------------------------

    def status(
        self, serial: int, label: str = ISSUING, *, db: Database | None = None
    ) -> CertStatus | None:
        """OCSP status of a certificate of the issuing CA `label` (default: generation
        1, which the pre-signed answers serve); None when unknown. Read from `db`, else
        the primary (pre-signing after a revocation must see it)."""
        try:
            with (db or self.db).engine.connect() as connection:
                row = connection.execute(
                    _STATUS_QUERY, {"serial": to_hex(serial), "issuer": label}
                ).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"database error: {exc.__class__.__name__}: {exc}") from exc
        if row is None:
            return None
        if row.status == "revoked":
            return CertStatus(
                "revoked",
                revoked_at=utc(row.revoked_at) if row.revoked_at else None,
                reason=_REASON_FLAGS.get(row.revocation_reason or ""),
            )
        return CertStatus("good")

    @property
    def presigned(self) -> PresignedResponses:
        """The pre-signed OCSP answers of the issuing CA (ca/presigned.py)."""
        if self._presigned is None:
            self._presigned = PresignedResponses(
                db=self.db, responder=self.responder, status=self.status, issuer=ISSUING
            )
        return self._presigned

    def responder(self) -> OCSPResponder:
        if self._responder is None:
            # Generation 1's responder (with the pre-signed answers); later issuing CAs
            # answer through answer_ocsp.
            self._responder = OCSPResponder(
                issuer=self.hierarchy.issuing_of(ISSUING),
                responder_cert=self.hierarchy.responder_of(ISSUING),
                responder_key=self.keys.load("ocsp"),
                # Answering a request may read the replica; pre-signing (above) may not.
                lookup=lambda serial: self.status(serial, db=self.read_db()),
                validity=self.settings.ocsp_validity,
            )
        return self._responder

    def answer_ocsp(self, request_der: bytes) -> bytes:
        """Answer an OCSP request for a certificate of any issuing CA generation: the
        request's issuer hashes pick the responder; generation 1 answers anything else
        (malformed, or unauthorized for a CA that is not ours)."""
        first = self.responder()
        if not self.hierarchy.earlier:
            return first.respond(request_der)
        try:
            request = ocsp.load_der_ocsp_request(request_der)
            hashes = (
                request.hash_algorithm.name,
                request.issuer_name_hash,
                request.issuer_key_hash,
            )
        except Exception:  # malformed: generation 1 gives the standard answer
            return first.respond(request_der)
        for label, certificate in self.hierarchy.generations[1:]:
            if hashes in _hashes_of(certificate):
                return self._later_responder(label).respond(request_der)
        return first.respond(request_der)

    def _later_responder(self, label: str) -> OCSPResponder:
        if label not in self._later_responders:
            self._later_responders[label] = OCSPResponder(
                issuer=self.hierarchy.issuing_of(label),
                responder_cert=self.hierarchy.responder_of(label),
                responder_key=self.keys.load("ocsp"),
                lookup=lambda serial: self.status(serial, label, db=self.read_db()),
                validity=self.settings.ocsp_validity,
            )
        return self._later_responders[label]


@cache
def _hashes_of(issuer: x509.Certificate) -> frozenset[tuple[str, bytes, bytes]]:
    """(hash algorithm, issuer name hash, issuer key hash) of an issuing CA, as an OCSP
    CertID carries them, for the algorithms relying parties use."""
    return frozenset((name, *pair) for name, pair in issuer_hashes(issuer).items())
