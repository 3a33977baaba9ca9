"""S/MIME messages (RFC 8551): sign, encrypt, decrypt and verify whole mails.

Input and output are RFC 5322 messages as bytes. The transport headers (From, To,
Subject, Date, ...) stay outside; the Content-* fields and the body form the entity
that is signed or encrypted. Signing is multipart/signed (detached, the default: any
client can read the text) or opaque application/pkcs7-mime; encryption is
application/pkcs7-mime enveloped-data (AES-CBC) or authEnveloped-data (AES-GCM).

One size limit holds for every message here, in and out: `MAX_MESSAGE_BYTES` (64 MiB).
Decrypt and verify refuse a larger message, so sign and encrypt refuse, before any
work, a message whose result could be larger (`check_fits`): base64 makes an encrypted
or opaque-signed message about 37 % larger than its content, and an 8-bit body to be
signed is itself carried as base64. mailpki never writes what it would refuse to read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.utils import getaddresses
from math import ceil

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding

from mailpki.cms.enveloped import Cipher, KeyTransport, decrypt, encrypt
from mailpki.cms.signed import SignedContent, sign, verify_signed
from mailpki.smime.mime import (
    MAX_MESSAGE_BYTES,
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
    "MAX_MESSAGE_BYTES",
    "Opened",
    "Verified",
    "check_fits",
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
# Upper bounds of what CMS adds besides the content and the certificates it carries:
# SignedData's signed attributes and signature (RSA-4096 at most), and each recipient's
# info (issuer name and serial, at most its certificate, and the wrapped key).
_SIGNED_OVERHEAD = 4096
_PER_RECIPIENT = 1024
_ENVELOPE_OVERHEAD = 1024
_MIME_OVERHEAD = 1024  # new Content-* fields, boundaries and preamble


def _base64_lines_size(n: int) -> int:
    """Bytes of `pkcs7_mime_body` for n bytes: base64 in lines of 76 with CRLF."""
    encoded = 4 * ceil(n / 3)
    return encoded + 2 * ceil(encoded / 76)


def check_fits(
    data: bytes,
    *,
    signer_certificates: Sequence[x509.Certificate] | None = None,
    opaque: bool = False,
    recipients: Sequence[x509.Certificate] | None = None,
    max_size: int = MAX_MESSAGE_BYTES,
) -> None:
    """Refuse (SMIMEError) a message whose signed (with `signer_certificates`) and/or
    encrypted (to `recipients`) form could be larger than `max_size`: decrypt and verify
    would refuse it. Cheap: no signature and no encryption is made."""
    entity = parse(data, max_size=max_size)
    # The transport headers are copied out (canonical: at most twice as long).
    size = 2 * (len(data) - len(entity.body)) + _MIME_OVERHEAD
    step = "signed"
    if signer_certificates is not None:
        inner = len(entity.inner_entity(for_signing=True))
        cms = _SIGNED_OVERHEAD + sum(len(_der(c)) for c in signer_certificates)
        body = _base64_lines_size(cms + inner) if opaque else inner + _base64_lines_size(cms)
        inner_next = body + _MIME_OVERHEAD  # what encryption then wraps
    else:
        inner_next = len(entity.inner_entity(for_signing=False))
        body = inner_next
    if recipients is not None:
        step = "signed and encrypted" if signer_certificates is not None else "encrypted"
        cms = inner_next + _ENVELOPE_OVERHEAD + 32  # + padding or tag
        cms += sum(len(_der(c)) + _PER_RECIPIENT for c in recipients)
        body = _base64_lines_size(cms)
    size += body
    if size > max_size:
        raise SMIMEError(
            f"the {step} message could be {size:,} bytes, over the limit of {max_size:,} "
            f"bytes ({max_size / 1024 / 1024:g} MiB) that mailpki decrypts and verifies; "
            "send less (base64 adds about 37 % to encrypted and opaque-signed content)"
        )


def _der(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(Encoding.DER)


def sign_message(
    data: bytes,
    certificate: x509.Certificate,
    key: SigningKey,
    *,
    chain: Sequence[x509.Certificate] = (),
    opaque: bool = False,
    pss: bool = False,
    encryption_certificate: x509.Certificate | None = None,
    max_size: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """The message signed by `key`: multipart/signed, or opaque with `opaque`; RSA keys
    sign with PKCS#1 v1.5, or RSASSA-PSS with `pss`. With `encryption_certificate` the
    signature tells correspondents to encrypt to that certificate (RFC 8551 §2.5.3, and
    Microsoft's attribute for Outlook) and carries it. SMIMEError, before signing, if
    the result could be over `max_size`."""
    carried = [certificate, *chain]
    if encryption_certificate is not None:
        carried.append(encryption_certificate)
    check_fits(data, signer_certificates=carried, opaque=opaque, max_size=max_size)
    entity = parse(data, max_size=max_size)
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
    max_size: int = MAX_MESSAGE_BYTES,
) -> bytes:
    """The message encrypted to every certificate in `recipients` (add the sender's own
    to keep a readable copy). A certificate named twice (the sender among the recipients,
    an address given twice) gets one copy of the key. SMIMEError, before encrypting, if
    the result could be over `max_size`."""
    check_fits(data, recipients=recipients, max_size=max_size)
    entity = parse(data, max_size=max_size)
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
    *,
    max_size: int = MAX_MESSAGE_BYTES,
) -> Opened:
    entity = parse(data, max_size=max_size)
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
    opened = decrypt(decode_body(entity), certificate, key, max_size=max_size)
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
    max_size: int = MAX_MESSAGE_BYTES,
) -> Verified:
    """Check the signature (CMSError if it is wrong) and then the signer: chain to
    `anchors`, validity, emailProtection, the From address in the certificate, and
    revocation. The verdict lists every problem; `valid` only if there is none.
    `allow_sha1` accepts signatures made with SHA-1 (older clients)."""
    entity = parse(data, max_size=max_size)
    signed, inner = _signed_content(entity, allow_sha1, max_size)
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


def _signed_content(
    entity: Entity, allow_sha1: bool, max_size: int = MAX_MESSAGE_BYTES
) -> tuple[SignedContent, bytes]:
    kind, params = content_type(entity)
    if kind == "multipart/signed":
        first, signature = signed_parts(entity)
        signed = verify_signed(
            signature, detached_content=first, allow_sha1=allow_sha1, max_size=max_size
        )
        return signed, first
    if (
        kind in ("application/pkcs7-mime", "application/x-pkcs7-mime")
        and params.get("smime-type", "signed-data").lower() == "signed-data"
    ):
        signed = verify_signed(decode_body(entity), allow_sha1=allow_sha1, max_size=max_size)
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
