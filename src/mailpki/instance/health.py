"""Is this node fit to serve, and what state is the instance in: for /readyz and /metrics.

Readiness looks at what a request needs: the database answers, its schema is the one
this code ships (a node on an older schema must not serve), the CA and OCSP keys sign,
and the audit log can take a write. The status counts come from the database, so every
node of a cluster reports the same figures.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from sqlalchemy import func, select, text
from sqlalchemy.orm import Session

from mailpki.ca.authority import ISSUED_BY_ISSUING
from mailpki.ca.listing import OCSP_PROFILE
from mailpki.errors import MailPKIError
from mailpki.instance.instance import Instance
from mailpki.store.db import head_revision
from mailpki.store.models import (
    AuditHead,
    AuditRecord,
    AuthFailure,
    CertificateRecord,
    CRLRecord,
    EnrollmentRequestRecord,
    OutboxMessage,
    PooledKey,
    PublishJob,
    RecoveryAlert,
    RecoveryRequestRecord,
)

_PROBE = b"mailpki readiness probe"


@dataclass(frozen=True)
class Check:
    """One readiness check: its name, whether it passed, and why not."""

    name: str
    ok: bool
    detail: str


@dataclass(frozen=True)
class Readiness:
    checks: tuple[Check, ...]

    @property
    def ready(self) -> bool:
        return all(check.ok for check in self.checks)

    def failures(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def check_readiness(instance: Instance) -> Readiness:
    """Run every check; each failure is named with a reason a person can act on."""
    checks = [_check_database(instance)]
    if checks[0].ok:
        checks += [_check_schema(instance), _check_keys(instance), _check_audit(instance)]
    if instance.read_routing is not None:
        checks.append(_check_replica(instance))
    return Readiness(tuple(checks))


def _check_replica(instance: Instance) -> Check:
    """Never makes the node unready: reads fall back to the primary; it says so."""
    assert instance.read_routing is not None
    state = instance.read_routing.state(fresh=True)
    if state.in_use:
        return Check("replica", True, state.reason)
    return Check("replica", True, f"{state.reason}: reads go to the primary")


def _check_database(instance: Instance) -> Check:
    try:
        with instance.db.session() as session:
            session.execute(text("SELECT 1"))
    except MailPKIError as exc:
        return Check("database", False, f"unreachable: {_first_line(exc)}")
    return Check("database", True, "reachable")


def _check_schema(instance: Instance) -> Check:
    try:
        current, wanted = instance.db.schema_revision(), head_revision()
    except MailPKIError as exc:
        return Check("schema", False, _first_line(exc))
    if current != wanted:
        return Check(
            "schema", False, f"at {current}, this version needs {wanted}: run 'mailpki upgrade'"
        )
    return Check("schema", True, f"at {current}")


def _check_keys(instance: Instance) -> Check:
    try:
        _probe_signature(instance.ca.issuing_key)
        instance.ca.responder()
    except MailPKIError as exc:
        return Check("keys", False, _first_line(exc))
    except Exception as exc:  # a token that fails mid-signature raises its own errors
        return Check("keys", False, f"the issuing key cannot sign: {type(exc).__name__}")
    return Check("keys", True, "issuing and OCSP keys usable")


def _probe_signature(key: object) -> None:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        key.sign(_PROBE, ec.ECDSA(hashes.SHA256()))
    elif isinstance(key, rsa.RSAPrivateKey):
        key.sign(_PROBE, padding.PKCS1v15(), hashes.SHA256())


def _check_audit(instance: Instance) -> Check:
    try:
        with instance.db.transaction() as session:
            head = session.execute(select(AuditHead).with_for_update()).scalars().first()
    except MailPKIError as exc:
        return Check("audit", False, f"cannot take a write: {_first_line(exc)}")
    if head is None:
        return Check("audit", False, "the audit log has no head row: the database is damaged")
    return Check("audit", True, "writable")


def _first_line(exc: Exception) -> str:
    return (str(exc).splitlines() or [type(exc).__name__])[0]


# -- status counts ----------------------------------------------------------------------


@dataclass(frozen=True)
class QueueState:
    """A durable queue: what waits, and how much of it has failed at least once."""

    waiting: int
    failing: int


@dataclass(frozen=True)
class InstanceStatus:
    """Counts read from the database at one moment."""

    taken_at: float
    certificates_issued: int
    certificates_revoked: int
    certificates_valid: int
    requests_by_state: dict[str, int]
    outbox: QueueState
    publishing: QueueState
    key_pool: int
    crl_age_seconds: dict[str, float]
    audit_records: int
    logons_locked: int
    recovery_requests_by_state: dict[str, int]
    recovery_alerts_open: int | None


@dataclass(frozen=True)
class CertificateCounts:
    """The certificates the issuing CA made (its OCSP responders' aside), by state. Each
    count reads the whole certificates table."""

    issued: int
    revoked: int
    valid: int  # not revoked and not expired


def count_certificates(session: Session, now: datetime) -> CertificateCounts:
    subscriber = (ISSUED_BY_ISSUING, CertificateRecord.profile != OCSP_PROFILE)
    by_status = {
        str(state): int(count)
        for state, count in session.execute(
            select(CertificateRecord.status, func.count())
            .where(*subscriber)
            .group_by(CertificateRecord.status)
        )
    }
    valid = _count(
        session,
        CertificateRecord,
        *subscriber,
        CertificateRecord.status == "valid",
        CertificateRecord.not_after > now,
    )
    return CertificateCounts(sum(by_status.values()), by_status.get("revoked", 0), valid)


def read_status(
    instance: Instance, *, certificates: CertificateCounts | None = None
) -> InstanceStatus:
    """Everything /metrics reports that lives in the database; `certificates`: counts
    taken a moment ago, used instead of counting again (the console's dashboard keeps
    them for a minute)."""
    now = datetime.now(UTC)
    with instance.db.session() as session:
        counts = certificates or count_certificates(session, now)
        status = InstanceStatus(
            taken_at=time.time(),
            certificates_issued=counts.issued,
            certificates_revoked=counts.revoked,
            certificates_valid=counts.valid,
            requests_by_state=_count_by(session, EnrollmentRequestRecord.state),
            outbox=QueueState(
                _count(session, OutboxMessage, OutboxMessage.sent_at.is_(None)),
                _count(
                    session,
                    OutboxMessage,
                    OutboxMessage.sent_at.is_(None),
                    OutboxMessage.attempts > 0,
                ),
            ),
            publishing=QueueState(
                _count(session, PublishJob, PublishJob.done_at.is_(None)),
                _count(session, PublishJob, PublishJob.done_at.is_(None), PublishJob.attempts > 0),
            ),
            key_pool=_count(session, PooledKey),
            crl_age_seconds={
                scope: (now - this_update).total_seconds()
                for scope, this_update in session.execute(
                    select(CRLRecord.scope, CRLRecord.this_update)
                )
            },
            audit_records=_count(session, AuditRecord),
            logons_locked=_count(session, AuthFailure, AuthFailure.locked_until > now),
            recovery_requests_by_state={},
            recovery_alerts_open=None,
        )
    if instance.recovery_client.is_local:
        service = instance.recovery_client.local_service()
        with service.db.session() as session:
            by_state = _count_by(session, RecoveryRequestRecord.state)
            alerts = _count(session, RecoveryAlert, RecoveryAlert.confirmed_at.is_(None))
        status = replace(status, recovery_requests_by_state=by_state, recovery_alerts_open=alerts)
    return status


def _count(session: Session, model: type, *where: object) -> int:
    query = select(func.count()).select_from(model)
    for condition in where:
        query = query.where(condition)  # type: ignore[arg-type]
    return int(session.scalar(query) or 0)


def _count_by(session: Session, column: object) -> dict[str, int]:
    rows = session.execute(select(column, func.count()).group_by(column))  # type: ignore[call-overload]
    return {str(key): int(count) for key, count in rows}


def node_name() -> str:
    """This node, as metrics and logs name it."""
    return os.uname().nodename
