"""SMIMEA in the DNS (RFC 8162): records for issued certificates, RFC 2136 dynamic
updates through the durable outbox, and DNSSEC-validated lookups of correspondents."""

from __future__ import annotations

from mailpki.dns.lookup import SmimeaLookup, system_resolver
from mailpki.dns.publisher import DnsPublisher, DnsReport, queue_update
from mailpki.dns.settings import (
    DnsSettings,
    ServerAddress,
    TsigKey,
    dns_schema,
    dns_settings_from,
    parse_server,
)
from mailpki.dns.smimea import SmimeaRecord, owner_name, record_for

__all__ = [
    "DnsPublisher",
    "DnsReport",
    "DnsSettings",
    "ServerAddress",
    "SmimeaLookup",
    "SmimeaRecord",
    "TsigKey",
    "dns_schema",
    "dns_settings_from",
    "owner_name",
    "parse_server",
    "queue_update",
    "record_for",
    "system_resolver",
]
