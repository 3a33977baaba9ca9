"""A renewal notice on request (the API's `POST /certificates/{serial}/renewal-notice`):
the expiry notice the lifecycle mails on its own (expiry.py), for one certificate now.

The notice carries a one-time link to the portal, where the person logs on and renews;
the new key and its PKCS#12 password only ever reach the person, never the caller. So
the notice is refused when the portal would not renew that certificate: unknown, not a
person's mail certificate, revoked, expired, already renewed, not the one a renewal
replaces, not yet within `lifecycle.renew_window_days`, or its owner disabled in the
directory (a leaver). At most one such notice per certificate and day (a caller that
retries in a loop does not flood the person's mailbox).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from mailpki.ca.listing import utc
from mailpki.ca.serials import show_serial, to_hex
from mailpki.ca.succession import SUBSCRIBER
from mailpki.directory.entry import DirectoryEntry
from mailpki.enrollment.invitations import new_link
from mailpki.errors import DirectoryError, NotFoundError, RenewalRefused
from mailpki.instance.expiry import notice_text
from mailpki.instance.instance import Instance
from mailpki.instance.renewal import RenewalPlan, plan
from mailpki.notify.mail import is_plain_address, queue
from mailpki.store.marks import claim
from mailpki.store.models import CertificateRecord

MARK = "renewal-notice"  # lifecycle_marks kind: (MARK, "SERIAL:YYYY-MM-DD")


@dataclass(frozen=True)
class RenewalNotice:
    serial: str  # as printed (show_serial)
    email: str
    not_after: datetime
    days_left: int
    link: bool  # False: the notice points at the portal (no directory entry to bind a link to)
    note: str | None


def _record(instance: Instance, serial: int) -> CertificateRecord:
    with instance.db.session() as session:
        record = session.scalar(
            select(CertificateRecord).where(CertificateRecord.serial == to_hex(serial))
        )
        person = session.scalar(
            select(CertificateRecord.id).where(
                CertificateRecord.serial == to_hex(serial), *SUBSCRIBER
            )
        )
    if record is None:
        raise NotFoundError(f"no certificate with serial {show_serial(serial)} in this instance")
    if person is None:
        raise RenewalRefused(
            f"certificate {show_serial(serial)} is not a person's mail certificate "
            "(a CA, OCSP or administrator certificate is not renewed in the portal)"
        )
    return record


def _check(instance: Instance, record: CertificateRecord, when: datetime) -> RenewalPlan:
    """What the portal would renew for this certificate; refused with a reason if nothing."""
    shown = show_serial(record.serial)
    if record.status == "revoked":
        raise RenewalRefused(
            f"certificate {shown} is revoked: a revoked certificate is not renewed "
            "(invite the person to enroll again)"
        )
    if record.superseded_by is not None:
        raise RenewalRefused(
            f"certificate {shown} was already renewed (by {show_serial(record.superseded_by)})"
        )
    if utc(record.not_after) <= when:
        raise RenewalRefused(
            f"certificate {shown} expired on {utc(record.not_after):%Y-%m-%d}: an expired "
            "certificate is not renewed (invite the person to enroll again)"
        )
    chosen = plan(instance, str(record.email), now=when)
    replaced = {chosen.renews.serial} | ({chosen.signing.serial} if chosen.signing else set())
    if record.serial not in replaced:
        raise RenewalRefused(
            f"certificate {shown} is not the one a renewal of {chosen.email} replaces: "
            f"that is {show_serial(chosen.renews.serial)}"
        )
    window = int(instance.config.get("lifecycle.renew_window_days"))
    if utc(chosen.renews.not_after) > when + timedelta(days=window):
        raise RenewalRefused(
            f"certificate {show_serial(chosen.renews.serial)} expires on "
            f"{utc(chosen.renews.not_after):%Y-%m-%d}: the portal offers renewal from "
            f"{window} days before expiry (lifecycle.renew_window_days)"
        )
    return chosen


def _entry(instance: Instance, mail: str) -> tuple[DirectoryEntry | None, str | None]:
    try:
        entry = instance.directories.find_by_mail(mail)
    except DirectoryError as exc:
        return (
            None,
            f"no one-time link (directory unavailable: {exc}); the notice points at the portal",
        )
    if entry is None:
        return None, "no directory entry for this address: the notice points at the portal"
    if not entry.enabled:
        raise RenewalRefused(
            f"{mail} is disabled in the directory ({entry.dn}): a leaver is not renewed"
        )
    return entry, None


def send_renewal_notice(
    instance: Instance, serial: int, *, actor: str, now: datetime | None = None
) -> RenewalNotice:
    """Queue, for the person who holds certificate `serial`, the expiry notice with a
    one-time renewal link (the outbox sends it); audited as `renewal.noticed` by `actor`.
    Refuses (RenewalRefused, NotFoundError) when the portal would not renew it."""
    when = now or datetime.now(UTC)
    record = _record(instance, serial)
    renews = _check(instance, record, when).renews
    mail = renews.email.lower()
    if not is_plain_address(mail):
        raise RenewalRefused(f"{renews.email} is not a plain mail address: no notice can be sent")
    entry, note = _entry(instance, mail)
    base_url = str(instance.config.get("web.base_url"))
    link_days = timedelta(days=int(instance.config.get("invitations.validity_days")))
    not_after = utc(renews.not_after)
    days = max(1, math.ceil((not_after - when) / timedelta(days=1)))
    with instance.db.transaction() as session:
        if not claim(session, MARK, f"{renews.serial}:{when:%Y-%m-%d}", when):
            raise RenewalRefused(
                f"a renewal notice for {show_serial(renews.serial)} was already sent today; "
                "the person can also log on to the portal and renew there"
            )
        link = None
        if entry is not None:
            _, link = new_link(
                session,
                login=entry.login,
                directory=entry.directory,
                mail=mail,
                expires=min(not_after, when + link_days),
                when=when,
                base_url=base_url,
            )
        name = (entry.display_name if entry else None) or mail
        queue(
            session,
            kind="expiry.notice",
            to=mail,
            subject=f"Your e-mail certificate expires in {days} day(s) or less",
            body=notice_text(name, renews.serial, not_after, days, link, base_url),
            now=when,
        )
        instance.audit.append(
            session,
            "renewal.noticed",
            actor=actor,
            data={
                "email": mail,
                "serial": renews.serial,
                "asked_for": record.serial,
                "link": link is not None,
            },
        )
    return RenewalNotice(
        serial=show_serial(renews.serial),
        email=mail,
        not_after=not_after,
        days_left=max(0, (not_after - when).days),
        link=link is not None,
        note=note,
    )
