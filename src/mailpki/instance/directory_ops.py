"""Directory use cases of an instance: configure, import, look up, log on, publish, approve."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Literal

from mailpki.auth.identity import Authenticator, Identity
from mailpki.auth.pins import PinImportReport, import_pin_rows, import_pins, rows_from_sql
from mailpki.directory.entry import DirectoryEntry
from mailpki.directory.people_import import ImportReport, import_people
from mailpki.directory.publisher import PublishReport
from mailpki.directory.registry import DirectorySettings, open_directory
from mailpki.enrollment.requests import RequestView
from mailpki.errors import ConfigError, DirectoryError, InputError, NotFoundError
from mailpki.instance.enrollments import EnrollOutcome, enroll_one, flush_mail
from mailpki.instance.instance import Instance
from mailpki.keystore.keys import parse_key_type


def add_directory(instance: Instance, settings: DirectorySettings, *, actor: str) -> None:
    """Check the settings and the service account (a real search), then store them."""
    settings.check()  # first: no service password may go over plain ldap:// in a probe
    directory = open_directory(settings)
    try:
        directory.find_by_login("mailpki-connection-probe")
    except DirectoryError as exc:
        raise DirectoryError(f"not added: {exc}") from None
    finally:
        directory.close()
    instance.directories.add(settings)
    with instance.db.transaction() as session:
        instance.audit.append(session, "directory.added", actor=actor, data=settings.describe())


def remove_directory(instance: Instance, name: str, *, actor: str) -> None:
    instance.directories.remove(name)
    with instance.db.transaction() as session:
        instance.audit.append(session, "directory.removed", actor=actor, data={"name": name})


def import_embedded(
    instance: Instance,
    data: bytes,
    kind: Literal["csv", "ldif"],
    *,
    actor: str,
    full: bool = False,
) -> ImportReport:
    if instance.directories.settings():
        raise InputError(
            "this instance uses LDAP directories; the embedded directory is used only "
            "when none is added ('mailpki directory remove' them first)"
        )
    report = import_people(instance.db, data, kind=kind, full=full)
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "directory.imported",
            actor=actor,
            data={"added": report.added, "updated": report.updated, "errors": len(report.errors),
                  "removed": report.removed, "full": full},
        )  # fmt: skip
    return report


def show(instance: Instance, login: str) -> DirectoryEntry:
    entry = instance.directories.find_by_login(login)
    if entry is None:
        raise NotFoundError(f"no directory entry for {login!r}")
    return entry


def audited_logon(
    instance: Instance,
    authenticator: Authenticator,
    *,
    method: str,
    login: str,
    secret: str,
    source: str,
    actor: str,
    expect_mail: str | None = None,
) -> Identity:
    """A logon through `authenticator` (lockout included), audited either way; the
    secret is never part of the record."""
    try:
        identity = authenticator.authenticate(login, secret, source=source, expect_mail=expect_mail)
    except Exception as exc:
        with instance.db.transaction() as session:
            instance.audit.append(
                session, "logon.refused", actor=actor,
                data={"login": login[:256], "method": method, "reason": str(exc)[:300]},
            )  # fmt: skip
        raise
    with instance.db.transaction() as session:
        instance.audit.append(
            session, "logon.succeeded", actor=actor,
            data={"login": login[:256], "method": method, "dn": identity.entry.dn},
        )  # fmt: skip
    return identity


def authenticate(instance: Instance, login: str, password: str, *, actor: str) -> Identity:
    """A directory logon, as the portal does it (lockout included); audited either way."""
    return audited_logon(
        instance,
        instance.directory_logon,
        method="directory",
        login=login,
        secret=password,
        source="cli",
        actor=actor,
    )


def sync(instance: Instance, *, actor: str) -> PublishReport:
    report = instance.publisher.sync()
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "directory.synced",
            actor=actor,
            data={"published": report.published, "unpublished": report.unpublished,
                  "failed": report.failed},
        )  # fmt: skip
    return report


def import_hr_pins(instance: Instance, data: bytes, *, actor: str) -> PinImportReport:
    from datetime import timedelta

    report = import_pins(
        instance.db, data, validity=timedelta(days=int(instance.config.get("pins.validity_days")))
    )
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "pins.imported",
            actor=actor,
            data={"added": report.added, "replaced": report.replaced, "errors": len(report.errors)},
        )
    return report


def import_hr_pins_from_sql(instance: Instance, *, actor: str) -> PinImportReport:
    """Import the PINs the configured HR query returns (pins.sql_url, pins.sql_query)."""
    from datetime import timedelta

    url = str(instance.config.get("pins.sql_url"))
    query = str(instance.config.get("pins.sql_query"))
    unset = [key for key, value in (("pins.sql_url", url), ("pins.sql_query", query)) if not value]
    if unset:
        raise ConfigError(
            f"{' and '.join(unset)} not set ('mailpki config set KEY VALUE'): the HR "
            "database URL, and a query returning employee_id, mail, name, pin"
        )
    rows = rows_from_sql(url, query)
    report = import_pin_rows(
        instance.db, rows, validity=timedelta(days=int(instance.config.get("pins.validity_days")))
    )
    del rows  # the clear PINs: not kept longer than the hashing needs them
    with instance.db.transaction() as session:
        instance.audit.append(
            session,
            "pins.imported",
            actor=actor,
            data={"added": report.added, "replaced": report.replaced, "errors": len(report.errors),
                  "source": "sql"},
        )  # fmt: skip
    return report


def decide_request(
    instance: Instance, request_id: int, *, approve: bool, actor: str, note: str
) -> RequestView:
    """An officer's decision; the person is mailed it (now, or by housekeeping later)."""
    view = instance.approvals.decide_manually(request_id, approve=approve, actor=actor, note=note)
    flush_mail(instance)
    return view


def enroll_user(
    instance: Instance,
    login: str,
    *,
    out: Path,
    actor: str,
    password: bytes | None = None,
    legacy_p12: bool = False,
    signing_csr: bytes | None = None,
    key_type: str | None = None,
    announce: Callable[[EnrollOutcome], None] | None = None,
) -> EnrollOutcome:
    """Enroll a directory user: name, mail, organisation and site come from the entry;
    the approval rules (or an officer's earlier approval) decide whether it goes on."""
    entry = instance.directories.find_by_login(login)
    if entry is None:
        raise NotFoundError(f"no directory entry for {login!r}")
    if not entry.mail:
        raise InputError(f"{entry.login} has no mail address in the directory")
    approved_request = instance.approvals.authorize(entry, actor=actor)  # RequestQueued
    name = entry.display_name or " ".join(p for p in (entry.given_name, entry.surname) if p)
    outcome = enroll_one(
        instance,
        email=entry.mail,
        name=name or entry.login,
        out=out,
        actor=actor,
        password=password,
        legacy_p12=legacy_p12,
        signing_csr=signing_csr,
        key_type=parse_key_type(key_type) if key_type else None,
        given_name=entry.given_name,
        surname=entry.surname,
        organisation=entry.organisation,
        site=entry.site,
        announce=announce,
    )
    if approved_request is not None:
        instance.approvals.mark_enrolled(approved_request, outcome.serial)
    return outcome
