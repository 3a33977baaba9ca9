"""Leavers: people whose directory entry was disabled or has gone.

Disabled means what the directory says: Active Directory's userAccountControl bit 0x2,
an OpenLDAP ppolicy lock (pwdAccountLockedTime), `enabled=false` in the embedded
directory's import. Gone means the entry is no longer found although an earlier check
saw it ("seen" marks): a certificate enrolled for an address no directory ever held is
not a leaver.

`lifecycle.on_leave` = revoke (reason affiliationChanged; the revocation unpublishes the
certificate) or keep. Escrowed keys are untouched either way: reading a leaver's mail
is the main reason escrow exists. Two guards keep an outage from reading as "everyone
left": every lookup must succeed (a timeout, an unreachable server, a truncated answer
stop the whole check: nothing revoked), and more than `lifecycle.max_leavers` in one
check is held for an officer instead of acted on.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from cryptography import x509
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mailpki.ca.serials import show_serial
from mailpki.ca.succession import SUBSCRIBER
from mailpki.errors import DirectoryError, RevocationError
from mailpki.instance.expiry import officers
from mailpki.instance.instance import Instance
from mailpki.notify.mail import queue
from mailpki.store.marks import claim, claim_many, subjects_of
from mailpki.store.models import CertificateRecord

SEEN = "seen"


@dataclass(frozen=True)
class Leaver:
    email: str
    why: str  # "disabled in the directory" | "gone from the directory"
    serials: tuple[str, ...]


@dataclass
class LeaverReport:
    checked: int = 0
    leavers: list[Leaver] = field(default_factory=list)
    revoked: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    # Set when the check stopped: nothing was revoked.
    stopped: str | None = None


def _holders(session: Session, now: datetime) -> dict[str, list[str]]:
    """Mail (lowercased) -> serials of its current certificates."""
    rows = session.execute(
        select(func.lower(CertificateRecord.email), CertificateRecord.serial)
        .where(
            *SUBSCRIBER,
            CertificateRecord.status == "valid",
            CertificateRecord.not_after > now,
        )
        .order_by(CertificateRecord.id)
    )
    holders: dict[str, list[str]] = {}
    for mail, serial in rows:
        holders.setdefault(str(mail), []).append(str(serial))
    return holders


def find_leavers(
    instance: Instance, *, now: datetime | None = None
) -> tuple[LeaverReport, list[str]]:
    """Ask the directories about every certificate holder; returns the report (with its
    leavers) and the mails seen for the first time (marked by `apply`)."""
    when = now or datetime.now(UTC)
    report = LeaverReport()
    with instance.db.session() as session:
        holders = _holders(session, when)
    report.checked = len(holders)
    if not holders:
        return report, []
    try:
        entries = instance.directories.find_many_by_mail(list(holders))
    except DirectoryError as exc:
        report.stopped = f"directory unavailable, nobody taken for a leaver: {exc}"
        return report, []
    with instance.db.session() as session:
        seen = subjects_of(session, SEEN)
    first_seen: list[str] = []
    for mail, entry in sorted(entries.items()):
        if entry is None:
            if mail in seen:
                report.leavers.append(Leaver(mail, "gone from the directory", tuple(holders[mail])))
        elif not entry.enabled:
            report.leavers.append(Leaver(mail, "disabled in the directory", tuple(holders[mail])))
        elif mail not in seen:
            first_seen.append(mail)
    return report, first_seen


def _officer_notice(instance: Instance, session: Session, leaver: Leaver, action: str) -> None:
    body = (
        f"{leaver.email} is {leaver.why}.\n\n"
        f"Certificates: {', '.join(show_serial(s) for s in leaver.serials)}\n"
        f"Action (lifecycle.on_leave): {action}.\n\n"
        "The escrowed encryption keys stay recoverable ('mailpki recovery request').\n"
    )
    for officer in officers(instance):
        queue(
            session,
            kind="lifecycle.leaver",
            to=officer,
            subject=f"Leaver: {leaver.email} ({action})",
            body=body,
        )


def apply(instance: Instance, *, actor: str, now: datetime | None = None) -> LeaverReport:
    """Find leavers and apply lifecycle.on_leave; the officers are told once per person."""
    when = now or datetime.now(UTC)
    report, first_seen = find_leavers(instance, now=when)
    if report.stopped:
        return report
    if first_seen:
        with instance.db.transaction() as session:
            claim_many(session, SEEN, first_seen, when)
    limit = int(instance.config.get("lifecycle.max_leavers"))
    if len(report.leavers) > limit:
        report.stopped = (
            f"{len(report.leavers)} leavers in one check is more than lifecycle.max_leavers "
            f"({limit}): taken for a directory fault, nothing revoked; check the directory, "
            "then raise the limit if they really left"
        )
        with instance.db.transaction() as session:
            if claim(session, "leavers-held", f"{when:%Y-%m-%d}", when):
                for officer in officers(instance):
                    queue(
                        session,
                        kind="lifecycle.held",
                        to=officer,
                        subject=f"Leaver check held: {len(report.leavers)} leavers at once",
                        body=report.stopped + "\n",
                    )
                instance.audit.append(
                    session,
                    "leavers.held",
                    actor=actor,
                    data={"leavers": len(report.leavers), "limit": limit},
                )
        return report
    keep = instance.config.get("lifecycle.on_leave") == "keep"
    for leaver in report.leavers:
        if keep:
            with instance.db.transaction() as session:
                if claim(session, "leaver", leaver.email, when):
                    _officer_notice(instance, session, leaver, "kept (not revoked)")
                    instance.audit.append(
                        session,
                        "person.left",
                        actor=actor,
                        data={"email": leaver.email, "why": leaver.why, "action": "keep"},
                    )
            report.kept.extend(leaver.serials)
            continue
        for serial in leaver.serials:

            def notify(session: Session, leaver: Leaver = leaver) -> None:
                if claim(session, "leaver", leaver.email, when):
                    _officer_notice(instance, session, leaver, "certificates revoked")
                    instance.audit.append(
                        session,
                        "person.left",
                        actor=actor,
                        data={"email": leaver.email, "why": leaver.why, "action": "revoke"},
                    )

            try:
                instance.ca.revoke(
                    int(serial, 16),
                    x509.ReasonFlags.affiliation_changed,
                    actor=actor,
                    within=notify,
                )
            except RevocationError:
                continue  # revoked meanwhile (another node, an officer)
            report.revoked.append(serial)
    return report
