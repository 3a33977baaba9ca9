"""The administrators' side of key recovery: admin certificates, signed messages to
the Key Recovery Service, rebuilding the recovered key, and revoke-and-reissue.

The service returns only an AES key, encrypted to the requesting admin's certificate;
the PKCS#12 is rebuilt here from the recovery block in the instance's store.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509 import ocsp
from cryptography.x509.oid import NameOID
from sqlalchemy import select

from mailpki.base.files import write_atomically
from mailpki.ca.serials import show_serial
from mailpki.cms.signed import sign
from mailpki.enrollment.enroll import EnrollmentRequest, recovery_notice
from mailpki.errors import (
    EscrowError,
    InputError,
    MailPKIError,
    NotFoundError,
    RecoveryError,
    RecoveryRefused,
)
from mailpki.instance.enrollments import enroller, flush_mail, p12_name
from mailpki.instance.instance import Instance
from mailpki.instance.operations import person_for
from mailpki.keymanager.pkcs12 import LoadedPKCS12, PKCS12Key, load_pkcs12, package
from mailpki.keymanager.pkcs12_history import HistoryEntry, package_history
from mailpki.keystore.keys import parse_key_type
from mailpki.notify.mail import queue
from mailpki.policy.roles import ADMIN_PROFILE, Role, role_oid
from mailpki.recovery.admission import ocsp_nonce
from mailpki.recovery.protocol import (
    Action,
    ApproverStatus,
    EscrowedTarget,
    Message,
    encode_approvers,
    encode_targets,
    new_nonce,
)
from mailpki.recovery.service import parse_since
from mailpki.store.models import AuditRecord


@dataclass(frozen=True)
class AdminCredential:
    """An administrator's key and certificate, from the PKCS#12 `admin add` made."""

    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def from_pkcs12(cls, data: bytes, password: bytes) -> AdminCredential:
        loaded: LoadedPKCS12 = load_pkcs12(data, password)
        if not isinstance(loaded.key, rsa.RSAPrivateKey):
            raise InputError("an administrator's PKCS#12 must hold an RSA key")
        return cls(loaded.key, loaded.certificate)


# -- admin certificates -------------------------------------------------------------------


@dataclass(frozen=True)
class AdminAdded:
    serial: str
    path: Path
    generated_password: str | None


def add_admin(
    instance: Instance,
    *,
    name: str,
    email: str,
    role: Role,
    out: Path,
    password: bytes | None,
    actor: str,
) -> AdminAdded:
    """Issue an administrator certificate with its role, as a PKCS#12.

    The key is not escrowed: an admin key that other admins could recover would let
    them act as that admin. A lost admin key is revoked and replaced instead.
    """
    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite a PKCS#12")
    person = person_for(instance, name=name, email=email, profile=ADMIN_PROFILE)
    key = instance.key_manager.new_admin_key()
    issued = instance.ca.issue_for_key(
        key.public_key(),
        person,
        profile=ADMIN_PROFILE,
        actor=actor,
        extra_policy_oids=(role_oid(str(instance.config.get("admin.role_oid_arc")), role),),
    )
    data, generated = package(
        key,
        issued.certificate,
        [instance.hierarchy.issuing, instance.hierarchy.root],
        password,
        friendly_name=f"{name} ({role})",
    )
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "admin.added",
            actor=actor,
            data={"serial": issued.serial, "email": person.email, "role": role},
        )
    write_atomically(out, data, private=True)
    return AdminAdded(issued.serial, out, generated)


# -- signed messages ----------------------------------------------------------------------


def _service_id(instance: Instance) -> str:
    return str(instance.config.get("recovery.service_id"))


def stapled_status(instance: Instance, certificate: x509.Certificate, nonce: str) -> bytes:
    """A fresh OCSP response for `certificate` from this CA's responder, bound to `nonce`."""
    request = (
        ocsp.OCSPRequestBuilder()
        .add_certificate(certificate, instance.hierarchy.issuer_of(certificate), hashes.SHA256())
        .add_extension(x509.OCSPNonce(ocsp_nonce(nonce)), critical=False)
        .build()
    )
    return instance.ca.answer_ocsp(request.public_bytes(Encoding.DER))


def signed_message(
    instance: Instance,
    admin: AdminCredential,
    action: Action,
    body: dict[str, Any],
    *,
    nonce: str | None = None,
) -> bytes:
    """The message CMS-signed by `admin`, with a fresh OCSP response for its certificate."""
    nonce = nonce or new_nonce()
    message = Message(
        action=action,
        service=_service_id(instance),
        nonce=nonce,
        time=datetime.now(UTC),
        ocsp=stapled_status(instance, admin.certificate, nonce),
        body=body,
    )
    return sign(message.to_bytes(), admin.certificate, admin.key)


def _send(
    instance: Instance,
    admin: AdminCredential,
    action: Action,
    body: dict[str, Any],
    *,
    nonce: str | None = None,
) -> dict[str, Any]:
    """Send a signed message; a refusal is also recorded in this instance's log (the
    service records it in its own), then raised."""
    try:
        return instance.recovery_client.send(
            signed_message(instance, admin, action, body, nonce=nonce)
        )
    except RecoveryRefused as exc:
        with instance.db.transaction() as session:
            instance.audit.append(
                session,
                "recovery.refused",
                actor=_admin_email(admin),
                data={
                    "action": action,
                    "request_id": body.get("request_id"),
                    "reason": str(exc)[:500],
                },
            )
        raise


def _approver_statuses(instance: Instance, fingerprints: list[str], nonce: str) -> str:
    """The `approvers` of a fetch: each approving officer's certificate (found in this
    CA's store) with a fresh OCSP response for it bound to the fetch's `nonce`."""
    statuses = []
    for sha256_hex in fingerprints:
        der = instance.ca.certificate_der_by_fingerprint(sha256_hex)
        if der is None:
            continue  # not ours: the service will not count that approval
        certificate = x509.load_der_x509_certificate(der)
        statuses.append(ApproverStatus(der, stapled_status(instance, certificate, nonce)))
    return encode_approvers(statuses)


def _request_on_service(
    instance: Instance, admin: AdminCredential, request_id: str
) -> dict[str, Any] | None:
    """The service's view of `request_id` (asked, signed, when it runs apart)."""
    client = instance.recovery_client
    if client.is_local:
        requests = client.local_service().requests()
    else:
        requests = list(_send(instance, admin, "list", {})["requests"])
    return next((item for item in requests if item.get("request_id") == request_id), None)


def _outcome_recorded(instance: Instance, request_id: str) -> bool:
    """Whether this instance's log holds the outcome of fetching `request_id`."""
    with instance.db.session() as session:
        rows = session.scalars(
            select(AuditRecord.data).where(
                AuditRecord.event.in_(("key.recovered", "recovery.failed"))
            )
        )
        for text in rows:
            try:
                if json.loads(text).get("request_id") == request_id:
                    return True
            except (ValueError, AttributeError):
                continue  # a mangled record is the audit verifier's finding
    return False


def _settle_interrupted(
    instance: Instance, admin: AdminCredential, item: dict[str, Any], *, actor: str
) -> None:
    """The service released this request's key but no outcome was recorded here: an
    earlier fetch died in between (crash, kill). Record it as failed, then refuse."""
    request_id = str(item["request_id"])
    reason = (
        "an earlier fetch was interrupted after the recovery service released the key, "
        "and the key was never rebuilt here; a request is fetched once: make a new request"
    )
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "recovery.failed",
            actor=actor,
            data={
                "request_id": request_id,
                "serial": item.get("target_serial"),
                "email": item.get("target_email"),
                "recovered_by": item.get("requester"),
                "reason": reason,
            },
        )
    raise RecoveryRefused(f"request {request_id} was already fetched: {reason}")


def request_recovery(
    instance: Instance,
    admin: AdminCredential,
    *,
    email: str,
    serial: str | None,
    reason: str,
    actor: str,
    all_keys: bool = False,
) -> dict[str, Any]:
    """Ask the service for one escrowed key (`serial`, or the newest), or with
    `all_keys` for every delivered escrowed key of `email` under one quorum."""
    if all_keys and serial is not None:
        raise InputError("--all-keys asks for every key of the person: leave out --serial")
    if all_keys:
        history = instance.key_manager.history_of(email)
        if not history:
            raise NotFoundError(f"no escrowed key for {email}")
    else:
        history = [instance.key_manager.block_for(email=email, serial=serial)]
    (found_serial, block), older = history[0], history[1:]
    target = instance.ca.certificate_der(int(found_serial, 16))
    body: dict[str, Any] = {
        "target_certificate": base64.b64encode(target).decode(),
        "wrapped_key": base64.b64encode(block.wrapped_key).decode(),
        "reason": reason,
    }
    if older:
        body["older_keys"] = encode_targets(
            [
                EscrowedTarget(instance.ca.certificate_der(int(s, 16)), b.wrapped_key)
                for s, b in older
            ]
        )
    answer = _send(instance, admin, "request", body)
    _audit(instance, "recovery.requested", actor, admin, answer)
    return answer


def approve_recovery(
    instance: Instance, admin: AdminCredential, request_id: str, *, actor: str
) -> dict[str, Any]:
    answer = _send(instance, admin, "approve", {"request_id": request_id})
    _audit(instance, "recovery.approved", actor, admin, answer)
    return answer


@dataclass(frozen=True)
class Recovered:
    request_id: str
    email: str
    serial: str  # the newest (default) key's certificate
    pkcs12: bytes
    generated_password: str | None
    approved_by: list[str]
    serials: tuple[str, ...] = ()  # every key in the file, newest first


def _released_keys(answer: dict[str, Any]) -> list[tuple[str, bytes]]:
    """(serial, AES key encrypted to the admin) of each key the service released,
    the newest first."""
    try:
        released = [
            (
                str(answer["target_serial"]),
                base64.b64decode(str(answer["encrypted_key"]), validate=True),
            )
        ]
        for item in answer.get("older_keys") or []:
            released.append(
                (
                    str(item["target_serial"]),
                    base64.b64decode(str(item["encrypted_key"]), validate=True),
                )
            )
    except (KeyError, ValueError, TypeError):
        raise RecoveryError("the recovery service's answer lacks the recovered key") from None
    return released


def fetch_recovery(
    instance: Instance,
    admin: AdminCredential,
    request_id: str,
    *,
    new_password: bytes | None,
    actor: str,
    legacy_p12: bool = False,
) -> Recovered:
    """Fetch an approved recovery and rebuild the user's PKCS#12 under a new password.

    The fetch carries the current status of every approving officer's certificate: the
    service counts only approvals whose officers are still valid and unrevoked."""
    item = _request_on_service(instance, admin, request_id)
    released = item is not None and item.get("state") == "recovered"
    if item is not None and released and not _outcome_recorded(instance, request_id):
        _settle_interrupted(instance, admin, item, actor=actor)
    fingerprints = [str(f) for f in (item or {}).get("approver_fingerprints", [])]
    nonce = new_nonce()
    approvers = _approver_statuses(instance, fingerprints, nonce)
    answer = _send(
        instance,
        admin,
        "fetch",
        {"request_id": request_id, "approvers": approvers},
        nonce=nonce,
    )
    released = _released_keys(answer)
    try:
        email = str(answer["target_email"])
        approved_by = [str(x) for x in answer.get("approved_by", [])]
    except (KeyError, ValueError):
        raise RecoveryError("the recovery service's answer lacks the recovered key") from None
    serial = released[0][0]
    opened: list[tuple[str, PKCS12Key, x509.Certificate]] = []
    try:
        for key_serial, encrypted in released:
            certificate = x509.load_der_x509_certificate(
                instance.ca.certificate_der(int(key_serial, 16))
            )
            key = instance.key_manager.recover(
                email=email,
                serial=key_serial,
                certificate_public_key=certificate.public_key(),
                encrypted_aes_key=encrypted,
                admin_key=admin.key,
            )
            if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
                raise EscrowError(f"the key of {key_serial} cannot go into a PKCS#12 file")
            opened.append((key_serial, key, certificate))
    except EscrowError as exc:
        # The service has released the AES key (and logged the recovery): record on this
        # side that the block in our store did not open, then fail.
        with instance.db.transaction() as session:
            instance.audit.append(
                session,
                "recovery.failed",
                actor=actor,
                data={
                    "request_id": request_id,
                    "serial": serial,
                    "email": email,
                    "recovered_by": _admin_email(admin),
                    "reason": str(exc),
                },
            )
        raise
    # Each certificate's own issuing CA (a key history can span CA rollovers), then the root.
    issuers = {instance.hierarchy.issuer_of(c): None for _, _, c in opened}
    chain = [*issuers, instance.hierarchy.root]
    if len(opened) == 1:
        _, key, certificate = opened[0]
        data, generated = package(
            key,
            certificate,
            chain,
            new_password,
            friendly_name=f"{email} (recovered S/MIME {show_serial(serial)})",
            legacy=legacy_p12,
        )
    else:
        data, generated = package_history(
            [
                HistoryEntry(key, certificate, _history_name(email, position, certificate))
                for position, (_, key, certificate) in enumerate(opened)
            ],
            chain,
            new_password,
            legacy=legacy_p12,
        )
    serials = tuple(s for s, _, _ in opened)
    with instance.db.transaction() as session:
        for position, key_serial in enumerate(serials):
            record: dict[str, Any] = {
                "request_id": request_id,
                "serial": key_serial,
                "email": email,
                "recovered_by": _admin_email(admin),
                "approved_by": approved_by,
            }
            if len(serials) > 1:
                record["key"] = f"{position + 1} of {len(serials)}"
            instance.audit.append(session, "key.recovered", actor=actor, data=record)
        queue(
            session,
            kind="key.recovered",
            to=email,
            subject="Your escrowed encryption key was recovered"
            if len(serials) == 1
            else f"Your {len(serials)} escrowed encryption keys were recovered",
            body=recovery_notice(email, ", ".join(serials), _admin_email(admin), approved_by),
        )
    flush_mail(instance)
    return Recovered(request_id, email, serial, data, generated, approved_by, serials)


def _history_name(email: str, position: int, certificate: x509.Certificate) -> str:
    """The friendly name of one key of a history: the newest says so, the older ones
    until when their certificate ran."""
    serial = show_serial(certificate.serial_number)
    if position == 0:
        return f"{email} (recovered S/MIME {serial}, newest)"
    until = certificate.not_valid_after_utc
    return f"{email} (recovered S/MIME {serial}, until {until:%Y-%m-%d})"


def list_requests(instance: Instance, admin: AdminCredential | None) -> list[dict[str, Any]]:
    client = instance.recovery_client
    if admin is None:
        return client.local_service().requests()
    return list(_send(instance, admin, "list", {})["requests"])


def report(
    instance: Instance,
    admin: AdminCredential | None,
    *,
    recovered_by: str | None,
    since: str | None,
) -> list[dict[str, Any]]:
    since_time = parse_since(since)  # InputError before anything is sent
    client = instance.recovery_client
    if admin is None:
        return client.local_service().recoveries(admin=recovered_by, since=since_time)
    body = {"admin": recovered_by, "since": since_time.isoformat() if since_time else None}
    return list(_send(instance, admin, "report", body)["recoveries"])


# -- revoke and reissue -------------------------------------------------------------------


@dataclass(frozen=True)
class Reissued:
    email: str
    old_serial: str
    new_serial: str | None
    path: Path | None
    generated_password: str | None
    error: str | None


def reissue_recovered_by(
    instance: Instance,
    admin_email: str,
    *,
    out_dir: Path,
    actor: str,
    auditor: AdminCredential | None = None,
    password: bytes | None = None,
) -> list[Reissued]:
    """Revoke (keyCompromise) every certificate whose key `admin_email` recovered and
    enroll each person again with a new escrowed key: once per person, however many of
    their keys were recovered (a key-history recovery lists each key)."""
    recoveries = report(instance, auditor, recovered_by=admin_email, since=None)
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    results: list[Reissued] = []
    done: set[str] = set()
    reissued_to: set[str] = set()
    for item in recoveries:
        old = str(item["target_serial"])
        if old in done:
            continue
        done.add(old)
        person = str(item.get("target_email") or "")
        if person and person in reissued_to:
            results.append(_revoke_only(instance, old, person, actor))
            continue
        result = _revoke_and_reissue(instance, old, out_dir, actor, password)
        if result.error is None:
            reissued_to.add(result.email)
        results.append(result)
    return results


def _revoke_only(instance: Instance, serial: str, email: str, actor: str) -> Reissued:
    """Another recovered key of a person already given a new one: revoke it only."""
    try:
        if instance.ca.get(int(serial, 16)).status != "revoked":
            instance.ca.revoke(int(serial, 16), x509.ReasonFlags.key_compromise, actor=actor)
    except MailPKIError as exc:
        return Reissued(email, serial, None, None, None, str(exc))
    return Reissued(email, serial, None, None, None, None)


def _revoke_and_reissue(
    instance: Instance, serial: str, out_dir: Path, actor: str, password: bytes | None
) -> Reissued:
    try:
        info = instance.ca.get(int(serial, 16))
        certificate = x509.load_der_x509_certificate(instance.ca.certificate_der(int(serial, 16)))
        email = info.email or ""
        if info.status != "revoked":
            instance.ca.revoke(int(serial, 16), x509.ReasonFlags.key_compromise, actor=actor)
        run = enroller(instance)
        profile = instance.ca.profile(info.profile)
        person = person_for(
            instance,
            name=_attribute(certificate, NameOID.COMMON_NAME) or email,
            email=email,
            profile=profile.name,
            given_name=_attribute(certificate, NameOID.GIVEN_NAME),
            surname=_attribute(certificate, NameOID.SURNAME),
        )
        key_type = parse_key_type(str(instance.config.get("keymanager.key_type")))
        out = out_dir / p12_name(email).replace(".p12", f"-{datetime.now(UTC):%Y%m%d%H%M%S}.p12")
        enrolled = run.enroll(
            EnrollmentRequest(
                person=person, key_type=key_type, profile=profile.name, password=password
            ),
            actor=actor,
            hand_over=lambda data, _serial: write_atomically(out, data, private=True),
        )
    except MailPKIError as exc:
        return Reissued("", serial, None, None, None, str(exc))
    return Reissued(email, serial, enrolled.serial, out, enrolled.generated_password, None)


def _attribute(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _admin_email(admin: AdminCredential) -> str:
    try:
        san = admin.certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
        return str(san.value.get_values_for_type(x509.RFC822Name)[0]).lower()
    except (x509.ExtensionNotFound, IndexError):
        raise NotFoundError("the admin certificate has no mail address") from None


def _audit(
    instance: Instance, event: str, actor: str, admin: AdminCredential, answer: dict[str, Any]
) -> None:
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            event,
            actor=actor,
            data={
                "request_id": answer.get("request_id"),
                "admin": _admin_email(admin),
                "state": answer.get("state"),
            },
        )
