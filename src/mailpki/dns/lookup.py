"""Finding a correspondent's certificate by SMIMEA, trusted only when DNSSEC-validated.

mailpki does not validate DNSSEC itself: it asks a validating resolver the user
configures (``--resolver`` or ``dns.resolver``; else the system's first nameserver)
with the DO and AD bits set and accepts the answer only when the resolver sets AD
(RFC 4035 3.2.3 / RFC 6840 5.7). Anything else, an answer without AD included, is
refused. The path to the resolver must itself be trusted: run it on the same host
(127.0.0.1) or reach it over a protected network.

Usable records are those of usage 3 (DANE-EE) or 1 (PKIX-EE) with selector 0 and
matching type 0: they carry the full certificate. Others (hashes, trust anchors) are
skipped: they cannot give the certificate to encrypt to. A DANE-EE certificate is
trusted because the validated record names it; a PKIX-EE one must also chain to a root
the user trusts (RFC 6698 2.1.1), so `certificates` takes the usage wanted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import dns.exception
import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.resolver
from cryptography import x509

from mailpki.dns.settings import ServerAddress
from mailpki.dns.smimea import FULL_CERTIFICATE, NO_HASH, owner_name
from mailpki.errors import DnsError, DnsNotValidated, DnsUnavailable

__all__ = ["DANE_EE", "PKIX_EE", "SmimeaLookup", "system_resolver"]

PKIX_EE, DANE_EE = 1, 3  # the usages whose record names the end-entity certificate


def system_resolver() -> ServerAddress:
    """The first nameserver of the system's resolver configuration."""
    try:
        nameservers = dns.resolver.Resolver(configure=True).nameservers
    except (dns.resolver.NoResolverConfiguration, OSError):
        nameservers = []
    if not nameservers:
        raise DnsError("no resolver configured: give --resolver IP:PORT or set dns.resolver")
    return ServerAddress(str(nameservers[0]))


@dataclass
class SmimeaLookup:
    """Asks one validating resolver for SMIMEA records (each address once per lookup
    object: the answers are kept for the command's lifetime)."""

    resolver: ServerAddress
    timeout: float = 5.0
    _answers: dict[str, list[tuple[int, x509.Certificate]]] = field(
        default_factory=dict, repr=False
    )

    def certificates(
        self, address: str, *, usages: tuple[int, ...] = (DANE_EE, PKIX_EE)
    ) -> list[x509.Certificate]:
        """The certificates published for `address` with one of `usages`; [] when the
        (validated) answer says there are none. DnsNotValidated when the answer is not
        DNSSEC-validated."""
        key = address.strip().lower()
        if key not in self._answers:
            self._answers[key] = self._query(address)
        return [cert for usage, cert in self._answers[key] if usage in usages]

    def _query(self, address: str) -> list[tuple[int, x509.Certificate]]:
        owner = owner_name(address)
        query = dns.message.make_query(owner, dns.rdatatype.SMIMEA, want_dnssec=True)
        query.flags |= dns.flags.AD | dns.flags.RD
        response = self._ask(query)
        rcode = response.rcode()
        if rcode not in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN):
            raise DnsError(
                f"the resolver {self.resolver} answered {dns.rcode.to_text(rcode)} for the "
                f"SMIMEA records of {address} (a bogus signature gives SERVFAIL)"
            )
        if not response.flags & dns.flags.AD:
            raise DnsNotValidated(
                f"refused: the SMIMEA answer for {address} from {self.resolver} is not "
                "DNSSEC-validated (no AD bit); use a validating resolver and a signed zone"
            )
        found: list[tuple[int, x509.Certificate]] = []
        for rrset in response.answer:
            if rrset.rdtype != dns.rdatatype.SMIMEA or rrset.name != owner:
                continue
            for rdata in rrset:
                if (
                    rdata.usage not in (PKIX_EE, DANE_EE)
                    or rdata.selector != FULL_CERTIFICATE
                    or rdata.mtype != NO_HASH
                ):
                    continue
                try:
                    found.append((rdata.usage, x509.load_der_x509_certificate(rdata.cert)))
                except ValueError:
                    continue  # not a certificate: nothing to encrypt to
        return found

    def _ask(self, query: dns.message.Message) -> dns.message.Message:
        host, port = self.resolver.host, self.resolver.port
        try:
            response = dns.query.udp(query, host, port=port, timeout=self.timeout)
            if response.flags & dns.flags.TC:  # a certificate rarely fits in 1232 bytes
                response = dns.query.tcp(query, host, port=port, timeout=self.timeout)
        except dns.exception.Timeout:
            raise DnsUnavailable(f"the resolver {self.resolver} did not answer in time") from None
        except (OSError, EOFError) as exc:
            raise DnsUnavailable(f"the resolver {self.resolver} is unreachable: {exc}") from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"the resolver {self.resolver} sent an unusable answer: {exc}") from None
        return response
