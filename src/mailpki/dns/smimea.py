"""SMIMEA records (RFC 8162): where a person's certificate lives in the DNS, and how.

The owner name of ``local@domain`` is the hex of SHA2-256 over the local part, truncated
to 28 octets, then ``._smimecert.`` and the domain. mailpki lower-cases the address
first (its lookups ignore case too), so ``Alice@example.com`` is published under the
name of ``alice``.

Each record is ``3 0 0 <certificate>``: certificate usage 3 (DANE-EE: the certificate
itself is what DNSSEC vouches for, no CA chain needed by the correspondent), selector 0
(the full certificate) and matching type 0 (the data is the certificate itself, not a
hash), so a correspondent both finds the certificate and trusts it through DNSSEC.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import dns.exception
import dns.name
import dns.rdataclass
import dns.rdatatype
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from dns.rdtypes.ANY.SMIMEA import SMIMEA

from mailpki.errors import InputError

__all__ = [
    "DANE_EE",
    "FULL_CERTIFICATE",
    "NO_HASH",
    "SmimeaRecord",
    "in_zone",
    "owner_name",
    "record_for",
]

DANE_EE, FULL_CERTIFICATE, NO_HASH = 3, 0, 0
_LABEL_OCTETS = 28
SERVICE_LABEL = "_smimecert"


def _split(address: str) -> tuple[str, str]:
    address = address.strip().lower()
    local, at, domain = address.rpartition("@")
    if not at or not local or not domain or len(address) > 320:
        raise InputError(f"{address!r} is not a mail address like alice@example.com")
    if any(ord(c) < 0x21 or ord(c) == 0x7F for c in address):
        raise InputError(f"{address!r} contains spaces or control characters")
    return local, domain.rstrip(".")


def owner_name(address: str) -> dns.name.Name:
    """The absolute owner name of an address's SMIMEA records (RFC 8162 section 3)."""
    local, domain = _split(address)
    label = hashlib.sha256(local.encode("utf-8")).hexdigest()[: _LABEL_OCTETS * 2]
    try:
        return dns.name.from_text(f"{label}.{SERVICE_LABEL}.{domain}.")
    except (dns.exception.DNSException, UnicodeError) as exc:
        raise InputError(f"the domain of {address!r} is not a DNS name: {exc}") from None


def in_zone(address: str, zone: str) -> bool:
    """True when the address's owner name lies in `zone` (a DNS update can reach it)."""
    return owner_name(address).is_subdomain(dns.name.from_text(zone.rstrip(".") + "."))


@dataclass(frozen=True)
class SmimeaRecord:
    """One SMIMEA resource record for one certificate."""

    owner: dns.name.Name
    ttl: int
    rdata: SMIMEA

    def zone_line(self) -> str:
        """The record as one zone-file line (BIND, NSD, Knot and nsupdate read it)."""
        return f"{self.owner.to_text()} {self.ttl} IN SMIMEA {self.rdata.to_text()}"


def record_for(address: str, certificate: x509.Certificate | bytes, *, ttl: int) -> SmimeaRecord:
    """The ``3 0 0`` record publishing `certificate` (an object or its DER) for `address`."""
    der = (
        certificate.public_bytes(Encoding.DER)
        if isinstance(certificate, x509.Certificate)
        else certificate
    )
    rdata = SMIMEA(  # type: ignore[no-untyped-call]
        dns.rdataclass.IN, dns.rdatatype.SMIMEA, DANE_EE, FULL_CERTIFICATE, NO_HASH, der
    )
    return SmimeaRecord(owner_name(address), ttl, rdata)
