"""Renewal use cases: one person (CLI, portal) and everyone whose certificate expires soon.

A renewal is an enrollment that replaces a certificate: a new key pair, escrowed before
delivery; a new certificate from the current profile; the old certificate superseded
(not revoked) in the transaction that stores the new one, so the directory publishes the
new one in place of the old. Dual key renews both halves: the escrowed encryption key is
new, the person's own signing key is certified again.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.types import CertificatePublicKeyTypes
from cryptography.x509.oid import NameOID

from mailpki.base.files import write_atomically
from mailpki.ca.succession import CurrentCertificate, current_certificates
from mailpki.directory.entry import DirectoryEntry
from mailpki.enrollment.enroll import (
    DUAL_ENCRYPTION_PROFILE,
    DUAL_SIGNING_PROFILE,
    Enrolled,
    EnrollmentRequest,
)
from mailpki.errors import DirectoryError, InputError, MailPKIError, RenewalRefused
from mailpki.instance.bulk import BulkItem
from mailpki.instance.enrollments import deliver_now, enroller, p12_name
from mailpki.instance.expiry import expiring_certificates
from mailpki.instance.instance import Instance
from mailpki.instance.operations import person_for
from mailpki.keystore.keys import parse_key_type
from mailpki.policy.person import Person

MAX_RENEW_WITHIN_DAYS = 3650


@dataclass(frozen=True)
class RenewalPlan:
    """What a renewal of one person replaces, decided before anything is made."""

    email: str
    renews: CurrentCertificate
    signing: CurrentCertificate | None  # dual key: the signing half, re-certified
    profile: str | None  # None: the instance's current default profile


@dataclass(frozen=True)
class RenewOutcome:
    email: str
    old_serial: str
    serial: str
    path: Path
    generated_password: str | None
    signing_certificate_path: Path | None


def check_within_days(days: int) -> int:
    if isinstance(days, bool) or not 0 <= days <= MAX_RENEW_WITHIN_DAYS:
        raise InputError(
            f"the number of days must be between 0 and {MAX_RENEW_WITHIN_DAYS}, not {days}"
        )
    return days


def plan(instance: Instance, email: str, *, now: datetime | None = None) -> RenewalPlan:
    """Which certificate of `email` a renewal replaces; refuses with a reason when there
    is none (unknown mail, no certificate, only revoked / expired / renewed ones)."""
    if not email or "@" not in email or len(email) > 320:
        raise InputError(f"{email!r} is not a mail address")
    when = now or datetime.now(UTC)
    with instance.db.session() as session:
        current = current_certificates(session, email, when)
    central = [c for c in current if c.profile != DUAL_SIGNING_PROFILE]
    if not central:
        raise RenewalRefused(
            f"{email} has only a signing certificate of their own key; enroll again for an "
            "escrowed encryption key"
        )
    renews = central[0]
    dual = renews.profile == DUAL_ENCRYPTION_PROFILE
    signing = next((c for c in current if c.profile == DUAL_SIGNING_PROFILE), None)
    return RenewalPlan(
        email=renews.email,
        renews=renews,
        signing=signing if dual else None,
        profile=DUAL_ENCRYPTION_PROFILE if dual else None,
    )


def _entry(instance: Instance, email: str) -> DirectoryEntry | None:
    """The person's directory entry if a directory can tell; a directory that is down
    does not stop a renewal (the old certificate's subject is used instead)."""
    try:
        return instance.directories.find_by_mail(email)
    except DirectoryError:
        return None


def _subject_value(certificate: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = certificate.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def _person(instance: Instance, chosen: RenewalPlan, profile: str | None) -> Person:
    entry = _entry(instance, chosen.email)
    if entry is not None and not entry.enabled:
        raise RenewalRefused(
            f"{chosen.email} is disabled in the directory ({entry.dn}): a leaver is not renewed"
        )
    old = x509.load_der_x509_certificate(chosen.renews.der)
    if entry is not None:
        name = entry.display_name or " ".join(p for p in (entry.given_name, entry.surname) if p)
        return person_for(
            instance,
            name=name or entry.login,
            email=chosen.email,
            profile=profile,
            given_name=entry.given_name,
            surname=entry.surname,
            organisation=entry.organisation,
            site=entry.site,
        )
    common = _subject_value(old, NameOID.COMMON_NAME)
    return person_for(
        instance,
        name=common or chosen.email,
        email=chosen.email,
        profile=profile,
        given_name=_subject_value(old, NameOID.GIVEN_NAME),
        surname=_subject_value(old, NameOID.SURNAME),
        organisation=_subject_value(old, NameOID.ORGANIZATION_NAME),
        site=_subject_value(old, NameOID.ORGANIZATIONAL_UNIT_NAME),
    )


def renew_with(
    instance: Instance,
    email: str,
    *,
    actor: str,
    hand_over: Callable[[bytes, str], None],
    password: bytes | None = None,
    legacy_p12: bool = False,
    on_step: Callable[[str], None] | None = None,
    signing_csr: bytes | None = None,
) -> tuple[RenewalPlan, Enrolled]:
    """Renew the current certificate of `email`; `hand_over(pkcs12, serial)` delivers it.

    Dual key: the encryption half gets a new escrowed key; the signing half certifies
    the person's own signing key again, or the new key of `signing_csr` (the portal,
    which made the signing key centrally at enrollment, makes a new one the same way)."""
    chosen = plan(instance, email)
    run = enroller(instance, on_step)
    profile = run.choose_profile(profile=chosen.profile, dual_key=chosen.signing is not None)
    person = _person(instance, chosen, profile.name)
    signing_key: CertificatePublicKeyTypes | None = None
    if chosen.signing is None:
        signing_csr = None  # not a dual-key pair: nothing to certify for signing
    elif signing_csr is None:
        signing_key = x509.load_der_x509_certificate(chosen.signing.der).public_key()
    request = EnrollmentRequest(
        person=person,
        key_type=parse_key_type(str(instance.config.get("keymanager.key_type"))),
        profile=profile.name,
        password=password,
        legacy_p12=legacy_p12,
        renews=chosen.renews.serial,
        renews_signing=chosen.signing.serial if chosen.signing else None,
        signing_key=signing_key,
        signing_csr=signing_csr,
    )
    return chosen, run.enroll(request, actor=actor, hand_over=hand_over)


def renew_one(
    instance: Instance,
    email: str,
    *,
    out: Path,
    actor: str,
    password: bytes | None = None,
    legacy_p12: bool = False,
    send_mail: bool = True,
    on_step: Callable[[str], None] | None = None,
) -> RenewOutcome:
    """Renew one person's certificate and write the new PKCS#12 to `out` (mode 600)."""
    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite a PKCS#12")
    if not out.parent.is_dir():
        raise InputError(f"the folder {out.parent} does not exist")
    chosen, enrolled = renew_with(
        instance,
        email,
        actor=actor,
        hand_over=lambda data, _serial: write_atomically(out, data, private=True),
        password=password,
        legacy_p12=legacy_p12,
        on_step=on_step,
    )
    signing_path = None
    if enrolled.signing_certificate is not None:
        from cryptography.hazmat.primitives.serialization import Encoding

        signing_path = out.with_name(out.stem + "-signing.pem")
        write_atomically(signing_path, enrolled.signing_certificate.public_bytes(Encoding.PEM))
    if send_mail:
        deliver_now(instance)
    return RenewOutcome(
        email=enrolled.email,
        old_serial=chosen.renews.serial,
        serial=enrolled.serial,
        path=out,
        generated_password=enrolled.generated_password,
        signing_certificate_path=signing_path,
    )


# -- bulk ---------------------------------------------------------------------------------


def due_for_renewal(instance: Instance, within_days: int) -> list[str]:
    """Mail addresses whose current certificate expires within `within_days` (not yet
    renewed), soonest first."""
    check_within_days(within_days)
    rows = expiring_certificates(instance, timedelta(days=within_days))
    seen: dict[str, None] = {}
    for row in rows:
        if row.renewed_by is None and row.profile != DUAL_SIGNING_PROFILE:
            seen.setdefault(row.email.lower(), None)
    return list(seen)


_worker_instance: Instance | None = None


def _init_worker(home: str) -> None:
    global _worker_instance
    _worker_instance = Instance.open(Path(home))


def _renew_in_worker(
    line: int, email: str, out_dir: str, password: bytes | None, legacy: bool, actor: str
) -> BulkItem:
    assert _worker_instance is not None
    return _renew_person(_worker_instance, line, email, Path(out_dir), password, legacy, actor)


def _renew_person(
    instance: Instance,
    line: int,
    email: str,
    out_dir: Path,
    password: bytes | None,
    legacy: bool,
    actor: str,
) -> BulkItem:
    try:
        outcome = renew_one(
            instance,
            email,
            out=out_dir / p12_name(email),
            actor=actor,
            password=password,
            legacy_p12=legacy,
            send_mail=False,
        )
    except MailPKIError as exc:
        return BulkItem(line, email, None, None, None, str(exc))
    return BulkItem(
        line, email, outcome.serial, str(outcome.path), outcome.generated_password, None
    )


def bulk_renew(
    instance: Instance,
    emails: list[str],
    out_dir: Path,
    *,
    actor: str,
    workers: int,
    password: bytes | None = None,
    legacy_p12: bool = False,
) -> Iterator[BulkItem]:
    """Renew everyone in `emails`, `workers` processes at a time; yields each result as
    it completes (`line` is the position in `emails`, from 1). One failure does not stop
    the rest."""
    out_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    taken = [e for e in emails if (out_dir / p12_name(e)).exists()]
    if taken:
        raise InputError(
            f"{out_dir} already holds {len(taken)} of these PKCS#12 files "
            f"(e.g. {p12_name(taken[0])}); use an empty folder"
        )
    if workers <= 1:
        for line, email in enumerate(emails, 1):
            yield _renew_person(instance, line, email, out_dir, password, legacy_p12, actor)
        deliver_now(instance)
        return
    with ProcessPoolExecutor(
        max_workers=workers, initializer=_init_worker, initargs=(str(instance.home),)
    ) as pool:
        pending: set[Future[BulkItem]] = set()
        for line, email in enumerate(emails, 1):
            pending.add(
                pool.submit(
                    _renew_in_worker, line, email, str(out_dir), password, legacy_p12, actor
                )
            )
            if len(pending) >= workers * 4:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    yield future.result()
        for future in pending:
            yield future.result()
    deliver_now(instance)
