"""Who may talk to the Key Recovery Service: the checks on every signed message.

In order: the CMS signature; the message's own fields; that it is meant for this
service and recent; the signer's chain to the trusted CA and its validity; a fresh,
good OCSP response for it signed by the CA's responder; the role the action needs;
and last, the nonce (stored, so the same message is never accepted twice).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509 import ocsp
from cryptography.x509.oid import ExtendedKeyUsageOID
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mailpki.cms.signed import verify_signed
from mailpki.errors import InputError, MailPKIError, RecoveryRefused
from mailpki.policy.roles import Role, roles_of
from mailpki.recovery.protocol import Message, parse_message
from mailpki.store.models import SeenNonce

# The role each action needs.
REQUIRED_ROLE: dict[str, tuple[Role, ...]] = {
    "request": ("recovery-admin",),
    "fetch": ("recovery-admin",),
    "approve": ("recovery-officer",),
    "list": ("recovery-admin", "recovery-officer", "auditor"),
    "report": ("recovery-admin", "recovery-officer", "auditor"),
}


@dataclass(frozen=True)
class Trust:
    """The instance CA the service trusts: its issuing CA and root."""

    issuing: x509.Certificate
    root: x509.Certificate
    role_arc: str

    @classmethod
    def from_pem(cls, pem: bytes, role_arc: str) -> Trust:
        try:
            certs = x509.load_pem_x509_certificates(pem)
        except ValueError as exc:
            raise InputError(f"the trust file is not PEM certificates: {exc}") from None
        roots = [c for c in certs if c.issuer == c.subject]
        issuing = [c for c in certs if c.issuer != c.subject]
        if len(roots) != 1 or len(issuing) != 1 or issuing[0].issuer != roots[0].subject:
            raise InputError(
                "the trust file must hold exactly the instance's issuing CA and its root "
                "('mailpki ca chain' prints them)"
            )
        return cls(issuing=issuing[0], root=roots[0], role_arc=role_arc)

    def check_issued(self, cert: x509.Certificate, now: datetime | None, what: str) -> None:
        """`cert` chains to the trusted root and (unless `now` is None) is valid now.

        A certificate whose key is recovered may long have expired: reading old mail is
        what recovery is for, so its validity is not checked, only who issued it."""
        try:
            cert.verify_directly_issued_by(self.issuing)
            self.issuing.verify_directly_issued_by(self.root)
        except (ValueError, TypeError, InvalidSignature):
            raise RecoveryRefused(f"the {what} was not issued by the trusted CA") from None
        for c in (cert, self.issuing):
            if now is not None and not c.not_valid_before_utc <= now <= c.not_valid_after_utc:
                raise RecoveryRefused(f"the {what} (or its CA) has expired or is not yet valid")


class SignedRefusal(RecoveryRefused):
    """A refused message whose CMS signature verified: it names who signed it (the
    certificate may be untrusted, revoked or without the role: that is why it failed)."""

    def __init__(
        self, message: str, *, signer: x509.Certificate, content: bytes, trusted: bool
    ) -> None:
        super().__init__(message)
        self.fingerprint = fingerprint(signer)
        try:
            email = certificate_email(signer)
        except RecoveryRefused:
            email = "unknown"
        # A certificate from another CA names whoever its maker chose: say so in the log.
        self.actor = email if trusted else f"untrusted:{email}"
        try:
            parsed = parse_message(content)
            self.action: str | None = parsed.action
            self.request_id: str | None = str(parsed.body.get("request_id") or "") or None
        except InputError:
            self.action = self.request_id = None


@dataclass(frozen=True)
class Admitted:
    message: Message
    signer: x509.Certificate
    email: str
    fingerprint: str
    roles: frozenset[Role]


def certificate_email(cert: x509.Certificate) -> str:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        emails = san.get_values_for_type(x509.RFC822Name)
    except (x509.ExtensionNotFound, ValueError):
        emails = []
    if len(emails) != 1:
        raise RecoveryRefused("the certificate must carry exactly one mail address")
    return emails[0].strip().lower()


def fingerprint(cert: x509.Certificate) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def ocsp_nonce(message_nonce: str) -> bytes:
    """The OCSP request nonce that binds a stapled response to one message."""
    return hashlib.sha256(b"mailpki-recovery-ocsp\x00" + message_nonce.encode()).digest()[:16]


class Admission:
    def __init__(self, trust: Trust, *, service_id: str, max_age: timedelta) -> None:
        self.trust = trust
        self.service_id = service_id
        self.max_age = max_age

    def check(self, data: bytes, *, now: datetime | None = None) -> Admitted:
        """Everything but the nonce; RecoveryRefused or InputError says what failed.

        Once the signature verifies, a refusal is a SignedRefusal naming the signer, so
        the audit log shows who tried (say, an auditor approving, a revoked admin)."""
        now = now or datetime.now(UTC)
        signed = verify_signed(data, max_size=512 * 1024)  # CMSError (an InputError)
        try:
            return self._check_signed(signed.content, signed.signer, now)
        except (RecoveryRefused, InputError) as exc:
            try:
                self.trust.check_issued(signed.signer, None, "signer's certificate")
                trusted = True
            except RecoveryRefused:
                trusted = False
            raise SignedRefusal(
                str(exc), signer=signed.signer, content=signed.content, trusted=trusted
            ) from None

    def _check_signed(self, content: bytes, signer: x509.Certificate, now: datetime) -> Admitted:
        message = parse_message(content)
        if not hmac.compare_digest(message.service.encode(), self.service_id.encode()):
            raise RecoveryRefused("the message is meant for another recovery service")
        if abs(now - message.time) > self.max_age:
            raise RecoveryRefused(
                "the message is too old (or from the future): sign a new one; check the clocks"
            )
        self.trust.check_issued(signer, now, "signer's certificate")
        self.check_status(message.ocsp, signer, message.nonce, now, whose="signer's")
        roles = roles_of(signer, self.trust.role_arc)
        needed = REQUIRED_ROLE[message.action]
        if not roles.intersection(needed):
            raise RecoveryRefused(
                f"the signer's certificate has no role allowed to {message.action} "
                f"(needs {' or '.join(needed)})"
            )
        return Admitted(message, signer, certificate_email(signer), fingerprint(signer), roles)

    def remember_nonce(self, session: Session, admitted: Admitted, now: datetime) -> None:
        """Store the nonce in the caller's transaction; a replay fails here."""
        # Nonces older than twice the window can never be replayed (the time check
        # refuses them first): forget them so the table stays small.
        session.execute(delete(SeenNonce).where(SeenNonce.seen_at < now - 2 * self.max_age))
        session.add(SeenNonce(nonce=admitted.message.nonce, seen_at=now))
        try:
            session.flush()
        except IntegrityError:
            raise RecoveryRefused("replayed message: this nonce was already used") from None

    # -- revocation, checked from the stapled OCSP response -------------------------------

    def check_status(
        self, stapled: bytes, cert: x509.Certificate, nonce: str, now: datetime, *, whose: str
    ) -> None:
        """`stapled` is a fresh, good OCSP response from the CA's responder about `cert`,
        bound to the message `nonce`; RecoveryRefused says which check failed."""
        try:
            response = ocsp.load_der_ocsp_response(stapled)
        except ValueError:
            raise RecoveryRefused("the stapled OCSP response is not an OCSP response") from None
        if response.response_status != ocsp.OCSPResponseStatus.SUCCESSFUL:
            raise RecoveryRefused(
                f"the CA's OCSP responder answered {response.response_status.name}"
            )
        try:
            self._check_ocsp_signature(response)
            serial = response.serial_number
            status = response.certificate_status
            this_update = response.this_update_utc
            next_update = response.next_update_utc
            issuer_key_hash = response.issuer_key_hash
            hash_algorithm = response.hash_algorithm
            response_nonce = response.extensions.get_extension_for_class(x509.OCSPNonce).value.nonce
        except RecoveryRefused:
            raise
        except (ValueError, x509.ExtensionNotFound, MailPKIError):
            raise RecoveryRefused("the stapled OCSP response is incomplete (no nonce?)") from None
        expected = (
            ocsp.OCSPRequestBuilder()
            .add_certificate(cert, self.trust.issuing, hash_algorithm)
            .build()
        )
        if serial != cert.serial_number or issuer_key_hash != expected.issuer_key_hash:
            raise RecoveryRefused("the stapled OCSP response is about another certificate")
        if not hmac.compare_digest(response_nonce, ocsp_nonce(nonce)):
            raise RecoveryRefused("the stapled OCSP response belongs to another message")
        if not now - self.max_age <= this_update <= now + timedelta(minutes=5) or (
            next_update is not None and next_update < now
        ):
            raise RecoveryRefused("the stapled OCSP response is not fresh")
        if status == ocsp.OCSPCertStatus.REVOKED:
            raise RecoveryRefused(f"the {whose} certificate is revoked")
        if status != ocsp.OCSPCertStatus.GOOD:
            raise RecoveryRefused(f"the CA does not know the {whose} certificate")

    def _check_ocsp_signature(self, response: ocsp.OCSPResponse) -> None:
        # The delegated responder must be issued by the issuing CA for OCSP signing.
        signer: x509.Certificate = self.trust.issuing
        if response.certificates:
            responder = response.certificates[0]
            self.trust.check_issued(responder, datetime.now(UTC), "OCSP responder certificate")
            try:
                eku = responder.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            except x509.ExtensionNotFound:
                eku = x509.ExtendedKeyUsage([])
            if ExtendedKeyUsageOID.OCSP_SIGNING not in eku:
                raise RecoveryRefused("the OCSP responder certificate is not for OCSP signing")
            signer = responder
        key = signer.public_key()
        algorithm = response.signature_hash_algorithm
        if algorithm is None:
            raise RecoveryRefused("the OCSP response uses an unsupported signature")
        try:
            if isinstance(key, ec.EllipticCurvePublicKey):
                key.verify(response.signature, response.tbs_response_bytes, ec.ECDSA(algorithm))
            elif isinstance(key, rsa.RSAPublicKey):
                key.verify(
                    response.signature, response.tbs_response_bytes, padding.PKCS1v15(), algorithm
                )
            else:
                raise RecoveryRefused("the OCSP responder key type is not supported")
        except InvalidSignature:
            raise RecoveryRefused("the stapled OCSP response's signature does not verify") from None
