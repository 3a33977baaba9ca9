"""SMIMEA use cases of an instance: the records to publish, and sending them now."""

from __future__ import annotations

from collections.abc import Callable

from mailpki.dns.publisher import DnsReport
from mailpki.dns.smimea import SmimeaRecord, owner_name, record_for
from mailpki.errors import ConfigError, NotFoundError
from mailpki.instance.instance import Instance


def smimea_records(instance: Instance, email: str | None = None) -> list[SmimeaRecord]:
    """The SMIMEA records of every address with a valid certificate (or of one)."""
    ttl = int(instance.config.get("dns.ttl"))
    if email is not None:
        owner_name(email)  # InputError for what is not a mail address
    addresses = [email.strip().lower()] if email else instance.ca.subscriber_addresses()
    records = [
        record_for(address, der, ttl=ttl)
        for address in addresses
        for der in instance.ca.valid_certificates(address)
    ]
    if email and not records:
        raise NotFoundError(f"{email} has no valid certificate: no SMIMEA record to publish")
    return records


def sync(
    instance: Instance,
    *,
    actor: str,
    progress: Callable[[int, int], None] | None = None,
) -> DnsReport:
    """Deliver queued SMIMEA updates now, then send every address's full set;
    `progress(done, total)` after each address."""
    publisher = instance.dns_publisher
    if publisher is None:
        raise ConfigError(
            "SMIMEA updates are off: set dns.update_server, dns.zone and dns.tsig_key_file "
            "('mailpki dns records' prints the records to add by hand)"
        )
    addresses = instance.ca.subscriber_addresses()
    report = publisher.sync(
        addresses,
        progress=(lambda done: progress(done, len(addresses))) if progress else None,
    )
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "dns.synced",
            actor=actor,
            data={
                "zone": publisher.settings.zone,
                "server": str(publisher.settings.server),
                "updated": report.updated,
                "failed": report.failed,
            },
        )
    return report
