"""The Key Recovery Service's own settings file (`KRS_HOME/service.toml`)."""

from __future__ import annotations

import re

from mailpki.base.settings import (
    Setting,
    SettingsFile,
    choice,
    database_url_setting,
    int_range,
    optional_text,
    text,
)
from mailpki.notify.settings import SMTP_RENAMED, smtp_schema

SERVICE_FILE = "service.toml"
_MAIL_RE = re.compile(r"[^@\s,<>]+@[^@\s,<>]+\.[^@\s,<>]+")


def mail_list(value: str) -> str:
    """Comma-separated mail addresses (may be empty)."""
    items = [item.strip().lower() for item in value.split(",") if item.strip()]
    for item in items:
        if not _MAIL_RE.fullmatch(item):
            raise ValueError(f"{item!r} is not a mail address")
    return ",".join(items)


def choice_label(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9]{1,32}", value):
        raise ValueError("must be 1 to 32 characters from a-z and 0-9")
    return value


def positive_float(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise ValueError("must be a number") from None
    if not 1.0 <= number <= 1000.0:
        raise ValueError("must be between 1 and 1000")
    return number


def role_arc(value: str) -> str:
    from mailpki.policy.roles import check_arc

    try:
        return check_arc(value.strip())
    except Exception as exc:
        raise ValueError(str(exc)) from None


SCHEMA: dict[str, Setting] = {
    "service.name": Setting(text, "Key Recovery Service", "shown in messages and alerts"),
    "database.url": Setting(
        database_url_setting, "sqlite:///krs.db", "the service's own database (not the CA's)"
    ),
    "keys.backend": Setting(choice("file", "pkcs11"), "file", "where the transport key lives"),
    "keys.passphrase_file": Setting(
        optional_text, "secrets/krs-passphrase", "passphrase of the encrypted key files"
    ),
    "keys.passphrase_env": Setting(optional_text, "", "environment variable with that passphrase"),
    "keys.pkcs11_module": Setting(optional_text, "", "PKCS#11 module path"),
    "keys.pkcs11_token": Setting(optional_text, "", "PKCS#11 token label"),
    "keys.pkcs11_pin_file": Setting(optional_text, "", "file holding the token PIN"),
    "keys.label_prefix": Setting(
        choice_label, "krs", "prefix of the key labels (several services can share a token)"
    ),
    "transport.key_type": Setting(
        choice("rsa3072", "rsa4096"), "rsa3072", "RSA key that unwraps recovery blocks"
    ),
    "transport.oaep_hash": Setting(
        choice("sha1", "sha256", "sha384", "sha512"),
        "sha256",
        "RSA-OAEP hash of recovery blocks (SoftHSM2 2.6 unwraps only sha1)",
    ),
    "trust.ca_file": Setting(
        text,
        "trust.pem",
        "the instance's issuing CA and root (PEM) that admin certificates chain to",
    ),
    "trust.role_oid_arc": Setting(
        role_arc, "1.3.6.1.4.1.32473.1", "policy OID arc of admin roles (same as the instance's)"
    ),
    "recovery.quorum": Setting(int_range(1, 20), 2, "approvals by distinct officers per recovery"),
    "recovery.request_ttl_hours": Setting(
        int_range(1, 24 * 30), 72, "a request not fetched by then expires"
    ),
    "recovery.message_max_age_seconds": Setting(
        int_range(10, 3600), 300, "signed messages older (or newer) than this are refused"
    ),
    "alerts.contacts": Setting(
        mail_list, "", "who is alerted (the first that is not the requesting admin)"
    ),
    "alerts.per_admin_hour": Setting(int_range(1, 10_000), 3, "recoveries by one admin per hour"),
    "alerts.per_admin_day": Setting(int_range(1, 100_000), 10, "recoveries by one admin per day"),
    "alerts.total_day": Setting(int_range(1, 1_000_000), 25, "recoveries by everyone per day"),
    "alerts.average_multiple": Setting(
        positive_float, 3.0, "alert when a day exceeds this multiple of the trailing daily average"
    ),
    "alerts.average_days": Setting(int_range(1, 365), 30, "days of the trailing average"),
    "alerts.average_minimum": Setting(
        int_range(1, 10_000), 5, "the average rule needs at least this many recoveries in a day"
    ),
    "alerts.hold": Setting(
        choice("true", "false"), "true", "hold further recoveries until the contact confirms"
    ),
    **smtp_schema(sender_default="krs@localhost.localdomain", sender_help="From of alerts"),
    "audit.checkpoint_every": Setting(int_range(1, 1_000_000), 20, "records between checkpoints"),
}


class ServiceConfig(SettingsFile):
    schema = SCHEMA
    file_name = SERVICE_FILE
    missing_hint = "no key recovery service (run 'mailpki recovery-service init' first)"
    renamed = SMTP_RENAMED
    env_prefix = "MAILPKI_KRS_"
