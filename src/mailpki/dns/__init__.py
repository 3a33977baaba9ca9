"""SMIMEA in the DNS (RFC 8162): records for issued certificates, RFC 2136 dynamic
updates through the durable outbox, and DNSSEC-validated lookups of correspondents."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailpki.base.lazy import lazy_exports

if TYPE_CHECKING:
    from mailpki.dns.lookup import (
        SmimeaLookup,
        system_resolver,
    )
    from mailpki.dns.publisher import (
        DnsPublisher,
        DnsReport,
        queue_update,
    )
    from mailpki.dns.settings import (
        DnsSettings,
        ServerAddress,
        TsigKey,
        dns_schema,
        dns_settings_from,
        parse_server,
    )
    from mailpki.dns.smimea import (
        SmimeaRecord,
        owner_name,
        record_for,
    )

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

__getattr__ = lazy_exports(
    __name__,
    {
        "DnsPublisher": "publisher",
        "DnsReport": "publisher",
        "DnsSettings": "settings",
        "ServerAddress": "settings",
        "SmimeaLookup": "lookup",
        "SmimeaRecord": "smimea",
        "TsigKey": "settings",
        "dns_schema": "settings",
        "dns_settings_from": "settings",
        "owner_name": "smimea",
        "parse_server": "settings",
        "queue_update": "publisher",
        "record_for": "smimea",
        "system_resolver": "lookup",
    },
)
