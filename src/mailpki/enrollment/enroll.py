"""One enrollment, step by step: key, escrow, certificate, PKCS#12, delivery.

The order is the guarantee. The recovery block is written in the transaction that
stores the certificate, and the PKCS#12 exists only after that commit; delivery then
flips the escrow record from pending to delivered. A key counts as delivered only once
the person can open it: the file is written AND its generated password has reached
them (`announce`, e.g. a flushed line on stdout); a bulk run records that in the
parent process, after the line is out (`record_delivery=False`, then
`record_delivered`). A crash anywhere leaves one of:
  - nothing (before the commit: no certificate, no block; a pooled key is just gone);
  - a valid certificate with a pending block (its file perhaps written, its password
    perhaps printed), which `reconcile` revokes once its delivery lease has run out.
There is never a delivered key without its escrow record, nor one whose password was
never shown.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog
from mailpki.ca.authority import CertificateAuthority
from mailpki.ca.csr import load_csr
from mailpki.ca.serials import show_serial, to_hex
from mailpki.ca.succession import restore, supersede
from mailpki.errors import InputError, MailPKIError, RevocationError
from mailpki.keymanager.manager import KeyManager
from mailpki.keymanager.pkcs12 import package
from mailpki.keystore.key_types import KeyType
from mailpki.notify.mail import queue
from mailpki.policy.person import Person
from mailpki.policy.profile import Profile

DUAL_SIGNING_PROFILE = "sponsored-strict-signing"
DUAL_ENCRYPTION_PROFILE = "sponsored-strict-encryption"
# Steps, in order, named for the crash harness and for progress reports.
STEPS = (
    "policy",
    "signing-cert",
    "key",
    "certified",
    "packaged",
    "handed-over",
    "announced",
    "delivered",
)


@dataclass(frozen=True)
class EnrollmentRequest:
    person: Person
    key_type: KeyType
    profile: str | None = None
    signing_csr: bytes | None = None  # dual-key: the user's own signing key, never escrowed
    password: bytes | None = None  # None: generate one, shown once
    legacy_p12: bool = False
    # Renewal: the certificate this one replaces (superseded in the transaction that
    # stores the new one) and, in dual-key mode, the signing half to re-certify.
    renews: str | None = None
    renews_signing: str | None = None
    signing_key: CertificatePublicKeyTypes | None = None

    @property
    def dual_key(self) -> bool:
        return self.signing_csr is not None or self.signing_key is not None


@dataclass(frozen=True)
class Enrolled:
    serial: str
    email: str  # as policy normalised it
    certificate: x509.Certificate
    pkcs12: bytes
    generated_password: str | None
    signing_certificate: x509.Certificate | None
    from_pool: bool
    legacy_p12: bool = False


@dataclass(frozen=True)
class Delivery:
    """A key handed over and announced, whose delivery is to be recorded."""

    serial: str
    email: str
    legacy_p12: bool


class Enroller:
    def __init__(
        self,
        *,
        ca: CertificateAuthority,
        keys: KeyManager,
        audit: AuditLog,
        chain: Sequence[x509.Certificate],
        on_step: Callable[[str], None] | None = None,
    ) -> None:
        self.ca = ca
        self.keys = keys
        self.audit = audit
        self.chain = list(chain)
        self.on_step = on_step or (lambda step: None)

    def enroll(
        self,
        request: EnrollmentRequest,
        *,
        actor: str,
        hand_over: Callable[[bytes, str], None],
        announce: Callable[[Enrolled], None] | None = None,
        record_delivery: bool = True,
    ) -> Enrolled:
        """Run every step; `hand_over(pkcs12, serial)` delivers it (writes the file, sends the
        download), then `announce(enrolled)` tells the person (prints the generated
        password). If either raises, the key is not delivered and the record stays
        pending. With `record_delivery=False` the caller records the delivery itself
        (`record_delivered`) once what it announces has really gone out."""
        person = request.person
        # 1. Policy: which profile shapes the central key's certificate.
        profile = self.choose_profile(profile=request.profile, dual_key=request.dual_key)
        if request.signing_csr is not None:
            load_csr(request.signing_csr)  # refuse a bad CSR before anything is made
        self.on_step("policy")
        # 2. Dual key: the signing certificate, for the user's own key (not escrowed).
        signing_cert = None
        if request.signing_csr is not None:
            signing_cert = self.ca.issue_from_csr(
                request.signing_csr, person, profile=DUAL_SIGNING_PROFILE, actor=actor
            ).certificate
            self.on_step("signing-cert")
        elif request.signing_key is not None:  # renewal: the user's signing key again
            signing_cert = self.ca.issue_for_key(
                request.signing_key, person, profile=DUAL_SIGNING_PROFILE, actor=actor
            ).certificate
            self.on_step("signing-cert")
        signing_serial = to_hex(signing_cert.serial_number) if signing_cert else None
        # 3. The key pair, already escrowed (pool) or escrowed now.
        pair = self.keys.new_key_pair(request.key_type)
        self.on_step("key")

        # 4. Certificate + recovery block + escrow notice, in one transaction.
        def record_escrow(session: Session, certificate: x509.Certificate, serial: str) -> None:
            self.keys.record(session, pair.block, serial=serial, owner_email=person.email)
            self.audit.append(
                session,
                "key.escrowed",
                actor=actor,
                data={
                    "serial": serial,
                    "email": person.email,
                    "key_type": pair.block.key_type,
                    "krs_key_id": pair.block.krs_key_id,
                    "from_pool": pair.from_pool,
                },
            )
            if request.renews is not None:
                supersede(self.ca, self.audit, session, old_serial=request.renews,
                          new_serial=serial, now=datetime.now(UTC), actor=actor)  # fmt: skip
            if request.renews_signing is not None and signing_serial is not None:
                supersede(self.ca, self.audit, session, old_serial=request.renews_signing,
                          new_serial=signing_serial, now=datetime.now(UTC), actor=actor)  # fmt: skip
            queue(
                session,
                kind="key.escrowed",
                to=person.email,
                subject="Your encryption key has been escrowed",
                body=escrow_notice(person, serial),
            )

        issued = self.ca.issue_for_key(
            pair.private_key.public_key(),
            person,
            profile=profile.name,
            actor=actor,
            within=record_escrow,
        )
        self.on_step("certified")
        # 5. The PKCS#12, only now that the block is durably stored.
        pkcs12, generated = package(
            pair.private_key,
            issued.certificate,
            self.chain,
            request.password,
            # Dual key: the two files must not share a name in the client's key store.
            friendly_name=(
                f"{person.name or person.email} (encryption)"
                if request.signing_csr is not None
                else f"{person.name or person.email} (S/MIME {show_serial(issued.serial)})"
            ),
            legacy=request.legacy_p12,
        )
        self.on_step("packaged")
        # 6. Hand it over, then record the delivery.
        hand_over(pkcs12, issued.serial)
        self.on_step("handed-over")
        enrolled = Enrolled(
            serial=issued.serial,
            email=person.email,
            certificate=issued.certificate,
            pkcs12=pkcs12,
            generated_password=generated,
            signing_certificate=signing_cert,
            from_pool=pair.from_pool,
            legacy_p12=request.legacy_p12,
        )
        # 7. Tell the person (the password, shown once), then record the delivery.
        if announce is not None:
            announce(enrolled)
        self.on_step("announced")
        if record_delivery:
            self.record_delivered(
                [Delivery(enrolled.serial, person.email, request.legacy_p12)], actor=actor
            )
            self.on_step("delivered")
        return enrolled

    def record_delivered(self, deliveries: Sequence[Delivery], *, actor: str) -> None:
        """Mark keys delivered, all in one transaction (one commit for a batch).

        EscrowError, and nothing recorded, if one of them is no longer pending (revoked
        by `reconcile` meanwhile): record the others one at a time to single it out."""
        if not deliveries:
            return
        with self.keys.db.transaction() as session:
            self.keys.mark_all_delivered(session, [d.serial for d in deliveries])
            self.audit.append_all(
                session,
                [
                    (
                        "key.delivered",
                        {
                            "serial": delivery.serial,
                            "email": delivery.email,
                            "format": "legacy" if delivery.legacy_p12 else "modern",
                        },
                    )
                    for delivery in deliveries
                ],
                actor=actor,
            )

    def choose_profile(self, *, profile: str | None, dual_key: bool) -> Profile:
        """The profile of the central key's certificate (the encryption half in dual key)."""
        if dual_key:
            if profile not in (None, DUAL_ENCRYPTION_PROFILE):
                raise InputError("dual-key mode uses the strict signing/encryption profiles")
            chosen = self.ca.profile(DUAL_ENCRYPTION_PROFILE)
        else:
            chosen = self.ca.profile(profile)
        if not chosen.encrypts:
            raise InputError(
                f"profile {chosen.name} certifies a signing-only key: a central key must "
                "be able to decrypt (use a dual-use or encryption profile)"
            )
        return chosen


@dataclass(frozen=True)
class ReconcileResult:
    revoked: list[str]
    errors: list[str]
    waiting: int = 0  # pending records still within their delivery lease, left alone


def reconcile(
    ca: CertificateAuthority,
    keys: KeyManager,
    audit: AuditLog,
    *,
    actor: str,
    all_pending: bool = False,
) -> ReconcileResult:
    """Revoke certificates whose key was escrowed but whose delivery never finished.

    Only records past their delivery lease, unless `all_pending` (for when no
    enrollment can be running, e.g. after a crash of the only node).
    """
    now = datetime.now(UTC)
    cutoff = datetime.max.replace(tzinfo=UTC) if all_pending else now
    with keys.db.session() as session:
        serials = keys.undelivered(session, older_than=cutoff)
        waiting = (
            0 if all_pending else len(keys.undelivered(session, older_than=None)) - len(serials)
        )
    revoked: list[str] = []
    errors: list[str] = []
    for serial in serials:

        def mark(session: Session, serial: str = serial) -> None:
            keys.mark_revoked(session, serial)
            audit.append(session, "key.undelivered", actor=actor, data={"serial": serial})
            # A renewal that never reached its person: the certificate it replaced is
            # current (and published) again.
            restore(ca, audit, session, successor=serial, actor=actor)

        try:
            try:
                ca.revoke(
                    int(serial, 16),
                    x509.ReasonFlags.cessation_of_operation,
                    actor=actor,
                    within=mark,
                )
            except RevocationError:  # revoked meanwhile ('mailpki ca revoke'): only the record
                with keys.db.transaction() as session:
                    mark(session)
            revoked.append(serial)
        except MailPKIError as exc:
            errors.append(f"{serial}: {exc}")
    return ReconcileResult(revoked, errors, waiting)


def escrow_notice(person: Person, serial: str) -> str:
    return (
        f"Hello {person.name or person.email},\n\n"
        f"a new S/MIME certificate (serial {serial}) was issued for {person.email}.\n"
        "Its private encryption key was generated centrally and a copy is held in escrow\n"
        "by your organisation's key recovery service, so that mail encrypted to you can be\n"
        "read if the key is lost. A recovery needs the signed request of an authorised\n"
        "administrator and the approval of recovery officers; you will be told by mail\n"
        "whenever your key is recovered (S/MIME Baseline Requirements 4.12.1).\n"
    )


def recovery_notice(email: str, serial: str, recovered_by: str, approved_by: Sequence[str]) -> str:
    return (
        f"Hello,\n\nthe escrowed private key of your S/MIME certificate {serial} ({email})\n"
        f"was recovered on {datetime.now(UTC):%Y-%m-%d %H:%M} UTC by {recovered_by},\n"
        f"approved by {', '.join(approved_by) or 'nobody'}.\n\n"
        "If you did not expect this, contact your security team.\n"
    )
