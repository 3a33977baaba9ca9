"""The DER of one CRL entry (RFC 5280 §5.1.2.6), encoded once when a certificate is
revoked and stored with it; a CRL run only concatenates these bytes (ca/crl.py).

Here, below the store, so that the migration that added stored entries can fill them
in for certificates revoked before it. Unit tests check the bytes against
cryptography's own CRL builder.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509

from mailpki.errors import InputError

__all__ = ["der_length", "encode_entry", "tlv"]


def _utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


_RFC_REASON_CODES: dict[x509.ReasonFlags, int] = {
    x509.ReasonFlags.unspecified: 0,
    x509.ReasonFlags.key_compromise: 1,
    x509.ReasonFlags.ca_compromise: 2,
    x509.ReasonFlags.affiliation_changed: 3,
    x509.ReasonFlags.superseded: 4,
    x509.ReasonFlags.cessation_of_operation: 5,
    x509.ReasonFlags.certificate_hold: 6,
    x509.ReasonFlags.remove_from_crl: 8,
    x509.ReasonFlags.privilege_withdrawn: 9,
    x509.ReasonFlags.aa_compromise: 10,
}
_MIN_TIME = dt.datetime(1950, 1, 1, tzinfo=dt.UTC)


def der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


def tlv(tag: int, content: bytes) -> bytes:
    return bytes((tag,)) + der_length(len(content)) + content


def _der_time(moment: dt.datetime) -> bytes:
    """UTCTime through 2049, GeneralizedTime after (RFC 5280 §5.1.2.4), whole seconds."""
    moment = _utc(moment)
    if moment < _MIN_TIME:
        raise InputError(f"revocation time {moment:%Y-%m-%d} is before 1950")
    if moment.year < 2050:
        return tlv(0x17, moment.strftime("%y%m%d%H%M%SZ").encode())
    return tlv(0x18, moment.strftime("%Y%m%d%H%M%SZ").encode())


def encode_entry(
    serial: int, revoked_at: dt.datetime, reason: x509.ReasonFlags | None = None
) -> bytes:
    """The DER of one revokedCertificates element (RFC 5280 §5.1.2.6).

    ``unspecified`` is expressed by leaving the reason code out (RFC 5280 §5.3.1);
    ``removeFromCRL`` belongs only in delta CRLs and is refused.
    """
    if not isinstance(serial, int) or serial <= 0 or serial.bit_length() > 159:
        raise InputError(f"bad CRL entry: serial {serial!r} must be 1..2^159-1 (RFC 5280 §4.1.2.2)")
    if reason is x509.ReasonFlags.remove_from_crl:
        raise InputError(f"serial {serial:#x}: removeFromCRL cannot appear in a full CRL")
    content = tlv(0x02, serial.to_bytes(serial.bit_length() // 8 + 1, "big"))
    content += _der_time(revoked_at)
    if reason is not None and reason is not x509.ReasonFlags.unspecified:
        # Extensions { Extension { id-ce-cRLReasons, OCTET STRING { ENUMERATED code } } }
        extension = b"\x06\x03\x55\x1d\x15" + tlv(0x04, bytes((0x0A, 1, _RFC_REASON_CODES[reason])))
        content += tlv(0x30, tlv(0x30, extension))
    return tlv(0x30, content)
