"""Finding a recipient's encryption certificate.

Sources are asked in order (with an instance: its own valid certificates and its
directory's published ones; then the local contacts; then a mailpki public
certificate directory over HTTP) and the first source with a usable certificate wins;
among several, the one valid longest. Usable means: valid now, for emailProtection,
able to encrypt, for exactly that address, not revoked, and chaining to the trust
anchors, except for contacts, which the user pinned by adding them.
"""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs7

from mailpki.dns.lookup import DANE_EE, PKIX_EE, SmimeaLookup
from mailpki.errors import InputError, NotFoundError
from mailpki.smime.contacts import ContactStore, addresses_of
from mailpki.smime.trust import (
    CertificateVerdict,
    RevocationChecker,
    TrustAnchors,
    check_certificate,
)

__all__ = ["RecipientFinder", "Source", "certdir_source", "contacts_source", "smimea_sources"]

MAX_FETCH_BYTES = 256 * 1024


@dataclass(frozen=True)
class Source:
    name: str
    lookup: Callable[[str], list[x509.Certificate]]
    pinned: bool = False  # the user vouched for these certificates (contacts)


@dataclass
class Found:
    address: str
    certificate: x509.Certificate
    source: str
    verdict: CertificateVerdict


@dataclass
class RecipientFinder:
    sources: Sequence[Source]
    anchors: TrustAnchors | None
    revocation: RevocationChecker | None = None
    rejected: list[str] = field(default_factory=list)  # why candidates were passed over

    def find(self, address: str, *, at: datetime | None = None) -> Found:
        """The certificate to encrypt to `address`; NotFoundError says where it looked
        and why each candidate was refused."""
        address = address.strip().lower()
        if "@" not in address or len(address) > 320:
            raise InputError(f"{address!r} is not a mail address")
        when = at or datetime.now(UTC)
        self.rejected = []
        for source in self.sources:
            try:
                candidates = source.lookup(address)
            except (OSError, ValueError, InputError) as exc:
                self.rejected.append(f"{source.name}: not reachable ({exc})")
                continue
            usable: list[Found] = []
            chain = [c for c in candidates if address not in addresses_of(c)]
            for certificate in (c for c in candidates if address in addresses_of(c)):
                verdict = self._check(certificate, address, when, chain, pinned=source.pinned)
                if verdict is None:
                    self.rejected.append(f"{source.name}: no trust anchors (--trust or --home)")
                elif verdict.valid:
                    usable.append(Found(address, certificate, source.name, verdict))
                else:
                    self.rejected.append(
                        f"{source.name}: {certificate.serial_number:x}: "
                        + "; ".join(verdict.problems)
                    )
            if usable:
                return max(usable, key=lambda f: f.certificate.not_valid_after_utc)
        detail = f" ({'; '.join(self.rejected)})" if self.rejected else ""
        looked = ", ".join(s.name for s in self.sources) or "nowhere"
        raise NotFoundError(f"no usable certificate for {address} (looked in: {looked}){detail}")

    def _check(
        self,
        certificate: x509.Certificate,
        address: str,
        when: datetime,
        chain: list[x509.Certificate],
        *,
        pinned: bool,
    ) -> CertificateVerdict | None:
        """The full check against the anchors (revocation included); for a pinned
        certificate (a contact, a --cert file) that chains to none of the anchors, the same
        checks with the certificate itself as the anchor: the user vouched for it."""
        verdict = None
        if self.anchors is not None:
            verdict = check_certificate(
                certificate,
                self.anchors,
                purpose="encrypt",
                address=address,
                at=when,
                extra_intermediates=chain,
                revocation=self.revocation,
            )
            # No chain at all (not even with its own faults set aside): a foreign CA.
            if verdict.valid or not pinned or verdict.chain:
                return verdict
        if not pinned:
            return verdict
        return check_certificate(
            certificate,
            TrustAnchors(roots=(certificate,)),
            purpose="encrypt",
            address=address,
            at=when,
            revocation=self.revocation,
        )


def contacts_source(store: ContactStore) -> Source:
    def lookup(address: str) -> list[x509.Certificate]:
        return [c.certificate for c in store.find(address)]

    return Source("contacts", lookup, pinned=True)


def certdir_source(
    base_url: str, *, timeout: float = 10.0, opener: Callable[..., Any] | None = None
) -> Source:
    """A mailpki public certificate directory: GET {base_url}/certs/{address}.p7c (the
    certificate with its issuing and root CA, so the chain can be built)."""
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"{base_url!r} is not an http(s) URL of a certificate directory")
    base = base_url.rstrip("/")
    fetch: Callable[..., Any] = opener or urllib.request.urlopen

    def lookup(address: str) -> list[x509.Certificate]:
        url = f"{base}/certs/{urllib.parse.quote(address, safe='@')}.p7c"
        try:
            with fetch(url, timeout=timeout) as response:
                data = response.read(MAX_FETCH_BYTES + 1)
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return []
            raise OSError(f"HTTP {exc.code} from {url}") from None
        if len(data) > MAX_FETCH_BYTES:
            raise ValueError(f"the answer of {url} is too large")
        return pkcs7.load_der_pkcs7_certificates(data)

    return Source(f"certificate directory {base}", lookup)


def smimea_sources(lookup: SmimeaLookup) -> list[Source]:
    """SMIMEA records (RFC 8162) from a validating resolver; only a DNSSEC-validated
    answer is used (the lookup raises DnsNotValidated otherwise, which ends the search
    with that reason). Usage 3 (DANE-EE): the validated record vouches for the
    certificate itself, so it counts as pinned (no chain to a known root needed; every
    other check still applies). Usage 1 (PKIX-EE): the certificate must also chain to
    the trust anchors. One query serves both."""
    return [
        Source(
            f"DNS SMIMEA (DANE-EE) via {lookup.resolver}",
            lambda address: lookup.certificates(address, usages=(DANE_EE,)),
            pinned=True,
        ),
        Source(
            f"DNS SMIMEA (PKIX-EE) via {lookup.resolver}",
            lambda address: lookup.certificates(address, usages=(PKIX_EE,)),
        ),
    ]
