"""The S/MIME toolkit with or without an instance: trust anchors, revocation checks,
where recipients' certificates come from, the contacts store, SMTP submission.

With an instance (`--home`): its root is trusted, its own certificates are checked
against its database (OCSP answered locally), recipients are looked up in its valid
certificates and its directory first. Without one, everything comes from files
(`--trust`, `--cert`) and the contacts folder.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from email.utils import getaddresses
from pathlib import Path

from cryptography import x509

from mailpki.dns.lookup import SmimeaLookup, system_resolver
from mailpki.dns.settings import parse_server
from mailpki.errors import InputError, MailError, NotFoundError
from mailpki.instance.instance import Instance
from mailpki.notify.mail import MailSettings, SMTPTransport
from mailpki.smime.contacts import ContactStore, addresses_of, default_contacts_folder
from mailpki.smime.mime import header_value, parse
from mailpki.smime.recipients import (
    RecipientFinder,
    Source,
    certdir_source,
    contacts_source,
    smimea_sources,
)
from mailpki.smime.trust import RevocationChecker, TrustAnchors, can_encrypt, http_fetch

__all__ = [
    "Toolkit",
    "envelope_recipients",
    "envelope_sender",
    "load_certificates",
    "sender_encryption_certificate",
    "submit",
]

MAX_CERT_FILE = 1024 * 1024


def load_certificates(paths: Sequence[Path], what: str) -> list[x509.Certificate]:
    """Certificates from PEM (one or more) or DER files; InputError names the file."""
    found: list[x509.Certificate] = []
    for path in paths:
        try:
            data = path.read_bytes()[: MAX_CERT_FILE + 1]
        except OSError as exc:
            raise InputError(f"cannot read {what} {path}: {exc.strerror}") from None
        if len(data) > MAX_CERT_FILE:
            raise InputError(f"{what} {path} is too large")
        try:
            if b"-----BEGIN" in data:
                found.extend(x509.load_pem_x509_certificates(data))
            else:
                found.append(x509.load_der_x509_certificate(data))
        except ValueError:
            raise InputError(f"{what} {path} holds no certificate (PEM or DER)") from None
    return found


@dataclass
class Toolkit:
    """Everything the mail commands need, built once per command."""

    anchors: TrustAnchors | None  # None: no --trust and no instance (contacts only)
    revocation: RevocationChecker
    contacts: ContactStore
    sources: list[Source] = field(default_factory=list)
    mail_settings: MailSettings | None = None

    @classmethod
    def build(
        cls,
        *,
        instance: Instance | None,
        trust: Sequence[Path] = (),
        certificates: Sequence[Path] = (),
        contacts_folder: Path | None = None,
        certdir_url: str | None = None,
        dns: bool = False,
        resolver: str | None = None,
    ) -> Toolkit:
        roots: list[x509.Certificate] = []
        intermediates: list[x509.Certificate] = []
        for certificate in load_certificates(trust, "trust anchor file"):
            (roots if certificate.issuer == certificate.subject else intermediates).append(
                certificate
            )
        sources: list[Source] = []
        explicit = load_certificates(certificates, "certificate file")
        if explicit:
            sources.append(
                Source(
                    "--cert files",
                    lambda address: [c for c in explicit if address in addresses_of(c)],
                    pinned=True,  # named on the command line: the user vouches for them
                )
            )
        folder = contacts_folder or default_contacts_folder()
        settings = None
        if instance is not None:
            roots.append(instance.hierarchy.root)
            intermediates += [cert for _, cert in instance.hierarchy.generations]
            sources += _instance_sources(instance)
            folder = contacts_folder or instance.home / "contacts"
            settings = instance.mail_settings
        contacts = ContactStore(folder)
        sources.append(contacts_source(contacts))
        if certdir_url:
            sources.append(certdir_source(certdir_url))
        if dns:
            sources += smimea_sources(_smimea_lookup(instance, resolver))
        revocation = RevocationChecker(fetch=_local_answers(instance) if instance else None)
        return cls(
            anchors=(
                TrustAnchors(roots=tuple(roots), intermediates=tuple(intermediates))
                if roots
                else None
            ),
            revocation=revocation,
            contacts=contacts,
            sources=sources,
            mail_settings=settings,
        )

    def finder(self) -> RecipientFinder:
        return RecipientFinder(self.sources, self.anchors, self.revocation)


def sender_encryption_certificate(
    signer: x509.Certificate, explicit: Path | None, toolkit: Callable[[], Toolkit]
) -> tuple[x509.Certificate | None, str]:
    """(the certificate a signature should ask correspondents to encrypt to, how it was
    chosen). `explicit` (--encryption-cert) wins; else the signer's own certificate if
    it can encrypt (single key); else, in dual-key mode, the sender's encryption
    certificate as the instance or the contacts know it (`toolkit` is only built then).
    None when there is none."""
    signer_addresses = set(addresses_of(signer))
    if explicit is not None:
        found = load_certificates([explicit], "encryption certificate file")
        if len(found) != 1:
            raise InputError(f"{explicit} must hold exactly one certificate")
        chosen = found[0]
        if not signer_addresses & set(addresses_of(chosen)):
            raise InputError(
                f"the encryption certificate in {explicit} is not for "
                f"{', '.join(sorted(signer_addresses)) or 'the signer'}"
            )
        if not can_encrypt(chosen):
            raise InputError(f"the certificate in {explicit} does not allow encryption")
        return chosen, f"from {explicit}"
    if can_encrypt(signer):
        return signer, "the signing certificate (single key)"
    finder = toolkit().finder()
    for address in sorted(signer_addresses):
        try:
            hit = finder.find(address)
        except NotFoundError:
            continue
        return hit.certificate, f"found in {hit.source}"
    return None, "none found: the signing certificate cannot encrypt (give --encryption-cert)"


def _smimea_lookup(instance: Instance | None, resolver: str | None) -> SmimeaLookup:
    """--resolver, else the instance's dns.resolver, else the system's resolver."""
    configured = str(instance.config.get("dns.resolver")) if instance is not None else ""
    timeout = float(instance.config.get("dns.timeout_seconds")) if instance is not None else 5.0
    if resolver:
        address = parse_server(resolver)
    elif configured:
        address = parse_server(configured)
    else:
        address = system_resolver()
    return SmimeaLookup(address, timeout=timeout)


def _instance_sources(instance: Instance) -> list[Source]:
    def issued(address: str) -> list[x509.Certificate]:
        return [
            x509.load_der_x509_certificate(der) for der in instance.ca.valid_certificates(address)
        ]

    def published(address: str) -> list[x509.Certificate]:
        directory = instance.directories.for_mail(address)
        entry = instance.directories.find_by_mail(address)
        if directory is None or entry is None:
            return []
        return [x509.load_der_x509_certificate(der) for der in directory.certificates(entry.dn)]

    return [Source("this instance", issued), Source("the directory", published)]


def _local_answers(instance: Instance) -> Callable[[str, bytes | None, str], bytes]:
    """A fetch for the revocation checker that answers this instance's own OCSP and CRL
    URLs from its database (no server needed, never stale) and fetches others by HTTP."""
    base = instance.ca_settings.base_url.rstrip("/")

    def fetch(url: str, data: bytes | None, content_type: str) -> bytes:
        if url.rstrip("/") == f"{base}/ocsp" and data is not None:
            return instance.ca.answer_ocsp(data)
        if url.startswith(f"{base}/crl/"):
            stored = instance.ca.stored_crl(url.rsplit("/", 1)[1])
            if stored is not None:
                return stored.der
        return http_fetch(url, data, content_type)

    return fetch


def envelope_recipients(message: bytes) -> list[str]:
    """Every address in the message's To, Cc and Bcc, lower case, once each."""
    entity = parse(message)
    found = (
        addr.strip().lower()
        for name in ("To", "Cc", "Bcc")
        for _, addr in getaddresses([header_value(entity, name) or ""])
        if "@" in addr
    )
    return list(dict.fromkeys(found))


def envelope_sender(message: bytes) -> str:
    senders = [a for _, a in getaddresses([header_value(parse(message), "From") or ""]) if "@" in a]
    if len(senders) != 1:
        raise InputError("the message needs exactly one From address")
    return senders[0]


def submit(
    message: bytes, settings: MailSettings, *, extra_recipients: Sequence[str] = ()
) -> list[str]:
    """Send a finished message over SMTP to everyone in To, Cc and Bcc (and
    `extra_recipients`); Bcc is dropped from the message first. Returns the recipients."""
    recipients = list(
        dict.fromkeys([*envelope_recipients(message), *(a.lower() for a in extra_recipients)])
    )
    sender = envelope_sender(message)
    if not recipients:
        raise InputError("the message has no To, Cc or Bcc address")
    if not settings.smtp_host:
        raise MailError("no SMTP server: set smtp.host (or pass --smtp-host)")
    entity = parse(message)
    # The transport headers are outside any signature: dropping Bcc breaks nothing.
    head = b"\r\n".join(raw for key, raw in entity.fields if key != "bcc")
    with SMTPTransport(settings) as transport:
        transport.send_raw(sender, recipients, head + b"\r\n\r\n" + entity.body)
    return recipients
