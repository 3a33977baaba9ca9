"""S/MIME messages (RFC 8551): sign, encrypt, decrypt and verify whole mails.

Input and output are RFC 5322 messages as bytes. The transport headers (From, To,
Subject, Date, ...) stay outside; the Content-* fields and the body form the entity
that is signed or encrypted. Signing is multipart/signed (detached, the default: any
client can read the text) or opaque application/pkcs7-mime; encryption is
application/pkcs7-mime enveloped-data (AES-CBC) or authEnveloped-data (AES-GCM).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from mailpki.cms.enveloped import Cipher, KeyTransport, decrypt, encrypt
from mailpki.cms.signed import SignedContent, sign, verify_signed
from mailpki.smime.mime import (
    Entity,
    SMIMEError,
    content_type,
    decode_body,
    header_value,
    new_boundary,
    outer_message,
    parse,
    pkcs7_mime_body,
    signed_parts,
)
from mailpki.smime.trust import (
    CertificateVerdict,
    RevocationChecker,
    TrustAnchors,
    check_certificate,
)

__all__ = [
    "Opened",
    "Verified",
    "decrypt_message",
    "encrypt_message",
    "is_encrypted",
    "is_signed",
    "sender_addresses",
    "sign_message",
    "unique_certificates",
    "verify_message",
]

SigningKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def sign_message(
    data: bytes,
    certificate: x509.Certificate,
    key: SigningKey,
    *,
    chain: Sequence[x509.Certificate] = (),
    opaque: bool = False,
    pss: bool = False,
    encryption_certificate: x509.Certificate | None = None,
) -> bytes:
    """The message signed by `key`: multipart/signed, or opaque with `opaque`; RSA keys
    sign with PKCS#1 v1.5, or RSASSA-PSS with `pss`. With `encryption_certificate` the
    signature tells correspondents to encrypt to that certificate (RFC 8551 §2.5.3, and
    Microsoft's attribute for Outlook) and carries it."""
    entity = parse(data)
    inner = entity.inner_entity()
    der = sign(
        inner,
        certificate,
        key,
        extra_certificates=chain,
        detached=not opaque,
        pss=pss,
        encryption_certificate=encryption_certificate,
    )
    if opaque:
        return outer_message(
            entity,
            'Content-Type: application/pkcs7-mime; smime-type=signed-data; name="smime.p7m"\r\n'
            "Content-Transfer-Encoding: base64\r\n"
            'Content-Disposition: attachment; filename="smime.p7m"',
            pkcs7_mime_body(der),
        )
    boundary = new_boundary()
    body = (
        b"This is an S/MIME signed message\r\n\r\n"
        + f"--{boundary}\r\n".encode()
        + inner
        + f"\r\n--{boundary}\r\n".encode()
        + b'Content-Type: application/pkcs7-signature; name="smime.p7s"\r\n'
        + b"Content-Transfer-Encoding: base64\r\n"
        + b'Content-Disposition: attachment; filename="smime.p7s"\r\n\r\n'
        + pkcs7_mime_body(der)
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return outer_message(
        entity,
        f'Content-Type: multipart/signed; protocol="application/pkcs7-signature"; '
        f'micalg=sha-256; boundary="{boundary}"',
        body,
    )


def encrypt_message(
    data: bytes,
    recipients: Sequence[x509.Certificate],
    *,
    cipher: Cipher = "aes256-cbc",
    key_transport: KeyTransport = "pkcs1v15",
) -> bytes:
    """The message encrypted to every certificate in `recipients` (add the sender's own
    to keep a readable copy). A certificate named twice (the sender among the recipients,
    an address given twice) gets one copy of the key."""
    entity = parse(data)
    der = encrypt(
        entity.inner_entity(for_signing=False),
        unique_certificates(recipients),
        cipher=cipher,
        key_transport=key_transport,
    )
    smime_type = "authEnveloped-data" if cipher.endswith("gcm") else "enveloped-data"
    return outer_message(
        entity,
        f'Content-Type: application/pkcs7-mime; smime-type={smime_type}; name="smime.p7m"\r\n'
        "Content-Transfer-Encoding: base64\r\n"
        'Content-Disposition: attachment; filename="smime.p7m"',
        pkcs7_mime_body(der),
    )


def unique_certificates(certificates: Sequence[x509.Certificate]) -> list[x509.Certificate]:
    """`certificates` in their order, each (issuer, serial) once."""
    seen: set[tuple[bytes, int]] = set()
    unique = []
    for certificate in certificates:
        key = (certificate.issuer.public_bytes(), certificate.serial_number)
        if key not in seen:
            seen.add(key)
            unique.append(certificate)
    return unique


@dataclass(frozen=True)
class Opened:
    message: bytes  # the transport headers with the decrypted entity
    cipher: str
    key_transport: str


def decrypt_message(
    data: bytes,
    certificate: x509.Certificate,
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey | Callable[..., bytes],
) -> Opened:
    entity = parse(data)
    kind, params = content_type(entity)
    smime_type = params.get("smime-type", "").lower()
    if kind not in ("application/pkcs7-mime", "application/x-pkcs7-mime") or smime_type not in (
        "enveloped-data",
        "authenveloped-data",
        "",
    ):
        raise SMIMEError(
            f"the message is not encrypted ({kind}{'; ' + smime_type if smime_type else ''})"
        )
    opened = decrypt(decode_body(entity), certificate, key)
    return Opened(_rejoin(entity, opened.content), opened.cipher, opened.key_transport)


@dataclass(frozen=True)
class Verified:
    message: bytes  # the transport headers with the signed entity
    signed: SignedContent
    verdict: CertificateVerdict
    from_addresses: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.verdict.valid

    @property
    def encryption_certificate(self) -> x509.Certificate | None:
        """The certificate to encrypt a reply to: the one the signature's encryption-key
        preference names, else the signer's own; None if the preference is unusable
        (damaged, or naming a certificate the message does not carry)."""
        preference = self.signed.encryption_preference
        if preference is None:
            return self.signed.signer
        return preference.certificate

    @property
    def warnings(self) -> tuple[str, ...]:
        """What is odd about the message without making its signature invalid."""
        found = []
        preference = self.signed.encryption_preference
        if preference is not None and preference.problem:
            found.append(preference.problem)
        if self.signed.digest_algorithm == "sha1":
            found.append("the message is signed with SHA-1, a weak hash (allowed on request)")
        return tuple(found)


def verify_message(
    data: bytes,
    anchors: TrustAnchors,
    *,
    revocation: RevocationChecker | None = None,
    require_revocation: bool = False,
    at: datetime | None = None,
    allow_sha1: bool = False,
) -> Verified:
    """Check the signature (CMSError if it is wrong) and then the signer: chain to
    `anchors`, validity, emailProtection, the From address in the certificate, and
    revocation. The verdict lists every problem; `valid` only if there is none.
    `allow_sha1` accepts signatures made with SHA-1 (older clients)."""
    entity = parse(data)
    signed, inner = _signed_content(entity, allow_sha1)
    senders = sender_addresses(entity)
    verdict = check_certificate(
        signed.signer,
        anchors,
        purpose="sign",
        address=senders[0] if len(senders) == 1 else None,
        extra_intermediates=[c for c in signed.certificates if c != signed.signer],
        at=at or signed.signing_time,
        revocation=revocation,
        require_revocation=require_revocation,
    )
    if len(senders) != 1:
        problem = (
            "the message has no From address"
            if not senders
            else "the message has several From addresses"
        )
        verdict = CertificateVerdict(
            verdict.certificate,
            verdict.chain,
            verdict.revocation,
            verdict.revocation_source,
            (*verdict.problems, problem),
        )
    return Verified(_rejoin(entity, inner), signed, verdict, senders)


def signer_certificate(data: bytes, *, allow_sha1: bool = False) -> x509.Certificate:
    """The certificate whose key made the message's (checked) signature."""
    return _signed_content(parse(data), allow_sha1)[0].signer


def _signed_content(entity: Entity, allow_sha1: bool) -> tuple[SignedContent, bytes]:
    kind, params = content_type(entity)
    if kind == "multipart/signed":
        first, signature = signed_parts(entity)
        return verify_signed(signature, detached_content=first, allow_sha1=allow_sha1), first
    if (
        kind in ("application/pkcs7-mime", "application/x-pkcs7-mime")
        and params.get("smime-type", "signed-data").lower() == "signed-data"
    ):
        signed = verify_signed(decode_body(entity), allow_sha1=allow_sha1)
        return signed, signed.content
    raise SMIMEError(f"the message is not signed ({kind})")


def sender_addresses(entity: Entity) -> tuple[str, ...]:
    value = header_value(entity, "From")
    if not value:
        return ()
    return tuple(addr.lower() for _, addr in getaddresses([value]) if "@" in addr)


def is_signed(data: bytes) -> bool:
    kind, params = content_type(parse(data))
    return kind == "multipart/signed" or (
        kind in ("application/pkcs7-mime", "application/x-pkcs7-mime")
        and params.get("smime-type", "").lower() == "signed-data"
    )


def is_encrypted(data: bytes) -> bool:
    kind, params = content_type(parse(data))
    return kind in ("application/pkcs7-mime", "application/x-pkcs7-mime") and params.get(
        "smime-type", ""
    ).lower() in ("enveloped-data", "authenveloped-data")


def _rejoin(outer: Entity, inner: bytes) -> bytes:
    """The transport headers of `outer` in front of the entity `inner`."""
    entity = parse(inner) if inner.strip() else Entity((), b"")
    fields = [*outer.outer_fields(), b"MIME-Version: 1.0", *(raw for _, raw in entity.fields)]
    return b"\r\n".join(fields) + b"\r\n\r\n" + entity.body
