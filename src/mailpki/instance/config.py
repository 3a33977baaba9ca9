"""The instance configuration: a TOML file with a fixed, checked schema.

Secrets never live here: the key passphrase comes from a file or an environment
variable that the configuration only names.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

from mailpki.base.settings import (
    Setting,
    SettingsFile,
    choice,
    database_url_setting,
    http_url,
    int_range,
    optional_http_url,
    optional_text,
    text,
)
from mailpki.dns.settings import dns_schema
from mailpki.errors import ConfigError
from mailpki.keystore.key_types import CA_KEY_TYPES, KEY_TYPES
from mailpki.notify.settings import SMTP_RENAMED, smtp_schema
from mailpki.recovery.config import role_arc

CONFIG_FILE = "config.toml"


def pki_url_from(base_url: str) -> str:
    """CDP and AIA are plain http (S/MIME BR 7.1.2.3): an https portal maps to http on the same host."""
    parts = urlsplit(base_url)
    if parts.scheme == "http":
        return base_url
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}{parts.path}".rstrip("/")


def _org_id(value: str) -> str:
    # S/MIME BR 7.1.4.2.2: scheme (NTR, VAT, PSD, LEI, GOV, INT) + country [+ state] - reference.
    value = value.strip()
    if value and not re.fullmatch(
        r"(NTR|VAT|PSD|LEI|GOV|INT)[A-Z]{2}(\+[A-Z0-9]{1,3})?-[^\s]{1,60}", value
    ):
        raise ValueError(
            "must be an S/MIME BR organisation identifier such as NTRGB-12345678, "
            "VATDE-123456789 or LEIXG-<your LEI>"
        )
    return value


def _replica_url(value: str) -> str:
    value = value.strip()
    if value and not value.startswith("postgresql"):
        raise ValueError("must be a postgresql+psycopg://USER@HOST:PORT/DB URL of a replica")
    return value


def _networks(value: str) -> str:
    import ipaddress

    items = [item.strip() for item in value.split(",") if item.strip()]
    for item in items:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return ",".join(items)


_MAIL_RE = re.compile(r"[^@\s,<>\"]{1,64}@[^@\s,<>\"]{1,255}")


def _mail_list(value: str) -> str:
    """Comma-separated mail addresses (empty allowed)."""
    addresses = [a.strip() for a in value.split(",") if a.strip()]
    for address in addresses:
        if not _MAIL_RE.fullmatch(address):
            raise ValueError(f"{address[:80]!r} is not a mail address")
    return ",".join(addresses)


def notice_days(value: str) -> str:
    """`30,7,1`: distinct whole days between 1 and 365, kept largest first."""
    parts = [p.strip() for p in value.split(",")]
    if not value.strip() or any(not p.isdigit() for p in parts):
        raise ValueError("must be whole days separated by commas, e.g. 30,7,1")
    days = sorted({int(p) for p in parts}, reverse=True)
    if len(days) != len(parts) or not all(1 <= d <= 365 for d in days) or len(days) > 10:
        raise ValueError("must be at most 10 distinct days, each between 1 and 365")
    return ",".join(str(d) for d in days)


def _check_in(module: str, name: str) -> Callable[[str], str]:
    """The check `name` of `module`, imported when a value is set: the modules holding
    these checks are heavy (SQLAlchemy, Kerberos), most instances leave the settings
    empty, and a command that only loads the configuration should not import them."""

    def check(value: str) -> str:
        if not value.strip():
            return ""
        found: Callable[[str], str] = getattr(importlib.import_module(module), name)
        return found(value)

    return check


def _checked(check: Callable[[str], str]) -> Callable[[str], str]:
    """A check that raises ConfigError, as a setting parser (those raise ValueError)."""

    def parse(value: str) -> str:
        try:
            return check(value)
        except ConfigError as exc:
            raise ValueError(str(exc)) from None

    return parse


SCHEMA: dict[str, Setting] = {
    "instance.org": Setting(text, None, "organisation name, used in CA names"),
    "instance.domain": Setting(text, None, "main mail domain"),
    "instance.org_id": Setting(
        _org_id,
        "",
        "organizationIdentifier for sponsor-validated certificates, e.g. NTRGB-12345678",
    ),
    "database.url": Setting(
        database_url_setting,
        "sqlite:///mailpki.db",
        "SQLAlchemy URL; sqlite paths are relative to the home",
    ),
    "database.read_url": Setting(
        _replica_url,
        "",
        "a PostgreSQL streaming replica for OCSP, the certificate directory, CRLs and searches",
    ),
    "database.read_max_lag_seconds": Setting(
        int_range(0, 3600), 5, "reads fall back to the primary when the replica lags more"
    ),
    "web.base_url": Setting(
        http_url, "http://localhost:8080", "public URL put in links, CDP and AIA"
    ),
    "web.pki_base_url": Setting(
        optional_http_url,
        "",
        "URL for CDP and AIA if not derived from web.base_url (must be http://)",
    ),
    "web.certdir_rate_per_minute": Setting(
        int_range(0, 100_000),
        30,
        "certificate directory lookups per minute per client address (0 turns it off)",
    ),
    "web.metrics_allow": Setting(
        _networks,
        "127.0.0.1/32,::1/128",
        "addresses or networks (comma-separated) that may read /metrics",
    ),
    "log.format": Setting(
        choice("plain", "json"),
        "plain",
        "what `serve` logs: plain lines, or one JSON object a line",
    ),
    "api.rate_per_minute": Setting(
        int_range(1, 1_000_000), 600, "JSON API calls per token per minute (per node)"
    ),
    "portal.logon": Setting(
        choice("directory,pin", "directory", "pin"),
        "directory,pin",
        "how people log on to the enrollment portal: directory password, HR PIN, or both",
    ),
    "portal.dual_key": Setting(
        choice("true", "false"),
        "true",
        "offer dual-key enrollment (a signing key never escrowed + an escrowed encryption key)",
    ),
    "portal.session_idle_minutes": Setting(
        int_range(1, 240), 15, "a portal session ends after this long without a request"
    ),
    "portal.session_hours": Setting(int_range(1, 24), 2, "a portal session ends after this long"),
    "portal.download_minutes": Setting(
        int_range(1, 1440),
        15,
        "a PKCS#12 download link works once and this long; an unused one's certificate is revoked",
    ),
    "portal.min_password_length": Setting(
        int_range(8, 128), 12, "shortest PKCS#12 password a person may choose"
    ),
    "portal.officer_groups": Setting(
        optional_text,
        "",
        "comma-separated directory groups whose members are officers in the operator console "
        "at /admin: they decide queued requests (empty: nobody by group)",
    ),
    "portal.operator_groups": Setting(
        optional_text,
        "",
        "comma-separated directory groups whose members are operators in the console: they "
        "search people, revoke certificates and invite people (empty: nobody by group)",
    ),
    "portal.auditor_groups": Setting(
        optional_text,
        "",
        "comma-separated directory groups whose members are auditors in the console: they "
        "read everything, the audit log and the recovery report, and change nothing",
    ),
    "portal.secure_cookies": Setting(
        choice("auto", "true", "false"),
        "auto",
        "Secure flag on the session cookie (auto: when web.base_url is https)",
    ),
    "keys.backend": Setting(choice("file", "pkcs11"), "file", "where CA keys live"),
    "keys.passphrase_file": Setting(
        optional_text,
        "secrets/ca-passphrase",
        "file holding the passphrase of the encrypted key files (relative to the home)",
    ),
    "keys.passphrase_env": Setting(
        optional_text, "", "environment variable holding that passphrase (wins over the file)"
    ),
    "keys.pkcs11_module": Setting(optional_text, "", "PKCS#11 module path"),
    "keys.pkcs11_token": Setting(optional_text, "", "PKCS#11 token label"),
    "keys.pkcs11_pin_file": Setting(optional_text, "", "file holding the token PIN"),
    "ca.key_type": Setting(choice(*CA_KEY_TYPES), "rsa3072", "key type of the root and issuing CA"),
    "ca.default_profile": Setting(
        text, "sponsored-multipurpose", "profile used when none is named"
    ),
    "crl.partition_size": Setting(
        int_range(100, 10_000_000), 100_000, "certificates per CRL partition"
    ),
    "crl.validity_hours": Setting(
        int_range(1, 24 * 31), 168, "nextUpdate of the issuing CA's CRLs"
    ),
    "crl.root_validity_days": Setting(
        int_range(1, 400), 365, "nextUpdate of the root CRL (offline root)"
    ),
    "ocsp.validity_hours": Setting(int_range(1, 24 * 7), 24, "nextUpdate of OCSP responses"),
    "ocsp.key_type": Setting(choice(*KEY_TYPES), "p256", "key type of the OCSP responder"),
    "audit.checkpoint_every": Setting(
        int_range(1, 1_000_000), 100, "records between signed audit checkpoints"
    ),
    "audit.witness_file": Setting(
        optional_text,
        "",
        "append-only file (outside the home folder) that keeps a copy of every audit "
        "checkpoint; empty: none",
    ),
    "audit.witness_mail": Setting(
        _mail_list, "", "comma-separated auditors' addresses that get each daily checkpoint"
    ),
    "admin.role_oid_arc": Setting(
        role_arc, "1.3.6.1.4.1.32473.1", "policy OID arc of admin roles (use your own PEN)"
    ),
    "keymanager.key_type": Setting(
        choice("rsa2048", "rsa3072", "p256"), "rsa2048", "keys generated for subscribers"
    ),
    "keymanager.pool_size": Setting(
        int_range(0, 1_000_000), 20, "escrowed keys kept ready for interactive enrollment"
    ),
    "keymanager.pool_salt": Setting(optional_text, "", "salt of the pool key (not a secret)"),
    "keymanager.delivery_lease_seconds": Setting(
        int_range(10, 86_400),
        600,
        "a certificate whose PKCS#12 was not delivered by then is revoked by reconcile",
    ),
    "recovery.home": Setting(
        optional_text, "krs", "home of the embedded key recovery service (relative to this home)"
    ),
    "recovery.url": Setting(
        optional_text, "", "URL of a key recovery service that runs apart (wins over recovery.home)"
    ),
    "recovery.service_id": Setting(
        optional_text, "", "pinned id (SHA-256 of the transport key) of the recovery service"
    ),
    "recovery.oaep_hash": Setting(
        choice("sha1", "sha256", "sha384", "sha512"), "sha256", "OAEP hash of recovery blocks"
    ),
    "recovery.wrap": Setting(
        choice("rsa-oaep", "hybrid-mlkem768"),
        "rsa-oaep",
        "how new recovery blocks wrap their AES key: RSA-OAEP alone, or RSA-OAEP and "
        "ML-KEM-768 together (new instances: hybrid-mlkem768)",
    ),
    "recovery.transport_key_id": Setting(
        optional_text,
        "",
        "pinned id of the service's newest transport key after a rotation (empty: the service id)",
    ),
    "approval.auto": Setting(
        choice("true", "false"), "true", "approve requests that pass the rules without an officer"
    ),
    "approval.allowed_domains": Setting(
        optional_text, "", "comma-separated mail domains (default: instance.domain)"
    ),
    "approval.required_groups": Setting(
        optional_text, "", "comma-separated groups; one membership is required (default: none)"
    ),
    "auth.max_failures": Setting(int_range(1, 1000), 5, "failed logons before a lockout"),
    "auth.lockout_minutes": Setting(int_range(1, 10_080), 15, "how long a lockout lasts"),
    "auth.kerberos.keytab": Setting(
        optional_text,
        "",
        "keytab holding the key of auth.kerberos.service (relative to the home); set: the "
        "portal offers Kerberos single sign-on (Negotiate)",
    ),
    "auth.kerberos.service": Setting(
        _checked(_check_in("mailpki.auth.kerberos", "check_service")),
        "",
        "service principal of the portal, e.g. HTTP/pki.example.com (the host name people "
        "type in the browser)",
    ),
    "pins.validity_days": Setting(int_range(1, 365), 30, "how long an imported PIN is valid"),
    "pins.max_attempts": Setting(int_range(1, 100), 5, "wrong tries before a PIN is void"),
    "pins.sql_url": Setting(
        _checked(_check_in("mailpki.auth.pins", "check_sql_url")),
        "",
        "SQLAlchemy URL of the HR database for 'pins import --from-sql', e.g. "
        "postgresql+psycopg://hr_reader@db/hr; no password here: use ~/.pgpass or PGPASSFILE",
    ),
    "pins.sql_query": Setting(
        _checked(_check_in("mailpki.auth.pins", "check_sql_query")),
        "",
        "one SELECT (no ';') returning employee_id, mail, name, pin; it runs read-only",
    ),
    "invitations.validity_days": Setting(
        int_range(1, 90), 14, "how long an enrollment invitation link is valid"
    ),
    "invitations.reminder_days": Setting(
        int_range(1, 60), 5, "days after an unused invitation before one reminder is sent"
    ),
    "directory.publish": Setting(
        choice("true", "false"), "true", "publish issued certificates to the directory"
    ),
    **dns_schema(),
    "lifecycle.notice_days": Setting(
        notice_days, "30,7,1", "days before expiry when a person is mailed a renewal link"
    ),
    "lifecycle.renew_window_days": Setting(
        int_range(1, 365), 60, "the portal offers Renew this many days before expiry"
    ),
    "lifecycle.on_leave": Setting(
        choice("revoke", "keep"),
        "revoke",
        "a person disabled in or gone from the directory: revoke (affiliationChanged) or keep",
    ),
    "lifecycle.officers": Setting(
        _mail_list,
        "",
        "comma-separated mail addresses of the officers' summary and leaver notices "
        "(default: the notices' sender address)",
    ),
    "lifecycle.max_leavers": Setting(
        int_range(0, 1_000_000),
        50,
        "more leavers than this in one check is taken for a directory fault: nothing is "
        "revoked and the officers are told (raise it for a real mass departure)",
    ),
    **smtp_schema(
        sender_default="",
        sender_help="From of notices and invitations (default pki@<instance.domain>)",
    ),
}


class Config(SettingsFile):
    """The checked configuration of one instance."""

    schema = SCHEMA
    file_name = CONFIG_FILE
    missing_hint = "no mailpki instance (run 'mailpki init' first)"
    renamed = SMTP_RENAMED
    env_prefix = "MAILPKI_"


def resolve_home(home: Path | None) -> Path:
    """--home, else $MAILPKI_HOME, else ./mailpki-data."""
    if home is not None:
        return home
    env = os.environ.get("MAILPKI_HOME")
    return Path(env) if env else Path("mailpki-data")
