"""RFC 2136 dynamic updates of SMIMEA records, signed with TSIG, over TCP.

One update replaces a whole owner name's SMIMEA set (delete the set, add each record)
in one message, which the server applies atomically: sending it twice is harmless, and
an empty set removes the name's records.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.exception
import dns.message
import dns.name
import dns.query
import dns.rcode
import dns.rdatatype
import dns.tsig
import dns.update

from mailpki.dns.settings import DnsSettings
from mailpki.dns.smimea import SmimeaRecord
from mailpki.errors import DnsError, DnsUnavailable

__all__ = ["DnsUpdater"]


class DnsUpdater:
    """Sends SMIMEA updates to the zone's primary server."""

    def __init__(self, settings: DnsSettings) -> None:
        self.settings = settings
        self._zone = dns.name.from_text(settings.zone + ".")

    def replace(self, owner: dns.name.Name, records: Sequence[SmimeaRecord]) -> None:
        """Make `owner`'s SMIMEA set exactly `records` (none: remove the name's records).

        DnsUnavailable: the server did not answer (retry later). DnsError: it answered
        with a refusal (TSIG key, update policy, not authoritative)."""
        if not owner.is_subdomain(self._zone):
            raise DnsError(f"{owner} is not in the zone {self.settings.zone}")
        update = dns.update.UpdateMessage(self._zone, keyring=self.settings.key.keyring())
        update.delete(owner, dns.rdatatype.SMIMEA)
        for record in records:
            update.add(owner, record.ttl, record.rdata)
        self._send(update)

    def _send(self, update: dns.update.UpdateMessage) -> None:
        server = self.settings.server
        try:
            response = dns.query.tcp(
                update, server.host, port=server.port, timeout=self.settings.timeout
            )
        except dns.tsig.PeerError as exc:  # BADKEY / BADSIG / BADTIME from the server
            raise DnsError(
                f"the DNS server {server} refused the TSIG key {self.settings.key.name!r}: "
                f"{exc.__class__.__name__} (check dns.tsig_key_file against the server's key)"
            ) from None
        except dns.tsig.BadSignature:
            raise DnsError(
                f"the answer of the DNS server {server} carries a bad TSIG signature "
                "(is dns.tsig_key_file the server's key?)"
            ) from None
        except dns.exception.Timeout:
            raise DnsUnavailable(f"the DNS server {server} did not answer in time") from None
        except (OSError, EOFError) as exc:
            raise DnsUnavailable(f"the DNS server {server} is unreachable: {exc}") from None
        except dns.exception.DNSException as exc:
            raise DnsError(f"the DNS server {server} sent an unusable answer: {exc}") from None
        rcode = response.rcode()
        if rcode != dns.rcode.NOERROR:
            hint = {
                dns.rcode.REFUSED: " (the update-policy does not grant this key SMIMEA here)",
                dns.rcode.NOTAUTH: f" (the TSIG key is refused, or the server is not "
                f"authoritative for {self.settings.zone})",
                dns.rcode.NOTZONE: f" (the name is outside {self.settings.zone})",
                dns.rcode.SERVFAIL: " (the server failed; see its log)",
            }.get(rcode, "")
            raise DnsError(
                f"the DNS server {server} refused the update: {dns.rcode.to_text(rcode)}{hint}"
            )
