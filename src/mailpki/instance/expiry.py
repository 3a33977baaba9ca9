"""Expiry: what expires soon, the people's renewal notices, the officers' daily summary,
and the withdrawal of expired certificates from the directory.

Every mail here is sent once, on any number of nodes: its once-only mark (store/marks)
is claimed in the transaction that queues it, so of two nodes running the same chore
one queues the mail and the other finds the mark taken.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import ColumnElement, Select, func, select
from sqlalchemy.orm import Session

from mailpki.ca.serials import show_serial
from mailpki.ca.succession import SUBSCRIBER
from mailpki.directory.entry import DirectoryEntry
from mailpki.directory.publisher import UNPUBLISH, queue_job
from mailpki.enrollment.invitations import new_link
from mailpki.errors import DirectoryError
from mailpki.instance.instance import Instance
from mailpki.notify.mail import is_plain_address, queue
from mailpki.store.marks import claim, claim_batch, claimed
from mailpki.store.models import CertificateRecord

SUMMARY_DAYS = 30
BATCH = 500  # notices per transaction
SUMMARY_LINES = 500


@dataclass(frozen=True)
class ExpiringCertificate:
    serial: str
    email: str
    profile: str
    not_after: datetime
    renewed_by: str | None  # the successor's serial when it was renewed

    def as_dict(self) -> dict[str, str | None]:
        return {
            "serial": self.serial,
            "email": self.email,
            "profile": self.profile,
            "not_after": self.not_after.isoformat(),
            "renewed_by": self.renewed_by,
        }


@dataclass
class NoticeReport:
    notices: list[tuple[str, str, int]] = field(default_factory=list)  # (mail, serial, days)
    summary_sent_to: list[str] = field(default_factory=list)
    withdrawn: list[str] = field(default_factory=list)  # expired, unpublished
    notes: list[str] = field(default_factory=list)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _expiring_where(when: datetime, within: timedelta) -> tuple[ColumnElement[bool], ...]:
    return (
        *SUBSCRIBER,
        CertificateRecord.status == "valid",
        CertificateRecord.not_after > when,
        CertificateRecord.not_after <= when + within,
    )


# serial, email, profile, not_after, superseded_by
_Rows = Select[str, str | None, str, datetime, str | None]


def _expiring_query(when: datetime, within: timedelta) -> _Rows:
    return (
        select(
            CertificateRecord.serial,
            CertificateRecord.email,
            CertificateRecord.profile,
            CertificateRecord.not_after,
            CertificateRecord.superseded_by,
        )
        .where(*_expiring_where(when, within))
        .order_by(CertificateRecord.not_after, CertificateRecord.id)
    )


def _rows(session: Session, query: _Rows) -> list[ExpiringCertificate]:
    return [
        ExpiringCertificate(serial, str(email), profile, _utc(not_after), superseded_by)
        for serial, email, profile, not_after, superseded_by in session.execute(query)
    ]


def expiring_certificates(
    instance: Instance, within: timedelta, *, now: datetime | None = None
) -> list[ExpiringCertificate]:
    """Unrevoked subscriber certificates that expire within `within` from now (soonest
    first), renewed ones included (with their successor)."""
    when = now or datetime.now(UTC)
    with instance.db.session() as session:
        return _rows(session, _expiring_query(when, within))


def expiring_page(
    instance: Instance,
    within: timedelta,
    *,
    limit: int,
    offset: int = 0,
    now: datetime | None = None,
) -> tuple[list[ExpiringCertificate], int]:
    """One page of `expiring_certificates` (same rows, same order) and how many there
    are over all pages: the API's view, which must not load 100,000 rows for 100."""
    when = now or datetime.now(UTC)
    count = (
        select(func.count()).select_from(CertificateRecord).where(*_expiring_where(when, within))
    )
    with instance.db.session() as session:
        total = int(session.scalar(count) or 0)
        page = _rows(session, _expiring_query(when, within).limit(limit).offset(offset))
    return page, total


def thresholds(instance: Instance) -> list[int]:
    """lifecycle.notice_days, largest first (e.g. [30, 7, 1])."""
    return [int(d) for d in str(instance.config.get("lifecycle.notice_days")).split(",")]


def officers(instance: Instance) -> list[str]:
    configured = str(instance.config.get("lifecycle.officers"))
    found = [m.strip() for m in configured.split(",") if m.strip()]
    return found or [instance.mail_settings.sender]


def _threshold(days_left: float, days: list[int]) -> int | None:
    """The smallest threshold the certificate is within (a certificate first seen 5 days
    before expiry gets the 7-day notice, not a late 30-day one)."""
    within = [d for d in days if days_left <= d]
    return min(within) if within else None


def _newest_not_after(session: Session, mails: list[str]) -> dict[str, datetime]:
    """Per mail, the latest not-after of its current certificates: a person who already
    holds a newer certificate is not told their older one expires."""
    newest: dict[str, datetime] = {}
    for start in range(0, len(mails), 500):
        chunk = mails[start : start + 500]
        rows = session.execute(
            select(func.lower(CertificateRecord.email), func.max(CertificateRecord.not_after))
            .where(
                *SUBSCRIBER,
                CertificateRecord.status == "valid",
                CertificateRecord.superseded_by.is_(None),
                func.lower(CertificateRecord.email).in_(chunk),
            )
            .group_by(func.lower(CertificateRecord.email))
        )
        newest.update((str(mail), _utc(latest)) for mail, latest in rows)
    return newest


def notice_text(
    name: str, serial: str, not_after: datetime, days: int, link: str | None, portal: str
) -> str:
    how = (
        f"Renew it here (the link works once, after you log on):\n\n  {link}\n"
        if link
        else f"Log on to the certificate portal to renew it:\n\n  {portal}\n"
    )
    return (
        f"Hello {name},\n\n"
        f"your e-mail (S/MIME) certificate {show_serial(serial)} expires on "
        f"{not_after:%Y-%m-%d %H:%M} UTC, in {days} day(s) or less.\n"
        "After that date you can no longer sign mail with it, and colleagues can no longer\n"
        "encrypt mail to you.\n\n"
        f"{how}\n"
        "Renewing gives you a new key and certificate; keep the old one installed so your\n"
        "older encrypted mail stays readable.\n"
    )


def send_notices(
    instance: Instance, *, actor: str, now: datetime | None = None, report: NoticeReport
) -> None:
    """Mail each person whose newest certificate crossed a lifecycle.notice_days
    threshold, once per certificate and threshold, with a one-time renewal link."""
    when = now or datetime.now(UTC)
    days = thresholds(instance)
    candidates = [
        c
        for c in expiring_certificates(instance, timedelta(days=max(days)), now=when)
        if c.renewed_by is None
    ]
    if not candidates:
        return
    mails = sorted({c.email.lower() for c in candidates})
    with instance.db.session() as session:
        newest = _newest_not_after(session, mails)
        done = claimed(session, {f"notice-{d}" for d in days}, {c.serial for c in candidates})
    due: list[tuple[ExpiringCertificate, int]] = []
    for cert in candidates:
        threshold = _threshold((cert.not_after - when) / timedelta(days=1), days)
        if threshold is None or (f"notice-{threshold}", cert.serial) in done:
            continue
        if newest.get(cert.email.lower(), cert.not_after) > cert.not_after:
            continue  # a newer certificate of theirs is current
        if not is_plain_address(cert.email.lower()):
            report.notes.append(f"{cert.email}: not a plain mail address, no notice")
            continue
        due.append((cert, threshold))
    if not due:
        return
    entries = _entries(instance, sorted({c.email.lower() for c, _ in due}), report)
    base_url = str(instance.config.get("web.base_url"))
    link_days = timedelta(days=int(instance.config.get("invitations.validity_days")))
    for start in range(0, len(due), BATCH):
        sent: list[tuple[str, str, int]] = []
        with instance.db.transaction() as session:
            # Claims first: their statements would otherwise flush the rows below one
            # by one; a claim another node holds means that node sent the notice.
            batch = due[start : start + BATCH]
            claimed_now = claim_batch(
                session, [(f"notice-{threshold}", cert.serial) for cert, threshold in batch], when
            )
            won = [(c, t) for c, t in batch if (f"notice-{t}", c.serial) in claimed_now]
            for cert, threshold in won:
                mail = cert.email.lower()
                entry = entries.get(mail)
                link = None
                if entry is not None and entry.enabled:
                    _, link = new_link(
                        session,
                        login=entry.login,
                        directory=entry.directory,
                        mail=mail,
                        expires=min(cert.not_after, when + link_days),
                        when=when,
                        base_url=base_url,
                        flush=False,
                    )
                name = (entry.display_name if entry else None) or mail
                queue(
                    session,
                    kind="expiry.notice",
                    to=mail,
                    subject=f"Your e-mail certificate expires in {threshold} day(s) or less",
                    body=notice_text(name, cert.serial, cert.not_after, threshold, link, base_url),
                    now=when,
                    flush=False,
                )
                sent.append((mail, cert.serial, threshold))
            if sent:
                instance.audit.append(
                    session,
                    "expiry.noticed",
                    actor=actor,
                    data={"notices": [{"email": m, "serial": s, "days": d} for m, s, d in sent]},
                )
        report.notices.extend(sent)


def _entries(
    instance: Instance, mails: list[str], report: NoticeReport
) -> dict[str, DirectoryEntry | None]:
    """Directory entries for the renewal links; with the directory down the notices
    still go out, pointing at the portal instead of carrying a link."""
    try:
        return instance.directories.find_many_by_mail(mails)
    except DirectoryError as exc:
        report.notes.append(f"renewal links left out (directory unavailable: {exc})")
        return {}


def send_summary(
    instance: Instance, *, actor: str, now: datetime | None = None, report: NoticeReport
) -> None:
    """One mail a day to the officers: what expires in the next 30 days, renewed or not
    (none on a day when nothing does)."""
    when = now or datetime.now(UTC)
    rows = expiring_certificates(instance, timedelta(days=SUMMARY_DAYS), now=when)
    if not rows:
        return  # nothing expires: no mail
    recipients = officers(instance)
    with instance.db.transaction() as session:
        if not claim(session, "summary", f"{when:%Y-%m-%d}", when):
            return
        pending = [r for r in rows if r.renewed_by is None]
        lines = [
            f"{r.not_after:%Y-%m-%d}  {show_serial(r.serial)}  {r.email}  {r.profile}  "
            f"{'renewed by ' + show_serial(r.renewed_by) if r.renewed_by else 'not renewed'}"
            for r in rows[:SUMMARY_LINES]
        ]
        more = f"\n… and {len(rows) - SUMMARY_LINES} more" if len(rows) > SUMMARY_LINES else ""
        body = (
            f"Certificates expiring in the next {SUMMARY_DAYS} days: {len(rows)} "
            f"({len(pending)} not renewed yet).\n\n"
            + ("\n".join(lines) if lines else "(none)")
            + more
            + "\n\nList them any time with 'mailpki certs expiring --within 30'.\n"
        )
        for officer in recipients:
            queue(
                session,
                kind="expiry.summary",
                to=officer,
                subject=f"Certificates expiring in the next {SUMMARY_DAYS} days: {len(rows)}",
                body=body,
                now=when,
            )
        instance.audit.append(
            session,
            "expiry.summarised",
            actor=actor,
            data={"expiring": len(rows), "not_renewed": len(pending), "to": recipients},
        )
    report.summary_sent_to.extend(recipients)


def withdraw_expired(
    instance: Instance, *, actor: str, now: datetime | None = None, report: NoticeReport
) -> None:
    """Queue the removal from the directory of certificates that expired (each once)."""
    when = now or datetime.now(UTC)
    query = select(CertificateRecord.serial, CertificateRecord.email).where(
        *SUBSCRIBER,
        CertificateRecord.status == "valid",
        CertificateRecord.superseded_by.is_(None),
        CertificateRecord.not_after <= when,
    )
    with instance.db.session() as session:
        expired = [(str(serial), str(email)) for serial, email in session.execute(query)]
        done = claimed(session, {"expired"}, {serial for serial, _ in expired})
    todo = [(serial, email) for serial, email in expired if ("expired", serial) not in done]
    publish = instance.config.get("directory.publish") == "true"
    for start in range(0, len(todo), BATCH):
        withdrawn: list[str] = []
        with instance.db.transaction() as session:
            for serial, email in todo[start : start + BATCH]:
                if not claim(session, "expired", serial, when):
                    continue
                if publish:
                    queue_job(session, serial=serial, email=email, action=UNPUBLISH)
                withdrawn.append(serial)
            if withdrawn:
                instance.audit.append(
                    session, "cert.expired", actor=actor, data={"serials": withdrawn}
                )
        report.withdrawn.extend(withdrawn)
