"""Enrollment use cases of an instance: one person, reading a CSV of people, reconcile,
pool. Enrolling the people of a CSV in worker processes is `instance.bulk`."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from mailpki.base.files import write_atomically
from mailpki.enrollment.enroll import (
    Enrolled,
    Enroller,
    EnrollmentRequest,
    ReconcileResult,
    reconcile,
)
from mailpki.errors import InputError, MailPKIError
from mailpki.instance.instance import Instance
from mailpki.instance.operations import person_for
from mailpki.keystore.key_types import KeyType
from mailpki.keystore.keys import parse_key_type
from mailpki.notify.mail import DeliveryReport, deliver_pending

MAX_CSV_BYTES = 50 * 1024 * 1024
MAX_CSV_ROWS = 1_000_000
CSV_COLUMNS = ("email", "name", "given_name", "surname", "key_type")


def enroller(instance: Instance, on_step: Callable[[str], None] | None = None) -> Enroller:
    return Enroller(
        ca=instance.ca,
        keys=instance.key_manager,
        audit=instance.audit,
        chain=[instance.hierarchy.issuing, instance.hierarchy.root],
        on_step=on_step,
    )


@dataclass(frozen=True)
class EnrollOutcome:
    email: str
    serial: str
    path: Path
    generated_password: str | None
    signing_certificate_path: Path | None
    from_pool: bool


def enroll_with(
    instance: Instance,
    *,
    email: str,
    name: str,
    actor: str,
    hand_over: Callable[[bytes, str], None],
    password: bytes | None = None,
    legacy_p12: bool = False,
    signing_csr: bytes | None = None,
    key_type: str | None = None,
    given_name: str | None = None,
    surname: str | None = None,
    organisation: str | None = None,
    site: str | None = None,
    on_step: Callable[[str], None] | None = None,
    announce: Callable[[Enrolled], None] | None = None,
    record_delivery: bool = True,
) -> Enrolled:
    """Enroll one person; `hand_over(pkcs12, serial)` delivers the file (to disk, to a
    download), `announce` tells the person before the delivery is recorded."""
    run = enroller(instance, on_step)
    profile = run.choose_profile(profile=None, dual_key=signing_csr is not None)
    person = person_for(
        instance,
        name=name,
        email=email,
        profile=profile.name,
        given_name=given_name,
        surname=surname,
        organisation=organisation,
        site=site,
    )
    request = EnrollmentRequest(
        person=person,
        key_type=parse_key_type(key_type or str(instance.config.get("keymanager.key_type"))),
        profile=profile.name,
        signing_csr=signing_csr,
        password=password,
        legacy_p12=legacy_p12,
    )
    return run.enroll(
        request,
        actor=actor,
        hand_over=hand_over,
        announce=announce,
        record_delivery=record_delivery,
    )


def enroll_one(
    instance: Instance,
    *,
    email: str,
    name: str,
    out: Path,
    actor: str,
    password: bytes | None = None,
    legacy_p12: bool = False,
    signing_csr: bytes | None = None,
    key_type: str | None = None,
    given_name: str | None = None,
    surname: str | None = None,
    organisation: str | None = None,
    site: str | None = None,
    on_step: Callable[[str], None] | None = None,
    send_mail: bool = True,
    announce: Callable[[EnrollOutcome], None] | None = None,
    record_delivery: bool = True,
    sync: bool = True,
) -> EnrollOutcome:
    """Enroll one person and write the PKCS#12 to `out` (atomically, mode 600).

    `announce(outcome)` runs once the files are written and before the delivery is
    recorded: it shows the person the generated password (if it cannot, the key stays
    undelivered and `keys reconcile` revokes it). With `record_delivery=False` the
    caller records the delivery (`Enroller.record_delivered`) after its own announcement;
    with `sync=False` as well, it must first make the file durable (`sync_files`).
    """
    if not sync and record_delivery:
        raise ValueError("a PKCS#12 written without fsync must not be recorded as delivered")
    if out.exists():
        raise InputError(f"{out} exists; refusing to overwrite a PKCS#12")
    signing_path = out.with_name(out.stem + "-signing.pem")

    def outcome_of(enrolled: Enrolled) -> EnrollOutcome:
        return EnrollOutcome(
            email=enrolled.email,
            serial=enrolled.serial,
            path=out,
            generated_password=enrolled.generated_password,
            signing_certificate_path=(
                signing_path if enrolled.signing_certificate is not None else None
            ),
            from_pool=enrolled.from_pool,
        )

    def tell(enrolled: Enrolled) -> None:
        if enrolled.signing_certificate is not None:
            write_atomically(signing_path, _pem(enrolled.signing_certificate))
        if announce is not None:
            announce(outcome_of(enrolled))

    enrolled = enroll_with(
        instance,
        email=email,
        name=name,
        actor=actor,
        hand_over=lambda data, _serial: write_atomically(out, data, private=True, sync=sync),
        password=password,
        legacy_p12=legacy_p12,
        signing_csr=signing_csr,
        key_type=key_type,
        given_name=given_name,
        surname=surname,
        organisation=organisation,
        site=site,
        on_step=on_step,
        announce=tell,
        record_delivery=record_delivery,
    )
    if send_mail:
        deliver_now(instance)
    return outcome_of(enrolled)


def flush_mail(instance: Instance) -> DeliveryReport | None:
    """Send queued notices now; a failure leaves them queued for 'mailpki mail flush'."""
    try:
        return deliver_pending(instance.db, instance.mail_settings)
    except MailPKIError:
        return None


def deliver_now(instance: Instance) -> None:
    """After an enrollment: send its notice and publish its certificate, best effort
    (both stay queued for the server's housekeeping or 'directory sync' on failure)."""
    flush_mail(instance)
    instance.publish_pending()


# -- bulk ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Enrollee:
    """One row of a bulk-enrollment CSV (outside input, checked again by policy)."""

    line: int
    email: str
    name: str
    given_name: str | None
    surname: str | None
    key_type: str | None


def read_people(data: bytes) -> list[Enrollee]:
    """Rows of a CSV with a header: email,name[,given_name,surname,key_type]."""
    if len(data) > MAX_CSV_BYTES:
        raise InputError(f"the CSV is larger than {MAX_CSV_BYTES // (1024 * 1024)} MB")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError("the CSV is not UTF-8") from None
    # strict: an unclosed quote is an error, not a field that swallows every later row.
    reader = csv.DictReader(io.StringIO(text), strict=True)
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise InputError(f"the CSV header line is malformed: {exc}") from None
    header = [h.strip().lower() for h in (fieldnames or [])]
    if "email" not in header or "name" not in header:
        raise InputError("the CSV needs a header line with at least 'email' and 'name'")
    unknown = set(header) - set(CSV_COLUMNS)
    if unknown:
        raise InputError(
            f"unknown CSV column(s): {', '.join(sorted(unknown))} (known: {', '.join(CSV_COLUMNS)})"
        )
    reader.fieldnames = header
    people: list[Enrollee] = []
    seen: set[str] = set()
    try:
        for row in reader:
            if len(people) >= MAX_CSV_ROWS:
                raise InputError(f"the CSV has more than {MAX_CSV_ROWS} rows")
            if None in row:
                raise InputError(f"line {reader.line_num}: more fields than the header has")
            email = (row.get("email") or "").strip().lower()
            if not email and not any((v or "").strip() for v in row.values()):
                continue  # blank line
            if email in seen:
                raise InputError(f"line {reader.line_num}: {email} appears twice")
            seen.add(email)
            key_type = (row.get("key_type") or "").strip() or None
            if key_type is not None:
                parse_key_type(key_type)
            people.append(
                Enrollee(
                    line=reader.line_num,
                    email=email,
                    name=(row.get("name") or "").strip(),
                    given_name=(row.get("given_name") or "").strip() or None,
                    surname=(row.get("surname") or "").strip() or None,
                    key_type=key_type,
                )
            )
    except csv.Error as exc:
        raise InputError(f"the CSV is malformed near line {reader.line_num}: {exc}") from None
    if not people:
        raise InputError("the CSV has no people in it")
    return people


def p12_name(email: str) -> str:
    """A safe file name for a mail address."""
    return re.sub(r"[^A-Za-z0-9@._+-]", "_", email) + ".p12"


# -- housekeeping -------------------------------------------------------------------------


def reconcile_deliveries(instance: Instance, *, actor: str, all_pending: bool) -> ReconcileResult:
    return reconcile(
        instance.ca, instance.key_manager, instance.audit, actor=actor, all_pending=all_pending
    )


def fill_pool(
    instance: Instance, *, target: int | None = None, progress: Callable[[int], None] | None = None
) -> int:
    key_type: KeyType = parse_key_type(str(instance.config.get("keymanager.key_type")))
    size = int(instance.config.get("keymanager.pool_size")) if target is None else target
    return instance.key_manager.fill_pool(key_type, size, progress=progress)


def _pem(certificate: x509.Certificate) -> bytes:
    from cryptography.hazmat.primitives.serialization import Encoding

    return certificate.public_bytes(Encoding.PEM)
