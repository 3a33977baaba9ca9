"""Invitation use cases of an instance: invite people from the directories, remind them."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta

from cryptography import x509

from mailpki.ca.serials import show_serial
from mailpki.directory.entry import DirectoryEntry
from mailpki.enrollment.invitations import InviteReport, invite, logon_help, remind
from mailpki.errors import InputError, MailPKIError
from mailpki.instance.enrollments import flush_mail
from mailpki.instance.instance import Instance
from mailpki.instance.layout import THEME_DIR

# `--all` walks the directories by prefix: every letter and digit, at most this many
# entries per prefix and directory search (the directory's own page limit).
ALL_PREFIXES = string.ascii_lowercase + string.digits
ALL_LIMIT = 1000
RENEWAL_DAYS = 30  # a certificate this close to expiry does not stop an invitation


def _logon_text(instance: Instance) -> str:
    """How the portal lets people log on (portal.logon), in words for the mail."""
    return logon_help([m.strip() for m in str(instance.config.get("portal.logon")).split(",")])


def _matches(entry: DirectoryEntry, filter_text: str) -> bool:
    """`ou=Sales` / `site=Sales`: the site; `o=Corp`: the organisation; plain: either."""
    key, sep, value = filter_text.partition("=")
    if sep:
        key, wanted = key.strip().lower(), value.strip().casefold()
        if key in ("ou", "site"):
            fields = [entry.site]
        elif key in ("o", "organisation", "organization"):
            fields = [entry.organisation]
        else:
            raise InputError(f"--filter takes ou=TEXT, o=TEXT or TEXT, not {filter_text!r}")
    else:
        wanted = filter_text.strip().casefold()
        fields = [entry.site, entry.organisation]
    return any(f is not None and f.strip().casefold() == wanted for f in fields)


def _without_certificate_holders(
    instance: Instance, entries: list[DirectoryEntry], report: InviteReport, *, force: bool
) -> list[DirectoryEntry]:
    """`entries` less those who hold a valid certificate (noted in `report`)."""
    kept = []
    renew_from = datetime.now(UTC) + timedelta(days=RENEWAL_DAYS)
    holders = instance.ca.valid_certificates_of((e.mail or "").strip() for e in entries)
    for entry in entries:
        mail = (entry.mail or "").strip()
        held = [x509.load_der_x509_certificate(d) for d in holders.get(mail.lower(), [])]
        if not mail or not held:
            kept.append(entry)
            continue
        newest = max(held, key=lambda c: c.not_valid_after_utc)
        until = f"{newest.not_valid_after_utc:%Y-%m-%d}"
        what = f"certificate {show_serial(newest.serial_number)}, valid until {until}"
        if newest.not_valid_after_utc <= renew_from:
            report.notes.append(f"{entry.login}: invited to renew ({what})")
            kept.append(entry)
        elif force:
            report.notes.append(f"{entry.login}: already holds a valid {what}; invited (--force)")
            kept.append(entry)
        else:
            report.skipped.append(
                f"{entry.login}: already holds a valid {what}; use --force to invite anyway "
                f"(renewal invitations are sent from {RENEWAL_DAYS} days before expiry)"
            )
    return kept


def _everyone(instance: Instance, report: InviteReport) -> list[DirectoryEntry]:
    found: dict[tuple[str, str], DirectoryEntry] = {}
    capped = False
    for prefix in ALL_PREFIXES:
        for directory in instance.directories:
            results = directory.search(prefix, limit=ALL_LIMIT)
            capped = capped or len(results) >= ALL_LIMIT
            for entry in results:
                found.setdefault((entry.directory, entry.login), entry)
    if capped:
        report.notes.append(
            f"--all is capped at {ALL_LIMIT} entries per starting letter and directory; "
            "some people may be missing: invite the rest by --filter or by login"
        )
    return sorted(found.values(), key=lambda e: (e.directory, e.login))


def invite_users(
    instance: Instance,
    logins: list[str],
    *,
    all_people: bool,
    filter_text: str | None,
    resend: bool,
    actor: str,
    force: bool = False,
    send_now: bool = True,
) -> InviteReport:
    """Invite the named people (or everyone), mail the links now (best effort), or, with
    `send_now` False, leave the queued mails to the server's outbox (its housekeeping
    sends them within a cycle; `mailpki mail flush` does it by hand).

    Someone who already holds a valid certificate is skipped (with why) unless `force`;
    one whose certificate expires within RENEWAL_DAYS is invited, for its renewal."""
    if all_people and logins:
        raise InputError("give logins or --all, not both")
    if not all_people and not logins:
        raise InputError("name the people to invite (logins), or use --all")
    if filter_text is not None and not filter_text.strip():
        raise InputError("--filter is empty")
    pre = InviteReport()
    entries: list[DirectoryEntry] = []
    if all_people:
        entries = _everyone(instance, pre)
    else:
        for login in dict.fromkeys(logins):
            try:
                entry = instance.directories.find_by_login(login)
            except MailPKIError as exc:
                pre.errors.append(f"{login}: {exc}")
                continue
            if entry is None:
                pre.errors.append(f"{login}: not found in any directory")
            else:
                entries.append(entry)
    if filter_text is not None:
        entries = [e for e in entries if _matches(e, filter_text)]
    entries = _without_certificate_holders(instance, entries, pre, force=force)
    report = invite(
        instance.db,
        instance.audit,
        entries,
        base_url=str(instance.config.get("web.base_url")),
        validity=timedelta(days=int(instance.config.get("invitations.validity_days"))),
        actor=actor,
        resend=resend,
        org=str(instance.config.get("instance.org")),
        theme=instance.home / THEME_DIR,
        logon=_logon_text(instance),
    )
    report.errors[:0] = pre.errors
    report.skipped[:0] = pre.skipped
    report.notes[:0] = pre.notes
    if report.sent and send_now:
        delivery = flush_mail(instance)
        if delivery is None or delivery.failed or delivery.skipped:
            report.notes.append(
                "some invitation mails could not be sent now; they stay queued "
                "('mailpki mail flush' or the server sends them later)"
            )
    return report


def remind_users(instance: Instance, actor: str) -> int:
    """Remind people who have not used their invitation after invitations.reminder_days."""
    count = remind(
        instance.db,
        instance.audit,
        older_than=timedelta(days=int(instance.config.get("invitations.reminder_days"))),
        base_url=str(instance.config.get("web.base_url")),
        actor=actor,
        org=str(instance.config.get("instance.org")),
        theme=instance.home / THEME_DIR,
        logon=_logon_text(instance),
    )
    if count:
        flush_mail(instance)
    return count
