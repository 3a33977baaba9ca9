"""Mail to people: notices to subscribers and alerts to contacts, through a durable outbox."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailpki.base.lazy import lazy_exports

if TYPE_CHECKING:
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

__getattr__ = lazy_exports(
    __name__,
    {
        "DeliveryReport": "mail",
        "FolderTransport": "mail",
        "MailSettings": "mail",
        "SMTPTransport": "mail",
        "Transport": "mail",
        "TransportUnavailable": "mail",
        "build_message": "mail",
        "deliver_pending": "mail",
        "is_plain_address": "mail",
        "pending_count": "mail",
        "queue": "mail",
        "transport_for": "mail",
    },
)
