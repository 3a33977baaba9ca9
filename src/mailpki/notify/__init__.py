"""Mail to people: notices to subscribers and alerts to contacts, through a durable outbox."""

from __future__ import annotations

from mailpki.notify.mail import (
    DeliveryReport,
    FolderTransport,
    MailSettings,
    SMTPTransport,
    Transport,
    TransportUnavailable,
    build_message,
    deliver_pending,
    is_plain_address,
    pending_count,
    queue,
    transport_for,
)

__all__ = [
    "DeliveryReport",
    "FolderTransport",
    "MailSettings",
    "SMTPTransport",
    "Transport",
    "TransportUnavailable",
    "build_message",
    "deliver_pending",
    "is_plain_address",
    "pending_count",
    "queue",
    "transport_for",
]
