"""A local store of correspondents' certificates: one PEM file per certificate.

Certificates come from signed mails (`contacts add-from-signed`), whose signature was
checked first, or from a file. A folder of PEM files is easy to inspect, back up and
share; the store holds only public certificates.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from mailpki.base.files import write_atomically
from mailpki.errors import InputError, NotFoundError

__all__ = ["Contact", "ContactStore", "addresses_of", "default_contacts_folder"]

MAX_CONTACT_BYTES = 64 * 1024


def default_contacts_folder() -> Path:
    """$XDG_DATA_HOME/mailpki/contacts (~/.local/share/mailpki/contacts)."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "mailpki" / "contacts"


def addresses_of(certificate: x509.Certificate) -> list[str]:
    """The certificate's mail addresses (rfc822Name SANs), lower case."""
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return [str(a).lower() for a in san.value.get_values_for_type(x509.RFC822Name)]


def _fingerprint(certificate: x509.Certificate) -> str:
    return hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()


@dataclass(frozen=True)
class Contact:
    fingerprint: str
    addresses: tuple[str, ...]
    subject: str
    not_after: datetime
    certificate: x509.Certificate

    @property
    def expired(self) -> bool:
        return self.not_after <= datetime.now(UTC)


def _contact(certificate: x509.Certificate) -> Contact:
    return Contact(
        fingerprint=_fingerprint(certificate),
        addresses=tuple(addresses_of(certificate)),
        subject=certificate.subject.rfc4514_string(),
        not_after=certificate.not_valid_after_utc,
        certificate=certificate,
    )


class ContactStore:
    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def add(self, certificate: x509.Certificate) -> Contact:
        """Keep an S/MIME certificate (it must name a mail address and allow
        emailProtection); adding one twice keeps one copy."""
        if not addresses_of(certificate):
            raise InputError("the certificate names no mail address: not an S/MIME certificate")
        try:
            usages = certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
            if ExtendedKeyUsageOID.EMAIL_PROTECTION not in usages:
                raise InputError("the certificate is not for secure mail (no emailProtection)")
        except x509.ExtensionNotFound:
            pass  # RFC 5280: no EKU extension means any purpose
        contact = _contact(certificate)
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        write_atomically(
            self.folder / f"{contact.fingerprint}.pem", certificate.public_bytes(Encoding.PEM)
        )
        return contact

    def all(self) -> list[Contact]:
        if not self.folder.is_dir():
            return []
        contacts = []
        for path in sorted(self.folder.glob("*.pem")):
            try:
                if path.stat().st_size > MAX_CONTACT_BYTES:
                    continue
                contacts.append(_contact(x509.load_pem_x509_certificate(path.read_bytes())))
            except (OSError, ValueError):
                continue  # a stray or damaged file is not a contact
        return sorted(contacts, key=lambda c: (c.addresses, c.not_after))

    def find(self, address: str) -> list[Contact]:
        wanted = address.strip().lower()
        return [c for c in self.all() if wanted in c.addresses]

    def remove(self, what: str) -> list[Contact]:
        """Remove by mail address (every certificate for it) or by fingerprint (or a
        unique prefix of at least 8 hex digits)."""
        what = what.strip().lower()
        if "@" in what:
            chosen = self.find(what)
        else:
            if len(what) < 8 or any(ch not in "0123456789abcdef" for ch in what):
                raise InputError("give a mail address or at least 8 hex digits of a fingerprint")
            chosen = [c for c in self.all() if c.fingerprint.startswith(what)]
            if len(chosen) > 1:
                raise InputError(f"{what} matches {len(chosen)} certificates: give more digits")
        if not chosen:
            raise NotFoundError(f"no contact certificate for {what}")
        for contact in chosen:
            (self.folder / f"{contact.fingerprint}.pem").unlink(missing_ok=True)
        return chosen
