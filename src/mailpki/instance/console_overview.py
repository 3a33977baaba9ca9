"""The console's dashboard and settings page: what an operator looks at first.

The figures come from the database (`health.read_status`, the same counts /metrics
gives) plus what a person needs to act: the last errors of the publishing and mail
queues, the certificates expiring soon, and what `mailpki audit verify` says. The audit
check reads the whole log, so a recent result is shown (instance/audit_check.py). The
certificate counts (valid, expiring, revoked) read the whole certificates table, so each
node keeps them for CERTIFICATE_COUNTS_SECONDS (a revocation from this node's console
counts at once); the queues, requests, key pool and CRLs are read on every visit.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit, urlunsplit

from sqlalchemy import func, select

from mailpki.ca.serials import show_serial
from mailpki.ca.succession import SUBSCRIBER
from mailpki.errors import MailPKIError
from mailpki.instance.audit_check import recent_audit_check
from mailpki.instance.health import (
    CertificateCounts,
    InstanceStatus,
    count_certificates,
    read_status,
)
from mailpki.instance.instance import Instance
from mailpki.store.models import CertificateRecord, OutboxMessage, PublishJob

__all__ = [
    "CERTIFICATE_COUNTS_SECONDS",
    "AuditSummary",
    "CertificateFigures",
    "Dashboard",
    "SettingRow",
    "audit_summary",
    "dashboard",
    "forget_certificate_figures",
    "recent_certificate_figures",
    "settings",
]

EXPIRING_DAYS = 30
LAST_ERRORS = 5
OPEN_RECOVERY_STATES = ("pending", "approved", "held")
# The certificate counts read the whole table (a tenth of a second and more with 100,000
# certificates): the dashboard shows counts at most this old.
CERTIFICATE_COUNTS_SECONDS = 60.0


@dataclass(frozen=True)
class AuditSummary:
    intact: bool
    records: int
    problems: tuple[str, ...]
    notes: tuple[str, ...]
    checked_at: datetime


@dataclass(frozen=True)
class QueueError:
    what: str  # the serial, or the recipient
    attempts: int
    error: str


@dataclass(frozen=True)
class CertificateFigures:
    counts: CertificateCounts
    expiring_soon: int  # valid, and expiring within EXPIRING_DAYS
    taken_at: datetime


_figures_lock = threading.Lock()
_figures: dict[str, tuple[float, CertificateFigures]] = {}


def _figures_key(instance: Instance) -> str:
    return str(instance.home.resolve())


def recent_certificate_figures(instance: Instance, *, fresh: bool = False) -> CertificateFigures:
    """The certificate counts, reused for CERTIFICATE_COUNTS_SECONDS unless `fresh`."""
    key = _figures_key(instance)
    with _figures_lock:
        kept = _figures.get(key)
        if (
            kept is not None
            and not fresh
            and time.monotonic() - kept[0] < CERTIFICATE_COUNTS_SECONDS
        ):
            return kept[1]
    now = datetime.now(UTC)
    with instance.db.session() as session:
        counts = count_certificates(session, now)
        expiring = int(
            session.scalar(
                select(func.count())
                .select_from(CertificateRecord)
                .where(
                    *SUBSCRIBER,
                    CertificateRecord.status == "valid",
                    CertificateRecord.not_after > now,
                    CertificateRecord.not_after <= now + timedelta(days=EXPIRING_DAYS),
                )
            )
            or 0
        )
    figures = CertificateFigures(counts, expiring, now)
    with _figures_lock:
        _figures[key] = (time.monotonic(), figures)
    return figures


def forget_certificate_figures(instance: Instance) -> None:
    """The next dashboard counts again (after a change made through this node)."""
    with _figures_lock:
        _figures.pop(_figures_key(instance), None)


@dataclass(frozen=True)
class Dashboard:
    status: InstanceStatus
    expiring_soon: int
    certificates_counted_at: datetime
    requests_waiting: int
    publish_errors: tuple[QueueError, ...]
    mail_errors: tuple[QueueError, ...]
    key_pool_target: int
    crl_ages: tuple[tuple[str, str], ...]  # (scope, age in words)
    recovery_open: int | None  # None: the recovery service runs apart
    audit: AuditSummary


def audit_summary(instance: Instance, *, fresh: bool = False) -> AuditSummary:
    """`mailpki audit verify` in short (a result at most RECENT_CHECK_SECONDS old unless
    `fresh`)."""
    try:
        recent = recent_audit_check(instance, fresh=fresh)
    except MailPKIError as exc:
        return AuditSummary(False, 0, (f"the check did not run: {exc}",), (), datetime.now(UTC))
    check = recent.check
    return AuditSummary(
        intact=check.ok,
        records=check.log.records,
        problems=tuple(f"{p.kind}: {p.message}" for p in check.problems),
        notes=check.notes,
        checked_at=recent.checked_at,
    )


def _age(seconds: float) -> str:
    if seconds < 3600:
        return f"{int(seconds // 60)} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


def dashboard(instance: Instance) -> Dashboard:
    figures = recent_certificate_figures(instance)
    status = read_status(instance, certificates=figures.counts)
    with instance.db.session() as session:
        publish_errors = tuple(
            QueueError(f"{action} {show_serial(serial)} ({email})", attempts, _first_line(error))
            for serial, email, action, attempts, error in session.execute(
                select(
                    PublishJob.serial,
                    PublishJob.email,
                    PublishJob.action,
                    PublishJob.attempts,
                    PublishJob.last_error,
                )
                .where(PublishJob.done_at.is_(None), PublishJob.last_error.is_not(None))
                .order_by(PublishJob.id.desc())
                .limit(LAST_ERRORS)
            )
        )
        mail_errors = tuple(
            QueueError(f"{kind} to {recipient}", attempts, _first_line(error))
            for kind, recipient, attempts, error in session.execute(
                select(
                    OutboxMessage.kind,
                    OutboxMessage.recipient,
                    OutboxMessage.attempts,
                    OutboxMessage.last_error,
                )
                .where(OutboxMessage.sent_at.is_(None), OutboxMessage.last_error.is_not(None))
                .order_by(OutboxMessage.id.desc())
                .limit(LAST_ERRORS)
            )
        )
    recovery_open = None
    if status.recovery_alerts_open is not None:
        by_state = status.recovery_requests_by_state
        recovery_open = sum(by_state.get(state, 0) for state in OPEN_RECOVERY_STATES)
    return Dashboard(
        status=status,
        expiring_soon=figures.expiring_soon,
        certificates_counted_at=figures.taken_at,
        requests_waiting=status.requests_by_state.get("pending", 0),
        publish_errors=publish_errors,
        mail_errors=mail_errors,
        key_pool_target=int(instance.config.get("keymanager.pool_size")),
        crl_ages=tuple(
            (scope, _age(seconds)) for scope, seconds in sorted(status.crl_age_seconds.items())
        ),
        recovery_open=recovery_open,
        audit=audit_summary(instance),
    )


def _first_line(text: str | None) -> str:
    return ((text or "").splitlines() or [""])[0][:300]


# -- settings (read-only) ------------------------------------------------------------------

_SECRET_KEY = re.compile(r"(password|passphrase|secret|token|pin)$")
HIDDEN = "(hidden)"


@dataclass(frozen=True)
class SettingRow:
    key: str
    value: str
    source: str  # "default", "file" or the environment variable


def _shown(key: str, value: object) -> str:
    """A setting's value as the page shows it: never a secret (settings only name the
    files that hold them; a password in a URL is hidden all the same)."""
    text = "" if value is None else str(value)
    if _SECRET_KEY.search(key.split(".")[-1]) and text:
        return HIDDEN
    if "://" in text:
        parts = urlsplit(text)
        if parts.password is not None:
            host = parts.hostname or ""
            port = f":{parts.port}" if parts.port else ""
            netloc = f"{parts.username or ''}:{HIDDEN}@{host}{port}"
            return urlunsplit(parts._replace(netloc=netloc))
    return text


def settings(instance: Instance) -> list[SettingRow]:
    config = instance.config
    rows = []
    for key, value, is_default in config.items():
        source = config.source_of(key) or ("default" if is_default else "file")
        rows.append(SettingRow(key, _shown(key, value), source))
    return rows
