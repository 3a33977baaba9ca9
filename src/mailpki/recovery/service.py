"""The Key Recovery Service: the only component that can unwrap a recovery block.

It has its own home, database, keys and audit log, and trusts the instance only
through its CA certificates. A recovery is a saved request (Dogtag KRA's model):
  1. a recovery admin sends a signed request with the user's certificate and the
     wrapped key of its recovery block (or, for the person's whole key history, with
     every escrowed certificate and wrapped key of that person);
  2. recovery officers, other than the requester, each send a signed approval;
  3. once the quorum is met, the requester fetches: the quorum is counted again from
     the approvals whose officers' certificates are still valid and unrevoked (the
     fetch staples their OCSP status), the anomaly rules run, then the service unwraps the AES key (in the token, when the key is in one), checks it is
     bound to the requested certificate, and returns it encrypted to the requester's
     certificate. The user's private key never reaches the service. A key-history
     request releases every key under the one quorum; each key is its own
     `key.recovered` record and counts as one recovery for the anomaly rules.
Every step, and every refusal, is a record in the service's own hash-chained log.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cached_property
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailpki.audit import AuditLog, VerifyReport, verify_log
from mailpki.errors import (
    ConfigError,
    EscrowError,
    InputError,
    MailPKIError,
    NotFoundError,
    RecoveryRefused,
)
from mailpki.keystore.configured import open_key_store, store_secret
from mailpki.keystore.keys import KeyStore
from mailpki.keystore.mlkem_keys import MLKEMKeyFiles
from mailpki.keystore.recovery_block import oaep, spki_sha256, split_unwrapped
from mailpki.notify.mail import (
    DeliveryReport,
    MailSettings,
    deliver_pending,
    mail_settings_from,
    queue,
)
from mailpki.policy.roles import roles_of
from mailpki.recovery.admission import (
    Admission,
    Admitted,
    SignedRefusal,
    Trust,
    certificate_email,
    fingerprint,
)
from mailpki.recovery.anomaly import Counts, Thresholds, crossed
from mailpki.recovery.config import ServiceConfig
from mailpki.recovery.protocol import decode_approvers, decode_targets
from mailpki.recovery.transport import TRANSPORT_PUBLIC, TransportKeys
from mailpki.store.db import Database
from mailpki.store.models import (
    RecoveryAlert,
    RecoveryApprovalRecord,
    RecoveryRequestKey,
    RecoveryRequestRecord,
)

__all__ = ["AUDIT_PUBLIC", "KEYS_DIR", "TRANSPORT_PUBLIC", "RecoveryService"]
AUDIT_PUBLIC = "audit.pub.pem"
KEYS_DIR = "keys"
PENDING, APPROVED, RECOVERED = "pending", "approved", "recovered"


@dataclass(frozen=True)
class Refusal:
    """A handler's "no" after it made changes that must stay (alerts, holds)."""

    message: str


class RecoveryService:
    def __init__(
        self, config: ServiceConfig, *, clock: Callable[[], datetime] | None = None
    ) -> None:
        self.config = config
        self.home = config.home
        self._clock = clock or (lambda: datetime.now(UTC))

    @classmethod
    def open(cls, home: Path) -> RecoveryService:
        service = cls(ServiceConfig.load(home))
        if not (home / TRANSPORT_PUBLIC).is_file():
            raise ConfigError(
                f"{home} has no transport key; was 'recovery-service init' interrupted?"
            )
        return service

    # -- parts --------------------------------------------------------------------------

    @cached_property
    def db(self) -> Database:
        return Database(self.config.database_url)

    @cached_property
    def keys(self) -> KeyStore:
        return open_key_store(self.config, self.home / KEYS_DIR)

    @property
    def transport_label(self) -> str:
        return f"{self.config.get('keys.label_prefix')}-transport"

    @property
    def audit_label(self) -> str:
        return f"{self.config.get('keys.label_prefix')}-audit"

    @cached_property
    def transport(self) -> TransportKeys:
        """Every generation of transport keys; the newest wraps, all unwrap."""
        return TransportKeys(
            self.home,
            self.keys,
            lambda: MLKEMKeyFiles(self.home / KEYS_DIR, store_secret(self.config)),
            oaep_hash=str(self.config.get("transport.oaep_hash")),
            legacy_label=self.transport_label,
        )

    @property
    def transport_public_pem(self) -> bytes:
        """The newest transport RSA key (PEM)."""
        return self.transport.current.rsa_public_pem

    @property
    def service_id(self) -> str:
        """The service's lasting id: that of its first transport key generation (signed
        messages name it); the newest generation's id is `transport.current.key_id`."""
        return self.transport.generations[0].key_id

    @cached_property
    def audit(self) -> AuditLog:
        return AuditLog(
            signer=self.keys.load(self.audit_label),
            checkpoint_every=int(self.config.get("audit.checkpoint_every")),
        )

    @cached_property
    def trust(self) -> Trust:
        path = self.config.path_of("trust.ca_file")
        try:
            pem = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the trusted CA file {path}: {exc.strerror}") from None
        return Trust.from_pem(pem, str(self.config.get("trust.role_oid_arc")))

    @cached_property
    def admission(self) -> Admission:
        return Admission(
            self.trust,
            service_id=self.service_id,
            max_age=timedelta(seconds=int(self.config.get("recovery.message_max_age_seconds"))),
        )

    @property
    def quorum(self) -> int:
        return int(self.config.get("recovery.quorum"))

    @property
    def thresholds(self) -> Thresholds:
        get = self.config.get
        return Thresholds(
            per_admin_hour=int(get("alerts.per_admin_hour")),
            per_admin_day=int(get("alerts.per_admin_day")),
            total_day=int(get("alerts.total_day")),
            average_multiple=float(get("alerts.average_multiple")),
            average_days=int(get("alerts.average_days")),
            average_minimum=int(get("alerts.average_minimum")),
        )

    @property
    def mail_settings(self) -> MailSettings:
        return mail_settings_from(self.config, default_sender="krs@localhost.localdomain")

    def info(self) -> dict[str, str]:
        """What a Key Manager pins: the newest transport public key(s), their id
        (`key_id`) and OAEP hash, and the service's lasting id."""
        current = self.transport.current
        info = {
            "service_id": self.service_id,
            "key_id": current.key_id,
            "name": str(self.config.get("service.name")),
            "oaep_hash": str(self.config.get("transport.oaep_hash")),
            "transport_key": current.rsa_public_pem.decode(),
        }
        if current.mlkem_public_pem is not None:
            info["mlkem_key"] = current.mlkem_public_pem.decode()
        return info

    # -- the one entry point for signed messages ----------------------------------------

    def handle(self, data: bytes) -> dict[str, Any]:
        """Check a signed message and act on it; RecoveryRefused/InputError if refused."""
        now = self._clock()
        try:
            admitted = self.admission.check(data, now=now)
        except SignedRefusal as exc:
            with self.db.transaction() as session:
                self._append_refusal(
                    session,
                    actor=exc.actor,
                    action=exc.action,
                    request_id=exc.request_id,
                    reason=str(exc),
                    signer_fingerprint=exc.fingerprint,
                )
            raise RecoveryRefused(str(exc)) from None
        except (RecoveryRefused, InputError) as exc:
            self._audit_refusal(None, str(exc), now)
            raise RecoveryRefused(str(exc)) from None
        handler = {
            "request": self._request,
            "approve": self._approve,
            "fetch": self._fetch,
            "list": self._list,
            "report": self._report,
        }[admitted.message.action]
        try:
            with self.db.transaction() as session:
                self.admission.remember_nonce(session, admitted, now)
                result = handler(session, admitted, now)
                if isinstance(result, Refusal):
                    self._append_admitted_refusal(session, admitted, result.message)
                self.audit.checkpoint(session)  # every handled message is sealed at once
        except (RecoveryRefused, InputError, NotFoundError, EscrowError) as exc:
            self._audit_refusal(admitted, str(exc), now)
            raise RecoveryRefused(str(exc)) from None
        if isinstance(result, Refusal):
            self.deliver_mail()
            raise RecoveryRefused(result.message)
        if admitted.message.action == "fetch":
            # A recovery let through under alerts.hold=false still queued its alert.
            self.deliver_mail()
        return result

    # -- actions ------------------------------------------------------------------------

    def _request(self, session: Session, who: Admitted, now: datetime) -> dict[str, Any]:
        if not isinstance(who.signer.public_key(), rsa.RSAPublicKey):
            raise RecoveryRefused(
                "recovery admins need an RSA certificate (the key is returned encrypted to it)"
            )
        try:
            target = x509.load_der_x509_certificate(who.message.blob("target_certificate"))
        except ValueError:
            raise InputError("'target_certificate' is not a DER certificate") from None
        self.trust.check_issued(target, None, "certificate to recover")
        target_email = certificate_email(target)
        wrapped = who.message.blob("wrapped_key")
        self.transport.check_wrapped(wrapped)
        older = self._older_targets(who, target, target_email)
        request_id = secrets.token_hex(16)
        reason = (who.message.text("reason") or "").strip()
        session.add(
            RecoveryRequestRecord(
                id=request_id,
                state=PENDING,
                requester_email=who.email,
                requester_fingerprint=who.fingerprint,
                requester_cert=who.signer.public_bytes(serialization.Encoding.DER),
                target_email=target_email,
                target_serial=format(target.serial_number, "X"),
                target_cert=target.public_bytes(serialization.Encoding.DER),
                wrapped_key=wrapped,
                reason=reason,
                created_at=now,
                expires_at=now
                + timedelta(hours=int(self.config.get("recovery.request_ttl_hours"))),
                key_count=1 + len(older),
            )
        )
        session.flush()  # the request row first: the key rows point at it
        for position, (certificate, wrapped_older) in enumerate(older, start=1):
            session.add(
                RecoveryRequestKey(
                    request_id=request_id,
                    position=position,
                    target_serial=format(certificate.serial_number, "X"),
                    target_cert=certificate.public_bytes(serialization.Encoding.DER),
                    wrapped_key=wrapped_older,
                )
            )
        serials = [format(c.serial_number, "X") for c in (target, *(c for c, _ in older))]
        data: dict[str, Any] = {
            "request_id": request_id,
            "target_email": target_email,
            "target_serial": serials[0],
            "reason": reason,
            "signer_fingerprint": who.fingerprint,
        }
        if older:
            data["target_serials"] = serials
        self.audit.append(session, "recovery.requested", actor=who.email, data=data)
        return {
            "request_id": request_id,
            "state": PENDING,
            "approvals": 0,
            "quorum": self.quorum,
            "target_email": target_email,
            "target_serial": serials[0],
            "target_serials": serials,
        }

    def _older_targets(
        self, who: Admitted, newest: x509.Certificate, email: str
    ) -> list[tuple[x509.Certificate, bytes]]:
        """The older keys of a key-history request, each checked like the newest: a
        certificate of the trusted CA for the same person, a block for this service."""
        found: list[tuple[x509.Certificate, bytes]] = []
        serials = {newest.serial_number}
        for item in decode_targets(who.message.text("older_keys")):
            certificate = _certificate(item.certificate)
            if certificate is None:
                raise InputError("an 'older_keys' certificate is not a DER certificate")
            self.trust.check_issued(certificate, None, "certificate to recover")
            if certificate_email(certificate) != email:
                raise RecoveryRefused(
                    "a key-history request covers one person: an older certificate is "
                    f"for {certificate_email(certificate)}, not {email}"
                )
            if certificate.serial_number in serials:
                raise InputError(
                    f"certificate {certificate.serial_number:X} is listed twice in the request"
                )
            serials.add(certificate.serial_number)
            try:
                self.transport.check_wrapped(item.wrapped_key)
            except InputError as exc:
                raise InputError(f"an 'older_keys' entry: {exc}") from None
            found.append((certificate, item.wrapped_key))
        return found

    def _load_request(
        self, session: Session, request_id: str, now: datetime
    ) -> RecoveryRequestRecord:
        row = session.get(RecoveryRequestRecord, request_id, with_for_update=True)
        if row is None:
            raise NotFoundError(f"no recovery request {request_id}")
        if row.state == RECOVERED:
            raise RecoveryRefused(f"request {request_id} was already fetched")
        if row.expires_at < now:
            raise RecoveryRefused(f"request {request_id} has expired; make a new request")
        return row

    def _approve(self, session: Session, who: Admitted, now: datetime) -> dict[str, Any]:
        row = self._load_request(session, who.message.request_id, now)
        if who.email == row.requester_email or hmac.compare_digest(
            who.fingerprint, row.requester_fingerprint
        ):
            raise RecoveryRefused("the requester cannot approve its own request")
        done = session.scalar(
            select(RecoveryApprovalRecord).where(
                RecoveryApprovalRecord.request_id == row.id,
                RecoveryApprovalRecord.officer_email == who.email,
            )
        )
        if done is not None:
            raise RecoveryRefused(f"{who.email} has already approved request {row.id}")
        session.add(
            RecoveryApprovalRecord(
                request_id=row.id,
                officer_email=who.email,
                officer_fingerprint=who.fingerprint,
                approved_at=now,
            )
        )
        session.flush()
        count = self._approvals(session, row.id)
        if count >= self.quorum:
            row.state = APPROVED
        self.audit.append(
            session,
            "recovery.approved",
            actor=who.email,
            data={
                "request_id": row.id,
                "approvals": count,
                "quorum": self.quorum,
                "target_email": row.target_email,
                "target_serial": row.target_serial,
            },
        )
        return {"request_id": row.id, "state": row.state, "approvals": count, "quorum": self.quorum}

    def _fetch(self, session: Session, who: Admitted, now: datetime) -> dict[str, Any] | Refusal:
        row = self._load_request(session, who.message.request_id, now)
        if not hmac.compare_digest(who.fingerprint, row.requester_fingerprint):
            raise RecoveryRefused("only the admin who made the request can fetch it")
        count = self._approvals(session, row.id)
        if count < self.quorum:
            raise RecoveryRefused(
                f"request {row.id} has {count} of the {self.quorum} approvals it needs"
            )
        # 1. The quorum again, now: an officer revoked (or expired) since approving no
        #    longer counts.
        approvers, lapsed = self._standing_approvals(session, row.id, who, now)
        if len(approvers) < self.quorum:
            raise RecoveryRefused(
                f"request {row.id} has {len(approvers)} valid approvals of the {self.quorum} "
                f"it needs; not counted: {'; '.join(lapsed)}"
            )
        # 2. Anomalies: a standing hold, or this recovery crossing a threshold.
        held = self._open_hold(session)
        if held is not None:
            return Refusal(
                f"recoveries are held until {held.contact} confirms alert {held.id} ({held.detail})"
            )
        alerts = self._raise_alerts(session, row, now)
        if alerts and self.config.get("alerts.hold") == "true":
            first = alerts[0]
            return Refusal(
                f"this recovery raised alert {first.id} ({first.detail}); it is held until "
                f"{first.contact} confirms it"
            )
        # 3. Unwrap (inside the token when the key lives in one) and check the binding;
        # 4. return each AES key encrypted to the requester's certificate only. Every
        #    key is unwrapped before anything is recorded: one bad block refuses all.
        requester = x509.load_der_x509_certificate(row.requester_cert).public_key()
        if not isinstance(requester, rsa.RSAPublicKey):  # pragma: no cover - checked at request
            raise RecoveryRefused("the requester's certificate is not RSA")
        older = self._older_keys(session, row.id)
        released = [
            (row.target_serial, self._release(row.target_cert, row.wrapped_key, requester)),
            *(
                (k.target_serial, self._release(k.target_cert, k.wrapped_key, requester))
                for k in older
            ),
        ]
        row.state = RECOVERED
        row.recovered_at = now
        for position, (serial, _) in enumerate(released):
            recovered: dict[str, Any] = {
                "request_id": row.id,
                "target_email": row.target_email,
                "target_serial": serial,
                "approved_by": approvers,
            }
            if len(released) > 1:
                recovered["key"] = f"{position + 1} of {len(released)}"
            if lapsed:
                recovered["approvals_not_counted"] = lapsed
            self.audit.append(session, "key.recovered", actor=who.email, data=recovered)
        answer: dict[str, Any] = {
            "request_id": row.id,
            "target_email": row.target_email,
            "target_serial": row.target_serial,
            "encrypted_key": base64.b64encode(released[0][1]).decode(),
            "approved_by": approvers,
        }
        if len(released) > 1:
            answer["older_keys"] = [
                {"target_serial": serial, "encrypted_key": base64.b64encode(key).decode()}
                for serial, key in released[1:]
            ]
        return answer

    def _release(self, target_der: bytes, wrapped: bytes, requester: rsa.RSAPublicKey) -> bytes:
        """The AES key of one block, checked against its certificate, encrypted to the
        requester."""
        target = x509.load_der_x509_certificate(target_der)
        try:
            # Any generation of the service's keys; the RSA part inside the token when
            # the key lives in one.
            plain = self.transport.unwrap(wrapped).payload
        except EscrowError as exc:
            raise RecoveryRefused(f"the wrapped key does not open: {exc}") from None
        aes_key, bound_to = split_unwrapped(plain)
        if not hmac.compare_digest(bound_to, spki_sha256(target.public_key())):
            raise RecoveryRefused(
                f"the recovery block does not belong to the requested certificate "
                f"{target.serial_number:X} (swapped block?)"
            )
        return requester.encrypt(aes_key, oaep("sha256"))

    def _older_keys(self, session: Session, request_id: str) -> list[RecoveryRequestKey]:
        return list(
            session.scalars(
                select(RecoveryRequestKey)
                .where(RecoveryRequestKey.request_id == request_id)
                .order_by(RecoveryRequestKey.position)
            )
        )

    def _list(self, session: Session, who: Admitted, now: datetime) -> dict[str, Any]:
        self.audit.append(session, "recovery.listed", actor=who.email, data={})
        return {"requests": self._requests(session)}

    def _report(self, session: Session, who: Admitted, now: datetime) -> dict[str, Any]:
        admin = who.message.text("admin")
        since = parse_since(who.message.text("since"))
        self.audit.append(
            session,
            "recovery.reported",
            actor=who.email,
            data={"admin": admin, "since": who.message.text("since")},
        )
        return {"recoveries": self._recoveries(session, admin=admin, since=since)}

    # -- local (in-process, same machine) queries: no signature, the files are the trust --

    def requests(self) -> list[dict[str, Any]]:
        with self.db.session() as session:
            return self._requests(session)

    def recoveries(
        self, *, admin: str | None = None, since: datetime | None = None
    ) -> list[dict[str, Any]]:
        with self.db.session() as session:
            return self._recoveries(session, admin=admin, since=since)

    def confirm_alert(self, alert_id: int, token: str, *, actor: str) -> None:
        """The second contact confirms an alert with the token mailed to it; lifts its hold."""
        now = self._clock()
        with self.db.transaction() as session:
            alert = session.get(RecoveryAlert, alert_id, with_for_update=True)
            if alert is None:
                raise NotFoundError(f"no alert {alert_id}")
            given = hashlib.sha256(token.strip().encode()).hexdigest()
            if not hmac.compare_digest(given, alert.token_sha256):
                self.audit.append(
                    session, "alert.confirmation_refused", actor=actor, data={"alert_id": alert_id}
                )
                refused = True
            else:
                refused = False
                if alert.confirmed_at is None:
                    alert.confirmed_at = now
                    self.audit.append(
                        session,
                        "alert.confirmed",
                        actor=actor,
                        data={"alert_id": alert_id, "contact": alert.contact},
                    )
        if refused:
            raise RecoveryRefused(f"wrong confirmation token for alert {alert_id}")

    def alerts(self) -> list[dict[str, Any]]:
        with self.db.session() as session:
            rows = session.scalars(select(RecoveryAlert).order_by(RecoveryAlert.id))
            return [
                {
                    "id": a.id,
                    "created_at": _iso(a.created_at),
                    "rule": a.rule,
                    "subject": a.subject,
                    "detail": a.detail,
                    "request_id": a.request_id,
                    "contact": a.contact,
                    "holds": a.holds,
                    "confirmed_at": _iso(a.confirmed_at),
                }
                for a in rows
            ]

    def set_config(self, key: str, value: str, *, actor: str) -> object:
        """Change one setting; audited before the file is replaced."""
        new = self.config.set(key, value)
        with self.db.transaction() as session:
            self.audit.append(
                session, "config.changed", actor=actor, data={"key": key, "new": str(new)}
            )
            self.config.save()
        return new

    def verify_audit(self) -> VerifyReport:
        key = serialization.load_pem_public_key((self.home / AUDIT_PUBLIC).read_bytes())
        with self.db.session() as session:
            return verify_log(session, key)

    def deliver_mail(self) -> DeliveryReport | None:
        """Send queued alerts now; a failure leaves them queued (and is in the report)."""
        try:
            return deliver_pending(self.db, self.mail_settings)
        except MailPKIError:
            return None

    def close(self) -> None:
        if "db" in self.__dict__:
            self.db.dispose()

    # -- helpers ------------------------------------------------------------------------

    def _approvals(self, session: Session, request_id: str) -> int:
        return int(
            session.scalar(
                select(func.count())
                .select_from(RecoveryApprovalRecord)
                .where(RecoveryApprovalRecord.request_id == request_id)
            )
            or 0
        )

    def _standing_approvals(
        self, session: Session, request_id: str, who: Admitted, now: datetime
    ) -> tuple[list[str], list[str]]:
        """(officers whose approval still counts, "officer (why not)" for the others).

        An approval counts if the fetch carries its officer's very certificate, still
        issued by the trusted CA, valid now, with the recovery-officer role, and a
        fresh, good OCSP response for it bound to this fetch's nonce."""
        sent = {
            fingerprint(cert): (cert, status.ocsp)
            for status in decode_approvers(who.message.text("approvers"))
            if (cert := _certificate(status.certificate)) is not None
        }
        standing: list[str] = []
        lapsed: list[str] = []
        approvals = session.scalars(
            select(RecoveryApprovalRecord)
            .where(RecoveryApprovalRecord.request_id == request_id)
            .order_by(RecoveryApprovalRecord.id)
        )
        for approval in approvals:
            found = next(
                (
                    v
                    for f, v in sent.items()
                    if hmac.compare_digest(f, approval.officer_fingerprint)
                ),
                None,
            )
            if found is None:
                lapsed.append(f"{approval.officer_email} (no current status of its certificate)")
                continue
            cert, stapled = found
            try:
                self.trust.check_issued(cert, now, "approving officer's certificate")
                self.admission.check_status(
                    stapled, cert, who.message.nonce, now, whose="approving officer's"
                )
                if "recovery-officer" not in roles_of(cert, self.trust.role_arc):
                    raise RecoveryRefused("its certificate has no recovery-officer role")
            except RecoveryRefused as exc:
                lapsed.append(f"{approval.officer_email} ({exc})")
                continue
            standing.append(approval.officer_email)
        return standing, lapsed

    def _approver_emails(self, session: Session, request_id: str) -> list[str]:
        return list(
            session.scalars(
                select(RecoveryApprovalRecord.officer_email)
                .where(RecoveryApprovalRecord.request_id == request_id)
                .order_by(RecoveryApprovalRecord.id)
            )
        )

    def _open_hold(self, session: Session) -> RecoveryAlert | None:
        return session.scalar(
            select(RecoveryAlert)
            .where(RecoveryAlert.holds.is_(True), RecoveryAlert.confirmed_at.is_(None))
            .order_by(RecoveryAlert.id)
            .limit(1)
        )

    def _counts(self, session: Session, admin: str, now: datetime) -> Counts:
        def recovered(since: datetime, until: datetime, by: str | None = None) -> int:
            query = (
                select(func.coalesce(func.sum(RecoveryRequestRecord.key_count), 0))
                .select_from(RecoveryRequestRecord)
                .where(
                    RecoveryRequestRecord.recovered_at >= since,
                    RecoveryRequestRecord.recovered_at < until,
                )
            )
            if by is not None:
                query = query.where(RecoveryRequestRecord.requester_email == by)
            return int(session.scalar(query) or 0)

        day = now - timedelta(days=1)
        later = now + timedelta(seconds=1)
        return Counts(
            admin_hour=recovered(now - timedelta(hours=1), later, admin),
            admin_day=recovered(day, later, admin),
            total_day=recovered(day, later),
            trailing_total=recovered(day - timedelta(days=self.thresholds.average_days), day),
        )

    def _raise_alerts(
        self, session: Session, row: RecoveryRequestRecord, now: datetime
    ) -> list[RecoveryAlert]:
        found = crossed(
            self._counts(session, row.requester_email, now), self.thresholds, keys=row.key_count
        )
        raised: list[RecoveryAlert] = []
        for rule, detail in found:
            subject = row.requester_email if rule.startswith("per-admin") else "*"
            window = timedelta(hours=1) if rule == "per-admin-hour" else timedelta(days=1)
            recent = session.scalar(
                select(RecoveryAlert.id)
                .where(
                    RecoveryAlert.rule == rule,
                    RecoveryAlert.subject == subject,
                    RecoveryAlert.created_at >= now - window,
                )
                .limit(1)
            )
            if recent is not None:
                continue  # already alerted for this rule in this window
            contact = self._contact_for(row.requester_email)
            token = secrets.token_urlsafe(24)
            alert = RecoveryAlert(
                created_at=now,
                rule=rule,
                subject=subject,
                detail=detail,
                request_id=row.id,
                contact=contact,
                token_sha256=hashlib.sha256(token.encode()).hexdigest(),
                holds=self.config.get("alerts.hold") == "true",
            )
            session.add(alert)
            session.flush()
            queue(
                session,
                kind="recovery.alert",
                to=contact,
                subject=f"[{self.config.get('service.name')}] unusual key recoveries: alert {alert.id}",
                body=_alert_body(alert, row, token, self.home),
                now=now,
            )
            self.audit.append(
                session,
                "alert.raised",
                actor="krs",
                data={
                    "alert_id": alert.id,
                    "rule": rule,
                    "subject": subject,
                    "detail": detail,
                    "request_id": row.id,
                    "contact": contact,
                    "holds": alert.holds,
                },
            )
            raised.append(alert)
        return raised

    def _contact_for(self, requester: str) -> str:
        contacts = [c for c in str(self.config.get("alerts.contacts")).split(",") if c]
        for contact in contacts:
            if contact != requester:
                return contact
        raise RecoveryRefused(
            "an alert is due but no alert contact other than the requesting admin is "
            "configured (alerts.contacts); recovery refused"
        )

    def _requests(self, session: Session) -> list[dict[str, Any]]:
        rows = session.scalars(
            select(RecoveryRequestRecord).order_by(RecoveryRequestRecord.created_at)
        )
        return [
            {
                "request_id": r.id,
                "state": r.state,
                "requester": r.requester_email,
                "target_email": r.target_email,
                "target_serial": r.target_serial,
                "reason": r.reason,
                "requested_at": _iso(r.created_at),
                "expires_at": _iso(r.expires_at),
                "recovered_at": _iso(r.recovered_at),
                "key_count": r.key_count,
                "target_serials": [
                    r.target_serial,
                    *(k.target_serial for k in self._older_keys(session, r.id)),
                ],
                "approved_by": self._approver_emails(session, r.id),
                # What a fetch must staple the status of (see `_standing_approvals`).
                "approver_fingerprints": list(
                    session.scalars(
                        select(RecoveryApprovalRecord.officer_fingerprint)
                        .where(RecoveryApprovalRecord.request_id == r.id)
                        .order_by(RecoveryApprovalRecord.id)
                    )
                ),
            }
            for r in rows
        ]

    def _recoveries(
        self, session: Session, *, admin: str | None, since: datetime | None
    ) -> list[dict[str, Any]]:
        query = select(RecoveryRequestRecord).where(RecoveryRequestRecord.state == RECOVERED)
        if admin:
            query = query.where(RecoveryRequestRecord.requester_email == admin.strip().lower())
        if since is not None:
            query = query.where(RecoveryRequestRecord.recovered_at >= since)
        # One row per key: a key-history recovery lists each key it released.
        return [
            {
                "request_id": r.id,
                "recovered_by": r.requester_email,
                "target_email": r.target_email,
                "target_serial": serial,
                "reason": r.reason,
                "requested_at": _iso(r.created_at),
                "recovered_at": _iso(r.recovered_at),
                "approved_by": self._approver_emails(session, r.id),
            }
            for r in session.scalars(query.order_by(RecoveryRequestRecord.recovered_at))
            for serial in (
                r.target_serial,
                *(k.target_serial for k in self._older_keys(session, r.id)),
            )
        ]

    def _append_refusal(
        self,
        session: Session,
        *,
        actor: str,
        action: str | None,
        request_id: str | None,
        reason: str,
        signer_fingerprint: str | None,
    ) -> None:
        self.audit.append(
            session,
            "recovery.refused",
            actor=actor,
            data={
                "action": action,
                "reason": reason[:500],
                "request_id": request_id,
                "signer_fingerprint": signer_fingerprint,
            },
        )

    def _append_admitted_refusal(self, session: Session, who: Admitted | None, reason: str) -> None:
        self._append_refusal(
            session,
            actor=who.email if who else "unknown",
            action=who.message.action if who else None,
            request_id=str(who.message.body.get("request_id") or "") or None if who else None,
            reason=reason,
            signer_fingerprint=who.fingerprint if who else None,
        )

    def _audit_refusal(self, who: Admitted | None, reason: str, now: datetime) -> None:
        with self.db.transaction() as session:
            if who is not None:
                try:
                    with session.begin_nested():
                        self.admission.remember_nonce(session, who, now)
                except RecoveryRefused:
                    pass  # already seen: the refusal is still recorded
            self._append_admitted_refusal(session, who, reason)


def _alert_body(alert: RecoveryAlert, row: RecoveryRequestRecord, token: str, home: Path) -> str:
    return (
        f"The key recovery service saw unusual activity.\n\n"
        f"Rule:       {alert.rule}\n"
        f"Detail:     {alert.detail}\n"
        f"Admin:      {row.requester_email}\n"
        + (
            f"Recovering: the key of {row.target_email} (certificate {row.target_serial})\n"
            if row.key_count == 1
            else f"Recovering: all {row.key_count} keys of {row.target_email} "
            f"(newest certificate {row.target_serial})\n"
        )
        + f"Request:    {row.id}\n\n"
        + (
            "Further recoveries are HELD until you confirm this alert.\n"
            if alert.holds
            else "Recoveries are not held.\n"
        )
        + "If this is expected, confirm it on the recovery service host:\n\n"
        f"    mailpki recovery-service confirm --home {home} {alert.id} --token {token}\n\n"
        "If it is not expected, do not confirm: suspend the admin and run\n"
        f"'mailpki recovery reissue --recovered-by {row.requester_email}' on the CA.\n"
    )


def _certificate(der: bytes) -> x509.Certificate | None:
    try:
        return x509.load_der_x509_certificate(der)
    except ValueError:
        return None


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def parse_since(text: str | None) -> datetime | None:
    """--since DATE for reports: YYYY-MM-DD or an ISO 8601 time (UTC if no offset)."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(f"'since' {text[:40]!r} is not a date (YYYY-MM-DD) or ISO time") from None
    return value if value.tzinfo else value.replace(tzinfo=UTC)
